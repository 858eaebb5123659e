"""Plain Python references for the EXT_meshopt_compression kernels (slow; tests only).

Each function has the same inputs and outputs as its kernel in
:mod:`twin.mesh._meshopt_kernels`, written straight from the bitstream description
in the glTF ``EXT_meshopt_compression`` specification (Appendix A) with Python lists
and ``bytearray``; tests compare the kernels against these byte for byte. Errors are
raised as ``ValueError`` with a reason; the public wrappers in
:mod:`twin.mesh.meshopt_codec` turn them into :class:`~twin.errors.InputError`.
"""

from __future__ import annotations

import numpy as np

VERTEX_HEADER = 0xA0
INDEX_HEADER = 0xE1
TAIL_MIN = 32


def max_block_elements(stride: int) -> int:
    """Vertices per attribute block: ``min((8192 // stride) & ~15, 256)``."""
    return min((8192 // stride) & ~15, 256)


def _zigzag8(d: int) -> int:
    d &= 0xFF
    return (~(d << 1) if d & 0x80 else (d << 1)) & 0xFF


def _unzigzag8(z: int) -> int:
    return (~(z >> 1) if z & 1 else (z >> 1)) & 0xFF


def _encode_group(z: list[int]) -> tuple[int, bytes]:
    """Best (mode, bytes) for 16 zigzag byte deltas: mode 0/1/2/3 = 0/2/4/8 bits."""
    if not any(z):
        return 0, b""
    s2 = 4 + sum(1 for v in z if v >= 3)
    s4 = 8 + sum(1 for v in z if v >= 15)
    if s2 <= s4 and s2 <= 16:
        bits, sentinel, mode = 2, 3, 1
    elif s4 <= 16:
        bits, sentinel, mode = 4, 15, 2
    else:
        return 3, bytes(z)
    per = 8 // bits
    packed = bytearray(16 // per)
    extra = bytearray()
    for i, v in enumerate(z):
        code = min(v, sentinel)
        packed[i // per] |= code << (8 - bits - bits * (i % per))
        if v >= sentinel:
            extra.append(v)
    return mode, bytes(packed + extra)


def encode_vertex_ref(data: np.ndarray) -> bytes:
    """Mode 0 (attributes), version 0: ``data`` (N, stride) uint8 -> bytes."""
    n, stride = data.shape
    rows = data.tolist()
    out = bytearray([VERTEX_HEADER])
    block = max_block_elements(stride)
    last = list(rows[0]) if n else [0] * stride
    first = list(last)
    for start in range(0, n, block):
        cnt = min(n - start, block)
        groups = (cnt + 15) // 16
        for k in range(stride):
            z = [0] * (groups * 16)
            prev = last[k]
            for i in range(cnt):
                v = rows[start + i][k]
                z[i] = _zigzag8(v - prev)
                prev = v
            header = bytearray((groups + 3) // 4)
            body = bytearray()
            for g in range(groups):
                mode, enc = _encode_group(z[16 * g : 16 * g + 16])
                header[g >> 2] |= mode << (2 * (g & 3))
                body += enc
            out += header + body
        last = list(rows[start + cnt - 1])
    out += bytes(max(TAIL_MIN, stride) - stride) + bytes(first)
    return bytes(out)


def decode_vertex_ref(buf: bytes, count: int, stride: int) -> np.ndarray:
    """Inverse of :func:`encode_vertex_ref`: bytes -> (count, stride) uint8."""
    tail = max(TAIL_MIN, stride)
    if len(buf) < 1 + tail:
        raise ValueError(f"vertex stream of {len(buf)} bytes is shorter than its tail")
    if buf[0] != VERTEX_HEADER:
        raise ValueError(f"vertex stream header 0x{buf[0]:02x} is not 0xa0 (version 0)")
    end = len(buf) - tail
    last = list(buf[len(buf) - stride :])
    out = np.zeros((count, stride), np.uint8)
    p = 1
    block = max_block_elements(stride)
    for start in range(0, count, block):
        cnt = min(count - start, block)
        groups = (cnt + 15) // 16
        for k in range(stride):
            hsize = (groups + 3) // 4
            if p + hsize > end:
                raise ValueError("vertex stream is truncated")
            header = buf[p : p + hsize]
            p += hsize
            prev = last[k]
            for g in range(groups):
                mode = (header[g >> 2] >> (2 * (g & 3))) & 3
                if mode == 0:
                    z = [0] * 16
                elif mode == 3:
                    if p + 16 > end:
                        raise ValueError("vertex stream is truncated")
                    z = list(buf[p : p + 16])
                    p += 16
                else:
                    bits = 2 if mode == 1 else 4
                    per = 8 // bits
                    sentinel = (1 << bits) - 1
                    nb = 16 // per
                    if p + nb > end:
                        raise ValueError("vertex stream is truncated")
                    packed = buf[p : p + nb]
                    p += nb
                    z = []
                    for i in range(16):
                        v = (packed[i // per] >> (8 - bits - bits * (i % per))) & sentinel
                        if v == sentinel:
                            if p >= end:
                                raise ValueError("vertex stream is truncated")
                            v = buf[p]
                            p += 1
                        z.append(v)
                for i in range(16):
                    e = 16 * g + i
                    if e >= cnt:
                        break
                    prev = (prev + _unzigzag8(z[i])) & 0xFF
                    out[start + e, k] = prev
        last = out[start + cnt - 1].tolist()
    if p != end:
        raise ValueError(f"vertex stream has {end - p} unexpected bytes before its tail")
    return out


# ---------------------------------------------------------------- triangles (mode 1)


def _varint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _zz32(c: int, last: int) -> int:
    d = ((c - last + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
    return ((d << 1) ^ (d >> 31)) & 0xFFFFFFFF


class _State:
    def __init__(self) -> None:
        self.edges: list[tuple[int, int]] = []  # most recent first
        self.verts: list[int] = []  # most recent first
        self.next = 0
        self.last = 0

    def push_edge(self, a: int, b: int) -> None:
        self.edges.insert(0, (a, b))
        del self.edges[16:]

    def push_vert(self, v: int) -> None:
        self.verts.insert(0, v)
        del self.verts[16:]

    def vert_index(self, v: int, lo: int, hi: int) -> int:
        for i in range(lo, min(hi, len(self.verts))):
            if self.verts[i] == v:
                return i
        return -1


def _new_triangle_plan(st: _State, a: int, b: int, c: int):
    """(explicit a?, Z, W, cost) for the 0xfY/0xfe/0xff codes of rotation (a, b, c)."""
    fe = a == st.next
    nxt = st.next + 1 if fe else st.next
    last = st.last if fe else a
    cost = 1 if fe else 2 + len(_varint(_zz32(a, st.last)))
    nib = []
    for v in (b, c):
        if v == nxt:
            nib.append(0)
            nxt += 1
        else:
            k = st.vert_index(v, 0, 14)
            if k >= 0:
                nib.append(k + 1)
            else:
                nib.append(15)
                cost += len(_varint(_zz32(v, last)))
                last = v
    if not fe and nib == [0, 0]:
        return None  # an 0xff code with byte 0x00 would reset `next`
    if fe and 15 in nib:
        cost += 1
    return (not fe, nib[0], nib[1], cost)


def _plan(st: _State, tri: tuple[int, int, int]):
    """Decide the code for one triangle: ('edge', rot, X, kind, val) or ('new', ...)."""
    best = None
    for r in range(3):
        a, b, c = tri[r], tri[(r + 1) % 3], tri[(r + 2) % 3]
        x = -1
        for i in range(min(15, len(st.edges))):
            if st.edges[i] == (a, b):
                x = i
                break
        if x < 0:
            continue
        y = st.vert_index(c, 1, 13)
        if c == st.next:
            opt = (1, "next", 0)
        elif y >= 0:
            opt = (1, "fifo", y)
        elif c == (st.last - 1) & 0xFFFFFFFF:
            opt = (1, "dec", 0)
        elif c == (st.last + 1) & 0xFFFFFFFF:
            opt = (1, "inc", 0)
        else:
            opt = (1 + len(_varint(_zz32(c, st.last))), "explicit", 0)
        if best is None or opt[0] < best[0]:
            best = (opt[0], ("edge", (a, b, c), x, opt[1], opt[2]))
    if best is not None:
        return best[1]
    for r in range(3):
        a, b, c = tri[r], tri[(r + 1) % 3], tri[(r + 2) % 3]
        p = _new_triangle_plan(st, a, b, c)
        if p is None:
            continue
        if best is None or p[3] < best[0]:
            best = (p[3], ("new", (a, b, c), p))
    # Some rotation always works: a rotation is refused only when b == next, and then
    # the rotation starting at b is an 0xfe code.
    assert best is not None
    return best[1]


def _apply(st: _State, plan, codeaux: list[int] | None, code: bytearray, data: bytearray):
    """Emit the bytes for ``plan`` (when ``codeaux`` is given) and update the state."""
    if plan[0] == "edge":
        _, (a, b, c), x, kind, y = plan
        if kind == "next":
            low = 0
            st.next += 1
            st.push_vert(c)
        elif kind == "fifo":
            low = y
        elif kind in ("dec", "inc"):
            low = 0xD if kind == "dec" else 0xE
            st.last = c
            st.push_vert(c)
        else:
            low = 0xF
            data += _varint(_zz32(c, st.last))
            st.last = c
            st.push_vert(c)
        code.append((x << 4) | low)
        st.push_edge(c, b)
        st.push_edge(a, c)
        return
    _, (a, b, c), p = plan
    extra = bytearray()
    fe = not p[0]
    zw = (p[1] << 4) | p[2]
    last = st.last
    if not fe:
        extra += _varint(_zz32(a, last))
        last = a
    for v, z in ((b, p[1]), (c, p[2])):
        if z == 15:
            extra += _varint(_zz32(v, last))
            last = v
    y = codeaux.index(zw) if (fe and codeaux is not None and zw in codeaux[:14]) else -1
    if y >= 0:
        code.append(0xF0 | y)
    else:
        code.append(0xFE if fe else 0xFF)
        data.append(zw)
    data += extra
    # state update, mirroring the decoder
    z, w = zw >> 4, zw & 15
    if fe:
        st.next += 1
    else:
        st.last = a
    for v, nb in ((b, z), (c, w)):
        if nb == 0:
            st.next += 1
        elif nb == 15:
            st.last = v
    st.push_edge(b, a)
    st.push_edge(c, b)
    st.push_edge(a, c)
    st.push_vert(a)
    if z in (0, 15):
        st.push_vert(b)
    if w in (0, 15):
        st.push_vert(c)


def choose_codeaux(counts: np.ndarray) -> list[int]:
    """The 16-byte ``codeaux`` table from ZW counts (256,): 0x00 first, then the 13
    most frequent ZW bytes without a 0xf nibble (ties: smaller value), 0-padded."""
    order = sorted(
        (zw for zw in range(1, 256) if counts[zw] > 0 and (zw >> 4) != 15 and (zw & 15) != 15),
        key=lambda zw: (-int(counts[zw]), zw),
    )
    table = [0] + order[:13]
    return table + [0] * (16 - len(table))


def encode_index_ref(faces: np.ndarray) -> bytes:
    """Mode 1 (triangles), header 0xe1: ``faces`` (M, 3) -> bytes."""
    tris = [tuple(t) for t in np.asarray(faces, np.int64).tolist()]
    st = _State()
    counts = np.zeros(256, np.int64)
    for t in tris:  # pass 1: which ZW bytes the 0xfe codes would need
        plan = _plan(st, t)
        if plan[0] == "new" and plan[2] is not None and not plan[2][0]:
            counts[(plan[2][1] << 4) | plan[2][2]] += 1
        _apply(st, plan, None, bytearray(), bytearray())
    table = choose_codeaux(counts)
    st = _State()
    code, data = bytearray(), bytearray()
    for t in tris:
        _apply(st, _plan(st, t), table, code, data)
    return bytes([INDEX_HEADER]) + bytes(code) + bytes(data) + bytes(table)


def decode_index_ref(buf: bytes, index_count: int) -> np.ndarray:
    """Inverse of :func:`encode_index_ref`: bytes -> (index_count // 3, 3) uint32."""
    m = index_count // 3
    if len(buf) < 1 + m + 16:
        raise ValueError(f"index stream of {len(buf)} bytes is too short for {m} triangles")
    if buf[0] not in (INDEX_HEADER, 0xE0):
        raise ValueError(f"index stream header 0x{buf[0]:02x} is not 0xe1 (or 0xe0)")
    fifo_max = 0xD if buf[0] == INDEX_HEADER else 0xF  # version 0: no last +- 1 codes
    table = buf[len(buf) - 16 :]
    end = len(buf) - 16
    d = 1 + m
    edges: list[tuple[int, int]] = [(0, 0)] * 16
    verts: list[int] = [0] * 16
    nxt = 0
    last = 0
    out = np.zeros((m, 3), np.uint32)

    def read_byte() -> int:
        nonlocal d
        if d >= end:
            raise ValueError("index stream is truncated")
        d += 1
        return buf[d - 1]

    def read_index() -> int:
        nonlocal last
        v = 0
        for shift in range(0, 35, 7):
            byte = read_byte()
            v |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
        else:
            raise ValueError("index stream has an over-long varint")
        v &= 0xFFFFFFFF
        delta = (~(v >> 1)) if v & 1 else (v >> 1)
        last = (last + delta) & 0xFFFFFFFF
        return last

    def pe(a, b):
        edges.insert(0, (a, b))
        del edges[16:]

    def pv(v):
        verts.insert(0, v)
        del verts[16:]

    for t in range(m):
        cb = buf[1 + t]
        hi, lo = cb >> 4, cb & 15
        if hi < 15:
            a, b = edges[hi]
            if lo == 0:
                c = nxt
                nxt += 1
                pv(c)
            elif lo < fifo_max:
                c = verts[lo]
            elif lo < 0xF:
                c = (last - 1 if lo == 0xD else last + 1) & 0xFFFFFFFF
                last = c
                pv(c)
            else:
                c = read_index()
                pv(c)
            pe(c, b)
            pe(a, c)
        else:
            if lo < 0xE:
                zw = table[lo]
                explicit_ok = False
                a = nxt
                nxt += 1
            else:
                zw = read_byte()
                explicit_ok = True
                if zw == 0:
                    nxt = 0
                if lo == 0xE:
                    a = nxt
                    nxt += 1
                else:
                    a = read_index()
            z, w = zw >> 4, zw & 15
            vals = []
            for nb in (z, w):
                if nb == 0:
                    vals.append(nxt)
                    nxt += 1
                elif nb < 15:
                    vals.append(verts[nb - 1])
                elif not explicit_ok:
                    raise ValueError("index stream codeaux table has a 0xf nibble")
                else:
                    vals.append(read_index())
            b, c = vals
            pe(b, a)
            pe(c, b)
            pe(a, c)
            pv(a)
            if z == 0 or z == 15:
                pv(b)
            if w == 0 or w == 15:
                pv(c)
        out[t] = (a, b, c)
    if d != end:
        raise ValueError(f"index stream has {end - d} unexpected bytes before its table")
    return out


# ---------------------------------------------------------------- indices (mode 2)

SEQUENCE_HEADER = 0xD1


def _zz_seq(idx: int, base: int) -> int:
    """Zigzag of the 32-bit wrapped delta ``idx - base``; -1 if outside [-2^30, 2^30)."""
    d = ((idx - base + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
    if not -(1 << 30) <= d < (1 << 30):
        return -1
    return (d << 1) ^ (d >> 31) if d < 0 else d << 1


def encode_sequence_ref(indices: np.ndarray) -> bytes:
    """Mode 2 (indices), header 0xd1: each index a varint of ``zigzag(delta) << 1 |
    baseline``, against whichever of the two baselines gives the smaller code."""
    last = [0, 0]
    out = bytearray([SEQUENCE_HEADER])
    for idx in np.asarray(indices, np.int64).tolist():
        z0, z1 = _zz_seq(idx, last[0]), _zz_seq(idx, last[1])
        if z0 < 0 and z1 < 0:
            raise ValueError(f"index {idx} is too far from both baselines")
        b = 1 if z1 >= 0 and (z0 < 0 or z1 < z0) else 0
        out += _varint(((z1 if b else z0) << 1) | b)
        last[b] = idx
    return bytes(out + bytes(4))


def decode_sequence_ref(buf: bytes, count: int) -> np.ndarray:
    """Inverse of :func:`encode_sequence_ref`: bytes -> (count,) uint32."""
    if len(buf) < 1 + count + 4:
        raise ValueError("index sequence is truncated")
    if buf[0] not in (SEQUENCE_HEADER, 0xD0):
        raise ValueError(f"index sequence header 0x{buf[0]:02x} is not 0xd1 (or 0xd0)")
    end = len(buf) - 4
    p = 1
    last = [0, 0]
    out = np.zeros(count, np.uint32)
    for i in range(count):
        v = 0
        for shift in range(0, 35, 7):
            if p >= end:
                raise ValueError("index sequence is truncated")
            byte = buf[p]
            p += 1
            v |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
        else:
            raise ValueError("index sequence has an over-long varint")
        v &= 0xFFFFFFFF
        b = v & 1
        z = v >> 1
        d = ~(z >> 1) if z & 1 else z >> 1
        last[b] = (last[b] + d) & 0xFFFFFFFF
        out[i] = last[b]
    if p != end:
        raise ValueError("index sequence has unexpected bytes before its tail")
    return out
