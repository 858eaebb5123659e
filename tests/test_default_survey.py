"""The default-size survey (600 m, 200+ buildings) end to end, photos aside: slow."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.mark.slow
def test_default_survey_builds_a_valid_georeferenced_model(tmp_path, shared_data):
    from twin.pipeline import build
    from twin.synth.params import PRESETS
    from twin.synth.survey import generate
    from twin.tiles.validate import validate_tileset

    spec = PRESETS["default"].with_(images=False, duration=120.0)
    survey = generate(tmp_path / "survey", spec)
    assert survey["counts"]["buildings"] > 150
    density = survey["counts"]["lidar_points"] / spec.extent**2
    assert density == pytest.approx(spec.lidar_density, rel=0.25)
    m = build(tmp_path / "survey", tmp_path / "model")
    assert m["counts"]["buildings_modelled"] == survey["counts"]["buildings"]
    assert validate_tileset(tmp_path / "model" / "tiles" / "tileset.json") == []
    for layer in ("terrain", "buildings"):
        ts = json.loads((tmp_path / "model" / "tiles" / layer / "tileset.json").read_text())
        assert np.isfinite(ts["root"]["transform"]).all()
    # a city this size gets levels of detail, with measured (non-zero) errors above leaves
    tiles = m["stages"]["export"]["tiles"]["terrain"]
    assert tiles["levels"] >= 2 and tiles["geometric_error_by_level"][0] > 0
