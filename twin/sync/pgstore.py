"""The PostgreSQL backend of the live store, for several processes sharing one twin.

Same :class:`~twin.sync.store.Store` interface and the same semantics as
:class:`~twin.sync.store.SQLiteStore` (idempotency, stale events into history,
optimistic revisions, incident lifecycles, time travel): the decisions are made by
the same code (:func:`twin.sync.store.plan_batch`), only reads and writes differ.

Concurrency: a batch is one transaction that first takes a transaction-scoped
advisory lock of its schema (``pg_advisory_xact_lock``), so writers from any number
of processes apply their batches one after another, each seeing everything the
previous one committed; the lock is released by COMMIT. The change cursor (the
``seq`` of ``history``) therefore grows in commit order, which the WebSocket
resume relies on. Readers never wait. Durability is PostgreSQL's
(``synchronous_commit=on``, the default, fsyncs the WAL before COMMIT returns).

Writes are set-based: new entities, changed entities (through a temporary table
and one ``UPDATE ... FROM``), history rows and seen event ids go in with ``COPY``.

Tables live in ``schema`` (created if absent), so one database can hold several
twins. Memory grows with one batch; reads stream nothing larger than their result.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Sequence

from twin.errors import InputError
from twin.sync.model import Entity, Event, format_time
from twin.sync.store import (
    _COLS,
    _HIST_COLS,
    _SEL,
    _UPSERT_INDICATORS_PG,
    STALE,
    Outcome,
    Store,
    _entity,
    _indicator_settings,
    _time_ns,
    check_bbox,
    indicator_rows,
    parse_batch,
    plan_batch,
)

SCHEMA_VERSION = 4  # of this backend's tables (the SQLite store counts its own)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text);
CREATE TABLE IF NOT EXISTS entities (
    k bigint PRIMARY KEY, id text NOT NULL UNIQUE, type text NOT NULL,
    revision bigint NOT NULL, observed_ns bigint NOT NULL, event_id text NOT NULL,
    source text, lon double precision, lat double precision, alt double precision,
    heading double precision, speed double precision, status text,
    attributes text NOT NULL, building text, floor integer,
    x double precision, y double precision, z double precision
);
CREATE INDEX IF NOT EXISTS entities_building ON entities (building, floor)
    WHERE building IS NOT NULL;
CREATE TABLE IF NOT EXISTS history (
    seq bigserial PRIMARY KEY, k bigint NOT NULL, observed_ns bigint NOT NULL,
    event_id text NOT NULL, revision bigint NOT NULL, outcome text NOT NULL, source text,
    lon double precision, lat double precision, alt double precision,
    heading double precision, speed double precision, status text,
    attributes text NOT NULL, building text, floor integer,
    x double precision, y double precision, z double precision
);
CREATE INDEX IF NOT EXISTS history_entity_time ON history (k, observed_ns, event_id);
CREATE TABLE IF NOT EXISTS events_seen (event_id text PRIMARY KEY);
CREATE TABLE IF NOT EXISTS incidents (
    id text PRIMARY KEY, reported_ns bigint, dispatched_ns bigint, on_scene_ns bigint,
    resolved_ns bigint, closed_ns bigint, responder text
);
CREATE TABLE IF NOT EXISTS indicators (
    bucket bigint NOT NULL, cell text NOT NULL, type text NOT NULL, is_open integer NOT NULL,
    d_count bigint NOT NULL, events bigint NOT NULL, n_dispatch bigint NOT NULL,
    sum_dispatch_s double precision NOT NULL, n_response bigint NOT NULL,
    sum_response_s double precision NOT NULL,
    PRIMARY KEY (bucket, cell, type, is_open)
);
"""
_ENT_COLS = ", ".join((*_COLS, "k"))
_HIST = ", ".join(_HIST_COLS)
_ASOF_COLS = (
    "%(id)s, %(type)s, revision, observed_ns, event_id, source, lon, lat, alt, heading, "
    "speed, status, attributes, building, floor, x, y, z, outcome"
)
_ASOF = (
    f"SELECT {_ASOF_COLS} FROM history WHERE k = %(k)s AND observed_ns <= %(t)s "
    "ORDER BY observed_ns DESC, event_id DESC LIMIT 1"
)
_ASOF_APPLIED = (
    f"SELECT {_ASOF_COLS} FROM history WHERE k = %(k)s AND observed_ns <= %(t)s "
    "AND outcome = 'applied' ORDER BY observed_ns DESC, event_id DESC LIMIT 1"
)
_HIST_SEL = (
    "e.id, e.type, h.revision, h.observed_ns, h.event_id, h.source, h.lon, h.lat, "
    "h.alt, h.heading, h.speed, h.status, h.attributes, h.building, h.floor, h.x, h.y, h.z, "
    "h.outcome"
)
_UPDATE = (
    "UPDATE entities AS e SET revision = u.revision, observed_ns = u.observed_ns, "
    "event_id = u.event_id, source = u.source, lon = u.lon, lat = u.lat, alt = u.alt, "
    "heading = u.heading, speed = u.speed, status = u.status, attributes = u.attributes, "
    "building = u.building, floor = u.floor, x = u.x, y = u.y, z = u.z "
    "FROM upd AS u WHERE e.k = u.k"
)
_INCIDENT = (
    "INSERT INTO incidents VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
    "reported_ns = coalesce(incidents.reported_ns, excluded.reported_ns), "
    "dispatched_ns = coalesce(incidents.dispatched_ns, excluded.dispatched_ns), "
    "on_scene_ns = coalesce(incidents.on_scene_ns, excluded.on_scene_ns), "
    "resolved_ns = coalesce(incidents.resolved_ns, excluded.resolved_ns), "
    "closed_ns = coalesce(incidents.closed_ns, excluded.closed_ns), "
    "responder = coalesce(excluded.responder, incidents.responder)"
)


class PostgresStore(Store):
    """The live store in PostgreSQL (psycopg 3): ``dsn`` is a libpq connection
    string or ``postgresql://`` URL; ``schema`` holds this twin's tables.

    See the module doc for concurrency and durability; the semantics are those of
    :mod:`twin.sync.store`. ``placer`` as for :class:`~twin.sync.store.SQLiteStore`.
    """

    _ph = "%s"

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        placer=None,
        cell_deg: float | None = None,
        bucket_s: int | None = None,
    ):
        import psycopg

        if not schema.replace("_", "").isalnum():
            raise InputError(f"schema name {schema!r} must be letters, digits and _")
        self.dsn, self.schema, self.placer = dsn, schema, placer
        try:
            con = psycopg.connect(dsn, autocommit=True)
        except psycopg.Error as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"cannot connect to PostgreSQL: {msg}", path=_safe(dsn)) from None
        self._con = con
        self._lock_key = zlib.crc32(f"twin.sync:{schema}".encode()) - 2**31
        with con.transaction():
            # one creator at a time (CREATE ... IF NOT EXISTS races otherwise)
            con.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
            con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            con.execute(f'SET search_path TO "{schema}"')
            con.execute(_SCHEMA)
            row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                con.execute(
                    "INSERT INTO meta VALUES ('schema_version', %s)", (str(SCHEMA_VERSION),)
                )
            elif int(row[0]) != SCHEMA_VERSION:
                raise InputError(
                    f"store schema version {row[0]}, this twin reads {SCHEMA_VERSION}",
                    path=_safe(dsn),
                )
            meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
            self.cell_deg, self.bucket_s = _indicator_settings(meta, cell_deg, bucket_s, dsn)
            for k, v in (("cell_deg", self.cell_deg), ("bucket_s", self.bucket_s)):
                con.execute("INSERT INTO meta VALUES (%s, %s) ON CONFLICT DO NOTHING", (k, repr(v)))
        con.execute(f'SET search_path TO "{schema}"')
        con.execute("CREATE TEMP TABLE IF NOT EXISTS upd (LIKE entities) ON COMMIT DELETE ROWS")
        self._batch = 0

    # ------------------------------------------------------------------ writes
    def apply(self, events: Iterable[Event | dict], *, now: int | None = None) -> list[Outcome]:
        """Apply one batch in one transaction (see :meth:`SQLiteStore.apply`)."""
        evs, outcomes = parse_batch(events, now)
        if self.placer is not None:
            self.placer.place_events(evs)
        valid = [e for e in evs if e is not None]
        if not valid:
            return outcomes  # type: ignore[return-value]
        con = self._con
        with con.transaction(), con.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
            ids = [e.event_id for e in valid]
            cur.execute("SELECT event_id FROM events_seen WHERE event_id = ANY(%s)", (ids,))
            seen = {r[0] for r in cur.fetchall()}
            ents = list({e.entity_id for e in valid})
            cur.execute(f"SELECT {_ENT_COLS} FROM entities WHERE id = ANY(%s)", (ents,))
            cache = {r[0]: [*r, 0, 0, 0, None] for r in cur.fetchall()}
            cur.execute("SELECT coalesce(max(k), 0) + 1 FROM entities")
            next_k = cur.fetchone()[0]
            self._batch += 1
            p = plan_batch(
                evs,
                outcomes,
                seen,
                cache,
                next_k,
                self._batch,
                1.0 / self.cell_deg,
                self.bucket_s * 1_000_000_000,
            )
            created_k = {r[18] for r in p.created}
            if p.created:
                with cur.copy(f"COPY entities ({_ENT_COLS}) FROM STDIN") as cp:
                    for r in p.created:
                        cp.write_row(r[:19])
            changed = [r for r in p.dirty if r[18] not in created_k]
            if changed:
                with cur.copy(f"COPY upd ({_ENT_COLS}) FROM STDIN") as cp:
                    for r in changed:
                        cp.write_row(r[:19])
                cur.execute(_UPDATE)
            if p.new_seen:
                with cur.copy("COPY events_seen (event_id) FROM STDIN") as cp:
                    for eid in p.new_seen:
                        cp.write_row((eid,))
            if p.hist or p.hist_applied or p.dirty:
                # same order as SQLite: stale rows, superseded states, final states
                with cur.copy(f"COPY history ({_HIST}) FROM STDIN") as cp:
                    for h in p.hist:
                        cp.write_row(h)
                    for r in p.hist_applied:
                        cp.write_row(_hist_row(r))
                    for r in sorted(p.dirty, key=lambda r: r[18]):
                        cp.write_row(_hist_row(r))
            if p.incident_rows:
                cur.executemany(_INCIDENT, p.incident_rows)
            reported = {}
            if p.transitions:
                cur.execute(
                    "SELECT id, reported_ns FROM incidents WHERE id = ANY(%s)",
                    ([t[0] for t in p.transitions],),
                )
                reported = dict(cur.fetchall())
            rows = indicator_rows(p, reported)
            if rows:
                cur.executemany(_UPSERT_INDICATORS_PG, rows)
        return outcomes  # type: ignore[return-value]

    # ------------------------------------------------------------------ reads
    def _rows(self, sql: str, args: Sequence) -> list[tuple]:
        return self._con.execute(sql, args).fetchall()

    def state(self, entity_id: str, at=None) -> Entity | None:
        """Current state, or as of ``at`` (see :meth:`SQLiteStore.state`)."""
        con = self._con
        if at is None:
            row = con.execute(f"SELECT {_SEL} FROM entities WHERE id = %s", (entity_id,)).fetchone()
            return None if row is None else _entity(row)
        r = con.execute("SELECT k, type FROM entities WHERE id = %s", (entity_id,)).fetchone()
        if r is None:
            return None
        args = {"k": r[0], "id": entity_id, "type": r[1], "t": _time_ns(at)}
        h = con.execute(_ASOF, args).fetchone()
        if h is None:
            return None
        ent = _entity(h)
        if h[18] == STALE and (ent.lon is None or ent.status is None):
            a = con.execute(_ASOF_APPLIED, args).fetchone()
            if a is not None:
                base = _entity(a)
                for f in ("lon", "lat", "alt", "heading", "speed", "status"):
                    if getattr(ent, f) is None:
                        setattr(ent, f, getattr(base, f))
                ent.attributes = {**base.attributes, **ent.attributes}
        return ent

    def history(self, entity_id: str, t0=None, t1=None) -> list[dict]:
        """History of one entity, oldest first (see :meth:`SQLiteStore.history`)."""
        lo = _time_ns(t0) if t0 is not None else -(2**63)
        hi = _time_ns(t1) if t1 is not None else 2**63 - 1
        rows = self._con.execute(
            "SELECT observed_ns, event_id, revision, outcome, source, lon, lat, alt, heading, "
            "speed, status, attributes, building, floor, x, y, z, seq FROM history "
            "WHERE k = (SELECT k FROM entities WHERE id = %s) "
            "AND observed_ns BETWEEN %s AND %s ORDER BY observed_ns, event_id",
            (entity_id, lo, hi),
        ).fetchall()
        keys = (
            "observed_ns",
            "event_id",
            "revision",
            "outcome",
            "source",
            "lon",
            "lat",
            "alt",
            "heading",
            "speed",
            "status",
        )
        out = []
        for r in rows:
            d = dict(zip(keys, r[:11], strict=True))
            d["observed_at"] = format_time(r[0])
            d["attributes"] = json.loads(r[11])
            d["building"], d["floor"] = r[12], r[13]
            d["enu"] = None if r[14] is None else [r[14], r[15], r[16]]
            d["cursor"] = r[17]
            out.append(d)
        return out

    def query(
        self, bbox=None, types=None, building=None, floor=None, status=None, at=None
    ) -> list[Entity]:
        """Entities matching all given filters, sorted by id (see
        :meth:`SQLiteStore.query`)."""
        h, e = ("h.", "e.") if at is not None else ("", "")
        where, args = [], []
        if bbox is not None:
            x0, y0, x1, y1 = check_bbox(bbox)
            where.append(f"{h}lon BETWEEN %s AND %s AND {h}lat BETWEEN %s AND %s")
            args += [x0, x1, y0, y1]
        if types is not None:
            types = [types] if isinstance(types, str) else list(types)
            where.append(f"{e}type = ANY(%s)")
            args.append(types)
        for col, v in (("building", building), ("floor", floor), ("status", status)):
            if v is not None:
                where.append(f"{h}{col} = %s")
                args.append(v)
        if at is None:
            cond = (" WHERE " + " AND ".join(where)) if where else ""
            sql = f'SELECT {_SEL} FROM entities{cond} ORDER BY id COLLATE "C"'
            return [_entity(r) for r in self._con.execute(sql, args)]
        cond = "".join(" AND " + w for w in where)
        sql = (
            f"SELECT {_HIST_SEL} FROM (SELECT DISTINCT ON (k) * FROM history "
            "WHERE observed_ns <= %s ORDER BY k, observed_ns DESC, event_id DESC) AS h "
            f'JOIN entities AS e ON e.k = h.k WHERE true{cond} ORDER BY e.id COLLATE "C"'
        )
        return [_entity(r) for r in self._con.execute(sql, [_time_ns(at), *args])]

    def cursor(self) -> int:
        """The newest change cursor (``history.seq``; 0 when empty)."""
        return self._con.execute("SELECT coalesce(max(seq), 0) FROM history").fetchone()[0]

    def changes(self, since: int = 0, limit: int = 10_000) -> list[tuple[int, Entity]]:
        """Applied changes after cursor ``since`` (see :meth:`SQLiteStore.changes`)."""
        sql = (
            f"SELECT {_HIST_SEL}, h.seq FROM history AS h JOIN entities AS e ON e.k = h.k "
            "WHERE h.seq > %s AND h.outcome = 'applied' ORDER BY h.seq LIMIT %s"
        )
        return [(r[19], _entity(r)) for r in self._con.execute(sql, (int(since), int(limit)))]

    def incident(self, incident_id: str) -> dict | None:
        """Lifecycle times and timers of an incident (see :meth:`SQLiteStore.incident`)."""
        r = self._con.execute("SELECT * FROM incidents WHERE id = %s", (incident_id,)).fetchone()
        return None if r is None else _incident_dict(r)

    def count(self, types: str | Sequence[str] | None = None) -> int:
        if types is None:
            return self._con.execute("SELECT count(*) FROM entities").fetchone()[0]
        types = [types] if isinstance(types, str) else list(types)
        return self._con.execute(
            "SELECT count(*) FROM entities WHERE type = ANY(%s)", (types,)
        ).fetchone()[0]

    def history_count(self) -> int:
        return self._con.execute("SELECT count(*) FROM history").fetchone()[0]

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None  # type: ignore[assignment]


def _hist_row(r) -> tuple:
    """A history row (``_HIST_COLS``) from an entity row (``_COLS`` + k)."""
    return (r[18], r[3], r[4], r[2], "applied", *r[5:18])


def _incident_dict(r) -> dict:
    names = ("id", "reported_ns", "dispatched_ns", "on_scene_ns", "resolved_ns", "closed_ns")
    d = dict(zip((*names, "responder"), r, strict=True))
    rep = d["reported_ns"]
    for name, key in (
        ("time_to_dispatch_s", "dispatched_ns"),
        ("time_to_on_scene_s", "on_scene_ns"),
        ("time_to_close_s", "closed_ns"),
    ):
        d[name] = (d[key] - rep) / 1e9 if rep is not None and d[key] is not None else None
    return d


def _safe(dsn: str) -> str:
    """The DSN without a password, for messages."""
    import re

    dsn = re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", dsn)
    return re.sub(r"password=\S+", "password=***", dsn)


__all__ = ["PostgresStore"]
