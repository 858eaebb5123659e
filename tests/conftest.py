"""Shared fixtures: one small synthetic survey (and its model) per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(
    os.environ.get("TWIN_SHARED_DATA", Path(__file__).parents[2] / "shared" / "data")
)

# The survey every end-to-end test reads: the "small" preset with smaller photos.
SMALL_SURVEY = dict(image_width=320, image_height=240, duration=90.0)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"shared sample data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def small_survey(tmp_path_factory) -> Path:
    """A complete synthetic survey written to disk (all sensors)."""
    from twin.synth.params import PRESETS
    from twin.synth.survey import generate

    out = tmp_path_factory.mktemp("survey") / "survey"
    generate(out, PRESETS["small"].with_(**SMALL_SURVEY))
    return out


@pytest.fixture(scope="session")
def small_model(small_survey, tmp_path_factory) -> Path:
    """`twin build` of the small survey."""
    from twin.pipeline import build

    out = tmp_path_factory.mktemp("model") / "model"
    build(small_survey, out)
    return out
