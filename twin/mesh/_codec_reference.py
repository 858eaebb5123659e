"""Plain Python references for the archival codec kernels (slow; tests only).

Same inputs and outputs as the kernels in :mod:`twin.mesh._codec_kernels`, written
with dicts, Python lists and ints: the half-edge pairing from a dict of directed
edges, the traversal with a border of small node objects, rANS with Python
integers. Tests compare the kernels against these symbol for symbol and byte for
byte. Errors are ``ValueError`` with a reason.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from twin.mesh._codec_kernels import (
    CTX_COPY,
    CTX_DELTA,
    CTX_OP,
    CTX_REF,
    CTX_RES,
    CTX_SEL,
    CTX_SFLAG,
    CTX_SOFF,
    MAX_WALK,
    N_CLASS,
    NSYM,
    OP_B,
    OP_C,
    OP_E,
    OP_L,
    OP_R,
    OP_S,
    OP_START,
    OP_X,
    PROB_BITS,
    PROB_SCALE,
    RANS_L,
)


def token_ref(z: int) -> tuple[int, int, int]:
    """(token, raw bit count, raw value): values below 16 are their own token."""
    if z < 16:
        return z, 0, 0
    n = z.bit_length()
    return 16 + 2 * (n - 5) + ((z >> (n - 2)) & 1), n - 2, z & ((1 << (n - 2)) - 1)


def untoken_ref(t: int, read_bits) -> int:
    if t < 16:
        return t
    nb = (t - 16) // 2 + 3
    return ((2 | ((t - 16) & 1)) << nb) | read_bits(nb)


def residual_class_ref(a: int, b: int) -> int:
    return min((a + b).bit_length(), N_CLASS - 1)


def predict_ref(qa: int, qb: int, qw: int, alpha8: int, sel: int) -> int:
    if sel:
        return qa if sel == 1 else qb
    return (8 * (qa + qb) + alpha8 * (qa + qb - 2 * qw)) // 16


def build_twins_ref(faces) -> np.ndarray:
    """Pair ``a -> b`` with ``b -> a`` when each occurs exactly once (non-degenerate
    faces only)."""
    faces = [tuple(int(x) for x in row) for row in np.asarray(faces)]
    where: dict[tuple[int, int], list[int]] = {}
    for f, (a, b, c) in enumerate(faces):
        if len({a, b, c}) < 3:
            continue
        for k, (s, d) in enumerate(((a, b), (b, c), (c, a))):
            where.setdefault((s, d), []).append(3 * f + k)
    twin = np.full(3 * len(faces), -1, np.int64)
    for (s, d), hs in where.items():
        back = where.get((d, s), [])
        if len(hs) == 1 and len(back) == 1:
            twin[hs[0]] = back[0]
    return twin


class _Node:
    __slots__ = ("vert", "next", "prev", "edge", "opp")

    def __init__(self, vert, edge, opp):
        self.vert = vert
        self.edge = edge  # half-edge (encoder) / True (decoder) of self -> next; None: dead
        self.opp = opp
        self.next = self.prev = None


def _link(a: _Node, b: _Node) -> None:
    a.next = b
    b.prev = a


def _kill(u: _Node):
    """Dead edge u -> u.next: drop occurrences between two dead edges; next live gate."""
    u.edge = None
    v = u.next
    if v is not u and v.edge is None:
        _link(u, v.next)
    start = u
    if u.prev is not u and u.prev.edge is None:
        start = u.prev
        _link(start, u.next)
    x = start.next
    while x.edge is None and x is not start:
        x = x.next
    return x if x.edge is not None else None


def _find(n: _Node, p: _Node, c):
    """Nearest node holding ``c`` strictly between n and p: (node, signed offset code)."""
    if n.next is p:
        return None, 0
    xf, xb = n.next, p.prev
    for i in range(MAX_WALK):
        if xf.vert == c:
            return xf, 2 * i
        if xb is xf:
            break
        if xb.vert == c:
            return xb, 2 * i + 1
        if xf.next is xb:
            break
        xf, xb = xf.next, xb.prev
    return None, 0


def _zig(r: int) -> int:
    return 2 * r if r >= 0 else -2 * r - 1


def _unzig(z: int) -> int:
    return z >> 1 if z % 2 == 0 else -(z >> 1) - 1


def _wrap(r: int, bits: int) -> int:
    half = 1 << (bits - 1)
    return ((r + half) & ((1 << bits) - 1)) - half


def encode_traverse_ref(q, faces, twin, bits: int, alpha8: int = 8, select: bool = False):
    """The traversal of :func:`twin.mesh._codec_kernels.encode_traverse`."""
    q = [tuple(int(x) for x in row) for row in np.asarray(q)]
    faces = [tuple(int(x) for x in row) for row in np.asarray(faces)]
    twin = [int(t) for t in twin]
    syms: list[tuple[int, int]] = []
    raws: list[tuple[int, int]] = []

    def put(ctx, z):
        t, nb, rv = token_ref(z)
        syms.append((ctx, t))
        if nb:
            raws.append((rv, nb))

    visited = [False] * len(faces)
    newid: dict[int, int] = {}
    order: list[int] = []
    out_faces = []
    quads = []
    prev_sel = 0
    stack: list[_Node] = []
    gate = None
    prev_op = OP_START
    last = None
    todo = iter(range(len(faces)))

    def new_vertex(x, base):
        newid[x] = len(order)
        order.append(x)
        return base

    while len(out_faces) < len(faces):
        if gate is None:
            if stack:
                gate = stack.pop()
                continue
            f = next(g for g in todo if not visited[g])
            visited[f] = True
            tri = faces[f]
            for x in tri:
                if x not in newid:
                    syms.append((CTX_SFLAG, 0))
                    base = q[last] if last is not None else (1 << (bits - 1),) * 3
                    new_vertex(x, base)
                    for a in range(3):
                        put(CTX_DELTA + a, _zig(_wrap(q[x][a] - base[a], bits)))
                    last = x
                else:
                    syms.append((CTX_SFLAG, 1))
                    put(CTX_REF, len(order) - 1 - newid[x])
            out_faces.append([newid[x] for x in tri])
            prev_op = OP_START
            a0, b0, c0 = tri
            if len(set(tri)) == 3:
                n0 = _Node(a0, 3 * f, c0)
                n1 = _Node(b0, 3 * f + 1, a0)
                n2 = _Node(c0, 3 * f + 2, b0)
                _link(n0, n1)
                _link(n1, n2)
                _link(n2, n0)
                gate = n0
            continue
        u = gate
        v = u.next
        t = twin[u.edge] if u.edge is not None else -1
        if t < 0 or visited[t // 3]:
            syms.append((CTX_OP + prev_op, OP_B))
            prev_op = OP_B
            gate = _kill(u)
            continue
        f, k = divmod(t, 3)
        visited[f] = True
        c = faces[f][(k + 2) % 3]
        h_uc, h_cv = 3 * f + (k + 1) % 3, 3 * f + (k + 2) % 3
        p, n = u.prev, v.next
        found = None
        if c not in newid:
            op = OP_C
        elif p is n and p.vert == c:
            op = OP_E
        elif n.vert == c:
            op = OP_R
        elif p.vert == c:
            op = OP_L
        else:
            found, off = _find(n, p, c)
            op = OP_S if found is not None else OP_X
        syms.append((CTX_OP + prev_op, op))
        prev_op = op
        if op in (OP_C, OP_X):
            if op == OP_C:
                new_vertex(c, None)
                w = u.opp
                qa, qb, qw, qc = q[u.vert], q[v.vert], q[w], q[c]
                quads.append((u.vert, v.vert, w, c))
                sel = 0
                if select:
                    scores = [
                        sum(
                            _zig(
                                _wrap(qc[a] - predict_ref(qa[a], qb[a], qw[a], alpha8, k), bits)
                            ).bit_length()
                            for a in range(3)
                        )
                        for k in range(3)
                    ]
                    sel = scores.index(min(scores))
                    syms.append((CTX_SEL + prev_sel, sel))
                    prev_sel = sel
                for a in range(3):
                    r = _wrap(qc[a] - predict_ref(qa[a], qb[a], qw[a], alpha8, sel), bits)
                    if sel == 0:
                        ctx = (
                            CTX_RES
                            + a * N_CLASS
                            + residual_class_ref(abs(qa[a] - qw[a]), abs(qb[a] - qw[a]))
                        )
                    else:
                        ctx = CTX_COPY + a
                    put(ctx, _zig(r))
                last = c
            else:
                put(CTX_REF, len(order) - 1 - newid[c])
            node = _Node(c, h_cv, u.vert)
            _link(node, v)
            _link(u, node)
            u.edge, u.opp = h_uc, v.vert
            gate = node
        elif op == OP_R:
            _link(u, n)
            u.edge, u.opp = h_uc, v.vert
        elif op == OP_L:
            _link(p, v)
            p.edge, p.opp = h_cv, u.vert
            gate = p
        elif op == OP_E:
            gate = None
        else:
            put(CTX_SOFF, off)
            c2 = _Node(c, found.edge, found.opp)
            _link(c2, found.next)
            _link(u, c2)
            u.edge, u.opp = h_uc, v.vert
            _link(found, v)
            found.edge, found.opp = h_cv, u.vert
            stack.append(u)
            gate = found
        out_faces.append([newid[v.vert], newid[u.vert], newid[c]])
    for x in range(len(q)):
        if x in newid:
            continue
        base = q[last] if last is not None else (1 << (bits - 1),) * 3
        new_vertex(x, base)
        for a in range(3):
            put(CTX_DELTA + a, _zig(_wrap(q[x][a] - base[a], bits)))
        last = x
    ctx = np.array([s[0] for s in syms], np.int32)
    sym = np.array([s[1] for s in syms], np.int32)
    rval = np.array([r[0] for r in raws], np.int64)
    rlen = np.array([r[1] for r in raws], np.int32)
    return (
        ctx,
        sym,
        rval,
        rlen,
        np.array(order, np.int64),
        np.array(out_faces, np.int64),
        np.array(quads, np.int64).reshape(-1, 4),
    )


def normalize_counts_ref(counts) -> list[int]:
    """Frequencies summing to PROB_SCALE, every used symbol at least 1."""
    counts = [int(c) for c in counts]
    total = sum(counts)
    if total == 0:
        return [0] * len(counts)
    freq = [max(1, c * PROB_SCALE // total) if c else 0 for c in counts]
    diff = PROB_SCALE - sum(freq)
    if diff > 0:
        freq[counts.index(max(counts))] += diff
    while diff < 0:
        i = freq.index(max(freq))
        take = min(-diff, freq[i] - 1)
        freq[i] -= take
        diff += take
    return freq


def rans_encode_ref(ctx, sym, freq) -> bytes:
    """Two interleaved rANS states, symbol ``i`` on state ``i % 2``."""
    cum = [[sum(row[:s]) for s in range(len(row))] for row in freq]
    out = bytearray()
    xs = [RANS_L, RANS_L]
    for i in range(len(sym) - 1, -1, -1):
        c, s = int(ctx[i]), int(sym[i])
        f = int(freq[c][s])
        x = xs[i % 2]
        while x >= ((RANS_L >> PROB_BITS) << 8) * f:
            out.append(x & 255)
            x >>= 8
        xs[i % 2] = (x // f) * PROB_SCALE + x % f + cum[c][s]
    for x in (xs[1], xs[0]):
        out += bytes((x >> (8 * k)) & 255 for k in (3, 2, 1, 0))
    return bytes(reversed(out))


def pack_bits_ref(rval, rlen) -> bytes:
    acc = 0
    n = 0
    for v, nb in zip(rval, rlen, strict=True):
        acc |= int(v) << n
        n += int(nb)
    return acc.to_bytes((n + 7) // 8, "little") if n else b""


class _Reader:
    def __init__(self, stream: bytes, raw: bytes, freq):
        self.s = stream
        self.raw = int.from_bytes(raw, "little")
        self.rawlen = 8 * len(raw)
        self.rpos = 0
        self.x = [int.from_bytes(stream[0:4], "little"), int.from_bytes(stream[4:8], "little")]
        self.p = 8
        self.i = 0
        self.freq = freq
        self.cum = [[sum(row[:s]) for s in range(len(row))] for row in freq]

    def sym(self, ctx: int) -> int:
        x = self.x[self.i % 2]
        slot = x & (PROB_SCALE - 1)
        row, cum = self.freq[ctx], self.cum[ctx]
        s = next((s for s in range(NSYM) if row[s] and cum[s] <= slot < cum[s] + row[s]), None)
        if s is None:
            raise ValueError("symbol from an empty model")
        x = row[s] * (x >> PROB_BITS) + slot - cum[s]
        while x < RANS_L:
            if self.p >= len(self.s):
                raise ValueError("symbol stream truncated")
            x = (x << 8) | self.s[self.p]
            self.p += 1
        self.x[self.i % 2] = x
        self.i += 1
        return s

    def bits(self, nb: int) -> int:
        if self.rpos + nb > self.rawlen:
            raise ValueError("raw bit stream truncated")
        v = (self.raw >> self.rpos) & ((1 << nb) - 1)
        self.rpos += nb
        return v

    def int(self, ctx: int) -> int:
        return untoken_ref(self.sym(ctx), self.bits)


def decode_ref(
    stream: bytes, raw: bytes, freq, nv: int, nf: int, bits: int, alpha8=8, select=False
):
    """Decode to ``(q (nv, 3) int64, faces (nf, 3) int64)``; ValueError if corrupt."""
    rd = _Reader(bytes(stream), bytes(raw), [[int(f) for f in row] for row in freq])
    mask = (1 << bits) - 1
    q: list[list[int]] = []
    faces: list[list[int]] = []
    stack: list[_Node] = []
    gate = None
    prev_op = OP_START
    prev_sel = 0
    while len(faces) < nf:
        if gate is None:
            if stack:
                gate = stack.pop()
                continue
            tri = []
            for _ in range(3):
                flag = rd.sym(CTX_SFLAG)
                if flag == 0:
                    base = q[-1] if q else [1 << (bits - 1)] * 3
                    q.append([(base[a] + _unzig(rd.int(CTX_DELTA + a))) & mask for a in range(3)])
                    tri.append(len(q) - 1)
                elif flag == 1:
                    idx = len(q) - 1 - rd.int(CTX_REF)
                    if idx < 0:
                        raise ValueError("reference to a vertex not decoded yet")
                    tri.append(idx)
                else:
                    raise ValueError("bad start flag")
            faces.append(tri)
            prev_op = OP_START
            if len(set(tri)) == 3:
                a0, b0, c0 = tri
                n0, n1, n2 = _Node(a0, True, c0), _Node(b0, True, a0), _Node(c0, True, b0)
                _link(n0, n1)
                _link(n1, n2)
                _link(n2, n0)
                gate = n0
            continue
        u = gate
        v = u.next
        op = rd.sym(CTX_OP + prev_op)
        prev_op = op
        if op == OP_B:
            gate = _kill(u)
            continue
        p, n = u.prev, v.next
        if op in (OP_C, OP_X):
            if op == OP_C:
                w = u.opp
                qa, qb, qw = q[u.vert], q[v.vert], q[w]
                sel = 0
                if select:
                    sel = rd.sym(CTX_SEL + prev_sel)
                    if sel > 2:
                        raise ValueError("bad predictor choice")
                    prev_sel = sel
                pos = []
                for a in range(3):
                    if sel == 0:
                        cls = residual_class_ref(abs(qa[a] - qw[a]), abs(qb[a] - qw[a]))
                        ctx = CTX_RES + a * N_CLASS + cls
                    else:
                        ctx = CTX_COPY + a
                    r = _unzig(rd.int(ctx))
                    pos.append((predict_ref(qa[a], qb[a], qw[a], alpha8, sel) + r) & mask)
                q.append(pos)
                c = len(q) - 1
            else:
                c = len(q) - 1 - rd.int(CTX_REF)
                if c < 0:
                    raise ValueError("reference to a vertex not decoded yet")
            node = _Node(c, True, u.vert)
            _link(node, v)
            _link(u, node)
            u.edge, u.opp = True, v.vert
            gate = node
        elif op == OP_R:
            c = n.vert
            _link(u, n)
            u.edge, u.opp = True, v.vert
        elif op == OP_L:
            c = p.vert
            _link(p, v)
            p.edge, p.opp = True, u.vert
            gate = p
        elif op == OP_E:
            c = p.vert
            gate = None
        elif op == OP_S:
            off = rd.int(CTX_SOFF)
            x = p.prev if off % 2 else n.next
            for _ in range(off >> 1):
                x = x.prev if off % 2 else x.next
            c = x.vert
            c2 = _Node(c, x.edge, x.opp)
            _link(c2, x.next)
            _link(u, c2)
            u.edge, u.opp = True, v.vert
            _link(x, v)
            x.edge, x.opp = True, u.vert
            stack.append(u)
            gate = x
        else:
            raise ValueError(f"bad op {op}")
        faces.append([v.vert, u.vert, c])
    while len(q) < nv:
        base = q[-1] if q else [1 << (bits - 1)] * 3
        q.append([(base[a] + _unzig(rd.int(CTX_DELTA + a))) & mask for a in range(3)])
    if len(q) != nv:
        raise ValueError("more vertices than the header says")
    if rd.x != [RANS_L, RANS_L] or rd.p != len(rd.s):
        raise ValueError("symbol stream inconsistent")
    return np.array(q, np.int64).reshape(-1, 3), np.array(faces, np.int64).reshape(-1, 3)


def symbol_counts_ref(ctx, sym, n_ctx: int) -> list[list[int]]:
    c = Counter(zip((int(x) for x in ctx), (int(s) for s in sym), strict=True))
    return [[c.get((k, s), 0) for s in range(NSYM)] for k in range(n_ctx)]


def _entropy_ref(counts) -> float:
    total = sum(counts)
    return -sum(c * math.log2(c / total) for c in counts if c)


def predictor_costs_ref(q, quads, bits: int, alphas) -> np.ndarray:
    """Estimated residual bits per alpha, without / with the coded copy choice."""
    q = [tuple(int(x) for x in row) for row in np.asarray(q)]
    out = np.zeros((len(alphas), 2))
    for ia, a8 in enumerate(int(a) for a in alphas):
        h0: Counter = Counter()
        h1: Counter = Counter()
        hc: Counter = Counter()
        raw0 = raw1 = 0
        for u, v, w, c in (tuple(int(x) for x in row) for row in np.asarray(quads)):
            zs = [
                [_zig(_wrap(q[c][a] - predict_ref(q[u][a], q[v][a], q[w][a], a8, k), bits))
                 for a in range(3)]
                for k in range(3)
            ]  # fmt: skip
            for z in zs[0]:
                t, nb, _ = token_ref(z)
                h0[t] += 1
                raw0 += nb
            scores = [sum(z.bit_length() for z in row) for row in zs]
            sel = scores.index(min(scores))
            hc[sel] += 1
            for z in zs[sel]:
                t, nb, _ = token_ref(z)
                h1[t] += 1
                raw1 += nb
        out[ia, 0] = _entropy_ref(h0.values()) + raw0
        out[ia, 1] = _entropy_ref(h1.values()) + raw1 + _entropy_ref(hc.values())
    return out
