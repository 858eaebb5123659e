"""The procedural city and its DEM: layout invariants, terrain pads, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
import shapely

from twin.errors import OutputError, ParameterError
from twin.synth.city import make_city, road_surface
from twin.synth.model import ROOF_TYPES
from twin.synth.params import PRESETS, SurveySpec
from twin.synth.terrain import NODATA, dem_grid, write_dem

TINY = PRESETS["small"].with_(extent=160.0, block_size=60.0)


def _fingerprint(city) -> tuple:
    return (
        city.bounds,
        [
            (b.id, b.footprint.wkb, b.base_height, b.eave_height, b.ridge_height, b.roof_type)
            for b in city.buildings
        ],
        [(r.centerline.wkb, r.width) for r in city.roads],
        city.river.wkb,
        city.trees.tobytes(),
    )


def test_same_seed_same_city_and_different_seed_different_city():
    a, b = make_city(TINY), make_city(TINY)
    assert _fingerprint(a) == _fingerprint(b)
    xs = np.linspace(a.bounds[0], a.bounds[2], 50)
    assert np.array_equal(
        a.terrain(xs, xs * 0 + a.bounds[1] + 30), b.terrain(xs, xs * 0 + b.bounds[1] + 30)
    )
    c = make_city(TINY.with_(seed=1))
    assert _fingerprint(a) != _fingerprint(c)


def test_area_is_the_projected_centre_snapped_to_whole_metres(small_city, small_spec):
    from twin.crs import transform

    x0, y0, x1, y1 = small_city.bounds
    assert x0 == math.floor(x0) and y0 == math.floor(y0)
    assert x1 - x0 == small_spec.extent and y1 - y0 == small_spec.extent
    cx, cy, _ = transform([small_spec.lon, small_spec.lat, 0], "EPSG:4326", small_spec.crs)
    assert abs(0.5 * (x0 + x1) - cx) <= 1.0 and abs(0.5 * (y0 + y1) - cy) <= 1.0
    assert small_city.crs == "EPSG:4550"


def test_buildings_stay_off_roads_river_and_each_other(small_city):
    city = small_city
    assert len(city.buildings) >= 15
    area = shapely.box(*city.bounds)
    roads = road_surface(city)
    fps = [b.footprint for b in city.buildings]
    for b in city.buildings:
        assert b.footprint.is_valid, b.id
        assert area.contains(b.footprint), b.id
        assert not b.footprint.intersects(roads), b.id
        assert not b.footprint.intersects(city.river), b.id
    tree = shapely.STRtree(fps)
    a, c = tree.query(fps, predicate="dwithin", distance=6.9)
    assert np.all(a == c), "two buildings closer than 7 m"


def test_building_attributes_follow_the_rules(small_city):
    city = small_city
    ids = [b.id for b in city.buildings]
    assert ids == [f"B{i + 1:04d}" for i in range(len(ids))]
    shapes = {b.shape for b in city.buildings}
    assert {"rect", "L", "U"} <= shapes
    assert {b.roof_type for b in city.buildings} == set(ROOF_TYPES)
    for b in city.buildings:
        assert 6.0 <= b.eave_height <= b.ridge_height <= 60.0, b.id
        assert b.floors == round(b.eave_height / city.floor_height), b.id
        if b.roof_type in ("gable", "hip"):
            assert b.shape == "rect" and b.ridge_height > b.eave_height + 1.0
        else:
            assert b.ridge_height == b.eave_height
        if b.shape == "courtyard":
            assert len(b.footprint.interiors) == 1
    # taller near the centre: mean height of the inner half beats the outer ring
    cx, cy = city.center
    r = np.array(
        [
            math.hypot(b.footprint.centroid.x - cx, b.footprint.centroid.y - cy)
            for b in city.buildings
        ]
    )
    h = np.array([b.eave_height for b in city.buildings])
    half = 0.5 * (city.bounds[2] - city.bounds[0])
    assert h[r < 0.5 * half].mean() > h[r >= 0.5 * half].mean()


def test_courtyards_appear_in_the_default_city():
    city = make_city(PRESETS["default"])
    court = [b for b in city.buildings if b.shape == "courtyard"]
    assert court and all(len(b.footprint.interiors) == 1 for b in court)
    assert len(city.buildings) > 150


def test_terrain_is_a_flat_pad_under_each_building(small_city):
    city = small_city
    rng = np.random.default_rng(0)
    for b in city.buildings:
        x0, y0, x1, y1 = b.footprint.bounds
        # points inside the footprint and up to 1.45 m outside it (pad margin 1.5 m)
        pad = b.footprint.exterior.buffer(1.45)
        pts = rng.uniform([x0 - 2, y0 - 2], [x1 + 2, y1 + 2], (400, 2))
        inside = shapely.contains_xy(shapely.Polygon(b.footprint.exterior).union(pad), *pts.T)
        z = city.terrain(pts[inside, 0], pts[inside, 1])
        assert np.abs(z - b.base_height).max() < 1e-9, b.id


def test_terrain_river_valley_and_relief(small_city, small_spec):
    city = small_city
    grid = dem_grid(city, small_spec)
    z = grid.heights.astype(np.float64)
    gx, gy = np.meshgrid(grid.x, grid.y)
    water = shapely.contains_xy(city.river, gx, gy)
    assert water.mean() > 0.05
    assert np.abs(z[water] - city.water_level).max() < 1e-4
    assert city.water_level == small_spec.base_elevation
    assert z.min() >= small_spec.base_elevation - 1e-4
    assert (
        small_spec.base_elevation + 8 < z.max() <= small_spec.base_elevation + 2 + small_spec.relief
    )
    # smooth: hills stay below a 60 % grade between 1 m pixels; roads keep the natural
    # surface (no pad blend reaches them); only the blends around building pads on
    # the hillsides are steeper (and still bounded)
    nat = city.terrain.natural(gx, gy)
    assert np.abs(np.diff(nat, axis=0)).max() < 0.6 and np.abs(np.diff(nat, axis=1)).max() < 0.6
    on_road = shapely.contains_xy(road_surface(city), gx, gy)
    assert on_road.mean() > 0.1
    assert np.abs(z - nat)[on_road].max() < 1e-4
    assert not np.any(shapely.contains_xy(city.river.buffer(5.9), gx, gy) & on_road)
    dz = np.maximum(np.abs(np.diff(z, axis=0))[:, :-1], np.abs(np.diff(z, axis=1))[:-1, :])
    assert dz.max() < 3.0


def test_trees_stand_on_open_ground(small_city):
    city = small_city
    t = city.trees
    assert t.shape[1] == 4 and len(t) > 30
    pts = shapely.points(t[:, 0], t[:, 1])
    assert not np.any(shapely.intersects(city.river, pts))
    assert not np.any(shapely.intersects(road_surface(city), pts))
    for b in city.buildings:
        assert np.all(shapely.distance(b.footprint, pts) >= t[:, 3] + 0.99)
    assert np.all((t[:, 2] >= 5) & (t[:, 2] <= 14) & (t[:, 3] >= 1.5) & (t[:, 3] <= 4))


def test_dem_file_is_a_georeferenced_float32_geotiff(small_city, small_spec, tmp_path):
    p1 = tmp_path / "a" / "dem.tif"
    p2 = tmp_path / "b" / "dem.tif"
    grid = write_dem(small_city, small_spec, p1)
    write_dem(make_city(small_spec), small_spec, p2)
    assert p1.read_bytes() == p2.read_bytes()
    assert not list(tmp_path.rglob("*.tmp"))
    with rasterio.open(p1) as ds:
        assert ds.crs.to_epsg() == 4550
        assert ds.dtypes[0] == "float32" and ds.nodata == NODATA
        assert ds.width == ds.height == 240
        x0, y0, x1, y1 = small_city.bounds
        assert tuple(ds.bounds) == (x0, y0, x1, y1)
        assert ds.profile["tiled"] and ds.profile["compress"] == "deflate"
        assert ds.tags()["AREA_OR_POINT"] == "Area"
        z = ds.read(1)
        assert np.array_equal(z, grid.heights)
        assert not np.any(z == NODATA)
        # pixel (row 10, col 20) is the terrain at its centre
        x, y = ds.xy(10, 20)
    assert abs(float(small_city.terrain(x, y)) - z[10, 20]) < 1e-5


def test_bad_specs_raise_parameter_errors(tmp_path, small_city, small_spec):
    with pytest.raises(ParameterError, match="extent"):
        SurveySpec(extent=10.0)
    with pytest.raises(ParameterError, match="block_size"):
        make_city(TINY.with_(block_size=5.0))
    with pytest.raises(ParameterError, match="relief"):
        make_city(TINY.with_(relief=-3.0))
    with pytest.raises(ParameterError, match="dem_resolution"):
        make_city(TINY.with_(extent=60.0, dem_resolution=10.0))
    with pytest.raises(ParameterError):
        make_city({"seed": 1})
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="dem.tif"):
        write_dem(small_city, small_spec, blocker / "dem.tif")
