"""twin.crs against pyproj's own results and known geometry."""

import numpy as np
import pyproj
import pytest

from twin import crs
from twin.errors import CRSError

NINGBO = (121.55, 29.87)


def test_parse_crs_accepts_codes_strings_wkt_and_objects():
    c = crs.parse_crs(4550)
    assert c.to_epsg() == 4550
    assert crs.parse_crs("EPSG:4550") == c
    assert crs.parse_crs(c.to_wkt()) == c
    assert crs.parse_crs(c) is c


@pytest.mark.parametrize("bad", ["EPSG:999999", "not a crs", "", None])
def test_parse_crs_rejects_unknown(bad):
    with pytest.raises(CRSError):
        crs.parse_crs(bad, source="survey.las")


def test_parse_crs_error_names_the_file():
    with pytest.raises(CRSError, match="survey.las"):
        crs.parse_crs("EPSG:999999", source="survey.las")


@pytest.mark.parametrize("code", [4513, 4534, 4549, 4550, 4554])
def test_cgcs2000_gauss_kruger_zones_round_trip(code):
    c = pyproj.CRS.from_epsg(code)
    lon0, lat0, lon1, lat1 = c.area_of_use.bounds
    lon, lat = 0.5 * (lon0 + lon1), max(lat0, 25.0) + 0.5
    xyz = crs.transform([lon, lat, 30.0], "EPSG:4490", c)
    back = crs.transform(xyz, c, "EPSG:4490")
    assert np.allclose(back[:2], [lon, lat], atol=1e-9)  # ~0.1 mm
    assert back[2] == pytest.approx(30.0, abs=1e-6)


def test_transform_matches_pyproj():
    pts = np.array([[121.55, 29.87, 12.0], [121.56, 29.88, 80.0], [121.50, 29.80, -5.0]])
    ours = crs.transform(pts, "EPSG:4490", "EPSG:4550")
    t = pyproj.Transformer.from_crs("EPSG:4490", "EPSG:4550", always_xy=True)
    x, y = t.transform(pts[:, 0], pts[:, 1])
    assert np.allclose(ours[:, 0], x, atol=1e-6)
    assert np.allclose(ours[:, 1], y, atol=1e-6)
    assert np.allclose(ours[:, 2], pts[:, 2])


def test_local_frame_round_trip_below_a_millimetre():
    frame = crs.LocalFrame(*NINGBO, 0.0)
    rng = np.random.default_rng(1)
    enu = rng.uniform(-3000, 3000, size=(1000, 3))
    for target in ("EPSG:4550", "EPSG:4979", "EPSG:32651", crs.ECEF):
        xyz = frame.to_crs(enu, target)
        back = frame.from_crs(xyz, target)
        assert np.abs(back - enu).max() < 1e-3, target


def test_enu_axes_are_east_north_up_in_ecef():
    frame = crs.LocalFrame(*NINGBO, 0.0)
    o = frame.enu_to_ecef([0, 0, 0])
    east = frame.enu_to_ecef([1000, 0, 0]) - o
    assert np.linalg.norm(east) == pytest.approx(1000.0, abs=1e-6)
    # 1 km east moves the longitude, not the latitude.
    lon, lat, h = crs.transform(frame.enu_to_ecef([1000, 0, 0]), crs.ECEF, crs.GEODETIC_3D)
    assert lon > NINGBO[0] and lat == pytest.approx(NINGBO[1], abs=1e-6)
    assert h == pytest.approx(1000.0**2 / (2 * 6.38e6), rel=0.02)  # Earth's curvature
    up = frame.enu_to_ecef([0, 0, 10]) - o
    lon, lat, h = crs.transform(o + up, crs.ECEF, crs.GEODETIC_3D)
    assert h == pytest.approx(10.0, abs=1e-6)


def test_origin_matches_pyproj_ecef():
    frame = crs.LocalFrame(*NINGBO, 25.0)
    t = pyproj.Transformer.from_crs("EPSG:4979", "EPSG:4978", always_xy=True)
    assert np.allclose(frame.origin_ecef, t.transform(*NINGBO, 25.0), atol=1e-6)
    m = frame.enu_to_ecef_matrix()
    assert np.allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-12)
    assert np.allclose(m @ [0, 0, 0, 1], [*frame.origin_ecef, 1])


def test_local_frame_at_a_projected_point_and_dict_round_trip():
    x, y, _ = crs.transform([*NINGBO, 0.0], "EPSG:4490", "EPSG:4550")
    frame = crs.LocalFrame.at(x, y, 0.0, "EPSG:4550")
    assert frame.lon == pytest.approx(NINGBO[0]) and frame.lat == pytest.approx(NINGBO[1])
    assert crs.LocalFrame.from_dict(frame.to_dict()) == frame
    assert np.allclose(frame.from_crs([x, y, 0.0], "EPSG:4550"), 0, atol=1e-6)


def test_us_survey_feet_scale_horizontal_and_vertical():
    # EPSG:6880 is Nebraska state plane in US survey feet (the LAS convention: z in feet too).
    c = "EPSG:6880"
    frame = crs.LocalFrame(-99.0, 41.5, 0.0)
    p0 = frame.to_crs([0, 0, 0], c)
    p1 = frame.to_crs([0, 0, 100], c)
    assert p1[2] - p0[2] == pytest.approx(100 / 0.3048006096, rel=1e-6)
    e = frame.from_crs(p0 + [1000, 0, 0], c) - frame.from_crs(p0, c)
    assert np.linalg.norm(e) == pytest.approx(304.8006096, rel=1e-3)  # grid scale factor
    assert crs.horizontal_unit_factor(c) == pytest.approx(0.3048006096)
    z_m = crs.transform(p1, c, "EPSG:4979", z_unit="metre")[2]
    assert z_m == pytest.approx(p1[2], abs=1e-6)


def test_compound_crs_without_geoid_grid_warns_and_keeps_heights():
    with pytest.warns(UserWarning, match="geoid"):
        out = crs.transform([85000.0, 447000.0, 10.0], "EPSG:7415", "EPSG:28992")
    assert out[0] == pytest.approx(85000.0) and out[1] == pytest.approx(447000.0)


def test_points_outside_a_projection_raise():
    with pytest.raises(CRSError):
        crs.transform([[1e12, 1e12, 0.0]], "EPSG:4550", "EPSG:4490")


def test_zone_helpers():
    assert crs.cgcs2000_gk_crs_for(121.55).to_epsg() == 4550
    assert crs.utm_crs_for(121.55, 29.87).to_epsg() == 32651
    with pytest.raises(CRSError):
        crs.cgcs2000_gk_crs_for(10.0)


def test_compound_crs_in_feet_converts_heights_without_a_geoid_model():
    # NY Long Island state plane (ftUS) + NAVD88 height (ftUS): 100 ftUS is 30.48 m.
    with pytest.warns(UserWarning, match="geoid"):
        out = crs.transform([1e6, 2e5, 100.0], "EPSG:2263+6360", "EPSG:4979")
    assert out[2] == pytest.approx(100 * 0.3048006096, abs=1e-6)
    back = crs.transform(out, "EPSG:4979", "EPSG:2263+6360")
    assert back[2] == pytest.approx(100.0, abs=1e-6)
    assert crs.unit_factors("EPSG:2263+6360") == pytest.approx((0.3048006096, 0.3048006096))
    assert crs.unit_factors("EPSG:6880") == pytest.approx((0.3048006096, 0.3048006096))
    assert crs.unit_factors("EPSG:4326") == (1.0, 1.0)


def test_utm_zone_at_the_antimeridian():
    assert crs.utm_crs_for(180.0, 10.0).to_epsg() == 32660
