"""3D Tiles 1.1 implicit tiling of a quadtree LOD tileset: :func:`write_implicit`.

:func:`twin.tiles.lod.write_lod_tileset` writes an explicit tree: every tile is
listed in ``tileset.json``, which for a large city grows to many megabytes that a
client parses before drawing anything. :func:`write_implicit` turns that tree, in
place, into an *implicit* QUADTREE tileset (3D Tiles 1.1 "Implicit Tiling"):

* ``tileset.json`` holds one implicit root tile: the root square of the quadtree
  (in ENU metres, under the root ``transform`` ENU -> ECEF; z from the lowest to the
  highest vertex), ``refine`` REPLACE, the content template ``t/{level}/{x}_{y}.glb``
  (the files ``write_lod_tileset`` wrote: its cell indices are the implicit tile
  coordinates, since x grows along the box's +x axis (east) and y along its +y axis
  (north) in both) and ``implicitTiling`` with the subtree template
  ``subtrees/L{subtreeLevels}/{level}/{x}_{y}.subtree``;
* each ``.subtree`` file (binary: the ``subt`` header, JSON, one internal buffer)
  holds the tile, content and child-subtree availability bitstreams of
  ``subtree_levels`` levels (Morton order within a level, levels concatenated,
  least significant bit first) and a property table with one row per available
  tile: ``geometricError`` (semantic ``TILE_GEOMETRIC_ERROR``) and ``boundingBox``
  (``TILE_BOUNDING_BOX``), so every tile keeps the measured error and tight box of
  the explicit tree instead of the halved root error and the subdivided square.

:func:`read_implicit` decodes such a folder back into the tiles (the reverse, for
checks and tools); :func:`validate_subtree` checks a subtree file's header, layout
and JSON against the official subtree schema.
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

import numpy as np

from twin.errors import InputError, ParameterError
from twin.fileio import atomic_path, write_json

CONTENT_TEMPLATE = "t/{level}/{x}_{y}.glb"
# ``L{n}``: the subtree levels, so a re-partition never overwrites a file in use
SUBTREE_TEMPLATE = "subtrees/L{n}/{level}/{x}_{y}.subtree"
TILE_CLASS = "tile"
_MAGIC = b"subt"
_URI = re.compile(r"^t/(\d+)/(\d+)_(\d+)\.glb$")
_SCHEMA = {
    "id": "twin_implicit",
    "classes": {
        TILE_CLASS: {
            "properties": {
                "geometricError": {
                    "type": "SCALAR",
                    "componentType": "FLOAT64",
                    "semantic": "TILE_GEOMETRIC_ERROR",
                },
                "boundingBox": {
                    "type": "SCALAR",
                    "componentType": "FLOAT64",
                    "array": True,
                    "count": 12,
                    "semantic": "TILE_BOUNDING_BOX",
                },
            }
        }
    },
}


def morton2(x: int, y: int) -> int:
    """Quadtree Morton index: the bits of ``x`` and ``y`` interleaved, x lowest."""
    m, i = 0, 0
    while x or y:
        m |= (x & 1) << (2 * i) | (y & 1) << (2 * i + 1)
        x >>= 1
        y >>= 1
        i += 1
    return m


def demorton2(m: int) -> tuple[int, int]:
    """The inverse of :func:`morton2`."""
    x = y = 0
    i = 0
    while m:
        x |= (m & 1) << i
        y |= ((m >> 1) & 1) << i
        m >>= 2
        i += 1
    return x, y


def _level_offset(d: int) -> int:
    """Index of the first bit of level ``d`` in a quadtree availability bitstream."""
    return (4**d - 1) // 3


# --------------------------------------------------------------------------- input


def _explicit_tiles(doc: dict, path: Path) -> dict[tuple[int, int, int], dict]:
    """The tiles of an explicit tree written by ``write_lod_tileset``, keyed by
    ``(level, x, y)`` (from the content file names; an empty tile takes its place
    from its children's)."""
    tiles: dict[tuple[int, int, int], dict] = {}

    def visit(t: dict, level: int) -> tuple[int, int, int] | None:
        kids = [visit(c, level + 1) for c in t.get("children", []) or []]
        kids = [k for k in kids if k is not None]
        uri = (t.get("content") or {}).get("uri")
        key = None
        if uri is not None:
            m = _URI.match(uri)
            if m is None or int(m.group(1)) != level:
                raise InputError(
                    f"tile content {uri!r} at level {level} is not named "
                    "t/{level}/{x}_{y}.glb (not a quadtree written by write_lod_tileset)",
                    path=path,
                )
            key = (level, int(m.group(2)), int(m.group(3)))
        elif kids:
            key = (level, kids[0][1] >> 1, kids[0][2] >> 1)
        else:
            return None  # an empty leaf: nothing to draw, nothing to keep
        for k in kids:
            if (k[1] >> 1, k[2] >> 1) != key[1:]:
                raise InputError(f"tile {k} is not a child of {key} in the quadtree", path=path)
        box = (t.get("boundingVolume") or {}).get("box")
        if box is None or len(box) != 12:
            raise InputError(f"tile {key} has no box bounding volume", path=path)
        if key in tiles:
            raise InputError(f"tile {key} appears twice", path=path)
        tiles[key] = {
            "content": uri,
            "geometricError": float(t["geometricError"]),
            "box": [float(v) for v in box],
        }
        return key

    if visit(doc["root"], 0) != (0, 0, 0):
        raise InputError("the root tile is not the quadtree's cell 0/0_0", path=path)
    return tiles


def _square_from_leaves(tiles: dict) -> tuple[np.ndarray, float]:
    """The quadtree's root square from the leaves' boxes: ``write_lod_tileset`` makes
    it the xy bounds of every vertex (the leaves hold them all, unsimplified) and pads
    a level-``l`` box by ``0.01 / 2**l`` metres."""
    levels = {(k[0], k[1], k[2]) for k in tiles}
    lo = np.full(2, np.inf)
    hi = np.full(2, -np.inf)
    for (lv, x, y), t in tiles.items():
        if any((lv + 1, 2 * x + dx, 2 * y + dy) in levels for dx in (0, 1) for dy in (0, 1)):
            continue
        b = np.asarray(t["box"])
        pad = 0.01 * 0.5**lv
        half = np.array([b[3], b[7]]) - pad
        lo = np.minimum(lo, b[:2] - half)
        hi = np.maximum(hi, b[:2] + half)
    size = float(max(hi[0] - lo[0], hi[1] - lo[1], 1e-3))
    return lo, size


# -------------------------------------------------------------------------- output


def _subtree_bytes(doc: dict, chunks: list[bytes]) -> bytes:
    """A binary subtree: header, JSON (space padded to 8 bytes), one internal buffer
    made of ``chunks`` (each starting on 8 bytes); fills ``buffers``/``bufferViews``."""
    views, body = [], bytearray()
    for c in chunks:
        views.append({"buffer": 0, "byteOffset": len(body), "byteLength": len(c)})
        body += c
        body += b"\0" * (-len(body) % 8)
    if chunks:
        doc = {"buffers": [{"byteLength": len(body)}], "bufferViews": views, **doc}
    js = json.dumps(doc, separators=(",", ":")).encode()
    js += b" " * (-(24 + len(js)) % 8)
    head = _MAGIC + struct.pack("<IQQ", 1, len(js), len(body))
    return head + js + bytes(body)


def _availability(bits: np.ndarray, chunks: list[bytes]) -> dict:
    n = int(bits.sum())
    if n == 0 or n == len(bits):
        return {"constant": int(n > 0)}
    chunks.append(np.packbits(bits, bitorder="little").tobytes())
    return {"bitstream": len(chunks) - 1, "availableCount": n}


def _subtree(
    root: tuple[int, int, int], members: list, children: list, levels: int, have_content: bool
) -> bytes:
    """One subtree file: ``members`` are its tiles ``(level, x, y, tile)``, ``children``
    the roots ``(level, x, y)`` of the subtrees below it."""
    l0, x0, y0 = root
    n_bits = _level_offset(levels)
    avail = np.zeros(n_bits, bool)
    content = np.zeros(n_bits, bool)
    child = np.zeros(4**levels, bool)
    rows: dict[int, dict] = {}
    for lv, x, y, t in members:
        d = lv - l0
        i = _level_offset(d) + morton2(x - (x0 << d), y - (y0 << d))
        avail[i] = True
        content[i] = t["content"] is not None
        rows[i] = t
    for _, x, y in children:
        child[morton2(x - (x0 << levels), y - (y0 << levels))] = True
    chunks: list[bytes] = []
    doc: dict = {"tileAvailability": _availability(avail, chunks)}
    if have_content:
        doc["contentAvailability"] = [_availability(content, chunks)]
    doc["childSubtreeAvailability"] = _availability(child, chunks)
    order = sorted(rows)
    err = np.array([rows[i]["geometricError"] for i in order], "<f8")
    box = np.array([rows[i]["box"] for i in order], "<f8").reshape(-1, 12)
    k = len(chunks)
    chunks += [err.tobytes(), box.tobytes()]
    doc["propertyTables"] = [
        {
            "class": TILE_CLASS,
            "count": len(order),
            "properties": {"geometricError": {"values": k}, "boundingBox": {"values": k + 1}},
        }
    ]
    doc["tileMetadata"] = 0
    return _subtree_bytes(doc, chunks)


def write_implicit(
    tiles_dir: str | os.PathLike,
    *,
    subtree_levels: int = 4,
    square: tuple[np.ndarray, float] | None = None,
) -> dict:
    """Turn the quadtree tileset in ``tiles_dir`` (written by
    :func:`~twin.tiles.lod.write_lod_tileset`, or already implicit: then it is
    re-partitioned) into an implicit QUADTREE tileset in the same folder.

    ``subtree_levels``: levels per subtree file (a subtree of ``L`` levels holds
    ``(4**L - 1) / 3`` availability bits per bitstream). ``square``: the quadtree's
    root cell ``(lo_xy, size)`` in ENU metres, as ``write_lod_tileset`` chose it; by
    default it is recovered from the leaves' boxes. The tile contents stay where
    they are; the subtree files are written first (each atomically), then
    ``tileset.json`` is replaced (atomically), then stale subtree files are removed.

    Returns ``{"tiles", "levels", "subtrees", "subtree_levels", "bytes"}`` (bytes of
    the subtree files plus ``tileset.json``). Memory grows with the number of tiles
    (a few hundred bytes each), not with their contents.
    """
    if not isinstance(subtree_levels, int) or subtree_levels < 1:
        raise ParameterError(f"subtree_levels must be an integer >= 1, got {subtree_levels!r}")
    out = Path(tiles_dir)
    path = out / "tileset.json"
    try:
        doc = json.loads(path.read_text())
        root = doc["root"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"cannot read the tileset: {exc}", path=path) from exc
    if "implicitTiling" in root:
        tiles = read_implicit(out)
        if square is None:
            sq = (doc["asset"].get("extras") or {}).get("quadtree_square")
            square = (np.asarray(sq["lo"]), float(sq["size"])) if sq else None
    else:
        tiles = _explicit_tiles(doc, path)
    lo, size = square if square is not None else _square_from_leaves(tiles)
    lo = np.asarray(lo, np.float64)
    size = float(size)

    members: dict[tuple[int, int, int], list] = {}
    children: dict[tuple[int, int, int], list] = {}
    for (lv, x, y), t in sorted(tiles.items()):
        d = lv % subtree_levels
        members.setdefault((lv - d, x >> d, y >> d), []).append((lv, x, y, t))
        if d == 0 and lv > 0:
            s = subtree_levels
            children.setdefault((lv - s, x >> s, y >> s), []).append((lv, x, y))
    n_levels = max(k[0] for k in tiles) + 1
    have_content = any(t["content"] is not None for t in tiles.values())
    written = set()
    nbytes = 0
    for key, mem in members.items():
        rel = SUBTREE_TEMPLATE.format(n=subtree_levels, level=key[0], x=key[1], y=key[2])
        data = _subtree(key, mem, children.get(key, []), subtree_levels, have_content)
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
        written.add(target.resolve())
        nbytes += len(data)

    # z of the root volume: every tile's box (they all lie under the root's)
    boxes = np.asarray([t["box"] for t in tiles.values()])
    zlo = float((boxes[:, 2] - np.abs(boxes[:, 11])).min())
    zhi = float((boxes[:, 2] + np.abs(boxes[:, 11])).max())
    c = [float(lo[0] + size / 2), float(lo[1] + size / 2), (zlo + zhi) / 2]
    h = [size / 2, size / 2, max((zhi - zlo) / 2, 1e-3)]
    new_root = {
        "boundingVolume": {"box": [*c, h[0], 0.0, 0.0, 0.0, h[1], 0.0, 0.0, 0.0, h[2]]},
        "geometricError": tiles[(0, 0, 0)]["geometricError"],
        "refine": "REPLACE",
    }
    if "transform" in root:
        new_root["transform"] = root["transform"]
    if have_content:
        new_root["content"] = {"uri": CONTENT_TEMPLATE}
    new_root["implicitTiling"] = {
        "subdivisionScheme": "QUADTREE",
        "subtreeLevels": subtree_levels,
        "availableLevels": n_levels,
        "subtrees": {"uri": SUBTREE_TEMPLATE.replace("{n}", str(subtree_levels))},
    }
    asset = dict(doc.get("asset") or {"version": "1.1"})
    asset["version"] = "1.1"
    extras = dict(asset.get("extras") or {})
    extras["quadtree_square"] = {"lo": [float(v) for v in lo], "size": size}
    extras["tiling"] = "implicit quadtree; per-tile TILE_GEOMETRIC_ERROR and TILE_BOUNDING_BOX"
    asset["extras"] = extras
    new_doc = {
        "asset": asset,
        "schema": _SCHEMA,
        "geometricError": float(doc["geometricError"]),
        "root": new_root,
    }
    write_json(path, new_doc)
    for old in (out / "subtrees").rglob("*.subtree"):
        if old.resolve() not in written:
            old.unlink(missing_ok=True)
    for d in sorted((out / "subtrees").rglob("*"), key=lambda q: -len(q.parts)):
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
    return {
        "tiles": len(tiles),
        "levels": n_levels,
        "subtrees": len(members),
        "subtree_levels": subtree_levels,
        "bytes": nbytes + path.stat().st_size,
    }


# -------------------------------------------------------------------------- reading


def read_subtree(path: str | os.PathLike) -> tuple[dict, bytes]:
    """The JSON and the internal buffer of a binary ``.subtree`` file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the subtree: {exc}", path=path) from exc
    if len(data) < 24 or data[:4] != _MAGIC:
        raise InputError("not a subtree file (no 'subt' header)", path=path)
    version, jlen, blen = struct.unpack_from("<IQQ", data, 4)
    if version != 1:
        raise InputError(f"subtree version {version} is not 1", path=path)
    if 24 + jlen + blen > len(data):
        raise InputError(
            f"subtree is truncated: {len(data)} bytes for {24 + jlen + blen}", path=path
        )
    try:
        doc = json.loads(data[24 : 24 + jlen])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"subtree JSON is not valid: {exc}", path=path) from exc
    return doc, data[24 + jlen : 24 + jlen + blen]


def _view(doc: dict, body: bytes, i: int, path: Path) -> bytes:
    try:
        v = doc["bufferViews"][i]
        if v.get("buffer", 0) != 0 or "uri" in doc["buffers"][0]:
            raise InputError("subtrees with external buffers are not supported", path=path)
        a, n = int(v.get("byteOffset", 0)), int(v["byteLength"])
    except (KeyError, IndexError, TypeError) as exc:
        raise InputError(f"subtree bufferView {i} is missing or malformed", path=path) from exc
    if a + n > len(body):
        raise InputError(f"subtree bufferView {i} runs past the buffer", path=path)
    return body[a : a + n]


def _bits(doc: dict, body: bytes, av: dict, n: int, path: Path) -> np.ndarray:
    if "constant" in av:
        return np.full(n, bool(av["constant"]))
    raw = np.frombuffer(_view(doc, body, av["bitstream"], path), np.uint8)
    if len(raw) * 8 < n:
        raise InputError(f"availability bitstream holds {len(raw) * 8} bits for {n}", path=path)
    return np.unpackbits(raw, bitorder="little")[:n].astype(bool)


def read_implicit(tiles_dir: str | os.PathLike) -> dict[tuple[int, int, int], dict]:
    """Decode an implicit QUADTREE tileset written by :func:`write_implicit`: every
    available tile as ``{(level, x, y): {"content": uri or None, "geometricError",
    "box"}}`` (error and box from the tile metadata where present, else derived by
    the implicit subdivision rules). Memory grows with the number of tiles."""
    out = Path(tiles_dir)
    path = out / "tileset.json"
    try:
        doc = json.loads(path.read_text())
        root = doc["root"]
        imp = root["implicitTiling"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"not an implicit tileset: {exc!r}", path=path) from exc
    if imp.get("subdivisionScheme") != "QUADTREE":
        raise InputError("only QUADTREE implicit tilesets are read", path=path)
    levels, n_levels = int(imp["subtreeLevels"]), int(imp["availableLevels"])
    sub_t, content_t = imp["subtrees"]["uri"], (root.get("content") or {}).get("uri")
    rb = np.asarray(root["boundingVolume"]["box"], np.float64)
    e0 = float(root["geometricError"])
    tiles: dict[tuple[int, int, int], dict] = {}
    stack = [(0, 0, 0)]
    n_bits = _level_offset(levels)
    while stack:
        l0, x0, y0 = stack.pop()
        sp = out / sub_t.format(level=l0, x=x0, y=y0)
        sdoc, body = read_subtree(sp)
        avail = _bits(sdoc, body, sdoc["tileAvailability"], n_bits, sp)
        cav = sdoc.get("contentAvailability") or [{"constant": 0}]
        content = _bits(sdoc, body, cav[0], n_bits, sp)
        child = _bits(sdoc, body, sdoc["childSubtreeAvailability"], 4**levels, sp)
        meta = {}
        if "tileMetadata" in sdoc:
            table = sdoc["propertyTables"][sdoc["tileMetadata"]]
            cls = doc.get("schema", {}).get("classes", {}).get(table["class"], {})
            for name, prop in table["properties"].items():
                sem = cls.get("properties", {}).get(name, {}).get("semantic")
                vals = np.frombuffer(_view(sdoc, body, prop["values"], sp), "<f8")
                if sem == "TILE_GEOMETRIC_ERROR":
                    meta["error"] = vals
                elif sem == "TILE_BOUNDING_BOX":
                    meta["box"] = vals.reshape(-1, 12)
        row = 0
        for d in range(levels):
            lv = l0 + d
            if lv >= n_levels:
                break
            base = _level_offset(d)
            for m in np.flatnonzero(avail[base : base + 4**d]):
                dx, dy = demorton2(int(m))
                x, y = (x0 << d) + dx, (y0 << d) + dy
                box = _derived_box(rb, lv, x, y)
                err = e0 / 2**lv
                if "box" in meta:
                    box = [float(v) for v in meta["box"][row]]
                if "error" in meta:
                    err = float(meta["error"][row])
                uri = None
                if content[base + m] and content_t:
                    uri = content_t.format(level=lv, x=x, y=y)
                tiles[(lv, x, y)] = {"content": uri, "geometricError": err, "box": box}
                row += 1
        for m in np.flatnonzero(child):
            dx, dy = demorton2(int(m))
            stack.append((l0 + levels, (x0 << levels) + dx, (y0 << levels) + dy))
    return tiles


def _derived_box(rb: np.ndarray, level: int, x: int, y: int) -> list[float]:
    """The implicit box of tile (level, x, y) of the root box ``rb`` (quadtree)."""
    n = 2**level
    ax, ay = rb[3:6], rb[6:9]
    c = rb[:3] + ax * ((2 * x + 1) / n - 1) + ay * ((2 * y + 1) / n - 1)
    return [float(v) for v in (*c, *(ax / n), *(ay / n), *rb[9:12])]


def validate_subtree(path: str | os.PathLike) -> list[str]:
    """Problems found in a binary ``.subtree`` file (empty list: valid): its JSON
    against the official 3D Tiles 1.1 subtree schema, buffer views inside the buffer
    and on 8-byte boundaries, header and chunk lengths multiples of 8."""
    from twin.tiles.validate import _BASE_URI, _validator, schema_dir

    path = Path(path)
    try:
        doc, body = read_subtree(path)
    except InputError as exc:
        return [str(exc)]
    data = path.read_bytes()
    out = []
    jlen, blen = struct.unpack_from("<QQ", data, 8)
    if (24 + jlen) % 8 or blen % 8:
        out.append("JSON or binary chunk does not end on 8 bytes")
    v = _validator(str(schema_dir())).evolve(
        schema={"$ref": _BASE_URI + "Subtree/subtree.schema.json"}
    )
    for e in v.iter_errors(doc):
        loc = "/".join(str(p) for p in e.absolute_path) or "(root)"
        out.append(f"schema: {loc}: {e.message}")
    for i, bv in enumerate(doc.get("bufferViews", [])):
        a, n = bv.get("byteOffset", 0), bv.get("byteLength", 0)
        if a % 8:
            out.append(f"bufferViews/{i}: byteOffset {a} is not a multiple of 8")
        if a + n > len(body):
            out.append(f"bufferViews/{i}: runs past the buffer")
    return out
