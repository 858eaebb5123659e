"""HTTP API and WebSocket push, through FastAPI's TestClient."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from twin.errors import InputError, ParameterError
from twin.sync.model import parse_time
from twin.sync.server import create_app, load_tokens
from twin.sync.store import SQLiteStore

NOW = parse_time("2026-05-02T00:00:00Z")
ADMIN, TRAFFIC, VIEWER = "admin-token-0001", "traffic-token-01", "viewer-token-001"
TOKENS = {
    ADMIN: {"name": "ops", "scopes": {"write": "*", "read": True}},
    TRAFFIC: {"name": "traffic", "scopes": {"write": ["vehicle"], "read": False}},
    VIEWER: {"name": "viewer", "scopes": {"read": True}},
}


def H(tok):
    return {"Authorization": f"Bearer {tok}"}


def ev(k, t, ent="V0001", typ="vehicle", lon=121.55, lat=29.87, **over):
    d = {
        "event_id": f"e{k}",
        "entity_id": f"urn:ngsi-ld:{typ.capitalize()}:{ent}",
        "entity_type": typ,
        "observed_at": f"2026-05-01T08:{t // 60:02d}:{t % 60:02d}.000Z",
        "source": "test",
        "position": {"lon": lon, "lat": lat, "alt": 10.0},
        "status": "moving",
    }
    d.update(over)
    return d


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(tmp_path / "api.sqlite")
    yield s
    s.close()


@pytest.fixture
def client(store):
    return TestClient(create_app(store, tokens=TOKENS, now=NOW))


def test_batch_outcomes_per_event(client):
    ok = [ev(1, 10), ev(2, 20), ev(3, 15), ev(1, 10)]  # 3 is late, the last a duplicate
    bad = [
        ev(4, 30, typ="spaceship"),
        ev(5, 30, observed_at="1970-01-01T00:00:00Z"),
        ev(6, 30, observed_at="2100-01-01T00:00:00Z"),
        {"event_id": "e7"},
        ev(8, 30, typ="incident", ent="I1", status="closed"),  # illegal first state
    ]
    r = client.post("/events", json=ok + bad, headers=H(ADMIN))
    assert r.status_code == 200
    body = r.json()
    res = [(o["event_id"], o["result"]) for o in body["outcomes"]]
    assert res[:4] == [("e1", "applied"), ("e2", "applied"), ("e3", "stale"), ("e1", "duplicate")]
    assert [o["result"] for o in body["outcomes"][4:]] == ["rejected"] * 5
    reasons = [o["reason"] for o in body["outcomes"][4:]]
    assert "unknown entity_type" in reasons[0]
    assert "before 2000" in reasons[1] and "future" in reasons[2]
    assert "missing field" in reasons[3] and "illegal incident transition" in reasons[4]
    assert body["counts"] == {"applied": 2, "stale": 1, "duplicate": 1, "rejected": 5}
    # state, time travel, history
    e = client.get("/entities/urn:ngsi-ld:Vehicle:V0001", headers=H(VIEWER)).json()
    assert e["revision"] == 2 and e["event_id"] == "e2"
    e = client.get(
        "/entities/urn:ngsi-ld:Vehicle:V0001?at=2026-05-01T08:00:16Z", headers=H(VIEWER)
    ).json()
    assert e["event_id"] == "e3"  # the late event is the state as of 08:00:16
    h = client.get(
        "/entities/urn:ngsi-ld:Vehicle:V0001/history?t0=2026-05-01T08:00:12Z", headers=H(VIEWER)
    ).json()["history"]
    assert [x["event_id"] for x in h] == ["e3", "e2"]
    ngsi = client.get(
        "/entities/urn:ngsi-ld:Vehicle:V0001?format=ngsi-ld", headers=H(VIEWER)
    ).json()
    assert ngsi["type"] == "Vehicle" and ngsi["revision"]["value"] == 2
    assert client.get("/entities/nope", headers=H(VIEWER)).status_code == 404


def test_ndjson_body_and_nan(client):
    lines = [json.dumps(ev(1, 1)), '{"event_id": "x", "position": {"lon": NaN}}', "{bad json"]
    r = client.post(
        "/events",
        content="\n".join(lines).encode(),
        headers={**H(ADMIN), "Content-Type": "application/x-ndjson"},
    )
    out = r.json()["outcomes"]
    assert [o["result"] for o in out] == ["applied", "rejected", "rejected"]
    assert "not valid JSON" in out[2]["reason"]


def test_auth_on_every_endpoint_and_scopes(client, caplog):
    for method, url in [
        ("get", "/health"),
        ("get", "/entities"),
        ("get", "/entities/x"),
        ("get", "/entities/x/history"),
        ("post", "/events"),
    ]:
        assert getattr(client, method)(url).status_code == 401
        assert getattr(client, method)(url, headers=H("wrong-token-xx")).status_code == 401
    with pytest.raises(WebSocketDisconnect) as exc:
        with client.websocket_connect("/ws") as ws:
            ws.receive_json()
    assert exc.value.code == 1008
    # a traffic feed may move vehicles, not hydrants; it may not read
    hydrant = ev(2, 5, typ="asset", ent="H1")
    with caplog.at_level(logging.WARNING, logger="twin.sync"):
        r = client.post("/events", json=[ev(1, 5), hydrant], headers=H(TRAFFIC))
    out = r.json()["outcomes"]
    assert out[0]["result"] == "applied"
    assert out[1]["result"] == "rejected" and "may not write asset" in out[1]["reason"]
    assert any("may not write asset" in m for m in caplog.messages)
    assert client.get("/entities", headers=H(TRAFFIC)).status_code == 403
    assert client.get("/entities/urn:ngsi-ld:Asset:H1", headers=H(VIEWER)).status_code == 404
    # a viewer writes nothing
    out = client.post("/events", json=[ev(3, 6)], headers=H(VIEWER)).json()["outcomes"]
    assert out[0]["result"] == "rejected"
    assert client.get("/health", headers=H(VIEWER)).json()["entities"] == 1


def test_size_and_rate_limits(store):
    clock = [0.0]
    toks = {ADMIN: {"name": "ops", "scopes": {"write": "*", "read": True}, "rate": 2, "burst": 3}}
    c = TestClient(
        create_app(store, tokens=toks, now=NOW, max_body=2000, max_events=3, clock=lambda: clock[0])
    )
    assert (
        c.post("/events", json=[ev(i, i) for i in range(30)], headers=H(ADMIN)).status_code == 413
    )
    assert c.post("/events", json=[ev(i, i) for i in range(4)], headers=H(ADMIN)).status_code == 413
    assert c.get("/health", headers=H(ADMIN)).status_code == 200  # 1 of 3
    assert c.post("/events", json=[ev(1, 1), ev(2, 2)], headers=H(ADMIN)).status_code == 200
    r = c.get("/health", headers=H(ADMIN))
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    clock[0] += 1.0  # refills 2
    assert c.get("/health", headers=H(ADMIN)).status_code == 200


def test_query_filters(client):
    batch = [
        ev(1, 1, ent="A", lon=121.50, attributes={"building_id": "B1", "floor": 2}),
        ev(2, 1, ent="B", lon=121.60),
        ev(3, 1, ent="P", typ="person", lon=121.55, status="walking"),
    ]
    client.post("/events", json=batch, headers=H(ADMIN))

    def ids(q):
        r = client.get("/entities" + q, headers=H(VIEWER))
        assert r.status_code == 200, r.text
        return [e["id"].rsplit(":", 1)[1] for e in r.json()["entities"]]

    assert ids("") == ["P", "A", "B"]
    assert ids("?bbox=121.49,29.8,121.56,29.9") == ["P", "A"]
    assert ids("?type=vehicle") == ["A", "B"]
    assert ids("?building=B1&floor=2") == ["A"]
    assert ids("?building=B1&floor=3") == []
    assert ids("?status=walking") == ["P"]
    assert ids("?at=2026-05-01T07:00:00Z") == []
    assert client.get("/entities?bbox=1,2,3", headers=H(VIEWER)).status_code == 400
    assert client.get("/entities?type=ufo", headers=H(VIEWER)).status_code == 400
    assert client.get("/entities/x?at=yesterday", headers=H(VIEWER)).status_code == 400


def test_websocket_push_and_resume(client, store):
    """Deltas arrive in order with revisions; a client that reconnects with its last
    cursor gets exactly what it missed, then live updates."""
    got = []
    with client.websocket_connect("/ws?types=vehicle", headers=H(VIEWER)) as ws:
        hello = ws.receive_json()
        assert hello["type"] == "hello"
        client.post(
            "/events", json=[ev(1, 1), ev(2, 2), ev(3, 1, ent="P", typ="person")], headers=H(ADMIN)
        )
        client.post("/events", json=[ev(4, 3, ent="V2"), ev(5, 4)], headers=H(ADMIN))
        for _ in range(2):
            m = ws.receive_json()
            assert m["type"] == "deltas"
            got += m["deltas"]
        last = m["cursor"]
    # each entity's revisions in order (within a batch, entities may interleave)
    assert _revs(got) == {"V0001": [1, 2, 3], "V2": [1]}
    # while disconnected: more events (in two batches, one stale, one person)
    client.post("/events", json=[ev(6, 5), ev(7, 2, ent="V2")], headers=H(ADMIN))
    client.post(
        "/events", json=[ev(8, 6, ent="V2"), ev(9, 6, ent="P", typ="person")], headers=H(ADMIN)
    )
    with client.websocket_connect(f"/ws?types=vehicle&since={last}&token={VIEWER}") as ws:
        assert ws.receive_json()["cursor"] == last
        missed = []
        while len(missed) < 2:
            missed += ws.receive_json()["deltas"]
        client.post("/events", json=[ev(10, 9)], headers=H(ADMIN))
        live = ws.receive_json()["deltas"]
    # e7 was stale (no state change, no delta); the person is filtered out
    assert sorted((d["id"][-5:], d["revision"], d["event_id"]) for d in missed) == [
        ("V0001", 4, "e6"),
        ("le:V2", 2, "e8"),
    ]
    assert [(d["event_id"], d["revision"]) for d in live] == [("e10", 5)]
    cursors = [d["cursor"] for d in got + missed + live]
    assert cursors == sorted(set(cursors))
    # everything pushed = the store's applied vehicle changes, in order
    all_changes = [(c, e.event_id) for c, e in store.changes(0) if e.type == "vehicle"]
    assert [(d["cursor"], d["event_id"]) for d in got + missed + live] == all_changes


def _revs(deltas):
    out = {}
    for d in deltas:
        out.setdefault(d["id"].rsplit(":", 1)[1], []).append(d["revision"])
    return out


def test_websocket_filters(client):
    with client.websocket_connect(
        "/ws?bbox=121.54,29.86,121.56,29.88&building=B1", headers=H(VIEWER)
    ) as ws:
        ws.receive_json()
        client.post(
            "/events",
            json=[
                ev(1, 1, ent="in", attributes={"building_id": "B1"}),
                ev(2, 1, ent="far", lon=121.7, attributes={"building_id": "B1"}),
                ev(3, 1, ent="other", attributes={"building_id": "B2"}),
            ],
            headers=H(ADMIN),
        )
        m = ws.receive_json()
    assert [d["id"][-2:] for d in m["deltas"]] == ["in"]
    with pytest.raises(WebSocketDisconnect):
        with client.websocket_connect("/ws?since=abc", headers=H(VIEWER)) as ws:
            ws.receive_json()


def test_token_files(tmp_path):
    p = tmp_path / "tokens.toml"
    p.write_text(
        '[admin-token-0001]\nname = "ops"\nscopes = { write = ["vehicle"], read = true }\n'
    )
    t = load_tokens(p)
    assert t[ADMIN].write == {"vehicle"} and t[ADMIN].read
    j = tmp_path / "tokens.json"
    j.write_text(json.dumps(TOKENS))
    assert set(load_tokens(j)) == set(TOKENS)
    j.write_text("{nope")
    with pytest.raises(InputError, match="tokens.json"):
        load_tokens(j)
    with pytest.raises(InputError, match="unknown entity types"):
        load_tokens({ADMIN: {"scopes": {"write": ["hydrant"]}}})
    with pytest.raises(InputError, match="8 characters"):
        load_tokens({"short": {"scopes": {}}})
    with pytest.raises(ParameterError, match="tokens"):
        create_app(None, tokens=None)


def test_api_places_raw_positions(small_city, placer, tmp_path):
    """POSTed lon/lat (no building attributes) are queryable by building and floor."""
    indoor = [e for e in small_city.events if e["source"] == "synth/indoor"][:50]
    raw = []
    for e in indoor:
        e = dict(e)
        e["attributes"] = {}
        raw.append(e)
    with SQLiteStore(tmp_path / "placed.sqlite") as store:
        c = TestClient(create_app(store, placer=placer, tokens=TOKENS, now=NOW))
        out = c.post("/events", json=raw, headers=H(ADMIN)).json()
        assert out["counts"]["rejected"] == 0
        last = {e["entity_id"]: e["attributes"] for e in indoor}
        for ent, a in last.items():
            r = c.get(
                f"/entities?building={a['building_id']}&floor={a['floor']}", headers=H(VIEWER)
            )
            assert ent in [x["id"] for x in r.json()["entities"]]
            got = c.get(f"/entities/{ent}", headers=H(VIEWER)).json()
            assert (got["building"], got["floor"]) == (a["building_id"], a["floor"])
            assert got["enu"] is not None


def test_pushes_from_several_threads_keep_cursor_order():
    """A batch published by another thread (the MQTT worker) and then one published
    from the event loop's own thread (an HTTP handler) reach a subscriber's queue in
    publication (cursor) order: the second must not overtake the first."""
    import asyncio
    import threading

    from twin.sync.server import _Subscriber

    async def run():
        sub = _Subscriber(None, None, None, 0, 100)
        t = threading.Thread(target=sub.offer, args=("first",))
        t.start()
        t.join()  # published (under the store lock) before the next batch
        sub.offer("second")
        return [await sub.queue.get(), await sub.queue.get()]

    assert asyncio.run(run()) == ["first", "second"]


def test_oversized_and_nan_events_rejected_one_by_one(client):
    """An oversized event (attributes over 16 KiB; an NDJSON line over 64 KiB) and NaN
    coordinates are rejected with reasons while the rest of the batch applies."""
    big_attrs = ev(2, 20, attributes={"blob": "x" * 20_000})
    nan = ev(3, 30)
    nan["position"]["lon"] = float("nan")
    huge_line = json.dumps(ev(4, 40, attributes={"blob": "y" * 70_000}))
    lines = [json.dumps(ev(1, 10)), json.dumps(big_attrs), json.dumps(nan), huge_line]
    lines.append(json.dumps(ev(5, 50)))
    r = client.post(
        "/events",
        content="\n".join(lines).encode(),
        headers={**H(ADMIN), "Content-Type": "application/x-ndjson"},
    )
    out = r.json()["outcomes"]
    assert [o["result"] for o in out] == ["applied", "rejected", "rejected", "rejected", "applied"]
    assert out[1]["reason"].startswith("attributes are 200") and "limit 16384" in out[1]["reason"]
    assert out[2]["reason"] == "position.lon is nan (not finite)"
    assert "limit 65536" in out[3]["reason"]
    assert (
        client.get("/entities/urn:ngsi-ld:Vehicle:V0001", headers=H(VIEWER)).json()["event_id"]
        == "e5"
    )


def test_big_batches_and_backlogs_are_pushed_in_small_messages(client, store):
    """A batch of 1,200 changes, live or as a resume backlog, arrives as messages of at
    most MAX_DELTAS deltas, complete and in cursor order."""
    from twin.sync.server import MAX_DELTAS

    batch = [ev(k, k // 40, ent=f"V{k % 300:04d}") for k in range(1200)]
    with client.websocket_connect("/ws", headers=H(VIEWER)) as ws:
        start = ws.receive_json()["cursor"]
        assert (
            client.post("/events", json=batch, headers=H(ADMIN)).json()["counts"]["applied"] == 1200
        )
        live, sizes = [], []
        while len(live) < 1200:
            m = ws.receive_json()
            sizes.append(len(m["deltas"]))
            live += m["deltas"]
    assert max(sizes) <= MAX_DELTAS and len(sizes) >= 3
    with client.websocket_connect(f"/ws?since={start}", headers=H(VIEWER)) as ws:
        ws.receive_json()
        backlog, sizes = [], []
        while len(backlog) < 1200:
            m = ws.receive_json()
            sizes.append(len(m["deltas"]))
            backlog += m["deltas"]
    assert max(sizes) <= MAX_DELTAS
    want = [c for c, _e in store.changes(start)]
    assert [d["cursor"] for d in live] == [d["cursor"] for d in backlog] == want


@pytest.mark.postgres
def test_api_over_postgres(postgres):
    """The same API over the PostgreSQL store: batch outcomes, reads, time travel,
    indicators and a WebSocket resume."""
    import uuid

    from twin.sync.pgstore import PostgresStore

    with PostgresStore(postgres, schema="api" + uuid.uuid4().hex[:10]) as s:
        c = TestClient(create_app(s, tokens=TOKENS, now=NOW))
        r = c.post("/events", json=[ev(1, 10), ev(2, 20), ev(3, 15), ev(1, 10)], headers=H(ADMIN))
        assert r.json()["counts"] == {"applied": 2, "stale": 1, "duplicate": 1, "rejected": 0}
        e = c.get("/entities/urn:ngsi-ld:Vehicle:V0001?at=2026-05-01T08:00:16Z", headers=H(VIEWER))
        assert e.json()["event_id"] == "e3"
        ind = c.get("/indicators?types=vehicle", headers=H(VIEWER)).json()["indicators"]
        assert [(d["count"], d["events"]) for d in ind] == [(1, 2)]
        with c.websocket_connect("/ws?since=0", headers=H(VIEWER)) as ws:
            assert ws.receive_json()["type"] == "hello"
            got = ws.receive_json()["deltas"]
            c.post("/events", json=[ev(4, 30)], headers=H(ADMIN))
            got += ws.receive_json()["deltas"]
        assert [(d["event_id"], d["revision"]) for d in got] == [("e1", 1), ("e2", 2), ("e4", 3)]


def test_vectorised_filter_agrees_with_per_entity_match():
    """A subscriber's batch selection (NumPy over the batch's columns) takes exactly
    the rows newer than its cursor that its per-entity filter accepts."""
    import asyncio
    import random

    from twin.sync.model import Entity
    from twin.sync.server import _Batch, _Subscriber

    rnd = random.Random(11)
    types = ["person", "vehicle", "asset", "incident"]
    rows = []
    for c in range(1, 301):
        lon = None if rnd.random() < 0.1 else rnd.uniform(121.0, 122.0)
        e = Entity(f"x{c}", rnd.choice(types), 1, c, lon, None if lon is None else 29.5, 0.0)
        e.building = rnd.choice([None, "B1", "B2"])
        rows.append((1000 + c, e))
    batch = _Batch(rows)

    async def run():
        checked = 0
        for _ in range(200):
            bbox = None if rnd.random() < 0.4 else (121.2, 29.0, rnd.uniform(121.3, 122.0), 30.0)
            ts = None if rnd.random() < 0.5 else rnd.sample(types, rnd.randint(1, 3))
            b = rnd.choice([None, None, "B1"])
            sub = _Subscriber(bbox, ts, b, rnd.choice([0, 1000, 1150, 1299]), 10)
            want = [j for j, (c, e) in enumerate(rows) if c > sub.cursor and sub.match(e)]
            got = sub.select(batch)
            got = list(range(len(rows))) if got is None else list(got)
            assert got == want
            checked += len(want)
        return checked

    assert asyncio.run(run()) > 1000
