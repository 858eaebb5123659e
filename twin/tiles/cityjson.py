"""CityJSON 2.0 output of building solids: :func:`write_cityjson`, :func:`validate_cityjson`.

Each :class:`~twin.mesh.buildings.BuildingMesh` becomes a ``Building`` city object
keyed by its id, with one ``Solid`` geometry (one outer shell; every triangle a
surface) whose semantics give each surface its type: ``RoofSurface``,
``WallSurface`` or ``GroundSurface`` (the floor). Attributes: ``measuredHeight``
(ridge above base, m), ``roofType``, ``source``, ``baseHeight`` (absolute, the CRS's
heights), ``eaveHeight`` and any other scalar attribute the building carries.

Vertices are written in the CRS of ``metadata.referenceSystem`` (the building's
ENU vertices go back through ``frame.to_crs``), quantised with ``transform``
(``scale`` 1 mm by default, ``translate`` the minimum corner), duplicates merged, so
that every index refers to a unique vertex. Without a CRS the local ENU metres are
written and no reference system is claimed.

:func:`validate_cityjson` checks a file or dict against the official CityJSON 2.0
schemas (``<repo>/../shared/data/schemas/cityjson-2.0`` or
``$TWIN_CITYJSON_SCHEMAS``) and what the schemas cannot say: vertex indices in
range, no duplicate vertices, every triangulated Solid shell closed (each edge used
twice, once in each direction) and semantics values matching the surfaces.

Memory grows with the total number of vertices and triangles (the JSON text is
built in memory before the atomic write).
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path

import numpy as np

from twin.errors import InputError, OutputError, ParameterError

_REPO = Path(__file__).resolve().parents[2]
_BASE_URI = "https://www.cityjson.org/schemas/2.0.2/"
SEMANTIC = {0: "WallSurface", 1: "RoofSurface", 2: "GroundSurface"}  # buildings face kinds


def schema_dir() -> Path:
    """Folder of the CityJSON 2.0 schemas (``$TWIN_CITYJSON_SCHEMAS`` overrides)."""
    env = os.environ.get("TWIN_CITYJSON_SCHEMAS")
    return Path(env) if env else _REPO.parent / "shared/data/schemas/cityjson-2.0"


def _reference_system(crs) -> str | None:
    if crs is None:
        return None
    from twin.crs import parse_crs

    c = parse_crs(crs)
    code = c.to_epsg(min_confidence=70)
    if code is None:
        auth = c.to_authority(min_confidence=70)
        if auth is None:
            raise ParameterError(
                f"the CRS {c.name!r} has no EPSG code; CityJSON needs an OGC CRS URL"
            )
        return f"https://www.opengis.net/def/crs/{auth[0]}/0/{auth[1]}"
    return f"https://www.opengis.net/def/crs/EPSG/0/{code}"


def _jsonable(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return round(f, 4) if math.isfinite(f) else None
    if isinstance(v, (str, int, bool)) or v is None:
        return v
    return None


def cityjson_document(
    buildings, crs=None, *, frame=None, scale: float = 0.001, title: str | None = None
) -> dict:
    """The CityJSON 2.0 dict of ``buildings`` (see the module doc); ``buildings`` may be
    a list of :class:`~twin.mesh.buildings.BuildingMesh` or a
    :class:`~twin.mesh.roofs.BuildingsResult` (its frame and CRS are then the
    defaults)."""
    if hasattr(buildings, "buildings"):
        frame = frame if frame is not None else buildings.frame
        crs = crs if crs is not None else getattr(buildings, "crs", None)
        buildings = buildings.buildings
    buildings = list(buildings)
    if not (scale > 0 and math.isfinite(scale)):
        raise ParameterError(f"scale must be a positive number, got {scale!r}")
    if crs is not None and frame is None:
        raise ParameterError("a CRS needs the frame the building vertices are in (frame=...)")
    ids = [str(b.id) for b in buildings]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise InputError(f"building ids are not unique: {', '.join(dup)}")
    allv = [np.asarray(b.vertices, dtype=np.float64) for b in buildings]
    counts = [len(v) for v in allv]
    xyz = np.concatenate(allv) if allv else np.zeros((0, 3))
    if crs is not None and len(xyz):
        xyz = frame.to_crs(xyz, crs)
    if len(xyz) and not np.isfinite(xyz).all():
        raise InputError("building vertices are not all finite")
    translate = xyz.min(axis=0) if len(xyz) else np.zeros(3)
    q = np.rint((xyz - translate) / scale).astype(np.int64)
    uniq, inv = np.unique(q, axis=0, return_inverse=True)
    inv = inv.ravel()
    objects = {}
    start = 0
    for b, n in zip(buildings, counts, strict=True):
        vid = inv[start : start + n]
        start += n
        f = vid[np.asarray(b.faces, dtype=np.int64)]
        kinds = np.asarray(b.face_kind, dtype=np.int64)
        ok = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])
        f, kinds = f[ok], kinds[ok]
        present = [k for k in (1, 0, 2) if np.any(kinds == k)]
        sem_index = {k: i for i, k in enumerate(present)}
        a = b.attributes
        lod = int(a.get("lod", 2))
        attrs = {
            "measuredHeight": _jsonable(a.get("height")),
            "roofType": a.get("roof_type"),
            "source": a.get("source", "footprint"),
            "baseHeight": _jsonable(a.get("base_height")),
            "eaveHeight": _jsonable(a.get("eave_height")),
        }
        for key, val in a.items():
            if key in ("height", "roof_type", "source", "base_height", "eave_height", "lod"):
                continue
            j = _jsonable(val)
            if j is not None and key != "building_id":
                attrs[key] = j
        objects[str(b.id)] = {
            "type": "Building",
            "attributes": {k: v for k, v in attrs.items() if v is not None},
            "geometry": [
                {
                    "type": "Solid",
                    "lod": f"{lod}",
                    "boundaries": [[[t] for t in f.tolist()]],
                    "semantics": {
                        "surfaces": [{"type": SEMANTIC[k]} for k in present],
                        "values": [[sem_index[int(k)] for k in kinds]],
                    },
                }
            ],
        }
    doc = {
        "type": "CityJSON",
        "version": "2.0",
        "transform": {"scale": [scale] * 3, "translate": [float(t) for t in translate]},
        "metadata": {},
        "CityObjects": objects,
        "vertices": uniq.tolist(),
    }
    ref = _reference_system(crs)
    if ref:
        doc["metadata"]["referenceSystem"] = ref
    if len(xyz):
        doc["metadata"]["geographicalExtent"] = [
            *(float(x) for x in xyz.min(axis=0)),
            *(float(x) for x in xyz.max(axis=0)),
        ]
    if title:
        doc["metadata"]["title"] = title
    return doc


def write_cityjson(
    buildings,
    path: str | os.PathLike,
    crs=None,
    *,
    frame=None,
    scale: float = 0.001,
    title: str | None = None,
) -> dict:
    """Write ``buildings`` as a CityJSON 2.0 file (atomically); returns a summary
    (``path``, ``buildings``, ``vertices``, ``bytes``, ``referenceSystem``).

    ``crs``: the CRS to write coordinates in (EPSG code or anything
    :func:`twin.crs.parse_crs` reads; it must have an authority code), with
    ``frame`` the ENU frame the building vertices are in. Raises
    :class:`ParameterError` for a CRS without a code or a CRS without frame,
    :class:`OutputError` when the file cannot be written."""
    from twin.fileio import atomic_path

    doc = cityjson_document(buildings, crs, frame=frame, scale=scale, title=title)
    path = Path(path)
    text = json.dumps(doc, separators=(",", ":"), allow_nan=False)
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    except OSError as exc:
        raise OutputError(f"cannot write the CityJSON file: {exc}", path=path) from exc
    return {
        "path": str(path),
        "buildings": len(doc["CityObjects"]),
        "vertices": len(doc["vertices"]),
        "bytes": len(text),
        "referenceSystem": doc["metadata"].get("referenceSystem"),
    }


@functools.lru_cache(maxsize=4)
def _validator(folder: str):
    from jsonschema import Draft7Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT7

    root = Path(folder)
    if not (root / "cityjson.schema.json").exists():
        raise InputError("CityJSON schemas not found (set TWIN_CITYJSON_SCHEMAS)", path=root)
    resources = []
    for f in sorted(root.glob("*.schema.json")):
        contents = dict(json.loads(f.read_text()))
        uri = _BASE_URI + f.name
        contents["$id"] = uri
        resources.append((uri, Resource.from_contents(contents, default_specification=DRAFT7)))
    registry = Registry().with_resources(resources)
    return Draft7Validator({"$ref": _BASE_URI + "cityjson.schema.json"}, registry=registry)


def _solid_problems(oid: str, geom: dict, nverts: int, closed: bool) -> list[str]:
    out = []
    for s, shell in enumerate(geom.get("boundaries", [])):
        edges = {}
        for surface in shell:
            for ring in surface:
                r = list(ring)
                if any(not 0 <= i < nverts for i in r):
                    out.append(f"{oid}: shell {s} has a vertex index out of range")
                    return out
                for a, b in zip(r, r[1:] + r[:1], strict=True):
                    edges[(a, b)] = edges.get((a, b), 0) + 1
        for (a, b), c in edges.items() if closed else ():
            if c != 1 or edges.get((b, a), 0) != 1:
                out.append(f"{oid}: shell {s} is not closed (edge {a}-{b} used {c} time(s), "
                           f"reverse {edges.get((b, a), 0)}: a gap or a T-junction)")  # fmt: skip
                break
    sem = geom.get("semantics")
    if sem is not None:
        values = sem.get("values") or []
        for s, shell in enumerate(geom.get("boundaries", [])):
            vals = values[s] if s < len(values) else None
            if vals is None or len(vals) != len(shell):
                out.append(f"{oid}: semantics values of shell {s} do not match its surfaces")
            elif any(v is not None and not 0 <= v < len(sem["surfaces"]) for v in vals):
                out.append(f"{oid}: a semantics value points to no surface")
    return out


def validate_cityjson(doc_or_path, *, closed: bool = True) -> list[str]:
    """Problems in a CityJSON 2.0 document or file (empty list: valid). ``closed``:
    also require every Solid shell to be closed edge by edge (no gaps and no
    T-junctions, which some valid producers leave between polygons). Raises
    :class:`InputError` when the file is missing or the schemas cannot be found."""
    if isinstance(doc_or_path, dict):
        doc = doc_or_path
    else:
        path = Path(doc_or_path)
        if not path.exists():
            raise InputError("CityJSON file not found", path=path)
        try:
            doc = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return [f"not valid JSON: {exc}"]
    validator = _validator(str(schema_dir()))
    out = []
    for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        loc = "/".join(str(p) for p in e.absolute_path) or "(root)"
        out.append(f"schema: {loc}: {e.message[:300]}")
    if out or not isinstance(doc, dict):
        return out
    verts = doc.get("vertices", [])
    if len({tuple(v) for v in verts}) != len(verts):
        out.append("vertices: duplicate vertices")
    for oid, obj in doc.get("CityObjects", {}).items():
        for geom in obj.get("geometry", []):
            if geom.get("type") == "Solid":
                out.extend(_solid_problems(oid, geom, len(verts), closed))
    return out


def read_cityjson_heights(path: str | os.PathLike) -> dict[str, dict]:
    """Per city object of a CityJSON file: ``{"type", "zmin", "zmax", "attributes"}``
    with the (de-quantised) lowest and highest vertex heights of its geometries."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError("CityJSON file not found", path=path) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"not valid JSON: {exc}", path=path) from None
    v = np.asarray(doc.get("vertices", []), dtype=np.float64).reshape(-1, 3)
    t = doc.get("transform")
    if t:
        v = v * np.asarray(t["scale"]) + np.asarray(t["translate"])
    out = {}

    def flat(x):
        if isinstance(x, list):
            for y in x:
                yield from flat(y)
        else:
            yield x

    for oid, obj in doc.get("CityObjects", {}).items():
        idx = [i for g in obj.get("geometry", []) for i in flat(g.get("boundaries", []))]
        if not idx:
            continue
        z = v[np.asarray(idx, dtype=np.int64), 2]
        out[oid] = {
            "type": obj.get("type"),
            "zmin": float(z.min()),
            "zmax": float(z.max()),
            "attributes": obj.get("attributes", {}),
        }
    return out


__all__ = [
    "cityjson_document",
    "read_cityjson_heights",
    "schema_dir",
    "validate_cityjson",
    "write_cityjson",
]
