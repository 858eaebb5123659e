"""Numba kernel of roof-plane detection (RANSAC scoring), with its NumPy reference.

:func:`plane_scores` scores candidate planes through point triplets: for each
triplet its unit normal (turned up), offset and the number of points within
``threshold`` of the plane. Candidates whose normal is steeper than ``min_nz``
(walls) or degenerate (collinear triplets) score -1. Work grows with
``len(triplets) * len(xyz)``; candidates are scored in parallel (``prange``).
:func:`plane_scores_reference` computes the same in plain NumPy.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def plane_scores(xyz, triplets, threshold, min_nz):
    """(counts (T,) int64, normals (T, 3), offsets (T,)) of planes n.p + d = 0."""
    t = triplets.shape[0]
    n = xyz.shape[0]
    counts = np.full(t, -1, dtype=np.int64)
    normals = np.zeros((t, 3))
    offsets = np.zeros(t)
    for k in prange(t):
        i, j, m = triplets[k, 0], triplets[k, 1], triplets[k, 2]
        ux = xyz[j, 0] - xyz[i, 0]
        uy = xyz[j, 1] - xyz[i, 1]
        uz = xyz[j, 2] - xyz[i, 2]
        vx = xyz[m, 0] - xyz[i, 0]
        vy = xyz[m, 1] - xyz[i, 1]
        vz = xyz[m, 2] - xyz[i, 2]
        nx = uy * vz - uz * vy
        ny = uz * vx - ux * vz
        nz = ux * vy - uy * vx
        norm = np.sqrt(nx * nx + ny * ny + nz * nz)
        if norm < 1e-9:
            continue
        nx /= norm
        ny /= norm
        nz /= norm
        if nz < 0:
            nx, ny, nz = -nx, -ny, -nz
        if nz < min_nz:
            continue
        d = -(nx * xyz[i, 0] + ny * xyz[i, 1] + nz * xyz[i, 2])
        c = 0
        for p in range(n):
            r = nx * xyz[p, 0] + ny * xyz[p, 1] + nz * xyz[p, 2] + d
            if -threshold <= r <= threshold:
                c += 1
        counts[k] = c
        normals[k, 0] = nx
        normals[k, 1] = ny
        normals[k, 2] = nz
        offsets[k] = d
    return counts, normals, offsets


def plane_scores_reference(xyz: np.ndarray, triplets: np.ndarray, threshold: float, min_nz: float):
    """NumPy twin of :func:`plane_scores` (same outputs)."""
    a, b, c = xyz[triplets[:, 0]], xyz[triplets[:, 1]], xyz[triplets[:, 2]]
    nrm = np.cross(b - a, c - a)
    norm = np.linalg.norm(nrm, axis=1)
    ok = norm >= 1e-9
    nrm = np.where(ok[:, None], nrm / np.where(ok, norm, 1.0)[:, None], 0.0)
    nrm[nrm[:, 2] < 0] *= -1.0
    ok &= nrm[:, 2] >= min_nz
    d = -np.einsum("ij,ij->i", nrm, a)
    counts = np.full(len(triplets), -1, dtype=np.int64)
    for k in np.flatnonzero(ok):
        r = xyz @ nrm[k] + d[k]
        counts[k] = int(np.count_nonzero(np.abs(r) <= threshold))
    normals = np.where(ok[:, None], nrm, 0.0)
    return counts, normals, np.where(ok, d, 0.0)
