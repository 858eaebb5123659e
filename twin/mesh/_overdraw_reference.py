"""Plain-Python twins of :mod:`twin.mesh._overdraw_kernels` (slow, for tests): an
explicit FIFO deque for the cache, per-pixel barycentric tests for the rasteriser."""

from __future__ import annotations

from collections import deque

import numpy as np


def _misses(tris, cache_size, fifo):
    """FIFO misses of drawing ``tris`` into ``fifo`` (newest first), updating it."""
    n = 0
    for tri in tris:
        for v in tri:
            if v not in fifo:
                fifo.appendleft(v)
                if len(fifo) > cache_size:
                    fifo.pop()
                n += 1
    return n


def hard_boundaries_ref(faces, n_vertices, cache_size):
    f = [tuple(t) for t in np.asarray(faces, np.int64).tolist()]
    fifo: deque[int] = deque()
    out = []
    total = 0
    for t, tri in enumerate(f):
        m = _misses([tri], cache_size, fifo)
        total += m
        if m == 3 or t == 0:
            out.append(t)
    return np.array(out, np.int64), total


def soft_boundaries_ref(faces, n_vertices, cache_size, hard, threshold):
    f = [tuple(t) for t in np.asarray(faces, np.int64).tolist()]
    m = len(f)
    hard = list(hard)
    out = []
    for h, s in enumerate(hard):
        e = hard[h + 1] if h + 1 < len(hard) else m
        limit = threshold * _misses(f[s:e], cache_size, deque()) / (e - s)
        first = len(out)
        out.append(s)
        fifo: deque[int] = deque()
        run_m = run_f = 0
        for t in range(s, e):
            run_m += _misses([f[t]], cache_size, fifo)
            run_f += 1
            if run_m <= limit * run_f and t + 1 < e:
                out.append(t + 1)
                fifo = deque()
                run_m = run_f = 0
        if run_f and run_m > limit * run_f and len(out) - 1 > first:
            out.pop()
    return np.array(out, np.int64)


def cluster_keys_ref(vertices, faces, starts):
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    ar = np.linalg.norm(np.cross(b - a, c - a), axis=1)
    if ar.sum() > 0:
        centre = (ar[:, None] * (a + b + c)).sum(axis=0) / (3 * ar.sum())
    else:
        centre = v.mean(axis=0)
    bounds = list(starts) + [len(f)]
    keys = []
    for s, e in zip(bounds[:-1], bounds[1:], strict=True):
        a, b, c = v[f[s:e, 0]], v[f[s:e, 1]], v[f[s:e, 2]]
        cross = np.cross(b - a, c - a)
        ar = np.linalg.norm(cross, axis=1)
        n = cross.sum(axis=0)
        if ar.sum() > 0 and np.linalg.norm(n) > 0:
            cen = (ar[:, None] * (a + b + c)).sum(axis=0) / (3 * ar.sum())
            keys.append(float(np.dot(cen - centre, n / np.linalg.norm(n))))
        else:
            keys.append(0.0)
    return np.array(keys), centre


def rasterise_overdraw_ref(p, faces, size):
    zbuf = [np.full((size, size), -np.inf), np.full((size, size), np.inf)]
    count = np.zeros((2, size, size), np.int64)
    for i0, i1, i2 in np.asarray(faces, np.int64).tolist():
        (x0, y0, z0), (x1, y1, z1), (x2, y2, z2) = p[i0], p[i1], p[i2]
        det = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        if det == 0:
            continue
        side = 0
        if det < 0:
            side = 1
            x1, y1, z1, x2, y2, z2 = x2, y2, z2, x1, y1, z1
            det = -det
        edges = [
            (y1 - y2, x2 - x1, x1 * y2 - x2 * y1),
            (y2 - y0, x0 - x2, x2 * y0 - x0 * y2),
            (y0 - y1, x1 - x0, x0 * y1 - x1 * y0),
        ]
        for iy in range(size):
            for ix in range(size):
                px, py = ix + 0.5, iy + 0.5
                w = [a * px + b * py + c for a, b, c in edges]
                inside = all(
                    wk > 0 or (wk == 0 and (a > 0 or (a == 0 and b < 0)))
                    for wk, (a, b, _) in zip(w, edges, strict=True)
                )
                if not inside:
                    continue
                z = (w[0] * z0 + w[1] * z1 + w[2] * z2) / det
                nearer = z > zbuf[0][iy, ix] if side == 0 else z < zbuf[1][iy, ix]
                if nearer:
                    zbuf[side][iy, ix] = z
                    count[side, iy, ix] += 1
    return int(count.sum()), int((count > 0).sum())
