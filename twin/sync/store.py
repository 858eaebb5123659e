"""The live store: current state of every entity plus its append-only history.

Semantics (the same for every backend; tests in ``tests/sync/test_store.py``):

* **Idempotency.** An event whose ``event_id`` was seen before (in an earlier batch
  or earlier in the same batch) is a ``duplicate``: a no-op. Rejected events are not
  "seen": a corrected event may be sent again with the same id.
* **Ordering.** Events of one entity are ordered by ``(observed_at, event_id)``. An
  event older than the entity's current state is ``stale``: it goes into history
  (where as-of reads find it) but does not overwrite the current state. So the
  final state does not depend on delivery order (for events that carry the full
  state; a late *partial* event is kept in history but does not back-fill).
* **Merge.** An applied event overwrites the fields it carries; fields it leaves
  out keep their value; ``attributes`` are merged key by key. Each applied event
  raises the entity's ``revision`` by one (the first one makes revision 1).
* **Optimistic concurrency.** An event with ``expected_revision`` is ``rejected``
  unless it equals the entity's current revision (0 for an unknown entity).
* **Type.** An event whose ``entity_type`` differs from the stored type is rejected.
* **Incidents** move ``reported -> dispatched -> on_scene -> resolved -> closed``
  (see :data:`twin.sync.model.INCIDENT_TRANSITIONS`); an applied event that makes
  another transition is rejected with the reason. The first time each state is
  reached is kept in the ``incidents`` table (timers: time to dispatch, to close)
  with the responder (``attributes.responder``); history is the audit trail
  (who = ``source``, what = the new state, when = ``observed_at``).
* **Atomicity.** :meth:`Store.apply` runs one transaction per batch: a batch is
  visible entirely or not at all, and the outcomes are returned only after commit.

Each outcome is an :class:`Outcome` ``(event_id, result, revision, reason)`` with
``result`` one of ``applied``, ``stale``, ``duplicate``, ``rejected``.
"""

from __future__ import annotations

import gc
import json
import math
import os
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import NamedTuple

from twin.errors import InputError, OutputError, ParameterError
from twin.sync.model import (
    INCIDENT_TRANSITIONS,
    Entity,
    Event,
    EventError,
    format_time,
    parse_event,
)

# sqlite3 binds None through its adaptation protocol: a failed __adapt__/__conform__
# lookup per NULL (about 0.25 us each, a fifth of the cost of binding an entity
# row). An adapter registered for NoneType makes that one dict hit; None still binds
# as NULL. Process-wide, changing nothing but the speed.
sqlite3.register_adapter(type(None), {}.get)

APPLIED, STALE, DUPLICATE, REJECTED = "applied", "stale", "duplicate", "rejected"
SCHEMA_VERSION = 5  # 5: history indexed in sweeps (4: row by row; 3: entities per batch)
DEFAULT_CELL_DEG = 0.01  # indicator grid cell, degrees (about 1.1 km of latitude)
DEFAULT_BUCKET_S = 60  # indicator time bucket, seconds


class Outcome(NamedTuple):
    """What happened to one event. ``revision`` is the entity's revision after it."""

    event_id: str | None
    result: str  # applied | stale | duplicate | rejected
    revision: int | None = None
    reason: str | None = None


class Store(ABC):
    """The interface every backend implements (:class:`SQLiteStore`, and
    :class:`~twin.sync.pgstore.PostgresStore` for several processes sharing one twin).

    Times are epoch nanoseconds UTC (``int``) or ISO 8601 strings; positions WGS 84.
    """

    @abstractmethod
    def apply(self, events: Iterable[Event | dict], *, now: int | None = None) -> list[Outcome]:
        """Apply a batch atomically; one :class:`Outcome` per input event, in order."""

    @abstractmethod
    def state(self, entity_id: str, at=None) -> Entity | None:
        """Current state, or the state as of ``at`` (time travel); None if unknown then."""

    @abstractmethod
    def history(self, entity_id: str, t0=None, t1=None) -> list[dict]:
        """History rows of one entity with ``t0 <= observed <= t1``, oldest first."""

    @abstractmethod
    def query(
        self, bbox=None, types=None, building=None, floor=None, status=None, at=None
    ) -> list[Entity]:
        """Entities matching every given filter (now, or as of ``at``)."""

    @abstractmethod
    def count(self) -> int:
        """Number of entities."""

    @abstractmethod
    def cursor(self) -> int:
        """The newest change cursor (grows with every history row; 0 when empty)."""

    @abstractmethod
    def changes(self, since: int = 0, limit: int = 10_000) -> list[tuple[int, Entity]]:
        """Applied changes after cursor ``since``, oldest first, as (cursor, state)."""

    @abstractmethod
    def close(self) -> None:
        """Release the backend."""

    # indicators: both backends keep the same table; only the SQL dialect differs
    cell_deg: float = DEFAULT_CELL_DEG
    bucket_s: int = DEFAULT_BUCKET_S
    _ph = "?"  # the backend's parameter placeholder

    def _rows(self, sql: str, args: Sequence) -> list[tuple]:
        raise NotImplementedError

    def indicators(self, t0=None, t1=None, *, types=None, cells=None) -> list[dict]:
        """The city's vital signs per cell and entity type over a time window.

        Kept incrementally by every applied event (no scan of history): per time
        bucket (``bucket_s``, default 60 s) and key (cell, type, open) the net change
        in the number of entities, the number of applied events and the incident
        timers. A cell is the entity's ``attributes.district`` when it has one
        (``district/<name>``), else its grid cell of ``cell_deg`` degrees
        (``grid/<ix>/<iy>`` with ``ix = floor(lon / cell_deg)``), else ``none``.
        The window is widened to whole buckets: ``t0`` (epoch ns or ISO 8601; None =
        since the first event) to ``t1`` (None = now). Per (cell, type) with anything
        to say, a dict:

        * ``count``: entities there at the end of the window (the state the live twin
          had applied; late events that arrived stale do not move it back in time);
          ``density_per_km2`` for grid cells (``count`` / cell area on the WGS 84
          sphere), ``bbox`` of a grid cell;
        * ``open``: incidents there still reported, dispatched or on scene;
        * ``events`` applied in the window and ``rate_per_s`` (events / window);
        * ``dispatched`` / ``mean_dispatch_s`` and ``on_scene`` / ``mean_response_s``:
          incidents dispatched (on scene) in the window and the mean time from their
          report, in seconds (None without any).

        ``types``/``cells``: keep only these. Cost grows with the number of
        (bucket, cell, type) rows up to ``t1``, not with events."""
        ph, bucket_ns = self._ph, self.bucket_s * 1_000_000_000
        b0 = None if t0 is None else _time_ns(t0) // bucket_ns
        b1 = None if t1 is None else _time_ns(t1) // bucket_ns
        lo = -(2**62) if b0 is None else b0
        hi = 2**62 if b1 is None else b1
        sql = (
            "SELECT cell, type, sum(d_count), sum(is_open * d_count), "
            f"sum(CASE WHEN bucket >= {ph} THEN events ELSE 0 END), "
            f"sum(CASE WHEN bucket >= {ph} THEN n_dispatch ELSE 0 END), "
            f"sum(CASE WHEN bucket >= {ph} THEN sum_dispatch_s ELSE 0 END), "
            f"sum(CASE WHEN bucket >= {ph} THEN n_response ELSE 0 END), "
            f"sum(CASE WHEN bucket >= {ph} THEN sum_response_s ELSE 0 END), "
            f"min(bucket), max(bucket) FROM indicators WHERE bucket <= {ph}"
        )
        args: list = [lo] * 5 + [hi]
        if types is not None:
            types = [types] if isinstance(types, str) else list(types)
            sql += f" AND type IN ({', '.join([ph] * len(types))})"
            args += types
        if cells is not None:
            cells = [cells] if isinstance(cells, str) else list(cells)
            sql += f" AND cell IN ({', '.join([ph] * len(cells))})"
            args += cells
        sql += " GROUP BY cell, type ORDER BY cell, type"
        rows = self._rows(sql, args)
        if not rows:
            return []
        first = min(r[9] for r in rows) if b0 is None else b0
        last = max(r[10] for r in rows) if b1 is None else b1
        window_s = max(1, last - first + 1) * self.bucket_s
        out = []
        for cell, typ, count, n_open, events, nd, sd, nr, sr, _b, _e in rows:
            count, n_open, events = int(count or 0), int(n_open or 0), int(events or 0)
            nd, nr = int(nd or 0), int(nr or 0)
            if not (count or events or nd or nr):
                continue
            d = {
                "cell": cell,
                "type": typ,
                "count": count,
                "open": n_open,
                "events": events,
                "rate_per_s": events / window_s,
                "dispatched": nd,
                "mean_dispatch_s": sd / nd if nd else None,
                "on_scene": nr,
                "mean_response_s": sr / nr if nr else None,
                "density_per_km2": None,
                "bbox": None,
            }
            if cell.startswith("grid/"):
                _, ix, iy = cell.split("/")
                c = self.cell_deg
                x0, y0 = int(ix) * c, int(iy) * c
                d["bbox"] = [x0, y0, x0 + c, y0 + c]
                d["density_per_km2"] = count / cell_area_km2(x0, y0, c)
            out.append(d)
        return out

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entities (
    k INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
    revision INTEGER NOT NULL, observed_ns INTEGER NOT NULL, event_id TEXT NOT NULL,
    source TEXT, lon REAL, lat REAL, alt REAL, heading REAL, speed REAL, status TEXT,
    attributes TEXT NOT NULL, building TEXT, floor INTEGER, x REAL, y REAL, z REAL
);
CREATE INDEX IF NOT EXISTS entities_building ON entities (building, floor)
    WHERE building IS NOT NULL;
CREATE TABLE IF NOT EXISTS history (
    k INTEGER NOT NULL, observed_ns INTEGER NOT NULL, event_id TEXT NOT NULL,
    revision INTEGER NOT NULL, outcome TEXT NOT NULL, source TEXT,
    lon REAL, lat REAL, alt REAL, heading REAL, speed REAL, status TEXT,
    attributes TEXT NOT NULL, building TEXT, floor INTEGER, x REAL, y REAL, z REAL
);
-- history rows up to meta 'indexed' by entity and time (r: the history rowid),
-- written in sorted sweeps; newer rows are found through memory
CREATE TABLE IF NOT EXISTS history_index (
    k INTEGER NOT NULL, observed_ns INTEGER NOT NULL, event_id TEXT NOT NULL,
    r INTEGER NOT NULL, PRIMARY KEY (k, observed_ns, event_id)
) WITHOUT ROWID;
-- the newest history rowid, kept by every batch: one row, read with every read
-- that needs to know whether another connection wrote (cheaper than max(rowid))
CREATE TABLE IF NOT EXISTS head (one INTEGER PRIMARY KEY CHECK (one = 1), last INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events_seen (event_id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY, reported_ns INTEGER, dispatched_ns INTEGER, on_scene_ns INTEGER,
    resolved_ns INTEGER, closed_ns INTEGER, responder TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS indicators (
    bucket INTEGER NOT NULL, cell TEXT NOT NULL, type TEXT NOT NULL, is_open INTEGER NOT NULL,
    d_count INTEGER NOT NULL, events INTEGER NOT NULL, n_dispatch INTEGER NOT NULL,
    sum_dispatch_s REAL NOT NULL, n_response INTEGER NOT NULL, sum_response_s REAL NOT NULL,
    PRIMARY KEY (bucket, cell, type, is_open)
) WITHOUT ROWID;
"""

# The state an event carries, stored alike in entities and history.
_STATE = ("source", "lon", "lat", "alt", "heading", "speed", "status", "attributes")
_PLACE = ("building", "floor", "x", "y", "z")
# Entity rows in memory: the columns of _COLS in this order, then the integer key k.
# ``k`` (rowid of ``entities``) keys history, so its index stays small.
_COLS = ("id", "type", "revision", "observed_ns", "event_id", *_STATE, *_PLACE)
_SEL = ", ".join(_COLS)
_HIST_COLS = ("k", "observed_ns", "event_id", "revision", "outcome", *_STATE, *_PLACE)
_INS_ENTITY = f"INSERT INTO entities ({_SEL}, k) VALUES ({', '.join('?' * len(_COLS))}, ?)"
_INS_HIST = (
    f"INSERT INTO history ({', '.join(_HIST_COLS)}) VALUES ({', '.join('?' * len(_HIST_COLS))})"
)
# an applied history row from an in-memory entity row's state (_COLS[2:], then k)
_INS_HIST_ROW = (
    f"INSERT INTO history ({', '.join(_HIST_COLS)}) VALUES (?17, ?2, ?3, ?1, "
    "'applied', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
)
_row_state = itemgetter(slice(2, 19))  # what _INS_HIST_ROW binds of an entity row
# the same for _ROWS rows per statement (fewer statement steps from Python)
_ROWS = 50
_INS_HIST_ROWS = f"INSERT INTO history ({', '.join(_HIST_COLS)}) VALUES " + ", ".join(
    f"(?{17 * i + 17}, ?{17 * i + 2}, ?{17 * i + 3}, ?{17 * i + 1}, 'applied', "
    + ", ".join(f"?{17 * i + c}" for c in range(4, 17))
    + ")"
    for i in range(_ROWS)
)
_key0, _key18 = itemgetter(0), itemgetter(18)  # the entity key of a history / entity row
_row19 = itemgetter(slice(0, 19))  # what _INS_ENTITY binds of an entity row
_INS_ENTITY_ROWS = f"INSERT INTO entities ({_SEL}, k) VALUES " + ", ".join(
    [f"({', '.join('?' * (len(_COLS) + 1))})"] * _ROWS
)


#: Default checkpoint interval of :class:`SQLiteStore`: at least this many history
#: rows, and at least this many per entity (a checkpoint rewrites every entity
#: changed since the last one, so its cost per event falls as the interval grows,
#: while :meth:`SQLiteStore.query` overlays up to an interval of tail rows).
CHECKPOINT_ROWS = 200_000
CHECKPOINT_ROWS_PER_ENTITY = 4
#: ``history_index`` is updated every this many history rows or this many per
#: entity, whichever is more (and at every checkpoint): bounds the rows that reads
#: find through memory; an update sweeps the index once (at a million entities, every
#: 200,000 rows would write most of its pages five times as often).
INDEX_ROWS = 200_000
INDEX_ROWS_PER_ENTITY = 1


def _insert_rows(cur, one: str, many: str, rows: list) -> None:
    """Insert ``rows`` (sequences of the values ``one`` binds) with ``many``
    (``_ROWS`` rows to a statement, their values one after the other), the rest
    with ``one``."""
    n = len(rows) - len(rows) % _ROWS
    if n:
        flat = chain.from_iterable
        cur.executemany(many, [list(flat(rows[j : j + _ROWS])) for j in range(0, n, _ROWS)])
    if n < len(rows):
        cur.executemany(one, rows[n:])


# The tail: the newest applied history row of every entity with one after the
# checkpoint (applied rows of an entity are appended in revision order).
_TAIL = (
    "SELECT k, max(rowid) AS r FROM history WHERE rowid > {ck} AND outcome = 'applied' GROUP BY k"
)
_STATE_SET = (
    "revision, observed_ns, event_id, source, lon, lat, alt, heading, speed, status, "
    "attributes, building, floor, x, y, z"
)
_H_STATE = ", ".join("h." + c for c in _STATE_SET.split(", "))
# An index update: history rows (?1, ?2] into history_index, sorted (one sweep)
_MERGE = (
    "INSERT INTO history_index SELECT k, observed_ns, event_id, rowid FROM history "
    "WHERE rowid > ?1 AND rowid <= ?2 ORDER BY k, observed_ns, event_id"
)
# The checkpoint (after an index update): entities (keys in a JSON list) take their
# newest history row (the newest by time is always applied: an older event is
# stale), one index seek each
_CHECKPOINT = (
    f"UPDATE entities SET ({_STATE_SET}) = (SELECT {_STATE_SET} FROM history WHERE "
    "rowid = (SELECT r FROM history_index WHERE k = entities.k "
    "ORDER BY observed_ns DESC, event_id DESC LIMIT 1)) "
    "WHERE k IN (SELECT value FROM json_each(?1))"
)
# the checkpoint of entities whose current row is in memory (_COLS + k), by key
_UPSERT_ENTITY, _UPSERT_ENTITY_ROWS = (
    f"{sql} ON CONFLICT (k) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _STATE_SET.split(", "))
    for sql in (_INS_ENTITY, _INS_ENTITY_ROWS)
)
_CK_SQL = "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'checkpoint'"
_IX_SQL = "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'indexed'"
# the newest row of entity keys (a JSON list) by history_index: _COLS[2:], then k
_LATEST_INDEXED = (
    f"SELECT {_H_STATE}, j.value FROM json_each(?1) AS j JOIN history AS h ON h.rowid = "
    "(SELECT r FROM history_index WHERE k = j.value ORDER BY observed_ns DESC, "
    "event_id DESC LIMIT 1)"
)
# states of history rows (rowids in a JSON list): _COLS[2:] order, then k
_STATE_OF_ROWS = (
    f"SELECT {_STATE_SET}, k FROM history WHERE rowid IN (SELECT value FROM json_each(?1))"
)
_new = tuple.__new__
_ASOF_COLS = (
    "?2, ?3, revision, observed_ns, event_id, source, lon, lat, alt, heading, speed, "
    "status, attributes, building, floor, x, y, z, outcome"
)
_LAST_ROW = "(SELECT last FROM head)"
# an entity row, its key and the newest history row (one snapshot)
_POINT = f"SELECT {_SEL}, k, {_LAST_ROW} FROM entities WHERE id = ?"
# As-of reads: the columns in Entity's field order (from revision), the outcome
# (16) and the newest history row (17); by id also the entity's key and type.
_ASOF_FIELDS = ", ".join(
    "h." + c
    for c in (
        "revision observed_ns lon lat alt heading speed status attributes source event_id "
        "building floor x y z outcome"
    ).split()
)
_BY_TIME = "ORDER BY i.observed_ns DESC, i.event_id DESC LIMIT 1"
# indexed rows: one seek of history_index
_ASOF_K = (
    f"SELECT {_ASOF_FIELDS}, {_LAST_ROW} FROM history_index AS i JOIN history AS h "
    f"ON h.rowid = i.r WHERE i.k = ?1 AND i.observed_ns <= ?2 {_BY_TIME}"
)
_ASOF_BY_ID = (
    f"SELECT {_ASOF_FIELDS}, {_LAST_ROW}, e.k, e.type FROM entities AS e "
    "JOIN history_index AS i ON i.k = e.k JOIN history AS h ON h.rowid = i.r "
    f"WHERE e.id = ?1 AND i.observed_ns <= ?2 {_BY_TIME}"
)
# with the entity's rows not indexed yet (rowids in a JSON list, ?3)
_ASOF_TAIL = (
    f"SELECT {_ASOF_FIELDS}, {_LAST_ROW} FROM history AS h WHERE rowid IN (SELECT r FROM "
    "(SELECT r FROM history_index AS i WHERE k = ?1 AND observed_ns <= ?2 "
    f"{_BY_TIME}) UNION ALL SELECT value FROM json_each(?3)) AND observed_ns <= ?2 "
    "ORDER BY observed_ns DESC, event_id DESC LIMIT 1"
)
# the newest applied row of key ?1 at or before ?4 (tail rowids ?5), id ?2, type ?3
_ASOF_APPLIED = (
    f"SELECT {_ASOF_COLS} FROM history WHERE rowid IN (SELECT r FROM (SELECT i.r FROM "
    "history_index AS i JOIN history AS x ON x.rowid = i.r WHERE i.k = ?1 AND "
    f"i.observed_ns <= ?4 AND x.outcome = 'applied' {_BY_TIME}) UNION ALL "
    "SELECT value FROM json_each(?5)) AND observed_ns <= ?4 AND outcome = 'applied' "
    "ORDER BY observed_ns DESC, event_id DESC LIMIT 1"
)
# the state of one history row, and the newest indexed row of key ?1 (_COLS[2:])
_STATE_OF_ROW = f"SELECT {_STATE_SET} FROM history WHERE rowid = ?1"
_LATEST_K = (
    f"SELECT {_STATE_SET} FROM history WHERE rowid = (SELECT r FROM history_index "
    "WHERE k = ?1 ORDER BY observed_ns DESC, event_id DESC LIMIT 1)"
)
# one history row for an as-of read (as _ASOF_K)
_ASOF_ROW = f"SELECT {_ASOF_FIELDS}, {_LAST_ROW} FROM history AS h WHERE rowid = ?1"
_STATE_COL = {"reported": 1, "dispatched": 2, "on_scene": 3, "resolved": 4, "closed": 5}
# history rows read back in entity-row column order, then outcome (index 18)
_HIST_SEL = (
    "e.id, e.type, h.revision, h.observed_ns, h.event_id, h.source, h.lon, h.lat, "
    "h.alt, h.heading, h.speed, h.status, h.attributes, h.building, h.floor, h.x, h.y, h.z, "
    "h.outcome"
)


_UPSERT_INDICATORS = (
    "INSERT INTO indicators VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}) "
    "ON CONFLICT (bucket, cell, type, is_open) DO UPDATE SET "
    "d_count = indicators.d_count + excluded.d_count, "
    "events = indicators.events + excluded.events, "
    "n_dispatch = indicators.n_dispatch + excluded.n_dispatch, "
    "sum_dispatch_s = indicators.sum_dispatch_s + excluded.sum_dispatch_s, "
    "n_response = indicators.n_response + excluded.n_response, "
    "sum_response_s = indicators.sum_response_s + excluded.sum_response_s"
)
_UPSERT_INDICATORS_PG = _UPSERT_INDICATORS.format(p="%s")
_UPSERT_INDICATORS = _UPSERT_INDICATORS.format(p="?")


def _indicator_settings(meta: dict, cell_deg, bucket_s, where) -> tuple[float, int]:
    """Grid cell size and time bucket: stored with the twin when it is created; a
    different value asked of an existing twin is an error (its deltas use the old)."""
    out = []
    for key, asked, default, conv in (
        ("cell_deg", cell_deg, DEFAULT_CELL_DEG, float),
        ("bucket_s", bucket_s, DEFAULT_BUCKET_S, int),
    ):
        if asked is not None and not (conv(asked) > 0 and math.isfinite(conv(asked))):
            raise ParameterError(f"{key} must be > 0, got {asked!r}")
        stored = meta.get(key)
        if stored is not None:
            v = conv(stored)
            if asked is not None and conv(asked) != v:
                raise ParameterError(f"this twin keeps indicators with {key}={v}, not {asked}")
        else:
            v = conv(asked) if asked is not None else default
        out.append(v)
    return out[0], out[1]


def parse_batch(events: Iterable[Event | dict], now: int | None) -> tuple[list, list]:
    """A batch as ``(events, outcomes)``: raw dicts/JSON parsed and validated with
    :func:`~twin.sync.model.parse_event` (``now`` bounds future timestamps); an invalid
    one becomes None with its ``rejected`` outcome, the others' outcomes None (to be
    decided). :class:`Event` objects are trusted as built, except that an id holding a
    NUL character (which neither SQLite's JSON functions nor PostgreSQL's text keep)
    is rejected."""
    evs: list[Event | None] = list(events)
    outcomes: list[Outcome | None] = [None] * len(evs)
    for i, e in enumerate(evs):
        if type(e) is Event:
            if "\x00" in e.event_id or "\x00" in e.entity_id:
                evs[i] = None
                outcomes[i] = Outcome(
                    e.event_id, REJECTED, None, "event_id or entity_id contains a NUL character"
                )
            continue
        try:
            evs[i] = parse_event(e, now=now)
        except EventError as exc:
            evs[i] = None
            eid = e.get("event_id") if isinstance(e, dict) else None
            outcomes[i] = Outcome(eid if isinstance(eid, str) else None, REJECTED, None, exc.reason)
    return evs, outcomes


def check_bbox(bbox) -> tuple[float, float, float, float]:
    """A query's ``bbox``: four finite numbers (lon_min, lat_min, lon_max, lat_max) in
    WGS 84 degrees with min <= max, else :class:`ParameterError`."""
    try:
        if isinstance(bbox, str | bytes):
            raise TypeError
        x0, y0, x1, y1 = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise ParameterError(
            f"bbox must be four numbers (lon_min, lat_min, lon_max, lat_max), got {bbox!r}"
        ) from None
    if not all(map(math.isfinite, (x0, y0, x1, y1))) or x0 > x1 or y0 > y1:
        raise ParameterError(f"bbox must be finite with min <= max, got {bbox!r}")
    return x0, y0, x1, y1


def _time_ns(t) -> int | None:
    """A time argument of a read (``at``, ``t0``, ``t1``) -> epoch ns, or None. Numbers
    are epoch seconds, ms, µs or ns told apart by magnitude, as
    :func:`~twin.sync.model.parse_time_arg` says (epoch ns of any date after 1973 are
    taken as they are); a time that is not one raises :class:`ParameterError`."""
    if t is None:
        return None
    if type(t) is int and 10**17 <= t < 2**63:
        return t
    from twin.sync.model import parse_time_arg

    try:
        return parse_time_arg(t, what="time")
    except EventError as exc:
        raise ParameterError(str(exc)) from None


def _entity(row) -> Entity:
    a = row[12]
    return Entity(
        row[0],
        row[1],
        row[2],
        row[3],
        row[6],
        row[7],
        row[8],
        row[9],
        row[10],
        row[11],
        {} if a == "{}" else json.loads(a),
        row[5],
        row[4],
        row[13],
        row[14],
        row[15],
        row[16],
        row[17],
    )


class Plan(NamedTuple):
    """What a batch writes, decided by :func:`plan_batch` (rows as in ``_COLS`` + k)."""

    hist: list  # stale events: history rows (_HIST_COLS order)
    hist_applied: list  # applied but superseded within the batch: entity rows [:19]
    new_seen: list  # event ids to remember
    dirty: list  # cache rows changed by the batch (their final state)
    created: list  # cache rows of new entities (also in dirty)
    incident_rows: list  # (id, reported..closed ns, responder) first-reach times
    next_k: int  # the next free entity key
    ind: dict  # bucket -> {(cell x, cell y, type, open): [d_count, events, n, s, n, s]}
    transitions: list  # (incident id, new state, observed ns, bucket, indicator key)


_OPEN = frozenset(("reported", "dispatched", "on_scene"))
_floor = math.floor


def ind_key(row: list, inv_cell: float) -> tuple:
    """The indicator key of an entity row: (cell x, cell y, type, open). The cell is
    ``attributes.district`` (a string, then y is None) when the entity has one, else
    the grid cell ``(floor(lon / cell_deg), floor(lat / cell_deg))``, else
    ``(None, None)`` (no position); ``open`` is 1 for an incident in an open state
    (reported, dispatched, on scene). The store's loop inlines the common case."""
    a, typ = row[12], row[1]
    op = 1 if typ == "incident" and row[11] in _OPEN else 0
    if a != "{}" and '"district"' in a:
        d = json.loads(a).get("district")
        if isinstance(d, str):
            return (d, None, typ, op)
    if row[6] is None:
        return (None, None, typ, op)
    return (_floor(row[6] * inv_cell), _floor(row[7] * inv_cell), typ, op)


def cell_name(key: tuple) -> str:
    """The text form of an indicator key's cell (see :meth:`Store.indicators`)."""
    x, y = key[0], key[1]
    if y is not None:
        return f"grid/{x}/{y}"
    return "none" if x is None else f"district/{x}"


def cell_area_km2(lon0: float, lat0: float, size: float) -> float:
    """Area of a ``size``-degree grid cell with south-west corner (lon0, lat0), km²,
    on the sphere of the WGS 84 mean radius."""
    r = 6371.0088
    s0 = math.sin(math.radians(max(-90.0, lat0)))
    s1 = math.sin(math.radians(min(90.0, lat0 + size)))
    return r * r * math.radians(size) * (s1 - s0)


def indicator_rows(plan: Plan, reported: dict) -> list[tuple]:
    """The indicator deltas of a planned batch as rows (bucket, cell, type, open,
    d_count, events, n_dispatch, sum_dispatch_s, n_response, sum_response_s), with
    the incident timers completed from ``reported`` (incident id -> reported ns)."""
    ind = plan.ind
    for iid, state, ns, bucket, key in plan.transitions:
        rep = reported.get(iid)
        if rep is None:
            continue
        acc = ind[bucket][key]
        if state == "dispatched":
            acc[2] += 1
            acc[3] += (ns - rep) / 1e9
        else:
            acc[4] += 1
            acc[5] += (ns - rep) / 1e9
    return [
        (b, cell_name(k), k[2], k[3], *acc)
        for b, bmap in ind.items()
        for k, acc in bmap.items()
        if acc[0] or acc[1] or acc[2] or acc[4]
    ]


def plan_batch(
    evs: list,
    outcomes: list,
    seen: set,
    cache: dict,
    next_k: int,
    token: int,
    inv_cell: float = 100.0,
    bucket_ns: int = 60_000_000_000,
) -> Plan:
    """The semantics of one batch, shared by every backend: decides each event's
    outcome (filling ``outcomes``), merges applied events into the cached current
    rows ``cache`` (entity id -> row list: ``_COLS``, k, three marks, then the
    entity's indicator key or None; updated in place) and returns what to write.
    ``seen``: event ids already stored (updated); ``next_k``: the key for the next
    new entity; ``token``: a number unique to this batch (marks rows touched by it);
    ``inv_cell`` (1 / grid cell size in degrees) and ``bucket_ns`` (time bucket)
    shape the indicator deltas. Pure Python, no I/O."""
    ind: dict = {}  # bucket -> {key: acc}
    b_lo = b_hi = bucket = 0  # the bounds (ns) of the current bucket
    bmap: dict = {}
    bget = bmap.get
    transitions: list = []
    hist: list[tuple] = []  # stale events
    hist_applied: list[tuple] = []  # applied, superseded within the batch (row order)
    new_seen: list[str] = []
    # rows touched by this batch; marks in each row (no per-event set lookups):
    # row[19] == token: dirty in this batch, row[20]: wide update, row[21]: created
    dirty: list[list] = []
    created: list[list] = []
    incident_rows: list[tuple] = []
    cache_get, seen_add, seen_append = cache.get, seen.add, new_seen.append
    for i, e in enumerate(evs):
        if e is None:
            continue
        eid = e.event_id
        if eid in seen:
            outcomes[i] = _new(Outcome, (eid, DUPLICATE, None, None))
            continue
        ent_id, ns, etype = e.entity_id, e.observed_ns, e.entity_type
        cur_row = cache_get(ent_id)
        if cur_row is not None:
            rev = cur_row[2]
            if cur_row[1] != etype:
                outcomes[i] = Outcome(
                    eid, REJECTED, rev, f"entity {ent_id} is a {cur_row[1]}, not a {etype}"
                )
                continue
        else:
            rev = 0
        if e.expected_revision is not None and e.expected_revision != rev:
            outcomes[i] = Outcome(
                eid,
                REJECTED,
                rev,
                f"revision conflict: expected {e.expected_revision}, current {rev}",
            )
            continue
        attrs_json = e.attributes_json
        if cur_row is not None and (ns < cur_row[3] or (ns == cur_row[3] and eid <= cur_row[4])):
            # stale: into history as received, the state stays as it is
            seen.add(eid)
            new_seen.append(eid)
            hist.append(
                (
                    cur_row[18],
                    e.observed_ns,
                    eid,
                    rev,
                    STALE,
                    e.source,
                    e.lon,
                    e.lat,
                    e.alt,
                    e.heading,
                    e.speed,
                    e.status,
                    attrs_json,
                    e.building,
                    e.floor,
                    e.x,
                    e.y,
                    e.z,
                )
            )
            outcomes[i] = Outcome(eid, STALE, rev)
            continue
        if etype == "incident":
            old = cur_row[11] if cur_row is not None else None
            new = e.status if e.status is not None else old
            if cur_row is None and new is None:
                outcomes[i] = Outcome(eid, REJECTED, rev, "a new incident needs status 'reported'")
                continue
            if new != old and new not in INCIDENT_TRANSITIONS.get(old, ()):
                outcomes[i] = Outcome(
                    eid, REJECTED, rev, f"illegal incident transition {old or '(new)'} -> {new}"
                )
                continue
            if new != old:
                slots = [None] * 5
                slots[_STATE_COL[new] - 1] = e.observed_ns
                resp = e.attributes.get("responder")
                incident_rows.append((e.entity_id, *slots, resp if isinstance(resp, str) else None))
                if new in ("dispatched", "on_scene"):
                    transitions.append([e.entity_id, new, ns])
        # applied: merge into the current row
        if cur_row is None:
            old_key = None
            row = [
                e.entity_id,
                e.entity_type,
                1,
                e.observed_ns,
                eid,
                e.source,
                e.lon,
                e.lat,
                e.alt,
                e.heading,
                e.speed,
                e.status,
                attrs_json,
                e.building,
                e.floor,
                e.x,
                e.y,
                e.z,
                next_k,
                token,
                0,
                token,
                None,
            ]
            next_k += 1
            created.append(row)
            dirty.append(row)
            cache[ent_id] = row
        else:
            row = cur_row
            old_key = row[22]
            if old_key is None:
                old_key = ind_key(row, inv_cell)
            if row[19] == token:  # an earlier state of this batch: keep it
                hist_applied.append(row[:19])
            else:
                row[19] = token
                dirty.append(row)
            row[2] += 1
            row[3] = ns
            row[4] = eid
            src = e.source
            if src != row[5]:
                row[5] = src
                row[20] = token
            lon = e.lon
            if lon is not None:  # (item stores: a quarter of a slice store's time)
                row[6] = lon
                row[7] = e.lat
                row[8] = e.alt
                row[15] = e.x
                row[16] = e.y
                row[17] = e.z
            v = e.heading
            if v is not None:
                row[9] = v
            v = e.speed
            if v is not None:
                row[10] = v
            if e.status is not None and e.status != row[11]:
                row[11] = e.status
                row[20] = token
            if e.attributes:
                row[20] = token
                if row[12] != "{}":
                    merged = json.loads(row[12])
                    merged.update(e.attributes)
                    attrs_json = json.dumps(merged, separators=(",", ":"), sort_keys=True)
                    b, f = merged.get("building_id"), merged.get("floor")
                else:
                    b, f = e.building, e.floor
                row[12] = attrs_json
                if e.x is not None:  # placed: the model says where, unless told
                    b = b if "building_id" in e.attributes else e.placed_building
                    f = f if "floor" in e.attributes else e.placed_floor
                row[13], row[14] = b, f
            elif e.x is not None:  # placed from the position: building and floor
                b, f = e.placed_building, e.placed_floor
                if b != row[13] or f != row[14]:
                    row[13], row[14] = b, f
                    row[20] = token
        # indicators: one more event in this bucket, and a move between keys
        # (ind_key inlined for the common case: a grid cell, not an incident)
        lon = row[6]
        if lon is None or row[1] == "incident" or (row[12] != "{}" and '"district"' in row[12]):
            key = ind_key(row, inv_cell)
        else:
            kx, ky = _floor(lon * inv_cell), _floor(row[7] * inv_cell)
            if old_key is not None and old_key[0] == kx and old_key[1] == ky and not old_key[3]:
                key = old_key  # the same cell (and type: it never changes)
            else:
                key = (kx, ky, row[1], 0)
        row[22] = key
        if not b_lo <= ns < b_hi:  # another time bucket (rare: events come in time order)
            bucket = ns // bucket_ns
            b_lo, b_hi = bucket * bucket_ns, (bucket + 1) * bucket_ns
            bmap = ind.get(bucket)
            if bmap is None:
                bmap = ind[bucket] = {}
            bget = bmap.get
        acc = bget(key)
        if acc is None:
            acc = bmap[key] = [0, 0, 0, 0.0, 0, 0.0]
        acc[1] += 1
        if key is not old_key and key != old_key:
            acc[0] += 1
            if old_key is not None:
                acc = bget(old_key)
                if acc is None:
                    acc = bmap[old_key] = [0, 0, 0, 0.0, 0, 0.0]
                acc[0] -= 1
        if transitions and len(transitions[-1]) == 3:  # made by this event
            transitions[-1] += [bucket, key]
        seen_add(eid)
        seen_append(eid)
        outcomes[i] = _new(Outcome, (eid, APPLIED, row[2], None))
    return Plan(
        hist,
        hist_applied,
        new_seen,
        dirty,
        created,
        incident_rows,
        next_k,
        ind,
        transitions,
    )


def _upgrade(con: sqlite3.Connection, path: Path) -> None:
    """Check the store's schema version and upgrade older ones in place: version 3
    (entities rewritten by every batch, so they hold the state of every history row)
    gets its newest history row as checkpoint; version 4 (history indexed row by
    row) has its rows up to the checkpoint written to ``history_index`` and the old
    index dropped. Any other version is refused."""
    meta = dict(con.execute("SELECT key, value FROM meta"))
    if meta.get("schema_version") == str(SCHEMA_VERSION) and "indexed" in meta:
        return
    _retry_locked(lambda: con.execute("BEGIN IMMEDIATE"))
    try:
        v = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        if v in ("3", "4"):
            if v == "3":
                last = con.execute("SELECT coalesce(max(rowid), 0) FROM history").fetchone()[0]
                con.execute("INSERT OR REPLACE INTO meta VALUES ('checkpoint', ?)", (str(last),))
            con.execute("DELETE FROM history_index")
            ck = con.execute(_CK_SQL).fetchone()[0]
            con.execute(_MERGE, (-1, ck))
            con.execute("INSERT OR REPLACE INTO meta VALUES ('indexed', ?)", (str(ck),))
            con.execute("DROP INDEX IF EXISTS history_entity_time")
            con.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
            )
        elif v == str(SCHEMA_VERSION):
            con.execute("INSERT OR IGNORE INTO meta VALUES ('checkpoint', '0')")
            # history_index holds the rows up to the checkpoint unless it says more
            con.execute(
                "INSERT OR IGNORE INTO meta SELECT 'indexed', value FROM meta "
                "WHERE key = 'checkpoint'"
            )
        else:
            raise InputError(
                f"store schema version {v}: this twin reads version {SCHEMA_VERSION} "
                "(and upgrades versions 3 and 4)",
                path=path,
            )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


@contextmanager
def _gc_paused():
    """The cyclic garbage collector waits inside (a batch applied, a checkpoint):
    they allocate a few objects per event or entity (none in a cycle), and
    collections in the middle would walk the whole heap, the entity cache included,
    for nothing (about a third of the planning time otherwise; a tenth of a
    million-entity checkpoint)."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def _retry_locked(fn, seconds: float = 30.0):
    """Run ``fn`` again while SQLite says the database is locked (another process
    is creating the same store, or switching it to WAL), up to ``seconds``."""
    import time

    end = time.monotonic() + seconds
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > end:
                raise
            time.sleep(0.02)


class SQLiteStore(Store):
    """The embedded store: one SQLite file in WAL mode.

    Durability: ``synchronous=FULL``. In WAL mode that fsyncs the log at every commit,
    so a batch whose outcomes were returned survives a power cut as well as a crash
    of the process; ``NORMAL`` would only survive a process crash (the last commits
    may roll back after a power loss), which breaks the promise that an acknowledged
    event is never lost. The cost is one fsync per batch, negligible with batches of
    thousands of events.

    Speed: history is the record of state. Every applied event appends the entity's
    whole new state to ``history`` (an append-only rowid table), so an entity's
    newest history row *is* its current state. Nothing else is written per event;
    what is derived from history is brought up to date set-based, in the
    transaction of the batch that crosses a mark:

    * ``history_index`` (entity key, observed_ns, event_id -> rowid), which as-of
      reads and :meth:`history` seek, every ``INDEX_ROWS`` (200,000) history rows or
      one per entity, whichever is more, and at every checkpoint (meta key
      ``indexed``): the new rows are sorted and written in one sweep, about 0.5 us
      per row, so an index page is written about once per update instead of once
      per batch (row by row, a 10,000-event batch over 100,000 entities rewrote a
      third of the index's pages; ingest is about 25 % faster without that);
    * ``entities`` (id, type and a copy of the state, for :meth:`query` and its
      indexes) every ``checkpoint_rows`` history rows, a *checkpoint* (meta key
      ``checkpoint``; by default every 200,000 rows or four rows per entity,
      whichever is more), so each entity's row is rewritten about once per four of
      its events; the batch that crosses the mark takes about 2 us longer per
      entity changed since the last one.

    The newer rows are found through memory: the entities changed since the
    checkpoint, with this connection's current rows for them (reads of current
    state overlay them), and, once a read needs them, each entity's rows not
    indexed yet (their times and rowids, read from history by rowid, each row
    once; at most one index update's worth), which as-of reads and
    :meth:`history` add to the index seek. Readers on any connection see exactly
    the committed state; a crash loses nothing (newer rows are durable history:
    the next update indexes them). :meth:`checkpoint` brings both up to date on
    demand, :meth:`close` after writing. Current entity rows are also cached in
    memory (write-through; dropped when another connection commits, which
    ``PRAGMA data_version`` reveals, or after a rollback).

    Placement: with a ``placer`` (:class:`twin.sync.placement.Placer`), every event
    with a position is placed on the model before it is applied: the building and
    floor it is in (unless its attributes say so) and its ENU position are stored
    with the entity and its history, so ``query(building=..., floor=...)`` works
    for raw lon/lat input. The events passed in are updated in place.

    The WAL is checkpointed every 10,000 pages (about 40 MiB), so the ``-wal`` file
    next to the database may reach that size (64 MiB at most after a checkpoint).

    Memory: one batch, plus the entity cache (about 350 bytes per entity, cleared
    when it exceeds ``max_cache`` entities), the set of entity keys changed since
    the checkpoint (at most one per entity) and, once an as-of or history read
    needed them, the times and rowids of the rows not indexed yet (about 80 bytes
    each; at most 200,000 or one per entity). Disk grows with the number of history
    rows (every applied or stale event) and their index entries (about 30 bytes).

    A store written by schema version 3 (entities rewritten every batch) or 4
    (history indexed row by row) is upgraded in place when opened; a newer schema
    is refused.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        synchronous: str = "FULL",
        max_cache: int = 1_000_000,
        placer=None,
        cell_deg: float | None = None,
        bucket_s: int | None = None,
        checkpoint_rows: int | None = None,
    ):
        self.path = Path(path)
        if checkpoint_rows is not None and (
            isinstance(checkpoint_rows, bool)
            or not isinstance(checkpoint_rows, int)
            or checkpoint_rows < 1
        ):
            raise ParameterError(
                f"checkpoint_rows must be an integer >= 1 or None, not {checkpoint_rows!r}"
            )
        self.checkpoint_rows = checkpoint_rows
        self.placer = placer
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise InputError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # usable from any thread, one at a time (the server serialises with a lock)
            con = sqlite3.connect(
                self.path,
                isolation_level=None,
                cached_statements=256,
                check_same_thread=False,
                timeout=30.0,  # other processes may hold the write lock for a batch
            )
            _retry_locked(lambda: con.execute("PRAGMA journal_mode=WAL"))
            con.execute(f"PRAGMA synchronous={synchronous}")
            con.execute("PRAGMA temp_store=MEMORY")
            con.execute("PRAGMA cache_size=-262144")  # 256 MiB page cache
            # pages beyond the cache are read through a memory map of the file (the
            # OS cache's pages, no read call and copy per page): colder reads of a
            # million-entity store 15-25 % faster, ingest alike
            con.execute("PRAGMA mmap_size=4294967296")
            # checkpoint the WAL every ~40 MiB instead of 4 MiB: pages rewritten by
            # consecutive batches are copied to the database once (about 15 % faster
            # ingest); the WAL file is truncated back to 64 MiB after a checkpoint
            con.execute("PRAGMA wal_autocheckpoint=10000")
            con.execute("PRAGMA journal_size_limit=67108864")
            _retry_locked(lambda: con.executescript(_SCHEMA))
            # two processes may create the store at once: the first version written wins
            con.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            con.execute("INSERT OR IGNORE INTO head SELECT 1, coalesce(max(rowid), 0) FROM history")
            _upgrade(con, self.path)
            meta = dict(con.execute("SELECT key, value FROM meta"))
            self.cell_deg, self.bucket_s = _indicator_settings(meta, cell_deg, bucket_s, self.path)
            for k, v in (("cell_deg", self.cell_deg), ("bucket_s", self.bucket_s)):
                con.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (k, repr(v)))
        except sqlite3.DatabaseError as exc:
            raise InputError(f"cannot open the store: {exc}", path=self.path) from None
        except OSError as exc:
            raise OutputError(f"cannot create the store: {exc}", path=self.path) from None
        self._con = con
        self._cur = con.cursor()
        self._rcur = con.cursor()  # point and as-of reads (no cursor made per read)
        self._vcur = con.cursor()  # PRAGMA data_version, asked before reads
        self.max_cache = max_cache
        # Write-through cache of current entity rows (id -> row list, see _COLS + k).
        # Valid while no other connection commits: PRAGMA data_version tells.
        self._cache: dict[str, list] = {}
        self._batch = 0
        self._next_k = (con.execute("SELECT max(k) FROM entities").fetchone()[0] or 0) + 1
        # the tail: entity keys with history rows after the checkpoint (their state in
        # ``entities`` may be old) -> their current row as this connection wrote it
        # (None: only history knows), the checkpoint and the newest history row seen
        self._tail: dict[int, list | None] = {}
        self._ckpt = self._tail_seen = -1
        # history rows not in history_index yet (after row _indexed) by entity key,
        # oldest first, as a flat list (observed_ns, rowid, observed_ns, rowid, ...),
        # applied rows' rowids positive, stale ones negative; read from history when
        # a read needs them, up to row _trows_seen
        self._indexed = -1
        self._trows: dict[int, list[int]] = {}
        self._trows_seen = -1
        self._version = None  # data_version the cache and tail are valid for
        self._wrote = False  # whether this connection applied a batch
        self._catch_up()

    def _data_version(self) -> int:
        return self._vcur.execute("PRAGMA data_version").fetchone()[0]

    def _catch_up(self) -> None:
        """Make the cache and the tail valid for what is committed now (outside a
        transaction: reads in one snapshot; inside one: that transaction's view).
        The cache is dropped; the tail is read on from the newest row seen, or anew
        after another connection made a checkpoint. Cost grows with the history rows
        written since the last call (at most ``checkpoint_rows`` after a checkpoint)."""
        con = self._con
        own = con.in_transaction
        version = self._data_version()  # before the snapshot: a later commit shows
        if not own:
            con.execute("BEGIN")
        try:
            ck = con.execute(_CK_SQL).fetchone()[0]
            if ck != self._ckpt:
                self._ckpt, self._tail_seen = ck, ck
                self._tail = {}
            ix = con.execute(_IX_SQL).fetchone()[0]
            if ix != self._indexed:
                self._indexed = ix
                self._trows, self._trows_seen = {}, ix
            rows = con.execute(
                "SELECT k, rowid FROM history WHERE rowid > ? AND outcome = 'applied'",
                (self._tail_seen,),
            ).fetchall()
            last = con.execute("SELECT max(rowid) FROM history").fetchone()[0] or 0
            self._next_k = (con.execute("SELECT max(k) FROM entities").fetchone()[0] or 0) + 1
        finally:
            if not own:
                con.execute("COMMIT")
        # another connection wrote: rows held for the tail may be old, history knows
        self._tail = dict.fromkeys(self._tail)
        self._tail.update((r[0], None) for r in rows)
        self._tail_seen = max(self._tail_seen, last)
        self._cache.clear()
        self._version = version

    # ------------------------------------------------------------------ writes
    def apply(self, events: Iterable[Event | dict], *, now: int | None = None) -> list[Outcome]:
        """Apply one batch in one transaction and return one outcome per event.

        ``events`` may be :class:`Event` objects or raw dicts/JSON (validated here with
        :func:`~twin.sync.model.parse_event`; ``now`` bounds future timestamps). An
        invalid event is ``rejected`` with the reason while the rest of the batch
        applies. If anything else fails (disk full, a bug), the whole batch rolls back
        and the exception propagates: nothing of it is visible.
        """
        evs, outcomes = parse_batch(events, now)
        if self.placer is not None:  # building, floor and ENU from the position
            self.placer.place_events(evs)
        cur = self._cur
        with _gc_paused():
            cur.execute("BEGIN IMMEDIATE")
            try:
                if self._data_version() != self._version:
                    self._catch_up()  # another connection wrote: our rows may be old
                elif len(self._cache) > self.max_cache:
                    self._cache.clear()
                self._apply(evs, outcomes, cur)
                cur.execute("COMMIT")
                self._wrote = True
            except BaseException:
                cur.execute("ROLLBACK")
                self._ckpt = self._indexed = -1  # rows changed in place: read all again
                self._catch_up()
                raise
        self._version = self._data_version()
        return outcomes  # type: ignore[return-value]

    def _apply(self, evs: list[Event | None], outcomes: list, cur: sqlite3.Cursor) -> None:
        ids = [e.event_id for e in evs if e is not None]
        if not ids:
            return
        seen = {
            r[0]
            for r in cur.execute(
                "SELECT s.event_id FROM json_each(?1) AS j JOIN events_seen AS s "
                "ON s.event_id = j.value",
                (json.dumps(ids),),
            )
        }
        cache = self._cache
        # (set.difference looks each id up in the dict: batch-sized, not cache-sized)
        missing = list({e.entity_id for e in evs if e is not None}.difference(cache))
        if missing:
            rows = cur.execute(
                f"SELECT {_SEL}, k FROM entities WHERE id IN (SELECT value FROM json_each(?1))",
                (json.dumps(missing),),
            ).fetchall()
            tail = self._tail
            newer = self._latest([r[18] for r in rows if r[18] in tail]) if tail else {}
            for r in rows:
                h = newer.get(r[18])
                if h is None:
                    cache[r[0]] = [*r, 0, 0, 0, None]
                elif type(h) is list:  # the row this connection wrote
                    cache[r[0]] = h
                else:
                    cache[r[0]] = [r[0], r[1], *h, 0, 0, 0, None]
        self._batch += 1
        token = self._batch
        p = plan_batch(
            evs,
            outcomes,
            seen,
            cache,
            self._next_k,
            token,
            1.0 / self.cell_deg,
            self.bucket_s * 1_000_000_000,
        )
        self._next_k = p.next_k
        hist, hist_applied, new_seen = p.hist, p.hist_applied, p.new_seen
        dirty, created, incident_rows = p.dirty, p.created, p.incident_rows
        if created:
            _insert_rows(cur, _INS_ENTITY, _INS_ENTITY_ROWS, list(map(_row19, created)))
        if new_seen:
            cur.execute(
                "INSERT INTO events_seen SELECT value FROM json_each(?)", (json.dumps(new_seen),)
            )
        # History rows in entity-key order (stale ones, then applied ones: each
        # entity's superseded states, then its final state): the index inserts sweep
        # the (k, observed_ns, event_id) index once instead of jumping around it.
        # Cursors stay in each entity's revision order.
        if hist:
            hist.sort(key=_key0)
            cur.executemany(_INS_HIST, hist)
        if dirty:
            rows = [*hist_applied, *dirty] if hist_applied else dirty[:]
            rows.sort(key=_key18)
            _insert_rows(cur, _INS_HIST_ROW, _INS_HIST_ROWS, list(map(_row_state, rows)))
            self._tail.update(zip(map(_key18, dirty), dirty, strict=True))
        if incident_rows:
            cur.executemany(
                "INSERT INTO incidents VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                "reported_ns = coalesce(reported_ns, excluded.reported_ns), "
                "dispatched_ns = coalesce(dispatched_ns, excluded.dispatched_ns), "
                "on_scene_ns = coalesce(on_scene_ns, excluded.on_scene_ns), "
                "resolved_ns = coalesce(resolved_ns, excluded.resolved_ns), "
                "closed_ns = coalesce(closed_ns, excluded.closed_ns), "
                "responder = coalesce(excluded.responder, responder)",
                incident_rows,
            )
        reported = {}
        if p.transitions:
            ids = json.dumps([t[0] for t in p.transitions])
            reported = dict(
                cur.execute(
                    "SELECT id, reported_ns FROM incidents WHERE id IN "
                    "(SELECT value FROM json_each(?))",
                    (ids,),
                )
            )
        rows = indicator_rows(p, reported)
        if rows:
            cur.executemany(_UPSERT_INDICATORS, rows)
        last = cur.execute("SELECT max(rowid) FROM history").fetchone()[0] or 0
        if last != self._tail_seen:
            cur.execute("UPDATE head SET last = ?", (last,))
        self._tail_seen = last
        if last - self._ckpt >= self._checkpoint_every():
            self._checkpoint(cur, last)
        elif last - self._indexed >= max(INDEX_ROWS, INDEX_ROWS_PER_ENTITY * (self._next_k - 1)):
            self._index(cur, last)

    def _checkpoint_every(self) -> int:
        """History rows between checkpoints: ``checkpoint_rows``, or by default
        ``CHECKPOINT_ROWS`` or ``CHECKPOINT_ROWS_PER_ENTITY`` per entity key given
        out, whichever is more."""
        if self.checkpoint_rows is not None:
            return self.checkpoint_rows
        return max(CHECKPOINT_ROWS, CHECKPOINT_ROWS_PER_ENTITY * (self._next_k - 1))

    def _checkpoint(self, cur: sqlite3.Cursor, last: int) -> None:
        """Index history up to row ``last`` and bring ``entities`` up to date with it
        (in the caller's transaction). Cost grows with the rows not indexed yet and
        the entities changed since the last checkpoint."""
        if last > self._indexed:
            self._index(cur, last)
        tail = self._tail
        rows = sorted((r for r in tail.values() if r is not None), key=_key18)
        if rows:  # written by this connection: bound from memory, no history seek
            _insert_rows(cur, _UPSERT_ENTITY, _UPSERT_ENTITY_ROWS, list(map(_row19, rows)))
        if len(rows) < len(tail):
            unknown = sorted(k for k, r in tail.items() if r is None)
            cur.execute(_CHECKPOINT, (json.dumps(unknown),))
        cur.execute("UPDATE meta SET value = ? WHERE key = 'checkpoint'", (str(last),))
        self._ckpt = last
        self._tail = {}

    def _index(self, cur: sqlite3.Cursor, last: int) -> None:
        """Write history rows after the last indexed one up to ``last`` into
        ``history_index`` (sorted: one sweep of the index; in the caller's
        transaction). Cost: about 0.5 us per row."""
        cur.execute(_MERGE, (self._indexed, last))
        cur.execute("UPDATE meta SET value = ? WHERE key = 'indexed'", (str(last),))
        self._indexed = last
        self._trows, self._trows_seen = {}, last

    def _tail_rows(self, k: int) -> list[int] | None:
        """The history rows of entity key ``k`` not indexed yet, oldest first, as
        ``[observed_ns, rowid, observed_ns, rowid, ...]`` (applied rows' rowids
        positive, stale ones negative), as far as this connection has seen (row
        ``_tail_seen``); None when there are none. Rows not read yet are read from
        history first (each row once)."""
        if self._trows_seen < self._tail_seen:
            trows = self._trows
            for kk, ns, r in self._con.execute(
                "SELECT k, observed_ns, CASE outcome WHEN 'applied' THEN rowid ELSE -rowid END "
                "FROM history WHERE rowid > ?1 AND rowid <= ?2",
                (self._trows_seen, self._tail_seen),
            ):
                lst = trows.get(kk)
                if lst is None:
                    trows[kk] = [ns, r]
                else:
                    lst += (ns, r)
            self._trows_seen = self._tail_seen
        return self._trows.get(k)

    def _tail_json(self, k: int) -> str:
        """The rowids of ``k``'s rows not indexed yet as a JSON list."""
        rows = self._tail_rows(k)
        return json.dumps([abs(r) for r in rows[1::2]]) if rows else "[]"

    def _asof_row(self, k: int, t: int, tail: list[int]):
        """As-of read of entity key ``k`` with rows not indexed yet (``tail``, see
        :meth:`_tail_rows`): the row (``_ASOF_FIELDS``, newest history row) or None.
        The newest tail row at or before ``t`` is picked here; it is the answer when
        any applied tail row is at or before ``t`` (an applied row is newer than every
        row of earlier batches, so than every indexed row), else it is compared with
        the index's row."""
        best = -1
        rid = 0
        applied = tie = False
        for j in range(0, len(tail), 2):
            ns = tail[j]
            if ns <= t:
                r = tail[j + 1]
                if r > 0:
                    applied = True
                if ns > best:
                    best, rid, tie = ns, r, False
                elif ns == best:
                    tie = True  # the event ids decide: SQLite compares them
        cur = self._rcur
        if tie:
            return cur.execute(_ASOF_TAIL, (k, t, self._tail_json(k))).fetchone()
        if not rid:
            return cur.execute(_ASOF_K, (k, t)).fetchone()
        row = cur.execute(_ASOF_ROW, (abs(rid),)).fetchone()
        if applied:
            return row
        ix = cur.execute(_ASOF_K, (k, t)).fetchone()
        if ix is None or (row[1], row[10]) > (ix[1], ix[10]):
            return row
        return ix

    def _newest_applied(self, k: int) -> int:
        """The rowid of ``k``'s newest applied row not indexed yet (0: none): its
        current state (an entity's applied rows are appended in revision order)."""
        tail = self._tail_rows(k)
        return next((r for r in reversed(tail[1::2]) if r > 0), 0) if tail else 0

    def _current_rows(self, ks: list[int]) -> dict[int, tuple]:
        """Entity keys -> their newest history row (``_COLS[2:]``, then k): the newest
        applied row not indexed yet, else the newest indexed row."""
        out: dict[int, tuple] = {}
        rowids, indexed = [], []
        for k in ks:
            r = self._newest_applied(k)
            if r:
                rowids.append(r)
            else:
                indexed.append(k)
        con = self._con
        if rowids:
            for h in con.execute(_STATE_OF_ROWS, (json.dumps(rowids),)):
                out[h[16]] = h
        if indexed:
            for h in con.execute(_LATEST_INDEXED, (json.dumps(indexed),)):
                out[h[16]] = h
        return out

    def _latest(self, ks: list[int]) -> dict[int, list | tuple]:
        """Entity keys in the tail -> current state: the cache row this connection
        wrote, or the newest history row (``_COLS[2:]``, then k)."""
        tail = self._tail
        out: dict[int, list | tuple] = {k: tail[k] for k in ks if tail[k] is not None}
        if len(out) < len(ks):
            out.update(self._current_rows([k for k in ks if tail[k] is None]))
        return out

    @contextmanager
    def _read_view(self):
        """One read transaction (unless already in one) with the cache and tail valid
        for its snapshot."""
        con = self._con
        own = not con.in_transaction
        if own:
            con.execute("BEGIN")
        try:
            if self._data_version() != self._version:
                self._catch_up()
            yield
        finally:
            if own:
                con.execute("COMMIT")

    def _rows(self, sql: str, args: Sequence) -> list[tuple]:
        return self._con.execute(sql, args).fetchall()

    # ------------------------------------------------------------------ reads
    def state(self, entity_id: str, at=None) -> Entity | None:
        """Current state of ``entity_id``; with ``at`` (epoch ns or ISO 8601) the state
        as of that time, from history: the latest applied or stale event at or before
        ``at`` (a partial stale row is completed from the latest applied row)."""
        if at is None:
            # the write-through cache answers while no other connection has written
            cached = self._cache.get(entity_id)
            if cached is not None and self._data_version() == self._version:
                return _entity(cached)
            row = self._rcur.execute(_POINT, (entity_id,)).fetchone()
            if row is None:
                return None
            if (row[19] or 0) != self._tail_seen:  # another connection wrote
                with self._read_view():
                    return self._state_now(entity_id)
            return self._state_of(row)
        t = at if type(at) is int and 10**17 <= at < 2**63 else _time_ns(at)
        # Indexed rows: one seek of history_index (the entity's key and type from the
        # cache, else found by the same statement); rows not indexed yet: from memory
        # (see _asof_row). The newest history row the statement saw says whether this
        # connection knows every row (else the read is made again in one transaction
        # with the tail caught up).
        cached = self._cache.get(entity_id)
        tail = self._tail_seen != self._indexed
        if cached is not None:
            k, typ = cached[18], cached[1]
            rows = self._tail_rows(k) if tail else None
            if rows:
                r = self._asof_row(k, t, rows)
            else:
                r = self._rcur.execute(_ASOF_K, (k, t)).fetchone()
        else:
            r = self._rcur.execute(_ASOF_BY_ID, (entity_id, t)).fetchone()
            if r is not None:
                k, typ = r[18], r[19]
                rows = self._tail_rows(k) if tail else None
                if rows:
                    r = self._asof_row(k, t, rows)
        if r is None or r[17] != self._tail_seen:
            with self._read_view():
                return self._state_at(entity_id, t)
        return self._entity_at(r, entity_id, k, typ, t)

    def _state_of(self, row) -> Entity:
        """An entity's current state from its ``entities`` row (``_POINT``), read
        when this connection knows every history row: the tail overlays it."""
        k = row[18]
        if k in self._tail:
            own = self._tail[k]
            if own is not None:
                return _entity(own)
            r = self._newest_applied(k)
            if r:  # the newest applied row not indexed yet
                h = self._rcur.execute(_STATE_OF_ROW, (r,)).fetchone()
            else:
                h = self._rcur.execute(_LATEST_K, (k,)).fetchone()
            row = (row[0], row[1], *h)
        return _entity(row)

    def _state_now(self, entity_id: str) -> Entity | None:
        """Current state inside a read view."""
        row = self._rcur.execute(_POINT, (entity_id,)).fetchone()
        return None if row is None else self._state_of(row)

    def _state_at(self, entity_id: str, t: int) -> Entity | None:
        """As-of read inside a read view."""
        e = self._rcur.execute("SELECT k, type FROM entities WHERE id = ?", (entity_id,)).fetchone()
        if e is None:
            return None
        k, typ = e
        rows = self._tail_rows(k)
        r = self._asof_row(k, t, rows) if rows else self._rcur.execute(_ASOF_K, (k, t)).fetchone()
        return None if r is None else self._entity_at(r, entity_id, k, typ, t)

    def _entity_at(self, r, entity_id: str, k: int, typ: str, t: int) -> Entity:
        """An as-of row (``_ASOF_FIELDS``) as an Entity, a partial stale row completed."""
        a = r[8]
        ent = Entity(
            entity_id,
            typ,
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            r[6],
            r[7],
            {} if a == "{}" else json.loads(a),
            r[9],
            r[10],
            r[11],
            r[12],
            r[13],
            r[14],
            r[15],
        )
        if r[16] == STALE and (ent.lon is None or ent.status is None):
            self._complete_stale(ent, k, typ, t)
        return ent

    def _complete_stale(self, ent: Entity, k: int, typ: str, t: int) -> None:
        """Fill what a partial stale row left out from the latest applied row."""
        a = self._con.execute(_ASOF_APPLIED, (k, ent.id, typ, t, self._tail_json(k))).fetchone()
        if a is not None:
            base = _entity(a)
            for f in ("lon", "lat", "alt", "heading", "speed", "status"):
                if getattr(ent, f) is None:
                    setattr(ent, f, getattr(base, f))
            ent.attributes = {**base.attributes, **ent.attributes}

    def history(self, entity_id: str, t0=None, t1=None) -> list[dict]:
        """History of one entity, oldest first: dicts with ``observed_ns``,
        ``observed_at``, ``event_id``, ``revision``, ``outcome`` (applied | stale),
        ``source``, position, ``status``, ``attributes``."""
        lo = _time_ns(t0) if t0 is not None else -(2**63)
        hi = _time_ns(t1) if t1 is not None else 2**63 - 1
        with self._read_view():
            e = self._con.execute("SELECT k FROM entities WHERE id = ?", (entity_id,)).fetchone()
            if e is None:
                return []
            rows = self._con.execute(
                "SELECT observed_ns, event_id, revision, outcome, source, lon, lat, alt, "
                "heading, speed, status, attributes, building, floor, x, y, z, rowid "
                "FROM history WHERE rowid IN (SELECT r FROM history_index WHERE k = ?1 "
                "AND observed_ns BETWEEN ?2 AND ?3 UNION ALL SELECT value FROM json_each(?4)) "
                "AND observed_ns BETWEEN ?2 AND ?3 ORDER BY observed_ns, event_id",
                (e[0], lo, hi, self._tail_json(e[0])),
            ).fetchall()
        return [
            {
                "observed_ns": r[0],
                "observed_at": format_time(r[0]),
                "event_id": r[1],
                "revision": r[2],
                "outcome": r[3],
                "source": r[4],
                "lon": r[5],
                "lat": r[6],
                "alt": r[7],
                "heading": r[8],
                "speed": r[9],
                "status": r[10],
                "attributes": json.loads(r[11]),
                "building": r[12],
                "floor": r[13],
                "enu": None if r[14] is None else [r[14], r[15], r[16]],
                "cursor": r[17],
            }
            for r in rows
        ]

    def query(
        self, bbox=None, types=None, building=None, floor=None, status=None, at=None
    ) -> list[Entity]:
        """Entities matching all given filters, sorted by id.

        ``bbox`` = (lon_min, lat_min, lon_max, lat_max) in WGS 84 degrees; ``types``
        a type or list of types; ``building``/``floor``/``status`` exact values;
        ``at`` evaluates the filters on the state as of that time (a scan of history
        up to ``at``: cost grows with history size, use it for analysis, not per frame).
        Current state is ``entities`` overlaid with the history rows written since the
        last checkpoint (cost grows with the entities, plus at most
        ``checkpoint_rows`` tail rows).
        """
        args: list = []
        if bbox is not None:
            x0, y0, x1, y1 = check_bbox(bbox)
            args += [x0, x1, y0, y1]
        if types is not None:
            types = [types] if isinstance(types, str) else list(types)
            args += types
        args += [v for v in (building, floor, status) if v is not None]

        def cond(h: str, e: str) -> str:  # the filters on state columns h., type e.
            where = []
            if bbox is not None:
                where.append(f"{h}lon BETWEEN ? AND ? AND {h}lat BETWEEN ? AND ?")
            if types is not None:
                where.append(f"{e}type IN ({', '.join('?' * len(types))})")
            for col, v in (("building", building), ("floor", floor), ("status", status)):
                if v is not None:
                    where.append(f"{h}{col} = ?")
            return "".join(" AND " + w for w in where)

        if at is None:
            # entities not changed since the checkpoint, then the newest history row
            # of those that were (one statement: one snapshot)
            sql = (
                f"WITH t AS ({_TAIL.format(ck='(' + _CK_SQL + ')')}) "
                f"SELECT {_SEL} FROM entities WHERE k NOT IN (SELECT k FROM t){cond('', '')} "
                f"UNION ALL SELECT e.id, e.type, {_H_STATE} FROM t JOIN history AS h "
                f"ON h.rowid = t.r JOIN entities AS e ON e.k = t.k WHERE 1{cond('h.', 'e.')} "
                "ORDER BY 1"
            )
            return [_entity(r) for r in self._con.execute(sql, args + args)]
        # each entity's newest row at or before ``at`` among the indexed rows and
        # those after the last indexed one (keys only are sorted, then rows read)
        sql = (
            f"SELECT {_HIST_SEL} FROM (SELECT r, row_number() OVER (PARTITION BY k "
            "ORDER BY observed_ns DESC, event_id DESC) AS rn FROM (SELECT k, observed_ns, "
            "event_id, r FROM history_index WHERE observed_ns <= ?1 UNION ALL SELECT k, "
            f"observed_ns, event_id, rowid FROM history WHERE rowid > ({_IX_SQL}) AND "
            "observed_ns <= ?1)) AS w JOIN history AS h ON h.rowid = w.r "
            "JOIN entities AS e ON e.k = h.k WHERE w.rn = 1{cond} ORDER BY e.id"
        )
        sql = sql.replace("{cond}", cond("h.", "e."))
        return [_entity(r) for r in self._con.execute(sql, [_time_ns(at), *args])]

    def cursor(self) -> int:
        """The newest change cursor: the id of the last history row (0 when empty).
        Cursors only grow; every applied or stale event gets the next one."""
        return self._con.execute("SELECT coalesce(max(rowid), 0) FROM history").fetchone()[0]

    def changes(self, since: int = 0, limit: int = 10_000) -> list[tuple[int, Entity]]:
        """Applied changes after cursor ``since``, oldest first: ``(cursor, entity
        state after the change)`` pairs, at most ``limit``. Stale rows are skipped (they
        changed nothing). A subscriber that remembers the last cursor it saw and asks
        again with it misses nothing and sees each entity's revisions in order.
        Memory grows with ``limit``."""
        sql = (
            f"SELECT {_HIST_SEL}, h.rowid FROM history AS h JOIN entities AS e ON e.k = h.k "
            "WHERE h.rowid > ? AND h.outcome = 'applied' ORDER BY h.rowid LIMIT ?"
        )
        return [(r[19], _entity(r)) for r in self._con.execute(sql, (int(since), int(limit)))]

    def incident(self, incident_id: str) -> dict | None:
        """Lifecycle times of an incident (epoch ns of the first time each state was
        reached), its responder, and the timers ``time_to_dispatch_s``,
        ``time_to_on_scene_s`` and ``time_to_close_s`` (None until reached)."""
        r = self._con.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        if r is None:
            return None
        d = dict(
            zip(
                (
                    "id",
                    "reported_ns",
                    "dispatched_ns",
                    "on_scene_ns",
                    "resolved_ns",
                    "closed_ns",
                    "responder",
                ),
                r,
                strict=True,
            )
        )
        rep = d["reported_ns"]
        for name, key in (
            ("time_to_dispatch_s", "dispatched_ns"),
            ("time_to_on_scene_s", "on_scene_ns"),
            ("time_to_close_s", "closed_ns"),
        ):
            d[name] = (d[key] - rep) / 1e9 if rep is not None and d[key] is not None else None
        return d

    def count(self, types: str | Sequence[str] | None = None) -> int:
        """Number of entities (of the given types)."""
        if types is None:
            return self._con.execute("SELECT count(*) FROM entities").fetchone()[0]
        types = [types] if isinstance(types, str) else list(types)
        return self._con.execute(
            f"SELECT count(*) FROM entities WHERE type IN ({', '.join('?' * len(types))})", types
        ).fetchone()[0]

    def history_count(self) -> int:
        return self._con.execute("SELECT count(*) FROM history").fetchone()[0]

    def checkpoint(self) -> None:
        """Bring ``entities`` and ``history_index`` up to date with history now (one
        transaction; it waits for another writer's batch). Every ``checkpoint_rows``
        history rows the writer does this by itself, and :meth:`close` does it after
        writing, so a store opened later reads straight from them. Cost grows with
        the rows not indexed yet and the entities changed since the last checkpoint."""
        cur = self._cur
        with _gc_paused():  # a row list per entity changed: nothing to collect
            cur.execute("BEGIN IMMEDIATE")
            try:
                if self._data_version() != self._version:
                    self._catch_up()
                if self._tail_seen > self._ckpt:
                    self._checkpoint(cur, self._tail_seen)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                self._ckpt = self._indexed = -1
                self._catch_up()
                raise
        self._version = self._data_version()

    def close(self) -> None:
        """Checkpoint what this connection wrote (skipped, and left to the next
        writer, while another process holds the write lock), then close."""
        if self._con is not None:
            if self._wrote and self._tail_seen > self._ckpt:
                self._con.execute("PRAGMA busy_timeout = 0")
                try:
                    self.checkpoint()
                except sqlite3.OperationalError:
                    pass  # locked or read-only: the tail stays valid as it is
            self._con.close()
            self._con = None  # type: ignore[assignment]


def open_store(db, *, placer=None, **kw) -> Store:
    """A store from a path (SQLite file) or a ``postgresql://`` / ``postgres://`` URL
    (:class:`twin.sync.pgstore.PostgresStore`; ``kw`` may give its ``schema``)."""
    text = str(db)
    if text.startswith(("postgresql://", "postgres://")):
        from twin.sync.pgstore import PostgresStore

        return PostgresStore(text, placer=placer, **kw)
    return SQLiteStore(db, placer=placer, **kw)


__all__ = [
    "APPLIED",
    "DUPLICATE",
    "REJECTED",
    "STALE",
    "Outcome",
    "SQLiteStore",
    "Store",
    "open_store",
    "plan_batch",
]
