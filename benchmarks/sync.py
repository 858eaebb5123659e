"""Live sync benchmark: store ingest vs a plain set-based SQLite baseline, reads,
placement and HTTP ingest through a real uvicorn server, all in the same run.

    .venv/bin/python benchmarks/sync.py --json sync.json            # full size
    .venv/bin/python benchmarks/sync.py --entities 20000 --events 100000 --http-events 20000

Stream (same for both stores): ``--events`` person moves over ``--entities``
entities in one hour; 5 % are delivered late (20 k - 300 k positions later, scaled
to the stream), 1 % are delivered twice. Batches of ``--batch`` events, one
transaction each, ``synchronous=FULL`` (durable) for both. The two stores ingest the
stream in turn, ``--repeat`` times each, and the best run of each is compared.

Baseline: the same tables written set-based with ``executemany`` (dedup against
``events_seen``, append history, upsert entities where newer), no cache, no
per-event semantics beyond that (no revisions checks, incidents, merge).

HTTP: a uvicorn server in a child process (stopped at the end), JSON batches of
``--http-batch`` events POSTed with httpx, ``--http-events`` in all.

Size (``--only scale``): the same-shaped stream over all the entities of a store
pre-filled with 100 k entities and 1 M history rows, then of one with 1 M entities
and 10 M rows, timed through ``close()`` (the deferred entity writes count). By
default each store takes four events per entity (400 k, then 4 M): one checkpoint
interval of each, so both are measured in the steady state (every entity touched,
its row rewritten about once per four of its events) and the big store keeps ten
times the history of the small one throughout. ``--scale-events N`` gives both the
same N events instead; a run much shorter than an interval measures the cold start
(each event then touches an entity for the first time: a read of its row and, at
``close()``, a rewrite, both far more frequent in the store with ten times the
entities). About 5 minutes and 3 GB of memory for the big store's events.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twin.sync.model import Event, format_time  # noqa: E402
from twin.sync.store import SQLiteStore  # noqa: E402

T0 = 1_777_622_400_000_000_000  # 2026-05-01T08:00:00Z
NOW = T0 + 86_400 * 10**9


def make_stream(n_ent: int, n_ev: int, seed: int = 0) -> list[Event]:
    """Events in delivery order: time-sorted moves, 5 % late, 1 % duplicated."""
    rng = np.random.Generator(np.random.PCG64(seed))
    ent = rng.integers(0, n_ent, n_ev)
    ts = T0 + np.sort(rng.integers(0, 3_600_000, n_ev)) * 1_000_000
    evs = [
        Event(
            f"e{i:08d}",
            f"urn:ngsi-ld:Person:P{int(e):06d}",
            "person",
            int(t),
            "bench",
            121.5 + int(e) * 1e-6,
            29.8 + (i % 100) * 1e-6,
            12.0,
            90.0,
            1.2,
            "walking",
            {},
            None,
            "{}",
        )
        for i, (e, t) in enumerate(zip(ent.tolist(), ts.tolist(), strict=True))
    ]
    scale = n_ev / 500_000
    key = np.arange(n_ev, dtype=np.float64)
    late = rng.random(n_ev) < 0.05
    key[late] += rng.integers(int(20_000 * scale) + 1, int(300_000 * scale) + 2, late.sum())
    dups = rng.choice(n_ev, n_ev // 100, replace=False)
    dkey = dups + rng.integers(1, int(20_000 * scale) + 2, len(dups)) + 0.5
    allkey = np.concatenate([key, dkey])
    src = np.concatenate([np.arange(n_ev), dups])
    order = src[np.argsort(allkey, kind="stable")]
    return [evs[i] for i in order.tolist()]


def _freeze_input() -> None:
    """Move every object alive now (the events made up front) out of the garbage
    collector's sight: in a server, events arrive over the network and are gone
    after their batch, so the collections a store's own objects trigger should not
    walk millions of benchmark inputs (more of them for the bigger runs)."""
    gc.collect()
    gc.freeze()


def _fresh(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)


def bench_twin(stream, batch, path: Path) -> dict:
    _fresh(path)
    s = SQLiteStore(path)
    res: dict[str, int] = {}
    t, c = time.perf_counter(), time.process_time()
    for k in range(0, len(stream), batch):
        for o in s.apply(stream[k : k + batch], now=NOW):
            res[o.result] = res.get(o.result, 0) + 1
    s.checkpoint()  # the deferred entity writes are part of the ingest's cost
    dt, dc = time.perf_counter() - t, time.process_time() - c
    out = {
        "seconds": round(dt, 3),
        "events_per_s": round(len(stream) / dt),
        "cpu_events_per_s": round(len(stream) / dc),
        "outcomes": res,
        "entities": s.count(),
        "history_rows": s.history_count(),
    }
    out["reads"] = bench_reads(s, len({e.entity_id for e in stream}))
    s.close()
    return out


def _best(runs: list[dict]) -> dict:
    """The run with the highest wall rate, the best CPU rate of all, and every rate."""
    best = dict(max(runs, key=lambda r: r["events_per_s"]))
    best["cpu_events_per_s"] = max(r["cpu_events_per_s"] for r in runs)
    best["runs_events_per_s"] = [r["events_per_s"] for r in runs]
    best["runs_cpu_events_per_s"] = [r["cpu_events_per_s"] for r in runs]
    return best


def bench_reads(s: SQLiteStore, n_ent: int, n: int = 20_000) -> dict:
    rng = np.random.Generator(np.random.PCG64(1))
    ids = [f"urn:ngsi-ld:Person:P{int(e):06d}" for e in rng.integers(0, n_ent, n)]
    at = T0 + 1800 * 10**9
    out = {}
    for name, fn in (("point", lambda i: s.state(i)), ("asof", lambda i: s.state(i, at=at))):
        times = []
        for i in ids:
            a = time.perf_counter_ns()
            fn(i)
            times.append(time.perf_counter_ns() - a)
        out[f"{name}_median_us"] = round(statistics.median(times) / 1000, 2)
        out[f"{name}_p99_us"] = round(float(np.percentile(times, 99)) / 1000, 1)
    return out


def bench_plain(stream, batch, path: Path) -> dict:
    import sqlite3

    _fresh(path)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("PRAGMA cache_size=-262144")
    con.executescript(
        """
        CREATE TABLE entities (id TEXT PRIMARY KEY, type TEXT, revision INT, observed_ns INT,
          event_id TEXT, source TEXT, lon REAL, lat REAL, alt REAL, heading REAL, speed REAL,
          status TEXT, attributes TEXT, building TEXT, floor INT) WITHOUT ROWID;
        CREATE TABLE history (entity_id TEXT, observed_ns INT, event_id TEXT, source TEXT,
          lon REAL, lat REAL, alt REAL, heading REAL, speed REAL, status TEXT, attributes TEXT);
        CREATE INDEX hi ON history (entity_id, observed_ns);
        CREATE TABLE events_seen (event_id TEXT PRIMARY KEY) WITHOUT ROWID;
        """
    )
    upsert = (
        "INSERT INTO entities VALUES (?,?,1,?,?,?,?,?,?,?,?,?,?,NULL,NULL) ON CONFLICT(id) DO "
        "UPDATE SET revision=revision+1, observed_ns=excluded.observed_ns, "
        "event_id=excluded.event_id, lon=excluded.lon, lat=excluded.lat, alt=excluded.alt, "
        "heading=excluded.heading, speed=excluded.speed, status=excluded.status "
        "WHERE excluded.observed_ns > entities.observed_ns"
    )
    t, c = time.perf_counter(), time.process_time()
    for k in range(0, len(stream), batch):
        b = stream[k : k + batch]
        con.execute("BEGIN IMMEDIATE")
        seen = {
            r[0]
            for r in con.execute(
                "SELECT s.event_id FROM json_each(?) j JOIN events_seen s ON s.event_id=j.value",
                (json.dumps([e.event_id for e in b]),),
            )
        }
        new, ids = [], set()
        for e in b:
            if e.event_id not in seen and e.event_id not in ids:
                ids.add(e.event_id)
                new.append(e)
        con.executemany("INSERT INTO events_seen VALUES (?)", [(e.event_id,) for e in new])
        con.executemany(
            "INSERT INTO history VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [
                (e.entity_id, e.observed_ns, e.event_id, e.source, e.lon, e.lat, e.alt)
                + (e.heading, e.speed, e.status, e.attributes_json)
                for e in new
            ],
        )
        con.executemany(
            upsert,
            [
                (e.entity_id, e.entity_type, e.observed_ns, e.event_id, e.source, e.lon, e.lat)
                + (e.alt, e.heading, e.speed, e.status, e.attributes_json)
                for e in new
            ],
        )
        con.execute("COMMIT")
    dt, dc = time.perf_counter() - t, time.process_time() - c
    con.close()
    return {
        "seconds": round(dt, 3),
        "events_per_s": round(len(stream) / dt),
        "cpu_events_per_s": round(len(stream) / dc),
    }


def bench_placement(n: int, tmp: Path) -> dict:
    import pyproj

    from twin.mesh.footprints import read_footprints
    from twin.sync.placement import Placer
    from twin.synth.city import make_city
    from twin.synth.footprints import write_footprints
    from twin.synth.params import PRESETS
    from twin.synth.terrain import write_dem
    from twin.terrain.dem import read_dem

    spec = PRESETS["small"]
    city = make_city(spec)
    write_dem(city, spec, tmp / "dem.tif")
    write_footprints(city, tmp / "footprints.gpkg")
    p = Placer(city.frame, read_dem(tmp / "dem.tif"), read_footprints(tmp / "footprints.gpkg"))
    x0, y0, x1, y1 = city.bounds
    rng = np.random.Generator(np.random.PCG64(2))
    tf = pyproj.Transformer.from_crs(city.crs, "EPSG:4326", always_xy=True)
    lon, lat = tf.transform(rng.uniform(x0, x1, n), rng.uniform(y0, y1, n))
    p.place(lon[:10], lat[:10])
    times = []
    for _ in range(5):
        t = time.perf_counter()
        r = p.place(lon, lat)
        times.append(time.perf_counter() - t)
    best = min(times)
    return {
        "positions": n,
        "buildings": len(city.buildings),
        "best_seconds": round(best, 4),
        "positions_per_s": round(n / best),
        "median_positions_per_s": round(n / statistics.median(times)),
        "indoor_fraction": round(float(r.indoor.mean()), 4),
    }


# the server as ``twin sync serve`` runs it
_SERVER = """
import sys
sys.path.insert(0, {root!r})
from twin.sync.server import serve
serve({db!r}, tokens={{"bench-token-0001": {{"name": "bench",
    "scopes": {{"write": "*", "read": True}}, "rate": 1e9, "burst": 1e9}}}},
    port={port}, log_level="warning")
"""


HEADERS = {"Authorization": "Bearer bench-token-0001", "Content-Type": "application/json"}


def start_server(db: Path) -> tuple[subprocess.Popen, int]:
    """A uvicorn server over a fresh store ``db`` in a child process; waits (bounded)
    until /health answers. The caller stops it with :func:`stop_server`."""
    import httpx

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    _fresh(db)
    code = _SERVER.format(root=str(Path(__file__).resolve().parents[1]), db=str(db), port=port)
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 30
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=HEADERS) as c:
        while True:
            try:
                if c.get("/health").status_code == 200:
                    return proc, port
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                stop_server(proc)
                raise RuntimeError("the uvicorn server did not start")
            time.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc; 0 elsewhere)."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _vehicle_events(first: int, n: int, rng, prefix: str = "h") -> list[dict]:
    out = []
    for i in range(first, first + n):
        e = int(rng.integers(0, 10_000))
        out.append(
            {
                "event_id": f"{prefix}{i:08d}",
                "entity_id": f"urn:ngsi-ld:Vehicle:V{e:05d}",
                "entity_type": "vehicle",
                "observed_at": format_time(T0 + i * 1_000_000),
                "source": "bench",
                "position": {"lon": 121.5 + e * 1e-6, "lat": 29.8, "alt": 10.0},
                "speed": 10.0,
                "heading": 90.0,
            }
        )
    return out


def bench_http(n: int, batch: int, tmp: Path) -> dict:
    import httpx

    proc, port = start_server(tmp / "http.sqlite")
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, headers=HEADERS, timeout=60) as c:
            rng = np.random.Generator(np.random.PCG64(3))
            bodies = [
                json.dumps(_vehicle_events(k, min(batch, n - k), rng)).encode()
                for k in range(0, n, batch)
            ]
            applied = 0
            t = time.perf_counter()
            for b in bodies:
                r = c.post("/events", content=b)
                r.raise_for_status()
                applied += r.json()["counts"]["applied"]
            dt = time.perf_counter() - t
    finally:
        stop_server(proc)
    return {
        "events": n,
        "batch": batch,
        "applied": applied,
        "seconds": round(dt, 3),
        "events_per_s": round(n / dt),
    }


def _ws_listen(port: int, subscribers: int, n_batches: int, batch: int, out: str) -> None:
    """Child process of :func:`bench_ws`: ``subscribers`` WebSocket clients; writes
    ``[[batch index, receive time (perf_counter)], ...]`` as JSON to ``out``. Prints
    "ready" once every client has its hello."""
    import asyncio

    import websockets

    recv: list[tuple[int, float]] = []

    async def listen(ws) -> None:
        await ws.recv()  # hello
        n = 0
        while n < n_batches:
            msg = await ws.recv()
            t = time.perf_counter()
            i = msg.find('"event_id":"w')
            if i >= 0:
                recv.append((int(msg[i + 13 : i + 21]) // batch, t))
                n += 1

    async def run() -> None:
        url = f"ws://127.0.0.1:{port}/ws?token=bench-token-0001"
        conns = [
            await websockets.connect(url, max_size=None, compression=None)
            for _ in range(subscribers)
        ]
        tasks = [asyncio.create_task(listen(ws)) for ws in conns]
        await asyncio.sleep(0.5)
        print("ready", flush=True)
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), 120)
        except TimeoutError:
            pass
        for ws in conns:
            await ws.close()

    asyncio.run(run())
    Path(out).write_text(json.dumps(recv))


def bench_ws(subscribers: int, rate: float, seconds: float, batch: int, tmp: Path) -> dict:
    """Ingest-to-push latency: ``subscribers`` WebSocket clients (no filter, in a
    child process) while this process POSTs ``rate`` events/s in batches of
    ``batch`` for ``seconds``. Latency of a delta message = when a subscriber
    received it minus when its batch's POST began (CLOCK_MONOTONIC, shared by the
    processes). Three processes share the machine's cores: server, posts, listeners."""
    import httpx

    proc, port = start_server(tmp / "ws.sqlite")
    n_batches = int(rate * seconds / batch)
    out = tmp / "ws-recv.json"
    listener = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--_ws-listen",
            f"{port},{subscribers},{n_batches},{batch},{out}",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None
        if listener.stdout.readline().strip() != "ready":
            raise RuntimeError("the WebSocket listeners did not start")
        rng = np.random.Generator(np.random.PCG64(4))
        bodies = [
            json.dumps(_vehicle_events(b * batch, batch, rng, "w")).encode()
            for b in range(n_batches)
        ]
        sent_at = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=HEADERS, timeout=60) as c:
            cpu0 = cpu_seconds(proc.pid), cpu_seconds(listener.pid)
            t0 = time.perf_counter()
            for b, body in enumerate(bodies):
                delay = t0 + b * batch / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                sent_at.append(time.perf_counter())
                c.post("/events", content=body).raise_for_status()
            wall = time.perf_counter() - t0
        server_cpu = cpu_seconds(proc.pid) - cpu0[0]
        listener_cpu = cpu_seconds(listener.pid) - cpu0[1]
        listener.wait(150)
        recv = json.loads(out.read_text()) if out.exists() else []
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait(10)
        stop_server(proc)
    arr = np.array([t - sent_at[b] for b, t in recv]) * 1000
    return {
        "subscribers": subscribers,
        "target_events_per_s": rate,
        "events": n_batches * batch,
        "achieved_events_per_s": round(n_batches * batch / wall),
        "messages_received": int(len(arr)),
        "messages_expected": n_batches * subscribers,
        "latency_ms_p50": round(float(np.percentile(arr, 50)), 2) if len(arr) else None,
        "latency_ms_p99": round(float(np.percentile(arr, 99)), 2) if len(arr) else None,
        "ingest_seconds": round(wall, 3),
        # CPU per batch while posting (fan-out to every subscriber included): less
        # sensitive to other jobs on the machine than the latencies
        "server_cpu_ms_per_batch": round(server_cpu * 1000 / n_batches, 2),
        "listener_cpu_ms_per_batch": round(listener_cpu * 1000 / n_batches, 2),
    }


def bench_postgres(stream, batch: int) -> dict:
    """The same stream into :class:`PostgresStore` on a local PostgreSQL 15 server
    (fsync on, synchronous_commit on: durable like the SQLite store), then reads."""
    from twin.sync._local import local_postgres
    from twin.sync.pgstore import PostgresStore

    with local_postgres(fsync=True) as dsn:
        s = PostgresStore(dsn, schema="bench")
        res: dict[str, int] = {}
        t, c = time.perf_counter(), time.process_time()
        for k in range(0, len(stream), batch):
            for o in s.apply(stream[k : k + batch], now=NOW):
                res[o.result] = res.get(o.result, 0) + 1
        dt, dc = time.perf_counter() - t, time.process_time() - c
        out = {
            "seconds": round(dt, 3),
            "events_per_s": round(len(stream) / dt),
            "client_cpu_events_per_s": round(len(stream) / dc),
            "outcomes": res,
            "reads": bench_reads(s, len({e.entity_id for e in stream}), n=5000),
        }
        s.close()
    return out


def bench_mqtt(n: int, per_message: int, tmp: Path) -> dict:
    """MQTT ingest: ``n`` events in QoS 1 messages of ``per_message`` events published
    to a local mosquitto, ingested by :class:`MQTTSource` into a SQLite store
    (acknowledged after commit); time from the first publish to the last commit."""
    import paho.mqtt.client as mqtt

    from twin.sync._local import local_mosquitto
    from twin.sync.ingest import Ingestor
    from twin.sync.mqtt import MQTTSource

    rng = np.random.Generator(np.random.PCG64(5))
    bodies = [
        json.dumps(_vehicle_events(k, min(per_message, n - k), rng, "m")).encode()
        for k in range(0, n, per_message)
    ]
    db = tmp / "mqtt.sqlite"
    _fresh(db)
    with local_mosquitto(str(tmp)) as port:
        store = SQLiteStore(db)
        src = MQTTSource("127.0.0.1", port, "bench/events", outcome_topic="")
        src.start(Ingestor(store))
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-pub")
        pub.max_inflight_messages_set(1000)
        pub.connect("127.0.0.1", port)
        pub.loop_start()
        t = time.perf_counter()
        infos = [pub.publish("bench/events", b, qos=1) for b in bodies]
        for i in infos:
            i.wait_for_publish(60)
        deadline = time.monotonic() + 300
        while src.messages < len(bodies) and time.monotonic() < deadline:
            time.sleep(0.005)
        dt = time.perf_counter() - t
        pub.loop_stop()
        pub.disconnect()
        src.stop()
        out = {
            "events": n,
            "per_message": per_message,
            "messages": len(bodies),
            "acknowledged": src.messages,
            "outcomes": src.counts,
            "seconds": round(dt, 3),
            "events_per_s": round(n / dt),
        }
        store.close()
    return out


def _prefill(path: Path, n_ent: int, n_hist: int) -> float:
    """A store with ``n_ent`` person entities and ``n_hist`` history rows (and as
    many seen event ids), written in bulk by SQL (no semantics needed: the rows are
    what the semantics would have written), history indexed after. Seconds taken."""
    import sqlite3

    _fresh(path)
    SQLiteStore(path).close()  # the schema
    t = time.perf_counter()
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-262144")
    per = max(1, n_hist // n_ent)
    con.execute("BEGIN")

    def gen(n: int) -> str:
        return f"WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < {n - 1})"

    con.execute(
        f"{gen(n_ent)} INSERT INTO entities (k, id, type, revision, observed_ns, event_id, "
        "source, lon, lat, alt, heading, speed, status, attributes) SELECT i + 1, "
        "printf('urn:ngsi-ld:Person:P%06d', i), 'person', :per, :t, printf('pre%09d', i), "
        "'bench', 121.5 + i * 1e-6, 29.8, 12.0, 90.0, 1.2, 'walking', '{}' FROM c",
        {"per": per, "t": T0 - 10**9},
    )
    # entity e's history: ``per`` rows a second apart, the last one its current state
    eid = "CASE WHEN i / :n = :per - 1 THEN printf('pre%09d', i % :n) ELSE printf('old%09d', i) END"
    args = {"n": n_ent, "per": per, "t": T0}
    con.execute(
        f"{gen(n_ent * per)} INSERT INTO history (k, observed_ns, event_id, revision, outcome, "
        f"source, lon, lat, alt, heading, speed, status, attributes) SELECT i % :n + 1, "
        f":t - (:per - i / :n) * 1000000000, {eid}, i / :n + 1, 'applied', 'bench', "
        "121.5 + (i % :n) * 1e-6, 29.8, 12.0, 90.0, 1.2, 'walking', '{}' FROM c",
        args,
    )
    con.execute(f"{gen(n_ent * per)} INSERT INTO events_seen SELECT {eid} FROM c", args)
    con.execute(
        "INSERT INTO history_index SELECT k, observed_ns, event_id, rowid FROM history "
        "ORDER BY k, observed_ns, event_id"
    )
    # entities hold the newest history row of each: checkpointed up to the last row
    for key in ("checkpoint", "indexed"):
        con.execute(f"UPDATE meta SET value = (SELECT max(rowid) FROM history) WHERE key = '{key}'")
    con.execute("UPDATE head SET last = (SELECT max(rowid) FROM history)")
    con.execute("COMMIT")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return time.perf_counter() - t


def bench_scale(
    small: tuple[int, int], big: tuple[int, int], n_ev: int | None, batch: int, tmp: Path
):
    """Slowdown with size: the same-shaped stream of ``n_ev`` events (None: four per
    entity, one checkpoint interval) over all the entities of a store pre-filled
    with ``small`` = (entities, history rows), then one pre-filled with ``big``;
    durable ingest and reads on each (reads through a freshly opened store, so every
    one goes to the database: the cache-miss path)."""
    out = {}
    for name, (n_ent, n_hist) in (("small", small), ("big", big)):
        path = tmp / f"scale-{name}.sqlite"
        fill = _prefill(path, n_ent, n_hist)
        gc.unfreeze()  # the previous store's input goes back to the collector
        stream = make_stream(n_ent, n_ev or 4 * n_ent, seed=7)
        _freeze_input()
        s = SQLiteStore(path)
        t, c = time.perf_counter(), time.process_time()
        for k in range(0, len(stream), batch):
            s.apply(stream[k : k + batch], now=NOW)
        s.close()  # with its checkpoint: the deferred entity writes count
        dt, dc = time.perf_counter() - t, time.process_time() - c
        s = SQLiteStore(path)  # reads from the database, not the write-through cache
        reads = bench_reads(s, n_ent, n=10_000)
        out[name] = {
            "entities": s.count(),
            "events": len(stream),
            "history_rows": s.history_count(),
            "prefill_seconds": round(fill, 1),
            "events_per_s": round(len(stream) / dt),
            "cpu_events_per_s": round(len(stream) / dc),
            "reads": reads,
            "db_mib": round(path.stat().st_size / 2**20),
        }
        s.close()
        _fresh(path)
    out["ingest_slowdown_big_over_small"] = round(
        out["small"]["events_per_s"] / out["big"]["events_per_s"], 2
    )
    out["ingest_cpu_slowdown_big_over_small"] = round(
        out["small"]["cpu_events_per_s"] / out["big"]["cpu_events_per_s"], 2
    )
    for r in ("point_median_us", "asof_median_us"):
        out[f"{r}_slowdown"] = round(out["big"]["reads"][r] / out["small"]["reads"][r], 2)
    return out


def bench_indicators(path: Path, n: int = 20) -> dict:
    """Query time of :meth:`Store.indicators` over the whole stream and one minute."""
    s = SQLiteStore(path)
    out = {}
    for name, (t0, t1) in (("all", (None, None)), ("minute", (T0 + 600 * 10**9, T0 + 660 * 10**9))):
        times = []
        for _ in range(n):
            t = time.perf_counter()
            rows = s.indicators(t0, t1)
            times.append(time.perf_counter() - t)
        out[f"{name}_ms"] = round(statistics.median(times) * 1000, 2)
        out[f"{name}_rows"] = len(rows)
    s.close()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entities", type=int, default=100_000)
    ap.add_argument("--events", type=int, default=500_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument(
        "--repeat",
        type=lambda v: max(1, int(v)),
        default=3,
        help="ingest runs of each store, at least 1 (the best is kept)",
    )
    ap.add_argument("--placement", type=int, default=100_000, help="positions per call")
    ap.add_argument("--http-events", type=int, default=100_000)
    ap.add_argument("--http-batch", type=int, default=1000)
    ap.add_argument("--ws-subscribers", type=int, default=100)
    ap.add_argument("--ws-rate", type=float, default=5000.0, help="events/s while pushing")
    ap.add_argument("--ws-seconds", type=float, default=5.0)
    ap.add_argument("--ws-batch", type=int, default=250)
    ap.add_argument("--pg-events", type=int, default=100_000, help="0: no PostgreSQL run")
    ap.add_argument("--mqtt-events", type=int, default=50_000, help="0: no MQTT run")
    ap.add_argument("--mqtt-per-message", type=int, default=100)
    ap.add_argument(
        "--scale",
        default="100000,1000000,1000000,10000000",
        help="small entities,history,big entities,history for the size test ('' to skip)",
    )
    ap.add_argument(
        "--scale-events",
        type=int,
        default=None,
        help="events for each store of the size test (default: 4 per entity; "
        "200000: a quick look at the cold start)",
    )
    ap.add_argument("--only", default=None, help="comma list of parts to run (default all)")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--_ws-listen", dest="ws_listen", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.ws_listen:
        port, subs, nb, batch, out = a.ws_listen.split(",", 4)
        _ws_listen(int(port), int(subs), int(nb), int(batch), out)
        return 0
    out: dict = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "date": time.strftime("%Y-%m-%d"),
        "params": vars(a) | {"json": str(a.json) if a.json else None},
    }
    parts = set(a.only.split(",")) if a.only else None

    def want(name: str) -> bool:
        return parts is None or name in parts

    with tempfile.TemporaryDirectory(prefix="twin-syncbench-") as d:
        tmp = Path(d)
        t = time.perf_counter()
        stream = make_stream(a.entities, a.events)
        _freeze_input()
        out["stream"] = {
            "delivered": len(stream),
            "seconds_to_make": round(time.perf_counter() - t, 2),
        }
        if want("ingest"):
            # the two alternate, --repeat times each; the best of each is kept (the
            # machine's speed drifts by 10-15 % between runs a few seconds apart)
            twins, plains = [], []
            for r in range(a.repeat):
                twins.append(bench_twin(stream, a.batch, tmp / "twin.sqlite"))
                if r == 0:
                    out["indicators_query"] = bench_indicators(tmp / "twin.sqlite")
                _fresh(tmp / "twin.sqlite")
                plains.append(bench_plain(stream, a.batch, tmp / "plain.sqlite"))
                _fresh(tmp / "plain.sqlite")
            out["twin_store"] = _best(twins)
            out["plain_sqlite"] = _best(plains)
            out["ingest_ratio_twin_over_plain"] = round(
                out["twin_store"]["events_per_s"] / out["plain_sqlite"]["events_per_s"], 2
            )
        if want("postgres") and a.pg_events > 0:
            sub = stream[: a.pg_events]
            out["postgres"] = bench_postgres(sub, a.batch)
            out["postgres"]["sqlite_same_events"] = bench_twin(sub, a.batch, tmp / "pgref.sqlite")
            _fresh(tmp / "pgref.sqlite")
            out["postgres"]["ratio_pg_over_sqlite"] = round(
                out["postgres"]["events_per_s"]
                / out["postgres"]["sqlite_same_events"]["events_per_s"],
                2,
            )
        del stream
        if want("scale") and a.scale:
            v = [int(x) for x in a.scale.split(",")]
            out["scale"] = bench_scale((v[0], v[1]), (v[2], v[3]), a.scale_events, a.batch, tmp)
        if want("placement"):
            out["placement"] = bench_placement(a.placement, tmp)
        if want("mqtt") and a.mqtt_events > 0:
            out["mqtt"] = bench_mqtt(a.mqtt_events, a.mqtt_per_message, tmp)
        if want("http") and a.http_events > 0:
            out["http"] = bench_http(a.http_events, a.http_batch, tmp)
        if want("ws") and a.ws_subscribers > 0:
            out["websocket"] = bench_ws(a.ws_subscribers, a.ws_rate, a.ws_seconds, a.ws_batch, tmp)
    print(f"{'what':38} {'value':>14}")
    rows = []
    if "twin_store" in out:
        ts, pl = out["twin_store"], out["plain_sqlite"]
        rows += [
            ("twin store ingest (events/s)", ts["events_per_s"]),
            ("plain SQLite ingest (events/s)", pl["events_per_s"]),
            ("ratio twin / plain", out["ingest_ratio_twin_over_plain"]),
            ("twin store ingest CPU (events/s)", ts["cpu_events_per_s"]),
            ("plain SQLite ingest CPU (events/s)", pl["cpu_events_per_s"]),
            ("point read median (us)", ts["reads"]["point_median_us"]),
            ("as-of read median (us)", ts["reads"]["asof_median_us"]),
            ("indicators, whole run (ms)", out["indicators_query"]["all_ms"]),
        ]
    if "postgres" in out:
        pg = out["postgres"]
        rows += [
            ("PostgreSQL ingest (events/s)", pg["events_per_s"]),
            ("ratio PostgreSQL / SQLite", pg["ratio_pg_over_sqlite"]),
            ("PostgreSQL point read median (us)", pg["reads"]["point_median_us"]),
        ]
    if "scale" in out:
        sc = out["scale"]
        rows += [
            ("small store ingest (events/s)", sc["small"]["events_per_s"]),
            ("big store ingest (events/s)", sc["big"]["events_per_s"]),
            ("ingest slowdown big / small", sc["ingest_slowdown_big_over_small"]),
            ("ingest CPU slowdown big / small", sc["ingest_cpu_slowdown_big_over_small"]),
            ("point read slowdown", sc["point_median_us_slowdown"]),
            ("as-of read slowdown", sc["asof_median_us_slowdown"]),
        ]
    if "placement" in out:
        rows.append(("placement (positions/s)", out["placement"]["positions_per_s"]))
    if "mqtt" in out:
        rows.append(("MQTT ingest (events/s)", out["mqtt"]["events_per_s"]))
    if "http" in out:
        rows.append(("HTTP ingest (events/s)", out["http"]["events_per_s"]))
    if "websocket" in out:
        w = out["websocket"]
        rows.append((f"WS push p99 ms ({w['subscribers']} subs)", w["latency_ms_p99"]))
        rows.append(("WS achieved ingest (events/s)", w["achieved_events_per_s"]))
        rows.append(("WS server CPU per batch (ms)", w["server_cpu_ms_per_batch"]))
    for k, v in rows:
        print(f"{k:38} {v:>14,}" if isinstance(v, int) else f"{k:38} {v:>14}")
    if "twin_store" in out:
        print("outcomes:", out["twin_store"]["outcomes"])
    if a.json:
        a.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
