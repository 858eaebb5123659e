"""Geodetic TMS tiling and the quantized-mesh tile pyramid (``twin terrain tiles``).

Tiling scheme (what CesiumJS's ``CesiumTerrainProvider`` expects for
``"projection": "EPSG:4326"``, ``"scheme": "tms"``): level ``z`` has
``2**(z+1)`` x ``2**z`` tiles of ``180 / 2**z`` degrees square; ``x`` counts east from
-180 degrees, ``y`` north from -90 degrees (TMS: tile ``y = 0`` is the southernmost).
Level 0 is the two hemispheres west and east of Greenwich.

Each tile is made from a regular ``grid_size`` x ``grid_size`` grid of samples over
its lon/lat rectangle (both edges included): the DEM is sampled there bilinearly
(:meth:`Dem.sample`, after transforming lon/lat to the DEM's CRS), converted to metres
(:func:`twin.crs.unit_factors`) and taken as ellipsoidal heights (the project
convention; a compound CRS's orthometric heights are not converted, a warning says
so). Nodata holes are filled with the nearest valid DEM height before sampling (no
spikes or pits); samples outside the DEM get ``fill_height`` (default 0 m, the
ellipsoid, as the globe is elsewhere).

The samples are triangulated with :func:`twin.terrain.tin.tin` (greedy), then every
border sample of the grid is forced in: each TIN edge lying on the tile border is
split at all grid samples on it, the triangle fanned from its opposite vertex. Two
neighbouring tiles therefore carry exactly the same vertices (same lon/lat, same
height) along their shared edge: no cracks beyond the height quantisation, which the
skirts CesiumJS adds from the edge lists hide. Fanning can raise the error of the
fanned triangles by at most the TIN's own bound, so the error is measured after it
(rasterising the mesh back onto the grid) and the TIN redone at a smaller bound when
needed (at half the bound the result is guaranteed). The error of a level is
``max_error * 2**(max_zoom - z)`` (the geometric error halves per level, as the
screen-space error model of CesiumJS assumes), measured against the tile's sample
grid.

Vertex normals (oct-encoded extension) are computed from the sample grid with a
one-sample apron around the tile, so both neighbours compute the same normal for a
shared vertex (no lighting seam).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from twin.crs import GEODETIC_3D, geodetic_to_ecef, parse_crs, transform, unit_factors
from twin.errors import CRSError, InputError, OutputError, ParameterError, TwinError
from twin.fileio import atomic_dir, write_json
from twin.progress import Progress, ensure
from twin.terrain.dem import Dem, read_dem
from twin.terrain.quantized_mesh import encode_tile, gzip_tile
from twin.terrain.tin import tin, tin_errors

log = logging.getLogger(__name__)

#: Samples a side of each tile's grid (2**6 + 1, like CesiumJS's heightmap tiles).
DEFAULT_GRID_SIZE = 65
#: Metres per degree of latitude (mean), to turn a DEM's pixel size into a zoom level.
METRES_PER_DEGREE = 111_320.0
#: Refuse pyramids larger than this (a wrong ``max_zoom`` would fill the disk).
MAX_TILES = 1_000_000
#: Largest side (samples) of the overview a large raster's coarse levels sample.
OVERVIEW_SIDE = 2048
#: Extra full-resolution pixels read around a tile's samples (hole filling, bilinear).
WINDOW_MARGIN = 16


# ----------------------------------------------------------------------- the scheme


def tiles_at_level(z: int) -> tuple[int, int]:
    """Number of tiles (in x, in y) at level ``z`` of the geodetic scheme."""
    if z < 0:
        raise ParameterError(f"tile level must be >= 0, got {z}")
    return 2 ** (z + 1), 2**z


def tile_size(z: int) -> float:
    """Side of a level-``z`` tile in degrees."""
    return 180.0 / 2**z


def tile_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """(west, south, east, north) in degrees of TMS tile ``z/x/y`` (y from the south)."""
    nx, ny = tiles_at_level(z)
    if not (0 <= x < nx and 0 <= y < ny):
        raise ParameterError(f"tile {z}/{x}/{y} does not exist (level {z}: {nx} x {ny})")
    s = tile_size(z)
    return -180.0 + x * s, -90.0 + y * s, -180.0 + (x + 1) * s, -90.0 + (y + 1) * s


def tile_range(bounds, z: int) -> tuple[int, int, int, int]:
    """Inclusive ``(x0, y0, x1, y1)`` of the level-``z`` tiles that intersect a
    lon/lat rectangle ``bounds`` = (west, south, east, north), degrees."""
    w, s, e, n = (float(b) for b in bounds)
    nx, ny = tiles_at_level(z)
    size = tile_size(z)

    def lo(v, origin, count):
        return int(min(max(math.floor((v - origin) / size), 0), count - 1))

    def hi(v, origin, count):
        return int(min(max(math.ceil((v - origin) / size) - 1, 0), count - 1))

    x0, x1 = lo(w, -180.0, nx), max(lo(w, -180.0, nx), hi(e, -180.0, nx))
    y0, y1 = lo(s, -90.0, ny), max(lo(s, -90.0, ny), hi(n, -90.0, ny))
    return x0, y0, x1, y1


def level_errors(max_error: float, max_zoom: int) -> list[float]:
    """Maximum vertical error (m) of each level 0..max_zoom: ``max_error`` at the
    finest, doubling per level up."""
    return [float(max_error) * 2.0 ** (max_zoom - z) for z in range(max_zoom + 1)]


# ------------------------------------------------------------------- DEM sampling


def _horizontal(crs):
    crs = parse_crs(crs)
    return crs.sub_crs_list[0] if crs.is_compound else crs


class DemSampler:
    """Heights in ellipsoidal metres at WGS 84 lon/lat from a :class:`Dem`.

    Holes are filled with the nearest valid height once, up front; points outside the
    DEM get ``fill_height``. Memory: with holes, the filled float64 copy (8 bytes per
    pixel) plus about 32 bytes per pixel while filling (the Euclidean distance
    transform's nearest-sample indices); without holes, nothing beyond the DEM.
    """

    def __init__(self, dem: Dem, fill_height: float = 0.0) -> None:
        from scipy import ndimage

        self.source = dem.path
        valid = np.isfinite(dem.heights)
        if not valid.any():
            raise InputError("every DEM cell is nodata: no height to use", path=dem.path)
        heights = dem.heights
        if not valid.all():
            idx = ndimage.distance_transform_edt(
                ~valid, return_distances=False, return_indices=True
            )
            heights = heights[idx[0], idx[1]]
        self.dem = Dem(
            heights=heights,
            transform=dem.transform,
            crs=dem.crs,
            nodata=dem.nodata,
            pixel_is_area=dem.pixel_is_area,
            path=dem.path,
        )
        self._set_frame(dem.crs, dem.path, fill_height)

    def _set_frame(self, dem_crs, path, fill_height: float) -> None:
        """Horizontal CRS, height unit factor and lon/lat bounds of the raster."""
        self.fill_height = float(fill_height)
        self.crs = _horizontal(dem_crs)
        crs = parse_crs(dem_crs)
        self.z_factor = unit_factors(crs)[1]
        if crs.is_compound:
            log.warning(
                "%s: heights of %s are used as ellipsoidal (no geoid conversion)",
                path,
                crs.name,
            )
        self.lonlat_bounds = self._lonlat_bounds()

    def _to_dem(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        pts = np.column_stack([lon, lat, np.zeros(len(lon))])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return transform(pts, GEODETIC_3D, self.crs)
        except TwinError as exc:
            raise CRSError(exc.reason, path=self.source) from None
        except Exception as exc:  # pyproj errors that escape twin.crs
            raise CRSError(
                f"cannot transform WGS 84 to the DEM's CRS ({exc})", path=self.source
            ) from None

    def _bounds(self) -> tuple[float, float, float, float]:
        return self.dem.bounds()

    def _lonlat_bounds(self) -> tuple[float, float, float, float]:
        """The DEM's extent in WGS 84 degrees, from its densified outline, grown by 1%
        (the rectangle used to decide which samples to transform)."""
        x0, y0, x1, y1 = self._bounds()
        t = np.linspace(0.0, 1.0, 65)
        xs = np.concatenate(
            [x0 + t * (x1 - x0), np.full(65, x1), x1 - t * (x1 - x0), np.full(65, x0)]
        )
        ys = np.concatenate(
            [np.full(65, y0), y0 + t * (y1 - y0), np.full(65, y1), y1 - t * (y1 - y0)]
        )
        pts = np.column_stack([xs, ys, np.zeros(len(xs))])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ll = transform(pts, self.crs, GEODETIC_3D)
        except TwinError as exc:
            raise CRSError(exc.reason, path=self.source) from None
        except Exception as exc:
            raise CRSError(
                f"cannot transform the DEM's CRS to WGS 84 ({exc})", path=self.source
            ) from None
        w, e = float(ll[:, 0].min()), float(ll[:, 0].max())
        s, n = float(ll[:, 1].min()), float(ll[:, 1].max())
        if e - w > 180.0:
            raise InputError(
                "the DEM crosses the antimeridian (or spans more than 180 degrees of "
                "longitude): not supported",
                path=self.source,
            )
        mx, my = 0.01 * (e - w), 0.01 * (n - s)
        return max(w - mx, -180.0), max(s - my, -90.0), min(e + mx, 180.0), min(n + my, 90.0)

    def pixel_degrees(self) -> float:
        """The DEM's pixel size expressed in degrees of latitude (approximate)."""
        t = self.dem.transform
        size = min(math.hypot(t.a, t.d), math.hypot(t.b, t.e))
        if self.crs.is_geographic:
            return size
        return size * unit_factors(self.crs)[0] / METRES_PER_DEGREE

    def sample(self, lon: np.ndarray, lat: np.ndarray, level: int | None = None) -> np.ndarray:
        """Ellipsoidal heights (m) at lon/lat (degrees, same-shape arrays); ``level``
        (the tile level asking) is unused here (see :class:`WindowedDemSampler`)."""
        lon = np.asarray(lon, dtype=np.float64)
        lat = np.asarray(lat, dtype=np.float64)
        out = np.full(lon.shape, self.fill_height)
        w, s, e, n = self.lonlat_bounds
        near = (lon >= w) & (lon <= e) & (lat >= s) & (lat <= n)
        if near.any():
            xy = self._to_dem(lon[near], lat[near])
            h = self.dem.sample(xy[:, 0], xy[:, 1]) * self.z_factor
            out[near] = np.where(np.isfinite(h), h, self.fill_height)
        return out


class WindowedDemSampler(DemSampler):
    """:class:`DemSampler` for a raster larger than memory (a
    :class:`twin.terrain.dem.DemReader`), read window by window.

    Levels whose tile grid spacing is at least ``step`` DEM pixels sample an
    overview made once, up front: every ``step``-th pixel of every ``step``-th row
    (``step`` chosen so that it has at most :data:`OVERVIEW_SIDE` samples a side),
    its holes filled with the nearest valid overview height; the grid already skips
    pixels there. Finer levels read, per tile, the window of full-resolution pixels
    its samples need (plus a margin of :data:`WINDOW_MARGIN` pixels) and fill its
    holes with the nearest valid height inside that window. Both choices depend on
    the level only, so neighbouring tiles sample the same pixels along their shared
    edge; only a hole reaching farther than the margin from a tile edge can fill
    differently on the two sides (the skirts cover that).

    Memory: the overview (at most ``OVERVIEW_SIDE**2`` samples, 8 bytes each, plus
    the fill) and one tile's window: fewer than ``(grid_size * step)**2`` samples.
    Building the overview reads the raster once in bands of rows (at most about
    64 MB each).
    """

    def __init__(self, reader, fill_height: float = 0.0) -> None:
        from affine import Affine
        from scipy import ndimage

        self.reader = reader
        self.source = reader.path
        rows, cols = reader.shape
        step = max(1, math.ceil(max(rows, cols) / OVERVIEW_SIDE))
        off = step // 2
        band = max(step, (8 * 2**20 // max(cols, 1)) // step * step)
        parts = []
        for r0 in range(0, rows, band):
            win = reader.read(r0, min(rows, r0 + band), 0, cols)
            first = (off - r0) % step
            parts.append(win[first::step, off::step])
        ov = np.concatenate(parts) if parts else np.empty((0, 0))
        valid = np.isfinite(ov)
        if not valid.any():
            raise InputError("every DEM cell (of an overview) is nodata", path=reader.path)
        if not valid.all():
            idx = ndimage.distance_transform_edt(
                ~valid, return_distances=False, return_indices=True
            )
            ov = ov[idx[0], idx[1]]
        shift = off + 0.5 - step / 2.0  # overview pixel centres on full-resolution ones
        self.step = step
        self.overview = Dem(
            heights=ov,
            transform=reader.transform @ Affine.translation(shift, shift) @ Affine.scale(step),
            crs=reader.crs,
            nodata=reader.nodata,
            pixel_is_area=reader.pixel_is_area,
            path=reader.path,
        )
        # the full raster's pixel size (pixel_degrees), without its heights
        self.dem = Dem(heights=np.empty((0, 0)), transform=reader.transform, crs=reader.crs)
        self._shape = (rows, cols)
        self._set_frame(reader.crs, reader.path, fill_height)

    def _bounds(self) -> tuple[float, float, float, float]:
        rows, cols = self._shape
        t = self.reader.transform
        xs, ys = zip(
            *[t @ (c, r) for c, r in ((0, 0), (cols, 0), (0, rows), (cols, rows))], strict=True
        )
        return min(xs), min(ys), max(xs), max(ys)

    def uses_overview(self, level: int, grid_size: int | None = None) -> bool:
        """Whether tiles of ``level`` sample the overview (grid spacing >= step
        pixels) rather than full-resolution windows."""
        gs = DEFAULT_GRID_SIZE if grid_size is None else grid_size
        spacing = tile_size(level) / (gs - 1)
        return self.step > 1 and spacing >= self.step * self.pixel_degrees()

    def sample(self, lon: np.ndarray, lat: np.ndarray, level: int | None = None) -> np.ndarray:
        """Ellipsoidal heights (m) at lon/lat (degrees, same-shape arrays) for a tile
        of ``level`` (None: full-resolution windows)."""
        lon = np.asarray(lon, dtype=np.float64)
        lat = np.asarray(lat, dtype=np.float64)
        out = np.full(lon.shape, self.fill_height)
        w, s, e, n = self.lonlat_bounds
        near = (lon >= w) & (lon <= e) & (lat >= s) & (lat <= n)
        if not near.any():
            return out
        xy = self._to_dem(lon[near], lat[near])
        if level is not None and self.uses_overview(level, self._grid_size):
            h = self.overview.sample(xy[:, 0], xy[:, 1])
        else:
            h = self._window_sample(xy[:, 0], xy[:, 1])
        h = h * self.z_factor
        out[near] = np.where(np.isfinite(h), h, self.fill_height)
        return out

    _grid_size = DEFAULT_GRID_SIZE

    def _window_sample(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        from scipy import ndimage

        rows, cols = self._shape
        inv = ~self.reader.transform
        fc = inv.a * x + inv.b * y + inv.c
        fr = inv.d * x + inv.e * y + inv.f
        ok = np.isfinite(fc) & np.isfinite(fr)
        if not ok.any():
            return np.full(len(x), np.nan)
        m = WINDOW_MARGIN
        c0 = max(0, int(np.floor(fc[ok].min())) - m)
        c1 = min(cols, int(np.ceil(fc[ok].max())) + m)
        r0 = max(0, int(np.floor(fr[ok].min())) - m)
        r1 = min(rows, int(np.ceil(fr[ok].max())) + m)
        if c1 <= c0 or r1 <= r0:
            return np.full(len(x), np.nan)
        win = self.reader.read(r0, r1, c0, c1)
        valid = np.isfinite(win)
        if not valid.any():
            return np.full(len(x), np.nan)
        if not valid.all():
            idx = ndimage.distance_transform_edt(
                ~valid, return_distances=False, return_indices=True
            )
            win = win[idx[0], idx[1]]
        from affine import Affine

        wt = self.reader.transform @ Affine.translation(c0, r0)
        d = Dem(heights=win, transform=wt, crs=self.reader.crs, path=self.reader.path)
        # points beyond the margin of the window are outside the raster (NaN)
        return d.sample(x, y)


# ------------------------------------------------------------------- one tile mesh


def _force_border(verts: np.ndarray, faces: np.ndarray, n: int):
    """Insert every border sample of an ``n`` x ``n`` grid into a TIN whose vertices are
    grid samples (col, row): each border edge is split, its triangle fanned from the
    opposite vertex. Returns (cols, rows, faces) int64 arrays."""
    cols = np.rint(verts[:, 0]).astype(np.int64)
    rows = np.rint(verts[:, 1]).astype(np.int64)
    key = rows * n + cols
    index = {int(k): i for i, k in enumerate(key)}
    cols_l, rows_l = list(cols), list(rows)

    def vid(c: int, r: int) -> int:
        k = r * n + c
        i = index.get(k)
        if i is None:
            i = len(cols_l)
            index[k] = i
            cols_l.append(c)
            rows_l.append(r)
        return i

    def between(a: int, b: int) -> list[int]:
        """Vertex ids of the grid samples strictly between a and b if both lie on the
        same border line, in order from a to b; [] otherwise."""
        ca, ra, cb, rb = cols_l[a], rows_l[a], cols_l[b], rows_l[b]
        if ca == cb and ca in (0, n - 1) and abs(rb - ra) > 1:
            step = 1 if rb > ra else -1
            return [vid(ca, r) for r in range(ra + step, rb, step)]
        if ra == rb and ra in (0, n - 1) and abs(cb - ca) > 1:
            step = 1 if cb > ca else -1
            return [vid(c, ra) for c in range(ca + step, cb, step)]
        return []

    def on_border_line(a: int, b: int) -> bool:
        ca, ra, cb, rb = cols_l[a], rows_l[a], cols_l[b], rows_l[b]
        return (ca == cb and ca in (0, n - 1)) or (ra == rb and ra in (0, n - 1))

    f = faces.astype(np.int64)
    border = (cols == 0) | (cols == n - 1) | (rows == 0) | (rows == n - 1)
    touch = border[f].sum(axis=1) >= 2
    out = [f[~touch]]
    work = [tuple(int(i) for i in t) for t in f[touch]]
    done: list[tuple[int, int, int]] = []
    while work:
        tri = work.pop()
        for k in range(3):
            a, b, c = tri[k], tri[(k + 1) % 3], tri[(k + 2) % 3]
            if on_border_line(a, b):
                mid = between(a, b)
                if mid:
                    chain = [a, *mid, b]
                    work.extend((chain[i], chain[i + 1], c) for i in range(len(chain) - 1))
                    break
        else:
            done.append(tri)
    if done:
        out.append(np.array(done, dtype=np.int64))
    return np.array(cols_l), np.array(rows_l), np.concatenate(out)


def tile_mesh(heights: np.ndarray, max_error: float):
    """Triangulate a tile's (n, n) height grid (row 0 south, column 0 west) within
    ``max_error`` metres with every border sample a vertex.

    Returns ``(cols, rows, faces, max_error_reached)``: grid indices of the vertices,
    (M, 3) CCW faces, and the measured worst error over the grid. Memory grows with
    n**2 (the TIN's and the check's per-sample arrays)."""
    import numba

    n = heights.shape[0]
    reached = math.inf
    # a tile is small: Numba's thread pool costs more than it gains here (measured
    # 26 ms vs 2.8 ms per 65 x 65 tile on 2 cores); tiles are the unit of parallelism
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        for factor in (1.0, 0.75, 0.5):  # at 0.5 the bound after fanning is guaranteed
            verts, faces, _ = tin(heights, max_error * factor)
            cols, rows, faces = _force_border(verts, faces, n)
            gv = np.column_stack([cols, rows, heights[rows, cols]]).astype(np.float64)
            err, _ = tin_errors(gv, faces, heights)
            reached = float(np.nanmax(err))
            if reached <= max_error * (1 + 1e-9):
                return cols, rows, faces, reached
    finally:
        numba.set_num_threads(threads)
    raise AssertionError(f"tile TIN error {reached} exceeds {max_error} after refinement")


def _grid_normals(lon: np.ndarray, lat: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Unit ECEF normals at the inner samples of an apron grid ((n+2, n+2) heights,
    row 0 south) by central differences; returns (n, n, 3)."""
    glon, glat = np.meshgrid(lon, lat)
    p = geodetic_to_ecef(glon, np.clip(glat, -90.0, 90.0), h)
    east = p[1:-1, 2:] - p[1:-1, :-2]
    north = p[2:, 1:-1] - p[:-2, 1:-1]
    nrm = np.cross(east, north)
    lens = np.linalg.norm(nrm, axis=-1)
    bad = ~(lens > 0)
    if bad.any():  # at a pole: the geodetic up direction
        lo = np.radians(glon[1:-1, 1:-1][bad])
        la = np.radians(glat[1:-1, 1:-1][bad])
        nrm[bad] = np.column_stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)])
        lens = np.linalg.norm(nrm, axis=-1)
    return nrm / lens[..., None]


def make_tile(
    sampler: DemSampler,
    z: int,
    x: int,
    y: int,
    max_error: float,
    grid_size: int = DEFAULT_GRID_SIZE,
    optimize: bool = True,
) -> tuple[bytes, dict[str, Any]]:
    """Build one tile: sample, triangulate, encode. Returns the *uncompressed*
    quantized-mesh bytes and ``{"vertices", "triangles", "max_error_reached"}``.
    Memory grows with ``grid_size**2``."""
    w, s, e, n = tile_bounds(z, x, y)
    lon_in = np.linspace(w, e, grid_size)
    lat_in = np.linspace(s, n, grid_size)
    dlon, dlat = (e - w) / (grid_size - 1), (n - s) / (grid_size - 1)
    lon = np.concatenate([[w - dlon], lon_in, [e + dlon]])
    lat = np.concatenate([[s - dlat], lat_in, [n + dlat]])
    glon, glat = np.meshgrid(lon, lat)
    hh = sampler.sample(glon.ravel(), np.clip(glat, -90.0, 90.0).ravel(), level=z).reshape(
        glon.shape
    )
    heights = np.ascontiguousarray(hh[1:-1, 1:-1])
    cols, rows, faces, reached = tile_mesh(heights, max_error)
    normals = _grid_normals(lon, lat, hh)[rows, cols]
    verts = np.column_stack([lon_in[cols], lat_in[rows], heights[rows, cols]])
    data = encode_tile(verts, faces, (w, s, e, n), normals=normals, optimize=optimize)
    return data, {"vertices": len(verts), "triangles": len(faces), "max_error_reached": reached}


# ------------------------------------------------------------------- the pyramid


def native_zoom(sampler: DemSampler, grid_size: int = DEFAULT_GRID_SIZE) -> int:
    """The first level whose tile grid spacing is at most the DEM's pixel size."""
    deg = sampler.pixel_degrees()
    return max(0, math.ceil(math.log2(180.0 / ((grid_size - 1) * deg)) - 1e-9))


def layer_json(
    available: list[tuple[int, int, int, int]],
    *,
    name: str = "terrain",
    extra: dict | None = None,
) -> dict[str, Any]:
    """The ``layer.json`` CesiumJS reads (tilejson 2.1.0), ``available`` one inclusive
    ``(x0, y0, x1, y1)`` range per level from 0."""
    doc: dict[str, Any] = {
        "tilejson": "2.1.0",
        "name": name,
        "description": "quantized-mesh terrain made by twin",
        "version": "1.0.0",
        "format": "quantized-mesh-1.0",
        "attribution": "",
        "scheme": "tms",
        "tiles": ["{z}/{x}/{y}.terrain?v={version}"],
        "projection": "EPSG:4326",
        "bounds": [-180.0, -90.0, 180.0, 90.0],
        "minzoom": 0,
        "maxzoom": len(available) - 1,
        "available": [
            [{"startX": x0, "startY": y0, "endX": x1, "endY": y1}] for x0, y0, x1, y1 in available
        ],
        "extensions": ["octvertexnormals"],
    }
    if extra:
        doc["twin"] = extra
    return doc


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise OutputError("the output path is a file, expected a folder", path=out)
    if out.is_dir() and any(out.iterdir()) and not (out / "layer.json").exists():
        raise OutputError(
            "the folder is not empty and holds no terrain pyramid (no layer.json): "
            "refusing to replace it",
            path=out,
        )


def write_terrain_tiles(
    dem: Dem | str | os.PathLike,
    out_dir: str | os.PathLike,
    max_error: float = 1.0,
    max_zoom: int | None = None,
    progress: Progress | None = None,
    *,
    crs=None,
    grid_size: int = DEFAULT_GRID_SIZE,
    fill_height: float = 0.0,
) -> dict[str, Any]:
    """Write a quantized-mesh-1.0 tile pyramid for a DEM into ``out_dir``.

    ``dem``: a :class:`Dem` or a raster path (read with ``read_dem(path, crs)``).
    ``max_error`` (metres, > 0) is the finest level's vertical error; each level up
    doubles it. ``max_zoom``: the finest level (default: the DEM's native resolution,
    see :func:`native_zoom`). Levels 0..max_zoom are written: level 0 in full (both
    tiles, CesiumJS always loads them), deeper levels where they intersect the DEM.

    Output: ``out_dir/layer.json`` and ``out_dir/{z}/{x}/{y}.terrain``, each tile
    gzip-compressed (serve it with ``Content-Encoding: gzip``). Written into a
    temporary folder beside ``out_dir`` and swapped in when complete; an existing
    ``out_dir`` is replaced only if it is empty or holds a pyramid (``layer.json``).
    Deterministic: the same DEM and parameters give the same bytes.

    Returns a summary: ``levels`` (per level: ``level``, ``tiles``, ``bytes``
    (gzipped), ``triangles``, ``max_error`` (allowed), ``max_error_reached``),
    ``tiles``, ``bytes``, ``max_zoom``, ``bounds`` (the DEM's lon/lat rectangle, 1%
    margin) and ``out_dir``.

    Memory: the DEM as float64 (8 bytes per pixel; with nodata holes a filled copy
    too, and about 40 bytes per pixel while filling) plus one tile's grid at a time
    (O(grid_size**2)). A *large* raster path (:func:`twin.terrain.windowed.is_large`:
    over 4096 x 4096 samples, or half the memory) is read window by window instead
    (:class:`WindowedDemSampler`): an overview of at most 2048 x 2048 samples plus
    one tile's window of full-resolution pixels. Time grows with the number of tiles
    (about 6 ms per 65 x 65 tile on one core). Tiles are made one after another on one thread.
    """
    try:
        max_error = float(max_error)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"max_error must be a number, got {max_error!r}") from exc
    if not math.isfinite(max_error) or max_error <= 0:
        raise ParameterError(f"max_error must be a positive number of metres, got {max_error!r}")
    if not isinstance(grid_size, (int, np.integer)) or grid_size < 3:
        raise ParameterError(f"grid_size must be an integer >= 3, got {grid_size!r}")
    if max_zoom is not None and (not isinstance(max_zoom, (int, np.integer)) or max_zoom < 0):
        raise ParameterError(f"max_zoom must be an integer >= 0, got {max_zoom!r}")
    out = Path(out_dir)
    _check_out_dir(out)
    if isinstance(dem, Dem):
        sampler = DemSampler(dem, fill_height=fill_height)
    else:
        from twin.terrain.dem import DemReader
        from twin.terrain.windowed import is_large

        reader = DemReader(dem, crs=crs)
        if is_large(reader.shape):
            sampler = WindowedDemSampler(reader, fill_height=fill_height)
            sampler._grid_size = grid_size
        else:
            sampler = DemSampler(read_dem(dem, crs=crs), fill_height=fill_height)
    source = sampler.source
    zmax = native_zoom(sampler, grid_size) if max_zoom is None else int(max_zoom)
    errors = level_errors(max_error, zmax)
    ranges = [(0, 0, 1, 0)] + [tile_range(sampler.lonlat_bounds, z) for z in range(1, zmax + 1)]
    total = sum((x1 - x0 + 1) * (y1 - y0 + 1) for x0, y0, x1, y1 in ranges)
    if total > MAX_TILES:
        raise ParameterError(
            f"{total} tiles up to level {zmax}: more than {MAX_TILES}; lower max_zoom"
        )
    prog = ensure(progress)
    levels = []
    with atomic_dir(out) as tmp, prog.step("terrain tiles", total=total) as advance:
        for z, (x0, y0, x1, y1) in enumerate(ranges):
            stats = {
                "level": z,
                "tiles": 0,
                "bytes": 0,
                "triangles": 0,
                "max_error": errors[z],
                "max_error_reached": 0.0,
            }
            for x in range(x0, x1 + 1):
                folder = tmp / str(z) / str(x)
                folder.mkdir(parents=True, exist_ok=True)
                for y in range(y0, y1 + 1):
                    data, info = make_tile(sampler, z, x, y, errors[z], grid_size)
                    gz = gzip_tile(data)
                    (folder / f"{y}.terrain").write_bytes(gz)
                    stats["tiles"] += 1
                    stats["bytes"] += len(gz)
                    stats["triangles"] += info["triangles"]
                    stats["max_error_reached"] = max(
                        stats["max_error_reached"], info["max_error_reached"]
                    )
                    advance(1)
            levels.append(stats)
        extra = {
            "heights": "ellipsoidal metres (WGS 84)",
            "source": Path(source).name if source is not None else None,
            "grid_size": grid_size,
            "max_error": errors,
            "dem_bounds": list(sampler.lonlat_bounds),
            "fill_height": sampler.fill_height,
        }
        write_json(tmp / "layer.json", layer_json(ranges, extra=extra))
    return {
        "levels": levels,
        "tiles": total,
        "bytes": sum(lv["bytes"] for lv in levels),
        "max_zoom": zmax,
        "bounds": list(sampler.lonlat_bounds),
        "out_dir": str(out),
    }
