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
3. :func:`rans_encode` / :func:`_rsym`: a static-model, byte-wise renormalised
   rANS coder (two interleaved 32-bit states, 11-bit probabilities) with one
   frequency table per context, plus a raw bit stream for the low bits of large
   integers (:func:`token_of`). :func:`predictor_costs` estimates the residual
   size of each prediction setting for the encoder's choice.

Memory (encoder): about 270 bytes per face (adjacency, border nodes, symbol
arrays). Decoder: about 10-30 bytes per face plus the outputs. Both O(F) time
except ``S`` searches, which walk at most ``MAX_WALK`` border nodes either way.

Status codes (decoder): 0 ok, -1 symbol stream exhausted or inconsistent, -2 raw
bit stream exhausted, -3 a vertex reference out of range, -4 more vertices than
the header says, -5 a bad symbol (an op, offset or choice that cannot occur, or
a border that is no longer a loop); model tables: -1 truncated, -5 symbol out of
range, -7 frequencies not summing to ``PROB_SCALE``, -8 trailing bytes.
"""

from __future__ import annotations

import numpy as np
from numba import njit

PROB_BITS = 11
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
CLS_TOP = (1 << (N_CLASS - 1)) - 1  # spreads from here on share the top class
CTX_RES = 8  # 3 * N_CLASS parallelogram residual contexts
CTX_DELTA = CTX_RES + 3 * N_CLASS  # 3 contexts: start / isolated vertex deltas
CTX_SFLAG = CTX_DELTA + 3  # start vertex: new (0) or reference (1)
CTX_REF = CTX_SFLAG + 1
CTX_SOFF = CTX_REF + 1
CTX_SEL = CTX_SOFF + 1  # 3 contexts: predictor choice, by the previous choice
CTX_COPY = CTX_SEL + 3  # 3 contexts: residuals of a copied neighbour, per axis
N_CTX = CTX_COPY + 3


@njit(cache=True)
def bit_length(z):
    """Bits needed for a non-negative ``z < 2**64`` (0 for 0)."""
    n = 0
    if z >= 1 << 32:
        z >>= 32
        n += 32
    if z >= 1 << 16:
        z >>= 16
        n += 16
    if z >= 256:
        z >>= 8
        n += 8
    if z >= 16:
        z >>= 4
        n += 4
    if z >= 4:
        z >>= 2
        n += 2
    if z >= 2:
        z >>= 1
        n += 1
    return n + z


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
def predict(qa, qb, qw, alpha8, sel):
    """One coordinate of the apex prediction from the gate ``u, v`` (``qa``, ``qb``)
    and the opposite vertex ``w`` (``qw``): ``sel`` 0 is ``m + alpha (m - w)``
    with ``m`` the gate midpoint and ``alpha = alpha8 / 8`` (1: the parallelogram
    ``u + v - w``; 1/2 suits irregular scans), 1 copies ``u``, 2 copies ``v``."""
    if sel == 1:
        return qa
    if sel == 2:
        return qb
    return (8 * (qa + qb) + alpha8 * (qa + qb - 2 * qw)) >> 4


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
    out_d = np.empty(deg[n_vertices], np.int64)
    for f in range(nf):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        if a == b or b == c or a == c:
            continue
        for k in range(3):
            s = faces[f, k]
            out_h[fill[s]] = 3 * f + k
            out_d[fill[s]] = faces[f, (k + 1) % 3]
            fill[s] += 1
    twin = np.full(3 * nf, -1, np.int64)
    for s in range(n_vertices):
        for i in range(deg[s], deg[s + 1]):
            d = out_d[i]
            if d < s:
                continue  # each undirected edge is settled from its smaller end
            same = 0
            for j in range(deg[s], deg[s + 1]):
                if out_d[j] == d:
                    same += 1
            if same != 1:
                continue
            rev = 0
            t = -1
            for j in range(deg[d], deg[d + 1]):
                if out_d[j] == s:
                    rev += 1
                    t = out_h[j]
            if rev == 1:
                twin[out_h[i]] = t
                twin[t] = out_h[i]
    return twin


@njit(cache=True)
def _wrap(r, half, mask):
    return ((r + half) & mask) - half


@njit(cache=True)
def encode_traverse(q, faces, twin, bits, alpha8, select):
    """Traverse the mesh and emit the symbol stream (decode order).

    ``q`` (N, 3) int64 quantised positions, ``faces`` (F, 3) int64, ``twin`` from
    :func:`build_twins`; ``alpha8`` and ``select`` (a per-vertex choice among the
    predictors of :func:`predict`, coded) set the position prediction. Returns
    ``(ctx int32, sym int32, raw_val int64, raw_len int32, order int64 (N,) new ->
    old vertex, out_faces int64 (F, 3) in new ids, quads int64 (K, 4): u, v, w, c of
    every parallelogram-predicted vertex)``.
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
    quads = np.empty((nv, 4), np.int64)
    nquad = 0
    prev_sel = 0
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
            x = -1
            d = 0
            if nxt[n] != p:
                # nearest occurrence of c, forward from after n or backward from before p
                xf = nxt[n]
                xb = prv[p]
                for i in range(MAX_WALK):
                    if vert[xf] == c:
                        x = xf
                        d = 2 * i
                        break
                    if xb == xf:
                        break
                    if vert[xb] == c:
                        x = xb
                        d = 2 * i + 1
                        break
                    if nxt[xf] == xb:
                        break
                    xf = nxt[xf]
                    xb = prv[xb]
                if x >= 0:
                    op = OP_S
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
                quads[nquad, 0] = vu
                quads[nquad, 1] = vv
                quads[nquad, 2] = w
                quads[nquad, 3] = c
                nquad += 1
                sel = 0
                if select:
                    best = 1 << 30
                    for cand in range(3):
                        score = 0
                        for a in range(3):
                            pr = predict(q[vu, a], q[vv, a], q[w, a], alpha8, cand)
                            z = _wrap(q[c, a] - pr, half, mask)
                            score += bit_length(2 * z if z >= 0 else -2 * z - 1)
                        if score < best:
                            best = score
                            sel = cand
                    sctx[ns] = CTX_SEL + prev_sel
                    ssym[ns] = sel
                    ns += 1
                    prev_sel = sel
                for a in range(3):
                    pred = predict(q[vu, a], q[vv, a], q[w, a], alpha8, sel)
                    z = _wrap(q[c, a] - pred, half, mask)
                    z = 2 * z if z >= 0 else -2 * z - 1
                    tk, nb, rv = token_of(z)
                    if sel == 0:
                        cls = residual_class(abs(q[vu, a] - q[w, a]), abs(q[vv, a] - q[w, a]))
                        sctx[ns] = CTX_RES + a * N_CLASS + cls
                    else:
                        sctx[ns] = CTX_COPY + a
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
    return (
        sctx[:ns].copy(),
        ssym[:ns].copy(),
        rval[:nr].copy(),
        rlen[:nr].copy(),
        order,
        out_faces,
        quads[:nquad].copy(),
    )


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
    (n_ctx, NSYM), each used context summing to ``PROB_SCALE``), two interleaved
    states (symbol ``i`` uses state ``i % 2``). Returns the bytes the decoder reads
    front to back (the two 4-byte states first). Memory: 2 bytes per symbol."""
    n = sym.shape[0]
    out = np.empty(2 * n + 16, np.uint8)
    pos = out.shape[0]
    xs = np.full(2, RANS_L, np.int64)
    for i in range(n - 1, -1, -1):
        f = np.int64(freq[ctx[i], sym[i]])
        c = np.int64(cum[ctx[i], sym[i]])
        x = xs[i & 1]
        xmax = ((RANS_L >> PROB_BITS) << 8) * f
        while x >= xmax:
            pos -= 1
            out[pos] = x & 255
            x >>= 8
        xs[i & 1] = (x // f) * PROB_SCALE + (x % f) + c
    for j in range(1, -1, -1):
        for k in range(3, -1, -1):
            pos -= 1
            out[pos] = (xs[j] >> (8 * k)) & 255
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
def read_tables(buf, n_ctx):
    """Parse the model tables (per context: symbol count, then delta-coded symbols
    and ``freq - 1`` as LEB128 varints) into (n_ctx, NSYM) frequencies. Returns
    ``(freq, status)``: -1 truncated or over-long, -5 a symbol out of range, -7
    a used context whose frequencies do not sum to ``PROB_SCALE``, -8 trailing
    bytes."""
    freq = np.zeros((n_ctx, NSYM), np.int64)
    pos = 0
    n = buf.shape[0]
    for c in range(n_ctx):
        cnt = -1
        k = 0
        total = 0
        s = -1
        while cnt < 0 or k < 2 * cnt:
            v = np.int64(0)
            shift = 0
            while True:
                if pos >= n or shift > 28:
                    return freq, -1
                b = np.int64(buf[pos])
                pos += 1
                v |= (b & 0x7F) << shift
                shift += 7
                if b < 0x80:
                    break
            if cnt < 0:
                cnt = v
                if cnt > NSYM:
                    return freq, -5
            elif k % 2 == 0:
                s += v + 1
                if s >= NSYM:
                    return freq, -5
                k += 1
            else:
                freq[c, s] = v + 1
                total += v + 1
                k += 1
        if cnt > 0 and total != PROB_SCALE:
            return freq, -7
    if pos != n:
        return freq, -8
    return freq, 0


@njit(cache=True)
def decode_tables(freq):
    """Decoder tables from (n_ctx, NSYM) frequencies: ``lut`` (slot -> symbol,
    uint8, n_ctx * PROB_SCALE) and flat int32 ``fq`` (``freq | cum << 12``) and ``cm``
    (cum) per (context, symbol)."""
    nctx = freq.shape[0]
    lut = np.zeros(nctx * PROB_SCALE, np.uint8)
    fq = np.ones(nctx * NSYM, np.int32)
    cm = np.zeros(nctx * NSYM, np.int32)
    for c in range(nctx):
        pos = 0
        for s in range(NSYM):
            f = freq[c, s]
            if f == 0:
                continue
            fq[c * NSYM + s] = f | (pos << 12)
            cm[c * NSYM + s] = pos
            for j in range(f):
                lut[c * PROB_SCALE + pos + j] = s
            pos += f
    return lut, fq, cm


@njit(cache=True)
def _rsym(lut, fq, cm, ctx, x, y, p, rans):
    """Decode one symbol with state ``x``; returns ``(symbol, y, x', p)`` (the two
    interleaved states swap roles after every symbol)."""
    slot = x & (PROB_SCALE - 1)
    s = np.int64(lut[ctx * PROB_SCALE + slot])
    e = np.int64(fq[ctx * NSYM + s])  # freq | cum << 12
    x = (e & 4095) * (x >> PROB_BITS) + slot - (e >> 12)
    while x < RANS_L:
        x = (x << 8) | (np.int64(rans[p]) if p < rans.shape[0] else 0)
        p += 1
    return s, y, x, p


@njit(cache=True)
def _rint(lut, fq, cm, ctx, x, y, p, rans, raw, bb, bc, rp):
    """Decode one integer (token, then its raw low bits)."""
    t, x, y, p = _rsym(lut, fq, cm, ctx, x, y, p, rans)
    if t < 16:
        return t, x, y, p, bb, bc, rp
    nb = (t - 16) // 2 + 3
    while bc < nb:
        bb |= (np.int64(raw[rp]) if rp < raw.shape[0] else 0) << bc
        rp += 1
        bc += 8
    z = ((2 | ((t - 16) & 1)) << nb) | (bb & ((1 << nb) - 1))
    return z, x, y, p, bb >> nb, bc - nb, rp


@njit(cache=True)
def decode_mesh(rans, raw, lut, fq, cm, nv, nf, bits, alpha8, select):
    """Decode the symbol streams to ``(q (nv, 3) uint16, faces (nf, 3) uint32,
    status)``; see the module docstring for the status codes. Every index is checked
    before use, so a corrupt stream ends with a negative status, never a wild read.
    Memory: about 60 bytes per face plus the outputs."""
    mask = (1 << bits) - 1
    half = 1 << (bits - 1)
    q = np.empty((nv, 3), np.uint16)
    fo = np.empty((nf, 3), np.uint32)
    qo = q
    cap = 3 * nf + 8
    nd = np.empty((cap, 4), np.int32)  # vert, next, prev, opp (-1: dead edge)
    stack = np.empty(cap, np.int32)
    nodes = 0
    sp = 0
    if rans.shape[0] < 8:
        return qo, fo, -1
    x = np.int64(0)
    y = np.int64(0)
    for k in range(4):
        x |= np.int64(rans[k]) << (8 * k)
        y |= np.int64(rans[4 + k]) << (8 * k)
    p = 8
    bb = np.int64(0)
    bc = 0
    rp = 0
    nnew = 0
    done = 0
    gate = -1
    prev_op = OP_START
    last = -1
    tri = np.empty(3, np.int64)
    cls_lut = np.empty(CLS_TOP + 1, np.int64)  # residual_class(a, b) = cls_lut[min(a + b, CLS_TOP)]
    for i in range(CLS_TOP + 1):
        cls_lut[i] = residual_class(i, 0)
    prev_sel = 0
    steps = 0
    while done < nf:
        steps += 1
        if steps > 8 * nf + 64 or p > rans.shape[0] + 8:
            return qo, fo, -1
        if gate < 0:
            if sp > 0:
                sp -= 1
                gate = stack[sp]
                continue
            for k in range(3):
                flag, x, y, p = _rsym(lut, fq, cm, CTX_SFLAG, x, y, p, rans)
                if flag == 0:
                    if nnew >= nv:
                        return qo, fo, -4
                    for a in range(3):
                        z, x, y, p, bb, bc, rp = _rint(
                            lut, fq, cm, CTX_DELTA + a, x, y, p, rans, raw, bb, bc, rp
                        )
                        r = (z >> 1) if (z & 1) == 0 else -(z >> 1) - 1
                        base = np.int64(q[last, a]) if last >= 0 else half
                        q[nnew, a] = (base + r) & mask
                    last = nnew
                    tri[k] = nnew
                    nnew += 1
                elif flag == 1:
                    z, x, y, p, bb, bc, rp = _rint(
                        lut, fq, cm, CTX_REF, x, y, p, rans, raw, bb, bc, rp
                    )
                    idx = nnew - 1 - z
                    if idx < 0:
                        return qo, fo, -3
                    tri[k] = idx
                else:
                    return qo, fo, -5
            a0, b0, c0 = tri[0], tri[1], tri[2]
            fo[done, 0] = a0
            fo[done, 1] = b0
            fo[done, 2] = c0
            done += 1
            prev_op = OP_START
            if a0 != b0 and b0 != c0 and a0 != c0:
                n0, n1, n2 = nodes, nodes + 1, nodes + 2
                nodes += 3
                nd[n0, 0], nd[n1, 0], nd[n2, 0] = a0, b0, c0
                nd[n0, 1], nd[n1, 1], nd[n2, 1] = n1, n2, n0
                nd[n0, 2], nd[n1, 2], nd[n2, 2] = n2, n0, n1
                nd[n0, 3], nd[n1, 3], nd[n2, 3] = c0, a0, b0
                gate = n0
            continue
        u = gate
        v = nd[u, 1]
        op, x, y, p = _rsym(lut, fq, cm, CTX_OP + prev_op, x, y, p, rans)
        prev_op = op
        if op == OP_B:
            gate = _kill_edge_nd(u, nd)
            if gate == -2:
                return qo, fo, -5
            continue
        if op > OP_B:
            return qo, fo, -5
        vu = nd[u, 0]
        vv = nd[v, 0]
        pn = nd[u, 2]
        n = nd[v, 1]
        if op == OP_C:
            if nnew >= nv:
                return qo, fo, -4
            c = nnew
            nnew += 1
            w = nd[u, 3]
            sel = 0
            if select:
                sel, x, y, p = _rsym(lut, fq, cm, CTX_SEL + prev_sel, x, y, p, rans)
                if sel > 2:
                    return qo, fo, -5
                prev_sel = sel
            for a in range(3):
                qa = np.int64(q[vu, a])
                qb = np.int64(q[vv, a])
                qw = np.int64(q[w, a])
                if sel == 0:
                    spread = abs(qa - qw) + abs(qb - qw)
                    ctx = CTX_RES + a * N_CLASS + cls_lut[min(spread, CLS_TOP)]
                else:
                    ctx = CTX_COPY + a
                z, x, y, p, bb, bc, rp = _rint(lut, fq, cm, ctx, x, y, p, rans, raw, bb, bc, rp)
                r = (z >> 1) if (z & 1) == 0 else -(z >> 1) - 1
                q[c, a] = (predict(qa, qb, qw, alpha8, sel) + r) & mask
            last = c
        elif op == OP_X:
            z, x, y, p, bb, bc, rp = _rint(lut, fq, cm, CTX_REF, x, y, p, rans, raw, bb, bc, rp)
            c = nnew - 1 - z
            if c < 0:
                return qo, fo, -3
        if op == OP_C or op == OP_X:
            k = nodes
            nodes += 1
            nd[k, 0] = c
            nd[u, 1] = k
            nd[k, 2] = u
            nd[k, 1] = v
            nd[v, 2] = k
            nd[u, 3] = vv
            nd[k, 3] = vu
            gate = k
        elif op == OP_R:
            c = nd[n, 0]
            nd[u, 1] = n
            nd[n, 2] = u
            nd[u, 3] = vv
        elif op == OP_L:
            c = nd[pn, 0]
            nd[pn, 1] = v
            nd[v, 2] = pn
            nd[pn, 3] = vu
            gate = pn
        elif op == OP_E:
            c = nd[pn, 0]
            gate = -1
        else:  # OP_S
            z, x, y, p, bb, bc, rp = _rint(lut, fq, cm, CTX_SOFF, x, y, p, rans, raw, bb, bc, rp)
            if z >= 2 * MAX_WALK:
                return qo, fo, -5
            if z & 1:
                xs = nd[pn, 2]
                for _ in range(z >> 1):
                    xs = nd[xs, 2]
            else:
                xs = nd[n, 1]
                for _ in range(z >> 1):
                    xs = nd[xs, 1]
            c = nd[xs, 0]
            c2 = nodes
            nodes += 1
            xn = nd[xs, 1]
            nd[c2, 0] = c
            nd[c2, 3] = nd[xs, 3]
            nd[c2, 1] = xn
            nd[xn, 2] = c2
            nd[u, 1] = c2
            nd[c2, 2] = u
            nd[u, 3] = vv
            nd[xs, 1] = v
            nd[v, 2] = xs
            nd[xs, 3] = vu
            stack[sp] = u
            sp += 1
            gate = xs
        fo[done, 0] = vv
        fo[done, 1] = vu
        fo[done, 2] = c
        done += 1
    while nnew < nv:
        for a in range(3):
            z, x, y, p, bb, bc, rp = _rint(
                lut, fq, cm, CTX_DELTA + a, x, y, p, rans, raw, bb, bc, rp
            )
            r = (z >> 1) if (z & 1) == 0 else -(z >> 1) - 1
            base = np.int64(q[last, a]) if last >= 0 else half
            q[nnew, a] = (base + r) & mask
        last = nnew
        nnew += 1
    status = 0
    if p > rans.shape[0]:
        status = -1
    elif rp > raw.shape[0]:
        status = -2
    elif x != RANS_L or y != RANS_L:
        status = -1
    return q, fo, status


@njit(cache=True)
def _kill_edge_nd(u, nd):
    """:func:`_kill_edge` on the decoder's node table (columns vert, next, prev,
    opp; a dead edge has opp -1)."""
    nd[u, 3] = -1
    v = nd[u, 1]
    if v != u and nd[v, 3] < 0:
        w = nd[v, 1]
        nd[u, 1] = w
        nd[w, 2] = u
    start = u
    pp = nd[u, 2]
    if pp != u and nd[pp, 3] < 0:
        w = nd[u, 1]
        nd[pp, 1] = w
        nd[w, 2] = pp
        start = pp
    x = nd[start, 1]
    steps = 0
    while nd[x, 3] < 0 and x != start:
        x = nd[x, 1]
        steps += 1
        if steps > nd.shape[0]:
            return -2  # not a loop: only a corrupt stream gets here
    if nd[x, 3] >= 0:
        return x
    return -1


@njit(cache=True)
def decode_all(tables, rans, raw, nv, nf, bits, alpha8, select, offset, step, want_float):
    """Model tables, decoder tables, :func:`decode_mesh` and (``want_float``) the
    float64 positions ``q * step + offset`` in one call. Returns ``(vertices
    (nv, 3) float64 or (0, 3), q, faces, status)``."""
    freq, status = read_tables(tables, N_CTX)
    if status != 0:
        return np.empty((0, 3)), np.empty((0, 3), np.uint16), np.empty((0, 3), np.uint32), status
    lut, fq, cm = decode_tables(freq)
    q, faces, status = decode_mesh(rans, raw, lut, fq, cm, nv, nf, bits, alpha8, select)
    if status != 0 or not want_float:
        return np.empty((0, 3)), q, faces, status
    out = np.empty((nv, 3))
    for i in range(nv):
        for a in range(3):
            out[i, a] = q[i, a] * step + offset[a]
    return out, q, faces, status


@njit(cache=True)
def _entropy_bits(hist):
    total = 0
    for h in hist:
        total += h
    bits = 0.0
    for h in hist:
        if h > 0:
            bits -= h * np.log2(h / total)
    return bits


@njit(cache=True)
def predictor_costs(q, quads, bits, alphas):
    """Estimated bits of the residuals of ``quads`` (u, v, w, c rows) for each
    ``alphas[i]`` without (column 0) and with (column 1) the coded per-vertex copy
    choice: order-0 token entropy plus raw bits, plus the choice's entropy."""
    mask = (1 << bits) - 1
    half = 1 << (bits - 1)
    out = np.zeros((alphas.shape[0], 2))
    for ia in range(alphas.shape[0]):
        a8 = alphas[ia]
        h0 = np.zeros(NSYM, np.int64)
        h1 = np.zeros(NSYM, np.int64)
        hc = np.zeros(3, np.int64)
        raw0 = 0
        raw1 = 0
        for i in range(quads.shape[0]):
            u, v, w, c = quads[i, 0], quads[i, 1], quads[i, 2], quads[i, 3]
            best = 1 << 30
            sel = 0
            for cand in range(3):
                score = 0
                for a in range(3):
                    z = _wrap(q[c, a] - predict(q[u, a], q[v, a], q[w, a], a8, cand), half, mask)
                    z = 2 * z if z >= 0 else -2 * z - 1
                    t, nb, _ = token_of(z)
                    score += bit_length(z)
                    if cand == 0:
                        h0[t] += 1
                        raw0 += nb
                if score < best:
                    best = score
                    sel = cand
            hc[sel] += 1
            for a in range(3):
                z = _wrap(q[c, a] - predict(q[u, a], q[v, a], q[w, a], a8, sel), half, mask)
                z = 2 * z if z >= 0 else -2 * z - 1
                t, nb, _ = token_of(z)
                h1[t] += 1
                raw1 += nb
        out[ia, 0] = _entropy_bits(h0) + raw0
        out[ia, 1] = _entropy_bits(h1) + raw1 + _entropy_bits(hc)
    return out
