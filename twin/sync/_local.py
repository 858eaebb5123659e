"""Throw-away local servers for tests, benchmarks and the soak script: a mosquitto
broker and a PostgreSQL 15 cluster in a temporary directory on a free loopback port.

Both are context managers that yield the address and stop (and delete) the server
on exit. They raise :class:`LocalServerMissing` when the Debian binaries are not
installed, so callers can skip with that reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time

MOSQUITTO = "/usr/sbin/mosquitto"
PG_BIN = "/usr/lib/postgresql/15/bin"


class LocalServerMissing(RuntimeError):
    """The server binary is not installed."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 15.0) -> None:
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


@contextlib.contextmanager
def local_mosquitto(workdir: str | os.PathLike | None = None):
    """A mosquitto broker on 127.0.0.1:<free port> (QoS 1 window 1000, unlimited
    queue for persistent sessions, no persistence file); yields the port."""
    exe = MOSQUITTO if os.path.exists(MOSQUITTO) else shutil.which("mosquitto")
    if exe is None:
        raise LocalServerMissing("the mosquitto broker is not installed (Debian package mosquitto)")
    with contextlib.ExitStack() as stack:
        d = workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="twin-mqtt-"))
        port = free_port()
        conf = os.path.join(d, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(
                f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                "max_inflight_messages 1000\nmax_queued_messages 0\n"
            )
        log = stack.enter_context(open(os.path.join(d, "mosquitto.log"), "wb"))
        proc = subprocess.Popen([exe, "-c", conf], stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_port(port, proc, "mosquitto")
            yield port
        finally:
            proc.terminate()
            proc.wait(10)


@contextlib.contextmanager
def local_postgres(*, fsync: bool = True):
    """A PostgreSQL 15 cluster (initdb + pg_ctl) in a temporary directory on
    127.0.0.1:<free port>, trust authentication for user ``twin``; yields a DSN.
    As root, the server runs as the ``postgres`` user. ``fsync=False`` for tests that
    never crash the machine (faster DDL)."""
    initdb = os.path.join(PG_BIN, "initdb")
    if not os.path.exists(initdb):
        raise LocalServerMissing(f"PostgreSQL 15 server binaries are not installed ({PG_BIN})")
    as_root = os.geteuid() == 0
    pre = ["runuser", "-u", "postgres", "--"] if as_root else []
    d = tempfile.mkdtemp(prefix="twin-pg-")  # in /tmp: the postgres user can reach it
    if as_root:
        shutil.chown(d, "postgres", "postgres")
    data, port = os.path.join(d, "data"), free_port()
    pg_ctl = os.path.join(PG_BIN, "pg_ctl")

    def run(*cmd):
        r = subprocess.run([*pre, *cmd], capture_output=True, text=True, timeout=180)
        if r.returncode != 0:
            raise RuntimeError(f"{os.path.basename(cmd[0])} failed: {r.stderr or r.stdout}")

    try:
        run(initdb, "-D", data, "-A", "trust", "-U", "twin", "--no-sync", "-E", "UTF8")
        opts = f"-p {port} -k {d} -c listen_addresses=127.0.0.1 -c max_connections=40"
        if not fsync:
            opts += " -c fsync=off -c full_page_writes=off"
        run(pg_ctl, "-D", data, "-o", opts, "-l", os.path.join(d, "log"), "-w", "start")
        try:
            yield f"postgresql://twin@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(
                [*pre, pg_ctl, "-D", data, "-m", "immediate", "stop"],
                capture_output=True,
                timeout=60,
            )
    finally:
        shutil.rmtree(d, ignore_errors=True)
