"""RTIN mode of :func:`twin.terrain.tin`: a right-triangulated irregular network.

The raster is placed in the top-left corner of the smallest (2**k + 1)**2 grid that
holds it; the padding is invalid (it never counts toward an error) and its nodes take
the nearest valid height. The binary hierarchy of right isosceles triangles is the
one Martini uses, but each triangle's error is measured over *every* valid sample in
it (not only its hypotenuse midpoint) and propagated to its ancestors, so the bound
always holds (:func:`twin.terrain._kernels.rtin_errors`). Triangles that reach into
the padding are clipped to the raster's extent (x <= cols-1, y <= rows-1, grid units)
on their own plane, so the clipped surface is the same surface.
"""

from __future__ import annotations

import numpy as np

from twin.terrain import _kernels


def rtin_size(rows: int, cols: int) -> int:
    """Side s = 2**k + 1 of the smallest RTIN grid holding a rows x cols raster."""
    s = 1
    while s + 1 < max(rows, cols):
        s *= 2
    return s + 1


def rtin_grid(herr: np.ndarray, valid: np.ndarray, max_error: float):
    """RTIN of ``herr`` (heights, NaN where invalid) within ``max_error``.

    Returns ``(gx, gy, gz, faces)``: vertex columns, rows (grid units, float64),
    heights, and (M, 3) integer faces, CCW with x = column, y = row. Triangles over
    holes are kept here; :func:`twin.terrain.tin.tin` drops those without a valid
    sample. Memory: about 45 bytes per sample of the padded grid.
    """
    rows, cols = herr.shape
    s = rtin_size(rows, cols)
    if rows == s and cols == s:
        hp, vp = herr, valid
    else:
        hp = np.full((s, s), np.nan)
        hp[:rows, :cols] = herr
        vp = np.zeros((s, s), bool)
        vp[:rows, :cols] = valid
    hvert = hp if rows == s and cols == s and valid.all() else _kernels.fill_nearest(hp, vp)
    E = _kernels.rtin_errors(hp, hvert, max_error)
    vid, tri = _kernels.rtin_extract(E, max_error)
    ys, xs = np.nonzero(vid >= 0)  # row-major, the kernel's vertex order
    gx = xs.astype(np.float64)
    gy = ys.astype(np.float64)
    gz = hvert[ys, xs]
    faces = tri
    if rows < s or cols < s:
        gx, gy, gz, faces = clip_to_extent(gx, gy, gz, faces, cols - 1.0, rows - 1.0)
    return gx, gy, gz, faces


def _cut(p, q, axis: int, limit: float):
    """Point where segment p-q crosses coordinate ``axis`` == limit, computed from the
    endpoints in sorted order so both triangles sharing the edge get the same bits."""
    if (p[0], p[1]) > (q[0], q[1]):
        p, q = q, p
    t = (limit - p[axis]) / (q[axis] - p[axis])
    out = [p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1]), p[2] + t * (q[2] - p[2])]
    out[axis] = limit
    return tuple(out)


def _clip_poly(poly, axis: int, limit: float):
    """Sutherland-Hodgman: keep the part of a polygon with coordinate ``axis`` <= limit."""
    out = []
    n = len(poly)
    for i in range(n):
        p = poly[i]
        q = poly[(i + 1) % n]
        pin = p[axis] <= limit
        qin = q[axis] <= limit
        if pin:
            out.append(p)
        if pin != qin:
            out.append(_cut(p, q, axis, limit))
    return out


def clip_to_extent(gx, gy, gz, faces, xmax: float, ymax: float):
    """Clip a TIN (grid units) to x <= xmax and y <= ymax.

    Triangles inside are kept as they are; the others are clipped on their own plane
    (new vertices interpolate along the cut edges, so the surface does not change) and
    fan-triangulated, keeping their orientation. Triangles entirely outside vanish.
    Work is Python-level per clipped triangle (only those crossing the right or bottom
    edge of the raster).
    """
    outside = (gx > xmax) | (gy > ymax)
    cross = outside[faces].any(axis=1)
    kept = faces[~cross].astype(np.int64)
    verts = [tuple(v) for v in np.column_stack([gx, gy, gz])]
    index = {(v[0], v[1]): i for i, v in enumerate(verts)}
    new_faces = []
    for tri in faces[cross]:
        poly = [verts[i] for i in tri]
        poly = _clip_poly(poly, 0, xmax)
        if len(poly) >= 3:
            poly = _clip_poly(poly, 1, ymax)
        if len(poly) < 3:
            continue
        ids = []
        for v in poly:
            key = (v[0], v[1])
            i = index.get(key)
            if i is None:
                i = len(verts)
                verts.append(v)
                index[key] = i
            if not ids or ids[-1] != i:
                ids.append(i)
        if len(ids) > 1 and ids[0] == ids[-1]:
            ids.pop()
        for k in range(1, len(ids) - 1):
            a, b, c = verts[ids[0]], verts[ids[k]], verts[ids[k + 1]]
            area = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
            if area != 0.0:
                new_faces.append((ids[0], ids[k], ids[k + 1]))
    v = np.array(verts, dtype=np.float64)
    f = np.concatenate([kept, np.array(new_faces, dtype=np.int64).reshape(-1, 3)])
    return v[:, 0].copy(), v[:, 1].copy(), v[:, 2].copy(), f
