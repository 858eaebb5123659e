"""DEM input and the grid terrain mesh: round trip, sampling, errors, ENU placement."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from twin.crs import LocalFrame
from twin.errors import CRSError, InputError, ParameterError
from twin.terrain.dem import read_dem
from twin.terrain.gridmesh import dem_to_mesh

CRS = "EPSG:4550"
X0, Y1, RES = 500_000.0, 3_305_000.0, 2.0  # north-west corner, pixel size (m)


def plane(x, y):
    """The known terrain: a tilted plane (m)."""
    return 20.0 + 0.03 * (x - X0) - 0.02 * (y - Y1)


def write_dem(path, heights, *, crs=CRS, nodata=-9999.0, transform=None):
    h, w = heights.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=w,
        height=h,
        count=1,
        dtype="float32",
        crs=crs,
        transform=transform or from_origin(X0, Y1, RES, RES),
        nodata=nodata,
    ) as ds:
        ds.write(heights.astype(np.float32), 1)
    return path


def plane_grid(rows=30, cols=40):
    r, c = np.mgrid[0:rows, 0:cols]
    x = X0 + (c + 0.5) * RES
    y = Y1 - (r + 0.5) * RES
    return plane(x, y)


@pytest.fixture
def plane_dem(tmp_path):
    z = plane_grid()
    z[5, 7] = -9999.0  # one nodata hole
    return write_dem(tmp_path / "plane.tif", z)


def test_round_trip_keeps_heights_transform_crs_and_nodata(plane_dem):
    dem = read_dem(plane_dem)
    expect = plane_grid().astype(np.float32).astype(np.float64)
    assert dem.shape == (30, 40)
    assert np.isnan(dem.heights[5, 7]) and np.isnan(dem.heights).sum() == 1
    ok = np.isfinite(dem.heights)
    assert np.array_equal(dem.heights[ok], expect[ok])
    assert dem.crs.to_epsg() == 4550
    assert dem.nodata == -9999.0
    assert dem.transform.c == X0 and dem.transform.f == Y1 and dem.transform.a == RES
    assert dem.pixel_is_area


def test_bilinear_sampling_reproduces_a_plane(plane_dem):
    dem = read_dem(plane_dem)
    rng = np.random.default_rng(1)
    # away from the nodata hole (pixel 5, 7) and inside the pixel-centre hull
    x = X0 + rng.uniform(20 * RES, 39 * RES, 500)
    y = Y1 - rng.uniform(10 * RES, 29 * RES, 500)
    got = dem.sample(x, y)
    assert np.max(np.abs(got - plane(x, y))) < 1e-4  # float32 storage only
    # exact at a pixel centre
    assert dem.sample(X0 + 3.5 * RES, Y1 - 2.5 * RES) == pytest.approx(
        np.float32(plane(X0 + 3.5 * RES, Y1 - 2.5 * RES)), abs=1e-6
    )


def test_sampling_outside_or_next_to_nodata_is_nan(plane_dem):
    dem = read_dem(plane_dem)
    outside = dem.sample(np.array([X0 - 1.0, X0 + 100 * RES]), np.array([Y1 - 5, Y1 - 5]))
    assert np.all(np.isnan(outside))
    near_hole = dem.sample(X0 + 7.9 * RES, Y1 - 5.9 * RES)  # weights on pixel (5, 7)
    assert np.isnan(near_hole)
    # outer half pixel: clamped to the edge centres, still a height
    edge = dem.sample(X0 + 0.2 * RES, Y1 - 10.5 * RES)
    assert edge == pytest.approx(float(dem.heights[10, 0]), abs=1e-9)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found") as e:
        read_dem(tmp_path / "nope.tif")
    assert "nope.tif" in str(e.value)


def test_truncated_geotiff_names_the_file(tmp_path):
    p = write_dem(tmp_path / "dem.tif", plane_grid(200, 200))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt") as e:
        read_dem(p)
    assert str(p) in str(e.value)


def test_not_a_raster(tmp_path):
    p = tmp_path / "dem.tif"
    p.write_text("this is not a GeoTIFF\n")
    with pytest.raises(InputError, match="not a readable raster") as e:
        read_dem(p)
    assert e.value.path == str(p)


def test_no_crs_needs_one_given(tmp_path):
    p = write_dem(tmp_path / "nocrs.tif", plane_grid(), crs=None)
    with pytest.raises(CRSError, match="no CRS"):
        read_dem(p)
    assert read_dem(p, crs=4550).crs.to_epsg() == 4550


def test_all_nodata_and_all_nan(tmp_path):
    p = write_dem(tmp_path / "empty.tif", np.full((8, 8), -9999.0))
    with pytest.raises(InputError, match="nodata"):
        read_dem(p)
    q = write_dem(tmp_path / "nan.tif", np.full((8, 8), np.nan), nodata=None)
    with pytest.raises(InputError, match="NaN"):
        read_dem(q)


def test_real_dems_with_holes_and_custom_wkt(shared_data):
    d = read_dem(shared_data / "dem/whiteboxR_DEM.tif")
    assert d.shape == (188, 237) and d.crs.to_epsg() == 26918
    assert d.nodata == -32768.0 and np.all(np.isfinite(d.heights))  # declared, none used
    assert 200 < np.nanmin(d.heights) < np.nanmax(d.heights) < 1300
    o = read_dem(shared_data / "dem/stars_olinda_dem_utm25s.tif")
    assert o.shape == (111, 111) and o.crs.is_projected and o.nodata is None
    assert "UTM" in o.crs.name or "25S" in o.crs.to_wkt()
    frame = LocalFrame.at(*o.transform @ (55.5, 55.5), 0.0, o.crs)
    v, f = dem_to_mesh(o, frame, step=5)
    assert np.abs(v[:, :2]).max() < 111 * 90 / 2 * 1.01 and len(f) == 2 * 22 * 22


def test_grid_mesh_vertices_are_the_pixel_centres_in_enu(plane_dem):
    dem = read_dem(plane_dem)
    frame = LocalFrame.at(X0 + 40, Y1 - 30, 0.0, CRS)
    v, f = dem_to_mesh(dem, frame, step=1)
    rows, cols = dem.shape
    r, c = np.mgrid[0:rows, 0:cols]
    ok = np.isfinite(dem.heights)
    x, y = dem.pixel_centres(r[ok], c[ok])
    expect = frame.from_crs(np.column_stack([x, y, dem.heights[ok]]), CRS)
    assert v.dtype == np.float64 and f.dtype == np.uint32
    assert v.shape == expect.shape
    assert np.max(np.abs(v - expect)) < 1e-9
    # 2 triangles per cell, minus the 4 cells around the hole
    assert len(f) == 2 * ((rows - 1) * (cols - 1) - 4)
    # counter-clockwise from above: normals point up
    e1 = v[f[:, 1]] - v[f[:, 0]]
    e2 = v[f[:, 2]] - v[f[:, 0]]
    assert np.all(np.cross(e1, e2)[:, 2] > 0)
    # surface area of a plane: the footprint area divided by cos(slope)
    area = 0.5 * np.linalg.norm(np.cross(e1, e2), axis=1).sum()
    flat = ((rows - 1) * (cols - 1) - 4) * RES**2
    assert area == pytest.approx(flat * np.sqrt(1 + 0.03**2 + 0.02**2), rel=1e-4)


def test_grid_mesh_step_keeps_the_edges(plane_dem):
    dem = read_dem(plane_dem)
    frame = LocalFrame.at(X0, Y1, 0.0, CRS)
    v1, _ = dem_to_mesh(dem, frame, step=1)
    v3, f3 = dem_to_mesh(dem, frame, step=3)
    assert np.allclose(v1.min(axis=0)[:2], v3.min(axis=0)[:2], atol=1e-6)
    assert np.allclose(v1.max(axis=0)[:2], v3.max(axis=0)[:2], atol=1e-6)
    assert len(f3) == 2 * (11 - 1) * (14 - 1)  # rows 0,3,..,27,29; cols 0,3,..,39
    with pytest.raises(ParameterError):
        dem_to_mesh(dem, frame, step=0)
