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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc, what: str, timeout: float = 15.0) -> None:
    import socket
    import time

    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port}")


MOSQUITTO = "/usr/sbin/mosquitto"


@pytest.fixture
def mosquitto(tmp_path):
    """A real mosquitto broker on a free loopback port (config in tmp): yields the
    port. QoS 1 window 1000, unlimited queue for persistent sessions."""
    import os
    import shutil
    import subprocess

    exe = MOSQUITTO if os.path.exists(MOSQUITTO) else shutil.which("mosquitto")
    if exe is None:
        pytest.skip("the mosquitto broker binary is not installed (Debian package mosquitto)")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_inflight_messages 1000\nmax_queued_messages 0\n"
    )
    log = open(tmp_path / "mosquitto.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_port(port, proc, "mosquitto")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


PG_BIN = "/usr/lib/postgresql/15/bin"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "postgres: runs against a real PostgreSQL server started for the session"
    )


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL 15 server (initdb + pg_ctl in a tmp dir, free loopback port);
    yields a DSN. As root, the server runs as the ``postgres`` user."""
    import os
    import shutil
    import subprocess
    import tempfile

    initdb = os.path.join(PG_BIN, "initdb")
    if not os.path.exists(initdb):
        pytest.skip(f"PostgreSQL 15 server binaries are not installed ({PG_BIN})")
    as_root = os.geteuid() == 0
    pre = ["runuser", "-u", "postgres", "--"] if as_root else []
    d = tempfile.mkdtemp(prefix="twin-pg-")
    if as_root:
        shutil.chown(d, "postgres", "postgres")
    data, port = os.path.join(d, "data"), free_port()

    def run(*cmd):
        r = subprocess.run([*pre, *cmd], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {r.stderr or r.stdout}")

    run(initdb, "-D", data, "-A", "trust", "-U", "twin", "--no-sync", "-E", "UTF8")
    # no fsync: these tests kill clients, never the machine (the store's own
    # durability is PostgreSQL's synchronous_commit, on by default)
    opts = (
        f"-p {port} -k {d} -c listen_addresses=127.0.0.1 -c max_connections=40 "
        "-c fsync=off -c full_page_writes=off"
    )
    run(os.path.join(PG_BIN, "pg_ctl"), "-D", data, "-o", opts, "-l", f"{d}/log", "-w", "start")
    try:
        yield f"postgresql://twin@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*pre, os.path.join(PG_BIN, "pg_ctl"), "-D", data, "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(d, ignore_errors=True)
