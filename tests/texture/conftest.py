"""Synthetic surveys for the texture tests (photos only: no LiDAR, no events)."""

from __future__ import annotations

import pytest

# A tiny survey for command-line and bad-input checks (seconds to make).
TINY = dict(extent=80.0, image_width=160, image_height=120, lidar=False, events=False)
# Quality checks: 640 x 480 photos flown at 120 m (18 cm ground pixels, close to the
# default city's 14 cm) over a 120 m square: 17 photos.
QUALITY = dict(
    extent=120.0,
    image_width=640,
    image_height=480,
    flight_height=120.0,
    lidar=False,
    events=False,
)


def _make(tmp_path_factory, name, changes):
    from twin.synth.params import PRESETS
    from twin.synth.survey import generate

    out = tmp_path_factory.mktemp(name) / "survey"
    generate(out, PRESETS["small"].with_(**changes))
    return out


@pytest.fixture(scope="session")
def tiny_survey(tmp_path_factory):
    return _make(tmp_path_factory, "tex-tiny", TINY)


@pytest.fixture(scope="session")
def quality_survey(tmp_path_factory):
    return _make(tmp_path_factory, "tex-quality", QUALITY)
