"""twin.sync: live entities on the model.

* :mod:`twin.sync.model`: the event and entity model and the one validation path
  (:func:`parse_event`, NGSI-LD in and out with :func:`from_ngsi_ld`/:func:`to_ngsi_ld`);
* :mod:`twin.sync.store`: the :class:`Store` interface and :class:`SQLiteStore`
  (current state, append-only history, idempotency, incident lifecycles);
* :mod:`twin.sync.replay`: NDJSON replay into a store;
* :mod:`twin.sync.placement`: :class:`Placer`, positions onto the model (ENU frame,
  terrain height, building, floor);
* :mod:`twin.sync.server`: the FastAPI app (:func:`~twin.sync.server.create_app`,
  :func:`~twin.sync.server.serve`): batch ingest, queries, WebSocket push; imported
  on demand (it needs FastAPI);
* :mod:`twin.sync.czml`: :func:`export_czml` for Cesium;
* :mod:`twin.sync.geojson`: :func:`export_geojson` snapshots (now or as of a time).
"""

from twin.sync.czml import export_czml
from twin.sync.geojson import export_geojson
from twin.sync.model import Entity, Event, EventError, from_ngsi_ld, parse_event, to_ngsi_ld
from twin.sync.placement import Placement, Placer, placer_from_folder
from twin.sync.replay import ReplayReport, replay
from twin.sync.store import Outcome, SQLiteStore, Store

__all__ = [
    "Entity",
    "Event",
    "EventError",
    "Outcome",
    "Placement",
    "Placer",
    "ReplayReport",
    "SQLiteStore",
    "Store",
    "export_czml",
    "export_geojson",
    "from_ngsi_ld",
    "parse_event",
    "placer_from_folder",
    "replay",
    "to_ngsi_ld",
]
