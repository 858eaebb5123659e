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


# ----------------------------------------------------------------------- prior adjustment
def _rig_block(rng, noise_px=0.3):
    """A two-strip block of a two-camera rig (nadir + forward oblique, 200 m up) over
    random ground points: the true problem and one with noisy observations."""
    from twin.recon import georef
    from twin.recon.images import gimbal_rotation

    fx = {0: 650.0, 1: 950.0}
    frames_R, frames_t, heading = [], [], []
    for y, yaw in ((-30.0, 90.0), (30.0, 270.0)):
        for x in np.arange(-120.0, 121.0, 30.0):
            R = gimbal_rotation(-90.0, yaw)
            C = np.array([x, y, 200.0])
            frames_R.append(R)
            frames_t.append(-R @ C)
            heading.append(yaw)
    Rf, tf = np.array(frames_R), np.array(frames_t)
    Rs = (gimbal_rotation(-45.0, 90.0) @ gimbal_rotation(-90.0, 90.0).T)[None]
    ts = np.zeros((1, 3))
    nf = len(Rf)
    img_frame = np.repeat(np.arange(nf), 2)
    img_sensor = np.tile([-1, 0], nf)
    params = np.array([[fx[s], fx[s], 320.0, 240.0, 0.0, 0.0] for s in (0, 1)] * nf)
    X = np.c_[rng.uniform(-260, 260, 1500), rng.uniform(-160, 160, 1500), rng.uniform(0, 8, 1500)]
    true = georef.Problem(
        Rf, tf, Rs, ts, X, img_frame, img_sensor, params,
        np.zeros(0, int), np.zeros(0, int), np.zeros((0, 2)),
    )  # fmt: skip
    R, t = true.cam_from_world()
    oi, op, uv = [], [], []
    for i in range(len(R)):
        Xc = X @ R[i].T + t[i]
        u = params[i, 0] * Xc[:, 0] / Xc[:, 2] + 320.0
        v = params[i, 0] * Xc[:, 1] / Xc[:, 2] + 240.0
        ok = np.flatnonzero((Xc[:, 2] > 0) & (u > 0) & (u < 640) & (v > 0) & (v < 480))
        oi += [i] * len(ok)
        op += ok.tolist()
        uv += np.c_[u[ok], v[ok]].tolist()
    true.obs_img, true.obs_pt = np.array(oi), np.array(op)
    true.obs_uv = np.array(uv)
    seen = np.bincount(true.obs_pt, minlength=len(X)) >= 2
    keep = seen[true.obs_pt]
    remap = np.cumsum(seen) - 1
    true.X = X[seen]
    true.obs_img, true.obs_pt = true.obs_img[keep], remap[true.obs_pt[keep]]
    true.obs_uv = true.obs_uv[keep]
    noisy = georef.Problem(**{k: getattr(true, k) for k in true.__dataclass_fields__})
    noisy.obs_uv = true.obs_uv + rng.normal(0, noise_px, true.obs_uv.shape)
    return true, noisy, np.array(heading)


def _perturbed(prob, rng):
    from twin.recon import georef

    p = georef.Problem(**{k: getattr(prob, k) for k in prob.__dataclass_fields__})
    p.Rf = georef._exp(rng.normal(0, np.radians(0.2), (len(p.Rf), 3))) @ p.Rf
    p.tf = p.tf + rng.normal(0, 0.5, p.tf.shape)
    p.Rs = georef._exp(rng.normal(0, np.radians(0.1), (len(p.Rs), 3))) @ p.Rs
    p.X = p.X + rng.normal(0, 0.3, p.X.shape)
    return p


def _rot_err_deg(a, b):
    Ra, _ = a.cam_from_world()
    Rb, _ = b.cam_from_world()
    return sfm._angle_deg(Ra @ np.transpose(Rb, (0, 2, 1)))


def test_prior_adjustment_jacobians_match_finite_differences():
    from twin.recon import georef

    rng = np.random.default_rng(3)
    true, noisy, _ = _rig_block(rng)
    p = _perturbed(noisy, rng)
    p.ts = rng.normal(0, 0.2, p.ts.shape)
    p.img_params[:, 4] = 0.03  # radial distortion too
    p.img_params[:, 5] = -0.01
    sel = rng.choice(len(p.obs_img), 40, replace=False)
    for k in ("obs_img", "obs_pt", "obs_uv"):
        setattr(p, k, getattr(p, k)[sel])
    R_true, _ = true.cam_from_world()
    pri = georef.Priors(
        R_true, true.centres() + 1.0, np.full(len(R_true), 0.5), 0.5, np.radians(0.1), 1.5, 3.0,
        0.1,
    )  # fmt: skip
    e0, Jc, Jp, _ = georef._obs_jacobians(p)
    priors0 = georef._prior_terms(p, pri)
    h = 1e-6

    def moved(kind, j):
        q = georef.Problem(**{k: getattr(p, k).copy() for k in p.__dataclass_fields__})
        d = np.zeros(3)
        d[j % 3] = h
        if kind == "frame_rot":
            q.Rf = georef._exp(np.tile(d, (len(q.Rf), 1))) @ q.Rf
        elif kind == "frame_t":
            q.tf = q.tf + d
        elif kind == "cam_rot":
            q.Rs = georef._exp(d[None]) @ q.Rs
        elif kind == "cam_t":
            q.ts = q.ts + d
        else:
            q.X = q.X + d
        return q

    kinds = ["frame_rot", "frame_t", "cam_rot", "cam_t"]
    for col in range(12):
        q = moved(kinds[col // 3], col)
        num = (georef._obs_jacobians(q)[0] - e0) / h
        np.testing.assert_allclose(Jc[:, :, col], num, rtol=1e-3, atol=1e-3)
        for (ep0, J, _, _), (ep1, _, _, _) in zip(
            priors0, georef._prior_terms(q, pri), strict=True
        ):
            np.testing.assert_allclose(J[:, :, col], (ep1 - ep0) / h, rtol=1e-3, atol=1e-4)
    for j in range(3):
        num = (georef._obs_jacobians(moved("point", j))[0] - e0) / h
        np.testing.assert_allclose(Jp[:, :, j], num, rtol=1e-3, atol=1e-3)


def test_prior_adjustment_pins_rotations_with_exact_attitudes_and_is_robust_to_noisy_ones():
    """Exact gimbal attitudes (rounded to 0.01 degree as in the XMP) pin every camera's
    rotation; noisy ones (1 degree, three 25 degree outliers) are found to be that noisy
    and leave the result no worse than the GPS alone."""
    from twin.recon import georef
    from twin.recon.images import gimbal_rotation

    rng = np.random.default_rng(7)
    true, noisy, heading = _rig_block(rng)
    n = len(noisy.img_frame)
    station_gps = true.centres()[::2] + rng.normal(0, 1, (len(true.Rf), 3)) * [1.5, 1.5, 3.0]
    C_prior = np.repeat(station_gps, 2, axis=0)
    share = np.full(n, 0.5)
    start = _perturbed(noisy, rng)

    def gimbal(noise_deg, outliers=()):
        out = np.empty((n, 3, 3))
        for i in range(n):
            pitch = -90.0 if i % 2 == 0 else -45.0
            yaw = heading[i // 2] + (25.0 if i in outliers else 0.0)
            ang = np.round([pitch, yaw, 0.0] + rng.normal(0, noise_deg, 3), 2)
            out[i] = gimbal_rotation(*ang)
        return out

    gps_only, rep0 = georef.adjust_problem(start, np.full((n, 3, 3), np.nan), C_prior, share)
    err0 = _rot_err_deg(gps_only, true)
    exact, rep1 = georef.adjust_problem(start, gimbal(0.0), C_prior, share)
    err1 = _rot_err_deg(exact, true)
    assert err1.max() < 0.02 < err0.max()
    assert rep1["rounds"][-1]["sigma_attitude_deg"] < 0.02
    assert 0.2 < rep1["rounds"][-1]["sigma_px"] < 0.4  # the 0.3 px image noise
    # noisy attitudes: their σ is estimated near the truth and they do no harm
    bad, rep2 = georef.adjust_problem(start, gimbal(1.0, outliers=(3, 10, 21)), C_prior, share)
    err2 = _rot_err_deg(bad, true)
    assert 0.6 < rep2["rounds"][-1]["sigma_attitude_deg"] < 1.6
    assert err2.max() < 1.1 * err0.max() and np.median(err2) < 1.1 * np.median(err0)
    # positions: within the averaged GPS noise
    for p in (exact, bad):
        assert np.sqrt(np.mean(np.sum((p.centres() - true.centres()) ** 2, 1))) < 1.5
    # attitudes that scatter beyond max_sigma_deg are not used at all
    _, rep3 = georef.adjust_problem(start, gimbal(20.0), C_prior, share)
    assert rep3["attitude_priors"] == 0


def test_prior_adjustment_with_a_rig_camera_nothing_sees():
    """A rig camera whose photos all failed to register: its pose stays put, the rest
    is adjusted as usual."""
    from twin.recon import georef
    from twin.recon.images import gimbal_rotation

    rng = np.random.default_rng(5)
    true, noisy, heading = _rig_block(rng)
    start = _perturbed(noisy, rng)
    start.Rs = np.concatenate([start.Rs, np.eye(3)[None]])
    start.ts = np.concatenate([start.ts, np.zeros((1, 3))])
    n = len(start.img_frame)
    R_prior = np.array(
        [gimbal_rotation(-90.0 if i % 2 == 0 else -45.0, heading[i // 2]) for i in range(n)]
    )
    adjusted, _ = georef.adjust_problem(
        start, R_prior, np.repeat(true.centres()[::2], 2, axis=0), np.full(n, 0.5)
    )
    assert np.all(np.isfinite(adjusted.Rs)) and np.allclose(adjusted.Rs[1], np.eye(3), atol=1e-6)
    assert _rot_err_deg(adjusted, true).max() < 0.02


def test_prior_adjustment_removes_a_common_attitude_offset():
    """A compass-like 2 degree yaw offset on every gimbal attitude disagrees with the
    GPS beyond its precision: the offset is removed (the attitudes keep their relative
    rotations) and the result is as good as from the GPS alone. Without it, nothing is
    removed."""
    from twin.recon import georef
    from twin.recon.images import gimbal_rotation

    rng = np.random.default_rng(7)
    true, noisy, heading = _rig_block(rng)
    n = len(noisy.img_frame)
    gps = true.centres()[::2] + rng.normal(0, 1, (len(true.Rf), 3)) * [1.5, 1.5, 3.0]
    C_prior, share = np.repeat(gps, 2, axis=0), np.full(n, 0.5)
    start = _perturbed(noisy, rng)

    def gimbal(yaw_offset):
        return np.array(
            [
                gimbal_rotation(-90.0 if i % 2 == 0 else -45.0, heading[i // 2] + yaw_offset)
                for i in range(n)
            ]
        )

    gps_only, _ = georef.adjust_problem(start, np.full((n, 3, 3), np.nan), C_prior, share)
    biased, rep = georef.adjust_problem(start, gimbal(2.0), C_prior, share)
    assert rep["start"]["attitude_offset_removed"]["deg"] == pytest.approx(2.0, abs=0.5)
    err0, err = _rot_err_deg(gps_only, true), _rot_err_deg(biased, true)
    assert err.max() < 1.1 * err0.max()
    _, rep = georef.adjust_problem(start, gimbal(0.0), C_prior, share)
    assert rep["start"]["attitude_offset_removed"] is None
