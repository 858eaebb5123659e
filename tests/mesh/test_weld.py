"""weld(): kernels against the plain references, and exact expected results."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.mesh._kernels import clean_faces_kernel, weld_exact_kernel, weld_grid_kernel
from twin.mesh._reference import clean_faces_ref, weld_exact_ref, weld_grid_ref
from twin.mesh.weld import weld


def rng(seed=0):
    return np.random.Generator(np.random.PCG64(seed))


def grid(nx=12, ny=9, spacing=0.5):
    """A regular grid: nx * ny vertices, 2 (nx-1)(ny-1) triangles."""
    x, y = np.meshgrid(np.arange(nx) * spacing, np.arange(ny) * spacing)
    v = np.column_stack([x.ravel(), y.ravel(), 0.1 * np.sin(x.ravel())])
    r, c = np.meshgrid(np.arange(ny - 1), np.arange(nx - 1), indexing="ij")
    a = (r * nx + c).ravel()
    f = np.concatenate(
        [np.column_stack([a, a + 1, a + nx + 1]), np.column_stack([a, a + nx + 1, a + nx])]
    )
    return v, f.astype(np.uint32)


def soup(v, f):
    return v[f.ravel()], np.arange(f.size, dtype=np.uint32).reshape(-1, 3)


def canonical(v, f):
    """Set of triangles as rotated coordinate triples (order independent)."""
    out = set()
    for tri in f:
        pts = [tuple(v[i]) for i in tri]
        k = min(range(3), key=lambda j: pts[j])
        out.add(tuple(pts[k:] + pts[:k]))
    return out


def test_soup_weld_restores_the_indexed_grid():
    v, f = grid()
    sv, sf = soup(v, f)
    assert sv.shape[0] == 3 * f.shape[0]
    res = weld(sv, sf)
    wv, wf = res
    wa, remap = res.attributes, res.remap
    assert wv.shape == v.shape  # every vertex back, no more
    assert wf.shape == f.shape and wf.dtype == np.uint32
    assert wa is None
    assert canonical(wv, wf) == canonical(v, f)
    np.testing.assert_array_equal(wv[remap], sv)  # remap: input vertex -> output vertex
    # first-occurrence order: the soup's first face gives vertices 0, 1, 2
    np.testing.assert_array_equal(wf[0], [0, 1, 2])


def test_tolerance_weld_of_a_jittered_soup():
    v, f = grid(spacing=1.0)
    sv, sf = soup(v, f)
    sv = sv + rng(1).uniform(-0.01, 0.01, sv.shape)  # jitter << spacing
    exact = weld(sv, sf)[0]
    assert exact.shape[0] == sv.shape[0]  # nothing bit-identical
    res = weld(sv, sf, tol=0.05)
    wv, wf = res
    remap = res.remap
    assert wv.shape[0] == v.shape[0]
    assert wf.shape[0] == f.shape[0]
    assert np.linalg.norm(wv[remap] - sv, axis=1).max() <= 0.05


def test_uv_seams_are_not_merged():
    v, f = grid(4, 4)
    sv, sf = soup(v, f)
    # UVs per face corner: the first column of cells maps to one chart, the rest to
    # another, so the 4 vertices on the seam column x = 0.5 get two UVs each
    half = (v[f][:, :, 0].min(axis=1) < 0.25).repeat(3)
    uv = sv[:, :2] * 0.1 + np.where(half, 0.0, 0.5)[:, None]
    res = weld(sv, sf, attributes=uv)
    wv, wf = res
    wa, remap = res.attributes, res.remap
    n_seam = int(np.isclose(v[:, 0], 0.5).sum())
    assert n_seam == 4
    assert wv.shape[0] == v.shape[0] + n_seam
    assert wa.shape == (wv.shape[0], 2)
    np.testing.assert_array_equal(wa[remap], uv)
    # within a tolerance smaller than the chart offset, the seam still holds
    assert weld(sv, sf, tol=0.01, attributes=uv)[0].shape[0] == wv.shape[0]
    # and a tolerance larger than the offset merges it
    assert weld(sv, sf, tol=0.6, attributes=uv)[0].shape[0] < wv.shape[0]


def test_degenerate_duplicate_and_unused_are_dropped():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0], [5, 5, 5], [1, 1, 0]], float)
    f = np.array(
        [
            [0, 1, 2],  # kept
            [1, 2, 0],  # same face rotated: duplicate
            [3, 1, 2],  # vertex 3 == vertex 0: duplicate again
            [0, 2, 1],  # opposite winding: a different face, kept
            [0, 3, 1],  # degenerate after welding 3 -> 0
            [1, 5, 2],  # kept
        ]
    )
    res = weld(v, f)
    wv, wf = res
    remap = res.remap
    np.testing.assert_array_equal(wf, [[0, 1, 2], [0, 2, 1], [1, 3, 2]])
    np.testing.assert_array_equal(remap, [0, 1, 2, 0, -1, 3])  # vertex 4 unused
    np.testing.assert_array_equal(wv, v[[0, 1, 2, 5]])


def test_negative_zero_equals_zero():
    v = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [-0.0, 0, -0.0]])
    f = np.array([[0, 1, 2], [3, 2, 1]])
    res = weld(v, f)
    wv, wf = res
    remap = res.remap
    assert wv.shape[0] == 3 and remap[3] == 0


def test_all_degenerate_gives_an_empty_mesh():
    v = np.array([[0.0, 0, 0], [1e-4, 0, 0], [0, 1e-4, 0]])
    res = weld(v, [[0, 1, 2]], tol=0.01)
    wv, wf = res
    remap = res.remap
    assert wv.shape == (0, 3) and wf.shape == (0, 3)
    np.testing.assert_array_equal(remap, [-1, -1, -1])


def random_mesh(seed, n=300, m=500, dup=0.4, quant=0.25):
    """Random vertices on a coarse lattice (so exact and near duplicates abound)."""
    g = rng(seed)
    v = np.round(g.uniform(0, 3, (n, 3)) / quant) * quant
    v[g.random(n) < dup] += g.normal(0, 0.02, 3)
    f = g.integers(0, n, (m, 3)).astype(np.uint32)
    return v, f


@pytest.mark.parametrize("seed", range(4))
def test_exact_kernel_matches_reference(seed):
    v, f = random_mesh(seed)
    keys = np.ascontiguousarray((v + 0.0).view(np.uint64))
    r1, first1, c1 = weld_exact_kernel(keys)
    r2, first2, c2 = weld_exact_ref(keys)
    assert c1 == c2 < v.shape[0]
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(first1[:c1], first2)
    nf1, k1 = clean_faces_kernel(f, r1)
    nf2, k2 = clean_faces_ref(f, r2)
    np.testing.assert_array_equal(nf1, nf2)
    np.testing.assert_array_equal(k1, k2)
    assert 0 < k1.sum() < f.shape[0]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("tol", [0.01, 0.1, 0.3])
def test_grid_kernel_matches_reference(seed, tol):
    v, _ = random_mesh(seed)
    attrs = rng(seed + 10).integers(0, 2, (v.shape[0], 2)).astype(float)
    for a in (np.zeros((v.shape[0], 0)), attrs):
        r1, first1, c1 = weld_grid_kernel(v, a, tol, 2 * tol)
        r2, first2, c2 = weld_grid_ref(v, a, tol)
        assert c1 == c2
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(first1[:c1], first2)


def test_clean_faces_on_a_synthetic_grid():
    v, f = grid()
    identity = np.arange(v.shape[0], dtype=np.int64)
    ff = np.concatenate([f, f[:, [1, 2, 0]], f[:, [0, 2, 1]]])
    out, keep = clean_faces_kernel(ff.astype(np.uint32), identity)
    n = f.shape[0]
    assert keep[:n].all() and not keep[n : 2 * n].any() and keep[2 * n :].all()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31), st.sampled_from([0.0, 0.05, 0.2]))
def test_weld_is_idempotent_and_keeps_geometry(seed, tol):
    v, f = random_mesh(seed, n=60, m=80)
    res = weld(v, f, tol=tol)
    wv, wf = res
    remap = res.remap
    used = remap >= 0
    assert np.linalg.norm(wv[remap[used]] - v[used], axis=1).max(initial=0) <= tol
    if wf.shape[0]:
        res = weld(wv, wf, tol=0.0)
        wv2, wf2 = res
        remap2 = res.remap
        np.testing.assert_array_equal(wv2, wv)
        np.testing.assert_array_equal(wf2, wf)
        np.testing.assert_array_equal(remap2, np.arange(wv.shape[0]))
