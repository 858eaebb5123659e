"""DEM input cases: geographic degrees, integer rasters with nodata, pixel-is-point."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine

from twin.terrain import read_dem, tin
from twin.terrain.quantized_mesh import QMAX, decode_tile
from twin.terrain.tiling import tile_bounds, tile_range, write_terrain_tiles
from twin.terrain.tin import tin_errors


def _write(path, data, transform, crs, nodata=None, tags=None):
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[1],
        height=data.shape[0],
        count=1,
        dtype=data.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
    ) as ds:
        ds.write(data, 1)
        if tags:
            ds.update_tags(**tags)
    return path


def _surface(rows, cols):
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float64)
    return 300 + 25 * np.sin(x / 9.0) * np.cos(y / 13.0) + 0.3 * x


def test_geographic_dem_in_degrees(tmp_path):
    """A DEM in EPSG:4326 (1 arc-second pixels near 15E 45N): the TIN keeps its
    vertices at pixel centres in degrees, and the quantized-mesh pyramid matches the
    DEM within each level's error (plus the height quantisation)."""
    rows, cols = 60, 80
    px = 1.0 / 3600.0
    tr = Affine(px, 0.0, 15.0, 0.0, -px, 45.02)
    h = _surface(rows, cols).astype(np.float32)
    path = _write(tmp_path / "deg.tif", h, tr, "EPSG:4326")
    d = read_dem(path)
    assert d.crs.is_geographic and d.crs.to_epsg() == 4326
    v, f, reached = tin(d.heights, 0.5, transform=d.transform, mask=d.valid)
    assert reached <= 0.5
    inv = ~d.transform
    c = inv.a * v[:, 0] + inv.b * v[:, 1] + inv.c
    r = inv.d * v[:, 0] + inv.e * v[:, 1] + inv.f
    np.testing.assert_allclose(c - 0.5, np.rint(c - 0.5), atol=1e-6)
    np.testing.assert_allclose(r - 0.5, np.rint(r - 0.5), atol=1e-6)
    gv = np.column_stack([np.rint(c - 0.5), np.rint(r - 0.5), v[:, 2]])
    err, _ = tin_errors(gv, f.astype(np.int64), d.heights)
    assert err.max() <= 0.5
    # tiles: lon/lat of the DEM used as they are
    out = tmp_path / "tiles"
    s = write_terrain_tiles(path, out, max_error=0.5)
    z = s["max_zoom"]
    assert z == 14  # 64 grid steps of at most 1 arc-second
    lv = s["levels"][z]
    assert lv["max_error_reached"] <= lv["max_error"]
    x0, y0, x1, y1 = tile_range(s["bounds"], z)
    checked = 0
    for x in range(x0, x1 + 1):
        for y in range(y0, y1 + 1):
            t = decode_tile((out / f"{z}/{x}/{y}.terrain").read_bytes(), tile_bounds(z, x, y))
            lon, lat, hh = t["lonlat_h"].T
            ref = d.sample(lon, lat)
            ok = np.isfinite(ref)
            q = (t["max_height"] - t["min_height"]) / QMAX
            assert np.abs(hh[ok] - ref[ok]).max() <= 1e-3 + q  # vertices are samples
            checked += int(ok.sum())
    assert checked > 100


@pytest.mark.parametrize("dtype,nodata", [("int16", -32768), ("uint16", 0), ("int32", -9999)])
def test_integer_dem_with_nodata(tmp_path, dtype, nodata):
    """Integer heights (decimetres in int16, metres in uint16/int32) with a nodata
    value: read as float64 with NaN holes; the TIN bridges the hole from its rim."""
    h = np.rint(_surface(40, 50)).astype(dtype)
    h[10:15, 20:26] = nodata
    tr = Affine(2.0, 0.0, 500000.0, 0.0, -2.0, 6000000.0)
    d = read_dem(_write(tmp_path / "int.tif", h, tr, "EPSG:32633", nodata=nodata))
    assert d.heights.dtype == np.float64 and d.nodata == float(nodata)
    assert np.isnan(d.heights[10:15, 20:26]).all()
    assert np.array_equal(d.heights[~np.isnan(d.heights)], h[h != nodata].astype(np.float64))
    v, f, reached = tin(d.heights, 0.5, transform=d.transform, mask=d.valid)
    assert reached <= 0.5
    valid_h = d.heights[d.valid]
    assert v[:, 2].min() >= valid_h.min() and v[:, 2].max() <= valid_h.max()  # no pit, spike


def test_pixel_is_point_and_pixel_is_area(tmp_path):
    """``AREA_OR_POINT=Point``: GDAL puts the tie point on the pixel centre and
    shifts the transform back by half a pixel, so both kinds have pixel (r, c)'s
    centre at ``transform * (c + 0.5, r + 0.5)``; the flag records the kind."""
    h = _surface(20, 30).astype(np.float32)
    tr = Affine(5.0, 0.0, 1000.0, 0.0, -5.0, 2000.0)
    area = read_dem(_write(tmp_path / "area.tif", h, tr, "EPSG:32633"))
    point = read_dem(
        _write(tmp_path / "point.tif", h, tr, "EPSG:32633", tags={"AREA_OR_POINT": "Point"})
    )
    assert area.pixel_is_area and not point.pixel_is_area
    with rasterio.open(tmp_path / "point.tif") as ds:
        assert ds.tags()["AREA_OR_POINT"] == "Point"
    for d in (area, point):
        assert d.transform.almost_equals(tr)
        x, y = d.pixel_centres(np.array([0]), np.array([0]))
        assert (x[0], y[0]) == (1002.5, 1997.5)
        np.testing.assert_allclose(d.sample(x, y), [h[0, 0]], rtol=1e-7)
        v, _, _ = tin(d.heights, 0.1, transform=d.transform)
        assert v[:, 0].min() == 1002.5 and v[:, 1].max() == 1997.5


def test_dtm_from_points_cog_windows_and_tin(tmp_path):
    """A DTM straight from ``twin.points`` (a COG): read whole and in windows, its
    TIN within the bound, and the windowed file TIN the same as the in-memory one."""
    from twin.points.cloud import PointCloud
    from twin.points.raster import dtm
    from twin.terrain.windowed import tin_file

    rng = np.random.default_rng(11)
    n = 12_000
    x = 600000.0 + rng.uniform(0, 60, n)
    y = 5700000.0 + rng.uniform(0, 40, n)

    def truth(x, y):
        return 10 + 0.05 * (x - 600000.0) + 2 * np.sin((y - 5700000.0) / 6.0)

    cloud = PointCloud(
        xyz=np.column_stack([x, y, truth(x, y)]),
        fields={"classification": np.full(n, 2, np.uint8)},
        crs=rasterio.crs.CRS.from_epsg(32631),
    )
    out = tmp_path / "dtm.tif"
    dtm(cloud, out, 1.0, ground="existing")
    d = read_dem(out)
    with rasterio.open(out) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    cx, cy = d.pixel_centres(*np.nonzero(d.valid))
    assert np.abs(d.heights[d.valid] - truth(cx, cy)).max() < 0.3  # cell means
    w = read_dem(out, window=(5, 7, 20, 30))
    np.testing.assert_array_equal(w.heights, d.heights[5:25, 7:37])
    assert w.transform.almost_equals(d.transform @ Affine.translation(7, 5))
    v, f, reached = tin(d.heights, 0.05, transform=d.transform, mask=d.valid, tile_size=16)
    assert reached <= 0.05
    v2, f2, r2 = tin_file(out, 0.05, tile_size=16)
    assert r2 == reached and len(v2) == len(v) and len(f2) == len(f)
