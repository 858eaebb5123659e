"""Entities and update events of the live twin, and the ONE validation path.

Every ingress (NDJSON replay, later HTTP, MQTT, WebSocket) turns its input into an
:class:`Event` through :func:`parse_event` (twin's own event form) or
:func:`from_ngsi_ld` (an NGSI-LD entity, as FIWARE platforms send), so every path
rejects the same things for the same reasons.

Event form (one JSON object; this is what ``events.ndjson`` holds; an object with
other fields and no ``position`` is read as a flat record, as a CSV row is)::

    {
      "event_id": "s0-P0001-000042",          # idempotency key, unique, <= 256 chars
      "entity_id": "urn:ngsi-ld:Person:P0001", # <= 256 chars
      "entity_type": "person",                 # one of ENTITY_TYPES (any case)
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
(EPSG:4979) by default. A position in another CRS names it: ``{"x": 351200.5, "y":
3305120.2, "z": 12.0, "crs": "EPSG:32651"}`` (a UTM zone, CGCS2000 / Gauss-Krueger
EPSG:4547, ...) or ``{"lon": .., "lat": .., "crs": "EPSG:4490"}``; an event-level
``"crs"`` applies to a position without its own. A GeoJSON Point (``{"type": "Point",
"coordinates": [lon, lat, alt]}``) is accepted as ``position`` too. Such positions are
transformed to WGS 84 when the event is parsed (heights pass through as ellipsoidal
metres) and refused when they fall outside the CRS's area of use (with a margin of
:data:`AREA_MARGIN_DEG` degrees). Time inside twin is ``int`` epoch nanoseconds UTC.
``building_id`` and ``floor`` in ``attributes`` are lifted into
:attr:`Event.building`/:attr:`Event.floor` so the store can index them.

A GeoJSON Feature (Point geometry, event fields in ``properties``) is an event too, and
flat records (CSV rows) go through :func:`event_from_record`, which knows the column
names people write (``lon``/``lng``/``longitude``/``x``, ``time``/``timestamp``, ...).

An event is a snapshot of the fields it carries: fields it leaves out keep their
previous value when the event is applied (``attributes`` are merged key by key).
"""

from __future__ import annotations

import functools
import json
import math
import numbers
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from twin.errors import InputError, ParameterError

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
AREA_MARGIN_DEG = 0.1  # how far outside its CRS's area of use a position may lie
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
    """ISO 8601 with a zone (``Z`` or ``+hh:mm``), an aware :class:`datetime` (or
    pandas Timestamp), a NumPy ``datetime64`` (UTC) or int epoch ns (NumPy integers
    too) -> epoch ns UTC.

    Raises :class:`EventError` for anything else (naive times, strings or datetimes,
    are refused: a time without a zone is ambiguous)."""
    if type(value) is str:  # the common case first
        text = value
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:  # surrounding blanks, a lower-case z
            text = text.strip()
            if text[-1:] == "z":
                text = text[:-1] + "Z"
            try:
                dt = datetime.fromisoformat(text)
            except ValueError:
                raise EventError(f"{what} {value[:40]!r} is not an ISO 8601 time") from None
        if dt.tzinfo is None:
            raise EventError(f"{what} {value[:40]!r} has no time zone (add Z for UTC)")
        if len(text) > 27 and (m := _FRACTION.search(text)) is not None:
            # datetime keeps microseconds: the nanoseconds a clock wrote are added back
            delta = dt - _EPOCH
            sub = int(m.group(1)[6:9].ljust(3, "0"))
            us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
            return us * 1000 + sub
    elif isinstance(value, bool):
        raise EventError(f"{what} must be an ISO 8601 string or epoch ns, got a boolean")
    elif isinstance(value, int):
        return value
    elif isinstance(value, numbers.Integral):  # numpy integers
        return int(value)
    elif type(value).__name__ == "datetime64":  # numpy: UTC by convention
        ns = value.astype("datetime64[ns]").astype("int64")
        if value != value:  # NaT
            raise EventError(f"{what} is NaT")
        return int(ns)
    elif isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise EventError(
                f"{what} {value.isoformat()!r} has no time zone (use an aware datetime)"
            )
        dt = value
    else:
        raise EventError(f"{what} must be an ISO 8601 string, got {type(value).__name__}")
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
_FRACTION = re.compile(r"[T ]\d\d:?\d\d:?\d\d[.,](\d{7,})")


def parse_types(text: str | None) -> list[str] | None:
    """``person,vehicle`` (a query string's or a command line's list) -> the entity
    types, lower-cased; None for none given. An unknown type is a
    :class:`~twin.errors.ParameterError` naming the known ones."""
    if not text:
        return None
    types = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [t for t in types if t not in ENTITY_TYPES]
    if bad:
        raise ParameterError(f"unknown entity types {bad} (one of {', '.join(ENTITY_TYPES)})")
    return types


def parse_time_arg(value, *, what: str = "time") -> int:
    """A time a person or a query string gives -> epoch ns UTC.

    ISO 8601 with a zone, an aware :class:`datetime`, or a number of epoch units
    told apart by magnitude: below 1e11 seconds, below 1e14 milliseconds, below 1e17
    microseconds, else nanoseconds (``1777622400``, ``1777622400.5``,
    ``1777622400000`` and ``1777622400000000000`` are the same instant). Raises
    :class:`EventError` otherwise."""
    if isinstance(value, bool):
        raise EventError(f"{what} must be a time, got a boolean")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise EventError(f"{what} is {value} (not finite)")
        value = repr(value)  # the shortest decimal text: exact below
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        value = Decimal(value.strip())
    if isinstance(value, (int, Decimal)):
        a = abs(value)
        scale = 10**9 if a < 10**11 else 10**6 if a < 10**14 else 10**3 if a < 10**17 else 1
        ns = int(Decimal(value) * scale)
    else:
        ns = parse_time(value, what=what)
    if not -(2**63) < ns < 2**63:
        raise EventError(f"{what} {str(value)[:40]!r} is out of range")
    return ns


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
    if type(v) is str and 0 < len(v) <= limit and v.isprintable():  # fast path
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
    if v and not v.isprintable():
        raise EventError(f"{key} {v[:40]!r} contains control or unprintable characters")
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


_WGS84_NAMES = frozenset(
    {
        "EPSG:4326",
        "EPSG:4979",
        "OGC:CRS84",
        "OGC:CRS84H",
        "CRS84",
        "WGS84",
        "WGS 84",
        "URN:OGC:DEF:CRS:OGC:1.3:CRS84",
        "URN:OGC:DEF:CRS:OGC::CRS84",
        "URN:OGC:DEF:CRS:EPSG::4326",
        "URN:OGC:DEF:CRS:EPSG::4979",
        "HTTP://WWW.OPENGIS.NET/DEF/CRS/OGC/1.3/CRS84",
        "HTTP://WWW.OPENGIS.NET/DEF/CRS/EPSG/0/4326",
    }
)


def _crs_text(crs) -> str | None:
    """The CRS a position names (None: WGS 84). Accepts ``"EPSG:n"``, an EPSG
    integer, a URN/URL, WKT or a PROJ string."""
    if crs is None:
        return None
    if isinstance(crs, bool) or not isinstance(crs, (str, int)):
        raise EventError(f"position.crs must be a string such as 'EPSG:32651', got {crs!r:.40}")
    text = f"EPSG:{crs}" if isinstance(crs, int) else crs.strip()
    if not text or len(text) > 4096:
        raise EventError("position.crs is empty or too long")
    return None if text.upper() in _WGS84_NAMES else text


@functools.lru_cache(maxsize=64)
def _to_wgs84(text: str):
    """(transformer to EPSG:4979, z factor, area of use or None, label, geographic)
    for a CRS text; cached (a few CRSs serve a whole feed)."""
    from twin import crs as tc
    from twin.errors import CRSError

    try:
        c = tc.parse_crs(text)
    except CRSError as exc:
        raise EventError(f"position.crs: {exc.reason}") from None
    if c.is_geocentric or not (c.is_geographic or c.is_projected or c.is_compound):
        raise EventError(f"position.crs {text[:40]!r} is not a geographic or projected CRS")
    dst = tc.parse_crs(tc.GEODETIC_3D)
    tr, exact = tc._transformer(tc._as_3d(c).to_wkt(), dst.to_wkt())
    zf = tc._z_factor(c, "auto", exact)
    aou = c.area_of_use
    area = None if aou is None else (aou.west, aou.south, aou.east, aou.north)
    geographic = (c.sub_crs_list[0] if c.is_compound else c).is_geographic
    return tr, zf, area, tc.crs_label(c), geographic


def _finite(v, key: str) -> float:
    return _num(v, key, -1e300, 1e300)


def _position_crs(a, b, c, text: str) -> tuple[float, float, float | None]:
    """(a, b[, c]) in the CRS ``text`` -> WGS 84 lon, lat, ellipsoidal height."""
    tr, zf, area, label, geographic = _to_wgs84(text)
    ka, kb = ("position.lon", "position.lat") if geographic else ("position.x", "position.y")
    a, b = _finite(a, ka), _finite(b, kb)
    z = None if c is None else _finite(c, "position.alt")
    lon, lat, h = tr.transform(a, b, 0.0 if z is None else z * zf, errcheck=False)
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise EventError(f"position ({a:g}, {b:g}) cannot be transformed from {label}")
    if area is not None:
        w, s_, e, n = area
        m = AREA_MARGIN_DEG
        in_lon = (w - m <= lon <= e + m) if w <= e else (lon >= w - m or lon <= e + m)
        if not (in_lon and s_ - m <= lat <= n + m):
            raise EventError(
                f"position ({a:g}, {b:g}) lies at lon {lon:.4f}, lat {lat:.4f}, outside "
                f"the area of use of {label} (lon {w:g}..{e:g}, lat {s_:g}..{n:g})"
            )
    return _position(lon, lat, None if z is None else h)


def parse_position(pos, crs=None) -> tuple[float, float, float | None]:
    """A position object -> WGS 84 ``(lon, lat, alt or None)``.

    Forms: ``{"lon", "lat"[, "alt"]}``, ``{"x", "y"[, "z"], "crs"}``, a GeoJSON Point
    ``{"type": "Point", "coordinates": [x, y(, z)]}``; ``crs`` (the position's own
    ``"crs"`` first) names a CRS other than WGS 84. Raises :class:`EventError`."""
    if not isinstance(pos, dict):
        raise EventError("position must be an object {lon, lat, alt}")
    text = _crs_text(pos.get("crs", crs))
    if "coordinates" in pos:
        if pos.get("type", "Point") != "Point":
            raise EventError(f"position must be a Point, got a {pos.get('type')!r:.20}")
        co = pos["coordinates"]
        if not isinstance(co, list) or len(co) not in (2, 3):
            raise EventError("position coordinates must be [lon, lat] or [lon, lat, alt]")
        a, b, c = co[0], co[1], co[2] if len(co) == 3 else None
        xy = text is not None
    elif "lon" in pos or "lat" in pos:
        if "lon" not in pos or "lat" not in pos:
            raise EventError("position needs lon and lat")
        a, b, c = pos["lon"], pos["lat"], pos.get("alt")
        xy = False
    elif "x" in pos or "y" in pos:
        if "x" not in pos or "y" not in pos:
            raise EventError("position needs x and y")
        a, b = pos["x"], pos["y"]
        c = pos["z"] if pos.get("z") is not None else pos.get("alt")
        xy = True
    else:
        raise EventError("position needs lon and lat (or x, y and a crs)")
    if text is not None:
        return _position_crs(a, b, c, text)
    try:
        return _position(a, b, c)
    except EventError as exc:
        if xy and "outside" in exc.reason:
            raise EventError(exc.reason + " (projected x/y need the position's crs)") from None
        raise


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
#: The fields of twin's event form. An object with other top-level fields is read as
#: a flat record (:func:`event_from_record`: ``lon``/``lat`` columns, other fields
#: attributes) when it has no ``position``; with one, it is refused, so that a
#: misplaced field (``"lon"`` beside ``"position"``) is never silently dropped.
EVENT_FIELDS = frozenset(
    (
        "event_id",
        "entity_id",
        "entity_type",
        "observed_at",
        "source",
        "position",
        "crs",
        "heading",
        "speed",
        "status",
        "attributes",
        "expected_revision",
    )
)
_POSITION_KEYS = frozenset(("lon", "lat", "alt", "lng", "longitude", "latitude", "x", "y", "z"))


def _unknown_fields(obj: dict) -> EventError:
    extra = obj.keys() - EVENT_FIELDS
    names = ", ".join(repr(k) for k in sorted(map(str, extra)))
    hint = (
        '; a position goes in "position": {"lon": .., "lat": .., "alt": ..}'
        if extra & _POSITION_KEYS
        else '; other values go in "attributes"'
    )
    return EventError(f"unknown field(s) {names}{hint}")


def parse_event(obj, *, now: int | None = None) -> Event:
    """Validate one event (a dict, or its JSON text/bytes) and return an :class:`Event`.

    ``now`` (epoch ns, default the wall clock) bounds how far in the future
    ``observed_at`` may be. GeoJSON Features go to :func:`from_feature`; NGSI-LD
    entities (with ``id``/``type`` and no ``event_id``) to :func:`from_ngsi_ld`.
    Raises :class:`EventError` with a precise reason; nothing else escapes for any
    JSON input.
    """
    obj = _load(obj)
    if obj.get("type") == "Feature":
        return from_feature(obj, now=now)
    if "event_id" not in obj and "id" in obj and "type" in obj:
        return from_ngsi_ld(obj, now=now)
    event_id = _str(obj, "event_id", required=True)
    entity_id = _str(obj, "entity_id", required=True)
    etype = _str(obj, "entity_type", required=True)
    if not EVENT_FIELDS.issuperset(obj):
        if "position" not in obj:  # flat: {"lon": .., "lat": .., "floor": ..}
            return event_from_record(obj, now=now)
        raise _unknown_fields(obj)
    if etype not in ENTITY_TYPES:
        if etype.strip().lower() not in ENTITY_TYPES:  # "Vehicle" as NGSI-LD writes it
            raise EventError(f"unknown entity_type {etype!r} (one of {', '.join(ENTITY_TYPES)})")
        etype = etype.strip().lower()
    if "observed_at" not in obj:
        raise EventError("missing field 'observed_at'")
    ns = check_time(parse_time(obj["observed_at"]), now)
    source = _str(obj, "source", required=False, limit=128) or "unknown"
    ev = Event(event_id, entity_id, etype, ns, source)
    pos = obj.get("position")
    if pos is not None:
        if type(pos) is dict and "lon" in pos and "lat" in pos and "crs" not in pos:
            if "crs" not in obj:  # WGS 84 lon/lat: the common case, inline
                ev.lon, ev.lat, ev.alt = _position(pos["lon"], pos["lat"], pos.get("alt"))
            else:
                ev.lon, ev.lat, ev.alt = parse_position(pos, obj["crs"])
        else:
            ev.lon, ev.lat, ev.alt = parse_position(pos, obj.get("crs"))
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


# NGSI-LD attribute types (normalized form) -> the member holding their value
_NGSI_MEMBER = {
    "Property": "value",
    "GeoProperty": "value",
    "Relationship": "object",
    "LanguageProperty": "languageMap",
    "JsonProperty": "json",
    "ListProperty": "valueList",
    "ListRelationship": "objectList",
    "VocabProperty": "vocab",
}


def _ngsi_value(prop):
    """An attribute's value in normalized form (``{"type": "Property", "value": v}``,
    a Relationship's ``object``, ...) or simplified/keyValues form (the value itself,
    a GeoJSON geometry for a GeoProperty)."""
    if not isinstance(prop, dict):
        return prop
    t = prop.get("type")
    member = _NGSI_MEMBER.get(t) if isinstance(t, str) else None
    if member is not None and member in prop:
        return prop[member]
    if "value" in prop:
        return prop["value"]
    if "object" in prop:
        return prop["object"]
    return prop


def _ngsi_observed(obj: dict) -> object | None:
    """The entity's observation time: ``observedAt`` on the entity, else the latest
    ``observedAt`` of its attributes, else a ``dateObserved`` attribute."""
    if obj.get("observedAt") is not None:
        return obj["observedAt"]
    best = None
    for k, v in obj.items():
        if k != "@context" and isinstance(v, dict) and v.get("observedAt") is not None:
            ns = parse_time(v["observedAt"], what=f"{k}.observedAt")
            if best is None or ns > best:
                best = ns
    if best is not None:
        return best
    if obj.get("dateObserved") is not None:
        return _ngsi_value(obj.get("dateObserved"))
    return obj.get("modifiedAt")


def ngsi_notification_entities(obj: dict) -> list | None:
    """The entities of an NGSI-LD Notification (``{"type": "Notification",
    "notifiedAt": .., "data": [entities]}``, what a FIWARE broker's subscription
    POSTs), or None when ``obj`` is not one. An entity without any time of its own
    takes the notification's ``notifiedAt``."""
    if not (isinstance(obj, dict) and obj.get("type") == "Notification"):
        return None
    data = obj.get("data")
    if not isinstance(data, list):
        raise EventError("an NGSI-LD notification needs a data array")
    at = obj.get("notifiedAt")
    out = []
    for e in data:
        if at is not None and isinstance(e, dict) and "observedAt" not in e:
            try:
                own = _ngsi_observed(e)
            except EventError:
                own = "invalid"  # its own time is refused where it is parsed
            if own is None:
                e = {**e, "observedAt": at}
        out.append(e)
    return out


def from_ngsi_ld(obj, *, now: int | None = None, event_id: str | None = None) -> Event:
    """Validate an NGSI-LD entity and return it as an :class:`Event`.

    Normalized form (``{"type": "Property", "value": ..}``, GeoProperty,
    Relationship ``object``, LanguageProperty ...) and simplified / keyValues form
    (plain values; ``location`` a GeoJSON geometry) alike; ``@context`` is ignored.
    Understood: ``id``, ``type`` (``Person``, ``Vehicle``, ``Asset``, ``Incident``,
    ``Sensor``; a full URI's last segment counts), ``location`` (a Point, ``[lon,
    lat]`` or ``[lon, lat, alt]``, WGS 84), ``status``, ``heading``, ``speed``,
    ``source``; the time is ``observedAt`` on the entity, else the latest
    ``observedAt`` of its attributes, else ``dateObserved``, else ``modifiedAt``;
    ``eventId`` (else
    ``id@observedAt`` is the idempotency key). Other attributes become attributes
    (``buildingId`` -> ``building_id``; system attributes such as ``modifiedAt`` are
    dropped).
    """
    obj = _load(obj)
    entity_id = _str(obj, "id", required=True)
    raw_type = _str(obj, "type", required=True)
    short = raw_type.rstrip("/").rsplit("/", 1)[-1].rsplit("#", 1)[-1]
    etype = _NGSI_TYPES.get(short) or (short if short in ENTITY_TYPES else None)
    if etype is None:
        raise EventError(f"unknown entity type {raw_type!r}")
    observed = _ngsi_observed(obj)
    if observed is None:
        raise EventError("missing observedAt (on the entity or its location/status)")
    ns = check_time(parse_time(observed, what="observedAt"), now)
    eid = event_id or _ngsi_value(obj.get("eventId"))
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
        "createdAt",
        "modifiedAt",
        "deletedAt",
        "dateObserved",
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


NGSI_LD_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"


def to_ngsi_ld(entity: Entity | Event, *, key_values: bool = False, context=None) -> dict:
    """An :class:`Entity` (or :class:`Event`) in NGSI-LD normalized form.

    ``location`` is a GeoProperty Point ``[lon, lat, alt]`` (WGS 84; ``[lon, lat]``
    when the altitude is unknown), each Property
    carries ``observedAt``; the revision travels as the ``revision`` Property.
    ``key_values=True``: the simplified (keyValues) form instead, plain values and
    ``location`` a GeoJSON Point (``observedAt`` stays on the entity).
    ``context``: an ``@context`` to include (``True``: the NGSI-LD core context), as
    ``application/ld+json`` payloads carry it. :func:`from_ngsi_ld` reads both forms
    back."""
    out = _to_ngsi_ld(entity)
    if key_values:
        out = {k: _ngsi_value(v) for k, v in out.items()}
    if context:
        out = {"@context": NGSI_LD_CONTEXT if context is True else context, **out}
    return out


def _to_ngsi_ld(entity: Entity | Event) -> dict:
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


# ----------------------------------------------------------------------------- records
# column / property names people write for each event field (lower case)
_ALIASES = {
    "event_id": ("event_id", "eventid", "event", "event id"),
    "entity_id": ("entity_id", "entityid", "entity", "entity id", "id"),
    "entity_type": ("entity_type", "entitytype", "type", "entity type", "kind_of_entity"),
    "observed_at": (
        "observed_at",
        "observedat",
        "time",
        "timestamp",
        "datetime",
        "date_time",
        "observed",
        "t",
    ),
    "source": ("source",),
    "lon": ("lon", "lng", "long", "longitude"),
    "lat": ("lat", "latitude"),
    "x": ("x", "easting", "east"),
    "y": ("y", "northing", "north"),
    "alt": ("alt", "altitude", "z", "height", "elevation", "h"),
    "crs": ("crs", "srs", "epsg"),
    "heading": ("heading", "bearing", "course"),
    "speed": ("speed",),
    "status": ("status", "state"),
    "attributes": ("attributes",),
    "expected_revision": ("expected_revision", "expectedrevision"),
}
_ALIAS_OF = {a: k for k, names in _ALIASES.items() for a in names}
_INT = re.compile(r"^[+-]?\d+$")
_URN_TYPE = re.compile(r"^urn:ngsi-ld:([A-Za-z]+):", re.IGNORECASE)


def _cell(v):
    """A CSV cell -> number where it reads as one (int, else float), else the text."""
    if not isinstance(v, str):
        return v
    t = v.strip()
    if _INT.match(t):
        return int(t)
    if _NUMBER.match(t) or t.lower() in ("nan", "inf", "-inf", "+inf"):
        return float(t)
    return t


def event_from_record(rec: dict, *, now: int | None = None, crs=None, cells: bool = False) -> Event:
    """An :class:`Event` from a flat record: a CSV row or a GeoJSON Feature's
    properties. Column names are matched without case and with the usual aliases
    (``entity``/``id``, ``type``, ``time``/``timestamp``, ``lon``/``lng``/``longitude``
    or ``x``/``easting`` with ``crs``, ``alt``/``z``/``height``, ``bearing``...);
    ``building_id`` and ``floor`` columns and every unknown column become attributes.
    Empty cells are absent. A missing type is read from an NGSI-LD URN id
    (``urn:ngsi-ld:Vehicle:42``). A missing ``event_id`` becomes ``entity_id@observed_at``
    (replaying the same file twice is then a no-op). ``crs``: the CRS of positions
    whose record names none. ``cells=True``: values are text (CSV): numbers are read
    from it, and ``observed_at`` may be epoch seconds/ms/us/ns. Validated by
    :func:`parse_event`; raises :class:`EventError` with the reason."""
    d: dict = {}
    extra: dict = {}
    for k, v in rec.items():
        if v is None or (isinstance(v, str) and not v.strip()):
            continue
        key = str(k).strip().lstrip("\ufeff")
        field_ = _ALIAS_OF.get(key.lower())
        if field_ is None or field_ in d:
            extra[key] = _cell(v) if cells else v
        else:
            d[field_] = v
    if cells:
        for k in ("lon", "lat", "x", "y", "alt", "heading", "speed", "expected_revision"):
            if k in d:
                d[k] = _cell(d[k])
        if isinstance(d.get("crs"), str) and d["crs"].strip().isdigit():
            d["crs"] = int(d["crs"])
        t = d.get("observed_at")
        if isinstance(t, str) and _NUMBER.match(t.strip()):
            d["observed_at"] = parse_time_arg(t, what="observed_at")
        a = d.get("attributes")
        if isinstance(a, str):
            try:
                d["attributes"] = json.loads(a)
            except ValueError:
                raise EventError("attributes must be a JSON object") from None
    out: dict = {}
    for k in ("event_id", "entity_id", "entity_type", "observed_at", "source", "status"):
        if k in d:
            out[k] = d[k]
    for k in ("heading", "speed", "expected_revision"):
        if k in d:
            out[k] = d[k]
    if isinstance(out.get("entity_type"), str):
        out["entity_type"] = out["entity_type"].strip().lower()
    elif "entity_type" not in out and isinstance(out.get("entity_id"), str):
        m = _URN_TYPE.match(out["entity_id"])  # urn:ngsi-ld:Vehicle:42 -> vehicle
        if m is not None and m.group(1).lower() in ENTITY_TYPES:
            out["entity_type"] = m.group(1).lower()
    pos_crs = d.get("crs", crs)
    if "lon" in d or "lat" in d:
        out["position"] = {"lon": d.get("lon"), "lat": d.get("lat"), "alt": d.get("alt")}
    elif "x" in d or "y" in d:
        out["position"] = {"x": d.get("x"), "y": d.get("y"), "z": d.get("alt")}
    if "position" in out:
        out["position"] = {k: v for k, v in out["position"].items() if v is not None}
        if pos_crs is not None:
            out["position"]["crs"] = pos_crs
    attrs = dict(d.get("attributes") or {}) if isinstance(d.get("attributes"), dict) else None
    if attrs is None and "attributes" in d:
        raise EventError("attributes must be a JSON object")
    attrs = attrs or {}
    for k, v in extra.items():
        attrs.setdefault(k, v)
    if attrs:
        out["attributes"] = attrs
    if "event_id" not in out and "entity_id" in out and "observed_at" in out:
        ns = parse_time(out["observed_at"])
        out["event_id"] = f"{out['entity_id']}@{format_time(ns)}"
    return parse_event(out, now=now)


def from_feature(obj, *, now: int | None = None, crs=None) -> Event:
    """An :class:`Event` from a GeoJSON Feature: a Point (or null) geometry,
    ``[lon, lat(, alt)]`` WGS 84 as RFC 7946 says (``crs`` names another CRS, as an
    old-style GeoJSON ``crs`` member does), the event's fields in ``properties``
    (names as :func:`event_from_record` knows them); the Feature's ``id`` is the
    entity id when the properties have none."""
    obj = _load(obj)
    props = obj.get("properties")
    if props is None:
        props = {}
    if not isinstance(props, dict):
        raise EventError("feature properties must be a JSON object")
    rec = dict(props)
    keys = {str(k).lower() for k in rec}
    if not keys & set(_ALIASES["entity_id"]) and obj.get("id") is not None:
        rec["entity_id"] = str(obj["id"])
    geom = obj.get("geometry")
    if geom is not None:
        if not isinstance(geom, dict) or geom.get("type") != "Point":
            kind = geom.get("type") if isinstance(geom, dict) else type(geom).__name__
            raise EventError(f"feature geometry must be a Point, got {kind!r:.30}")
        co = geom.get("coordinates")
        if not isinstance(co, list) or len(co) not in (2, 3):
            raise EventError("Point coordinates must be [lon, lat] or [lon, lat, alt]")
        for k in ("lon", "lat", "x", "y", "alt", "longitude", "latitude", "z"):
            rec.pop(k, None)
        rec["x"], rec["y"] = co[0], co[1]
        if len(co) == 3:
            rec["alt"] = co[2]
        if crs is None:
            rec["lon"], rec["lat"] = rec.pop("x"), rec.pop("y")
    return event_from_record(rec, now=now, crs=crs)


__all__ = [
    "ENTITY_TYPES",
    "INCIDENT_STATES",
    "INCIDENT_TRANSITIONS",
    "Entity",
    "Event",
    "EventError",
    "event_from_record",
    "format_time",
    "from_feature",
    "ngsi_notification_entities",
    "from_ngsi_ld",
    "parse_event",
    "parse_position",
    "parse_time",
    "parse_time_arg",
    "to_ngsi_ld",
]
