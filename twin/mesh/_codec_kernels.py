"""Numba kernels of the twin archival mesh codec (see :mod:`twin.mesh.codec`).

Three layers, each matched by a plain-Python function in
:mod:`twin.mesh._codec_reference` that the tests compare against:

1. :func:`build_twins`: the half-edge pairing. Half-edge ``3 f + k`` runs from
   ``faces[f, k]`` to ``faces[f, (k + 1) % 3]``; it is paired with ``b -> a`` only
   when the mesh has exactly one ``a -> b`` and exactly one ``b -> a`` (so
   non-manifold and inconsistently oriented edges become boundaries, and
   degenerate faces pair with nothing).
2. :func:`encode_traverse` / :func:`decode_mesh`: an Edgebreaker-style region
   growing over the paired half-edges. The border of the decoded region is a set of
   cyclic linked lists of vertex occurrences; each step attaches the face across the
   gate edge ``u -> v`` and names its apex ``c`` as ``C`` (a new vertex, predicted by
   the parallelogram rule), ``R`` (the border vertex after ``v``), ``L`` (before
   ``u``), ``E`` (closes a 3-loop), ``S`` (further along the loop, by offset: the
   loop splits), ``X`` (any earlier vertex, by index: handles, non-manifold
   vertices), or ``B`` (nothing across the gate: a boundary). A component starts
   with one face whose three vertices are new or referenced by index. The decoder
   replays the same border operations, so any triangle set, manifold or not, comes
   back exactly.
3. :func:`rans_encode` / the decoder's inline rANS: a static-model, byte-wise
   renormalised rANS coder (32-bit state, 12-bit probabilities) with one
   frequency table per context, plus a raw bit stream for the low bits of large
   integers (:func:`token_of`).

Memory (encoder): about 200 bytes per face (adjacency, border nodes, symbol
arrays). Decoder: about 60 bytes per face plus the output. Both O(F) time except
``S`` searches, which walk at most ``MAX_WALK`` border nodes.

Status codes (decoder): 0 ok, -1 symbol stream exhausted, -2 raw bit stream
exhausted, -3 a vertex reference out of range, -4 more vertices than the header
says, -5 a bad symbol (an op or token that cannot occur), -6 border capacity.
"""

from __future__ import annotations

import numpy as np
from numba import njit

PROB_BITS = 12
PROB_SCALE = 1 << PROB_BITS
RANS_L = 1 << 23
NSYM = 76
MAX_WALK = 1 << 16

OP_C, OP_R, OP_L, OP_E, OP_S, OP_X, OP_B = 0, 1, 2, 3, 4, 5, 6
N_OPS = 7
OP_START = 7  # previous-op context at a component start

# context layout
CTX_OP = 0  # 8 contexts: previous op
N_CLASS = 12  # residual classes per axis
CTX_RES = 8  # 3 * N_CLASS parallelogram residual contexts
CTX_DELTA = CTX_RES + 3 * N_CLASS  # 3 contexts: start / isolated vertex deltas
CTX_SFLAG = CTX_DELTA + 3  # start vertex: new (0) or reference (1)
CTX_REF = CTX_SFLAG + 1
CTX_SOFF = CTX_REF + 1
N_CTX = CTX_SOFF + 1


@njit(cache=True)
def bit_length(z):
    n = 0
    while z > 0:
        z >>= 1
        n += 1
    return n


@njit(cache=True)
def token_of(z):
    """(token, raw bit count, raw value) of a non-negative integer ``z < 2**34``.

    Tokens 0..15 are the value itself; above, the bit length ``L`` and the bit
    below the leading one form the token, the ``L - 2`` low bits go raw.
    """
    if z < 16:
        return z, 0, 0
    n = bit_length(z)
    t = 16 + 2 * (n - 5) + ((z >> (n - 2)) & 1)
    return t, n - 2, z & ((1 << (n - 2)) - 1)


@njit(cache=True)
def residual_class(a, b):
    """Context class of a parallelogram residual from the gate triangle's spread."""
    n = bit_length(a + b)
    return n if n < N_CLASS else N_CLASS - 1


@njit(cache=True)
def build_twins(faces, n_vertices):
    """Half-edge pairing (see the module docstring): int64 (3 F,), -1 where unpaired.

    Memory: O(F + N) (a CSR of outgoing half-edges by source vertex).
    """
    nf = faces.shape[0]
    deg = np.zeros(n_vertices + 1, np.int64)
    for f in range(nf):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        if a == b or b == c or a == c:
            continue
        deg[a + 1] += 1
        deg[b + 1] += 1
        deg[c + 1] += 1
    for i in range(n_vertices):
        deg[i + 1] += deg[i]
    fill = deg[:-1].copy()
    out_h = np.empty(deg[n_vertices], np.int64)
    for f in range(nf):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        if a == b or b == c or a == c:
            continue
        for k in range(3):
            s = faces[f, k]
            out_h[fill[s]] = 3 * f + k
            fill[s] += 1
    twin = np.full(3 * nf, -1, np.int64)
    for f in range(nf):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        if a == b or b == c or a == c:
            continue
        for k in range(3):
            h = 3 * f + k
            s = faces[f, k]
            d = faces[f, (k + 1) % 3]
            same = 0
            for i in range(deg[s], deg[s + 1]):
                g = out_h[i]
                if faces[g // 3, (g % 3 + 1) % 3] == d:
                    same += 1
            if same != 1:
                continue
            rev = 0
            t = -1
            for i in range(deg[d], deg[d + 1]):
                g = out_h[i]
                if faces[g // 3, (g % 3 + 1) % 3] == s:
                    rev += 1
                    t = g
            if rev == 1:
                twin[h] = t
    return twin


@njit(cache=True)
def _wrap(r, half, mask):
    return ((r + half) & mask) - half


@njit(cache=True)
def encode_traverse(q, faces, twin, bits):
    """Traverse the mesh and emit the symbol stream (decode order).

    ``q`` (N, 3) int64 quantised positions, ``faces`` (F, 3) int64, ``twin`` from
    :func:`build_twins`. Returns ``(ctx int32, sym int32, raw_val int64, raw_len
    int32, order int64 (N,) new -> old vertex, out_faces int64 (F, 3) in new ids)``.
    """
    nf = faces.shape[0]
    nv = q.shape[0]
    mask = (1 << bits) - 1
    half = 1 << (bits - 1)
    visited = np.zeros(nf, np.bool_)
    newid = np.full(nv, -1, np.int64)
    order = np.empty(nv, np.int64)
    nnew = 0
    cap = 3 * nf + 8
    vert = np.empty(cap, np.int64)
    nxt = np.empty(cap, np.int64)
    prv = np.empty(cap, np.int64)
    hed = np.empty(cap, np.int64)
    opp = np.empty(cap, np.int64)
    nodes = 0
    stack = np.empty(cap, np.int64)
    sp = 0
    scap = 12 * nf + 3 * nv + 16
    sctx = np.empty(scap, np.int32)
    ssym = np.empty(scap, np.int32)
    ns = 0
    rval = np.empty(scap, np.int64)
    rlen = np.empty(scap, np.int32)
    nr = 0
    out_faces = np.empty((nf, 3), np.int64)
    done = 0
    scan = 0
    gate = -1
    prev_op = OP_START
    last = -1  # last new vertex (old id), base of start deltas
    while done < nf:
        if gate < 0:
            if sp > 0:
                sp -= 1
                gate = stack[sp]
                continue
            while visited[scan]:
                scan += 1
            f = scan
            visited[f] = True
            for k in range(3):
                x = faces[f, k]
                if newid[x] < 0:
                    sctx[ns] = CTX_SFLAG
                    ssym[ns] = 0
                    ns += 1
                    newid[x] = nnew
                    order[nnew] = x
                    nnew += 1
                    for a in range(3):
                        base = q[last, a] if last >= 0 else half
                        z = _wrap(q[x, a] - base, half, mask)
                        z = 2 * z if z >= 0 else -2 * z - 1
                        t, nb, rv = token_of(z)
                        sctx[ns] = CTX_DELTA + a
                        ssym[ns] = t
                        ns += 1
                        if nb > 0:
                            rval[nr] = rv
                            rlen[nr] = nb
                            nr += 1
                    last = x
                else:
                    sctx[ns] = CTX_SFLAG
                    ssym[ns] = 1
                    ns += 1
                    t, nb, rv = token_of(nnew - 1 - newid[x])
                    sctx[ns] = CTX_REF
                    ssym[ns] = t
                    ns += 1
                    if nb > 0:
                        rval[nr] = rv
                        rlen[nr] = nb
                        nr += 1
                out_faces[done, k] = newid[x]
            done += 1
            prev_op = OP_START
            a0, b0, c0 = faces[f, 0], faces[f, 1], faces[f, 2]
            if a0 != b0 and b0 != c0 and a0 != c0:
                n0, n1, n2 = nodes, nodes + 1, nodes + 2
                nodes += 3
                vert[n0], vert[n1], vert[n2] = a0, b0, c0
                nxt[n0], nxt[n1], nxt[n2] = n1, n2, n0
                prv[n0], prv[n1], prv[n2] = n2, n0, n1
                hed[n0], hed[n1], hed[n2] = 3 * f, 3 * f + 1, 3 * f + 2
                opp[n0], opp[n1], opp[n2] = c0, a0, b0
                gate = n0
            continue
        u = gate
        v = nxt[u]
        h = hed[u]
        t = twin[h] if h >= 0 else -1
        if t < 0 or visited[t // 3]:
            sctx[ns] = CTX_OP + prev_op
            ssym[ns] = OP_B
            ns += 1
            prev_op = OP_B
            gate = _kill_edge(u, nxt, prv, hed)
            continue
        f = t // 3
        kk = t % 3
        visited[f] = True
        c = faces[f, (kk + 2) % 3]
        h_uc = 3 * f + (kk + 1) % 3
        h_cv = 3 * f + (kk + 2) % 3
        p = prv[u]
        n = nxt[v]
        vu = vert[u]
        vv = vert[v]
        if newid[c] < 0:
            op = OP_C
        elif p == n and vert[p] == c:
            op = OP_E
        elif vert[n] == c:
            op = OP_R
        elif vert[p] == c:
            op = OP_L
        else:
            op = OP_X
            x = nxt[n]
            d = 0
            while x != p and d < MAX_WALK:
                if vert[x] == c:
                    op = OP_S
                    break
                x = nxt[x]
                d += 1
        sctx[ns] = CTX_OP + prev_op
        ssym[ns] = op
        ns += 1
        prev_op = op
        if op == OP_C or op == OP_X:
            if op == OP_C:
                newid[c] = nnew
                order[nnew] = c
                nnew += 1
                w = opp[u]
                for a in range(3):
                    pred = q[vu, a] + q[vv, a] - q[w, a]
                    z = _wrap(q[c, a] - pred, half, mask)
                    z = 2 * z if z >= 0 else -2 * z - 1
                    tk, nb, rv = token_of(z)
                    cls = residual_class(abs(q[vu, a] - q[w, a]), abs(q[vv, a] - q[w, a]))
                    sctx[ns] = CTX_RES + a * N_CLASS + cls
                    ssym[ns] = tk
                    ns += 1
                    if nb > 0:
                        rval[nr] = rv
                        rlen[nr] = nb
                        nr += 1
                last = c
            else:
                tk, nb, rv = token_of(nnew - 1 - newid[c])
                sctx[ns] = CTX_REF
                ssym[ns] = tk
                ns += 1
                if nb > 0:
                    rval[nr] = rv
                    rlen[nr] = nb
                    nr += 1
            k = nodes
            nodes += 1
            vert[k] = c
            nxt[u] = k
            prv[k] = u
            nxt[k] = v
            prv[v] = k
            hed[u] = h_uc
            opp[u] = vv
            hed[k] = h_cv
            opp[k] = vu
            gate = k
        elif op == OP_R:
            nxt[u] = n
            prv[n] = u
            hed[u] = h_uc
            opp[u] = vv
        elif op == OP_L:
            nxt[p] = v
            prv[v] = p
            hed[p] = h_cv
            opp[p] = vu
            gate = p
        elif op == OP_E:
            gate = -1
        else:  # OP_S at node x, offset d
            tk, nb, rv = token_of(d)
            sctx[ns] = CTX_SOFF
            ssym[ns] = tk
            ns += 1
            if nb > 0:
                rval[nr] = rv
                rlen[nr] = nb
                nr += 1
            c2 = nodes
            nodes += 1
            xn = nxt[x]
            vert[c2] = c
            hed[c2] = hed[x]
            opp[c2] = opp[x]
            nxt[c2] = xn
            prv[xn] = c2
            nxt[u] = c2
            prv[c2] = u
            hed[u] = h_uc
            opp[u] = vv
            nxt[x] = v
            prv[v] = x
            hed[x] = h_cv
            opp[x] = vu
            stack[sp] = u
            sp += 1
            gate = x
        out_faces[done, 0] = newid[vv]
        out_faces[done, 1] = newid[vu]
        out_faces[done, 2] = newid[c]
        done += 1
    # unreferenced vertices, in input order, as deltas
    for x in range(nv):
        if newid[x] >= 0:
            continue
        newid[x] = nnew
        order[nnew] = x
        nnew += 1
        for a in range(3):
            base = q[last, a] if last >= 0 else half
            z = _wrap(q[x, a] - base, half, mask)
            z = 2 * z if z >= 0 else -2 * z - 1
            t, nb, rv = token_of(z)
            sctx[ns] = CTX_DELTA + a
            ssym[ns] = t
            ns += 1
            if nb > 0:
                rval[nr] = rv
                rlen[nr] = nb
                nr += 1
        last = x
    return sctx[:ns].copy(), ssym[:ns].copy(), rval[:nr].copy(), rlen[:nr].copy(), order, out_faces


@njit(cache=True)
def _kill_edge(u, nxt, prv, hed):
    """Mark border edge ``u -> nxt[u]`` dead (nothing across it), drop vertex
    occurrences between two dead edges, and return the next live gate node of the
    loop (or -1 when the loop has no live edge left)."""
    hed[u] = -1
    v = nxt[u]
    if v != u and hed[v] < 0:
        w = nxt[v]
        nxt[u] = w
        prv[w] = u
    start = u
    pp = prv[u]
    if pp != u and hed[pp] < 0:
        w = nxt[u]
        nxt[pp] = w
        prv[w] = pp
        start = pp
    x = nxt[start]
    while hed[x] < 0 and x != start:
        x = nxt[x]
    if hed[x] >= 0:
        return x
    return -1


@njit(cache=True)
def rans_encode(ctx, sym, freq, cum):
    """rANS-encode ``sym[i]`` under the table of ``ctx[i]`` (tables ``freq``/``cum``
    (n_ctx, NSYM), each context summing to ``PROB_SCALE``). Returns the bytes the
    decoder reads front to back (4-byte state first). Memory: 2 bytes per symbol."""
    n = sym.shape[0]
    out = np.empty(2 * n + 16, np.uint8)
    pos = out.shape[0]
    x = np.int64(RANS_L)
    for i in range(n - 1, -1, -1):
        f = freq[ctx[i], sym[i]]
        c = cum[ctx[i], sym[i]]
        xmax = ((RANS_L >> PROB_BITS) << 8) * f
        while x >= xmax:
            pos -= 1
            out[pos] = x & 255
            x >>= 8
        x = (x // f) * PROB_SCALE + (x % f) + c
    for k in range(3, -1, -1):
        pos -= 1
        out[pos] = (x >> (8 * k)) & 255
    return out[pos:].copy()


@njit(cache=True)
def pack_bits(val, length):
    """Concatenate ``length[i]`` low bits of ``val[i]``, least significant first."""
    total = 0
    for i in range(length.shape[0]):
        total += length[i]
    out = np.zeros((total + 7) // 8, np.uint8)
    acc = np.int64(0)
    nacc = 0
    p = 0
    for i in range(length.shape[0]):
        acc |= np.int64(val[i]) << nacc
        nacc += length[i]
        while nacc >= 8:
            out[p] = acc & 255
            acc >>= 8
            nacc -= 8
            p += 1
    if nacc > 0:
        out[p] = acc & 255
    return out


@njit(cache=True)
def decode_tables(freq):
    """Per-context decode slots: ``sym | (freq - 1) << 8 | (slot - cum) << 20``."""
    nctx = freq.shape[0]
    tab = np.zeros(nctx * PROB_SCALE, np.uint32)
    for c in range(nctx):
        pos = 0
        for s in range(freq.shape[1]):
            f = freq[c, s]
            for j in range(f):
                tab[c * PROB_SCALE + pos + j] = s | ((f - 1) << 8) | (j << 20)
            pos += f
    return tab


@njit(cache=True)
def decode_mesh(rans, raw, tab, nv, nf, bits):
    """Decode the symbol streams to ``(q (nv, 3) uint16, faces (nf, 3) uint32,
    status)``; see the module docstring for the status codes. Every index is checked
    before use, so a corrupt stream ends with a negative status, never a wild read.
    Memory: about 60 bytes per face plus the outputs."""
    mask = (1 << bits) - 1
    half = 1 << (bits - 1)
    qo = np.zeros((nv, 3), np.uint16)
    fo = np.zeros((nf, 3), np.uint32)
    q = np.zeros((nv, 3), np.int64)
    cap = 3 * nf + 8
    vert = np.empty(cap, np.int64)
    nxt = np.empty(cap, np.int64)
    prv = np.empty(cap, np.int64)
    hed = np.empty(cap, np.int64)
    opp = np.empty(cap, np.int64)
    stack = np.empty(cap, np.int64)
    nodes = 0
    sp = 0
    nr = rans.shape[0]
    nraw = raw.shape[0]
    if nr < 4:
        return qo, fo, -1
    x = (np.int64(rans[0]) | np.int64(rans[1]) << 8 | np.int64(rans[2]) << 16) | np.int64(
        rans[3]
    ) << 24
    p = 4
    bbuf = np.int64(0)
    bcnt = 0
    rp = 0
    nnew = 0
    done = 0
    gate = -1
    prev_op = OP_START
    last = -1
    status = 0
    while done < nf:
        if gate < 0:
            if sp > 0:
                sp -= 1
                gate = stack[sp]
                continue
            tri = np.empty(3, np.int64)
            for k in range(3):
                # symbol: start flag
                e = tab[CTX_SFLAG * PROB_SCALE + (x & (PROB_SCALE - 1))]
                flag = e & 255
                x = (((e >> 8) & 4095) + 1) * (x >> PROB_BITS) + (e >> 20)
                while x < RANS_L:
                    x = (x << 8) | (np.int64(rans[p]) if p < nr else 0)
                    p += 1
                if flag == 0:
                    if nnew >= nv:
                        return qo, fo, -4
                    for a in range(3):
                        e = tab[(CTX_DELTA + a) * PROB_SCALE + (x & (PROB_SCALE - 1))]
                        t = e & 255
                        x = (((e >> 8) & 4095) + 1) * (x >> PROB_BITS) + (e >> 20)
                        while x < RANS_L:
                            x = (x << 8) | (np.int64(rans[p]) if p < nr else 0)
                            p += 1
                        if t < 16:
                            z = np.int64(t)
                        else:
                            nb = (t - 16) // 2 + 3
                            while bcnt < nb:
                                bbuf |= (np.int64(raw[rp]) if rp < nraw else 0) << bcnt
                                rp += 1
                                bcnt += 8
                            z = ((2 | ((t - 16) & 1)) << nb) | (bbuf & ((1 << nb) - 1))
                            bbuf >>= nb
                            bcnt -= nb
                        r = (z >> 1) if (z & 1) == 0 else -(z >> 1) - 1
                        base = q[last, a] if last >= 0 else half
                        q[nnew, a] = (base + r) & mask
                    last = nnew
                    tri[k] = nnew
                    nnew += 1
                elif flag == 1:
                    e = tab[CTX_REF * PROB_SCALE + (x & (PROB_SCALE - 1))]
                    t = e & 255
                    x = (((e >> 8) & 4095) + 1) * (x >> PROB_BITS) + (e >> 20)
                    while x < RANS_L:
                        x = (x << 8) | (np.int64(rans[p]) if p < nr else 0)
                        p += 1
                    if t < 16:
                        z = np.int64(t)
                    else:
                        nb = (t - 16) // 2 + 3
                        while bcnt < nb:
                            bbuf |= (np.int64(raw[rp]) if rp < nraw else 0) << bcnt
                            rp += 1
                            bcnt += 8
                        z = ((2 | ((t - 16) & 1)) << nb) | (bbuf & ((1 << nb) - 1))
                        bbuf >>= nb
                        bcnt -= nb
                    idx = nnew - 1 - z
                    if idx < 0:
                        return qo, fo, -3
                    tri[k] = idx
                else:
                    return qo, fo, -5
            fo[done, 0] = tri[0]
            fo[done, 1] = tri[1]
            fo[done, 2] = tri[2]
            done += 1
            prev_op = OP_START
            a0, b0, c0 = tri[0], tri[1], tri[2]
            if a0 != b0 and b0 != c0 and a0 != c0:
                n0, n1, n2 = nodes, nodes + 1, nodes + 2
                nodes += 3
                vert[n0], vert[n1], vert[n2] = a0, b0, c0
                nxt[n0], nxt[n1], nxt[n2] = n1, n2, n0
                prv[n0], prv[n1], prv[n2] = n2, n0, n1
                hed[n0], hed[n1], hed[n2] = 1, 1, 1
                opp[n0], opp[n1], opp[n2] = c0, a0, b0
                gate = n0
            continue
        u = gate
        v = nxt[u]
        e = tab[(CTX_OP + prev_op) * PROB_SCALE + (x & (PROB_SCALE - 1))]
        op = e & 255
        x = (((e >> 8) & 4095) + 1) * (x >> PROB_BITS) + (e >> 20)
        while x < RANS_L:
            x = (x << 8) | (np.int64(rans[p]) if p < nr else 0)
            p += 1
        prev_op = op
        if op == OP_B:
            gate = _kill_edge(u, nxt, prv, hed)
            continue
        if op > OP_B:
            return qo, fo, -5
        vu = vert[u]
        vv = vert[v]
        pn = prv[u]
        n = nxt[v]
        if op == OP_C or op == OP_X:
            if op == OP_C:
                if nnew >= nv:
                    return qo, fo, -4
                c = nnew
                nnew += 1
                w = opp[u]
                for a in range(3):
                    qa = q[vu, a]
                    qb = q[vv, a]
                    qw = q[w, a]
                    cls = residual_class(abs(qa - qw), abs(qb - qw))
                    e = tab[(CTX_RES + a * N_CLASS + cls) * PROB_SCALE + (x & (PROB_SCALE - 1))]
                    t = e & 255
                    x = (((e >> 8) & 4095) + 1) * (x >> PROB_BITS) + (e >> 20)
                    while x < RANS_L:
                        x = (x << 8) | (np.int64(rans[p]) if p < nr else 0)
                        p += 1
                    if t < 16:
                        z = np.int64(t)
                    else:
                        nb = (t - 16) // 2 + 3
                        while bcnt < nb:
                            bbuf |= (np.int64(raw[rp]) if rp < nraw else 0) << bcnt
                            rp += 1
                            bcnt += 8
                        z = ((2 | ((t - 16) & 1)) << nb) | (bbuf & ((1 << nb) - 1))
                        bbuf >>= nb
                        bcnt -= nb
                    r = (z >> 1) if (z & 1) == 0 else -(z >> 1) - 1
                    q[c, a] = (qa + qb - qw + r) & mask
                last = c
            else:
                e = tab[CTX_REF * PROB_SCALE + (x & (PROB_SCALE - 1))]
                t = e & 255
                x = (((e >> 8) & 4095) + 1) * (x >> PROB_BITS) + (e >> 20)
                while x < RANS_L:
                    x = (x << 8) | (np.int64(rans[p]) if p < nr else 0)
                    p += 1
                if t < 16:
                    z = np.int64(t)
                else:
                    nb = (t - 16) // 2 + 3
                    while bcnt < nb:
                        bbuf |= (np.int64(raw[rp]) if rp < nraw else 0) << bcnt
                        rp += 1
                        bcnt += 8
                    z = ((2 | ((t - 16) & 1)) << nb) | (bbuf & ((1 << nb) - 1))
                    bbuf >>= nb
                    bcnt -= nb
                c = nnew - 1 - z
                if c < 0:
                    return qo, fo, -3
            k = nodes
            nodes += 1
            vert[k] = c
            nxt[u] = k
            prv[k] = u
            nxt[k] = v
            prv[v] = k
            hed[u] = 1
            opp[u] = vv
            hed[k] = 1
            opp[k] = vu
            gate = k
        elif op == OP_R:
            c = vert[n]
            nxt[u] = n
            prv[n] = u
            hed[u] = 1
            opp[u] = vv
        elif op == OP_L:
            c = vert[pn]
            nxt[pn] = v
            prv[v] = pn
            hed[pn] = 1
            opp[pn] = vu
            gate = pn
        elif op == OP_E:
            c = vert[pn]
            gate = -1
        else:  # OP_S
            e = tab[CTX_SOFF * PROB_SCALE + (x & (PROB_SCALE - 1))]
            t = e & 255
            x = (((e >> 8) & 4095) + 1) * (x >> PROB_BITS) + (e >> 20)
            while x < RANS_L:
                x = (x << 8) | (np.int64(rans[p]) if p < nr else 0)
                p += 1
            if t < 16:
                z = np.int64(t)
            else:
                nb = (t - 16) // 2 + 3
                while bcnt < nb:
                    bbuf |= (np.int64(raw[rp]) if rp < nraw else 0) << bcnt
                    rp += 1
                    bcnt += 8
                z = ((2 | ((t - 16) & 1)) << nb) | (bbuf & ((1 << nb) - 1))
                bbuf >>= nb
                bcnt -= nb
            if z >= MAX_WALK:
                return qo, fo, -5
            xs = nxt[n]
            for _ in range(z):
                xs = nxt[xs]
            c = vert[xs]
            c2 = nodes
            nodes += 1
            xn = nxt[xs]
            vert[c2] = c
            hed[c2] = hed[xs]
            opp[c2] = opp[xs]
            nxt[c2] = xn
            prv[xn] = c2
            nxt[u] = c2
            prv[c2] = u
            hed[u] = 1
            opp[u] = vv
            nxt[xs] = v
            prv[v] = xs
            hed[xs] = 1
            opp[xs] = vu
            stack[sp] = u
            sp += 1
            gate = xs
        fo[done, 0] = vv
        fo[done, 1] = vu
        fo[done, 2] = c
        done += 1
    while nnew < nv:
        for a in range(3):
            e = tab[(CTX_DELTA + a) * PROB_SCALE + (x & (PROB_SCALE - 1))]
            t = e & 255
            x = (((e >> 8) & 4095) + 1) * (x >> PROB_BITS) + (e >> 20)
            while x < RANS_L:
                x = (x << 8) | (np.int64(rans[p]) if p < nr else 0)
                p += 1
            if t < 16:
                z = np.int64(t)
            else:
                nb = (t - 16) // 2 + 3
                while bcnt < nb:
                    bbuf |= (np.int64(raw[rp]) if rp < nraw else 0) << bcnt
                    rp += 1
                    bcnt += 8
                z = ((2 | ((t - 16) & 1)) << nb) | (bbuf & ((1 << nb) - 1))
                bbuf >>= nb
                bcnt -= nb
            r = (z >> 1) if (z & 1) == 0 else -(z >> 1) - 1
            base = q[last, a] if last >= 0 else half
            q[nnew, a] = (base + r) & mask
        last = nnew
        nnew += 1
    if p > nr:
        status = -1
    elif rp > nraw:
        status = -2
    elif x != RANS_L:
        status = -1
    for i in range(nv):
        for a in range(3):
            qo[i, a] = q[i, a]
    return qo, fo, status
