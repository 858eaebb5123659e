"""Plain NumPy reference of :func:`twin.points._features.covariance_eigen`.

Slow but obviously right (``numpy.linalg.eigh`` on the stacked covariances); the
tests compare the Numba kernel against it. Memory grows with ``N * k * 3`` floats.
"""

from __future__ import annotations

import numpy as np


def covariance_eigen(xyz: np.ndarray, nbr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and upward unit normals of each neighbourhood's
    covariance; indices outside ``0 .. len(xyz) - 1`` are skipped; fewer than 3
    neighbours give zeros and (0, 0, 1)."""
    n = len(nbr)
    ev = np.zeros((n, 3))
    nrm = np.zeros((n, 3))
    nrm[:, 2] = 1.0
    for i in range(n):
        idx = nbr[i][(nbr[i] >= 0) & (nbr[i] < len(xyz))]
        if len(idx) < 3:
            continue
        p = xyz[idx]
        d = p - p.mean(axis=0)
        c = d.T @ d / len(idx)
        w, v = np.linalg.eigh(c)
        ev[i] = np.maximum(w[::-1], 0.0)
        u = v[:, 0]
        nrm[i] = u if u[2] >= 0 else -u
    return ev, nrm
