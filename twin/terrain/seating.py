"""Buildings on the ground: footprint base heights and a terrain TIN seated under them.

:func:`footprint_base_heights` gives each footprint the height its walls start from,
read from the terrain under it; :func:`seated_tin` builds the terrain TIN with every
footprint ring forced in as constraint edges (:func:`twin.terrain.tin.tin`) and the
terrain inside each footprint flat at its base height. Walls standing on the ring
from the base height then meet the terrain exactly (the terrain along the ring *is*
the base height: its vertices there are at the base, and so are the points where the
ring was split), and no terrain pokes up through the floor.

Choice of the base height (``stat``):

``"min"`` (default)
    the lowest ground height under and along the footprint. The building never
    floats, even on terrain that is *not* flattened: its walls reach down to the
    lowest ground and any higher ground only hides their bottom. On a slope the
    seated terrain is cut down to that level inside the footprint (a terrace).
``"median"``
    the typical ground height: half cut, half fill on a slope; the closest to the
    surveyed ground level of buildings on levelled pads. Use it only with a seated
    terrain (on an unflattened terrain the downhill wall bottoms would float).

Heights under a footprint are the DEM samples whose pixel centres lie inside or on
it, plus the terrain sampled along its rings every half pixel (a small footprint
between pixel centres still gets heights). Nodata samples are ignored; a footprint
with no valid height at all gets NaN (and a warning).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from twin.errors import InputError, ParameterError
from twin.terrain import _kernels

log = logging.getLogger(__name__)

STATS = ("min", "median")


def _polygons(footprints) -> list:
    """Shapely polygons (or multipolygons) from a GeoDataFrame, GeoSeries or list."""
    if hasattr(footprints, "iloc"):
        geoms = list(footprints.geometry) if hasattr(footprints, "geometry") else list(footprints)
    elif hasattr(footprints, "geom_type"):
        geoms = [footprints]
    else:
        geoms = list(footprints)
    out = []
    for k, g in enumerate(geoms):
        if (
            g is None
            or not hasattr(g, "geom_type")
            or g.geom_type
            not in (
                "Polygon",
                "MultiPolygon",
            )
        ):
            kind = type(g).__name__ if not hasattr(g, "geom_type") else g.geom_type
            raise ParameterError(f"footprint {k} is a {kind}, not a polygon")
        if g.is_empty:
            raise ParameterError(f"footprint {k} is empty")
        out.append(g)
    return out


def _rings(geom):
    polys = geom.geoms if geom.geom_type == "MultiPolygon" else [geom]
    for p in polys:
        yield p.exterior
        yield from p.interiors


def _affine(transform):
    from twin.terrain.tin import _affine6

    aff = _affine6(transform)
    if aff is None:
        return (1.0, 0.0, -0.5, 0.0, 1.0, -0.5)  # grid units: x = col, y = row
    return aff


def _to_grid(aff, x, y):
    a, b, c, d, e, f = aff
    det = a * e - b * d
    x = np.asarray(x, dtype=np.float64) - c
    y = np.asarray(y, dtype=np.float64) - f
    return (e * x - b * y) / det - 0.5, (-d * x + a * y) / det - 0.5


def _from_grid(aff, col, row):
    a, b, c, d, e, f = aff
    cx = np.asarray(col, dtype=np.float64) + 0.5
    cy = np.asarray(row, dtype=np.float64) + 0.5
    return a * cx + b * cy + c, d * cx + e * cy + f


def _pixel_mask(geom, aff, shape, tol):
    """(row slice, col slice, mask) of the pixel centres inside or on ``geom``
    (within ``tol`` map units), over the footprint's bounding window."""
    import shapely

    rows, cols = shape
    x0, y0, x1, y1 = geom.bounds
    cx, cy = _to_grid(aff, [x0, x0, x1, x1], [y0, y1, y0, y1])
    c0 = max(int(math.floor(cx.min())) - 1, 0)
    c1 = min(int(math.ceil(cx.max())) + 1, cols - 1)
    r0 = max(int(math.floor(cy.min())) - 1, 0)
    r1 = min(int(math.ceil(cy.max())) + 1, rows - 1)
    if c0 > c1 or r0 > r1:
        return slice(0, 0), slice(0, 0), np.zeros((0, 0), bool)
    cc, rr = np.meshgrid(np.arange(c0, c1 + 1), np.arange(r0, r1 + 1))
    px, py = _from_grid(aff, cc, rr)
    inside = shapely.dwithin(geom, shapely.points(px.ravel(), py.ravel()), tol)
    return slice(r0, r1 + 1), slice(c0, c1 + 1), inside.reshape(cc.shape)


def _ring_points(geom, spacing):
    """Points along every ring of ``geom`` at most ``spacing`` apart (vertices kept)."""
    pts = []
    for ring in _rings(geom):
        c = np.asarray(ring.coords, dtype=np.float64)[:, :2]
        for a, b in zip(c[:-1], c[1:], strict=True):
            n = max(int(math.ceil(np.hypot(*(b - a)) / spacing)), 1)
            t = np.arange(n)[:, None] / n
            pts.append(a + t * (b - a))
    return np.concatenate(pts) if pts else np.zeros((0, 2))


def terrain_heights_at(vertices, faces, x, y) -> np.ndarray:
    """Heights of a TIN (``vertices`` (N, 3), ``faces`` (M, 3)) at points (x, y) in
    its coordinates; NaN outside it. Memory: a bucket index of the triangles (about
    8 bytes per triangle and cell they overlap)."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.ascontiguousarray(faces, dtype=np.int64)
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y, dtype=np.float64))
    ext = max(np.ptp(v[:, 0]), np.ptp(v[:, 1]), 1e-9)
    cell = max(ext / max(math.sqrt(len(f)), 1.0) * 2.0, 1e-9)
    return _kernels.tin_heights_at(
        v[:, 0].copy(), v[:, 1].copy(), v[:, 2].copy(), f, x.copy(), y.copy(), cell
    )


def footprint_base_heights(footprints, dem_or_tin, stat: str = "min", transform=None):
    """Base height of each footprint from the terrain (see the module docstring).

    ``footprints``: shapely polygons (a GeoDataFrame, GeoSeries or list), in the
    terrain's coordinates. ``dem_or_tin``: a :class:`twin.terrain.dem.Dem`, a height
    grid (with ``transform``, else grid units) or a TIN ``(vertices, faces)``.
    ``stat``: ``"min"`` or ``"median"``. Returns a float64 array, one height per
    footprint (NaN where no valid terrain height lies under it). Memory: per
    footprint its bounding window of pixels.
    """
    if stat not in STATS:
        raise ParameterError(f"stat must be one of {STATS}, got {stat!r}")
    polys = _polygons(footprints)
    reduce = np.min if stat == "min" else np.median
    out = np.full(len(polys), np.nan)
    if isinstance(dem_or_tin, tuple) and len(dem_or_tin) == 2:
        verts, faces = dem_or_tin
        verts = np.asarray(verts, dtype=np.float64)
        faces = np.asarray(faces)
        if verts.ndim != 2 or verts.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
            raise ParameterError("a TIN must be (vertices (N, 3), faces (M, 3))")
        import shapely

        edge = np.median(
            np.hypot(*(verts[faces[:, 0], :2] - verts[faces[:, 1], :2]).T.astype(np.float64))
        )
        for k, g in enumerate(polys):
            ring = _ring_points(g, max(edge / 4.0, 1e-6))
            inside = verts[shapely.contains_xy(g, verts[:, 0], verts[:, 1])]
            z = np.concatenate(
                [terrain_heights_at(verts, faces, ring[:, 0], ring[:, 1]), inside[:, 2]]
            )
            z = z[np.isfinite(z)]
            if len(z):
                out[k] = float(reduce(z))
    else:
        if hasattr(dem_or_tin, "heights") and hasattr(dem_or_tin, "transform"):
            heights, transform = dem_or_tin.heights, dem_or_tin.transform
        else:
            heights = dem_or_tin
        h = np.asarray(heights, dtype=np.float64)
        if h.ndim != 2:
            raise InputError(f"heights must be a 2D grid, got shape {h.shape}")
        aff = _affine(transform)
        pixel = math.sqrt(abs(aff[0] * aff[4] - aff[1] * aff[3]))
        valid = np.isfinite(h)
        from twin.terrain.tin import bilinear

        hfill = np.where(valid, h, np.nan)
        for k, g in enumerate(polys):
            rs, cs, m = _pixel_mask(g, aff, h.shape, 1e-9 * pixel)
            z_in = h[rs, cs][m]
            ring = _ring_points(g, 0.5 * pixel)
            col, row = _to_grid(aff, ring[:, 0], ring[:, 1])
            on = (col >= 0) & (row >= 0) & (col <= h.shape[1] - 1) & (row <= h.shape[0] - 1)
            z_ring = bilinear(hfill, col[on], row[on]) if on.any() else np.zeros(0)
            z = np.concatenate([z_in, z_ring])
            z = z[np.isfinite(z)]
            if len(z):
                out[k] = float(reduce(z))
    missing = int(np.isnan(out).sum())
    if missing:
        log.warning("%d footprints have no valid terrain height under them: base NaN", missing)
    return out


def seated_tin(
    heights,
    footprints,
    max_error: float,
    transform=None,
    mask=None,
    base_heights=None,
    stat: str = "min",
    tile_size: int | None = None,
    workers: int | None = None,
):
    """A terrain TIN with buildings seated on it.

    Every footprint ring (exterior and courtyards) is forced into the TIN as
    constraint edges and the terrain inside or on each footprint is flat at its base
    height (``base_heights``, one per footprint, or :func:`footprint_base_heights`
    with ``stat``); outside the footprints the TIN is within ``max_error`` of the
    DEM (a guarantee, verified). Where footprints share a ring vertex the lower base
    wins. Arguments as :func:`twin.terrain.tin.tin` (``heights`` may also be a
    :class:`~twin.terrain.dem.Dem`, then its transform is used).

    Returns ``(vertices, faces, max_error_reached, base_heights)``: the TIN in map
    coordinates (faces CCW from above, uint32), the largest error to the flattened
    DEM, and the base heights used. Walls from ``base_heights[k]`` up along the
    footprint's rings meet this terrain with no gap, and no terrain is above the base
    inside the footprint. Memory: as :func:`~twin.terrain.tin.tin` plus a flattened
    copy of the heights (8 bytes per sample).
    """
    import shapely

    from twin.terrain.tin import (
        _check_inputs,
        _tin_grid,
        _to_map,
        bilinear,
        constraint_segments,
        filled_heights,
    )

    if hasattr(heights, "heights") and hasattr(heights, "transform"):
        heights, transform = heights.heights, heights.transform
    polys = _polygons(footprints)
    herr, valid, max_error = _check_inputs(heights, max_error, mask, "greedy", None)
    aff = _affine(transform)
    pixel = math.sqrt(abs(aff[0] * aff[4] - aff[1] * aff[3]))
    if base_heights is None:
        base = footprint_base_heights(polys, np.where(valid, herr, np.nan), stat, aff)
    else:
        base = np.asarray(base_heights, dtype=np.float64).ravel()
        if len(base) != len(polys):
            raise ParameterError(f"{len(base)} base heights for {len(polys)} footprints")
    if not len(polys):
        from twin.terrain.tin import tin

        v, f, r = tin(herr, max_error, transform, valid, tile_size=tile_size, workers=workers)
        return v, f, r, base
    ok = np.isfinite(base)
    if not ok.all():
        log.warning("%d footprints without a base height are not seated", int((~ok).sum()))

    # flatten the DEM inside or on each footprint
    herr = herr.copy()
    valid = valid.copy()
    for k in np.nonzero(ok)[0]:
        rs, cs, m = _pixel_mask(polys[k], aff, herr.shape, 1e-9 * pixel)
        herr[rs, cs][m] = base[k]
        valid[rs, cs][m] = True
    # rings as constraints with their base heights (grid units)
    rings = [shapely.LineString(r.coords) for k in np.nonzero(ok)[0] for r in _rings(polys[k])]
    pts, seg = constraint_segments(rings, herr.shape, aff)
    if not len(seg):
        log.warning("no footprint lies on the raster; triangulating without them")
        gv, faces, reached = _tin_grid(herr, valid, max_error, "greedy", None, tile_size, workers)
        return (*_to_map(gv, faces, _affine_or_none(transform), reached), base)
    hfill = filled_heights(herr, valid)
    fz = bilinear(hfill, pts[:, 0], pts[:, 1])
    mx, my = _from_grid(aff, pts[:, 0], pts[:, 1])
    mpts = shapely.points(mx, my)
    assigned = np.full(len(pts), np.inf)
    for k in np.nonzero(ok)[0]:
        near = shapely.dwithin(polys[k].boundary, mpts, 1e-6 * pixel)
        assigned[near] = np.minimum(assigned[near], base[k])
    fz = np.where(np.isfinite(assigned), assigned, fz)
    forced = (pts[:, 0].copy(), pts[:, 1].copy(), fz, seg, np.ones(len(seg), np.uint8), hfill)
    herr = np.where(valid, herr, np.nan)
    gv, faces, reached = _tin_grid(herr, valid, max_error, "greedy", forced, tile_size, workers)
    verts, faces, reached = _to_map(gv, faces, _affine_or_none(transform), reached)
    return verts, faces, reached, base


def _affine_or_none(transform):
    from twin.terrain.tin import _affine6

    return _affine6(transform)
