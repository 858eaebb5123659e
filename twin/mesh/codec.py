"""twin's archival mesh codec: compact, exact, versioned, checksummed.

:func:`encode` quantises positions with :func:`twin.mesh.quantize` (``bits`` per
coordinate on a uniform grid over the bounding box) and writes the triangles and
the integer positions; :func:`decode` returns exactly that quantised mesh:

- the same multiset of triangles with the same winding; triangles come back in
  traversal order and each may be rotated (``(a, b, c)`` as ``(b, c, a)``, never
  flipped);
- the same vertices (duplicates and unreferenced vertices included), renumbered in
  the order the traversal first meets them, unreferenced ones last in input order
  (``encode(..., return_order=True)`` also gives ``order``: decoded vertex ``i``
  is input vertex ``order[i]``);
- positions equal to ``dequantize(quantize(vertices, bits))``.

Connectivity: an Edgebreaker-style traversal (ops C, R, L, E, S, plus X for an
apex anywhere else and B for a boundary or non-manifold edge; see
:mod:`twin.mesh._codec_kernels`), so non-manifold edges and vertices, holes,
several components, inconsistent orientation, degenerate and duplicate triangles
all round-trip without splitting or dropping anything. Positions: predicted on
the quantised integers from the gate triangle ``u, v, w`` as ``m + alpha (m - w)``
(``m`` the gate midpoint; ``alpha = 1`` is the parallelogram rule), optionally
with a coded per-vertex choice of copying ``u`` or ``v`` instead (extruded
buildings: a wall's vertex above another); the encoder picks ``alpha`` in {0,
1/2, 3/4, 1} and the choice on or off per mesh by estimated size. Component starts
and unreferenced vertices are deltas; residuals wrap modulo ``2**bits``. Entropy
coding: static rANS (two interleaved states, 11-bit probabilities) with one table
per context (the previous op; per axis, the spread of the gate triangle; the
previous predictor choice), raw bits for the low bits of large values.

Measured (``benchmarks/mesh_storage.py``, 2-core shared machine, DracoPy with
``compression_level=7, quantization_bits=14``): bytes 0.95x Draco's on a 1 M-
triangle noisy scan, 0.68x on a 1 M-triangle city, 0.94x on the Delft CityJSON
model (36 k triangles); decoding 2.0-4.8x faster than Draco's (CPU and wall time);
encoding 0.5-1.4x Draco's time. Cold Numba compile is about 20 s (encode) + 27 s
(decode) on that loaded machine, loading the on-disk cache about 1.5 s.

Format (little endian): ``b"TWMC"``, version (u8, 1), bits (u8), flags (u16: bits
0-3 the prediction's ``alpha8``, bit 4 a coded per-vertex predictor choice),
vertex count (u32), face count (u32), quantisation offset (3 x f64), step (f64),
byte lengths of the model tables (zlib-deflated), raw bits and rANS stream
(3 x u32), those three blobs, then the CRC-32 (u32) of everything before it.

Memory: encoding peaks at about 270 bytes per face (measured on a 400 k-face scan:
adjacency, traversal state, symbol arrays); decoding at about 30-60 bytes per face
including the output arrays (24 bytes per face of them).
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

from twin.errors import InputError, ParameterError
from twin.mesh import _codec_kernels as K
from twin.mesh.quantize import Quantized, quantize
from twin.mesh.validate import check_mesh

__all__ = ["decode", "decode_quantized", "encode"]

MAGIC = b"TWMC"
VERSION = 1
#: Largest face count of one archive (the decoder's border nodes are int32).
MAX_FACES = 700_000_000
_MAX_TABLES = K.N_CTX * (4 + 6 * K.NSYM)  # largest model-table blob, inflated
_HEAD = struct.Struct("<4sBBHII4dIII")
_STATUS = {
    -1: "its symbol stream is truncated or inconsistent",
    -2: "its raw bit stream is truncated",
    -3: "it references a vertex that does not exist yet",
    -4: "it decodes more vertices than its header says",
    -5: "it holds an impossible symbol",
}


def _varint(out: bytearray, v: int) -> None:
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


def normalize_counts(counts: np.ndarray) -> np.ndarray:
    """Scale symbol counts to frequencies summing to ``PROB_SCALE`` (each used
    symbol at least 1); all-zero counts stay zero."""
    counts = np.asarray(counts, np.int64)
    total = int(counts.sum())
    freq = np.zeros(counts.shape, np.int64)
    if total == 0:
        return freq
    used = counts > 0
    freq[used] = np.maximum(1, (counts[used] * K.PROB_SCALE) // total)
    diff = K.PROB_SCALE - int(freq.sum())
    if diff > 0:
        freq[int(np.argmax(counts))] += diff
    while diff < 0:
        i = int(np.argmax(freq))
        take = min(-diff, int(freq[i]) - 1)
        freq[i] -= take
        diff += take
    return freq


def _write_tables(freq: np.ndarray) -> bytes:
    out = bytearray()
    for row in freq:
        nz = np.flatnonzero(row)
        _varint(out, len(nz))
        prev = -1
        for s in nz:
            _varint(out, int(s) - prev - 1)
            _varint(out, int(row[s]) - 1)
            prev = int(s)
    return bytes(out)


_ALPHAS = (0, 4, 6, 8)


def choose_predictor(q: np.ndarray, quads: np.ndarray, bits: int) -> tuple[int, bool]:
    """Pick ``alpha8`` (of 0, 4, 6, 8) and whether to code a per-vertex predictor
    choice (apex, ``u`` or ``v``) by the estimated size of the residuals of the
    traversal's parallelogram-predicted vertices (``quads``: u, v, w, c; at most
    about 100 k of them, a regular sample, are looked at)."""
    if len(quads) < 64:
        return 8, False
    if len(quads) > 200_000:
        quads = quads[:: len(quads) // 100_000]
    alphas = np.array(_ALPHAS, np.int64)
    cost = K.predictor_costs(q, np.ascontiguousarray(quads), int(bits), alphas)
    i, j = np.unravel_index(int(np.argmin(cost)), cost.shape)
    return int(alphas[i]), bool(j)


def encode(vertices, faces, bits: int = 14, *, return_order: bool = False):
    """Encode a triangle mesh as a compact archive (``bytes``); see the module docstring.

    ``vertices`` (N, 3) float, ``faces`` (M, 3) integer indices, ``bits`` in [1, 16]
    per coordinate (14 gives 1/16383 of the bounding box's longest side). Any
    triangle set round-trips: non-manifold, open, several components, degenerate or
    duplicate faces. With ``return_order=True`` returns ``(data, order)``: decoded
    vertex ``i`` is input vertex ``order[i]``.
    Raises :class:`~twin.errors.InputError` for an empty mesh, NaN/inf
    coordinates or out-of-range indices.
    Memory: about 270 bytes per face at peak.
    """
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or not 1 <= bits <= 16:
        raise ParameterError(f"bits must be an integer in [1, 16], got {bits!r}")
    m = np.shape(faces)[0] if isinstance(faces, np.ndarray) and np.ndim(faces) else 0
    if m > MAX_FACES:  # before check_mesh copies or scans the faces
        raise InputError(
            f"{m} faces is more than one archive holds ({MAX_FACES}); split into tiles"
        )
    v, f = check_mesh(vertices, faces)
    qz = quantize(v, bits=int(bits))
    q = qz.positions.astype(np.int64)
    f64 = f.astype(np.int64)
    twin = K.build_twins(f64, q.shape[0])
    out = K.encode_traverse(q, f64, twin, int(bits), 8, False)
    alpha8, select = choose_predictor(q, out[6], int(bits))
    if (alpha8, select) != (8, False):
        out = K.encode_traverse(q, f64, twin, int(bits), alpha8, select)
    ctx, sym, rval, rlen, order = out[:5]
    counts = np.bincount(ctx.astype(np.int64) * K.NSYM + sym, minlength=K.N_CTX * K.NSYM)
    freq = np.stack([normalize_counts(r) for r in counts.reshape(K.N_CTX, K.NSYM)])
    cum = np.zeros_like(freq)
    cum[:, 1:] = np.cumsum(freq, axis=1)[:, :-1]
    stream = K.rans_encode(ctx, sym, freq, cum).tobytes()
    raw = K.pack_bits(rval, rlen).tobytes()
    tables = zlib.compress(_write_tables(freq), 9)
    head = _HEAD.pack(
        MAGIC,
        VERSION,
        int(bits),
        alpha8 | (16 if select else 0),
        q.shape[0],
        f.shape[0],
        *(float(x) for x in qz.offset),
        float(qz.step),
        len(tables),
        len(raw),
        len(stream),
    )
    body = head + tables + raw + stream
    data = body + struct.pack("<I", zlib.crc32(body))
    if return_order:
        return data, order
    return data


def _read(data) -> tuple[bytes, str | None]:
    """The archive's bytes and the file they came from (for messages), if any."""
    if isinstance(data, str | os.PathLike):
        path = os.fspath(data)
        try:
            return Path(path).read_bytes(), path
        except FileNotFoundError:
            raise InputError("mesh archive not found", path=path) from None
        except OSError as exc:
            raise InputError(
                f"cannot read mesh archive: {exc.strerror or exc}", path=path
            ) from None
    if isinstance(data, np.ndarray):
        data = data.tobytes()
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InputError(f"a mesh archive must be bytes or a path, got {type(data).__name__}")
    return bytes(data), None


def _parse(data, path=None) -> tuple:
    if len(data) < 4 or data[:4] != MAGIC:
        raise InputError(
            f"not a twin mesh archive (magic {data[:4]!r}, expected {MAGIC!r})", path=path
        )
    if len(data) < _HEAD.size + 4:
        raise InputError(f"mesh archive is truncated ({len(data)} bytes)", path=path)
    (_, version, bits, flags, nv, nf, ox, oy, oz, step, lt, lr, ls) = _HEAD.unpack_from(data)
    if version != VERSION:
        raise InputError(
            f"mesh archive version {version} is not supported (this library reads {VERSION})",
            path=path,
        )
    if _HEAD.size + lt + lr + ls + 4 != len(data):
        raise InputError(
            f"mesh archive is truncated or has trailing bytes ({len(data)} bytes, header "
            f"says {_HEAD.size + lt + lr + ls + 4})",
            path=path,
        )
    (crc,) = struct.unpack_from("<I", data, len(data) - 4)
    if zlib.crc32(data[:-4]) != crc:
        raise InputError("mesh archive is corrupt (checksum mismatch)", path=path)
    if flags & ~31 or (flags & 15) > 8 or not 1 <= bits <= 16 or nv == 0 or nf == 0:
        raise InputError("mesh archive has an invalid header", path=path)
    if nf > MAX_FACES:
        raise InputError(f"mesh archive has {nf} faces, more than this codec handles", path=path)
    p = _HEAD.size
    tables = data[p : p + lt]
    raw = np.frombuffer(data, np.uint8, lr, p + lt)
    stream = np.frombuffer(data, np.uint8, ls, p + lt + lr)
    return bits, nv, nf, flags, np.array([ox, oy, oz]), step, tables, raw, stream


def _decode(data, want_float: bool):
    data, path = _read(data)
    bits, nv, nf, flags, offset, step, tables, raw, stream = _parse(data, path)
    try:
        inflate = zlib.decompressobj()
        tables = inflate.decompress(tables, _MAX_TABLES)
    except zlib.error:
        raise InputError("mesh archive has a corrupt model table", path=path) from None
    if inflate.unconsumed_tail or not inflate.eof:
        raise InputError("mesh archive has a corrupt model table", path=path)
    try:
        out = _decode_all(tables, stream, raw, nv, nf, bits, flags, offset, step, want_float)
    except MemoryError:
        raise InputError(
            f"mesh archive claims {nv} vertices and {nf} faces, more than memory allows "
            "(a corrupt header, or decode it on a bigger machine)",
            path=path,
        ) from None
    vertices, q, faces, status = out
    if status in (-7, -8) or (status == -1 and len(q) == 0):
        raise InputError("mesh archive has a corrupt model table", path=path)
    if status != 0:
        raise InputError(f"mesh archive is corrupt: {_STATUS.get(status, status)}", path=path)
    return vertices, Quantized(positions=q, offset=offset, step=float(step), bits=bits), faces


def _decode_all(tables, stream, raw, nv, nf, bits, flags, offset, step, want_float):
    return K.decode_all(
        np.frombuffer(tables, np.uint8),
        stream,
        raw,
        nv,
        nf,
        bits,
        flags & 15,
        bool(flags & 16),
        offset,
        float(step),
        want_float,
    )


def decode_quantized(data) -> tuple[Quantized, np.ndarray]:
    """Decode an archive (bytes or a file path) to ``(Quantized positions, faces
    uint32 (M, 3))``."""
    _, qz, faces = _decode(data, False)
    return qz, faces


def decode(data) -> tuple[np.ndarray, np.ndarray]:
    """Decode an archive to ``(vertices float64 (N, 3), faces uint32 (M, 3))``.

    ``data``: the archive's bytes (``bytes``, ``bytearray``, ``memoryview``, a uint8
    array) or the path of a file holding it (what ``twin mesh optimize --codec twin``
    writes). Vertices are ``q * step + offset``, equal to ``dequantize(quantize(v,
    bits))`` of the encoded mesh. Raises :class:`~twin.errors.InputError` (naming the
    file, if any) for a missing, truncated or corrupt archive (checksum), a wrong
    magic, an unsupported version or a header whose counts cannot be allocated.
    Memory: about 30-60 bytes per face including the outputs.
    """
    vertices, _, faces = _decode(data, True)
    return vertices, faces
