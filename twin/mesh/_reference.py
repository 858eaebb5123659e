"""Plain Python/NumPy references for the Numba kernels (slow; for tests only).

Each function has the same inputs and outputs as its kernel in
:mod:`twin.mesh._kernels` and is written the obvious way (dicts, sets, deques,
brute force), so that a test comparing the two checks the kernel's cleverness
(hash tables, time-stamp FIFO, swap-remove adjacency) against the plain definition.
"""

from __future__ import annotations

from collections import deque

import numpy as np


def fifo_misses_ref(faces: np.ndarray, n_vertices: int, cache_size: int) -> tuple[int, int]:
    """FIFO cache simulation with an explicit deque: ``(misses, unique)``."""
    cache: deque[int] = deque()
    members: set[int] = set()
    seen: set[int] = set()
    misses = 0
    for tri in np.asarray(faces, np.int64).tolist():
        for v in tri:
            if v in members:
                continue
            misses += 1
            seen.add(v)
            cache.appendleft(v)
            members.add(v)
            if len(cache) > cache_size:
                members.discard(cache.pop())
    return misses, len(seen)


def first_use_ref(faces: np.ndarray, n_vertices: int):
    """``(new, count, inverse, out_faces)`` as
    :func:`~twin.mesh._kernels.first_use_kernel`, with a dict."""
    new = np.full(n_vertices, -1, np.int64)
    order: dict[int, int] = {}
    for v in np.asarray(faces, np.int64).ravel().tolist():
        if v not in order:
            order[v] = len(order)
    for v, r in order.items():
        new[v] = r
    inverse = np.array(list(order), np.int64)
    return new, len(order), inverse, new[np.asarray(faces, np.int64)].astype(np.uint32)


def weld_exact_ref(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Cluster identical rows by a dict of row bytes: ``(remap, first, count)``."""
    seen: dict[bytes, int] = {}
    remap = np.empty(keys.shape[0], np.int64)
    first = []
    for i in range(keys.shape[0]):
        key = keys[i].tobytes()
        if key not in seen:
            seen[key] = len(first)
            first.append(i)
        remap[i] = seen[key]
    return remap, np.array(first, np.int64), len(first)


def weld_grid_ref(
    pos: np.ndarray, attrs: np.ndarray, tol: float, cell: float = 0.0
) -> tuple[np.ndarray, np.ndarray, int]:
    """Brute-force greedy clustering: vertex i joins the lowest-index earlier
    representative within ``tol`` (Euclidean position, max-abs attributes)."""
    n = pos.shape[0]
    remap = np.empty(n, np.int64)
    reps: list[int] = []
    tol2 = tol * tol
    for i in range(n):
        if reps:
            r = np.array(reps)
            d = pos[r] - pos[i]
            ok = d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1] + d[:, 2] * d[:, 2] <= tol2
            if attrs.shape[1]:
                ok &= (np.abs(attrs[r] - attrs[i]) <= tol).all(axis=1)
            hit = np.flatnonzero(ok)
            if hit.size:
                remap[i] = remap[r[hit[0]]]
                continue
        remap[i] = len(reps)
        reps.append(i)
    return remap, np.array(reps, np.int64), len(reps)


def clean_faces_ref(faces: np.ndarray, remap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remap corners; keep faces that are not degenerate and not an earlier
    face's duplicate (same cyclic order)."""
    out = remap[np.asarray(faces, np.int64)]
    keep = np.zeros(out.shape[0], bool)
    seen: set[tuple[int, int, int]] = set()
    for t, (a, b, c) in enumerate(out.tolist()):
        if a == b or b == c or a == c:
            continue
        rots = [(a, b, c), (b, c, a), (c, a, b)]
        key = min(rots)
        if key not in seen:
            seen.add(key)
            keep[t] = True
    return out, keep


def vertex_cache_ref(
    faces: np.ndarray,
    n_vertices: int,
    cache_size: int,
    live_scores: np.ndarray,
    cache_score: int,
    urgent_slots: int = 2,
) -> np.ndarray:
    """The greedy FIFO cache ordering of
    :func:`~twin.mesh._kernels.vertex_cache_kernel`, with an explicit deque and every
    candidate's score and tie-break key recomputed from scratch each step."""
    f = [tuple(t) for t in np.asarray(faces, np.int64).tolist()]
    m = len(f)
    nl = len(live_scores)
    tris: list[set[int]] = [set() for _ in range(n_vertices)]
    for t, tri in enumerate(f):
        for v in tri:
            tris[v].add(t)
    fifo: deque[int] = deque()  # newest first

    def vscore(v: int) -> int:
        s = int(live_scores[min(len(tris[v]), nl - 1)])
        return s + (int(cache_score) if v in fifo else 0)

    def tscore(t: int) -> int:
        return sum(vscore(v) for v in f[t])

    def urgency(t: int) -> int:
        slots = list(fifo)
        return sum(1 for v in f[t] if v in fifo and slots.index(v) >= cache_size - urgent_slots)

    scores = [tscore(t) for t in range(m)]
    current = int(np.argmax(scores)) if m else -1
    emitted = [False] * m
    stack: list[int] = []
    order = []
    for _ in range(m):
        if current < 0:
            while stack and current < 0:
                v = stack.pop()
                if tris[v]:
                    current = min(tris[v])
            if current < 0:
                current = emitted.index(False)
        order.append(current)
        emitted[current] = True
        tri = f[current]
        for v in tri:
            tris[v].discard(current)
            if tris[v]:
                stack.append(v)
        for v in tri:  # corner by corner, exactly as the FIFO metric sees them
            if v not in fifo:
                fifo.appendleft(v)
                if len(fifo) > cache_size:
                    fifo.pop()
        cands = {t for v in fifo for t in tris[v]}
        current = max(cands, key=lambda t: (tscore(t), urgency(t), -t)) if cands else -1
    return np.array(order, np.int64)
