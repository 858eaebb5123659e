"""Dense matching kernels against their NumPy reference, and on an exact plane scene."""

from __future__ import annotations

import numpy as np
import pytest

from twin.recon import _mvs_kernels as kern
from twin.recon import _mvs_reference as ref
from twin.recon.fuse import fuse, voxel_merge
from twin.recon.mvs import MvsOptions, View, compute_depth_map, select_sources
from twin.synth.camera import look_rotation

W, H, F = 128, 96, 110.0


def _texture_fn(seed: int = 0):
    """A smooth random texture t(x, y) on the plane (values 0..1)."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((64, 64))
    from scipy.ndimage import map_coordinates, zoom

    fine = zoom(coarse, 4, order=3)  # 256 x 256 over 64 m: 0.25 m cells

    def tex(x, y):
        u = (x + 32.0) / 64.0 * 255
        v = (y + 32.0) / 64.0 * 255
        return np.clip(map_coordinates(fine, [v, u], order=1, mode="reflect"), 0, 1)

    return tex


def _plane_scene(normal=(0.0, 0.0, 1.0), n_views: int = 5):
    """Views of the plane ``normal . X = 0`` from ~40 m, looking at the origin."""
    nrm = np.asarray(normal, float)
    nrm /= np.linalg.norm(nrm)
    # orthonormal basis of the plane for its texture coordinates
    e1 = np.cross(nrm, [0, 1, 0] if abs(nrm[1]) < 0.9 else [1, 0, 0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(nrm, e1)
    tex = _texture_fn()
    K = np.array([[F, 0, W / 2], [0, F, H / 2], [0, 0, 1.0]])
    views, depths = [], []
    offsets = [(0, 0), (6, 0), (-6, 0), (0, 6), (0, -6), (4, 4)][:n_views]
    for k, (dx, dy) in enumerate(offsets):
        C = 40.0 * nrm + dx * e1 + dy * e2
        R = look_rotation(-C / np.linalg.norm(C), np.array([1.0, 0, 0]))
        t = -R @ C
        v, u = np.mgrid[0:H, 0:W] + 0.5
        rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T  # camera
        d_world = rays @ R  # world directions (z_cam = 1)
        s = -(C @ nrm) / (d_world @ nrm)
        X = C + s[..., None] * d_world
        g = tex(X @ e1, X @ e2)
        rgb = np.repeat((g * 255).astype(np.uint8)[..., None], 3, axis=2)
        views.append(View(f"v{k}", K, R, t, rgb))
        depths.append(s.astype(np.float32))  # camera z = s since ray has z = 1
    return views, depths, nrm


def test_pixel_cost_matches_the_reference():
    views, depths, nrm = _plane_scene(normal=(0.3, -0.2, 1.0))
    g = [v.grey() for v in views]
    srcs_idx = [1, 2, 3, 4]
    Rs = np.array([views[j].R @ views[0].R.T for j in srcs_idx])
    ts = np.array([views[j].t - Rs[k] @ views[0].t for k, j in enumerate(srcs_idx)])
    Ks = np.array([views[j].K for j in srcs_idx])
    srcs = np.stack([g[j] for j in srcs_idx])
    dims = np.array([[H, W]] * 4)
    Kinv = np.linalg.inv(views[0].K)
    n_cam = views[0].R @ nrm
    rng = np.random.default_rng(3)
    buf = np.empty(kern.buffer_size(4, 3, 1))
    for _ in range(40):
        r, c = int(rng.integers(0, H)), int(rng.integers(0, W))
        d = float(depths[0][r, c]) * float(rng.uniform(0.9, 1.1))
        n = n_cam + rng.normal(0, 0.2, 3)
        n /= np.linalg.norm(n)
        for half, step, nbest in ((4, 2, 3), (3, 1, 2)):
            a = kern.pixel_cost(
                g[0], srcs, dims, Ks, Rs, ts, Kinv, r, c, d, n[0], n[1], n[2],
                half, step, nbest, buf,
            )  # fmt: skip
            b = ref.pixel_cost(g[0], srcs, Ks, Rs, ts, views[0].K, r, c, d, n, half, step, nbest)
            assert a == pytest.approx(b, abs=2e-4)
    # the true plane has a low cost, a wrong depth a higher one
    r, c = H // 2, W // 2
    d = float(depths[0][r, c])
    good = ref.pixel_cost(g[0], srcs, Ks, Rs, ts, views[0].K, r, c, d, n_cam, 4, 2, 3)
    bad = ref.pixel_cost(g[0], srcs, Ks, Rs, ts, views[0].K, r, c, 1.1 * d, n_cam, 4, 2, 3)
    assert good < 0.1 < bad


def test_sources_that_do_not_see_the_window_do_not_count():
    """The cost is the mean of the valid costs only; two valid sources are required."""
    views, depths, nrm = _plane_scene()
    g = [v.grey() for v in views]
    # a view whose image lies far to the side of the scene
    away = View("away", views[1].K, views[1].R, views[1].t + [500.0, 0, 0], views[1].rgb)

    def setup(idx):
        vs = [away if j == "away" else views[j] for j in idx]
        Rs = np.array([v.R @ views[0].R.T for v in vs])
        ts = np.array([v.t - Rs[k] @ views[0].t for k, v in enumerate(vs)])
        Ks = np.array([v.K for v in vs])
        srcs = np.stack([g[1] if j == "away" else g[j] for j in idx])
        return srcs, Ks, Rs, ts

    r, c = H // 2, W // 2
    d = float(depths[0][r, c])
    n_cam = views[0].R @ nrm
    Kinv = np.linalg.inv(views[0].K)

    def both(idx, nbest=3):
        srcs, Ks, Rs, ts = setup(idx)
        buf = np.empty(kern.buffer_size(len(idx), 4, 2))
        dims = np.array([[H, W]] * len(idx))
        a = kern.pixel_cost(g[0], srcs, dims, Ks, Rs, ts, Kinv, r, c, d, *n_cam, 4, 2, nbest, buf)
        b = ref.pixel_cost(g[0], srcs, Ks, Rs, ts, views[0].K, r, c, d, n_cam, 4, 2, nbest)
        assert a == pytest.approx(b, abs=2e-4)
        return b

    c12 = both([1, 2], nbest=2)
    assert c12 < 0.1
    # a third source that sees nothing leaves the mean of the two that see the window
    assert both([1, 2, "away"]) == pytest.approx(c12, abs=1e-9)
    # one seeing source of two is not enough
    assert both([1, "away"]) == ref.BAD
    # a wrong depth seen by the same sources stays worse than the true one
    d = 1.1 * d
    assert both([1, 2, "away"]) > 0.3


@pytest.mark.parametrize("normal", [(0.0, 0.0, 1.0), (0.5, 0.0, 1.0)])
def test_depth_map_of_a_plane(normal):
    views, depths, nrm = _plane_scene(normal=normal)
    opt = MvsOptions(coarse_size=64, depth_samples=32, iterations=3, max_cost=0.55)
    srcs = select_sources(views, 0, 40.0, opt)
    assert sorted(srcs) == [1, 2, 3, 4]
    dm = compute_depth_map(views, 0, srcs, (30.0, 55.0), opt)
    ok = dm.depth > 0
    assert ok.mean() > 0.7  # the rest: windows leaving the sources near the edges
    rel = np.abs(dm.depth[ok] - depths[0][ok]) / depths[0][ok]
    assert np.median(rel) < 0.002 and np.percentile(rel, 90) < 0.01
    n_true = views[0].R @ nrm
    ang = np.degrees(np.arccos(np.clip(dm.normal[ok] @ n_true, -1, 1)))
    assert np.median(ang) < 5.0
    assert dm.confidence[ok].min() > 0 and dm.confidence[~ok].max() == 0


def test_fusion_keeps_consistent_points_on_the_plane():
    views, depths, nrm = _plane_scene(n_views=4)
    opt = MvsOptions(coarse_size=64, depth_samples=32)
    maps = []
    for i in range(len(views)):
        dm = compute_depth_map(views, i, select_sources(views, i, 40.0, opt), (30, 55), opt)
        maps.append(dm)
    # spoil one map: its wrong depths must not survive the consistency check
    maps[3].depth[:] = np.where(maps[3].depth > 0, maps[3].depth * 1.2, 0)
    cloud = fuse(views, maps, min_views=2)
    assert len(cloud) > 0.5 * H * W
    dist = np.abs(cloud.xyz @ nrm)
    assert np.percentile(dist, 90) < 0.05  # GSD here is ~0.36 m
    assert (dist > 4.0).mean() < 1e-3  # the spoiled map's points are ~8 m off
    assert cloud.views.min() >= 2
    merged = voxel_merge(cloud, 0.5)
    assert len(merged) < len(cloud) and np.median(np.abs(merged.xyz @ nrm)) < 0.05
    assert np.all(np.linalg.norm(merged.normal, axis=1) > 0.99)


def test_kernel_consistency_against_exact_depths():
    views, depths, _ = _plane_scene(n_views=2)
    a, b = views
    R = b.R @ a.R.T
    t = b.t - R @ a.t
    ok, pts = kern.consistency(depths[0], np.linalg.inv(a.K), b.K, R, t, depths[1], 0.01, 1.0)
    assert ok.mean() > 0.8
    z = pts[ok.astype(bool)][:, 2]
    assert np.allclose(z, depths[0][ok.astype(bool)], rtol=0.01)


def test_scores_per_label_against_a_ground_and_wall_mesh():
    """Ground points on the truth, wall points 1 m in front of it: each label is scored
    by its own points and samples."""
    from twin.recon import evaluate

    V = np.array(
        [[-10, -10, 0], [10, -10, 0], [10, 10, 0], [-10, 10, 0], [10, -10, 10], [10, 10, 10]],
        float,
    )
    F = np.array([[0, 1, 2], [0, 2, 3], [1, 5, 4], [1, 2, 5]])  # ground up, wall facing -x
    labels = np.array([1, 1, 4, 4])
    K = np.array([[300.0, 0, 320], [0, 300.0, 240], [0, 0, 1]])
    cams = []
    for y in (-2.0, 2.0):
        C = np.array([-25.0, y, 15.0])
        R = look_rotation(np.array([0.0, 0, 3]) - C, np.array([1.0, 0, 0]))
        cams.append(dict(K=K, R=R, t=-R @ C, width=640, height=480))
    g = np.mgrid[-9.9:10:0.2, -9.9:10:0.2].reshape(2, -1).T
    ground = np.column_stack([g, np.zeros(len(g))])
    w = np.mgrid[-9.9:10:0.2, 1.1:10:0.2].reshape(2, -1).T
    wall = np.column_stack([np.full(len(w), 9.0), w])
    sc = evaluate.score(
        np.vstack([ground, wall]), V, F, cams, [0.5, 1.5], spacing=0.5, face_labels=labels
    )
    by = sc["by_label"]
    assert by[1]["points"] == len(ground) and by[4]["points"] == len(wall)
    assert by[1]["0.5"]["accuracy"] == 1.0 and by[1]["0.5"]["completeness"] > 0.99
    # (the wall's foot is near the ground's points)
    assert by[4]["0.5"]["accuracy"] == 0.0 and by[4]["0.5"]["completeness"] < 0.1
    assert by[4]["1.5"]["accuracy"] == 1.0 and by[4]["1.5"]["completeness"] > 0.99
    assert by[4]["0.5"]["f1"] == 0.0 and by[1]["0.5"]["f1"] > 0.99
    assert by[1]["samples"] + by[4]["samples"] == sc["truth_samples"]
    assert sc["completeness_by_label"][4]["1.5"] == by[4]["1.5"]["completeness"]
    # whole-cloud accuracy is the point-weighted mix of the labels'
    share = len(ground) / (len(ground) + len(wall))
    assert sc["by_tau"]["0.5"]["accuracy"] == pytest.approx(share)
