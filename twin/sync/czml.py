"""CZML export of the live twin's history, for Cesium (time-dynamic entities).

:func:`export_czml` writes one CZML document (a JSON array of packets):

* the ``document`` packet: ``version`` 1.0 and a ``clock`` spanning the exported
  interval (``LOOP_STOP``, 10x);
* one packet per entity (``id`` = the entity id) with ``availability`` (first to
  last observation), a sampled ``position`` in ``cartographicDegrees`` (``epoch`` +
  seconds offsets, WGS 84 lon/lat degrees and ellipsoidal height metres, linear
  interpolation, held after the last sample), one sample per history row with a
  position (applied and late rows alike, sorted by observation time);
* a style by type: ``point`` for people, vehicles and sensors (colour and size per
  type), ``billboard`` (a small embedded SVG) for assets and incidents;
* ``properties.status``: the status as time intervals (for incidents, their
  lifecycle: reported, dispatched, ...) from every row in time order (late rows
  included: they are observations of that time); incident billboards change colour
  with it.

Heights: positions without an altitude are written at 0 m with
``heightReference: CLAMP_TO_GROUND``. Memory grows with one entity's history (the
file is written packet by packet, to a temporary name, then renamed).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from pathlib import Path

from twin.errors import OutputError
from twin.sync.model import format_time
from twin.sync.store import Store

_POINT = {  # type -> (rgba, pixel size)
    "person": ([40, 120, 255, 255], 7),
    "vehicle": ([255, 170, 0, 255], 10),
    "sensor": ([0, 200, 120, 255], 6),
}
_STATUS_RGBA = {
    "reported": [230, 40, 40, 255],
    "dispatched": [255, 140, 0, 255],
    "on_scene": [255, 220, 0, 255],
    "resolved": [60, 180, 75, 255],
    "closed": [150, 150, 150, 255],
}


def _svg(shape: str) -> str:
    body = (
        '<polygon points="12,2 22,21 2,21" fill="white" stroke="black" stroke-width="1.5"/>'
        if shape == "triangle"
        else '<rect x="3" y="3" width="18" height="18" rx="3" fill="white" stroke="black" '
        'stroke-width="1.5"/>'
    )
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" width="24" height="24">{body}</svg>'
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


_ICON = {"incident": _svg("triangle"), "asset": _svg("square")}


def _iso(ns: int) -> str:
    return format_time(ns)


def _interval(a: int, b: int) -> str:
    return f"{_iso(a)}/{_iso(b)}"


def entity_packet(
    entity_id: str, etype: str, rows: list[dict], t_end: int, t_start: int | None = None
) -> dict | None:
    """The CZML packet of one entity from its history rows (oldest first), or None
    when no row has a position. ``t_end`` (epoch ns) closes the last status interval;
    ``t_start`` (the window's start) clips availability and status intervals (a first
    row before it is the state the entity had then: its position stays a sample at
    its own time, so interpolation inside the window is exact)."""
    pos = [r for r in rows if r["lon"] is not None]
    if not pos:
        return None
    epoch = pos[0]["observed_ns"]
    clamp = any(r["alt"] is None for r in pos)
    samples: list[float] = []
    for r in pos:
        samples += [
            round((r["observed_ns"] - epoch) / 1e9, 3),
            r["lon"],
            r["lat"],
            0.0 if r["alt"] is None else r["alt"],
        ]
    last = rows[-1]["observed_ns"]
    first = rows[0]["observed_ns"] if t_start is None else max(rows[0]["observed_ns"], t_start)
    pkt: dict = {
        "id": entity_id,
        "name": entity_id.rsplit(":", 1)[-1],
        "description": f"{etype} {entity_id}",
        "availability": _interval(first, max(last, t_end)),
    }
    if len(pos) == 1:
        pkt["position"] = {"cartographicDegrees": samples[1:]}
    else:
        pkt["position"] = {
            "epoch": _iso(epoch),
            "cartographicDegrees": samples,
            "interpolationAlgorithm": "LINEAR",
            "interpolationDegree": 1,
            "forwardExtrapolationType": "HOLD",
        }
    # status as time intervals: a new interval at each change
    spans: list[list] = []
    for r in rows:
        st = r["status"]
        if st is None:
            continue
        if not spans or spans[-1][2] != st:
            if spans:
                spans[-1][1] = r["observed_ns"]
            spans.append([max(r["observed_ns"], first), None, st])
    if spans:
        spans[-1][1] = max(t_end, spans[-1][0])
        pkt["properties"] = {
            "type": etype,
            "status": [{"interval": _interval(a, b), "string": s} for a, b, s in spans],
        }
    else:
        pkt["properties"] = {"type": etype}
    height_ref = {"heightReference": "CLAMP_TO_GROUND"} if clamp else {}
    if etype in _ICON:
        bb: dict = {"image": _ICON[etype], "scale": 1.0, "verticalOrigin": "BOTTOM"}
        if etype == "incident" and spans:
            bb["color"] = [
                {"interval": _interval(a, b), "rgba": _STATUS_RGBA.get(s, [255, 255, 255, 255])}
                for a, b, s in spans
            ]
        else:
            bb["color"] = {"rgba": [0, 90, 200, 255]}
        pkt["billboard"] = {**bb, **height_ref}
    else:
        rgba, size = _POINT.get(etype, ([255, 255, 255, 255], 6))
        pkt["point"] = {
            "color": {"rgba": rgba},
            "pixelSize": size,
            "outlineColor": {"rgba": [0, 0, 0, 255]},
            "outlineWidth": 1,
            **height_ref,
        }
    return pkt


def _track(store: Store, entity_id: str, lo: int | None, hi: int | None) -> list[dict]:
    """History rows of one entity in [lo, hi], led by its state as of ``lo`` when it
    was last observed before the window (an entity parked before ``t0`` is there
    from ``t0`` on)."""
    rows = store.history(entity_id, lo, hi)
    if lo is None or (rows and rows[0]["observed_ns"] == lo):
        return rows
    e = store.state(entity_id, at=lo)
    if e is None or e.observed_ns >= lo:
        return rows
    before = {k: getattr(e, k) for k in ("observed_ns", "lon", "lat", "alt", "status")}
    return [before, *rows]


def export_czml(
    store: Store,
    path: str | os.PathLike,
    t0=None,
    t1=None,
    types=None,
    *,
    name: str = "twin live",
    multiplier: float = 10.0,
) -> dict:
    """Write the history of the store's entities between ``t0`` and ``t1`` (epoch ns,
    ISO 8601 or an aware datetime; default all) as a CZML document to ``path``;
    ``types`` limits the entity types. With ``t0``, an entity last observed before
    it is exported from ``t0`` on, as it was then (its last earlier sample leads).
    Returns ``{"path", "packets", "entities", "samples", "t0", "t1"}``.

    Raises :class:`OutputError` (naming the file) when it cannot be written; nothing
    is left at ``path`` then. Memory grows with one entity's history.
    """
    from twin.sync.store import _time_ns

    path = Path(path)
    lo = _time_ns(t0)
    hi = _time_ns(t1)
    ents = store.query(types=types)
    # the exported interval: the given bounds, else the data's
    tracks = []
    first = last = None
    for e in ents:
        rows = _track(store, e.id, lo, hi)
        if not rows:
            continue
        a, b = rows[0]["observed_ns"], rows[-1]["observed_ns"]
        first = a if first is None else min(first, a)
        last = b if last is None else max(last, b)
        tracks.append((e.id, e.type))
    start = lo if lo is not None else (first or 0)
    end = hi if hi is not None else (last or start)
    doc = {
        "id": "document",
        "name": name,
        "version": "1.0",
        "clock": {
            "interval": _interval(start, end),
            "currentTime": _iso(start),
            "multiplier": multiplier,
            "range": "LOOP_STOP",
            "step": "SYSTEM_CLOCK_MULTIPLIER",
        },
    }
    tmp = path.with_name(path.name + ".tmp")
    n_pk = n_samples = 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as f:
            f.write("[\n" + json.dumps(doc, separators=(",", ":")))
            for ent_id, etype in tracks:
                rows = _track(store, ent_id, lo, hi)
                pkt = entity_packet(ent_id, etype, rows, end, lo)
                if pkt is None:
                    continue
                f.write(",\n" + json.dumps(pkt, separators=(",", ":"), allow_nan=False))
                n_pk += 1
                n_samples += sum(1 for r in rows if r["lon"] is not None)
            f.write("\n]\n")
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):  # e.g. the parent is a file
            tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write the CZML file: {exc}", path=path) from None
    return {
        "path": str(path),
        "packets": n_pk + 1,
        "entities": n_pk,
        "samples": n_samples,
        "t0": _iso(start),
        "t1": _iso(end),
    }


__all__ = ["entity_packet", "export_czml"]
