"""Numba kernels for post-transform vertex cache work: FIFO simulation, triangle
reordering (Forsyth-style scoring), first-use vertex order.

The plain-Python twins are in :mod:`twin.mesh._reference`; tests compare them.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_NEVER = -(2**40)
_NEVER32 = -(2**31)
_LOW32 = 2**32 - 1  # int32 stamps: misses stay below 2**31 (meshes below ~700 M triangles)


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

    Returns ``(new int64 (N,), count, inverse int64 (count,), out_faces uint32 (M, 3))``
    where ``inverse[r]`` is the input vertex of rank r and ``out_faces = new[faces]``.
    One pass, O(M + N); memory one int64 per vertex plus the outputs.
    """
    m = faces.shape[0]
    new = np.full(n_vertices, -1, np.int64)
    inverse = np.empty(n_vertices, np.int64)
    out = np.empty((m, 3), np.uint32)
    count = 0
    for t in range(m):
        for k in range(3):
            v = faces[t, k]
            r = new[v]
            if r < 0:
                r = count
                new[v] = r
                inverse[r] = v
                count += 1
            out[t, k] = r
    return new, count, inverse[:count], out


@njit(cache=True)
def take_faces_kernel(faces, order):
    """``faces[order]`` for uint32 (M, 3) faces: a row gather, ~3x NumPy's fancy
    indexing of (M, 3) rows. Memory: the output."""
    out = np.empty((order.shape[0], 3), np.uint32)
    for i in range(order.shape[0]):
        t = order[i]
        out[i, 0] = faces[t, 0]
        out[i, 1] = faces[t, 1]
        out[i, 2] = faces[t, 2]
    return out


#: FIFO slots at the tail of the cache whose vertices count as about to be evicted.
URGENT_SLOTS = 2


@njit(cache=True)
def vertex_cache_kernel(faces, n_vertices, cache_size, live_scores, cache_score):
    """Reorder triangles for a FIFO post-transform cache; returns the triangle order.

    Greedy ordering (Forsyth-style scoring, own design) on a simulated FIFO cache of
    ``cache_size`` entries, exactly the cache :func:`fifo_misses_kernel` measures.
    Integer scores: vertex score = ``cache_score`` if cached +
    ``live_scores[min(live, len - 1)]`` (live = triangles using the vertex not yet
    drawn; ``live_scores[0]`` should be 0); triangle score = the sum over its corners.
    Each step draws, among the live triangles around cached vertices, the one with
    the highest score; ties go to the triangle with most corners in the last
    ``URGENT_SLOTS`` FIFO slots (use a vertex once more just before the FIFO drops
    it), then to the lowest index. With no
    candidate (dead end) it resumes at the lowest-index live triangle of the most
    recently drawn vertex that still has some, else the first live triangle in input
    order. Only vertices whose score changed (drawn corners, inserted and evicted
    vertices) pass the change on to their triangles (``tscore += delta``), so a step
    costs O(cache_size * valence): linear in M overall. Candidates are compared as
    one int64 key each (branch-free); only the triangles of the URGENT_SLOTS oldest
    cached vertices can have a nonzero urgency, so only they compute it. Triangles
    must not be degenerate (no repeated index).

    Memory: vertex -> triangle adjacency (3 M int32 + N int64), 3 per-vertex int32
    arrays, per-triangle int32 score + flag, the 3 M int32 dead-end stack and the int64
    order: about 40 bytes per triangle. Stamps are int32: up to ~700 M triangles.
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

    stamp = np.full(n_vertices, _NEVER32, np.int32)
    vscore = np.empty(n_vertices, np.int32)
    for v in range(n_vertices):
        lv = live[v]
        vscore[v] = live_scores[lv if lv < nl else nl - 1]
    tscore = np.empty(m, np.int32)
    best = 0
    best_score = np.int32(-1)
    for t in range(m):
        s = vscore[faces[t, 0]] + vscore[faces[t, 1]] + vscore[faces[t, 2]]
        tscore[t] = s
        if s > best_score:
            best_score = s
            best = t
    emitted = np.zeros(m, np.bool_)
    ring = np.empty(cache_size, np.int32)
    # per FIFO slot: its vertex's adjacency start and live count (saves two
    # dependent loads per cached vertex in the candidate scan)
    ring_start = np.zeros(cache_size, np.int64)
    ring_live = np.zeros(cache_size, np.int32)
    head = 0  # the slot the next miss fills (= misses % cache_size)
    changed = np.empty(9, np.int32)
    urgent = np.empty(URGENT_SLOTS, np.int32)
    misses = 0
    order = np.empty(m, np.int64)
    cursor = 0
    stack = np.empty(3 * m, np.int32)
    top = 0
    current = best
    for i in range(m):
        if current < 0:
            # dead end: resume beside the most recently drawn vertex that still has
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
        n_changed = 0
        for k in range(3):
            v = np.int64(faces[current, k])
            # drop the drawn triangle from v's live adjacency (swap-remove)
            start = offsets[v]
            end = start + live[v] - 1
            for q in range(start, end + 1):
                if adj[q] == current:
                    adj[q] = adj[end]
                    adj[end] = current
                    break
            live[v] -= 1
            if misses - stamp[v] <= cache_size:  # cached: keep its slot's count
                ring_live[stamp[v] % cache_size] = live[v]
            if live[v] > 0:
                stack[top] = v
                top += 1
            changed[n_changed] = v
            n_changed += 1
        for k in range(3):
            v = np.int64(faces[current, k])
            if misses - stamp[v] > cache_size:  # a miss: v enters the FIFO
                if misses >= cache_size:
                    changed[n_changed] = ring[head]  # evicted
                    n_changed += 1
                ring[head] = v
                ring_start[head] = offsets[v]
                ring_live[head] = live[v]
                stamp[v] = misses
                misses += 1
                head += 1
                if head == cache_size:
                    head = 0
        for j in range(n_changed):
            v = changed[j]
            lv = live[v]
            s = live_scores[lv if lv < nl else nl - 1]
            if misses - stamp[v] <= cache_size:
                s += cache_score
            delta = s - vscore[v]
            if delta != 0:
                # triangle score = sum of its corners' scores: add the change
                vscore[v] = s
                start = offsets[v]
                for q in range(start, start + lv):
                    t = adj[q]
                    if t < 0:  # never (see the candidate scan)
                        break
                    tscore[t] += delta
        # candidates: the live triangles around cached vertices; key = (score,
        # urgency, -index). Urgency counts corners in the last URGENT_SLOTS FIFO
        # slots, so only the triangles of those (oldest) vertices can have any: scan
        # them first with their exact urgency, then the rest with urgency 0 (an
        # underestimate only for triangles already seen with their exact key).
        cache_n = misses if misses < cache_size else cache_size
        # one int64 key per candidate, compared branch-free:
        # score << 34 | urgency << 32 | (2**32 - 1 - index)
        best_key = np.int64(-1)
        n_urgent = 0
        for j in range(URGENT_SLOTS):
            # the vertex at FIFO age cache_size - j (1 = newest) exists once
            # misses >= cache_size - j; it sits in ring slot (head + j) % cache_size
            if misses >= cache_size - j:
                slot = head + j
                if slot >= cache_size:
                    slot -= cache_size
                urgent[n_urgent] = ring[slot]
                n_urgent += 1
                start = ring_start[slot]
                for q in range(start, start + ring_live[slot]):
                    t = adj[q]
                    u = 0
                    for k in range(3):
                        w = faces[t, k]
                        for i2 in range(n_urgent):
                            if w == urgent[i2]:
                                u += 1
                    key = (np.int64(tscore[t]) << 34) | (u << 32) | (_LOW32 - t)
                    best_key = max(best_key, key)
        for j in range(cache_n):
            start = ring_start[j]
            for q in range(start, start + ring_live[j]):
                t = adj[q]
                if t < 0:  # never: an early exit keeps LLVM from vectorising
                    break  # this short loop with gathers (slower on lists of 1-6)
                key = (np.int64(tscore[t]) << 34) | (_LOW32 - t)
                best_key = max(best_key, key)
        best = -1 if best_key < 0 else _LOW32 - (best_key & _LOW32)
        current = best
    return order
