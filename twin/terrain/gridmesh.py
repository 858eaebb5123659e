"""Regular-grid triangulation of a DEM (the first, simple terrain mesh).

Issue 5 replaces it with an error-bounded TIN behind the same small signature.
"""

from __future__ import annotations

import numpy as np

from twin.crs import LocalFrame
from twin.errors import InputError, ParameterError
from twin.terrain.dem import Dem


def grid_indices(n: int, step: int) -> np.ndarray:
    """Every ``step``-th index of ``0 .. n-1``, plus ``n-1`` so the grid reaches the edge."""
    idx = np.arange(0, n, step)
    if idx[-1] != n - 1:
        idx = np.append(idx, n - 1)
    return idx


def dem_to_mesh(dem: Dem, frame: LocalFrame, step: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Triangulate the DEM's pixel centres and return them in ``frame``'s ENU metres.

    Samples rows and columns ``0, step, 2*step, ...`` and always the last one. Each
    grid cell whose four corners all have heights becomes two triangles (split
    along the SW-NE diagonal in map space), counter-clockwise seen from above
    (normals up), whatever the raster's orientation; cells touching nodata are left
    out, and vertices no triangle uses are dropped. Vertices are ``(x, y, height)``
    of the pixel centres in the DEM's CRS, transformed with ``frame.from_crs``.

    Returns ``(vertices (N, 3) float64 ENU m, faces (M, 3) uint32)``. Memory grows
    with the number of sampled pixels, ``rows * cols / step**2``.
    """
    if int(step) != step or step < 1:
        raise ParameterError(f"terrain grid step must be a positive integer, got {step!r}")
    step = int(step)
    rows, cols = dem.shape
    ri = grid_indices(rows, step)
    ci = grid_indices(cols, step)
    nr, nc = len(ri), len(ci)
    if nr < 2 or nc < 2:
        raise InputError(f"the DEM ({rows} x {cols} pixels) is too small to mesh", path=dem.path)
    rr, cc = np.meshgrid(ri, ci, indexing="ij")
    x, y = dem.pixel_centres(rr, cc)
    z = dem.heights[rr, cc]
    ok = np.isfinite(z)

    # corner vertex ids of each cell (grid row i, col j): a=(i,j) b=(i,j+1) c=(i+1,j) d=(i+1,j+1)
    vid = np.arange(nr * nc).reshape(nr, nc)
    a = vid[:-1, :-1].ravel()
    b = vid[:-1, 1:].ravel()
    c = vid[1:, :-1].ravel()
    d = vid[1:, 1:].ravel()
    okf = ok.ravel()
    cell_ok = okf[a] & okf[b] & okf[c] & okf[d]
    a, b, c, d = a[cell_ok], b[cell_ok], c[cell_ok], d[cell_ok]
    # north-up rasters (det < 0): c=SW, d=SE, b=NE, a=NW -> (c, d, b) and (c, b, a) are CCW
    t = dem.transform
    if t.a * t.e - t.b * t.d < 0:
        faces = np.concatenate([np.column_stack([c, d, b]), np.column_stack([c, b, a])])
    else:  # south-up or mirrored: same split, reversed winding
        faces = np.concatenate([np.column_stack([c, b, d]), np.column_stack([c, a, b])])
    if len(faces) == 0:
        raise InputError("no DEM cell has four valid corners: nothing to mesh", path=dem.path)

    used = np.zeros(nr * nc, dtype=bool)
    used[faces.ravel()] = True
    remap = np.full(nr * nc, -1, dtype=np.int64)
    remap[used] = np.arange(int(used.sum()))
    xyz = np.column_stack([x.ravel()[used], y.ravel()[used], z.ravel()[used]])
    vertices = frame.from_crs(xyz, dem.crs)
    return vertices, remap[faces].astype(np.uint32)
