"""Vertex cache and fetch order: kernels against references, known ACMR values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.mesh._kernels import fifo_misses_kernel, first_use_kernel, vertex_cache_kernel
from twin.mesh._reference import fifo_misses_ref, first_use_ref, vertex_cache_ref
from twin.mesh.reorder import (
    acmr,
    atvr,
    cache_score_tables,
    optimize_vertex_cache,
    optimize_vertex_fetch,
)


def rng(seed=0):
    return np.random.Generator(np.random.PCG64(seed))


def grid(nx, ny):
    x, y = np.meshgrid(np.arange(nx, dtype=float), np.arange(ny, dtype=float))
    v = np.column_stack([x.ravel(), y.ravel(), np.zeros(x.size)])
    r, c = np.meshgrid(np.arange(ny - 1), np.arange(nx - 1), indexing="ij")
    a = (r * nx + c).ravel()
    f = np.stack(
        [np.column_stack([a, a + 1, a + nx + 1]), np.column_stack([a, a + nx + 1, a + nx])], 1
    )
    return v, f.reshape(-1, 3).astype(np.uint32)


def strip(n):
    """n triangles in triangle-strip order over n + 2 vertices."""
    f = [(i, i + 1, i + 2) if i % 2 == 0 else (i + 1, i, i + 2) for i in range(n)]
    return np.array(f, np.uint32)


def test_acmr_of_a_strip_is_known():
    f = strip(100)
    assert acmr(f, 102) == pytest.approx(102 / 100)  # each vertex transformed once
    assert atvr(f, 102) == pytest.approx(1.0)
    # reversed strip order is just as good; a soup order is 3.0
    assert acmr(f[::-1], 102) == pytest.approx(1.02)


def test_acmr_of_a_row_order_grid_is_known():
    # rows of 40 quads: 41 vertices per row > 16 cache entries, so every row of 80
    # triangles transforms both its vertex rows again: 82 misses per row
    v, f = grid(41, 11)
    assert acmr(f, len(v)) == pytest.approx(82 / 80)
    # cache as large as the grid: every vertex once
    assert acmr(f, len(v), cache_size=1024) == pytest.approx(len(v) / len(f))
    assert atvr(f, len(v), cache_size=1024) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("cache_size", [3, 8, 16, 32])
def test_fifo_kernel_matches_reference(seed, cache_size):
    f = rng(seed).integers(0, 200, (400, 3)).astype(np.uint32)
    assert fifo_misses_kernel(f, 200, cache_size) == fifo_misses_ref(f, 200, cache_size)
    got = first_use_kernel(f, 250)
    want = first_use_ref(f, 250)
    assert got[1] == want[1]
    for a, b in zip(got[::2] + got[3:], want[::2] + want[3:], strict=True):
        np.testing.assert_array_equal(a, b)


def shuffled_grid(nx, ny, seed):
    v, f = grid(nx, ny)
    return v, f[rng(seed).permutation(len(f))]


def delaunay_mesh(n, seed):
    from scipy.spatial import Delaunay

    xy = rng(seed).uniform(0, 1, (n, 2))
    return np.column_stack([xy, np.zeros(n)]), Delaunay(xy).simplices.astype(np.uint32)


def random_faces(seed):
    """A non-manifold random index soup (no degenerate triangles)."""
    f = rng(seed).integers(0, 60, (300, 3))
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    return np.zeros((60, 3)), f.astype(np.uint32)


@pytest.mark.parametrize("cache_size", [4, 16])
@pytest.mark.parametrize(
    "mesh",
    [shuffled_grid(15, 12, 0), delaunay_mesh(200, 1), delaunay_mesh(150, 2), random_faces(3)],
)
def test_cache_kernel_matches_reference(mesh, cache_size):
    v, f = mesh
    tables = cache_score_tables(cache_size)
    o1 = vertex_cache_kernel(f, len(v), cache_size, *tables)
    o2 = vertex_cache_ref(f, len(v), cache_size, *tables)
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(np.sort(o1), np.arange(len(f)))  # a permutation


def test_disconnected_pieces_and_dead_ends():
    # 30 separate strips of 10 triangles, interleaved in the input
    parts = [strip(10) + 12 * k for k in range(30)]
    f = np.stack(parts, 1).reshape(-1, 3)
    nv = 12 * 30
    assert acmr(f, nv) > 2.5
    out = optimize_vertex_cache(f, nv)
    assert acmr(out, nv) == pytest.approx(12 / 10)  # every vertex once
    assert {tuple(t) for t in out.tolist()} == {tuple(t) for t in f.tolist()}


def test_optimize_vertex_cache_on_shuffled_grid():
    v, f = shuffled_grid(60, 60, 3)
    before = acmr(f, len(v))
    out = optimize_vertex_cache(f, len(v))
    after = acmr(out, len(v))
    assert out.dtype == np.uint32 and out.shape == f.shape
    # same triangles with the same winding
    assert sorted(map(tuple, out.tolist())) == sorted(map(tuple, f.tolist()))
    assert before > 2.5
    # a regular grid: 0.5 is the limit for an infinite cache; good orders for a
    # 16-entry FIFO reach about 0.65
    assert after < 0.70, after
    assert atvr(out, len(v)) < 1.45
    # deterministic
    np.testing.assert_array_equal(out, optimize_vertex_cache(f, len(v)))


def test_optimize_vertex_cache_on_irregular_mesh():
    v, f = delaunay_mesh(3000, 4)
    out = optimize_vertex_cache(f, len(v))
    assert acmr(out, len(v)) < 0.70
    assert acmr(out, len(v), cache_size=32) < acmr(out, len(v))


def test_degenerate_triangles_are_kept_at_the_end():
    v, f = grid(5, 5)
    bad = np.array([[0, 0, 1], [3, 4, 3]], np.uint32)
    ff = np.concatenate([bad[:1], f, bad[1:]])
    out = optimize_vertex_cache(ff, len(v))
    np.testing.assert_array_equal(out[-2:], bad)
    assert sorted(map(tuple, out[:-2].tolist())) == sorted(map(tuple, f.tolist()))


def test_optimize_vertex_fetch():
    v, f = shuffled_grid(10, 8, 5)
    v = np.concatenate([v, [[99.0, 99, 99]]])  # an unused vertex
    attrs = np.arange(len(v), dtype=float)
    f = optimize_vertex_cache(f, len(v))
    res = optimize_vertex_fetch(v, f, attributes=attrs)
    nv, nf = res
    na, remap = res.attributes, res.remap
    assert nv.shape[0] == len(v) - 1 and remap[-1] == -1
    np.testing.assert_array_equal(nv[nf], v[f])  # same triangles in the same order
    np.testing.assert_array_equal(na, attrs[remap >= 0][np.argsort(remap[remap >= 0])])
    # first-use order: the first reference of each vertex is in increasing order
    flat = nf.ravel()
    _, first = np.unique(flat, return_index=True)
    np.testing.assert_array_equal(flat[np.sort(first)], np.arange(nv.shape[0]))
    # unchanged cache behaviour, indices now start 0, 1, 2
    assert acmr(nf, nv.shape[0]) == acmr(f, len(v))
    np.testing.assert_array_equal(nf[0], [0, 1, 2])


@settings(max_examples=60, deadline=None)
@given(
    st.integers(3, 40),
    st.integers(1, 120),
    st.integers(0, 2**31),
    st.sampled_from([3, 4, 16]),
)
def test_property_cache_kernel_matches_reference(n, m, seed, cache_size):
    # any topology (non-manifold, repeated triangles, several components)
    g = rng(seed)
    f = np.stack([g.choice(n, 3, replace=False) for _ in range(m)]).astype(np.uint32)
    tables = cache_score_tables(cache_size)
    o1 = vertex_cache_kernel(f, n, cache_size, *tables)
    np.testing.assert_array_equal(o1, vertex_cache_ref(f, n, cache_size, *tables))
    out = optimize_vertex_cache(f, n, cache_size)
    np.testing.assert_array_equal(out, f[o1])
