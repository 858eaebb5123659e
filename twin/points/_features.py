"""Numba kernels for per-point local geometric features (building/vegetation classes).

Each point's neighbourhood (its ``k`` nearest neighbours, found with a KD-tree by the
caller) gives a 3 x 3 covariance matrix; its eigenvalues ``l1 >= l2 >= l3 >= 0`` and the
eigenvector of ``l3`` (the surface normal) describe the local shape:

* linearity ``(l1 - l2) / l1``: about 1 on a line (a wire, an edge);
* planarity ``(l2 - l3) / l1``: about 1 on a plane (a roof, a wall, the ground);
* scatter (sphericity) ``l3 / l1``: large in volume scatter (tree crowns);
* verticality ``1 - |n_z|``: 0 on a horizontal surface, 1 on a vertical one.

The eigen decomposition is closed form (trigonometric solution of the characteristic
cubic, normal from cross products of the rows of ``A - l3 I``), so the kernel needs no
LAPACK call per point. :mod:`._features_reference` has the plain NumPy versions the
tests compare against. Coordinates are in any consistent unit (metres in practice);
features are dimensionless. Memory grows with ``N * k`` (the neighbour index array)
plus ``6 N`` floats out.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange


@njit(cache=True)
def _eig3(a00, a01, a02, a11, a12, a22):
    """Eigenvalues (descending) of a symmetric 3 x 3 matrix and the unit eigenvector
    of the smallest one (``(0, 0, 1)`` when that eigenvalue is not simple enough to
    define one, e.g. for a line or a single point)."""
    p1 = a01 * a01 + a02 * a02 + a12 * a12
    q = (a00 + a11 + a22) / 3.0
    p2 = (a00 - q) ** 2 + (a11 - q) ** 2 + (a22 - q) ** 2 + 2.0 * p1
    if p2 <= 1e-300:
        return q, q, q, 0.0, 0.0, 1.0
    p = math.sqrt(p2 / 6.0)
    b00 = (a00 - q) / p
    b11 = (a11 - q) / p
    b22 = (a22 - q) / p
    b01 = a01 / p
    b02 = a02 / p
    b12 = a12 / p
    r = 0.5 * (
        b00 * (b11 * b22 - b12 * b12)
        - b01 * (b01 * b22 - b12 * b02)
        + b02 * (b01 * b12 - b11 * b02)
    )
    r = min(1.0, max(-1.0, r))
    phi = math.acos(r) / 3.0
    l1 = q + 2.0 * p * math.cos(phi)
    l3 = q + 2.0 * p * math.cos(phi + 2.0 * math.pi / 3.0)
    l2 = 3.0 * q - l1 - l3
    # normal: the null vector of A - l3 I, from the best-conditioned row cross product
    r0x, r0y, r0z = a00 - l3, a01, a02
    r1x, r1y, r1z = a01, a11 - l3, a12
    r2x, r2y, r2z = a02, a12, a22 - l3
    c0x, c0y, c0z = r0y * r1z - r0z * r1y, r0z * r1x - r0x * r1z, r0x * r1y - r0y * r1x
    c1x, c1y, c1z = r0y * r2z - r0z * r2y, r0z * r2x - r0x * r2z, r0x * r2y - r0y * r2x
    c2x, c2y, c2z = r1y * r2z - r1z * r2y, r1z * r2x - r1x * r2z, r1x * r2y - r1y * r2x
    n0 = c0x * c0x + c0y * c0y + c0z * c0z
    n1 = c1x * c1x + c1y * c1y + c1z * c1z
    n2 = c2x * c2x + c2y * c2y + c2z * c2z
    nx, ny, nz, nn = c0x, c0y, c0z, n0
    if n1 > nn:
        nx, ny, nz, nn = c1x, c1y, c1z, n1
    if n2 > nn:
        nx, ny, nz, nn = c2x, c2y, c2z, n2
    scale = max(l1 - l3, 1e-300)
    if nn <= (1e-12 * scale * scale) ** 2 or (l2 - l3) <= 1e-9 * scale:
        return l1, l2, max(l3, 0.0), 0.0, 0.0, 1.0
    s = 1.0 / math.sqrt(nn)
    if nz < 0:
        s = -s
    return l1, max(l2, 0.0), max(l3, 0.0), nx * s, ny * s, nz * s


@njit(cache=True, parallel=True)
def covariance_eigen(xyz, nbr):
    """Eigenvalues (``(N, 3)``, descending, units^2) and upward unit normals
    (``(N, 3)``, ``n_z >= 0``) of the covariance of each point's neighbours.

    ``xyz``: ``(M, 3)`` float64; ``nbr``: ``(N, k)`` int64 rows of indices into
    ``xyz`` (entries ``< 0`` or ``>= M`` are skipped, as cKDTree pads missing ones).
    A neighbourhood of fewer than 3 points gives eigenvalues 0 and normal (0, 0, 1).
    """
    n, k = nbr.shape
    m = xyz.shape[0]
    ev = np.zeros((n, 3))
    nrm = np.zeros((n, 3))
    for i in prange(n):
        cnt = 0
        sx = 0.0
        sy = 0.0
        sz = 0.0
        for j in range(k):
            t = nbr[i, j]
            if t < 0 or t >= m:
                continue
            sx += xyz[t, 0]
            sy += xyz[t, 1]
            sz += xyz[t, 2]
            cnt += 1
        if cnt < 3:
            nrm[i, 2] = 1.0
            continue
        mx = sx / cnt
        my = sy / cnt
        mz = sz / cnt
        cxx = 0.0
        cxy = 0.0
        cxz = 0.0
        cyy = 0.0
        cyz = 0.0
        czz = 0.0
        for j in range(k):
            t = nbr[i, j]
            if t < 0 or t >= m:
                continue
            dx = xyz[t, 0] - mx
            dy = xyz[t, 1] - my
            dz = xyz[t, 2] - mz
            cxx += dx * dx
            cxy += dx * dy
            cxz += dx * dz
            cyy += dy * dy
            cyz += dy * dz
            czz += dz * dz
        l1, l2, l3, ux, uy, uz = _eig3(
            cxx / cnt, cxy / cnt, cxz / cnt, cyy / cnt, cyz / cnt, czz / cnt
        )
        ev[i, 0] = l1
        ev[i, 1] = l2
        ev[i, 2] = l3
        nrm[i, 0] = ux
        nrm[i, 1] = uy
        nrm[i, 2] = uz
    return ev, nrm


def shape_features(ev: np.ndarray, nrm: np.ndarray) -> np.ndarray:
    """``(N, 4)`` float32: linearity, planarity, scatter, verticality (see module doc)
    from eigenvalues and normals. Zero-size neighbourhoods give (0, 0, 1, 0)."""
    l1 = ev[:, 0]
    safe = np.where(l1 > 0, l1, 1.0)
    out = np.empty((len(ev), 4), dtype=np.float32)
    out[:, 0] = np.where(l1 > 0, (ev[:, 0] - ev[:, 1]) / safe, 0.0)
    out[:, 1] = np.where(l1 > 0, (ev[:, 1] - ev[:, 2]) / safe, 0.0)
    out[:, 2] = np.where(l1 > 0, ev[:, 2] / safe, 1.0)
    out[:, 3] = 1.0 - np.abs(nrm[:, 2])
    return out
