"""Numba kernels for welding: exact-duplicate hashing, tolerance grid, face cleanup.

All kernels are sequential (a weld is a first-occurrence clustering: the result
depends on vertex order by definition, and a hash-table pass is memory bound), run in
O(N + M) expected time and allocate a hash table of at most ``4 * N`` int64 slots plus
the output arrays. Their plain-Python twins live in :mod:`twin.mesh._reference`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_S33 = np.uint64(33)


@njit(cache=True, inline="always")
def _fmix(x):
    x ^= x >> _S33
    x *= _M1
    x ^= x >> _S33
    x *= _M2
    x ^= x >> _S33
    return x


@njit(cache=True)
def _capacity(n):
    cap = 16
    while cap < 2 * n:
        cap <<= 1
    return cap


@njit(cache=True)
def weld_exact_kernel(keys):
    """Cluster identical rows of ``keys`` (uint64 (N, K) bit patterns).

    Returns ``(remap, first, count)``: ``remap[i]`` is the cluster id of row i,
    numbered in order of first occurrence; ``first[c]`` is the first row of cluster c
    (only the first ``count`` entries are valid). Memory: table of 2-4 N int64.
    """
    n, k = keys.shape
    cap = _capacity(n)
    mask = np.uint64(cap - 1)
    table = np.full(cap, -1, np.int64)
    remap = np.empty(n, np.int64)
    first = np.empty(n, np.int64)
    count = 0
    for i in range(n):
        h = np.uint64(k)
        for j in range(k):
            h = _fmix(h ^ (keys[i, j] + _GOLD))
        s = h & mask
        while True:
            r = table[s]
            if r < 0:
                table[s] = i
                remap[i] = count
                first[count] = i
                count += 1
                break
            same = True
            for j in range(k):
                if keys[r, j] != keys[i, j]:
                    same = False
                    break
            if same:
                remap[i] = remap[r]
                break
            s = (s + np.uint64(1)) & mask
    return remap, first, count


@njit(cache=True, inline="always")
def _cell_hash(cx, cy, cz):
    h = _fmix(np.uint64(cx) + _GOLD)
    h = _fmix(h ^ (np.uint64(cy) + _GOLD))
    return _fmix(h ^ (np.uint64(cz) + _GOLD))


@njit(cache=True)
def weld_grid_kernel(pos, attrs, tol, cell):
    """Greedy tolerance clustering on a spatial hash grid.

    Vertices are visited in order; vertex i joins the lowest-index earlier
    *representative* r with ``|p_i - p_r| <= tol`` (Euclidean, metres or the mesh's
    unit) and ``max |a_i - a_r| <= tol`` over the attribute columns, else it becomes
    a representative itself. Representatives are hashed into cubic cells of side
    ``cell`` (>= tol; the caller passes 2 tol so rounding can never push a pair within
    ``tol`` two cells apart) and only the 27 neighbouring cells are searched.
    Returns ``(remap, first, count)`` as :func:`weld_exact_kernel`.
    Memory: grows with N (a 2-4 N slot cell table, 3 int64 keys per slot).
    """
    n = pos.shape[0]
    ka = attrs.shape[1]
    cap = _capacity(n)
    mask = np.uint64(cap - 1)
    ckey = np.empty((cap, 3), np.int64)
    chead = np.full(cap, -1, np.int64)
    used = np.zeros(cap, np.bool_)
    nxt = np.full(n, -1, np.int64)
    remap = np.empty(n, np.int64)
    first = np.empty(n, np.int64)
    count = 0
    tol2 = tol * tol
    for i in range(n):
        x = pos[i, 0]
        y = pos[i, 1]
        z = pos[i, 2]
        cx = np.int64(np.floor(x / cell))
        cy = np.int64(np.floor(y / cell))
        cz = np.int64(np.floor(z / cell))
        best = -1
        for dx in range(-1, 2):
            for dy in range(-1, 2):
                for dz in range(-1, 2):
                    qx = cx + dx
                    qy = cy + dy
                    qz = cz + dz
                    s = _cell_hash(qx, qy, qz) & mask
                    while used[s]:
                        if ckey[s, 0] == qx and ckey[s, 1] == qy and ckey[s, 2] == qz:
                            break
                        s = (s + np.uint64(1)) & mask
                    if not used[s]:
                        continue
                    r = chead[s]
                    while r >= 0:
                        if best < 0 or r < best:
                            ddx = pos[r, 0] - x
                            ddy = pos[r, 1] - y
                            ddz = pos[r, 2] - z
                            if ddx * ddx + ddy * ddy + ddz * ddz <= tol2:
                                ok = True
                                for j in range(ka):
                                    if abs(attrs[r, j] - attrs[i, j]) > tol:
                                        ok = False
                                        break
                                if ok:
                                    best = r
                        r = nxt[r]
        if best >= 0:
            remap[i] = remap[best]
            continue
        remap[i] = count
        first[count] = i
        count += 1
        s = _cell_hash(cx, cy, cz) & mask
        while used[s]:
            if ckey[s, 0] == cx and ckey[s, 1] == cy and ckey[s, 2] == cz:
                break
            s = (s + np.uint64(1)) & mask
        if not used[s]:
            used[s] = True
            ckey[s, 0] = cx
            ckey[s, 1] = cy
            ckey[s, 2] = cz
        nxt[i] = chead[s]
        chead[s] = i
    return remap, first, count


@njit(cache=True)
def clean_faces_kernel(faces, remap):
    """Remap face corners and flag the faces to keep.

    ``faces`` uint32 (M, 3), ``remap`` int64 vertex -> cluster. A face is dropped when
    two corners land on the same cluster (degenerate) or when an earlier kept face has
    the same three clusters in the same cyclic order (duplicate; a face with the
    opposite winding is a different face and is kept). Returns ``(new_faces int64
    (M, 3), keep bool (M,))``. Memory: a 2-4 M slot table.
    """
    m = faces.shape[0]
    out = np.empty((m, 3), np.int64)
    keep = np.zeros(m, np.bool_)
    cap = _capacity(m)
    mask = np.uint64(cap - 1)
    table = np.full(cap, -1, np.int64)
    for t in range(m):
        a = remap[faces[t, 0]]
        b = remap[faces[t, 1]]
        c = remap[faces[t, 2]]
        out[t, 0] = a
        out[t, 1] = b
        out[t, 2] = c
        if a == b or b == c or a == c:
            continue
        # canonical rotation: smallest index first, winding kept
        if b < a and b < c:
            a, b, c = b, c, a
        elif c < a and c < b:
            a, b, c = c, a, b
        s = _cell_hash(a, b, c) & mask
        dup = False
        while True:
            r = table[s]
            if r < 0:
                table[s] = t
                break
            ra = out[r, 0]
            rb = out[r, 1]
            rc = out[r, 2]
            if rb < ra and rb < rc:
                ra, rb, rc = rb, rc, ra
            elif rc < ra and rc < rb:
                ra, rb, rc = rc, ra, rb
            if ra == a and rb == b and rc == c:
                dup = True
                break
            s = (s + np.uint64(1)) & mask
        keep[t] = not dup
    return out, keep
