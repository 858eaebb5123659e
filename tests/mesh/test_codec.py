"""twin's archival mesh codec: exact round trips (kernels and plain-Python
reference), arbitrary triangle sets, bad and corrupt archives, size against Draco."""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twin.errors import InputError, ParameterError, TwinError
from twin.mesh import _codec_kernels as K
from twin.mesh import _codec_reference as R
from twin.mesh import codec as C
from twin.mesh import decode, decode_quantized, encode
from twin.mesh.quantize import dequantize, quantize

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks._meshes import city_mesh, scan_mesh  # noqa: E402


def rng(seed=0):
    return np.random.Generator(np.random.PCG64(seed))


def canonical(faces: np.ndarray) -> np.ndarray:
    """Faces rotated so the smallest index leads (winding kept), rows sorted."""
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    r = np.argmin(f, axis=1)
    rows = np.arange(len(f))
    g = np.stack([f[rows, (r + k) % 3] for k in range(3)], axis=1)
    return g[np.lexsort(g.T[::-1])]


def assert_exact(v, f, bits=14):
    """encode -> decode gives the quantised mesh: same vertices (via the returned
    order), the same oriented triangles, positions equal to dequantize(quantize)."""
    data, order = encode(v, f, bits=bits, return_order=True)
    dv, df = decode(data)
    assert dv.shape == (len(v), 3) and df.shape == (len(f), 3)
    assert df.dtype == np.uint32
    assert np.array_equal(np.sort(order), np.arange(len(v)))
    ref = dequantize(quantize(v, bits))
    np.testing.assert_array_equal(dv, ref[order])
    np.testing.assert_array_equal(canonical(order[df.astype(np.int64)]), canonical(f))
    return data


def test_city_and_scan_round_trip_exactly():
    for gen in (city_mesh, scan_mesh):
        v, f = gen(6000, seed=3)
        assert_exact(v, f)


@pytest.mark.parametrize("bits", [1, 8, 11, 16])
def test_any_precision(bits):
    v, f = scan_mesh(2000, seed=1)
    data = assert_exact(v, f, bits=bits)
    q, _ = decode_quantized(data)
    assert q.bits == bits and q.positions.max() <= (1 << bits) - 1


def test_decoded_positions_are_within_half_a_step():
    v, f = scan_mesh(3000, seed=2)
    data, order = encode(v, f, return_order=True)
    dv, _ = decode(data)
    step = quantize(v, 14).step
    assert np.abs(dv - v[order]).max() <= 0.5 * step * (1 + 1e-9)


def test_non_manifold_holes_components_degenerate_duplicates():
    r = rng(4)
    v = r.uniform(0, 10, (12, 3))
    f = np.array(
        [
            [0, 1, 2], [0, 2, 3], [0, 3, 1],  # a fan
            [1, 2, 4], [1, 2, 5], [2, 1, 6],  # edge 1-2 in four faces
            [7, 8, 9], [9, 8, 7],             # both windings of one triangle
            [0, 0, 4], [5, 5, 5],             # degenerate
            [0, 1, 2], [0, 1, 2],             # duplicates
            [3, 10, 4], [10, 3, 4],           # flipped pair
        ],
        np.uint32,
    )  # fmt: skip
    assert_exact(v, f)  # vertex 11 is unreferenced and comes back too


def test_coincident_vertices_stay_distinct():
    v, f = city_mesh(3000, seed=0)  # walls have their own copies of corner vertices
    data, order = encode(v, f, return_order=True)
    dv, _ = decode(data)
    assert len(dv) == len(v)
    assert len(np.unique(dv, axis=0)) < len(dv)


def test_handles_use_references():
    # a torus (genus 1): the traversal needs S/X ops and still comes back exactly
    nu, nv_ = 24, 12
    uu, vv = np.meshgrid(np.arange(nu), np.arange(nv_), indexing="ij")
    a = 2 * np.pi * uu.ravel() / nu
    b = 2 * np.pi * vv.ravel() / nv_
    v = np.column_stack([(3 + np.cos(b)) * np.cos(a), (3 + np.cos(b)) * np.sin(a), np.sin(b)])
    idx = lambda i, j: (i % nu) * nv_ + (j % nv_)  # noqa: E731
    f = []
    for i in range(nu):
        for j in range(nv_):
            f.append([idx(i, j), idx(i + 1, j), idx(i + 1, j + 1)])
            f.append([idx(i, j), idx(i + 1, j + 1), idx(i, j + 1)])
    f = np.array(f, np.uint32)
    assert_exact(v, f)
    q = quantize(v, 14).positions.astype(np.int64)
    f64 = f.astype(np.int64)
    ctx, sym, *_ = K.encode_traverse(q, f64, K.build_twins(f64, len(v)), 14, 8, False)
    ops = np.bincount(sym[ctx < K.CTX_RES], minlength=K.N_OPS)
    assert ops[K.OP_S] + ops[K.OP_X] > 0


# -- kernels against the plain-Python reference ------------------------------------


def random_mesh(seed, n_vertices=30, n_faces=60):
    r = rng(seed)
    v = r.uniform(-5, 5, (n_vertices, 3))
    f = r.integers(0, n_vertices, (n_faces, 3)).astype(np.uint32)
    return v, f


def test_twins_match_reference():
    for seed in range(5):
        _, f = random_mesh(seed, 15, 80)
        f64 = f.astype(np.int64)
        np.testing.assert_array_equal(K.build_twins(f64, 15), R.build_twins_ref(f64))
    v, f = scan_mesh(1500, seed=5)
    f64 = f.astype(np.int64)
    np.testing.assert_array_equal(K.build_twins(f64, len(v)), R.build_twins_ref(f64))


@pytest.mark.parametrize(
    "which, alpha8, select",
    [("city", 8, False), ("scan", 4, False), ("random", 8, False), ("city", 6, True),
     ("random", 0, True)],
)  # fmt: skip
def test_traversal_rans_and_decoder_match_reference(which, alpha8, select):
    if which == "random":
        v, f = random_mesh(7, 40, 120)
    else:
        v, f = (city_mesh if which == "city" else scan_mesh)(1500, seed=6)
    q = quantize(v, 14).positions.astype(np.int64)
    f64 = f.astype(np.int64)
    twin = K.build_twins(f64, len(v))
    got = K.encode_traverse(q, f64, twin, 14, alpha8, select)
    want = R.encode_traverse_ref(q, f64, twin, 14, alpha8, select)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    ctx, sym, rval, rlen = got[:4]
    counts = R.symbol_counts_ref(ctx, sym, K.N_CTX)
    freq = np.array([C.normalize_counts(np.array(c)) for c in counts])
    assert freq.tolist() == [R.normalize_counts_ref(c) for c in counts]
    cum = np.zeros_like(freq)
    cum[:, 1:] = np.cumsum(freq, axis=1)[:, :-1]
    stream = K.rans_encode(ctx, sym, freq, cum).tobytes()
    assert stream == R.rans_encode_ref(ctx, sym, freq.tolist())
    raw = K.pack_bits(rval, rlen).tobytes()
    assert raw == R.pack_bits_ref(rval, rlen)
    lut, fq, cm = K.decode_tables(freq)
    kq, kf, status = K.decode_mesh(
        np.frombuffer(stream, np.uint8), np.frombuffer(raw, np.uint8), lut, fq, cm,
        len(v), len(f), 14, alpha8, select,
    )  # fmt: skip
    assert status == 0
    rq, rf = R.decode_ref(stream, raw, freq.tolist(), len(v), len(f), 14, alpha8, select)
    np.testing.assert_array_equal(kq, rq)
    np.testing.assert_array_equal(kf, rf)
    np.testing.assert_array_equal(kf, got[5])
    np.testing.assert_array_equal(kq, q[got[4]])


def test_tokens_match_reference():
    for z in list(range(300)) + [2**k + d for k in range(8, 34) for d in (-1, 0, 1)]:
        assert tuple(K.token_of(z)) == R.token_ref(z)
        t, nb, rv = R.token_ref(z)
        assert t < K.NSYM
        assert R.untoken_ref(t, lambda n, rv=rv: rv) == z


# -- property: arbitrary triangle sets round-trip ----------------------------------


@st.composite
def meshes(draw):
    n = draw(st.integers(1, 25))
    m = draw(st.integers(1, 60))
    seed = draw(st.integers(0, 2**32 - 1))
    r = rng(seed)
    kind = draw(st.sampled_from(["random", "grid", "dup"]))
    v = r.uniform(-100, 100, (n, 3)) * draw(st.sampled_from([1e-3, 1.0, 1e4]))
    if kind == "grid" and n >= 4:
        k = int(np.sqrt(n))
        ij = np.arange(k * k).reshape(k, k)
        f = np.concatenate(
            [np.column_stack([ij[:-1, :-1].ravel(), ij[1:, :-1].ravel(), ij[1:, 1:].ravel()]),
             np.column_stack([ij[:-1, :-1].ravel(), ij[1:, 1:].ravel(), ij[:-1, 1:].ravel()])]
        )  # fmt: skip
        if len(f) == 0:
            f = np.zeros((1, 3), np.int64)
        f = f[r.permutation(len(f))]
        # punch holes and flip a few
        keep = r.uniform(size=len(f)) > 0.2
        f = f[keep] if keep.any() else f[:1]
        flip = r.uniform(size=len(f)) < 0.1
        f[flip] = f[flip][:, ::-1]
    else:
        f = r.integers(0, n, (m, 3))
    if kind == "dup":
        f = np.concatenate([f, f[: max(1, len(f) // 3)]])
        v[r.integers(0, n, n // 2)] = v[0]  # coincident positions
    return v, f.astype(np.uint32)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(meshes())
def test_property_encode_decode_identical(mesh):
    v, f = mesh
    assert_exact(v, f)


# -- bad input and corrupt archives -----------------------------------------------


def test_bad_meshes_are_twin_errors():
    v, f = scan_mesh(500, seed=0)
    with pytest.raises(TwinError):
        encode(np.zeros((0, 3)), np.zeros((0, 3), np.uint32))
    with pytest.raises(TwinError):
        encode(v, np.zeros((0, 3), np.uint32))
    bad = v.copy()
    bad[5, 1] = np.nan
    with pytest.raises(InputError, match="not finite"):
        encode(bad, f)
    with pytest.raises(InputError, match="out of range"):
        encode(v, np.where(f == f.max(), len(v), f))
    with pytest.raises(InputError, match="negative"):
        encode(v, f.astype(np.int64) - 1)
    with pytest.raises(ParameterError):
        encode(v, f, bits=17)
    with pytest.raises(ParameterError):
        encode(v, f, bits=True)


def _reseal(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_corrupt_archives_are_input_errors():
    v, f = city_mesh(3000, seed=1)
    data = encode(v, f)
    with pytest.raises(InputError, match="magic"):
        decode(b"PK\x03\x04" + data[4:])
    with pytest.raises(InputError, match="magic"):
        decode(b"")
    with pytest.raises(InputError, match="version 9"):
        decode(_reseal(data[:4] + b"\x09" + data[5:-4]))
    for cut in (10, len(data) // 2, len(data) - 1):
        with pytest.raises(InputError, match="truncated"):
            decode(data[:cut])
    r = rng(9)
    for _ in range(20):
        bad = bytearray(data)
        bad[int(r.integers(4, len(data)))] ^= 1 << int(r.integers(0, 8))
        with pytest.raises(InputError):
            decode(bytes(bad))
    with pytest.raises(InputError):
        decode(data + b"\x00")
    with pytest.raises(InputError):
        decode("not bytes")


def test_corrupt_payload_with_valid_checksum_never_crashes():
    # bytes flipped inside the coded streams and the checksum recomputed: the decoder
    # must report corruption (or, rarely, decode some other valid mesh), never crash
    v, f = scan_mesh(3000, seed=2)
    data = encode(v, f)
    head = C._HEAD.size
    r = rng(10)
    errors = 0
    for _ in range(40):
        bad = bytearray(data[:-4])
        for _ in range(3):
            bad[int(r.integers(head, len(bad)))] = int(r.integers(0, 256))
        try:
            dv, df = decode(_reseal(bytes(bad)))
        except InputError:
            errors += 1
            continue
        assert dv.shape == (len(v), 3) and int(df.max()) < len(v)
    assert errors >= 30


# -- size -------------------------------------------------------------------------


def test_smaller_than_draco_level7():
    DracoPy = pytest.importorskip("DracoPy")
    for gen in (city_mesh, scan_mesh):
        v, f = gen(20000, seed=0)
        ours = len(encode(v, f, bits=14))
        draco = len(
            DracoPy.encode(v.astype(np.float32), f, quantization_bits=14, compression_level=7)
        )
        assert ours <= draco, (gen.__name__, ours, draco)


def test_model_tables_round_trip_and_reject_garbage():
    r = rng(11)
    counts = r.integers(0, 50, (K.N_CTX, K.NSYM)) * (r.uniform(size=(K.N_CTX, K.NSYM)) < 0.2)
    freq = np.stack([C.normalize_counts(c) for c in counts])
    blob = np.frombuffer(C._write_tables(freq), np.uint8)
    got, status = K.read_tables(blob, K.N_CTX)
    assert status == 0
    np.testing.assert_array_equal(got, freq)
    assert K.read_tables(blob[:-1], K.N_CTX)[1] < 0
    assert K.read_tables(np.append(blob, 0).astype(np.uint8), K.N_CTX)[1] < 0
    assert K.read_tables(np.full(40, 0xFF, np.uint8), K.N_CTX)[1] < 0


def test_predictor_choice_matches_reference_and_suits_the_mesh():
    alphas = np.array([0, 4, 6, 8], np.int64)
    picks = {}
    for name, gen in (("scan", scan_mesh), ("city", city_mesh)):
        v, f = gen(4000, seed=8)
        q = quantize(v, 14).positions.astype(np.int64)
        f64 = f.astype(np.int64)
        quads = K.encode_traverse(q, f64, K.build_twins(f64, len(v)), 14, 8, False)[6]
        got = K.predictor_costs(q, quads, 14, alphas)
        np.testing.assert_allclose(got, R.predictor_costs_ref(q, quads, 14, alphas), rtol=1e-9)
        picks[name] = C.choose_predictor(q, quads, 14)
    # the regular city keeps the parallelogram; the irregular scan extrapolates less
    assert picks["city"] == (8, False)
    assert picks["scan"][0] < 8


def test_real_cityjson_mesh_round_trips_and_beats_draco(shared_data):
    from benchmarks.mesh_storage import cityjson_mesh

    v, f = cityjson_mesh(shared_data / "delft" / "delft.json")
    assert len(f) > 30_000
    data = assert_exact(v, f)
    DracoPy = pytest.importorskip("DracoPy")
    draco = DracoPy.encode(v.astype(np.float32), f, quantization_bits=14, compression_level=7)
    assert len(data) <= len(draco)


@pytest.mark.slow
def test_million_triangle_meshes_round_trip_exactly():
    for gen in (scan_mesh, city_mesh):
        v, f = gen(1_000_000, seed=0)
        assert_exact(v, f)
