"""View clusters for large blocks: a partition of the reference views with overlap, and
clustered dense matching + fusion as good as the unclustered run on the synthetic survey."""

from __future__ import annotations

import json

import numpy as np
import pytest

from twin.errors import ParameterError
from twin.recon.cluster import cluster_views, dense_clustered, view_targets


def _grid(nx=7, ny=5, step=30.0, seed=0):
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.arange(nx) * step, np.arange(ny) * step)
    xy = np.column_stack([x.ravel(), y.ravel()]) + rng.normal(0, 2.0, (nx * ny, 2))
    return np.column_stack([xy, np.zeros(len(xy))])


@pytest.mark.parametrize("max_views, overlap", [(4, 0.5), (8, 0.5), (9, 0.25), (5, 0.0)])
def test_every_view_is_a_reference_once_and_cells_partition_the_ground(max_views, overlap):
    t = _grid()
    clusters = cluster_views(t, max_views, overlap=overlap)
    refs = [i for c in clusters for i in c.refs]
    assert sorted(refs) == list(range(len(t)))  # each view once, none left out
    core = max(1, int(max_views * (1 - overlap)))
    for c in clusters:
        assert len(c.views) <= max_views and set(c.refs) <= set(c.views)
        assert len(c.refs) <= core
        # a reference's target lies in its own cluster's cell
        assert c.owns(t[c.refs, :2]).all()
        # the borrowed views are the ones nearest the cell: none left out is nearer
        x0, y0, x1, y1 = c.bounds
        d = np.hypot(
            np.maximum(np.maximum(x0 - t[:, 0], t[:, 0] - x1), 0),
            np.maximum(np.maximum(y0 - t[:, 1], t[:, 1] - y1), 0),
        )
        out = np.setdiff1d(np.arange(len(t)), c.views)
        assert d[c.views].max() <= d[out].min() + 1e-9
    if overlap > 0:
        assert sum(len(c.views) for c in clusters) > len(t)
    # the cells partition the plane: every ground point is owned by exactly one cluster
    rng = np.random.default_rng(1)
    pts = rng.uniform(-100, 300, (5000, 2))
    owners = np.sum([c.owns(pts) for c in clusters], axis=0)
    assert (owners == 1).all()


def test_small_block_is_one_cluster_and_bad_parameters_are_refused():
    t = _grid(3, 2)
    (c,) = cluster_views(t, 6)
    assert c.refs == c.views == list(range(6)) and c.owns(np.array([[1e9, -1e9]])).all()
    with pytest.raises(ParameterError, match="max_views"):
        cluster_views(t, 1)
    with pytest.raises(ParameterError, match="overlap"):
        cluster_views(t, 4, overlap=0.95)
    # identical targets still give every view once
    same = np.zeros((10, 3))
    cl = cluster_views(same, 4)
    assert sorted(i for c in cl for i in c.refs) == list(range(10))
    assert (np.sum([c.owns(np.zeros((1, 2))) for c in cl], axis=0) == 1).all()


def test_oblique_views_belong_where_they_look():
    C = np.array([[0.0, 0.0, 200.0], [0.0, 0.0, 200.0], [100.0, 0.0, 200.0]])
    s = np.sqrt(0.5)
    A = np.array([[0.0, 0.0, -1.0], [s, 0.0, -s], [0.0, 0.0, -1.0]])  # nadir, 45 deg east
    t = view_targets(C, A, ground=0.0)
    np.testing.assert_allclose(t[0], [0, 0, 0], atol=1e-9)
    np.testing.assert_allclose(t[1], [200, 0, 0], atol=1e-9)
    # the east-looking oblique clusters with the eastern nadir view
    clusters = cluster_views(t, 2, overlap=0.5)
    together = [c for c in clusters if 1 in c.refs][0]
    assert 2 in together.views and 0 not in together.views


@pytest.mark.slow
def test_clustered_dense_matches_every_view_once_and_fuses_as_well(small_survey, tmp_path):
    from twin.recon import evaluate
    from twin.recon.mvs import load_views
    from twin.synth.truth import read_truth_ply

    cams = json.loads((small_survey / "cameras.json").read_text())
    V, F, surf, _ = read_truth_ply(small_survey / "truth" / "mesh.ply")
    C = np.array([im["centre_enu"] for im in cams["images"]])
    order = np.argsort(np.linalg.norm(C[:, :2] - np.median(C[:, :2], axis=0), axis=1))
    names = [cams["images"][i]["name"] for i in sorted(order[:10])]
    pts = V[::5]
    whole, cl1, info1 = dense_clustered(
        cams, small_survey / "images", tmp_path / "one", max_views=10, points=pts, which=names
    )
    parts, clusters, info = dense_clustered(
        cams, small_survey / "images", tmp_path / "many", max_views=7, points=pts, which=names
    )
    assert len(cl1) == 1 and len(clusters) >= 3
    assert all(len(c.views) <= 7 for c in clusters)
    # every view matched once as a reference, one depth map each
    assert sorted(info["matched"]) == sorted(names)
    assert sorted(p.stem for p in (tmp_path / "many").glob("*.npz")) == sorted(names)
    # the overlap is not fused twice: about as many points as the unclustered cloud,
    # and no more near-duplicates (points closer than a quarter of the merge cell)
    assert 0.9 * len(whole) < len(parts) < 1.1 * len(whole)
    from scipy.spatial import cKDTree

    near_parts = (cKDTree(parts.xyz).query(parts.xyz, k=2)[0][:, 1] < 0.25 * info["voxel_m"]).mean()
    near_whole = (
        cKDTree(whole.xyz).query(whole.xyz, k=2)[0][:, 1] < 0.25 * info1["voxel_m"]
    ).mean()
    assert near_parts < near_whole + 0.02
    # as good as the unclustered run against the truth surface
    gsd = info1["median_gsd_m"]
    views = load_views({**cams, "images": [im for im in cams["images"] if im["name"] in names]},
                       small_survey / "images")  # fmt: skip
    camd = [dict(K=v.K, R=v.R, t=v.t, width=v.shape[1], height=v.shape[0]) for v in views]
    lo = np.percentile(whole.xyz[:, :2], 2, axis=0)
    hi = np.percentile(whole.xyz[:, :2], 98, axis=0)
    taus = [gsd, 2 * gsd, 5 * gsd]
    kw = dict(spacing=gsd, region=(*lo, *hi), face_labels=surf)
    s1 = evaluate.score(whole.xyz, V, F, camd, taus, **kw)["by_tau"][f"{2 * gsd:g}"]
    s2 = evaluate.score(parts.xyz, V, F, camd, taus, **kw)["by_tau"][f"{2 * gsd:g}"]
    print({"unclustered": s1, "clustered": s2, "clusters": len(clusters)})
    assert s1["f1"] > 0.4
    assert s2["f1"] > s1["f1"] - 0.03
