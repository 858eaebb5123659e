"""The five-camera oblique rig: flight plan, poses, EXIF/XMP and cameras.json."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from shapely.geometry import Polygon

from tests.synth.test_lidar import GROUND_Z, HALF, analytic_scene
from twin.crs import GEODETIC_3D
from twin.errors import InputError, ParameterError
from twin.synth.camera import (
    RIG,
    footprint,
    gimbal_angles,
    plan_flight,
    read_cameras,
    rig_sensors,
    write_images,
)
from twin.synth.exif import read_exif_gps, read_xmp
from twin.synth.params import PRESETS

SMALL = PRESETS["small"]


def ground_footprint(shot, z: float) -> Polygon:
    """The image's four corners cast onto the plane at height z."""
    s = shot.sensor
    corners = np.array([[0, 0], [s.width, 0], [s.width, s.height], [0, s.height]], float)
    xc = np.column_stack([(corners[:, 0] - s.cx) / s.fx, (corners[:, 1] - s.cy) / s.fy, np.ones(4)])
    d = xc @ shot.R
    t = (z - shot.centre[2]) / d[:, 2]
    return Polygon((shot.centre + d * t[:, None])[:, :2])


@pytest.fixture(scope="module")
def small_plan():
    bounds = (-121.0, -121.0, 121.0, 121.0)  # the small city's ENU extent
    return bounds, plan_flight(bounds, SMALL)


def test_poses_are_rotations_with_the_rig_geometry(small_plan):
    _, shots = small_plan
    for s in shots[:10] + shots[-10:]:
        assert np.allclose(s.R @ s.R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(s.R) == pytest.approx(1.0)
        assert np.allclose(s.t, -s.R @ s.centre)
        tilt = math.degrees(math.acos(-s.R[2, 2]))
        assert tilt == pytest.approx(0.0 if s.sensor.name == "nadir" else 45.0, abs=1e-9)
        # the image x axis is level (no roll)
        assert abs(s.R[0, 2]) < 1e-12
    assert shots[0].centre[2] == pytest.approx(SMALL.base_elevation + SMALL.flight_height)
    assert [s.sensor.name for s in shots[:5]] == list(RIG)


def test_forward_and_side_overlap_of_nadir_footprints(small_plan):
    _, shots = small_plan
    nadir = [s for s in shots if s.sensor.name == "nadir"]
    z = SMALL.base_elevation
    a, b = ground_footprint(nadir[3], z), ground_footprint(nadir[4], z)
    assert nadir[3].strip == nadir[4].strip
    fwd = a.intersection(b).area / a.area
    print(f"forward overlap {fwd:.4f} (spec {SMALL.forward_overlap})")
    assert fwd == pytest.approx(SMALL.forward_overlap, abs=1e-6)
    other = [s for s in nadir if s.strip == 2]
    c = min(other, key=lambda s: abs(s.centre[0] - nadir[3].centre[0]))
    side = a.intersection(ground_footprint(c, z)).area / a.area
    print(f"side overlap {side:.4f} (spec {SMALL.side_overlap})")
    assert side == pytest.approx(SMALL.side_overlap, abs=0.01)
    across, along = footprint(SMALL)
    assert a.area == pytest.approx(across * along)


def test_small_preset_counts_gsd_and_edge_coverage(small_plan):
    bounds, shots = small_plan
    n_st = len({(s.strip, s.station) for s in shots})
    gsd = SMALL.flight_height / rig_sensors(SMALL)["nadir"].fx
    print(f"small preset: {len(shots)} images, {n_st} stations, nadir GSD {gsd * 100:.1f} cm")
    assert len(shots) == 5 * n_st
    assert gsd == pytest.approx(SMALL.flight_height * 23.5 / (24.0 * 640))
    # every area corner is seen by at least two oblique images
    x0, y0, x1, y1 = bounds
    for cx, cy in [(x0, y0), (x0, y1), (x1, y0), (x1, y1)]:
        X = np.array([[cx, cy, SMALL.base_elevation]])
        seen = 0
        for s in shots:
            if s.sensor.name == "nadir":
                continue
            uv, zc = s.project(X)
            if zc[0] > 0 and 0 <= uv[0, 0] < s.sensor.width and 0 <= uv[0, 1] < s.sensor.height:
                seen += 1
        assert seen >= 2, (cx, cy)
    # strictly increasing times, strips flown one after another
    t = np.array([s.time for s in shots[::5]])
    assert (np.diff(t) > 0).all()


def test_gimbal_angles_follow_dji_conventions(small_plan):
    _, shots = small_plan
    east = {s.sensor.name: gimbal_angles(s.R) for s in shots[:5]}  # strip 1 flies east
    assert east["nadir"]["pitch"] == pytest.approx(-90)
    assert east["nadir"]["yaw"] == pytest.approx(90)
    assert east["forward"]["pitch"] == pytest.approx(-45)
    assert east["forward"]["yaw"] == pytest.approx(90)
    assert east["backward"]["yaw"] == pytest.approx(-90)
    assert east["left"]["yaw"] == pytest.approx(0, abs=1e-9)  # flying east, left is north
    assert east["right"]["yaw"] == pytest.approx(180) or east["right"]["yaw"] == pytest.approx(-180)
    for g in east.values():
        assert g["roll"] == pytest.approx(0, abs=1e-9)


def test_bad_plans_raise_parameter_errors():
    with pytest.raises(ParameterError, match="flight_height"):
        plan_flight((0, 0, 10, 10), SMALL.with_(flight_height=0.0))
    with pytest.raises(ParameterError, match="empty"):
        plan_flight((0, 0, 0, 10), SMALL)


# --- the written photo set ----------------------------------------------------------------
SPEC = SMALL.with_(image_width=96, image_height=72, flight_height=60.0, gps_sigma=1.5, seed=5)


@pytest.fixture(scope="module")
def photo_set(tmp_path_factory):
    scene = analytic_scene()
    out = tmp_path_factory.mktemp("photos")
    t0 = time.perf_counter()
    cams = write_images(scene, SPEC, out, np.random.Generator(np.random.PCG64(11)))
    print(f"{len(cams['images'])} photos in {time.perf_counter() - t0:.2f} s")
    return scene, out, cams


def test_exif_gps_equals_cameras_json_and_is_near_the_truth(photo_set):
    scene, out, cams = photo_set
    assert cams["images"] and (out / "cameras.json").exists()
    dev = []
    for im in cams["images"]:
        lon, lat, alt = read_exif_gps(out / "images" / im["file"])
        g = im["gps_exif"]
        assert (lon, lat) == pytest.approx((g["lon"], g["lat"]), abs=1e-12)
        assert alt == pytest.approx(g["alt"], abs=1e-9)
        # equals the noisy truth to EXIF precision: 1e-4 arcsec, 1 mm
        enu = scene.frame.from_crs(np.array([lon, lat, alt]), GEODETIC_3D)
        dev.append(enu - np.asarray(im["centre_enu"]))
    dev = np.array(dev)
    sig = SPEC.gps_sigma
    assert (np.hypot(dev[:, 0], dev[:, 1]) < 4 * sig * math.sqrt(2)).all()
    assert (np.abs(dev[:, 2]) < 4 * 2 * sig).all()
    # the noise is really there, one fix per station shared by the rig's five cameras
    assert np.std(dev[:, 0]) > 0.3 * sig
    by_station: dict = {}
    for im, d in zip(cams["images"], dev, strict=True):
        by_station.setdefault((im["strip"], im["station"]), []).append(d)
    assert max(len(v) for v in by_station.values()) >= 2
    for v in by_station.values():
        assert np.allclose(v, v[0], atol=0.01)
    # photos looking off the modelled world were not written
    f = cams["flight"]
    assert f["skipped_images"] > 0
    assert len(cams["images"]) == f["planned_images"] - f["skipped_images"]
    # true centre in lon/lat/h is consistent with ENU
    im = cams["images"][0]
    llh = scene.frame.to_crs(np.asarray(im["centre_enu"]), GEODETIC_3D)
    assert llh[0] == pytest.approx(im["centre_lonlat"]["lon"], abs=1e-12)


def test_exif_and_xmp_fields_are_those_of_a_drone_camera(photo_set):
    import piexif
    from PIL import Image

    _, out, cams = photo_set
    im = next(i for i in cams["images"] if i["sensor"] == "forward")
    path = out / "images" / im["file"]
    exif = piexif.load(str(path))
    z, e = exif["0th"], exif["Exif"]
    assert z[piexif.ImageIFD.Make] == b"Twin Synthetic"
    assert b"Forward" in z[piexif.ImageIFD.Model]
    n, d = e[piexif.ExifIFD.FocalLength]
    assert n / d == SPEC.oblique_focal_mm
    assert e[piexif.ExifIFD.FocalLengthIn35mmFilm] == round(35 * 36 / 23.5)
    stamp = im["time"][:19].replace("-", ":").replace("T", " ")
    assert e[piexif.ExifIFD.DateTimeOriginal].decode() == stamp
    assert exif["GPS"][piexif.GPSIFD.GPSMapDatum] == b"WGS-84"
    xmp = read_xmp(path)
    assert float(xmp["GimbalPitchDegree"]) == pytest.approx(-45, abs=0.01)
    assert float(xmp["GimbalYawDegree"]) == pytest.approx(im["gimbal_deg"]["yaw"], abs=0.01)
    assert float(xmp["AbsoluteAltitude"]) == pytest.approx(im["gps_exif"]["alt"], abs=0.01)
    assert float(xmp["RelativeAltitude"]) == pytest.approx(SPEC.flight_height, abs=8 * 1.5)
    with Image.open(path) as img:
        assert img.size == (SPEC.image_width, SPEC.image_height)


def test_read_cameras_round_trip(photo_set):
    scene, out, cams = photo_set
    cs = read_cameras(out)
    assert cs.frame == scene.frame
    assert len(cs.shots) == len(cams["images"])
    s0 = cs.shots[0]
    assert s0.sensor == rig_sensors(SPEC)[s0.sensor.name]
    assert np.array_equal(s0.R, np.asarray(cams["images"][0]["R"]))
    assert cs.gps[s0.name][1] == cams["images"][0]["gps_exif"]["lat"]
    # the ground below the first nadir camera projects to the principal point
    nadir = next(s for s in cs.shots if s.sensor.name == "nadir")
    uv, z = nadir.project(np.array([[*nadir.centre[:2], GROUND_Z]]))
    assert np.allclose(uv, [[SPEC.image_width / 2, SPEC.image_height / 2]])
    assert z[0] == pytest.approx(nadir.centre[2] - GROUND_Z)


def test_same_seed_same_jpeg_bytes(photo_set, tmp_path):
    scene, out, cams = photo_set
    again = write_images(scene, SPEC, tmp_path, np.random.Generator(np.random.PCG64(11)))
    assert again == cams
    for im in cams["images"][:10]:
        assert (out / "images" / im["file"]).read_bytes() == (
            tmp_path / "images" / im["file"]
        ).read_bytes()
    assert (out / "cameras.json").read_bytes() == (tmp_path / "cameras.json").read_bytes()


def test_readers_reject_bad_files(tmp_path):
    from PIL import Image

    plain = tmp_path / "plain.jpg"
    Image.new("RGB", (8, 8)).save(plain)
    with pytest.raises(InputError, match="no GPS") as e:
        read_exif_gps(plain)
    assert "plain.jpg" in str(e.value)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not a jpeg at all")
    with pytest.raises(InputError, match="junk.jpg"):
        read_exif_gps(junk)
    with pytest.raises(InputError, match="missing.jpg"):
        read_exif_gps(tmp_path / "missing.jpg")
    bad = tmp_path / "cameras.json"
    bad.write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        read_cameras(bad)
    bad.write_text('{"frame": {}}')
    with pytest.raises(InputError, match="malformed"):
        read_cameras(bad)
    with pytest.raises(InputError, match="no such"):
        read_cameras(tmp_path / "nope.json")


def test_area_is_the_scene_extent(photo_set):
    _, _, cams = photo_set
    xs = [im["centre_enu"][0] for im in cams["images"]]
    ys = [im["centre_enu"][1] for im in cams["images"]]
    assert min(xs) < -HALF and max(xs) > HALF  # strips run past the east/west edges
    assert max(abs(y) for y in ys) < HALF
