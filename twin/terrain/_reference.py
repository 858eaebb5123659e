"""Plain Python/NumPy references for the terrain kernels (slow; for tests only).

They are written differently from the kernels on purpose, so that a bug cannot hide
by agreeing with itself: the greedy refinement re-triangulates a Bowyer-Watson cavity
found by testing every triangle (no half-edges, no flips, no heap), the rasteriser
evaluates barycentric coordinates on a dense bounding-box grid, and the RTIN recurses
on Python tuples. Grid coordinates as in :mod:`._kernels`: x = column, y = row.
Memory and time grow with (triangles x samples): keep inputs tiny (up to ~33 x 33).
"""

from __future__ import annotations

import numpy as np


def _orient(a, b, c) -> int:
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])


def _incircle(a, b, c, d) -> int:
    """> 0 when d is strictly inside the circumcircle of CCW (a, b, c); exact (ints)."""
    m = [[p[0] - d[0], p[1] - d[1], (p[0] - d[0]) ** 2 + (p[1] - d[1]) ** 2] for p in (a, b, c)]
    return (
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    )


def surface_ref(gv: np.ndarray, faces: np.ndarray, shape, eps: float = 1e-9):
    """Per-sample TIN heights: for each triangle, barycentric interpolation at the grid
    samples inside it (closed, tolerance ``eps``). Returns ``(zmin, zmax, tri_of)``:
    lowest and highest TIN height seen at each sample over the triangles covering it
    (NaN where none does) and, per triangle, the flat sample indices it covers."""
    rows, cols = shape
    zmin = np.full(shape, np.inf)
    zmax = np.full(shape, -np.inf)
    covers = []
    for f in np.asarray(faces, dtype=np.int64):
        p = gv[f]
        x0, y0 = p[:, 0].min(), p[:, 1].min()
        x1, y1 = p[:, 0].max(), p[:, 1].max()
        xs = np.arange(max(0, int(np.ceil(x0 - eps))), min(cols - 1, int(np.floor(x1 + eps))) + 1)
        ys = np.arange(max(0, int(np.ceil(y0 - eps))), min(rows - 1, int(np.floor(y1 + eps))) + 1)
        X, Y = np.meshgrid(xs, ys)
        X = X.ravel().astype(float)
        Y = Y.ravel().astype(float)
        (ax, ay, az), (bx, by, bz), (cx, cy, cz) = p
        det = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
        if det == 0:
            covers.append(np.zeros(0, np.int64))
            continue
        l1 = ((X - ax) * (cy - ay) - (Y - ay) * (cx - ax)) / det
        l2 = ((bx - ax) * (Y - ay) - (by - ay) * (X - ax)) / det
        l0 = 1.0 - l1 - l2
        inside = (l0 >= -eps) & (l1 >= -eps) & (l2 >= -eps)
        z = l0 * az + l1 * bz + l2 * cz
        xi = X[inside].astype(np.int64)
        yi = Y[inside].astype(np.int64)
        zi = z[inside]
        np.minimum.at(zmin, (yi, xi), zi)
        np.maximum.at(zmax, (yi, xi), zi)
        covers.append(yi * cols + xi)
    zmin[np.isinf(zmin)] = np.nan
    zmax[np.isinf(zmax)] = np.nan
    return zmin, zmax, covers


def sample_errors_ref(gv: np.ndarray, faces: np.ndarray, herr: np.ndarray):
    """Reference of :func:`._kernels.tin_sample_errors`: ``(err, tri_err)``."""
    zmin, zmax, covers = surface_ref(gv, faces, herr.shape)
    err = np.maximum(np.abs(zmin - herr), np.abs(zmax - herr))
    valid = np.isfinite(herr)
    err[valid & np.isnan(zmin)] = np.inf
    err[~valid] = np.nan
    flat = herr.ravel()
    tri_err = np.full(len(covers), -1.0)
    for k, idx in enumerate(covers):
        idx = idx[np.isfinite(flat[idx])]
        if idx.size:
            # per-triangle error needs that triangle's own plane
            p = gv[np.asarray(faces[k], dtype=np.int64)]
            tri_err[k] = _tri_plane_err(p, idx, herr)
    return err, tri_err


def _tri_plane_err(p, idx, herr):
    cols = herr.shape[1]
    X = (idx % cols).astype(float)
    Y = (idx // cols).astype(float)
    (ax, ay, az), (bx, by, bz), (cx, cy, cz) = p
    det = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
    l1 = ((X - ax) * (cy - ay) - (Y - ay) * (cx - ax)) / det
    l2 = ((bx - ax) * (Y - ay) - (by - ay) * (X - ax)) / det
    z = (1.0 - l1 - l2) * az + l1 * bz + l2 * cz
    return float(np.max(np.abs(z - herr.ravel()[idx])))


def _worst(tri, pts, herr):
    """First (row-major) worst valid sample of a triangle: (err, (x, y)) or (-1, None)."""
    a, b, c = (pts[i] for i in tri)
    if _orient(a, b, c) < 0:
        b, c = c, b
    xs = range(min(a[0], b[0], c[0]), max(a[0], b[0], c[0]) + 1)
    ys = range(min(a[1], b[1], c[1]), max(a[1], b[1], c[1]) + 1)
    det = _orient(a, b, c)
    best, arg = -1.0, None
    for y in ys:
        for x in xs:
            q = (x, y)
            w0, w1, w2 = _orient(b, c, q), _orient(c, a, q), _orient(a, b, q)
            if w0 < 0 or w1 < 0 or w2 < 0:
                continue
            h = herr[y, x]
            if not np.isfinite(h):
                continue
            z = (w0 * a[2] + w1 * b[2] + w2 * c[2]) / det
            e = abs(z - h)
            if e > best:
                best, arg = e, q
    return best, arg


def greedy_refine_ref(herr: np.ndarray, corner_z, max_error: float):
    """Reference greedy Delaunay refinement (Bowyer-Watson with a strict in-circle
    test; the worst triangle's first worst sample is inserted until all are within
    ``max_error``). Returns ``(points, triangles)``: a list of (x, y, z) and a set of
    CCW vertex-index triples rotated to start at their smallest index."""
    rows, cols = herr.shape
    W, H = cols - 1, rows - 1
    pts = [(0, 0, corner_z[0]), (W, 0, corner_z[1]), (W, H, corner_z[2]), (0, H, corner_z[3])]
    tris = {(0, 1, 2), (0, 2, 3)}
    worst = {t: _worst(t, pts, herr) for t in tris}
    while True:
        t = max(worst, key=lambda k: worst[k][0])
        err, q = worst[t]
        if err <= max_error:
            break
        p = len(pts)
        pts.append((q[0], q[1], float(herr[q[1], q[0]])))
        bad = [s for s in tris if _incircle(pts[s[0]], pts[s[1]], pts[s[2]], pts[p]) > 0 or s == t]
        edges = set()
        for s in bad:
            for i in range(3):
                edges.add((s[i], s[(i + 1) % 3]))
        boundary = [(u, v) for (u, v) in edges if (v, u) not in edges]
        for s in bad:
            tris.discard(s)
            worst.pop(s)
        for u, v in boundary:
            if _orient(pts[u], pts[v], pts[p]) > 0:
                s = _canon((u, v, p))
                tris.add(s)
                worst[s] = _worst(s, pts, herr)
    return pts, tris


def _canon(t):
    k = t.index(min(t))
    return t[k:] + t[:k]


def rtin_ref(herr: np.ndarray, hvert: np.ndarray, max_error: float):
    """Reference RTIN on a (2**k+1)**2 grid: exact error of every hierarchy triangle
    (own plane, every valid sample inside), max-propagated to the hypotenuse midpoints
    of its ancestors and hypotenuse neighbour, then split where the midpoint error
    exceeds ``max_error``. Returns a set of triangles as canonical CCW triples of (x, y)
    grid nodes."""
    s = herr.shape[0]
    S = s - 1
    roots = [((0, 0), (S, S), (S, 0)), ((S, S), (0, 0), (0, S))]

    def children(t):
        a, b, c = t
        m = ((a[0] + b[0]) // 2, (a[1] + b[1]) // 2)
        return (c, a, m), (b, c, m)

    def is_leaf(t):
        a, b, _ = t
        return abs(a[0] - b[0]) + abs(a[1] - b[1]) <= 1 or (
            abs(a[0] - b[0]) == 1 and abs(a[1] - b[1]) == 1
        )

    def plane_err(t):
        pts = [(x, y, hvert[y, x]) for (x, y) in t]
        e, _ = _worst((0, 1, 2), pts, herr)
        return e

    levels = []
    frontier = list(roots)
    while frontier and not is_leaf(frontier[0]):
        levels.append(frontier)
        frontier = [c for t in frontier for c in children(t)]
    E = np.zeros((s, s))
    for lev in reversed(levels):
        for t in lev:
            a, b, _ = t
            m = ((a[0] + b[0]) // 2, (a[1] + b[1]) // 2)
            e = plane_err(t)
            for c in children(t):
                if not is_leaf(c):
                    ca, cb, _ = c
                    e = max(e, E[(ca[1] + cb[1]) // 2, (ca[0] + cb[0]) // 2])
            E[m[1], m[0]] = max(E[m[1], m[0]], e)
    out = set()

    def emit(t):
        a, b, _ = t
        m = ((a[0] + b[0]) // 2, (a[1] + b[1]) // 2)
        if not is_leaf(t) and E[m[1], m[0]] > max_error:
            for c in children(t):
                emit(c)
            return
        a, b, c = t
        if _orient(a, b, c) < 0:
            b, c = c, b
        out.add(_canon((a, b, c)))

    for r in roots:
        emit(r)
    return out


def refine_profile_ref(z, pos, zfix, max_error: float) -> np.ndarray:
    """Reference of :func:`._kernels.refine_profile`: a boolean mask of the samples
    chosen (recursive worst-sample splitting between fixed vertices)."""
    z = np.asarray(z, dtype=np.float64)
    chosen = np.zeros(len(z), bool)

    def split(a, za, b, zb):
        best, bi = max_error, -1
        for i in range(len(z)):
            if not (a < i < b) or not np.isfinite(z[i]):
                continue
            e = abs(za + (zb - za) * (i - a) / (b - a) - z[i])
            if e > best:
                best, bi = e, i
        if bi >= 0:
            chosen[bi] = True
            split(a, za, bi, z[bi])
            split(bi, z[bi], b, zb)

    for k in range(len(pos) - 1):
        split(float(pos[k]), float(zfix[k]), float(pos[k + 1]), float(zfix[k + 1]))
    return chosen
