"""The synthetic DEM: ``City.terrain`` sampled at pixel centres, written as a GeoTIFF.

Grid convention: north-up, square pixels of ``spec.dem_resolution`` metres whose
outer edges are ``City.bounds`` (``AREA_OR_POINT=Area``); the value of pixel
``(row, col)`` is the terrain height at its centre ``(x0 + (col + .5) res,
y1 - (row + .5) res)``, rounded to float32. The truth mesh's terrain vertices are
exactly these samples (see :mod:`twin.synth.truth`), so the DEM is an exact
sampling of the truth surface. Heights are ellipsoidal metres.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twin.errors import OutputError, ParameterError
from twin.fileio import atomic_path
from twin.synth.model import City
from twin.synth.params import SurveySpec

NODATA = -9999.0


@dataclass
class DemGrid:
    """DEM samples: ``heights[row, col]`` (float32, ellipsoidal m), rows north to south.

    ``x`` (ncols,) and ``y`` (nrows,) are pixel-centre map coordinates (float64);
    ``transform`` is the rasterio/affine pixel-corner transform.
    """

    heights: np.ndarray
    x: np.ndarray
    y: np.ndarray
    transform: object  # affine.Affine
    crs: str
    resolution: float

    @property
    def shape(self) -> tuple[int, int]:
        return self.heights.shape  # type: ignore[return-value]


def dem_grid(city: City, spec: SurveySpec) -> DemGrid:
    """Sample ``city.terrain`` at the centres of a ``spec.dem_resolution`` grid over
    ``city.bounds``. Memory grows with the pixel count (about 40 bytes per pixel
    while sampling)."""
    from affine import Affine

    res = float(spec.dem_resolution)
    if not res > 0:
        raise ParameterError(f"dem_resolution={res!r} must be positive")
    x0, y0, x1, y1 = city.bounds
    nx = int(math.ceil((x1 - x0) / res - 1e-9))
    ny = int(math.ceil((y1 - y0) / res - 1e-9))
    xs = x0 + (np.arange(nx) + 0.5) * res
    ys = y1 - (np.arange(ny) + 0.5) * res
    gx, gy = np.meshgrid(xs, ys)
    z = np.asarray(city.terrain(gx, gy), dtype=np.float64).astype(np.float32)
    if not np.all(np.isfinite(z)):
        raise ParameterError("terrain produced non-finite heights")
    return DemGrid(
        heights=z,
        x=xs,
        y=ys,
        transform=Affine(res, 0.0, x0, 0.0, -res, y1),
        crs=city.crs,
        resolution=res,
    )


def write_dem(city: City, spec: SurveySpec, path: str | os.PathLike) -> DemGrid:
    """Write the DEM GeoTIFF (float32, tiled, deflate, nodata -9999, CRS, Area) to
    ``path`` atomically (temporary name, then rename) and return the grid.

    Same seed => same bytes (no timestamps are written)."""
    import rasterio

    from twin.crs import parse_crs

    grid = dem_grid(city, spec)
    path = Path(path)
    ny, nx = grid.shape
    block = 256 if min(nx, ny) >= 256 else 128
    profile = {
        "driver": "GTiff",
        "width": nx,
        "height": ny,
        "count": 1,
        "dtype": "float32",
        "crs": parse_crs(city.crs).to_wkt(),
        "transform": grid.transform,
        "nodata": NODATA,
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "compress": "deflate",
        "predictor": 3,
    }
    try:
        with atomic_path(path) as tmp:
            with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
                with rasterio.open(tmp, "w", **profile) as ds:
                    ds.write(grid.heights, 1)
                    ds.update_tags(AREA_OR_POINT="Area", HEIGHTS="ellipsoidal metres")
                    ds.set_band_description(1, "terrain height (ellipsoidal, m)")
                    ds.units = ("metre",)
    except OSError as exc:
        raise OutputError(f"cannot write the DEM: {exc}", path=path) from exc
    return grid
