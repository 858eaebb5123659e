"""Numba kernels of the ground filter (SMRF family) and the rasterisers.

Each has a plain NumPy reference in :mod:`._reference` with the same name and result.
Grids are ``(ny, nx)`` float64 with NaN for empty cells; row ``j``/column ``i`` is the
cell with lower-left corner ``(x0 + i * cell, y0 + j * cell)``. Memory: each kernel
allocates a few arrays the size of its input grid (or of its points).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True)
def grid_min2(ix, iy, z, nx, ny):
    """Lowest and second-lowest z per cell (NaN where a cell has fewer points)."""
    m1 = np.full((ny, nx), np.inf)
    m2 = np.full((ny, nx), np.inf)
    for k in range(len(z)):
        j, i, v = iy[k], ix[k], z[k]
        if v < m1[j, i]:
            m2[j, i] = m1[j, i]
            m1[j, i] = v
        elif v < m2[j, i]:
            m2[j, i] = v
    for j in range(ny):
        for i in range(nx):
            if m1[j, i] == np.inf:
                m1[j, i] = np.nan
            if m2[j, i] == np.inf:
                m2[j, i] = np.nan
    return m1, m2


@njit(cache=True)
def grid_max(ix, iy, z, nx, ny):
    """Highest z per cell (NaN where empty)."""
    out = np.full((ny, nx), -np.inf)
    for k in range(len(z)):
        if z[k] > out[iy[k], ix[k]]:
            out[iy[k], ix[k]] = z[k]
    for j in range(ny):
        for i in range(nx):
            if out[j, i] == -np.inf:
                out[j, i] = np.nan
    return out


@njit(cache=True)
def grid_sum_count(ix, iy, z, sums, counts):
    """Accumulate z sums and counts per cell in place (for mean rasters by chunks)."""
    for k in range(len(z)):
        sums[iy[k], ix[k]] += z[k]
        counts[iy[k], ix[k]] += 1


@njit(cache=True)
def grid_max_into(ix, iy, z, out):
    """Running per-cell maximum in place (``out`` starts at -inf)."""
    for k in range(len(z)):
        if z[k] > out[iy[k], ix[k]]:
            out[iy[k], ix[k]] = z[k]


@njit(cache=True, parallel=True)
def remove_low_outliers(m1, m2, threshold, radius=2):
    """Cell minima with low outliers replaced (see the reference for the rule)."""
    ny, nx = m1.shape
    out = m1.copy()
    w = 2 * radius + 1
    for j in prange(ny):
        buf = np.empty(w * w)
        for i in range(nx):
            c = m1[j, i]
            if not np.isfinite(c):
                continue
            n = 0
            removed = False
            for jj in range(max(j - radius, 0), min(j + radius + 1, ny)):
                for ii in range(max(i - radius, 0), min(i + radius + 1, nx)):
                    v = m1[jj, ii]
                    if np.isfinite(v):
                        if not removed and v == c:
                            removed = True
                            continue
                        buf[n] = v
                        n += 1
            if n < 3:
                continue
            med = np.median(buf[:n])
            if c < med - threshold:
                a = m2[j, i]
                if np.isfinite(a) and a >= med - threshold:
                    out[j, i] = a
                else:
                    out[j, i] = np.nan
    return out


@njit(cache=True)
def inpaint(grid):
    """Fill NaN cells front by front with the mean of their filled 8-neighbours.

    Work grows with the number of cells (each is visited on one front)."""
    ny, nx = grid.shape
    g = grid.copy()
    filled = np.isfinite(g)
    if not filled.any():
        return g
    front_j = np.empty(ny * nx, dtype=np.int64)
    front_i = np.empty(ny * nx, dtype=np.int64)
    queued = filled.copy()
    nf = 0
    for j in range(ny):
        for i in range(nx):
            if filled[j, i]:
                continue
            for jj in range(max(j - 1, 0), min(j + 2, ny)):
                for ii in range(max(i - 1, 0), min(i + 2, nx)):
                    if filled[jj, ii] and not queued[j, i]:
                        queued[j, i] = True
                        front_j[nf] = j
                        front_i[nf] = i
                        nf += 1
    vals = np.empty(ny * nx)
    next_j = np.empty(ny * nx, dtype=np.int64)
    next_i = np.empty(ny * nx, dtype=np.int64)
    while nf > 0:
        for k in range(nf):
            j, i = front_j[k], front_i[k]
            s = 0.0
            n = 0
            for jj in range(max(j - 1, 0), min(j + 2, ny)):
                for ii in range(max(i - 1, 0), min(i + 2, nx)):
                    if filled[jj, ii]:
                        s += g[jj, ii]
                        n += 1
            vals[k] = s / n
        for k in range(nf):
            g[front_j[k], front_i[k]] = vals[k]
            filled[front_j[k], front_i[k]] = True
        nn = 0
        for k in range(nf):
            j, i = front_j[k], front_i[k]
            for jj in range(max(j - 1, 0), min(j + 2, ny)):
                for ii in range(max(i - 1, 0), min(i + 2, nx)):
                    if not queued[jj, ii]:
                        queued[jj, ii] = True
                        next_j[nn] = jj
                        next_i[nn] = ii
                        nn += 1
        front_j, next_j = next_j, front_j
        front_i, next_i = next_i, front_i
        nf = nn
    return g


@njit(cache=True)
def _line_minmax(src, dst, r, use_max):
    """Sliding min (or max) of a 1D line over a centred window of radius r, window
    clipped at the ends: van Herk / Gil-Werman, about 3 comparisons per element."""
    n = len(src)
    w = 2 * r + 1
    m = n + 2 * r
    pad = np.empty(m)
    for k in range(m):
        pad[k] = src[min(max(k - r, 0), n - 1)]
    g = np.empty(m)
    h = np.empty(m)
    for k in range(m):
        if k % w == 0:
            g[k] = pad[k]
        else:
            g[k] = max(g[k - 1], pad[k]) if use_max else min(g[k - 1], pad[k])
    for k in range(m - 1, -1, -1):
        if k == m - 1 or (k + 1) % w == 0:
            h[k] = pad[k]
        else:
            h[k] = max(h[k + 1], pad[k]) if use_max else min(h[k + 1], pad[k])
    for k in range(n):
        a = h[k]
        b = g[k + w - 1]
        dst[k] = max(a, b) if use_max else min(a, b)


@njit(cache=True, parallel=True)
def _filter2d(grid, r, use_max):
    ny, nx = grid.shape
    tmp = np.empty_like(grid)
    out = np.empty_like(grid)
    for j in prange(ny):
        _line_minmax(grid[j, :], tmp[j, :], r, use_max)
    for i in prange(nx):
        col = np.empty(ny)
        _line_minmax(tmp[:, i].copy(), col, r, use_max)
        out[:, i] = col
    return out


@njit(cache=True)
def opening(grid, radius):
    """Grey opening with a (2r+1)^2 square (separable), window clipped at borders.
    Work grows with the cells, not with the radius."""
    return _filter2d(_filter2d(grid, radius, False), radius, True)


@njit(cache=True)
def progressive_objects(surface, cell, slope, max_radius):
    """SMRF's progressive opening (see the reference): a bool grid of object cells."""
    prev = surface
    obj = np.zeros(surface.shape, dtype=np.bool_)
    ny, nx = surface.shape
    for r in range(1, max_radius + 1):
        op = opening(prev, r)
        t = slope * r * cell
        for j in range(ny):
            for i in range(nx):
                if prev[j, i] - op[j, i] > t:
                    obj[j, i] = True
        prev = op
    return obj


@njit(cache=True, parallel=True)
def bilinear(grid, x0, y0, cell, px, py):
    """Bilinear interpolation of cell-centre values at points (clamped at the edges)."""
    ny, nx = grid.shape
    out = np.empty(len(px))
    for k in prange(len(px)):
        fx = min(max((px[k] - x0) / cell - 0.5, 0.0), nx - 1.0)
        fy = min(max((py[k] - y0) / cell - 0.5, 0.0), ny - 1.0)
        i0 = min(int(np.floor(fx)), max(nx - 2, 0))
        j0 = min(int(np.floor(fy)), max(ny - 2, 0))
        i1 = min(i0 + 1, nx - 1)
        j1 = min(j0 + 1, ny - 1)
        tx = fx - i0
        ty = fy - j0
        out[k] = (
            grid[j0, i0] * (1 - tx) * (1 - ty)
            + grid[j0, i1] * tx * (1 - ty)
            + grid[j1, i0] * (1 - tx) * ty
            + grid[j1, i1] * tx * ty
        )
    return out
