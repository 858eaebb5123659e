"""Numba kernels of quadric-error edge-collapse simplification (:func:`twin.mesh.simplify`).

Data layout (flat arrays only, nothing Python-side in the loop):

- ``Q`` (N, 11) float64 per-vertex quadrics: ``[aa, ab, ac, bb, bc, cc, ad, bd, cd, dd, w]``
  for the sum over incident planes ``a x + b y + c z + d = 0`` (unit normals), each
  weighted by its face area (border constraint planes by the edge length squared);
  ``w`` is the total weight, so ``Q(p) / w`` is a weighted mean squared distance.
- vertex -> face adjacency as linked lists of corners: ``head[v]`` is the first
  corner (``3 * face + k``) of vertex v, ``nxt[c]`` the next one; a collapse splices
  the removed vertex's list into the kept one's; dead faces are skipped lazily.
- collapses in passes over the live edges sorted by key (see the ``passes``
  section below), no priority queue.

The geometric helpers (:func:`plan_position`, :func:`face_ok`, ...) take plain
numbers so that the Python reference in :mod:`twin.mesh._reference` calls the very
same arithmetic (through ``.py_func``) while doing the bookkeeping with dicts, sets
and ``heapq``; the tests compare the two collapse by collapse.
"""

from __future__ import annotations

import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

INTERIOR = 0
BORDER = 1
SEAM = 2
LOCKED = 3
MIN_COS_ORIGINAL = 0.5  # a face may turn at most 60 degrees from its original normal


# ---------------------------------------------------------------- memory


#: LLVM 17 and later have only opaque pointers, where the prefetch intrinsic is
#: ``llvm.prefetch.p0`` (the name the hint below emits).
_OPAQUE_POINTERS = llvm_binding.llvm_version_info[0] >= 17


@intrinsic
def prefetch(typingctx, arr, idx):
    """Ask the CPU to start loading the cache line of ``arr[idx]`` (1-D) or of row
    ``idx``'s start (2-D) now, without waiting for it (LLVM's ``prefetch`` hint: no
    effect on results). The pass loop issues it for candidates a few places ahead,
    so their random reads overlap the work on the current one."""
    if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
        return None
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):
        if not _OPAQUE_POINTERS:  # older LLVM names the intrinsic by pointee type:
            return context.get_dummy_value()  # no hint there (results are the same)
        aryty, idxty = signature.args
        ary = context.make_array(aryty)(context, builder, args[0])
        i = context.cast(builder, args[1], idxty, types.intp)
        inds = [i] + [context.get_constant(types.intp, 0)] * (aryty.ndim - 1)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, inds, wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # read access, keep in all cache levels, data cache
        rw, locality, cache = ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)
        builder.call(fn, [builder.bitcast(ptr, i8p), rw, locality, cache])
        return context.get_dummy_value()

    return sig, codegen


# ---------------------------------------------------------------- quadric algebra


@njit(cache=True, inline="always")
def add_plane(Q, i, nx, ny, nz, d, w):
    """Add ``w * (n . p + d)**2`` to quadric row ``i`` (n a unit normal)."""
    Q[i, 0] += w * nx * nx
    Q[i, 1] += w * nx * ny
    Q[i, 2] += w * nx * nz
    Q[i, 3] += w * ny * ny
    Q[i, 4] += w * ny * nz
    Q[i, 5] += w * nz * nz
    Q[i, 6] += w * nx * d
    Q[i, 7] += w * ny * d
    Q[i, 8] += w * nz * d
    Q[i, 9] += w * d * d
    Q[i, 10] += w


@njit(cache=True, inline="always")
def quadric_eval(q, x, y, z):
    """``p^T A p + 2 b.p + c`` for an 11-vector quadric ``q`` at ``(x, y, z)``."""
    return (
        q[0] * x * x
        + 2.0 * q[1] * x * y
        + 2.0 * q[2] * x * z
        + q[3] * y * y
        + 2.0 * q[4] * y * z
        + q[5] * z * z
        + 2.0 * (q[6] * x + q[7] * y + q[8] * z)
        + q[9]
    )


@njit(cache=True, inline="always")
def plan_position(q, ux, uy, uz, vx, vy, vz, optimal):
    """Best position for collapsing edge (u, v) under quadric ``q`` (11-vector).

    With ``optimal`` it solves the 3x3 system ``A p = -b`` (Cramer's rule); when the
    system is ill-conditioned (relative determinant below 1e-6, e.g. flat or ridge
    neighbourhoods) or the optimum lies more than one edge length from the edge
    midpoint, it takes the best of v, u and the midpoint (v first on ties).
    Without ``optimal`` it returns v. Returns ``(x, y, z, q(p))``.
    """
    if not optimal:
        return vx, vy, vz, quadric_eval(q, vx, vy, vz)
    a00 = q[0]
    a01 = q[1]
    a02 = q[2]
    a11 = q[3]
    a12 = q[4]
    a22 = q[5]
    c0 = a11 * a22 - a12 * a12
    c1 = a02 * a12 - a01 * a22
    c2 = a01 * a12 - a02 * a11
    det = a00 * c0 + a01 * c1 + a02 * c2
    tr = a00 + a11 + a22
    mx = 0.5 * (ux + vx)
    my = 0.5 * (uy + vy)
    mz = 0.5 * (uz + vz)
    if tr > 0.0 and abs(det) > 1e-6 * tr * tr * tr:
        b0 = -q[6]
        b1 = -q[7]
        b2 = -q[8]
        inv = 1.0 / det
        px = (c0 * b0 + c1 * b1 + c2 * b2) * inv
        py = (c1 * b0 + (a00 * a22 - a02 * a02) * b1 + (a01 * a02 - a00 * a12) * b2) * inv
        pz = (c2 * b0 + (a01 * a02 - a00 * a12) * b1 + (a00 * a11 - a01 * a01) * b2) * inv
        ex = vx - ux
        ey = vy - uy
        ez = vz - uz
        dx = px - mx
        dy = py - my
        dz = pz - mz
        if dx * dx + dy * dy + dz * dz <= ex * ex + ey * ey + ez * ez:
            return px, py, pz, quadric_eval(q, px, py, pz)
    best = quadric_eval(q, vx, vy, vz)
    bx, by, bz = vx, vy, vz
    e = quadric_eval(q, ux, uy, uz)
    if e < best:
        best = e
        bx, by, bz = ux, uy, uz
    e = quadric_eval(q, mx, my, mz)
    if e < best:
        best = e
        bx, by, bz = mx, my, mz
    return bx, by, bz, best


@njit(cache=True, inline="always")
def face_ok(ax, ay, az, bx, by, bz, cx, cy, cz, px, py, pz, ox, oy, oz):
    """Whether moving corner ``a`` of triangle (a, b, c) to ``p`` keeps it valid.

    Rejects a new normal turned by 90 degrees or more from the old one, or by more
    than acos(MIN_COS_ORIGINAL) (60 degrees) from the face's original unit
    normal ``o`` (so small turns cannot add up to a flip, and faces do not stand up
    on edge, e.g. a fan between collinear border vertices), and
    a new triangle whose area is below 1e-6 of the old (degenerate) or zero.
    """
    e1x = bx - ax
    e1y = by - ay
    e1z = bz - az
    e2x = cx - ax
    e2y = cy - ay
    e2z = cz - az
    n0x = e1y * e2z - e1z * e2y
    n0y = e1z * e2x - e1x * e2z
    n0z = e1x * e2y - e1y * e2x
    f1x = bx - px
    f1y = by - py
    f1z = bz - pz
    f2x = cx - px
    f2y = cy - py
    f2z = cz - pz
    n1x = f1y * f2z - f1z * f2y
    n1y = f1z * f2x - f1x * f2z
    n1z = f1x * f2y - f1y * f2x
    dot = n0x * n1x + n0y * n1y + n0z * n1z
    l0 = n0x * n0x + n0y * n0y + n0z * n0z
    l1 = n1x * n1x + n1y * n1y + n1z * n1z
    if l1 <= 0.0 or l1 < 1e-12 * l0:
        return False
    return dot > 0.0 and n1x * ox + n1y * oy + n1z * oz > MIN_COS_ORIGINAL * np.sqrt(l1)


@njit(cache=True, inline="always")
def attr_penalty(attrs, weights, u, v):
    """``0.25 * sum_k (w_k (a_u,k - a_v,k))**2``: the attribute term of a collapse key."""
    s = 0.0
    for k in range(attrs.shape[1]):
        d = weights[k] * (attrs[u, k] - attrs[v, k])
        s += d * d
    return 0.25 * s


# ---------------------------------------------------------------- set-up


@njit(cache=True, inline="always")
def face_cross(V, a, b, c):
    """``(b - a) x (c - a)`` of a face's corners and its length (twice the area)."""
    e1x = V[b, 0] - V[a, 0]
    e1y = V[b, 1] - V[a, 1]
    e1z = V[b, 2] - V[a, 2]
    e2x = V[c, 0] - V[a, 0]
    e2y = V[c, 1] - V[a, 1]
    e2z = V[c, 2] - V[a, 2]
    nx = e1y * e2z - e1z * e2y
    ny = e1z * e2x - e1x * e2z
    nz = e1x * e2y - e1y * e2x
    return nx, ny, nz, np.sqrt(nx * nx + ny * ny + nz * nz)


@njit(cache=True, inline="always")
def add_border_plane(V, F, Q, f, k, weight, i):
    """Constraint plane through edge k of face f (corner k to corner k + 1),
    perpendicular to the face, weighted by ``weight * length**2``, added to vertex
    ``i`` (one of the edge's ends; each end adds it for itself)."""
    a = F[f, k]
    b = F[f, (k + 1) % 3]
    c = F[f, (k + 2) % 3]
    ex = V[b, 0] - V[a, 0]
    ey = V[b, 1] - V[a, 1]
    ez = V[b, 2] - V[a, 2]
    gx = V[c, 0] - V[a, 0]
    gy = V[c, 1] - V[a, 1]
    gz = V[c, 2] - V[a, 2]
    nx = ey * gz - ez * gy
    ny = ez * gx - ex * gz
    nz = ex * gy - ey * gx
    # m = e x n lies in the face, perpendicular to the edge
    mx = ey * nz - ez * ny
    my = ez * nx - ex * nz
    mz = ex * ny - ey * nx
    lm = np.sqrt(mx * mx + my * my + mz * mz)
    if lm == 0.0:
        return
    mx /= lm
    my /= lm
    mz /= lm
    d = -(mx * V[a, 0] + my * V[a, 1] + mz * V[a, 2])
    w = weight * (ex * ex + ey * ey + ez * ez)
    add_plane(Q, i, mx, my, mz, d, w)
    # constraint planes shape the optimum but are not surface area: keep w the area
    Q[i, 10] -= w


@njit(cache=True, parallel=True)
def face_normals(V, F):
    """Unit face normals (M, 3) float32 (zero for degenerate faces). Parallel."""
    N0 = np.empty((F.shape[0], 3), np.float32)
    for f in prange(F.shape[0]):
        nx, ny, nz, ln = face_cross(V, F[f, 0], F[f, 1], F[f, 2])
        if ln > 0.0:
            nx /= ln
            ny /= ln
            nz /= ln
        N0[f, 0] = nx
        N0[f, 1] = ny
        N0[f, 2] = nz
    return N0


@njit(cache=True)
def bounds(v):
    """``(lo (3,), hi (3,))``: the per-axis minimum and maximum of points (N, 3)."""
    lx = ly = lz = np.inf
    hx = hy = hz = -np.inf
    for i in range(v.shape[0]):
        x = v[i, 0]
        y = v[i, 1]
        z = v[i, 2]
        lx = min(lx, x)
        hx = max(hx, x)
        ly = min(ly, y)
        hy = max(hy, y)
        lz = min(lz, z)
        hz = max(hz, z)
    return np.array([lx, ly, lz]), np.array([hx, hy, hz])


@njit(cache=True, inline="always")
def _spread21(x):
    """The low 21 bits of ``x`` (uint64) spread to every third bit."""
    x = (x | (x << np.uint64(32))) & np.uint64(0x1F00000000FFFF)
    x = (x | (x << np.uint64(16))) & np.uint64(0x1F0000FF0000FF)
    x = (x | (x << np.uint64(8))) & np.uint64(0x100F00F00F00F00F)
    x = (x | (x << np.uint64(4))) & np.uint64(0x10C30C30C30C30C3)
    x = (x | (x << np.uint64(2))) & np.uint64(0x1249249249249249)
    return x


@njit(cache=True, parallel=True)
def morton_codes(v, lo, scale):
    """3D Morton (Z-order) codes, 21 bits per axis, of ``(v - lo) * scale``
    (truncated to integers). Parallel over vertices; 8 bytes per vertex."""
    n = v.shape[0]
    code = np.empty(n, np.uint64)
    for i in prange(n):
        c = np.uint64(0)
        for axis in range(3):
            c |= _spread21(np.uint64((v[i, axis] - lo[axis]) * scale)) << np.uint64(axis)
        code[i] = c
    return code


@njit(cache=True, parallel=True)
def permute_mesh(v, f, perm, centre):
    """``(v[perm] - centre, faces renumbered)``: internal vertex i is input vertex
    ``perm[i]``; faces become int32 internal indices. Parallel."""
    n = perm.shape[0]
    p = np.empty((n, 3))
    inv = np.empty(n, np.int32)
    for i in prange(n):
        j = perm[i]
        inv[j] = i
        for a in range(3):
            p[i, a] = v[j, a] - centre[a]
    m = f.shape[0]
    out = np.empty((m, 3), np.int32)
    for t in prange(m):
        for a in range(3):
            out[t, a] = inv[f[t, a]]
    return p, out


SORT_DIGIT = 13  # bits per digit of the Morton radix sort


ARGSORT_SLICES = 8  # slices of the parallel Morton radix sort (any number: same order)


@njit(cache=True, parallel=True)
def radix_argsort(code):
    """Stable argsort (int64) of uint64 ``code`` (LSD radix, 13-bit digits; digits on
    which every code agrees are skipped). Each digit's histogram and scatter run in
    ``ARGSORT_SLICES`` slices in parallel, each slice scattering to its own offsets
    within every bucket (the same stable order). Memory: 32 bytes per code."""
    n = code.shape[0]
    nd = (64 + SORT_DIGIT - 1) // SORT_DIGIT
    nb = 1 << SORT_DIGIT
    mask = np.uint64(nb - 1)
    p = ARGSORT_SLICES
    size = (n + p - 1) // p
    # digits on which every code agrees (all codes in one bucket) are skipped
    first_code = code[0] if n > 0 else np.uint64(0)
    differ = np.zeros((p, nd), np.uint8)
    for c in prange(p):
        for i in range(c * size, min(n, (c + 1) * size)):
            z = code[i] ^ first_code
            for d in range(nd):
                if (z >> np.uint64(d * SORT_DIGIT)) & mask:
                    differ[c, d] = 1
    hist = np.zeros((p, nb), np.int64)
    src_i = np.arange(n)
    dst_i = np.empty(n, np.int64)
    src_k = code
    dst_k = np.empty(n, np.uint64)
    buf_k = np.empty(n, np.uint64)
    first = True
    for d in range(nd):
        if not differ[:, d].any():
            continue
        radix_pass_parallel(src_k, dst_k, n, d * SORT_DIGIT, SORT_DIGIT, hist, src_i, dst_i)
        if first:  # the codes passed in stay as they are
            src_k = dst_k
            dst_k = buf_k
            first = False
        else:
            src_k, dst_k = dst_k, src_k
        src_i, dst_i = dst_i, src_i
    return src_i


GROUP_RUN = 32  # longest run of equal Morton codes grouped by direct comparison


@njit(cache=True)
def position_groups(P, code):
    """Groups of bit-identical positions (-0.0 == 0.0) of the Morton-ordered points
    ``P`` with their sorted codes ``code``: equal positions have equal codes, so each
    group lies in one run of equal codes. Returns ``(pid int32 (N,), ok)``, groups
    numbered in order of first member; ``ok`` is False when a run is longer than
    ``GROUP_RUN`` (then ``pid`` is incomplete). Linear time."""
    n = P.shape[0]
    pid = np.full(n, -1, np.int32)
    g = 0
    i = 0
    while i < n:
        j = i + 1
        while j < n and code[j] == code[i]:
            j += 1
        if j - i > GROUP_RUN:
            return pid, False
        for a in range(i, j):
            if pid[a] != -1:
                continue
            pid[a] = g
            for b in range(a + 1, j):
                if pid[b] == -1 and P[b, 0] == P[a, 0] and P[b, 1] == P[a, 1]:
                    if P[b, 2] == P[a, 2]:
                        pid[b] = g
            g += 1
        i = j
    return pid, True


@njit(cache=True)
def sort_faces_by_min(F, n):
    """Faces ordered by their smallest vertex index (a stable counting sort)."""
    m = F.shape[0]
    start = np.zeros(n + 1, np.int64)
    for f in range(m):
        start[min(F[f, 0], F[f, 1], F[f, 2]) + 1] += 1
    for i in range(n):
        start[i + 1] += start[i]
    out = np.empty_like(F)
    for f in range(m):
        a = min(F[f, 0], F[f, 1], F[f, 2])
        j = start[a]
        start[a] = j + 1
        out[j, 0] = F[f, 0]
        out[j, 1] = F[f, 1]
        out[j, 2] = F[f, 2]
    return out


@njit(cache=True)
def build_corner_lists(F, n):
    """Vertex -> corner linked lists: ``(head (n,), nxt (3M,))`` int32, corners in
    increasing order along each list."""
    head = np.full(n, -1, np.int32)
    nxt = np.full(F.shape[0] * 3, -1, np.int32)
    for c in range(F.shape[0] * 3 - 1, -1, -1):
        v = F[c // 3, c % 3]
        nxt[c] = head[v]
        head[v] = c
    return head, nxt


@njit(cache=True, inline="always")
def count_edge_faces(F, head, nxt, falive, a, b):
    """Number of live faces containing both a and b (walks a's list)."""
    n = 0
    c = head[a]
    while c != -1:
        f = c // 3
        if falive[f]:
            if F[f, 0] == b or F[f, 1] == b or F[f, 2] == b:
                n += 1
        c = nxt[c]
    return n


@njit(cache=True, inline="always")
def setup_vertex(V, F, pid, head, nxt, falive, Q, lock_border, border_weight, gsize,
                 partner, cnt, kind, ib, i):  # fmt: skip
    """Quadric row, kind and index-border flag of vertex i (see :func:`setup_vertices`):
    one walk of its corner list sums its faces' planes (in list order, so the sums
    do not depend on the thread count) and counts its neighbours, a second finds
    its border edges and adds their constraint planes. ``cnt`` (N,) int64 holds
    ``vertex << 32 | count`` (a count is valid only under the vertex's own stamp,
    so nothing needs resetting); every entry must start below 0."""
    q0 = q1 = q2 = q3 = q4 = q5 = q6 = q7 = q8 = q9 = q10 = 0.0
    own = np.int64(i) << 32
    c = head[i]
    while c != -1:
        f = c // 3
        k = c % 3
        c = nxt[c]
        a = F[f, 0]
        b = F[f, 1]
        cc = F[f, 2]
        for o in (F[f, (k + 1) % 3], F[f, (k + 2) % 3]):
            x = cnt[o]
            cnt[o] = (x + 1) if (x >> 32) == i else (own | 1)
        nx, ny, nz, ln = face_cross(V, a, b, cc)
        if ln == 0.0:
            continue
        w = 0.5 * ln
        nx /= ln
        ny /= ln
        nz /= ln
        d = -(nx * V[a, 0] + ny * V[a, 1] + nz * V[a, 2])
        q0 += w * nx * nx
        q1 += w * nx * ny
        q2 += w * nx * nz
        q3 += w * ny * ny
        q4 += w * ny * nz
        q5 += w * nz * nz
        q6 += w * nx * d
        q7 += w * ny * d
        q8 += w * nz * d
        q9 += w * d * d
        q10 += w
    Q[i, 0] = q0
    Q[i, 1] = q1
    Q[i, 2] = q2
    Q[i, 3] = q3
    Q[i, 4] = q4
    Q[i, 5] = q5
    Q[i, 6] = q6
    Q[i, 7] = q7
    Q[i, 8] = q8
    Q[i, 9] = q9
    Q[i, 10] = q10
    nb = 0
    bad = False
    c = head[i]
    while c != -1:
        f = c // 3
        k = c % 3
        for side in range(2):
            o = F[f, (k + 1 + side) % 3]
            m = cnt[o] & 0xFFFFFFFF
            if m == 1:
                nb += 1
                if gsize[pid[i]] == 2:
                    po = partner[o]
                    if po == -1 or count_edge_faces(F, head, nxt, falive, partner[i], po) != 1:
                        bad = True
                # the border edge i -> o (side 0) or o -> i: its constraint plane, for
                # edges that do not start at a two-vertex group (seams keep theirs out)
                if gsize[pid[i if side == 0 else o]] != 2:
                    add_border_plane(V, F, Q, f, k if side == 0 else (k + 2) % 3, border_weight, i)
            elif m > 2:
                bad = True
        c = nxt[c]
    # a border edge has one face, so i sees it exactly once (as next or previous)
    g = gsize[pid[i]]
    if head[i] == -1:
        kind[i] = LOCKED  # unused vertex: never touched
    elif g == 1:
        if nb == 0 and not bad:
            kind[i] = INTERIOR
        elif nb == 2 and not bad:
            kind[i] = LOCKED if lock_border else BORDER
            ib[i] = 1
        else:
            kind[i] = LOCKED
            ib[i] = 1 if nb > 0 else 0
    elif g == 2 and nb == 2 and not bad:
        kind[i] = SEAM
        ib[i] = 1
    else:
        kind[i] = LOCKED
        ib[i] = 1 if nb > 0 else 0


@njit(cache=True, parallel=True)
def setup_vertices(V, F, pid, head, nxt, falive, lock_border, border_weight, lanes=1):
    """``(Q, kind, ib, partner)``: every vertex's quadric (N, 11) (the area-weighted
    planes of its faces, plus border constraint planes), its kind (INTERIOR, BORDER,
    SEAM, LOCKED), index-border flag and seam partner (-1 if none).

    ``pid`` maps each vertex to its position group (vertices at bit-identical
    positions). A group of one vertex is INTERIOR (no border edge), BORDER (two
    border edges, a manifold open border) or LOCKED (anything else: bow-ties,
    non-manifold edges). A group of two whose index-border edges all pair up with
    the partner's (same positions, opposite sides of an attribute seam) is SEAM;
    every other multi-vertex group is LOCKED. With ``lock_border`` BORDER is LOCKED.
    """
    n = V.shape[0]
    ng = 0
    for i in range(n):
        if pid[i] + 1 > ng:
            ng = pid[i] + 1
    gsize = np.zeros(ng, np.int32)
    gfirst = np.full(ng, -1, np.int32)
    for i in range(n):
        g = pid[i]
        gsize[g] += 1
        if gfirst[g] == -1:
            gfirst[g] = i
    partner = np.full(n, -1, np.int32)
    for i in range(n):
        g = pid[i]
        if gsize[g] == 2 and gfirst[g] != i:
            j = gfirst[g]
            partner[i] = j
            partner[j] = i
    kind = np.zeros(n, np.uint8)
    ib = np.zeros(n, np.uint8)
    Q = np.empty((n, 11))  # every row written
    # border edges: a directed edge a->b of a face with no face holding b->a or a->b;
    # cnt[o] counts the faces around i that hold o (o is next or previous of i there).
    # Parallel in lanes of consecutive vertices, each with its own counts; a vertex
    # writes only its own kind, flag and quadric row.
    lanes = max(1, min(lanes, 16))
    size = (n + lanes - 1) // lanes
    for lane in prange(lanes):
        cnt = np.full(n, -1, np.int64)
        for i in range(lane * size, min(n, (lane + 1) * size)):
            setup_vertex(V, F, pid, head, nxt, falive, Q, lock_border, border_weight,
                         gsize, partner, cnt, kind, ib, i)  # fmt: skip
    # a seam vertex whose partner is not a seam vertex is locked too
    for i in range(n):
        if kind[i] == SEAM and kind[partner[i]] != SEAM:
            kind[i] = LOCKED
    for i in range(n):
        if kind[i] == SEAM and kind[partner[i]] != SEAM:
            kind[i] = LOCKED
    return Q, kind, ib, partner


# ---------------------------------------------------------------- planning


@njit(cache=True, inline="always")
def plan(V, F, Q, head, nxt, falive, kind, partner, attrs, weights, u, v, tmp, checked=False):
    """Plan the directed collapse u -> v: ``(ok, key, geometric e2, x, y, z)``.

    ``checked``: the edge is known to be allowed (a candidate whose ends, and their
    partners, no collapse has touched since it was ranked: the faces on the edge
    are the same), so the face counts along border and seam edges are not walked.

    Allowed: an INTERIOR u into any v (to the quadric optimum when v is INTERIOR too,
    else onto v); a BORDER u along a border edge into a BORDER or LOCKED v (onto v);
    a SEAM u along a seam edge into a SEAM v whose partner edge exists (both sides
    collapse, onto v). ``e2`` is ``Q(p) / w`` of the merged quadric (a mean squared
    distance); ``key`` adds the attribute penalty.
    """
    ku = kind[u]
    kv = kind[v]
    if ku == LOCKED:
        return False, 0.0, 0.0, 0.0, 0.0, 0.0
    for j in range(11):
        tmp[j] = Q[u, j] + Q[v, j]
    optimal = False
    if ku == INTERIOR:
        optimal = kv == INTERIOR
    elif ku == BORDER:
        if kv != BORDER and kv != LOCKED:
            return False, 0.0, 0.0, 0.0, 0.0, 0.0
        if not checked and count_edge_faces(F, head, nxt, falive, u, v) != 1:
            return False, 0.0, 0.0, 0.0, 0.0, 0.0
    else:  # SEAM
        if kv != SEAM:
            return False, 0.0, 0.0, 0.0, 0.0, 0.0
        pu = partner[u]
        pv = partner[v]
        if not checked:
            if count_edge_faces(F, head, nxt, falive, u, v) != 1:
                return False, 0.0, 0.0, 0.0, 0.0, 0.0
            if count_edge_faces(F, head, nxt, falive, pu, pv) != 1:
                return False, 0.0, 0.0, 0.0, 0.0, 0.0
        for j in range(11):
            tmp[j] += Q[pu, j] + Q[pv, j]
    x, y, z, e = plan_position(tmp, V[u, 0], V[u, 1], V[u, 2], V[v, 0], V[v, 1], V[v, 2], optimal)
    w = tmp[10]
    e2 = e / w if w > 0.0 else 0.0
    if e2 < 0.0:
        e2 = 0.0
    key = e2
    if attrs.shape[1] > 0:
        key += attr_penalty(attrs, weights, u, v)
        if ku == SEAM:
            key += attr_penalty(attrs, weights, partner[u], partner[v])
    return True, key, e2, x, y, z


@njit(cache=True, inline="always")
def best_direction(V, F, Q, head, nxt, falive, kind, partner, attrs, weights, a, b, tmp):
    """The cheaper allowed direction of edge {a, b}: ``(ok, key, u, v)``. The face
    counts along the edge (and its seam twin) that :func:`plan` checks are the same
    both ways: they are counted once here."""
    ka = kind[a]
    kb = kind[b]
    if ka == INTERIOR and kb == INTERIOR:  # symmetric: same optimum and key both ways
        ok1, k1, _, _, _, _ = plan(
            V, F, Q, head, nxt, falive, kind, partner, attrs, weights, a, b, tmp, True
        )
        return ok1, k1, a, b
    single = True
    if ka == BORDER or ka == SEAM or kb == BORDER or kb == SEAM:
        single = count_edge_faces(F, head, nxt, falive, a, b) == 1
        if single and ka == SEAM and kb == SEAM:
            single = count_edge_faces(F, head, nxt, falive, partner[a], partner[b]) == 1
    ok1 = False
    k1 = 0.0
    if ka == INTERIOR or single:
        ok1, k1, _, _, _, _ = plan(
            V, F, Q, head, nxt, falive, kind, partner, attrs, weights, a, b, tmp, True
        )
    ok2 = False
    k2 = 0.0
    if kb == INTERIOR or single:
        ok2, k2, _, _, _, _ = plan(
            V, F, Q, head, nxt, falive, kind, partner, attrs, weights, b, a, tmp, True
        )
    if ok1 and (not ok2 or k1 <= k2):
        return True, k1, a, b
    if ok2:
        return True, k2, b, a
    return False, 0.0, a, b


# ---------------------------------------------------------------- checks


@njit(cache=True, inline="always")
def collapse_ok(V, F, N0, head, nxt, falive, ib, mark, stamp, u, v, px, py, pz,
                fans, check_v):  # fmt: skip
    """Whether collapsing u into v at p is allowed, in one walk of each fan.

    Link condition: the vertices adjacent to both are exactly the apexes of the
    faces on the edge (so manifold input stays manifold); two index-border vertices
    may only merge along a border edge; and u keeps a face off the edge. With
    ``fans``, no face of u that survives (u moving to p) may fail :func:`face_ok`
    (flip, 60-degree turn from its original normal, degeneracy), nor, with
    ``check_v`` (v moves too), any face of v off the edge. ``mark`` is an int32
    per-vertex scratch array; ``stamp`` a fresh even value.
    """
    shared = 0
    rest = 0
    c = head[u]
    while c != -1:
        f = c // 3
        if falive[f]:
            rest += 1
            a0 = F[f, 0]
            a1 = F[f, 1]
            a2 = F[f, 2]
            mark[a0] = stamp
            mark[a1] = stamp
            mark[a2] = stamp
            if a0 == v or a1 == v or a2 == v:
                shared += 1
            elif fans:
                k = c % 3
                b = F[f, (k + 1) % 3]
                cc = F[f, (k + 2) % 3]
                if not face_ok(
                    V[u, 0], V[u, 1], V[u, 2],
                    V[b, 0], V[b, 1], V[b, 2],
                    V[cc, 0], V[cc, 1], V[cc, 2],
                    px, py, pz,
                    N0[f, 0], N0[f, 1], N0[f, 2],
                ):  # fmt: skip
                    return False
        c = nxt[c]
    # u must keep a face besides those on the edge, else its whole fan (a lone
    # triangle, the last ear of a strip) would vanish instead of being simplified
    if shared == 0 or rest <= shared:
        return False
    if ib[u] and ib[v] and shared != 1:
        return False
    common = 0
    c = head[v]
    while c != -1:
        f = c // 3
        if falive[f]:
            on_edge = False
            for k in range(3):
                w = F[f, k]
                if w == u:
                    on_edge = True
                elif w != v and mark[w] == stamp:
                    mark[w] = stamp - 1  # count once
                    common += 1
            if check_v and not on_edge:
                k = c % 3
                b = F[f, (k + 1) % 3]
                cc = F[f, (k + 2) % 3]
                if not face_ok(
                    V[v, 0], V[v, 1], V[v, 2],
                    V[b, 0], V[b, 1], V[b, 2],
                    V[cc, 0], V[cc, 1], V[cc, 2],
                    px, py, pz,
                    N0[f, 0], N0[f, 1], N0[f, 2],
                ):  # fmt: skip
                    return False
        c = nxt[c]
    return common == shared


# ---------------------------------------------------------------- apply


@njit(cache=True, inline="always")
def apply_collapse(V, F, Q, head, nxt, falive, attrs, emit, u, v, px, py, pz):
    """Collapse u into v at p: kill the faces on the edge, move u's corners to v,
    splice the lists (dropping dead corners), merge quadrics, interpolate attributes.
    Every vertex of a face around u or v gets ``emit`` set (its fan changed).
    Returns the number of faces removed."""
    # attribute interpolation parameter along the edge (0 at u, 1 at v)
    ex = V[v, 0] - V[u, 0]
    ey = V[v, 1] - V[u, 1]
    ez = V[v, 2] - V[u, 2]
    ll = ex * ex + ey * ey + ez * ez
    t = 1.0
    if ll > 0.0:
        t = ((px - V[u, 0]) * ex + (py - V[u, 1]) * ey + (pz - V[u, 2]) * ez) / ll
        t = min(1.0, max(0.0, t))
    for k in range(attrs.shape[1]):
        attrs[v, k] = (1.0 - t) * attrs[u, k] + t * attrs[v, k]
    # one walk of each list: v's live corners (killing the faces on the edge), then
    # u's (moved to v), linked into v's new list
    removed = 0
    newhead = -1
    tail = -1
    for side in range(2):
        src = v if side == 0 else u
        c = head[src]
        while c != -1:
            nc = nxt[c]
            f = c // 3
            if falive[f]:
                a0 = F[f, 0]
                a1 = F[f, 1]
                a2 = F[f, 2]
                if side == 0 and (a0 == u or a1 == u or a2 == u):
                    falive[f] = 0
                    removed += 1
                    emit[a0] = 1
                    emit[a1] = 1
                    emit[a2] = 1
                    c = nc
                    continue
                if side == 1:
                    F[f, c % 3] = v
                emit[a0] = 1
                emit[a1] = 1
                emit[a2] = 1
                emit[v] = 1
                if tail == -1:
                    newhead = c
                else:
                    nxt[tail] = c
                tail = c
            c = nc
    if tail != -1:
        nxt[tail] = -1
    head[v] = newhead
    head[u] = -1
    for j in range(11):
        Q[v, j] += Q[u, j]
    V[v, 0] = px
    V[v, 1] = py
    V[v, 2] = pz
    return removed


# ---------------------------------------------------------------- passes
#
# Collapses run in passes (as meshoptimizer does): every pass lists the live edges
# (each once, ``a < b``, in (a, b) order), plans the cheaper allowed direction of
# each, sorts them by the float32 bits of the key (stable, so ties keep (a, b)
# order) and collapses down that list. A vertex that took part in a collapse is
# locked for the rest of the pass, so every collapse done in a pass has the exact
# key it was sorted by (its ends' quadrics are those it was planned with). A pass
# ends once the target is met, or once keys pass ``PASS_ERROR_FACTOR`` times the key
# of the ``goal / 2``-th candidate (``goal`` = faces still to remove) after at least
# a tenth of the goal was removed.
#
# Only the first pass ranks every edge. Afterwards the candidates whose ends (and
# their seam partners) no collapse touched keep their keys and their order; the
# edges at touched vertices are listed, ranked, sorted and merged in (``rerank``):
# the same list a full re-ranking gives, at the cost of the changed part. A
# candidate whose collapse was refused is flagged and skipped while no vertex of its
# ends' fans changes (the checks read nothing else).
#
# Larger meshes run each pass in two parts (``run_pass`` with ``parts == 2``): the
# two halves of the (Morton) vertex order collapse their own candidates at the same
# time, each in key order up to its share of the goal, then the candidates at the
# seam between the halves follow; the same result on any number of threads.

PASS_ERROR_FACTOR = 1.5
RADIX_BITS = 11
PREFETCH_FAR = 16  # candidates ahead whose ends' rows are prefetched
PREFETCH_NEAR = 6  # candidates ahead whose first face (its row, next corner) is prefetched
KEY_BITS = np.uint32(0x7FFFFFFF)  # a key's float32 bits (keys are >= 0)
REFUSED = np.uint32(0x80000000)  # flag on a sorted candidate: its collapse was refused


@njit(cache=True, inline="always")
def vertex_edges(F, head, nxt, falive, kind, mark, stamp, nbuf, a):
    """The edges a -> b with b > a of vertex ``a`` (not both ends LOCKED) into
    ``nbuf`` in increasing b (``mark`` stamped with ``stamp``); the corners of dead
    faces are unlinked from a's list on the way (the live ones keep their order).
    Returns how many, or -1 if they do not fit in ``nbuf``."""
    k = 0
    prev = -1
    c = head[a]
    while c != -1:
        f = c // 3
        nc = nxt[c]
        if not falive[f]:
            if prev == -1:
                head[a] = nc
            else:
                nxt[prev] = nc
            c = nc
            continue
        prev = c
        for j in range(3):
            b = F[f, j]
            if b > a and mark[b] != stamp:
                mark[b] = stamp
                if kind[a] != LOCKED or kind[b] != LOCKED:
                    if k == nbuf.shape[0]:
                        return -1
                    # insertion into the sorted neighbour buffer
                    i = k
                    while i > 0 and nbuf[i - 1] > b:
                        nbuf[i] = nbuf[i - 1]
                        i -= 1
                    nbuf[i] = b
                    k += 1
        c = nc
    return k


@njit(cache=True)
def wide_vertex_edges(F, head, nxt, falive, kind, mark, stamp, a):
    """:func:`vertex_edges` for a vertex with more edges than the usual buffer holds:
    the sorted neighbours in a buffer of their own (as long as two per corner)."""
    deg = 0
    c = head[a]
    while c != -1:
        deg += 1
        c = nxt[c]
    nbuf = np.empty(2 * deg, np.int32)
    k = vertex_edges(F, head, nxt, falive, kind, mark, stamp, nbuf, a)
    return nbuf[:k]


EDGE_BUFFER = 256  # neighbours a vertex may list in the usual buffer


@njit(cache=True, parallel=True)
def collect_edges(F, head, nxt, falive, valive, kind, mark, stamp, euv, tmp, lanes=1):
    """Live edges ``a << 32 | b``, ``a < b``, into ``euv`` in (a, b) order, leaving
    out edges whose ends are both LOCKED. Returns ``(count, stamp)``. On the way,
    corners of dead faces are unlinked from every list walked (the live corners
    keep their order), so later walks stay short. With ``lanes`` > 1 the two halves
    of the vertices are listed at once, the second into ``tmp`` (as long as
    ``euv``) with marks of its own, then appended: the same list. ``mark`` is int32
    (N,) scratch."""
    n = head.shape[0]
    lanes = 2 if lanes >= 2 else 1
    size = (n + lanes - 1) // lanes
    counts = np.zeros(2, np.int64)
    stamps = np.zeros(2, np.int64)
    mark2 = np.zeros(n if lanes > 1 else 0, np.int32)
    for lane in prange(lanes):
        mk = mark if lane == 0 else mark2
        row = euv if lane == 0 else tmp
        st = stamp if lane == 0 else 0
        nbuf = np.empty(EDGE_BUFFER, np.int32)
        count = 0
        for a in range(lane * size, min(n, (lane + 1) * size)):
            if not valive[a] or head[a] == -1:
                continue
            st += 1
            hi = np.uint64(a) << np.uint64(32)
            k = vertex_edges(F, head, nxt, falive, kind, mk, st, nbuf, a)
            if k >= 0:
                for i in range(k):
                    row[count + i] = hi | np.uint64(nbuf[i])
            else:
                st += 1
                wide = wide_vertex_edges(F, head, nxt, falive, kind, mk, st, a)
                k = wide.shape[0]
                for i in range(k):
                    row[count + i] = hi | np.uint64(wide[i])
            count += k
        counts[lane] = count
        stamps[lane] = st
    euv[counts[0] : counts[0] + counts[1]] = tmp[: counts[1]]
    return counts[0] + counts[1], stamps[0]


@njit(cache=True, parallel=True)
def rank_edges(V, F, Q, head, nxt, falive, kind, partner, attrs, weights, euv, ek, count):
    """Plan every listed edge: ``euv`` becomes the chosen direction ``u << 32 | v`` and
    ``ek`` the float32 bits of its key; edges with no allowed direction get key bits
    0xFFFFFFFF. Parallel over chunks of edges (read-only on the mesh)."""
    chunk = 4096
    nchunks = (count + chunk - 1) // chunk
    for ci in prange(nchunks):
        tmp = np.zeros(11, np.float64)
        fbuf = np.zeros(1, np.float32)
        ubuf = fbuf.view(np.uint32)
        for i in range(ci * chunk, min(count, (ci + 1) * chunk)):
            a = np.int64(euv[i] >> np.uint64(32))
            b = np.int64(euv[i] & np.uint64(0xFFFFFFFF))
            ok, key, u, v = best_direction(
                V, F, Q, head, nxt, falive, kind, partner, attrs, weights, a, b, tmp
            )
            if ok:
                fbuf[0] = key
                ek[i] = ubuf[0]
                euv[i] = (np.uint64(u) << np.uint64(32)) | np.uint64(v)
            else:
                ek[i] = np.uint32(0xFFFFFFFF)


SORT_CHUNKS = 16  # slices of a parallel radix sort (any number gives the same order)
PARALLEL_SORT = 65536  # fewer edges than this are sorted serially


@njit(cache=True, parallel=True)
def sort_candidates_parallel(ek, euv, count, sk, suv):
    """:func:`sort_candidates` with each digit's histogram and scatter done by
    ``SORT_CHUNKS`` slices in parallel (each slice scatters to its own offsets
    within each bucket, so the result is the same stable order)."""
    nb = 1 << RADIX_BITS
    mask = nb - 1
    p = SORT_CHUNKS
    hist = np.zeros((p, nb), np.int64)
    src_k, src_uv, dst_k, dst_uv = ek, euv, sk, suv
    k = count
    for d in range(3):
        shift = d * RADIX_BITS
        size = (k + p - 1) // p
        for c in prange(p):
            for b in range(nb):
                hist[c, b] = 0
            for i in range(c * size, min(k, (c + 1) * size)):
                x = src_k[i]
                if d > 0 or x != np.uint32(0xFFFFFFFF):
                    hist[c, (x >> shift) & mask] += 1
        total = exclusive_scan_slices(hist)
        for c in prange(p):
            for i in range(c * size, min(k, (c + 1) * size)):
                x = src_k[i]
                if d > 0 or x != np.uint32(0xFFFFFFFF):
                    b = (x >> shift) & mask
                    j = hist[c, b]
                    dst_k[j] = x
                    dst_uv[j] = src_uv[i]
                    hist[c, b] = j + 1
        k = total
        src_k, src_uv, dst_k, dst_uv = dst_k, dst_uv, src_k, src_uv
    return k


@njit(cache=True, inline="always")
def exclusive_scan(hist):
    """Bucket counts -> each bucket's first output position (in place); returns
    the total count."""
    total = 0
    for b in range(hist.shape[0]):
        c = hist[b]
        hist[b] = total
        total += c
    return total


@njit(cache=True, inline="always")
def exclusive_scan_slices(hist):
    """Per-slice bucket counts ``hist`` (slices, buckets) -> each slice's first
    output position in each bucket (bucket by bucket, slices in order: a stable
    scatter); returns the total count."""
    total = 0
    for b in range(hist.shape[1]):
        for c in range(hist.shape[0]):
            h = hist[c, b]
            hist[c, b] = total
            total += h
    return total


@njit(cache=True)
def sort_candidates(ek, euv, count, sk, suv):
    """The collapsible edges (key bits below 0xFFFFFFFF) sorted stably by key bits
    into ``sk``/``suv`` (LSD radix on the 31 key bits, three digits; ``ek``/``euv``
    serve as the middle buffer, so they are overwritten). Returns how many. Large
    lists go to :func:`sort_candidates_parallel`."""
    if count >= PARALLEL_SORT:
        return sort_candidates_parallel(ek, euv, count, sk, suv)
    nb = 1 << RADIX_BITS
    mask = nb - 1
    hist = np.zeros(nb, np.int64)
    src_k, src_uv, dst_k, dst_uv = ek, euv, sk, suv
    k = count
    for d in range(3):
        shift = d * RADIX_BITS
        hist[:] = 0
        for i in range(k):
            if d > 0 or src_k[i] != np.uint32(0xFFFFFFFF):
                hist[(src_k[i] >> shift) & mask] += 1
        total = exclusive_scan(hist)
        for i in range(k):
            x = src_k[i]
            if d > 0 or x != np.uint32(0xFFFFFFFF):
                b = (x >> shift) & mask
                dst_k[hist[b]] = x
                dst_uv[hist[b]] = src_uv[i]
                hist[b] += 1
        k = total
        src_k, src_uv, dst_k, dst_uv = dst_k, dst_uv, src_k, src_uv
    return k  # three passes: the result is in sk/suv


@njit(cache=True, parallel=True)
def mark_dirty(F, head, nxt, falive, valive, plock, partner, npass, emit):
    """After pass ``npass``: the vertices it touched (``plock == npass``) and their seam
    partners (whose seam edges' keys read the partner's quadric) become dirty
    (``plock`` set to ``npass``). Every live dirty vertex and each vertex sharing a
    live face with one has ``emit`` set (their lists are walked next): the
    collapses marked the fans of the vertices they touched, this marks the fans of
    the partners. Parallel by chunks with the serial result: a pair whose two ends
    were touched is skipped from either side; one where only t was is marked from
    t's side and skipped from the other's whether or not that sees t's mark yet."""
    n = plock.shape[0]
    chunk = 16384
    for ci in prange((n + chunk - 1) // chunk):
        for t in range(ci * chunk, min(n, (ci + 1) * chunk)):
            d = partner[t]
            if plock[t] != npass or d == -1 or plock[d] == npass:
                continue
            plock[d] = npass
            if not valive[d]:
                continue
            emit[d] = 1
            c = head[d]
            while c != -1:
                f = c // 3
                if falive[f]:
                    emit[F[f, 0]] = 1
                    emit[F[f, 1]] = 1
                    emit[F[f, 2]] = 1
                c = nxt[c]


EDGE_DIGIT = 11  # bits per digit of the radix sort of dirty edge ends (short lists)
EDGE_DIGIT_WIDE = 16  # the widest digit, for lists of at least 2**16 edges


@njit(cache=True, parallel=True)
def radix_pass_parallel(src, dst, count, shift, width, hist, src_i, dst_i):
    """One stable LSD radix pass of ``src[:count]`` (uint64) into ``dst`` on the digit
    ``(x >> shift) & (2**width - 1)``, by ``hist.shape[0]`` slices in parallel (each
    slice scatters to its own offsets within each bucket: the same stable order).
    ``src_i``/``dst_i``: a payload moved along (empty arrays: none)."""
    p = hist.shape[0]
    nb = 1 << width
    mask = np.uint64(nb - 1)
    sh = np.uint64(shift)
    size = (count + p - 1) // p
    payload = src_i.shape[0] > 0
    for c in prange(p):
        for b in range(nb):
            hist[c, b] = 0
        for i in range(c * size, min(count, (c + 1) * size)):
            hist[c, (src[i] >> sh) & mask] += 1
    exclusive_scan_slices(hist)
    for c in prange(p):
        for i in range(c * size, min(count, (c + 1) * size)):
            x = src[i]
            b = (x >> sh) & mask
            j = hist[c, b]
            dst[j] = x
            if payload:
                dst_i[j] = src_i[i]
            hist[c, b] = j + 1


@njit(cache=True)
def sort_edge_ends(e, count, bits, tmp):
    """Sort ``e[:count]`` (uint64 ``lo << bits | hi``, both ends below ``2**bits``)
    ascending in place and rewrite each as ``lo << 32 | hi``. LSD radix with digits
    of ``EDGE_DIGIT`` bits, or as few digits of at most ``EDGE_DIGIT_WIDE`` bits as
    the ``2 bits`` need for lists of 2**16 edges or more (lists of ``PARALLEL_SORT``
    or more are sorted by ``SORT_CHUNKS`` slices in parallel, with digits of at most
    ``RADIX_BITS``); ``tmp`` (>= count) the other buffer.
    Memory: the histograms (8 bytes per bucket and slice) beyond ``tmp``."""
    parallel = count >= PARALLEL_SORT
    width = EDGE_DIGIT
    if count >= 1 << 16:
        widest = RADIX_BITS if parallel else EDGE_DIGIT_WIDE
        ndig = (2 * bits + widest - 1) // widest
        width = (2 * bits + ndig - 1) // ndig
    nb = 1 << width
    mask = np.uint64(nb - 1)
    src, dst = e, tmp
    if parallel:
        hist2 = np.zeros((SORT_CHUNKS, nb), np.int64)
        none = np.empty(0, np.int64)
        for shift in range(0, 2 * bits, width):
            radix_pass_parallel(src, dst, count, shift, width, hist2, none, none)
            src, dst = dst, src
    else:
        hist = np.zeros(nb, np.int64)
        for shift in range(0, 2 * bits, width):
            sh = np.uint64(shift)
            hist[:] = 0
            for i in range(count):
                hist[(src[i] >> sh) & mask] += 1
            exclusive_scan(hist)
            for i in range(count):
                x = src[i]
                b = (x >> sh) & mask
                dst[hist[b]] = x
                hist[b] += 1
            src, dst = dst, src
    lo_mask = np.uint64((1 << bits) - 1)
    ub = np.uint64(bits)
    for i in range(count):
        x = src[i]
        e[i] = ((x >> ub) << np.uint64(32)) | (x & lo_mask)


@njit(cache=True, parallel=True)
def unlink_dead(F, head, nxt, falive, emit):
    """Clear ``emit`` and unlink the corners of dead faces from the list of every
    vertex that had it set (the live corners keep their order). Parallel over
    vertices: each list is its own vertex's."""
    n = head.shape[0]
    chunk = 4096
    for ci in prange((n + chunk - 1) // chunk):
        for a in range(ci * chunk, min(n, (ci + 1) * chunk)):
            if not emit[a]:
                continue
            emit[a] = 0
            prev = -1
            c = head[a]
            while c != -1:
                nc = nxt[c]
                if not falive[c // 3]:
                    if prev == -1:
                        head[a] = nc
                    else:
                        nxt[prev] = nc
                else:
                    prev = c
                c = nc


@njit(cache=True, parallel=True)
def list_dirty_edges(F, head, nxt, kind, plock, npass, euv, tmp, mark, mark2, bits, lanes):
    """The edges :func:`collect_dirty_edges` lists, packed ``lo << bits | hi``, into
    ``euv`` unsorted; returns how many. With ``lanes == 2`` the two halves of the
    vertices are listed in parallel, the first into ``euv`` with ``mark``, the second
    into ``tmp`` with ``mark2`` (both int32 (N,) scratch, reset here), then appended."""
    n = head.shape[0]
    lanes = 2 if lanes >= 2 else 1
    size = (n + lanes - 1) // lanes
    ub = np.uint64(bits)
    counts = np.zeros(2, np.int64)
    for lane in prange(lanes):
        mk = mark if lane == 0 else mark2
        row = euv if lane == 0 else tmp
        lo = lane * size
        hi = min(n, (lane + 1) * size)
        mk[:] = -1
        k = 0
        for a in range(lo, hi):
            if plock[a] != npass or head[a] == -1:
                continue
            mk[a] = a
            la = kind[a] == LOCKED
            c = head[a]
            while c != -1:
                f = c // 3
                for j in range(3):
                    b = F[f, j]
                    if mk[b] != a:
                        mk[b] = a
                        if b < a and plock[b] == npass:
                            continue  # listed from b
                        if la and kind[b] == LOCKED:
                            continue
                        if b < a:
                            row[k] = (np.uint64(b) << ub) | np.uint64(a)
                        else:
                            row[k] = (np.uint64(a) << ub) | np.uint64(b)
                        k += 1
                c = nxt[c]
        counts[lane] = k
    euv[counts[0] : counts[0] + counts[1]] = tmp[: counts[1]]
    return counts[0] + counts[1]


@njit(cache=True)
def collect_dirty_edges(F, head, nxt, falive, kind, mark, stamp, euv, tmp, emit, plock,
                        npass, lanes=1):  # fmt: skip
    """The live edges with a dirty end (``plock == npass``), ``a << 32 | b``, ``a < b``,
    into ``euv`` in (a, b) order, as :func:`collect_edges` lists them (``tmp``: a
    scratch buffer as long). Only the dirty vertices' lists are read for edges (an
    edge between two dirty vertices is taken from its lower end; see
    :func:`list_dirty_edges`), then the edges are sorted (:func:`sort_edge_ends`);
    first every vertex with ``emit`` set has its flag cleared and the dead corners
    unlinked from its list (:func:`unlink_dead`), so later walks stay short.
    ``mark`` is int32 (N,) scratch (overwritten; not the collapse checks' stamped
    marks); ``lanes`` > 1 lists in two lanes at once. Returns ``(count, stamp)``."""
    n = head.shape[0]
    bits = 1
    while (1 << bits) < n:
        bits += 1
    unlink_dead(F, head, nxt, falive, emit)
    # a second lane lists the upper half of the vertices with marks of its own
    mark2 = np.empty(n if lanes > 1 else 0, np.int32)
    count = list_dirty_edges(F, head, nxt, kind, plock, npass, euv, tmp, mark, mark2, bits, lanes)
    sort_edge_ends(euv, count, bits, tmp)
    return count, stamp


@njit(cache=True)
def keep_clean(sk, suv, ncand, plock, npass, emit):
    """Drop from the sorted candidates ``sk/suv[:ncand]`` every edge with an end
    dirtied by pass ``npass`` (in place; the rest stay sorted). Returns how many
    are left. Their keys are still exact: a key reads only its ends' (and their
    seam partners') quadrics, positions and attributes and the faces on the edge,
    which no collapse changes without touching an end. A candidate keeps its
    ``REFUSED`` flag only while no vertex of its ends' fans was touched (neither end
    has ``emit`` set): the checks that refused it read nothing else."""
    k = 0
    for i in range(ncand):
        x = suv[i]
        u = np.int64(x >> np.uint64(32))
        v = np.int64(x & np.uint64(0xFFFFFFFF))
        if plock[u] != npass and plock[v] != npass:
            kb = sk[i]
            if emit[u] or emit[v]:
                kb &= KEY_BITS
            sk[k] = kb
            suv[k] = x
            k += 1
    return k


@njit(cache=True, parallel=True)
def keep_clean_parallel(sk, suv, ncand, plock, npass, emit, tk, tuv):
    """:func:`keep_clean` by chunks in parallel (the kept candidates are written to
    ``tk``/``tuv`` at their chunks' offsets, then copied back): the same result."""
    chunk = 65536
    nchunks = (ncand + chunk - 1) // chunk
    off = np.zeros(nchunks + 1, np.int64)
    keep = np.empty(ncand, np.uint8)
    for ci in prange(nchunks):
        k = 0
        for i in range(ci * chunk, min(ncand, (ci + 1) * chunk)):
            x = suv[i]
            u = np.int64(x >> np.uint64(32))
            v = np.int64(x & np.uint64(0xFFFFFFFF))
            if plock[u] != npass and plock[v] != npass:
                keep[i] = 2 if emit[u] or emit[v] else 1
                k += 1
            else:
                keep[i] = 0
        off[ci + 1] = k
    for ci in range(nchunks):
        off[ci + 1] += off[ci]
    for ci in prange(nchunks):
        j = off[ci]
        for i in range(ci * chunk, min(ncand, (ci + 1) * chunk)):
            if keep[i]:
                kb = sk[i]
                if keep[i] == 2:
                    kb &= KEY_BITS
                tk[j] = kb
                tuv[j] = suv[i]
                j += 1
    total = off[nchunks]
    for ci in prange((total + chunk - 1) // chunk):
        for j in range(ci * chunk, min(total, (ci + 1) * chunk)):
            sk[j] = tk[j]
            suv[j] = tuv[j]
    return total


@njit(cache=True, inline="always")
def _edge_before(k1, x1, k2, x2):
    """Whether candidate (key bits k1, u << 32 | v x1) sorts before (k2, x2): by key
    bits, then by the undirected ends (min, max), as a full sort lists them."""
    k1 &= KEY_BITS
    k2 &= KEY_BITS
    if k1 != k2:
        return k1 < k2
    u1 = x1 >> np.uint64(32)
    v1 = x1 & np.uint64(0xFFFFFFFF)
    u2 = x2 >> np.uint64(32)
    v2 = x2 & np.uint64(0xFFFFFFFF)
    a1 = min(u1, v1)
    a2 = min(u2, v2)
    if a1 != a2:
        return a1 < a2
    return max(u1, v1) < max(u2, v2)


@njit(cache=True)
def merge_candidates(sk, suv, nclean, dk, duv, ndirty):
    """Merge the sorted dirty candidates ``dk/duv[:ndirty]`` into the sorted clean ones
    ``sk/suv[:nclean]`` (in place, from the back): ``sk/suv[:nclean + ndirty]``."""
    i = nclean - 1
    j = ndirty - 1
    w = nclean + ndirty - 1
    while j >= 0:
        if i >= 0 and _edge_before(dk[j], duv[j], sk[i], suv[i]):
            sk[w] = sk[i]
            suv[w] = suv[i]
            i -= 1
        else:
            sk[w] = dk[j]
            suv[w] = duv[j]
            j -= 1
        w -= 1


@njit(cache=True)
def rerank(V, F, Q, head, nxt, falive, valive, kind, partner, attrs, weights, plock, npass,
           emit, mark, stamp, nbuf, euv, ek, sk, suv, ncand, lanes=1):  # fmt: skip
    """The sorted candidates of the next pass from those of pass ``npass``: edges it
    left untouched keep their keys and order, edges with a dirty end are listed,
    ranked and sorted afresh and merged in. The result is the list a full
    re-ranking (:func:`collect_edges`, :func:`rank_edges`, :func:`sort_candidates`)
    gives. Returns ``(ncand, stamp)``."""
    mark_dirty(F, head, nxt, falive, valive, plock, partner, npass, emit)
    if ncand >= PARALLEL_SORT and lanes > 1:
        nclean = keep_clean_parallel(sk, suv, ncand, plock, npass, emit, ek, euv)
    else:
        nclean = keep_clean(sk, suv, ncand, plock, npass, emit)
    # the clean and dirty edges are distinct live edges: suv[nclean:] has room for
    # the dirty ones (scratch for their sort here, the sorted list below)
    count, stamp = collect_dirty_edges(
        F, head, nxt, falive, kind, nbuf, stamp, euv, suv[nclean:], emit, plock, npass, lanes
    )
    rank_edges(V, F, Q, head, nxt, falive, kind, partner, attrs, weights, euv, ek, count)
    nd = sort_candidates(ek, euv, count, sk[nclean:], suv[nclean:])
    ek[:nd] = sk[nclean : nclean + nd]
    euv[:nd] = suv[nclean : nclean + nd]
    merge_candidates(sk, suv, nclean, ek, euv, nd)
    return nclean + nd, stamp


@njit(cache=True, inline="always")
def bits_to_float(bits, fbuf, ubuf):
    ubuf[0] = bits
    return np.float64(fbuf[0])


# ---------------------------------------------------------------- main loop


#: Pass modes of :func:`collapse_candidates`: every candidate, or those no part took.
ALL = -1
DEFERRED = -2


@njit(cache=True, inline="always")
def candidate_part(u, v, kind, partner, inner, split):
    """The part (0: vertices below ``split``, 1: the rest) that owns candidate u -> v,
    or -1: a part owns it when both ends (and their seam partners) are ``inner`` (no
    live face around them reaches into the other part) and on its side."""
    p = 1 if u >= split else 0
    if not inner[u] or not inner[v] or (v >= split) != (p == 1):
        return -1
    if kind[u] == SEAM:
        pu = partner[u]
        pv = partner[v]
        if not inner[pu] or not inner[pv] or (pu >= split) != (p == 1):
            return -1
        if (pv >= split) != (p == 1):
            return -1
    return p


@njit(cache=True)
def collapse_candidates(V, F, N0, Q, head, nxt, falive, valive, kind, ib, partner, attrs,
                        weights, sk, suv, limit, plock, into, mark, emit, max_e2, pure, npass,
                        stamp, part, own, goal, removed, error_goal, log, done):  # fmt: skip
    """Collapse down the sorted candidates ``sk[:limit]`` (key bits), ``suv`` (u << 32 |
    v): with ``part`` 0 or 1 only those whose owner ``own[i]`` (see
    :func:`candidate_part`) is that part, with ``DEFERRED`` those owned by none (-1),
    with ``ALL`` every one (``own`` unused). Stops once
    ``removed`` (faces, counting from the value passed) reaches ``goal``, or at the
    first key over ``error_goal`` once more than ``goal // 10`` are removed, or (with
    ``pure``) at the first collapse whose e2 exceeds ``max_e2``. Collapses are logged
    to ``log[done:]`` while it has rows. Returns ``(removed, collapses, e2 max, stamp,
    candidates visited, index of the max_e2 stop or -1)``."""
    tmp = np.zeros(11, np.float64)
    fbuf = np.zeros(1, np.float32)
    ubuf = fbuf.view(np.uint32)
    collapses = 0
    e2max = 0.0
    visited = 0
    stop = -1
    want = -1 if part == DEFERRED else part  # the owner value this run takes
    for i in range(limit):
        if removed >= goal:
            break
        visited += 1
        # the candidates lie at random places: start loading the rows of those
        # coming up (ends' lock, list head, quadric, position, kind; a little nearer,
        # the first face of each end, whose head is loaded by then)
        if i + PREFETCH_FAR < limit and (part == ALL or own[i + PREFETCH_FAR] == want):
            x = suv[i + PREFETCH_FAR]
            u = np.int64(x >> np.uint64(32))
            v = np.int64(x & np.uint64(0xFFFFFFFF))
            prefetch(plock, u)
            prefetch(plock, v)
            prefetch(head, u)
            prefetch(head, v)
            prefetch(Q, u)
            prefetch(Q, v)
            prefetch(V, u)
            prefetch(V, v)
            prefetch(kind, u)
        if i + PREFETCH_NEAR < limit and (part == ALL or own[i + PREFETCH_NEAR] == want):
            x = suv[i + PREFETCH_NEAR]
            for c in (
                head[np.int64(x >> np.uint64(32))],
                head[np.int64(x & np.uint64(0xFFFFFFFF))],
            ):
                if c >= 0:
                    prefetch(F, c // 3)
                    prefetch(nxt, c)
        kb = sk[i] & KEY_BITS
        if bits_to_float(kb, fbuf, ubuf) > error_goal and removed > goal // 10:
            break
        u = np.int64(suv[i] >> np.uint64(32))
        v = np.int64(suv[i] & np.uint64(0xFFFFFFFF))
        if part != ALL and own[i] != want:
            continue
        if plock[u] == npass or plock[v] == npass:
            continue
        if sk[i] & REFUSED and not emit[u] and not emit[v]:
            continue  # refused before, and nothing around it changed since
        seam = kind[u] == SEAM
        pu = partner[u]
        pv = partner[v]
        if seam and (plock[pu] == npass or plock[pv] == npass):
            continue
        ok, key2, e2, px, py, pz = plan(
            V, F, Q, head, nxt, falive, kind, partner, attrs, weights, u, v, tmp, True
        )
        if not ok:
            continue
        fbuf[0] = key2
        if ubuf[0] != kb:
            continue  # cannot happen: both ends and partners are unchanged
        if e2 > max_e2:
            if pure:
                stop = i
                break
            continue
        moved = px != V[v, 0] or py != V[v, 1] or pz != V[v, 2]
        stamp += 2
        if not collapse_ok(
            V, F, N0, head, nxt, falive, ib, mark, stamp, u, v, px, py, pz, True, moved
        ):
            sk[i] |= REFUSED
            continue
        if seam:
            stamp += 2
            if not collapse_ok(
                V, F, N0, head, nxt, falive, ib, mark, stamp, pu, pv, px, py, pz, True, False
            ):
                continue
        r = apply_collapse(V, F, Q, head, nxt, falive, attrs, emit, u, v, px, py, pz)
        valive[u] = 0
        into[u] = v
        plock[u] = npass
        plock[v] = npass
        if seam:
            r += apply_collapse(V, F, Q, head, nxt, falive, attrs, emit, pu, pv, px, py, pz)
            valive[pu] = 0
            into[pu] = pv
            plock[pu] = npass
            plock[pv] = npass
        removed += r
        if done + collapses < log.shape[0]:
            log[done + collapses, 0] = u
            log[done + collapses, 1] = v
        collapses += 1
        if e2 > e2max:
            e2max = e2
    return removed, collapses, e2max, stamp, visited, stop


@njit(cache=True, parallel=True)
def mark_inner(F, falive, split, inner):
    """``inner[v]``: no live face around v has a corner on the other side of ``split``.
    Parallel (the faces that straddle write the same 0)."""
    for i in prange(inner.shape[0]):
        inner[i] = 1
    for f in prange(F.shape[0]):
        if falive[f]:
            a = F[f, 0]
            b = F[f, 1]
            c = F[f, 2]
            hi = a >= split
            if (b >= split) != hi or (c >= split) != hi:
                inner[a] = 0
                inner[b] = 0
                inner[c] = 0


@njit(cache=True, parallel=True)
def run_pass(V, F, N0, Q, head, nxt, falive, valive, kind, ib, partner, attrs, weights,
             sk, suv, ncand, state, plock, into, mark, emit, target_faces, max_e2,
             pure, log, parts, inner):  # fmt: skip
    """One pass down the sorted candidates ``sk[:ncand]`` (key bits), ``suv`` (u << 32
    | v). ``state`` (int64) holds ``[faces_left, done, stamp, npass, stop, candidates
    visited]`` and is updated; returns ``(collapses, e2 max of this pass)``.

    With ``parts == 2`` the vertices are split in two index ranges (two halves of
    the Morton order): a candidate whose ends' fans lie inside one half belongs to
    it, and the halves collapse their own candidates at the same time (each in key
    order; they touch disjoint vertices, faces and corners), each up to its share of
    the pass's goal: the share it owns of the candidates keyed up to the error goal
    (a half left with costly collapses only gets little). The candidates of neither
    half (at the seam between them) follow, in key order, up to the rest of the goal;
    if nothing collapsed, the pass runs again as one part. The result does not
    depend on the number of threads. ``inner`` is (N,) uint8 scratch."""
    faces_left = state[0]
    stamp = state[2]
    npass = state[3]
    done = state[1]
    fbuf = np.zeros(1, np.float32)
    ubuf = fbuf.view(np.uint32)
    goal = faces_left - target_faces
    egoal = goal // 2
    error_goal = np.inf
    if egoal < ncand:
        error_goal = PASS_ERROR_FACTOR * bits_to_float(sk[egoal] & KEY_BITS, fbuf, ubuf)
    removed = 0
    collapses = 0
    e2max = 0.0
    visited = 0
    limit = ncand
    rest = ALL
    rest_goal = goal
    own = np.empty(0, np.int8)
    if parts == 2:
        split = V.shape[0] // 2
        mark_inner(F, falive, split, inner)
        # the candidates up to the error goal: each part's share of the goal is its
        # share of them (a half left with costly collapses only gets little)
        kstop = ncand
        if error_goal < np.inf:
            lo = 0
            while lo < kstop:
                mid = (lo + kstop) // 2
                if bits_to_float(sk[mid] & KEY_BITS, fbuf, ubuf) > error_goal:
                    kstop = mid
                else:
                    lo = mid + 1
        own = np.empty(ncand, np.int8)
        chunk = 16384
        nchunks = (ncand + chunk - 1) // chunk
        cnt = np.zeros((nchunks, 3), np.int64)
        for ci in prange(nchunks):
            for i in range(ci * chunk, min(ncand, (ci + 1) * chunk)):
                x = suv[i]
                o = candidate_part(
                    np.int64(x >> np.uint64(32)), np.int64(x & np.uint64(0xFFFFFFFF)),
                    kind, partner, inner, split,
                )  # fmt: skip
                own[i] = o
                if i < kstop:
                    cnt[ci, o + 1] += 1
        total = cnt.sum()
        goals = np.empty(2, np.int64)
        for p in range(2):
            goals[p] = goal * cnt[:, p + 1].sum() // max(total, 1)
        res = np.zeros((2, 6), np.int64)
        e2s = np.zeros(2)
        plog = np.zeros((2, max(log.shape[0] - done, 0), 2), np.int32)
        for p in prange(2):
            r, c, e, st, vis, stp = collapse_candidates(
                V, F, N0, Q, head, nxt, falive, valive, kind, ib, partner, attrs, weights,
                sk, suv, ncand, plock, into, mark, emit, max_e2, pure, npass, stamp, p,
                own, goals[p], 0, error_goal, plog[p], 0,
            )  # fmt: skip
            res[p, 0] = r
            res[p, 1] = c
            res[p, 2] = st
            res[p, 3] = vis
            res[p, 4] = stp
            e2s[p] = e
        for p in range(2):
            for k in range(min(res[p, 1], plog.shape[1])):
                if done + collapses + k < log.shape[0]:
                    log[done + collapses + k, 0] = plog[p, k, 0]
                    log[done + collapses + k, 1] = plog[p, k, 1]
            removed += res[p, 0]
            collapses += res[p, 1]
            stamp = max(stamp, res[p, 2])
            visited += res[p, 3]
            if res[p, 4] >= 0:
                limit = min(limit, res[p, 4])
                state[4] = 1
            e2max = max(e2max, e2s[p])
        rest = DEFERRED
        rest_goal = goal - goals[0] - goals[1]  # the seam's share, and what rounded off
    mode = rest
    while True:
        r, c, e, stamp, vis, stp = collapse_candidates(
            V, F, N0, Q, head, nxt, falive, valive, kind, ib, partner, attrs, weights,
            sk, suv, limit, plock, into, mark, emit, max_e2, pure, npass, stamp, mode, own,
            rest_goal, 0, error_goal, log, done + collapses,
        )  # fmt: skip
        if stp >= 0:
            state[4] = 1
        removed += r
        collapses += c
        visited += vis
        e2max = max(e2max, e)
        if mode == ALL or collapses > 0 or state[4] != 0:
            break
        # nothing collapsed within the shares: the pass again as one part (so a pass
        # that can collapse does)
        mode = ALL
        limit = ncand
        rest_goal = goal
    state[0] = faces_left - removed
    state[1] = done + collapses
    state[2] = stamp
    state[5] += visited
    return collapses, e2max


COMPACT_DEAD = 4  # faces are compacted once 1 / COMPACT_DEAD of those stored are dead


@njit(cache=True, parallel=True)
def chunk_starts(flags, n, chunk):
    """Where each chunk of ``chunk`` entries of ``flags[:n]`` starts among the set
    ones: (chunks + 1,) int64, the last entry their total (counted in parallel)."""
    nc = (n + chunk - 1) // chunk
    starts = np.zeros(nc + 1, np.int64)
    for c in prange(nc):
        t = 0
        for g in range(c * chunk, min(n, (c + 1) * chunk)):
            t += flags[g] != 0
        starts[c + 1] = t
    for c in range(nc):
        starts[c + 1] += starts[c]
    return starts


COMPACT_CHUNK = 65536  # faces per chunk of the parallel compaction


@njit(cache=True, parallel=True)
def compact_faces(F, N0, fal, forig, head, nxt, mc, tail, head2):
    """Drop the dead faces from the first ``mc`` stored ones (stable, in place in F,
    N0, ``fal``) and rebuild the corner lists over the live ones (each list in
    increasing corner order), so walks touch dense memory. ``forig`` (original face
    numbering) records which original faces were stored at the last compaction:
    they take their current flags (the k-th stored face is the k-th original face
    with ``forig`` set). Returns the new count. Neither the order of the faces nor
    that of a list changes any decision. The flags and the compaction run by chunks
    in parallel (each chunk compacts within itself, then the chunks move down in
    order), the lists in two halves joined per vertex. ``tail`` and ``head2`` are
    int32 (N,) scratch (the collapse checks' marks, reset to 0 here, and the edge
    listing's buffer)."""
    chunk = COMPACT_CHUNK
    mo = forig.shape[0]
    no = (mo + chunk - 1) // chunk
    cnt = chunk_starts(forig, mo, chunk)
    for c in prange(no):
        at = cnt[c]
        for g in range(c * chunk, min(mo, (c + 1) * chunk)):
            if forig[g]:
                forig[g] = fal[at]
                at += 1
    ns = (mc + chunk - 1) // chunk
    kept = np.zeros(ns + 1, np.int64)
    for c in prange(ns):
        dst = c * chunk
        for row in range(c * chunk, min(mc, (c + 1) * chunk)):
            if fal[row]:
                if dst != row:
                    for ax in range(3):
                        F[dst, ax] = F[row, ax]
                        N0[dst, ax] = N0[row, ax]
                dst += 1
        kept[c + 1] = dst - c * chunk
    k = 0
    for c in range(ns):  # chunks move down in order (never onto rows still to move)
        src = c * chunk
        if k != src:
            for j in range(kept[c + 1]):
                for a in range(3):
                    F[k + j, a] = F[src + j, a]
                    N0[k + j, a] = N0[src + j, a]
        k += kept[c + 1]
    for r in prange(mc):
        fal[r] = 1 if r < k else 0
    # the lists in two lanes: each links the corners of its half, descending, into
    # heads of its own (the first's tail of each list kept), then the halves join
    n = head.shape[0]
    for v in prange(n):
        head[v] = -1
        head2[v] = -1
    half = (3 * k) // 2
    for lane in prange(2):
        hd = head if lane == 0 else head2
        lo = 0 if lane == 0 else half
        hi = half if lane == 0 else 3 * k
        for c in range(hi - 1, lo - 1, -1):
            v = F[c // 3, c % 3]
            if lane == 0 and hd[v] == -1:
                tail[v] = c
            nxt[c] = hd[v]
            hd[v] = c
    for v in prange(n):
        if head2[v] != -1:
            if head[v] == -1:
                head[v] = head2[v]
            else:
                nxt[tail[v]] = head2[v]
        tail[v] = 0  # below every stamp: ``tail`` is the collapse checks' marks
    return k


@njit(cache=True)
def restore_faces(F, fal, forig, mc):
    """Undo the compactions at the end: the live stored faces back to their
    original rows of F (dead rows are left as they are); ``forig`` becomes the
    final alive flags in the original numbering."""
    j = mc - 1
    for f in range(forig.shape[0] - 1, -1, -1):
        if forig[f]:
            a = fal[j]
            if a and f != j:
                for t in range(3):
                    F[f, t] = F[j, t]
            forig[f] = a
            j -= 1


@njit(cache=True)
def simplify_kernel(V, F, N0, Q, head, nxt, kind, ib, partner, attrs, weights,
                    target_faces, max_e2, pure, log, parts=1, lanes=1):  # fmt: skip
    """Edge collapse in passes until ``target_faces`` faces remain, the next
    collapse's mean squared error ``e2`` exceeds ``max_e2`` or no edge can collapse.
    Modifies V, F, Q, head, nxt, attrs in place.

    ``N0`` (M, 3) float32: the original face normals (no collapse may turn a face
    90 degrees or more from its own original normal).
    Returns ``(falive uint8 (M,), valive uint8 (N,), e2 max reached, collapses,
    into int32 (N,))``, ``into[u]`` the vertex u collapsed into (-1 if alive).
    ``log`` (K, 2) int32, if it has rows, records the first K collapses (u, v).
    ``pure``: keys are geometric errors (no attribute term), so the first candidate
    over ``max_e2`` ends the run; otherwise such candidates are skipped.
    Between passes the live faces are compacted (:func:`compact_faces`) once a
    quarter of those stored are dead; on return F holds every live face in its
    original row again (``head`` and ``nxt`` are then stale).
    Memory: grows with the number of edges E (about 3 N): 24 bytes per edge for the
    pass lists (ends and key, sorted twice over for the radix sort; allocated for 3 M
    edges, of which only the E listed are touched); 22 bytes per vertex
    of flags and scratch, 2 bytes per face of alive flags; plus the arrays passed in.
    """
    n = V.shape[0]
    m = F.shape[0]
    falive = np.ones(m, np.uint8)  # of the stored (compacted) faces
    forig = np.ones(m, np.uint8)  # of the original faces, see compact_faces
    mc = m
    valive = np.ones(n, np.uint8)
    into = np.full(n, -1, np.int32)
    plock = np.zeros(n, np.int32)
    mark = np.zeros(n, np.int32)
    nbuf = np.empty(n, np.int32)
    # at most three edges per face: the lists are sized for that, and only the part
    # written is ever touched (the rest stays unbacked address space)
    cap, stamp = 3 * m, 2
    euv = np.empty(cap, np.uint64)
    ek = np.empty(cap, np.uint32)
    suv = np.empty(cap, np.uint64)
    sk = np.empty(cap, np.uint32)
    emit = np.zeros(n, np.uint8)
    inner = np.zeros(n if parts == 2 else 0, np.uint8)
    state = np.array([m, 0, stamp, 0, 0, 0], np.int64)
    e2max = 0.0
    ncand = 0
    while state[0] > target_faces and state[4] == 0:
        state[3] += 1
        if state[3] == 1:
            count, state[2] = collect_edges(
                F, head, nxt, falive, valive, kind, mark, state[2], euv, suv, lanes
            )
            rank_edges(V, F, Q, head, nxt, falive, kind, partner, attrs, weights, euv, ek, count)
            ncand = sort_candidates(ek, euv, count, sk, suv)
        else:
            if COMPACT_DEAD * (mc - state[0]) >= mc:
                mc = compact_faces(F, N0, falive, forig, head, nxt, mc, mark, nbuf)
            ncand, state[2] = rerank(
                V, F, Q, head, nxt, falive, valive, kind, partner, attrs, weights, plock,
                state[3] - 1, emit, mark, state[2], nbuf, euv, ek, sk, suv, ncand, lanes,
            )  # fmt: skip
        collapses, e2 = run_pass(
            V, F, N0, Q, head, nxt, falive, valive, kind, ib, partner, attrs, weights,
            sk, suv, ncand, state, plock, into, mark, emit, target_faces, max_e2, pure, log,
            parts, inner,
        )  # fmt: skip
        if e2 > e2max:
            e2max = e2
        if collapses == 0:
            break
    restore_faces(F, falive, forig, mc)
    return forig, valive, e2max, state[1], into


# ---------------------------------------------------------------- output


OUTPUT_CHUNK = 65536  # rows per chunk of the output's parallel compactions


@njit(cache=True, parallel=True)
def output_mesh(v_in, V, F, falive, perm, centre):
    """The finished mesh in input terms: ``(vertices (N', 3) float64, faces (M', 3)
    uint32, kept (N',) int64, src (N',) int64)``: the vertices still used by a live
    face, in input order (``src`` their input indices, ``kept`` their internal
    ones), the live faces in their order renumbered to them. A vertex that never
    moved keeps its input bits; a moved one is its working position plus
    ``centre``. Parallel (chunked counts, then each chunk writes at its offset)."""
    n = V.shape[0]
    m = F.shape[0]
    used = np.zeros(n, np.uint8)
    for f in prange(m):
        if falive[f]:
            used[F[f, 0]] = 1  # the same value from every face: no race on the result
            used[F[f, 1]] = 1
            used[F[f, 2]] = 1
    inv = np.empty(n, np.int64)
    for i in prange(n):
        inv[perm[i]] = i
    chunk = OUTPUT_CHUNK
    nv = (n + chunk - 1) // chunk
    vcount = np.zeros(nv + 1, np.int64)
    for c in prange(nv):
        k = 0
        for j in range(c * chunk, min(n, (c + 1) * chunk)):
            k += used[inv[j]]
        vcount[c + 1] = k
    for c in range(nv):
        vcount[c + 1] += vcount[c]
    nout = vcount[nv]
    new = np.empty(n, np.int64)
    kept = np.empty(nout, np.int64)
    src = np.empty(nout, np.int64)
    out_v = np.empty((nout, 3))
    for c in prange(nv):
        k = vcount[c]
        for j in range(c * chunk, min(n, (c + 1) * chunk)):
            i = inv[j]
            if used[i]:
                new[i] = k
                kept[k] = i
                src[k] = j
                moved = False
                for a in range(3):
                    if V[i, a] != v_in[j, a] - centre[a]:
                        moved = True
                for a in range(3):
                    out_v[k, a] = V[i, a] + centre[a] if moved else v_in[j, a]
                k += 1
    nf = (m + chunk - 1) // chunk
    fcount = chunk_starts(falive, m, chunk)
    out_f = np.empty((fcount[nf], 3), np.uint32)
    for c in prange(nf):
        k = fcount[c]
        for f in range(c * chunk, min(m, (c + 1) * chunk)):
            if falive[f]:
                for a in range(3):
                    out_f[k, a] = new[F[f, a]]
                k += 1
    return out_v, out_f, kept, src


# ---------------------------------------------------------------- measured error
#
# The returned error is measured, not estimated: after the collapses every input
# vertex knows the output vertex it went into (``into`` chains). The distance from
# each removed or moved input vertex to the output faces around its output vertex,
# and from each moved output vertex to the input faces of the vertices that went
# into it, are exact point-to-triangle distances to a subset of the other surface,
# so each is at least the true distance (and equal when the closest point lies in
# that fan, the usual case); their maximum approximates the two-sided Hausdorff
# distance at the vertices, where a piecewise-linear deviation peaks.


DESCENT_VERTICES = 1024  # output fans a descent may visit per input vertex


@njit(cache=True)
def point_triangle_dist2(px, py, pz, ax, ay, az, bx, by, bz, cx, cy, cz):
    """Squared distance from p to triangle (a, b, c) (Ericson, Real-Time Collision
    Detection, 5.1.5: Voronoi regions of the vertices, edges and face)."""
    abx = bx - ax
    aby = by - ay
    abz = bz - az
    acx = cx - ax
    acy = cy - ay
    acz = cz - az
    apx = px - ax
    apy = py - ay
    apz = pz - az
    d1 = abx * apx + aby * apy + abz * apz
    d2 = acx * apx + acy * apy + acz * apz
    if d1 <= 0.0 and d2 <= 0.0:
        return apx * apx + apy * apy + apz * apz
    bpx = px - bx
    bpy = py - by
    bpz = pz - bz
    d3 = abx * bpx + aby * bpy + abz * bpz
    d4 = acx * bpx + acy * bpy + acz * bpz
    if d3 >= 0.0 and d4 <= d3:
        return bpx * bpx + bpy * bpy + bpz * bpz
    vc = d1 * d4 - d3 * d2
    if vc <= 0.0 and d1 >= 0.0 and d3 <= 0.0:
        t = d1 / (d1 - d3)
        qx = apx - t * abx
        qy = apy - t * aby
        qz = apz - t * abz
        return qx * qx + qy * qy + qz * qz
    cpx = px - cx
    cpy = py - cy
    cpz = pz - cz
    d5 = abx * cpx + aby * cpy + abz * cpz
    d6 = acx * cpx + acy * cpy + acz * cpz
    if d6 >= 0.0 and d5 <= d6:
        return cpx * cpx + cpy * cpy + cpz * cpz
    vb = d5 * d2 - d1 * d6
    if vb <= 0.0 and d2 >= 0.0 and d6 <= 0.0:
        t = d2 / (d2 - d6)
        qx = apx - t * acx
        qy = apy - t * acy
        qz = apz - t * acz
        return qx * qx + qy * qy + qz * qz
    va = d3 * d6 - d5 * d4
    if va <= 0.0 and (d4 - d3) >= 0.0 and (d5 - d6) >= 0.0:
        t = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        qx = bpx - t * (cx - bx)
        qy = bpy - t * (cy - by)
        qz = bpz - t * (cz - bz)
        return qx * qx + qy * qy + qz * qz
    den = 1.0 / (va + vb + vc)
    v = vb * den
    w = vc * den
    qx = apx - abx * v - acx * w
    qy = apy - aby * v - acy * w
    qz = apz - abz * v - acz * w
    return qx * qx + qy * qy + qz * qz


@njit(cache=True, parallel=True)
def resolve_into(into):
    """The output vertex each vertex ended in (``into`` chains followed): int32 (N,),
    ``rep[i] == i`` for survivors. Parallel (``into`` is only read)."""
    n = into.shape[0]
    rep = np.empty(n, np.int32)
    for i in prange(n):
        r = np.int64(i)
        nx = np.int64(into[r])
        while nx != -1:
            r = nx
            nx = np.int64(into[r])
        rep[i] = r
    return rep


CSR_LANES = 2  # lanes of the parallel vertex -> item lists (any number: same lists)


@njit(cache=True, parallel=True)
def _csr(F, alive, n):
    """Vertex -> item lists of the rows ``f`` of ``F`` (M, K) with ``alive[f]`` (each
    row listed under each of its K vertices, rows in increasing order):
    ``(start (n+1,), items int32)``. Counted and filled by ``CSR_LANES`` ranges of
    rows in parallel, each at its own offsets within every vertex's list."""
    m = F.shape[0]
    w = F.shape[1]
    lanes = CSR_LANES
    size = (m + lanes - 1) // lanes
    cnt = np.zeros((lanes, n), np.int64)
    for lane in prange(lanes):
        for f in range(lane * size, min(m, (lane + 1) * size)):
            if alive[f]:
                for k in range(w):
                    cnt[lane, F[f, k]] += 1
    start = np.empty(n + 1, np.int64)
    total = 0
    for v in range(n):
        start[v] = total
        for lane in range(lanes):
            c = cnt[lane, v]
            cnt[lane, v] = total
            total += c
    start[n] = total
    items = np.empty(total, np.int32)
    for lane in prange(lanes):
        for f in range(lane * size, min(m, (lane + 1) * size)):
            if alive[f]:
                for k in range(w):
                    a = F[f, k]
                    items[cnt[lane, a]] = f
                    cnt[lane, a] += 1
    return start, items


@njit(cache=True)
def _fan_dist2(px, py, pz, V, F, start, flist, r, enough=-1.0):
    """Squared distance from p to the faces around vertex r, and the closest face;
    or, as soon as a face within squared distance ``enough`` turns up, that one."""
    d = np.inf
    fb = -1
    for j in range(start[r], start[r + 1]):
        f = flist[j]
        a = F[f, 0]
        b = F[f, 1]
        c = F[f, 2]
        e = point_triangle_dist2(
            px, py, pz,
            V[a, 0], V[a, 1], V[a, 2],
            V[b, 0], V[b, 1], V[b, 2],
            V[c, 0], V[c, 1], V[c, 2],
        )  # fmt: skip
        if e < d:
            d = e
            fb = f
            if d <= enough:
                break
    return d, fb


@njit(cache=True, parallel=True)
def measured_error(P0, V, F, falive, F0, rep, descent=DESCENT_VERTICES):
    """``(to_output (N,), to_input)``: upper bounds of the distance from each removed or
    moved input vertex (original position ``P0``) to the output surface (the faces
    around the output vertex it went into, then, where that is above
    ``to_input``, a descent over neighbouring output fans to the locally closest
    face; 0 for
    vertices that stayed), and the largest distance from a moved output vertex
    (``V``) to the input faces ``F0`` around the input vertices that went into it.
    Searches stop early where they cannot raise a maximum: a fan search at the
    first face within ``to_input`` (that bound is then just some face's distance,
    below ``to_input``), an output vertex's search at the first input face within
    its chunk's running maximum; the maxima and every bound above ``to_input``
    are as a full search gives them.
    Memory: 12 bytes per input and per output face (vertex -> face lists) plus 37
    bytes per vertex (list starts, cluster members, flags, bounds), and 16 more
    while a list is counted (:func:`_csr`'s two lanes)."""
    n = V.shape[0]
    start, flist = _csr(F, falive, n)
    start0, flist0 = _csr(F0, np.ones(F0.shape[0], np.uint8), n)
    moved = np.empty(n, np.uint8)
    for i in prange(n):
        moved[i] = V[i, 0] != P0[i, 0] or V[i, 1] != P0[i, 1] or V[i, 2] != P0[i, 2]
    chunk = 4096
    nchunks = (n + chunk - 1) // chunk
    # members of each output vertex's cluster (the input vertices that went into it)
    mstart, members = _csr(rep.reshape(n, 1), np.ones(n, np.uint8), n)
    out2 = np.zeros(nchunks)
    for ci in prange(nchunks):
        best = 0.0
        for r in range(ci * chunk, min(n, (ci + 1) * chunk)):
            if not moved[r] or rep[r] != r:
                continue
            # a face within the chunk's maximum ends the search: r cannot raise it
            d = np.inf
            for jm in range(mstart[r], mstart[r + 1]):
                if d <= best:
                    break
                w = members[jm]
                for j in range(start0[w], start0[w + 1]):
                    g = flist0[j]
                    a = F0[g, 0]
                    b = F0[g, 1]
                    c = F0[g, 2]
                    e = point_triangle_dist2(
                        V[r, 0], V[r, 1], V[r, 2],
                        P0[a, 0], P0[a, 1], P0[a, 2],
                        P0[b, 0], P0[b, 1], P0[b, 2],
                        P0[c, 0], P0[c, 1], P0[c, 2],
                    )  # fmt: skip
                    if e < d:
                        d = e
                        if d <= best:
                            break
            if d < np.inf and d > best:
                best = d
        out2[ci] = best
    # the vertices' own side first: below its maximum no descent is needed
    floor2 = out2.max() if nchunks > 0 else 0.0
    ub = np.zeros(n)
    for ci in prange(nchunks):
        best = 0.0
        seen = np.empty(descent + 3, np.int32)
        for i in range(ci * chunk, min(n, (ci + 1) * chunk)):
            r = rep[i]
            if r == i and not moved[i]:
                continue
            d, fbest = _fan_dist2(P0[i, 0], P0[i, 1], P0[i, 2], V, F, start, flist, r, floor2)
            if d <= floor2:
                ub[i] = d  # cannot raise the maximum: no descent (nor the whole fan)
                continue
            # descend over the output surface: the fans of the closest face's
            # corners, while that finds a closer face
            nseen = 1
            seen[0] = r
            fnext = -1
            while fbest >= 0 and nseen < descent:
                improved = False
                for k in range(3):
                    w = F[fbest, k]
                    fresh = True
                    for t in range(nseen):
                        if seen[t] == w:
                            fresh = False
                            break
                    if not fresh:
                        continue
                    seen[nseen] = w
                    nseen += 1
                    e, fe = _fan_dist2(P0[i, 0], P0[i, 1], P0[i, 2], V, F, start, flist, w)
                    if e < d:
                        d = e
                        fnext = fe
                        improved = True
                if not improved:
                    break
                fbest = fnext
            if d < np.inf:
                ub[i] = d
    if nchunks == 0:
        return ub, 0.0
    return np.sqrt(ub), np.sqrt(out2.max())


@njit(cache=True, parallel=True)
def point_mesh_dist(px, py, pz, V, F, falive):
    """Exact distance from p to the live faces (brute force, parallel over faces)."""
    m = F.shape[0]
    chunk = 16384
    nchunks = (m + chunk - 1) // chunk
    best = np.full(max(nchunks, 1), np.inf)
    for ci in prange(nchunks):
        d = np.inf
        for f in range(ci * chunk, min(m, (ci + 1) * chunk)):
            if not falive[f]:
                continue
            a = F[f, 0]
            b = F[f, 1]
            c = F[f, 2]
            e = point_triangle_dist2(
                px, py, pz,
                V[a, 0], V[a, 1], V[a, 2],
                V[b, 0], V[b, 1], V[b, 2],
                V[c, 0], V[c, 1], V[c, 2],
            )  # fmt: skip
            if e < d:
                d = e
        best[ci] = d
    return np.sqrt(best.min())


@njit(cache=True, parallel=True)
def face_grid(V, F, falive):
    """A uniform grid of cubic cells over the live faces for exact nearest-face
    queries: about one cell per face, the cells per axis following the bounding box
    (a flat city gets a single layer); each face listed in the cells its bounding
    box overlaps, or, when that is more than 64 cells, in an overflow list every
    query checks. Returns ``(lo (3,), h, dims (3,), cstart, cfaces, overflow)``.
    Memory: 8 bytes per cell plus 4 per (face, cell) entry (and, while it is built,
    32 per live face)."""
    m = F.shape[0]
    live = 0
    for f in range(m):
        live += falive[f] != 0
    faces = np.empty(live, np.int64)
    k = 0
    for f in range(m):
        if falive[f]:
            faces[k] = f
            k += 1
    lx = ly = lz = np.inf
    hx = hy = hz = -np.inf
    for t in range(live):
        f = faces[t]
        for j in range(3):
            w = F[f, j]
            lx = min(lx, V[w, 0])
            hx = max(hx, V[w, 0])
            ly = min(ly, V[w, 1])
            hy = max(hy, V[w, 1])
            lz = min(lz, V[w, 2])
            hz = max(hz, V[w, 2])
    lo = np.array([lx, ly, lz])
    hi = np.array([hx, hy, hz])
    if live == 0:
        lo[:] = 0.0
        hi[:] = 0.0
    ext = np.empty(3)
    for a in range(3):
        ext[a] = hi[a] - lo[a]
    emax = max(ext[0], ext[1], ext[2], 1e-9)
    # cell edge h with prod(ext_a / h) ~ live over the axes longer than h
    flat = np.zeros(3, np.uint8)
    h = emax
    for _ in range(3):
        prod = 1.0
        k = 0
        for a in range(3):
            if not flat[a]:
                prod *= max(ext[a], 1e-9 * emax)
                k += 1
        if k == 0:
            break
        h = (prod / max(live, 1)) ** (1.0 / k)
        changed = False
        for a in range(3):
            if not flat[a] and ext[a] < h:
                flat[a] = 1
                changed = True
        if not changed:
            break
    h = max(h, 1e-9 * emax) * (1.0 + 1e-9)
    dims = np.empty(3, np.int64)
    for a in range(3):
        dims[a] = max(1, min(4096, int(ext[a] / h) + 1))
    ncell = dims[0] * dims[1] * dims[2]
    # each live face's range of cells (its bounding box), in parallel
    box = np.empty((live, 6), np.int32)
    for t in prange(live):
        f = faces[t]
        for a in range(3):
            x0 = V[F[f, 0], a]
            x1 = V[F[f, 1], a]
            x2 = V[F[f, 2], a]
            mn = min(x0, x1, x2)
            mx = max(x0, x1, x2)
            box[t, a] = min(dims[a] - 1, max(0, int((mn - lo[a]) / h)))
            box[t, 3 + a] = min(dims[a] - 1, max(0, int((mx - lo[a]) / h)))
    cstart = np.zeros(ncell + 1, np.int64)
    nover = 0
    fill = np.empty(0, np.int64)
    cfaces = np.empty(0, np.int32)
    overflow = np.empty(0, np.int32)
    for rnd in range(2):
        if rnd == 1:
            for c in range(ncell):
                cstart[c + 1] += cstart[c]
            fill = cstart[:-1].copy()
            cfaces = np.empty(cstart[ncell], np.int32)
            overflow = np.empty(nover, np.int32)
            nover = 0
        for t in range(live):
            f = faces[t]
            cells = (
                (box[t, 3] - box[t, 0] + 1)
                * (box[t, 4] - box[t, 1] + 1)
                * (box[t, 5] - box[t, 2] + 1)
            )
            if cells > 64:
                if rnd == 1:
                    overflow[nover] = f
                nover += 1
                continue
            for x in range(box[t, 0], box[t, 3] + 1):
                for y in range(box[t, 1], box[t, 4] + 1):
                    for z in range(box[t, 2], box[t, 5] + 1):
                        c = (x * dims[1] + y) * dims[2] + z
                        if rnd == 0:
                            cstart[c + 1] += 1
                        else:
                            cfaces[fill[c]] = f
                            fill[c] += 1
    return lo, h, dims, cstart, cfaces, overflow


@njit(cache=True)
def grid_dist(px, py, pz, V, F, lo, h, dims, cstart, cfaces, overflow, limit, enough):
    """Exact distance from p to the faces of a :func:`face_grid` (searching cube
    shells around p's cell until no closer face can remain), ``limit`` when every
    face is at least that far, or, as soon as a face within ``enough`` turns up
    (``enough >= 0``), that face's distance (an upper bound of at most ``enough``)."""
    best = limit * limit
    stop = enough * enough if enough >= 0.0 else -1.0
    for j in range(overflow.shape[0]):
        f = overflow[j]
        a = F[f, 0]
        b = F[f, 1]
        c = F[f, 2]
        e = point_triangle_dist2(
            px, py, pz,
            V[a, 0], V[a, 1], V[a, 2],
            V[b, 0], V[b, 1], V[b, 2],
            V[c, 0], V[c, 1], V[c, 2],
        )  # fmt: skip
        if e < best:
            best = e
            if best <= stop:
                return np.sqrt(best)
    gx = dims[0]
    gy = dims[1]
    gz = dims[2]
    cx = int(np.floor((px - lo[0]) / h))
    cy = int(np.floor((py - lo[1]) / h))
    cz = int(np.floor((pz - lo[2]) / h))
    k = 0
    while True:
        # cells at Chebyshev index distance k + 1 or more are >= k h away
        for x in range(max(cx - k, 0), min(cx + k, gx - 1) + 1):
            dxk = abs(x - cx) == k
            for y in range(max(cy - k, 0), min(cy + k, gy - 1) + 1):
                dyk = dxk or abs(y - cy) == k
                for z in range(max(cz - k, 0), min(cz + k, gz - 1) + 1):
                    if not (dyk or abs(z - cz) == k):
                        continue
                    c = (x * gy + y) * gz + z
                    for j in range(cstart[c], cstart[c + 1]):
                        f = cfaces[j]
                        a = F[f, 0]
                        b = F[f, 1]
                        cc = F[f, 2]
                        e = point_triangle_dist2(
                            px, py, pz,
                            V[a, 0], V[a, 1], V[a, 2],
                            V[b, 0], V[b, 1], V[b, 2],
                            V[cc, 0], V[cc, 1], V[cc, 2],
                        )  # fmt: skip
                        if e < best:
                            best = e
                            if best <= stop:
                                return np.sqrt(best)
        d = k * h
        if d * d >= best:
            break
        # past the grid on every side: nothing further
        if cx - k <= 0 and cy - k <= 0 and cz - k <= 0:
            if cx + k >= gx - 1 and cy + k >= gy - 1 and cz + k >= gz - 1:
                break
        k += 1
    return np.sqrt(best)


EXACT_SERIAL = 16  # candidates checked one by one before the parallel sweep


@njit(cache=True, parallel=True)
def exact_max(P0, order, bounds, V, F, falive, floor):
    """The largest exact distance from the points ``P0[order]`` (by decreasing upper
    bound ``bounds``) to the live faces, or ``floor`` if that is larger.

    Each point's search stops at the first face within the running maximum (such a
    point cannot raise it); one with none that close is measured exactly on the way
    (out to its bound). The first ``EXACT_SERIAL`` run one by one to raise the
    maximum early, the rest in parallel chunks. Points whose
    bound is below the maximum are skipped. Exact: no point is left to a bound.
    Returns ``(max, exact searches out to the bound)``. Memory: the face grid
    (about 12 bytes per live face plus 4 per face-cell entry)."""
    best = floor
    if order.shape[0] == 0:
        return best, 0
    if bounds[order[0]] <= best:
        return best, 0
    lo, h, dims, cstart, cfaces, overflow = face_grid(V, F, falive)
    full = 0
    j = 0
    while j < order.shape[0] and j < EXACT_SERIAL:
        i = order[j]
        if bounds[i] <= best:
            return best, full
        d = grid_dist(P0[i, 0], P0[i, 1], P0[i, 2], V, F, lo, h, dims, cstart, cfaces,
                      overflow, bounds[i], best)  # fmt: skip
        if d > best:  # nothing within the maximum: d is exact (or the bound)
            full += 1
            best = d
        j += 1
    # the candidates left whose bound could still raise the maximum
    end = j
    while end < order.shape[0] and bounds[order[end]] > best:
        end += 1
    rest = end - j
    chunk = 256
    nchunks = (rest + chunk - 1) // chunk
    cbest = np.full(max(nchunks, 1), best)
    cfull = np.zeros(max(nchunks, 1), np.int64)
    for ci in prange(nchunks):
        local = best
        nf = 0
        for t in range(j + ci * chunk, min(end, j + (ci + 1) * chunk)):
            i = order[t]
            if bounds[i] <= local:
                continue
            d = grid_dist(P0[i, 0], P0[i, 1], P0[i, 2], V, F, lo, h, dims, cstart, cfaces,
                          overflow, bounds[i], local)  # fmt: skip
            if d > local:
                nf += 1
                local = d
        cbest[ci] = local
        cfull[ci] = nf
    return max(best, cbest.max()), full + cfull.sum()
