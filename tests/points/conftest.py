"""Fixtures for the point-cloud tests: a synthetic scene with known classes and the
real sample files (skipped cleanly when the shared data folder is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from twin.points.testing import make_scene


@pytest.fixture(scope="session")
def scene():
    """220 m x 220 m, 6 pts/m^2, about 300 k points (see twin.points.testing)."""
    return make_scene()


@pytest.fixture(scope="session")
def small_scene():
    return make_scene(extent=120.0, density=3.0, seed=3)


@pytest.fixture(scope="session")
def points_dir(shared_data) -> Path:
    d = shared_data / "points"
    if not d.exists():
        pytest.skip(f"{d} not found")
    return d


@pytest.fixture(scope="session")
def delft_laz(shared_data) -> Path:
    p = shared_data / "delft" / "ahn3_cropped_2.laz"
    if not p.exists():
        pytest.skip(f"{p} not found")
    return p
