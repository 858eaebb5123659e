"""Every Numba kernel of the ground filter against its plain NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest

from twin.points import _kernels as K
from twin.points import _reference as R
from twin.points.ground import _odd_pad


def _rng(seed):
    return np.random.Generator(np.random.PCG64(seed))


def _grid(seed, shape=(23, 31), holes=0.2):
    rng = _rng(seed)
    g = rng.normal(10, 3, shape).cumsum(axis=1) * 0.1 + rng.normal(0, 0.5, shape)
    g[rng.random(shape) < holes] = np.nan
    return g


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grid_min2_and_max(seed):
    rng = _rng(seed)
    n, nx, ny = 2000, 17, 13
    ix = rng.integers(0, nx, n)
    iy = rng.integers(0, ny, n)
    z = np.round(rng.normal(0, 5, n), 1)  # ties on purpose
    a1, a2 = K.grid_min2(ix, iy, z, nx, ny)
    b1, b2 = R.grid_min2(ix, iy, z, nx, ny)
    np.testing.assert_array_equal(a1, b1)
    np.testing.assert_array_equal(a2, b2)
    np.testing.assert_array_equal(K.grid_max(ix, iy, z, nx, ny), R.grid_max(ix, iy, z, nx, ny))


def test_grid_min2_sparse():
    ix = np.array([0, 0, 2])
    iy = np.array([0, 0, 1])
    z = np.array([3.0, 1.0, 5.0])
    m1, m2 = K.grid_min2(ix, iy, z, 3, 2)
    assert m1[0, 0] == 1.0 and m2[0, 0] == 3.0
    assert m1[1, 2] == 5.0 and np.isnan(m2[1, 2])
    assert np.isnan(m1[0, 1])


@pytest.mark.parametrize("seed", [0, 1])
def test_remove_low_outliers(seed):
    m1 = _grid(seed)
    m2 = m1 + np.abs(_grid(seed + 10, holes=0.0))
    rng = _rng(seed)
    low = rng.random(m1.shape) < 0.05
    m1[low] -= 8.0
    a = K.remove_low_outliers(m1, m2, 1.0, 2)
    b = R.remove_low_outliers(m1, m2, 1.0, 2)
    np.testing.assert_array_equal(a, b)
    # the planted outliers are gone (replaced or emptied)
    assert np.all(~(a[low & np.isfinite(a)] < np.nanmedian(m1) - 20))


@pytest.mark.parametrize("holes", [0.0, 0.3, 0.9])
def test_inpaint(holes):
    g = _grid(5, holes=holes)
    a = K.inpaint(g)
    np.testing.assert_allclose(a, R.inpaint(g), rtol=0, atol=1e-9)
    assert np.isfinite(a).all()
    keep = np.isfinite(g)
    np.testing.assert_array_equal(a[keep], g[keep])


def test_inpaint_empty_stays_empty():
    g = np.full((4, 5), np.nan)
    assert np.isnan(K.inpaint(g)).all()


@pytest.mark.parametrize("radius", [1, 2, 5, 20])
def test_opening(radius):
    g = np.nan_to_num(_grid(7, shape=(37, 29), holes=0.0))
    np.testing.assert_array_equal(K.opening(g, radius), R.opening(g, radius))


def test_opening_keeps_planes_removes_boxes():
    y, x = np.mgrid[0:40, 0:40].astype(float)
    plane = 0.3 * x + 0.1 * y
    op = K.opening(plane, 4)
    np.testing.assert_allclose(op[4:-4, 4:-4], plane[4:-4, 4:-4], atol=1e-12)  # planes survive
    assert op[-1, -1] < plane[-1, -1] - 1  # but clipped windows cut the up-slope edge ...
    padded = K.opening(_odd_pad(plane, 4), 4)[4:-4, 4:-4]
    np.testing.assert_allclose(padded, plane, atol=1e-9)  # ... unless padded by odd reflection
    flat = np.zeros((40, 40))
    flat[10:16, 10:16] = 5.0  # a 6-cell box under a 9-cell window vanishes
    assert np.all(K.opening(flat, 4) == 0.0)
    assert np.all(K.opening(flat, 2)[10:16, 10:16] == 5.0)  # ... and survives a 5-cell one


def test_progressive_objects():
    g = np.nan_to_num(_grid(9, shape=(40, 40), holes=0.0))
    g[5:12, 20:30] += 6.0
    a = K.progressive_objects(g, 1.0, 0.15, 8)
    b = R.progressive_objects(g, 1.0, 0.15, 8)
    np.testing.assert_array_equal(a, b)
    assert a[5:12, 20:30].mean() > 0.9


def test_bilinear():
    rng = _rng(3)
    g = rng.normal(0, 1, (9, 12))
    px = rng.uniform(-3, 15, 500)
    py = rng.uniform(-3, 12, 500)
    np.testing.assert_allclose(
        K.bilinear(g, 0.0, 0.0, 1.0, px, py), R.bilinear(g, 0.0, 0.0, 1.0, px, py), atol=1e-12
    )
    # exact at cell centres, linear between
    assert K.bilinear(g, 0.0, 0.0, 1.0, np.array([2.5]), np.array([3.5]))[0] == g[3, 2]
    mid = K.bilinear(g, 0.0, 0.0, 1.0, np.array([3.0]), np.array([3.5]))[0]
    assert mid == pytest.approx((g[3, 2] + g[3, 3]) / 2)
