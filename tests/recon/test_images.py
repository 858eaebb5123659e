"""Image ingest: EXIF/XMP metadata, camera groups and bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from twin.errors import InputError
from twin.recon.images import gimbal_rotation, scan_images
from twin.synth.camera import gimbal_angles, plan_flight, rig_sensors
from twin.synth.exif import jpeg_bytes
from twin.synth.params import PRESETS

SPEC = PRESETS["small"].with_(image_width=160, image_height=120)


def _texture(seed: int, h: int = 120, w: int = 160) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (h // 4, w // 4, 3)).astype(np.uint8)
    return np.kron(small, np.ones((4, 4, 1), np.uint8))


def _photo_set(folder, n: int = 6):
    """``n`` JPEGs of the synthetic rig with EXIF GPS and DJI XMP; returns the shots."""
    shots = plan_flight((0, 0, 100, 100), SPEC)[:n]
    folder.mkdir(parents=True, exist_ok=True)
    for i, shot in enumerate(shots):
        data, _ = jpeg_bytes(
            _texture(i),
            shot,
            lon=121.5 + 1e-4 * i,
            lat=29.8,
            alt=200.0 + i,
            relative_altitude=188.0,
            gimbal=gimbal_angles(shot.R),
        )
        (folder / f"{shot.name}.jpg").write_bytes(data)
    return shots


def test_metadata_from_exif_and_xmp(tmp_path):
    shots = _photo_set(tmp_path / "images")
    s = scan_images(tmp_path / "images")
    assert len(s.images) == len(shots) and not s.rejected
    by = s.by_name()
    sensors = rig_sensors(SPEC)
    for shot in shots:
        im = by[f"{shot.name}.jpg"]
        assert im.make == "Twin Synthetic" and im.model.startswith("TS-5")
        assert im.focal_px == pytest.approx(sensors[shot.sensor.name].fx, rel=1e-4)
        assert im.focal_source == "exif focal length and sensor width"
        assert im.sensor_width_mm == pytest.approx(SPEC.sensor_width_mm, rel=1e-4)
        assert im.focal_35mm == sensors[shot.sensor.name].focal_35mm
        assert im.lat == pytest.approx(29.8, abs=1e-7) and im.relative_altitude == 188.0
        # gimbal angles give back the camera rotation
        R = gimbal_rotation(im.gimbal_pitch, im.gimbal_yaw, im.gimbal_roll)
        assert np.abs(R - shot.R).max() < 1e-3
    # one camera model per rig camera (five sensors; focal differs nadir vs obliques)
    assert len(s.camera_groups()) == len({sh.sensor.name for sh in shots})


def test_gimbal_rotation_inverts_gimbal_angles():
    rng = np.random.default_rng(1)
    from scipy.spatial.transform import Rotation

    for _ in range(50):
        R = Rotation.random(random_state=rng).as_matrix()
        g = gimbal_angles(R)
        assert np.abs(gimbal_rotation(g["pitch"], g["yaw"], g["roll"]) - R).max() < 1e-9


def test_bad_input_is_reported_and_the_rest_kept(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    shots = _photo_set(folder, n=6)
    # corrupt JPEG: truncated bytes
    good = (folder / f"{shots[0].name}.jpg").read_bytes()
    (folder / "corrupt.jpg").write_bytes(good[: len(good) // 3])
    (folder / "garbage.jpg").write_bytes(b"not an image at all")
    # duplicate (identical bytes)
    shutil.copy(folder / f"{shots[1].name}.jpg", folder / "copy.jpg")
    # black frame
    Image.fromarray(np.zeros((120, 160, 3), np.uint8)).save(folder / "black.jpg")
    # no EXIF at all
    Image.fromarray(_texture(99)).save(folder / "plain.jpg")
    # blurred frame: a constant-ish gradient
    ramp = np.tile(np.linspace(60, 90, 160, dtype=np.uint8), (120, 1))
    Image.fromarray(np.dstack([ramp] * 3)).save(folder / "blurred.jpg")
    (folder / "notes.txt").write_text("not a photo")
    s = scan_images(folder)
    reasons = {r.name: r.reason for r in s.rejected}
    assert "corrupt" in reasons["corrupt.jpg"] and "corrupt" in reasons["garbage.jpg"]
    assert reasons["copy.jpg"].startswith(f"duplicate of {shots[1].name}.jpg")
    assert "blank frame" in reasons["black.jpg"]
    assert "blurred" in reasons["blurred.jpg"]
    usable = s.by_name()
    assert set(usable) == {f"{sh.name}.jpg" for sh in shots} | {"plain.jpg"}
    plain = usable["plain.jpg"]
    assert not plain.has_gps and plain.focal_source == "guess"
    assert "no EXIF" in plain.notes and any("focal" in n for n in plain.notes)
    assert s.summary()["without_gps"] == ["plain.jpg"]
    assert s.summary()["focal_guessed"] == ["plain.jpg"]


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        scan_images(tmp_path / "empty")
    with pytest.raises(InputError, match="no such image folder"):
        scan_images(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.jpg").write_bytes(b"\xff\xd8 broken")
    with pytest.raises(InputError, match="no usable image.*a.jpg: corrupt"):
        scan_images(tmp_path / "bad")


def test_cli_reports_an_empty_folder(tmp_path):
    from twin.cli import main

    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(main, ["recon", str(tmp_path / "empty"), str(tmp_path / "out")])
    assert res.exit_code == 2
    assert "no images" in res.output and "Traceback" not in res.output


def test_real_photos_metadata(shared_data):
    s = scan_images(shared_data / "images" / "lund" / "images")
    assert len(s.images) == 29 and not s.rejected
    im = s.images[0]
    # no sensor size in these EXIFs: the 35 mm equivalent gives the focal length
    assert im.focal_source == "exif 35 mm equivalent"
    assert im.focal_px == pytest.approx(35 / 36 * 1024)
    assert all(i.has_gps for i in s.images)
    b = scan_images(shared_data / "images" / "berlin" / "images")
    assert len(b.images) == 3 and all(i.mask is not None for i in b.images)


def test_rig_stations_from_capture_time(tmp_path):
    """Photos fired together (same time to the millisecond, same GPS fix, one per
    camera) are rig stations; a sequence of single photos is not a rig."""
    shots = plan_flight((0, 0, 100, 100), SPEC)[:10]  # two stations of the 5-camera rig
    folder = tmp_path / "rig"
    folder.mkdir()
    for i, shot in enumerate(shots):
        data, _ = jpeg_bytes(
            _texture(i), shot, lon=121.5 + 1e-4 * shot.station, lat=29.8, alt=200.0,
            relative_altitude=188.0, gimbal=gimbal_angles(shot.R),
        )  # fmt: skip
        (folder / f"{shot.name}.jpg").write_bytes(data)
    s = scan_images(folder)
    assert all("." in im.time for im in s.images)  # EXIF sub-seconds kept
    stations = s.rig_stations()
    assert sorted(len(g) for g in stations) == [5, 5]
    for g in stations:
        assert len({im.time for im in g}) == 1 and len({im.camera_key for im in g}) == 5
    # the same photos, each with its own GPS fix: not taken together
    single = tmp_path / "single"
    _photo_set(single, 10)
    assert scan_images(single).rig_stations() == []
