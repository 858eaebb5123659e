"""Numba kernels for overdraw work: cluster boundaries on a cache-ordered triangle
list, per-cluster outward-facing sort keys, and a small software rasteriser that
counts pixel writes (depth-test passes) against covered pixels.

The plain-Python twins are in :mod:`twin.mesh._overdraw_reference`; tests compare them.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_NEVER = -(2**40)


@njit(cache=True)
def hard_boundaries_kernel(faces, n_vertices, cache_size):
    """Cluster starts where the cache order jumps to a new patch: triangle 0 and
    every triangle whose three corners all miss the FIFO cache of ``cache_size``.

    Returns ``(starts int64 ascending, first 0; misses)``, ``misses`` being the
    FIFO misses of the whole list (its ACMR times M). O(M); memory one int64 per
    vertex plus the starts."""
    m = faces.shape[0]
    stamp = np.full(n_vertices, _NEVER, np.int64)
    out = np.empty(m, np.int64)
    k = 0
    misses = 0
    for t in range(m):
        tm = 0
        for c in range(3):
            v = faces[t, c]
            if misses - stamp[v] > cache_size:
                stamp[v] = misses
                misses += 1
                tm += 1
        if t == 0 or tm == 3:
            out[k] = t
            k += 1
    return out[:k], misses


@njit(cache=True)
def soft_boundaries_kernel(faces, n_vertices, cache_size, hard, threshold):
    """Split each hard cluster into the shortest runs whose own ACMR (FIFO cache
    emptied at the run's start) is at most ``threshold`` times the hard cluster's
    ACMR (measured the same way). A trailing run that never gets there joins the
    run before it. Returns int64 starts (ascending, a superset of ``hard``).

    Emptying the cache at every start only over-counts misses, so the triangle
    list reordered by whole runs keeps its ACMR near ``threshold`` times the
    input's. O(M); memory one int64 per vertex plus the starts."""
    m = faces.shape[0]
    stamp = np.full(n_vertices, _NEVER, np.int64)
    out = np.empty(m, np.int64)
    k = 0
    misses = 0
    nh = hard.shape[0]
    for h in range(nh):
        s = hard[h]
        e = hard[h + 1] if h + 1 < nh else m
        misses += cache_size + 1  # empty the cache
        cluster_misses = 0
        for t in range(s, e):
            for c in range(3):
                v = faces[t, c]
                if misses - stamp[v] > cache_size:
                    stamp[v] = misses
                    misses += 1
                    cluster_misses += 1
        limit = threshold * cluster_misses / (e - s)
        first = k
        out[k] = s
        k += 1
        misses += cache_size + 1
        run_misses = 0
        run_faces = 0
        for t in range(s, e):
            for c in range(3):
                v = faces[t, c]
                if misses - stamp[v] > cache_size:
                    stamp[v] = misses
                    misses += 1
                    run_misses += 1
            run_faces += 1
            if run_misses <= limit * run_faces and t + 1 < e:
                out[k] = t + 1
                k += 1
                misses += cache_size + 1
                run_misses = 0
                run_faces = 0
        if run_faces > 0 and run_misses > limit * run_faces and k - 1 > first:
            k -= 1  # a trailing run above the limit joins the run before it
    return out[:k]


@njit(cache=True)
def cluster_keys_kernel(vertices, faces, starts):
    """How much each cluster faces outward: ``dot(c - centre, n)`` with c the
    cluster's area-weighted centroid, n its unit area-weighted normal and centre the
    area-weighted centroid of the whole surface (the vertex mean if its area is 0);
    0 for a cluster of zero area or zero summed normal.

    Returns ``(keys float64 (C,), centre float64 (3,))``. One pass over the
    triangles; memory 7 floats per cluster."""
    m = faces.shape[0]
    nc = starts.shape[0]
    acc = np.zeros((nc, 7), np.float64)  # normal xyz, area, area * centroid xyz * 3
    for ci in range(nc):
        s = starts[ci]
        e = starts[ci + 1] if ci + 1 < nc else m
        for t in range(s, e):
            a = faces[t, 0]
            b = faces[t, 1]
            c = faces[t, 2]
            ux = vertices[b, 0] - vertices[a, 0]
            uy = vertices[b, 1] - vertices[a, 1]
            uz = vertices[b, 2] - vertices[a, 2]
            wx = vertices[c, 0] - vertices[a, 0]
            wy = vertices[c, 1] - vertices[a, 1]
            wz = vertices[c, 2] - vertices[a, 2]
            px = uy * wz - uz * wy
            py = uz * wx - ux * wz
            pz = ux * wy - uy * wx
            ar = np.sqrt(px * px + py * py + pz * pz)
            acc[ci, 0] += px
            acc[ci, 1] += py
            acc[ci, 2] += pz
            acc[ci, 3] += ar
            acc[ci, 4] += ar * (vertices[a, 0] + vertices[b, 0] + vertices[c, 0])
            acc[ci, 5] += ar * (vertices[a, 1] + vertices[b, 1] + vertices[c, 1])
            acc[ci, 6] += ar * (vertices[a, 2] + vertices[b, 2] + vertices[c, 2])
    centre = np.zeros(3, np.float64)
    area = 0.0
    for ci in range(nc):
        area += acc[ci, 3]
        for k in range(3):
            centre[k] += acc[ci, 4 + k]
    if area > 0.0:
        for k in range(3):
            centre[k] /= 3.0 * area
    else:
        for k in range(3):
            centre[k] = vertices[:, k].mean()
    keys = np.zeros(nc, np.float64)
    for ci in range(nc):
        nl = np.sqrt(acc[ci, 0] ** 2 + acc[ci, 1] ** 2 + acc[ci, 2] ** 2)
        ca = acc[ci, 3]
        if ca > 0.0 and nl > 0.0:
            d = 0.0
            for k in range(3):
                d += (acc[ci, 4 + k] / (3.0 * ca) - centre[k]) * acc[ci, k]
            keys[ci] = d / nl
    return keys, centre


@njit(cache=True)
def take_clusters_kernel(faces, starts, order):
    """The triangles of cluster ``order[0]``, then ``order[1]``, ...: uint32 (M, 3).
    O(M); memory the output."""
    m = faces.shape[0]
    nc = starts.shape[0]
    out = np.empty((m, 3), np.uint32)
    i = 0
    for j in range(order.shape[0]):
        ci = order[j]
        s = starts[ci]
        e = starts[ci + 1] if ci + 1 < nc else m
        for t in range(s, e):
            out[i, 0] = faces[t, 0]
            out[i, 1] = faces[t, 1]
            out[i, 2] = faces[t, 2]
            i += 1
    return out


@njit(cache=True)
def _edge_in(w, a, b):
    """Top-left fill rule for a counter-clockwise edge with function w = a x + b y + c."""
    return w > 0.0 or (w == 0.0 and (a > 0.0 or (a == 0.0 and b < 0.0)))


@njit(cache=True)
def rasterise_overdraw_kernel(p, faces, size):
    """Draw ``faces`` in order into two ``size`` x ``size`` depth buffers, one per
    facing: pixel coordinates ``p[:, 0:2]`` (pixel centres at +0.5), depth
    ``p[:, 2]``. A counter-clockwise triangle faces a viewer on +depth (the larger
    depth is nearer), a clockwise one a viewer on -depth. Counts, per buffer, every
    depth-test pass (a pixel written) and the pixels written at least once.

    Returns ``(shaded, covered)`` summed over both buffers. Memory: 2 * size**2
    float64 + int32. Time: O(M + covered pixel-triangle pairs)."""
    zbuf = np.empty((2, size, size), np.float64)
    zbuf[0] = -np.inf
    zbuf[1] = np.inf
    count = np.zeros((2, size, size), np.int32)
    for t in range(faces.shape[0]):
        i0 = faces[t, 0]
        i1 = faces[t, 1]
        i2 = faces[t, 2]
        x0 = p[i0, 0]
        y0 = p[i0, 1]
        x1 = p[i1, 0]
        y1 = p[i1, 1]
        x2 = p[i2, 0]
        y2 = p[i2, 1]
        det = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        if det == 0.0:
            continue
        side = 0
        z0 = p[i0, 2]
        z1 = p[i1, 2]
        z2 = p[i2, 2]
        if det < 0.0:  # clockwise: the other buffer; make it counter-clockwise
            side = 1
            x1, x2 = x2, x1
            y1, y2 = y2, y1
            z1, z2 = z2, z1
            det = -det
        # edge functions w_k(x, y) = a_k x + b_k y + c_k, positive inside
        a0 = y1 - y2
        b0 = x2 - x1
        c0 = x1 * y2 - x2 * y1
        a1 = y2 - y0
        b1 = x0 - x2
        c1 = x2 * y0 - x0 * y2
        a2 = y0 - y1
        b2 = x1 - x0
        c2 = x0 * y1 - x1 * y0
        lo_x = max(int(np.floor(min(x0, x1, x2) - 0.5)), 0)
        hi_x = min(int(np.ceil(max(x0, x1, x2) - 0.5)), size - 1)
        lo_y = max(int(np.floor(min(y0, y1, y2) - 0.5)), 0)
        hi_y = min(int(np.ceil(max(y0, y1, y2) - 0.5)), size - 1)
        for iy in range(lo_y, hi_y + 1):
            py = iy + 0.5
            for ix in range(lo_x, hi_x + 1):
                px = ix + 0.5
                w0 = a0 * px + b0 * py + c0
                w1 = a1 * px + b1 * py + c1
                w2 = a2 * px + b2 * py + c2
                if not (_edge_in(w0, a0, b0) and _edge_in(w1, a1, b1) and _edge_in(w2, a2, b2)):
                    continue
                z = (w0 * z0 + w1 * z1 + w2 * z2) / det
                if side == 0:
                    if z > zbuf[0, iy, ix]:
                        zbuf[0, iy, ix] = z
                        count[0, iy, ix] += 1
                elif z < zbuf[1, iy, ix]:
                    zbuf[1, iy, ix] = z
                    count[1, iy, ix] += 1
    shaded = 0
    covered = 0
    for s in range(2):
        for iy in range(size):
            for ix in range(size):
                c = count[s, iy, ix]
                shaded += c
                if c > 0:
                    covered += 1
    return shaded, covered
