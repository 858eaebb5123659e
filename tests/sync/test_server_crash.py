"""kill -9 of a real uvicorn server in the middle of a load: every acknowledged
event survives, no batch is half there, and the state equals a replay."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from twin.sync.model import format_time
from twin.sync.store import SQLiteStore

T0 = 1_777_622_400_000_000_000
TOKEN = "crash-token-0001"
SERVER = """
import sys, uvicorn
from twin.sync.server import create_app
from twin.sync.store import SQLiteStore
app = create_app(SQLiteStore(sys.argv[1]), tokens={{{tok!r}: {{"name": "t",
    "scopes": {{"write": "*", "read": True}}}}}})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="error")
"""


def _batch(b: int, n: int = 200) -> list[dict]:
    return [
        {
            "event_id": f"b{b:04d}-{i:03d}",
            "entity_id": f"urn:ngsi-ld:Vehicle:V{i % 50:03d}",
            "entity_type": "vehicle",
            "observed_at": format_time(T0 + (b * n + i) * 10_000_000),
            "source": "crash-test",
            "position": {"lon": 121.5 + b * 1e-5, "lat": 29.8 + i * 1e-5, "alt": 5.0},
            "speed": float(i % 30),
        }
        for i in range(n)
    ]


def _state(store: SQLiteStore):
    return [(e.id, e.revision, e.observed_ns, e.lon, e.lat, e.speed) for e in store.query()]


def test_kill_9_mid_load_loses_no_acknowledged_event(tmp_path):
    db = tmp_path / "crash.sqlite"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root}
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER.format(tok=TOKEN), str(db), str(port)], env=env
    )
    acked: list[int] = []
    sent: list[int] = []
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        ) as c:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if c.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
                time.sleep(0.05)
            killer = threading.Timer(0.5, lambda: os.kill(proc.pid, signal.SIGKILL))
            killer.start()
            for b in range(10_000):  # bounded: the kill stops it long before
                sent.append(b)
                try:
                    r = c.post("/events", json=_batch(b))
                except httpx.TransportError:
                    break
                assert r.status_code == 200
                assert r.json()["counts"]["applied"] == 200
                acked.append(b)
            killer.join()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    assert len(acked) >= 3, "the load did not get going before the kill"
    with SQLiteStore(db) as store:  # "restart": open what the killed server left
        present: dict[int, int] = {}
        for e in store.query():
            for h in store.history(e.id):
                b = int(h["event_id"][1:5])
                present[b] = present.get(b, 0) + 1
        # every acknowledged batch complete; at most the one in flight besides, complete
        assert all(present.get(b) == 200 for b in acked)
        extra = set(present) - set(acked)
        assert extra <= {sent[-1]} and all(present[b] == 200 for b in extra)
        state = _state(store)
    with SQLiteStore(tmp_path / "replay.sqlite") as ref:
        for b in sorted(present):
            ref.apply(_batch(b))
        assert _state(ref) == state
