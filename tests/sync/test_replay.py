"""NDJSON replay: streaming, line-numbered errors, until, pacing."""

from __future__ import annotations

import json

import pytest

from twin.errors import InputError, ParameterError
from twin.sync.model import parse_time
from twin.sync.replay import replay
from twin.sync.store import SQLiteStore

NOW = parse_time("2026-05-02T00:00:00Z")


def line(k, t, ent=1, **over):
    d = {
        "event_id": f"e{k}",
        "entity_id": f"urn:ngsi-ld:Vehicle:V{ent:04d}",
        "entity_type": "vehicle",
        "observed_at": f"2026-05-01T08:{t // 60:02d}:{t % 60:02d}.000Z",
        "source": "test",
        "position": {"lon": 121.55, "lat": 29.87, "alt": 12.0},
        "speed": 10.0,
        "heading": 45.0,
        "status": "driving",
    }
    d.update(over)
    return json.dumps(d)


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(tmp_path / "r.sqlite")
    yield s
    s.close()


def test_replay_reports_bad_lines_and_applies_the_rest(tmp_path, store):
    p = tmp_path / "ev.ndjson"
    rows = [line(k, k, ent=k % 3) for k in range(10)]
    rows[3] = '{"event_id": "broken", '  # truncated JSON
    rows[5] = line(5, 5, position={"lon": 121.5, "lat": float("nan")}).replace("NaN", "NaN")
    rows[7] = line(7, 7, entity_type="ufo")
    rows.append(line(1, 1, ent=1))  # duplicate of line 2
    rows.insert(4, "")  # blank lines are skipped
    p.write_text("\n".join(rows) + "\n")
    seen = []
    r = replay(p, store, batch_size=3, progress=lambda rep: seen.append(rep.events), now=NOW)
    assert (r.lines, r.events, r.applied, r.duplicate, r.malformed) == (12, 8, 7, 1, 3)
    assert [(ln, reason[:22]) for ln, _, reason in r.errors] == [
        (4, "not valid JSON: Expect"),
        (7, "position.lat is nan (n"),
        (9, "unknown entity_type 'u"),
    ]
    assert seen == [3, 6, 8] and r.batches == 3
    assert store.count() == 3
    assert r.to_dict()["applied"] == 7
    assert r.first_observed == "2026-05-01T08:00:00.000Z"


def test_replay_until_stops_after_the_first_minute(tmp_path, store):
    p = tmp_path / "ev.ndjson"
    p.write_text("\n".join(line(k, 2 * k, ent=k % 4) for k in range(100)) + "\n")
    r = replay(p, store, until=60, now=NOW)
    assert r.events == 31  # t = 0, 2, ..., 60
    assert r.last_observed == "2026-05-01T08:01:00.000Z"
    assert store.history_count() == 31


def test_replay_paced(tmp_path, store):
    p = tmp_path / "ev.ndjson"
    p.write_text("\n".join(line(k, 10 * k) for k in range(4)) + "\n")
    clock = [0.0]
    sleeps = []

    def sleep(s):
        sleeps.append(round(s, 6))
        clock[0] += s

    r = replay(p, store, speed=10, now=NOW, sleep=sleep, clock=lambda: clock[0])
    assert sleeps == [1.0, 1.0, 1.0]  # 10 s of event time at speed 10
    assert r.applied == 4 and r.batches == 4


def test_replay_bad_arguments(tmp_path, store):
    with pytest.raises(InputError, match="cannot read the event file") as info:
        replay(tmp_path / "missing.ndjson", store)
    assert "missing.ndjson" in str(info.value)
    with pytest.raises(ParameterError):
        replay(tmp_path / "x", store, speed=0)
    with pytest.raises(ParameterError):
        replay(tmp_path / "x", store, batch_size=0)
