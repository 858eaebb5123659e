"""twin.sync: live entities on the model.

* :mod:`twin.sync.model`: the event and entity model and the one validation path
  (:func:`parse_event`, NGSI-LD in and out with :func:`from_ngsi_ld`/:func:`to_ngsi_ld`);
* :mod:`twin.sync.store`: the :class:`Store` interface and :class:`SQLiteStore`
  (current state, append-only history, idempotency, incident lifecycles);
* :mod:`twin.sync.replay`: NDJSON replay into a store.
"""

from twin.sync.model import Entity, Event, EventError, from_ngsi_ld, parse_event, to_ngsi_ld
from twin.sync.replay import ReplayReport, replay
from twin.sync.store import Outcome, SQLiteStore, Store

__all__ = [
    "Entity",
    "Event",
    "EventError",
    "Outcome",
    "ReplayReport",
    "SQLiteStore",
    "Store",
    "from_ngsi_ld",
    "parse_event",
    "replay",
    "to_ngsi_ld",
]
