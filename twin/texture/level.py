"""Colour levelling across seams (after Waechter, Moehrle and Goesele 2014).

*Global levelling* gives every (vertex, view) pair that a textured face uses an
additive RGB offset ``g``. Along every seam edge (two adjacent faces textured from
different views) the photos are sampled at ``K`` points (each the mean of a 3 x 3
stencil of bilinear samples a pixel apart, so a sample measures the colour level
rather than grain); at each end of the
edge the half-edge means of the two sides should agree after correction:
``(c1 + g(v, l1)) - (c2 + g(v, l2)) = 0``. Inside a chart, offsets of the two ends of
every edge should be equal (weight ``smooth``, the regulariser that spreads a seam's
correction over its chart), and a tiny damping ``damp * g`` fixes the free constant.
The sparse least-squares problem is solved per channel by conjugate gradients on the
normal equations (Jacobi preconditioned). In the bake, a texel gets the barycentric
interpolation of its face's three corner offsets.

*Local levelling* removes what is left along each seam edge: the residual difference
profile between the two sides (``K`` samples along the edge, after the global
offsets) is split half and half, and each side's face gets its half as an offset
that is full at the edge and fades linearly to zero at ``band`` (barycentric
distance) into the face, so both sides meet at their mean colour.

Memory grows with the number of (vertex, view) pairs used (about 200 bytes each)
and the seam edges (``K`` x 50 bytes each).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from twin.texture._kernels import bilinear_many

K_SAMPLES = 6


def sample_views(
    points: np.ndarray, labels: np.ndarray, views, images, radius: float = 0.0
) -> np.ndarray:
    """RGB (N, 3) of each point (N, 3) in the photo of its label (N,): a bilinear
    sample, or with ``radius`` > 0 the mean of a 3 x 3 stencil of bilinear samples
    ``radius`` pixels apart (a small blur, only where it is read)."""
    out = np.zeros((len(points), 3))
    offs = [0.0] if radius <= 0 else [-radius, 0.0, radius]
    for lab in np.unique(labels):
        m = labels == lab
        uv, _ = views[lab].project(points[m])
        acc = np.zeros((int(m.sum()), 3))
        img = np.ascontiguousarray(images[lab])
        for dx in offs:
            for dy in offs:
                acc += bilinear_many(
                    img, np.ascontiguousarray(uv[:, 0] + dx), np.ascontiguousarray(uv[:, 1] + dy)
                )
        out[m] = acc / len(offs) ** 2
    return out


def seam_samples(
    vertices, pairs, edges, labels, views, images, k: int = K_SAMPLES, radius: float = 1.0
):
    """Seam edges (labels differ, both textured): their index into ``pairs``, and the
    colours (S, k, 3) of each side at ``k`` points from ``edges[:, 0]`` to
    ``edges[:, 1]`` (3 x 3 stencils ``radius`` pixels apart: levels, not grain)."""
    l1, l2 = labels[pairs[:, 0]], labels[pairs[:, 1]]
    seam = np.flatnonzero((l1 != l2) & (l1 >= 0) & (l2 >= 0))
    t = np.linspace(0.0, 1.0, k)
    a = vertices[edges[seam, 0]]
    b = vertices[edges[seam, 1]]
    pts = (a[:, None, :] * (1 - t)[None, :, None] + b[:, None, :] * t[None, :, None]).reshape(-1, 3)
    c1 = sample_views(pts, np.repeat(l1[seam], k), views, images, radius).reshape(-1, k, 3)
    c2 = sample_views(pts, np.repeat(l2[seam], k), views, images, radius).reshape(-1, k, 3)
    return seam, c1, c2


def global_levelling(
    n_vertices: int,
    faces: np.ndarray,
    labels: np.ndarray,
    pairs: np.ndarray,
    edges: np.ndarray,
    seam: np.ndarray,
    c1: np.ndarray,
    c2: np.ndarray,
    *,
    smooth: float = 1.0,
    damp: float = 1e-3,
    seam_weight: np.ndarray | None = None,
    huber: float = 6.0,
    irls: int = 1,
    outlier: float = 24.0,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Per-corner RGB offsets (M, 3, 3) of the global levelling, the offset of each
    (vertex, label) variable and stats. Faces with label -1 get zeros.

    ``seam_weight`` (S,) weighs each seam edge's equations (0 drops it); ``huber``
    (grey levels) and ``irls`` reweighting passes make the fit robust; equations whose
    sides differ by more than ``outlier`` grey levels (or 6 robust sigmas, if more)
    are dropped."""
    m = len(faces)
    tex = labels >= 0
    n_lab = int(labels.max()) + 1 if tex.any() else 1
    corner_key = faces.astype(np.int64) * n_lab + labels[:, None]
    keys, inv = np.unique(corner_key[tex].ravel(), return_inverse=True)
    nvar = len(keys)
    corner_var = np.full((m, 3), -1, dtype=np.int64)
    corner_var[tex] = inv.reshape(-1, 3)
    out = np.zeros((m, 3, 3))
    stats = {"variables": int(nvar), "seam_edges": int(len(seam))}
    if nvar == 0 or len(seam) == 0:
        return out, np.zeros((nvar, 3)), stats

    def var(v, lab):
        return np.searchsorted(keys, v.astype(np.int64) * n_lab + lab)

    k = c1.shape[1]
    half = k // 2
    l1, l2 = labels[pairs[seam, 0]], labels[pairs[seam, 1]]
    va, vb = edges[seam, 0], edges[seam, 1]
    rows_i, rows_j, rhs = [], [], []
    # seam rows: g(v, l1) - g(v, l2) = mean(c2) - mean(c1) over the half edge at v
    for v, sl in ((va, slice(0, half + 1)), (vb, slice(k - half - 1, k))):
        rows_i.append(var(v, l1))
        rows_j.append(var(v, l2))
        rhs.append(c2[:, sl].mean(axis=1) - c1[:, sl].mean(axis=1))
    si = np.concatenate(rows_i)
    sj = np.concatenate(rows_j)
    sb = np.concatenate(rhs)
    ns = len(si)
    w0 = np.ones(ns) if seam_weight is None else np.tile(np.asarray(seam_weight, float), 2)
    # rows whose sides disagree far more than the typical seam are silhouettes or
    # occlusion edges (a sample mixes in the background in one photo): dropped
    mag = np.abs(sb).mean(axis=1)
    typical = np.median(mag[w0 > 0]) if (w0 > 0).any() else 0.0
    cutoff = max(outlier, 6.0 * 1.4826 * typical)
    w0 = w0 * (mag <= cutoff)
    w = w0.copy()
    # smoothness rows: sqrt(smooth) * (g(a, l) - g(b, l)) = 0 along each textured face edge
    cv = corner_var[tex]
    ei = np.concatenate([cv[:, 0], cv[:, 1], cv[:, 2]])
    ej = np.concatenate([cv[:, 1], cv[:, 2], cv[:, 0]])
    ne = len(ei)
    D = sparse.csr_matrix(
        (
            np.concatenate([np.ones(ne), -np.ones(ne)]),
            (np.tile(np.arange(ne), 2), np.concatenate([ei, ej])),
        ),
        shape=(ne, nvar),
    )
    S = sparse.csr_matrix(
        (
            np.concatenate([np.ones(ns), -np.ones(ns)]),
            (np.tile(np.arange(ns), 2), np.concatenate([si, sj])),
        ),
        shape=(ns, nvar),
    )
    base = (smooth * (D.T @ D) + damp * sparse.identity(nvar)).tocsr()
    g = np.zeros((nvar, 3))
    iters = 0
    # iteratively reweighted least squares with a Huber weight: seam samples that
    # disagree for reasons other than exposure (occlusion edges, misregistration,
    # sampling of fine texture) must not drive the offsets
    for k in range(1 + int(irls)):
        Sw = sparse.diags(w) @ S
        N = (S.T @ Sw + base).tocsr()
        # passes before the last only set the weights: a looser tolerance will do
        g, it = pcg(N, Sw.T @ sb, x0=g, rtol=1e-3 if k == int(irls) else 1e-2)
        iters += it
        res = np.linalg.norm(g[si] - g[sj] - sb, axis=1)
        w = w0 * np.minimum(1.0, huber / np.maximum(res, 1e-12))
    before = np.abs(sb).mean()
    after = np.abs(g[si] - g[sj] - sb).mean()
    stats.update(
        {
            "seam_equations": int(ns),
            "dropped_equations": int((w0 == 0).sum()),
            "cg_iterations": int(iters),
            "seam_jump_before": float(before),
            "seam_jump_after": float(after),
            "max_offset": float(np.abs(g).max()),
        }
    )
    out[tex] = g[corner_var[tex]]
    return out, g, stats


def pcg(
    N, B: np.ndarray, *, x0: np.ndarray | None = None, rtol: float = 1e-3, maxiter: int = 5000
) -> tuple[np.ndarray, int]:
    """Jacobi-preconditioned conjugate gradients for the SPD sparse ``N`` with all
    columns of ``B`` (n, c) at once; stops when every column's residual is below
    ``rtol`` times its right-hand side. Returns ``(X, iterations)``. Numba
    (:func:`twin.texture._kernels.pcg_csr`); :func:`twin.texture._reference.pcg` is
    the NumPy/SciPy twin."""
    from twin.texture._kernels import pcg_csr

    N = sparse.csr_matrix(N)
    B = np.ascontiguousarray(B, dtype=np.float64).reshape(len(B), -1)
    x = np.zeros_like(B) if x0 is None else np.array(x0, dtype=np.float64).reshape(B.shape)
    it = pcg_csr(
        N.indptr.astype(np.int64),
        N.indices.astype(np.int64),
        N.data.astype(np.float64),
        1.0 / N.diagonal(),
        B,
        x,
        float(rtol),
        int(maxiter),
    )
    return x, int(it)


def local_levelling(
    faces: np.ndarray,
    pairs: np.ndarray,
    edges: np.ndarray,
    seam: np.ndarray,
    c1: np.ndarray,
    c2: np.ndarray,
    corner_corr: np.ndarray,
    *,
    outlier: float = 24.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Edge-band offsets: ``edge_prof`` (M, 3) (profile index of the edge opposite each
    corner, -1 none) and ``profiles`` (P, K, 3) oriented from corner k+1 to k+2."""
    m = len(faces)
    k = c1.shape[1]
    edge_prof = np.full((m, 3), -1, dtype=np.int32)
    if len(seam) == 0:
        return edge_prof, np.zeros((0, max(k, 2), 3), np.float32)
    t = np.linspace(0.0, 1.0, k)[None, :, None]
    va, vb = edges[seam, 0], edges[seam, 1]
    sides = []
    for side, col in enumerate((c1, c2)):
        f = pairs[seam, side]
        ga = _corner_offset(faces[f], corner_corr[f], va)
        gb = _corner_offset(faces[f], corner_corr[f], vb)
        sides.append((f, col + ga[:, None, :] * (1 - t) + gb[:, None, :] * t))
    (f1, s1), (f2, s2) = sides
    d = s1 - s2  # residual difference along the edge, from va to vb
    # sides that disagree by more than ``outlier`` grey levels do not show one
    # surface at two levels (silhouettes, occlusion edges): left alone
    d[np.abs(d).mean(axis=(1, 2)) > outlier] = 0.0
    profiles = []
    for f, prof in ((f1, -0.5 * d), (f2, 0.5 * d)):
        fv = faces[f]
        # corner opposite the edge, and whether corner k+1 is va
        opp = np.argmax((fv != va[:, None]) & (fv != vb[:, None]), axis=1)
        nxt = fv[np.arange(len(f)), (opp + 1) % 3]
        prof = np.where((nxt == va)[:, None, None], prof, prof[:, ::-1])
        base = sum(len(p) for p in profiles)
        edge_prof[f, opp] = base + np.arange(len(f))
        profiles.append(prof)
    return edge_prof, np.concatenate(profiles).astype(np.float32)


def _corner_offset(fv: np.ndarray, corr: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The corner offset (N, 3) of vertex ``v`` in each face (corners ``fv`` (N, 3))."""
    which = np.argmax(fv == v[:, None], axis=1)
    return corr[np.arange(len(fv)), which]
