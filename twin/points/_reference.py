"""Plain NumPy/SciPy references of the ground-filter kernels in :mod:`._kernels`.

Slow but obviously right; the tests compare every Numba kernel with its reference.
Grids are ``(ny, nx)`` float64 arrays with NaN for empty cells; row ``j`` and column
``i`` hold the cell whose lower-left corner is ``(x0 + i * cell, y0 + j * cell)``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def grid_min2(ix: np.ndarray, iy: np.ndarray, z: np.ndarray, nx: int, ny: int):
    """Lowest and second-lowest z per cell (NaN where a cell has fewer points)."""
    m1 = np.full((ny, nx), np.nan)
    m2 = np.full((ny, nx), np.nan)
    if len(z) == 0:
        return m1, m2
    cell = iy.astype(np.int64) * nx + ix.astype(np.int64)
    order = np.lexsort((z, cell))
    c, zz = cell[order], z[order]
    first = np.ones(len(c), dtype=bool)
    first[1:] = c[1:] != c[:-1]
    m1.ravel()[c[first]] = zz[first]
    idx = np.flatnonzero(first) + 1
    ok = idx < len(c)
    idx = idx[ok]
    ok2 = c[idx] == c[idx - 1]
    m2.ravel()[c[idx[ok2]]] = zz[idx[ok2]]
    return m1, m2


def grid_max(ix, iy, z, nx, ny):
    """Highest z per cell (NaN where empty)."""
    out = np.full(nx * ny, -np.inf)
    np.maximum.at(out, iy.astype(np.int64) * nx + ix, z)
    out[np.isneginf(out)] = np.nan
    return out.reshape(ny, nx)


def _neighbour_median(m1: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    ny, nx = m1.shape
    med = np.full_like(m1, np.nan)
    cnt = np.zeros(m1.shape, dtype=np.int64)
    for j in range(ny):
        for i in range(nx):
            win = m1[max(j - radius, 0) : j + radius + 1, max(i - radius, 0) : i + radius + 1]
            vals = win[np.isfinite(win)].tolist()
            if np.isfinite(m1[j, i]):
                vals.remove(m1[j, i])
            cnt[j, i] = len(vals)
            if vals:
                med[j, i] = np.median(vals)
    return med, cnt


def remove_low_outliers(m1, m2, threshold: float, radius: int = 2) -> np.ndarray:
    """Cell minima with low outliers replaced: a minimum more than ``threshold`` below
    the median of its neighbours' minima (within ``radius`` cells, at least 3 of them)
    is replaced by the cell's second-lowest point, or NaN if that one is low too."""
    med, cnt = _neighbour_median(m1, radius)
    out = m1.copy()
    low = (cnt >= 3) & np.isfinite(m1) & (m1 < med - threshold)
    alt = np.where(np.isfinite(m2) & (m2 >= med - threshold), m2, np.nan)
    out[low] = alt[low]
    return out


def inpaint(grid: np.ndarray) -> np.ndarray:
    """Fill NaN cells front by front: each empty cell touching filled ones (8-neighbours)
    takes their mean, using values filled before that front. All-NaN stays NaN."""
    g = grid.copy()
    filled = np.isfinite(g)
    if not filled.any():
        return g
    kernel = np.ones((3, 3))
    kernel[1, 1] = 0
    while not filled.all():
        vals = np.where(filled, g, 0.0)
        s = ndimage.convolve(vals, kernel, mode="constant")
        n = ndimage.convolve(filled.astype(float), kernel, mode="constant")
        front = ~filled & (n > 0)
        g[front] = s[front] / n[front]
        filled |= front
    return g


def opening(grid: np.ndarray, radius: int) -> np.ndarray:
    """Grey opening with a (2r+1)^2 square, window clipped at the borders."""
    size = 2 * radius + 1
    ero = ndimage.minimum_filter(grid, size=size, mode="nearest")
    return ndimage.maximum_filter(ero, size=size, mode="nearest")


def progressive_objects(surface: np.ndarray, cell: float, slope: float, max_radius: int):
    """SMRF's progressive opening: flag cells whose drop under the opening with radius
    r (cells) exceeds ``slope * r * cell``, for r = 1..max_radius, each opening applied
    to the previous opened surface."""
    prev = surface
    obj = np.zeros(surface.shape, dtype=bool)
    for r in range(1, max_radius + 1):
        op = opening(prev, r)
        obj |= (prev - op) > slope * r * cell
        prev = op
    return obj


def bilinear(grid: np.ndarray, x0: float, y0: float, cell: float, px, py) -> np.ndarray:
    """Bilinear interpolation of cell-centre values at points (clamped at the edges)."""
    ny, nx = grid.shape
    fx = np.clip((px - x0) / cell - 0.5, 0, nx - 1)
    fy = np.clip((py - y0) / cell - 0.5, 0, ny - 1)
    i0 = np.minimum(np.floor(fx).astype(np.int64), max(nx - 2, 0))
    j0 = np.minimum(np.floor(fy).astype(np.int64), max(ny - 2, 0))
    i1 = np.minimum(i0 + 1, nx - 1)
    j1 = np.minimum(j0 + 1, ny - 1)
    tx = fx - i0
    ty = fy - j0
    return (
        grid[j0, i0] * (1 - tx) * (1 - ty)
        + grid[j0, i1] * tx * (1 - ty)
        + grid[j1, i0] * (1 - tx) * ty
        + grid[j1, i1] * tx * ty
    )
