"""Entity tracks against the city they move in: time, space, buildings, roads, incidents."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
import shapely
from shapely.geometry import LineString, Point, box

from twin.crs import LocalFrame, transform
from twin.sync.model import INCIDENT_STATES, parse_event, parse_time
from twin.synth.events import generate_events, write_events
from twin.synth.model import Building, City, Road
from twin.synth.params import PRESETS

X0, Y0 = 359785.0, 3306465.0  # EPSG:4550 near Ningbo (121.55 E, 29.87 N)
LIFECYCLE = list(INCIDENT_STATES)


def hand_city() -> City:
    """A 200 m square: a 2 x 2 street grid, four buildings, a tilted terrain."""
    roads = [
        Road(LineString([(X0, Y0 + 60), (X0 + 200, Y0 + 60)]), 10.0),
        Road(LineString([(X0, Y0 + 140), (X0 + 200, Y0 + 140)]), 18.0, "avenue"),
        Road(LineString([(X0 + 70, Y0), (X0 + 70, Y0 + 200)]), 10.0),
        Road(LineString([(X0 + 150, Y0), (X0 + 150, Y0 + 120)]), 10.0),  # dead end
    ]
    specs = [
        (85, 75, 135, 125, 5),
        (10, 75, 55, 125, 3),
        (85, 10, 135, 45, 6),
        (10, 155, 55, 190, 2),
    ]
    buildings = [
        Building(
            f"B{i + 1:04d}",
            box(X0 + a, Y0 + b, X0 + c, Y0 + d),
            "rect",
            20.0 + i,
            3.2 * n,
            3.2 * n,
            n,
            "flat",
        )
        for i, (a, b, c, d, n) in enumerate(specs)
    ]
    return City(
        crs="EPSG:4550",
        bounds=(X0, Y0, X0 + 200, Y0 + 200),
        frame=LocalFrame(121.55, 29.87, 0.0),
        terrain=lambda x, y: 15.0 + 0.02 * (np.asarray(x) - X0) + 0.01 * (np.asarray(y) - Y0),
        buildings=buildings,
        roads=roads,
    )


SPEC = PRESETS["small"].with_(duration=150.0, people=30, vehicles=6, assets=9, incidents=4)


@pytest.fixture(scope="module")
def city():
    return hand_city()


@pytest.fixture(scope="module")
def events(city):
    return generate_events(city, SPEC, np.random.Generator(np.random.PCG64(7)))


def by_entity(events):
    out = defaultdict(list)
    for e in events:
        out[e["entity_id"]].append(e)
    return out


def map_xyz(city, evs):
    geo = np.array(
        [[e["position"]["lon"], e["position"]["lat"], e["position"]["alt"]] for e in evs]
    )
    return transform(geo, "EPSG:4979", city.crs)


def test_times_in_window_and_monotone(events):
    t0 = parse_time(SPEC.start_time)
    t1 = t0 + int(SPEC.duration * 1e9)
    times = [parse_time(e["observed_at"]) for e in events]
    assert min(times) >= t0 and max(times) <= t1
    assert times == sorted(times)
    for evs in by_entity(events).values():
        ts = [parse_time(e["observed_at"]) for e in evs]
        assert all(b > a for a, b in zip(ts, ts[1:], strict=False))
    assert len({e["event_id"] for e in events}) == len(events)
    # about one fix per second per mover
    n_people = sum(1 for e in events if e["entity_type"] == "person")
    assert 0.6 * SPEC.people * SPEC.duration < n_people <= SPEC.people * (SPEC.duration + 1)


def test_every_event_passes_the_sync_validation(events):
    now = parse_time(SPEC.start_time)
    for e in events:
        parse_event(e, now=now)
    types = {e["entity_type"] for e in events}
    assert types == {"person", "vehicle", "asset", "incident"}


def test_positions_inside_area_and_on_the_ground(city, events):
    xyz = map_xyz(city, events)
    x0, y0, x1, y1 = city.bounds
    assert np.all((xyz[:, 0] > x0) & (xyz[:, 0] < x1) & (xyz[:, 1] > y0) & (xyz[:, 1] < y1))
    outdoor = [
        i for i, e in enumerate(events) if e["entity_type"] == "person" and e["status"] == "walking"
    ]
    ground = city.terrain(xyz[outdoor, 0], xyz[outdoor, 1])
    assert np.max(np.abs(xyz[outdoor, 2] - ground - 1.0)) < 0.01
    cars = [i for i, e in enumerate(events) if e["entity_type"] == "vehicle"]
    assert np.max(np.abs(xyz[cars, 2] - city.terrain(xyz[cars, 0], xyz[cars, 1]) - 0.8)) < 0.01


def test_people_indoors_inside_their_building(city, events):
    bmap = {b.id: b for b in city.buildings}
    indoor = [e for e in events if e["status"] == "indoor"]
    assert len({e["entity_id"] for e in indoor}) >= 3
    xyz = map_xyz(city, indoor)
    for e, p in zip(indoor, xyz, strict=True):
        b = bmap[e["attributes"]["building_id"]]
        f = e["attributes"]["floor"]
        assert 1 <= f < b.floors
        assert b.footprint.buffer(1e-3).contains(Point(p[0], p[1]))
        assert abs(p[2] - (b.base_height + f * city.floor_height + 1.5)) < 0.01
        assert e["source"] == "synth/indoor"


def test_walkers_and_vehicles_on_streets(city, events):
    lines = [r.centerline for r in city.roads]
    widths = np.array([r.width for r in city.roads])
    for kind, speeds in (("vehicle", (0.0, 16.8)), ("person", (0.0, 1.6))):
        evs = [e for e in events if e["entity_type"] == kind and e["status"] != "indoor"]
        xyz = map_xyz(city, evs)
        pts = shapely.points(xyz[:, 0], xyz[:, 1])
        d = np.stack([shapely.distance(line, pts) for line in lines])  # roads x points
        sp = np.array([e["speed"] for e in evs])
        assert np.all((sp >= speeds[0]) & (sp <= speeds[1]))
        if kind == "vehicle":
            assert np.all(np.min(d - widths[:, None] / 2, axis=0) < 0.01)  # on a carriageway
            assert np.median(sp) > 6.0
    walking = [e for e in events if e["entity_type"] == "person" and e["status"] == "walking"]
    on_sidewalk = np.mean([e["speed"] >= 1.0 for e in walking])
    assert on_sidewalk == 1.0


def test_headings_follow_motion(city, events):
    """The reported heading is the bearing from one fix to the next (true north)."""
    errs = []
    for evs in by_entity(events).values():
        if evs[0]["entity_type"] != "vehicle":
            continue
        enu = city.frame.from_crs(map_xyz(city, evs), city.crs)
        for j in range(len(evs) - 1):
            a, b = evs[j], evs[j + 1]
            if "heading" not in a or a["status"] != "driving" or b["status"] != "driving":
                continue
            d = enu[j + 1] - enu[j]
            if np.hypot(d[0], d[1]) < 3:
                continue
            bearing = np.degrees(np.arctan2(d[0], d[1])) % 360
            errs.append(abs((bearing - a["heading"] + 180) % 360 - 180))
    assert len(errs) > 100
    assert np.median(errs) < 1.0  # straight segments; turns make the tail


def test_incident_lifecycles(events):
    incs = {k: v for k, v in by_entity(events).items() if "Incident" in k}
    assert len(incs) == SPEC.incidents
    complete = 0
    vehicles = {e["entity_id"] for e in events if e["entity_type"] == "vehicle"}
    for evs in incs.values():
        states = [e["status"] for e in evs]
        assert states == LIFECYCLE[: len(states)]
        for e in evs[1:]:
            assert e["attributes"]["responder"] in vehicles
        complete += states[-1] == "closed"
        assert evs[0]["attributes"]["location"] in ("street", "building")
    assert complete >= 1


def test_responder_on_scene_when_incident_says_so(city, events):
    ents = by_entity(events)
    for k, evs in ents.items():
        if "Incident" not in k:
            continue
        on = [e for e in evs if e["status"] == "on_scene"]
        if not on:
            continue
        v = ents[on[0]["attributes"]["responder"]]
        statuses = [e["status"] for e in v if e["observed_at"] > on[0]["observed_at"]][:3]
        assert statuses and statuses[0] == "on_scene"


def test_assets_static_with_status(city, events):
    for k, evs in by_entity(events).items():
        if "Asset" not in k:
            continue
        assert evs[0]["status"] == "ok" and evs[0]["observed_at"].startswith("2026-05-01T08:00:0")
        assert {e["status"] for e in evs} <= {"ok", "fault"}
        assert len({json.dumps(e["position"]) for e in evs}) == 1


def test_deterministic_ndjson(city, events, tmp_path):
    a = write_events(events, tmp_path / "a.ndjson")
    again = generate_events(city, SPEC, np.random.Generator(np.random.PCG64(7)))
    b = write_events(again, tmp_path / "b.ndjson")
    assert a.read_bytes() == b.read_bytes()
    other = generate_events(city, SPEC, np.random.Generator(np.random.PCG64(8)))
    assert other != events
    lines = a.read_text().splitlines()
    assert len(lines) == len(events)
    first = json.loads(lines[0])
    assert lines[0] == json.dumps(first, separators=(",", ":"), sort_keys=True)
    keys = [(json.loads(x)["observed_at"], json.loads(x)["event_id"]) for x in lines]
    assert keys == sorted(keys)


def test_events_replay_into_the_store(events, tmp_path):
    from twin.sync.replay import replay
    from twin.sync.store import SQLiteStore

    p = write_events(events, tmp_path / "events.ndjson")
    with SQLiteStore(tmp_path / "s.sqlite") as s:
        r = replay(p, s, now=parse_time(SPEC.start_time))
        assert (r.applied, r.rejected, r.malformed) == (len(events), 0, 0)
        n_ent = len({e["entity_id"] for e in events})
        assert s.count() == n_ent
        assert s.count("incident") == SPEC.incidents


def test_real_city_small_preset():
    pytest.importorskip("twin.synth.city", reason="twin/synth/city.py not written yet")
    from twin.synth.city import make_city

    spec = PRESETS["small"]
    city = make_city(spec)
    evs = generate_events(city, spec, np.random.Generator(np.random.PCG64(0)))
    xyz = map_xyz(city, evs)
    x0, y0, x1, y1 = city.bounds
    assert np.all((xyz[:, 0] > x0) & (xyz[:, 0] < x1) & (xyz[:, 1] > y0) & (xyz[:, 1] < y1))
    bmap = {b.id: b for b in city.buildings}
    for e, p in zip(evs, xyz, strict=True):
        if e["status"] == "indoor":
            assert (
                bmap[e["attributes"]["building_id"]]
                .footprint.buffer(1e-3)
                .contains(Point(p[0], p[1]))
            )
    roads = shapely.union_all([r.centerline.buffer(r.width / 2) for r in city.roads])
    cars = [i for i, e in enumerate(evs) if e["entity_type"] == "vehicle"]
    assert np.all(shapely.distance(roads, shapely.points(xyz[cars, 0], xyz[cars, 1])) < 0.01)
    assert {e["entity_type"] for e in evs} == {"person", "vehicle", "asset", "incident"}
