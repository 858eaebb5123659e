"""Per-face view selection: visibility, data term and an MRF labelling.

For every view, :func:`view_candidates` draws the mesh into a depth buffer (Numba)
and keeps a face as a candidate when it faces the camera, lies inside the image and
is not occluded: its centroid and its three corners pulled 10 % towards the centroid
all lie within ``2.5`` pixel footprints (plus 5 cm) of the *nearest* depth in the
3 x 3 pixels around them, so a face touching an occluder's silhouette (whose
bake would mix in the occluder's pixels) is left to another view. The candidate's
quality is the *gradient magnitude integral* of Waechter et al. (2014): the face's
projected area in pixels times the mean Sobel gradient magnitude of the photo over
the face (sampled at the centroid for sub-pixel faces) plus a small floor, so a
sharp, large, frontal view wins over a blurred, grazing or distant one.

:func:`alpha_expansion` minimises ``sum_f D(f, l_f) + w * sum_(f,g) [l_f != l_g]`` over
adjacent faces, with ``D(f, l) = 1 - q(f, l) / max_l q(f, l)`` (0 for a face's best
view, +inf where the view does not see the face) and a Potts smoothness weight ``w``,
by alpha expansion: for each label in turn, the binary "keep or switch to alpha"
move is solved exactly by a graph cut (PyMaxflow, Boykov-Kolmogorov) on the faces
that alpha sees; cycles repeat until no move lowers the energy. Alpha expansion is
within a factor 2 of the optimum for Potts models; the greedy per-face best view is
its starting point and its energy is reported next to the result. Faces no view sees
keep the label -1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from twin.texture._kernels import face_pixel_sums, visible_faces, zbuffer
from twin.texture._kernels import sobel_magnitude as _sobel
from twin.texture.views import View

log = logging.getLogger(__name__)

NEAR = 0.1  # m: faces nearer to a camera than this are not drawn
SHRINK = 0.1  # corner test points are pulled this far towards the centroid
GRAD_FLOOR = 1.0  # added to the mean gradient (0..255 grey levels per pixel)
OCC_TOL_PX = 2.5  # depth tolerance of the occlusion test, in pixel footprints
OCC_TOL_M = 0.05  # ... plus this (m)


@dataclass
class Candidates:
    """Visible (face, view) pairs: ``face`` (K,), ``view`` (K,) indices into the view
    list, ``quality`` (K,) the gradient magnitude integral; ``visible`` (V,) faces
    each view sees."""

    face: np.ndarray
    view: np.ndarray
    quality: np.ndarray
    visible: np.ndarray


def sobel_magnitude(image: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude (H, W) float32 of an RGB uint8 image's luminance
    (Numba, one pass; :func:`twin.texture._reference.sobel_magnitude` is the SciPy
    twin)."""
    return _sobel(np.ascontiguousarray(image, dtype=np.uint8))


def view_candidates(
    vertices: np.ndarray,
    faces: np.ndarray,
    normals: np.ndarray,
    view: View,
    grad: np.ndarray,
    *,
    max_angle_deg: float = 85.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Faces ``view`` sees unoccluded and their qualities (see the module docstring).

    ``grad``: the view's :func:`sobel_magnitude`. Memory: the image's pixels (depth
    buffer, face ids) plus a few arrays of the face count."""
    uv, z = view.project(vertices)
    depth, fid = zbuffer(uv, z, faces, view.width, view.height, NEAR)
    w, h = view.width, view.height
    ok = visible_faces(
        np.ascontiguousarray(vertices, dtype=np.float64),
        faces,
        np.ascontiguousarray(normals, dtype=np.float64),
        np.ascontiguousarray(view.R, dtype=np.float64),
        np.ascontiguousarray(view.t, dtype=np.float64),
        float(view.fx),
        float(view.fy),
        float(view.cx),
        float(view.cy),
        depth,
        float(np.cos(np.radians(max_angle_deg))),
        NEAR,
        SHRINK,
        OCC_TOL_PX,
        OCC_TOL_M,
    )
    idx = np.flatnonzero(ok)
    if len(idx) == 0:
        return idx, np.zeros(0)
    tri_uv = uv[faces[idx]]
    # gradient magnitude integral
    t = tri_uv
    area = 0.5 * np.abs(
        (t[:, 1, 0] - t[:, 0, 0]) * (t[:, 2, 1] - t[:, 0, 1])
        - (t[:, 2, 0] - t[:, 0, 0]) * (t[:, 1, 1] - t[:, 0, 1])
    )
    gsum, gcnt = face_pixel_sums(fid, np.ascontiguousarray(grad), len(faces))
    gsum, gcnt = gsum[idx], gcnt[idx]
    cuv = t.mean(axis=1)
    gc = grad[
        np.clip(cuv[:, 1].astype(np.int64), 0, h - 1), np.clip(cuv[:, 0].astype(np.int64), 0, w - 1)
    ]
    gmean = np.where(gcnt > 0, gsum / np.maximum(gcnt, 1), gc)
    return idx, area * (gmean + GRAD_FLOOR)


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit normals (M, 3) from the winding (zero for degenerate faces)."""
    tri = vertices[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    ln = np.linalg.norm(n, axis=1, keepdims=True)
    return np.where(ln > 0, n / np.maximum(ln, 1e-300), 0.0)


def face_adjacency(faces: np.ndarray, n_vertices: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Pairs of faces sharing an edge: ``(pairs (E, 2), edge vertices (E, 2), n_nonmanifold)``.

    An edge used by more than two faces (non-manifold) links its faces in a chain
    (sorted order) and is counted. Memory: ~100 bytes per face."""
    e = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    key = e[:, 0].astype(np.int64) * int(n_vertices) + e[:, 1]
    order = np.argsort(key, kind="stable")
    ks = key[order]
    fs = order // 3
    same = ks[1:] == ks[:-1]
    pairs = np.column_stack([fs[:-1][same], fs[1:][same]])
    edges = e[order[:-1][same]]
    keep = pairs[:, 0] != pairs[:, 1]
    _, counts = np.unique(ks, return_counts=True)
    return pairs[keep], edges[keep], int((counts > 2).sum())


def labelling_energy(labels, cand_cost_of, pairs, weight) -> float:
    """``sum_f D(f, l_f) + weight * #(adjacent pairs with different labels)``."""
    data = float(cand_cost_of(labels).sum())
    diff = labels[pairs[:, 0]] != labels[pairs[:, 1]]
    return data + weight * float(diff.sum())


class _CostTable:
    """Data costs of the candidates, looked up per (face, label)."""

    def __init__(self, n_faces: int, face: np.ndarray, label: np.ndarray, cost: np.ndarray):
        order = np.lexsort((label, face))
        self.face, self.label, self.cost = face[order], label[order], cost[order]
        self.n_labels = int(label.max()) + 1 if len(label) else 0
        self.key = self.face.astype(np.int64) * max(self.n_labels, 1) + self.label

    def __call__(self, labels: np.ndarray, faces: np.ndarray | None = None) -> np.ndarray:
        f = np.arange(len(labels)) if faces is None else faces
        lab = labels if faces is None else labels[faces]
        out = np.zeros(len(f))
        have = lab >= 0
        k = f[have].astype(np.int64) * max(self.n_labels, 1) + lab[have]
        pos = np.searchsorted(self.key, k)
        pos = np.minimum(pos, len(self.key) - 1)
        hit = self.key[pos] == k
        vals = np.where(hit, self.cost[pos], np.inf)
        out[have] = vals
        return out

    def of_label(self, a: int) -> tuple[np.ndarray, np.ndarray]:
        m = self.label == a
        return self.face[m], self.cost[m]


def data_costs(cand: Candidates, n_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """``D(f, l) = 1 - q / max_l q`` per candidate, and the greedy best view per face
    (-1 where no view sees the face)."""
    best_q = np.zeros(n_faces)
    np.maximum.at(best_q, cand.face, cand.quality)
    cost = 1.0 - cand.quality / np.maximum(best_q[cand.face], 1e-300)
    greedy = np.full(n_faces, -1, dtype=np.int64)
    order = np.lexsort((-cand.quality, cand.face))
    first = np.ones(len(order), bool)
    first[1:] = cand.face[order][1:] != cand.face[order][:-1]
    greedy[cand.face[order][first]] = cand.view[order][first]
    return cost, greedy


def alpha_expansion(
    n_faces: int,
    cand_face: np.ndarray,
    cand_label: np.ndarray,
    cand_cost: np.ndarray,
    pairs: np.ndarray,
    weight: float,
    init: np.ndarray,
    *,
    max_cycles: int = 4,
) -> tuple[np.ndarray, dict]:
    """Alpha expansion for a Potts MRF whose labels are restricted to candidates.

    ``init`` must give every face a candidate label (or -1 for faces without any,
    which stay fixed). Returns the labels and ``{"energy", "initial_energy",
    "cycles", "moves"}``. Memory: a graph over the faces one label sees (~100 bytes
    per node and per adjacent pair) at a time."""
    import maxflow

    table = _CostTable(n_faces, cand_face, cand_label, cand_cost)
    labels = np.asarray(init, dtype=np.int64).copy()
    cur = table(labels)  # data cost of each face's current label
    p, q = pairs[:, 0], pairs[:, 1]

    def energy_of(lab, dcost):
        return float(dcost.sum()) + weight * float((lab[p] != lab[q]).sum())

    energy = energy_of(labels, cur)
    stats = {"initial_energy": energy, "cycles": 0, "moves": 0}
    per_label = [table.of_label(a) for a in range(table.n_labels)]
    local = np.full(n_faces, -1, dtype=np.int64)
    for cycle in range(max_cycles):
        improved = False
        for a in range(table.n_labels):
            fa, ca = per_label[a]
            move = labels[fa] != a
            nodes, c1 = fa[move], ca[move]
            k = len(nodes)
            if k == 0:
                continue
            c0 = cur[nodes]
            local[nodes] = np.arange(k)
            ip, iq = local[p], local[q]
            touch = (ip >= 0) | (iq >= 0)
            ip, iq = ip[touch], iq[touch]
            lp, lq = labels[p[touch]], labels[q[touch]]
            both = (ip >= 0) & (iq >= 0)
            only_p = (ip >= 0) & (iq < 0)
            only_q = (iq >= 0) & (ip < 0)
            u0 = c0.copy()
            u1 = c1.copy()
            # pairs inside the move: E00 = w[lp != lq], E01 = E10 = w, E11 = 0
            e00 = weight * (lp[both] != lq[both])
            u1 += np.bincount(ip[both], weights=weight - e00, minlength=k)
            u1 -= np.bincount(iq[both], weights=np.full(both.sum(), weight), minlength=k)
            lam = 2.0 * weight - e00
            # pairs with one fixed end: plain unary terms
            u0 += np.bincount(ip[only_p], weights=weight * (lp[only_p] != lq[only_p]), minlength=k)
            u1 += np.bincount(ip[only_p], weights=weight * (lq[only_p] != a), minlength=k)
            u0 += np.bincount(iq[only_q], weights=weight * (lp[only_q] != lq[only_q]), minlength=k)
            u1 += np.bincount(iq[only_q], weights=weight * (lp[only_q] != a), minlength=k)
            m = np.minimum(u0, u1)
            g = maxflow.Graph[float](k, int(both.sum()))
            g.add_nodes(k)
            g.add_grid_tedges(np.arange(k), u1 - m, u0 - m)
            if both.any():
                g.add_edges(ip[both], iq[both], lam, np.zeros(len(lam)))
            g.maxflow()
            switch = g.get_grid_segments(np.arange(k))
            local[nodes] = -1
            if not switch.any():
                continue
            new = labels.copy()
            new[nodes[switch]] = a
            new_cur = cur.copy()
            new_cur[nodes[switch]] = c1[switch]
            e_new = energy_of(new, new_cur)
            if e_new < energy - 1e-9 * max(1.0, abs(energy)):
                labels, cur, energy = new, new_cur, e_new
                improved = True
                stats["moves"] += 1
        stats["cycles"] = cycle + 1
        if not improved:
            break
    stats["energy"] = energy
    return labels, stats


def photo_consistent(
    cand: Candidates,
    colour: np.ndarray,
    n_faces: int,
    *,
    threshold: float = 30.0,
    min_views: int = 3,
) -> np.ndarray:
    """Which candidates agree with the consensus colour of their face (bool (K,)).

    ``colour`` (K, 3): each candidate's colour of its face. For faces with at least
    ``min_views`` candidates, the consensus is a trimmed mean (two passes: the mean,
    then the mean of the candidates within ``threshold`` of it); candidates further
    than ``threshold`` (mean absolute RGB, grey levels) from it are rejected unless
    that would leave the face with none. This drops views where something the mesh
    does not model (a tree, a vehicle, a crane) stands in front of the face."""
    f = cand.face
    count = np.bincount(f, minlength=n_faces)
    keep = np.ones(len(f), bool)
    for _ in range(2):
        w = keep.astype(float)
        den = np.maximum(np.bincount(f, weights=w, minlength=n_faces), 1e-12)
        mean = np.column_stack(
            [np.bincount(f, weights=w * colour[:, c], minlength=n_faces) / den for c in range(3)]
        )
        dev = np.abs(colour - mean[f]).mean(axis=1)
        keep = (dev <= threshold) | (count[f] < min_views)
    # never leave a face without a view
    left = np.bincount(f, weights=keep.astype(float), minlength=n_faces)
    keep |= left[f] == 0
    return keep
