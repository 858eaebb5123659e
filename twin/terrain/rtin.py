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


def clip_to_extent(gx, gy, gz, faces, xmax: float, ymax: float):
    """Clip a TIN (grid units) to x <= xmax and y <= ymax.

    Triangles inside are kept as they are; the others are clipped on their own plane
    (new vertices interpolate along the cut edges, so the surface does not change) and
    fan-triangulated, keeping their orientation; triangles entirely outside vanish
    (:func:`twin.terrain._kernels.clip_tin`). Cut points shared by two triangles, or
    landing on an existing vertex, are merged by position; vertices left unused are
    removed by the caller.
    """
    nx, ny, nz, f = _kernels.clip_tin(gx, gy, gz, np.ascontiguousarray(faces), xmax, ymax)
    vx = np.concatenate([gx, nx])
    vy = np.concatenate([gy, ny])
    vz = np.concatenate([gz, nz])
    if len(nx):
        # merge by position: the cut points among themselves and with the original
        # vertices on the cut lines (the only ones they can coincide with)
        n0 = len(gx)
        on = np.nonzero((gx == xmax) | (gy == ymax))[0]
        ids = np.concatenate([on, n0 + np.arange(len(nx))])
        keys = np.column_stack([vx[ids], vy[ids]])
        _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        remap = np.arange(len(vx))
        remap[ids] = ids[first[inverse.ravel()]]
        f = remap[f]
    return vx, vy, vz, f
