"""City-scale 3D Tiles with real levels of detail: :func:`write_lod_tileset`.

The tree
--------
The city's meshes (*layers*: terrain, buildings, textured surfaces, each in the
local ENU frame, metres) are cut into a quadtree over the square that holds them:
every face goes to the cell holding its centroid (so no face is split and every
vertex keeps its exact position), and a cell is split in four while it holds more
than ``max_faces`` faces, is larger than ``min_size`` and is shallower than
``max_depth``. Leaves hold the full-resolution faces (``geometricError`` 0).

Each parent holds a simplified version of its children (REPLACE refinement): the
children's contents are joined (bit-identical shared vertices weld exactly), then
:func:`twin.mesh.simplify` runs with ``lock_border=True`` to about ``max_faces``
faces, so the cut between two neighbouring cells stays where it is at every level
and neighbours never crack apart. A parent's ``geometricError`` is the error the
simplification reports (in metres) plus the largest of its children's: measured,
not a constant. Per-vertex colours and building ids ride along as attributes.

Textured layers (one per atlas page: UVs + the page image) simplify with their UVs
as attributes, chart borders kept as seams; each tile's image repacks the charts
its faces use, and parents' images are box-filtered down per level with the texel
size tied to the tile's geometric error (see :func:`write_lod_tileset`).

Content
-------
One GLB per tile (:mod:`twin.tiles.gltf`: EXT_meshopt_compression by default,
KHR_draco_mesh_compression or none by ``LodParams.compression``) with one primitive
per layer; positions relative to the tile's centre (RTC through the node's
translation), the root tile
carries the ENU -> ECEF transform of the frame. Building ids (``_FEATURE_ID_0``)
index a per-tile subset of the building property table (EXT_mesh_features +
EXT_structural_metadata). Bounding volumes are tight ENU boxes around each tile's
content, grown to contain the children's.

Incremental updates
-------------------
Every tile is keyed by a SHA-256 of what made it (a leaf: its faces, vertices and
attributes; a parent: its children's keys and the parameters). ``previous``
(:func:`read_tile_index`) lets :func:`write_lod_tileset` keep every tile whose key
did not change and rewrite only tiles whose content changed, i.e. the changed leaves
and their ancestors; the simplified meshes of unchanged subtrees come from a cache
folder. The returned summary lists what was written, kept and removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from twin.crs import LocalFrame
from twin.errors import CRSError, InputError, OutputError, ParameterError
from twin.fileio import atomic_path, write_json
from twin.progress import Progress, ensure

INDEX = "tiles.index.json"
# Bumped whenever the same input and parameters would give different tile bytes
# (an index of another format is ignored: every tile is rewritten).
_FORMAT = 2  # 2: 16-bit UVs in meshopt tiles, 4-byte aligned views after images


@dataclass
class Layer:
    """One mesh of the city for :func:`write_lod_tileset`, in local ENU metres.

    ``colors`` optional (N, 3|4) per-vertex RGB(A) in [0, 1]; ``feature_ids``
    optional (N,) integer ids indexing the rows of ``features`` (a
    :class:`~twin.tiles.gltf.PropertyTable`), e.g. the building each vertex belongs
    to. ``lock`` keeps the layer out of simplification (drawn in full at every
    level) — for small, important meshes only.

    ``texcoords`` (N, 2) glTF UVs (u right, v down) into ``texture``, an (H, W, 3)
    uint8 image (one atlas page; a textured model is one layer per page): each
    tile's content carries the part of the page its faces use (cropped, see
    :func:`write_lod_tileset`), downsampled in parents.
    """

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray | None = None
    feature_ids: np.ndarray | None = None
    features: object | None = None
    base_color: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    lock: bool = False
    texcoords: np.ndarray | None = None
    texture: np.ndarray | None = None


@dataclass(frozen=True)
class LodParams:
    max_faces: int = 20_000  # faces per tile content (all layers together)
    max_depth: int = 8
    min_size: float = 30.0  # metres: cells smaller than this are not split
    compression: str = "meshopt"  # "meshopt" | "draco" | "none" (twin.tiles.gltf.glb_bytes)
    bits: int = 14  # position quantisation per axis of each tile's box (meshopt, draco)
    implicit: bool = False  # 3D Tiles 1.1 implicit quadtree (twin.tiles.implicit)
    texture_format: str = "jpg"  # "jpg" | "webp": tile images of textured layers
    texture_quality: int = 85
    # a tile's texel size is at most this fraction of its geometricError
    texel_error_ratio: float = 0.25

    def to_dict(self) -> dict:
        d = {
            "max_faces": self.max_faces,
            "max_depth": self.max_depth,
            "min_size": self.min_size,
            "compression": self.compression,
            "bits": self.bits,
        }
        if (self.texture_format, self.texture_quality, self.texel_error_ratio) != ("jpg", 85, 0.25):
            d["texture"] = [self.texture_format, self.texture_quality, self.texel_error_ratio]
        return d


@dataclass
class _Part:
    """A layer's faces inside one tile (compact vertex arrays)."""

    vertices: np.ndarray
    faces: np.ndarray
    attrs: np.ndarray  # (N, K) float64: colours then the feature id (K may be 0)


@dataclass
class _Node:
    level: int
    x: int
    y: int
    lo: np.ndarray  # cell's xy min
    size: float
    face_sets: list[np.ndarray]  # per layer, indices of the layer's faces in the cell
    children: list[_Node] = field(default_factory=list)
    parts: list[_Part | None] = field(default_factory=list)
    error: float = 0.0
    tex_factor: dict = field(default_factory=dict)  # layer -> texture downsampling
    key: str = ""
    box: np.ndarray | None = None  # (2, 3) ENU lo/hi
    has_content: bool = False

    @property
    def name(self) -> str:
        return f"{self.level}/{self.x}_{self.y}"

    @property
    def uri(self) -> str:
        return f"t/{self.level}/{self.x}_{self.y}.glb"


def _check_layers(layers: list[Layer]) -> None:
    if not layers:
        raise ParameterError("write_lod_tileset needs at least one layer")
    names = [la.name for la in layers]
    if len(set(names)) != len(names):
        raise ParameterError(f"layer names must be unique, got {names}")
    total = 0
    for la in layers:
        v = np.asarray(la.vertices)
        f = np.asarray(la.faces)
        if v.ndim != 2 or v.shape[1] != 3:
            raise InputError(f"layer {la.name!r}: vertices must be (N, 3), got {v.shape}")
        if f.ndim != 2 or f.shape[1] != 3:
            raise InputError(f"layer {la.name!r}: faces must be (M, 3), got {f.shape}")
        if not np.all(np.isfinite(v)):
            raise InputError(f"layer {la.name!r}: vertices contain NaN or infinite values")
        if len(f) and (f.min() < 0 or f.max() >= len(v)):
            raise InputError(f"layer {la.name!r}: face indices out of range 0..{len(v) - 1}")
        if la.texture is not None:
            t = np.asarray(la.texture)
            if t.ndim != 3 or t.shape[2] != 3 or t.dtype != np.uint8 or min(t.shape[:2]) < 1:
                raise InputError(f"layer {la.name!r}: texture must be an (H, W, 3) uint8 image")
            if la.texcoords is None:
                raise InputError(f"layer {la.name!r}: a texture needs texcoords")
        if la.texcoords is not None:
            uv = np.asarray(la.texcoords)
            if uv.shape != (len(v), 2) or not np.all(np.isfinite(uv)):
                raise InputError(
                    f"layer {la.name!r}: texcoords must be finite (N, 2) for {len(v)} vertices"
                )
        for attr in ("colors", "feature_ids"):
            a = getattr(la, attr)
            if a is not None and len(a) != len(v):
                raise InputError(
                    f"layer {la.name!r}: {attr} has {len(a)} rows for {len(v)} vertices"
                )
        total += len(f)
    if total == 0:
        raise InputError("nothing to tile: every layer is empty")


def _attrs_of(la: Layer) -> np.ndarray:
    cols = []
    if la.colors is not None:
        c = np.asarray(la.colors)
        c = c.astype(np.float64) / 255.0 if c.dtype == np.uint8 else c.astype(np.float64)
        cols.append(c)
    if la.texcoords is not None:
        cols.append(np.asarray(la.texcoords, dtype=np.float64))
    if la.feature_ids is not None:
        cols.append(np.asarray(la.feature_ids, dtype=np.float64).reshape(-1, 1))
    n = len(la.vertices)
    return np.hstack(cols) if cols else np.zeros((n, 0))


def _submesh(v: np.ndarray, f: np.ndarray, a: np.ndarray) -> _Part:
    used, inv = np.unique(f.reshape(-1), return_inverse=True)
    return _Part(v[used], inv.reshape(-1, 3).astype(np.uint32), a[used])


def _hash_arrays(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _split(node: _Node, centroids: list[np.ndarray], p: LodParams) -> None:
    total = sum(len(s) for s in node.face_sets)
    if total <= p.max_faces or node.level >= p.max_depth or node.size / 2 < p.min_size:
        return
    half = node.size / 2.0
    for dy in (0, 1):
        for dx in (0, 1):
            lo = node.lo + np.array([dx * half, dy * half])
            sets = []
            for s, c in zip(node.face_sets, centroids, strict=True):
                cx, cy = c[s, 0], c[s, 1]
                # half-open cells; the root's far edge belongs to the last cell
                inx = (cx >= lo[0]) & ((cx < lo[0] + half) | (dx == 1))
                iny = (cy >= lo[1]) & ((cy < lo[1] + half) | (dy == 1))
                sets.append(s[inx & iny])
            if sum(len(s) for s in sets) == 0:
                continue
            child = _Node(node.level + 1, 2 * node.x + dx, 2 * node.y + dy, lo, half, sets)
            node.children.append(child)
    for ch in node.children:
        _split(ch, centroids, p)


def _postorder(node: _Node):
    for ch in node.children:
        yield from _postorder(ch)
    yield node


def _join(parts: list[_Part]) -> _Part:
    """Concatenate parts and weld bit-identical vertices (with equal attributes)."""
    from twin.mesh.weld import weld

    parts = [q for q in parts if q is not None and len(q.faces)]
    if not parts:
        return None
    offs = np.cumsum([0] + [len(q.vertices) for q in parts[:-1]])
    v = np.concatenate([q.vertices for q in parts])
    f = np.concatenate([q.faces.astype(np.int64) + o for q, o in zip(parts, offs, strict=True)])
    a = np.concatenate([q.attrs for q in parts])
    welded = weld(v, f, tol=0.0, attributes=a if a.shape[1] else None)
    vw, fw = welded
    aw = welded.attributes
    if aw is None:
        aw = np.zeros((len(vw), 0))
    return _Part(vw, fw.astype(np.uint32), np.asarray(aw, np.float64).reshape(len(vw), -1))


def _simplify_part(part: _Part, target: int, info: dict) -> tuple[_Part, float]:
    from twin.mesh.simplify import simplify

    fid_col = info["fid"]
    if part is None or len(part.faces) <= target:
        return part, 0.0
    attrs = part.attrs if part.attrs.shape[1] else None
    weights = info["weights"] if attrs is not None else None
    res = simplify(
        part.vertices,
        part.faces,
        target_faces=max(int(target), 1),
        lock_border=True,
        attributes=attrs,
        attribute_weights=weights,
    )
    a = res.attributes if attrs is not None else np.zeros((len(res.vertices), 0))
    a = np.asarray(a, np.float64).reshape(len(res.vertices), -1)
    if fid_col is not None:
        a[:, fid_col] = np.rint(a[:, fid_col])
    return _Part(res.vertices, res.faces.astype(np.uint32), a), float(res.error)


def read_tile_index(tiles_dir: str | os.PathLike) -> dict | None:
    """The tile keys of an earlier :func:`write_lod_tileset` run (``None`` if none)."""
    path = Path(tiles_dir) / INDEX
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"unreadable tile index: {exc}", path=path) from exc
    if doc.get("format") != _FORMAT:
        return None
    return doc


def write_lod_tileset(
    out_dir: str | os.PathLike,
    layers: list[Layer],
    frame: LocalFrame,
    *,
    params: LodParams | None = None,
    cache_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    extras: dict | None = None,
    progress: Progress | None = None,
) -> dict:
    """Write a quadtree LOD tileset of ``layers`` into ``out_dir``; return a summary.

    ``out_dir`` gets ``tileset.json``, ``t/{level}/{x}_{y}.glb`` contents and
    ``tiles.index.json`` (tile keys for incremental updates). When ``out_dir``
    already holds a tileset written by twin, only tiles whose key changed are
    rewritten (``cache_dir`` keeps the simplified meshes so unchanged subtrees are
    not simplified again); a folder holding anything else raises
    :class:`~twin.errors.OutputError` unless ``overwrite``. ``tileset.json`` is
    written last, so a half-written folder never looks complete (a fresh folder is
    built beside and renamed into place; an update removes the old ``tileset.json``
    first, and a folder left without one by an unfinished update is rebuilt, with
    ``overwrite``, rather than trusted). ``frame`` (a :class:`~twin.crs.LocalFrame`)
    places the ENU meshes on the globe: without one, :class:`~twin.errors.CRSError`.

    Textured layers (``texcoords`` + ``texture``): a tile's image holds the charts
    its faces use, repacked; parents' images are box-filtered by a power of two, at
    least twice their children's factor and enough for a texel to be at most
    ``texel_error_ratio`` x the tile's geometric error, which is raised to match
    (texel size / ratio) so a client refines before the texels show. Encoded as
    ``texture_format`` (JPEG or WebP) at ``texture_quality``.

    Returns ``{"tiles", "levels", "written", "kept", "removed", "root_error",
    "faces_in", "bytes"}``. Memory grows with the input meshes plus one tile's
    children at a time.
    """
    from twin import __version__

    p = params or LodParams()
    from twin.tiles.gltf import COMPRESSIONS

    if not isinstance(frame, LocalFrame):
        raise CRSError(
            "tiles need the meshes' local frame (a twin.crs.LocalFrame anchored in their "
            f"CRS) to place them on the globe; got {type(frame).__name__}"
        )
    if p.compression not in COMPRESSIONS:
        raise ParameterError(f"compression must be one of {COMPRESSIONS}, got {p.compression!r}")
    if p.max_faces < 64:
        raise ParameterError(f"max_faces must be >= 64, got {p.max_faces}")
    if p.texture_format not in _MIMES:
        raise ParameterError(
            f"texture_format must be one of {sorted(_MIMES)}, got {p.texture_format!r}"
        )
    if not p.texel_error_ratio > 0:
        raise ParameterError(f"texel_error_ratio must be > 0, got {p.texel_error_ratio}")
    _check_layers(layers)
    progress = ensure(progress)
    out = Path(out_dir)
    previous = None
    if out.exists():
        if not out.is_dir():
            raise OutputError("the output exists and is not a folder", path=out)
        previous = read_tile_index(out)
        if previous is not None and not (out / "tileset.json").exists():
            # an update that did not finish: its tiles and index may disagree
            if not overwrite:
                raise OutputError(
                    "the folder holds a tileset whose last update did not finish "
                    "(no tileset.json; use overwrite to rebuild it)",
                    path=out,
                )
            previous = None
        if previous is None and any(out.iterdir()):
            if not overwrite:
                raise OutputError(
                    "the folder is not empty and holds no tileset written by twin "
                    "(use overwrite to replace it)",
                    path=out,
                )
            shutil.rmtree(out)
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)

    verts = [np.asarray(la.vertices, np.float64) for la in layers]
    faces = [np.asarray(la.faces, np.int64).reshape(-1, 3) for la in layers]
    attrs = [_attrs_of(la) for la in layers]
    infos = [
        _layer_info(la, a, v, f) for la, a, v, f in zip(layers, attrs, verts, faces, strict=True)
    ]
    fid_cols = [i["fid"] for i in infos]
    centroids = [
        v[f].mean(axis=1) if len(f) else np.zeros((0, 3)) for v, f in zip(verts, faces, strict=True)
    ]
    allv = np.concatenate([v[np.unique(f)] for v, f in zip(verts, faces, strict=True) if len(f)])
    lo = allv[:, :2].min(axis=0)
    size = float(max(np.ptp(allv[:, 0]), np.ptp(allv[:, 1]), 1e-3))
    root = _Node(0, 0, 0, lo, size, [np.arange(len(f)) for f in faces])
    _split(root, centroids, p)
    nodes = list(_postorder(root))
    n_layers = len(layers)
    pkey = json.dumps({"params": p.to_dict(), "twin": __version__, "format": _FORMAT})
    pkey += json.dumps([(la.name, la.lock, fid) for la, fid in zip(layers, fid_cols, strict=True)])
    pkey += "".join(i["page_key"] for i in infos)

    # --- keys and contents, bottom-up; a content is written as soon as it is known
    old = (previous or {}).get("tiles", {})
    fresh = previous is None
    target_dir = out
    if fresh:
        out.parent.mkdir(parents=True, exist_ok=True)
        target_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent))
    else:
        # updated in place: without tileset.json the folder does not look complete
        # until the new one is written (and an unfinished update is rebuilt)
        (out / "tileset.json").unlink()
    written, kept, removed = [], [], []
    index_tiles: dict[str, str] = {}
    texture_bytes = [0] * (max(n.level for n in nodes) + 1)
    leaf_total = 0
    try:
        with progress.step("tiles: levels of detail", total=len(nodes)) as advance:
            for node in nodes:
                if not node.children:
                    leaf_total += _leaf_parts(node, verts, faces, attrs, pkey)
                else:
                    _parent_parts(node, layers, infos, p, pkey, cache)
                    for c in node.children:  # no longer needed: free them
                        c.parts = [None] * n_layers
                node.box = _node_box(node)
                index_tiles[node.uri] = node.key
                path = target_dir / node.uri
                node.has_content = _has_content(node)
                if not node.has_content:
                    pass
                elif not fresh and old.get(node.uri) == node.key and path.exists():
                    kept.append(node.uri)
                else:
                    tex_bytes = _write_content(path, node, layers, infos, p)
                    written.append(node.uri)
                    texture_bytes[node.level] += tex_bytes
                advance(1)
        if not fresh:
            for uri in old:
                if uri not in index_tiles:
                    (out / uri).unlink(missing_ok=True)
                    removed.append(uri)
        root_error = _tileset_error(root, size)
        doc = _tileset_doc(root, frame, root_error, extras, __version__)
        write_json(
            target_dir / INDEX,
            {"format": _FORMAT, "generator": f"twin {__version__}", "tiles": index_tiles},
        )
        write_json(target_dir / "tileset.json", doc)
        if fresh:
            if out.exists():
                shutil.rmtree(out)
            os.replace(target_dir, out)
    finally:
        if fresh and target_dir.exists() and target_dir != out:
            shutil.rmtree(target_dir, ignore_errors=True)
    if p.implicit:
        from twin.tiles.implicit import write_implicit

        write_implicit(out, square=(lo, size))
    index_tiles = {u: k for u, k in index_tiles.items() if (out / u).exists()}
    nbytes = sum((out / u).stat().st_size for u in index_tiles)
    return {
        "tiles": len(nodes),
        "levels": max(n.level for n in nodes) + 1,
        "written": written,
        "kept": kept,
        "removed": removed,
        "root_error": root_error,
        "geometric_error_by_level": _errors_by_level(nodes),
        "faces_in": int(leaf_total),
        "bytes": int(nbytes),
        "texture_bytes_by_level": texture_bytes,
        "tileset": str(out / "tileset.json"),
    }


def _leaf_parts(node: _Node, verts, faces, attrs, pkey: str) -> int:
    parts, hashes, n = [], [], 0
    for k in range(len(verts)):
        s = node.face_sets[k]
        if len(s) == 0:
            parts.append(None)
            hashes.append("")
            continue
        part = _submesh(verts[k], faces[k][s], attrs[k])
        parts.append(part)
        hashes.append(_hash_arrays(part.vertices, part.faces, part.attrs))
        n += len(s)
    node.parts = parts
    node.key = _hash_str(pkey + node.name + "".join(hashes))
    node.error = 0.0
    return n


def _parent_parts(node: _Node, layers, infos, p: LodParams, pkey: str, cache) -> None:
    n_layers = len(layers)
    node.key = _hash_str(pkey + node.name + "".join(c.key for c in node.children))
    cached = _cache_load(cache, node.key)
    if cached is not None:
        node.parts, node.error, node.tex_factor = cached
        return
    total = sum(
        len(c.parts[k].faces)
        for c in node.children
        for k in range(n_layers)
        if c.parts[k] is not None
    )
    node.parts, err = [], 0.0
    for k in range(n_layers):
        joined = _join([c.parts[k] for c in node.children])
        if joined is None or layers[k].lock:
            node.parts.append(joined)
            continue
        target = int(np.ceil(p.max_faces * len(joined.faces) / max(total, 1)))
        part, e = _simplify_part(joined, target, infos[k])
        node.parts.append(part)
        err = max(err, e)
    node.error = err + max(c.error for c in node.children)
    _texture_levels(node, infos, p)
    _cache_save(cache, node.key, node.parts, node.error, node.tex_factor)


def _layer_info(la: Layer, attrs: np.ndarray, v: np.ndarray, f: np.ndarray) -> dict:
    """Column layout of a layer's attributes (colours, UVs, feature id last), the
    simplification weights, and for a textured layer its texel size in metres (the
    median over faces of sqrt(3D area / texture area in texels))."""
    k = attrs.shape[1]
    fid = k - 1 if la.feature_ids is not None else None
    uv = None
    if la.texcoords is not None:
        uv = k - 2 - (1 if fid is not None else 0)
    info = {"fid": fid, "uv": uv, "ncol": k - (fid is not None) - 2 * (uv is not None)}
    info["weights"] = np.ones(k) if k else None
    if fid is not None:
        info["weights"][fid] = 1000.0  # never blend two buildings' ids
    info["page_key"] = ""
    info["texel"] = 0.0
    if la.texture is not None:
        page = np.ascontiguousarray(la.texture)
        h, w = page.shape[:2]
        t = v[f]
        area3 = 0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1)
        q = np.asarray(la.texcoords, np.float64)[f] * [w, h]
        e1, e2 = q[:, 1] - q[:, 0], q[:, 2] - q[:, 0]
        area_px = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
        ok = (area_px > 1e-9) & (area3 > 0)
        texel = float(np.median(np.sqrt(area3[ok] / area_px[ok]))) if ok.any() else 1.0
        info["texel"] = texel
        # a UV difference of one texel weighs like the texel's size in metres
        info["weights"][uv : uv + 2] = [w * texel, h * texel]
        info["page_key"] = _hash_arrays(page)
    return info


def _texture_levels(node: _Node, infos: list[dict], p: LodParams) -> None:
    """Downsampling of each textured layer's image in a parent tile: at least twice
    its children's (so every level up has a quarter of the texels per square metre)
    and at least what keeps a texel within ``texel_error_ratio`` of the tile's
    geometric error; the error is raised to match the texels (texel size = ratio x
    error), so a client refines a tile before its texels show."""
    for k, info in enumerate(infos):
        if info["texel"] <= 0 or node.parts[k] is None or not len(node.parts[k].faces):
            continue
        child = max((c.tex_factor.get(k, 1) for c in node.children), default=1)
        by_error = p.texel_error_ratio * node.error / info["texel"]
        f = max(2 * child, 1 << int(np.floor(np.log2(max(by_error, 1.0)))))
        node.tex_factor[k] = int(f)
        node.error = max(node.error, f * info["texel"] / p.texel_error_ratio)


def _has_content(node: _Node) -> bool:
    return any(q is not None and len(q.faces) for q in node.parts)


def _node_box(node: _Node) -> np.ndarray | None:
    boxes = [c.box for c in node.children if c.box is not None]
    pv = [q.vertices for q in node.parts if q is not None and len(q.faces)]
    if pv:
        vv = np.concatenate(pv)
        boxes.append(np.stack([vv.min(axis=0), vv.max(axis=0)]))
    if not boxes:
        return None
    b = np.stack(boxes)
    return np.stack([b[:, 0].min(axis=0), b[:, 1].max(axis=0)])


def _hash_str(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def _preorder(node: _Node):
    yield node
    for ch in node.children:
        yield from _preorder(ch)


def _errors_by_level(nodes: list[_Node]) -> list[float]:
    levels = max(n.level for n in nodes) + 1
    out = [0.0] * levels
    for n in nodes:
        out[n.level] = max(out[n.level], n.error)
    return out


def _tileset_error(root: _Node, size: float) -> float:
    """The tileset's own error (nothing drawn): at least the root's, at least the
    city's size / 8, so a client loads the root when the city covers a few pixels."""
    return float(max(root.error * 2.0, size / 8.0, 1.0))


def _cache_load(cache: Path | None, key: str):
    if cache is None:
        return None
    path = cache / f"{key}.npz"
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            n = int(z["n"])
            parts = []
            for k in range(n):
                if f"v{k}" in z:
                    parts.append(_Part(z[f"v{k}"], z[f"f{k}"], z[f"a{k}"]))
                else:
                    parts.append(None)
            factors = {}
            if "tex" in z:
                factors = {int(k): int(f) for k, f in np.asarray(z["tex"]).reshape(-1, 2)}
            return parts, float(z["error"]), factors
    except (OSError, ValueError, KeyError):
        return None


def _cache_save(cache: Path | None, key: str, parts: list, error: float, factors: dict) -> None:
    if cache is None:
        return
    arrays = {"n": np.int64(len(parts)), "error": np.float64(error)}
    arrays["tex"] = np.array(sorted(factors.items()), np.int64).reshape(-1, 2)
    for k, q in enumerate(parts):
        if q is not None:
            arrays[f"v{k}"], arrays[f"f{k}"], arrays[f"a{k}"] = q.vertices, q.faces, q.attrs
    with atomic_path(cache / f"{key}.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def _write_content(path: Path, node: _Node, layers, infos, p: LodParams) -> int:
    """Write one tile's GLB; returns the bytes of its encoded texture images."""
    from twin.tiles.gltf import GltfMesh, enu_to_gltf, write_glb

    centre = (node.box[0] + node.box[1]) / 2.0
    meshes = []
    tex_bytes = 0
    for k, (la, part, info) in enumerate(zip(layers, node.parts, infos, strict=True)):
        if part is None or len(part.faces) == 0:
            continue
        fid_col = info["fid"]
        colors = None
        ncol = info["ncol"]
        uv = image = None
        if info["uv"] is not None:
            uv = part.attrs[:, info["uv"] : info["uv"] + 2]
        if la.texture is not None:
            uv, image = _tile_image(la.texture, uv, part.faces, node.tex_factor.get(k, 1), p)
            tex_bytes += len(image)
        if ncol:
            colors = np.clip(part.attrs[:, :ncol], 0.0, 1.0).astype(np.float32)
        fids, table = None, None
        if fid_col is not None:
            ids = part.attrs[:, fid_col].astype(np.int64)
            used, local = np.unique(ids, return_inverse=True)
            fids = local.astype(np.float32)
            if la.features is not None:
                table = _table_subset(la.features, used)
        meshes.append(
            GltfMesh(
                name=la.name,
                positions=part.vertices - centre,
                indices=part.faces,
                colors=colors,
                feature_ids=fids,
                features=table,
                base_color=la.base_color,
                texcoords=uv,
                texture=image,
                texture_mime=_MIMES[p.texture_format],
            )
        )
    matrix = np.eye(4)
    matrix[:3, 3] = enu_to_gltf(centre)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_glb(path, meshes, node_matrix=matrix, compression=p.compression, bits=p.bits)
    return tex_bytes


_MIMES = {"jpg": "image/jpeg", "webp": "image/webp"}
_PIL_FORMATS = {"jpg": "JPEG", "webp": "WEBP"}
#: texels kept around the UV rectangle of a tile's faces (in the tile's image)
CROP_MARGIN = 2


def _tile_image(page: np.ndarray, uv: np.ndarray, faces: np.ndarray, factor: int, p: LodParams):
    """The charts of ``page`` that a tile's faces use, repacked into one image,
    box-filtered down by ``factor`` (a power of two) and encoded; returns the UVs
    into it and the image bytes.

    Each connected piece of the faces (a chart, or the part of one inside the tile:
    vertices are split at chart borders) keeps the rectangle of page texels around
    its UVs, grown by :data:`CROP_MARGIN` output texels and aligned to ``factor``,
    so every output texel is the mean of ``factor**2`` page texels (edge texels are
    repeated where the page ends) and the UVs map exactly. The rectangles are
    packed on shelves, tallest first."""
    import io

    from PIL import Image
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    h, w = page.shape[:2]
    f = int(factor)
    px = uv * [w, h]
    n = len(uv)
    fa = np.asarray(faces, np.int64).reshape(-1, 3)
    rows = np.concatenate([fa[:, 0], fa[:, 1]])
    cols = np.concatenate([fa[:, 1], fa[:, 2]])
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    used = np.zeros(n, bool)
    used[fa.ravel()] = True
    m = CROP_MARGIN * f
    rects = []  # (component, x0, y0, x1, y1) in page texels, aligned to f
    for c in np.unique(comp[used]):
        q = px[(comp == c) & used]
        x0 = int(np.floor((np.floor(q[:, 0].min()) - m) / f)) * f
        y0 = int(np.floor((np.floor(q[:, 1].min()) - m) / f)) * f
        x1 = int(np.ceil((np.ceil(q[:, 0].max()) + m) / f)) * f
        y1 = int(np.ceil((np.ceil(q[:, 1].max()) + m) / f)) * f
        rects.append((c, x0, y0, x1, y1))
    # shelf packing in output texels, tallest first, rows about as wide as tall
    sizes = [((r[3] - r[1]) // f, (r[4] - r[2]) // f) for r in rects]
    area = sum(a * b for a, b in sizes)
    width = max(max(a for a, _ in sizes), int(np.ceil(np.sqrt(area) * 1.15)))
    order = sorted(range(len(rects)), key=lambda k: -sizes[k][1])
    places = [None] * len(rects)
    x = y = shelf = 0
    for k in order:
        a, b = sizes[k]
        if x + a > width:
            x, y, shelf = 0, y + shelf, 0
        places[k] = (x, y)
        x += a
        shelf = max(shelf, b)
    height = y + shelf
    out = np.zeros((height, width, 3), np.uint8)
    new_px = px.copy()
    for (c, x0, y0, x1, y1), (ox, oy), (a, b) in zip(rects, places, sizes, strict=True):
        block = _page_block(page, x0, y0, x1, y1)
        if f > 1:
            block = block.reshape(b, f, a, f, 3).mean(axis=(1, 3))
            block = np.clip(np.rint(block), 0, 255).astype(np.uint8)
        out[oy : oy + b, ox : ox + a] = block
        sel = comp == c
        new_px[sel] = (px[sel] - [x0, y0]) / f + [ox, oy]
    buf = io.BytesIO()
    Image.fromarray(out).save(buf, _PIL_FORMATS[p.texture_format], quality=int(p.texture_quality))
    return new_px / [width, height], buf.getvalue()


def _page_block(page: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """``page[y0:y1, x0:x1]`` with the edge texels repeated outside the page."""
    h, w = page.shape[:2]
    block = page[max(y0, 0) : max(min(y1, h), 0), max(x0, 0) : max(min(x1, w), 0)]
    pads = ((max(-y0, 0), max(y1 - h, 0)), (max(-x0, 0), max(x1 - w, 0)), (0, 0))
    if any(a or b for a, b in pads[:2]):
        if block.size == 0:  # wholly outside: the nearest page texel
            block = page[min(max(y0, 0), h - 1) : min(max(y0, 0), h - 1) + 1,
                         min(max(x0, 0), w - 1) : min(max(x0, 0), w - 1) + 1]  # fmt: skip
            return np.broadcast_to(block, (y1 - y0, x1 - x0, 3)).copy()
        block = np.pad(block, pads, mode="edge")
    return block


def _table_subset(table, rows: np.ndarray):
    from twin.tiles.gltf import PropertyTable

    rows = [int(r) for r in rows]
    return PropertyTable(
        class_name=table.class_name,
        description=table.description,
        properties={k: [list(v)[r] for r in rows] for k, v in table.properties.items()},
    )


def _box(b: np.ndarray, pad: float = 0.001) -> list[float]:
    c = (b[0] + b[1]) / 2.0
    h = (b[1] - b[0]) / 2.0 + pad
    return [float(x) for x in (*c, h[0], 0, 0, 0, h[1], 0, 0, 0, h[2])]


def _tile_json(node: _Node, pad: float) -> dict:
    t = {
        "boundingVolume": {"box": _box(node.box, pad)},
        "geometricError": float(node.error),
        "refine": "REPLACE",
    }
    if node.has_content:
        t["content"] = {"uri": node.uri}
    if node.children:
        # children's boxes are padded less than their parent's, so they nest
        t["children"] = [_tile_json(c, pad * 0.5) for c in node.children]
    return t


def _tileset_doc(root: _Node, frame: LocalFrame, error: float, extras, version) -> dict:
    tile = _tile_json(root, 0.01)
    tile["transform"] = [float(x) for x in frame.enu_to_ecef_matrix().T.ravel()]
    meta = {
        "generator": f"twin {version}",
        "frame": frame.to_dict(),
        "content_frame": "glTF y-up of the ENU frame (x=E, y=U, z=-N), relative to the "
        "tile centre (node translation)",
        "heights": "ellipsoidal",
        "lod": "quadtree; parents simplified from children with locked borders; "
        "geometricError = measured simplification error + children's",
    }
    meta.update(extras or {})
    return {"asset": {"version": "1.1", "extras": meta}, "geometricError": error, "root": tile}


def ecef_box(enu_box: list[float], frame: LocalFrame) -> list[float]:
    """An ENU ``box`` (12 numbers) of ``frame`` as the same oriented box in ECEF."""
    m = frame.enu_to_ecef_matrix()
    b = np.asarray(enu_box, np.float64)
    c = m[:3, :3] @ b[:3] + m[:3, 3]
    axes = (m[:3, :3] @ b[3:].reshape(3, 3).T).T
    return [float(x) for x in (*c, *axes.ravel())]


def write_tileset_of_tilesets(
    out_dir: str | os.PathLike,
    children: list[str],
    frame: LocalFrame,
    *,
    extras: dict | None = None,
) -> Path:
    """Write ``out_dir/tileset.json`` whose root refers to the tilesets ``children``
    (paths relative to ``out_dir``, each written by :func:`write_lod_tileset`) as
    external tilesets, so one URL shows them all while a viewer can still load each
    (e.g. buildings over its own terrain) alone. Boxes are in ECEF (the children's
    roots carry the ENU -> ECEF transform, which must not be applied twice).
    """
    from twin import __version__

    if not children:
        raise ParameterError("a tileset of tilesets needs at least one child")
    tiles, errors, boxes = [], [], []
    for uri in children:
        path = Path(out_dir) / uri
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"cannot read the child tileset: {exc}", path=path) from exc
        box = ecef_box(doc["root"]["boundingVolume"]["box"], frame)
        err = float(doc["geometricError"])
        tiles.append(
            {"boundingVolume": {"box": box}, "geometricError": err, "content": {"uri": uri}}
        )
        errors.append(err)
        boxes.append(doc["root"]["boundingVolume"]["box"])
    b = np.asarray(boxes, np.float64)
    lo = (b[:, :3] - np.abs(b[:, [3, 7, 11]])).min(axis=0)
    hi = (b[:, :3] + np.abs(b[:, [3, 7, 11]])).max(axis=0)
    root_box = ecef_box(_box(np.stack([lo, hi]), pad=0.01), frame)
    meta = {"generator": f"twin {__version__}", "frame": frame.to_dict(), "layers": children}
    meta.update(extras or {})
    top = max(errors) * 2.0
    doc = {
        "asset": {"version": "1.1", "extras": meta},
        "geometricError": top,
        "root": {
            "boundingVolume": {"box": root_box},
            "geometricError": max(errors),
            "refine": "ADD",
            "children": tiles,
        },
    }
    path = Path(out_dir) / "tileset.json"
    write_json(path, doc)
    return path


def read_tile(path: str | os.PathLike) -> list[dict]:
    """Read one tile content back: per primitive ``name``, ``vertices`` (float64 ENU
    metres of the tileset's frame, node transforms applied), ``faces`` and, where
    present, ``colors``, ``feature_ids``, ``texcoords`` and the encoded ``texture``
    (with ``texture_mime``)."""
    from twin.tiles.gltf import gltf_to_enu, read_glb, read_glb_json

    doc, _ = read_glb_json(path)
    prims = read_glb(path)
    mats = []
    for node in doc.get("nodes", []):
        if "mesh" not in node:
            continue
        m = np.eye(4)
        if "matrix" in node:
            m = np.asarray(node["matrix"], np.float64).reshape(4, 4).T
        else:
            if "scale" in node:
                m[:3, :3] = np.diag(node["scale"])
            if "translation" in node:
                m[:3, 3] = node["translation"]
        for _ in doc["meshes"][node["mesh"]]["primitives"]:
            mats.append(m)
    out = []
    for prim, m in zip(prims, mats, strict=True):
        p = np.asarray(prim["positions"], np.float64)
        p = p @ m[:3, :3].T + m[:3, 3]
        d = {"name": prim.get("name", ""), "vertices": gltf_to_enu(p), "faces": prim["indices"]}
        for k in ("colors", "feature_ids", "texcoords", "texture", "texture_mime"):
            if prim.get(k) is not None:
                d[k] = prim[k]
        out.append(d)
    return out


def _box_distance(box: list[float], p: np.ndarray) -> float:
    """Distance from ``p`` to an oriented 3D Tiles box (0 inside)."""
    b = np.asarray(box, np.float64)
    c, axes = b[:3], b[3:].reshape(3, 3)
    d = p - c
    out = 0.0
    for a in axes:
        h = np.linalg.norm(a)
        if h == 0:
            continue
        t = abs(d @ a / h) - h
        if t > 0:
            out += t * t
    return float(np.sqrt(out))


def select_tiles(
    tileset: str | os.PathLike,
    eye: np.ndarray,
    *,
    max_sse: float = 16.0,
    screen_height: int = 1080,
    fov_deg: float = 60.0,
) -> list[tuple[str, int]]:
    """The contents a client draws from the viewpoint ``eye`` (ENU metres of the
    tileset's frame): a tile is refined while its screen-space error
    ``geometricError * screen_height / (2 d tan(fov / 2))`` exceeds ``max_sse``
    (CesiumJS's default is 16), ``d`` being the distance from ``eye`` to the tile's
    box. External tilesets (content ``.json``) are followed. Returns
    ``[(path relative to the top tileset, bytes)]``: what the client must fetch.
    """
    top = Path(tileset)
    eye = np.asarray(eye, np.float64)
    k = screen_height / (2.0 * np.tan(np.radians(fov_deg) / 2.0))
    picked: list[tuple[str, int]] = []

    def visit(tile: dict, base: Path, enu: bool) -> None:
        content = tile.get("content", {}).get("uri")
        if content and content.endswith(".json"):
            sub = base / content
            doc = json.loads(sub.read_text())
            visit(doc["root"], sub.parent, True)
            return
        kids = tile.get("children") or []
        if enu:
            d = max(_box_distance(tile["boundingVolume"]["box"], eye), 1e-6)
            sse = tile["geometricError"] * k / d
        else:
            sse = np.inf  # an ECEF grouping tile: always look inside
        if kids and sse > max_sse:
            for c in kids:
                visit(c, base, enu)
            if tile.get("refine", "REPLACE") == "REPLACE" or not content:
                return
        if content:
            path = base / content
            picked.append((path.relative_to(top.parent).as_posix(), path.stat().st_size))

    doc = json.loads(top.read_text())
    root = doc["root"]
    visit(root, top.parent, "transform" in root)
    return picked
