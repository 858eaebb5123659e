"""Shared fixtures: the synthetic small city (DEM, footprints, events) in a tmp dir."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest


@pytest.fixture(scope="session")
def small_city(tmp_path_factory):
    """The "small" preset city written as dem.tif + footprints.gpkg, and its events
    (about 3,800, generated with a fixed seed). Takes about a second."""
    from twin.synth.city import make_city
    from twin.synth.events import generate_events
    from twin.synth.footprints import write_footprints
    from twin.synth.params import PRESETS
    from twin.synth.terrain import write_dem

    spec = PRESETS["small"]
    city = make_city(spec)
    out = tmp_path_factory.mktemp("city")
    write_dem(city, spec, out / "dem.tif")
    write_footprints(city, out / "footprints.gpkg")
    events = generate_events(city, spec, np.random.Generator(np.random.PCG64(5)))
    return SimpleNamespace(
        spec=spec,
        city=city,
        dem=out / "dem.tif",
        footprints=out / "footprints.gpkg",
        events=events,
        dir=out,
    )


@pytest.fixture(scope="session")
def placer(small_city):
    from twin.mesh.footprints import read_footprints
    from twin.sync.placement import Placer
    from twin.terrain.dem import read_dem

    c = small_city
    return Placer(c.city.frame, read_dem(c.dem), read_footprints(c.footprints), c.city.floor_height)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "postgres: runs against a real PostgreSQL server started for the session"
    )


@pytest.fixture
def mosquitto():
    """A real mosquitto broker on a free loopback port (config in a tmp dir): yields
    the port. QoS 1 window 1000, unlimited queue for persistent sessions."""
    from twin.sync._local import LocalServerMissing, local_mosquitto

    try:
        ctx = local_mosquitto()
        port = ctx.__enter__()
    except LocalServerMissing as exc:
        pytest.skip(str(exc))
    try:
        yield port
    finally:
        ctx.__exit__(None, None, None)


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL 15 server (initdb + pg_ctl in a tmp dir, free loopback port;
    no fsync: these tests kill clients, never the machine); yields a DSN. As root,
    the server runs as the ``postgres`` user."""
    from twin.sync._local import LocalServerMissing, local_postgres

    try:
        ctx = local_postgres(fsync=False)
        dsn = ctx.__enter__()
    except LocalServerMissing as exc:
        pytest.skip(str(exc))
    try:
        yield dsn
    finally:
        ctx.__exit__(None, None, None)
