"""LoD1/LoD2 building solids: closed, outward, the right volume, roofs where they belong."""

from __future__ import annotations

import dataclasses
import math
import warnings

import geopandas as gpd
import numpy as np
import pyproj
import pytest
import shapely
import trimesh
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.affinity import rotate
from shapely.geometry import MultiPolygon, Polygon, box

from twin.crs import LocalFrame
from twin.errors import ParameterError
from twin.mesh.buildings import FLOOR, ROOF, WALL, building_meshes, merge_meshes
from twin.terrain.dem import Dem

CRS = "EPSG:4550"
X0, Y0 = 500_000.0, 3_300_000.0
FRAME = LocalFrame.at(X0 + 50, Y0 + 50, 0.0, CRS)


def frame_gdf(geoms, **cols):
    return gpd.GeoDataFrame(cols, geometry=geoms, crs=CRS)


def in_map(m):
    """A building's vertices back in the footprint CRS (x, y, ellipsoidal z)."""
    return FRAME.to_crs(m.vertices, CRS)


def solid(m, xyz=None):
    return trimesh.Trimesh(in_map(m) if xyz is None else xyz, m.faces, process=False)


def check_closed(m):
    t = solid(m)
    assert t.is_watertight, m.id
    assert t.is_winding_consistent, m.id
    assert t.volume > 0, m.id  # outward normals
    return t


def rect(cx, cy, length, width, angle=0.0):
    r = box(cx - length / 2, cy - width / 2, cx + length / 2, cy + width / 2)
    return rotate(r, angle, origin=(cx, cy))


def test_lod1_volume_is_area_times_height_with_holes_and_multipolygons():
    court = Polygon(
        [(X0, Y0), (X0 + 30, Y0), (X0 + 30, Y0 + 30), (X0, Y0 + 30)],
        [[(X0 + 10, Y0 + 10), (X0 + 10, Y0 + 20), (X0 + 20, Y0 + 20), (X0 + 20, Y0 + 10)]],
    )
    multi = MultiPolygon([box(X0 + 50, Y0, X0 + 60, Y0 + 10), box(X0 + 70, Y0, X0 + 75, Y0 + 20)])
    ell = Polygon(
        [
            (X0, Y0 + 50),
            (X0 + 30, Y0 + 50),
            (X0 + 30, Y0 + 60),
            (X0 + 12, Y0 + 60),
            (X0 + 12, Y0 + 80),
            (X0, Y0 + 80),
        ]
    )
    geoms = [court, multi, ell, rect(X0 + 80, Y0 + 70, 25, 12, 33.0)]
    gdf = frame_gdf(
        geoms,
        height=[9.0, 12.0, 7.5, 20.0],
        base_height=[5.0, 6.0, 7.0, 8.0],
        roof_type=["gable"] * 4,
        eave_height=[6.0] * 4,
    )
    ms = building_meshes(gdf, None, FRAME, lod=1)
    assert len(ms) == 4
    for m, g, h, b in zip(ms, geoms, [9.0, 12.0, 7.5, 20.0], [5.0, 6.0, 7.0, 8.0], strict=True):
        t = check_closed(m)
        assert t.volume == pytest.approx(g.area * h, rel=1e-9)
        z = in_map(m)[:, 2]
        assert z.min() == pytest.approx(b, abs=1e-6) and z.max() == pytest.approx(b + h, abs=1e-6)
        assert m.attributes["roof_type"] == "flat" and m.attributes["base_source"] == "column"
        kinds = set(np.unique(m.face_kind))
        assert kinds == {WALL, ROOF, FLOOR}
    # the courtyard has walls around its hole: 4 outer + 4 inner wall quads
    assert (ms[0].face_kind == WALL).sum() == 16
    # two shells for the MultiPolygon
    assert len(solid(ms[1]).split(only_watertight=True)) == 2


@pytest.mark.parametrize("angle", [0.0, 27.0, 90.0])
def test_gable_volume_ridge_and_slope(angle):
    L, W, eave, top, base = 24.0, 10.0, 6.0, 11.0, 3.0
    g = rect(X0 + 40, Y0 + 40, L, W, angle)
    gdf = frame_gdf([g], height=[top], eave_height=[eave], base_height=[base], roof_type=["gable"])
    (m,) = building_meshes(gdf, None, FRAME, lod=2)
    t = check_closed(m)
    # prism up to the eaves plus a triangular prism of roof
    assert t.volume == pytest.approx(L * W * eave + 0.5 * W * (top - eave) * L, rel=1e-9)
    xyz = in_map(m)
    ridge = xyz[np.abs(xyz[:, 2] - (base + top)) < 1e-6]
    assert len(ridge) == 2  # ridge end points, on the gable walls
    d = ridge[1, :2] - ridge[0, :2]
    assert np.hypot(*d) == pytest.approx(L, abs=1e-6)  # along the long side
    assert math.degrees(math.atan2(d[1], d[0])) % 180 == pytest.approx(angle % 180, abs=1e-6)
    # both roof planes slope at atan(rise / half-width)
    roof = t.face_normals[m.face_kind == ROOF]
    slope = np.degrees(np.arccos(np.clip(roof[:, 2], -1, 1)))
    assert np.allclose(slope, math.degrees(math.atan((top - eave) / (W / 2))), atol=1e-6)
    # the gable walls are vertical
    walls = t.face_normals[m.face_kind == WALL]
    assert np.abs(walls[:, 2]).max() < 1e-9


def test_hip_volume_and_equal_slopes():
    L, W, eave, top = 20.0, 10.0, 6.0, 12.0
    gdf = frame_gdf(
        [rect(X0, Y0, L, W, 15.0)],
        height=[top],
        eave_height=[eave],
        base_height=[0.0],
        roof_type=["hip"],
    )
    (m,) = building_meshes(gdf, None, FRAME)
    t = check_closed(m)
    h = top - eave
    assert t.volume == pytest.approx(L * W * eave + h * W * (3 * L - W) / 6, rel=1e-9)
    roof = t.face_normals[m.face_kind == ROOF]
    slope = np.degrees(np.arccos(np.clip(roof[:, 2], -1, 1)))
    assert np.allclose(slope, math.degrees(math.atan(h / (W / 2))), atol=1e-6)
    xyz = in_map(m)
    ridge = xyz[np.abs(xyz[:, 2] - top) < 1e-6]
    assert np.hypot(*(ridge[1, :2] - ridge[0, :2])) == pytest.approx(L - W, abs=1e-6)


def _roof_volume_numeric(poly, eave, top, n=600):
    """Independent oracle: integrate the gable height field over the footprint."""
    c, a, nrm, hl, hw = _mrr(poly)
    x0, y0, x1, y1 = poly.bounds
    xs = np.linspace(x0, x1, n + 1)[:-1] + (x1 - x0) / (2 * n)
    ys = np.linspace(y0, y1, n + 1)[:-1] + (y1 - y0) / (2 * n)
    gx, gy = np.meshgrid(xs, ys)
    inside = shapely.contains_xy(poly, gx, gy)
    u = (gx - c[0]) * nrm[0] + (gy - c[1]) * nrm[1]
    z = eave + (top - eave) * (1 - np.abs(u) / hw)
    return float(z[inside].sum() * (x1 - x0) * (y1 - y0) / n**2)


def _mrr(poly):
    """GEOS's rectangle: independent of ours, good to ~0.1 mm (enough for 2e-3)."""
    r = np.asarray(shapely.minimum_rotated_rectangle(poly).exterior.coords)[:4]
    e0, e1 = r[1] - r[0], r[2] - r[1]
    if np.hypot(*e0) < np.hypot(*e1):
        e0, e1 = e1, e0
    a = e0 / np.hypot(*e0)
    return r.mean(axis=0), a, np.array([-a[1], a[0]]), np.hypot(*e0) / 2, np.hypot(*e1) / 2


@pytest.mark.parametrize("roof", ["gable", "hip"])
def test_non_rectangular_lod2_roofs_stay_closed(roof):
    ell = Polygon(
        [
            (X0, Y0),
            (X0 + 30, Y0),
            (X0 + 30, Y0 + 10),
            (X0 + 12, Y0 + 10),
            (X0 + 12, Y0 + 22),
            (X0, Y0 + 22),
        ]
    )
    court = Polygon(
        box(X0, Y0, X0 + 40, Y0 + 25).exterior,
        [box(X0 + 15, Y0 + 8, X0 + 25, Y0 + 17).exterior.coords[::-1]],
    )
    gdf = frame_gdf(
        [ell, court],
        height=[14.0, 13.0],
        eave_height=[8.0, 9.0],
        base_height=[0.0, 0.0],
        roof_type=[roof, roof],
    )
    ms = building_meshes(gdf, None, FRAME)
    for m, g, eave, top in zip(ms, [ell, court], [8.0, 9.0], [14.0, 13.0], strict=True):
        t = check_closed(m)
        z = in_map(m)[:, 2]
        assert z.max() <= top + 1e-6 and (z[m.faces[m.face_kind == ROOF]] >= eave - 1e-6).all()
        if roof == "gable":
            assert t.volume == pytest.approx(_roof_volume_numeric(g, eave, top), rel=2e-3)


def test_base_from_the_dem_is_the_minimum_under_the_footprint():
    from affine import Affine

    res = 1.0
    tr = Affine(res, 0, X0 - 10, 0, -res, Y0 + 60)
    r, c = np.mgrid[0:80, 0:80]
    x, y = tr.c + (c + 0.5) * res, tr.f - (r + 0.5) * res
    heights = 30.0 + 0.1 * (x - X0) + 0.05 * (y - Y0)
    dem = Dem(heights=heights, transform=tr, crs=pyproj.CRS(CRS))
    g = box(X0 + 5, Y0 + 5, X0 + 25, Y0 + 15)
    gdf = frame_gdf([g], height=[10.0])
    (m,) = building_meshes(gdf, dem, FRAME, lod=2)
    expect = 30.0 + 0.1 * 5 + 0.05 * 5  # the plane's lowest corner
    assert m.attributes["base_source"] == "dem"
    assert m.attributes["base_height"] == pytest.approx(expect, abs=1e-9)
    assert in_map(m)[:, 2].min() == pytest.approx(expect, abs=1e-6)
    # outside the DEM: skipped, with a warning
    far = frame_gdf([box(X0 + 500, Y0, X0 + 510, Y0 + 10)], height=[5.0])
    with pytest.warns(UserWarning, match="1 footprints skipped"):
        assert building_meshes(far, dem, FRAME) == []


def test_geographic_footprints_are_laid_out_in_metres():
    from affine import Affine

    tr = Affine(1.0, 0, X0 - 10, 0, -1.0, Y0 + 60)
    dem = Dem(heights=np.full((80, 80), 25.0), transform=tr, crs=pyproj.CRS(CRS))
    g = rect(X0 + 20, Y0 + 20, 16, 8, 20.0)
    lonlat = gpd.GeoDataFrame({"height": [9.0]}, geometry=[g], crs=CRS).to_crs("EPSG:4490")
    (m,) = building_meshes(lonlat, dem, FRAME, lod=1)
    t = check_closed(m)
    assert t.volume == pytest.approx(16 * 8 * 9.0, rel=1e-6)
    assert m.attributes["base_height"] == pytest.approx(25.0)


def test_default_height_and_bad_parameters():
    gdf = frame_gdf([box(X0, Y0, X0 + 10, Y0 + 10)], height=[np.nan], base_height=[1.0])
    (m,) = building_meshes(gdf, None, FRAME, default_height=7.0)
    assert solid(m).volume == pytest.approx(700.0, rel=1e-9)
    with pytest.raises(ParameterError):
        building_meshes(gdf, None, FRAME, lod=3)
    with pytest.raises(ParameterError):
        building_meshes(gdf, None, FRAME, default_height=0)


def test_merge_meshes_offsets_and_feature_ids():
    gdf = frame_gdf(
        [box(X0, Y0, X0 + 10, Y0 + 10), box(X0 + 20, Y0, X0 + 30, Y0 + 8)],
        height=[5.0, 6.0],
        base_height=[0.0, 0.0],
    )
    ms = building_meshes(gdf, None, FRAME)
    mm = merge_meshes(ms)
    assert len(mm.vertices) == sum(len(m.vertices) for m in ms)
    assert np.array_equal(np.bincount(mm.feature_id), [len(m.faces) for m in ms])
    second = mm.faces[mm.feature_id == 1]
    assert np.allclose(mm.vertices[second], ms[1].vertices[ms[1].faces])
    assert mm.faces.dtype == np.uint32 and mm.face_kind.dtype == np.uint8


def test_synthetic_city_matches_its_truth_solids(tmp_path):
    """Every building of the small synthetic city against the synth's exact solids
    (which start 0.5 m below the base): same volume, same top, closed."""
    pytest.importorskip("twin.synth.city")
    from twin.mesh.footprints import read_footprints
    from twin.synth.city import make_city
    from twin.synth.footprints import write_footprints
    from twin.synth.params import PRESETS
    from twin.synth.truth import WALL_BELOW, building_solid

    city = make_city(PRESETS["small"])
    write_footprints(city, tmp_path / "fp.gpkg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fp = read_footprints(tmp_path / "fp.gpkg")
    ms = building_meshes(fp, None, FRAME, lod=2)
    assert len(ms) == len(city.buildings)
    roofs = set()
    for m, b in zip(ms, city.buildings, strict=True):
        assert m.id == b.id
        t = check_closed(m)
        # the GeoPackage stores heights rounded to the millimetre
        b = dataclasses.replace(
            b,
            base_height=round(b.base_height, 3),
            eave_height=round(b.eave_height, 3),
            ridge_height=round(b.ridge_height, 3),
        )
        v, f, _ = building_solid(b)
        truth = trimesh.Trimesh(v, f, process=False).volume - WALL_BELOW * b.footprint.area
        assert t.volume == pytest.approx(truth, rel=1e-8), (b.id, b.roof_type)
        assert in_map(m)[:, 2].max() == pytest.approx(b.base_height + b.ridge_height, abs=1e-6)
        roofs.add(m.attributes["roof_type"])
    assert roofs == {"flat", "gable", "hip"}


@settings(max_examples=40, deadline=None)
@given(
    length=st.floats(6.0, 60.0),
    ratio=st.floats(0.2, 1.0),
    angle=st.floats(0.0, 180.0),
    eave=st.floats(2.5, 20.0),
    rise=st.floats(0.5, 8.0),
    roof=st.sampled_from(["gable", "hip"]),
)
def test_rectangles_at_any_angle_give_the_analytic_volume(length, ratio, angle, eave, rise, roof):
    width = length * ratio
    gdf = frame_gdf(
        [rect(X0 + 20, Y0 - 30, length, width, angle)],
        height=[eave + rise],
        eave_height=[eave],
        base_height=[4.0],
        roof_type=[roof],
    )
    (m,) = building_meshes(gdf, None, FRAME)
    t = check_closed(m)
    if roof == "gable":
        expect = length * width * eave + 0.5 * width * rise * length
    else:
        expect = length * width * eave + rise * width * (3 * length - width) / 6
    # roof vertices closer than the weld distance merge (a near-square hip's ridge of
    # 6e-5 m becomes a point): the volume moves by at most rise * width * _WELD
    from twin.mesh.buildings import _WELD

    assert t.volume == pytest.approx(expect, rel=1e-7, abs=rise * width * _WELD)
    assert in_map(m)[:, 2].max() == pytest.approx(4.0 + eave + rise, abs=1e-6)


def test_heights_stay_metres_in_a_feet_crs():
    """A 10 m building on a DEM in US survey feet (EPSG:2263) is 10 m tall in ENU."""
    import geopandas as gpd
    import shapely
    from rasterio.transform import from_origin

    from twin.crs import LocalFrame
    from twin.mesh.buildings import building_meshes
    from twin.terrain.dem import Dem

    ft = 0.3048006096
    x0, y0 = 1_000_000.0, 200_000.0
    dem = Dem(
        heights=np.full((40, 40), 100.0),  # 100 ftUS
        transform=from_origin(x0 - 200, y0 + 200, 10, 10),
        crs=pyproj.CRS.from_epsg(2263),
    )
    fp = gpd.GeoDataFrame(
        {"building_id": ["b"], "height": [10.0], "roof_type": ["flat"]},
        geometry=[shapely.box(x0, y0, x0 + 100, y0 + 50)],  # 100 ft x 50 ft
        crs="EPSG:2263",
    )
    frame = LocalFrame.at(x0, y0, 0.0, "EPSG:2263")
    (b,) = building_meshes(fp, dem, frame, lod=1)
    z = b.vertices[:, 2]
    assert z.max() - z.min() == pytest.approx(10.0, abs=1e-3)
    assert z.min() == pytest.approx(100 * ft, abs=0.01)
    assert np.ptp(b.vertices[:, 0]) == pytest.approx(100 * ft, rel=1e-3)
