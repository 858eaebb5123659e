"""Render a textured mesh from a camera, and image-quality metrics (PSNR, SSIM).

:func:`render_textured` draws the mesh into a depth buffer
(:func:`twin.texture._kernels.zbuffer`), recovers perspective-correct barycentric
coordinates per pixel, interpolates the UVs and samples the face's page bilinearly:
what a viewer shows, without lighting (the texture already holds the photo's
shading). Used to compare a textured model with held-out photos and for previews.
Memory grows with the image's pixels (~60 bytes each) and the mesh.
"""

from __future__ import annotations

import numpy as np

from twin.texture._kernels import bilinear_many, zbuffer
from twin.texture.select import NEAR
from twin.texture.views import View


def bilinear(img, x, y):
    """Bilinear samples (N, C) of ``img`` at image coordinates (Numba)."""
    return bilinear_many(
        np.ascontiguousarray(img),
        np.ascontiguousarray(x, dtype=np.float64),
        np.ascontiguousarray(y, dtype=np.float64),
    )


def render_textured(
    vertices: np.ndarray,
    faces: np.ndarray,
    uv: np.ndarray,
    face_page: np.ndarray,
    pages: list[np.ndarray],
    view: View,
    *,
    background=(0, 0, 0),
) -> tuple[np.ndarray, np.ndarray]:
    """The (H, W, 3) uint8 image of the textured mesh seen by ``view`` and the
    (H, W) int32 face id per pixel (-1: background). ``uv`` (N, 2) glTF UVs of
    ``vertices``; ``face_page`` (M,) page of each face."""
    px, pz = view.project(vertices)
    depth, fid = zbuffer(px, pz, faces, view.width, view.height, NEAR)
    out = np.empty((view.height, view.width, 3), np.uint8)
    out[:] = np.asarray(background, np.uint8)
    jj, ii = np.nonzero(fid >= 0)
    if len(jj) == 0:
        return out, fid
    f = fid[jj, ii]
    tri = faces[f]
    x, y = ii + 0.5, jj + 0.5
    (xa, ya), (xb, yb), (xc, yc) = (px[tri[:, k]].T for k in range(3))
    area = (xb - xa) * (yc - ya) - (xc - xa) * (yb - ya)
    w0 = ((xb - x) * (yc - y) - (xc - x) * (yb - y)) / area
    w1 = ((xc - x) * (ya - y) - (xa - x) * (yc - y)) / area
    w = np.column_stack([w0, w1, 1.0 - w0 - w1]) / pz[tri]
    w /= w.sum(axis=1, keepdims=True)
    tuv = np.einsum("nk,nkc->nc", w, uv[tri])
    fp = face_page[f]
    for p, page in enumerate(pages):
        m = fp == p
        if not m.any():
            continue
        h, wd = page.shape[:2]
        col = bilinear(page, tuv[m, 0] * wd, tuv[m, 1] * h)
        out[jj[m], ii[m]] = np.clip(np.rint(col), 0, 255).astype(np.uint8)
    return out, fid


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio (dB, 8-bit peak) of two images over ``mask``."""
    d = a.astype(np.float64) - b.astype(np.float64)
    if mask is not None:
        d = d[mask]
    mse = float(np.mean(d * d)) if d.size else 0.0
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean structural similarity (Wang et al. 2004: Gaussian window sigma 1.5,
    K1 = 0.01, K2 = 0.03, 8-bit range) of the luminance of two RGB images, averaged
    over ``mask``."""
    from scipy import ndimage

    wts = np.array([0.299, 0.587, 0.114])
    x = a.astype(np.float64) @ wts
    y = b.astype(np.float64) @ wts
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def g(z):
        return ndimage.gaussian_filter(z, 1.5, truncate=3.5)

    mx, my = g(x), g(y)
    sxx = g(x * x) - mx * mx
    syy = g(y * y) - my * my
    sxy = g(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s[mask].mean() if mask is not None else s.mean())


# barycentric sample points inside a face (a 10-point spread) for face mean colours
_FACE_SAMPLES = np.array(
    [
        [1 / 3, 1 / 3, 1 / 3],
        [2 / 3, 1 / 6, 1 / 6],
        [1 / 6, 2 / 3, 1 / 6],
        [1 / 6, 1 / 6, 2 / 3],
        [1 / 2, 1 / 2, 0.0],
        [0.0, 1 / 2, 1 / 2],
        [1 / 2, 0.0, 1 / 2],
        [0.45, 0.45, 0.1],
        [0.1, 0.45, 0.45],
        [0.45, 0.1, 0.45],
    ]
)


def face_colours(tm) -> np.ndarray:
    """Mean RGB (M, 3) of each face's texture (10 barycentric samples)."""
    fuv = tm.uv[tm.faces]  # (M, 3, 2)
    out = np.zeros((len(tm.faces), 3))
    for p, page in enumerate(tm.pages):
        sel = np.flatnonzero(tm.face_page == p)
        h, w = page.shape[:2]
        uv = np.einsum("sk,mkc->msc", _FACE_SAMPLES, fuv[sel]).reshape(-1, 2)
        col = bilinear(page, uv[:, 0] * w, uv[:, 1] * h).reshape(len(sel), -1, 3)
        out[sel] = col.mean(axis=1)
    return out


def edge_colours(tm, pairs: np.ndarray, edges: np.ndarray, *, inset: float = 0.15, n: int = 3):
    """Texture colours (P, n, 2, 3) just inside both faces of each pair (P, 2) at
    ``n`` points along their shared edge (``edges`` (P, 2) input vertex ids): the
    points sit ``inset`` (barycentric) away from the edge into each face, so the
    difference of the two sides is the step a viewer sees across the edge."""
    src = tm.source_vertex[tm.faces]  # (M, 3) input vertex ids
    s = (np.arange(n) + 0.5) / n
    out = np.zeros((len(pairs), n, 2, 3))
    for side in range(2):
        fa = pairs[:, side]
        corners = src[fa]
        ia = np.argmax(corners == edges[:, :1], axis=1)
        ib = np.argmax(corners == edges[:, 1:], axis=1)
        w = np.zeros((len(pairs), n, 3))
        r = np.arange(len(pairs))[:, None]
        w[r, :, 3 - ia - ib] = inset  # the corner opposite the edge
        w[r, np.arange(n)[None, :], ia[:, None]] = (1 - inset) * (1 - s)[None, :]
        w[r, np.arange(n)[None, :], ib[:, None]] = (1 - inset) * s[None, :]
        uv = np.einsum("pnk,pkc->pnc", w, tm.uv[tm.faces[fa]])
        page = tm.face_page[fa]
        for p, img in enumerate(tm.pages):
            m = page == p
            if not m.any():
                continue
            h, wd = img.shape[:2]
            q = uv[m].reshape(-1, 2)
            out[m, :, side] = bilinear(img, q[:, 0] * wd, q[:, 1] * h).reshape(-1, n, 3)
    return out


def seam_jumps(tm, *, max_dihedral_deg: float = 10.0, pairs: np.ndarray | None = None) -> dict:
    """Colour jump across chart boundaries versus inside charts, on the texture.

    For every pair of textured faces sharing an edge, near-coplanar (normals within
    ``max_dihedral_deg``: a crease is a real colour edge), or the given ``pairs``
    (P, 2) face indices (e.g. only pairs whose true colour is uniform), two jumps are
    measured: ``seam`` / ``interior``: the mean absolute RGB difference of the two
    faces' mean texture colours (see :func:`face_colours`: a level step between
    neighbours, without the photos' pixel grain); ``seam_edge`` / ``interior_edge``:
    the difference right across the shared edge (:func:`edge_colours`: what a viewer
    sees at a seam, after local levelling). Means over pairs in different charts and
    in the same chart, with counts. ``tm`` is a
    :class:`~twin.texture.mapping.TexturedMesh`."""
    from twin.texture.select import face_adjacency, face_normals

    src = tm.source_vertex[tm.faces]
    nv = int(tm.source_vertex.max()) + 1
    all_pairs, all_edges, _ = face_adjacency(src, nv)
    lab = tm.labels
    if pairs is None:
        ok = (lab[all_pairs[:, 0]] >= 0) & (lab[all_pairs[:, 1]] >= 0)
        verts = np.zeros((nv, 3))
        verts[tm.source_vertex] = tm.vertices
        nrm = face_normals(verts, src)
        cosd = np.einsum("ij,ij->i", nrm[all_pairs[:, 0]], nrm[all_pairs[:, 1]])
        ok &= cosd > np.cos(np.radians(max_dihedral_deg))
        pairs, edges = all_pairs[ok], all_edges[ok]
    else:
        pairs = np.sort(np.asarray(pairs, dtype=np.int64), axis=1)
        key_all = np.sort(all_pairs, axis=1)
        m = len(lab)
        ka = key_all[:, 0] * m + key_all[:, 1]
        order = np.argsort(ka)
        pos = np.searchsorted(ka[order], pairs[:, 0] * m + pairs[:, 1])
        pos = np.minimum(pos, len(ka) - 1)
        hit = ka[order][pos] == pairs[:, 0] * m + pairs[:, 1]
        hit &= (lab[pairs[:, 0]] >= 0) & (lab[pairs[:, 1]] >= 0)
        pairs, edges = pairs[hit], all_edges[order[pos[hit]]]
    col = face_colours(tm)
    jump = np.abs(col[pairs[:, 0]] - col[pairs[:, 1]]).mean(axis=1)
    ec = edge_colours(tm, pairs, edges)
    ejump = np.abs(ec[:, :, 0] - ec[:, :, 1]).mean(axis=(1, 2))
    # adjacent faces with the same view are in the same chart (charts are the
    # connected components of equal labels)
    same = lab[pairs[:, 0]] == lab[pairs[:, 1]]

    def mean(x, m):
        return float(x[m].mean()) if m.any() else 0.0

    return {
        "seam": mean(jump, ~same),
        "interior": mean(jump, same),
        "seam_edge": mean(ejump, ~same),
        "interior_edge": mean(ejump, same),
        "seam_pairs": int((~same).sum()),
        "interior_pairs": int(same.sum()),
    }
