"""``twin recon`` end to end on a corner of the synthetic survey: the report's contents,
resumed steps, and dense matching by view clusters."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from twin.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corner(small_survey, tmp_path_factory):
    """The 16 photos looking nearest the survey's centre (a rig block of its own)."""
    cams = json.loads((small_survey / "cameras.json").read_text())
    C = np.array([im["centre_enu"] for im in cams["images"]])
    order = np.argsort(np.linalg.norm(C[:, :2] - np.median(C[:, :2], axis=0), axis=1))
    folder = tmp_path_factory.mktemp("recon_cli") / "images"
    folder.mkdir()
    for i in order[:16]:
        shutil.copy(small_survey / "images" / cams["images"][i]["file"], folder)
    return folder


def _run(*args):
    r = CliRunner().invoke(main, ["recon", *map(str, args), "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.output[r.output.index("{") :])


def test_recon_cli_reports_resumes_and_clusters(corner, tmp_path):
    out = tmp_path / "out"
    rep = _run(corner, out, "--crs", "EPSG:4550", "--no-dense")
    # the report: registered images, reprojection error, GPS residuals, timings
    assert rep["sfm"]["registered"] == 16 and rep["sfm"]["not_registered"] == []
    assert rep["sfm"]["mean_reprojection_px"] < 1.0 and rep["sfm"]["points3D"] > 500
    g = rep["georeference"]
    assert set(g["gps_residuals_m"]) == {p.name for p in corner.iterdir()}
    assert g["gps_rmse_m"] < 6.0 and g["crs"].startswith("EPSG:4550")
    assert rep["rig"] is not None and rep["rig"]["images"] == 16
    assert {"ingest", "features", "matching", "mapping", "georeference"} <= set(rep["timings_s"])
    assert {"cameras.json", "report.json", "sparse", "images.json"} <= set(rep["outputs"])
    # a second run resumes: no feature extraction, matching or mapping again
    again = _run(corner, out, "--crs", "EPSG:4550", "--no-dense")
    assert not {"features", "matching", "mapping"} & set(again["timings_s"])
    assert again["sfm"] == rep["sfm"]
    # dense by clusters of at most 6 views: every view matched once, one cloud
    dense = _run(corner, out, "--crs", "EPSG:4550", "--dense-scale", "0.5",
                 "--max-cluster-views", "6")  # fmt: skip
    assert "mapping" not in dense["timings_s"]
    d = dense["dense"]
    cl = d["clustering"]["clusters"]
    assert len(cl) >= 3 and all(c["views"] <= 6 for c in cl)
    refs = [r for c in cl for r in c["refs"]]
    assert sorted(refs) == sorted(p.name for p in corner.iterdir())
    assert d["points"] == sum(c["points"] for c in cl) > 2000
    assert len(list((out / "dense").glob("*.npz"))) == 16
    assert (out / "points.laz").exists()
