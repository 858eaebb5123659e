"""Pass bookkeeping kernels of mesh simplification against plain NumPy."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import twin.mesh.simplify  # noqa: F401  (loads the kernels module)

K = sys.modules["twin.mesh._simplify_kernels"]


@pytest.mark.parametrize("n", [2, 5, 1000, 18_262, 586_589, 2**31 - 1])
def test_sort_edge_ends_matches_numpy(n):
    rng = np.random.Generator(np.random.PCG64(n))
    count = 5000 if n < 1000 else 70_000  # both digit widths
    a = rng.integers(0, n, count, dtype=np.uint64)
    b = rng.integers(0, n, count, dtype=np.uint64)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    bits = max(1, int(n - 1).bit_length())
    packed = (lo << np.uint64(bits)) | hi
    e = np.concatenate([packed, np.full(7, 12345, np.uint64)])  # tail left alone
    K.sort_edge_ends(e, count, bits, np.empty(count, np.uint64))
    expect = np.sort((lo << np.uint64(32)) | hi)
    np.testing.assert_array_equal(e[:count], expect)
    assert np.all(e[count:] == 12345)
