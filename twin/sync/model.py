"""Entities and update events of the live twin, and the ONE validation path.

Every ingress (NDJSON replay, later HTTP, MQTT, WebSocket) turns its input into an
:class:`Event` through :func:`parse_event` (twin's own event form) or
:func:`from_ngsi_ld` (an NGSI-LD entity, as FIWARE platforms send), so every path
rejects the same things for the same reasons.

Event form (one JSON object; this is what ``events.ndjson`` holds)::

    {
      "event_id": "s0-P0001-000042",          # idempotency key, unique, <= 256 chars
      "entity_id": "urn:ngsi-ld:Person:P0001", # <= 256 chars
      "entity_type": "person",                 # one of ENTITY_TYPES
      "observed_at": "2026-05-01T08:00:01.000Z", # source time, ISO 8601 (or int epoch ns)
      "source": "synth/gps",                   # who says so (audit trail)
      "position": {"lon": 121.55, "lat": 29.87, "alt": 13.2},  # optional; WGS 84 (alt optional)
      "heading": 87.5,                          # optional; degrees clockwise from true north
      "speed": 1.3,                             # optional; m/s
      "status": "walking",                      # optional; <= 64 chars
      "attributes": {"building_id": "B0007", "floor": 3},       # optional JSON object
      "expected_revision": 4                    # optional; optimistic concurrency
    }

Positions are WGS 84 longitude/latitude in degrees and ellipsoidal height in metres
(EPSG:4979). Time inside twin is ``int`` epoch nanoseconds UTC. ``building_id`` and
``floor`` in ``attributes`` are lifted into :attr:`Event.building`/:attr:`Event.floor`
so the store can index them.

An event is a snapshot of the fields it carries: fields it leaves out keep their
previous value when the event is applied (``attributes`` are merged key by key).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from twin.errors import InputError

ENTITY_TYPES = ("person", "vehicle", "asset", "incident", "sensor")
INCIDENT_STATES = ("reported", "dispatched", "on_scene", "resolved", "closed")
# Allowed incident status transitions (a status may also repeat: a position or
# attribute update within the same state). A new incident must start "reported".
INCIDENT_TRANSITIONS: dict[str | None, frozenset[str]] = {
    None: frozenset({"reported"}),
    "reported": frozenset({"dispatched"}),
    "dispatched": frozenset({"on_scene"}),
    "on_scene": frozenset({"resolved"}),
    "resolved": frozenset({"closed"}),
    "closed": frozenset(),
}

MAX_EVENT_BYTES = 64 * 1024  # a raw event (one NDJSON line / one JSON object)
MAX_ATTRIBUTES_BYTES = 16 * 1024  # its attributes, compact JSON
MAX_ID_CHARS = 256
MIN_TIME_NS = 946_684_800_000_000_000  # 2000-01-01T00:00:00Z
MAX_FUTURE_NS = 86_400 * 1_000_000_000  # a day ahead of "now"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class EventError(InputError):
    """An event is malformed or not acceptable (the message says why)."""


@dataclass(slots=True)
class Event:
    """One validated update event. Time is epoch ns UTC; position WGS 84 (EPSG:4979)."""

    event_id: str
    entity_id: str
    entity_type: str
    observed_ns: int
    source: str = "unknown"
    lon: float | None = None
    lat: float | None = None
    alt: float | None = None
    heading: float | None = None
    speed: float | None = None
    status: str | None = None
    attributes: dict = field(default_factory=dict)
    expected_revision: int | None = None
    attributes_json: str = "{}"  # compact, key-sorted JSON of ``attributes``
    # placement on the model (set by a Placer before the store applies the event):
    # building and floor found from the position, ENU metres in the model's frame
    placed_building: str | None = None
    placed_floor: int | None = None
    x: float | None = None
    y: float | None = None
    z: float | None = None

    @property
    def building(self) -> str | None:
        """``attributes.building_id`` when the event says so, else the placed building."""
        b = self.attributes.get("building_id")
        return b if isinstance(b, str) else self.placed_building

    @property
    def floor(self) -> int | None:
        """``attributes.floor`` when the event says so, else the placed floor."""
        f = self.attributes.get("floor")
        if isinstance(f, int) and not isinstance(f, bool):
            return f
        return self.placed_floor

    @property
    def observed_at(self) -> str:
        return format_time(self.observed_ns)

    def to_dict(self) -> dict:
        """The event in twin's JSON form (inverse of :func:`parse_event`)."""
        d: dict = {
            "event_id": self.event_id,
            "entity_id": self.entity_id,
            "entity_type": self.entity_type,
            "observed_at": self.observed_at,
            "source": self.source,
        }
        if self.lon is not None:
            d["position"] = {"lon": self.lon, "lat": self.lat, "alt": self.alt}
        for k in ("heading", "speed", "status"):
            v = getattr(self, k)
            if v is not None:
                d[k] = v
        if self.attributes:
            d["attributes"] = self.attributes
        if self.expected_revision is not None:
            d["expected_revision"] = self.expected_revision
        return d


@dataclass(slots=True)
class Entity:
    """Current (or as-of) state of one entity as the store keeps it."""

    id: str
    type: str
    revision: int
    observed_ns: int
    lon: float | None = None
    lat: float | None = None
    alt: float | None = None
    heading: float | None = None
    speed: float | None = None
    status: str | None = None
    attributes: dict = field(default_factory=dict)
    source: str | None = None
    event_id: str | None = None
    building: str | None = None  # from attributes.building_id, else from placement
    floor: int | None = None  # from attributes.floor, else from placement
    x: float | None = None  # ENU metres in the model's local frame (when placed)
    y: float | None = None
    z: float | None = None

    @property
    def enu(self) -> tuple[float, float, float] | None:
        return None if self.x is None else (self.x, self.y, self.z)

    @property
    def observed_at(self) -> str:
        return format_time(self.observed_ns)


# ----------------------------------------------------------------------------- time
def format_time(ns: int) -> str:
    """Epoch ns UTC -> ``2026-05-01T08:00:01.000Z`` (millisecond precision)."""
    ms = ns // 1_000_000
    s, ms = divmod(ms, 1000)
    t = time.gmtime(s)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{ms:03d}Z"
    )


def parse_time(value, *, what: str = "observed_at") -> int:
    """ISO 8601 with a zone (``Z`` or ``+hh:mm``) or int epoch ns -> epoch ns UTC.

    Raises :class:`EventError` for anything else (naive times are refused: a time
    without a zone is ambiguous)."""
    if isinstance(value, bool):
        raise EventError(f"{what} must be an ISO 8601 string or epoch ns, got a boolean")
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        raise EventError(f"{what} must be an ISO 8601 string, got {type(value).__name__}")
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise EventError(f"{what} {value[:40]!r} is not an ISO 8601 time") from None
    if dt.tzinfo is None:
        raise EventError(f"{what} {value[:40]!r} has no time zone (add Z for UTC)")
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def now_ns() -> int:
    return time.time_ns()


def check_time(ns: int, now: int | None, *, what: str = "observed_at") -> int:
    """Refuse absurd times: before 2000 or more than a day after ``now`` (epoch ns)."""
    if ns < MIN_TIME_NS:
        raise EventError(f"{what} {format_time(ns)} is before 2000-01-01")
    limit = (now if now is not None else now_ns()) + MAX_FUTURE_NS
    if ns > limit:
        raise EventError(f"{what} {format_time(ns)} is more than a day in the future")
    return ns


# ----------------------------------------------------------------------------- fields
def _str(obj: dict, key: str, *, required: bool, limit: int = MAX_ID_CHARS) -> str | None:
    v = obj.get(key)
    if type(v) is str and 0 < len(v) <= limit:  # fast path
        return v
    if v is None:
        if required:
            raise EventError(f"missing field {key!r}")
        return None
    if not isinstance(v, str):
        raise EventError(f"{key} must be a string, got {type(v).__name__}")
    if required and not v:
        raise EventError(f"{key} is empty")
    if len(v) > limit:
        raise EventError(f"{key} is longer than {limit} characters")
    return v


def _num(v, key: str, lo: float, hi: float) -> float:
    if type(v) is float and lo <= v <= hi:  # fast path (NaN fails the comparison)
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise EventError(f"{key} must be a number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v):
        raise EventError(f"{key} is {v} (not finite)")
    if not lo <= v <= hi:
        raise EventError(f"{key}={v} is outside [{lo:g}, {hi:g}]")
    return v


def _opt_num(obj: dict, key: str, lo: float, hi: float) -> float | None:
    v = obj.get(key)
    return None if v is None else _num(v, key, lo, hi)


def _position(lon, lat, alt) -> tuple[float, float, float | None]:
    lon = _num(lon, "position.lon", -180.0, 180.0)
    lat = _num(lat, "position.lat", -90.0, 90.0)
    alt = None if alt is None else _num(alt, "position.alt", -12_000.0, 100_000.0)
    return lon, lat, alt


def _attributes(v) -> tuple[dict, str]:
    if v is None or v == {}:
        return {}, "{}"
    if not isinstance(v, dict):
        raise EventError(f"attributes must be a JSON object, got {type(v).__name__}")
    try:
        text = json.dumps(v, separators=(",", ":"), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise EventError(f"attributes are not plain JSON: {exc}") from None
    if len(text) > MAX_ATTRIBUTES_BYTES:
        raise EventError(f"attributes are {len(text)} bytes (limit {MAX_ATTRIBUTES_BYTES})")
    f = v.get("floor")
    if f is not None and (isinstance(f, bool) or not isinstance(f, int) or not -10 <= f <= 300):
        raise EventError(f"attributes.floor must be an integer in [-10, 300], got {f!r}")
    b = v.get("building_id")
    if b is not None and not isinstance(b, str):
        raise EventError("attributes.building_id must be a string")
    return v, text


def _load(obj) -> dict:
    if isinstance(obj, (bytes, bytearray, str)):
        if len(obj) > MAX_EVENT_BYTES:
            raise EventError(f"event is {len(obj)} bytes (limit {MAX_EVENT_BYTES})")
        try:
            obj = json.loads(obj)
        except (ValueError, UnicodeDecodeError) as exc:
            raise EventError(f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise EventError(f"an event must be a JSON object, got {type(obj).__name__}")
    return obj


# ----------------------------------------------------------------------------- parsing
def parse_event(obj, *, now: int | None = None) -> Event:
    """Validate one event (a dict, or its JSON text/bytes) and return an :class:`Event`.

    ``now`` (epoch ns, default the wall clock) bounds how far in the future
    ``observed_at`` may be. NGSI-LD entities (with ``id``/``type`` and no
    ``event_id``) are passed to :func:`from_ngsi_ld`. Raises :class:`EventError`
    with a precise reason; nothing else escapes for any JSON input.
    """
    obj = _load(obj)
    if "event_id" not in obj and "id" in obj and "type" in obj:
        return from_ngsi_ld(obj, now=now)
    event_id = _str(obj, "event_id", required=True)
    entity_id = _str(obj, "entity_id", required=True)
    etype = _str(obj, "entity_type", required=True)
    if etype not in ENTITY_TYPES:
        raise EventError(f"unknown entity_type {etype!r} (one of {', '.join(ENTITY_TYPES)})")
    if "observed_at" not in obj:
        raise EventError("missing field 'observed_at'")
    ns = check_time(parse_time(obj["observed_at"]), now)
    source = _str(obj, "source", required=False, limit=128) or "unknown"
    ev = Event(event_id, entity_id, etype, ns, source)
    pos = obj.get("position")
    if pos is not None:
        if not isinstance(pos, dict):
            raise EventError("position must be an object {lon, lat, alt}")
        if "lon" not in pos or "lat" not in pos:
            raise EventError("position needs lon and lat")
        ev.lon, ev.lat, ev.alt = _position(pos["lon"], pos["lat"], pos.get("alt"))
    ev.heading = _opt_num(obj, "heading", 0.0, 360.0)
    ev.speed = _opt_num(obj, "speed", 0.0, 1000.0)
    ev.status = _str(obj, "status", required=False, limit=64)
    ev.attributes, ev.attributes_json = _attributes(obj.get("attributes"))
    rev = obj.get("expected_revision")
    if rev is not None:
        if isinstance(rev, bool) or not isinstance(rev, int) or rev < 0:
            raise EventError(f"expected_revision must be a non-negative integer, got {rev!r}")
        ev.expected_revision = rev
    if etype == "incident" and ev.status is not None and ev.status not in INCIDENT_STATES:
        raise EventError(f"unknown incident status {ev.status!r}")
    return ev


_NGSI_TYPES = {t.capitalize(): t for t in ENTITY_TYPES}


def _ngsi_value(prop):
    return prop.get("value") if isinstance(prop, dict) else prop


def from_ngsi_ld(obj, *, now: int | None = None, event_id: str | None = None) -> Event:
    """Validate an NGSI-LD entity (normalized form) and return it as an :class:`Event`.

    Understood: ``id``, ``type`` (``Person``, ``Vehicle``, ``Asset``, ``Incident``,
    ``Sensor``; a full URI's last segment counts), ``location`` (GeoProperty Point,
    ``[lon, lat]`` or ``[lon, lat, alt]``), ``status``, ``heading``, ``speed``,
    ``source`` Properties; ``observedAt`` on the entity or on ``location``/``status``;
    ``eventId`` (else ``id@observedAt`` is the idempotency key). Other Properties
    become attributes (``buildingId`` -> ``building_id``).
    """
    obj = _load(obj)
    entity_id = _str(obj, "id", required=True)
    raw_type = _str(obj, "type", required=True)
    short = raw_type.rstrip("/").rsplit("/", 1)[-1].rsplit("#", 1)[-1]
    etype = _NGSI_TYPES.get(short) or (short if short in ENTITY_TYPES else None)
    if etype is None:
        raise EventError(f"unknown entity type {raw_type!r}")
    observed = obj.get("observedAt")
    for key in ("location", "status", "speed", "heading"):
        if observed is None and isinstance(obj.get(key), dict):
            observed = obj[key].get("observedAt")
    if observed is None:
        raise EventError("missing observedAt (on the entity or its location/status)")
    ns = check_time(parse_time(observed, what="observedAt"), now)
    eid = event_id or obj.get("eventId") or _ngsi_value(obj.get("eventId"))
    if not isinstance(eid, str) or not eid:
        eid = f"{entity_id}@{format_time(ns)}"
    src = _ngsi_value(obj.get("source"))
    ev = Event(eid, entity_id, etype, ns, src if isinstance(src, str) else "ngsi-ld")
    loc = obj.get("location")
    if loc is not None:
        geo = _ngsi_value(loc)
        if not isinstance(geo, dict) or geo.get("type") != "Point":
            raise EventError("location must be a GeoProperty whose value is a GeoJSON Point")
        c = geo.get("coordinates")
        if not isinstance(c, list) or len(c) not in (2, 3):
            raise EventError("location coordinates must be [lon, lat] or [lon, lat, alt]")
        ev.lon, ev.lat, ev.alt = _position(c[0], c[1], c[2] if len(c) == 3 else None)
    for key, lo, hi in (("heading", 0.0, 360.0), ("speed", 0.0, 1000.0)):
        v = _ngsi_value(obj.get(key))
        if v is not None:
            setattr(ev, key, _num(v, key, lo, hi))
    st = _ngsi_value(obj.get("status"))
    if st is not None:
        if not isinstance(st, str) or len(st) > 64:
            raise EventError("status must be a string of at most 64 characters")
        ev.status = st
    skip = {
        "id",
        "type",
        "location",
        "status",
        "heading",
        "speed",
        "source",
        "observedAt",
        "eventId",
        "@context",
        "expectedRevision",
        "revision",
    }
    attrs = {}
    for k, v in obj.items():
        if k not in skip:
            attrs[_SNAKE.get(k, k)] = _ngsi_value(v)
    ev.attributes, ev.attributes_json = _attributes(attrs)
    rev = _ngsi_value(obj.get("expectedRevision"))
    if rev is not None:
        if isinstance(rev, bool) or not isinstance(rev, int) or rev < 0:
            raise EventError(f"expectedRevision must be a non-negative integer, got {rev!r}")
        ev.expected_revision = rev
    if etype == "incident" and ev.status is not None and ev.status not in INCIDENT_STATES:
        raise EventError(f"unknown incident status {ev.status!r}")
    return ev


_SNAKE = {"buildingId": "building_id"}
_CAMEL = {v: k for k, v in _SNAKE.items()}


def to_ngsi_ld(entity: Entity | Event) -> dict:
    """An :class:`Entity` (or :class:`Event`) in NGSI-LD normalized form.

    ``location`` is a GeoProperty Point ``[lon, lat, alt]`` (WGS 84; ``[lon, lat]``
    when the altitude is unknown), each Property
    carries ``observedAt``; the revision travels as the ``revision`` Property."""
    observed = format_time(entity.observed_ns)
    etype = entity.type if isinstance(entity, Entity) else entity.entity_type
    eid = entity.id if isinstance(entity, Entity) else entity.entity_id
    out: dict = {"id": eid, "type": etype.capitalize(), "observedAt": observed}
    if entity.lon is not None:
        out["location"] = {
            "type": "GeoProperty",
            "value": {
                "type": "Point",
                "coordinates": [entity.lon, entity.lat]
                if entity.alt is None
                else [entity.lon, entity.lat, entity.alt],
            },
            "observedAt": observed,
        }
    for key in ("status", "heading", "speed"):
        v = getattr(entity, key)
        if v is not None:
            out[key] = {"type": "Property", "value": v, "observedAt": observed}
    for k, v in entity.attributes.items():
        out[_CAMEL.get(k, k)] = {"type": "Property", "value": v}
    if isinstance(entity, Entity):
        out["revision"] = {"type": "Property", "value": entity.revision}
    else:
        out["eventId"] = entity.event_id
    if entity.source:
        out["source"] = {"type": "Property", "value": entity.source}
    return out


__all__ = [
    "ENTITY_TYPES",
    "INCIDENT_STATES",
    "INCIDENT_TRANSITIONS",
    "Entity",
    "Event",
    "EventError",
    "format_time",
    "from_ngsi_ld",
    "parse_event",
    "parse_time",
    "to_ngsi_ld",
]
