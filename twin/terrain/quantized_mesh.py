"""quantized-mesh-1.0 terrain tiles (the format CesiumJS streams): encoder and decoder.

Layout of one tile (little-endian), as in the CesiumGS ``quantized-mesh`` spec:

* header, 88 bytes: tile centre (ECEF, 3 float64), minimum and maximum height (float32,
  metres above the WGS 84 ellipsoid), bounding sphere (centre 3 float64, radius
  float64, ECEF metres), horizon occlusion point (3 float64, ellipsoid-scaled ECEF);
* vertex data: ``uint32`` vertex count, then ``u``, ``v`` and ``height`` arrays of
  ``uint16`` in [0, 32767], each zig-zag delta encoded (``u`` = 0 on the west edge,
  32767 on the east; ``v`` = 0 south, 32767 north; height linear between min and max);
* index data: padding to the index size, ``uint32`` triangle count, then 3 indices per
  triangle (``uint16``, or ``uint32`` when there are more than 65536 vertices), high-
  water-mark encoded, counter-clockwise seen from above;
* edge indices: for west, south, east and north in that order a ``uint32`` count and
  the indices of the vertices on that edge (same index size). CesiumJS hangs its
  skirts on them; we write them sorted along the edge (west/east south to north,
  south/north west to east);
* extensions, each ``uint8`` id, ``uint32`` length, payload: oct-encoded vertex normals
  (id 1, 2 bytes a vertex, unit normals in ECEF) and metadata (id 4, ``uint32`` JSON
  length then the UTF-8 JSON).

:func:`encode_tile` returns the uncompressed bytes; tiles on disk and on the wire are
gzip-compressed (:func:`gzip_tile`, the server sends ``Content-Encoding: gzip``).
:func:`decode_tile` reads both.

High-water-mark coding needs the vertices in first-use order of the index buffer, so
the encoder always renumbers them. With ``optimize=True`` (the default) it first sorts
the triangles along a Hilbert curve through their centroids, so consecutive vertices
are neighbours: the zig-zag deltas stay small and gzip does much better (see
``tests/terrain/test_quantized_mesh.py`` for the measured ratio).
"""

from __future__ import annotations

import gzip
import json
import struct
from typing import Any

import numpy as np

from twin.crs import geodetic_to_ecef
from twin.errors import InputError, ParameterError

#: Largest quantised coordinate.
QMAX = 32767
#: Extension ids of the spec.
EXT_OCT_NORMALS = 1
EXT_WATER_MASK = 2
EXT_METADATA = 4
#: WGS 84 radii (a, a, b), metres: the ellipsoid-scaled frame of the occlusion point.
WGS84_RADII = np.array([6378137.0, 6378137.0, 6356752.3142451793])

_HEADER = struct.Struct("<3d2f4d3d")  # 88 bytes


# --------------------------------------------------------------------------- codecs


def zigzag_delta_encode(values: np.ndarray) -> np.ndarray:
    """Zig-zag encode the successive differences of ``values`` (ints in [0, 32767]).

    Returns uint16. The first value is encoded as its difference from 0."""
    v = np.asarray(values, dtype=np.int32)
    d = np.diff(v, prepend=0)
    return ((d << 1) ^ (d >> 31)).astype(np.uint16)


def zigzag_delta_decode(codes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`zigzag_delta_encode`: uint16 codes to int32 values."""
    c = np.asarray(codes, dtype=np.int32)
    d = (c >> 1) ^ -(c & 1)
    return np.cumsum(d, dtype=np.int32)


def high_water_mark_encode(indices: np.ndarray) -> np.ndarray:
    """High-water-mark encode a flat index buffer (the spec's ``code = highest - i``).

    Requires first-use order: every index is at most one more than the largest seen
    before it (raises :class:`ParameterError` otherwise). Returns int64 codes."""
    idx = np.asarray(indices, dtype=np.int64).ravel()
    if idx.size == 0:
        return idx.copy()
    prev_max = np.maximum.accumulate(np.concatenate([[-1], idx[:-1]]))
    if np.any(idx > prev_max + 1) or idx.min() < 0:
        raise ParameterError("indices are not in first-use order (high-water mark)")
    highest = prev_max + 1  # the 'highest' counter before each index
    return highest - idx


def high_water_mark_decode(codes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`high_water_mark_encode`."""
    c = np.asarray(codes, dtype=np.int64).ravel()
    new = c == 0
    highest = np.cumsum(new) - new  # count of zeros strictly before each code
    return highest - c


def oct_encode(normals: np.ndarray) -> np.ndarray:
    """Oct-encode unit vectors (N, 3) to (N, 2) uint8 (CesiumJS ``octEncode``, range 255)."""
    n = np.asarray(normals, dtype=np.float64)
    norm1 = np.abs(n).sum(axis=1)
    norm1[norm1 == 0] = 1.0
    x = n[:, 0] / norm1
    y = n[:, 1] / norm1
    neg = n[:, 2] < 0
    sx = np.where(x >= 0, 1.0, -1.0)
    sy = np.where(y >= 0, 1.0, -1.0)
    fx = np.where(neg, (1.0 - np.abs(y)) * sx, x)
    fy = np.where(neg, (1.0 - np.abs(x)) * sy, y)
    enc = np.round((np.clip(np.stack([fx, fy], axis=1), -1, 1) * 0.5 + 0.5) * 255.0)
    return enc.astype(np.uint8)


def oct_decode(encoded: np.ndarray) -> np.ndarray:
    """Decode (N, 2) uint8 oct-encoded normals to (N, 3) float64 unit vectors."""
    e = np.asarray(encoded, dtype=np.float64)
    x = e[:, 0] / 255.0 * 2.0 - 1.0
    y = e[:, 1] / 255.0 * 2.0 - 1.0
    z = 1.0 - np.abs(x) - np.abs(y)
    neg = z < 0
    ox = x.copy()
    x = np.where(neg, (1.0 - np.abs(y)) * np.where(ox >= 0, 1.0, -1.0), x)
    y = np.where(neg, (1.0 - np.abs(ox)) * np.where(y >= 0, 1.0, -1.0), y)
    v = np.stack([x, y, z], axis=1)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def hilbert_index(x: np.ndarray, y: np.ndarray, bits: int = 16) -> np.ndarray:
    """Position along a Hilbert curve of integer points (x, y) in [0, 2**bits).

    Vectorised over the arrays; returns int64. Memory grows with len(x)."""
    x = np.asarray(x, dtype=np.int64).copy()
    y = np.asarray(y, dtype=np.int64).copy()
    d = np.zeros_like(x)
    s = 1 << (bits - 1)
    while s > 0:
        rx = (x & s) > 0
        ry = (y & s) > 0
        d += s * s * ((3 * rx) ^ ry)
        # rotate the quadrant
        flip = ~ry & rx
        x = np.where(flip, s - 1 - x, x)
        y = np.where(flip, s - 1 - y, y)
        swap = ~ry
        x, y = np.where(swap, y, x), np.where(swap, x, y)
        s >>= 1
    return d


# ------------------------------------------------------------------ geometry helpers


def bounding_sphere(points: np.ndarray) -> tuple[np.ndarray, float]:
    """A sphere (centre, radius) containing ``points`` (N, 3): the smaller of the one
    centred on the bounding box and a Ritter sphere, radius grown by 1 mm."""
    p = np.asarray(points, dtype=np.float64)
    c1 = 0.5 * (p.min(axis=0) + p.max(axis=0))
    r1 = float(np.sqrt(((p - c1) ** 2).sum(axis=1).max()))
    # Ritter: start from two far-apart points, then grow to include stragglers
    a = p[np.argmax(((p - p[0]) ** 2).sum(axis=1))]
    b = p[np.argmax(((p - a) ** 2).sum(axis=1))]
    c2 = 0.5 * (a + b)
    r2 = 0.5 * float(np.linalg.norm(b - a))
    dist = np.sqrt(((p - c2) ** 2).sum(axis=1))
    for i in np.nonzero(dist > r2)[0]:  # one sequential pass
        d = float(np.linalg.norm(p[i] - c2))
        if d > r2:
            new_r = 0.5 * (r2 + d)
            c2 = c2 + (d - new_r) / d * (p[i] - c2)
            r2 = new_r
    r2 = float(np.sqrt(((p - c2) ** 2).sum(axis=1).max()))
    c, r = (c1, r1) if r1 <= r2 else (c2, r2)
    return c, r + 1e-3


def horizon_occlusion_point(points: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """The horizon occlusion point of ``points`` (N, 3 ECEF metres) along ``direction``
    (ECEF), in the ellipsoid-scaled frame (ECEF divided by the WGS 84 radii).

    CesiumJS culls the tile when this point is below the horizon. It is the point on
    the ray through ``direction`` from which every vertex is just on the horizon
    (the algorithm of CesiumJS's ``EllipsoidalOccluder``). Where no such point exists
    (a tile reaching 90 degrees or more from its centre, e.g. the level-0 tiles) a
    point 10**6 ellipsoid radii out is returned: it is hidden only from cameras that
    cannot see any point of the ellipsoid within 90 degrees of the centre direction
    (so a vertex at exactly 90 degrees *and* above the ellipsoid can be culled a
    fraction of a degree early, at the horizon of a whole-globe view)."""
    ps = np.asarray(points, dtype=np.float64) / WGS84_RADII
    d = np.asarray(direction, dtype=np.float64) / WGS84_RADII
    d = d / np.linalg.norm(d)
    mag2 = (ps**2).sum(axis=1)
    mag = np.sqrt(mag2)
    unit = ps / mag[:, None]
    mag2 = np.maximum(mag2, 1.0)
    mag = np.maximum(mag, 1.0)
    cos_a = np.clip(unit @ d, -1.0, 1.0)
    sin_a = np.linalg.norm(np.cross(unit, d), axis=1)
    cos_b = 1.0 / mag
    sin_b = np.sqrt(mag2 - 1.0) * cos_b
    denom = cos_a * cos_b - sin_a * sin_b
    if np.any(denom <= 1e-12):
        return d * 1e6
    return d * float((1.0 / denom).max())


def vertex_normals(ecef: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (ECEF) of a CCW triangle mesh; a vertex in
    no triangle gets its ellipsoid-ish radial direction."""
    f = np.asarray(faces, dtype=np.int64)
    p = np.asarray(ecef, dtype=np.float64)
    fn = np.cross(p[f[:, 1]] - p[f[:, 0]], p[f[:, 2]] - p[f[:, 0]])
    n = np.zeros_like(p)
    for k in range(3):
        np.add.at(n, f[:, k], fn)
    lens = np.linalg.norm(n, axis=1)
    bad = lens == 0
    n[bad] = p[bad]
    return n / np.linalg.norm(n, axis=1, keepdims=True)


# ------------------------------------------------------------------------ encoding


def _check_bounds(bounds) -> tuple[float, float, float, float]:
    try:
        w, s, e, n = (float(b) for b in bounds)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"bounds must be (west, south, east, north), got {bounds!r}") from exc
    if not (-180.0 <= w < e <= 180.0 and -90.0 <= s < n <= 90.0):
        raise ParameterError(f"bounds {bounds!r} are not a valid lon/lat rectangle (degrees)")
    return w, s, e, n


def quantize(
    vertices: np.ndarray, bounds
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Quantise (N, 3) lon (deg), lat (deg), height (m) to u, v, h ints in [0, 32767]
    over ``bounds`` (west, south, east, north) and the tile's min/max height.

    Returns ``(u, v, hq, min_height, max_height)``; the heights' float32 rounding is
    applied first, so decoding with the header's float32 values is consistent."""
    w, s, e, n = _check_bounds(bounds)
    vtx = np.asarray(vertices, dtype=np.float64)
    u = np.rint((vtx[:, 0] - w) / (e - w) * QMAX).astype(np.int64)
    v = np.rint((vtx[:, 1] - s) / (n - s) * QMAX).astype(np.int64)
    h = vtx[:, 2]
    hmin = float(np.float32(h.min()))
    hmax = float(np.float32(h.max()))
    if hmax < h.max():  # float32 rounded down below the true max
        hmax = float(np.nextafter(np.float32(hmax), np.float32(np.inf)))
    if hmin > h.min():
        hmin = float(np.nextafter(np.float32(hmin), np.float32(-np.inf)))
    span = hmax - hmin
    hq = np.zeros(len(h), dtype=np.int64) if span == 0 else np.rint((h - hmin) / span * QMAX)
    return (
        np.clip(u, 0, QMAX),
        np.clip(v, 0, QMAX),
        np.clip(hq.astype(np.int64), 0, QMAX),
        hmin,
        hmax,
    )


def dequantize(u, v, hq, bounds, min_height: float, max_height: float) -> np.ndarray:
    """(N, 3) lon, lat (degrees) and height (metres) of quantised vertices, the way
    CesiumJS reconstructs them (linear interpolation over the rectangle)."""
    w, s, e, n = (float(b) for b in bounds)
    tu = np.asarray(u, dtype=np.float64) / QMAX
    tv = np.asarray(v, dtype=np.float64) / QMAX
    th = np.asarray(hq, dtype=np.float64) / QMAX
    return np.column_stack(
        [w + tu * (e - w), s + tv * (n - s), min_height + th * (max_height - min_height)]
    )


def _order(u: np.ndarray, v: np.ndarray, faces: np.ndarray, optimize: bool):
    """New triangle order and the vertex renumbering (first use) for the encoder."""
    f = faces
    if optimize and len(f) > 1:
        cu = (u[f].sum(axis=1) * 2) // 3  # centroid * 2 in [0, 65534]
        cv = (v[f].sum(axis=1) * 2) // 3
        key = hilbert_index(cu, cv, bits=16)
        f = f[np.argsort(key, kind="stable")]
    flat = f.ravel()
    _, first = np.unique(flat, return_index=True)
    used = flat[np.sort(first)]  # vertices in first-use order
    remap = np.full(len(u), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return remap[f], used


def encode_tile(
    vertices,
    faces,
    bounds,
    *,
    normals: bool | np.ndarray = True,
    metadata: dict | None = None,
    optimize: bool = True,
) -> bytes:
    """Encode one quantized-mesh-1.0 tile (uncompressed bytes).

    ``vertices`` (N, 3): longitude, latitude (degrees, WGS 84) and ellipsoidal height
    (metres); ``faces`` (M, 3) vertex indices, counter-clockwise seen from above;
    ``bounds`` the tile rectangle (west, south, east, north) in degrees. Vertices must
    lie in the rectangle (to 1e-9 of its size); a vertex is on an edge list when it
    quantises onto that edge. ``normals``: True computes area-weighted normals from
    the triangles (ECEF), an (N, 3) array gives them, False writes no normals
    extension. ``metadata`` (a JSON-able dict) adds the metadata extension (id 4).
    Vertices used by no triangle are dropped; the rest are renumbered (see the module
    docstring). The header's sphere, occlusion point and normals are computed from
    the *quantised* positions, so they hold for what a client decodes.

    Memory grows linearly with N and M (a few dozen bytes per vertex and triangle).
    """
    w, s, e, n = _check_bounds(bounds)
    vtx = np.asarray(vertices, dtype=np.float64)
    if vtx.ndim != 2 or vtx.shape[1] != 3 or len(vtx) == 0:
        raise ParameterError(f"vertices must be a non-empty (N, 3) array, got {vtx.shape}")
    if not np.all(np.isfinite(vtx)):
        raise ParameterError("vertices have NaN or infinite coordinates")
    f = np.asarray(faces)
    if f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
        raise ParameterError(f"faces must be a non-empty (M, 3) array, got {f.shape}")
    f = f.astype(np.int64)
    if f.min() < 0 or f.max() >= len(vtx):
        raise ParameterError("faces refer to vertices that do not exist")
    tol_x, tol_y = 1e-9 * (e - w), 1e-9 * (n - s)
    if (
        vtx[:, 0].min() < w - tol_x
        or vtx[:, 0].max() > e + tol_x
        or vtx[:, 1].min() < s - tol_y
        or vtx[:, 1].max() > n + tol_y
    ):
        raise ParameterError(f"vertices lie outside the tile bounds {(w, s, e, n)}")
    if normals is not True and normals is not False and normals is not None:
        nrm_in = np.asarray(normals, dtype=np.float64)
        if nrm_in.shape != vtx.shape:
            raise ParameterError(f"normals must have shape {vtx.shape}, got {nrm_in.shape}")
    else:
        nrm_in = None

    u, v, hq, hmin, hmax = quantize(vtx, (w, s, e, n))
    faces_new, used = _order(u, v, f, optimize)
    u, v, hq = u[used], v[used], hq[used]
    count = len(used)

    geo = dequantize(u, v, hq, (w, s, e, n), hmin, hmax)
    ecef = geodetic_to_ecef(geo[:, 0], geo[:, 1], geo[:, 2])
    centre = geodetic_to_ecef(0.5 * (w + e), 0.5 * (s + n), 0.5 * (hmin + hmax))
    sph_c, sph_r = bounding_sphere(ecef)
    hop = horizon_occlusion_point(ecef, sph_c)

    parts = [
        _HEADER.pack(*centre, np.float32(hmin), np.float32(hmax), *sph_c, sph_r, *hop),
        struct.pack("<I", count),
        zigzag_delta_encode(u).astype("<u2").tobytes(),
        zigzag_delta_encode(v).astype("<u2").tobytes(),
        zigzag_delta_encode(hq).astype("<u2").tobytes(),
    ]
    wide = count > 65536
    itype = "<u4" if wide else "<u2"
    size = sum(len(p) for p in parts)
    isize = 4 if wide else 2
    if size % isize:
        parts.append(b"\0" * (isize - size % isize))
    parts.append(struct.pack("<I", len(faces_new)))
    parts.append(high_water_mark_encode(faces_new).astype(itype).tobytes())
    for edge in edge_lists(u, v):
        parts.append(struct.pack("<I", len(edge)))
        parts.append(edge.astype(itype).tobytes())
    if normals is not False and normals is not None:
        nrm = vertex_normals(ecef, faces_new) if nrm_in is None else nrm_in[used]
        payload = oct_encode(nrm).tobytes()
        parts.append(struct.pack("<BI", EXT_OCT_NORMALS, len(payload)))
        parts.append(payload)
    if metadata is not None:
        text = json.dumps(metadata, separators=(",", ":"), sort_keys=True).encode("utf-8")
        parts.append(struct.pack("<BI", EXT_METADATA, 4 + len(text)))
        parts.append(struct.pack("<I", len(text)) + text)
    return b"".join(parts)


def edge_lists(u: np.ndarray, v: np.ndarray) -> list[np.ndarray]:
    """Indices of the vertices on the west, south, east and north edges (quantised
    u == 0, v == 0, u == 32767, v == 32767), each sorted along its edge (west/east by
    v, south/north by u)."""
    u = np.asarray(u)
    v = np.asarray(v)
    out = []
    for on, along in ((u == 0, v), (v == 0, u), (u == QMAX, v), (v == QMAX, u)):
        idx = np.nonzero(on)[0]
        out.append(idx[np.argsort(along[idx], kind="stable")].astype(np.int64))
    return out


def gzip_tile(data: bytes) -> bytes:
    """Gzip bytes deterministically (no file name, mtime 0), as tiles are stored."""
    return gzip.compress(data, compresslevel=9, mtime=0)


# ------------------------------------------------------------------------ decoding


class _Reader:
    def __init__(self, data: bytes, source) -> None:
        self.data = data
        self.pos = 0
        self.source = source

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise InputError(
                f"quantized-mesh tile truncated at byte {self.pos} (needs {n} more, "
                f"has {len(self.data) - self.pos})",
                path=self.source,
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def array(self, dtype: str, count: int) -> np.ndarray:
        size = np.dtype(dtype).itemsize
        return np.frombuffer(self.take(size * count), dtype=dtype).copy()

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]


def decode_tile(data: bytes, bounds=None, *, source=None) -> dict[str, Any]:
    """Decode a quantized-mesh-1.0 tile (raw or gzip-compressed bytes).

    Returns a dict: ``center``, ``min_height``, ``max_height``, ``sphere_center``,
    ``sphere_radius``, ``horizon_occlusion_point`` (header); ``u``, ``v``, ``h``
    (int arrays in [0, 32767]); ``heights`` (metres); ``faces`` (M, 3) int64;
    ``west``, ``south``, ``east``, ``north`` (edge index arrays); ``normals`` ((N, 3)
    unit ECEF vectors) and ``oct_normals`` when the extension is present;
    ``metadata`` (dict) when present; ``extensions`` (id -> raw payload); and, when
    ``bounds`` is given, ``lonlat_h`` (N, 3: degrees, degrees, metres). ``source``
    (a path) is named in errors. Raises :class:`InputError` for a truncated or
    inconsistent tile.
    """
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise InputError(
                f"corrupt gzip stream in a terrain tile ({exc})", path=source
            ) from None
    r = _Reader(bytes(data), source)
    head = _HEADER.unpack(r.take(_HEADER.size))
    out: dict[str, Any] = {
        "center": np.array(head[0:3]),
        "min_height": float(head[3]),
        "max_height": float(head[4]),
        "sphere_center": np.array(head[5:8]),
        "sphere_radius": float(head[8]),
        "horizon_occlusion_point": np.array(head[9:12]),
    }
    count = r.u32()
    u = zigzag_delta_decode(r.array("<u2", count))
    v = zigzag_delta_decode(r.array("<u2", count))
    h = zigzag_delta_decode(r.array("<u2", count))
    for name, arr in (("u", u), ("v", v), ("h", h)):
        if count and (arr.min() < 0 or arr.max() > QMAX):
            raise InputError(f"decoded {name} values leave [0, {QMAX}]", path=source)
    wide = count > 65536
    itype = "<u4" if wide else "<u2"
    isize = 4 if wide else 2
    if r.pos % isize:
        r.take(isize - r.pos % isize)
    ntri = r.u32()
    faces = high_water_mark_decode(r.array(itype, 3 * ntri)).reshape(-1, 3)
    if ntri and (faces.min() < 0 or faces.max() >= count):
        raise InputError("triangle indices out of range (corrupt index data)", path=source)
    out.update(u=u, v=v, h=h, faces=faces)
    span = out["max_height"] - out["min_height"]
    out["heights"] = out["min_height"] + h.astype(np.float64) / QMAX * span
    for name in ("west", "south", "east", "north"):
        k = r.u32()
        idx = r.array(itype, k).astype(np.int64)
        if k and idx.max() >= count:
            raise InputError(f"{name} edge index out of range", path=source)
        out[name] = idx
    exts: dict[int, bytes] = {}
    while r.pos < len(r.data):
        ext_id = struct.unpack("<B", r.take(1))[0]
        length = r.u32()
        exts[ext_id] = r.take(length)
    out["extensions"] = exts
    if EXT_OCT_NORMALS in exts:
        raw = np.frombuffer(exts[EXT_OCT_NORMALS], dtype=np.uint8)
        if raw.size != 2 * count:
            raise InputError("normals extension has the wrong length", path=source)
        out["oct_normals"] = raw.reshape(-1, 2).copy()
        out["normals"] = oct_decode(out["oct_normals"])
    if EXT_METADATA in exts:
        raw = exts[EXT_METADATA]
        (n,) = struct.unpack("<I", raw[:4])
        try:
            out["metadata"] = json.loads(raw[4 : 4 + n].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"metadata extension is not JSON ({exc})", path=source) from None
    if bounds is not None:
        out["lonlat_h"] = dequantize(u, v, h, bounds, out["min_height"], out["max_height"])
    return out
