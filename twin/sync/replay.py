"""Replay an NDJSON event file into a store, as fast as possible or paced in time.

Streams the file line by line (memory grows with ``batch_size``, not with the file):
each line goes through the one validation path (:func:`twin.sync.model.parse_event`);
a malformed line is reported with its line number and the replay goes on; valid
events are applied in batches of ``batch_size`` (one transaction each).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from twin.errors import InputError, ParameterError
from twin.sync.model import Event, EventError, format_time, parse_event
from twin.sync.store import REJECTED, Store

MAX_REPORTED_ERRORS = 100


@dataclass
class ReplayReport:
    """What a replay did. ``errors`` lists ``(line, event_id or None, reason)`` for
    malformed lines and rejected events (the first :data:`MAX_REPORTED_ERRORS`)."""

    path: str
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
    now: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> ReplayReport:
    """Replay the NDJSON event file ``path`` into ``store``.

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

    try:
        f = open(p, "rb")  # noqa: SIM115
    except OSError as exc:
        raise InputError(f"cannot read the event file: {exc.strerror}", path=p) from None
    with f:
        for ln, raw in enumerate(f, start=1):
            report.lines = ln
            if not raw.strip():
                continue
            try:
                ev = parse_event(raw, now=now)
            except EventError as exc:
                report.malformed += 1
                if len(report.errors) < MAX_REPORTED_ERRORS:
                    report.errors.append((ln, None, exc.reason))
                continue
            if t_first is None:
                t_first = ev.observed_ns
                if until is not None:
                    stop_ns = t_first + int(round(until * 1e9))
            if stop_ns is not None and ev.observed_ns > stop_ns:
                report.lines = ln - 1
                break
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
        flush()
    report.first_observed = format_time(t_first) if t_first is not None else None
    report.last_observed = format_time(t_last) if t_last is not None else None
    report.seconds = clock() - start
    return report


__all__ = ["ReplayReport", "replay"]
