"""The one validation path: twin's event form and NGSI-LD, accepted and refused."""

from __future__ import annotations

import json
import math

import pytest

from twin.errors import InputError
from twin.sync.model import (
    Entity,
    EventError,
    format_time,
    from_ngsi_ld,
    parse_event,
    parse_time,
    to_ngsi_ld,
)

NOW = parse_time("2026-05-01T12:00:00Z")


def ev(**over):
    d = {
        "event_id": "e1",
        "entity_id": "urn:ngsi-ld:Person:P0001",
        "entity_type": "person",
        "observed_at": "2026-05-01T08:00:01.250Z",
        "source": "test",
        "position": {"lon": 121.55, "lat": 29.87, "alt": 13.5},
        "heading": 90.0,
        "speed": 1.2,
        "status": "walking",
        "attributes": {"building_id": "B0003", "floor": 2},
    }
    d.update(over)
    return {k: v for k, v in d.items() if v is not None}


def test_parse_valid_event_fields_and_time():
    e = parse_event(ev(), now=NOW)
    assert e.observed_ns == 1_777_622_401_250_000_000
    assert e.observed_at == "2026-05-01T08:00:01.250Z"
    assert (e.lon, e.lat, e.alt) == (121.55, 29.87, 13.5)
    assert e.building == "B0003" and e.floor == 2
    assert e.attributes_json == '{"building_id":"B0003","floor":2}'
    # JSON text and bytes give the same event; to_dict round-trips
    assert parse_event(json.dumps(ev()).encode(), now=NOW) == e
    assert parse_event(e.to_dict(), now=NOW) == e


def test_flat_json_event_is_read_as_a_record():
    """Top-level lon/lat (no ``position``) are the position, as in a CSV row; other
    unknown fields become attributes: nothing is dropped."""
    e = parse_event(ev(position=None, lon=121.5, lat=29.8, alt=3.0, floor=2, colour="red"), now=NOW)
    assert (e.lon, e.lat, e.alt) == (121.5, 29.8, 3.0)
    assert e.attributes == {"building_id": "B0003", "floor": 2, "colour": "red"}
    assert e.floor == 2 and e.event_id == "e1" and e.status == "walking"


def test_time_formats():
    assert parse_time("2026-05-01T10:00:00+02:00") == parse_time("2026-05-01T08:00:00Z")
    assert format_time(parse_time("2026-05-01T08:00:00.123Z")) == "2026-05-01T08:00:00.123Z"
    assert parse_event(ev(observed_at=1_777_622_400_000_000_000), now=NOW).observed_ns == (
        1_777_622_400_000_000_000
    )


@pytest.mark.parametrize(
    "obj, reason",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (ev(event_id=None), "missing field 'event_id'"),
        (ev(entity_id=""), "entity_id is empty"),
        (ev(entity_id=7), "entity_id must be a string"),
        (ev(entity_type="spaceship"), "unknown entity_type 'spaceship'"),
        (ev(observed_at=None), "missing field 'observed_at'"),
        (ev(observed_at="yesterday"), "is not an ISO 8601 time"),
        (ev(observed_at="2026-05-01T08:00:00"), "has no time zone"),
        (ev(observed_at="1970-01-01T00:00:00Z"), "before 2000-01-01"),
        (ev(observed_at="2100-01-01T00:00:00Z"), "more than a day in the future"),
        (ev(position={"lon": math.nan, "lat": 29.8}), "position.lon is nan"),
        (ev(position={"lon": 121.5, "lat": math.inf}), "position.lat is inf"),
        (ev(position={"lon": 200.0, "lat": 29.8}), "outside [-180, 180]"),
        (ev(position={"lon": "121", "lat": 29.8}), "position.lon must be a number"),
        (ev(position={"lat": 29.8}), "position needs lon and lat"),
        (ev(speed=-1.0), "speed=-1.0 is outside"),
        (ev(heading=True), "heading must be a number"),
        (ev(attributes=[1]), "attributes must be a JSON object"),
        (ev(attributes={"floor": 1.5}), "attributes.floor must be an integer"),
        (ev(attributes={"blob": "x" * 20000}), "attributes are 20011 bytes"),
        (json.dumps(ev(attributes={"blob": "x" * 70000})), "limit 65536"),
        (ev(expected_revision=-1), "expected_revision must be a non-negative integer"),
        (ev(entity_type="incident", status="exploded"), "unknown incident status"),
        # beside a position, a misplaced or misspelt field is refused, not dropped
        (ev(lon=121.5, lat=29.8), "unknown field(s) 'lat', 'lon'; a position goes"),
        (ev(atributes={"floor": 2}), "unknown field(s) 'atributes'; other values go in"),
    ],
)
def test_malformed_events_rejected_with_reason(obj, reason):
    with pytest.raises(EventError) as info:
        parse_event(obj, now=NOW)
    assert reason in str(info.value)
    assert isinstance(info.value, InputError)


def test_future_limit_uses_injected_now():
    e = ev(observed_at="2026-05-02T11:00:00Z")
    assert parse_event(e, now=NOW).observed_ns > NOW  # 23 h ahead: fine
    with pytest.raises(EventError, match="future"):
        parse_event(ev(observed_at="2026-05-02T12:00:01Z"), now=NOW)


NGSI = {
    "id": "urn:ngsi-ld:Vehicle:V0007",
    "type": "Vehicle",
    "@context": "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
    "location": {
        "type": "GeoProperty",
        "value": {"type": "Point", "coordinates": [121.551, 29.871, 14.2]},
        "observedAt": "2026-05-01T08:00:05.000Z",
    },
    "status": {"type": "Property", "value": "driving"},
    "speed": {"type": "Property", "value": 11.5},
    "buildingId": {"type": "Property", "value": "B0001"},
    "kind": {"type": "Property", "value": "ambulance"},
}


def test_from_ngsi_ld():
    e = from_ngsi_ld(NGSI, now=NOW)
    assert (e.entity_id, e.entity_type, e.status, e.speed) == (
        "urn:ngsi-ld:Vehicle:V0007",
        "vehicle",
        "driving",
        11.5,
    )
    assert (e.lon, e.lat, e.alt) == (121.551, 29.871, 14.2)
    assert e.observed_at == "2026-05-01T08:00:05.000Z"
    assert e.attributes == {"building_id": "B0001", "kind": "ambulance"}
    assert e.event_id == "urn:ngsi-ld:Vehicle:V0007@2026-05-01T08:00:05.000Z"
    # parse_event recognises the NGSI-LD form too: one validation path
    assert parse_event(NGSI, now=NOW) == e


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"type": "Dragon"}, "unknown entity type"),
        (
            {
                "location": {"type": "GeoProperty", "value": {"type": "Polygon"}},
                "observedAt": "2026-05-01T08:00:05Z",
            },
            "GeoJSON Point",
        ),
        (
            {
                "location": {
                    "type": "GeoProperty",
                    "value": {"type": "Point", "coordinates": [math.nan, 1.0]},
                    "observedAt": "2026-05-01T08:00:05Z",
                }
            },
            "position.lon is nan",
        ),
    ],
)
def test_from_ngsi_ld_rejects(change, reason):
    with pytest.raises(EventError, match=reason):
        from_ngsi_ld({**NGSI, **change}, now=NOW)


def test_ngsi_ld_missing_observed_at():
    bad = {k: v for k, v in NGSI.items() if k != "location"}
    with pytest.raises(EventError, match="missing observedAt"):
        from_ngsi_ld(bad, now=NOW)


def test_to_ngsi_ld_round_trip():
    ent = Entity(
        "urn:ngsi-ld:Person:P0001",
        "person",
        3,
        parse_time("2026-05-01T08:00:01Z"),
        121.5,
        29.8,
        20.0,
        None,
        1.1,
        "indoor",
        {"building_id": "B0002", "floor": 3},
        "synth/indoor",
        "e9",
    )
    out = to_ngsi_ld(ent)
    assert out["type"] == "Person"
    assert out["location"]["value"]["coordinates"] == [121.5, 29.8, 20.0]
    assert out["buildingId"]["value"] == "B0002"
    assert out["revision"]["value"] == 3
    back = from_ngsi_ld(out, now=NOW)
    assert (back.entity_id, back.lon, back.status, back.building, back.floor, back.speed) == (
        ent.id,
        121.5,
        "indoor",
        "B0002",
        3,
        1.1,
    )


def test_missing_altitude_stays_unknown():
    from twin.sync.model import parse_event, to_ngsi_ld

    e = parse_event(
        {
            "event_id": "a",
            "entity_id": "P1",
            "entity_type": "person",
            "observed_at": "2026-05-01T08:00:00Z",
            "position": {"lon": 121.5, "lat": 29.8},
        },
        now=2_000_000_000_000_000_000,
    )
    assert e.alt is None  # not 0 m: placement then snaps to the terrain
    assert to_ngsi_ld(e)["location"]["value"]["coordinates"] == [121.5, 29.8]
