"""Replay an event file into a store, as fast as possible or paced in time.

Formats (``fmt``, default: from the file name, else from its first character):

* **NDJSON** (``.ndjson``, ``.jsonl``, ``.geojsonl``; also any file starting with
  ``{``): one event per line, in twin's form, NGSI-LD or a GeoJSON Feature. Streamed
  line by line (memory grows with ``batch_size``, not with the file).
* **CSV** (``.csv``, ``.tsv``; delimiter ``,`` ``;`` tab or ``|`` found from the
  header): one event per row, columns named as people write them (``entity_id`` or
  ``id``, ``type`` (or an NGSI-LD URN id that names it), ``observed_at`` or
  ``time``/``timestamp`` (ISO 8601, or epoch seconds/ms/us/ns), ``lon``/``lat``/``alt``
  or ``x``/``y``/``z`` with a ``crs`` column or the ``crs`` argument, ``heading``,
  ``speed``, ``status``, ``source``, ``event_id``; other columns become attributes),
  see :func:`twin.sync.model.event_from_record`. Streamed row by row.
* **GeoJSON** (``.geojson``, ``.json``): a FeatureCollection of Point features (event
  fields in ``properties``; an old-style ``crs`` member is honoured), a JSON array
  of events, or an NGSI-LD Notification. Read whole: memory grows with the file. A
  ``.json`` file that is not one JSON document is read as NDJSON.

A UTF-8 byte order mark and CRLF line ends are fine. Every record goes through the
one validation path (:func:`twin.sync.model.parse_event`); a malformed one is
reported with its line number (CSV: the row's last line; GeoJSON: the feature's
1-based index) and the replay goes on; valid events are applied in batches of
``batch_size`` (one transaction each). A file that cannot be read, or a CSV header
without the columns an event needs, raises :class:`~twin.errors.InputError`
naming the file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from twin.errors import InputError, ParameterError
from twin.sync.model import (
    _ALIASES,
    Event,
    EventError,
    _load,
    event_from_record,
    format_time,
    from_feature,
    ngsi_notification_entities,
    parse_event,
)
from twin.sync.store import REJECTED, Store

MAX_REPORTED_ERRORS = 100
FORMATS = ("ndjson", "csv", "geojson")
_SUFFIX = {
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".ldjson": "ndjson",
    ".geojsonl": "ndjson",
    ".geojsons": "ndjson",
    ".csv": "csv",
    ".tsv": "csv",
    ".geojson": "geojson",
    ".json": "geojson",
}


@dataclass
class ReplayReport:
    """What a replay did. ``errors`` lists ``(line, event_id or None, reason)`` for
    malformed lines and rejected events (the first :data:`MAX_REPORTED_ERRORS`);
    ``unit`` says what the number counts (``line``, or ``feature`` for GeoJSON)."""

    path: str
    format: str = "ndjson"
    unit: str = "line"
    lines: int = 0
    events: int = 0  # valid events handed to the store
    applied: int = 0
    stale: int = 0
    duplicate: int = 0
    rejected: int = 0  # by the store (conflicts, illegal transitions)
    malformed: int = 0  # lines that are not valid events
    batches: int = 0
    first_observed: str | None = None
    last_observed: str | None = None
    seconds: float = 0.0
    errors: list[tuple[int, str | None, str]] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        d = {
            k: getattr(self, k)
            for k in (
                "path",
                "format",
                "unit",
                "lines",
                "events",
                "applied",
                "stale",
                "duplicate",
                "rejected",
                "malformed",
                "batches",
                "first_observed",
                "last_observed",
            )
        }
        d["seconds"] = round(self.seconds, 3)
        d["events_per_second"] = round(self.events_per_second, 1)
        d["errors"] = [list(e) for e in self.errors]
        return d


def replay(
    path: str | os.PathLike,
    store: Store,
    speed: float | None = None,
    until: float | None = None,
    batch_size: int = 5000,
    progress: Callable[[ReplayReport], None] | None = None,
    *,
    fmt: str | None = None,
    crs=None,
    now: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> ReplayReport:
    """Replay the event file ``path`` (NDJSON, CSV or GeoJSON: see the module doc;
    ``fmt`` forces one; ``"-"`` reads standard input, NDJSON unless ``fmt`` says
    otherwise or its first bytes show it) into ``store``. ``crs``: the CRS of
    positions that name none (CSV x/y columns, GeoJSON coordinates); default WGS 84.

    ``speed=None`` applies as fast as possible; ``speed=k`` paces by ``observed_at``:
    an event ``dt`` seconds after the first one is applied no earlier than ``dt / k``
    wall seconds after the start (batches are cut short so pacing holds). ``until``
    stops at events more than that many seconds after the first event (the file is
    in ``observed_at`` order, so reading stops there). ``progress`` is called with
    the report after each batch. ``now`` (epoch ns) bounds future timestamps;
    ``sleep``/``clock`` are injectable for tests.
    """
    p = Path(path)
    if speed is not None and not speed > 0:
        raise ParameterError(f"speed must be > 0, got {speed}")
    if batch_size < 1:
        raise ParameterError(f"batch_size must be >= 1, got {batch_size}")
    if until is not None and until < 0:
        raise ParameterError(f"until must be >= 0 s, got {until}")
    if fmt is not None and fmt not in FORMATS:
        raise ParameterError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    report = ReplayReport(str(p))
    batch: list[Event] = []
    lines: list[int] = []
    t_first: int | None = None
    t_last: int | None = None
    stop_ns: int | None = None
    start = clock()
    tally: Counter = Counter()

    def flush() -> None:
        if not batch:
            return
        outcomes = store.apply(batch, now=now)
        for ln, o in zip(lines, outcomes, strict=True):
            tally[o.result] += 1
            if o.result == REJECTED and len(report.errors) < MAX_REPORTED_ERRORS:
                report.errors.append((ln, o.event_id, o.reason or ""))
        report.batches += 1
        report.applied, report.stale = tally["applied"], tally["stale"]
        report.duplicate, report.rejected = tally["duplicate"], tally["rejected"]
        batch.clear()
        lines.clear()
        report.seconds = clock() - start
        if progress is not None:
            progress(report)

    def take(ev: Event, ln: int) -> bool:
        """Queue one valid event; False once ``until`` is passed."""
        nonlocal t_first, t_last, stop_ns
        if t_first is None:
            t_first = ev.observed_ns
            if until is not None:
                stop_ns = t_first + int(round(until * 1e9))
        if stop_ns is not None and ev.observed_ns > stop_ns:
            report.lines = ln - 1
            return False
        if speed is not None:
            due = (ev.observed_ns - t_first) / 1e9 / speed
            wait = due - (clock() - start)
            if wait > 0:
                flush()  # what is due now goes out before we wait
                sleep(wait)
        batch.append(ev)
        lines.append(ln)
        report.events += 1
        t_last = ev.observed_ns if t_last is None else max(t_last, ev.observed_ns)
        if len(batch) >= batch_size:
            flush()
        return True

    stdin = str(path) == "-"
    try:
        f = _Keep(sys.stdin.buffer) if stdin else open(p, "rb")  # noqa: SIM115
    except OSError as exc:
        raise InputError(f"cannot read the event file: {exc.strerror}", path=p) from None
    if stdin and fmt is None:
        fmt = "ndjson" if not hasattr(f.raw, "peek") else detect_format(p, f.raw.peek(64))
    with f:
        try:
            src = f.raw if stdin else f
            for ln, ev in _records(src, p, fmt, crs, now, report):
                report.lines = ln
                if isinstance(ev, EventError):
                    report.malformed += 1
                    if len(report.errors) < MAX_REPORTED_ERRORS:
                        report.errors.append((ln, None, ev.reason))
                    continue
                if not take(ev, ln):
                    break
        except OSError as exc:
            raise InputError(f"cannot read the event file: {exc}", path=p) from None
        flush()
    report.first_observed = format_time(t_first) if t_first is not None else None
    report.last_observed = format_time(t_last) if t_last is not None else None
    report.seconds = clock() - start
    return report


class _Keep:
    """Standard input for ``with``: iterated and read, never closed."""

    def __init__(self, raw):
        self.raw = raw

    def __enter__(self):
        return self.raw

    def __exit__(self, *exc):
        return False


def detect_format(path: str | os.PathLike, head: bytes = b"") -> str:
    """``ndjson``, ``csv`` or ``geojson`` from the file name, else from the first
    bytes ``head`` (``{``: NDJSON, ``[``: a JSON array, anything else: CSV)."""
    fmt = _SUFFIX.get(Path(path).suffix.lower())
    if fmt is not None:
        return fmt
    first = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    return "ndjson" if first == b"{" else "geojson" if first == b"[" else "csv"


def _one(parse, *args) -> Event | EventError:
    try:
        return parse(*args)
    except EventError as exc:
        return exc


def _records(f, p: Path, fmt, crs, now, report: ReplayReport) -> Iterator[tuple[int, object]]:
    """(number, Event or EventError) for each record of the open file ``f``."""
    if fmt is None:
        fmt = detect_format(p, f.peek(64) if hasattr(f, "peek") else b"")
    report.format = fmt
    if fmt == "geojson":
        data = f.read()
        try:
            doc = json.loads(data) if data.strip() else []
        except (ValueError, UnicodeDecodeError) as exc:
            if p.suffix.lower() != ".geojson":  # a .json file of NDJSON lines
                report.format = "ndjson"
                yield from _ndjson(io.BytesIO(data), crs, now)
                return
            raise InputError(f"not valid GeoJSON: {exc}", path=p) from None
        yield from _document(doc, p, crs, now, report)
    elif fmt == "csv":
        yield from _csv(f, p, crs, now)
    else:
        yield from _ndjson(f, crs, now)


def _with_crs(raw, crs, now) -> Event:
    obj = _load(raw)
    if obj.get("type") == "Feature":
        return from_feature(obj, now=now, crs=crs)
    if "crs" not in obj:
        obj = {**obj, "crs": crs}
    return parse_event(obj, now=now)


def _ndjson(f, crs, now) -> Iterator[tuple[int, object]]:
    for ln, raw in enumerate(f, start=1):
        if ln == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if not raw.strip():
            continue
        if crs is None:
            yield ln, _one(lambda r: parse_event(r, now=now), raw)
        else:
            yield ln, _one(_with_crs, raw, crs, now)


def _crs_member(doc: dict, p: Path):
    """The CRS an old-style GeoJSON ``crs`` member names (None: WGS 84)."""
    c = doc.get("crs")
    if c is None:
        return None
    name = c.get("properties", {}).get("name") if isinstance(c, dict) else None
    if not isinstance(name, str):
        raise InputError("the GeoJSON crs member has no properties.name", path=p)
    return name


def _document(doc, p: Path, crs, now, report: ReplayReport) -> Iterator[tuple[int, object]]:
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        feats = doc.get("features")
        if not isinstance(feats, list):
            raise InputError("the FeatureCollection has no features array", path=p)
        crs = _crs_member(doc, p) or crs
        report.unit = "feature"
        for i, feat in enumerate(feats, start=1):
            if not isinstance(feat, dict) or feat.get("type") != "Feature":
                yield i, EventError("not a GeoJSON Feature")
                continue
            yield i, _one(lambda o: from_feature(o, now=now, crs=crs), feat)
        return
    items = ngsi_notification_entities(doc) if isinstance(doc, dict) else None
    if items is None:
        items = doc if isinstance(doc, list) else [doc]
    report.unit = "item"
    for i, item in enumerate(items, start=1):
        if crs is None:
            yield i, _one(lambda r: parse_event(r, now=now), item)
        else:
            yield i, _one(_with_crs, item, crs, now)


_NEEDED = ("entity_id", "observed_at")  # the type may come from an NGSI-LD URN id


def _csv(f, p: Path, crs, now) -> Iterator[tuple[int, object]]:
    text = io.TextIOWrapper(f, encoding="utf-8-sig", newline="")
    try:
        head = text.readline()
        if not head.strip():
            return
        try:
            dialect = csv.Sniffer().sniff(head, delimiters=",;\t|")
            delim = dialect.delimiter
        except csv.Error:
            delim = ","
        header = next(csv.reader([head], delimiter=delim))
        names = [h.strip().lower() for h in header]
        missing = [k for k in _NEEDED if not set(names) & set(_ALIASES[k])]
        if missing:
            raise InputError(
                f"the CSV header has no {' / '.join(missing)} column (found: "
                f"{', '.join(header)[:200]})",
                path=p,
            )
        if len(set(names)) != len(names):
            raise InputError(f"the CSV header repeats a column: {', '.join(header)}", path=p)
        reader = csv.reader(text, delimiter=delim)
        for row in reader:
            ln = reader.line_num + 1  # the header line was read before the reader
            if not any(c.strip() for c in row):
                continue
            if len(row) > len(header):
                yield ln, EventError(f"{len(row)} fields, the header has {len(header)}")
                continue
            rec = dict(zip(header, row, strict=False))
            yield ln, _one(lambda r: event_from_record(r, now=now, crs=crs, cells=True), rec)
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text: {exc}", path=p) from None
    except csv.Error as exc:
        raise InputError(f"not a readable CSV file: {exc}", path=p) from None
    finally:
        text.detach()


__all__ = ["FORMATS", "ReplayReport", "detect_format", "replay"]
