"""Indicators kept incrementally on apply == counts computed by brute force from the
events (the applied ones, in the order the twin applied them)."""

from __future__ import annotations

import json
import math
import random
import uuid
from collections import defaultdict

import pytest

from tests.sync.test_store import BACKENDS, T0, S, open_backend
from twin.errors import ParameterError
from twin.sync.model import Event
from twin.sync.store import SQLiteStore

CELL = 0.01
BUCKET = 60
OPEN = {"reported", "dispatched", "on_scene"}
LIFECYCLE = ["reported", "dispatched", "on_scene", "resolved", "closed"]


def mk(eid, ent, typ, t_ns, lon, lat, status, attrs=None):
    a = attrs or {}
    return Event(
        eid,
        ent,
        typ,
        t_ns,
        "test",
        lon,
        lat,
        5.0,
        None,
        None,
        status,
        a,
        None,
        json.dumps(a, separators=(",", ":"), sort_keys=True),
    )


def city_events(seed=3, n_people=40, n_vehicles=15, n_incidents=12, minutes=12):
    """Random walks over a 4 x 3 block of grid cells, some people in a district,
    incidents walking their lifecycle, 5 % late and 1 % duplicated deliveries."""
    rnd = random.Random(seed)
    evs = []
    span = minutes * 60 * S
    for typ, n in (("person", n_people), ("vehicle", n_vehicles)):
        for i in range(n):
            lon, lat = 121.50 + rnd.random() * 0.04, 29.85 + rnd.random() * 0.03
            district = {"district": "Harbour"} if typ == "person" and i % 7 == 0 else None
            t = rnd.randrange(0, 30 * S)
            k = 0
            while t < span:
                lon = min(121.5399, max(121.5, lon + rnd.uniform(-0.003, 0.003)))
                lat = min(29.8799, max(29.85, lat + rnd.uniform(-0.003, 0.003)))
                status = rnd.choice(["moving", "idle"])
                ent = f"urn:ngsi-ld:{typ.capitalize()}:{typ[0].upper()}{i:03d}"
                evs.append(mk(f"{ent}-{k}", ent, typ, T0 + t, lon, lat, status, district))
                k += 1
                t += rnd.randrange(5 * S, 40 * S)
    for i in range(n_incidents):
        ent = f"urn:ngsi-ld:Incident:I{i:03d}"
        lon, lat = 121.5 + rnd.random() * 0.04, 29.85 + rnd.random() * 0.03
        t = rnd.randrange(0, span // 2)
        for k, st in enumerate(LIFECYCLE[: rnd.randrange(1, 6)]):
            attrs = {"responder": "urn:ngsi-ld:Vehicle:V001"} if st == "dispatched" else None
            evs.append(mk(f"{ent}-{k}", ent, "incident", T0 + t, lon, lat, st, attrs))
            t += rnd.randrange(20 * S, 200 * S)
    evs.sort(key=lambda e: (e.observed_ns, e.event_id))
    delivered = list(evs)
    for _ in range(len(evs) // 20):  # late: delivered later than their time
        i = rnd.randrange(len(delivered))
        delivered.insert(min(len(delivered), i + rnd.randrange(5, 200)), delivered.pop(i))
    for e in rnd.sample(evs, len(evs) // 100):  # duplicates
        delivered.insert(rnd.randrange(len(delivered)), e)
    return delivered


def cell_of(state) -> str:
    d = state["attributes"].get("district")
    if isinstance(d, str):
        return f"district/{d}"
    return f"grid/{math.floor(state['lon'] / CELL)}/{math.floor(state['lat'] / CELL)}"


def brute_force(applied: list[Event], t0: int, t1: int) -> dict:
    """Per (cell, type): count/open at the end of t1's bucket, events in the window,
    dispatch and response times, from the applied events alone."""
    bns = BUCKET * S
    b0, b1 = t0 // bns, t1 // bns
    end = (b1 + 1) * bns
    state: dict[str, dict] = {}
    reported: dict[str, int] = {}
    out = defaultdict(lambda: defaultdict(float))
    for e in applied:  # in the order applied (per entity: increasing time)
        st = state.setdefault(e.entity_id, {"attributes": {}, "type": e.entity_type})
        st["lon"], st["lat"], st["status"] = e.lon, e.lat, e.status
        st["attributes"] = {**st["attributes"], **e.attributes}
        b = e.observed_ns // bns
        if b <= b1:
            st["at_end"] = (cell_of(st), st["status"])
        if b0 <= b <= b1:
            acc = out[(cell_of(st), e.entity_type)]
            acc["events"] += 1
            if e.entity_type == "incident" and e.status == "dispatched":
                acc["dispatched"] += 1
                acc["sum_dispatch"] += (e.observed_ns - reported[e.entity_id]) / 1e9
            if e.entity_type == "incident" and e.status == "on_scene":
                acc["on_scene"] += 1
                acc["sum_response"] += (e.observed_ns - reported[e.entity_id]) / 1e9
        if e.entity_type == "incident" and e.status == "reported":
            reported[e.entity_id] = e.observed_ns
    for st in state.values():
        if "at_end" in st:
            cell, status = st["at_end"]
            acc = out[(cell, st["type"])]
            acc["count"] += 1
            acc["open"] += st["type"] == "incident" and status in OPEN
    assert end > t1
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_indicators_equal_brute_force(backend, tmp_path, request):
    delivered = city_events()
    name = "ind" + uuid.uuid4().hex[:10]
    s = open_backend(backend, name, tmp=tmp_path, request=request, cell_deg=CELL, bucket_s=BUCKET)
    try:
        applied = []
        for j in range(0, len(delivered), 50):
            batch = delivered[j : j + 50]
            for e, o in zip(batch, s.apply(batch), strict=True):
                if o.result == "applied":
                    applied.append(e)
        assert len(applied) < len(delivered)  # some were late or duplicated
        windows = [
            (T0, T0 + 12 * 60 * S),
            (T0 + 120 * S, T0 + 299 * S),
            (T0 + 300 * S, T0 + 300 * S),
            (T0 + 9 * 60 * S, T0 + 10 * 60 * S + 5 * S),
        ]
        for t0, t1 in windows:
            want = brute_force(applied, t0, t1)
            got = {(d["cell"], d["type"]): d for d in s.indicators(t0, t1)}
            keys = {k for k, v in want.items() if v["count"] or v["events"]}
            assert set(got) == keys, (t0, t1)
            if t0 == T0:  # the whole run: every kind of number is exercised
                assert len({k[0] for k in keys}) > 6 and ("district/Harbour", "person") in keys
                assert sum(got[k]["dispatched"] for k in keys) > 3
                assert sum(got[k]["on_scene"] for k in keys) > 2
                assert sum(got[k]["open"] for k in keys) > 0
            for k in keys:
                w, g = want[k], got[k]
                assert g["count"] == w["count"] and g["open"] == w["open"], k
                assert g["events"] == w["events"], k
                n_buckets = t1 // (BUCKET * S) - t0 // (BUCKET * S) + 1
                assert g["rate_per_s"] == pytest.approx(w["events"] / (n_buckets * BUCKET))
                assert g["dispatched"] == w["dispatched"] and g["on_scene"] == w["on_scene"]
                if w["dispatched"]:
                    want_d = w["sum_dispatch"] / w["dispatched"]
                    assert g["mean_dispatch_s"] == pytest.approx(want_d)
                if w["on_scene"]:
                    want_r = w["sum_response"] / w["on_scene"]
                    assert g["mean_response_s"] == pytest.approx(want_r)
                if k[0].startswith("grid/"):
                    x0, y0, x1, y1 = g["bbox"]
                    assert x0 <= 121.54 and y0 <= 29.88 and x1 - x0 == pytest.approx(CELL)
                    if g["count"]:  # a cell of ~1.07 km² here
                        assert 0.9 < g["count"] / g["density_per_km2"] < 1.3
        # the open incidents and people now, filtered
        now = s.indicators(types="incident")
        assert {d["type"] for d in now} == {"incident"}
        n_open = sum(1 for e in s.query(types="incident") if e.status in OPEN)
        assert sum(d["open"] for d in now) == n_open
        assert sum(d["count"] for d in s.indicators(types=["person"])) == s.count("person")
        one = s.indicators(cells="district/Harbour")
        assert [d["cell"] for d in one] == ["district/Harbour"]
    finally:
        s.close()


def test_indicator_settings_stay_with_the_twin(tmp_path):
    s = SQLiteStore(tmp_path / "a.sqlite", cell_deg=0.005, bucket_s=10)
    s.close()
    s = SQLiteStore(tmp_path / "a.sqlite")
    assert (s.cell_deg, s.bucket_s) == (0.005, 10)
    s.close()
    with pytest.raises(ParameterError, match="cell_deg=0.005, not 0.01"):
        SQLiteStore(tmp_path / "a.sqlite", cell_deg=0.01)
    with pytest.raises(ParameterError, match="bucket_s must be > 0"):
        SQLiteStore(tmp_path / "b.sqlite", bucket_s=0)


def test_indicators_over_http_and_cli(tmp_path):
    from click.testing import CliRunner
    from fastapi.testclient import TestClient

    from twin.cli import main
    from twin.sync.server import create_app

    db = tmp_path / "live.sqlite"
    evs = city_events(seed=5, n_people=10, n_vehicles=4, n_incidents=4, minutes=4)
    with SQLiteStore(db, cell_deg=CELL, bucket_s=BUCKET) as s:
        s.apply(evs)
        want = s.indicators(T0 + 60 * S, T0 + 180 * S, types=["person", "incident"])
        tokens = {"reader-token-01": {"name": "r", "scopes": {"read": True}}}
        client = TestClient(create_app(s, tokens=tokens))
        h = {"Authorization": "Bearer reader-token-01"}
        q = "t0=2026-05-01T08:01:00Z&t1=2026-05-01T08:03:00Z&types=person,incident"
        r = client.get(f"/indicators?{q}", headers=h)
        assert r.status_code == 200
        body = r.json()
        assert body["indicators"] == want and (body["cell_deg"], body["bucket_s"]) == (CELL, 60)
        assert client.get(f"/indicators?{q}").status_code == 401
        assert client.get("/indicators?types=spaceship", headers=h).status_code == 400
    args = ["sync", "indicators", "--db", str(db), "--t0", "2026-05-01T08:01:00Z"]
    args += ["--t1", "2026-05-01T08:03:00Z", "--types", "person,incident"]
    r = CliRunner().invoke(main, [*args, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["indicators"] == want
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0 and want[0]["cell"] in r.output
    r = CliRunner().invoke(main, ["sync", "indicators", "--db", str(tmp_path / "none.sqlite")])
    assert r.exit_code == 2 and "no such store file" in r.output
