"""``twin recon`` options reach :func:`twin.recon.run.reconstruct`, and its summary
names the report's contents (the run itself is tested in ``test_synthetic.py``)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from twin.cli import main

REPORT = {
    "images": {"usable": 3, "rejected": [{"name": "x.jpg", "reason": "blank frame"}]},
    "mapping": {"mapper": "incremental"},
    "sfm": {"registered": 3, "points3D": 120, "mean_reprojection_px": 0.4},
    "georeference": {
        "gps_rmse_m": 1.2,
        "gps_inliers": 3,
        "gps_used": 3,
        "rotation_source": "gps",
        "gcp": None,
    },
    "dense": {
        "points": 5000,
        "views": 3,
        "seconds_per_megapixel": 9.0,
        "clustering": {"max_views": 2, "clusters": [{"refs": ["a"]}, {"refs": ["b", "c"]}]},
    },
    "timings_s": {"ingest": 0.1},
}


def _fake(monkeypatch):
    seen = {}

    def reconstruct(images, out, **kw):
        seen.update(kw, images=images, out=out)
        return REPORT

    monkeypatch.setattr("twin.recon.run.reconstruct", reconstruct)
    return seen


def test_cluster_size_and_options_reach_the_run(monkeypatch, tmp_path):
    seen = _fake(monkeypatch)
    (tmp_path / "img").mkdir()
    args = ["recon", str(tmp_path / "img"), str(tmp_path / "out"), "--crs", "EPSG:4550"]
    r = CliRunner().invoke(main, [*args, "--max-cluster-views", "6", "--dense-scale", "0.5"])
    assert r.exit_code == 0, r.output
    o = seen["options"]
    assert o.max_cluster_views == 6 and o.dense_scale == 0.5 and o.dense and not o.force
    assert seen["crs"] == "EPSG:4550"
    # the summary: rejected images with reasons, SfM, georeferencing, dense and clusters
    assert "skipped x.jpg: blank frame" in r.output
    assert "3/3 registered" in r.output and "GPS RMSE 1.20 m" in r.output
    assert "5000 points from 3 views" in r.output and "2 clusters" in r.output
    r = CliRunner().invoke(main, [*args, "--no-dense", "--force", "--json"])
    assert r.exit_code == 0 and json.loads(r.output) == REPORT
    assert not seen["options"].dense and seen["options"].force
    assert seen["options"].max_cluster_views is None
    # a cluster must hold two views at least
    r = CliRunner().invoke(main, [*args, "--max-cluster-views", "1"])
    assert r.exit_code == 2 and "max-cluster-views" in r.output
