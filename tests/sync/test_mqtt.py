"""MQTT ingest against a real mosquitto broker: per-message outcomes, scopes, and
acknowledgement only after commit (a killed ingester loses nothing)."""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from twin.errors import ParameterError
from twin.sync.ingest import Ingestor, Writer
from twin.sync.model import format_time, parse_time
from twin.sync.mqtt import MQTTSource, parse_mqtt_url, split_payload
from twin.sync.store import SQLiteStore

NOW = parse_time("2026-05-02T00:00:00Z")
T0 = parse_time("2026-05-01T08:00:00Z")


def ev(k, t, ent="V0001", typ="vehicle", lon=121.55, **over):
    d = {
        "event_id": f"e{k}",
        "entity_id": f"urn:ngsi-ld:{typ.capitalize()}:{ent}",
        "entity_type": typ,
        "observed_at": format_time(T0 + int(t * 1e9)),
        "source": "mqtt-test",
        "position": {"lon": lon, "lat": 29.87, "alt": 10.0},
    }
    d.update(over)
    return d


def _client(port, on_message=None):
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{os.getpid()}-{time.time()}")
    if on_message is not None:
        c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def test_parse_mqtt_url_and_payloads():
    assert parse_mqtt_url("127.0.0.1:1884/city/events") == ("127.0.0.1", 1884, "city/events")
    assert parse_mqtt_url("mqtt://broker/city/#") == ("broker", 1883, "city/#")
    for bad in ("broker", "broker:99999/t", ":1883/t"):
        with pytest.raises(ParameterError):
            parse_mqtt_url(bad)
    assert split_payload(b'{"a": 1}') == [{"a": 1}]
    assert split_payload(b'[{"a": 1}, {"b": 2}]') == [{"a": 1}, {"b": 2}]
    assert split_payload(b'{"a": 1}\n{"b": 2}\n') == [b'{"a": 1}', b'{"b": 2}']
    assert split_payload(b"[not json") == [b"[not json"]


def test_mqtt_ingest_outcomes_and_scope(mosquitto, tmp_path, caplog):
    store = SQLiteStore(tmp_path / "mqtt.sqlite")
    src = MQTTSource(
        "127.0.0.1", mosquitto, "city/events", writer=Writer("traffic", frozenset({"vehicle"}))
    )
    assert src.outcome_topic == "city/events/outcomes"
    src.start(Ingestor(store, now=NOW))
    got: queue.Queue = queue.Queue()
    sub = _client(mosquitto, lambda c, u, m: got.put(json.loads(m.payload)))
    sub.subscribe("city/events/outcomes", qos=1)
    time.sleep(0.2)
    nan = ev(9, 5)
    nan["position"]["lon"] = float("nan")
    messages = [
        json.dumps(ev(1, 10)),  # one event
        json.dumps([ev(2, 20), ev(3, 15), ev(1, 10)]),  # late, duplicate
        "{not json",
        json.dumps(ev(4, 30, ent="H0001", typ="asset")),  # out of the feed's scope
        json.dumps(nan),
        json.dumps(ev(5, 40)) + "\n" + json.dumps(ev(6, 45, ent="V0002")) + "\n",  # NDJSON
        json.dumps(ev(7, 50, observed_at="1970-01-01T00:00:00Z")),
    ]
    pub = _client(mosquitto)
    with caplog.at_level(logging.WARNING, logger="twin.sync"):
        for m in messages:
            pub.publish("city/events", m, qos=1).wait_for_publish(5)
        outs = [got.get(timeout=10) for _ in messages]
    res = [[o["result"] for o in m["outcomes"]] for m in outs]
    assert res == [
        ["applied"],
        ["applied", "stale", "duplicate"],
        ["rejected"],
        ["rejected"],
        ["rejected"],
        ["applied", "applied"],
        ["rejected"],
    ]
    assert outs[1]["counts"] == {"applied": 1, "stale": 1, "duplicate": 1, "rejected": 0}
    assert outs[2]["outcomes"][0]["reason"].startswith("not valid JSON")
    assert outs[3]["outcomes"][0]["reason"] == "token 'traffic' may not write asset entities"
    assert outs[4]["outcomes"][0]["reason"] == "position.lon is nan (not finite)"
    assert "before 2000" in outs[6]["outcomes"][0]["reason"]
    assert any("may not write asset" in m for m in caplog.messages)  # refusal logged
    s = store.state("urn:ngsi-ld:Vehicle:V0001")
    assert (s.revision, s.event_id) == (3, "e5")
    assert store.count() == 2 and store.state("urn:ngsi-ld:Asset:H0001") is None
    assert src.messages == len(messages)
    for c in (pub, sub):
        c.loop_stop()
        c.disconnect()
    src.stop()
    store.close()


INGESTER = """
import sys, logging
from twin.sync.mqtt import run_mqtt
from twin.sync.store import SQLiteStore
run_mqtt(SQLiteStore(sys.argv[1]), sys.argv[2], client_id="twin-crash", linger=0.002)
"""


def _start(db, port, env):
    err = open(Path(db).parent / "ingester.log", "ab")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-c", INGESTER, str(db), f"127.0.0.1:{port}/load/events"],
        env=env,
        stderr=err,
    )


def _count(db) -> int:
    if not db.exists():
        return 0
    with SQLiteStore(db) as s:
        return s.history_count()


@pytest.mark.slow
def test_mqtt_kill_9_loses_no_acknowledged_message(mosquitto, tmp_path):
    """The ingester is killed with SIGKILL in the middle of a QoS 1 load and started
    again: every message the broker acknowledged to the publisher ends up in the
    store exactly once, and the state equals that of the sorted events."""
    db = tmp_path / "crash.sqlite"
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root}
    proc = _start(db, mosquitto, env)
    pub = _client(mosquitto)
    n_msgs, per = 300, 10
    events = [
        ev(f"{m}-{i}", m + i / per, ent=f"V{(m * per + i) % 40:03d}", lon=121.0 + m * 1e-4)
        for m in range(n_msgs)
        for i in range(per)
    ]
    try:
        time.sleep(1.0)  # the first start subscribes (and creates the session)
        for m in range(n_msgs):
            info = pub.publish("load/events", json.dumps(events[m * per : (m + 1) * per]), qos=1)
            info.wait_for_publish(5)  # the broker acknowledged it
            if m == 100:
                t_end = time.monotonic() + 20
                while _count(db) == 0 and time.monotonic() < t_end:
                    time.sleep(0.01)  # the ingester has committed some: mid-load
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                killed_at = _count(db)
                assert 0 < killed_at < len(events)
            if m == 180:
                proc = _start(db, mosquitto, env)
            time.sleep(0.002)
        t_end = time.monotonic() + 120  # generous: the box may be heavily shared
        while time.monotonic() < t_end:
            if _count(db) >= len(events):
                break
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        pub.loop_stop()
        pub.disconnect()
    ordered = sorted(events, key=lambda e: (e["observed_at"], e["event_id"]))
    with SQLiteStore(db) as s:
        log = (tmp_path / "ingester.log").read_text(errors="replace")[-3000:]
        assert s.history_count() == len(events), log  # each exactly once
        n_seen = s._con.execute("SELECT count(*) FROM events_seen").fetchone()[0]
        assert n_seen == len(events)
        got = [(e.id, e.event_id, e.lon, e.revision) for e in s.query()]
    with SQLiteStore(tmp_path / "ref.sqlite") as ref:
        ref.apply(ordered, now=NOW + 10**18)
        want = [(e.id, e.event_id, e.lon, e.revision) for e in ref.query()]
    assert got == want


def test_mqtt_store_failure_is_retried_not_acknowledged(mosquitto, tmp_path, monkeypatch):
    """A batch the store fails (disk full, say) is neither acknowledged nor dropped:
    the worker retries it, and it lands once the store works again."""
    store = SQLiteStore(tmp_path / "retry.sqlite")
    real, calls = store.apply, []

    def flaky(evs, **kw):
        calls.append(len(evs))
        if len(calls) == 1:
            raise OSError("disk full")
        return real(evs, **kw)

    monkeypatch.setattr(store, "apply", flaky)
    src = MQTTSource("127.0.0.1", mosquitto, "retry/events")
    src.start(Ingestor(store, now=NOW))
    pub = _client(mosquitto)
    pub.publish("retry/events", json.dumps(ev(1, 10)), qos=1).wait_for_publish(5)
    t_end = time.monotonic() + 20
    while src.messages < 1 and time.monotonic() < t_end:
        time.sleep(0.05)
    assert len(calls) >= 2 and src.messages == 1  # acknowledged after the retry
    assert store.state("urn:ngsi-ld:Vehicle:V0001").event_id == "e1"
    pub.loop_stop()
    pub.disconnect()
    src.stop()
    store.close()
