"""Numba kernels for terrain triangulation (greedy Delaunay refinement and RTIN).

Every kernel works in *grid coordinates*: x is the column index, y the row index of a
sample, both integers for the vertices the kernels create. Heights are float64, in the
units of the raster. Masked (invalid) samples are NaN in the ``herr`` arrays the
kernels receive: a NaN sample never counts toward an error and is never chosen as a
vertex (comparisons with NaN are false, so the hot loops need no extra branch).

Plain-Python/NumPy references of the same algorithms live in :mod:`._reference`; the
tests compare both.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# --------------------------------------------------------------------------------------
# exact integer predicates
# --------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _orient(ax, ay, bx, by, cx, cy):
    """Twice the signed area of (a, b, c); > 0 when counter-clockwise (x right, y up).
    Exact for int64 grid coordinates."""
    return (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)


@njit(cache=True, inline="always")
def _incircle(ax, ay, bx, by, cx, cy, dx, dy):
    """> 0 when d lies strictly inside the circumcircle of the CCW triangle (a, b, c).
    Exact in int64 for coordinates below 2**14 (the public function checks)."""
    adx = ax - dx
    ady = ay - dy
    bdx = bx - dx
    bdy = by - dy
    cdx = cx - dx
    cdy = cy - dy
    ad = adx * adx + ady * ady
    bd = bdx * bdx + bdy * bdy
    cd = cdx * cdx + cdy * cdy
    return adx * (bdy * cd - bd * cdy) - ady * (bdx * cd - bd * cdx) + ad * (bdx * cdy - bdy * cdx)


# --------------------------------------------------------------------------------------
# exact rasterisation of one triangle with integer vertices
# --------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _edge_setup(a, b, c, y0):
    """Exact incremental span bound of the half-plane a*x + b*y + c >= 0 along rows.

    Returns ``(kind, q, r, d, dq, dr)`` for row y0: kind 1 means x >= ceil(q + r/d),
    kind -1 means x <= q (with r/d < 1 the fraction), kind 0 (a == 0) means the row is
    inside iff q >= 0. Stepping one row down is :func:`_edge_step`: integer adds, no
    division (a Bresenham-style quotient/remainder walk)."""
    if a > 0:
        m = -(b * y0 + c)
        d = a
        dm = -b
        kind = 1
    elif a < 0:
        m = b * y0 + c
        d = -a
        dm = b
        kind = -1
    else:
        return 0, b * y0 + c, np.int64(0), np.int64(1), b, np.int64(0)
    q, r = _divmod_pos(m, d)
    dq, dr = _divmod_pos(dm, d)
    return kind, q, r, d, dq, dr


@njit(cache=True, inline="always")
def _divmod_pos(m, d):
    """Floor division and remainder 0 <= r < d of int64 m by d > 0, through a float
    division and one correction step: exact for |m| < 2**52, and much cheaper than a
    64-bit integer division."""
    q = np.int64(np.floor(m / d))
    r = m - q * d
    if r < 0:
        q -= 1
        r += d
    elif r >= d:
        q += 1
        r -= d
    return q, r


@njit(cache=True, inline="always")
def _edge_bound(kind, q, r, lo, hi):
    if kind == 1:
        m = q + (r > 0)
        if m > lo:
            lo = m
    elif kind == -1:
        if q < hi:
            hi = q
    elif q < 0:
        hi = lo - 1
    return lo, hi


@njit(cache=True, inline="always")
def _edge_step(q, r, d, dq, dr):
    q += dq
    r += dr
    if r >= d:
        r -= d
        q += 1
    return q, r


@njit(cache=True)
def tri_worst(x0, y0, z0, x1, y1, z1, x2, y2, z2, herr):
    """Worst vertical error of the plane through three integer grid vertices over every
    grid sample in the closed triangle (edges and corners included).

    Returns ``(err, index)``: the largest ``|plane - h|`` over valid samples and the
    row-major linear index of the first sample (row-major scan) reaching it; ``(-1.0,
    -1)`` when the triangle holds no valid sample. Orientation does not matter. Work
    grows with the triangle's area; memory is constant.
    """
    x0 = np.int64(x0)
    y0 = np.int64(y0)
    x1 = np.int64(x1)
    y1 = np.int64(y1)
    x2 = np.int64(x2)
    y2 = np.int64(y2)
    area = _orient(x0, y0, x1, y1, x2, y2)
    if area < 0:  # make it CCW
        x1, y1, z1, x2, y2, z2 = x2, y2, z2, x1, y1, z1
        area = -area
    best = -1.0
    besti = -1
    if area == 0:
        return best, besti
    cols = herr.shape[1]
    fa = float(area)
    gx = ((z1 - z0) * (y2 - y0) - (z2 - z0) * (y1 - y0)) / fa
    gy = ((z2 - z0) * (x1 - x0) - (z1 - z0) * (x2 - x0)) / fa
    xmin = min(x0, min(x1, x2))
    xmax = max(x0, max(x1, x2))
    ymin = min(y0, min(y1, y2))
    ymax = max(y0, max(y1, y2))
    # edge functions w(x, y) = A x + B y + C >= 0 inside (edges v1v2, v2v0, v0v1)
    a0 = y1 - y2
    b0 = x2 - x1
    c0 = (y2 - y1) * x1 - (x2 - x1) * y1
    a1 = y2 - y0
    b1 = x0 - x2
    c1 = (y0 - y2) * x2 - (x0 - x2) * y2
    a2 = y0 - y1
    b2 = x1 - x0
    c2 = (y1 - y0) * x0 - (x1 - x0) * y0
    k0, q0, r0, d0, dq0, dr0 = _edge_setup(a0, b0, c0, ymin)
    k1, q1, r1, d1, dq1, dr1 = _edge_setup(a1, b1, c1, ymin)
    k2, q2, r2, d2, dq2, dr2 = _edge_setup(a2, b2, c2, ymin)
    for y in range(ymin, ymax + 1):
        lo, hi = _edge_bound(k0, q0, r0, xmin, xmax)
        lo, hi = _edge_bound(k1, q1, r1, lo, hi)
        lo, hi = _edge_bound(k2, q2, r2, lo, hi)
        q0, r0 = _edge_step(q0, r0, d0, dq0, dr0)
        q1, r1 = _edge_step(q1, r1, d1, dq1, dr1)
        q2, r2 = _edge_step(q2, r2, d2, dq2, dr2)
        if lo > hi:
            continue
        zrow = z0 + gy * (y - y0) - gx * x0
        for x in range(lo, hi + 1):
            e = abs(zrow + gx * x - herr[y, x])
            if e > best:
                best = e
                besti = y * cols + x
    return best, besti


@njit(cache=True)
def tri_max_capped(x0, y0, z0, x1, y1, z1, x2, y2, z2, herr, cap):
    """Like :func:`tri_worst` without the argmax, returning as soon as an error above
    ``cap`` is found (the value returned is then that first error, > cap)."""
    x0 = np.int64(x0)
    y0 = np.int64(y0)
    x1 = np.int64(x1)
    y1 = np.int64(y1)
    x2 = np.int64(x2)
    y2 = np.int64(y2)
    area = _orient(x0, y0, x1, y1, x2, y2)
    if area < 0:
        x1, y1, z1, x2, y2, z2 = x2, y2, z2, x1, y1, z1
        area = -area
    best = -1.0
    if area == 0:
        return best
    fa = float(area)
    gx = ((z1 - z0) * (y2 - y0) - (z2 - z0) * (y1 - y0)) / fa
    gy = ((z2 - z0) * (x1 - x0) - (z1 - z0) * (x2 - x0)) / fa
    xmin = min(x0, min(x1, x2))
    xmax = max(x0, max(x1, x2))
    ymin = min(y0, min(y1, y2))
    ymax = max(y0, max(y1, y2))
    a0 = y1 - y2
    b0 = x2 - x1
    c0 = (y2 - y1) * x1 - (x2 - x1) * y1
    a1 = y2 - y0
    b1 = x0 - x2
    c1 = (y0 - y2) * x2 - (x0 - x2) * y2
    a2 = y0 - y1
    b2 = x1 - x0
    c2 = (y1 - y0) * x0 - (x1 - x0) * y0
    k0, q0, r0, d0, dq0, dr0 = _edge_setup(a0, b0, c0, ymin)
    k1, q1, r1, d1, dq1, dr1 = _edge_setup(a1, b1, c1, ymin)
    k2, q2, r2, d2, dq2, dr2 = _edge_setup(a2, b2, c2, ymin)
    for y in range(ymin, ymax + 1):
        lo, hi = _edge_bound(k0, q0, r0, xmin, xmax)
        lo, hi = _edge_bound(k1, q1, r1, lo, hi)
        lo, hi = _edge_bound(k2, q2, r2, lo, hi)
        q0, r0 = _edge_step(q0, r0, d0, dq0, dr0)
        q1, r1 = _edge_step(q1, r1, d1, dq1, dr1)
        q2, r2 = _edge_step(q2, r2, d2, dq2, dr2)
        zrow = z0 + gy * (y - y0) - gx * x0
        for x in range(lo, hi + 1):
            e = abs(zrow + gx * x - herr[y, x])
            if e > best:
                best = e
                if e > cap:
                    return e
    return best


@njit(cache=True, parallel=True)
def tin_max_error_int(px, py, pz, faces, herr):
    """Verification for a TIN whose vertices are grid samples (integer px, py): each
    triangle's worst error over the valid samples in its closed footprint (-1 when it
    covers none, exact spans as in :func:`tri_worst`), and the number of valid samples
    no triangle covers. Parallel over triangles (Numba threads; the result does not
    depend on their number). Memory: 1 byte per sample plus 16 per triangle."""
    rows, cols = herr.shape
    covered = np.zeros((rows, cols), np.uint8)
    nf = faces.shape[0]
    tri_err = np.empty(nf, np.float64)
    # visit triangles bucketed by their first vertex's row (a counting sort): the
    # rasterisation then sweeps the grid instead of jumping around it
    start = np.zeros(rows + 1, np.int64)
    for f in range(nf):
        r = min(max(np.int64(py[faces[f, 0]]), 0), rows - 1)
        start[r + 1] += 1
    for r in range(rows):
        start[r + 1] += start[r]
    order = np.empty(nf, np.int64)
    for f in range(nf):
        r = min(max(np.int64(py[faces[f, 0]]), 0), rows - 1)
        order[start[r]] = f
        start[r] += 1
    for k in prange(nf):  # triangles are independent; `covered` only gets 1s
        f = order[k]
        i0 = faces[f, 0]
        i1 = faces[f, 1]
        i2 = faces[f, 2]
        x0 = np.int64(px[i0])
        y0 = np.int64(py[i0])
        z0 = pz[i0]
        x1 = np.int64(px[i1])
        y1 = np.int64(py[i1])
        z1 = pz[i1]
        x2 = np.int64(px[i2])
        y2 = np.int64(py[i2])
        z2 = pz[i2]
        area = _orient(x0, y0, x1, y1, x2, y2)
        if area < 0:
            x1, y1, z1, x2, y2, z2 = x2, y2, z2, x1, y1, z1
            area = -area
        best = -1.0
        if area > 0:
            fa = float(area)
            gx = ((z1 - z0) * (y2 - y0) - (z2 - z0) * (y1 - y0)) / fa
            gy = ((z2 - z0) * (x1 - x0) - (z1 - z0) * (x2 - x0)) / fa
            xmin = max(min(x0, min(x1, x2)), 0)
            xmax = min(max(x0, max(x1, x2)), cols - 1)
            ymin = max(min(y0, min(y1, y2)), 0)
            ymax = min(max(y0, max(y1, y2)), rows - 1)
            a0 = y1 - y2
            b0 = x2 - x1
            c0 = (y2 - y1) * x1 - (x2 - x1) * y1
            a1 = y2 - y0
            b1 = x0 - x2
            c1 = (y0 - y2) * x2 - (x0 - x2) * y2
            a2 = y0 - y1
            b2 = x1 - x0
            c2 = (y1 - y0) * x0 - (x1 - x0) * y0
            k0, q0, r0, d0, dq0, dr0 = _edge_setup(a0, b0, c0, ymin)
            k1, q1, r1, d1, dq1, dr1 = _edge_setup(a1, b1, c1, ymin)
            k2, q2, r2, d2, dq2, dr2 = _edge_setup(a2, b2, c2, ymin)
            for y in range(ymin, ymax + 1):
                lo, hi = _edge_bound(k0, q0, r0, xmin, xmax)
                lo, hi = _edge_bound(k1, q1, r1, lo, hi)
                lo, hi = _edge_bound(k2, q2, r2, lo, hi)
                q0, r0 = _edge_step(q0, r0, d0, dq0, dr0)
                q1, r1 = _edge_step(q1, r1, d1, dq1, dr1)
                q2, r2 = _edge_step(q2, r2, d2, dq2, dr2)
                zrow = z0 + gy * (y - y0) - gx * x0
                for x in range(lo, hi + 1):
                    covered[y, x] = 1
                    e = abs(zrow + gx * x - herr[y, x])
                    if e > best:
                        best = e
        tri_err[f] = best
    uncovered = 0
    for y in prange(rows):
        for x in range(cols):
            if covered[y, x] == 0 and herr[y, x] == herr[y, x]:
                uncovered += 1
    return tri_err, uncovered


def _renamed(fn, name: str):
    """A copy of the Python function ``fn`` under another name. Numba's on-disk cache
    is keyed by the function's qualified name and first line, not by its compile
    options: a second dispatcher of the *same* function (serial beside parallel)
    would load the other one's machine code from the cache."""
    import types

    code = fn.__code__.replace(co_name=name, co_qualname=name)
    out = types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    out.__qualname__ = name
    out.__doc__ = fn.__doc__
    return out


#: :func:`tin_max_error_int` compiled serially and without the GIL: for one tile per
#: thread (parallel Numba regions must not be entered from several threads at once).
tin_max_error_int_serial = njit(cache=True, nogil=True)(
    _renamed(tin_max_error_int.py_func, "tin_max_error_int_serial")
)


# --------------------------------------------------------------------------------------
# growable flat arrays
# --------------------------------------------------------------------------------------


@njit(cache=True)
def _grow_i32(a, n):
    b = np.empty(n, np.int32)
    b[: a.shape[0]] = a
    return b


@njit(cache=True)
def _grow_u8(a, n):
    b = np.empty(n, np.uint8)
    b[: a.shape[0]] = a
    return b


@njit(cache=True)
def _grow_f64(a, n):
    b = np.empty(n, np.float64)
    b[: a.shape[0]] = a
    return b


# --------------------------------------------------------------------------------------
# max-heap of triangle ids keyed by their error; keys live in the heap array itself so
# that sifting reads contiguous memory (hpos[t] is t's slot, -1 when not in the heap)
# --------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _before(k1, t1, k2, t2):
    """Heap order: larger error first, ties broken by the smaller triangle id."""
    return k1 > k2 or (k1 == k2 and t1 < t2)


@njit(cache=True)
def _sift_up(hkey, heap, hpos, i, key, t):
    while i > 0:
        p = (i - 1) >> 1
        if _before(key, t, hkey[p], heap[p]):
            hkey[i] = hkey[p]
            heap[i] = heap[p]
            hpos[heap[i]] = i
            i = p
        else:
            break
    hkey[i] = key
    heap[i] = t
    hpos[t] = i


@njit(cache=True)
def _sift_down(hkey, heap, hpos, i, n, key, t):
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and _before(hkey[c + 1], heap[c + 1], hkey[c], heap[c]):
            c += 1
        if _before(hkey[c], heap[c], key, t):
            hkey[i] = hkey[c]
            heap[i] = heap[c]
            hpos[heap[i]] = i
            i = c
        else:
            break
    hkey[i] = key
    heap[i] = t
    hpos[t] = i


@njit(cache=True)
def _heap_push(hkey, heap, hpos, n, t, key):
    _sift_up(hkey, heap, hpos, n, key, t)
    return n + 1


@njit(cache=True)
def _heap_remove(hkey, heap, hpos, n, t):
    """Remove triangle t from the heap of size n; returns the new size."""
    i = hpos[t]
    n -= 1
    if i != n:
        key = hkey[n]
        last = heap[n]
        if i > 0 and _before(key, last, hkey[(i - 1) >> 1], heap[(i - 1) >> 1]):
            _sift_up(hkey, heap, hpos, i, key, last)
        else:
            _sift_down(hkey, heap, hpos, i, n, key, last)
    hpos[t] = -1
    return n


# --------------------------------------------------------------------------------------
# greedy Delaunay refinement (with forced vertices and constraint edges)
# --------------------------------------------------------------------------------------
#
# Vertex coordinates are float64 grid units. Grid samples have integral coordinates and
# every predicate on four integral points is exact (orientation in float64 is exact
# below 2**26, the in-circle test runs in int64); vertices off the grid (constraint
# vertices and the points where constraint segments cross edges) use float predicates
# with a relative tolerance, flipping only when the in-circle test is clearly positive,
# so flips never cycle. ``hc`` flags constrained half-edges (both halves of an edge):
# they are never flipped, and splitting one keeps both halves constrained.

#: relative tolerance of the float predicates (a few hundred float64 ulps)
_REL_TOL = 1e-12


@njit(cache=True, inline="always")
def _orient_tol(ax, ay, bx, by, cx, cy):
    """Orientation of (a, b, c) in float64 and its zero tolerance (relative to the
    magnitude of the products; below 1 for integral points, where it is exact)."""
    l1 = (bx - ax) * (cy - ay)
    l2 = (by - ay) * (cx - ax)
    return l1 - l2, _REL_TOL * (abs(l1) + abs(l2))


@njit(cache=True, inline="always")
def _isint(x):
    return x == np.floor(x)


@njit(cache=True)
def _should_flip(ax, ay, bx, by, cx, cy, dx, dy, allint):
    """True when d is inside the circumcircle of the CCW triangle (a, b, c): exact for
    integral points, clearly inside (beyond the float error bound) otherwise.
    ``allint``: every vertex is known to be integral (skips the checks)."""
    if allint or (_isint(ax) and _isint(ay) and _isint(bx) and _isint(by)):
        if allint or (_isint(cx) and _isint(cy) and _isint(dx) and _isint(dy)):
            return (
                _incircle(
                    np.int64(ax),
                    np.int64(ay),
                    np.int64(bx),
                    np.int64(by),
                    np.int64(cx),
                    np.int64(cy),
                    np.int64(dx),
                    np.int64(dy),
                )
                > 0
            )
    adx = ax - dx
    ady = ay - dy
    bdx = bx - dx
    bdy = by - dy
    cdx = cx - dx
    cdy = cy - dy
    al = adx * adx + ady * ady
    bl = bdx * bdx + bdy * bdy
    cl = cdx * cdx + cdy * cdy
    det = al * (bdx * cdy - cdx * bdy) + bl * (cdx * ady - adx * cdy) + cl * (adx * bdy - bdx * ady)
    perm = (
        al * (abs(bdx * cdy) + abs(cdx * bdy))
        + bl * (abs(cdx * ady) + abs(adx * cdy))
        + cl * (abs(adx * bdy) + abs(bdx * ady))
    )
    return det > 1e3 * _REL_TOL * perm


@njit(cache=True)
def tri_worst_f(x0, y0, z0, x1, y1, z1, x2, y2, z2, herr):
    """:func:`tri_worst` for a triangle with float vertices: the worst valid sample
    among those the insertion predicates see as inside or on the triangle (the same
    :func:`_orient_tol` tests), ``(err, row-major index)`` or ``(-1.0, -1)``."""
    area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
    if area < 0:
        x1, y1, z1, x2, y2, z2 = x2, y2, z2, x1, y1, z1
        area = -area
    best = -1.0
    besti = -1
    if area <= 0.0:
        return best, besti
    rows, cols = herr.shape
    gx = ((z1 - z0) * (y2 - y0) - (z2 - z0) * (y1 - y0)) / area
    gy = ((z2 - z0) * (x1 - x0) - (z1 - z0) * (x2 - x0)) / area
    ylo = max(0, int(np.ceil(min(y0, min(y1, y2)) - 1e-6)))
    yhi = min(rows - 1, int(np.floor(max(y0, max(y1, y2)) + 1e-6)))
    xlo = max(0, int(np.ceil(min(x0, min(x1, x2)) - 1e-6)))
    xhi = min(cols - 1, int(np.floor(max(x0, max(x1, x2)) + 1e-6)))
    for y in range(ylo, yhi + 1):
        fy = float(y)
        zrow = z0 + gy * (fy - y0) - gx * x0
        for x in range(xlo, xhi + 1):
            fx = float(x)
            o, tol = _orient_tol(x0, y0, x1, y1, fx, fy)
            if o < -tol:
                continue
            o, tol = _orient_tol(x1, y1, x2, y2, fx, fy)
            if o < -tol:
                continue
            o, tol = _orient_tol(x2, y2, x0, y0, fx, fy)
            if o < -tol:
                continue
            e = abs(zrow + gx * fx - herr[y, x])
            if e > best:
                best = e
                besti = y * cols + x
    return best, besti


@njit(cache=True)
def _rasterise(t, px, py, pz, tv, herr, allint):
    a = tv[3 * t]
    b = tv[3 * t + 1]
    c = tv[3 * t + 2]
    if allint or (
        _isint(px[a])
        and _isint(py[a])
        and _isint(px[b])
        and _isint(py[b])
        and _isint(px[c])
        and _isint(py[c])
    ):
        return tri_worst(px[a], py[a], pz[a], px[b], py[b], pz[b], px[c], py[c], pz[c], herr)
    return tri_worst_f(px[a], py[a], pz[a], px[b], py[b], pz[b], px[c], py[c], pz[c], herr)


@njit(cache=True)
def _mark(t, tflag, pending, npend):
    """Mark triangle t as changed: onto the pending list (once). It stays in the heap
    with its old key until it is rasterised again (then its key is updated in place)."""
    if tflag[t]:
        return npend
    tflag[t] = 1
    pending[npend] = t
    return npend + 1


@njit(cache=True)
def _locate_in(t, qx, qy, px, py, tv):
    """Where (qx, qy) lies relative to triangle t: ``(kind, k)`` with kind 0 inside,
    1 on edge k (half-edge 3t+k), 2 at vertex k, -1 outside (k: an edge it is beyond)."""
    nzero = 0
    zk = -1
    vk = -1
    for k in range(3):
        a = tv[3 * t + k]
        b = tv[3 * t + (k + 1) % 3]
        o, tol = _orient_tol(px[a], py[a], px[b], py[b], qx, qy)
        if o < -tol:
            return -1, k
        if o <= tol:
            nzero += 1
            if zk < 0:
                zk = k
            else:
                # on two edges: the vertex they share
                vk = k if (zk + 1) % 3 == k else zk
    if nzero >= 2:
        return 2, vk
    if nzero == 1:
        return 1, zk
    return 0, 0


@njit(cache=True)
def _locate(qx, qy, start, px, py, tv, he, ntri):
    """Triangle holding (qx, qy): a walk from triangle ``start`` (rotating which edge
    is tried first, so it cannot cycle for long), then a scan of all triangles.
    Returns ``(t, kind, k)`` as :func:`_locate_in`, t = -1 when outside."""
    t = start
    for step in range(4 * ntri + 16):
        kind, k = _locate_in(t, qx, qy, px, py, tv)
        if kind >= 0:
            return t, kind, k
        # try the edges in rotated order; move across the first one q is beyond
        moved = False
        for j in range(3):
            kk = (step + j) % 3
            a = tv[3 * t + kk]
            b = tv[3 * t + (kk + 1) % 3]
            o, tol = _orient_tol(px[a], py[a], px[b], py[b], qx, qy)
            if o < -tol:
                n = he[3 * t + kk]
                if n >= 0:
                    t = n // 3
                    moved = True
                    break
        if not moved:
            break
    for t in range(ntri):
        kind, k = _locate_in(t, qx, qy, px, py, tv)
        if kind >= 0:
            return t, kind, k
    return -1, -1, -1


@njit(cache=True)
def _insert(
    t, kind, k, qx, qy, qz, px, py, pz, tv, he, hc, vt, hpos, tflag, pending, stack, state, allint
):
    """Insert the point (qx, qy, qz) into triangle t (``kind`` 0: inside; 1: on edge
    3t+k) and restore the (constrained) Delaunay property by Lawson flips. Changed
    triangles go onto the pending list. Returns the new vertex id. Needs room for one
    vertex and two triangles (the caller checks)."""
    npts = state[0]
    ntri = state[1]
    npend = state[3]
    e0 = 3 * t
    p = npts
    px[p] = qx
    py[p] = qy
    pz[p] = qz
    npts += 1
    nstack = 0
    if kind == 0:
        # split t = (a, b, c) into (a, b, p), (b, c, p), (c, a, p)
        a = tv[e0]
        b = tv[e0 + 1]
        c = tv[e0 + 2]
        xab = he[e0]
        xbc = he[e0 + 1]
        xca = he[e0 + 2]
        cab = hc[e0]
        cbc = hc[e0 + 1]
        cca = hc[e0 + 2]
        t1 = ntri
        t2 = ntri + 1
        ntri += 2
        f1 = 3 * t1
        f2 = 3 * t2
        tv[e0], tv[e0 + 1], tv[e0 + 2] = a, b, p
        tv[f1], tv[f1 + 1], tv[f1 + 2] = b, c, p
        tv[f2], tv[f2 + 1], tv[f2 + 2] = c, a, p
        he[e0], he[e0 + 1], he[e0 + 2] = xab, f1 + 2, f2 + 1
        he[f1], he[f1 + 1], he[f1 + 2] = xbc, f2 + 2, e0 + 1
        he[f2], he[f2 + 1], he[f2 + 2] = xca, e0 + 2, f1 + 1
        hc[e0], hc[e0 + 1], hc[e0 + 2] = cab, 0, 0
        hc[f1], hc[f1 + 1], hc[f1 + 2] = cbc, 0, 0
        hc[f2], hc[f2 + 1], hc[f2 + 2] = cca, 0, 0
        if xab >= 0:
            he[xab] = e0
        if xbc >= 0:
            he[xbc] = f1
        if xca >= 0:
            he[xca] = f2
        vt[a] = t
        vt[b] = t
        vt[p] = t
        vt[c] = t1
        hpos[t1] = -1
        tflag[t1] = 0
        hpos[t2] = -1
        tflag[t2] = 0
        npend = _mark(t, tflag, pending, npend)
        npend = _mark(t1, tflag, pending, npend)
        npend = _mark(t2, tflag, pending, npend)
        stack[0] = e0
        stack[1] = f1
        stack[2] = f2
        nstack = 3
    else:
        # p lies on edge e = a->b of t = (a, b, c); twin f = b->a in (b, a, d)
        e = e0 + k
        en = e0 + (k + 1) % 3
        ep = e0 + (k + 2) % 3
        a = tv[e]
        b = tv[en]
        c = tv[ep]
        xbc = he[en]
        xca = he[ep]
        cbc = hc[en]
        cca = hc[ep]
        ce = hc[e]
        f = he[e]
        T1 = ntri
        ntri += 1
        g1 = 3 * T1
        # T0 = (a, p, c) in slot t, T1 = (p, b, c)
        tv[e0], tv[e0 + 1], tv[e0 + 2] = a, p, c
        tv[g1], tv[g1 + 1], tv[g1 + 2] = p, b, c
        he[e0 + 1] = g1 + 2
        he[e0 + 2] = xca
        he[g1 + 1] = xbc
        he[g1 + 2] = e0 + 1
        hc[e0], hc[e0 + 1], hc[e0 + 2] = ce, 0, cca
        hc[g1], hc[g1 + 1], hc[g1 + 2] = ce, cbc, 0
        if xca >= 0:
            he[xca] = e0 + 2
        if xbc >= 0:
            he[xbc] = g1 + 1
        vt[a] = t
        vt[c] = t
        vt[p] = t
        vt[b] = T1
        hpos[T1] = -1
        tflag[T1] = 0
        npend = _mark(t, tflag, pending, npend)
        npend = _mark(T1, tflag, pending, npend)
        stack[0] = e0 + 2
        stack[1] = g1 + 1
        nstack = 2
        if f < 0:
            he[e0] = -1
            he[g1] = -1
        else:
            u = f // 3
            u0 = 3 * u
            fn = u0 + (f - u0 + 1) % 3
            fp = u0 + (f - u0 + 2) % 3
            d = tv[fp]
            xad = he[fn]
            xdb = he[fp]
            cad = hc[fn]
            cdb = hc[fp]
            T3 = ntri
            ntri += 1
            g3 = 3 * T3
            # T2 = (b, p, d) in slot u, T3 = (p, a, d)
            tv[u0], tv[u0 + 1], tv[u0 + 2] = b, p, d
            tv[g3], tv[g3 + 1], tv[g3 + 2] = p, a, d
            he[e0] = g3
            he[g1] = u0
            he[u0], he[u0 + 1], he[u0 + 2] = g1, g3 + 2, xdb
            he[g3], he[g3 + 1], he[g3 + 2] = e0, xad, u0 + 1
            hc[u0], hc[u0 + 1], hc[u0 + 2] = ce, 0, cdb
            hc[g3], hc[g3 + 1], hc[g3 + 2] = ce, cad, 0
            if xdb >= 0:
                he[xdb] = u0 + 2
            if xad >= 0:
                he[xad] = g3 + 1
            vt[d] = u
            hpos[T3] = -1
            tflag[T3] = 0
            npend = _mark(u, tflag, pending, npend)
            npend = _mark(T3, tflag, pending, npend)
            stack[2] = u0 + 2
            stack[3] = g3 + 1
            nstack = 4

    # Lawson flips: every edge on the stack has p opposite it in its triangle
    while nstack > 0:
        nstack -= 1
        e = stack[nstack]
        f = he[e]
        if f < 0 or hc[e]:
            continue
        t0 = e // 3
        t1 = f // 3
        b0 = 3 * t0
        b1 = 3 * t1
        en = b0 + (e - b0 + 1) % 3
        ep = b0 + (e - b0 + 2) % 3
        fn = b1 + (f - b1 + 1) % 3
        fp = b1 + (f - b1 + 2) % 3
        a = tv[e]
        b = tv[en]
        c = tv[ep]
        d = tv[fp]
        if not _should_flip(px[a], py[a], px[b], py[b], px[c], py[c], px[d], py[d], allint):
            continue
        xbc = he[en]
        xca = he[ep]
        xad = he[fn]
        xdb = he[fp]
        cbc = hc[en]
        cca = hc[ep]
        cad = hc[fn]
        cdb = hc[fp]
        # t0 = (c, a, d), t1 = (d, b, c); new diagonal c-d
        tv[b0], tv[b0 + 1], tv[b0 + 2] = c, a, d
        tv[b1], tv[b1 + 1], tv[b1 + 2] = d, b, c
        he[b0], he[b0 + 1], he[b0 + 2] = xca, xad, b1 + 2
        he[b1], he[b1 + 1], he[b1 + 2] = xdb, xbc, b0 + 2
        hc[b0], hc[b0 + 1], hc[b0 + 2] = cca, cad, 0
        hc[b1], hc[b1 + 1], hc[b1 + 2] = cdb, cbc, 0
        if xca >= 0:
            he[xca] = b0
        if xad >= 0:
            he[xad] = b0 + 1
        if xdb >= 0:
            he[xdb] = b1
        if xbc >= 0:
            he[xbc] = b1 + 1
        vt[a] = t0
        vt[b] = t1
        npend = _mark(t0, tflag, pending, npend)
        npend = _mark(t1, tflag, pending, npend)
        stack[nstack] = b0 + 1
        stack[nstack + 1] = b1
        nstack += 2
    state[0] = npts
    state[1] = ntri
    state[3] = npend
    return p


@njit(cache=True)
def _set_constrained(e, he, hc):
    hc[e] = 1
    if he[e] >= 0:
        hc[he[e]] = 1


@njit(cache=True)
def _bilinear(h, x, y):
    """Bilinear height of grid ``h`` (no NaN) at grid coordinates (x, y), clamped."""
    rows, cols = h.shape
    x = min(max(x, 0.0), cols - 1.0)
    y = min(max(y, 0.0), rows - 1.0)
    c0 = min(int(np.floor(x)), cols - 2) if cols > 1 else 0
    r0 = min(int(np.floor(y)), rows - 2) if rows > 1 else 0
    tx = x - c0
    ty = y - r0
    c1 = min(c0 + 1, cols - 1)
    r1 = min(r0 + 1, rows - 1)
    top = h[r0, c0] * (1.0 - tx) + h[r0, c1] * tx
    bot = h[r1, c0] * (1.0 - tx) + h[r1, c1] * tx
    return top * (1.0 - ty) + bot * ty


@njit(cache=True)
def _segment_step(cur, ib, ax, ay, az, bx, by, bz, linear_z, hfill, px, py, tv, he, hc, vt):
    """One step of forcing the segment from vertex ``cur`` to vertex ``ib`` into the
    triangulation. Looks at the triangles around ``cur``: a vertex on the segment
    ends the step there (the edge to it constrained); else the edge the segment
    leaves through is returned for splitting. Returns ``(next, t, k, x, y, z)``:
    ``next >= 0`` the vertex reached (nothing to insert); ``next == -1`` insert
    (x, y, z) on half-edge 3t+k; ``next == -2`` failure (no way found)."""
    t0 = vt[cur]
    k0 = 0
    for j in range(3):
        if tv[3 * t0 + j] == cur:
            k0 = j
    cx = px[cur]
    cy = py[cur]
    dx = px[ib] - cx
    dy = py[ib] - cy
    dd = dx * dx + dy * dy
    # rotate counter-clockwise around cur from t0; at a boundary, restart clockwise
    e = 3 * t0 + k0
    direction = 1
    for _ in range(100000):
        t = e // 3
        b0 = 3 * t
        en = b0 + (e - b0 + 1) % 3
        ep = b0 + (e - b0 + 2) % 3
        vb = tv[en]
        vc = tv[ep]
        if vb == ib:
            _set_constrained(e, he, hc)
            return ib, -1, -1, 0.0, 0.0, 0.0
        if vc == ib:
            _set_constrained(ep, he, hc)
            return ib, -1, -1, 0.0, 0.0, 0.0
        ob, tb = _orient_tol(cx, cy, px[ib], py[ib], px[vb], py[vb])
        oc, tc = _orient_tol(cx, cy, px[ib], py[ib], px[vc], py[vc])
        if abs(ob) <= tb:
            s = (px[vb] - cx) * dx + (py[vb] - cy) * dy
            if 0.0 < s < dd:
                _set_constrained(e, he, hc)
                return vb, -1, -1, 0.0, 0.0, 0.0
        if abs(oc) <= tc:
            s = (px[vc] - cx) * dx + (py[vc] - cy) * dy
            if 0.0 < s < dd:
                _set_constrained(ep, he, hc)
                return vc, -1, -1, 0.0, 0.0, 0.0
        if ob < -tb and oc > tc:
            # the segment leaves through edge vb -> vc (half-edge en)
            s = ob / (ob - oc)
            x = px[vb] + s * (px[vc] - px[vb])
            y = py[vb] + s * (py[vc] - py[vb])
            # onto the constraint's own line (exactly on it when axis-aligned), and
            # onto a grid line within rounding: collinear points stay collinear
            lab = (bx - ax) * (bx - ax) + (by - ay) * (by - ay)
            u = ((x - ax) * (bx - ax) + (y - ay) * (by - ay)) / lab if lab > 0 else 0.0
            u = min(max(u, 0.0), 1.0)
            x = ax + u * (bx - ax)
            y = ay + u * (by - ay)
            if abs(x - np.round(x)) <= 1e-9:
                x = np.round(x)
            if abs(y - np.round(y)) <= 1e-9:
                y = np.round(y)
            if linear_z:
                z = az + u * (bz - az)
            else:
                z = _bilinear(hfill, x, y)
            return -1, t, en - b0, x, y, z
        # next triangle around cur
        if direction == 1:
            f = he[ep]
            if f < 0:
                direction = -1
                e = 3 * t0 + k0
                f = he[e]
                if f < 0:
                    break
                fb = 3 * (f // 3)
                e = fb + (f - fb + 1) % 3
            else:
                e = f
                if e == 3 * t0 + k0:
                    break
        else:
            f = he[e]
            if f < 0:
                break
            fb = 3 * (f // 3)
            e = fb + (f - fb + 1) % 3
    return -2, -1, -1, 0.0, 0.0, 0.0


@njit(cache=True)
def _constrain(
    herr,
    hfill,
    fx,
    fy,
    fz,
    seg,
    seg_linear,
    fid,
    px,
    py,
    pz,
    tv,
    he,
    hc,
    vt,
    hpos,
    tflag,
    pending,
    stack,
    state,
    allint,
):
    """Insert forced vertices and constraint segments (resumable: state[4] is the next
    forced vertex, state[5] the next segment, state[6] the vertex the current segment
    has reached or -1). Returns True when done, False when the arrays are full."""
    nf = fx.shape[0]
    while state[4] < nf:
        if state[0] + 1 > px.shape[0] or state[1] + 2 > hpos.shape[0]:
            return False
        i = state[4]
        start = max(state[1] - 1, 0)
        t, kind, k = _locate(fx[i], fy[i], start, px, py, tv, he, state[1])
        if t < 0:
            state[7] += 1  # outside the grid: skipped (the caller clips first)
            fid[i] = -1
        elif kind == 2:
            fid[i] = tv[3 * t + k]  # already a vertex
        else:
            fid[i] = _insert(
                t,
                kind,
                k,
                fx[i],
                fy[i],
                fz[i],
                px,
                py,
                pz,
                tv,
                he,
                hc,
                vt,
                hpos,
                tflag,
                pending,
                stack,
                state,
                allint,
            )
        state[4] += 1
    ns = seg.shape[0]
    while state[5] < ns:
        s = state[5]
        ia = fid[seg[s, 0]]
        ib = fid[seg[s, 1]]
        if ia < 0 or ib < 0 or ia == ib:
            state[5] += 1
            state[6] = -1
            continue
        cur = state[6] if state[6] >= 0 else ia
        a = seg[s, 0]
        b = seg[s, 1]
        while cur != ib:
            if state[0] + 1 > px.shape[0] or state[1] + 2 > hpos.shape[0]:
                state[6] = cur
                return False
            nxt, t, k, x, y, z = _segment_step(
                cur,
                ib,
                fx[a],
                fy[a],
                fz[a],
                fx[b],
                fy[b],
                fz[b],
                seg_linear[s],
                hfill,
                px,
                py,
                tv,
                he,
                hc,
                vt,
            )
            if nxt == -2:
                state[7] += 1  # could not force this segment (reported by the caller)
                break
            if nxt >= 0:
                cur = nxt
                continue
            p = _insert(
                t,
                1,
                k,
                x,
                y,
                z,
                px,
                py,
                pz,
                tv,
                he,
                hc,
                vt,
                hpos,
                tflag,
                pending,
                stack,
                state,
                allint,
            )
            # the edge cur-p now exists (edges at p are never flipped on insertion)
            nxt2, _, _, _, _, _ = _segment_step(
                cur,
                p,
                fx[a],
                fy[a],
                fz[a],
                fx[b],
                fy[b],
                fz[b],
                seg_linear[s],
                hfill,
                px,
                py,
                tv,
                he,
                hc,
                vt,
            )
            if nxt2 != p:
                state[7] += 1
                break
            cur = p
        state[5] += 1
        state[6] = -1
    return True


@njit(cache=True, nogil=True)
def greedy_refine_forced(herr, corner_z, max_error, fx, fy, fz, seg, seg_linear, hfill):
    """Greedy Delaunay refinement of a height grid with forced vertices and edges.

    Starts from the two triangles spanned by the four grid corners (heights
    ``corner_z`` in the order (0,0), (W,0), (W,H), (0,H) with W = cols-1, H = rows-1),
    inserts the forced vertices ``(fx, fy, fz)`` (grid units, inside the grid; any
    float position) and forces each segment ``seg[k] = (i, j)`` between forced
    vertices in as a chain of constrained edges, splitting the edges it crosses (the
    new vertex's height interpolated along the segment when ``seg_linear[k]``, else
    bilinear in ``hfill``, a NaN-free copy of the heights). Then it repeatedly
    inserts the valid sample with the largest vertical error into the constrained
    Delaunay triangulation (split the triangle, or the two triangles sharing the edge
    the sample lies on, then Lawson flips that never cross a constrained edge),
    until no valid sample is more than ``max_error`` from the surface. Each new
    triangle is rasterised once to find its worst sample; triangles wait in a
    max-heap.

    Returns ``(px, py, pz, tri, tri_err, hc, failed)``: vertex grid columns/rows
    (float64), heights, triangles as a flat int32 array of vertex indices (3 per
    triangle, CCW with x = column to the right and y = row upwards), each triangle's
    worst error (-1 for a triangle covering no valid sample), the constrained flag of
    each half-edge (3 per triangle, the edge from corner k to corner k+1) and the
    number of forced vertices or segments that could not be inserted (0 normally).

    Memory: about 70 bytes per output triangle plus 28 per vertex (flat arrays grown
    by 1.5x as needed), on top of the 8-byte-per-sample input (and ``hfill``).
    """
    return _greedy_core(
        herr, corner_z, max_error, fx, fy, fz, seg, seg_linear, hfill, np.empty(0, np.float64)
    )


@njit(cache=True)
def _grow_like(a, n):
    b = np.empty(n, a.dtype)
    b[: a.shape[0]] = a
    return b


@njit(cache=True)
def _greedy_core(herr, corner_z, max_error, fx, fy, fz, seg, seg_linear, hfill, px0):
    """:func:`greedy_refine_forced` with vertex coordinates of ``px0``'s dtype (int32
    when every vertex is a grid sample: half the memory traffic of float64)."""
    rows, cols = herr.shape
    W = cols - 1
    H = rows - 1
    cap_p = 1024 + 2 * fx.shape[0]
    cap_t = 2 * cap_p
    px = np.empty(cap_p, px0.dtype)
    py = np.empty(cap_p, px0.dtype)
    pz = np.empty(cap_p, np.float64)
    vt = np.empty(cap_p, np.int32)
    tv = np.empty(3 * cap_t, np.int32)
    he = np.empty(3 * cap_t, np.int32)
    hc = np.zeros(3 * cap_t, np.uint8)
    terr = np.empty(cap_t, np.float64)
    tcand = np.empty(cap_t, np.int32)
    hpos = np.empty(cap_t, np.int32)
    heap = np.empty(cap_t, np.int32)
    hkey = np.empty(cap_t, np.float64)
    pending = np.empty(cap_t, np.int32)
    stack = np.empty(cap_p + 8, np.int32)
    fid = np.full(fx.shape[0], -1, np.int64)

    px[0], py[0], pz[0] = 0.0, 0.0, corner_z[0]
    px[1], py[1], pz[1] = W, 0.0, corner_z[1]
    px[2], py[2], pz[2] = W, H, corner_z[2]
    px[3], py[3], pz[3] = 0.0, H, corner_z[3]
    # t0 = (0, 1, 2), t1 = (0, 2, 3); the diagonal 0-2 is shared
    tv[0], tv[1], tv[2] = 0, 1, 2
    tv[3], tv[4], tv[5] = 0, 2, 3
    he[0], he[1], he[2] = -1, -1, 3
    he[3], he[4], he[5] = 2, -1, -1
    vt[0], vt[1], vt[2], vt[3] = 0, 0, 0, 1
    hpos[0] = -1
    hpos[1] = -1
    tflag = np.ones(cap_t, np.uint8)
    pending[0] = 0
    pending[1] = 1
    # npts, ntri, nheap, npend, next forced vertex, next segment, segment cursor, failed
    state = np.array([4, 2, 0, 2, 0, 0, -1, 0], np.int64)
    allint = seg.shape[0] == 0
    for i in range(fx.shape[0]):
        if not (_isint(fx[i]) and _isint(fy[i])):
            allint = False
    phase = 0
    while True:
        if phase == 0:
            if _constrain(
                herr,
                hfill,
                fx,
                fy,
                fz,
                seg,
                seg_linear,
                fid,
                px,
                py,
                pz,
                tv,
                he,
                hc,
                vt,
                hpos,
                tflag,
                pending,
                stack,
                state,
                allint,
            ):
                phase = 1
                continue
        elif _refine(
            herr,
            max_error,
            px,
            py,
            pz,
            tv,
            he,
            hc,
            vt,
            terr,
            tcand,
            hpos,
            heap,
            hkey,
            tflag,
            pending,
            stack,
            state,
            allint,
        ):
            break
        # grow the arrays (the phases stop, losing nothing, when they are full)
        if state[0] + 1 > cap_p:
            cap_p = cap_p + cap_p // 2 + 1
            px = _grow_like(px, cap_p)
            py = _grow_like(py, cap_p)
            pz = _grow_f64(pz, cap_p)
            vt = _grow_i32(vt, cap_p)
            # the flip stack holds at most 4 + (degree of the new vertex) edges
            stack = _grow_i32(stack, cap_p + 8)
        if state[1] + 2 > cap_t:
            cap_t = cap_t + cap_t // 2 + 2
            tv = _grow_i32(tv, 3 * cap_t)
            he = _grow_i32(he, 3 * cap_t)
            hc = _grow_u8(hc, 3 * cap_t)
            terr = _grow_f64(terr, cap_t)
            tcand = _grow_i32(tcand, cap_t)
            hpos = _grow_i32(hpos, cap_t)
            heap = _grow_i32(heap, cap_t)
            hkey = _grow_f64(hkey, cap_t)
            tflag = _grow_u8(tflag, cap_t)
            pending = _grow_i32(pending, cap_t)
    npts = state[0]
    ntri = state[1]
    return (
        px[:npts].copy(),
        py[:npts].copy(),
        pz[:npts].copy(),
        tv[: 3 * ntri].copy(),
        terr[:ntri].copy(),
        hc[: 3 * ntri].copy(),
        state[7],
    )


@njit(cache=True, nogil=True)
def greedy_refine(herr, corner_z, max_error, fx=None, fy=None, fz=None):
    """Greedy Delaunay refinement of a height grid without constraint edges, optionally
    with forced vertices ``(fx, fy, fz)`` that are grid samples (integral
    coordinates; tile borders): :func:`greedy_refine_forced` with int32 vertex
    coordinates. Returns ``(px, py, pz, tri, tri_err)``."""
    e = np.empty(0, np.float64)
    if fx is None:
        gx = e
        gy = e
        gz = e
    else:
        gx = fx
        gy = fy
        gz = fz
    px, py, pz, tri, terr, _, _ = _greedy_core(
        herr,
        corner_z,
        max_error,
        gx,
        gy,
        gz,
        np.empty((0, 2), np.int64),
        np.empty(0, np.uint8),
        np.empty((1, 1), np.float64),
        np.empty(0, np.int32),
    )
    return px, py, pz, tri, terr


@njit(cache=True)
def _refine(
    herr,
    max_error,
    px,
    py,
    pz,
    tv,
    he,
    hc,
    vt,
    terr,
    tcand,
    hpos,
    heap,
    hkey,
    tflag,
    pending,
    stack,
    state,
    allint,
):
    """Refinement steps of :func:`greedy_refine_forced` until done (returns True) or
    until the arrays have no room for one more step (returns False; nothing is lost)."""
    cols = herr.shape[1]
    nheap = state[2]
    done = False
    while True:
        # (re)rasterise the triangles changed by the last step
        npend = state[3]
        for k in range(npend):
            t = pending[k]
            if allint:
                a = tv[3 * t]
                b = tv[3 * t + 1]
                c = tv[3 * t + 2]
                err, idx = tri_worst(
                    px[a], py[a], pz[a], px[b], py[b], pz[b], px[c], py[c], pz[c], herr
                )
            else:
                err, idx = _rasterise(t, px, py, pz, tv, herr, allint)
            terr[t] = err
            tcand[t] = idx
            tflag[t] = 0
            pos = hpos[t]
            if pos >= 0:  # still queued with its old key: update it in place
                if err > max_error:
                    if err > hkey[pos]:
                        _sift_up(hkey, heap, hpos, pos, err, t)
                    else:
                        _sift_down(hkey, heap, hpos, pos, nheap, err, t)
                else:
                    nheap = _heap_remove(hkey, heap, hpos, nheap, t)
            elif err > max_error:
                nheap = _heap_push(hkey, heap, hpos, nheap, t, err)
        state[3] = 0
        if nheap == 0:
            done = True
            break
        if state[0] + 1 > px.shape[0] or state[1] + 2 > hpos.shape[0]:
            break

        # the worst triangle stays at the heap's root: it is split now, so it is
        # re-rasterised below and its key updated in place (one sift, not two)
        t = heap[0]
        idx = np.int64(tcand[t])
        qx = float(idx % cols)
        qy = float(idx // cols)
        kind, k = _locate_in(t, qx, qy, px, py, tv)
        if kind < 0 or kind == 2:
            # at a vertex (or outside: cannot happen); never pick it again
            nheap = _heap_remove(hkey, heap, hpos, nheap, t)
            terr[t] = 0.0
            continue
        _insert(
            t,
            kind,
            k,
            qx,
            qy,
            herr[idx // cols, idx % cols],
            px,
            py,
            pz,
            tv,
            he,
            hc,
            vt,
            hpos,
            tflag,
            pending,
            stack,
            state,
            allint,
        )
    state[2] = nheap
    return done


# --------------------------------------------------------------------------------------
# RTIN (right-triangulated irregular network) on a (2**k + 1)**2 grid
# --------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _rtin_square_tri(dep, i, k, x0, y0, L, q):
    """Triangle ``q`` (0-1 at even depths, 0-3 at odd ones) of square (i, k) of side
    ``L`` at depth ``dep`` of the RTIN hierarchy: (ax, ay, bx, by, cx, cy), the
    hypotenuse a-b and the right angle at c. At depth 2j the squares of side
    S >> j are cut along one diagonal (the main one where (i + k) is even), at depth
    2j + 1 along both (hypotenuses on the square's sides)."""
    x1 = x0 + L
    y1 = y0 + L
    if dep & 1 == 0:
        if (i + k) & 1 == 0:
            if q == 0:
                return x0, y0, x1, y1, x1, y0
            return x1, y1, x0, y0, x0, y1
        if q == 0:
            return x1, y0, x0, y1, x0, y0
        return x0, y1, x1, y0, x1, y1
    cx = x0 + (L >> 1)
    cy = y0 + (L >> 1)
    if q == 0:
        return x1, y0, x0, y0, cx, cy
    if q == 1:
        return x1, y1, x1, y0, cx, cy
    if q == 2:
        return x0, y1, x1, y1, cx, cy
    return x0, y0, x0, y1, cx, cy


@njit(cache=True)
def _rtin_tri(ax, ay, bx, by, cx, cy, herr, hvert, max_error, slack, E, own, inexact, kids):
    """One triangle (hypotenuse a-b, right angle at c) of :func:`rtin_errors_own`."""
    mx = (ax + bx) >> 1
    my = (ay + by) >> 1
    e = E[my, mx]  # the hypotenuse neighbour may have set it already
    below = 0.0  # the children's own errors (bounds), 0 for the smallest
    if kids:
        # children (c, a, m) and (b, c, m): midpoints of c-a and b-c
        m1y = (cy + ay) >> 1
        m1x = (cx + ax) >> 1
        m2y = (by + cy) >> 1
        m2x = (bx + cx) >> 1
        e = max(e, max(E[m1y, m1x], E[m2y, m2x]))
        below = max(below, max(own[m1y, m1x], own[m2y, m2x]))
    if e <= max_error:
        # only needed when nothing below already forces the split. A sample in a
        # child is within the child's error of the child's plane, which is within
        # |hvert(m) - chord| of this triangle's plane there (the planes differ
        # linearly, by 0 at a, b, c): a bound without a pass
        d = abs(hvert[my, mx] - 0.5 * (hvert[ay, ax] + hvert[by, bx]))
        ub = below + d
        if ub <= max_error - slack:
            t = ub
            inexact[my, mx] = 1
        else:
            t = tri_max_capped(
                ax,
                ay,
                hvert[ay, ax],
                bx,
                by,
                hvert[by, bx],
                cx,
                cy,
                hvert[cy, cx],
                herr,
                max_error,
            )
        e = max(e, t)
        if t > own[my, mx]:
            own[my, mx] = t
    E[my, mx] = e


@njit(cache=True)
def _rtin_finest(herr, hvert, max_error, slack, E, own, inexact):
    """The finest level with midpoints of :func:`rtin_errors_own` (squares of side
    2 cut along both diagonals) on a grid with every sample valid and ``hvert`` the
    heights: each triangle holds its three vertices (error 0) and its hypotenuse
    midpoint m, so the error at m is ``|h(m) - chord|``, the same for both triangles
    on that hypotenuse. Errors above ``max_error`` (less the rounding slack) go
    through the rasteriser as at the other levels. Returns False, doing nothing,
    when some sample is invalid or ``hvert`` differs from ``herr``."""
    s = herr.shape[0]
    for y in range(s):
        for x in range(s):
            if not herr[y, x] == hvert[y, x]:
                return False
    lim = max_error - slack
    for y in range(s):
        for x in range(1 - (y & 1), s, 2):
            # (x, y) with x + y odd: a side midpoint; its chord runs along the side
            if y & 1 == 0:
                ax, ay, bx, by = x + 1, y, x - 1, y
            else:
                ax, ay, bx, by = x, y + 1, x, y - 1
            d = abs(herr[y, x] - 0.5 * (herr[ay, ax] + herr[by, bx]))
            if d <= lim:
                E[y, x] = d
                own[y, x] = d
            else:
                for side in (-1, 1):
                    if y & 1 == 0:
                        cx, cy = x, y + side
                    else:
                        cx, cy = x + side, y
                    if 0 <= cx < s and 0 <= cy < s:
                        _rtin_tri(
                            ax,
                            ay,
                            bx,
                            by,
                            cx,
                            cy,
                            herr,
                            hvert,
                            max_error,
                            slack,
                            E,
                            own,
                            inexact,
                            False,
                        )
    return True


@njit(cache=True)
def rtin_errors(herr, hvert, max_error):
    """:func:`rtin_errors_own`, returning only the midpoint errors."""
    s = herr.shape[0]
    return rtin_errors_own(
        herr, hvert, max_error, np.full((s, s), -1.0), np.zeros((s, s), np.uint8)
    )


@njit(cache=True)
def rtin_errors_own(herr, hvert, max_error, own, inexact):
    """Exact hierarchical errors of the RTIN over a square grid of size s = 2**k + 1.

    Every triangle of the binary hierarchy gets its error against its own plane
    (through its three vertices, heights ``hvert``) over *every* valid sample inside
    it (``herr``), not only its hypotenuse midpoint. The error is stored at the
    hypotenuse midpoint (shared by the two triangles on that hypotenuse) as the max
    of both triangles' errors and of the errors stored at their children's
    midpoints, processed from the finest level up: a triangle is split exactly when
    its midpoint error exceeds the tolerance, and the result is always conforming.

    A triangle's error is bounded without a pass first: at most its children's
    errors plus ``|hvert(m) - (hvert(a) + hvert(b)) / 2|`` (the most the children's
    planes depart from its own). When that bound is within ``max_error`` (less a
    rounding slack) it stands in for the error (the decision to split is the same)
    and ``inexact[m]`` is set; otherwise the triangle is rasterised, stopping at the
    first sample beyond ``max_error`` (so a value above it only means "split";
    :func:`rtin_extract` must use the same or a larger tolerance). A triangle whose
    children already exceed the tolerance is not measured at all.

    ``own`` (s, s) float64 filled with -1 and ``inexact`` (s, s) uint8 zeros are
    filled in: ``own[m]`` the worst error (exact, or the bound where ``inexact[m]``)
    of the triangles with hypotenuse midpoint ``m`` against their own planes. For
    the leaves of the RTIN at ``max_error`` it is always set, and exact where
    ``inexact`` is 0 (:func:`rtin_mesh` measures the others).

    Returns the float64 (s, s) midpoint errors (0 where no triangle has that
    midpoint). Work grows with s**2 times the number of levels that need a pass (at
    most log2(s)); memory is the output and ``own`` (8 bytes per sample each),
    ``inexact`` (1) and a small stack.
    """
    s = herr.shape[0]
    S = s - 1
    E = np.zeros((s, s), np.float64)
    slack = 1e-9 * (1.0 + abs(max_error))
    depth_max = 0
    while (1 << (depth_max // 2)) < S:
        depth_max += 2
    # level by level from the finest up, triangles enumerated by their square: at
    # depth 2j the squares of side L = S >> j are cut along one diagonal (the main
    # one where (i + k) is even), at depth 2j + 1 along both (hypotenuses on the
    # square's sides)
    top = depth_max - 1
    if S >= 2 and _rtin_finest(herr, hvert, max_error, slack, E, own, inexact):
        top = depth_max - 2
    for dep in range(top, -1, -1):
        j = dep >> 1
        L = S >> j
        n = 1 << j
        kids = dep + 1 < depth_max
        nq = 2 if dep & 1 == 0 else 4
        for k in range(n):
            for i in range(n):
                for q in range(nq):
                    ax, ay, bx, by, cx, cy = _rtin_square_tri(dep, i, k, i * L, k * L, L, q)
                    _rtin_tri(
                        ax,
                        ay,
                        bx,
                        by,
                        cx,
                        cy,
                        herr,
                        hvert,
                        max_error,
                        slack,
                        E,
                        own,
                        inexact,
                        kids,
                    )
    return E


@njit(cache=True)
def rtin_extract(E, max_error):
    """Triangles of the RTIN whose midpoint errors are within ``max_error``.

    Returns ``(vid, tri)``: an (s, s) int32 map from grid node to vertex index (-1 when
    unused; vertices numbered in row-major order) and an (M, 3) int32 array of vertex
    indices, CCW with x = column, y = row upwards, coarsest leaves first. Two passes
    over the hierarchy, level by level (count, then write). Memory: 4 bytes per
    sample plus the output.
    """
    s = E.shape[0]
    vid = np.full((s, s), -1, np.int32)
    none = np.empty((0, 0))
    flags = np.empty((0, 0), np.uint8)
    wm = np.zeros(1)
    nt = _rtin_leaf_pass(E, max_error, vid, np.empty((0, 3), np.int32), none, none, flags, wm)
    k = 0
    for y in range(s):
        for x in range(s):
            if vid[y, x] == 0:
                vid[y, x] = k
                k += 1
    out = np.empty((nt, 3), np.int32)
    _rtin_leaf_pass(E, max_error, vid, out, none, none, flags, wm)
    return vid, out


@njit(cache=True, inline="always")
def _rtin_leaf(
    ax, ay, bx, by, cx, cy, dep, depth_max, E, tol, vid, out, nt, herr, own, inexact, wm
):
    """One existing hierarchy triangle of :func:`_rtin_leaf_pass`: when it is a
    leaf, mark its vertices (count pass, ``out`` empty) or write it CCW (write pass),
    folding its error into ``wm[0]``. Returns the updated triangle count."""
    mx = (ax + bx) >> 1
    my = (ay + by) >> 1
    if dep < depth_max and E[my, mx] > tol:
        return nt  # split: its children are visited at the next level
    if out.shape[0] == 0:
        vid[ay, ax] = 0
        vid[by, bx] = 0
        vid[cy, cx] = 0
        if own.shape[0] > 0 and dep < depth_max and not inexact[my, mx]:
            if own[my, mx] > wm[0]:
                wm[0] = own[my, mx]  # the exact errors first
        return nt + 1
    if _orient(ax, ay, bx, by, cx, cy) > 0:
        out[nt, 0], out[nt, 1], out[nt, 2] = vid[ay, ax], vid[by, bx], vid[cy, cx]
    else:
        out[nt, 0], out[nt, 1], out[nt, 2] = vid[ay, ax], vid[cy, cx], vid[by, bx]
    if own.shape[0] > 0 and dep < depth_max and inexact[my, mx] and own[my, mx] > wm[0]:
        # only a bound, above the worst error so far: measure the leaf (no cap)
        t = tri_max_capped(
            ax, ay, herr[ay, ax], bx, by, herr[by, bx], cx, cy, herr[cy, cx], herr, np.inf
        )
        if t > wm[0]:
            wm[0] = t
    return nt + 1


@njit(cache=True)
def _rtin_leaf_pass(E, tol, vid, out, herr, own, inexact, wm):
    """The leaves of the RTIN for tolerance ``tol``, level by level (squares as in
    :func:`rtin_errors_own`). Count pass (``out`` empty): mark the used nodes of
    ``vid`` with 0 and return the number of leaves. Write pass: write the leaves as
    CCW triangles of ``vid`` indices into ``out``. With ``own`` given (non-empty),
    ``wm[0]`` gets the leaves' worst error: the count pass takes ``own`` at the
    midpoints where it is exact, the write pass rasterises (no cap) the leaves
    whose bound exceeds the worst so far (the others cannot change it)."""
    s = E.shape[0]
    S = s - 1
    depth_max = 0
    while (1 << (depth_max // 2)) < S:
        depth_max += 2
    nt = 0
    for dep in range(depth_max + 1):
        j = dep >> 1
        L = S >> j
        n = 1 << j
        nq = 2 if dep & 1 == 0 else 4
        for k in range(n):
            for i in range(n):
                for q in range(nq):
                    ax, ay, bx, by, cx, cy = _rtin_square_tri(dep, i, k, i * L, k * L, L, q)
                    # it exists when its parent split: the parent's hypotenuse
                    # midpoint is this triangle's right-angle vertex c (errors grow
                    # towards the root, so then every ancestor split too)
                    if dep > 0 and not E[cy, cx] > tol:
                        continue
                    nt = _rtin_leaf(
                        ax,
                        ay,
                        bx,
                        by,
                        cx,
                        cy,
                        dep,
                        depth_max,
                        E,
                        tol,
                        vid,
                        out,
                        nt,
                        herr,
                        own,
                        inexact,
                        wm,
                    )
    return nt


@njit(cache=True)
def rtin_mesh(herr, max_error):
    """RTIN of a full (2**k + 1)**2 grid *without invalid samples*, in one call.

    Returns ``(gv, faces, reached)``: (N, 3) float64 vertices (column, row, height;
    row-major order), (M, 3) int32 CCW faces (as :func:`rtin_extract`), and the
    TIN's exact worst error over all samples: the max, over the leaves, of the
    errors :func:`rtin_errors_own` measured on their own planes, or, where it only
    bounded them, of the leaf rasterised now (the smallest triangles hold no sample
    but their vertices, so their error is 0). The leaves tile the grid, so every
    sample is covered. Memory: the errors and own errors (16 bytes per sample), the
    flags and vertex map (5) and the output.
    """
    s = herr.shape[0]
    own = np.full((s, s), -1.0)
    inexact = np.zeros((s, s), np.uint8)
    E = rtin_errors_own(herr, herr, max_error, own, inexact)
    vid = np.full((s, s), -1, np.int32)
    wm = np.zeros(1)
    nt = _rtin_leaf_pass(E, max_error, vid, np.empty((0, 3), np.int32), herr, own, inexact, wm)
    k = 0
    for y in range(s):
        for x in range(s):
            if vid[y, x] == 0:
                vid[y, x] = k
                k += 1
    gv = np.empty((k, 3), np.float64)
    k = 0
    for y in range(s):
        for x in range(s):
            if vid[y, x] >= 0:
                gv[k, 0] = x
                gv[k, 1] = y
                gv[k, 2] = herr[y, x]
                k += 1
    out = np.empty((nt, 3), np.int32)
    _rtin_leaf_pass(E, max_error, vid, out, herr, own, inexact, wm)
    worst = wm[0]
    return gv, out, max(worst, 0.0)


# --------------------------------------------------------------------------------------
# clipping a TIN to the raster extent (RTIN on a padded grid)
# --------------------------------------------------------------------------------------


@njit(cache=True)
def _clip_axis(xs, ys, zs, ids, n, axis, limit, nx, ny, nz, nnew, n0):
    """Sutherland-Hodgman step of one polygon (xs, ys, zs, ids: n vertices) against
    coordinate ``axis`` <= limit. Cut points are computed from the segment's endpoints
    in lexicographic order, so the two triangles sharing an edge get the same bits;
    they are appended to (nx, ny, nz) with ids n0 + k. Returns the new polygon."""
    ox = np.empty(8)
    oy = np.empty(8)
    oz = np.empty(8)
    oi = np.empty(8, np.int64)
    m = 0
    for i in range(n):
        j = (i + 1) % n
        pv = xs[i] if axis == 0 else ys[i]
        qv = xs[j] if axis == 0 else ys[j]
        pin = pv <= limit
        qin = qv <= limit
        if pin:
            ox[m], oy[m], oz[m], oi[m] = xs[i], ys[i], zs[i], ids[i]
            m += 1
        if pin != qin:
            ax, ay, az = xs[i], ys[i], zs[i]
            bx, by, bz = xs[j], ys[j], zs[j]
            if (ax, ay) > (bx, by):
                ax, ay, az, bx, by, bz = bx, by, bz, ax, ay, az
            if axis == 0:
                t = (limit - ax) / (bx - ax)
                cx, cy = limit, ay + t * (by - ay)
            else:
                t = (limit - ay) / (by - ay)
                cx, cy = ax + t * (bx - ax), limit
            nx[nnew] = cx
            ny[nnew] = cy
            nz[nnew] = az + t * (bz - az)
            ox[m], oy[m], oz[m], oi[m] = cx, cy, nz[nnew], n0 + nnew
            nnew += 1
            m += 1
    return ox, oy, oz, oi, m, nnew


@njit(cache=True)
def clip_tin(gx, gy, gz, faces, xmax, ymax):
    """Clip a TIN in grid units to x <= xmax, y <= ymax on each triangle's own plane.

    Returns ``(nx, ny, nz, out_faces)``: the cut points (ids len(gx) + k, duplicates
    where triangles share a cut edge, to be merged by position) and the faces: the
    triangles inside unchanged, the crossing ones fan-triangulated (orientation
    kept, zero-area pieces dropped). Memory: the output."""
    n0 = gx.shape[0]
    nf = faces.shape[0]
    ncross = 0
    for f in range(nf):
        for k in range(3):
            v = faces[f, k]
            if gx[v] > xmax or gy[v] > ymax:
                ncross += 1
                break
    nx = np.empty(6 * ncross + 1)
    ny = np.empty(6 * ncross + 1)
    nz = np.empty(6 * ncross + 1)
    out = np.empty((nf + 3 * ncross, 3), np.int64)
    nnew = 0
    no = 0
    xs = np.empty(3)
    ys = np.empty(3)
    zs = np.empty(3)
    ids = np.empty(3, np.int64)
    for f in range(nf):
        inside = True
        for k in range(3):
            v = faces[f, k]
            xs[k], ys[k], zs[k], ids[k] = gx[v], gy[v], gz[v], v
            if gx[v] > xmax or gy[v] > ymax:
                inside = False
        if inside:
            out[no, 0], out[no, 1], out[no, 2] = ids[0], ids[1], ids[2]
            no += 1
            continue
        px, py, pz, pi, m, nnew = _clip_axis(xs, ys, zs, ids, 3, 0, xmax, nx, ny, nz, nnew, n0)
        if m >= 3:
            px, py, pz, pi, m, nnew = _clip_axis(px, py, pz, pi, m, 1, ymax, nx, ny, nz, nnew, n0)
        for k in range(1, m - 1):
            area = (px[k] - px[0]) * (py[k + 1] - py[0]) - (py[k] - py[0]) * (px[k + 1] - px[0])
            if area != 0.0:
                out[no, 0], out[no, 1], out[no, 2] = pi[0], pi[k], pi[k + 1]
                no += 1
    return nx[:nnew].copy(), ny[:nnew].copy(), nz[:nnew].copy(), out[:no].copy()


# --------------------------------------------------------------------------------------
# hole filling for vertex heights
# --------------------------------------------------------------------------------------


@njit(cache=True)
def fill_nearest(h, valid):
    """Copy of ``h`` with every invalid sample set to the height of a nearby valid one
    (two-pass 8-neighbour propagation of the nearest source, squared Euclidean
    distance; exact for convex holes, within a pixel or so otherwise). Every filled
    value is one of the valid heights, so fills never leave the valid range around a
    hole. Memory: 16 bytes per sample."""
    rows, cols = h.shape
    src = np.full((rows, cols), -1, np.int64)
    dist = np.full((rows, cols), np.inf)
    for y in range(rows):
        for x in range(cols):
            if valid[y, x]:
                src[y, x] = y * cols + x
                dist[y, x] = 0.0
    for sweep in range(2):
        if sweep == 0:
            ys = range(rows)
        else:
            ys = range(rows - 1, -1, -1)
        for y in ys:
            xs = range(cols) if sweep == 0 else range(cols - 1, -1, -1)
            for x in xs:
                if dist[y, x] == 0.0:
                    continue
                for dy in range(-1, 2):
                    for dx in range(-1, 2):
                        yy = y + dy
                        xx = x + dx
                        if yy < 0 or yy >= rows or xx < 0 or xx >= cols:
                            continue
                        s_ = src[yy, xx]
                        if s_ < 0:
                            continue
                        sy = s_ // cols
                        sx = s_ % cols
                        d = float((sy - y) * (sy - y) + (sx - x) * (sx - x))
                        if d < dist[y, x]:
                            dist[y, x] = d
                            src[y, x] = s_
    out = h.copy()
    for y in range(rows):
        for x in range(cols):
            if not valid[y, x]:
                s_ = src[y, x]
                out[y, x] = h[s_ // cols, s_ % cols] if s_ >= 0 else np.nan
    return out


# --------------------------------------------------------------------------------------
# verification: rasterise any TIN (float vertices in grid units) back onto the grid
# --------------------------------------------------------------------------------------


@njit(cache=True)
def tin_sample_errors(vx, vy, vz, faces, herr):
    """Rasterise a TIN given in grid coordinates (float vertices allowed) onto the grid.

    For every triangle, each grid sample in its closed footprint (tolerance 1e-9 grid
    units) gets the plane's height; the error of a sample is the largest
    ``|tin - h|`` over the triangles covering it. Returns ``(err, tri_err)``: a float64
    grid (NaN for invalid samples, +inf for valid samples no triangle covers) and each
    triangle's worst error (-1 when it covers no valid sample). Memory: 8 bytes per
    sample plus 8 per triangle.
    """
    rows, cols = herr.shape
    err = np.full((rows, cols), -1.0)
    nf = faces.shape[0]
    tri_err = np.full(nf, -1.0)
    eps = 1e-9
    for f in range(nf):
        i0 = faces[f, 0]
        i1 = faces[f, 1]
        i2 = faces[f, 2]
        x0, y0, z0 = vx[i0], vy[i0], vz[i0]
        x1, y1, z1 = vx[i1], vy[i1], vz[i1]
        x2, y2, z2 = vx[i2], vy[i2], vz[i2]
        area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
        if area < 0:
            x1, y1, z1, x2, y2, z2 = x2, y2, z2, x1, y1, z1
            area = -area
        if area <= 0:
            continue
        gx = ((z1 - z0) * (y2 - y0) - (z2 - z0) * (y1 - y0)) / area
        gy = ((z2 - z0) * (x1 - x0) - (z1 - z0) * (x2 - x0)) / area
        ylo = max(0, int(np.ceil(min(y0, min(y1, y2)) - eps)))
        yhi = min(rows - 1, int(np.floor(max(y0, max(y1, y2)) + eps)))
        xmn = max(0, int(np.ceil(min(x0, min(x1, x2)) - eps)))
        xmx = min(cols - 1, int(np.floor(max(x0, max(x1, x2)) + eps)))
        best = -1.0
        for y in range(ylo, yhi + 1):
            lo = float(xmn)
            hi = float(xmx)
            # three edges: (p, q) with w = (qx-px)(y-py) - (qy-py)(x-px) >= -eps*len
            for k in range(3):
                if k == 0:
                    ax_, ay_, bx_, by_ = x1, y1, x2, y2
                elif k == 1:
                    ax_, ay_, bx_, by_ = x2, y2, x0, y0
                else:
                    ax_, ay_, bx_, by_ = x0, y0, x1, y1
                A = ay_ - by_
                K = (bx_ - ax_) * (y - ay_) + (by_ - ay_) * ax_
                tol = eps * (abs(A) + abs(bx_ - ax_))
                if A > 0:
                    m = (-K - tol) / A
                    if m > lo:
                        lo = m
                elif A < 0:
                    m = (K + tol) / (-A)
                    if m < hi:
                        hi = m
                elif K < -tol:
                    hi = lo - 1.0
            ilo = int(np.ceil(lo - 1e-12))
            ihi = int(np.floor(hi + 1e-12))
            zrow = z0 + gy * (y - y0) - gx * x0
            for x in range(max(ilo, 0), min(ihi, cols - 1) + 1):
                h = herr[y, x]
                if h != h:
                    continue
                e = abs(zrow + gx * x - h)
                if e > best:
                    best = e
                if e > err[y, x]:
                    err[y, x] = e
        tri_err[f] = best
    for y in range(rows):
        for x in range(cols):
            if herr[y, x] != herr[y, x]:
                err[y, x] = np.nan
            elif err[y, x] < 0.0:
                err[y, x] = np.inf
    return err, tri_err


# --------------------------------------------------------------------------------------
# 1-D refinement of a profile (tile borders)
# --------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def refine_profile(z, pos, zfix, max_error):
    """Vertices of a polyline along a profile of samples within ``max_error``.

    ``z`` (n,) sample heights along a grid line (NaN: invalid, never a vertex, never
    counted); ``pos`` (m,) increasing float positions of fixed vertices along it
    (the first 0, the last n-1; others anywhere between, e.g. where a constraint
    crosses) with heights ``zfix``. Between consecutive fixed vertices the valid
    sample farthest (vertically) from the chord is made a vertex, recursively, until
    every valid sample is within ``max_error`` of the polyline. Returns a uint8 mask
    of the samples chosen (fixed vertices are not in it). Work grows with n times
    the depth of the recursion; memory with n.
    """
    n = z.shape[0]
    chosen = np.zeros(n, np.uint8)
    stack_a = np.empty(n + pos.shape[0] + 2, np.float64)
    stack_za = np.empty(n + pos.shape[0] + 2, np.float64)
    stack_b = np.empty(n + pos.shape[0] + 2, np.float64)
    stack_zb = np.empty(n + pos.shape[0] + 2, np.float64)
    ns = 0
    for k in range(pos.shape[0] - 1):
        stack_a[ns] = pos[k]
        stack_za[ns] = zfix[k]
        stack_b[ns] = pos[k + 1]
        stack_zb[ns] = zfix[k + 1]
        ns += 1
    while ns > 0:
        ns -= 1
        a = stack_a[ns]
        za = stack_za[ns]
        b = stack_b[ns]
        zb = stack_zb[ns]
        lo = int(np.floor(a)) + 1 if a == np.floor(a) else int(np.ceil(a))
        hi = int(np.ceil(b)) - 1 if b == np.ceil(b) else int(np.floor(b))
        best = max_error
        bi = -1
        for i in range(max(lo, 0), min(hi, n - 1) + 1):
            e = abs(za + (zb - za) * (i - a) / (b - a) - z[i])
            if e > best:
                best = e
                bi = i
        if bi >= 0:
            chosen[bi] = 1
            stack_a[ns] = a
            stack_za[ns] = za
            stack_b[ns] = bi
            stack_zb[ns] = z[bi]
            ns += 1
            stack_a[ns] = bi
            stack_za[ns] = z[bi]
            stack_b[ns] = b
            stack_zb[ns] = zb
            ns += 1
    return chosen


# --------------------------------------------------------------------------------------
# heights of a TIN at arbitrary points
# --------------------------------------------------------------------------------------


@njit(cache=True)
def tin_heights_at(vx, vy, vz, faces, qx, qy, cell):
    """Height of the TIN surface at each query point (NaN outside every triangle).

    Triangles are bucketed into square cells of side ``cell`` (their bounding boxes),
    then each query point tests the triangles of its cell (barycentric coordinates,
    tolerance 1e-9 of the triangle's size, so points on edges are found). Memory:
    the buckets (8 bytes per triangle-cell pair) plus the output.
    """
    nf = faces.shape[0]
    x0 = vx.min()
    y0 = vy.min()
    nx = int((vx.max() - x0) / cell) + 1
    ny = int((vy.max() - y0) / cell) + 1
    count = np.zeros(nx * ny + 1, np.int64)
    for f in range(nf):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        i0 = int((min(vx[a], min(vx[b], vx[c])) - x0) / cell)
        i1 = int((max(vx[a], max(vx[b], vx[c])) - x0) / cell)
        j0 = int((min(vy[a], min(vy[b], vy[c])) - y0) / cell)
        j1 = int((max(vy[a], max(vy[b], vy[c])) - y0) / cell)
        for j in range(j0, j1 + 1):
            for i in range(i0, i1 + 1):
                count[j * nx + i + 1] += 1
    for k in range(nx * ny):
        count[k + 1] += count[k]
    fill = count[:-1].copy()
    items = np.empty(count[-1], np.int64)
    for f in range(nf):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        i0 = int((min(vx[a], min(vx[b], vx[c])) - x0) / cell)
        i1 = int((max(vx[a], max(vx[b], vx[c])) - x0) / cell)
        j0 = int((min(vy[a], min(vy[b], vy[c])) - y0) / cell)
        j1 = int((max(vy[a], max(vy[b], vy[c])) - y0) / cell)
        for j in range(j0, j1 + 1):
            for i in range(i0, i1 + 1):
                items[fill[j * nx + i]] = f
                fill[j * nx + i] += 1
    out = np.full(qx.shape[0], np.nan)
    for q in range(qx.shape[0]):
        i = int((qx[q] - x0) / cell)
        j = int((qy[q] - y0) / cell)
        if i < 0 or j < 0 or i >= nx or j >= ny:
            continue
        k = j * nx + i
        for s in range(count[k], count[k + 1]):
            f = items[s]
            a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
            ax, ay, bx, by, cx, cy = vx[a], vy[a], vx[b], vy[b], vx[c], vy[c]
            det = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
            if det == 0.0:
                continue
            l1 = ((qx[q] - ax) * (cy - ay) - (qy[q] - ay) * (cx - ax)) / det
            l2 = ((bx - ax) * (qy[q] - ay) - (by - ay) * (qx[q] - ax)) / det
            l0 = 1.0 - l1 - l2
            if l0 >= -1e-9 and l1 >= -1e-9 and l2 >= -1e-9:
                out[q] = l0 * vz[a] + l1 * vz[b] + l2 * vz[c]
                break
    return out
