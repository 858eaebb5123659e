"""DTM and DSM rasters from point clouds, written as Cloud-Optimised GeoTIFFs.

* **DTM**: the mean height of the ground points (class 2; classified by
  :mod:`twin.points.ground` first when asked or when the input has none) in each cell.
* **DSM**: the highest non-noise point (classes 7 and 18 left out) in each cell.
* **Voids** (cells without a point) are filled by linear interpolation on a Delaunay
  TIN of the cells around them (``fill="tin"``); cells outside the data's convex hull
  stay nodata. ``fill="none"`` leaves every void as nodata.

Rasters are float32 in the input CRS and its units; ``resolution`` is in the CRS's
horizontal units; nodata is -9999. Files are COGs (GDAL's COG driver, deflate, tiled,
with overviews), written to a temporary name and renamed.

**Memory** grows with the raster's cell count (a few float64 grids) plus one chunk
of ``chunk_points`` points (plus the ground filter's grid when it runs), not with the
number of points: a path is streamed, never read whole.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from twin.crs import parse_crs
from twin.errors import InputError, OutputError, ParameterError
from twin.fileio import atomic_path
from twin.points import _kernels as K
from twin.points.cloud import PointCloud
from twin.points.ground import GROUND, NOISE_CLASSES, GridSpec, ground_model
from twin.progress import Progress, ensure

NODATA = -9999.0


def _source(path_or_cloud, crs, chunk_points):
    """(chunks() factory yielding PointClouds, mins, maxs, crs, source, has_ground)."""
    from twin.points.io import _open, _resolve_crs, iter_chunks

    if isinstance(path_or_cloud, PointCloud):
        cloud = path_or_cloud
        if len(cloud) == 0:
            raise InputError("the cloud has no points", path=cloud.source)
        the_crs = parse_crs(crs, source=cloud.source) if crs is not None else cloud.require_crs()
        mins, maxs = cloud.bounds()
        cls = cloud.fields.get("classification")
        has_ground = cls is not None and bool(np.any(cls == GROUND))
        return (lambda: [cloud]), mins, maxs, the_crs, cloud.source, has_ground
    path = Path(path_or_cloud)
    with _open(path) as reader:
        h = reader.header
        the_crs, reason = _resolve_crs(h, path, crs)
        mins, maxs = np.array(h.mins, dtype=float), np.array(h.maxs, dtype=float)
        if h.point_count == 0:
            raise InputError("the file has no points", path=path)
    if the_crs is None:
        PointCloud(np.empty((0, 3)), source=str(path), crs_reason=reason).require_crs()

    def chunks():
        return iter_chunks(path, chunk_points, fields=["classification"])

    has_ground = False
    for c in chunks():
        if np.any(c.fields["classification"] == GROUND):
            has_ground = True
            break
    return chunks, mins, maxs, the_crs, str(path), has_ground


def _fill_tin(grid: np.ndarray) -> np.ndarray:
    """Fill NaN cells by linear interpolation on a Delaunay TIN of the filled cells
    bordering voids; cells outside that TIN's hull stay NaN."""
    from scipy import ndimage
    from scipy.interpolate import LinearNDInterpolator

    filled = np.isfinite(grid)
    if filled.all() or not filled.any():
        return grid
    voids = ~filled
    border = filled & ndimage.binary_dilation(voids, structure=np.ones((3, 3), bool))
    # Outer hull: keep the data's extreme cells as vertices so the TIN spans it.
    jj, ii = np.nonzero(border)
    vals = grid[jj, ii]
    if len(vals) < 3:
        out = grid.copy()
        out[voids] = np.nanmean(grid)
        return out
    try:
        interp = LinearNDInterpolator(np.column_stack([ii, jj]).astype(float), vals)
    except Exception:  # collinear vertices (a one-cell-wide strip): nearest value
        out = grid.copy()
        _, (aj, ai) = ndimage.distance_transform_edt(voids, return_indices=True)
        out[voids] = grid[aj[voids], ai[voids]]
        return out
    vj, vi = np.nonzero(voids)
    out = grid.copy()
    out[vj, vi] = interp(np.column_stack([vi, vj]).astype(float))
    return out


def _write_cog(path: Path, grid: np.ndarray, spec: GridSpec, crs, tags: dict[str, Any]) -> Path:
    import rasterio
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as rio_copy
    from rasterio.transform import from_origin

    data = np.where(np.isfinite(grid), grid, NODATA).astype(np.float32)[::-1]  # north up
    transform = from_origin(spec.x0, spec.y0 + spec.ny * spec.cell, spec.cell, spec.cell)
    profile = dict(
        driver="GTiff",
        width=spec.nx,
        height=spec.ny,
        count=1,
        dtype="float32",
        crs=rasterio.crs.CRS.from_wkt(crs.to_wkt()),
        transform=transform,
        nodata=NODATA,
    )
    with atomic_path(path) as tmp:
        try:
            with MemoryFile() as mem:
                with mem.open(**profile) as ds:
                    ds.write(data, 1)
                    ds.update_tags(**{k: str(v) for k, v in tags.items()})
                    ds.set_band_description(1, str(tags.get("TWIN_PRODUCT", "height")))
                with mem.open() as ds:
                    rio_copy(
                        ds,
                        str(tmp),
                        driver="COG",
                        COMPRESS="DEFLATE",
                        PREDICTOR="3",
                        BLOCKSIZE="256",
                        OVERVIEWS="AUTO",
                    )
        except rasterio.errors.RasterioError as exc:
            raise OutputError(f"cannot write the GeoTIFF: {exc}", path=path) from None
    return path


def _check(resolution, fill):
    if not (np.isfinite(resolution) and resolution > 0):
        raise ParameterError(f"resolution must be a positive number, got {resolution}")
    if fill not in ("tin", "none"):
        raise ParameterError(f"fill must be 'tin' or 'none', got {fill!r}")


def dtm(
    path_or_cloud: str | os.PathLike | PointCloud,
    out_tif: str | os.PathLike,
    resolution: float = 1.0,
    crs=None,
    fill: str = "tin",
    progress: Progress | None = None,
    *,
    ground: str = "auto",
    chunk_points: int = 1_000_000,
    **ground_params,
) -> dict[str, Any]:
    """Write a DTM (mean ground height per cell) as a COG; returns a summary dict
    (``path``, ``width``, ``height``, ``resolution``, ``crs``, ``filled_cells``,
    ``nodata_cells``, ``ground_source``).

    ``ground``: ``"auto"`` uses the input's class 2 points when it has any and runs
    the ground filter otherwise; ``"classify"`` always runs the filter (its
    ``ground_params``: cell, slope, window, threshold, scalar, in metres);
    ``"existing"`` requires class 2 points. Raises CRSError when the input has no
    usable CRS and ``crs`` is not given.
    """
    _check(resolution, fill)
    if ground not in ("auto", "classify", "existing"):
        raise ParameterError(f"ground must be 'auto', 'classify' or 'existing', got {ground!r}")
    progress = ensure(progress)
    chunks, mins, maxs, the_crs, source, has_ground = _source(path_or_cloud, crs, chunk_points)
    spec = GridSpec.covering(mins, maxs, resolution, source=source)
    if ground == "existing" and not has_ground:
        raise InputError("the input has no ground points (class 2)", path=source)
    use_filter = ground == "classify" or (ground == "auto" and not has_ground)
    model = None
    if use_filter:
        from twin.points.ground import _check_projected
        from twin.points.io import unit_factors

        _check_projected(the_crs, source)
        hf, vf = unit_factors(the_crs)

        def cand():
            for c in chunks():
                cls = c.fields.get("classification")
                yield c.xyz if cls is None else c.xyz[~np.isin(cls, NOISE_CLASSES)]

        model = ground_model(
            cand, mins, maxs, hf=hf, vf=vf, source=source, progress=progress, **ground_params
        )
    sums = np.zeros((spec.ny, spec.nx))
    counts = np.zeros((spec.ny, spec.nx), dtype=np.int64)
    with progress.step("dtm: rasterise ground") as advance:
        for c in chunks():
            cls = c.fields.get("classification")
            if model is not None:
                sel = model.is_ground(c.xyz)
                if cls is not None:
                    sel &= ~np.isin(cls, NOISE_CLASSES)
            else:
                sel = cls == GROUND
            pts = c.xyz[sel]
            ix, iy = spec.index(pts[:, 0], pts[:, 1])
            K.grid_sum_count(ix, iy, np.ascontiguousarray(pts[:, 2]), sums, counts)
            advance(len(c))
    if not counts.any():
        raise InputError("no ground points were found", path=source)
    grid = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return _finish(grid, spec, out_tif, the_crs, fill, progress, "DTM", source, model is not None)


def dsm(
    path_or_cloud: str | os.PathLike | PointCloud,
    out_tif: str | os.PathLike,
    resolution: float = 1.0,
    crs=None,
    fill: str = "tin",
    progress: Progress | None = None,
    *,
    chunk_points: int = 1_000_000,
) -> dict[str, Any]:
    """Write a DSM (highest non-noise point per cell) as a COG; returns a summary
    dict like :func:`dtm`. Memory: see the module doc."""
    _check(resolution, fill)
    progress = ensure(progress)
    chunks, mins, maxs, the_crs, source, _ = _source(path_or_cloud, crs, chunk_points)
    spec = GridSpec.covering(mins, maxs, resolution, source=source)
    top = np.full((spec.ny, spec.nx), -np.inf)
    with progress.step("dsm: rasterise") as advance:
        for c in chunks():
            cls = c.fields.get("classification")
            pts = c.xyz if cls is None else c.xyz[~np.isin(cls, NOISE_CLASSES)]
            ix, iy = spec.index(pts[:, 0], pts[:, 1])
            K.grid_max_into(ix, iy, np.ascontiguousarray(pts[:, 2]), top)
            advance(len(c))
    grid = np.where(np.isfinite(top), top, np.nan)
    if not np.isfinite(grid).any():
        raise InputError("no points to rasterise (all noise?)", path=source)
    return _finish(grid, spec, out_tif, the_crs, fill, progress, "DSM", source, False)


def _finish(grid, spec, out_tif, the_crs, fill, progress, product, source, classified):
    empty = int(np.count_nonzero(~np.isfinite(grid)))
    if fill == "tin":
        with progress.step(f"{product.lower()}: fill voids (TIN)"):
            grid = _fill_tin(grid)
    nodata = int(np.count_nonzero(~np.isfinite(grid)))
    from twin.points.io import unit_factors

    tags = {
        "TWIN_PRODUCT": product,
        "TWIN_SOURCE": Path(source).name if source else "",
        "TWIN_FILL": fill,
        "TWIN_GROUND": "twin SMRF filter" if classified else "class 2 of the input",
        "TWIN_Z_UNIT_M": unit_factors(the_crs)[1],
    }
    with progress.step(f"{product.lower()}: write COG"):
        _write_cog(Path(out_tif), grid, spec, the_crs, tags)
    return {
        "path": str(out_tif),
        "product": product,
        "width": spec.nx,
        "height": spec.ny,
        "resolution": spec.cell,
        "origin": [spec.x0, spec.y0],
        "crs": the_crs.to_wkt(),
        "filled_cells": empty - nodata,
        "nodata_cells": nodata,
        "ground_source": tags["TWIN_GROUND"] if product == "DTM" else None,
    }


def hillshade_png(tif: str | os.PathLike, png: str | os.PathLike, azimuth=315.0, altitude=45.0):
    """Render a hillshade of a single-band height GeoTIFF as an 8-bit grey PNG
    (nodata black). For looking at DTMs; memory grows with the raster size."""
    import rasterio
    from PIL import Image

    with rasterio.open(tif) as ds:
        z = ds.read(1, masked=True).astype(float).filled(np.nan)
        rx, ry = ds.res
    gy, gx = np.gradient(z, ry, rx)
    slope = np.arctan(np.hypot(gx, gy))
    aspect = np.arctan2(-gx, gy)
    az, alt = np.radians(360.0 - azimuth + 90.0), np.radians(altitude)
    shade = np.sin(alt) * np.cos(slope) + np.cos(alt) * np.sin(slope) * np.cos(az - aspect)
    img = np.nan_to_num(np.clip(shade, 0, 1) * 255, nan=0).astype(np.uint8)
    with atomic_path(png) as tmp:
        Image.fromarray(img).save(tmp, format="PNG")
    return Path(png)
