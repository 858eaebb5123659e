"""Session fixtures shared by the synthetic-city tests (and other engineers' tests)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def small_spec():
    """The "small" preset survey spec (240 m, 1 m DEM)."""
    from twin.synth.params import PRESETS

    return PRESETS["small"]


@pytest.fixture(scope="session")
def small_city(small_spec):
    """``make_city(PRESETS["small"])``: do not mutate."""
    from twin.synth.city import make_city

    return make_city(small_spec)


@pytest.fixture(scope="session")
def small_truth(small_city, small_spec):
    """``build_truth(small_city, PRESETS["small"])``: do not mutate."""
    from twin.synth.truth import build_truth

    return build_truth(small_city, small_spec)
