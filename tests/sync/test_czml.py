"""CZML export: structure, sample counts and status intervals against the store."""

from __future__ import annotations

import json

import pytest

from twin.errors import OutputError
from twin.sync.czml import export_czml
from twin.sync.model import parse_time
from twin.sync.store import SQLiteStore

NOW = 1_900_000_000_000_000_000


@pytest.fixture(scope="module")
def store(small_city, tmp_path_factory):
    s = SQLiteStore(tmp_path_factory.mktemp("czml") / "c.sqlite")
    evs = small_city.events
    # deliver 5 % late: swap neighbours so some events arrive after newer ones
    evs = list(evs)
    for i in range(0, len(evs) - 1, 20):
        evs[i], evs[i + 1] = evs[i + 1], evs[i]
    for k in range(0, len(evs), 1000):
        s.apply(evs[k : k + 1000], now=NOW)
    yield s
    s.close()


def _times(pkt):
    from twin.sync.model import parse_time as pt

    a, b = pkt["availability"].split("/")
    return pt(a), pt(b)


def test_czml_structure_matches_history(store, tmp_path):
    info = export_czml(store, tmp_path / "live.czml")
    doc = json.loads((tmp_path / "live.czml").read_text())
    assert doc[0]["id"] == "document" and doc[0]["version"] == "1.0"
    c0, c1 = (parse_time(t) for t in doc[0]["clock"]["interval"].split("/"))
    ids = [p["id"] for p in doc[1:]]
    assert len(ids) == len(set(ids)) == info["entities"] == store.count()
    total = 0
    for pkt in doc[1:]:
        hist = [r for r in store.history(pkt["id"]) if r["lon"] is not None]
        pos = pkt["position"]
        if "epoch" in pos:
            s = pos["cartographicDegrees"]
            assert len(s) == 4 * len(hist)
            offs = s[0::4]
            assert offs == sorted(offs) and offs[0] == 0.0
            epoch = parse_time(pos["epoch"])
            assert epoch == hist[0]["observed_ns"]
            assert abs(epoch + offs[-1] * 1e9 - hist[-1]["observed_ns"]) < 1e6
            assert s[1:4] == [hist[0]["lon"], hist[0]["lat"], hist[0]["alt"]]
        else:
            assert len(hist) == 1 and len(pos["cartographicDegrees"]) == 3
        total += len(hist)
        a, b = _times(pkt)
        assert c0 <= a <= b <= c1
        typ = pkt["properties"]["type"]
        assert ("billboard" in pkt) == (typ in ("asset", "incident"))
        assert ("point" in pkt) == (typ not in ("asset", "incident"))
    assert total == info["samples"]
    # incidents: the status intervals follow the lifecycle, contiguous and in order
    incidents = [p for p in doc[1:] if p["properties"]["type"] == "incident"]
    assert incidents
    order = ["reported", "dispatched", "on_scene", "resolved", "closed"]
    for pkt in incidents:
        spans = pkt["properties"]["status"]
        states = [s["string"] for s in spans]
        assert states == order[: len(states)]
        ends = [tuple(parse_time(t) for t in s["interval"].split("/")) for s in spans]
        assert all(ends[i][1] == ends[i + 1][0] for i in range(len(ends) - 1))
        assert len(pkt["billboard"]["color"]) == len(spans)
        inc = store.incident(pkt["id"])
        assert ends[0][0] == inc["reported_ns"]


def test_czml_time_window_and_types(store, tmp_path):
    first = store.query(types="vehicle")[0]
    h = store.history(first.id)
    t0, t1 = h[5]["observed_ns"], h[20]["observed_ns"]
    info = export_czml(store, tmp_path / "v.czml", t0=t0, t1=t1, types=["vehicle"])
    doc = json.loads((tmp_path / "v.czml").read_text())
    assert {p["properties"]["type"] for p in doc[1:]} == {"vehicle"}
    pkt = next(p for p in doc[1:] if p["id"] == first.id)
    n = len([r for r in store.history(first.id, t0, t1) if r["lon"] is not None])
    assert len(pkt["position"]["cartographicDegrees"]) == 4 * n == 4 * 16
    assert doc[0]["clock"]["interval"].split("/")[0] == h[5]["observed_at"]
    assert info["entities"] == len(doc) - 1


def test_czml_unwritable_path(store, tmp_path):
    (tmp_path / "d.czml").mkdir()
    with pytest.raises(OutputError, match="d.czml"):
        export_czml(store, tmp_path / "d.czml")
    assert not (tmp_path / "d.czml.tmp").exists()


def test_geojson_snapshot_now_and_as_of(store, tmp_path):
    from twin.sync.geojson import export_geojson

    n = export_geojson(store, tmp_path / "now.geojson", types=["person", "vehicle"])
    doc = json.loads((tmp_path / "now.geojson").read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == n
    assert n == store.count(["person", "vehicle"])
    for f in doc["features"][:50]:
        e = store.state(f["id"])
        assert f["geometry"]["coordinates"] == [e.lon, e.lat, e.alt]
        assert f["properties"]["revision"] == e.revision
    # as of an early time: fewer entities, older positions
    first = store.query(types="vehicle")[0]
    h = store.history(first.id)
    at = h[3]["observed_ns"]
    export_geojson(store, tmp_path / "then.geojson", at=at, types=["vehicle"])
    then = json.loads((tmp_path / "then.geojson").read_text())
    f = next(x for x in then["features"] if x["id"] == first.id)
    assert f["geometry"]["coordinates"][:2] == [h[3]["lon"], h[3]["lat"]]
    (tmp_path / "d.geojson").mkdir()
    with pytest.raises(OutputError, match="d.geojson"):
        export_geojson(store, tmp_path / "d.geojson")
