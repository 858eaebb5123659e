"""A small glTF 2.0 binary (GLB) writer and reader of our own.

Frames
------
:func:`write_glb` takes positions (and normals) in local **ENU** metres (x east,
y north, z up) and writes **glTF's y-up** frame: ``(x, y, z)_gltf = (E, U, -N)``.
3D Tiles applies the standard y-up to z-up rotation to glTF content
(``(x, y, z) -> (x, -z, y)``), which gives back ENU before the tile transform; so
a GLB written here and placed with ``frame.enu_to_ecef_matrix()`` lands where the
ENU coordinates say. :func:`read_glb` returns the stored (y-up) arrays;
:func:`gltf_to_enu` turns them back.

Layout
------
One node, mesh and triangle primitive per :class:`GltfMesh`; one buffer; every
bufferView starts on a 4-byte boundary; POSITION accessors carry exact min/max;
indices are uint16 when every index fits below 65535 (the primitive-restart value),
else uint32. ``COLOR_0`` is float RGB/RGBA (linear) or normalized uint8 RGBA.
``_FEATURE_ID_0`` (float, one id per vertex) is declared with ``EXT_mesh_features``
(``featureIds[0].attribute = 0``); a :class:`PropertyTable` on the mesh adds an
``EXT_structural_metadata`` schema and property table (binary columns in 8-byte
aligned bufferViews) that the feature ids index, so a viewer can show a picked
building's attributes; :func:`read_property_tables` decodes it. The JSON chunk is
padded with spaces so the BIN data starts on an 8-byte boundary of the file, and the
buffer's length is a multiple of 8, so the file length is too (what 3D Tiles asks of
binary content) with no padding past the buffer (glTF allows at most 3 bytes).
``asset.generator`` is ``"twin <version>"``. Files are written to a temporary name
and renamed.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from twin.errors import InputError, ParameterError
from twin.fileio import atomic_path

GLB_MAGIC = 0x46546C67  # b"glTF"
CHUNK_JSON = 0x4E4F534A
CHUNK_BIN = 0x004E4942
_FLOAT, _BYTE, _UBYTE, _USHORT, _UINT = 5126, 5120, 5121, 5123, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_TYPES = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4"}
_NCOMP = {v: k for k, v in _TYPES.items()}
_DTYPES = {
    _FLOAT: np.float32,
    _BYTE: np.int8,
    _UBYTE: np.uint8,
    _USHORT: np.uint16,
    _UINT: np.uint32,
}


@dataclass
class PropertyTable:
    """Per-feature attributes for ``EXT_structural_metadata`` (one row per feature id).

    ``properties`` maps a name to a sequence of ``count`` values: strings (STRING),
    floats (SCALAR FLOAT64: heights need no rounding), integers (SCALAR INT64), or
    booleans (BOOLEAN). ``None`` in a numeric column becomes its ``noData`` value
    (NaN for floats, -1 for integers). Row ``i`` belongs to feature id ``i``.
    """

    class_name: str
    properties: dict[str, list]
    description: str = ""

    @property
    def count(self) -> int:
        lengths = {len(v) for v in self.properties.values()}
        if len(lengths) != 1:
            raise ParameterError(f"property table {self.class_name!r}: columns differ in length")
        return lengths.pop()


_INT_NODATA = -1


def _column(values: list) -> tuple[str, np.ndarray | list[str]]:
    """The metadata type of a column and its values ready for encoding."""
    present = [v for v in values if v is not None]
    if all(isinstance(v, (bool, np.bool_)) for v in present):
        return "BOOLEAN", np.asarray([bool(v) for v in values])
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in present):
        return "INT64", np.asarray([_INT_NODATA if v is None else int(v) for v in values], "<i8")
    if all(isinstance(v, (int, float, np.integer, np.floating)) for v in present):
        return "FLOAT64", np.asarray([np.nan if v is None else float(v) for v in values], "<f8")
    return "STRING", ["" if v is None else str(v) for v in values]


def _metadata_extension(b: _BinBuilder, tables: list[PropertyTable]) -> dict:
    """Schema + property tables (binary columns in 8-byte aligned bufferViews)."""
    classes: dict = {}
    out_tables = []
    for t in tables:
        props, cols = {}, {}
        for name, values in t.properties.items():
            kind, arr = _column(list(values))
            if kind == "STRING":
                data = [v.encode("utf-8") for v in arr]
                offsets = np.zeros(len(data) + 1, dtype="<u4")
                offsets[1:] = np.cumsum([len(d) for d in data])
                props[name] = {"type": "STRING"}
                cols[name] = {
                    "values": b.add_view(b"".join(data)),
                    "stringOffsets": b.add_view(offsets.tobytes()),
                    "stringOffsetType": "UINT32",
                }
            elif kind == "BOOLEAN":
                props[name] = {"type": "BOOLEAN"}
                cols[name] = {"values": b.add_view(np.packbits(arr, bitorder="little").tobytes())}
            else:
                props[name] = {"type": "SCALAR", "componentType": kind}
                if kind == "INT64" and (arr == _INT_NODATA).any():
                    props[name]["noData"] = _INT_NODATA
                if kind == "FLOAT64" and np.isnan(arr).any():
                    # NaN cannot be written in JSON: use a sentinel for missing values
                    arr = np.where(np.isnan(arr), -1.0e30, arr)
                    props[name]["noData"] = -1.0e30
                cols[name] = {"values": b.add_view(arr.tobytes())}
        cls = {"properties": props}
        if t.description:
            cls["description"] = t.description
        classes[t.class_name] = cls
        out_tables.append({"class": t.class_name, "count": t.count, "properties": cols})
    return {"schema": {"id": "twin", "classes": classes}, "propertyTables": out_tables}


@dataclass
class GltfMesh:
    """One triangle mesh for :func:`write_glb`.

    ``positions`` (N, 3) ENU metres (stored as float32: keep them near the origin,
    centimetre precision needs |coordinates| < ~100 km); ``indices`` (M, 3) or (3M,)
    vertex indices; ``normals`` optional (N, 3) ENU unit vectors; ``colors``
    optional (N, 3|4) float in [0, 1] (linear) or uint8 RGBA; ``feature_ids``
    optional (N,) integer-valued ids (e.g. the building index);
    ``base_color`` the material's RGBA factor; ``texcoords`` optional (N, 2) glTF UVs
    (u right, v down, (0, 0) the image's top-left corner) and ``texture`` the encoded
    base-colour image (PNG/JPEG/WebP bytes, ``texture_mime``) they index, embedded in
    the GLB's buffer (WebP adds ``EXT_texture_webp``).
    """

    positions: np.ndarray
    indices: np.ndarray
    name: str = "mesh"
    normals: np.ndarray | None = None
    colors: np.ndarray | None = None
    feature_ids: np.ndarray | None = None
    features: PropertyTable | None = None
    base_color: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    metallic: float = 0.0
    roughness: float = 1.0
    extras: dict = field(default_factory=dict)
    texcoords: np.ndarray | None = None
    texture: bytes | None = None
    texture_mime: str = "image/jpeg"


def enu_to_gltf(xyz: np.ndarray) -> np.ndarray:
    """ENU (x east, y north, z up) to glTF y-up: ``(E, U, -N)``."""
    xyz = np.asarray(xyz)
    return np.stack([xyz[..., 0], xyz[..., 2], -xyz[..., 1]], axis=-1)


def gltf_to_enu(xyz: np.ndarray) -> np.ndarray:
    """glTF y-up back to ENU: ``(x, -z, y)``."""
    xyz = np.asarray(xyz)
    return np.stack([xyz[..., 0], -xyz[..., 2], xyz[..., 1]], axis=-1)


class _BinBuilder:
    def __init__(self, meshopt: bool = False) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.views: list[dict] = []
        self.accessors: list[dict] = []
        # EXT_meshopt_compression: vertex and index views are stored compressed in
        # buffer 0 and declared over a data-less fallback buffer 1 of their raw size
        self.meshopt = meshopt
        self.fallback_size = 0

    def _append(self, data: bytes, align: int) -> int:
        pad = (-self.size) % align
        if pad:
            self.chunks.append(b"\x00" * pad)
            self.size += pad
        off = self.size
        self.chunks.append(data)
        self.size += len(data)
        return off

    def _add_meshopt(self, arr: np.ndarray, target: int, n_vertices: int | None) -> dict:
        from twin.mesh.meshopt_codec import encode_index_buffer, encode_vertex_buffer

        if target == _ELEMENT_ARRAY_BUFFER:
            stride = arr.itemsize
            data = encode_index_buffer(arr.reshape(-1, 3), n_vertices)
            mode, count = "TRIANGLES", int(arr.size)
        else:
            rows = arr.reshape(len(arr), -1)
            stride = rows.itemsize * rows.shape[1]
            data = encode_vertex_buffer(rows)
            mode, count = "ATTRIBUTES", int(len(arr))
        raw = count * stride if mode == "ATTRIBUTES" else count * stride
        self.fallback_size += (-self.fallback_size) % 4
        view = {"buffer": 1, "byteOffset": self.fallback_size, "byteLength": raw, "target": target}
        if mode == "ATTRIBUTES":
            view["byteStride"] = stride
        self.fallback_size += raw
        ext = {"buffer": 0, "byteOffset": self._append(data, 4), "byteLength": len(data)}
        ext.update({"byteStride": stride, "count": count, "mode": mode})
        view["extensions"] = {"EXT_meshopt_compression": ext}
        return view

    def add_viewless(self, arr: np.ndarray, ctype: int, *, normalized=False, minmax=False) -> int:
        """An accessor describing ``arr`` with no bufferView (its data comes from an
        extension, e.g. KHR_draco_mesh_compression)."""
        arr = np.asarray(arr)
        ncomp = 1 if arr.ndim == 1 else arr.shape[1]
        acc = {"componentType": ctype, "count": int(arr.shape[0]), "type": _TYPES[ncomp]}
        if normalized:
            acc["normalized"] = True
        if minmax:
            a2 = arr.astype(_DTYPES[ctype]).reshape(len(arr), -1)
            acc["min"] = [_num(v) for v in a2.min(axis=0)]
            acc["max"] = [_num(v) for v in a2.max(axis=0)]
        self.accessors.append(acc)
        return len(self.accessors) - 1

    def add_view(self, data: bytes) -> int:
        """A bufferView without target, starting on an 8-byte boundary (metadata)."""
        pad = (-self.size) % 8
        if pad:
            self.chunks.append(b"\x00" * pad)
            self.size += pad
        self.views.append({"buffer": 0, "byteOffset": self.size, "byteLength": len(data)})
        self.chunks.append(data)
        self.size += len(data)
        return len(self.views) - 1

    def add(
        self,
        arr: np.ndarray,
        ctype: int,
        target: int,
        *,
        normalized=False,
        minmax=False,
        ncomp: int | None = None,
        n_vertices: int | None = None,
    ):
        """A typed accessor over a new bufferView; ``ncomp`` < the array's columns
        declares padding columns (4-byte aligned vertex elements)."""
        arr = np.ascontiguousarray(arr, dtype=_DTYPES[ctype])
        if self.meshopt:
            view = self._add_meshopt(arr, target, n_vertices)
        else:
            data = arr.tobytes()
            pad = (-self.size) % 4  # after an image or metadata view of any length
            if pad:
                self.chunks.append(b"\x00" * pad)
                self.size += pad
            view = {"buffer": 0, "byteOffset": self.size, "byteLength": len(data), "target": target}
            self.chunks.append(data)
            self.size += len(data)
            pad = (-self.size) % 4
            if pad:
                self.chunks.append(b"\x00" * pad)
                self.size += pad
            if ncomp is not None and arr.ndim > 1 and ncomp < arr.shape[1]:
                view["byteStride"] = arr.itemsize * arr.shape[1]
        self.views.append(view)
        if ncomp is None:
            ncomp = 1 if arr.ndim == 1 else arr.shape[1]
        acc = {
            "bufferView": len(self.views) - 1,
            "componentType": ctype,
            "count": int(arr.shape[0]),
            "type": _TYPES[ncomp],
        }
        if normalized:
            acc["normalized"] = True
        if minmax:
            a2 = arr.reshape(len(arr), -1)[:, :ncomp]
            acc["min"] = [_num(v) for v in a2.min(axis=0)]
            acc["max"] = [_num(v) for v in a2.max(axis=0)]
        self.accessors.append(acc)
        return len(self.accessors) - 1


def _num(v):
    return int(v) if np.issubdtype(type(v), np.integer) else float(v)


def _check(m: GltfMesh, i: int) -> tuple[np.ndarray, np.ndarray]:
    pos = np.asarray(m.positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3 or len(pos) == 0:
        raise ParameterError(f"mesh {i} ({m.name}): positions must be (N, 3), got {pos.shape}")
    if not np.all(np.isfinite(pos)):
        raise ParameterError(f"mesh {i} ({m.name}): positions contain NaN or infinity")
    idx = np.asarray(m.indices).reshape(-1)
    if len(idx) == 0 or len(idx) % 3:
        raise ParameterError(f"mesh {i} ({m.name}): need a positive multiple of 3 indices")
    if idx.min() < 0 or idx.max() >= len(pos):
        raise ParameterError(f"mesh {i} ({m.name}): an index is outside 0..{len(pos) - 1}")
    for attr in ("normals", "colors", "feature_ids", "texcoords"):
        a = getattr(m, attr)
        if a is not None and len(a) != len(pos):
            raise ParameterError(f"mesh {i} ({m.name}): {attr} has {len(a)} rows, not {len(pos)}")
    return pos, idx


COMPRESSIONS = ("none", "meshopt", "draco")
#: Draco's compression level (0-10; DracoPy's default is 1).
DRACO_LEVEL = 7
#: Draco quantisation bits of normals and of texture coordinates.
DRACO_NORMAL_BITS = 10
DRACO_UV_BITS = 14
_DRACO_TYPES = {0: "POSITION", 1: "NORMAL", 2: "COLOR_0", 3: "TEXCOORD_0", 4: "_FEATURE_ID_0"}


def _draco_arrays(m: GltfMesh, pos: np.ndarray, idx: np.ndarray, bits: int) -> dict:
    """One mesh as a KHR_draco_mesh_compression blob (DracoPy, level
    :data:`DRACO_LEVEL`; positions in glTF y-up quantised to ``bits`` bits over their
    largest extent, normals and UVs to :data:`DRACO_NORMAL_BITS` /
    :data:`DRACO_UV_BITS`, colours as RGBA bytes and feature ids as a float generic
    attribute, both lossless). The blob is decoded again so that the accessors
    describe exactly what a client's decoder returns (Draco may reorder and split
    vertices): returns ``blob``, the decoded arrays and the Draco attribute ids."""
    try:
        import DracoPy
    except ImportError:
        raise ParameterError("compression 'draco' needs the DracoPy package") from None
    kw: dict = {}
    if m.normals is not None:
        nrm = enu_to_gltf(np.asarray(m.normals, np.float64))
        kw["normals"] = nrm / np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
        kw["normal_quantization_bits"] = DRACO_NORMAL_BITS
    if m.colors is not None:
        c = np.asarray(m.colors)
        if c.dtype != np.uint8:
            c = np.rint(np.clip(np.asarray(c, np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
        if c.shape[1] == 3:
            c = np.column_stack([c, np.full(len(c), 255, np.uint8)])
        kw["colors"] = np.ascontiguousarray(c)
    if m.texcoords is not None:
        kw["tex_coord"] = np.ascontiguousarray(m.texcoords, np.float64)
        kw["tex_coord_quantization_bits"] = DRACO_UV_BITS
    if m.feature_ids is not None:
        fid = np.asarray(m.feature_ids, np.float32).reshape(-1, 1)
        kw["generic_attributes"] = {"_FEATURE_ID_0": np.ascontiguousarray(fid)}
    blob = DracoPy.encode(
        np.ascontiguousarray(enu_to_gltf(pos), np.float32),
        np.ascontiguousarray(idx.reshape(-1, 3), np.uint32),
        quantization_bits=int(bits),
        compression_level=DRACO_LEVEL,
        **kw,
    )
    dec = DracoPy.decode(blob)
    out: dict = {"blob": bytes(blob), "ids": {}, "arrays": {}}
    for a in dec.attributes:
        sem = _DRACO_TYPES.get(int(a["attribute_type"]))
        if sem is None:
            continue
        out["ids"][sem] = int(a["unique_id"])
        out["arrays"][sem] = np.asarray(a["data"])
    out["faces"] = np.asarray(dec.faces, np.uint32).reshape(-1, 3)
    out["n"] = len(out["arrays"]["POSITION"])
    return out


def _meshopt_arrays(
    m: GltfMesh, pos: np.ndarray, idx: np.ndarray, bits: int, i: int, reorder: bool = True
) -> dict:
    """Vertex-cache and fetch ordered (unless ``reorder`` is False: the caller's order
    is kept), quantised arrays of one mesh for KHR_mesh_quantization +
    EXT_meshopt_compression, and its dequantising matrix."""
    from twin.mesh.quantize import quantize
    from twin.mesh.reorder import optimize_vertex_cache, optimize_vertex_fetch

    cols, names = [], []
    for name in ("normals", "colors", "feature_ids", "texcoords"):
        a = getattr(m, name)
        if a is None:
            continue
        a = np.asarray(a)
        if name == "colors" and a.dtype == np.uint8:
            a = a.astype(np.float64) / 255.0
        a = np.asarray(a, np.float64).reshape(len(pos), -1)
        cols.append(a)
        names.append((name, a.shape[1]))
    attrs = np.hstack(cols) if cols else None
    if reorder:
        f = optimize_vertex_cache(idx.reshape(-1, 3), len(pos))
        fetched = optimize_vertex_fetch(pos, f, attrs)
        v, f = fetched
        attrs = fetched.attributes
    else:
        v, f = pos, idx.reshape(-1, 3)
    split, k = {}, 0
    for name, w in names:
        split[name] = attrs[:, k : k + w]
        k += w
    g = enu_to_gltf(v)
    nrm = split.get("normals")
    if nrm is not None:
        nrm = enu_to_gltf(nrm)
        nrm = nrm / np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
    q = quantize(g, bits=bits, normals=nrm)
    out = {"faces": f, "positions": q.positions, "dequantize": np.eye(4), "n": len(v)}
    out["dequantize"][:3, :3] *= q.step
    out["dequantize"][:3, 3] = q.offset
    out["normals"] = q.normals
    if "colors" in split:
        c = np.clip(split["colors"], 0.0, 1.0)
        if c.shape[1] == 3:
            c = np.column_stack([c, np.ones(len(c))])
        out["colors"] = np.rint(c * 255.0).astype(np.uint8)
    if "feature_ids" in split:
        out["feature_ids"] = np.rint(split["feature_ids"][:, 0])
    if "texcoords" in split:
        out["texcoords"] = split["texcoords"]
    return out


def _pad4(a: np.ndarray) -> np.ndarray:
    """(N, 3) -> (N, 4) with a zero column: 4-byte aligned elements of 1- or 2-byte
    components (what glTF asks of vertex attributes)."""
    out = np.zeros((a.shape[0], 4), a.dtype)
    out[:, :3] = a
    return out


def glb_bytes(
    meshes: list[GltfMesh],
    node_matrix=None,
    extras: dict | None = None,
    *,
    compression: str = "none",
    bits: int = 14,
    draco_fallback: bool = False,
    reorder: bool = True,
) -> bytes:
    """The GLB file content for ``meshes`` (see the module docstring for the layout).

    ``node_matrix``: optional 4x4 row-major matrix (glTF frame) set on every node.
    ``compression``: ``"none"`` (float32 attributes) or ``"meshopt"``: each mesh is
    put in vertex-cache and vertex-fetch order, positions quantised to ``bits`` bits
    per axis (KHR_mesh_quantization, unsigned shorts; the node matrix gains the
    dequantising scale and offset, so the error is at most half a step of the
    mesh's bounding box / (2**bits - 1)), normals to normalised bytes, colours to
    normalised RGBA bytes, UVs within [0, 1] to normalised unsigned shorts, and every
    vertex and index bufferView is stored with EXT_meshopt_compression (our
    encoder; both extensions are then required). ``reorder=False`` keeps the given
    triangle and vertex order (for meshes already ordered, e.g. by
    :func:`twin.mesh.optimize_overdraw`, whose order a new vertex-cache pass would undo).
    ``"draco"``: each primitive's positions (``bits`` bits), normals, UVs, colours
    and feature ids are one KHR_draco_mesh_compression blob (DracoPy, level
    :data:`DRACO_LEVEL`, see :func:`_draco_arrays`); as the extension's
    specification asks, the accessors describe the decoded data (count, POSITION
    min/max) and, without a fallback, have no bufferView and the extension is
    required; ``draco_fallback=True`` also stores the decoded arrays uncompressed
    in the accessors' bufferViews and only lists the extension as used, so a
    client without a Draco decoder still draws the mesh.
    Memory grows with the total vertex and index count (about 2x the output size).
    """
    from twin import __version__

    if not meshes:
        raise ParameterError("write_glb needs at least one mesh")
    if compression not in COMPRESSIONS:
        raise ParameterError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
    meshopt = compression == "meshopt"
    draco = compression == "draco"
    b = _BinBuilder(meshopt=meshopt)
    gl_meshes, nodes, materials = [], [], []
    images: list[dict] = []
    textures: list[dict] = []
    uses_features = False
    tables: list[PropertyTable] = []
    for i, m in enumerate(meshes):
        pos, idx = _check(m, i)
        if m.colors is not None:
            col = np.asarray(m.colors)
            if col.ndim != 2 or col.shape[1] not in (3, 4):
                raise ParameterError(f"mesh {i} ({m.name}): colors must be (N, 3) or (N, 4)")
        if m.texcoords is not None:
            uv = np.asarray(m.texcoords)
            if uv.ndim != 2 or uv.shape[1] != 2:
                raise ParameterError(f"mesh {i} ({m.name}): texcoords must be (N, 2)")
        mesh_matrix = None
        if meshopt:
            q = _meshopt_arrays(m, pos, idx, bits, i, reorder)
            mesh_matrix = q["dequantize"]
            n = q["n"]
            attrs = {
                "POSITION": b.add(
                    _pad4(q["positions"]), _USHORT, _ARRAY_BUFFER, minmax=True, ncomp=3
                )
            }
            if q["normals"] is not None:
                attrs["NORMAL"] = b.add(
                    _pad4(q["normals"]), _BYTE, _ARRAY_BUFFER, normalized=True, ncomp=3
                )
            if "colors" in q:
                attrs["COLOR_0"] = b.add(q["colors"], _UBYTE, _ARRAY_BUFFER, normalized=True)
            if "texcoords" in q:
                uv = q["texcoords"]
                if uv.min() >= 0.0 and uv.max() <= 1.0:  # KHR_mesh_quantization: 16 bits
                    uv16 = np.rint(uv * 65535.0).astype(np.uint16)
                    attrs["TEXCOORD_0"] = b.add(uv16, _USHORT, _ARRAY_BUFFER, normalized=True)
                else:
                    attrs["TEXCOORD_0"] = b.add(uv, _FLOAT, _ARRAY_BUFFER)
            fid_values = q.get("feature_ids")
            idx = q["faces"].reshape(-1)
        elif draco:
            d = _draco_arrays(m, pos, idx, bits)
            n, arrays = d["n"], d["arrays"]
            view = b.add_view(d["blob"])
            attrs, ext_attrs = {}, {}
            for sem, ctype, norm in (
                ("POSITION", _FLOAT, False),
                ("NORMAL", _FLOAT, False),
                ("COLOR_0", _UBYTE, True),
                ("TEXCOORD_0", _FLOAT, False),
                ("_FEATURE_ID_0", _FLOAT, False),
            ):
                if sem not in arrays:
                    continue
                a = arrays[sem]
                a = a.reshape(-1) if a.shape[1] == 1 else a
                if draco_fallback:
                    if sem == "NORMAL":  # unit length as glTF asks (Draco's octahedral grid)
                        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
                    attrs[sem] = b.add(
                        a, ctype, _ARRAY_BUFFER, normalized=norm, minmax=sem == "POSITION"
                    )
                else:
                    attrs[sem] = b.add_viewless(a, ctype, normalized=norm, minmax=sem == "POSITION")
                ext_attrs[sem] = d["ids"][sem]
            draco_ext = {"bufferView": view, "attributes": ext_attrs}
            fid_values = arrays.get("_FEATURE_ID_0")
            idx = d["faces"].reshape(-1)
        else:
            n = len(pos)
            attrs = {"POSITION": b.add(enu_to_gltf(pos), _FLOAT, _ARRAY_BUFFER, minmax=True)}
            if m.normals is not None:
                nrm = enu_to_gltf(np.asarray(m.normals, dtype=np.float64))
                attrs["NORMAL"] = b.add(nrm, _FLOAT, _ARRAY_BUFFER)
            if m.colors is not None:
                col = np.asarray(m.colors)
                if col.dtype == np.uint8:
                    if col.shape[1] == 3:
                        col = np.column_stack([col, np.full(len(col), 255, np.uint8)])
                    attrs["COLOR_0"] = b.add(col, _UBYTE, _ARRAY_BUFFER, normalized=True)
                else:
                    attrs["COLOR_0"] = b.add(np.clip(col, 0.0, 1.0), _FLOAT, _ARRAY_BUFFER)
            if m.texcoords is not None:
                uv = np.asarray(m.texcoords, dtype=np.float64)
                attrs["TEXCOORD_0"] = b.add(uv, _FLOAT, _ARRAY_BUFFER)
            fid_values = None if m.feature_ids is None else m.feature_ids
        prim: dict = {"attributes": attrs, "mode": 4, "material": len(materials)}
        if fid_values is not None:
            fid = np.asarray(fid_values, dtype=np.float64).reshape(-1)
            if "_FEATURE_ID_0" not in attrs:
                attrs["_FEATURE_ID_0"] = b.add(fid, _FLOAT, _ARRAY_BUFFER)
            count = int(len(np.unique(fid)))
            fids: dict = {"featureCount": count, "attribute": 0}
            if m.features is not None:
                if fid.min() < 0 or fid.max() >= m.features.count:
                    raise ParameterError(
                        f"mesh {i} ({m.name}): feature ids must index the "
                        f"{m.features.count} rows of its property table"
                    )
                fids["propertyTable"] = len(tables)
                tables.append(m.features)
            prim["extensions"] = {"EXT_mesh_features": {"featureIds": [fids]}}
            uses_features = True
        ctype = _USHORT if n <= 65535 else _UINT
        if draco and not draco_fallback:
            prim["indices"] = b.add_viewless(idx, ctype)
        else:
            prim["indices"] = b.add(idx, ctype, _ELEMENT_ARRAY_BUFFER, n_vertices=n)
        if draco:
            prim.setdefault("extensions", {})["KHR_draco_mesh_compression"] = draco_ext
        materials.append(
            {
                "name": f"{m.name}-material",
                "pbrMetallicRoughness": {
                    "baseColorFactor": [float(c) for c in m.base_color],
                    "metallicFactor": float(m.metallic),
                    "roughnessFactor": float(m.roughness),
                },
                "doubleSided": False,
            }
        )
        if m.texture is not None:
            if m.texcoords is None:
                raise ParameterError(f"mesh {i} ({m.name}): a texture needs texcoords")
            images.append({"bufferView": b.add_view(bytes(m.texture)), "mimeType": m.texture_mime})
            tex: dict = {"sampler": 0, "source": len(images) - 1}
            if m.texture_mime == "image/webp":
                tex = {"sampler": 0, "extensions": {"EXT_texture_webp": {"source": tex["source"]}}}
            textures.append(tex)
            pbr = materials[-1]["pbrMetallicRoughness"]
            pbr["baseColorTexture"] = {"index": len(textures) - 1}
        mesh = {"name": m.name, "primitives": [prim]}
        if m.extras:
            mesh["extras"] = m.extras
        gl_meshes.append(mesh)
        node = {"name": m.name, "mesh": i}
        mat = None
        if node_matrix is not None:
            mat = np.asarray(node_matrix, dtype=np.float64)
            if mat.shape != (4, 4):
                raise ParameterError(f"node_matrix must be 4x4, got {mat.shape}")
        if mesh_matrix is not None:
            mat = mesh_matrix if mat is None else mat @ mesh_matrix
        if mat is not None:
            node["matrix"] = [float(v) for v in mat.T.ravel()]
        nodes.append(node)
    doc: dict = {
        "asset": {"version": "2.0", "generator": f"twin {__version__}"},
        "scene": 0,
        "scenes": [{"nodes": list(range(len(nodes)))}],
        "nodes": nodes,
        "meshes": gl_meshes,
        "materials": materials,
        "accessors": b.accessors,
        "bufferViews": b.views,
        "buffers": [{"byteLength": b.size}],
    }
    if uses_features:
        doc["extensionsUsed"] = ["EXT_mesh_features"]
    if tables:
        doc["extensionsUsed"].append("EXT_structural_metadata")
        doc["extensions"] = {"EXT_structural_metadata": _metadata_extension(b, tables)}
    if images:
        # linear magnification, trilinear minification, clamp: atlas pages have margins
        sampler = {"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}
        doc["samplers"] = [sampler]
        doc["images"] = images
        doc["textures"] = textures
        if any("extensions" in t for t in textures):
            doc.setdefault("extensionsUsed", []).append("EXT_texture_webp")
            doc.setdefault("extensionsRequired", []).append("EXT_texture_webp")
    # The buffer's length is a multiple of 8, so the BIN chunk needs no padding beyond it
    # (glTF allows at most 3 padding bytes) and the file length stays a multiple of 8.
    pad = (-b.size) % 8
    if pad:
        b.chunks.append(b"\x00" * pad)
        b.size += pad
    doc["buffers"] = [{"byteLength": b.size}]
    if meshopt:
        fallback = {"EXT_meshopt_compression": {"fallback": True}}
        doc["buffers"].append({"byteLength": max(b.fallback_size, 4), "extensions": fallback})
        for ext in ("EXT_meshopt_compression", "KHR_mesh_quantization"):
            doc.setdefault("extensionsUsed", []).append(ext)
            doc.setdefault("extensionsRequired", []).append(ext)
    if draco:
        doc.setdefault("extensionsUsed", []).append("KHR_draco_mesh_compression")
        if not draco_fallback:
            doc.setdefault("extensionsRequired", []).append("KHR_draco_mesh_compression")
    if extras:
        doc["extras"] = extras
    js = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    js += b" " * ((4 - len(js)) % 8)  # 20 + len(js) + 8 = BIN data start, 8-aligned
    binary = b"".join(b.chunks)
    total = 12 + 8 + len(js) + 8 + len(binary)
    return b"".join(
        [
            struct.pack("<III", GLB_MAGIC, 2, total),
            struct.pack("<II", len(js), CHUNK_JSON),
            js,
            struct.pack("<II", len(binary), CHUNK_BIN),
            binary,
        ]
    )


def write_glb(
    path: str | os.PathLike,
    meshes: list[GltfMesh],
    node_matrix=None,
    extras: dict | None = None,
    *,
    compression: str = "none",
    bits: int = 14,
    draco_fallback: bool = False,
) -> Path:
    """Write ``meshes`` (ENU) as a GLB file (glTF y-up) atomically; returns the path.
    ``compression`` (``"none"``, ``"meshopt"``, ``"draco"``), ``bits`` and
    ``draco_fallback``: see :func:`glb_bytes`."""
    data = glb_bytes(
        meshes,
        node_matrix=node_matrix,
        extras=extras,
        compression=compression,
        bits=bits,
        draco_fallback=draco_fallback,
    )
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def read_glb_json(path: str | os.PathLike) -> tuple[dict, bytes]:
    """The JSON document and BIN chunk of a GLB file (InputError when malformed)."""
    path = Path(path)
    if not path.exists():
        raise InputError("GLB file not found", path=path)
    data = path.read_bytes()
    if len(data) < 20:
        raise InputError("too short to be a GLB file", path=path)
    magic, version, total = struct.unpack_from("<III", data, 0)
    if magic != GLB_MAGIC or version != 2:
        raise InputError("not a glTF 2.0 binary (bad magic or version)", path=path)
    if total != len(data):
        raise InputError(f"header says {total} bytes, file has {len(data)} (truncated?)", path=path)
    jlen, jtype = struct.unpack_from("<II", data, 12)
    if jtype != CHUNK_JSON or 20 + jlen > len(data):
        raise InputError("first chunk is not a valid JSON chunk", path=path)
    try:
        doc = json.loads(data[20 : 20 + jlen])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"JSON chunk does not parse: {exc}", path=path) from None
    binary = b""
    off = 20 + jlen
    if off + 8 <= len(data):
        blen, btype = struct.unpack_from("<II", data, off)
        if btype == CHUNK_BIN:
            binary = data[off + 8 : off + 8 + blen]
    return doc, binary


def _view_bytes(doc: dict, binary: bytes, vi: int) -> tuple[bytes | np.ndarray, int]:
    """A bufferView's bytes (decoded when EXT_meshopt_compression) and its offset."""
    view = doc["bufferViews"][vi]
    ext = view.get("extensions", {}).get("EXT_meshopt_compression")
    if ext is None:
        return binary, view.get("byteOffset", 0)
    from twin.mesh.meshopt_codec import decode_index_buffer, decode_vertex_buffer

    if ext.get("buffer", 0) != 0:
        raise ValueError("EXT_meshopt_compression data outside the GLB buffer")
    off = ext.get("byteOffset", 0)
    data = np.frombuffer(binary, np.uint8, count=ext["byteLength"], offset=off)
    if ext["mode"] == "ATTRIBUTES":
        out = decode_vertex_buffer(data, ext["count"], ext["byteStride"])
    elif ext["mode"] == "TRIANGLES":
        out = decode_index_buffer(data, ext["count"], ext["byteStride"])
    else:
        raise ValueError(f"EXT_meshopt_compression mode {ext['mode']} is not read here")
    if ext.get("filter", "NONE") != "NONE":
        raise ValueError(f"EXT_meshopt_compression filter {ext['filter']} is not read here")
    return np.ascontiguousarray(out).tobytes(), 0


def _accessor(doc: dict, binary: bytes, i: int) -> np.ndarray:
    acc = doc["accessors"][i]
    view = doc["bufferViews"][acc["bufferView"]]
    dtype = np.dtype(_DTYPES[acc["componentType"]])
    ncomp = _NCOMP[acc["type"]]
    data, start = _view_bytes(doc, binary, acc["bufferView"])
    start += acc.get("byteOffset", 0)
    stride = view.get("byteStride", 0)
    if stride and stride != dtype.itemsize * ncomp:
        rows = np.frombuffer(data, np.uint8, count=acc["count"] * stride, offset=start)
        rows = rows.reshape(acc["count"], stride)[:, : dtype.itemsize * ncomp]
        arr = np.ascontiguousarray(rows).view(dtype).reshape(acc["count"], ncomp)
        return arr if ncomp > 1 else arr.reshape(-1)
    arr = np.frombuffer(data, dtype=dtype, count=acc["count"] * ncomp, offset=start)
    return arr.reshape(acc["count"], ncomp) if ncomp > 1 else arr


def read_glb(path: str | os.PathLike) -> list[dict]:
    """Read back the triangle primitives of a GLB: one dict per primitive with
    ``name``, ``positions`` (float32, glTF y-up as stored), ``indices`` ((M, 3)
    uint32) and, where present, ``normals``, ``colors``, ``feature_ids``,
    ``texcoords`` and the base-colour ``texture`` (encoded bytes) with ``texture_mime``.

    Reads the whole file; arrays are views of it (memory: the file size).
    Raises :class:`InputError` for a missing, truncated or malformed file."""
    doc, binary = read_glb_json(path)
    try:
        return _read_primitives(doc, binary)
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise InputError(f"malformed glTF content: {what}", path=path) from None


def _read_primitives(doc: dict, binary: bytes) -> list[dict]:
    out = []
    for mesh in doc.get("meshes", []):
        for prim in mesh["primitives"]:
            a = prim["attributes"]
            draco = prim.get("extensions", {}).get("KHR_draco_mesh_compression")
            if draco is not None:
                get, faces = _draco_decode(doc, binary, draco)
            else:
                faces = _accessor(doc, binary, prim["indices"])

                def get(key, i):
                    return _accessor(doc, binary, i)

            item = {
                "name": mesh.get("name", ""),
                "positions": get("POSITION", a["POSITION"]),
                "indices": np.asarray(faces).astype(np.uint32).reshape(-1, 3),
            }
            for key, name in (
                ("NORMAL", "normals"),
                ("COLOR_0", "colors"),
                ("_FEATURE_ID_0", "feature_ids"),
                ("TEXCOORD_0", "texcoords"),
            ):
                if key in a:
                    item[name] = get(key, a[key])
            acc = doc["accessors"][a["TEXCOORD_0"]] if "TEXCOORD_0" in a else {}
            if acc.get("normalized"):  # quantised UVs back to [0, 1]
                top = {_UBYTE: 255.0, _USHORT: 65535.0}[acc["componentType"]]
                item["texcoords"] = item["texcoords"].astype(np.float64) / top
            tex = _base_color_image(doc, binary, prim)
            if tex is not None:
                item["texture"], item["texture_mime"] = tex
            out.append(item)
    return out


def _draco_decode(doc: dict, binary: bytes, ext: dict):
    """Decode a KHR_draco_mesh_compression primitive with DracoPy: ``(get, faces)``,
    ``get(semantic, accessor)`` giving the decoded attribute (accessor-shaped)."""
    try:
        import DracoPy
    except ImportError:
        raise ValueError("KHR_draco_mesh_compression content needs DracoPy to read") from None
    view = doc["bufferViews"][ext["bufferView"]]
    start = view.get("byteOffset", 0)
    dec = DracoPy.decode(binary[start : start + view["byteLength"]])
    by_id = {int(x["unique_id"]): np.asarray(x["data"]) for x in dec.attributes}

    def get(key: str, i: int) -> np.ndarray:
        if key not in ext["attributes"]:
            return _accessor(doc, binary, i)
        data = by_id[int(ext["attributes"][key])]
        acc = doc["accessors"][i]
        data = data.astype(_DTYPES[acc["componentType"]], copy=False)
        return data.reshape(-1) if _NCOMP[acc["type"]] == 1 else data

    return get, np.asarray(dec.faces)


def _base_color_image(doc: dict, binary: bytes, prim: dict) -> tuple[bytes, str] | None:
    """The encoded base-colour image of a primitive's material (bytes, mime) or None."""
    if "material" not in prim:
        return None
    info = doc["materials"][prim["material"]].get("pbrMetallicRoughness", {})
    if "baseColorTexture" not in info:
        return None
    tex = doc["textures"][info["baseColorTexture"]["index"]]
    src = tex.get("source", tex.get("extensions", {}).get("EXT_texture_webp", {}).get("source"))
    img = doc["images"][src]
    view = doc["bufferViews"][img["bufferView"]]
    start = view.get("byteOffset", 0)
    return binary[start : start + view["byteLength"]], img.get("mimeType", "")


def read_property_tables(path: str | os.PathLike) -> list[dict]:
    """Decode a GLB's ``EXT_structural_metadata`` property tables: one dict per table,
    ``{"class": name, "count": n, "properties": {name: list of values}}``."""
    doc, binary = read_glb_json(path)
    ext = doc.get("extensions", {}).get("EXT_structural_metadata")
    if not ext:
        return []
    try:
        classes = ext["schema"]["classes"]
        views = doc["bufferViews"]

        def view(i: int) -> bytes:
            v = views[i]
            return binary[v.get("byteOffset", 0) : v.get("byteOffset", 0) + v["byteLength"]]

        out = []
        for t in ext.get("propertyTables", []):
            n = t["count"]
            props = {}
            for name, col in t["properties"].items():
                meta = classes[t["class"]]["properties"][name]
                kind = meta["type"]
                if kind == "STRING":
                    offs = np.frombuffer(view(col["stringOffsets"]), "<u4")
                    data = view(col["values"])
                    props[name] = [data[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n)]
                elif kind == "BOOLEAN":
                    bits = np.unpackbits(
                        np.frombuffer(view(col["values"]), np.uint8), bitorder="little"
                    )
                    props[name] = [bool(x) for x in bits[:n]]
                else:
                    dt = {"FLOAT64": "<f8", "FLOAT32": "<f4", "INT64": "<i8", "UINT16": "<u2"}
                    vals = np.frombuffer(view(col["values"]), dt[meta["componentType"]])[:n]
                    nodata = meta.get("noData")
                    props[name] = [
                        None if nodata is not None and v == nodata else v.item() for v in vals
                    ]
            out.append({"class": t["class"], "count": n, "properties": props})
        return out
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise InputError(f"malformed EXT_structural_metadata: {exc}", path=path) from None
