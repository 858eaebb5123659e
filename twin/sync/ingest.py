"""The one ingest path every source feeds: validation, write scopes, apply, publish.

HTTP (``POST /events``), MQTT (:mod:`twin.sync.mqtt`) and any future partitioned-log
consumer (Kafka, Redis Streams) hand raw events to :meth:`Ingestor.ingest` and get
one :class:`~twin.sync.store.Outcome` per event back, *after* the store committed
them. So every path rejects the same things for the same reasons, and a source that
acknowledges upstream only after ``ingest`` returns never loses an event:

* each raw event (a dict, or JSON text/bytes) goes through
  :func:`twin.sync.model.parse_event`; a malformed one is ``rejected`` with the reason;
* an event whose type is outside the writer's scope is ``rejected`` and logged on
  the ``twin.sync.ingest`` logger (a traffic feed cannot move hydrants);
* the valid rest is applied as one atomic batch (:meth:`Store.apply`), under the
  ingestor's lock (one writer at a time per store connection);
* then ``on_applied`` runs (the server's WebSocket hub reads the new changes).

A new source implements :class:`IngestSource`: ``start`` begins consuming in the
background and calls ``ingest`` per batch; a log consumer commits its offsets only
after ``ingest`` returned, exactly as the MQTT source acknowledges its messages.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from twin.sync.model import ENTITY_TYPES, EventError, parse_event
from twin.sync.store import REJECTED, Outcome, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Writer:
    """Who writes (the audit name) and which entity types they may write."""

    name: str
    write: frozenset[str] = frozenset(ENTITY_TYPES)


ANY_WRITER = Writer("trusted")


class Ingestor:
    """Validate, scope-check and apply batches of raw events to one store.

    ``lock``: shared with readers of the same store connection (the server passes
    its own); ``now``: epoch ns bound for future event times (None = the wall clock,
    or a callable); ``on_applied``: called (under the lock) after each committed batch.
    Thread-safe: sources may call :meth:`ingest` from their own threads.
    Memory grows with one batch.
    """

    def __init__(
        self,
        store: Store,
        *,
        lock: threading.RLock | None = None,
        now=None,
        on_applied: Callable[[], None] | None = None,
    ):
        self.store = store
        self.lock = lock if lock is not None else threading.RLock()
        self.now = now
        self.on_applied = on_applied

    def ingest(self, raw: Sequence, writer: Writer | None = None) -> list[Outcome]:
        """One outcome per raw event, in order, returned after the batch committed.

        ``writer`` (anything with ``name`` and a ``write`` set of entity types, such
        as a server token; default: may write every type). If the store fails, the
        exception propagates and nothing of the batch is visible: acknowledge nothing.
        """
        w = writer if writer is not None else ANY_WRITER
        t_now = self.now() if callable(self.now) else self.now
        outcomes: list[Outcome | None] = [None] * len(raw)
        evs, where = [], []
        for i, r in enumerate(raw):
            try:
                ev = parse_event(r, now=t_now)
            except EventError as exc:
                eid = r.get("event_id") if isinstance(r, dict) else None
                outcomes[i] = Outcome(
                    eid if isinstance(eid, str) else None, REJECTED, None, exc.reason
                )
                continue
            if ev.entity_type not in w.write:
                reason = f"token {w.name!r} may not write {ev.entity_type} entities"
                log.warning("refused event %s: %s", ev.event_id, reason)
                outcomes[i] = Outcome(ev.event_id, REJECTED, None, reason)
                continue
            evs.append(ev)
            where.append(i)
        if evs:
            with self.lock:
                applied = self.store.apply(evs, now=t_now)
                if self.on_applied is not None:
                    self.on_applied()
            for i, o in zip(where, applied, strict=True):
                outcomes[i] = o
        return outcomes  # type: ignore[return-value]


def count_outcomes(outcomes: Sequence[Outcome]) -> dict[str, int]:
    """``{"applied": n, "stale": n, "duplicate": n, "rejected": n}``."""
    counts = {"applied": 0, "stale": 0, "duplicate": 0, "rejected": 0}
    for o in outcomes:
        counts[o.result] += 1
    return counts


class IngestSource(ABC):
    """A background source of events (MQTT now; Kafka or Redis Streams later).

    ``start`` begins consuming and feeds batches to ``ingestor.ingest``; the source
    acknowledges (or commits offsets) only after ``ingest`` returned, so an event
    acknowledged upstream is in the store. ``stop`` ends consuming and waits for
    the batch in flight."""

    @abstractmethod
    def start(self, ingestor: Ingestor) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


__all__ = ["ANY_WRITER", "IngestSource", "Ingestor", "Writer", "count_outcomes"]
