"""Store semantics: idempotency, ordering, concurrency, incidents, time travel, atomicity."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import twin.sync.store as store_mod
from twin.sync.model import Event, parse_time
from twin.sync.pgstore import PostgresStore
from twin.sync.store import SQLiteStore

T0 = parse_time("2026-05-01T08:00:00Z")
S = 1_000_000_000
NOW = T0 + 3600 * S


def pev(i, eid=None, t=0.0, lon=121.55, status="walking", etype="person", attrs=None, **kw):
    """An Event for entity ``i`` at ``t`` seconds after T0."""
    names = {"person": "Person", "vehicle": "Vehicle", "incident": "Incident", "asset": "Asset"}
    a = attrs or {}
    import json

    return Event(
        eid or f"e{i}-{t}",
        f"urn:ngsi-ld:{names[etype]}:X{i:04d}",
        etype,
        T0 + int(round(t * S)),
        "test",
        lon,
        29.87,
        12.0,
        None,
        None,
        status,
        a,
        kw.get("expected_revision"),
        json.dumps(a, separators=(",", ":"), sort_keys=True),
    )


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def open_backend(backend, name, *, tmp, request=None, dsn=None, **kw):
    """A store of ``backend``; the same ``name`` opens the same twin again."""
    if backend == "sqlite":
        return SQLiteStore(Path(tmp) / f"{name}.sqlite", **kw)
    dsn = dsn or request.getfixturevalue("postgres")
    kw.pop("synchronous", None)
    return PostgresStore(dsn, schema=name, **kw)


@pytest.fixture
def make_store(backend, tmp_path, request):
    """Factory: ``make_store(name)`` opens a store (a fresh twin per test and name)."""
    opened = []
    prefix = "t" + uuid.uuid4().hex[:10]

    def make(name="live", **kw):
        s = open_backend(backend, f"{prefix}_{name}", tmp=tmp_path, request=request, **kw)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


@pytest.fixture
def store(make_store):
    return make_store()


def results(outcomes):
    return [o.result for o in outcomes]


def test_apply_and_duplicate_is_noop(store):
    out = store.apply([pev(1, "a", 1.0, lon=121.0), pev(1, "b", 2.0, lon=121.1)])
    assert results(out) == ["applied", "applied"]
    assert [o.revision for o in out] == [1, 2]
    again = store.apply([pev(1, "a", 1.0, lon=121.0), pev(1, "b", 5.0, lon=99.0)])
    assert results(again) == ["duplicate", "duplicate"]
    s = store.state("urn:ngsi-ld:Person:X0001")
    assert (s.lon, s.revision, s.event_id) == (121.1, 2, "b")
    assert len(store.history("urn:ngsi-ld:Person:X0001")) == 2
    # a duplicate inside one batch is a no-op too
    assert results(store.apply([pev(2, "c", 1.0), pev(2, "c", 1.0)])) == ["applied", "duplicate"]


def test_late_event_goes_to_history_only(store):
    store.apply([pev(1, "new", 10.0, lon=121.2)])
    out = store.apply([pev(1, "old", 5.0, lon=121.1, status="indoor")])
    assert results(out) == ["stale"] and out[0].revision == 1
    s = store.state("urn:ngsi-ld:Person:X0001")
    assert (s.lon, s.status, s.revision) == (121.2, "walking", 1)
    h = store.history("urn:ngsi-ld:Person:X0001")
    assert [(r["event_id"], r["outcome"]) for r in h] == [("old", "stale"), ("new", "applied")]
    # time travel finds the late truth
    assert store.state("urn:ngsi-ld:Person:X0001", at=T0 + 7 * S).status == "indoor"


def test_asof_same_from_cache_and_database(tmp_path):
    """As-of reads answered with the write-through cache (entity key known) equal
    those of a freshly opened store (key looked up in the database), stale partial
    rows completed from the latest applied row in both."""
    path = tmp_path / "asof.sqlite"
    w = SQLiteStore(path)
    rnd = random.Random(3)
    evs = [pev(2, "first", 0.1, lon=120.0)]
    evs += [
        pev(rnd.randrange(6), f"e{k:03d}", rnd.randrange(400) / 10, lon=121.0 + k / 100)
        for k in range(150)
    ]
    evs += [pev(2, "late-partial", 0.5, lon=None, status=None, attrs={"note": "x"})]
    for j in range(0, len(evs), 7):
        w.apply(evs[j : j + 7])
    r = SQLiteStore(path)

    def fields(x):
        if x is None:
            return None
        return (x.id, x.type, x.revision, x.observed_ns, x.lon, x.status, x.attributes, x.event_id)

    n = 0
    for i in range(7):
        eid = f"urn:ngsi-ld:Person:X{i:04d}"
        for t in [T0 - S, T0 + S // 2, *(T0 + k * S for k in range(0, 41, 3))]:
            a, b = w.state(eid, at=t), r.state(eid, at=t)
            assert fields(a) == fields(b)
            n += a is not None
    assert n > 50
    late = w.state("urn:ngsi-ld:Person:X0002", at=T0 + S // 2 + 1)
    assert late.event_id == "late-partial" and late.lon is not None and late.status == "walking"
    assert late.attributes == {"note": "x"}
    w.close()
    r.close()


def test_merge_keeps_fields_an_event_leaves_out(store):
    store.apply([pev(1, "a", 1.0, attrs={"building_id": "B1", "floor": 2})])
    e = pev(1, "b", 2.0, status=None, attrs={"mood": "ok"})
    e.lon = e.lat = e.alt = None
    store.apply([e])
    s = store.state("urn:ngsi-ld:Person:X0001")
    assert (s.lon, s.status) == (121.55, "walking")
    assert s.attributes == {"building_id": "B1", "floor": 2, "mood": "ok"}
    assert [x.id for x in store.query(building="B1", floor=2)] == [s.id]


def test_expected_revision(store):
    store.apply([pev(1, "a", 1.0)])
    out = store.apply(
        [pev(1, "b", 2.0, expected_revision=0), pev(1, "c", 3.0, expected_revision=1)]
    )
    assert results(out) == ["rejected", "applied"]
    assert out[0].reason == "revision conflict: expected 0, current 1"
    # a rejected event is not "seen": corrected, it may be sent again
    assert results(store.apply([pev(1, "b", 4.0, expected_revision=2)])) == ["applied"]


def test_type_mismatch_rejected(store):
    store.apply([pev(1, "a", 1.0)])
    e = pev(1, "b", 2.0, etype="vehicle")
    e.entity_id = "urn:ngsi-ld:Person:X0001"
    out = store.apply([e])
    assert out[0].result == "rejected" and "is a person, not a vehicle" in out[0].reason


def test_incident_lifecycle_and_timers(store):
    inc = lambda eid, t, st, **a: pev(9, eid, t, status=st, etype="incident", attrs=a)  # noqa: E731
    out = store.apply(
        [
            inc("r", 0.0, "reported", category="fire"),
            inc("bad", 5.0, "closed"),  # reported -> closed is illegal
            pev(1, "p", 5.0),  # the rest of the batch still applies
            inc("d", 40.0, "dispatched", responder="urn:ngsi-ld:Vehicle:V0001"),
            inc("o", 100.0, "on_scene"),
            inc("back", 110.0, "dispatched"),  # backwards: illegal
        ]
    )
    assert results(out) == ["applied", "rejected", "applied", "applied", "applied", "rejected"]
    assert out[1].reason == "illegal incident transition reported -> closed"
    assert out[5].reason == "illegal incident transition on_scene -> dispatched"
    assert store.state("urn:ngsi-ld:Person:X0001") is not None
    assert results(store.apply([inc("z", 1.0, "dispatched")])) == ["stale"]  # late: history
    store.apply([inc("s", 300.0, "resolved"), inc("c", 360.0, "closed")])
    t = store.incident("urn:ngsi-ld:Incident:X0009")
    assert t["time_to_dispatch_s"] == 40.0
    assert t["time_to_on_scene_s"] == 100.0
    assert t["time_to_close_s"] == 360.0
    assert t["responder"] == "urn:ngsi-ld:Vehicle:V0001"
    audit = store.history("urn:ngsi-ld:Incident:X0009")
    assert [r["status"] for r in audit if r["outcome"] == "applied"] == [
        "reported",
        "dispatched",
        "on_scene",
        "resolved",
        "closed",
    ]
    assert results(store.apply([inc("n", 1.0, "dispatched")])) == ["stale"]
    new = pev(8, "n2", 1.0, status="dispatched", etype="incident")
    assert store.apply([new])[0].reason == "illegal incident transition (new) -> dispatched"


def test_raw_dicts_validated_one_by_one(store):
    good = pev(1, "a", 1.0).to_dict()
    bad = dict(good, event_id="b", position={"lon": float("nan"), "lat": 1.0})
    out = store.apply([bad, good, {"event_id": "c"}], now=NOW)
    assert results(out) == ["rejected", "applied", "rejected"]
    assert out[0].reason == "position.lon is nan (not finite)"
    assert out[2].reason == "missing field 'entity_id'"


def test_time_travel(store):
    store.apply([pev(1, f"e{k}", 10.0 * k, lon=121.0 + k) for k in range(5)])
    eid = "urn:ngsi-ld:Person:X0001"
    assert store.state(eid, at=T0 - 1) is None
    assert store.state(eid, at=T0).lon == 121.0
    assert store.state(eid, at=T0 + 25 * S).lon == 123.0
    assert store.state(eid, at="2026-05-01T08:00:30Z").lon == 124.0
    assert store.state(eid, at=T0 + 25 * S).revision == 3
    assert [r["lon"] for r in store.history(eid, T0 + 10 * S, T0 + 30 * S)] == [122.0, 123.0, 124.0]


def test_query_filters(store):
    store.apply(
        [
            pev(1, "a", 1.0, lon=121.50),
            pev(2, "b", 1.0, lon=121.60, status="indoor", attrs={"building_id": "B7", "floor": 3}),
            pev(3, "c", 1.0, lon=121.55, etype="vehicle", status="driving"),
            pev(2, "d", 9.0, lon=121.51, status="walking"),
        ]
    )
    ids = lambda xs: [x.id[-5:] for x in xs]  # noqa: E731
    assert store.count() == 3 and store.count("vehicle") == 1
    assert ids(store.query(bbox=(121.505, 29.0, 121.58, 30.0))) == ["X0002", "X0003"]
    assert ids(store.query(types=["vehicle"])) == ["X0003"]
    assert ids(store.query(status="walking", types="person")) == ["X0001", "X0002"]
    assert ids(store.query(building="B7", floor=3)) == ["X0002"]  # attributes merged
    # as of 5 s: X0002 was indoor and east
    assert ids(store.query(status="indoor", at=T0 + 5 * S)) == ["X0002"]
    assert ids(store.query(bbox=(121.59, 29.0, 121.61, 30.0), at=T0 + 5 * S)) == ["X0002"]
    assert ids(store.query(bbox=(121.59, 29.0, 121.61, 30.0))) == []


def test_failed_batch_leaves_nothing(tmp_path, monkeypatch):
    s = SQLiteStore(tmp_path / "a.sqlite")
    s.apply([pev(1, "a", 1.0, lon=121.0)])
    real = SQLiteStore._apply

    def boom(self, *a):
        real(self, *a)  # every row written...
        raise RuntimeError("disk on fire")  # ...then the batch fails before commit

    monkeypatch.setattr(SQLiteStore, "_apply", boom)
    with pytest.raises(RuntimeError):
        s.apply([pev(1, "b", 2.0, lon=122.0), pev(2, "c", 2.0)])
    monkeypatch.setattr(SQLiteStore, "_apply", real)
    assert s.count() == 1 and s.state("urn:ngsi-ld:Person:X0001").lon == 121.0
    assert s.history_count() == 1
    # the events were not marked seen: the retried batch applies
    out = s.apply([pev(1, "b", 2.0, lon=122.0), pev(2, "c", 2.0)])
    assert results(out) == ["applied", "applied"] and out[0].revision == 2
    s.close()


def test_failed_plan_leaves_the_cache_as_committed(tmp_path, monkeypatch):
    """A batch that fails while planning changed cache rows in place: they are read
    again, so the next batch sees committed state."""
    s = SQLiteStore(tmp_path / "p.sqlite")
    s.apply([pev(1, "a", 1.0, lon=121.0)])
    real = store_mod.plan_batch

    def boom(*a, **kw):
        real(*a, **kw)  # the cache rows are updated in place...
        raise RuntimeError("planning failed")  # ...then planning fails

    monkeypatch.setattr(store_mod, "plan_batch", boom)
    with pytest.raises(RuntimeError):
        s.apply([pev(1, "b", 2.0, lon=122.0)])
    monkeypatch.setattr(store_mod, "plan_batch", real)
    e = s.state("urn:ngsi-ld:Person:X0001")
    assert (e.lon, e.revision, e.event_id) == (121.0, 1, "a")
    out = s.apply([pev(1, "b", 2.0, lon=122.0)])
    assert results(out) == ["applied"] and out[0].revision == 2
    s.close()


def test_committed_batches_survive_a_killed_process(tmp_path):
    db = tmp_path / "k.sqlite"
    code = f"""
import os, sys
sys.path.insert(0, {str(Path(__file__).parents[2])!r})
from tests.sync.test_store import pev
from twin.sync.store import SQLiteStore
s = SQLiteStore({str(db)!r})
for b in range(3):
    s.apply([pev(i, f"e{{b}}-{{i}}", float(b), lon=121.0 + b) for i in range(50)])
s._con.execute("BEGIN IMMEDIATE")
s._con.execute("INSERT INTO events_seen VALUES ('uncommitted')")
os._exit(9)  # no close, no commit: like kill -9 mid-batch
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 9, r.stderr
    s = SQLiteStore(db)
    assert s.count() == 50 and s.history_count() == 150
    assert s.state("urn:ngsi-ld:Person:X0007").lon == 123.0
    assert (
        s._con.execute("SELECT count(*) FROM events_seen WHERE event_id='uncommitted'").fetchone()[
            0
        ]
        == 0
    )
    s.close()


def test_cache_follows_other_writers(make_store):
    a, b = make_store("m"), make_store("m")
    a.apply([pev(1, "x", 1.0)])
    b.apply([pev(1, "y", 2.0, lon=100.0)])  # another connection writes
    out = a.apply([pev(1, "z", 3.0, expected_revision=2)])
    assert out[0].result == "applied" and out[0].revision == 3
    a.close()
    b.close()


def test_cached_reads_equal_the_database(make_store):
    """Current-state reads answered from the write-through cache equal what a fresh
    connection reads from the file, and follow another connection's writes."""
    a = make_store("c")
    evs = [
        pev(i % 7, f"e{i}", (i * 37 % 50) / 2, lon=100 + i / 10, attrs={"n": i}) for i in range(200)
    ]
    for k in range(0, 200, 30):
        a.apply(evs[k : k + 30])
    b = make_store("c")
    ids = [e.id for e in b.query()]
    assert len(ids) == 7
    assert [a.state(i) for i in ids] == [b.state(i) for i in ids]
    b.apply([pev(3, "late-writer", 99.0, lon=1.0)])
    assert a.state(ids[3]).lon == 1.0 and a.state(ids[3]) == b.state(ids[3])
    a.close()
    b.close()


@st.composite
def streams(draw):
    n_ent = draw(st.integers(1, 6))
    n = draw(st.integers(1, 60))
    evs = []
    for k in range(n):
        i = draw(st.integers(1, n_ent))
        t = draw(st.integers(0, 30)) / 2  # coarse times: ties happen
        evs.append(
            pev(
                i,
                f"e{k}",
                t,
                lon=float(draw(st.integers(0, 1000))) / 10,
                status=draw(st.sampled_from(["walking", "indoor", "idle"])),
                attrs={"v": draw(st.integers(0, 9))},
            )
        )
    return evs, draw(st.randoms(use_true_random=False))


_PROPERTY = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@settings(max_examples=30, **_PROPERTY)
@given(data=streams())
def test_final_state_independent_of_delivery(data):
    """1 % duplicates and 5 % late: final state == state of the sorted, deduplicated
    stream (here with much more disorder than that: any permutation)."""
    _delivery_property(data, "sqlite", None)


@pytest.mark.postgres
@settings(max_examples=10, **_PROPERTY)
@given(data=streams())
def test_final_state_independent_of_delivery_postgres(data, postgres):
    """The same property on PostgreSQL (fewer examples: a schema per example)."""
    _delivery_property(data, "postgres", postgres)


def _delivery_property(data, backend, dsn):
    evs, rnd = data
    delivered = list(evs)
    for e in rnd.sample(evs, max(1, len(evs) // 100)):  # duplicates
        delivered.insert(rnd.randrange(len(delivered) + 1), e)
    for _ in range(max(1, len(evs) // 20)):  # late events: moved later in delivery
        i = rnd.randrange(len(delivered))
        delivered.insert(rnd.randrange(i, len(delivered)), delivered.pop(i))
    rnd.shuffle(delivered) if rnd.random() < 0.3 else None
    with tempfile.TemporaryDirectory() as d:
        kw = {"synchronous": "NORMAL"} if backend == "sqlite" else {}  # no fsync: faster
        p = "p" + uuid.uuid4().hex[:10]
        a = open_backend(backend, p + "a", tmp=d, dsn=dsn, **kw)
        b = open_backend(backend, p + "b", tmp=d, dsn=dsn, **kw)
        k = rnd.randrange(1, 8)
        for j in range(0, len(delivered), k):
            a.apply(delivered[j : j + k])
        ordered = sorted(
            {e.event_id: e for e in evs}.values(), key=lambda e: (e.observed_ns, e.event_id)
        )
        assert all(o.result == "applied" for o in b.apply(ordered))
        key = lambda x: (x.id, x.observed_ns, x.event_id, x.lon, x.status, x.attributes)  # noqa: E731
        assert [key(x) for x in a.query()] == [key(x) for x in b.query()]
        assert a.history_count() == b.history_count() == len(ordered)
        t = T0 + 7 * S
        assert [key(x) for x in a.query(at=t)] == [key(x) for x in b.query(at=t)]
        a.close()
        b.close()


def test_shuffled_batches_random(make_store):
    """A bigger seeded case of the property above, with a batch size of 100."""
    rnd = random.Random(5)
    evs = [
        pev(rnd.randrange(50), f"e{k}", rnd.randrange(2000) / 10, lon=rnd.random())
        for k in range(3000)
    ]
    delivered = evs + rnd.sample(evs, 30)
    rnd.shuffle(delivered)
    a, b = make_store("a"), make_store("b")
    for j in range(0, len(delivered), 100):
        a.apply(delivered[j : j + 100])
    b.apply(sorted(evs, key=lambda e: (e.observed_ns, e.event_id)))
    assert [(x.id, x.lon) for x in a.query()] == [(x.id, x.lon) for x in b.query()]


WRITER = """
import json, pathlib, sys, time
sys.path.insert(0, {root!r})
from tests.sync.test_store import open_backend, pev
evs = [pev(i, eid, t, lon=lon) for i, eid, t, lon in json.loads(sys.argv[1])]
s = open_backend({backend!r}, {name!r}, tmp={tmp!r}, dsn={dsn!r})
pathlib.Path(sys.argv[2]).touch()  # ready
while not pathlib.Path({tmp!r}, "go").exists():  # both start writing together
    time.sleep(0.001)
out = []
for j in range(0, len(evs), 40):
    out += [(o.event_id, o.result, o.revision) for o in s.apply(evs[j : j + 40])]
    time.sleep(0.005)  # batches arrive over time, as from a feed
s.close()
print(json.dumps(out))
"""


@pytest.mark.slow
def test_two_processes_write_one_twin(backend, tmp_path, request):
    """Two processes apply interleaved, out-of-order batches to the same entities at
    once: no lost update (each entity's revision counts its applied events), every
    event stored once, and the final state equals one ordered replay."""
    rnd = random.Random(11)
    specs = [
        (rnd.randrange(20), f"w{k}", rnd.randrange(4000) / 10, rnd.random()) for k in range(1600)
    ]
    dsn = request.getfixturevalue("postgres") if backend == "postgres" else None
    name = "t" + uuid.uuid4().hex[:10]
    root = str(Path(__file__).resolve().parents[2])
    code = WRITER.format(root=root, backend=backend, name=name, tmp=str(tmp_path), dsn=dsn)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, json.dumps(specs[k::2]), str(tmp_path / f"ready{k}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(2)
    ]
    t_end = time.monotonic() + 60
    while not all((tmp_path / f"ready{k}").exists() for k in range(2)):
        for p in procs:
            if p.poll() is not None:  # a writer died before starting: say why
                pytest.fail(f"writer exited with {p.returncode}: {p.communicate()[1][-2000:]}")
        assert time.monotonic() < t_end, "writers did not open the store within 60 s"
        time.sleep(0.01)
    (tmp_path / "go").touch()
    outs = []
    for p in procs:
        so, se = p.communicate(timeout=120)
        assert p.returncode == 0, se
        outs += json.loads(so)
    assert len(outs) == len(specs) and {o[1] for o in outs} <= {"applied", "stale"}
    s = open_backend(backend, name, tmp=tmp_path, dsn=dsn)
    ref = open_backend(backend, name + "ref", tmp=tmp_path, dsn=dsn)
    try:
        assert s.history_count() == len(specs)
        evs = [pev(i, eid, t, lon=lon) for i, eid, t, lon in specs]
        ref.apply(sorted(evs, key=lambda e: (e.observed_ns, e.event_id)))
        key = lambda x: (x.id, x.event_id, x.lon, x.observed_ns)  # noqa: E731
        assert [key(x) for x in s.query()] == [key(x) for x in ref.query()]
        applied = dict.fromkeys((e.entity_id for e in evs), 0)
        by_id = {e.event_id: e.entity_id for e in evs}
        for eid, result, _rev in outs:
            if result == "applied":
                applied[by_id[eid]] += 1
        assert {x.id: x.revision for x in s.query()} == applied
        # the two writers really interleaved their batches
        proc_of = {eid: k % 2 for k, (_i, eid, _t, _l) in enumerate(specs)}
        rows = sorted(
            (h["cursor"], proc_of[h["event_id"]]) for x in s.query() for h in s.history(x.id)
        )
        switches = sum(a[1] != b[1] for a, b in zip(rows, rows[1:], strict=False))
        assert switches >= 3
    finally:
        s.close()
        ref.close()


@pytest.mark.postgres
def test_open_store_by_url(postgres, tmp_path):
    from twin.errors import InputError
    from twin.sync.store import open_store

    with open_store(postgres, schema="t" + uuid.uuid4().hex[:10]) as s:
        assert isinstance(s, PostgresStore)
        assert results(s.apply([pev(1, "a", 1.0)])) == ["applied"]
        assert s.state("urn:ngsi-ld:Person:X0001").revision == 1
    with open_store(tmp_path / "x.sqlite") as s:
        assert isinstance(s, SQLiteStore)
    bad = postgres.replace("twin@", "nobody:secret@").replace("/postgres", "/nodb")
    with pytest.raises(InputError, match="cannot connect to PostgreSQL") as exc:
        open_store(bad)
    assert "secret" not in str(exc.value) and "***" in str(exc.value)
