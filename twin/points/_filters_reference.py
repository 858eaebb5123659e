"""Plain NumPy/SciPy references of the filter kernels in :mod:`._filter_kernels`.

Slow or memory-hungry but obviously right; the tests compare each kernel with them.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from twin.points._filter_kernels import TIE


def radius_count(xyz: np.ndarray, radius: float) -> np.ndarray:
    """Number of other points within ``radius`` of each point (KD-tree ball query)."""
    return cKDTree(xyz).query_ball_point(xyz, radius, return_length=True) - 1


def voxel_representatives(inv: np.ndarray, xyz: np.ndarray, nvox: int, centroid: bool):
    """Centroid of each voxel's points and its representative point (nearest the
    centroid with ``centroid``, lowest index on ties; else the lowest index)."""
    cnt = np.bincount(inv, minlength=nvox).astype(float)
    cen = (
        np.column_stack([np.bincount(inv, weights=xyz[:, a], minlength=nvox) for a in range(3)])
        / np.maximum(cnt, 1)[:, None]
    )
    idx = np.arange(len(inv))
    if centroid:
        d = np.sum((xyz - cen[inv]) ** 2, axis=1)
        best = np.full(nvox, np.inf)
        np.minimum.at(best, inv, d)
        near = d <= best[inv] + TIE
        order = np.lexsort((idx, ~near, inv))
    else:
        order = np.lexsort((idx, inv))
    first = np.r_[True, inv[order][1:] != inv[order][:-1]]
    rep = np.empty(nvox, dtype=np.int64)
    rep[inv[order][first]] = order[first]
    return cen, rep


def mean_knn_distance(dist: np.ndarray) -> np.ndarray:
    """Row means of ``dist[:, 1:]`` over finite entries (inf when none)."""
    d = dist[:, 1:]
    ok = np.isfinite(d)
    c = ok.sum(axis=1)
    s = np.where(ok, d, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c > 0, s / np.maximum(c, 1), np.inf)
