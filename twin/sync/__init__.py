"""twin.sync: live entities on the model.

* :mod:`twin.sync.model`: the event and entity model and the one validation path
  (:func:`parse_event`, NGSI-LD in and out with :func:`from_ngsi_ld`/:func:`to_ngsi_ld`);
* :mod:`twin.sync.store`: the :class:`Store` interface and :class:`SQLiteStore`
  (current state, append-only history, idempotency, incident lifecycles,
  indicators per cell and type); :func:`open_store` opens a file or a URL;
* :mod:`twin.sync.pgstore`: :class:`~twin.sync.pgstore.PostgresStore`, the same
  semantics in PostgreSQL for several processes sharing one twin;
* :mod:`twin.sync.ingest`: :class:`Ingestor`, the one ingest path (validation,
  write scopes, apply, publish) that HTTP, MQTT and future log consumers feed;
* :mod:`twin.sync.mqtt`: :class:`~twin.sync.mqtt.MQTTSource` (paho, QoS 1,
  acknowledged after commit);
* :mod:`twin.sync.replay`: NDJSON, CSV or GeoJSON event files replayed into a store;
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
from twin.sync.ingest import Ingestor, IngestSource, Writer
from twin.sync.model import Entity, Event, EventError, from_ngsi_ld, parse_event, to_ngsi_ld
from twin.sync.placement import Placement, Placer, placer_from_folder
from twin.sync.replay import ReplayReport, replay
from twin.sync.store import Outcome, SQLiteStore, Store, open_store

__all__ = [
    "Entity",
    "Event",
    "EventError",
    "IngestSource",
    "Ingestor",
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
    "open_store",
    "to_ngsi_ld",
    "Writer",
]
