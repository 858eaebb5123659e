"""Error-bounded triangulated irregular networks (TIN) from a height grid.

:func:`tin` turns a DEM (a 2D array of heights) into a triangle mesh whose surface is
within ``max_error`` (vertically) of every valid sample: a guarantee, measured on the
output by rasterising the TIN back onto the grid. Two modes:

``"greedy"``
    Greedy Delaunay refinement (:func:`twin.terrain._kernels.greedy_refine`): the
    fewest triangles for a given error in practice; O(n log n) work.
``"rtin"``
    A right-triangulated irregular network (:mod:`twin.terrain.rtin`) on the
    (2**k + 1)**2 grid that contains the raster: regular triangles, faster, more of
    them; unlike Martini, its hierarchical errors cover every sample (exact).

Masked samples (nodata, NaN, ``mask == False``) never count toward the error and are
never used as vertices where a valid sample can be; see :func:`tin` for the exact
rules. Constraint edges (roads, water lines, footprints) are forced in as chains of
TIN edges (constrained Delaunay); large rasters are triangulated in tiles in
parallel with matching borders (:mod:`twin.terrain.tiled`); buildings are seated
on the terrain by :mod:`twin.terrain.seating`; quantized-mesh tiles for CesiumJS
come from :mod:`twin.terrain.tiling`.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from twin.errors import InputError, ParameterError
from twin.terrain import _kernels

log = logging.getLogger(__name__)

#: Largest grid side the greedy mode accepts (its in-circle test is exact in int64 up
#: to 2**14; larger rasters are triangulated in tiles).
MAX_GREEDY_SIDE = 2**14 + 1

MODES = ("greedy", "rtin")

#: Peak bytes per input sample of an untiled TIN with very many triangles (measured:
#: 135 at 1.3 triangles per sample); larger grids than memory allows need tiles.
BYTES_PER_SAMPLE = 150


def _affine6(transform: Any) -> tuple[float, float, float, float, float, float] | None:
    """(a, b, c, d, e, f) of an affine transform: x = a*col + b*row + c,
    y = d*col + e*row + f (rasterio ``Affine`` order, not GDAL's geotransform)."""
    if transform is None:
        return None
    if all(hasattr(transform, k) for k in "abcdef"):
        vals = [transform.a, transform.b, transform.c, transform.d, transform.e, transform.f]
    else:
        try:
            vals = list(transform)
        except TypeError:
            vals = []
        if len(vals) not in (6, 9):
            raise ParameterError(
                f"transform must be a rasterio Affine or a 6-tuple (a, b, c, d, e, f), "
                f"got {transform!r}"
            )
        vals = vals[:6]
    try:
        out = tuple(float(v) for v in vals)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"transform has non-numeric terms: {transform!r}") from exc
    a, b, _, d, e, _ = out
    if not all(math.isfinite(v) for v in out) or a * e - b * d == 0.0:
        raise ParameterError(f"transform is singular or not finite: {transform!r}")
    return out  # type: ignore[return-value]


def _check_inputs(heights, max_error, mask, mode, constraints):
    """Validate and normalise the arguments of :func:`tin`; returns (herr, valid)."""
    if mode not in MODES:
        raise ParameterError(f"mode must be one of {MODES}, got {mode!r}")
    try:
        max_error = float(max_error)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"max_error must be a number, got {max_error!r}") from exc
    if not math.isfinite(max_error) or max_error <= 0.0:
        raise ParameterError(f"max_error must be a positive finite number, got {max_error!r}")
    if constraints is not None and mode != "greedy":
        raise ParameterError(
            f"constraint edges need mode='greedy' (RTIN has fixed vertices), got mode={mode!r}"
        )
    try:
        h = np.asarray(heights, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"heights are not a numeric array: {exc}") from exc
    if h.ndim != 2:
        raise InputError(f"heights must be a 2D grid (rows, cols), got shape {h.shape}")
    if h.shape[0] < 2 or h.shape[1] < 2:
        raise InputError(
            f"heights must have at least 2 rows and 2 columns to triangulate, got shape {h.shape}"
        )
    valid = np.isfinite(h)
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != h.shape:
            raise InputError(f"mask shape {m.shape} differs from heights shape {h.shape}")
        valid &= m.astype(bool)
    if not valid.any():
        raise InputError("heights have no valid sample (all NaN, nodata or masked)")
    herr = h if valid.all() else np.where(valid, h, np.nan)
    return np.ascontiguousarray(herr), valid, max_error


def _nearest_valid(herr: np.ndarray, valid: np.ndarray, row: int, col: int) -> float:
    """Height of a valid sample near (row, col): the nearest within the smallest square
    window around it that holds one."""
    if valid[row, col]:
        return float(herr[row, col])
    rows, cols = herr.shape
    r = 1
    while True:
        r0, r1 = max(0, row - r), min(rows, row + r + 1)
        c0, c1 = max(0, col - r), min(cols, col + r + 1)
        win = valid[r0:r1, c0:c1]
        if win.any():
            yy, xx = np.nonzero(win)
            d2 = (yy + r0 - row) ** 2 + (xx + c0 - col) ** 2
            k = int(np.argmin(d2))
            return float(herr[yy[k] + r0, xx[k] + c0])
        r *= 2


def _greedy(herr: np.ndarray, valid: np.ndarray, max_error: float, forced=None):
    """Greedy refinement; ``forced`` = (fx, fy, fz, seg, seg_linear, hfill) in grid units
    (see :func:`twin.terrain._kernels.greedy_refine_forced`) or None."""
    rows, cols = herr.shape
    if max(rows, cols) > MAX_GREEDY_SIDE:
        raise InputError(
            f"grid {rows}x{cols} is larger than {MAX_GREEDY_SIDE} samples a side; "
            "triangulate it in tiles (tin(..., tile_size=1024))"
        )
    corners = np.array(
        [
            _nearest_valid(herr, valid, 0, 0),
            _nearest_valid(herr, valid, 0, cols - 1),
            _nearest_valid(herr, valid, rows - 1, cols - 1),
            _nearest_valid(herr, valid, rows - 1, 0),
        ]
    )
    if forced is None:
        px, py, pz, tri, _ = _kernels.greedy_refine(herr, corners, max_error)
        return px, py, pz, tri.reshape(-1, 3)
    fx, fy, fz, seg, seg_linear, hfill = forced
    px, py, pz, tri, _, _, failed = _kernels.greedy_refine_forced(
        herr, corners, max_error, fx, fy, fz, seg, seg_linear, hfill
    )
    if failed:
        raise RuntimeError(  # a bug, not a user error
            f"{failed} constraint vertices or segments could not be forced into the TIN"
        )
    return px, py, pz, tri.reshape(-1, 3)


def _iter_lines(obj, where="constraints"):
    """Yield (K, 2) float arrays (polylines) from shapely geometries, arrays, GeoPandas
    objects or lists of them; polygons give their rings."""
    if obj is None:
        return
    if hasattr(obj, "iloc"):  # GeoDataFrame / GeoSeries
        obj = list(obj.geometry) if hasattr(obj, "geometry") else list(obj)
    if hasattr(obj, "geom_type"):
        gt = obj.geom_type
        if obj.is_empty:
            return
        if gt in ("LineString", "LinearRing"):
            yield np.asarray(obj.coords, dtype=np.float64)[:, :2]
        elif gt == "Polygon":
            yield np.asarray(obj.exterior.coords, dtype=np.float64)[:, :2]
            for ring in obj.interiors:
                yield np.asarray(ring.coords, dtype=np.float64)[:, :2]
        elif gt in ("MultiLineString", "MultiPolygon", "GeometryCollection"):
            for g in obj.geoms:
                yield from _iter_lines(g, where)
        else:
            raise ParameterError(f"{where}: a {gt} cannot be a constraint edge")
        return
    if isinstance(obj, np.ndarray) and obj.dtype != object:
        a = obj.astype(np.float64)
        if a.ndim != 2 or a.shape[1] not in (2, 3) or len(a) < 2:
            raise ParameterError(
                f"{where}: a polyline array must have shape (K, 2) with K >= 2, got {a.shape}"
            )
        yield a[:, :2]
        return
    if isinstance(obj, (list, tuple)) or hasattr(obj, "__iter__"):
        items = list(obj)
        if items and all(
            isinstance(it, (list, tuple)) and len(it) in (2, 3) and all(np.isscalar(v) for v in it)
            for it in items
        ):
            # a plain nested list of coordinates
            yield from _iter_lines(np.asarray(items, dtype=np.float64), where)
            return
        for item in items:
            yield from _iter_lines(item, where)
        return
    raise ParameterError(f"{where}: cannot read {type(obj).__name__} as polylines")


def constraint_segments(constraints, shape, transform=None, snap: float = 1e-6):
    """Constraint polylines in grid units, clipped to the grid.

    ``constraints``: shapely geometries (lines, rings, polygons and their multi
    forms), (K, 2) arrays, GeoPandas objects or lists of these, in map coordinates
    when ``transform`` is given (pixel centres, as :func:`tin`), else in grid units
    (x = column, y = row). Returns ``(points, segments)``: unique (P, 2) grid
    coordinates (values within ``snap`` of an integer snapped to it) and (S, 2) int64
    indices of the segments between them, clipped to the grid rectangle
    [0, cols-1] x [0, rows-1]. Memory: linear in the number of vertices.
    """
    import shapely

    rows, cols = shape
    aff = _affine6(transform)
    box = shapely.box(0.0, 0.0, cols - 1.0, rows - 1.0)
    pieces = []
    for line in _iter_lines(constraints):
        if not np.isfinite(line).all():
            raise ParameterError("constraints have NaN or infinite coordinates")
        if aff is not None:
            a, b, c, d, e, f = aff
            det = a * e - b * d
            x = line[:, 0] - c
            y = line[:, 1] - f
            col = (e * x - b * y) / det - 0.5
            row = (-d * x + a * y) / det - 0.5
            line = np.column_stack([col, row])
        geom = shapely.LineString(line).intersection(box)
        for part in _iter_lines_only(geom):
            pieces.append(part)
    if not pieces:
        return np.zeros((0, 2)), np.zeros((0, 2), np.int64)
    pts = np.concatenate(pieces)
    near = np.abs(pts - np.round(pts)) <= snap
    pts = np.where(near, np.round(pts), pts)
    pts = np.clip(pts, 0.0, [cols - 1.0, rows - 1.0])
    uniq, inv = np.unique(pts, axis=0, return_inverse=True)
    inv = inv.ravel()
    segs = []
    k = 0
    for part in pieces:
        idx = inv[k : k + len(part)]
        k += len(part)
        segs.append(np.column_stack([idx[:-1], idx[1:]]))
    seg = np.concatenate(segs).astype(np.int64)
    seg = seg[seg[:, 0] != seg[:, 1]]
    seg = np.unique(np.sort(seg, axis=1), axis=0)
    return uniq, seg


def _iter_lines_only(geom):
    """Line parts of a clipped geometry (points where a line only touches are dropped)."""
    if geom.is_empty:
        return
    gt = geom.geom_type
    if gt == "LineString":
        yield np.asarray(geom.coords, dtype=np.float64)[:, :2]
    elif gt in ("MultiLineString", "GeometryCollection"):
        for g in geom.geoms:
            yield from _iter_lines_only(g)


def tin_errors(grid_vertices: np.ndarray, faces: np.ndarray, herr: np.ndarray):
    """Rasterise a TIN in grid coordinates back onto the grid.

    ``grid_vertices`` (N, 3): (column, row, height); ``faces`` (M, 3) vertex indices;
    ``herr`` the heights with NaN at invalid samples. Returns ``(err, tri_err)``: per
    sample ``|tin - h|`` (NaN where invalid, +inf where no triangle covers a valid
    sample) and per triangle its worst error (-1 when it covers no valid sample).
    Memory: 8 bytes per sample plus 8 per triangle.
    """
    v = np.ascontiguousarray(grid_vertices, dtype=np.float64)
    f = np.ascontiguousarray(faces, dtype=np.int64)
    return _kernels.tin_sample_errors(
        v[:, 0].copy(), v[:, 1].copy(), v[:, 2].copy(), f, np.ascontiguousarray(herr)
    )


def _verify(gv: np.ndarray, faces: np.ndarray, herr: np.ndarray):
    """Per-triangle worst error and the count of uncovered valid samples, by
    rasterising the TIN onto the grid (exact integer spans when every vertex is a grid
    sample, else the float rasteriser)."""
    ix = gv[:, 0].astype(np.int64)
    iy = gv[:, 1].astype(np.int64)
    if np.array_equal(ix, gv[:, 0]) and np.array_equal(iy, gv[:, 1]):
        return _kernels.tin_max_error_int(ix, iy, np.ascontiguousarray(gv[:, 2]), faces, herr)
    err, tri_err = tin_errors(gv, faces, herr)
    return tri_err, int(np.isinf(err).sum())


def tin(
    heights,
    max_error: float,
    transform=None,
    mask=None,
    mode: str = "greedy",
    constraints=None,
    tile_size: int | None = None,
    workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Triangulate a height grid within a guaranteed vertical error.

    Parameters
    ----------
    heights
        2D array (rows, cols) of heights, row 0 first (as a raster is stored). Any
        numeric dtype; NaN and +-inf are invalid samples. Or a DEM raster path (or
        :class:`twin.terrain.dem.DemReader`): triangulated in tiles (``tile_size``,
        default 257) from windowed reads, memory bounded by the tile size plus the
        output (:func:`twin.terrain.windowed.tin_file`; greedy mode, the file's
        transform and nodata).
    max_error
        Largest allowed vertical distance between the TIN and any valid sample, in
        height units (metres for a metric DEM). Must be > 0.
    transform
        Affine from pixel to map coordinates (rasterio ``Affine`` or a 6-tuple
        ``(a, b, c, d, e, f)`` with x = a*col + b*row + c, y = d*col + e*row + f),
        applied to pixel *centres* (col + 0.5, row + 0.5). ``None``: vertices in pixel
        units, x = col, y = row (no half-pixel shift).
    mask
        Boolean array, True where a sample is valid (default: every finite sample). A
        sample is valid when it is finite *and* the mask says so.
    mode
        ``"greedy"`` (greedy Delaunay refinement, fewest triangles) or ``"rtin"``
        (right-triangulated irregular network on the enclosing (2**k+1)**2 grid,
        faster, conforming, more triangles).
    constraints
        Lines to force into the triangulation as edges (roads, water lines, building
        footprints): shapely lines, rings, polygons (their rings) and multi
        geometries, (K, 2) arrays, GeoPandas objects, or a list of them; in map
        coordinates when ``transform`` is given, else in grid units (x = column,
        y = row). They are clipped to the grid. Every segment becomes a chain of TIN
        edges: its vertices are inserted (heights bilinear in the DEM, holes filled
        with the nearest valid height) and it is split where it crosses an edge
        (constrained Delaunay triangulation: no flip crosses it, and a sample falling
        on it splits it). The error bound still holds. Greedy mode only.
    tile_size
        Triangulate in tiles of ``tile_size`` x ``tile_size`` samples, in parallel
        (:mod:`twin.terrain.tiled`): tile borders are refined first as 1-D profiles
        so that neighbours share the same border vertices (no cracks, no
        T-junctions); the bound holds. Needed beyond 16385 samples a side; 129 to
        257 is fastest (a tile's grid and triangles stay in cache). Greedy mode only.
    workers
        Threads for the tiles (default: the CPU count).

    Returns
    -------
    vertices
        (N, 3) float64: map x, map y, height.
    faces
        (M, 3) uint32 vertex indices, counter-clockwise seen from above (+z) in map
        coordinates (orientation follows the sign of the transform's determinant).
    max_error_reached
        Largest ``|tin - h|`` over all valid samples, measured by rasterising the
        output back onto the grid (RTIN on a full (2**k + 1)**2 grid without holes:
        the max of the leaves' exact errors, which the kernel measures as it goes;
        the tests rasterise it back); always ``<= max_error``.

    Nodata
    ------
    Invalid samples never count toward the error. Greedy mode never inserts one:
    every vertex is a valid sample, except a raster corner that is itself invalid,
    which takes the height of the nearest valid sample. So a nodata hole is *bridged*
    by triangles whose vertices are valid samples on its rim (the surface stays
    watertight, as terrain tiles need, and over the hole it interpolates the rim
    heights). RTIN mode has fixed grid nodes; a node on an invalid sample takes a
    nearby valid height (nearest-valid fill), and triangles whose closed footprint
    holds no valid sample are dropped, so a hole larger than the local triangles
    opens. In both modes every vertex height is a valid height found next to it, so a
    hole never makes a spike or a pit, and every valid sample stays covered.
    Vertices only used by dropped triangles are removed.

    Memory
    ------
    Grows with the number of samples n and of output triangles M. Greedy: the
    float64 copy with NaN holes and the mask (9 bytes per sample), about 60 bytes per
    triangle during refinement (flat arrays grown by 1.5x, so up to ~90), 1 byte per
    sample and 16 per triangle for the final check, and the output (24 bytes per
    vertex, 12 per triangle). Measured peak (``benchmarks/terrain.py``, 1025 x 1025
    fractal): about 135 bytes per input sample at 1 m (1.38 M triangles), 20 at 5 m.
    Tiled: per running tile its copy and refinement arrays (bounded by the tile
    size), plus the output of all tiles and the merge; the input array itself is
    the caller's.
    RTIN: the padded (2**k + 1)**2 grid of heights, filled heights (only with holes
    or padding), errors and vertex map (12 to 29 bytes per padded sample) plus the
    output: about 100 bytes per sample at 1 m (1.65 M triangles), 25 at 5 m.

    Raises
    ------
    InputError
        heights not 2D, fewer than 2 rows or columns, no valid sample, mask of another
        shape, grid too large for one greedy triangulation or (untiled) for the memory
        available.
    ParameterError
        ``max_error`` not a positive finite number, unknown ``mode``, bad transform,
        unreadable or non-finite constraints, constraints or tiles with RTIN, a
        ``tile_size`` below 16.
    """
    import os

    from twin.terrain.dem import DemReader

    if isinstance(heights, (str, os.PathLike, DemReader)):
        from twin.terrain.windowed import DEFAULT_TILE, tin_file

        if mode != "greedy" or constraints is not None or mask is not None:
            raise ParameterError(
                "a DEM file is triangulated in tiles from windowed reads: greedy mode, "
                "without mask or constraints (read it with read_dem for those)"
            )
        if transform is not None:
            raise ParameterError("a DEM file brings its own transform: leave transform=None")
        return tin_file(heights, max_error, tile_size or DEFAULT_TILE, workers=workers)
    herr, valid, max_error = _check_inputs(heights, max_error, mask, mode, constraints)
    aff = _affine6(transform)
    forced = None
    if constraints is not None:
        pts, seg = constraint_segments(constraints, herr.shape, transform)
        if len(seg):
            hfill = filled_heights(herr, valid)
            fz = bilinear(hfill, pts[:, 0], pts[:, 1])
            forced = (
                pts[:, 0].copy(),
                pts[:, 1].copy(),
                fz,
                seg,
                np.zeros(len(seg), np.uint8),
                hfill,
            )
        else:
            log.warning("tin: no constraint edge lies on the raster; triangulating without")
    if tile_size is not None and mode != "greedy":
        raise ParameterError(f"tile_size needs mode='greedy', got mode={mode!r}")
    if tile_size is None:
        from twin.terrain.dem import available_memory

        need = BYTES_PER_SAMPLE * herr.size
        if need > available_memory():
            raise InputError(
                f"a {herr.shape[0]} x {herr.shape[1]} grid may need {need / 2**30:.1f} GiB "
                "to triangulate at once, more than the memory available: triangulate it "
                "in tiles (tin(..., tile_size=256))"
            )
    gv, faces, reached = _tin_grid(herr, valid, max_error, mode, forced, tile_size, workers)
    return _to_map(gv, faces, aff, reached)


def filled_heights(herr: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``herr`` with invalid samples set to a nearby valid height (a NaN-free copy
    only when there are holes). Memory: 24 bytes per sample while filling."""
    return herr if valid.all() else _kernels.fill_nearest(herr, valid)


def bilinear(h: np.ndarray, x, y) -> np.ndarray:
    """Bilinear heights of the NaN-free grid ``h`` at grid coordinates (x = column,
    y = row), clamped to the grid."""
    rows, cols = h.shape
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, cols - 1.0)
    y = np.clip(np.asarray(y, dtype=np.float64), 0.0, rows - 1.0)
    c0 = np.minimum(np.floor(x).astype(np.int64), max(cols - 2, 0))
    r0 = np.minimum(np.floor(y).astype(np.int64), max(rows - 2, 0))
    c1 = np.minimum(c0 + 1, cols - 1)
    r1 = np.minimum(r0 + 1, rows - 1)
    tx = x - c0
    ty = y - r0
    top = h[r0, c0] * (1.0 - tx) + h[r0, c1] * tx
    bot = h[r1, c0] * (1.0 - tx) + h[r1, c1] * tx
    return top * (1.0 - ty) + bot * ty


def _tin_grid(herr, valid, max_error, mode, forced=None, tile_size=None, workers=None):
    """TIN in grid units, verified: ``(gv, faces, reached)`` (unused vertices and
    triangles over no valid sample removed)."""
    if tile_size is not None:
        from twin.terrain.tiled import tin_tiled

        gv, faces, tri_max, uncovered = tin_tiled(
            herr, valid, max_error, tile_size, workers, forced
        )
        tri_err = np.array([tri_max])  # already dropped: triangles over no valid sample
    elif mode == "greedy":
        gx, gy, gz, faces = _greedy(herr, valid, max_error, forced)
    else:
        from twin.terrain.rtin import rtin_grid, rtin_size

        s = rtin_size(*herr.shape)
        if herr.shape == (s, s) and valid.all():
            # a full grid: the hierarchical errors are exact, the leaves tile it
            gv, faces, reached = _kernels.rtin_mesh(herr, max_error)
            if not reached <= max_error:
                raise RuntimeError(f"RTIN error {reached} exceeds max_error {max_error}")
            return gv, faces, reached
        gx, gy, gz, faces = rtin_grid(herr, valid, max_error)
    if tile_size is None:
        gv = np.column_stack([gx, gy, gz])
        # verification (and the drop rule): rasterise the TIN back onto the grid
        tri_err, uncovered = _verify(gv, faces, herr)
    if tile_size is None:
        keep = tri_err >= 0.0
        if forced is not None:
            keep[:] = True  # constraint vertices stay, even over nodata
        if not keep.all():
            faces = faces[keep]
    reached = float(tri_err.max()) if uncovered == 0 else math.inf
    # off-grid (constraint) vertices: the float rasteriser may see a sample on an edge
    # from the other triangle, whose plane agrees there to rounding
    slack = 1e-9 * (1.0 + max_error) if forced is not None else 0.0
    if not reached <= max_error + slack:
        raise RuntimeError(  # a bug, not a user error: the guarantee failed
            f"TIN error {reached} exceeds max_error {max_error} ({uncovered} samples uncovered)"
        )
    used = np.zeros(gv.shape[0], bool)
    used[faces.ravel()] = True
    if not used.all():
        remap = np.cumsum(used) - 1
        gv = gv[used]
        faces = remap[faces]

    return gv, faces, reached


def _to_map(gv, faces, aff, reached):
    """Grid-unit TIN to map coordinates, faces CCW in map space, uint32."""
    if aff is None:
        verts = gv  # a fresh array, not shared with the caller
    else:
        a, b, c, d, e, f = aff
        cx = gv[:, 0] + 0.5
        cy = gv[:, 1] + 0.5
        verts = np.column_stack([a * cx + b * cy + c, d * cx + e * cy + f, gv[:, 2]])
        if a * e - b * d < 0.0:  # the transform mirrors: keep faces CCW in map space
            faces = faces[:, [0, 2, 1]]
    faces = np.ascontiguousarray(faces)
    if faces.dtype == np.int32:  # indices are >= 0: reinterpret, no copy
        faces = faces.view(np.uint32)
    return verts, faces.astype(np.uint32, copy=False), reached
