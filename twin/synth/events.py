"""Live entity tracks for the synthetic city: people, vehicles, assets, incidents.

:func:`generate_events` simulates ``spec.duration`` seconds from ``spec.start_time``
and returns events in twin's event form (see :mod:`twin.sync.model`; NGSI-LD
friendly), :func:`write_events` writes them as NDJSON. Same city, spec and seed:
same events, same bytes.

Event shape::

    {"event_id": "s0-P0001-000042",            # "s{seed}-{local id}-{sequence}"
     "entity_id": "urn:ngsi-ld:Person:P0001",  # Person Pnnnn, Vehicle Vnnnn,
                                               # Asset Annnn, Incident Innnn
     "entity_type": "person",                  # person | vehicle | asset | incident
     "observed_at": "2026-05-01T08:00:01.000Z", # UTC, milliseconds
     "source": "synth/gps",                    # synth/gps | synth/indoor | synth/avl |
                                               # synth/iot | synth/dispatch
     "position": {"lon": .., "lat": .., "alt": ..},  # WGS 84 degrees, ellipsoidal metres
     "heading": 87.5, "speed": 1.31,           # movers: degrees from true north, m/s
     "status": "walking",                      # see below
     "attributes": {...}}

Every event carries the entity's full observable state (position, status,
attributes), so a late or duplicated delivery never leaves a hole.

The simulation runs in survey-CRS map coordinates (``city.crs``); positions go to
WGS 84 with :func:`twin.crs.transform` and headings are measured in the local ENU
frame (``city.frame``), so they are true bearings, not grid bearings.

* **People** (``status`` walking | indoor): walk the street network on the
  sidewalk (``width / 2 + 1.5`` m right of the centreline) at 1.0–1.6 m/s, choosing
  a street at random at each intersection; ``alt`` = terrain + 1.0 m. About a third
  walk into the nearest building (straight to its wall: nearer than any other
  building, so the path crosses none), take 15–40 s to go up (no fix meanwhile)
  and then move inside the footprint on an upper floor (``floor`` >= 1, ``alt`` =
  base_height + floor * floor_height + 1.5, attributes ``building_id`` and
  ``floor``, source ``synth/indoor``); some come out again later.
* **Vehicles** (``status`` driving | responding | on_scene): drive the network in the
  right-hand lane (``width / 4`` right of the centreline) at a cruise speed of
  8–14 m/s, slower through intersections, turning at random; ``alt`` = terrain +
  0.8 m. The first ``ceil(n / 4)`` are emergency vehicles (police, ambulance, fire).
* **Assets** (hydrants, CCTV cameras, streetlights; ``status`` ok | fault): fixed on
  the sidewalks; one event each at the start, then occasional faults and repairs.
* **Incidents** (``status`` reported -> dispatched -> on_scene -> resolved -> closed):
  at a street point or on a floor of a building; the nearest free emergency
  vehicle is dispatched, drives there (shortest path) and its arrival is the
  ``on_scene`` time. Delays are realistic minutes for long surveys and shrink with
  ``min(1, duration / 1800)`` so short surveys see whole lifecycles; states later
  than the end of the survey are not emitted.

Memory and time grow with (people + vehicles) * duration * rate events.
"""

from __future__ import annotations

import heapq
import json
import math
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry import LineString, Point
from shapely.ops import nearest_points

from twin.crs import GEODETIC_3D, transform
from twin.errors import OutputError, ParameterError
from twin.synth.model import City
from twin.synth.params import SurveySpec

PERSON_EYE = 1.0  # metres above ground of a person's position outdoors
PERSON_INDOOR = 1.5  # above the floor indoors
VEHICLE_CENTRE = 0.8
SIDEWALK = 1.5  # sidewalk centre beyond the carriageway edge (m)
EMERGENCY_KINDS = ("police", "ambulance", "fire_engine")
CIVIL_KINDS = ("car", "car", "car", "van", "bus", "taxi")
ASSET_KINDS = ("hydrant", "cctv", "streetlight")
ASSET_MOUNT = {"hydrant": 0.5, "cctv": 4.0, "streetlight": 6.0}
INCIDENT_KINDS = ("fire", "medical", "traffic_accident", "gas_leak", "public_disturbance")


# ----------------------------------------------------------------------------- network
class _Network:
    """The street graph: nodes at road ends and crossings, edges along centrelines."""

    def __init__(self, city: City):
        lines = [r.centerline for r in city.roads]
        if not lines:
            raise ParameterError("the city has no roads: cannot place people or vehicles")
        nodes: dict[tuple[float, float], int] = {}
        self.xy: list[tuple[float, float]] = []

        def node(p) -> int:
            key = (round(p[0], 2), round(p[1], 2))
            n = nodes.get(key)
            if n is None:
                n = nodes[key] = len(self.xy)
                self.xy.append((float(p[0]), float(p[1])))
            return n

        self.adj: dict[int, list[tuple[int, float]]] = {}
        self.edges: list[tuple[int, int, float]] = []  # a, b, road width
        for i, line in enumerate(lines):
            cuts = {0.0, line.length}
            for j, other in enumerate(lines):
                if i == j:
                    continue
                x = line.intersection(other)
                for g in getattr(x, "geoms", [x]):
                    if isinstance(g, Point):
                        cuts.add(float(line.project(g)))
            coords = list(line.coords)
            for k in range(1, len(coords) - 1):
                cuts.add(float(line.project(Point(coords[k]))))
            ds = sorted(cuts)
            pts = [line.interpolate(d).coords[0] for d in ds]
            for p0, p1, d0, d1 in zip(pts[:-1], pts[1:], ds[:-1], ds[1:], strict=True):
                if d1 - d0 < 0.5:
                    continue
                a, b = node(p0), node(p1)
                if a == b:
                    continue
                w = float(city.roads[i].width)
                self.edges.append((a, b, w))
                self.adj.setdefault(a, []).append((b, w))
                self.adj.setdefault(b, []).append((a, w))
        self.xy_arr = np.asarray(self.xy)
        # dead ends (road ends at the survey edge or the river): turn 8 m before them
        for n, nb in self.adj.items():
            if len(nb) == 1:
                m = nb[0][0]
                (x0, y0), (x1, y1) = self.xy[n], self.xy[m]
                length = math.hypot(x1 - x0, y1 - y0)
                pull = min(8.0, 0.4 * length)
                self.xy[n] = (x0 + (x1 - x0) * pull / length, y0 + (y1 - y0) * pull / length)
        self.xy_arr = np.asarray(self.xy)

    def length(self, a: int, b: int) -> float:
        (x0, y0), (x1, y1) = self.xy[a], self.xy[b]
        return math.hypot(x1 - x0, y1 - y0)

    def nearest(self, x: float, y: float) -> int:
        d = (self.xy_arr[:, 0] - x) ** 2 + (self.xy_arr[:, 1] - y) ** 2
        return int(np.argmin(d))

    def next_node(self, prev: int, at: int, rng: np.random.Generator) -> int:
        """A random onward node at ``at`` (no U-turn unless it is a dead end)."""
        options = [n for n, _ in self.adj[at] if n != prev] or [prev]
        return options[int(rng.integers(len(options)))]

    def width(self, a: int, b: int) -> float:
        for n, w in self.adj[a]:
            if n == b:
                return w
        return 10.0

    def tree(self, src: int) -> tuple[dict[int, float], dict[int, int]]:
        """Dijkstra from ``src``: road distance to every reachable node, predecessors."""
        dist = {src: 0.0}
        prev: dict[int, int] = {}
        heap = [(0.0, src)]
        while heap:
            d, n = heapq.heappop(heap)
            if d > dist.get(n, math.inf):
                continue
            for m, _ in self.adj[n]:
                nd = d + self.length(n, m)
                if nd < dist.get(m, math.inf):
                    dist[m] = nd
                    prev[m] = n
                    heapq.heappush(heap, (nd, m))
        return dist, prev

    @staticmethod
    def path(prev: dict[int, int], src: int, dst: int) -> list[int]:
        out = [dst]
        while out[-1] != src:
            out.append(prev[out[-1]])
        return out[::-1]


class _Walker:
    """An agent moving along network edges with a lateral offset (right of travel)."""

    def __init__(
        self, net: _Network, rng: np.random.Generator, offset_frac: float, offset_add: float
    ):
        self.net, self.rng = net, rng
        a, b, _ = net.edges[int(rng.integers(len(net.edges)))]
        if rng.random() < 0.5:
            a, b = b, a
        self.a, self.b = a, b
        self.s = float(rng.uniform(0, net.length(a, b)))
        self.route: list[int] = []  # pending nodes to visit (overrides random turns)
        self.offset_frac, self.offset_add = offset_frac, offset_add

    def advance(self, dist: float) -> None:
        net = self.net
        while True:
            L = net.length(self.a, self.b)
            if self.s + dist < L:
                self.s += dist
                return
            dist -= L - self.s
            prev, at = self.a, self.b
            nxt = self.route.pop(0) if self.route else net.next_node(prev, at, self.rng)
            if nxt == at:  # route says stay
                self.s = L
                return
            self.a, self.b, self.s = at, nxt, 0.0

    def to_node_remaining(self) -> float:
        return self.net.length(self.a, self.b) - self.s

    def pose(self) -> tuple[float, float, float, float]:
        """x, y (with the lateral offset), and the unit direction of travel."""
        (x0, y0), (x1, y1) = self.net.xy[self.a], self.net.xy[self.b]
        L = math.hypot(x1 - x0, y1 - y0)
        dx, dy = (x1 - x0) / L, (y1 - y0) / L
        off = self.offset_frac * self.net.width(self.a, self.b) + self.offset_add
        t = self.s
        return x0 + dx * t + dy * off, y0 + dy * t - dx * off, dx, dy


# ----------------------------------------------------------------------------- helpers
def _start_ns(spec: SurveySpec) -> int:
    try:
        dt = datetime.fromisoformat(spec.start_time)
    except ValueError:
        raise ParameterError(f"start_time {spec.start_time!r} is not ISO 8601") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(round(dt.timestamp() * 1000)) * 1_000_000


def _iso(ns: int) -> str:
    ms = ns // 1_000_000
    s, ms = divmod(ms, 1000)
    return datetime.fromtimestamp(s, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ms:03d}Z"


def _random_inside(poly, rng: np.random.Generator, margin: float = 1.0):
    inner = poly.buffer(-margin)
    if inner.is_empty:
        inner = poly
    x0, y0, x1, y1 = inner.bounds
    for _ in range(200):
        x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
        if inner.contains(Point(x, y)):
            return float(x), float(y), inner
    p = inner.representative_point()
    return float(p.x), float(p.y), inner


class _Rec:
    """Samples collected during the simulation (turned into events at the end)."""

    def __init__(self):
        self.rows: list[tuple] = []  # (t_ns, local_id, kind, x, y, z_or_nan, alt_add, dx, dy,
        #                               speed, status, source, attrs)

    def add(self, t, lid, kind, x, y, z, add, dx, dy, speed, status, source, attrs):
        self.rows.append((t, lid, kind, x, y, z, add, dx, dy, speed, status, source, attrs))


# ----------------------------------------------------------------------------- main
def generate_events(
    city: City, spec: SurveySpec, rng: np.random.Generator, *, rate_hz: float = 1.0
) -> list[dict]:
    """Simulate the city's live entities and return their events (see module doc).

    ``rate_hz`` is the position rate of every moving entity (1 Hz: one fix per
    second, each entity at its own sub-second phase). Events are sorted by
    ``observed_at`` then ``event_id``; all lie in ``[start, start + duration]``.
    """
    if not 0.01 <= rate_hz <= 50:
        raise ParameterError(f"rate_hz={rate_hz} must be in [0.01, 50]")
    t0 = _start_ns(spec)
    duration = float(spec.duration)
    n_ticks = int(math.floor(duration * rate_hz))
    dt = 1.0 / rate_hz
    net = _Network(city)
    x0b, y0b, x1b, y1b = city.bounds
    rec = _Rec()
    scale = min(1.0, duration / 1800.0)
    fh = float(city.floor_height)
    bpolys = [b.footprint for b in city.buildings]
    btree = shapely.STRtree(bpolys) if bpolys else None

    def tick_ns(phase: float, k: int) -> int:
        return t0 + int(round((phase + k * dt) * 1e9 / 1e6)) * 1_000_000

    # --- people ------------------------------------------------------------------------
    for p in range(spec.people):
        lid = f"P{p + 1:04d}"
        prng = np.random.Generator(np.random.PCG64(rng.integers(2**63)))
        w = _Walker(net, prng, 0.5, SIDEWALK)
        v = float(prng.uniform(1.0, 1.6))
        phase = float(prng.uniform(0, dt))
        visit = btree is not None and prng.random() < 0.35
        t_enter = prng.uniform(0.05, 0.5) * duration if visit else math.inf
        mode = "street"
        k = 0
        while k <= n_ticks and phase + k * dt <= duration:
            t = phase + k * dt
            if mode == "street":
                x, y, dx, dy = w.pose()
                rec.add(
                    tick_ns(phase, k),
                    lid,
                    "person",
                    x,
                    y,
                    math.nan,
                    PERSON_EYE,
                    dx,
                    dy,
                    v,
                    "walking",
                    "synth/gps",
                    {},
                )
                if t >= t_enter:
                    bi = int(btree.nearest(Point(x, y)))
                    b = city.buildings[bi]
                    t_enter = math.inf
                    if b.floors >= 2:
                        door = nearest_points(b.footprint.exterior, Point(x, y))[0]
                        mode, street_xy = "to_door", (x, y)
                        path = LineString([(x, y), (door.x, door.y)])
                        s_path = 0.0
                w.advance(v * dt)
            elif mode in ("to_door", "from_door"):
                s_path = min(s_path + v * dt, path.length)
                q = path.interpolate(s_path)
                L = max(path.length, 1e-9)
                (ax, ay), (bx, by) = path.coords[0], path.coords[-1]
                rec.add(
                    tick_ns(phase, k),
                    lid,
                    "person",
                    q.x,
                    q.y,
                    math.nan,
                    PERSON_EYE,
                    (bx - ax) / L,
                    (by - ay) / L,
                    v,
                    "walking",
                    "synth/gps",
                    {},
                )
                if s_path >= path.length:
                    if mode == "to_door":
                        floor = int(prng.integers(1, b.floors))
                        z = b.base_height + floor * fh + PERSON_INDOOR
                        ix, iy, inner = _random_inside(b.footprint, prng)
                        k += int(math.ceil(prng.uniform(15, 40) / dt))  # stairs / lift
                        t_exit = t + prng.uniform(0.3, 1.0) * duration
                        mode, target = "indoor", (ix, iy)
                        continue
                    mode = "street"
            elif mode == "indoor":
                tx, ty = target
                d = math.hypot(tx - ix, ty - iy)
                step = 0.7 * dt
                if d <= step:
                    ix, iy = tx, ty
                    for _ in range(20):  # next waypoint reachable in a straight line
                        nx, ny, _ = _random_inside(b.footprint, prng)
                        if inner.covers(LineString([(ix, iy), (nx, ny)])):
                            target = (nx, ny)
                            break
                    ddx = ddy = 0.0
                    spd = 0.0
                else:
                    ddx, ddy = (tx - ix) / d, (ty - iy) / d
                    ix, iy = ix + ddx * step, iy + ddy * step
                    spd = 0.7
                rec.add(
                    tick_ns(phase, k),
                    lid,
                    "person",
                    ix,
                    iy,
                    z,
                    0.0,
                    ddx,
                    ddy,
                    spd,
                    "indoor",
                    "synth/indoor",
                    {"building_id": b.id, "floor": floor},
                )
                if t >= t_exit:
                    k += int(math.ceil(prng.uniform(15, 40) / dt))
                    mode = "from_door"
                    path = LineString([(door.x, door.y), street_xy])
                    s_path = 0.0
                    continue
            k += 1

    # --- vehicles (simulated together: incidents dispatch them) -------------------------
    nv = spec.vehicles
    n_emerg = math.ceil(nv / 4) if nv else 0
    vrng = [np.random.Generator(np.random.PCG64(rng.integers(2**63))) for _ in range(nv)]
    walkers = [_Walker(net, vrng[i], 0.25, 0.0) for i in range(nv)]
    cruise = [float(vrng[i].uniform(8, 14)) for i in range(nv)]
    kinds = [
        EMERGENCY_KINDS[i % 3] if i < n_emerg else CIVIL_KINDS[int(vrng[i].integers(6))]
        for i in range(nv)
    ]
    vphase = [float(vrng[i].uniform(0, dt)) for i in range(nv)]
    vstate = ["driving"] * nv
    busy_until = [-1.0] * nv

    # --- incidents: drawn up front, dispatched during the vehicle loop ------------------
    irng = np.random.Generator(np.random.PCG64(rng.integers(2**63)))
    incidents = []
    for j in range(spec.incidents):
        t_rep = float(irng.uniform(0.02, 0.4) * duration)
        kind = INCIDENT_KINDS[int(irng.integers(len(INCIDENT_KINDS)))]
        attrs: dict = {"category": kind, "priority": int(irng.integers(1, 4))}
        if city.buildings and irng.random() < 0.5:
            b = city.buildings[int(irng.integers(len(city.buildings)))]
            floor = int(irng.integers(0, b.floors))
            x, y, _ = _random_inside(b.footprint, irng)
            z = b.base_height + floor * fh + PERSON_INDOOR
            attrs.update(location="building", building_id=b.id, floor=floor)
            add = 0.0
        else:
            a, bb, wdt = net.edges[int(irng.integers(len(net.edges)))]
            (xa, ya), (xb, yb) = net.xy[a], net.xy[bb]
            f = float(irng.uniform(0.2, 0.8))
            x, y, z, add = xa + (xb - xa) * f, ya + (yb - ya) * f, math.nan, 0.0
            attrs.update(location="street")
        incidents.append(
            {
                "lid": f"I{j + 1:04d}",
                "x": x,
                "y": y,
                "z": z,
                "add": add,
                "attrs": attrs,
                "t": {"reported": t_rep},
                "d_dispatch": float(irng.uniform(30, 120) * scale),
                "d_scene": float(irng.uniform(300, 1200) * scale),
                "d_close": float(irng.uniform(60, 300) * scale),
                "vehicle": None,
                "node": net.nearest(x, y),
            }
        )

    for k in range(n_ticks + 1):
        t_k = k * dt
        for inc in incidents:  # dispatch
            if "dispatched" in inc["t"] or t_k < inc["t"]["reported"] + inc["d_dispatch"]:
                continue
            free = [i for i in range(nv) if vstate[i] == "driving"]
            pref = [i for i in free if i < n_emerg] or free
            if not pref:
                continue
            # the free vehicle with the shortest drive; roads stop at the river, so the
            # scene node is the reachable node nearest to the incident
            ix, iy = inc["x"], inc["y"]
            best = None
            for i in pref:
                dist, prev = net.tree(walkers[i].b)
                reach = np.fromiter(dist.keys(), dtype=np.int64)
                gap = np.hypot(net.xy_arr[reach, 0] - ix, net.xy_arr[reach, 1] - iy)
                node = int(reach[np.argmin(gap)])
                cand = (round(float(gap.min()), 1), dist[node], i, node, prev)
                if best is None or cand[:3] < best[:3]:
                    best = cand
            _, _, vi, node, prev = best
            inc["t"]["dispatched"] = t_k
            inc["vehicle"], inc["node"] = vi, node
            wv = walkers[vi]
            wv.route = net.path(prev, wv.b, node)[1:] + [node]
            vstate[vi] = "responding"
        for i in range(nv):
            t = vphase[i] + t_k
            if t > duration:
                continue
            wv = walkers[i]
            st = vstate[i]
            if st == "on_scene" and t >= busy_until[i]:
                vstate[i] = st = "driving"
            if st == "on_scene":
                spd = 0.0
            else:
                # slow down into intersections (and on response routes keep going)
                rem = wv.to_node_remaining()
                spd = cruise[i] * (0.45 + 0.55 * min(1.0, rem / 25.0))
                if st == "responding":
                    spd = min(cruise[i] * 1.2, 16.0)
            x, y, dx, dy = wv.pose()
            attrs = {"kind": kinds[i]}
            rec.add(
                tick_ns(vphase[i], k),
                f"V{i + 1:04d}",
                "vehicle",
                x,
                y,
                math.nan,
                VEHICLE_CENTRE,
                dx,
                dy,
                spd,
                st,
                "synth/avl",
                attrs,
            )
            if st == "responding":
                inc = next(c for c in incidents if c["vehicle"] == i and "on_scene" not in c["t"])
                if not wv.route and wv.b == inc["node"] and wv.to_node_remaining() < spd * dt:
                    wv.s = net.length(wv.a, wv.b)
                    arrive = t + wv.to_node_remaining() / max(spd, 1e-6)
                    inc["t"]["on_scene"] = arrive
                    resolved = inc["t"]["on_scene"] + inc["d_scene"]
                    inc["t"]["resolved"] = resolved
                    inc["t"]["closed"] = resolved + inc["d_close"]
                    vstate[i] = "on_scene"
                    busy_until[i] = resolved
                    continue
            if vstate[i] != "on_scene":
                wv.advance(spd * dt)

    # --- assets --------------------------------------------------------------------------
    arng = np.random.Generator(np.random.PCG64(rng.integers(2**63)))
    for j in range(spec.assets):
        kind = ASSET_KINDS[j % 3]
        a, bb, wdt = net.edges[int(arng.integers(len(net.edges)))]
        (xa, ya), (xb, yb) = net.xy[a], net.xy[bb]
        L = math.hypot(xb - xa, yb - ya)
        f = float(arng.uniform(0.1, 0.9))
        off = wdt / 2 + (0.5 if kind == "hydrant" else 1.0)
        side = 1.0 if arng.random() < 0.5 else -1.0
        dx, dy = (xb - xa) / L, (yb - ya) / L
        x = xa + (xb - xa) * f + side * dy * off
        y = ya + (yb - ya) * f - side * dx * off
        lid = f"A{j + 1:04d}"
        attrs = {"kind": kind}
        ph = float(arng.uniform(0, 1.0))
        rec.add(
            t0 + int(ph * 1000) * 1_000_000,
            lid,
            "asset",
            x,
            y,
            math.nan,
            ASSET_MOUNT[kind],
            math.nan,
            math.nan,
            math.nan,
            "ok",
            "synth/iot",
            attrs,
        )
        if arng.random() < min(0.6, 0.15 + duration / 3600):
            tf = float(arng.uniform(0.1, 0.8) * duration)
            rec.add(
                t0 + int(tf * 1000) * 1_000_000,
                lid,
                "asset",
                x,
                y,
                math.nan,
                ASSET_MOUNT[kind],
                math.nan,
                math.nan,
                math.nan,
                "fault",
                "synth/iot",
                attrs,
            )
            tr = tf + float(arng.uniform(0.2, 1.5) * duration)
            if tr <= duration:
                rec.add(
                    t0 + int(tr * 1000) * 1_000_000,
                    lid,
                    "asset",
                    x,
                    y,
                    math.nan,
                    ASSET_MOUNT[kind],
                    math.nan,
                    math.nan,
                    math.nan,
                    "ok",
                    "synth/iot",
                    attrs,
                )

    # --- incident events -------------------------------------------------------------------
    for inc in incidents:
        attrs = dict(inc["attrs"])
        for state in ("reported", "dispatched", "on_scene", "resolved", "closed"):
            t = inc["t"].get(state)
            if t is None or t > duration:
                break
            if state == "dispatched":
                attrs["responder"] = f"urn:ngsi-ld:Vehicle:V{inc['vehicle'] + 1:04d}"
            rec.add(
                t0 + int(round(t * 1000)) * 1_000_000,
                inc["lid"],
                "incident",
                inc["x"],
                inc["y"],
                inc["z"],
                inc["add"],
                math.nan,
                math.nan,
                math.nan,
                state,
                "synth/dispatch",
                dict(attrs),
            )

    return _to_events(rec, city, spec)


def _to_events(rec: _Rec, city: City, spec: SurveySpec) -> list[dict]:
    """Terrain heights, WGS 84 positions and true headings for all samples at once."""
    rows = rec.rows
    if not rows:
        return []
    x = np.array([r[3] for r in rows])
    y = np.array([r[4] for r in rows])
    z = np.array([r[5] for r in rows])
    add = np.array([r[6] for r in rows])
    x0, y0, x1, y1 = city.bounds
    x = np.clip(x, x0 + 0.01, x1 - 0.01)
    y = np.clip(y, y0 + 0.01, y1 - 0.01)
    outdoor = np.isnan(z)
    if outdoor.any():
        z[outdoor] = np.asarray(city.terrain(x[outdoor], y[outdoor]), dtype=np.float64)
    z = z + add
    geo = transform(np.column_stack([x, y, z]), city.crs, GEODETIC_3D)
    # true heading: direction of travel measured in the local ENU frame
    dxy = np.array([(r[7], r[8]) for r in rows])
    moving = np.isfinite(dxy[:, 0])
    heading = np.full(len(rows), np.nan)
    if moving.any():
        p = np.column_stack([x[moving], y[moving], z[moving]])
        q = p.copy()
        q[:, :2] += dxy[moving]
        pe = city.frame.from_crs(p, city.crs)
        qe = city.frame.from_crs(q, city.crs)
        d = qe - pe
        heading[moving] = np.degrees(np.arctan2(d[:, 0], d[:, 1])) % 360.0
    names = {"person": "Person", "vehicle": "Vehicle", "asset": "Asset", "incident": "Incident"}
    seq: dict[str, int] = {}
    events = []
    for i, r in enumerate(rows):
        lid, kind = r[1], r[2]
        n = seq[lid] = seq.get(lid, 0) + 1
        ev = {
            "event_id": f"s{spec.seed}-{lid}-{n:06d}",
            "entity_id": f"urn:ngsi-ld:{names[kind]}:{lid}",
            "entity_type": kind,
            "observed_at": _iso(r[0]),
            "source": r[11],
            "position": {
                "lon": round(float(geo[i, 0]), 8),
                "lat": round(float(geo[i, 1]), 8),
                "alt": round(float(geo[i, 2]), 3),
            },
        }
        if moving[i]:
            h = float(heading[i]) if r[9] > 0 else None
            if h is not None:
                ev["heading"] = round(h, 1) % 360.0
            ev["speed"] = round(float(r[9]), 2)
        ev["status"] = r[10]
        if r[12]:
            ev["attributes"] = r[12]
        ev["_t"] = r[0]
        events.append(ev)
    events.sort(key=lambda e: (e["_t"], e["event_id"]))
    for e in events:
        del e["_t"]
    return events


def write_events(events: list[dict], path: str | os.PathLike) -> Path:
    """Write events as NDJSON (one compact, key-sorted JSON object per line), sorted
    by ``observed_at`` then ``event_id``; written to a temporary name, then renamed."""
    from twin.fileio import atomic_path

    p = Path(path)
    ordered = sorted(events, key=lambda e: (e["observed_at"], e["event_id"]))
    try:
        with atomic_path(p) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for e in ordered:
                f.write(
                    json.dumps(
                        e,
                        separators=(",", ":"),
                        sort_keys=True,
                        ensure_ascii=False,
                        allow_nan=False,
                    )
                )
                f.write("\n")
    except OSError as exc:
        raise OutputError(f"cannot write events: {exc.strerror}", path=p) from None
    except ValueError as exc:  # NaN/inf in an event: never written as invalid JSON
        raise OutputError(f"an event is not valid JSON: {exc}", path=p) from None
    return p


__all__ = ["generate_events", "write_events"]
