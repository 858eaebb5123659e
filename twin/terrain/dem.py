"""DEM GeoTIFF input: :func:`read_dem` and the :class:`Dem` grid with bilinear sampling.

Conventions
-----------
* ``Dem.heights`` is a ``(rows, cols)`` float64 array; nodata (and NaN) cells are NaN.
* ``Dem.transform`` is rasterio's affine map from (col, row) *pixel corner* coordinates
  to map x/y. Pixel ``(r, c)``'s centre is ``transform * (c + 0.5, r + 0.5)``. GDAL
  already shifts the transform of a ``PixelIsPoint`` raster by half a pixel, so this
  holds for both raster types; ``pixel_is_area`` only records what the file said.
* Heights are in the file's vertical unit, ellipsoidal unless the CRS says otherwise
  (the convention of :mod:`twin.crs`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyproj
from affine import Affine

from twin.crs import parse_crs
from twin.errors import CRSError, InputError, ParameterError

log = logging.getLogger(__name__)


@dataclass
class Dem:
    """A single-band elevation grid in a map CRS.

    ``heights`` (rows, cols) float64 with NaN where the file has no data; ``transform``
    pixel-corner affine (see the module docstring); ``crs`` a :class:`pyproj.CRS`;
    ``nodata`` the file's nodata value (None if it has none); ``path`` the source file.
    """

    heights: np.ndarray
    transform: Affine
    crs: pyproj.CRS
    nodata: float | None = None
    pixel_is_area: bool = True
    path: Path | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.heights.shape  # type: ignore[return-value]

    @property
    def valid(self) -> np.ndarray:
        """Boolean (rows, cols) mask of cells that have a height."""
        return np.isfinite(self.heights)

    def pixel_centres(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map x, y of the centres of pixels ``(rows, cols)`` (broadcast together)."""
        t = self.transform
        c = np.asarray(cols, dtype=np.float64) + 0.5
        r = np.asarray(rows, dtype=np.float64) + 0.5
        return t.a * c + t.b * r + t.c, t.d * c + t.e * r + t.f

    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the raster's outer pixel edges, map units."""
        rows, cols = self.shape
        t = self.transform
        xs, ys = zip(
            *[t @ (c, r) for c, r in ((0, 0), (cols, 0), (0, rows), (cols, rows))], strict=True
        )
        return min(xs), min(ys), max(xs), max(ys)

    def sample(self, x, y) -> np.ndarray:
        """Bilinear height at map coordinates ``x``, ``y`` (arrays, the DEM's CRS).

        Interpolates between the four surrounding pixel centres. Points in the outer
        half pixel (between the last centre and the raster edge) take the edge
        value (clamped); points outside the raster, or whose interpolation touches a
        nodata cell with a non-zero weight, give NaN. Memory grows with ``len(x)``.
        """
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        shape = np.broadcast(x, y).shape
        x, y = np.broadcast_to(x, shape).ravel(), np.broadcast_to(y, shape).ravel()
        inv = ~self.transform
        fc = inv.a * x + inv.b * y + inv.c - 0.5  # fractional index of pixel centres
        fr = inv.d * x + inv.e * y + inv.f - 0.5
        rows, cols = self.shape
        inside = (fc >= -0.5) & (fc <= cols - 0.5) & (fr >= -0.5) & (fr <= rows - 0.5)
        fc = np.clip(fc, 0.0, cols - 1.0)
        fr = np.clip(fr, 0.0, rows - 1.0)
        c0 = np.minimum(np.floor(fc).astype(np.int64), max(cols - 2, 0))
        r0 = np.minimum(np.floor(fr).astype(np.int64), max(rows - 2, 0))
        c1 = np.minimum(c0 + 1, cols - 1)
        r1 = np.minimum(r0 + 1, rows - 1)
        tc = fc - c0
        tr = fr - r0
        h = self.heights
        out = np.zeros(len(x))
        for rr, cc, w in (
            (r0, c0, (1 - tr) * (1 - tc)),
            (r0, c1, (1 - tr) * tc),
            (r1, c0, tr * (1 - tc)),
            (r1, c1, tr * tc),
        ):
            v = h[rr, cc]
            out += np.where(w > 0, w * v, 0.0)  # NaN only where it carries weight
        out[~inside] = np.nan
        return out.reshape(shape)


def available_memory() -> int:
    """Bytes of memory available to this process now (``MemAvailable`` of
    /proc/meminfo; physical pages where that is missing)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def _raster_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path, or an InputError if it is missing or a folder."""
    path = Path(path)
    if not path.exists():
        raise InputError("DEM file not found", path=path)
    if path.is_dir():
        raise InputError("expected a DEM raster file, found a folder", path=path)
    return path


def read_dem(path: str | os.PathLike, crs=None, window=None) -> Dem:
    """Read band 1 of a DEM raster (GeoTIFF or anything GDAL reads) into a :class:`Dem`.

    ``crs`` (EPSG code, WKT, ...) is used when the file has no CRS; when the file has
    one too and they differ, ``crs`` wins and a warning is logged. Raises
    :class:`InputError` for a missing, unreadable, truncated or corrupt file or one
    with no valid height, and :class:`CRSError` when no CRS is known. Memory: the
    full grid as float64 (8 bytes per pixel).
    """
    import rasterio
    from rasterio.errors import RasterioError

    path = _raster_path(path)
    try:
        with rasterio.open(path) as ds:
            if ds.count < 1:
                raise InputError("the raster has no band", path=path)
            if window is not None:
                from rasterio.windows import Window

                try:
                    r0, c0, nr, nc = (int(v) for v in window)
                except (TypeError, ValueError):
                    raise ParameterError(
                        f"window must be (row_off, col_off, rows, cols), got {window!r}"
                    ) from None
                if (
                    nr < 1
                    or nc < 1
                    or r0 < 0
                    or c0 < 0
                    or r0 + nr > ds.height
                    or (c0 + nc > ds.width)
                ):
                    raise ParameterError(
                        f"window {window!r} is not inside the {ds.height} x {ds.width} raster"
                    )
                win = Window(c0, r0, nc, nr)
                shape = (nr, nc)
            else:
                win = None
                shape = (ds.height, ds.width)
            need = 17 * shape[0] * shape[1]  # the band as read, its float64 copy, the mask
            if need > available_memory():
                raise InputError(
                    f"the {shape[0]} x {shape[1]} grid needs about {need / 2**30:.1f} GiB, "
                    f"more than the memory available: read it in windows "
                    f"(read_dem(..., window=...)) or triangulate it in tiles",
                    path=path,
                )
            data = ds.read(1, masked=True, window=win)
            transform = ds.transform if win is None else ds.window_transform(win)
            file_crs = ds.crs
            nodata = ds.nodata
            area = str(ds.tags().get("AREA_OR_POINT", "Area")).lower() != "point"
    except InputError:
        raise
    except RasterioError as exc:
        raise InputError(
            f"not a readable raster, or the file is truncated or corrupt ({exc})", path=path
        ) from None
    if transform.is_identity:
        raise InputError("the raster has no georeference (identity geotransform)", path=path)
    if crs is not None:
        given = parse_crs(crs, source=path)
        if file_crs is not None and not given.equals(parse_crs(file_crs, source=path)):
            log.warning("%s: using the given CRS %s instead of the file's", path, given.name)
        the_crs = given
    elif file_crs is not None:
        the_crs = parse_crs(file_crs, source=path)
    else:
        raise CRSError("the DEM has no CRS: give one (e.g. crs='EPSG:4550')", path=path)
    heights = np.ma.filled(data.astype(np.float64), np.nan)
    if not np.isfinite(heights).any():
        what = "nodata" if nodata is not None and np.ma.count_masked(data) else "NaN or infinite"
        raise InputError(f"every DEM cell is {what}: no height to use", path=path)
    heights[~np.isfinite(heights)] = np.nan
    return Dem(
        heights=heights,
        transform=transform,
        crs=the_crs,
        nodata=None if nodata is None else float(nodata),
        pixel_is_area=area,
        path=path,
    )


class DemReader:
    """Windowed reads of a DEM raster that may be larger than memory.

    Opens the file once to check it (the same checks and CRS rules as
    :func:`read_dem`) and keeps its facts: ``shape``, ``transform`` (pixel-corner
    affine of the whole raster), ``crs``, ``nodata``, ``pixel_is_area``, ``path``.
    :meth:`read` reopens the file for every window and closes it after, so GDAL's
    block cache never holds more than one window's blocks and reads from several
    threads at once are safe. Memory: one window at a time (8 bytes per sample of
    the float64 result plus the band as stored and its mask).
    """

    def __init__(self, path: str | os.PathLike, crs=None) -> None:
        import rasterio
        from rasterio.errors import RasterioError

        path = _raster_path(path)
        try:
            with rasterio.open(path) as ds:
                if ds.count < 1:
                    raise InputError("the raster has no band", path=path)
                self.shape = (int(ds.height), int(ds.width))
                self.transform = ds.transform
                file_crs = ds.crs
                self.nodata = None if ds.nodata is None else float(ds.nodata)
                self.pixel_is_area = str(ds.tags().get("AREA_OR_POINT", "Area")).lower() != "point"
                self.dtype = str(ds.dtypes[0])
        except InputError:
            raise
        except RasterioError as exc:
            raise InputError(
                f"not a readable raster, or the file is truncated or corrupt ({exc})", path=path
            ) from None
        if self.transform.is_identity:
            raise InputError("the raster has no georeference (identity geotransform)", path=path)
        if crs is not None:
            given = parse_crs(crs, source=path)
            if file_crs is not None and not given.equals(parse_crs(file_crs, source=path)):
                log.warning("%s: using the given CRS %s instead of the file's", path, given.name)
            self.crs = given
        elif file_crs is not None:
            self.crs = parse_crs(file_crs, source=path)
        else:
            raise CRSError("the DEM has no CRS: give one (e.g. crs='EPSG:4550')", path=path)
        self.path = path

    @property
    def size(self) -> int:
        """Number of samples (rows * cols)."""
        return self.shape[0] * self.shape[1]

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Heights of rows ``r0:r1`` and columns ``c0:c1`` (half-open, clipped to the
        raster) as float64, NaN where the file has nodata or a non-finite value."""
        import rasterio
        from rasterio.errors import RasterioError
        from rasterio.windows import Window

        rows, cols = self.shape
        r0, r1 = max(0, int(r0)), min(rows, int(r1))
        c0, c1 = max(0, int(c0)), min(cols, int(c1))
        if r1 <= r0 or c1 <= c0:
            return np.empty((max(r1 - r0, 0), max(c1 - c0, 0)))
        try:
            with rasterio.open(self.path) as ds:
                data = ds.read(1, masked=True, window=Window(c0, r0, c1 - c0, r1 - r0))
        except RasterioError as exc:
            raise InputError(
                f"cannot read rows {r0}-{r1}, columns {c0}-{c1} (truncated or corrupt?) ({exc})",
                path=self.path,
            ) from None
        h = np.ma.filled(data.astype(np.float64), np.nan)
        h[~np.isfinite(h)] = np.nan
        return h

    def nearest_valid(self, row: int, col: int) -> float | None:
        """Height of the valid sample nearest to (row, col) within the smallest square
        window around it that holds one (windows double in size); None when the
        whole raster has no valid sample."""
        rows, cols = self.shape
        r = 1
        while True:
            r0, c0 = max(0, row - r), max(0, col - r)
            win = self.read(r0, row + r + 1, c0, col + r + 1)
            ok = np.isfinite(win)
            if ok.any():
                yy, xx = np.nonzero(ok)
                d2 = (yy + r0 - row) ** 2 + (xx + c0 - col) ** 2
                k = int(np.argmin(d2))
                return float(win[yy[k], xx[k]])
            if r0 == 0 and c0 == 0 and row + r + 1 >= rows and col + r + 1 >= cols:
                return None
            r *= 2

    def to_dem(self) -> Dem:
        """The whole raster as a :class:`Dem` (:func:`read_dem`; memory: 8 bytes per
        sample)."""
        return read_dem(self.path, crs=self.crs)
