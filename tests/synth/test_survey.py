"""The synthetic survey as written to disk, checked against itself.

These tests read the files a user gets (not the generator's objects): the LiDAR lies
on the truth surface within the simulated noise, its classes match the truth labels,
the photos' EXIF GPS matches cameras.json, footprints lie inside the DEM, events
are valid, and the same seed gives the same bytes.
"""

from __future__ import annotations

import json
from datetime import datetime

import laspy
import numpy as np
import pytest
import rasterio

from twin.crs import LocalFrame, parse_crs, transform
from twin.fileio import sha256_file
from twin.synth.model import ASPRS_CLASS, Surface


def _survey(small_survey):
    return json.loads((small_survey / "survey.json").read_text())


def _truth(small_survey):
    from twin.synth.truth import read_truth_ply

    return read_truth_ply(small_survey / "truth" / "mesh.ply")


def test_every_file_is_listed_with_its_hash(small_survey):
    survey = _survey(small_survey)
    for name, meta in survey["files"].items():
        if name.endswith("/"):
            continue
        assert sha256_file(small_survey / name) == meta["sha256"], name
    for name in (
        "dem.tif",
        "footprints.gpkg",
        "truth/mesh.ply",
        "lidar.laz",
        "cameras.json",
        "events.ndjson",
    ):
        assert name in survey["files"], name
    assert survey["files"]["images/"]["count"] == survey["counts"]["images"] > 0


def test_crs_is_cgcs2000_gauss_kruger_everywhere(small_survey):
    survey = _survey(small_survey)
    assert parse_crs(survey["crs"]["wkt"]).to_epsg() == 4550
    with rasterio.open(small_survey / "dem.tif") as ds:
        assert parse_crs(ds.crs).to_epsg() == 4550
        assert ds.nodata is not None
    las = laspy.read(small_survey / "lidar.laz")
    assert parse_crs(las.header.parse_crs()).to_epsg() == 4550


def test_footprints_lie_inside_the_dem(small_survey):
    import geopandas as gpd

    fp = gpd.read_file(small_survey / "footprints.gpkg")
    assert len(fp) > 5 and fp["building_id"].is_unique
    with rasterio.open(small_survey / "dem.tif") as ds:
        b = ds.bounds
        x0, y0, x1, y1 = fp.total_bounds
        assert b.left <= x0 and x1 <= b.right and b.bottom <= y0 and y1 <= b.top
        heights = ds.read(1)
        assert (heights != ds.nodata).all()
    assert set(fp["roof_type"]) <= {"flat", "gable", "hip"}
    assert (fp["height"] >= fp["eave_height"]).all() and (fp["floors"] >= 1).all()


def _lidar_enu(small_survey):
    survey = _survey(small_survey)
    frame = LocalFrame.from_dict(survey["frame"])
    las = laspy.read(small_survey / "lidar.laz")
    xyz = np.column_stack([las.x, las.y, las.z])
    return las, frame.from_crs(xyz, survey["crs"]["wkt"]), survey


def test_lidar_lies_on_the_truth_surface_within_the_noise(small_survey):
    import trimesh

    las, enu, survey = _lidar_enu(small_survey)
    v, f, surface, _ = _truth(small_survey)
    mesh = trimesh.Trimesh(v, f, process=False)
    keep = np.asarray(las.classification) != 7
    rng = np.random.default_rng(0)
    idx = rng.choice(np.flatnonzero(keep), size=min(3000, int(keep.sum())), replace=False)
    _, dist, tri = trimesh.proximity.closest_point(mesh, enu[idx])
    sigma = survey["parameters"]["range_noise"]
    rmse = float(np.sqrt(np.mean(dist**2)))
    print(f"LiDAR to truth surface RMSE {rmse:.4f} m (range noise sigma {sigma} m)")
    # Noise is along the ray; the distance to the surface is its normal component.
    assert 0.3 * sigma < rmse < 1.3 * sigma
    # Classes: the class of the nearest truth face (vegetation splits 3/4/5 by height).
    expected = np.array([ASPRS_CLASS[Surface(s)] for s in surface[tri]])
    got = np.asarray(las.classification)[idx]
    veg = np.isin(expected, [3, 4, 5])
    agree = np.where(veg, np.isin(got, [3, 4, 5]), got == expected)
    print(f"class agreement with the nearest truth face: {agree.mean():.4f}")
    assert agree.mean() > 0.97


def test_lidar_has_strips_returns_and_times(small_survey):
    las = laspy.read(small_survey / "lidar.laz")
    assert len(np.unique(las.point_source_id)) >= 2
    assert np.all(
        np.diff(np.asarray(las.gps_time)[np.asarray(las.point_source_id) == las.point_source_id[0]])
        >= 0
    )
    assert (np.asarray(las.return_number) <= np.asarray(las.number_of_returns)).all()
    assert np.asarray(las.number_of_returns).max() >= 2
    assert np.abs(np.asarray(las.scan_angle) * 0.006).max() <= 45  # LAS 1.4: 0.006 degrees


def test_image_gps_matches_cameras_json(small_survey):
    import piexif

    cams = json.loads((small_survey / "cameras.json").read_text())
    assert cams["images"]
    for im in cams["images"][:: max(1, len(cams["images"]) // 10)]:
        exif = piexif.load(str(small_survey / "images" / im["file"]))
        gps = exif["GPS"]

        def deg(v, ref):
            d = sum(n / d / 60**i for i, (n, d) in enumerate(v))
            return -d if ref in (b"S", b"W") else d

        lat = deg(gps[piexif.GPSIFD.GPSLatitude], gps[piexif.GPSIFD.GPSLatitudeRef])
        lon = deg(gps[piexif.GPSIFD.GPSLongitude], gps[piexif.GPSIFD.GPSLongitudeRef])
        ref = im["gps_exif"]
        assert lat == pytest.approx(ref["lat"], abs=1e-6)
        assert lon == pytest.approx(ref["lon"], abs=1e-6)


def test_events_have_valid_times_and_positions(small_survey):
    survey = _survey(small_survey)
    p = survey["parameters"]
    t0 = datetime.fromisoformat(p["start_time"].replace("Z", "+00:00"))
    b = survey["bounds"]
    lines = (small_survey / "events.ndjson").read_text().splitlines()
    assert len(lines) == survey["counts"]["events"] > 0
    lonlat = []
    for line in lines:
        e = json.loads(line)
        t = datetime.fromisoformat(e["observed_at"].replace("Z", "+00:00"))
        assert 0 <= (t - t0).total_seconds() <= p["duration"] + 1e-6
        if "position" in e:
            lonlat.append((e["position"]["lon"], e["position"]["lat"]))
    xy = transform(np.array(lonlat), "EPSG:4326", survey["crs"]["wkt"])
    margin = 1.0
    assert (xy[:, 0] >= b["xmin"] - margin).all() and (xy[:, 0] <= b["xmax"] + margin).all()
    assert (xy[:, 1] >= b["ymin"] - margin).all() and (xy[:, 1] <= b["ymax"] + margin).all()


def test_same_seed_same_bytes_and_another_seed_differs(tmp_path):
    from twin.synth.params import PRESETS
    from twin.synth.survey import generate

    spec = PRESETS["small"].with_(
        extent=100.0, image_width=96, image_height=72, duration=20.0, lidar_density=2.0
    )
    a = generate(tmp_path / "a", spec)
    b = generate(tmp_path / "b", spec)
    assert a == b
    c = generate(tmp_path / "c", spec.with_(seed=1))
    assert c["files"]["footprints.gpkg"]["sha256"] != a["files"]["footprints.gpkg"]["sha256"]


def test_photos_are_what_cameras_json_and_the_truth_mesh_say(small_survey):
    """Re-render a few photos from cameras.json's poses and the truth PLY alone: the JPEGs
    match (up to compression), and truth vertices project onto the pixels that saw them."""
    from PIL import Image

    from twin.synth.camera import read_cameras
    from twin.synth.city import make_city
    from twin.synth.model import TruthScene
    from twin.synth.params import SurveySpec
    from twin.synth.render import render
    from twin.synth.truth import build_truth

    cams = read_cameras(small_survey)
    v, f, _, _ = _truth(small_survey)
    # The procedural albedo is not in the PLY: rebuild the scene from survey.json's
    # parameters and check it is the very mesh in truth/mesh.ply.
    spec = SurveySpec.from_dict(_survey(small_survey)["parameters"])
    scene = build_truth(make_city(spec), spec)
    assert isinstance(scene, TruthScene)
    assert np.array_equal(scene.faces, f) and np.allclose(scene.vertices, v, atol=1e-9)
    for shot in cams.shots[:: max(1, len(cams.shots) // 4)]:
        r = render(scene, shot.sensor, shot)
        photo = np.asarray(Image.open(small_survey / "images" / f"{shot.name}.jpg"), float)
        mse = np.mean((photo - r.image.astype(float)) ** 2)
        psnr = 10 * np.log10(255**2 / mse)
        print(f"{shot.name}: re-rendered vs JPEG PSNR {psnr:.1f} dB")
        assert psnr > 30, (shot.name, psnr)
        # Project the visible truth vertices of the faces seen at the pixel centres.
        ys, xs = np.nonzero(r.face_id >= 0)
        pick = np.random.default_rng(0).choice(len(ys), size=min(200, len(ys)), replace=False)
        for y, x in zip(ys[pick], xs[pick], strict=True):
            tri = v[f[r.face_id[y, x]]]
            cam = tri @ shot.R.T + shot.t
            uv = cam[:, :2] / cam[:, 2:3] * [shot.sensor.fx, shot.sensor.fy]
            uv += [shot.sensor.cx, shot.sensor.cy]
            # the pixel centre lies inside the projected triangle (barycentric test)
            p = np.array([x + 0.5, y + 0.5])
            a, b, c = uv
            m = np.column_stack([b - a, c - a])
            if abs(np.linalg.det(m)) < 1e-9:
                continue
            l1, l2 = np.linalg.solve(m, p - a)
            assert min(l1, l2, 1 - l1 - l2) > -1e-3, (shot.name, x, y)
