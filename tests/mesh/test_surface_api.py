"""Conformance of the public mesh-storage surface in ``twin.mesh``.

Every function is driven with the input forms users have (float32/float64
vertices; int32/int64/uint32/uint16 faces; Python lists; strided, Fortran-ordered
and read-only arrays), the edge sizes (one triangle, empty, unused vertices, more
than 65 535 vertices), riding attributes, cache sizes and bit depths, and checked
against exact ground truth: the canonical input's result, meshoptimizer's
reference codec and cache analyser, or an independent NumPy FIFO simulation. Bad
input must raise a :class:`~twin.errors.TwinError` subclass naming the problem.
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
import zlib

import numpy as np
import pytest
import trimesh
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import twin.mesh as tm
from twin.cli import main
from twin.errors import InputError, OutputError, ParameterError, TwinError
from twin.mesh.meshopt_codec import decode_index_sequence, encode_index_sequence

mo = pytest.importorskip("meshoptimizer")


@pytest.fixture(autouse=True)
def _meshopt_version0():
    # meshoptimizer's encoder versions are global state: EXT_meshopt_compression
    # allows vertex codec version 0 only; index versions are set per test
    mo.encode_vertex_version(0)
    mo.encode_index_version(1)
    yield
    mo.encode_index_version(1)


# ---------------------------------------------------------------- meshes and oracles


def grid(nx: int, ny: int, seed: int = 0, shuffle: bool = True):
    """A height-field grid of nx * ny vertices with z in multiples of 1/8 (exact in
    float32), faces shuffled so the reorderers have work to do."""
    g = np.random.default_rng(seed)
    xs, ys = np.meshgrid(np.arange(nx, dtype=np.float64), np.arange(ny, dtype=np.float64))
    z = g.integers(-16, 16, xs.size) / 8.0
    v = np.column_stack([xs.ravel(), ys.ravel(), z])
    q = np.arange(nx * ny).reshape(ny, nx)
    a, b, c, d = q[:-1, :-1].ravel(), q[:-1, 1:].ravel(), q[1:, :-1].ravel(), q[1:, 1:].ravel()
    f = np.concatenate([np.column_stack([a, b, c]), np.column_stack([b, d, c])])
    if shuffle:
        f = f[g.permutation(len(f))]
    return v, f.astype(np.uint32)


def small_mesh():
    """A 9 x 7 grid plus two unused vertices (one in the middle of the array)."""
    v, f = grid(9, 7, seed=3)
    v = np.insert(v, 20, [50.0, 50.0, 50.0], axis=0)
    v = np.vstack([v, [[-7.0, 3.0, 1.0]]])
    f = np.where(f >= 20, f + 1, f).astype(np.uint32)
    return v, f


V, F = small_mesh()
N = len(V)
TRI_V = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.5]])
TRI_F = np.array([[0, 1, 2]], np.uint32)


class _Stats(ctypes.Structure):
    _fields_ = [
        ("vertices_transformed", ctypes.c_uint),
        ("warps_executed", ctypes.c_uint),
        ("acmr", ctypes.c_float),
        ("atvr", ctypes.c_float),
    ]


def mo_analyze(faces, n_vertices, cache_size):
    """meshoptimizer's ``meshopt_analyzeVertexCache`` (no warp / primgroup limits),
    called through the wrapper's own shared library (the wrapper does not expose it)."""
    from meshoptimizer._loader import lib

    fn = lib.meshopt_analyzeVertexCache
    fn.restype = _Stats
    fn.argtypes = [ctypes.POINTER(ctypes.c_uint), ctypes.c_size_t, ctypes.c_size_t]
    fn.argtypes += [ctypes.c_uint] * 3
    idx = np.ascontiguousarray(faces, np.uint32).ravel()
    s = fn(
        idx.ctypes.data_as(ctypes.POINTER(ctypes.c_uint)), idx.size, n_vertices, cache_size, 0, 0
    )
    return s.vertices_transformed, s.acmr, s.atvr


def fifo_misses(faces, n_vertices, cache_size) -> int:
    """An independent FIFO simulation: a deque of the last ``cache_size`` insertions."""
    from collections import deque

    cache: deque = deque(maxlen=cache_size)
    misses = 0
    for i in np.asarray(faces).ravel().tolist():
        if i not in cache:
            cache.append(i)
            misses += 1
    return misses


def canon(faces) -> list:
    """Sorted triangles, each as its lexicographically smallest rotation (winding kept)."""
    f = np.asarray(faces, np.int64).reshape(-1, 3).tolist()
    return sorted(min((a, b, c), (b, c, a), (c, a, b)) for a, b, c in f)


def mo_vertex_decode(buf: bytes, count: int, stride: int) -> np.ndarray:
    # the wrapper's dtype= path segfaults; its default path returns the raw bytes
    out = mo.decode_vertex_buffer(count, stride, buf)
    return np.frombuffer(out.tobytes(), np.uint8).reshape(count, stride)


def mo_index_decode(buf: bytes, count: int, size: int) -> np.ndarray:
    out = mo.decode_index_buffer(count, size, buf)  # uint32 holder, ``size``-byte indices
    return np.frombuffer(out.tobytes()[: count * size], np.uint16 if size == 2 else np.uint32)


def archive_mesh(data: bytes, order: np.ndarray, vertices, faces, bits):
    """Assert that ``decode(data)`` is the quantised input: same vertices (through
    ``order``), same triangles with the same winding."""
    dv, df = tm.decode(data)
    expect = tm.dequantize(tm.quantize(vertices, bits=bits))
    assert dv.shape == expect.shape and len(order) == len(expect)
    np.testing.assert_array_equal(dv, expect[order])
    assert canon(np.asarray(order)[df]) == canon(faces)


def assert_same_triangles(v, f, ref_v, ref_f, max_error, match=None):
    """Same triangles with the same winding (order and rotation may differ): each
    output vertex is matched to the input vertex within ``max_error`` per axis
    (``match`` gives the matching when positions alone are ambiguous)."""
    if match is None:
        from scipy.spatial import cKDTree

        _, match = cKDTree(ref_v).query(v)
    assert np.abs(np.asarray(v) - np.asarray(ref_v)[match]).max() <= max_error * (1 + 1e-9)
    assert canon(np.asarray(match)[np.asarray(f, np.int64)]) == canon(ref_f)


# ---------------------------------------------------------------- names


SIGNATURES = {
    "weld": ["vertices", "faces", "tol=0.0", "attributes=None"],
    "optimize_vertex_cache": ["faces", "n_vertices", "cache_size=16"],
    "optimize_vertex_fetch": ["vertices", "faces", "attributes=None"],
    "acmr": ["faces", "n_vertices", "cache_size=16"],
    "atvr": ["faces", "n_vertices", "cache_size=16"],
    "simplify": [
        "vertices",
        "faces",
        "target_faces=None",
        "target_error=None",
        "lock_border=False",
        "attributes=None",
        "attribute_weights=None",
    ],
    "quantize": ["vertices", "bits=14"],
    "encode": ["vertices", "faces", "bits=14"],
    "decode": ["data"],
    "encode_meshopt": ["vertices", "faces", "bits=14"],
    "decode_meshopt": [],
    "dequantize": [],
    "optimize_overdraw": ["vertices", "faces"],
    "optimize": ["mesh_or_path"],
}


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_public_names_and_signatures(name):
    """The documented names are in ``twin.mesh`` and ``twin.mesh.storage`` and take
    the documented leading parameters with the documented defaults."""
    import inspect

    import twin.mesh.storage as storage

    fn = getattr(tm, name)
    assert getattr(storage, name) is fn and name in tm.__all__
    params = list(inspect.signature(fn).parameters.values())
    for want, p in zip(SIGNATURES[name], params, strict=False):
        pname, _, default = want.partition("=")
        assert p.name == pname
        if default:
            assert repr(p.default) == default


# ---------------------------------------------------------------- input forms


def _eq(a, b):
    if isinstance(a, tuple | list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _eq(x, y)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _eq(a[k], b[k])
    elif isinstance(a, tm.Quantized):
        for k in ("positions", "offset", "normals", "uvs"):
            _eq(getattr(a, k), getattr(b, k))
        assert (a.step, a.bits) == (b.step, b.bits)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


# each: (vertices, faces) -> comparable result
FUNCS = {
    "weld": lambda v, f: tm.weld(v, f),
    "weld_tol": lambda v, f: tm.weld(v, f, tol=0.3),
    "optimize_vertex_cache": lambda v, f: tm.optimize_vertex_cache(f, N),
    "optimize_vertex_cache_8": lambda v, f: tm.optimize_vertex_cache(f, N, cache_size=8),
    "optimize_vertex_fetch": lambda v, f: tm.optimize_vertex_fetch(v, f),
    "optimize_overdraw": lambda v, f: tm.optimize_overdraw(v, f),
    "acmr": lambda v, f: tm.acmr(f, N),
    "atvr": lambda v, f: tm.atvr(f, N, cache_size=5),
    "quantize": lambda v, f: tm.quantize(v, bits=12),
    "encode": lambda v, f: tm.encode(v, f, bits=12, return_order=True),
    "encode_meshopt": lambda v, f: {
        k: (d["data"] if isinstance(d, dict) else d)
        for k, d in tm.encode_meshopt(v, f).items()
        if k != "quantized"
    },
}


def _readonly(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


VERTEX_FORMS = {
    "float64": lambda v: v,
    "float32": lambda v: v.astype(np.float32),
    "list": lambda v: v.tolist(),
    "strided": lambda v: np.repeat(v, 2, axis=0)[::2],
    "fortran": np.asfortranarray,
    "readonly": _readonly,
    "int": lambda v: np.rint(v * 8).astype(np.int32) / 8,  # int-valued source cast back
}
FACE_FORMS = {
    "uint32": lambda f: f,
    "int32": lambda f: f.astype(np.int32),
    "int64": lambda f: f.astype(np.int64),
    "uint16": lambda f: f.astype(np.uint16),
    "list": lambda f: f.tolist(),
    "strided": lambda f: np.repeat(f, 2, axis=1)[:, ::2],
    "fortran": np.asfortranarray,
    "readonly": _readonly,
}
REFERENCE = {name: fn(V, F) for name, fn in FUNCS.items()}


@pytest.mark.parametrize("form", sorted(VERTEX_FORMS))
@pytest.mark.parametrize("name", sorted(FUNCS))
def test_vertex_forms_give_the_canonical_result(name, form):
    v = VERTEX_FORMS[form](V)
    before = np.array(v, copy=True)
    _eq(FUNCS[name](v, F), REFERENCE[name])
    np.testing.assert_array_equal(np.asarray(v), before)  # input untouched


@pytest.mark.parametrize("form", sorted(FACE_FORMS))
@pytest.mark.parametrize("name", sorted(FUNCS))
def test_face_forms_give_the_canonical_result(name, form):
    f = FACE_FORMS[form](F)
    before = np.array(f, copy=True)
    _eq(FUNCS[name](V, f), REFERENCE[name])
    np.testing.assert_array_equal(np.asarray(f), before)


def test_output_types():
    """Faces come back C-contiguous uint32 (M, 3), vertices float64 (N, 3); weld and
    fetch unpack as (vertices, faces), as simplify as (vertices, faces, error), with the
    extras by name."""
    r = tm.weld(V.astype(np.float32), F.astype(np.int64))
    assert len(r) == 2 and r.vertices is r[0] and r.faces is r[1] and r.attributes is None
    assert r.remap.shape == (len(V),)
    r = tm.optimize_vertex_fetch(V, F)
    assert len(r) == 2 and r.vertices is r[0] and r.faces is r[1] and r.attributes is None
    assert r.remap.shape == (len(V),)
    res = tm.weld(V.astype(np.float32), F.astype(np.int64))
    wv, wf = res
    wa, remap = res.attributes, res.remap
    assert wv.dtype == np.float64 and wv.shape[1] == 3 and wa is None
    assert remap.dtype == np.int64 and remap.shape == (N,)
    for f in (
        wf,
        tm.optimize_vertex_cache(F.astype(np.int32), N),
        tm.optimize_vertex_fetch(V, F.astype(np.int64))[1],
        tm.optimize_overdraw(V, F.astype(np.int64)),
        tm.decode(tm.encode(V, F))[1],
        tm.decode_meshopt(tm.encode_meshopt(V, F))[1],
    ):
        assert f.dtype == np.uint32 and f.ndim == 2 and f.shape[1] == 3
        assert f.flags.c_contiguous
    assert isinstance(tm.acmr(F, N), float) and isinstance(tm.atvr(F, N), float)
    q = tm.quantize(V)
    assert q.positions.dtype == np.uint16 and q.positions.shape == (N, 3)
    assert tm.dequantize(q).dtype == np.float64


# ---------------------------------------------------------------- sizes


def test_one_triangle():
    res = tm.weld(TRI_V, TRI_F)
    wv, wf = res
    remap = res.remap
    np.testing.assert_array_equal(wv, TRI_V)
    np.testing.assert_array_equal(wf, TRI_F)
    np.testing.assert_array_equal(remap, [0, 1, 2])
    np.testing.assert_array_equal(tm.optimize_vertex_cache(TRI_F, 3), TRI_F)
    fv, ff = tm.optimize_vertex_fetch(TRI_V, TRI_F)
    np.testing.assert_array_equal(ff, TRI_F)
    np.testing.assert_array_equal(tm.optimize_overdraw(TRI_V, TRI_F), TRI_F)
    assert tm.acmr(TRI_F, 3) == 3.0 and tm.atvr(TRI_F, 3) == 1.0
    q = tm.quantize(TRI_V, bits=14)
    assert q.step == pytest.approx(2.0 / 16383)
    np.testing.assert_array_equal(q.positions[:, 0], [0, 16383, 0])
    data, order = tm.encode(TRI_V, TRI_F, return_order=True)
    archive_mesh(data, order, TRI_V, TRI_F, 14)
    mv, mf = tm.decode_meshopt(tm.encode_meshopt(TRI_V, TRI_F))
    assert canon(mf) == canon(TRI_F)
    assert np.abs(mv - TRI_V).max() <= q.max_error * (1 + 1e-9)


EMPTY_CALLS = {
    "weld": lambda v, f: tm.weld(v, f),
    "optimize_vertex_cache": lambda v, f: tm.optimize_vertex_cache(f, max(len(v), 1)),
    "optimize_vertex_fetch": lambda v, f: tm.optimize_vertex_fetch(v, f),
    "optimize_overdraw": lambda v, f: tm.optimize_overdraw(v, f),
    "acmr": lambda v, f: tm.acmr(f, max(len(v), 1)),
    "atvr": lambda v, f: tm.atvr(f, max(len(v), 1)),
    "encode": lambda v, f: tm.encode(v, f),
    "encode_meshopt": lambda v, f: tm.encode_meshopt(v, f),
    "optimize": lambda v, f: tm.optimize((v, f)),
}


@pytest.mark.parametrize("name", sorted(EMPTY_CALLS))
def test_empty_meshes_are_input_errors(name):
    with pytest.raises(InputError, match="empty"):
        EMPTY_CALLS[name](TRI_V, np.zeros((0, 3), np.int64))
    with pytest.raises(InputError, match="empty"):
        EMPTY_CALLS[name](np.zeros((0, 3)), np.zeros((0, 3), np.int64))


def test_empty_quantize_and_empty_bitstreams():
    with pytest.raises(InputError, match="empty"):
        tm.quantize(np.zeros((0, 3)))
    # a bufferView may be empty: the bitstream functions take zero elements
    assert tm.decode_vertex_buffer(
        tm.encode_vertex_buffer(np.zeros((0, 3), np.float32)), 0, 12
    ).shape == (0, 12)
    assert tm.decode_index_buffer(tm.encode_index_buffer(np.zeros((0, 3), np.uint32)), 0).shape == (
        0,
        3,
    )


def test_unused_vertices():
    used = np.unique(F)
    unused = np.setdiff1d(np.arange(N), used)
    assert unused.tolist() == [20, N - 1]
    res = tm.weld(V, F)
    wv, wf = res
    remap = res.remap
    assert len(wv) == len(used) and (remap[unused] == -1).all()
    np.testing.assert_array_equal(wv[remap[used]], V[used])
    res = tm.optimize_vertex_fetch(V, F)
    fv, ff = res
    fremap = res.remap
    assert len(fv) == len(used) and (fremap[unused] == -1).all()
    np.testing.assert_array_equal(fv[ff], V[F])  # same triangles, same corners
    # atvr counts transforms per referenced vertex, as meshoptimizer does
    tr, _, mo_atvr = mo_analyze(F, N, 16)
    assert tm.atvr(F, N) == pytest.approx(mo_atvr, rel=1e-6)
    assert tm.atvr(F, N) == tr / len(used)
    # the archive keeps every vertex, unreferenced ones last in input order
    data, order = tm.encode(V, F, return_order=True)
    archive_mesh(data, order, V, F, 14)
    np.testing.assert_array_equal(order[-2:], unused)
    # EXT_meshopt output drops them (fetch order)
    d = tm.encode_meshopt(V, F)
    assert d["n_vertices"] == len(used) == d["positions"]["count"]


@pytest.mark.parametrize("nx,ny,stride", [(255, 257, 2), (256, 256, 4)])
def test_index_width_at_the_uint16_limit(nx, ny, stride):
    """65 535 vertices fit UNSIGNED_SHORT indices (65 535 itself is the primitive
    restart value glTF forbids); 65 536 need UNSIGNED_INT."""
    v, f = grid(nx, ny, seed=1, shuffle=False)
    d = tm.encode_meshopt(v, f)
    assert d["n_vertices"] == nx * ny
    ix = d["indices"]
    assert ix["byteStride"] == stride
    faces = mo_index_decode(ix["data"], ix["count"], stride).reshape(-1, 3)
    assert int(faces.max()) == nx * ny - 1 < (0xFFFF if stride == 2 else 2**32 - 1)
    ours = tm.decode_index_buffer(ix["data"], ix["count"], stride)
    assert ours.dtype == (np.uint16 if stride == 2 else np.uint32)
    np.testing.assert_array_equal(ours, faces)
    pos = mo_vertex_decode(d["positions"]["data"], d["positions"]["count"], 8)
    q = d["quantized"]
    restored = pos.view(np.uint16)[:, :3] * q.step + q.offset
    mv, mf = tm.decode_meshopt(d)
    np.testing.assert_array_equal(mv, restored)
    np.testing.assert_array_equal(mf, faces)
    assert_same_triangles(mv, mf, v, f, q.max_error)


def test_more_than_65535_vertices_round_trip_exactly():
    v, f = grid(256, 260, seed=2)
    n = len(v)
    assert n > 0xFFFF
    data, order = tm.encode(v, f, bits=16, return_order=True)
    archive_mesh(data, order, v, f, 16)
    out = tm.optimize_vertex_cache(f, n)
    assert canon(out) == canon(f)
    assert tm.acmr(out, n) < 0.75 * tm.acmr(f, n)
    fv, ff = tm.optimize_vertex_fetch(v, out)
    np.testing.assert_array_equal(fv[ff], v[out])
    assert int(ff.max()) == n - 1
    wv, wf = tm.weld(np.vstack([v, v]), np.vstack([f, f + n]))
    np.testing.assert_array_equal(wv, v)
    np.testing.assert_array_equal(wf, f)


# ---------------------------------------------------------------- attributes


def seam_soup():
    """A grid as a triangle soup with per-corner UV (float32, two charts), normals
    (float64) and RGBA colours (uint8, one per face) and a 1-D int feature id."""
    v, f = grid(6, 5, seed=4, shuffle=False)
    sv = v[f].reshape(-1, 3)
    sf = np.arange(len(sv), dtype=np.int64).reshape(-1, 3)
    chart = (v[f][:, :, 0].min(axis=1) >= 2.0).repeat(3)  # faces right of x = 2
    uv = (sv[:, :2] / 8.0 + np.where(chart, 0.5, 0.0)[:, None]).astype(np.float32)
    nrm = np.tile([0.0, 0.0, 1.0], (len(sv), 1))
    rgba = np.where(chart[:, None], [200, 10, 10, 255], [10, 200, 10, 255]).astype(np.uint8)
    fid = np.where(chart, 7, 3).astype(np.int32)
    return v, f, sv, sf, {"uv": uv, "normal": nrm, "color": rgba, "fid": fid}


@pytest.mark.parametrize("tol", [0.0, 1e-3])
def test_weld_carries_attributes_in_their_own_dtype(tol):
    v, f, sv, sf, attrs = seam_soup()
    res = tm.weld(sv, sf, tol=tol, attributes=attrs)
    wv, wf = res
    wa, remap = res.attributes, res.remap
    seam = int((v[:, 0] == 2.0).sum())
    assert len(wv) == len(v) + seam  # the UV seam at x = 2 keeps two vertices
    assert wa.keys() == attrs.keys()
    for k, a in attrs.items():
        assert wa[k].dtype == a.dtype and wa[k].shape[1:] == a.shape[1:]
        np.testing.assert_array_equal(wa[k][remap], a)  # every corner keeps its values
    np.testing.assert_array_equal(wv[remap], sv)
    # a single array rides along the same way (uint8 colours stay uint8)
    res = tm.weld(sv, sf, tol=tol, attributes=attrs["color"])
    rgba = res.attributes
    assert rgba.dtype == np.uint8 and rgba.shape[1] == 4
    one_d = tm.weld(sv, sf, tol=tol, attributes=attrs["fid"]).attributes
    assert one_d.dtype == np.int32 and one_d.ndim == 1
    # without the attributes the seam closes
    assert len(tm.weld(sv, sf, tol=tol)[0]) == len(v)


def test_fetch_carries_attributes():
    v, f, sv, sf, attrs = seam_soup()
    res = tm.weld(sv, sf, attributes=attrs)
    wv, wf = res
    wa = res.attributes
    order = tm.optimize_vertex_cache(wf, len(wv), cache_size=12)
    res = tm.optimize_vertex_fetch(wv, order, attributes=wa)
    fv, ff = res
    fa = res.attributes
    np.testing.assert_array_equal(fv[ff], wv[order])
    for k in attrs:
        assert fa[k].dtype == wa[k].dtype
        np.testing.assert_array_equal(fa[k][ff], wa[k][order])
    # first-use order: indices appear in increasing order of first reference
    first = ff.ravel()[np.sort(np.unique(ff.ravel(), return_index=True)[1])]
    np.testing.assert_array_equal(first, np.arange(len(fv)))
    uv, _ = fa["uv"], fa["color"]
    res = tm.optimize_vertex_fetch(wv, order, attributes=wa["uv"].tolist())
    uv2 = res.attributes
    np.testing.assert_array_equal(np.asarray(uv2, np.float32), uv)


def test_attribute_errors():
    v, f, sv, sf, attrs = seam_soup()
    with pytest.raises(InputError, match=r"attributes\['uv'\] has 3 rows"):
        tm.weld(sv, sf, attributes={"uv": attrs["uv"][:3]})
    bad = attrs["normal"].copy()
    bad[5, 1] = np.nan
    with pytest.raises(InputError, match="row 5 is not finite"):
        tm.optimize_vertex_fetch(sv, sf, attributes=bad)
    with pytest.raises(InputError, match="real number"):
        tm.weld(sv, sf, attributes=np.array(["a"] * len(sv)))
    with pytest.raises(InputError, match="empty dict"):
        tm.weld(sv, sf, attributes={})


def test_encode_meshopt_normals_and_uvs_reach_meshoptimizer():
    v, f, sv, sf, attrs = seam_soup()
    res = tm.weld(sv, sf, attributes={"uv": attrs["uv"], "n": attrs["normal"]})
    wv, wf = res
    wa = res.attributes
    d = tm.encode_meshopt(wv, wf, bits=12, normals=wa["n"], uvs=wa["uv"])
    q = d["quantized"]
    nrm = mo_vertex_decode(d["normals"]["data"], d["normals"]["count"], 4).view(np.int8)
    uv = mo_vertex_decode(d["uvs"]["data"], d["uvs"]["count"], 4).view(np.uint16)
    np.testing.assert_array_equal(nrm[:, :3], q.normals)
    assert (nrm[:, 3] == 0).all()
    np.testing.assert_array_equal(uv, q.uvs)
    assert np.abs(tm.dequantize_normals(q) - [0, 0, 1]).max() <= 0.5 / 127
    # each output vertex is the one input vertex with its position and UV
    mv, mf = tm.decode_meshopt(d)
    dec_uv = tm.dequantize_uvs(q)
    dist = np.abs(np.column_stack([mv, dec_uv])[:, None, :] - np.column_stack([wv, wa["uv"]]))
    ok = (dist[..., :3] <= q.max_error * (1 + 1e-9)).all(-1)
    ok &= (dist[..., 3:] <= 0.5 / 65535 * q.uv_scale * (1 + 1e-6)).all(-1)
    assert (ok.sum(axis=1) == 1).all() and (ok.sum(axis=0) == 1).all()
    assert_same_triangles(mv, mf, wv, wf, q.max_error, match=np.argmax(ok, axis=1))


@pytest.mark.parametrize(
    "kw,message",
    [
        ({"normals": np.zeros((4, 3))}, "normals has 4 rows"),
        ({"normals": np.zeros((30, 2))}, r"normals must have shape \(N, 3\)"),
        ({"uvs": np.zeros((30, 3))}, r"uvs must have shape \(N, 2\)"),
        ({"uvs": np.full((30, 2), np.inf)}, "uvs row 0 is not finite"),
        ({"normals": np.full((30, 3), 2.0)}, "unit vectors"),
    ],
)
def test_encode_meshopt_attribute_errors(kw, message):
    v, f = grid(6, 5)
    with pytest.raises(InputError, match=message):
        tm.encode_meshopt(v, f, **kw)


# ---------------------------------------------------------------- cache metrics


@pytest.mark.parametrize("cache_size", [3, 4, 8, 16, 32, 64])
def test_acmr_atvr_equal_meshoptimizer_and_a_fifo_simulation(cache_size):
    v, f = grid(20, 15, seed=cache_size)
    n = len(v)
    for order in (f, tm.optimize_vertex_cache(f, n, cache_size=cache_size)):
        tr, m_acmr, m_atvr = mo_analyze(order, n, cache_size)
        assert tr == fifo_misses(order, n, cache_size)
        assert tm.acmr(order, n, cache_size) == tr / len(order)
        assert tm.atvr(order, n, cache_size) == tr / len(np.unique(order))
        assert tm.acmr(order, n, cache_size) == pytest.approx(m_acmr, rel=1e-6)
        assert tm.atvr(order, n, cache_size) == pytest.approx(m_atvr, rel=1e-6)


@pytest.mark.parametrize("cache_size", [4, 8, 12, 24, 32])
def test_vertex_cache_with_other_cache_sizes(cache_size):
    """Same triangles and corner order; the FIFO it was tuned for misses less than
    the input order and within 12 % of meshoptimizer's FIFO optimiser (Tipsify)."""
    v, f = grid(40, 30, seed=7)
    n = len(v)
    out = tm.optimize_vertex_cache(f, n, cache_size=cache_size)
    np.testing.assert_array_equal(
        np.sort(out.view("u4,u4,u4").ravel()), np.sort(f.view("u4,u4,u4").ravel())
    )
    dst = np.zeros(f.size, np.uint32)
    mo.optimize_vertex_cache_fifo(dst, f.ravel(), f.size, n, cache_size)
    theirs = tm.acmr(dst.reshape(-1, 3), n, cache_size)
    ours = tm.acmr(out, n, cache_size)
    assert ours < 0.5 * tm.acmr(f, n, cache_size)
    assert ours <= 1.12 * theirs, (ours, theirs)


@pytest.mark.parametrize("bad", [0, 2, 1025, 16.0, "16", None, True])
def test_cache_size_checked(bad):
    with pytest.raises(ParameterError, match="cache_size"):
        tm.acmr(F, N, cache_size=bad)
    with pytest.raises(ParameterError, match="cache_size"):
        tm.optimize_vertex_cache(F, N, cache_size=bad)


# ---------------------------------------------------------------- bits


def spread_vertices(seed=0, n=500):
    g = np.random.default_rng(seed)
    v = g.normal(size=(n, 3)) * [300.0, 120.0, 25.0] + [4.5e5, 5.7e6, 40.0]
    return v, g.integers(0, n, (2 * n, 3))


@pytest.mark.parametrize("bits", list(range(1, 17)))
def test_quantize_every_bit_depth(bits):
    v, _ = spread_vertices(bits)
    v32 = v.astype(np.float32)
    for src in (v, v32):
        q = tm.quantize(src, bits=bits)
        assert q.bits == bits and q.positions.dtype == np.uint16
        assert int(q.positions.max()) == 2**bits - 1  # the longest axis spans the grid
        extent = np.ptp(np.asarray(src, np.float64), axis=0).max()
        assert q.step == pytest.approx(extent / (2**bits - 1))
        err = np.abs(tm.dequantize(q) - np.asarray(src, np.float64)).max()
        assert err <= q.max_error * (1 + 1e-9) + 1e-9 * np.abs(v).max()
        # the node transform restores them, as non-normalised and as normalised shorts
        for normalized in (False, True):
            t = q.node_transform(normalized=normalized)
            m = np.array(q.node_matrix(normalized=normalized)).reshape(4, 4).T  # column-major
            qq = q.positions.astype(np.float64) / (65535.0 if normalized else 1.0)
            trs = qq * t["scale"] + t["translation"]
            mat = qq @ m[:3, :3].T + m[:3, 3]
            np.testing.assert_allclose(trs, tm.dequantize(q), rtol=0, atol=1e-9 * np.abs(v).max())
            np.testing.assert_allclose(mat, trs, rtol=0, atol=1e-9 * np.abs(v).max())


@pytest.mark.parametrize("bits", [8, 10, 12, 14, 16])
def test_encode_decode_at_every_bit_depth(bits):
    v, f = spread_vertices(bits, n=300)
    data, order = tm.encode(v, f, bits=bits, return_order=True)
    archive_mesh(data, order, v, f, bits)
    q, qf = tm.decode_quantized(data)
    assert q.bits == bits
    np.testing.assert_array_equal(q.positions, tm.quantize(v, bits=bits).positions[order])
    # EXT_meshopt: a lattice whose points lie further apart than the grid step, so
    # each decoded vertex has one input vertex within half a step
    g = np.random.default_rng(bits)
    lattice = np.stack(np.meshgrid(*[np.arange(7)] * 3), -1).reshape(-1, 3)
    v = lattice * [97.0, 101.0, 13.0] + g.uniform(-3, 3, lattice.shape) + [4.5e5, 5.7e6, 40.0]
    f = g.integers(0, len(v), (600, 3))
    d = tm.encode_meshopt(v, f, bits=bits)
    mv, mf = tm.decode_meshopt(d)
    assert d["quantized"].bits == bits
    kept = np.unique(f)
    assert_same_triangles(mv, mf, v[kept], np.searchsorted(kept, f), d["quantized"].max_error)


BAD_BITS = [0, 17, -1, 14.5, 14.0, "14", None, True, np.float64(8)]


@pytest.mark.parametrize("bits", BAD_BITS, ids=repr)
def test_bad_bits_are_parameter_errors(bits):
    for call in (
        lambda: tm.quantize(V, bits=bits),
        lambda: tm.encode(V, F, bits=bits),
        lambda: tm.encode_meshopt(V, F, bits=bits),
        lambda: tm.optimize((V, F), bits=bits),
    ):
        with pytest.raises(ParameterError, match="bits"):
            call()


def test_dequantize_from_raw_positions():
    q = tm.quantize(V, bits=11)
    np.testing.assert_array_equal(tm.dequantize(q.positions, q.offset, q.step), tm.dequantize(q))
    np.testing.assert_array_equal(
        tm.dequantize(q.positions.astype(np.int32).tolist(), q.offset.tolist(), q.step),
        tm.dequantize(q),
    )
    for args, exc in (
        ((q, q.offset, q.step), ParameterError),
        ((q.positions,), ParameterError),
        ((q.positions.astype(float), q.offset, q.step), InputError),
        ((q.positions, [0, 0], q.step), ParameterError),
        ((q.positions, q.offset, 0.0), ParameterError),
        ((q.positions, q.offset, "x"), ParameterError),
        ((None,), ParameterError),
    ):
        with pytest.raises(exc):
            tm.dequantize(*args)


def test_numpy_integer_bits_are_fine():
    assert tm.quantize(V, bits=np.int64(10)).bits == 10
    assert tm.decode_quantized(tm.encode(V, F, bits=np.uint8(10)))[0].bits == 10


# ---------------------------------------------------------------- EXT_meshopt interop


def vertex_like(n, stride, seed):
    """Bytes that behave like vertex data: slowly drifting words plus some noise."""
    g = np.random.default_rng(seed)
    d = g.integers(0, 256, (n, stride), dtype=np.uint8)
    words = np.cumsum(g.integers(-40, 41, (n, stride // 4)), axis=0).astype(np.int32)
    d[:, : stride // 2] = words.view(np.uint8).reshape(n, -1)[:, : stride // 2]
    return d


@pytest.mark.parametrize("stride", list(range(4, 68, 4)))
def test_vertex_streams_both_ways(stride):
    n = 700  # several blocks (up to 256 elements each), a partial last group
    d = vertex_like(n, stride, stride)
    ours = tm.encode_vertex_buffer(d)
    assert ours[0] == 0xA0
    np.testing.assert_array_equal(mo_vertex_decode(ours, n, stride), d)
    theirs = mo.encode_vertex_buffer(d, n, stride)
    assert theirs[0] == 0xA0
    np.testing.assert_array_equal(tm.decode_vertex_buffer(theirs, n, stride), d)
    assert len(ours) <= 1.05 * len(theirs)
    # typed input: rows of float32 / uint16 views of the same bytes
    if stride % 4 == 0:
        np.testing.assert_array_equal(
            tm.decode_vertex_buffer(tm.encode_vertex_buffer(d.view(np.float32)), n, stride), d
        )


def test_vertex_stream_version_1_is_refused_clearly():
    d = vertex_like(64, 12, 0)
    mo.encode_vertex_version(1)
    v1 = mo.encode_vertex_buffer(d, 64, 12)
    mo.encode_vertex_version(0)
    assert v1[0] == 0xA1
    with pytest.raises(InputError, match="version 1"):
        tm.decode_vertex_buffer(v1, 64, 12)


def index_cases():
    g = np.random.default_rng(11)
    v, f = grid(30, 20, seed=2)
    opt = tm.optimize_vertex_cache(f, len(v))
    _, opt = tm.optimize_vertex_fetch(v, opt)
    rand = g.integers(0, 5000, (300, 3)).astype(np.uint32)
    wide = (g.integers(0, 300, (200, 3)) * 70_001 + 5).astype(np.uint32)  # > 16 bits
    degen = np.array([[0, 0, 1], [2, 2, 2], [1, 2, 3], [3, 2, 1], [1, 2, 3]], np.uint32)
    return {"optimised": opt, "shuffled": f, "random": rand, "wide": wide, "degenerate": degen}


@pytest.mark.parametrize("version", [0, 1])
@pytest.mark.parametrize("case", sorted(index_cases()))
def test_triangle_streams_both_ways(case, version):
    f = index_cases()[case]
    n = int(f.max()) + 1
    size = 2 if n <= 0xFFFF else 4
    ours = tm.encode_index_buffer(f)
    assert ours[0] == 0xE1
    for s in {size, 4}:
        dec = mo_index_decode(ours, f.size, s).reshape(-1, 3)
        np.testing.assert_array_equal(dec, tm.decode_index_buffer(ours, f.size, s))
    assert canon(tm.decode_index_buffer(ours, f.size)) == canon(f)
    # meshoptimizer's stream (both versions of its triangle codec), read by ours
    mo.encode_index_version(version)
    theirs = mo.encode_index_buffer(f.ravel(), f.size, n)
    assert theirs[0] == 0xE0 | version
    np.testing.assert_array_equal(
        tm.decode_index_buffer(theirs, f.size), mo_index_decode(theirs, f.size, 4).reshape(-1, 3)
    )
    if version == 1:
        assert len(ours) <= 1.05 * len(theirs)


@pytest.mark.parametrize("version", [0, 1])
@pytest.mark.parametrize("case", ["strip", "lines", "sparse", "wide"])
def test_index_sequences_both_ways(case, version):
    g = np.random.default_rng(5)
    seq = {
        "strip": np.arange(2000) // 2 + (np.arange(2000) % 2) * 1000,
        "lines": np.repeat(np.arange(1, 1000), 2)[1:-1],
        "sparse": np.sort(g.choice(100_000, 800, replace=False)),
        "wide": g.integers(0, 2**30, 500),
    }[case].astype(np.uint32)
    ours = encode_index_sequence(seq)
    assert ours[0] == 0xD1
    dec = mo.decode_index_sequence(seq.size, 4, ours)
    np.testing.assert_array_equal(np.asarray(dec, np.uint32), seq)
    mo.encode_index_version(version)
    theirs = mo.encode_index_sequence(seq, seq.size, int(seq.max()) + 1)
    assert theirs[0] == 0xD0 | version
    np.testing.assert_array_equal(decode_index_sequence(theirs, seq.size), seq)


# ---------------------------------------------------------------- bad input

VERTEX_CALLS = {
    "weld": lambda v, f: tm.weld(v, f),
    "weld_tol": lambda v, f: tm.weld(v, f, tol=0.1),
    "optimize_vertex_fetch": lambda v, f: tm.optimize_vertex_fetch(v, f),
    "optimize_overdraw": lambda v, f: tm.optimize_overdraw(v, f),
    "quantize": lambda v, f: tm.quantize(v),
    "encode": lambda v, f: tm.encode(v, f),
    "encode_meshopt": lambda v, f: tm.encode_meshopt(v, f),
    "optimize": lambda v, f: tm.optimize((v, f)),
}
FACE_CALLS = {
    **{k: c for k, c in VERTEX_CALLS.items() if k != "quantize"},
    "optimize_vertex_cache": lambda v, f: tm.optimize_vertex_cache(f, len(v)),
    "acmr": lambda v, f: tm.acmr(f, len(v)),
    "atvr": lambda v, f: tm.atvr(f, len(v)),
    "encode_index_buffer": lambda v, f: tm.encode_index_buffer(f, len(v)),
}


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", sorted(VERTEX_CALLS))
def test_non_finite_coordinates(name, value):
    v = V.copy()
    v[17, 2] = value
    with pytest.raises(InputError, match="row 17 is not finite"):
        VERTEX_CALLS[name](v, F)
    with pytest.raises(InputError, match="row 17 is not finite"):
        VERTEX_CALLS[name](v.astype(np.float32), F)


def test_extent_overflow_is_an_input_error():
    v = np.array([[-1e308, 0.0, 0.0], [1e308, 0.0, 0.0], [0.0, 1.0, 0.0]])
    for call in (
        lambda: tm.quantize(v),
        lambda: tm.encode(v, TRI_F),
        lambda: tm.encode_meshopt(v, TRI_F),
    ):
        with pytest.raises(InputError, match="overflows"):
            call()


BAD_FACES = {
    "negative": (np.array([[0, 1, 2], [3, -1, 4]]), "row 1 has a negative index"),
    "out_of_range": (np.array([[0, 1, 2], [3, 4, N]]), f"indexes vertex {N}, out of range"),
    "far_out_of_range": (np.array([[0, 1, 2**40]]), "out of range"),
    "uint64_huge": (np.array([[0, 1, 2**64 - 1]], np.uint64), "out of range"),
    "quads": (np.array([[0, 1, 2, 3]]), r"shape \(M, 3\)"),
    "flat": (np.array([0, 1, 2]), r"shape \(M, 3\)"),
    "3d": (np.zeros((2, 3, 1), int), r"shape \(M, 3\)"),
    "float": (np.array([[0.0, 1.0, 2.0]]), "integer array"),
    "bool": (np.array([[True, False, True]]), "integer array"),
    "ragged": ([[0, 1, 2], [0, 1]], "cannot be read as an array|integer array"),
    "strings": (np.array([["0", "1", "2"]]), "integer array"),
}


@pytest.mark.parametrize("case", sorted(BAD_FACES))
@pytest.mark.parametrize("name", sorted(FACE_CALLS))
def test_bad_faces(name, case):
    faces, message = BAD_FACES[case]
    with pytest.raises(InputError, match=message):
        FACE_CALLS[name](V, faces)


@pytest.mark.parametrize(
    "vertices,message",
    [
        (np.zeros((4, 2)), r"shape \(N, 3\)"),
        (np.zeros((4, 3, 1)), r"shape \(N, 3\)"),
        (np.zeros(12), r"shape \(N, 3\)"),
        (np.ones((4, 3), complex), "real number"),
        ([[0, 0, 0], [1, 0]], "cannot be read|real number|shape"),
        (None, "real number|shape"),
    ],
)
def test_bad_vertices(vertices, message):
    for name in ("weld", "quantize", "encode", "encode_meshopt", "optimize_vertex_fetch"):
        with pytest.raises(InputError, match=message):
            VERTEX_CALLS[name](vertices, [[0, 1, 2]])


def test_more_vertices_than_uint32_indices_allow_without_allocating():
    import resource

    huge = np.broadcast_to(np.zeros(3), (2**32, 3))  # zero strides: nothing allocated
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for name in sorted(VERTEX_CALLS):
        with pytest.raises(InputError, match="uint32"):
            VERTEX_CALLS[name](huge, TRI_F)
    for call in (
        lambda: tm.optimize_vertex_cache(TRI_F, 2**32),
        lambda: tm.acmr(TRI_F, 2**32),
        lambda: tm.atvr(TRI_F, 2**32),
        lambda: tm.encode_index_buffer(TRI_F, 2**32),
    ):
        with pytest.raises(InputError, match="uint32"):
            call()
    from twin.mesh.codec import MAX_FACES

    many = np.broadcast_to(np.array([[0, 1, 2]], np.uint32), (MAX_FACES + 1, 3))
    with pytest.raises(InputError, match="more than one archive holds"):
        tm.encode(TRI_V, many)
    with pytest.raises(InputError, match="more than one vertex-cache pass orders"):
        tm.optimize_vertex_cache(many, 3)
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kb < 200_000  # the 96 GiB array was never made
    # the largest addressable mesh is one vertex less: 2**32 - 1 vertices, index 2**32 - 2
    with pytest.raises(InputError, match="out of range"):
        tm.optimize_vertex_cache(np.array([[0, 1, 2**32 - 1]], np.uint32), 2**32 - 1)


@pytest.mark.parametrize("n", [0, -3, 2.5, "7", None])
def test_bad_vertex_counts(n):
    with pytest.raises((InputError, ParameterError), match="n_vertices"):
        tm.acmr(F, n)
    with pytest.raises((InputError, ParameterError), match="n_vertices"):
        tm.optimize_vertex_cache(F, n)


def test_weld_tolerance_checked():
    for tol in (-1.0, np.nan, np.inf, "a", None):
        with pytest.raises(ParameterError, match="tol"):
            tm.weld(V, F, tol=tol)


# ---------------------------------------------------------------- corrupt streams


def _crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_truncated_and_corrupt_archives():
    data = tm.encode(V, F)
    for k in range(len(data)):  # every truncation
        with pytest.raises(InputError, match="truncated|not a twin mesh archive"):
            tm.decode(data[:k])
    g = np.random.default_rng(1)
    for _ in range(200):  # any flipped byte fails the checksum (or the magic)
        bad = bytearray(data)
        i = int(g.integers(0, len(data)))
        bad[i] ^= int(g.integers(1, 256))
        with pytest.raises(InputError):
            tm.decode(bytes(bad))
    with pytest.raises(InputError, match="trailing bytes"):
        tm.decode(data + b"\0")
    # a corrupt payload behind a valid checksum: a clear error or some mesh, no crash
    for _ in range(200):
        body = bytearray(data[:-4])
        i = int(g.integers(84, len(body)))
        body[i:] = g.integers(0, 256, len(body) - i, dtype=np.uint8).tobytes()
        try:
            dv, df = tm.decode(_crc(bytes(body)))
        except InputError:
            continue
        assert df.dtype == np.uint32 and (df < len(dv)).all() and np.isfinite(dv).all()


def test_archive_header_with_impossible_counts(monkeypatch):
    from twin.mesh import codec

    data = tm.encode(TRI_V, TRI_F)
    head = list(codec._HEAD.unpack_from(data))
    for nv, nf in ((10**6, 1), (3, 10**6), (0, 1), (3, 0)):
        head[4], head[5] = nv, nf
        bad = _crc(codec._HEAD.pack(*head) + data[codec._HEAD.size : -4])
        with pytest.raises(InputError, match="mesh archive"):
            tm.decode(bad)

    # counts the machine cannot hold are an InputError, not a MemoryError
    def no_memory(*args):
        raise MemoryError

    monkeypatch.setattr(codec, "_decode_all", no_memory)
    head[4], head[5] = 2**32 - 1, codec.MAX_FACES
    bad = _crc(codec._HEAD.pack(*head) + data[codec._HEAD.size : -4])
    with pytest.raises(InputError, match="more than memory allows"):
        tm.decode(bad)


def test_archive_from_a_path(tmp_path):
    data, order = tm.encode(V, F, return_order=True)
    (tmp_path / "m.twm").write_bytes(data)
    for src in (tmp_path / "m.twm", str(tmp_path / "m.twm"), bytearray(data), memoryview(data)):
        dv, df = tm.decode(src)
        np.testing.assert_array_equal(dv, tm.decode(data)[0])
    (tmp_path / "bad.twm").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(InputError, match=r"bad\.twm: mesh archive is corrupt \(checksum"):
        tm.decode(tmp_path / "bad.twm")
    with pytest.raises(InputError, match="not found"):
        tm.decode(tmp_path / "none.twm")
    with pytest.raises(InputError, match="cannot read"):
        tm.decode(tmp_path)
    with pytest.raises(InputError, match="must be bytes or a path"):
        tm.decode(12)


def _mutations(buf: bytes, g, n=150):
    yield from (buf[:k] for k in range(len(buf)))
    for _ in range(n):
        bad = bytearray(buf)
        i = int(g.integers(0, len(bad)))
        bad[i:] = g.integers(0, 256, len(bad) - i, dtype=np.uint8).tobytes()
        yield bytes(bad)


def test_truncated_and_corrupt_meshopt_streams():
    g = np.random.default_rng(3)
    v, f = grid(12, 10, seed=5)
    d = tm.encode_meshopt(v, f)
    p, ix = d["positions"], d["indices"]
    for bad in _mutations(p["data"], g):
        try:
            out = tm.decode_vertex_buffer(bad, p["count"], 8)
        except InputError:
            continue
        assert out.shape == (p["count"], 8)
    for bad in _mutations(ix["data"], g):
        try:
            out = tm.decode_index_buffer(bad, ix["count"])
        except InputError:
            continue
        assert out.shape == (len(f), 3)
    seq = encode_index_sequence(f.ravel())
    for bad in _mutations(seq, g):
        try:
            out = decode_index_sequence(bad, f.size)
        except InputError:
            continue
        assert out.shape == (f.size,)
    # whole results: every way of breaking the dict is an InputError
    for k in range(len(p["data"])):
        with pytest.raises(InputError):
            tm.decode_meshopt({**d, "positions": {**p, "data": p["data"][:k]}})
    for broken in (
        {},
        {**d, "positions": None},
        {**d, "indices": {**ix, "data": 5}},
        {**d, "quantized": "q"},
        {**d, "positions": {**p, "count": p["count"] - 1}},
        {**d, "positions": {**p, "byteStride": 4}},
        None,
    ):
        with pytest.raises(InputError):
            tm.decode_meshopt(broken)
    # the triangles refer to vertices the positions stream does not hold
    few = tm.encode_vertex_buffer(np.zeros((5, 4), np.uint16))
    with pytest.raises(InputError, match="past the position count"):
        tm.decode_meshopt({**d, "positions": {**p, "data": few, "count": 5}})


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda b: tm.decode_vertex_buffer(b, 10, 6), "multiple of 4"),
        (lambda b: tm.decode_vertex_buffer(b, -1, 8), "non-negative"),
        (lambda b: tm.decode_vertex_buffer(b, 2**40, 8), "truncated"),
        (lambda b: tm.decode_vertex_buffer("abc", 1, 4), "must be bytes"),
        (lambda b: tm.decode_index_buffer(b, 10), "multiple of 3"),
        (lambda b: tm.decode_index_buffer(b, 3 * 2**40), "truncated"),
        (lambda b: tm.decode_index_buffer(b, 3, index_size=8), "index_size"),
        (lambda b: decode_index_sequence(b, 2**40), "truncated"),
        (lambda b: tm.encode_vertex_buffer(np.zeros((4, 3), np.uint8)), "multiple of 4"),
        (lambda b: tm.encode_vertex_buffer(np.zeros((4, 65), np.float32)), "multiple of 4"),
    ],
)
def test_bitstream_parameters_checked(call, message):
    with pytest.raises(TwinError, match=message):
        call(b"\xa0" + bytes(64))


# ---------------------------------------------------------------- command line


def glb_mesh(path):
    """ENU positions and faces of a one-mesh GLB written by ``twin mesh optimize``
    (quantised positions restored with the node matrix)."""
    from twin.tiles.gltf import gltf_to_enu, read_glb, read_glb_json

    doc, _ = read_glb_json(path)
    prim = read_glb(path)[0]
    pos = np.asarray(prim["positions"], np.float64)
    if "matrix" in doc["nodes"][0]:
        m = np.array(doc["nodes"][0]["matrix"]).reshape(4, 4).T
        pos = pos @ m[:3, :3].T + m[:3, 3]
    return gltf_to_enu(pos), np.asarray(prim["indices"], np.int64).reshape(-1, 3)


def write_input(tmp_path, fmt):
    """The small mesh as a PLY, OBJ or GLB file; returns the path and its vertices
    as twin reads them (z-up ENU: a GLB is y-up on disk)."""
    from twin.tiles.gltf import enu_to_gltf

    v, f = grid(12, 9, seed=8)
    path = tmp_path / f"in.{fmt}"
    on_disk = enu_to_gltf(v) if fmt == "glb" else v
    trimesh.Trimesh(on_disk, f, process=False).export(path)
    return path, v, f


@pytest.mark.parametrize("codec", ["meshopt", "twin", "draco"])
@pytest.mark.parametrize("fmt", ["ply", "obj", "glb"])
def test_cli_reads_ply_obj_glb_and_writes_what_it_reports(tmp_path, fmt, codec):
    if codec == "draco":
        pytest.importorskip("DracoPy")
    src, v, f = write_input(tmp_path, fmt)
    out = tmp_path / ("out.twm" if codec == "twin" else "out.glb")
    runner = CliRunner()
    args = ["mesh", "optimize", str(src), str(out), "--codec", codec, "--bits", "12"]
    res = runner.invoke(main, [*args, "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["output_bytes"] == out.stat().st_size and d["input_bytes"] == src.stat().st_size
    assert d["input_faces"] == len(f) == d["output_faces"] and d["bits"] == 12
    # the human summary prints both sizes
    res = runner.invoke(main, args)
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert (
        lines[0].startswith("in:")
        and str(src) in lines[0]
        and f"{d['raw_bytes']} bytes" in lines[0]
    )
    assert lines[1].startswith("out:") and f"{d['output_bytes']} bytes" in lines[1]
    # the file holds the input mesh at the stated precision
    step = d["quantization_step"]
    assert step == pytest.approx(np.ptp(v, axis=0).max() / 4095)
    if codec == "twin":
        mv, mf = tm.decode(out)
    elif codec == "meshopt":
        mv, mf = glb_mesh(out)
    else:
        from twin.tiles.gltf import read_glb

        assert read_glb(out)[0]["indices"].size == f.size
        return
    assert_same_triangles(mv, mf, v, f, 0.5 * step * (1 + 1e-6) + 1e-9)


def test_cli_bits_and_simplify(tmp_path):
    src, v, f = write_input(tmp_path, "ply")
    runner = CliRunner()
    sizes = {}
    for bits in (8, 16):
        out = tmp_path / f"b{bits}.twm"
        res = runner.invoke(
            main,
            [
                "mesh",
                "optimize",
                str(src),
                str(out),
                "--codec",
                "twin",
                "--bits",
                str(bits),
                "--json",
            ],
        )
        assert res.exit_code == 0, res.output
        sizes[bits] = out.stat().st_size
        mv, mf = tm.decode(out)
        assert_same_triangles(
            mv, mf, v, f, 0.5 * np.ptp(v, axis=0).max() / (2**bits - 1) * 1.000001
        )
    assert sizes[8] < sizes[16]
    res = runner.invoke(
        main,
        ["mesh", "optimize", str(src), str(tmp_path / "s.glb"), "--simplify", "0.25", "--json"],
    )
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["output_faces"] <= len(f) // 4 + 1 and d["simplify_error"] >= 0


BAD_FILES = {
    "empty.ply": b"",
    "garbage.ply": b"this is not a mesh\n" * 3,
    "random.glb": bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8)),
    "truncated.glb": None,  # a valid GLB cut in half
    "points.obj": b"v 0 0 0\nv 1 0 0\nv 0 1 0\n",
    "nan.ply": b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
    b"property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n"
    b"0 0 0\nnan 0 0\n0 1 0\n3 0 1 2\n",
    "index.ply": b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
    b"property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n"
    b"0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n",
    "flat.ply": b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
    b"property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n"
    b"0 0 0\n0 0 0\n0 0 0\n3 0 1 2\n",
    "mesh.txt": b"0 0 0\n",
    "missing.ply": None,
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_cli_bad_input_files_exit_2_with_one_line_naming_the_file(tmp_path, name):
    path = tmp_path / name
    if name == "truncated.glb":
        good, _, _ = write_input(tmp_path, "glb")
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif BAD_FILES[name] is not None:
        path.write_bytes(BAD_FILES[name])
    res = CliRunner().invoke(main, ["mesh", "optimize", str(path), str(tmp_path / "o.glb")])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "error" in lines[0] and name in lines[0], res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "o.glb").exists()  # nothing half-written


def test_cli_bad_options(tmp_path):
    src, _, _ = write_input(tmp_path, "ply")
    runner = CliRunner()
    for opts in (["--bits", "0"], ["--bits", "17"], ["--codec", "zip"], ["--simplify", "0"]):
        res = runner.invoke(main, ["mesh", "optimize", str(src), str(tmp_path / "o.glb"), *opts])
        assert res.exit_code == 2, (opts, res.output)
    res = runner.invoke(main, ["mesh", "optimize", str(tmp_path), str(tmp_path / "o.glb")])
    assert res.exit_code == 2  # a directory is not a mesh file
    # an output that cannot be written: one line naming it, nothing left behind
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "o.glb"  # below a plain file
    res = runner.invoke(main, ["mesh", "optimize", str(src), str(out)])
    assert res.exit_code == 2, res.output
    assert res.output.strip().count("\n") == 0 and "cannot" in res.output
    assert str(out) in res.output
    with pytest.raises(OutputError, match="cannot"):
        tm.optimize(src, out)
    if os.path.isdir("/proc/self"):  # a folder where no file can be created
        with pytest.raises(OutputError, match="cannot write"):
            tm.optimize(src, "/proc/self/o.glb")
    assert "Example" in runner.invoke(main, ["mesh", "optimize", "--help"]).output


@pytest.mark.parametrize("form", ["uint8_rgba", "uint8_rgb", "float_rgba"])
def test_encode_meshopt_colours_ride_along_and_decode(form):
    v, f, sv, sf, attrs = seam_soup()
    rgba = attrs["color"]
    colors = {
        "uint8_rgba": rgba,
        "uint8_rgb": rgba[:, :3],
        "float_rgba": rgba.astype(np.float32) / 255.0,
    }[form]
    both = {"c": colors, "uv": attrs["uv"], "n": attrs["normal"]}
    res = tm.weld(sv, sf, attributes=both)
    wv, wf = res
    wa, remap = res.attributes, res.remap
    d = tm.encode_meshopt(wv, wf, normals=wa["n"], uvs=wa["uv"], colors=wa["c"])
    c = d["colors"]
    assert (c["byteStride"], c["componentType"], c["type"]) == (4, "UNSIGNED_BYTE", "VEC4")
    mv, mf, got = tm.decode_meshopt(d, attributes=True)
    assert got.keys() == {"normals", "uvs", "colors"}
    np.testing.assert_array_equal(got["colors"], mo_vertex_decode(c["data"], c["count"], 4))
    # match each output vertex to its input vertex by position and UV
    q = d["quantized"]
    dist = np.abs(np.column_stack([mv, got["uvs"]])[:, None, :] - np.column_stack([wv, wa["uv"]]))
    ok = (dist[..., :3] <= q.max_error * (1 + 1e-9)).all(-1)
    ok &= (dist[..., 3:] <= 0.5 / 65535 * q.uv_scale * (1 + 1e-6)).all(-1)
    assert (ok.sum(axis=1) == 1).all()
    match = np.argmax(ok, axis=1)
    welded_rgba = np.empty((len(wv), 4), np.uint8)
    welded_rgba[remap] = rgba  # every soup corner's exact RGBA (alpha 255 here)
    np.testing.assert_array_equal(got["colors"], welded_rgba[match])
    assert np.abs(got["normals"] - wa["n"][match]).max() <= 0.5 / 127
    assert np.abs(got["uvs"] - wa["uv"][match]).max() <= 0.5 / 65535 * q.uv_scale.max() * 1.000001
    assert_same_triangles(mv, mf, wv, wf, q.max_error, match=match)


def test_colour_errors_and_big_endian_vertex_data():
    v, f = grid(4, 3)
    for colors, message in (
        (np.zeros((12, 2), np.uint8), r"shape \(N, 3\) or \(N, 4\)"),
        (np.full((12, 4), 1.5), r"in \[0, 1\]"),
        (np.zeros((12, 4), np.int32), "must be uint8"),
        (np.zeros((11, 4), np.uint8), "11 rows"),
    ):
        with pytest.raises(InputError, match=message):
            tm.encode_meshopt(v, f, colors=colors)
    # glTF buffers are little endian: a big-endian array encodes its values
    data = np.arange(40, dtype=">f4").reshape(10, 4)
    dec = tm.decode_vertex_buffer(tm.encode_vertex_buffer(data), 10, 16)
    np.testing.assert_array_equal(dec.view("<f4"), data)


# ---------------------------------------------------------------- property


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(3, 60),
    m=st.integers(1, 120),
    seed=st.integers(0, 2**16),
    vform=st.sampled_from(sorted(VERTEX_FORMS)),
    fform=st.sampled_from(sorted(FACE_FORMS)),
)
def test_property_any_form_any_mesh(n, m, seed, vform, fform):
    """Random meshes (repeated, degenerate and unused vertices included) in any input
    form: every function agrees with its canonical-input result, and the metrics
    agree with meshoptimizer's analyser."""
    g = np.random.default_rng(seed)
    v = g.integers(-40, 40, (n, 3)) / 8.0  # exact in float32; repeats likely
    f = g.integers(0, n, (m, 3)).astype(np.uint32)
    vi, fi = VERTEX_FORMS[vform](v), FACE_FORMS[fform](f)
    calls = {
        "weld": lambda a, b: tm.weld(a, b),
        "weld_tol": lambda a, b: tm.weld(a, b, tol=0.2),
        "cache": lambda a, b: tm.optimize_vertex_cache(b, n, cache_size=7),
        "fetch": lambda a, b: tm.optimize_vertex_fetch(a, b),
        "overdraw": lambda a, b: tm.optimize_overdraw(a, b),
        "quantize": lambda a, b: tm.quantize(a, bits=9),
        "encode": lambda a, b: tm.encode(a, b, bits=9),
    }
    for call in calls.values():
        _eq(call(vi, fi), call(v, f))
    tr, m_acmr, m_atvr = mo_analyze(f, n, 16)
    assert tm.acmr(fi, n) == pytest.approx(m_acmr, rel=1e-6) == pytest.approx(tr / m)
    assert tm.atvr(fi, n) == pytest.approx(m_atvr, rel=1e-6)
    data, order = tm.encode(vi, fi, bits=9, return_order=True)
    archive_mesh(data, order, v, f, 9)
    out = tm.optimize_vertex_cache(fi, n)
    assert canon(out) == canon(f)


# ---------------------------------------------------------------- viewers' decoder

_JS = """
const fs = require('fs');
const path = require('path');
const lib = require(process.argv[2]);
const MeshoptDecoder = lib.MeshoptDecoder || lib;
const dir = process.argv[3];
MeshoptDecoder.ready.then(() => {
  for (const c of JSON.parse(fs.readFileSync(path.join(dir, 'cases.json')))) {
    const src = new Uint8Array(fs.readFileSync(path.join(dir, c.name + '.bin')));
    const out = new Uint8Array(c.count * c.size);
    try {
      MeshoptDecoder.decodeGltfBuffer(out, c.count, c.size, src, c.mode, 'NONE');
      fs.writeFileSync(path.join(dir, c.name + '.out'), out);
    } catch (e) {
      fs.writeFileSync(path.join(dir, c.name + '.err'), String(e));
    }
  }
});
"""


def _js_decoder():
    import shutil
    from pathlib import Path

    mod = (
        Path(__file__).resolve().parents[2]
        / "node_modules"
        / "meshoptimizer"
        / "meshopt_decoder.cjs"
    )
    if shutil.which("node") is None or not mod.exists():
        pytest.skip("node or node_modules/meshoptimizer absent")
    return mod


def test_javascript_decoder_of_the_viewers_reads_our_streams(tmp_path):
    """meshoptimizer's JavaScript decoder (the one three.js and CesiumJS load) reads
    our vertex streams of every stride, triangle streams with 2- and 4-byte
    indices, and index sequences."""
    import subprocess

    mod = _js_decoder()
    cases, expect = [], {}

    def add(name, data: bytes, count, size, mode, want: bytes):
        (tmp_path / f"{name}.bin").write_bytes(data)
        cases.append({"name": name, "count": count, "size": size, "mode": mode})
        expect[name] = want

    for stride in range(4, 68, 4):
        d = vertex_like(300, stride, stride)
        add(f"v{stride}", tm.encode_vertex_buffer(d), 300, stride, "ATTRIBUTES", d.tobytes())
    for case, f in index_cases().items():
        size = 2 if int(f.max()) < 0xFFFF else 4
        enc = tm.encode_index_buffer(f)
        want = tm.decode_index_buffer(enc, f.size, size).tobytes()
        assert canon(tm.decode_index_buffer(enc, f.size)) == canon(f)
        add(f"t_{case}", enc, f.size, size, "TRIANGLES", want)
    seq = (np.arange(3000) // 2 + (np.arange(3000) % 2) * 1500).astype(np.uint32)
    add("seq", encode_index_sequence(seq), seq.size, 4, "INDICES", seq.tobytes())
    v, f = grid(300, 240, seed=9)  # > 65 535 vertices: 4-byte indices
    d = tm.encode_meshopt(v, f)
    p, ix = d["positions"], d["indices"]
    pos = tm.decode_vertex_buffer(p["data"], p["count"], 8).tobytes()
    add("big_positions", p["data"], p["count"], 8, "ATTRIBUTES", pos)
    faces = tm.decode_index_buffer(ix["data"], ix["count"], ix["byteStride"]).tobytes()
    add("big_indices", ix["data"], ix["count"], ix["byteStride"], "TRIANGLES", faces)
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    (tmp_path / "run.cjs").write_text(_JS)
    subprocess.run(
        ["node", str(tmp_path / "run.cjs"), str(mod), str(tmp_path)], check=True, timeout=120
    )
    for name, want in expect.items():
        assert not (tmp_path / f"{name}.err").exists(), (tmp_path / f"{name}.err").read_text()
        assert (tmp_path / f"{name}.out").read_bytes() == want, name


def _glb_with_json(doc: dict, binary: bytes) -> bytes:
    js = json.dumps(doc).encode()
    js += b" " * (-len(js) % 4)
    binary += b"\0" * (-len(binary) % 4)
    total = 12 + 8 + len(js) + 8 + len(binary)
    return (
        struct.pack("<III", 0x46546C67, 2, total)
        + struct.pack("<II", len(js), 0x4E4F534A)
        + js
        + struct.pack("<II", len(binary), 0x004E4942)
        + binary
    )


def test_optimize_reads_meshopt_glbs_back(tmp_path):
    """A GLB written with EXT_meshopt_compression + KHR_mesh_quantization (ours, or
    one whose positions are normalised and whose node is a child with a TRS
    transform) is read back as the mesh it holds."""
    from twin.tiles.gltf import enu_to_gltf, read_glb_json

    src, v, f = write_input(tmp_path, "ply")
    first = tm.optimize(src, tmp_path / "a.glb", bits=16)
    again = tm.optimize(tmp_path / "a.glb", tmp_path / "b.twm", codec="twin", bits=16)
    assert again.input_faces == len(f)
    mv, mf = tm.decode(tmp_path / "b.twm")
    assert_same_triangles(mv, mf, v, f, first.quantization_step * (1 + 1e-6))
    # an archive is an input too, whatever its name
    (tmp_path / "b.bin").write_bytes((tmp_path / "b.twm").read_bytes())
    r = tm.optimize(tmp_path / "b.bin", tmp_path / "d.twm", codec="twin", bits=16)
    assert r.input_faces == len(f) and r.input_bytes == (tmp_path / "b.bin").stat().st_size
    dv, df = tm.decode(tmp_path / "d.twm")
    assert_same_triangles(dv, df, mv, mf, r.quantization_step * (1 + 1e-6))
    # the same content as normalised shorts under a parent node with TRS transforms
    doc, binary = read_glb_json(tmp_path / "a.glb")
    m = np.array(doc["nodes"][0].pop("matrix")).reshape(4, 4).T  # dequantising S, T
    scale, shift = m[0, 0], m[:3, 3]
    acc = doc["accessors"][doc["meshes"][0]["primitives"][0]["attributes"]["POSITION"]]
    acc["normalized"] = True
    acc["min"] = [x / 65535 for x in acc["min"]]
    acc["max"] = [x / 65535 for x in acc["max"]]
    half = np.sqrt(0.5)
    doc["nodes"][0].update(scale=[scale * 65535] * 3, translation=list(shift))
    doc["nodes"].append(  # parent: turn 90 degrees about glTF y, then move
        {"children": [0], "rotation": [0.0, half, 0.0, half], "translation": [10.0, 0.0, 0.0]}
    )
    doc["scenes"][0]["nodes"] = [1]
    (tmp_path / "c.glb").write_bytes(_glb_with_json(doc, binary))
    r = tm.optimize(tmp_path / "c.glb", tmp_path / "c.twm", codec="twin", bits=16)
    cv, cf = tm.decode(tmp_path / "c.twm")
    g = enu_to_gltf(v)  # what the file held, in the glTF frame
    rot = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # +90 deg about y
    from twin.tiles.gltf import gltf_to_enu

    expect = gltf_to_enu(g @ rot.T + [10.0, 0.0, 0.0])
    assert_same_triangles(cv, cf, expect, f, 2 * r.quantization_step + 1e-9)


def test_tolerance_weld_against_brute_force():
    """``tol > 0``: each vertex joins the lowest-index earlier representative within
    ``tol`` (attributes within ``tol`` too), else becomes one, checked against a
    quadratic brute force on clustered points (many pairs near the tolerance)."""

    def brute(v, tol, attrs):
        reps, rep_of = [], np.empty(len(v), np.int64)
        for i in range(len(v)):
            for r in reps:
                near = np.linalg.norm(v[i] - v[r]) <= tol
                if near and (attrs is None or np.all(np.abs(attrs[i] - attrs[r]) <= tol)):
                    rep_of[i] = r
                    break
            else:
                reps.append(i)
                rep_of[i] = i
        return rep_of

    for seed in range(120):
        g = np.random.default_rng(seed)
        n = int(g.integers(3, 40))
        v = np.round(g.uniform(0, 2, (n, 3)) * 4) / 4
        v += g.normal(0, 0.05, (n, 3)) * (g.random((n, 1)) < 0.5)
        tol = float(g.choice([0.05, 0.1, 0.25, 0.3, 0.5]))
        attrs = g.integers(0, 2, (n, 1)).astype(np.uint8) if seed % 2 else None
        f = np.array([[i, (i + 1) % n, (i + 2) % n] for i in range(n)])
        res = tm.weld(v, f, tol=tol, attributes=attrs)
        wv, _ = res
        wa, remap = res.attributes, res.remap
        rep = brute(v, tol, attrs)
        used = remap >= 0
        np.testing.assert_array_equal(wv[remap[used]], v[rep[used]])
        if attrs is not None:
            assert wa.dtype == np.uint8
            np.testing.assert_array_equal(wa[remap[used]], attrs[rep[used]])


@pytest.mark.parametrize("seed", range(4))
def test_fetch_order_equals_meshoptimizer(seed):
    """First-use order is unique: our remap equals meshoptimizer's
    ``meshopt_optimizeVertexFetchRemap`` (unused vertices: -1 here, ~0 there)."""
    g = np.random.default_rng(seed)
    n = 500
    f = g.integers(0, n, (700, 3)).astype(np.uint32)  # some vertices unused
    v = g.normal(size=(n, 3))
    remap = tm.optimize_vertex_fetch(v, f).remap
    theirs = np.zeros(n, np.uint32)
    count = mo.optimize_vertex_fetch_remap(theirs, f.ravel(), f.size, n)
    assert count == len(np.unique(f))
    np.testing.assert_array_equal(np.where(remap < 0, 0xFFFFFFFF, remap), theirs)
