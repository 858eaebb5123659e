"""Numba kernels for post-transform vertex cache work: FIFO simulation, triangle
reordering (Forsyth-style scoring), first-use vertex order.

The plain-Python twins are in :mod:`twin.mesh._reference`; tests compare them.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_NEVER = -(2**40)


@njit(cache=True)
def fifo_misses_kernel(faces, n_vertices, cache_size):
    """Simulate a FIFO post-transform cache of ``cache_size`` entries.

    Returns ``(misses, unique)``: the number of vertex transforms (cache misses) when
    ``faces`` (uint32 (M, 3)) is drawn in order, and the number of distinct
    vertices referenced. O(M) time; memory one int64 per vertex.

    A vertex is in the cache iff fewer than ``cache_size`` misses happened since it
    was last inserted (a time-stamp FIFO: hits do not refresh it).
    """
    stamp = np.full(n_vertices, _NEVER, np.int64)
    misses = 0
    unique = 0
    for t in range(faces.shape[0]):
        for k in range(3):
            v = faces[t, k]
            if misses - stamp[v] > cache_size:
                if stamp[v] == _NEVER:
                    unique += 1
                stamp[v] = misses
                misses += 1
    return misses, unique


@njit(cache=True)
def first_use_kernel(faces, n_vertices):
    """Vertex order of first use: ``new[v]`` = rank of v's first reference, -1 if unused.

    Returns ``(new, count)``. O(M + N); memory one int64 per vertex.
    """
    new = np.full(n_vertices, -1, np.int64)
    count = 0
    for t in range(faces.shape[0]):
        for k in range(3):
            v = faces[t, k]
            if new[v] < 0:
                new[v] = count
                count += 1
    return new, count


@njit(cache=True)
def vertex_cache_kernel(faces, n_vertices, cache_size, cache_scores, live_scores, fifo):
    """Reorder triangles for a small post-transform cache; returns the triangle order.

    Greedy Forsyth-style ordering on a simulated LRU cache of ``cache_size`` entries.
    Vertex score = ``cache_scores[position]`` (0 outside the cache) +
    ``live_scores[min(live, len-1)]`` (live = not yet emitted triangles using the
    vertex; ``live_scores[0]`` should be 0). Triangle score = sum of its three vertex
    scores. Each step emits the best-scoring live triangle adjacent to a cached vertex
    (ties: lowest triangle index); if there is none, the first live triangle in input
    order. Only triangles around the <= cache_size + 3 touched vertices are rescored,
    so time is O(M * cache_size * mean valence), linear in M.

    Memory: a vertex -> triangle adjacency (3 M int32 + N int64), 3 per-vertex arrays,
    a per-triangle flag and the int64 order: about 25 bytes per triangle.
    """
    m = faces.shape[0]
    nl = live_scores.shape[0]
    live = np.zeros(n_vertices, np.int32)
    for t in range(m):
        for k in range(3):
            live[faces[t, k]] += 1
    offsets = np.empty(n_vertices + 1, np.int64)
    offsets[0] = 0
    for v in range(n_vertices):
        offsets[v + 1] = offsets[v] + live[v]
    adj = np.empty(3 * m, np.int32)
    fill = offsets[:-1].copy()
    for t in range(m):
        for k in range(3):
            v = faces[t, k]
            adj[fill[v]] = t
            fill[v] += 1

    pos = np.full(n_vertices, -1, np.int32)
    vscore = np.empty(n_vertices, np.float64)
    for v in range(n_vertices):
        lv = live[v]
        vscore[v] = live_scores[lv if lv < nl else nl - 1]
    best = 0
    best_score = -1.0
    for t in range(m):
        s = vscore[faces[t, 0]] + vscore[faces[t, 1]] + vscore[faces[t, 2]]
        if s > best_score:
            best_score = s
            best = t
    emitted = np.zeros(m, np.bool_)
    cache = np.empty(cache_size + 3, np.int64)
    new_cache = np.empty(cache_size + 3, np.int64)
    cache_n = 0
    order = np.empty(m, np.int64)
    cursor = 0
    stack = np.empty(3 * m, np.int64)
    top = 0
    current = best
    for i in range(m):
        if current < 0:
            # dead end: resume beside the most recently touched vertex that still has
            # live triangles (keeps the processed front compact), else input order
            while top > 0 and current < 0:
                top -= 1
                v = stack[top]
                if live[v] > 0:
                    start = offsets[v]
                    current = adj[start]
                    for q in range(start + 1, start + live[v]):
                        if adj[q] < current:
                            current = adj[q]
            if current < 0:
                while emitted[cursor]:
                    cursor += 1
                current = cursor
        order[i] = current
        emitted[current] = True
        a = np.int64(faces[current, 0])
        b = np.int64(faces[current, 1])
        c = np.int64(faces[current, 2])
        new_n = 0
        if fifo:
            # FIFO model: only misses enter (at the front), hits keep their slot
            for k in range(3):
                v = np.int64(faces[current, k])
                if pos[v] < 0:
                    new_cache[new_n] = v
                    new_n += 1
            for j in range(cache_n):
                new_cache[new_n] = cache[j]
                new_n += 1
        else:
            new_cache[0] = a
            new_cache[1] = b
            new_cache[2] = c
            new_n = 3
            for j in range(cache_n):
                v = cache[j]
                if v != a and v != b and v != c:
                    new_cache[new_n] = v
                    new_n += 1
        # drop the emitted triangle from its corners' live adjacency (swap-remove)
        for k in range(3):
            v = faces[current, k]
            start = offsets[v]
            end = start + live[v] - 1
            for q in range(start, end + 1):
                if adj[q] == current:
                    adj[q] = adj[end]
                    adj[end] = current
                    break
            live[v] -= 1
            if live[v] > 0:
                stack[top] = v
                top += 1
        for j in range(new_n):
            v = new_cache[j]
            p = j if j < cache_size else -1
            pos[v] = p
            lv = live[v]
            s = live_scores[lv if lv < nl else nl - 1]
            if p >= 0:
                s += cache_scores[p]
            vscore[v] = s
        best = -1
        best_score = -1.0
        cache_n = new_n if new_n < cache_size else cache_size
        for j in range(cache_n):
            v = new_cache[j]
            start = offsets[v]
            for q in range(start, start + live[v]):
                t = adj[q]
                s = vscore[faces[t, 0]] + vscore[faces[t, 1]] + vscore[faces[t, 2]]
                if s > best_score or (s == best_score and t < best):
                    best_score = s
                    best = t
        for j in range(cache_n):
            cache[j] = new_cache[j]
        current = best
    return order
