"""GeoJSON snapshot of the live twin: every entity as a Point Feature, now or as of a
time. Coordinates are WGS 84 ``[lon, lat, alt]`` (RFC 7946; ``alt`` ellipsoidal
metres, left out when unknown); properties carry id, type, revision, observed time,
status, building, floor, ENU position and attributes. Written to a temporary name,
then renamed. Memory grows with the number of entities in the snapshot."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from twin.errors import OutputError
from twin.sync.store import Store, _time_ns


def snapshot(store: Store, at=None, types=None, bbox=None) -> dict:
    """A GeoJSON FeatureCollection of the entities with a position (now, or as of
    ``at``: epoch ns or ISO 8601), optionally limited to ``types`` and a WGS 84
    ``bbox`` (lon_min, lat_min, lon_max, lat_max)."""
    feats = []
    for e in store.query(bbox=bbox, types=types, at=_time_ns(at)):
        if e.lon is None:
            continue
        coords = [e.lon, e.lat] if e.alt is None else [e.lon, e.lat, e.alt]
        feats.append(
            {
                "type": "Feature",
                "id": e.id,
                "geometry": {"type": "Point", "coordinates": coords},
                "properties": {
                    "type": e.type,
                    "revision": e.revision,
                    "observed_at": e.observed_at,
                    "status": e.status,
                    "building": e.building,
                    "floor": e.floor,
                    "enu": None if e.enu is None else list(e.enu),
                    "heading": e.heading,
                    "speed": e.speed,
                    "attributes": e.attributes,
                },
            }
        )
    return {"type": "FeatureCollection", "features": feats}


def export_geojson(store: Store, path: str | os.PathLike, at=None, types=None, bbox=None) -> int:
    """Write :func:`snapshot` to ``path`` and return the number of features. Raises
    :class:`OutputError` naming the file when it cannot be written (nothing is left)."""
    path = Path(path)
    doc = snapshot(store, at=at, types=types, bbox=bbox)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(doc, separators=(",", ":"), allow_nan=False))
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):  # e.g. the parent is a file
            tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write the GeoJSON file: {exc}", path=path) from None
    return len(doc["features"])


__all__ = ["export_geojson", "snapshot"]
