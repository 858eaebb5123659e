"""EXT_meshopt_compression streams: against meshoptimizer's reference codec, the
plain-Python reference, exact round trips, bad input, and size."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.errors import InputError, ParameterError
from twin.mesh import _meshopt_kernels as K
from twin.mesh import _meshopt_reference as R
from twin.mesh import meshopt_codec as M
from twin.mesh.meshopt_codec import (
    decode_index_buffer,
    decode_index_sequence,
    decode_meshopt,
    decode_vertex_buffer,
    encode_index_buffer,
    encode_index_sequence,
    encode_meshopt,
    encode_vertex_buffer,
)
from twin.mesh.quantize import quantize
from twin.mesh.reorder import optimize_vertex_cache, optimize_vertex_fetch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks._meshes import city_mesh  # noqa: E402

mo = pytest.importorskip("meshoptimizer")


@pytest.fixture(autouse=True)
def _meshopt_version0():
    # meshoptimizer's encoder version is global state; we write and read version 0
    mo.encode_vertex_version(0)
    yield


def rng(seed=0):
    return np.random.Generator(np.random.PCG64(seed))


def mo_decode_vertex(buf: bytes, count: int, stride: int) -> np.ndarray:
    # the wrapper's dtype= path segfaults; the default path returns float32 or raw bytes
    out = mo.decode_vertex_buffer(count, stride, buf)
    return np.frombuffer(out.tobytes(), np.uint8).reshape(count, stride)


def canon(faces) -> np.ndarray:
    """Each triangle as its lexicographically smallest rotation (winding kept)."""
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    rots = np.stack([np.roll(f, -r, axis=1) for r in range(3)], 1)  # (M, 3, 3)
    alive = np.ones((f.shape[0], 3), bool)
    for k in range(3):  # keep the rotations whose k-th index is smallest among the alive
        col = np.where(alive, rots[..., k], np.iinfo(np.int64).max)
        alive &= col == col.min(axis=1, keepdims=True)
    return rots[np.arange(f.shape[0]), np.argmax(alive, axis=1)]


def smooth_bytes(n, stride, seed=0):
    """Vertex-like data: half the bytes drift slowly, half are noise."""
    g = rng(seed)
    d = g.integers(0, 256, (n, stride), dtype=np.uint8)
    h = stride // 2
    d[:, :h] = (np.cumsum(g.integers(-3, 4, (n, h)), axis=0) & 255).astype(np.uint8)
    return d


def optimised_city(n_triangles=20_000):
    v, f = city_mesh(n_triangles, seed=1)
    f = optimize_vertex_cache(f, v.shape[0])
    v, f = optimize_vertex_fetch(v, f)
    return v, f


SHAPES = [(1, 4), (15, 4), (16, 8), (17, 12), (300, 8), (1000, 12), (50, 64), (600, 36), (40, 256)]


# ---------------------------------------------------------------- vertex (mode 0)


@pytest.mark.parametrize("n,stride", SHAPES)
def test_vertex_kernel_matches_reference_and_meshoptimizer(n, stride):
    d = smooth_bytes(n, stride, seed=n + stride)
    ours = encode_vertex_buffer(d)
    assert ours == R.encode_vertex_ref(d)
    assert ours[0] == 0xA0
    theirs = mo.encode_vertex_buffer(d, n, stride)
    assert len(ours) == len(theirs)  # same greedy group rule: same size
    # their decoder reads ours, ours reads theirs, both references agree
    assert np.array_equal(mo_decode_vertex(ours, n, stride), d)
    assert np.array_equal(decode_vertex_buffer(theirs, n, stride), d)
    assert np.array_equal(R.decode_vertex_ref(theirs, n, stride), d)
    assert np.array_equal(decode_vertex_buffer(ours, n, stride), d)


def test_vertex_typed_arrays_and_all_group_modes():
    g = rng(3)
    # int32 rows (stride 12), with constant, small-delta, mid-delta and random columns
    n = 700
    a = np.zeros((n, 3), np.int32)
    a[:, 1] = np.cumsum(g.integers(-1, 2, n))
    a[:, 2] = g.integers(-(2**31), 2**31 - 1, n)
    a[:, 0] = np.cumsum(g.integers(-6, 7, n))
    enc = encode_vertex_buffer(a)
    back = decode_vertex_buffer(enc, n, 12).view(np.int32)
    assert np.array_equal(back, a)
    # every header mode occurs: check via the reference group coder
    modes = {R._encode_group(z)[0] for z in ([0] * 16, [1] * 16, [5] * 16, [200] * 16)}
    assert modes == {0, 1, 2, 3}
    f32 = g.standard_normal((33, 4)).astype(np.float32)
    assert np.array_equal(
        decode_vertex_buffer(encode_vertex_buffer(f32), 33, 16).view(np.float32), f32
    )


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 300),
    words=st.integers(1, 8),
    seed=st.integers(0, 2**31),
    spread=st.sampled_from([1, 4, 40, 256]),
)
def test_vertex_round_trip_property(n, words, seed, spread):
    g = rng(seed)
    d = (np.cumsum(g.integers(0, spread, (n, 4 * words)), axis=0) & 255).astype(np.uint8)
    enc = encode_vertex_buffer(d)
    assert np.array_equal(decode_vertex_buffer(enc, n, 4 * words), d)
    assert enc == R.encode_vertex_ref(d)


def test_vertex_deterministic_bytes():
    d = smooth_bytes(500, 8, seed=9)
    assert encode_vertex_buffer(d) == encode_vertex_buffer(d.copy())


def test_vertex_bad_input():
    d = smooth_bytes(100, 8)
    enc = encode_vertex_buffer(d)
    with pytest.raises(InputError, match="multiple of 4"):
        encode_vertex_buffer(np.zeros((5, 3), np.uint8))
    with pytest.raises(InputError, match="multiple of 4"):
        encode_vertex_buffer(np.zeros((5, 65), np.float32))  # 260 bytes
    with pytest.raises(ParameterError):
        decode_vertex_buffer(enc, 100, 6)
    with pytest.raises(InputError, match="truncated"):
        decode_vertex_buffer(enc[:20], 100, 8)
    with pytest.raises(InputError, match="truncated"):
        decode_vertex_buffer(enc[: len(enc) // 2] + enc[-32:], 100, 8)
    with pytest.raises(InputError, match="header"):
        decode_vertex_buffer(b"\x55" + enc[1:], 100, 8)
    with pytest.raises(InputError, match="version 1"):
        decode_vertex_buffer(b"\xa1" + enc[1:], 100, 8)
    with pytest.raises(InputError, match="unexpected bytes"):
        decode_vertex_buffer(enc, 50, 8)  # a wrong count leaves bytes over
    with pytest.raises(InputError):
        decode_vertex_buffer("not bytes", 100, 8)
    # meshoptimizer agrees these are bad
    with pytest.raises(RuntimeError):
        mo.decode_vertex_buffer(100, 8, enc[:20])


# ---------------------------------------------------------------- triangles (mode 1)


def random_faces(m, n, seed):
    g = rng(seed)
    f = np.empty((m, 3), np.int64)
    for i in range(m):
        f[i] = g.choice(n, 3, replace=False)
    return f.astype(np.uint32)


def check_index_round_trip(f, enc, dec):
    dec = np.asarray(dec).reshape(-1, 3)
    assert dec.shape == f.shape
    assert np.array_equal(canon(dec), canon(f))  # same triangles, order and winding


@pytest.mark.parametrize("case", ["random", "wide", "city", "strip"])
def test_index_kernel_matches_reference_and_meshoptimizer(case):
    if case == "random":
        f = random_faces(400, 150, seed=1)
    elif case == "wide":  # indices far apart: multi-byte varints, negative deltas
        f = (random_faces(300, 200, seed=2).astype(np.int64) * 40_000 + 7).astype(np.uint32)
    elif case == "city":
        f = optimised_city(4000)[1]
    else:
        f = np.array([[i, i + 1, i + 2] if i % 2 == 0 else [i + 1, i, i + 2] for i in range(200)])
        f = f.astype(np.uint32)
    n = int(f.max()) + 1
    ours = encode_index_buffer(f, n)
    assert ours == R.encode_index_ref(f).__bytes__()
    assert ours[0] == 0xE1
    table = ours[-16:]
    assert table[14:] == b"\0\0" and all(b >> 4 != 15 and b & 15 != 15 for b in table)
    dec = decode_index_buffer(ours, f.size)
    check_index_round_trip(f, ours, dec)
    assert np.array_equal(dec, R.decode_index_ref(ours, f.size))
    # meshoptimizer's decoder reads ours
    theirs_dec = mo.decode_index_buffer(f.size, 4, ours).reshape(-1, 3)
    assert np.array_equal(theirs_dec.astype(np.uint32), dec)
    # ours reads meshoptimizer's
    theirs = mo.encode_index_buffer(f.ravel(), f.size, n)
    check_index_round_trip(f, theirs, decode_index_buffer(theirs, f.size))
    check_index_round_trip(f, theirs, R.decode_index_ref(theirs, f.size))


def test_index_degenerate_and_repeated_triangles():
    f = np.array([[0, 1, 2], [0, 1, 2], [2, 2, 3], [3, 3, 3], [4, 0, 4], [5, 6, 7], [7, 6, 5]])
    f = f.astype(np.uint32)
    enc = encode_index_buffer(f)
    assert enc == R.encode_index_ref(f)
    check_index_round_trip(f, enc, decode_index_buffer(enc, f.size))
    check_index_round_trip(f, enc, mo.decode_index_buffer(f.size, 4, enc))
    assert decode_index_buffer(enc, f.size, index_size=2).dtype == np.uint16


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 60), n=st.integers(3, 40), seed=st.integers(0, 2**31))
def test_index_round_trip_property(m, n, seed):
    f = rng(seed).integers(0, n, (m, 3)).astype(np.uint32)
    enc = encode_index_buffer(f, n)
    check_index_round_trip(f, enc, decode_index_buffer(enc, f.size))
    assert enc == R.encode_index_ref(f)


def test_index_empty():
    enc = encode_index_buffer(np.zeros((0, 3), np.uint32), 1)
    assert decode_index_buffer(enc, 0).shape == (0, 3)
    assert mo.decode_index_buffer(0, 4, enc).size == 0


def test_index_bad_input():
    f = optimised_city(2000)[1]
    enc = encode_index_buffer(f)
    with pytest.raises(InputError, match="out of range"):
        encode_index_buffer(f, int(f.max()))
    with pytest.raises(InputError):
        encode_index_buffer(np.array([[0, -1, 2]]))
    with pytest.raises(InputError):
        encode_index_buffer(np.zeros((4, 2), np.uint32))
    with pytest.raises(ParameterError):
        decode_index_buffer(enc, f.size + 1)
    with pytest.raises(ParameterError):
        decode_index_buffer(enc, f.size, index_size=3)
    with pytest.raises(InputError, match="truncated"):
        decode_index_buffer(enc[:100], f.size)
    for header in (b"\xe2", b"\xd1", b"\xa0"):  # version 2 does not exist; other modes
        with pytest.raises(InputError, match="header"):
            decode_index_buffer(header + enc[1:], f.size)
    with pytest.raises(InputError, match="unexpected bytes"):
        decode_index_buffer(enc[:-16] + b"\x01" + enc[-16:], f.size)
    # a codeaux table entry with a 0xf nibble, used by a 0xf0 code
    bad = bytearray(encode_index_buffer(np.array([[0, 1, 2]], np.uint32)))
    assert bad[1] == 0xF0
    bad[-16] = 0xF0
    with pytest.raises(InputError, match="0xf nibble"):
        decode_index_buffer(bytes(bad), 3)
    # corrupt code bytes never crash: a clear error or some triangles, never a segfault
    g = rng(5)
    for _ in range(20):
        junk = bytearray(enc)
        junk[1 : 1 + f.shape[0]] = g.integers(0, 256, f.shape[0], dtype=np.uint8).tobytes()
        try:
            decode_index_buffer(bytes(junk), f.size)
        except InputError:
            pass


# ---------------------------------------------------------------- kernels vs references


def test_kernels_direct_match_references():
    d = smooth_bytes(777, 20, seed=4)
    buf = K.encode_vertex_kernel(d)
    out, status = K.decode_vertex_kernel(buf, 777, 20)
    assert status == 0 and np.array_equal(out, d)
    assert buf.tobytes() == R.encode_vertex_ref(d)
    f = random_faces(200, 60, seed=7)
    ib = K.encode_index_kernel(f.astype(np.int64))
    assert ib.tobytes() == R.encode_index_ref(f)
    out, status = K.decode_index_kernel(ib, f.size)
    assert status == 0 and np.array_equal(out, R.decode_index_ref(ib.tobytes(), f.size))


# ---------------------------------------------------------------- whole meshes and size


def test_size_against_meshoptimizer_on_city():
    """Our streams vs meshoptimizer's encoder on the same optimised, quantised mesh."""
    v, f = optimised_city(40_000)
    q = quantize(v, bits=14)
    pos = np.zeros((q.positions.shape[0], 4), np.uint16)
    pos[:, :3] = q.positions
    ours_v = encode_vertex_buffer(pos)
    ours_i = encode_index_buffer(f, v.shape[0])
    theirs_v = mo.encode_vertex_buffer(pos, pos.shape[0], 8)
    theirs_i = mo.encode_index_buffer(f.ravel(), f.size, v.shape[0])
    rv = len(ours_v) / len(theirs_v)
    ri = len(ours_i) / len(theirs_i)
    rt = (len(ours_v) + len(ours_i)) / (len(theirs_v) + len(theirs_i))
    print(
        f"\n{f.shape[0]} triangles, {v.shape[0]} vertices: vertex {len(ours_v)} vs "
        f"{len(theirs_v)} ({rv:.3f}x), index {len(ours_i)} vs {len(theirs_i)} ({ri:.3f}x), "
        f"total {rt:.3f}x"
    )
    assert rv <= 1.10 and ri <= 1.10 and rt <= 1.05
    assert np.array_equal(
        mo_decode_vertex(ours_v, pos.shape[0], 8), pos.view(np.uint8).reshape(-1, 8)
    )
    check_index_round_trip(f, ours_i, mo.decode_index_buffer(f.size, 4, ours_i))


def test_encode_meshopt_round_trip_city():
    v, f = city_mesh(8000, seed=2)
    g = rng(11)
    nrm = g.standard_normal((v.shape[0], 3))
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    uv = g.random((v.shape[0], 2))
    d = encode_meshopt(v, f, bits=14, normals=nrm, uvs=uv)
    # expected: the same deterministic reorder, then quantisation
    fo = optimize_vertex_cache(f, v.shape[0])
    res = optimize_vertex_fetch(v, fo, np.hstack([nrm, uv]))
    vo, fo = res
    ao = res.attributes
    q = quantize(vo, bits=14, normals=ao[:, :3], uvs=ao[:, 3:])
    v2, f2 = decode_meshopt(d)
    assert np.array_equal(canon(f2), canon(fo))
    assert np.abs(v2 - vo).max() <= q.max_error * (1 + 1e-9)
    assert d["positions"]["byteStride"] == 8 and d["positions"]["count"] == vo.shape[0]
    assert d["indices"]["mode"] == "TRIANGLES" and d["indices"]["count"] == f.size
    assert d["indices"]["byteStride"] == (2 if vo.shape[0] <= 65536 else 4)
    n_raw = decode_vertex_buffer(d["normals"]["data"], vo.shape[0], 4).view(np.int8)[:, :3]
    assert np.array_equal(n_raw, q.normals)
    uv_raw = mo_decode_vertex(d["uvs"]["data"], vo.shape[0], 4).view(np.uint16)
    assert np.array_equal(uv_raw, q.uvs)
    # meshoptimizer's decoder reads every stream
    pos = mo_decode_vertex(d["positions"]["data"], vo.shape[0], 8).view(np.uint16)[:, :3]
    assert np.array_equal(pos, q.positions)
    mf = mo.decode_index_buffer(f.size, 4, d["indices"]["data"]).reshape(-1, 3)
    assert np.array_equal(mf.astype(np.uint32), f2)
    # deterministic
    assert (
        encode_meshopt(v, f, bits=14, normals=nrm, uvs=uv)["indices"]["data"]
        == d["indices"]["data"]
    )


def test_encode_meshopt_bad_input():
    v, f = city_mesh(500, seed=3)
    with pytest.raises(InputError):
        encode_meshopt(np.full_like(v, np.nan), f)
    with pytest.raises(InputError):
        encode_meshopt(v, f + v.shape[0])
    with pytest.raises(ParameterError):
        encode_meshopt(v, f, bits=0)
    with pytest.raises(InputError, match="missing"):
        decode_meshopt({"positions": {}})


def test_huge_counts_are_refused_before_allocating():
    enc = encode_vertex_buffer(smooth_bytes(64, 8))
    with pytest.raises(InputError, match="truncated"):
        decode_vertex_buffer(enc, 10**12, 8)
    ienc = encode_index_buffer(random_faces(10, 8, seed=0))
    with pytest.raises(InputError, match="truncated"):
        decode_index_buffer(ienc, 3 * 10**12)
    # the minimum size is exact: an all-zero-delta stream has exactly that many bytes
    for n, stride in [(0, 4), (1, 4), (300, 8), (1000, 64), (513, 256)]:
        d = np.zeros((n, stride), np.uint8)
        assert len(encode_vertex_buffer(d)) == M._vertex_min_size(n, stride)


# ---------------------------------------------------------------- index sequences (mode 2)


@pytest.mark.parametrize("case", ["lines", "strip", "random", "wide", "empty"])
def test_index_sequence_against_reference_and_meshoptimizer(case):
    g = rng(8)
    if case == "lines":  # a line list walking two interleaved runs
        seq = np.column_stack([np.arange(500), np.arange(1000, 1500)]).ravel()
    elif case == "strip":
        seq = np.arange(2000) // 2 + (np.arange(2000) % 2) * 700
    elif case == "random":
        seq = g.integers(0, 60_000, 3000)
    elif case == "wide":
        seq = g.integers(0, 2**30, 500)
    else:
        seq = np.zeros(0, np.int64)
    seq = seq.astype(np.uint32)
    ours = encode_index_sequence(seq)
    assert ours == R.encode_sequence_ref(seq)
    assert ours[0] == 0xD1 and ours[-4:] == b"\0\0\0\0"
    dec = decode_index_sequence(ours, seq.size)
    assert dec.dtype == np.uint32 and np.array_equal(dec, seq)
    assert np.array_equal(R.decode_sequence_ref(ours, seq.size), seq)
    assert np.array_equal(mo.decode_index_sequence(seq.size, 4, ours).astype(np.uint32), seq)
    if seq.size:
        theirs = mo.encode_index_sequence(seq, seq.size, int(seq.max()) + 1)
        assert np.array_equal(decode_index_sequence(theirs, seq.size), seq)
        print(f"\n{case}: {len(ours)} bytes vs meshoptimizer {len(theirs)}")
        assert len(ours) <= 1.10 * len(theirs)


def test_index_sequence_bad_input():
    seq = np.arange(100, dtype=np.uint32)
    enc = encode_index_sequence(seq)
    with pytest.raises(InputError, match="truncated"):
        decode_index_sequence(enc[:50], 100)
    with pytest.raises(InputError, match="unexpected bytes"):
        decode_index_sequence(enc, 99)
    for header in (b"\xd2", b"\xe1"):  # version 2 does not exist; another mode
        with pytest.raises(InputError, match="header"):
            decode_index_sequence(header + enc[1:], 100)
    # version 0 is the same stream under another header
    np.testing.assert_array_equal(decode_index_sequence(b"\xd0" + enc[1:], 100), seq)
    with pytest.raises(InputError, match="over-long"):
        decode_index_sequence(b"\xd1" + b"\xff" * 8 + b"\x00" * 5, 1)
    with pytest.raises(InputError):
        encode_index_sequence(np.array([1, -2, 3]))
    with pytest.raises(InputError, match="out of range"):
        encode_index_sequence(seq, 50)
    with pytest.raises(InputError, match="2\\*\\*30"):
        encode_index_sequence(np.array([0, 2**31 + 5, 2**31 + 7], np.uint32))
    with pytest.raises(ParameterError):
        decode_index_sequence(enc, 100, index_size=1)
    assert decode_index_sequence(enc, 100, index_size=2).dtype == np.uint16
