"""Georeferencing maths, pair selection and GCP files (no SfM run)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from twin.errors import InputError
from twin.recon import sfm
from twin.recon.images import ImageInfo


def test_robust_similarity_ignores_outliers():
    rng = np.random.default_rng(0)
    src = rng.uniform(-50, 50, (40, 3))
    R = Rotation.from_euler("zyx", [30, 5, -3], degrees=True).as_matrix()
    dst = 3.5 * src @ R.T + np.array([100.0, -20.0, 7.0])
    dst += rng.normal(0, 0.3, dst.shape)
    bad = rng.choice(40, 8, replace=False)
    dst[bad] += rng.uniform(20, 60, (8, 3))
    s, R2, t, inl = sfm.robust_similarity(src, dst, threshold=1.5)
    assert set(np.flatnonzero(~inl)) == set(bad)
    assert s == pytest.approx(3.5, rel=2e-3)
    assert sfm._angle_deg(R2 @ R.T) < 0.05
    # plain Umeyama is pulled away by the outliers
    s0, R0, _ = sfm.umeyama(src, dst)
    assert abs(s0 - 3.5) > abs(s - 3.5)
    with pytest.raises(Exception, match="three or more"):
        sfm.robust_similarity(src[:2], dst[:2], 1.0)


def _info(name, east, north, pitch=-90.0, yaw=0.0, gps=True):
    im = ImageInfo(Path(name), name, 640, 480, name, focal_px=600.0)
    if gps:
        im.lon, im.lat, im.alt = 121.0, 29.0, 200.0
    im.gimbal_pitch, im.gimbal_yaw, im.gimbal_roll = pitch, yaw, 0.0
    im.relative_altitude = 150.0
    return im, (east, north, 150.0)


def test_pairs_follow_where_images_look():
    infos, enu = [], []
    for k in range(40):
        x = 30.0 * k
        for name, pitch, yaw in (("n", -90, 0), ("f", -45, 90), ("b", -45, 270)):
            im, p = _info(f"{k:02d}{name}.jpg", x, 0.0, pitch, yaw)
            infos.append(im)
            enu.append(p)
    lost, _ = _info("lost.jpg", 0, 0, gps=False)
    infos.insert(10, lost)
    enu.insert(10, (np.nan, np.nan, np.nan))
    enu = np.array(enu)
    opts = sfm.SfmOptions(exhaustive_below=10, neighbours=8)
    pairs = sfm.select_pairs(infos, enu, opts)
    n = len(infos)
    assert len(pairs) < n * (n - 1) / 2 / 4
    names = {im.name: i for i, im in enumerate(infos)}
    # a forward view pairs with the nadir view of the station ~150 m ahead (same ground)
    assert ("05f.jpg", "10n.jpg") in pairs
    # opposite obliques (forward vs backward, 180 degrees apart) are never paired
    assert not any(a[2] in "fb" and b[2] in "fb" and a[2] != b[2] for a, b in pairs)
    # the image without GPS still gets partners
    assert sum("lost.jpg" in p for p in pairs) >= 10
    assert all(names[a] < names[b] for a, b in pairs)


def test_read_gcps(shared_data, tmp_path):
    g = sfm.read_gcps(shared_data / "images" / "berlin" / "ground_control_points.json")
    assert len(g) == 3 and sum(p["llh"] is not None for p in g) == 2
    assert g[0]["llh"][1] == pytest.approx(52.519268, abs=1e-6)
    assert {o["image"] for o in g[0]["observations"]} == {"02.jpg", "03.jpg"}
    (tmp_path / "bad.json").write_text('{"points": [{"position": 5}]}')
    with pytest.raises(InputError, match="bad.json: not a ground control point file"):
        sfm.read_gcps(tmp_path / "bad.json")
    with pytest.raises(InputError, match="no such GCP file"):
        sfm.read_gcps(tmp_path / "missing.json")
