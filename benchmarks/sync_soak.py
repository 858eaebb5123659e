"""Soak test of the live twin on loopback: load, faults and kill -9, then checks.

    .venv/bin/python benchmarks/sync_soak.py --seconds 60 --json soak.json

Runs ``twin sync serve`` (HTTP + WebSocket + MQTT from a local mosquitto) over a
SQLite store and, for ``--seconds``:

* an HTTP writer POSTs batches of person moves with 5 % late and 1 % duplicated
  events, malformed ones (bad JSON, missing fields, NaN coordinates, unknown type,
  1970 and 2100 timestamps, oversized payloads), incidents that walk their
  lifecycle with an illegal transition now and then, out-of-scope writes (a
  traffic token moving a hydrant) and unauthenticated requests; a batch that got
  no answer (the server was down) is sent again, as a real client would;
* an MQTT publisher sends vehicle moves with QoS 1;
* a WebSocket subscriber follows every change and reconnects with ``since``;
* every ``--kill-every`` seconds the server is killed with SIGKILL and restarted.

Then it checks, and exits 1 if any check fails: every acknowledged event (HTTP
outcome, MQTT PUBACK) is stored exactly once; no rejected event is; the final state
equals a replay of the acknowledged events sorted by time; every malformed or
illegal event was rejected with a reason; the refusals were logged; the WebSocket
subscriber saw every change once, in cursor order, across all restarts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twin.sync.model import format_time  # noqa: E402
from twin.sync.store import SQLiteStore  # noqa: E402

T0 = 1_777_622_400_000_000_000  # 2026-05-01T08:00:00Z
ADMIN, TRAFFIC = "soak-admin-0001", "soak-traffic-01"
TOKENS = {
    ADMIN: {"name": "ops", "scopes": {"write": "*", "read": True}, "rate": 1e9, "burst": 1e9},
    TRAFFIC: {"name": "traffic", "scopes": {"write": ["vehicle"]}, "rate": 1e9, "burst": 1e9},
}


def person(k: int, t: float, ent: int, rnd: random.Random) -> dict:
    return {
        "event_id": f"p{k:09d}",
        "entity_id": f"urn:ngsi-ld:Person:P{ent:05d}",
        "entity_type": "person",
        "observed_at": format_time(T0 + int(t * 1e9)),
        "source": "soak/http",
        "position": {"lon": 121.5 + rnd.random() * 0.05, "lat": 29.85 + rnd.random() * 0.03},
        "status": rnd.choice(["walking", "indoor", "idle"]),
    }


MALFORMED = [
    ("bad JSON", lambda e: '{"event_id": "' + e["event_id"] + '", broken'),
    ("missing field", lambda e: {k: v for k, v in e.items() if k != "entity_id"}),
    ("NaN", lambda e: {**e, "position": {"lon": float("nan"), "lat": 29.9}}),
    ("unknown type", lambda e: {**e, "entity_type": "spaceship"}),
    ("1970", lambda e: {**e, "observed_at": "1970-01-01T00:00:00Z"}),
    ("2100", lambda e: {**e, "observed_at": "2100-01-01T00:00:00Z"}),
    ("oversized", lambda e: {**e, "attributes": {"blob": "x" * 20_000}}),
]


class Server:
    def __init__(self, db: Path, tokens: Path, port: int, mqtt: str, log: Path):
        self.args = [
            sys.executable,
            "-c",
            "from twin.cli import main; main()",
            "sync",
            "serve",
            "--db",
            str(db),
            "--tokens",
            str(tokens),
            "--port",
            str(port),
            "--mqtt",
            mqtt,
        ]
        self.port, self.log, self.proc = port, log, None
        self.restarts = 0

    def start(self) -> None:
        import httpx

        f = open(self.log, "ab")  # noqa: SIM115
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        self.proc = subprocess.Popen(self.args, stdout=f, stderr=subprocess.STDOUT, env=env)
        f.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                r = httpx.get(
                    f"http://127.0.0.1:{self.port}/health",
                    headers={"Authorization": f"Bearer {ADMIN}"},
                    timeout=1,
                )
                if r.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the server did not start")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def http_writer(port, stop, acked, rejected, expect_rejected, stats, seed=1):
    """POST batches until ``stop``; a batch without an answer is sent again."""
    import httpx

    rnd = random.Random(seed)
    url = f"http://127.0.0.1:{port}/events"
    h = {"Authorization": f"Bearer {ADMIN}"}
    k, t, inc_state = 0, 0.0, {}
    pending: list = []  # late events, delivered some batches later
    sent: list[dict] = []
    while not stop.is_set():
        batch = []
        for _ in range(200):
            t += 0.01
            e = person(k, t, rnd.randrange(2000), rnd)
            k += 1
            r = rnd.random()
            if r < 0.05:
                pending.append((k + rnd.randrange(300, 3000), e))
                continue
            batch.append(e)
            if r < 0.06 and sent:
                batch.append(rnd.choice(sent[-5000:]))  # a duplicate
            if 0.06 <= r < 0.07:
                name, bad = rnd.choice(MALFORMED)
                b = bad({**e, "event_id": f"bad{k:09d}"})
                batch.append(b)
                expect_rejected[f"bad{k:09d}"] = name
        due = [e for kk, e in pending if kk <= k]
        pending = [(kk, e) for kk, e in pending if kk > k]
        batch += due
        # one incident walking its lifecycle; one in ten tries an illegal jump
        iid = rnd.randrange(50)
        st = inc_state.get(iid)
        order = ["reported", "dispatched", "on_scene", "resolved", "closed"]
        if st != "closed":
            nxt = order[0] if st is None else order[order.index(st) + 1]
            illegal = st is not None and st != "resolved" and rnd.random() < 0.1
            ev = {
                "event_id": f"i{k:09d}",
                "entity_id": f"urn:ngsi-ld:Incident:I{iid:03d}",
                "entity_type": "incident",
                "observed_at": format_time(T0 + int(t * 1e9)),
                "source": "soak/dispatch",
                "position": {"lon": 121.52, "lat": 29.86},
                "status": "closed" if illegal else nxt,
            }
            batch.append(ev)
            if illegal:
                expect_rejected[ev["event_id"]] = "illegal transition"
            else:
                inc_state[iid] = nxt
        body = json.dumps(batch, allow_nan=True).encode()
        while not stop.is_set():
            try:
                r = httpx.post(url, content=body, headers=h, timeout=30)
            except httpx.TransportError:
                stats["retries"] += 1
                time.sleep(0.1)
                continue
            if r.status_code >= 500:
                stats["retries"] += 1
                continue
            for e, o in zip(batch, r.json()["outcomes"], strict=True):
                if o["result"] == "rejected":
                    eid = e["event_id"] if isinstance(e, dict) else e.split('"')[3]
                    rejected[eid] = o["reason"]
                elif isinstance(e, dict):
                    acked[e["event_id"]] = e
            sent += [e for e in batch if isinstance(e, dict) and e["event_id"] in acked]
            stats["batches"] += 1
            break
        # refusals: no token, and a traffic feed moving a hydrant
        if stats["batches"] % 25 == 0:
            try:
                r = httpx.post(url, content=body, timeout=10)
                stats["unauthenticated_status"].add(r.status_code)
                hydrant = {**person(k, t, 1, rnd), "event_id": f"h{k:09d}"}
                hydrant.update(entity_id="urn:ngsi-ld:Asset:H001", entity_type="asset")
                r = httpx.post(
                    url, json=[hydrant], headers={"Authorization": f"Bearer {TRAFFIC}"}, timeout=10
                )
                if r.status_code == 200:
                    expect_rejected[hydrant["event_id"]] = "out of scope"
                    rejected[hydrant["event_id"]] = r.json()["outcomes"][0]["reason"]
            except httpx.TransportError:
                pass


def mqtt_publisher(port, stop, published, seed=2):
    import paho.mqtt.client as mqtt

    rnd = random.Random(seed)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="soak-pub")
    c.connect("127.0.0.1", port)
    c.loop_start()
    k = 0
    while not stop.is_set():
        evs = []
        for _ in range(50):
            k += 1
            evs.append(
                {
                    "event_id": f"m{k:09d}",
                    "entity_id": f"urn:ngsi-ld:Vehicle:V{rnd.randrange(500):04d}",
                    "entity_type": "vehicle",
                    "observed_at": format_time(T0 + k * 20_000_000),
                    "source": "soak/mqtt",
                    "position": {"lon": 121.5 + rnd.random() * 0.05, "lat": 29.86},
                    "speed": rnd.random() * 20,
                }
            )
        info = c.publish("soak/events", json.dumps(evs), qos=1)
        info.wait_for_publish(30)  # the broker has it: it must end up in the twin
        for e in evs:
            published[e["event_id"]] = e
        time.sleep(0.05)
    c.loop_stop()
    c.disconnect()


def ws_follower(port, stop, seen: list, stats):
    from websockets.sync.client import connect

    last = 0
    while not stop.is_set():
        try:
            with connect(
                f"ws://127.0.0.1:{port}/ws?token={ADMIN}&since={last}", open_timeout=2
            ) as ws:
                stats["ws_connects"] += 1
                while not stop.is_set():
                    try:
                        msg = json.loads(ws.recv(timeout=0.5))
                    except TimeoutError:
                        continue
                    if msg["type"] == "deltas":
                        for d in msg["deltas"]:
                            seen.append(d["cursor"])
                        last = msg["cursor"]
        except Exception:  # noqa: BLE001  (server killed: reconnect with since)
            time.sleep(0.1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--kill-every", type=float, default=10.0)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    from twin.sync._local import free_port, local_mosquitto

    report: dict = {"seconds": a.seconds, "kill_every": a.kill_every}
    with tempfile.TemporaryDirectory(prefix="twin-soak-") as d, local_mosquitto(d) as mport:
        tmp = Path(d)
        tokens = tmp / "tokens.json"
        tokens.write_text(json.dumps(TOKENS))
        db, log = tmp / "soak.sqlite", tmp / "server.log"
        port = free_port()
        srv = Server(db, tokens, port, f"127.0.0.1:{mport}/soak/events", log)
        srv.start()
        stop, stop_ws = threading.Event(), threading.Event()
        acked, rejected, expect_rejected, published = {}, {}, {}, {}
        stats = {"batches": 0, "retries": 0, "unauthenticated_status": set(), "ws_connects": 0}
        ws_seen: list[int] = []
        threads = [
            threading.Thread(
                target=http_writer, args=(port, stop, acked, rejected, expect_rejected, stats)
            ),
            threading.Thread(target=mqtt_publisher, args=(mport, stop, published)),
            threading.Thread(target=ws_follower, args=(port, stop_ws, ws_seen, stats)),
        ]
        for th in threads:
            th.start()
        t_end = time.monotonic() + a.seconds
        kills, recover = 0, []
        while time.monotonic() < t_end:
            time.sleep(min(a.kill_every, max(0.0, t_end - time.monotonic())))
            if time.monotonic() < t_end - 1:
                srv.kill()
                kills += 1
                t = time.perf_counter()
                srv.start()
                recover.append(time.perf_counter() - t)
        stop.set()
        for th in threads[:2]:
            th.join(120)
        # let MQTT and the WebSocket catch up, then stop the server
        deadline = time.monotonic() + 180  # a busy box may need a while to push the last changes
        while time.monotonic() < deadline:
            con = sqlite3.connect(db)
            n_seen = con.execute("SELECT count(*) FROM events_seen").fetchone()[0]
            head = con.execute(
                "SELECT coalesce(max(rowid), 0) FROM history WHERE outcome = 'applied'"
            ).fetchone()[0]
            con.close()
            if n_seen >= len(acked) + len(published) and (ws_seen and ws_seen[-1] >= head):
                break
            time.sleep(0.2)
        stop_ws.set()
        threads[2].join(30)
        srv.kill()
        checks = verify(db, tmp, acked, published, rejected, expect_rejected, ws_seen, log)
        report.update(
            kills=kills,
            restart_seconds_max=round(max(recover), 2) if recover else None,
            http_batches=stats["batches"],
            http_retries=stats["retries"],
            unauthenticated_status=sorted(stats["unauthenticated_status"]),
            ws_connects=stats["ws_connects"],
            acknowledged_http=len(acked),
            published_mqtt=len(published),
            rejected=len(rejected),
            checks=checks,
        )
    ok = all(checks.values())
    print(json.dumps(report, indent=2))
    print("SOAK", "PASSED" if ok else "FAILED")
    if a.json:
        a.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if ok else 1


def verify(db, tmp, acked, published, rejected, expect_rejected, ws_seen, log) -> dict:
    con = sqlite3.connect(db)
    stored = {r[0] for r in con.execute("SELECT event_id FROM events_seen")}
    n_hist = con.execute("SELECT count(*) FROM history").fetchone()[0]
    applied_cursors = [
        r[0] for r in con.execute("SELECT rowid FROM history WHERE outcome='applied' ORDER BY 1")
    ]
    con.close()
    valid = {**acked, **published}
    ref_db = tmp / "ref.sqlite"
    ordered = sorted(valid.values(), key=lambda e: (e["observed_at"], e["event_id"]))
    with SQLiteStore(ref_db) as ref:
        ref_out = ref.apply(ordered)
        ref_state = [(e.id, e.event_id, e.lon, e.lat, e.status) for e in ref.query()]
    ref_rejected = {o.event_id for o in ref_out if o.result == "rejected"}
    with SQLiteStore(db) as s:
        state = [(e.id, e.event_id, e.lon, e.lat, e.status) for e in s.query()]
    text = log.read_text(errors="replace")
    if ws_seen != applied_cursors:
        got = set(ws_seen)
        print(
            f"websocket: {len(ws_seen)} deltas, {len(got)} distinct, "
            f"{len(applied_cursors)} changes stored, {len(set(applied_cursors) - got)} missed, "
            f"out of order: {sum(b <= a for a, b in zip(ws_seen, ws_seen[1:], strict=False))}, "
            f"first missed {min(set(applied_cursors) - got, default=None)}, "
            f"last seen {ws_seen[-1] if ws_seen else None}",
            file=sys.stderr,
        )
    return {
        "every_acknowledged_event_stored": set(valid) - ref_rejected <= stored,
        "history_has_each_event_once": n_hist == len(stored),
        "no_rejected_event_stored": not (set(rejected) & stored),
        "malformed_and_illegal_rejected_with_reason": all(
            k in rejected and rejected[k] for k in expect_rejected
        ),
        "state_equals_sorted_replay": state == ref_state,
        "refusals_logged": "refused" in text and "may not write asset" in text,
        "websocket_saw_every_change_once_in_order": ws_seen == applied_cursors,
    }


if __name__ == "__main__":
    sys.exit(main())
