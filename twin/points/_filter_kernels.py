"""Numba kernels of the point filters (:mod:`twin.points.filters`).

Each has a plain NumPy/SciPy reference of the same name and result in
:mod:`._filters_reference` that the tests compare against. Coordinates are float64
``(N, 3)`` arrays in one consistent unit (metres in practice). Memory: each kernel
allocates arrays the size of its points (or of its voxels), nothing more.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

TIE = 1e-10  # squared coordinate units: distances closer than this are a tie


def cell_index(xyz: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort points into ``cell``-sized cubes: (sorted cube keys, point order, dims).

    ``dims`` is the number of cubes along x, y, z (one spare on each side, so that
    the 27 neighbours of a cube always have valid keys)."""
    lo = xyz.min(axis=0)
    ijk = np.floor((xyz - lo) / cell).astype(np.int64) + 1
    dims = ijk.max(axis=0) + 2
    key = (ijk[:, 0] * dims[1] + ijk[:, 1]) * dims[2] + ijk[:, 2]
    order = np.argsort(key, kind="stable")
    return key[order], order, dims


@njit(cache=True, parallel=True)
def radius_count(xyz, radius, skey, order, dims):
    """Number of other points within ``radius`` (Euclidean, boundary included) of
    each point. ``skey``/``order``/``dims`` come from :func:`cell_index` with
    ``cell = radius``, so the neighbours lie in the 27 cubes around a point's own."""
    n = xyz.shape[0]
    out = np.zeros(n, dtype=np.int64)
    r2 = radius * radius
    d1 = dims[1]
    d2 = dims[2]
    for s in prange(n):
        p = order[s]
        key = skey[s]
        cz = key % d2
        cy = (key // d2) % d1
        cx = key // (d1 * d2)
        px, py, pz = xyz[p, 0], xyz[p, 1], xyz[p, 2]
        cnt = 0
        for ix in range(cx - 1, cx + 2):
            for iy in range(cy - 1, cy + 2):
                base = (ix * d1 + iy) * d2
                a = np.searchsorted(skey, base + cz - 1, side="left")
                b = np.searchsorted(skey, base + cz + 1, side="right")
                for t in range(a, b):
                    q = order[t]
                    dx = xyz[q, 0] - px
                    dy = xyz[q, 1] - py
                    dz = xyz[q, 2] - pz
                    if dx * dx + dy * dy + dz * dz <= r2:
                        cnt += 1
        out[p] = cnt - 1  # the point itself
    return out


@njit(cache=True)
def voxel_representatives(inv, xyz, nvox, centroid):
    """Per voxel (``inv``: voxel 0..nvox-1 of each point): the centroid of its points
    (``(nvox, 3)``) and the index of its representative point: with ``centroid``, the
    point nearest the centroid (lowest index among those within ``TIE`` squared units
    of the nearest, so rounding in the centroid cannot decide a tie), else the first point (lowest
    index). The representative's fields are the ones carried to the output."""
    n = len(inv)
    sums = np.zeros((nvox, 3))
    cnt = np.zeros(nvox, dtype=np.int64)
    first = np.full(nvox, n, dtype=np.int64)
    for p in range(n):
        v = inv[p]
        sums[v, 0] += xyz[p, 0]
        sums[v, 1] += xyz[p, 1]
        sums[v, 2] += xyz[p, 2]
        cnt[v] += 1
        if p < first[v]:
            first[v] = p
    for v in range(nvox):
        c = max(cnt[v], 1)
        sums[v, 0] /= c
        sums[v, 1] /= c
        sums[v, 2] /= c
    if not centroid:
        return sums, first
    best = np.full(nvox, np.inf)
    for p in range(n):
        v = inv[p]
        dx = xyz[p, 0] - sums[v, 0]
        dy = xyz[p, 1] - sums[v, 1]
        dz = xyz[p, 2] - sums[v, 2]
        best[v] = min(best[v], dx * dx + dy * dy + dz * dz)
    rep = np.full(nvox, n, dtype=np.int64)
    for p in range(n):
        v = inv[p]
        if p >= rep[v]:
            continue
        dx = xyz[p, 0] - sums[v, 0]
        dy = xyz[p, 1] - sums[v, 1]
        dz = xyz[p, 2] - sums[v, 2]
        if dx * dx + dy * dy + dz * dz <= best[v] + TIE:
            rep[v] = p
    return sums, rep


@njit(cache=True, parallel=True)
def mean_knn_distance(dist):
    """Mean of each row of a ``(N, k + 1)`` k-NN distance array, leaving out the
    first column (the point itself) and infinite entries (missing neighbours);
    infinity when a point has no neighbour at all."""
    n, k = dist.shape
    out = np.empty(n)
    for i in prange(n):
        s = 0.0
        c = 0
        for j in range(1, k):
            d = dist[i, j]
            if np.isfinite(d):
                s += d
                c += 1
        out[i] = s / c if c > 0 else np.inf
    return out
