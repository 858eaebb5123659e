"""Overdraw: cluster kernels and rasteriser against references, measured outcomes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.errors import InputError, ParameterError
from twin.mesh._overdraw_kernels import (
    cluster_keys_kernel,
    hard_boundaries_kernel,
    rasterise_overdraw_kernel,
    soft_boundaries_kernel,
)
from twin.mesh._overdraw_reference import (
    cluster_keys_ref,
    hard_boundaries_ref,
    rasterise_overdraw_ref,
    soft_boundaries_ref,
)
from twin.mesh.overdraw import measure_overdraw, optimize_overdraw, overdraw_clusters
from twin.mesh.reorder import acmr, optimize_vertex_cache

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks._meshes import city_mesh, scan_mesh  # noqa: E402


def rng(seed=0):
    return np.random.Generator(np.random.PCG64(seed))


def quad(x0, y0, x1, y1, z, up=True, n=0):
    """Two triangles covering [x0, x1] x [y0, y1] at height z, facing +z (or -z)."""
    v = np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], float)
    f = np.array([[0, 1, 2], [0, 2, 3]]) if up else np.array([[0, 2, 1], [0, 3, 2]])
    return v, f + n


def grid_box(n, size=1.0):
    """A closed axis-aligned cube whose six faces are n x n grids (outward normals)."""
    vs, fs, count = [], [], 0
    t = np.linspace(0.0, size, n + 1)
    a, b = np.meshgrid(t, t, indexing="ij")
    a, b = a.ravel(), b.ravel()
    r, c = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    i = (r * (n + 1) + c).ravel()
    quads = np.column_stack([i, i + n + 1, i + n + 2, i + 1])
    for axis in range(3):
        for side in (0.0, size):
            p = np.zeros((a.size, 3))
            p[:, (axis + 1) % 3] = a
            p[:, (axis + 2) % 3] = b
            p[:, axis] = side
            q = quads if side > 0 else quads[:, ::-1]
            f = np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]]])
            vs.append(p)
            fs.append(f + count)
            count += len(p)
    return np.concatenate(vs), np.concatenate(fs).astype(np.uint32)


def test_measure_overdraw_counts_known_scenes():
    # one quad seen from +z: every covered pixel shaded once
    v, f = quad(0, 0, 1, 1, 0.0)
    o = measure_overdraw(v, f.astype(np.uint32), resolution=32)
    assert o.shaded == o.covered == 32 * 32
    assert o.ratio == 1.0
    # two stacked quads facing +z, the far one (lower z) drawn first: both shade
    # every pixel; drawn near first, the far one fails the depth test everywhere
    v1, f1 = quad(0, 0, 1, 1, 0.0)
    v2, f2 = quad(0, 0, 1, 1, 0.5, n=4)
    v = np.concatenate([v1, v2])
    far_first = np.concatenate([f1, f2]).astype(np.uint32)
    near_first = np.concatenate([f2, f1]).astype(np.uint32)
    assert measure_overdraw(v, far_first, 32).shaded == 2 * 32 * 32
    assert measure_overdraw(v, near_first, 32).shaded == 32 * 32
    assert measure_overdraw(v, far_first, 32).ratio == 2.0


def test_closed_convex_solid_has_no_overdraw():
    # a cube with back faces culled: each axis view sees exactly one face per side
    v, f = grid_box(4)
    o = measure_overdraw(v, f[rng(1).permutation(len(f))], resolution=64)
    assert o.covered == 6 * 64 * 64
    assert o.ratio == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(3))
def test_rasteriser_matches_reference(seed):
    g = rng(seed)
    p = g.uniform(-2, 14, (30, 3))
    f = g.integers(0, 30, (25, 3)).astype(np.uint32)
    p[:3, :2] = [[1.5, 1.5], [5.5, 1.5], [1.5, 5.5]]  # an edge exactly on pixel centres
    f[0] = [0, 1, 2]
    assert rasterise_overdraw_kernel(p, f, 12) == rasterise_overdraw_ref(p, f, 12)


def test_shared_edges_are_rasterised_once():
    # a grid of triangles whose edges pass through pixel centres: no pixel is counted
    # by two neighbours, and of the grid's outer border only the top-left sides count
    # (top-left rule): 2n x 2n pixels
    n = 8
    x, y = np.meshgrid(np.arange(n + 1) * 2.0 + 0.5, np.arange(n + 1) * 2.0 + 0.5)
    p = np.column_stack([x.ravel(), y.ravel(), np.zeros(x.size)])
    r, c = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    a = (r * (n + 1) + c).ravel()
    f = np.concatenate(
        [np.column_stack([a, a + 1, a + n + 2]), np.column_stack([a, a + n + 2, a + n + 1])]
    ).astype(np.uint32)
    shaded, covered = rasterise_overdraw_kernel(p, f, 20)
    assert shaded == covered == (2 * n) ** 2


@pytest.mark.parametrize("cache_size", [4, 16])
def test_cluster_kernels_match_reference(cache_size):
    from scipy.spatial import Delaunay

    g = rng(4)
    xy = g.uniform(0, 1, (300, 2))
    v = np.column_stack([xy, 0.1 * np.sin(6 * xy[:, 0])])
    f = Delaunay(xy).simplices.astype(np.uint32)
    f = np.concatenate([f, f[:40] + 0])  # a second patch reusing the vertices
    f = optimize_vertex_cache(f, len(v), cache_size)
    hard, misses = hard_boundaries_kernel(f, len(v), cache_size)
    want, want_misses = hard_boundaries_ref(f, len(v), cache_size)
    np.testing.assert_array_equal(hard, want)
    assert misses == want_misses == round(acmr(f, len(v), cache_size) * len(f))
    for thr in (1.0, 1.05, 1.5):
        soft = soft_boundaries_kernel(f, len(v), cache_size, hard, thr)
        np.testing.assert_array_equal(soft, soft_boundaries_ref(f, len(v), cache_size, hard, thr))
        assert set(hard.tolist()) <= set(soft.tolist())
        assert np.all(np.diff(soft) > 0)
    keys, centre = cluster_keys_kernel(v, f, soft)
    want_keys, want_centre = cluster_keys_ref(v, f, soft)
    np.testing.assert_allclose(keys, want_keys, atol=1e-12)
    np.testing.assert_allclose(centre, want_centre, atol=1e-12)


def test_optimize_overdraw_draws_outward_faces_first():
    # a convex solid has no overdraw whatever the order (back faces culled); a city
    # has: its ground grid, drawn first, lies under roofs and behind walls
    v, f = city_mesh(20_000, seed=2)
    fc = optimize_vertex_cache(f, len(v))
    before = measure_overdraw(v, fc, 128)
    out = optimize_overdraw(v, fc)
    after = measure_overdraw(v, out, 128)
    assert out.dtype == np.uint32 and out.shape == fc.shape
    assert sorted(map(tuple, out.tolist())) == sorted(map(tuple, fc.tolist()))  # same winding
    assert after.covered == before.covered
    assert after.ratio < before.ratio - 0.3, (before.ratio, after.ratio)
    assert acmr(out, len(v)) <= 1.05 * acmr(fc, len(v)) + 1e-12
    np.testing.assert_array_equal(out, optimize_overdraw(v, fc))  # deterministic


def test_optimize_overdraw_respects_the_threshold():
    v, f = scan_mesh(20_000, seed=3)
    fc = optimize_vertex_cache(f, len(v))
    base = acmr(fc, len(v))
    for thr in (1.0, 1.02, 1.2):
        out = optimize_overdraw(v, fc, threshold=thr)
        assert acmr(out, len(v)) <= thr * base + 1e-12
    starts, keys = overdraw_clusters(v, fc, 1.2)
    assert starts[0] == 0 and len(keys) == len(starts) > 1


def test_optimize_overdraw_bad_input():
    v, f = quad(0, 0, 1, 1, 0.0)
    f = f.astype(np.uint32)
    with pytest.raises(ParameterError, match="threshold"):
        optimize_overdraw(v, f, threshold=0.9)
    with pytest.raises(ParameterError, match="threshold"):
        optimize_overdraw(v, f, threshold="x")
    with pytest.raises(InputError, match="out of range"):
        optimize_overdraw(v, f + 10)
    with pytest.raises(InputError, match="not finite"):
        optimize_overdraw(np.where(v == 1, np.nan, v), f)
    with pytest.raises(InputError, match="empty"):
        measure_overdraw(v, np.zeros((0, 3), np.uint32))
    with pytest.raises(ParameterError, match="resolution"):
        measure_overdraw(v, f, resolution=4)


@st.composite
def soups(draw):
    """Random meshes: a few random vertices, non-degenerate random triangles (any
    topology, duplicates allowed)."""
    n = draw(st.integers(3, 30))
    seed = draw(st.integers(0, 2**31))
    g = rng(seed)
    v = g.uniform(-5, 5, (n, 3))
    m = draw(st.integers(1, 80))
    f = np.stack([g.choice(n, 3, replace=False) for _ in range(m)]).astype(np.uint32)
    return v, f


@settings(max_examples=60, deadline=None)
@given(soups(), st.sampled_from([1.0, 1.05, 1.5]), st.sampled_from([3, 16]))
def test_property_same_triangles_and_acmr_bound(mesh, threshold, cache_size):
    v, f = mesh
    fc = optimize_vertex_cache(f, len(v), cache_size)
    out = optimize_overdraw(v, fc, threshold=threshold, cache_size=cache_size)
    assert sorted(map(tuple, out.tolist())) == sorted(map(tuple, f.tolist()))
    assert acmr(out, len(v), cache_size) <= threshold * acmr(fc, len(v), cache_size) + 1e-12
    o = measure_overdraw(v, out, 16)
    assert o.shaded >= o.covered >= 0
