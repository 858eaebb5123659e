"""The public surface of twin.sync on varied, valid and invalid input, against truth.

Ground truth is computed here by hand from the same events: deduplicated by
``event_id``, sorted by ``(observed_at, event_id)``; every event carries the full
state, so the final state (and every as-of state) is the last such event. Outcomes
per event are simulated in delivery order (duplicate / stale / applied).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import random
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pyproj
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twin.cli import main
from twin.errors import InputError, OutputError, ParameterError
from twin.sync import (
    SQLiteStore,
    export_czml,
    export_geojson,
    from_ngsi_ld,
    open_store,
    parse_event,
    replay,
    to_ngsi_ld,
)
from twin.sync.model import EventError, format_time, parse_time, parse_time_arg

NOW = parse_time("2026-05-02T00:00:00Z")
T0 = parse_time("2026-05-01T08:00:00Z")
S = 1_000_000_000
MS = 1_000_000
TYPES = ("person", "vehicle", "asset", "sensor")


# ----------------------------------------------------------------------------- truth
def make_stream(seed: int, n_ent: int = 6, n_ev: int = 150, late=0.05, dup=0.01):
    """(delivery order of raw events, the distinct events). Full-state events with
    millisecond times; ``late`` of them delivered later than their time; ``dup``
    delivered twice."""
    rng = random.Random(seed)
    evs = []
    for k in range(n_ev):
        ent = rng.randrange(n_ent)
        typ = TYPES[ent % len(TYPES)]
        t = T0 + rng.randrange(3600) * S + rng.randrange(1000) * MS
        evs.append(
            {
                "event_id": f"s{seed}-{k:05d}",
                "entity_id": f"urn:ngsi-ld:{typ.capitalize()}:{ent}",
                "entity_type": typ,
                "observed_at": format_time(t),
                "source": f"feed/{typ}",
                "position": {
                    "lon": round(121.50 + rng.random() * 0.1, 7),
                    "lat": round(29.80 + rng.random() * 0.1, 7),
                    "alt": round(rng.uniform(0, 50), 3),
                },
                "speed": round(rng.uniform(0, 20), 2),
                "heading": round(rng.uniform(0, 359), 1),
                "status": rng.choice(["idle", "moving", "busy"]),
                "attributes": {"k": k % 7, "building_id": f"B{ent % 2}", "floor": ent % 3},
            }
        )
    order = sorted(evs, key=lambda e: (e["observed_at"], e["event_id"]))
    delivered = []
    held = []
    for e in order:
        if rng.random() < late:
            held.append(e)  # delivered after some later ones
        else:
            delivered.append(e)
        if held and rng.random() < 0.3:
            delivered.append(held.pop(0))
    delivered += held
    for i in sorted(rng.sample(range(len(delivered)), max(1, int(dup * len(delivered))))):
        delivered.insert(rng.randrange(i, len(delivered) + 1), dict(delivered[i]))
    return delivered, evs


def key(e: dict) -> tuple:
    return (parse_time(e["observed_at"]), e["event_id"])


def truth_states(events: list[dict], at: int | None = None) -> dict[str, dict]:
    """entity id -> the last distinct event (by time, event id) at or before ``at``."""
    out: dict[str, dict] = {}
    seen = set()
    for e in sorted(events, key=key):
        if e["event_id"] in seen or (at is not None and key(e)[0] > at):
            continue
        seen.add(e["event_id"])
        out[e["entity_id"]] = e
    return out


def truth_outcomes(delivered: list[dict]) -> list[str]:
    seen, cur, out = set(), {}, []
    for e in delivered:
        if e["event_id"] in seen:
            out.append("duplicate")
            continue
        seen.add(e["event_id"])
        k = key(e)
        if e["entity_id"] in cur and k < cur[e["entity_id"]]:
            out.append("stale")
        else:
            cur[e["entity_id"]] = k
            out.append("applied")
    return out


def same_state(ent, e: dict) -> None:
    """An Entity equals the full-state event ``e``."""
    assert ent is not None, e["entity_id"]
    p = e["position"]
    assert (ent.id, ent.type, ent.event_id) == (e["entity_id"], e["entity_type"], e["event_id"])
    assert ent.observed_at == format_time(parse_time(e["observed_at"]))
    assert (ent.lon, ent.lat, ent.alt) == (p["lon"], p["lat"], p["alt"])
    assert (ent.speed, ent.heading, ent.status) == (e["speed"], e["heading"], e["status"])
    assert ent.attributes == e["attributes"] and ent.source == e["source"]
    assert ent.building == e["attributes"]["building_id"]
    assert ent.floor == e["attributes"]["floor"]


def apply_in_batches(store, delivered, rng) -> list:
    outs, i = [], 0
    while i < len(delivered):
        n = rng.randint(1, 40)
        outs += store.apply(delivered[i : i + n], now=NOW)
        i += n
    return outs


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(tmp_path / "live.sqlite")
    yield s
    s.close()


# ----------------------------------------------------------------------------- store
def test_store_state_history_query_against_truth(store):
    check_store_against_truth(store)


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_store_state_history_query_against_truth(postgres):
    with open_store(postgres, schema="surface_truth") as s:
        check_store_against_truth(s)


def check_store_against_truth(store):
    delivered, evs = make_stream(1)
    outs = apply_in_batches(store, delivered, random.Random(2))
    assert [o.result for o in outs] == truth_outcomes(delivered)
    assert [o.event_id for o in outs] == [e["event_id"] for e in delivered]
    assert "stale" in {o.result for o in outs} and "duplicate" in {o.result for o in outs}
    want = truth_states(evs)
    assert store.count() == len(want)
    for eid, e in want.items():
        same_state(store.state(eid), e)
    # the revision counts the applied events of the entity
    applied = [e for e, o in zip(delivered, outs, strict=True) if o.result == "applied"]
    for eid in want:
        assert store.state(eid).revision == sum(e["entity_id"] == eid for e in applied)
    assert store.state("urn:ngsi-ld:Vehicle:404") is None

    # time travel with every time form the API promises
    rng = random.Random(3)
    for _ in range(25):
        t = T0 + rng.randrange(-60, 3700) * S + rng.randrange(1000) * MS
        then = truth_states(evs, at=t)
        dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=t // 1000)
        forms = [
            t,
            format_time(t),
            format_time(t).replace("Z", "+00:00"),
            (dt.astimezone(timezone(timedelta(hours=8)))).isoformat(),
            dt,
            dt.astimezone(timezone(timedelta(hours=-5))),
        ]
        for eid in want:
            got = [store.state(eid, at=f) for f in forms]
            if eid in then:
                for g in got:
                    same_state(g, then[eid])
            else:
                assert got == [None] * len(forms)

    # history: every distinct event of the entity in [t0, t1], in time order
    eid = next(iter(want))
    rows = store.history(eid)
    mine = sorted({e["event_id"]: e for e in evs if e["entity_id"] == eid}.values(), key=key)
    assert [r["event_id"] for r in rows] == [e["event_id"] for e in mine]
    outcome: dict = {}
    for e, o in zip(delivered, outs, strict=True):
        outcome.setdefault(e["event_id"], o.result)  # the first delivery counts
    assert [r["outcome"] for r in rows] == [outcome[e["event_id"]] for e in mine]
    t0, t1 = key(mine[1])[0], key(mine[-2])[0]
    sub = store.history(eid, format_time(t0), datetime.fromtimestamp(t1 / S, UTC))
    assert [r["event_id"] for r in sub] == [e["event_id"] for e in mine[1:-1]]
    assert all(r["cursor"] > 0 for r in rows)

    # query: every filter combination against a brute-force pass over the truth
    bbox = (121.52, 29.82, 121.58, 29.88)

    def brute(states, bbox=None, types=None, building=None, floor=None, status=None):
        out = []
        for e in states.values():
            p = e["position"]
            if bbox and not (bbox[0] <= p["lon"] <= bbox[2] and bbox[1] <= p["lat"] <= bbox[3]):
                continue
            if types and e["entity_type"] not in types:
                continue
            if building and e["attributes"]["building_id"] != building:
                continue
            if floor is not None and e["attributes"]["floor"] != floor:
                continue
            if status and e["status"] != status:
                continue
            out.append(e["entity_id"])
        return sorted(out)

    t_mid = T0 + 1800 * S
    for kw in (
        {},
        {"bbox": bbox},
        {"types": ["vehicle", "person"]},
        {"types": "asset"},
        {"building": "B1"},
        {"building": "B0", "floor": 2},
        {"status": "moving"},
        {"bbox": bbox, "types": ["person"], "status": "busy"},
    ):
        assert [e.id for e in store.query(**kw)] == brute(want, **kw), kw
        then = truth_states(evs, at=t_mid)
        got = store.query(at=format_time(t_mid), **kw)
        assert [e.id for e in got] == brute(then, **kw), kw
        for g in got:
            same_state(g, then[g.id])


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 10_000),
    n_ent=st.integers(1, 5),
    n_ev=st.integers(1, 60),
    late=st.sampled_from([0.0, 0.05, 0.3]),
    dup=st.sampled_from([0.01, 0.1]),
)
def test_final_state_equals_sorted_deduplicated_replay(
    tmp_path_factory, seed, n_ent, n_ev, late, dup
):
    delivered, evs = make_stream(seed, n_ent, n_ev, late, dup)
    d = tmp_path_factory.mktemp("prop")
    with SQLiteStore(d / "a.sqlite") as a, SQLiteStore(d / "b.sqlite") as b:
        outs = apply_in_batches(a, delivered, random.Random(seed))
        assert [o.result for o in outs] == truth_outcomes(delivered)
        sorted_once = sorted({e["event_id"]: e for e in evs}.values(), key=key)
        b.apply(sorted_once, now=NOW)
        want = truth_states(evs)
        for eid, e in want.items():
            same_state(a.state(eid), e)
            same_state(b.state(eid), e)
        assert [x.id for x in a.query()] == sorted(want)


def ev(i, t_s, ent="urn:ngsi-ld:Vehicle:1", typ="vehicle", **over):
    d = {
        "event_id": f"e{i}",
        "entity_id": ent,
        "entity_type": typ,
        "observed_at": format_time(T0 + int(t_s * S)),
        "source": "test",
        "position": {"lon": 121.55, "lat": 29.87},
    }
    d.update(over)
    return {k: v for k, v in d.items() if v is not None}


def test_one_batch_exact_outcomes_and_rejections(store):
    inc = "urn:ngsi-ld:Incident:I9"
    batch = [
        ev(1, 10),
        ev(2, 20, speed=3.0),
        ev(3, 15),  # late: stale
        ev(1, 10),  # duplicate
        '{"event_id": "j1", "entity_id": ',  # malformed JSON text
        ev(4, 30, entity_id=None),
        ev(5, 30, observed_at=None),
        ev(6, 30, position={"lon": math.nan, "lat": 29.8}),
        ev(7, 30, position={"lon": 121.5, "lat": 91.0}),
        ev(8, 30, position={"lon": math.inf, "lat": 29.8}),
        ev(9, 30, observed_at="1970-01-01T00:00:00Z"),
        ev(10, 30, observed_at="2100-01-01T00:00:00Z"),
        ev(11, 30, typ="hydrant"),
        json.dumps(ev(12, 30, attributes={"blob": "x" * 70_000})),
        ev(13, 30, attributes={"blob": "x" * 20_000}),
        ev(14, 0, ent=inc, typ="incident", status="closed"),  # must start reported
        ev(15, 40, expected_revision=7),  # optimistic concurrency: revision is 2
        ev(16, 41, expected_revision=2, status="parked"),
        ev(17, 42, typ="person"),  # the entity is a vehicle
        ev(18, 43, observed_at="2026-05-01T08:00:43"),  # no zone
        ev(19, 44, speed=-3.0),
    ]
    outs = store.apply(batch, now=NOW)
    res = [(o.event_id, o.result, o.revision) for o in outs]
    assert res[:4] == [
        ("e1", "applied", 1),
        ("e2", "applied", 2),
        ("e3", "stale", 2),
        ("e1", "duplicate", None),
    ]
    reasons = {o.event_id: o.reason for o in outs if o.result == "rejected"}
    assert [o.result for o in outs[4:15]] == ["rejected"] * 11
    assert outs[4].event_id is None and "not valid JSON" in outs[4].reason
    assert "missing field 'entity_id'" in reasons["e4"]
    assert "missing field 'observed_at'" in reasons["e5"]
    assert "position.lon is nan" in reasons["e6"]
    assert "position.lat=91.0 is outside [-90, 90]" in reasons["e7"]
    assert "position.lon is inf" in reasons["e8"]
    assert "before 2000-01-01" in reasons["e9"]
    assert "more than a day in the future" in reasons["e10"]
    assert "unknown entity_type 'hydrant'" in reasons["e11"]
    assert "limit 65536" in outs[13].reason and "limit 16384" in reasons["e13"]
    assert "illegal incident transition" in reasons["e14"]
    assert reasons["e15"] == "revision conflict: expected 7, current 2"
    assert (outs[17].result, outs[17].revision) == ("applied", 3)
    assert reasons["e17"] == "entity urn:ngsi-ld:Vehicle:1 is a vehicle, not a person"
    assert "has no time zone" in reasons["e18"]
    assert "speed=-3.0 is outside" in reasons["e19"]
    # the valid rest was applied; nothing of the rejected ones is visible
    e = store.state("urn:ngsi-ld:Vehicle:1")
    assert (e.revision, e.status, e.speed, e.event_id) == (3, "parked", 3.0, "e16")
    assert store.state(inc) is None and store.count() == 1
    # a rejected event id is not "seen": a corrected event may reuse it
    fixed = store.apply([ev(7, 50, position={"lon": 121.5, "lat": 29.9})], now=NOW)
    assert fixed[0].result == "applied"


def test_incident_lifecycle_audit_trail_and_timers(store):
    inc = "urn:ngsi-ld:Incident:fire-12"
    steps = [
        ("reported", 0, "citizen-app", None),
        ("dispatched", 95.5, "dispatch/anna", "engine-7"),
        ("on_scene", 402, "unit/engine-7", None),
        ("on_scene", 500, "unit/engine-7", None),  # an update within the same state
        ("resolved", 1300, "unit/engine-7", None),
        ("closed", 1805, "dispatch/anna", None),
    ]
    batch = []
    for i, (status, t, who, responder) in enumerate(steps):
        attrs = {"responder": responder} if responder else None
        batch.append(ev(i, t, ent=inc, typ="incident", status=status, source=who, attributes=attrs))
    assert [o.result for o in store.apply(batch, now=NOW)] == ["applied"] * len(steps)
    d = store.incident(inc)
    assert d["time_to_dispatch_s"] == 95.5
    assert d["time_to_on_scene_s"] == 402.0
    assert d["time_to_close_s"] == 1805.0
    assert d["responder"] == "engine-7"
    assert d["reported_ns"] == T0 and d["closed_ns"] == T0 + 1805 * S
    # the audit trail: who changed what, when
    trail = [(r["source"], r["status"], r["observed_at"]) for r in store.history(inc)]
    assert trail == [(w, s_, format_time(T0 + int(t * S))) for s_, t, w, _ in steps]
    # illegal transitions, one by one, with the reason; the state stays closed
    bad = [
        ev(20, 1900, ent=inc, typ="incident", status="reported"),
        ev(21, 1901, ent=inc, typ="incident", status="dispatched"),
        ev(22, 0, ent="urn:ngsi-ld:Incident:x", typ="incident", status="on_scene"),
        ev(23, 5, ent="urn:ngsi-ld:Incident:y", typ="incident", status="reported"),
        ev(24, 6, ent="urn:ngsi-ld:Incident:y", typ="incident", status="resolved"),
    ]
    outs = store.apply(bad, now=NOW)
    assert [o.result for o in outs] == ["rejected", "rejected", "rejected", "applied", "rejected"]
    assert all("illegal incident transition" in o.reason for o in outs if o.reason)
    assert store.state(inc).status == "closed"
    assert store.incident("urn:ngsi-ld:Incident:y")["time_to_dispatch_s"] is None
    # unknown incident status: a validation error
    with pytest.raises(EventError, match="unknown incident status"):
        parse_event(ev(30, 1, ent=inc, typ="incident", status="burning"), now=NOW)


def test_entity_type_in_any_case(store):
    outs = store.apply([ev(1, 0, typ="Vehicle"), ev(2, 1, typ=" VEHICLE ")], now=NOW)
    assert [o.result for o in outs] == ["applied", "applied"]
    assert store.state("urn:ngsi-ld:Vehicle:1").type == "vehicle"
    assert store.count("vehicle") == 1


# ----------------------------------------------------------------------------- times
def test_time_forms():
    t = parse_time("2026-05-01T08:00:06.250Z")
    assert parse_time("2026-05-01T16:00:06.250+08:00") == t
    assert parse_time("2026-05-01T03:00:06.250-05:00") == t
    assert parse_time("2026-05-01 08:00:06.250Z") == t
    assert parse_time("2026-05-01T08:00:06.250z") == t
    # nanoseconds as clocks write them are kept (time inside twin is epoch ns)
    assert parse_time("2026-05-01T08:00:06.250000123Z") == t + 123
    assert parse_time("2026-05-01T16:00:06.2500001+08:00") == t + 100
    assert format_time(parse_time("2026-05-01T08:00:06.999999999Z")) == ("2026-05-01T08:00:06.999Z")
    assert parse_time(datetime(2026, 5, 1, 8, 0, 6, 250_000, tzinfo=UTC)) == t
    tz8 = timezone(timedelta(hours=8))
    assert parse_time(datetime(2026, 5, 1, 16, 0, 6, 250_000, tzinfo=tz8)) == t
    for naive in ("2026-05-01T08:00:06", datetime(2026, 5, 1, 8)):
        with pytest.raises(EventError, match="no time zone"):
            parse_time(naive)
    # epoch numbers for people and query strings: seconds, ms, us or ns by magnitude
    for v in ("1777622406.25", 1777622406.25, "1777622406250", "1777622406250000", str(t), t):
        assert parse_time_arg(v) == t, v
    assert parse_time_arg("2026-05-01T08:00:06.250Z") == t
    for bad in ("yesterday", "nan", True, ""):
        with pytest.raises(EventError):
            parse_time_arg(bad)


def test_reads_take_numpy_and_pandas_times(store):
    import numpy as np
    import pandas as pd

    store.apply([ev(1, 10), ev(2, 20)], now=NOW)
    t = T0 + 15 * S
    for at in (
        np.int64(t),
        np.datetime64("2026-05-01T08:00:15"),
        pd.Timestamp("2026-05-01T08:00:15Z"),
        pd.Timestamp("2026-05-01T16:00:15", tz="Asia/Shanghai"),
    ):
        assert store.state("urn:ngsi-ld:Vehicle:1", at=at).event_id == "e1", at
    with pytest.raises(ParameterError, match="NaT"):
        store.state("urn:ngsi-ld:Vehicle:1", at=np.datetime64("NaT"))
    rows = store.history("urn:ngsi-ld:Vehicle:1", np.datetime64("2026-05-01T08:00:15"))
    assert [r["event_id"] for r in rows] == ["e2"]


@pytest.mark.parametrize("bbox", [(121.5, 29.8, 121.6), "121.5,29.8,121.6,29.9"])
def test_query_bad_bbox_is_a_parameter_error(store, bbox):
    with pytest.raises(ParameterError):
        store.query(bbox=bbox)


# ----------------------------------------------------------------------------- positions
LON, LAT, ALT = 121.5512345, 29.8712345, 12.5
WUHAN = (114.3054321, 30.5928765)


def fwd(crs, lon, lat):
    return pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)


@pytest.mark.parametrize(
    "pos, lonlat",
    [
        ({"lon": LON, "lat": LAT, "alt": ALT}, (LON, LAT)),
        ({"lon": LON, "lat": LAT, "alt": ALT, "crs": "EPSG:4326"}, (LON, LAT)),
        ({"lon": LON, "lat": LAT, "alt": ALT, "crs": "EPSG:4490"}, (LON, LAT)),  # CGCS2000
        ({"type": "Point", "coordinates": [LON, LAT, ALT]}, (LON, LAT)),
        ({"x": "utm51", "y": None, "z": ALT, "crs": "EPSG:32651"}, (LON, LAT)),
        ({"x": "utm51", "y": None, "z": ALT, "crs": 32651}, (LON, LAT)),
        ({"x": "gk4550", "y": None, "alt": ALT, "crs": "EPSG:4550"}, (LON, LAT)),
        ({"x": "gk4547", "y": None, "z": ALT, "crs": "EPSG:4547"}, WUHAN),
        ({"type": "Point", "coordinates": ["utm51", None, ALT], "crs": "EPSG:32651"}, (LON, LAT)),
    ],
)
def test_positions_in_any_crs(pos, lonlat):
    codes = {"utm51": "EPSG:32651", "gk4550": "EPSG:4550", "gk4547": "EPSG:4547"}
    pos = json.loads(json.dumps(pos))
    tag = pos.get("x") or (pos.get("coordinates") or [None])[0]
    if tag in codes:
        x, y = fwd(codes[tag], *lonlat)
        if "x" in pos:
            pos["x"], pos["y"] = x, y
        else:
            pos["coordinates"][:2] = [x, y]
    e = parse_event(ev(1, 0, position=pos), now=NOW)
    assert e.lon == pytest.approx(lonlat[0], abs=1e-8)
    assert e.lat == pytest.approx(lonlat[1], abs=1e-8)
    assert e.alt == pytest.approx(ALT, abs=1e-6)


def test_event_level_crs_and_storage_in_wgs84(store):
    x, y = fwd("EPSG:32651", LON, LAT)
    outs = store.apply([ev(1, 0, crs="EPSG:32651", position={"x": x, "y": y})], now=NOW)
    assert outs[0].result == "applied"
    e = store.state("urn:ngsi-ld:Vehicle:1")
    assert (e.lon, e.lat) == (pytest.approx(LON, abs=1e-8), pytest.approx(LAT, abs=1e-8))
    assert e.alt is None
    q = store.query(bbox=(LON - 1e-4, LAT - 1e-4, LON + 1e-4, LAT + 1e-4))
    assert [x.id for x in q] == ["urn:ngsi-ld:Vehicle:1"]


@pytest.mark.parametrize(
    "pos, reason",
    [
        ({"x": 950_000.0, "y": 3_305_000.0, "crs": "EPSG:32651"}, "outside the area of use"),
        ({"lon": 20.0, "lat": 50.0, "crs": "EPSG:4490"}, "outside the area of use"),
        ({"x": 500_000.0, "y": 3_300_000.0, "crs": "EPSG:4547"}, None),  # inside: fine
        ({"x": 1e6, "y": 3.3e6, "crs": "EPSG:4547"}, "outside the area of use"),
        ({"x": 359_000.0, "y": 3_305_000.0, "crs": "EPSG:999999"}, "cannot understand the CRS"),
        ({"x": 1.0, "y": 2.0, "crs": "EPSG:4978"}, "not a geographic or projected CRS"),
        ({"x": 359_000.0, "y": 3_305_000.0}, "need the position's crs"),
        ({"x": math.nan, "y": 3_305_000.0, "crs": "EPSG:32651"}, "position.x is nan"),
        ({"x": 359_000.0, "crs": "EPSG:32651"}, "position needs x and y"),
        ({"x": "359000", "y": 3_305_000.0, "crs": "EPSG:32651"}, "position.x must be a number"),
        ({"lon": LON, "lat": 91.0}, "position.lat=91.0 is outside"),
        ({"lon": LON, "lat": LAT, "crs": ["EPSG:4326"]}, "position.crs must be a string"),
        ({"type": "LineString", "coordinates": [LON, LAT]}, "must be a Point"),
        ({"type": "Point", "coordinates": [LON]}, "coordinates must be"),
        ([LON, LAT], "position must be an object"),
    ],
)
def test_bad_positions_rejected_with_reason(pos, reason):
    if reason is None:
        assert parse_event(ev(1, 0, position=pos), now=NOW).lon == pytest.approx(114.0, abs=0.1)
        return
    with pytest.raises(EventError) as info:
        parse_event(ev(1, 0, position=pos), now=NOW)
    assert reason in info.value.reason


# ----------------------------------------------------------------------------- NGSI-LD
CTX = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"


def test_ngsi_ld_forms_in(store):
    t1, t2 = "2026-05-01T08:00:05Z", "2026-05-01T08:00:09.500Z"
    normalized = {
        "@context": [CTX],
        "id": "urn:ngsi-ld:Vehicle:42",
        "type": "Vehicle",
        "location": {
            "type": "GeoProperty",
            "value": {"type": "Point", "coordinates": [LON, LAT, ALT]},
            "observedAt": t1,
        },
        "speed": {"type": "Property", "value": 8.5, "observedAt": t2, "unitCode": "MTS"},
        "status": {"type": "Property", "value": "driving"},
        "refDepot": {"type": "Relationship", "object": "urn:ngsi-ld:Depot:D1"},
        "plate": {"type": "Property", "value": "ZJ-B 123"},
        "name": {"type": "LanguageProperty", "languageMap": {"en": "Ambulance 3"}},
        "modifiedAt": "2026-05-01T08:00:10Z",
    }
    e = from_ngsi_ld(normalized, now=NOW)
    assert (e.entity_id, e.entity_type, e.speed, e.status) == (
        "urn:ngsi-ld:Vehicle:42",
        "vehicle",
        8.5,
        "driving",
    )
    assert (e.lon, e.lat, e.alt) == (LON, LAT, ALT)
    assert e.observed_ns == parse_time(t2)  # the latest observedAt of the attributes
    assert e.attributes == {
        "refDepot": "urn:ngsi-ld:Depot:D1",
        "plate": "ZJ-B 123",
        "name": {"en": "Ambulance 3"},
    }
    key_values = {
        "id": "urn:ngsi-ld:Person:P7",
        "type": "https://uri.fiware.org/ns/data-models#Person",
        "location": {"type": "Point", "coordinates": [LON, LAT]},
        "status": "walking",
        "observedAt": t1,
        "buildingId": "B0003",
    }
    p = parse_event(key_values, now=NOW)
    assert (p.entity_type, p.lon, p.lat, p.alt, p.status) == ("person", LON, LAT, None, "walking")
    assert p.building == "B0003" and p.event_id == "urn:ngsi-ld:Person:P7@2026-05-01T08:00:05.000Z"
    date_observed = {
        "id": "urn:ngsi-ld:Sensor:S1",
        "type": "Sensor",
        "dateObserved": "2026-05-01T08:00:07Z",
        "temperature": 21.5,
    }
    s = parse_event(date_observed, now=NOW)
    assert s.observed_at == "2026-05-01T08:00:07.000Z" and s.attributes == {"temperature": 21.5}
    # through the store: NGSI-LD and twin's form share one path
    outs = store.apply([normalized, key_values, date_observed, normalized], now=NOW)
    assert [o.result for o in outs] == ["applied", "applied", "applied", "duplicate"]
    for bad, reason in [
        ({**key_values, "type": "Dragon"}, "unknown entity type"),
        ({**key_values, "location": {"type": "Polygon", "coordinates": []}}, "GeoJSON Point"),
        ({**key_values, "location": {"type": "Point", "coordinates": [LON, 91.0]}}, "lat=91.0"),
        ({k: v for k, v in key_values.items() if k != "observedAt"}, "missing observedAt"),
        ({**key_values, "observedAt": "2100-01-01T00:00:00Z"}, "future"),
        (
            {**normalized, "speed": {"type": "Property", "value": "fast", "observedAt": t2}},
            "speed must be a number",
        ),
    ]:
        with pytest.raises(EventError, match=reason):
            parse_event(bad, now=NOW)


def test_ngsi_ld_notification_from_a_broker(client, store, tmp_path):
    """A FIWARE broker's subscription POSTs Notifications: their entities are events."""
    note = {
        "id": "urn:ngsi-ld:Notification:1",
        "type": "Notification",
        "subscriptionId": "urn:ngsi-ld:Subscription:vehicles",
        "notifiedAt": "2026-05-01T08:00:30Z",
        "data": [
            {
                "id": "urn:ngsi-ld:Vehicle:7",
                "type": "Vehicle",
                "location": {
                    "type": "GeoProperty",
                    "value": {"type": "Point", "coordinates": [LON, LAT]},
                    "observedAt": "2026-05-01T08:00:20Z",
                },
            },
            {"id": "urn:ngsi-ld:Vehicle:8", "type": "Vehicle", "speed": 4.0},  # no time
            {"id": "urn:ngsi-ld:Vehicle:9", "type": "Spaceship"},
        ],
    }
    r = client.post(
        "/events", json=note, headers=H(ADMIN, **{"Content-Type": "application/ld+json"})
    )
    outs = r.json()["outcomes"]
    assert [o["result"] for o in outs] == ["applied", "applied", "rejected"]
    assert store.state("urn:ngsi-ld:Vehicle:7").observed_at == "2026-05-01T08:00:20.000Z"
    assert store.state("urn:ngsi-ld:Vehicle:8").observed_at == "2026-05-01T08:00:30.000Z"
    p = tmp_path / "note.json"
    p.write_text(json.dumps({**note, "notifiedAt": "2026-05-01T08:00:40Z"}))
    rep = replay(p, store, now=NOW)
    assert (rep.applied, rep.malformed) == (1, 1)  # Vehicle:7 is the same event again
    assert store.state("urn:ngsi-ld:Vehicle:8").revision == 2


def test_ngsi_ld_forms_out_round_trip(store):
    store.apply(
        [
            ev(
                1,
                3,
                speed=2.5,
                heading=90.0,
                status="parked",
                position={"lon": LON, "lat": LAT, "alt": ALT},
                attributes={"building_id": "B1", "floor": 2, "plate": "X"},
            )
        ],
        now=NOW,
    )
    ent = store.state("urn:ngsi-ld:Vehicle:1")
    norm = to_ngsi_ld(ent, context=True)
    assert norm["@context"] == CTX and norm["type"] == "Vehicle"
    assert norm["location"] == {
        "type": "GeoProperty",
        "value": {"type": "Point", "coordinates": [LON, LAT, ALT]},
        "observedAt": ent.observed_at,
    }
    assert norm["speed"] == {"type": "Property", "value": 2.5, "observedAt": ent.observed_at}
    assert norm["buildingId"]["value"] == "B1" and norm["revision"]["value"] == 1
    kv = to_ngsi_ld(ent, key_values=True)
    assert kv["location"] == {"type": "Point", "coordinates": [LON, LAT, ALT]}
    assert (kv["speed"], kv["status"], kv["floor"], kv["revision"]) == (2.5, "parked", 2, 1)
    for form in (norm, kv, json.loads(json.dumps(kv))):
        back = from_ngsi_ld(form, now=NOW)
        assert (back.entity_id, back.entity_type, back.observed_ns) == (
            ent.id,
            ent.type,
            ent.observed_ns,
        )
        assert (back.lon, back.lat, back.alt, back.speed, back.heading, back.status) == (
            LON,
            LAT,
            ALT,
            2.5,
            90.0,
            "parked",
        )
        assert back.attributes == {"building_id": "B1", "floor": 2, "plate": "X"}


# ----------------------------------------------------------------------------- files
def check_states(store, evs, *, approx=False):
    want = truth_states(evs)
    assert store.count() == len(want)
    for eid, e in want.items():
        got = store.state(eid)
        if not approx:
            same_state(got, e)
            continue
        p = e["position"]
        assert got.lon == pytest.approx(p["lon"], abs=1e-8)
        assert got.lat == pytest.approx(p["lat"], abs=1e-8)
        assert got.alt == pytest.approx(p["alt"], abs=1e-6)
        assert (got.event_id, got.status, got.attributes) == (
            e["event_id"],
            e["status"],
            e["attributes"],
        )


def csv_text(rows, header, delim=",", *, time=str, xy=None, crs_col=False, eol="\n"):
    """CSV of full-state events with the given header names (in the order of
    ``COLS``); ``xy``: a CRS to write projected x/y in instead of lon/lat."""
    out = io.StringIO()
    w = csv.writer(out, delimiter=delim, lineterminator=eol)
    w.writerow(header + (["crs"] if crs_col else []))
    tf = pyproj.Transformer.from_crs("EPSG:4326", xy, always_xy=True) if xy else None
    for e in rows:
        p = e["position"]
        a, b = (p["lon"], p["lat"]) if tf is None else tf.transform(p["lon"], p["lat"])
        t = parse_time(e["observed_at"])
        vals = [
            e["event_id"],
            e["entity_id"],
            e["entity_type"],
            time(t),
            repr(a),
            repr(b),
            p["alt"],
            e["speed"],
            e["heading"],
            e["status"],
            e["source"],
            e["attributes"]["building_id"],
            e["attributes"]["floor"],
            e["attributes"]["k"],
        ]
        w.writerow(vals + ([xy] if crs_col else []))
    return out.getvalue()


COLS = "event_id entity_id entity_type observed_at lon lat alt speed heading status source"
COLS = COLS.split() + ["building_id", "floor", "k"]
HEADERS = {
    "plain": (COLS, ","),
    "aliases": (
        ["EventId", "Entity", "Type", "Timestamp", "Longitude", "Latitude", "Height"]
        + ["Speed", "Bearing", "Status", "Source", "building_id", "floor", "k"],
        ";",
    ),
    "tabs": (["event", "id", "type", "time", "lng", "lat", "z"] + COLS[7:], "\t"),
}


@pytest.mark.parametrize("variant", ["plain", "aliases", "tabs", "epoch", "utm-column", "utm-arg"])
def test_csv_variants_replay_to_truth(tmp_path, store, variant):
    delivered, evs = make_stream(11, n_ev=60)
    header, delim = HEADERS.get(variant, HEADERS["plain"])
    kw: dict = {}
    if variant == "epoch":
        kw["time"] = lambda t: f"{t / S:.3f}"
    if variant.startswith("utm"):
        header = [*COLS[:4], "x", "y", "z", *COLS[7:]]
        kw["xy"] = "EPSG:32651"
        kw["crs_col"] = variant == "utm-column"
    text = csv_text(delivered, header, delim, eol="\r\n", **kw)
    p = tmp_path / "events.csv"
    p.write_bytes(b"\xef\xbb\xbf" + text.encode())
    r = replay(p, store, now=NOW, crs="EPSG:32651" if variant == "utm-arg" else None)
    assert (r.format, r.malformed, r.events) == ("csv", 0, len(delivered))
    assert (r.applied, r.stale, r.duplicate) == tuple(
        truth_outcomes(delivered).count(k) for k in ("applied", "stale", "duplicate")
    )
    check_states(store, evs, approx=variant.startswith("utm"))


def test_csv_without_event_ids_is_idempotent_and_reports_lines(tmp_path, store):
    p = tmp_path / "pos.csv"
    p.write_text(
        "entity,type,time,lon,lat,speed\r\n"
        "urn:ngsi-ld:Vehicle:1,Vehicle,2026-05-01T08:00:00Z,121.55,29.87,3.5\r\n"
        "urn:ngsi-ld:Vehicle:1,vehicle,2026-05-01T08:00:10+00:00,121.56,29.88,\r\n"
        "urn:ngsi-ld:Vehicle:2,vehicle,2026-05-01T08:00:00Z,abc,29.87,1\r\n"
        "urn:ngsi-ld:Vehicle:3,vehicle,2026-05-01T08:00:00Z,121.5,91,1\r\n"
        "urn:ngsi-ld:Vehicle:4,vehicle,2026-05-01T08:00:00Z,121.5,29.8,1,extra\r\n"
        ",,,,,\r\n"
        "urn:ngsi-ld:Vehicle:5,ufo,2026-05-01T08:00:00Z,121.5,29.8,1\r\n"
        "urn:ngsi-ld:Vehicle:6,vehicle,1970-01-01T00:00:00Z,121.5,29.8,1\r\n"
    )
    r = replay(p, store, now=NOW)
    assert (r.events, r.applied, r.malformed) == (2, 2, 5)
    assert [(ln, reason.split(" (")[0]) for ln, _, reason in r.errors] == [
        (4, "position.lon must be a number, got str"),
        (5, "position.lat=91.0 is outside [-90, 90]"),
        (6, "7 fields, the header has 6"),
        (8, "unknown entity_type 'ufo'"),
        (9, "observed_at 1970-01-01T00:00:00.000Z is before 2000-01-01"),
    ]
    e = store.state("urn:ngsi-ld:Vehicle:1")
    assert (e.lon, e.lat, e.speed, e.revision) == (121.56, 29.88, 3.5, 2)
    assert e.event_id == "urn:ngsi-ld:Vehicle:1@2026-05-01T08:00:10.000Z"
    again = replay(p, store, now=NOW)
    assert (again.applied, again.duplicate) == (0, 2)


def test_records_take_the_type_from_an_ngsi_ld_urn(tmp_path, store):
    p = tmp_path / "urn.csv"
    p.write_text(
        "id,time,lon,lat\n"
        "urn:ngsi-ld:Vehicle:1,2026-05-01T08:00:00Z,121.5,29.8\n"
        "urn:ngsi-ld:Person:2,2026-05-01T08:00:00Z,121.5,29.8\n"
        "plain-id,2026-05-01T08:00:00Z,121.5,29.8\n"
    )
    r = replay(p, store, now=NOW)
    assert (r.applied, r.malformed) == (2, 1)
    assert r.errors[0][0] == 4 and "missing field 'entity_type'" in r.errors[0][2]
    assert [e.type for e in store.query()] == ["person", "vehicle"]


def feature(e, xy=None):
    p = e["position"]
    a, b = (p["lon"], p["lat"]) if xy is None else fwd(xy, p["lon"], p["lat"])
    props = {k: v for k, v in e.items() if k not in ("position", "entity_id")}
    return {
        "type": "Feature",
        "id": e["entity_id"],
        "geometry": {"type": "Point", "coordinates": [a, b, p["alt"]]},
        "properties": props,
    }


@pytest.mark.parametrize("variant", ["geojson", "geojson-crs", "json-array", "geojsonl"])
def test_geojson_and_json_files_replay_to_truth(tmp_path, store, variant):
    delivered, evs = make_stream(12, n_ev=60)
    if variant == "geojson":
        p = tmp_path / "ev.geojson"
        doc = {"type": "FeatureCollection", "features": [feature(e) for e in delivered]}
        p.write_text(json.dumps(doc))
    elif variant == "geojson-crs":
        p = tmp_path / "ev.geojson"
        crs = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32651"}}
        feats = [feature(e, "EPSG:32651") for e in delivered]
        p.write_text(json.dumps({"type": "FeatureCollection", "crs": crs, "features": feats}))
    elif variant == "json-array":
        p = tmp_path / "ev.json"
        p.write_text(json.dumps(delivered, indent=1))
    else:
        p = tmp_path / "ev.geojsonl"
        p.write_text("\n".join(json.dumps(feature(e)) for e in delivered))
    r = replay(p, store, now=NOW)
    assert (r.malformed, r.events) == (0, len(delivered))
    assert r.duplicate == truth_outcomes(delivered).count("duplicate")
    check_states(store, evs, approx=variant == "geojson-crs")


def test_ndjson_bom_crlf_blank_and_bad_lines(tmp_path, store):
    delivered, evs = make_stream(13, n_ev=40)
    lines = [json.dumps(e) for e in delivered]
    lines.insert(3, "")
    lines.insert(5, '{"event_id": "x1", "entity_id": "v"')
    lines.insert(7, json.dumps({**delivered[0], "event_id": "x2", "entity_type": "ufo"}))
    p = tmp_path / "ev.ndjson"
    p.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    r = replay(p, store, now=NOW)
    assert (r.events, r.malformed) == (len(delivered), 2)
    assert [(ln, reason[:20]) for ln, _, reason in r.errors] == [
        (6, "not valid JSON: Expe"),
        (8, "unknown entity_type "),
    ]
    check_states(store, evs)


@pytest.mark.parametrize("name", ["e.ndjson", "e.csv", "e.geojson", "e.json", "noext"])
def test_empty_files_replay_nothing(tmp_path, store, name):
    p = tmp_path / name
    p.write_bytes(b"" if name != "e.csv" else b"\xef\xbb\xbf\r\n")
    r = replay(p, store, now=NOW)
    assert (r.events, r.malformed, store.count()) == (0, 0, 0)


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("a.csv", "who,when\r\nv1,2026-05-01T08:00:00Z\r\n", "has no entity_id / observed_at"),
        ("b.csv", "entity_id,entity_type,time,lon,lon\n", "repeats a column"),
        ("c.csv", b"entity_id,entity_type,time\n\xff\xfe,vehicle,x\n", "not UTF-8"),
        ("d.geojson", '{"type": "FeatureCollection", "features": [', "not valid GeoJSON"),
        ("e.geojson", '{"type": "FeatureCollection"}', "no features array"),
        ("f.geojson", '{"type": "FeatureCollection", "crs": 5, "features": []}', "crs member"),
    ],
)
def test_unreadable_files_name_the_file(tmp_path, store, name, content, reason):
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(InputError) as info:
        replay(p, store, now=NOW)
    assert reason in str(info.value) and name in str(info.value)
    with pytest.raises(InputError, match="cannot read the event file"):
        replay(tmp_path, store)
    with pytest.raises(ParameterError, match="format must be one of"):
        replay(p, store, fmt="xml")


def test_replay_paced_at_speed_10(tmp_path, store):
    p = tmp_path / "ev.csv"
    p.write_text(
        "entity_id,entity_type,observed_at,lon,lat\n"
        + "".join(f"v1,vehicle,2026-05-01T08:00:{s:02d}Z,121.5,29.8\n" for s in (0, 10, 20, 50))
    )
    clock, sleeps = [0.0], []

    def sleep(s):
        sleeps.append(round(s, 6))
        clock[0] += s

    r = replay(p, store, speed=10, now=NOW, sleep=sleep, clock=lambda: clock[0])
    assert sleeps == [1.0, 1.0, 3.0] and r.applied == 4


# ----------------------------------------------------------------------------- CLI
def cli(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in r.output
    return r


def test_cli_replay_state_and_exports(tmp_path):
    delivered, evs = make_stream(21, n_ev=80)
    src = tmp_path / "ev.csv"
    header = [*COLS[:4], "x", "y", "z", *COLS[7:]]
    src.write_text(csv_text(delivered, header, xy="EPSG:32651"))
    db = tmp_path / "live.sqlite"
    r = cli("sync", "replay", src, "--db", db, "--crs", "EPSG:32651", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert (rep["format"], rep["events"], rep["malformed"]) == ("csv", len(delivered), 0)
    assert rep["applied"] == truth_outcomes(delivered).count("applied")
    with SQLiteStore(db) as s:
        check_states(s, evs, approx=True)
    eid = sorted(truth_states(evs))[0]
    t = T0 + 1800 * S
    then = truth_states(evs, at=t)[eid]
    for at in (format_time(t), f"{t / S:.3f}", str(t), "2026-05-01T16:30:00+08:00"):
        r = cli("sync", "state", eid, "--db", db, "--at", at)
        assert r.exit_code == 0, r.output
        got = json.loads(r.output)
        assert (got["event_id"], got["status"]) == (then["event_id"], then["status"])
    r = cli("sync", "state", eid, "--db", db, "--format", "ngsi-ld-keyvalues", "--history")
    kv = json.loads(r.output)
    assert kv["id"] == eid and kv["location"]["type"] == "Point" and kv["@context"] == CTX
    mine = {e["event_id"] for e in evs if e["entity_id"] == eid}
    assert {h["event_id"] for h in kv["history"]} == mine
    # CZML and GeoJSON files from the CLI
    out = tmp_path / "live.czml"
    r = cli("sync", "export-czml", "--db", db, out, "--types", "vehicle,person", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc[0]["id"] == "document" and doc[0]["version"] == "1.0"
    want = sorted(e for e, v in truth_states(evs).items() if v["entity_type"] in TYPES[:2])
    assert sorted(p["id"] for p in doc[1:]) == want == sorted(want)
    assert json.loads(r.output)["entities"] == len(want)
    gj = tmp_path / "snap.geojson"
    r = cli("sync", "export-geojson", "--db", db, gj, "--at", format_time(t), "--json")
    assert r.exit_code == 0 and json.loads(r.output)["features"] == len(truth_states(evs, at=t))
    box = (121.5, 29.8, 121.55, 29.85)
    r = cli("sync", "export-geojson", "--db", db, gj, "--bbox", ",".join(map(str, box)))
    inside = [
        k
        for k, v in truth_states(evs).items()
        if box[0] <= v["position"]["lon"] <= box[2] and box[1] <= v["position"]["lat"] <= box[3]
    ]
    assert r.exit_code == 0 and sorted(
        f["id"] for f in json.loads(gj.read_text())["features"]
    ) == sorted(inside)


def test_cli_errors_are_one_line_exit_2(tmp_path):
    db = tmp_path / "live.sqlite"
    good = tmp_path / "ok.ndjson"
    good.write_text(json.dumps(ev(1, 0)) + "\n")
    assert cli("sync", "replay", good, "--db", db).exit_code == 0
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("a,b\n1,2\n")
    junk = tmp_path / "junk.ndjson"
    junk.write_text("hello\n{oops\n")
    cases = [
        (["sync", "replay", tmp_path / "missing.ndjson", "--db", db], "missing.ndjson"),
        (["sync", "replay", bad_csv, "--db", db], "bad.csv: the CSV header has no"),
        (["sync", "replay", junk, "--db", db], "junk.ndjson: no valid event in 2 records"),
        (["sync", "replay", good, "--db", db, "--speed", "0"], "--speed must be > 0"),
        (["sync", "replay", bad_csv, "--db", db, "--crs", "EPSG:1"], "bad.csv"),
        (["sync", "state", "urn:x", "--db", db], "no entity 'urn:x'"),
        (["sync", "state", "urn:x", "--db", tmp_path / "none.sqlite"], "no such store file"),
        (
            ["sync", "state", "urn:ngsi-ld:Vehicle:1", "--db", db, "--at", "2026-05-01T08:00"],
            "has no time zone",
        ),
        (
            ["sync", "state", "urn:ngsi-ld:Vehicle:1", "--db", db, "--at", "noon"],
            "is not an ISO 8601 time",
        ),
        (
            ["sync", "export-czml", "--db", db, tmp_path / "x.czml", "--types", "ufo"],
            "unknown entity types ['ufo']",
        ),
        (
            ["sync", "export-geojson", "--db", db, tmp_path / "x.geojson", "--at", "x"],
            "is not an ISO 8601 time",
        ),
        (["sync", "indicators", "--db", db, "--t0", "then"], "is not an ISO 8601 time"),
        (
            ["sync", "export-geojson", "--db", db, tmp_path / "x.geojson", "--bbox", "1,2"],
            "bbox must be",
        ),
    ]
    for args, msg in cases:
        r = cli(*args)
        assert r.exit_code == 2, (args, r.output)
        assert msg in r.output, (args, r.output)
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("twin: error:"), r.output
    r = cli("sync", "state", "urn:ngsi-ld:Vehicle:1", "--db", db, "--at", "1777622400")
    assert r.exit_code == 0 and json.loads(r.output)["event_id"] == "e1"
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    r = cli("sync", "replay", empty, "--db", db)
    assert r.exit_code == 0 and r.output.startswith("0 events")
    for sub in ("replay", "state", "serve", "export-czml", "export-geojson", "indicators"):
        h = cli("sync", sub, "--help")
        assert h.exit_code == 0 and "Example" in h.output


def test_cli_replay_from_standard_input(tmp_path):
    db = tmp_path / "live.sqlite"
    nd = "\n".join(json.dumps(ev(i, i, typ="Vehicle")) for i in range(3)) + "\n"
    r = CliRunner().invoke(main, ["sync", "replay", "-", "--db", str(db), "--json"], input=nd)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["applied"] == 3
    text = "entity_id,type,time,lon,lat\nurn:ngsi-ld:Vehicle:1,vehicle,1777622410,121.5,29.8\n"
    args = ["sync", "replay", "-", "--db", str(db), "--format", "csv", "--json"]
    r = CliRunner().invoke(main, args, input=text)
    assert r.exit_code == 0 and json.loads(r.output)["applied"] == 1, r.output
    with SQLiteStore(db) as s:
        assert s.state("urn:ngsi-ld:Vehicle:1").revision == 4


# ----------------------------------------------------------------------------- HTTP
ADMIN, TRAFFIC, VIEWER = "admin-token-0001", "traffic-token-01", "viewer-token-001"
TOKENS = {
    ADMIN: {"name": "ops", "scopes": {"write": "*", "read": True}},
    TRAFFIC: {"name": "traffic", "scopes": {"write": ["vehicle"], "read": False}},
    VIEWER: {"name": "viewer", "scopes": {"read": True}},
}


def H(tok, **more):
    return {"Authorization": f"Bearer {tok}", **more}


@pytest.fixture
def client(store):
    from fastapi.testclient import TestClient

    from twin.sync.server import create_app

    return TestClient(create_app(store, tokens=TOKENS, now=NOW))


def test_http_ingest_forms_and_reads_against_truth(client, store):
    delivered, evs = make_stream(31, n_ev=90)
    # the same stream in three body forms: JSON array, NDJSON, GeoJSON FeatureCollection
    a, b, c = delivered[:30], delivered[30:60], delivered[60:]
    outs = client.post("/events", json=a, headers=H(ADMIN)).json()["outcomes"]
    nd = "\r\n".join(json.dumps(e) for e in b).encode()
    r = client.post(
        "/events", content=nd, headers=H(ADMIN, **{"Content-Type": "application/x-ndjson"})
    )
    outs += r.json()["outcomes"]
    fc = {"type": "FeatureCollection", "features": [feature(e) for e in c]}
    outs += client.post("/events", json=fc, headers=H(ADMIN)).json()["outcomes"]
    assert [o["result"] for o in outs] == truth_outcomes(delivered)
    check_states(store, evs)
    want = truth_states(evs)
    eid = sorted(want)[1]
    t = T0 + 2000 * S
    then = truth_states(evs, at=t)
    for at in (format_time(t), str(t // S), str(t), "2026-05-01T16:33:20+08:00"):
        r = client.get(f"/entities/{eid}", params={"at": at}, headers=H(VIEWER))
        if eid in then:
            assert r.json()["event_id"] == then[eid]["event_id"], at
        else:
            assert r.status_code == 404
    # unescaped "+" in a hand-written URL
    r = client.get(f"/entities/{eid}?at=2026-05-01T16:33:20+08:00", headers=H(VIEWER))
    assert r.status_code in (200, 404) and r.status_code == (200 if eid in then else 404)
    e = client.get(f"/entities/{eid}", headers=H(VIEWER)).json()
    assert (e["event_id"], e["position"]["lon"]) == (
        want[eid]["event_id"],
        want[eid]["position"]["lon"],
    )
    ng = client.get(f"/entities/{eid}?format=ngsi-ld", headers=H(VIEWER)).json()
    assert ng["location"]["type"] == "GeoProperty" and ng["@context"] == CTX
    kv = client.get(f"/entities/{eid}?format=ngsi-ld&options=keyValues", headers=H(VIEWER)).json()
    assert kv["location"] == {
        "type": "Point",
        "coordinates": [want[eid]["position"][k] for k in ("lon", "lat", "alt")],
    }
    ld = client.get(f"/entities/{eid}", headers=H(VIEWER, Accept="application/ld+json")).json()
    assert ld == ng
    # queries: bbox, type, building, floor, status, time
    bbox = "121.52,29.82,121.58,29.88"
    got = client.get(f"/entities?bbox={bbox}&type=Vehicle,person", headers=H(VIEWER)).json()
    assert [x["id"] for x in got["entities"]] == [
        x.id for x in store.query(bbox=(121.52, 29.82, 121.58, 29.88), types=["vehicle", "person"])
    ]
    got = client.get("/entities?building=B1&floor=1", headers=H(VIEWER)).json()
    assert sorted(x["id"] for x in got["entities"]) == sorted(
        k
        for k, v in want.items()
        if v["attributes"]["building_id"] == "B1" and v["attributes"]["floor"] == 1
    )
    got = client.get(f"/entities?at={t // S}&status=busy", headers=H(VIEWER)).json()
    assert sorted(x["id"] for x in got["entities"]) == sorted(
        k for k, v in then.items() if v["status"] == "busy"
    )
    h = client.get(f"/entities/{eid}/history?t0={T0 // S}&t1={format_time(t)}", headers=H(VIEWER))
    mine = sorted(
        {x["event_id"]: x for x in evs if x["entity_id"] == eid and key(x)[0] <= t}.values(),
        key=key,
    )
    assert [r_["event_id"] for r_ in h.json()["history"]] == [x["event_id"] for x in mine]
    for bad in (
        "/entities?bbox=1,2,3",
        "/entities?type=ufo",
        "/entities?at=noon",
        f"/entities/{eid}?at=2026-05-01T08:00:00",
        f"/entities/{eid}?format=xml",
    ):
        r = client.get(bad, headers=H(VIEWER))
        assert r.status_code == 400 and r.json()["detail"], bad


def test_http_auth_scopes_and_limits(store, caplog):
    from fastapi.testclient import TestClient

    from twin.sync.server import create_app

    t = [0.0]
    tokens = {
        **TOKENS,
        "slow-token-0001": {"name": "slow", "scopes": {"write": "*"}, "rate": 5, "burst": 10},
    }
    client = TestClient(
        create_app(
            store, tokens=tokens, now=NOW, max_body=40_000, max_events=20, clock=lambda: t[0]
        )
    )
    body = [ev(1, 0), ev(2, 1, ent="urn:ngsi-ld:Asset:H1", typ="asset")]
    for hdr in ({}, {"Authorization": "Bearer nope-nope-nope"}, {"Authorization": ADMIN}):
        assert client.post("/events", json=body, headers=hdr).status_code == 401
        assert client.get("/entities", headers=hdr).status_code == 401
        assert client.get("/health", headers=hdr).status_code == 401
    assert store.count() == 0
    assert client.get("/entities", headers=H(TRAFFIC)).status_code == 403
    with caplog.at_level(logging.WARNING):
        r = client.post("/events", json=body, headers=H(TRAFFIC)).json()
    assert [o["result"] for o in r["outcomes"]] == ["applied", "rejected"]
    assert "may not write asset" in r["outcomes"][1]["reason"]
    assert any("may not write asset" in m for m in caplog.messages)
    r = client.post("/events", json=body, headers=H(VIEWER)).json()
    assert [o["result"] for o in r["outcomes"]] == ["rejected", "rejected"]
    assert store.state("urn:ngsi-ld:Asset:H1") is None
    # size limits: the body, the batch, one event
    big = [ev(10, 0, attributes={"blob": "x" * 15_000}) for _ in range(3)]
    assert client.post("/events", json=big, headers=H(ADMIN)).status_code == 413
    many = [ev(100 + i, i) for i in range(21)]
    assert client.post("/events", json=many, headers=H(ADMIN)).status_code == 413
    one = json.dumps(ev(11, 5, attributes={"blob": "y" * 17_000}))
    r = client.post("/events", content=one, headers=H(ADMIN)).json()
    assert r["outcomes"][0]["result"] == "rejected" and "limit 16384" in r["outcomes"][0]["reason"]
    # rate: a bucket of 10 events refilled at 5/s
    slow = H("slow-token-0001")
    assert (
        client.post("/events", json=[ev(20 + i, i) for i in range(10)], headers=slow).status_code
        == 200
    )
    r = client.post("/events", json=[ev(40, 20)], headers=slow)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    t[0] += 1.0
    assert client.post("/events", json=[ev(40, 20)], headers=slow).status_code == 200


def test_websocket_filtered_push_and_resume(client, store):
    delivered, _ = make_stream(41, n_ev=40)
    first, later = delivered[:20], delivered[20:]
    client.post("/events", json=first, headers=H(ADMIN))
    seen = []
    with client.websocket_connect("/ws?types=vehicle&since=0", headers=H(VIEWER)) as ws:
        hello = ws.receive_json()
        assert hello["cursor"] == 0 and hello["head"] == store.cursor()
        want_n = sum(1 for _, e in store.changes(0) if e.type == "vehicle")
        while len(seen) < want_n:
            seen += ws.receive_json()["deltas"]
    last = seen[-1]["cursor"] if seen else 0
    client.post("/events", json=later, headers=H(ADMIN))
    with client.websocket_connect(f"/ws?types=vehicle&since={last}&token={VIEWER}") as ws:
        ws.receive_json()
        want = [(c, e.event_id) for c, e in store.changes(0) if e.type == "vehicle"]
        while len(seen) < len(want):
            seen += ws.receive_json()["deltas"]
    assert [(d["cursor"], d["event_id"]) for d in seen] == want
    assert all(d["type"] == "vehicle" and d["revision"] >= 1 for d in seen)
    with pytest.raises(Exception):  # noqa: B017 - closed with 1008 before accepting
        with client.websocket_connect("/ws?token=wrong-token-000") as ws:
            ws.receive_json()


# ----------------------------------------------------------------------------- exports
def test_czml_and_geojson_content_against_truth(store, tmp_path):
    delivered, evs = make_stream(51, n_ev=80)
    parked = {
        **evs[0],
        "event_id": "parked-1",
        "entity_id": "urn:ngsi-ld:Asset:parked",
        "entity_type": "asset",
        "observed_at": format_time(T0 + 50 * S),
    }
    delivered, evs = [*delivered, parked], [*evs, parked]
    inc = "urn:ngsi-ld:Incident:I1"
    life = [("reported", 100), ("dispatched", 200), ("on_scene", 900), ("closed", 1000)]
    extra = [ev(900 + i, t, ent=inc, typ="incident", status=s) for i, (s, t) in enumerate(life)]
    outs = store.apply(delivered + extra, now=NOW)
    assert [o.result for o in outs[-4:]] == ["applied"] * 3 + ["rejected"]  # on_scene -> closed
    t0, t1 = T0 + 300 * S, T0 + 3000 * S
    info = export_czml(
        store, tmp_path / "a.czml", t0=format_time(t0), t1=datetime.fromtimestamp(t1 / S, UTC)
    )
    doc = json.loads((tmp_path / "a.czml").read_text())
    assert doc[0]["id"] == "document" and doc[0]["version"] == "1.0"
    assert doc[0]["clock"]["interval"] == f"{format_time(t0)}/{format_time(t1)}"
    distinct = {e["event_id"]: e for e in evs}.values()
    # an entity's samples: its state as of t0 (when observed before), then the window's
    by_ent: dict = {k: [v] for k, v in truth_states(evs, at=t0).items() if key(v)[0] < t0}
    for e in sorted(distinct, key=key):
        if t0 <= key(e)[0] <= t1:
            if key(e)[0] == t0:
                by_ent[e["entity_id"]] = []
            by_ent.setdefault(e["entity_id"], []).append(e)
    pk = {p["id"]: p for p in doc[1:]}
    # the incident was dispatched before the window: it is shown so from t0 on
    spans = pk.pop(inc)["properties"]["status"]
    assert [(x["string"], x["interval"]) for x in spans] == [
        ("dispatched", f"{format_time(t0)}/{format_time(T0 + 900 * S)}"),
        ("on_scene", f"{format_time(T0 + 900 * S)}/{format_time(t1)}"),
    ]
    assert sorted(pk) == sorted(by_ent) and info["entities"] == len(by_ent) + 1
    assert any(len(r) == 1 and key(r[0])[0] < t0 for r in by_ent.values())  # parked
    for eid, rows in by_ent.items():
        p = pk[eid]
        first = key(rows[0])[0]
        assert p["availability"] == f"{format_time(max(first, t0))}/{format_time(t1)}"
        samples = []
        for e in rows:
            q = e["position"]
            samples += [round((key(e)[0] - first) / 1e9, 3), q["lon"], q["lat"], q["alt"]]
        if len(rows) == 1:
            assert p["position"]["cartographicDegrees"] == samples[1:]
        else:
            assert p["position"]["epoch"] == format_time(first)
            assert p["position"]["cartographicDegrees"] == samples
        assert [s_["string"] for s_ in p["properties"]["status"]] == [
            s_
            for i, s_ in enumerate(e["status"] for e in rows)
            if i == 0 or rows[i - 1]["status"] != s_
        ]
    # the incident (positions without altitude: clamped), status intervals as lived
    export_czml(store, tmp_path / "i.czml", types=["incident"])
    (ip,) = json.loads((tmp_path / "i.czml").read_text())[1:]
    assert [s_["string"] for s_ in ip["properties"]["status"]] == [
        "reported",
        "dispatched",
        "on_scene",
    ]
    assert ip["properties"]["status"][1]["interval"] == (
        f"{format_time(T0 + 200 * S)}/{format_time(T0 + 900 * S)}"
    )
    assert ip["billboard"]["heightReference"] == "CLAMP_TO_GROUND"
    # GeoJSON snapshots: now and as of a time, by type
    t = T0 + 1500 * S
    n = export_geojson(store, tmp_path / "s.geojson", at=t, types=["person", "vehicle"])
    fc = json.loads((tmp_path / "s.geojson").read_text())
    then = {k: v for k, v in truth_states(evs, at=t).items() if v["entity_type"] in TYPES[:2]}
    assert n == len(then) == len(fc["features"]) and fc["type"] == "FeatureCollection"
    for f in fc["features"]:
        e = then[f["id"]]
        q = e["position"]
        assert f["geometry"] == {"type": "Point", "coordinates": [q["lon"], q["lat"], q["alt"]]}
        assert (f["properties"]["status"], f["properties"]["building"]) == (
            e["status"],
            e["attributes"]["building_id"],
        )
    # an output below a file: a clean error naming it, nothing left behind
    with pytest.raises(OutputError, match="x.geojson"):
        export_geojson(store, tmp_path / "s.geojson" / "x.geojson")
    with pytest.raises(OutputError, match="x.czml"):
        export_czml(store, tmp_path / "s.geojson" / "x.czml")


def test_open_store_paths(tmp_path):
    with open_store(tmp_path / "deep" / "dir" / "a.sqlite") as s:
        assert s.apply([ev(1, 0)], now=NOW)[0].result == "applied"
    with open_store(str(tmp_path / "deep" / "dir" / "a.sqlite")) as s:
        assert s.state("urn:ngsi-ld:Vehicle:1").revision == 1
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(InputError, match="junk.sqlite"):
        open_store(tmp_path / "junk.sqlite")


# ----------------------------------------------------------------------------- placement
def test_snapping_onto_the_mesh_by_ray_casting(small_city, tmp_path):
    """Positions asked to snap land on a known surface: a tilted plane with a
    10 m high box on it, in the model's local frame."""
    import trimesh

    from twin.mesh.footprints import read_footprints
    from twin.sync.placement import Placer
    from twin.terrain.dem import read_dem

    c = small_city
    base = Placer(c.city.frame, read_dem(c.dem), read_footprints(c.footprints))
    rng = np.random.default_rng(4)
    lon = 121.55 + rng.uniform(-0.001, 0.001, 400)
    lat = 29.87 + rng.uniform(-0.001, 0.001, 400)
    p0 = base.place(lon, lat)
    out = ~p0.indoor  # outdoors: the ray starts above the whole mesh
    lon, lat = lon[out][:200], lat[out][:200]
    p0 = base.place(lon, lat)
    assert len(lon) == 200
    x, y = p0.enu[:, 0], p0.enu[:, 1]
    lo, hi = min(x.min(), y.min()) - 50, max(x.max(), y.max()) + 50

    def plane(x, y):
        return 0.05 * x - 0.02 * y + 30.0

    g = np.array([[lo, lo], [hi, lo], [hi, hi], [lo, hi]], float)
    verts = np.column_stack([g, plane(g[:, 0], g[:, 1])])
    faces = [[0, 1, 2], [0, 2, 3]]
    box = trimesh.creation.box(extents=(20, 20, 10))
    cx, cy = np.median(x), np.median(y)
    box.apply_translation((cx, cy, plane(cx, cy) + 5.0))
    mesh = trimesh.util.concatenate([trimesh.Trimesh(verts, faces), box])
    path = tmp_path / "surface.ply"
    mesh.export(path)
    for m in ((mesh.vertices, mesh.faces), mesh, path):
        pl = Placer(
            c.city.frame,
            read_dem(c.dem),
            read_footprints(c.footprints),
            mesh=m,
            outdoor_offset=0.0,
        )
        p = pl.place(lon, lat, snap_to_mesh=True)
        on_box = (np.abs(x - cx) < 10) & (np.abs(y - cy) < 10)
        want = np.where(on_box, plane(cx, cy) + 10.0, plane(x, y))
        assert p.snapped.all()
        np.testing.assert_allclose(p.enu[:, 2], want, atol=2e-3)
        np.testing.assert_allclose(p.enu[:, :2], p0.enu[:, :2], atol=1e-3)
    # not asked: the terrain as before; asked for some: only those move
    np.testing.assert_allclose(pl.place(lon, lat).enu, p0.enu)
    some = np.arange(200) % 2 == 0
    q = pl.place(lon, lat, snap_to_mesh=some)
    assert (q.snapped == some).all()
    np.testing.assert_allclose(q.enu[~some], p0.enu[~some])
    # events ask with attributes.snap
    from twin.sync.model import parse_event

    evs = [
        parse_event(
            ev(
                i,
                i,
                position={"lon": lon[i], "lat": lat[i]},
                attributes={"snap": "mesh"} if i % 2 else None,
            ),
            now=NOW,
        )
        for i in range(6)
    ]
    pl.place_events(evs)
    for i, e in enumerate(evs):
        z = want[i] if i % 2 else p0.enu[i, 2]
        assert e.z == pytest.approx(z, abs=2e-3)
    with pytest.raises(ParameterError, match="needs a Placer with a mesh"):
        base.place(lon, lat, snap_to_mesh=True)
    bad = tmp_path / "bad.ply"
    bad.write_text("not a mesh")
    with pytest.raises(InputError, match="bad.ply"):
        Placer(c.city.frame, mesh=bad)


@pytest.mark.slow
def test_mqtt_payload_forms(mosquitto, store):
    """Over a real broker: an NGSI-LD notification, a GeoJSON FeatureCollection and a
    UTM position go the same way as over HTTP, one outcome per event."""
    import queue
    import time

    import paho.mqtt.client as mqtt

    from twin.sync.ingest import Ingestor
    from twin.sync.mqtt import MQTTSource

    src = MQTTSource("127.0.0.1", mosquitto, "city/in")
    src.start(Ingestor(store, now=NOW))
    got: queue.Queue = queue.Queue()
    clients = []
    for i, cb in enumerate((lambda c, u, m: got.put(json.loads(m.payload)), None)):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"surface-{i}-{time.time()}")
        if cb is not None:
            c.on_message = cb
        c.connect("127.0.0.1", mosquitto)
        c.loop_start()
        clients.append(c)
    sub, pub = clients
    sub.subscribe("city/in/outcomes", qos=1)
    time.sleep(0.2)
    x, y = fwd("EPSG:32651", LON, LAT)
    note = {
        "type": "Notification",
        "notifiedAt": "2026-05-01T08:00:30Z",
        "data": [{"id": "urn:ngsi-ld:Vehicle:n1", "type": "Vehicle", "speed": 2.0}],
    }
    fc = {
        "type": "FeatureCollection",
        "features": [
            feature(
                {
                    **ev(2, 5, ent="urn:ngsi-ld:Person:f1", typ="person"),
                    "position": {"lon": LON, "lat": LAT, "alt": 3.0},
                }
            )
        ],
    }
    utm = ev(
        3,
        6,
        ent="urn:ngsi-ld:Asset:u1",
        typ="asset",
        position={"x": x, "y": y, "crs": "EPSG:32651"},
    )
    far = ev(
        4,
        6,
        ent="urn:ngsi-ld:Asset:u2",
        typ="asset",
        position={"x": x + 1e6, "y": y, "crs": "EPSG:32651"},
    )
    for m in (note, fc, [utm, far]):
        pub.publish("city/in", json.dumps(m), qos=1).wait_for_publish(5)
    outs = [got.get(timeout=10)["outcomes"] for _ in range(3)]
    assert [[o["result"] for o in m] for m in outs] == [
        ["applied"],
        ["applied"],
        ["applied", "rejected"],
    ]
    assert "outside the area of use" in outs[2][1]["reason"]
    assert store.state("urn:ngsi-ld:Vehicle:n1").observed_at == "2026-05-01T08:00:30.000Z"
    assert store.state("urn:ngsi-ld:Person:f1").alt == 3.0
    assert store.state("urn:ngsi-ld:Asset:u1").lon == pytest.approx(LON, abs=1e-8)
    for c in clients:
        c.loop_stop()
        c.disconnect()
    src.stop()


def test_cli_export_default_output_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "city.sqlite"
    with SQLiteStore(db) as s:
        s.apply([ev(1, 0), ev(2, 5)], now=NOW)
    r = cli("sync", "export-czml", "--db", db)
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "city.czml").read_text())[1]["id"] == "urn:ngsi-ld:Vehicle:1"
    r = cli("sync", "export-geojson", "--db", db, "-o", tmp_path / "snap.geojson", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["features"] == 1
    r = cli("sync", "export-geojson", "--db", db, "a.geojson", "-o", "b.geojson")
    assert r.exit_code == 2 and "two output files" in r.output


@pytest.mark.slow
def test_cli_serve_as_the_issue_writes_it(tmp_path):
    """``twin sync serve --db F`` with no token file: a one-run admin token is printed,
    and every endpoint needs it."""
    import os
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    from twin.sync._local import free_port

    port = free_port()
    db = tmp_path / "live.sqlite"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("TWIN_SYNC_TOKENS", None)
    err = open(tmp_path / "serve.log", "w+b")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "twin.cli", "sync", "serve", "--db", str(db), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=err,
        env=env,
    )
    try:
        token = None
        base = f"http://127.0.0.1:{port}"
        t_end = time.monotonic() + 60
        while time.monotonic() < t_end:
            text = (tmp_path / "serve.log").read_text()
            if token is None and "admin token (read and write) is " in text:
                token = text.split("admin token (read and write) is ")[1].split()[0]
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
            except urllib.error.HTTPError as exc:
                assert exc.code == 401  # up, and refusing without a token
                break
            except OSError:
                time.sleep(0.2)
        assert token, (tmp_path / "serve.log").read_text()

        def call(path, body=None):
            req = urllib.request.Request(
                base + path,
                data=None if body is None else json.dumps(body).encode(),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            return json.loads(urllib.request.urlopen(req, timeout=10).read())

        out = call("/events", [ev(1, 0), ev(2, 1, typ="Vehicle")])
        assert [o["result"] for o in out["outcomes"]] == ["applied", "applied"]
        assert call("/entities/urn:ngsi-ld:Vehicle:1")["revision"] == 2
    finally:
        proc.terminate()
        proc.wait(20)
        err.close()


# ----------------------------------------------------------------------------- fuzz
_KEYS = [
    "event_id",
    "entity_id",
    "entity_type",
    "observed_at",
    "position",
    "crs",
    "type",
    "id",
    "location",
    "properties",
    "geometry",
    "observedAt",
    "status",
    "speed",
    "attributes",
    "expected_revision",
    "dateObserved",
    "lon",
    "lat",
    "x",
    "y",
    "coordinates",
    "value",
    "object",
    "data",
    "notifiedAt",
]
_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(),
    st.text(max_size=8),
    st.sampled_from(
        [
            "EPSG:32651",
            "EPSG:4978",
            "Point",
            "Feature",
            "Vehicle",
            "Notification",
            "2026-05-01T08:00:00Z",
            "urn:ngsi-ld:Vehicle:1",
            "Property",
            "Relationship",
        ]
    ),
)
_JSON = st.recursive(
    _SCALAR,
    lambda c: st.one_of(
        st.lists(c, max_size=3), st.dictionaries(st.sampled_from(_KEYS), c, max_size=5)
    ),
    max_leaves=15,
)
_BASES = [
    ev(1, 0),
    {
        "id": "urn:ngsi-ld:Vehicle:1",
        "type": "Vehicle",
        "observedAt": "2026-05-01T08:00:00Z",
        "location": {"type": "Point", "coordinates": [LON, LAT]},
    },
    {
        "type": "Feature",
        "id": "urn:ngsi-ld:Vehicle:1",
        "properties": {"time": 1777622400},
        "geometry": {"type": "Point", "coordinates": [LON, LAT]},
    },
]


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from(_BASES),
    over=st.dictionaries(st.sampled_from(_KEYS), _JSON, max_size=3),
    arg=_JSON,
)
def test_any_json_is_an_event_or_a_reason(base, over, arg):
    """Whatever JSON arrives (near-valid events of every form, odd types anywhere),
    validation gives an Event or an EventError, never another exception."""
    from twin.sync.model import event_from_record, parse_position
    from twin.sync.server import split_body

    obj = {**base, **over}
    for f in (
        lambda: parse_event(obj, now=NOW),
        lambda: event_from_record(obj, now=NOW, cells=True),
        lambda: parse_position(arg, obj.get("crs")),
        lambda: parse_time_arg(arg),
    ):
        try:
            f()
        except EventError:
            pass
    try:
        body = json.dumps(obj).encode()
    except ValueError:
        return
    for raw in split_body(body, None):
        try:
            parse_event(raw, now=NOW)
        except EventError:
            pass


def test_fuzz_findings():
    # an attribute whose "type" is not a string; an epoch beyond int64
    bad = {**_BASES[1], "brand": {"type": [], "value": 1}}
    assert parse_event(bad, now=NOW).attributes == {"brand": 1}
    with pytest.raises(EventError, match="out of range"):
        parse_time_arg("9" * 30)


def test_ids_with_control_characters_are_rejected(store):
    outs = store.apply(
        [ev(1, 0, event_id="a\x00b"), ev(2, 0, entity_id="v\nw"), ev(3, 0, event_id="é🚗-1")],
        now=NOW,
    )
    assert [o.result for o in outs] == ["rejected", "rejected", "applied"]
    assert "contains control or unprintable characters" in outs[0].reason
    assert store.apply([ev(3, 0, event_id="é🚗-1")], now=NOW)[0].result == "duplicate"


def test_store_refuses_an_event_object_with_a_nul_id(store):
    """SQLite's JSON functions and PostgreSQL's text cannot hold a NUL: such an id is
    rejected (not stored and later mistaken), the rest of the batch applies."""
    from twin.sync.model import Event

    e = Event("n\x00ul", "urn:ngsi-ld:Vehicle:1", "vehicle", T0)
    assert store.apply([e], now=NOW)[0].result == "rejected"
    out = store.apply([e, Event("ok", "urn:ngsi-ld:Vehicle:1", "vehicle", T0)], now=NOW)
    assert [o.result for o in out] == ["rejected", "applied"]
    assert "NUL" in out[0].reason


# ----------------------------------------------------------------------------- indicators
def test_indicators_by_district_against_hand_counts(store):
    """Counts, open incidents and response timers per district, by hand."""
    batch = []
    for i in range(5):  # five people, three in the north, two in the south
        d = "north" if i < 3 else "south"
        batch.append(
            ev(i, i, ent=f"urn:ngsi-ld:Person:{i}", typ="person", attributes={"district": d})
        )
    batch.append(
        ev(10, 30, ent="urn:ngsi-ld:Person:0", typ="person", attributes={"district": "south"})
    )  # person 0 moves south
    inc = [  # (id, district, [(state, t)])
        ("a", "north", [("reported", 0), ("dispatched", 60), ("on_scene", 300)]),
        ("b", "north", [("reported", 10), ("dispatched", 130)]),
        (
            "c",
            "south",
            [
                ("reported", 20),
                ("dispatched", 50),
                ("on_scene", 110),
                ("resolved", 200),
                ("closed", 260),
            ],
        ),
    ]
    k = 100
    for name, dist, steps in inc:
        for st_, t in steps:
            k += 1
            batch.append(
                ev(
                    k,
                    t,
                    ent=f"urn:ngsi-ld:Incident:{name}",
                    typ="incident",
                    status=st_,
                    attributes={"district": dist},
                )
            )
    assert {o.result for o in store.apply(batch, now=NOW)} == {"applied"}
    rows = {(r["cell"], r["type"]): r for r in store.indicators()}
    assert rows[("district/north", "person")]["count"] == 2
    assert rows[("district/south", "person")]["count"] == 3
    n, s_ = rows[("district/north", "incident")], rows[("district/south", "incident")]
    assert (n["count"], n["open"], s_["count"], s_["open"]) == (2, 2, 1, 0)
    assert (n["dispatched"], n["mean_dispatch_s"]) == (2, (60 + 120) / 2)
    assert (n["on_scene"], n["mean_response_s"]) == (1, 300.0)
    assert (s_["mean_dispatch_s"], s_["mean_response_s"]) == (30.0, 90.0)
    # a window (whole 60 s buckets): only what happened in it, from 08:02:00 on
    w = {
        (r["cell"], r["type"]): r
        for r in store.indicators("2026-05-01T08:02:00Z", "2026-05-01T08:10:00Z")
    }
    assert w[("district/north", "incident")]["dispatched"] == 1  # b at 130 s
    assert w[("district/north", "incident")]["mean_dispatch_s"] == 120.0
    assert w[("district/north", "incident")]["mean_response_s"] == 300.0  # a at 300 s
    assert ("district/south", "incident") in w and w[("district/south", "incident")][
        "dispatched"
    ] == 0


def test_store_as_of_beyond_int64_is_a_clean_error(store):
    store.apply([ev(1, 0)], now=NOW)
    with pytest.raises(ParameterError):
        store.state("urn:ngsi-ld:Vehicle:404", at=10**30)


def test_store_read_times_in_epoch_units_and_bad_boxes(store):
    """Read times as numbers are epoch s, ms, µs or ns by magnitude (as the CLI and the
    HTTP API read them); a bbox with min > max or a NaN is a ParameterError."""
    store.apply([ev(1, 0)], now=NOW)
    eid = "urn:ngsi-ld:Vehicle:1"
    ns = store.state(eid).observed_ns
    for at in (ns, ns // 10**3, ns // 10**6, ns / 1e9, ns // 10**9):
        assert store.state(eid, at=at) is not None, at
    assert store.state(eid, at=ns // 10**9 - 1) is None
    for bad in ((1, 2, 0, 3), (0, 0, float("nan"), 1)):
        with pytest.raises(ParameterError):
            store.query(bbox=bad)
