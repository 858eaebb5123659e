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


def simplify_loop_ref(
    V, F, N0, Q, kind, ib, partner, attrs, weights, target_faces, max_e2, pure, parts=1
):
    """The collapse loop of :func:`twin.mesh._simplify_kernels.simplify_kernel`, plainly.

    Same inputs (the prepared arrays of :func:`twin.mesh.simplify._prepare`; they are
    copied, not modified) and the same decisions: passes over every live edge sorted
    by ``(float32 key bits, a, b)`` with Python's ``sorted``, a set of vertices locked
    per pass, vertex -> face adjacency as dict of sets, link condition by set
    intersection. The per-number geometry (optimal position, face flip test,
    attribute penalty) is the kernels' own arithmetic run as Python (``.py_func``), so
    on small meshes the two must make the *same* collapses in the same order.
    ``parts`` (1 or 2): as the kernel's, each pass's collapses in two halves of the
    vertex order (the first half's, then the second's, then those of neither).
    Returns ``(falive, valive, e2max, log, into)``, ``log`` the list of (u, v) and
    ``into[u]`` the vertex u collapsed into (-1 if alive).
    """
    from twin.mesh._simplify_kernels import (
        INTERIOR,
        LOCKED,
        PASS_ERROR_FACTOR,
        SEAM,
        attr_penalty,
        face_ok,
    )
    from twin.mesh._simplify_kernels import plan_position as _pp

    plan_position = _pp.py_func
    face_ok = face_ok.py_func
    attr_penalty = attr_penalty.py_func
    V = np.array(V, np.float64)
    F = np.array(F, np.int64)
    Q = np.array(Q, np.float64)
    attrs = np.array(attrs, np.float64)
    n, m = V.shape[0], F.shape[0]
    faces_of: dict[int, set[int]] = {i: set() for i in range(n)}
    for f in range(m):
        for k in range(3):
            faces_of[int(F[f, k])].add(f)
    falive = np.ones(m, np.uint8)
    valive = np.ones(n, np.uint8)
    into = np.full(n, -1, np.int64)

    def edge_faces(a, b):
        return [f for f in faces_of[a] if b in F[f]]

    def neighbours(a):
        return {int(w) for f in faces_of[a] for w in F[f]} - {a}

    def plan(u, v):
        ku, kv = kind[u], kind[v]
        if ku == LOCKED:
            return None
        q = Q[u] + Q[v]
        optimal = False
        if ku == INTERIOR:
            optimal = kv == INTERIOR
        elif ku == SEAM:
            if kv != SEAM or len(edge_faces(u, v)) != 1:
                return None
            if len(edge_faces(int(partner[u]), int(partner[v]))) != 1:
                return None
            q = q + (Q[partner[u]] + Q[partner[v]])
        else:
            if kv not in (1, LOCKED) or len(edge_faces(u, v)) != 1:
                return None
        x, y, z, e = plan_position(q, *V[u], *V[v], optimal)
        w = q[10]
        e2 = max(e / w if w > 0.0 else 0.0, 0.0)
        key = e2
        if attrs.shape[1] > 0:
            key += attr_penalty(attrs, weights, u, v)
            if ku == SEAM:
                key += attr_penalty(attrs, weights, partner[u], partner[v])
        return key, e2, x, y, z

    def best(a, b):
        p1 = plan(a, b)
        if kind[a] == INTERIOR and kind[b] == INTERIOR:
            return (p1[0], a, b) if p1 else None
        p2 = plan(b, a)
        if p1 and (not p2 or p1[0] <= p2[0]):
            return p1[0], a, b
        return (p2[0], b, a) if p2 else None

    def bits(key):
        return int(np.array([key], np.float32).view(np.uint32)[0])

    def unbits(b):
        return float(np.array([b], np.uint32).view(np.float32)[0])

    def link_ok(u, v):
        shared = len(edge_faces(u, v))
        if shared == 0 or (ib[u] and ib[v] and shared != 1) or len(faces_of[u]) <= shared:
            return False
        return len((neighbours(u) & neighbours(v)) - {u, v}) == shared

    def fan_ok(u, v, p):
        for f in faces_of[u]:
            k = list(F[f]).index(u)
            b, c = int(F[f, (k + 1) % 3]), int(F[f, (k + 2) % 3])
            if b != v and c != v and not face_ok(*V[u], *V[b], *V[c], *p, *N0[f]):
                return False
        return True

    def collapse(u, v, p):
        d = V[v] - V[u]
        ll = float(d @ d)
        t = 1.0
        if ll > 0.0:
            t = ((p[0] - V[u, 0]) * d[0] + (p[1] - V[u, 1]) * d[1] + (p[2] - V[u, 2]) * d[2]) / ll
            t = min(1.0, max(0.0, t))
        attrs[v] = (1.0 - t) * attrs[u] + t * attrs[v]
        removed = 0
        for f in list(faces_of[u]):
            if v in F[f]:
                falive[f] = 0
                removed += 1
                for w in F[f]:
                    faces_of[int(w)].discard(f)
            else:
                F[f][F[f] == u] = v
                faces_of[v].add(f)
        faces_of[u] = set()
        Q[v] += Q[u]
        V[v] = p
        valive[u] = 0
        into[u] = v
        return removed

    def run(cands, owner, want, locked, error_goal, goal, removed, limit):
        """Collapse down cands[:limit] whose owner is ``want`` (owner None: all)
        until ``removed`` reaches ``goal`` or the error goal; returns (removed,
        collapses, e2 max, index of a max_e2 stop or None)."""
        collapses, emax = 0, 0.0
        for i, (kb, _, _, u, v) in enumerate(cands[:limit]):
            if removed >= goal:
                break
            if unbits(kb) > error_goal and removed > goal // 10:
                break
            if owner is not None and owner[i] != want:
                continue
            seam = kind[u] == SEAM
            pu, pv = int(partner[u]), int(partner[v])
            if u in locked or v in locked or (seam and (pu in locked or pv in locked)):
                continue
            r = plan(u, v)
            if r is None or bits(r[0]) != kb:
                continue
            key, e2, x, y, z = r
            if e2 > max_e2:
                if pure:
                    return removed, collapses, emax, i
                continue
            p = (x, y, z)
            if not (link_ok(u, v) and fan_ok(u, v, p)):
                continue
            if seam and not (link_ok(pu, pv) and fan_ok(pu, pv, p)):
                continue
            if tuple(V[v]) != p and not fan_ok(v, u, p):
                continue
            r = collapse(u, v, p)
            locked.update((u, v))
            if seam:
                r += collapse(pu, pv, p)
                locked.update((pu, pv))
            removed += r
            collapses += 1
            log.append((u, v))
            emax = max(emax, e2)
        return removed, collapses, emax, None

    faces_left, e2max, log = m, 0.0, []
    stop = False
    while faces_left > target_faces and not stop:
        cands = []
        for a in range(n):
            if not valive[a]:
                continue
            for b in neighbours(a):
                if b > a and (kind[a] != LOCKED or kind[b] != LOCKED):
                    r = best(a, b)
                    if r:
                        cands.append((bits(r[0]), a, b, r[1], r[2]))
        cands.sort(key=lambda c: c[:3])
        goal = faces_left - target_faces
        error_goal = np.inf
        if goal // 2 < len(cands):
            error_goal = PASS_ERROR_FACTOR * unbits(cands[goal // 2][0])
        locked: set[int] = set()
        removed = collapses = 0
        limit = len(cands)
        owner, want = None, None
        if parts == 2:
            # two halves of the vertex order; a candidate belongs to one when its
            # ends (and seam partners) have no live face reaching into the other
            split = n // 2
            inner = np.ones(n, bool)
            for f in np.flatnonzero(falive):
                side = F[f] >= split
                if side.min() != side.max():
                    inner[F[f]] = False
            owner = []
            for _, _, _, u, v in cands:
                ends = [u, v]
                if kind[u] == SEAM:
                    ends += [int(partner[u]), int(partner[v])]
                half = int(u >= split)
                ok = all(inner[w] and int(w >= split) == half for w in ends)
                owner.append(half if ok else -1)
            # each half's share of the goal: its share of the candidates keyed up to
            # the error goal
            upto = [o for (kb, *_), o in zip(cands, owner, strict=True) if unbits(kb) <= error_goal]
            goals = [goal * upto.count(half) // max(len(upto), 1) for half in (0, 1)]
            for part in (0, 1):
                r, c, e, at = run(
                    cands, owner, part, locked, error_goal, goals[part], 0, len(cands)
                )
                removed += r
                collapses += c
                e2max = max(e2max, e)
                if at is not None:
                    limit = min(limit, at)
                    stop = True
            want = -1
            rest = goal - sum(goals)  # the seam's share, and what rounded off
        else:
            rest = goal
        r, c, e, at = run(cands, owner, want, locked, error_goal, rest, 0, limit)
        stop = stop or at is not None
        removed += r
        collapses += c
        e2max = max(e2max, e)
        if parts == 2 and collapses == 0 and not stop:
            # nothing collapsed within the shares: the pass again as one part
            r, c, e, at = run(cands, None, None, locked, error_goal, goal, 0, len(cands))
            stop = at is not None
            removed += r
            collapses += c
            e2max = max(e2max, e)
        faces_left -= removed
        if collapses == 0:
            break
    return falive, valive, e2max, log, into
