"""Numba kernels for the EXT_meshopt_compression bitstream (glTF spec, Appendix A).

Mode 0 (attributes, version 0, header ``0xa0``), mode 1 (triangles, header
``0xe1``; the decoder also reads version 0, ``0xe0``, as meshoptimizer's does) and
mode 2 (indices, header ``0xd1``; ``0xd0`` read too). Each kernel matches its
plain-Python reference in :mod:`twin.mesh._meshopt_reference` byte for byte (the
tests check this). Kernels report bad streams with a negative status instead of
raising; the wrappers in :mod:`twin.mesh.meshopt_codec` turn that into
:class:`~twin.errors.InputError`.

Status codes: 0 ok, -1 truncated, -2 unexpected bytes before the tail, -3 codeaux
table holds a 0xf nibble, -4 over-long varint, -5 wrong header byte, -6 (encoder)
an index more than 2**30 from both mode-2 baselines.
"""

from __future__ import annotations

import numpy as np
from numba import njit

VERTEX_HEADER = 0xA0
INDEX_HEADER = 0xE1
#: Version 0 of the triangle codec (meshoptimizer writes it on request); read only.
INDEX_HEADER_V0 = 0xE0
TAIL_MIN = 32


@njit(cache=True)
def _max_block(stride):
    b = (8192 // stride) & ~15
    return b if b < 256 else 256


@njit(cache=True)
def vertex_bound(n, stride):
    """Largest possible mode-0 stream for ``n`` elements of ``stride`` bytes."""
    block = _max_block(stride)
    total = 1
    start = 0
    while start < n:
        cnt = min(n - start, block)
        groups = (cnt + 15) // 16
        total += stride * ((groups + 3) // 4 + 16 * groups)
        start += cnt
    return total + max(TAIL_MIN, stride)


@njit(cache=True)
def encode_vertex_kernel(data):
    """Mode 0 encode: ``data`` (N, stride) uint8 -> uint8 stream (a trimmed copy).

    Memory: the output bound (about ``N * stride * 1.02`` bytes) plus 16 bytes of
    scratch; time O(N * stride).
    """
    n, stride = data.shape
    out = np.empty(vertex_bound(n, stride), np.uint8)
    out[0] = VERTEX_HEADER
    p = 1
    block = _max_block(stride)
    z = np.zeros(16, np.int64)
    start = 0
    while start < n:
        cnt = min(n - start, block)
        groups = (cnt + 15) // 16
        hsize = (groups + 3) // 4
        for k in range(stride):
            prev = np.int64(data[start - 1, k]) if start > 0 else np.int64(data[0, k])
            hp = p
            for i in range(hsize):
                out[hp + i] = 0
            p += hsize
            for g in range(groups):
                nz = 0
                c2 = 0
                c4 = 0
                for i in range(16):
                    e = 16 * g + i
                    if e < cnt:
                        v = np.int64(data[start + e, k])
                        d = (v - prev) & 0xFF
                        prev = v
                        zz = (~(d << 1)) & 0xFF if d & 0x80 else (d << 1) & 0xFF
                    else:
                        zz = 0
                    z[i] = zz
                    if zz != 0:
                        nz += 1
                    if zz >= 3:
                        c2 += 1
                    if zz >= 15:
                        c4 += 1
                if nz == 0:
                    mode = 0
                else:
                    s2 = 4 + c2
                    s4 = 8 + c4
                    if s2 <= s4 and s2 <= 16:
                        mode = 1
                    elif s4 <= 16:
                        mode = 2
                    else:
                        mode = 3
                out[hp + (g >> 2)] |= mode << (2 * (g & 3))
                if mode == 3:
                    for i in range(16):
                        out[p + i] = z[i]
                    p += 16
                elif mode != 0:
                    bits = 2 if mode == 1 else 4
                    per = 8 // bits
                    sentinel = (1 << bits) - 1
                    nb = 16 // per
                    for i in range(nb):
                        out[p + i] = 0
                    q = p + nb
                    for i in range(16):
                        v = z[i]
                        code = v if v < sentinel else sentinel
                        out[p + i // per] |= code << (8 - bits - bits * (i % per))
                        if v >= sentinel:
                            out[q] = v
                            q += 1
                    p = q
        start += cnt
    pad = max(TAIL_MIN, stride) - stride
    for i in range(pad):
        out[p + i] = 0
    p += pad
    for k in range(stride):
        out[p + k] = data[0, k] if n > 0 else 0
    p += stride
    return out[:p].copy()


@njit(cache=True)
def decode_vertex_kernel(buf, count, stride):
    """Mode 0 decode: uint8 stream -> ``((count, stride) uint8, status)``.

    Memory: the output array plus 16 bytes; time O(count * stride).
    """
    out = np.zeros((count, stride), np.uint8)
    tail = max(TAIL_MIN, stride)
    size = buf.shape[0]
    if size < 1 + tail:
        return out, -1
    if buf[0] != VERTEX_HEADER:
        return out, -5
    end = size - tail
    last = buf[size - stride :].copy()
    z = np.zeros(16, np.int64)
    p = 1
    block = _max_block(stride)
    start = 0
    while start < count:
        cnt = min(count - start, block)
        groups = (cnt + 15) // 16
        hsize = (groups + 3) // 4
        for k in range(stride):
            if p + hsize > end:
                return out, -1
            hp = p
            p += hsize
            prev = np.int64(last[k])
            for g in range(groups):
                mode = (buf[hp + (g >> 2)] >> (2 * (g & 3))) & 3
                if mode == 0:
                    for i in range(16):
                        z[i] = 0
                elif mode == 3:
                    if p + 16 > end:
                        return out, -1
                    for i in range(16):
                        z[i] = buf[p + i]
                    p += 16
                else:
                    bits = 2 if mode == 1 else 4
                    per = 8 // bits
                    sentinel = (1 << bits) - 1
                    nb = 16 // per
                    if p + nb > end:
                        return out, -1
                    q = p + nb
                    for i in range(16):
                        v = (
                            np.int64(buf[p + i // per]) >> (8 - bits - bits * (i % per))
                        ) & sentinel
                        if v == sentinel:
                            if q >= end:
                                return out, -1
                            v = np.int64(buf[q])
                            q += 1
                        z[i] = v
                    p = q
                for i in range(16):
                    e = 16 * g + i
                    if e >= cnt:
                        break
                    v = z[i]
                    d = (~(v >> 1)) & 0xFF if v & 1 else v >> 1
                    prev = (prev + d) & 0xFF
                    out[start + e, k] = prev
        for k in range(stride):
            last[k] = out[start + cnt - 1, k]
        start += cnt
    if p != end:
        return out, -2
    return out, 0


# ---------------------------------------------------------------- triangles (mode 1)


@njit(cache=True)
def _varint_len(v):
    n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


@njit(cache=True)
def _put_varint(buf, p, v):
    while v >= 0x80:
        buf[p] = (v & 0x7F) | 0x80
        p += 1
        v >>= 7
    buf[p] = v
    return p + 1


@njit(cache=True)
def _zz32(c, last):
    d = ((c - last + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
    return ((d << 1) ^ (d >> 31)) & 0xFFFFFFFF


@njit(cache=True)
def _vert_index(vf, vo, v, lo, hi):
    for i in range(lo, hi):
        if vf[(vo - 1 - i) & 15] == v:
            return i
    return -1


@njit(cache=True)
def _new_plan(vf, vo, nxt, last, a, b, c):
    """(valid, fe, Z, W, cost) of the 0xfY/0xfe/0xff codes for rotation (a, b, c)."""
    fe = a == nxt
    if fe:
        nxt += 1
        cost = 1
    else:
        cost = 2 + _varint_len(_zz32(a, last))
        last = a
    z = 0
    if b == nxt:
        nxt += 1
    else:
        k = _vert_index(vf, vo, b, 0, 14)
        if k >= 0:
            z = k + 1
        else:
            z = 15
            cost += _varint_len(_zz32(b, last))
            last = b
    w = 0
    if c == nxt:
        nxt += 1
    else:
        k = _vert_index(vf, vo, c, 0, 14)
        if k >= 0:
            w = k + 1
        else:
            w = 15
            cost += _varint_len(_zz32(c, last))
            last = c
    if not fe and z == 0 and w == 0:
        return False, fe, z, w, cost
    if fe and (z == 15 or w == 15):
        cost += 1
    return True, fe, z, w, cost


@njit(cache=True)
def _index_pass(f, table, have_table, counts, code, data):
    """One pass of the mode-1 encoder; returns the number of ``data`` bytes written.

    Without a table it only counts the ZW bytes 0xfe codes need (into ``counts``).
    """
    m = f.shape[0]
    ea = np.full(16, -1, np.int64)
    eb = np.full(16, -1, np.int64)
    vf = np.full(16, -1, np.int64)
    eo = 0
    vo = 0
    nxt = np.int64(0)
    last = np.int64(0)
    dp = 0
    for t in range(m):
        best_cost = 1 << 30
        best_r = -1
        best_x = 0
        best_kind = 0
        best_y = 0
        for r in range(3):
            a = f[t, r]
            b = f[t, (r + 1) % 3]
            c = f[t, (r + 2) % 3]
            x = -1
            for i in range(15):
                j = (eo - 1 - i) & 15
                if ea[j] == a and eb[j] == b:
                    x = i
                    break
            if x < 0:
                continue
            y = _vert_index(vf, vo, c, 1, 13)
            cost = 1
            if c == nxt:
                kind = 0
            elif y >= 0:
                kind = 1
            elif c == ((last - 1) & 0xFFFFFFFF):
                kind = 2
            elif c == ((last + 1) & 0xFFFFFFFF):
                kind = 3
            else:
                kind = 4
                cost = 1 + _varint_len(_zz32(c, last))
            if cost < best_cost:
                best_cost = cost
                best_r = r
                best_x = x
                best_kind = kind
                best_y = y
        if best_r >= 0:
            a = f[t, best_r]
            b = f[t, (best_r + 1) % 3]
            c = f[t, (best_r + 2) % 3]
            if best_kind == 0:
                low = 0
                nxt += 1
                vf[vo & 15] = c
                vo += 1
            elif best_kind == 1:
                low = best_y
            elif best_kind == 2 or best_kind == 3:
                low = 0xD if best_kind == 2 else 0xE
                last = c
                vf[vo & 15] = c
                vo += 1
            else:
                low = 0xF
                dp = _put_varint(data, dp, _zz32(c, last))
                last = c
                vf[vo & 15] = c
                vo += 1
            code[t] = (best_x << 4) | low
            ea[eo & 15] = c
            eb[eo & 15] = b
            eo += 1
            ea[eo & 15] = a
            eb[eo & 15] = c
            eo += 1
            continue
        best_fe = False
        best_z = 0
        best_w = 0
        for r in range(3):
            ok, fe, z, w, cost = _new_plan(
                vf, vo, nxt, last, f[t, r], f[t, (r + 1) % 3], f[t, (r + 2) % 3]
            )
            if ok and cost < best_cost:
                best_cost = cost
                best_r = r
                best_fe = fe
                best_z = z
                best_w = w
        a = f[t, best_r]
        b = f[t, (best_r + 1) % 3]
        c = f[t, (best_r + 2) % 3]
        zw = (best_z << 4) | best_w
        y = -1
        if best_fe:
            if have_table:
                for i in range(14):
                    if table[i] == zw:
                        y = i
                        break
            else:
                counts[zw] += 1
        if y >= 0:
            code[t] = 0xF0 | y
        else:
            code[t] = 0xFE if best_fe else 0xFF
            data[dp] = zw
            dp += 1
        if best_fe:
            nxt += 1
        else:
            dp = _put_varint(data, dp, _zz32(a, last))
            last = a
        if best_z == 0:
            nxt += 1
        elif best_z == 15:
            dp = _put_varint(data, dp, _zz32(b, last))
            last = b
        if best_w == 0:
            nxt += 1
        elif best_w == 15:
            dp = _put_varint(data, dp, _zz32(c, last))
            last = c
        ea[eo & 15] = b
        eb[eo & 15] = a
        eo += 1
        ea[eo & 15] = c
        eb[eo & 15] = b
        eo += 1
        ea[eo & 15] = a
        eb[eo & 15] = c
        eo += 1
        vf[vo & 15] = a
        vo += 1
        if best_z == 0 or best_z == 15:
            vf[vo & 15] = b
            vo += 1
        if best_w == 0 or best_w == 15:
            vf[vo & 15] = c
            vo += 1
    return dp


@njit(cache=True)
def choose_codeaux_kernel(counts):
    """codeaux table: 0x00, then the 13 most used ZW bytes without a 0xf nibble
    (ties: smaller value), zero-padded to 16 bytes."""
    table = np.zeros(16, np.uint8)
    used = np.zeros(256, np.bool_)
    used[0] = True
    for slot in range(1, 14):
        best = -1
        for zw in range(1, 256):
            if used[zw] or counts[zw] == 0 or (zw >> 4) == 15 or (zw & 15) == 15:
                continue
            if best < 0 or counts[zw] > counts[best]:
                best = zw
        if best < 0:
            break
        used[best] = True
        table[slot] = best
    return table


@njit(cache=True)
def encode_index_kernel(f):
    """Mode 1 encode: ``f`` (M, 3) int64 -> uint8 stream (header, codes, data, table).

    Two passes over the triangles (ZW statistics for the codeaux table, then the
    bytes). Memory: 17 bytes per triangle (codes plus the worst-case data bound)
    before trimming; time O(M).
    """
    m = f.shape[0]
    code = np.empty(m, np.uint8)
    data = np.empty(16 * m + 1, np.uint8)
    counts = np.zeros(256, np.int64)
    table = np.zeros(16, np.uint8)
    _index_pass(f, table, False, counts, code, data)
    table = choose_codeaux_kernel(counts)
    dp = _index_pass(f, table, True, counts, code, data)
    out = np.empty(1 + m + dp + 16, np.uint8)
    out[0] = INDEX_HEADER
    out[1 : 1 + m] = code
    out[1 + m : 1 + m + dp] = data[:dp]
    out[1 + m + dp :] = table
    return out


@njit(cache=True)
def _read_index(buf, d, end, last):
    v = np.int64(0)
    shift = 0
    while True:
        if d >= end:
            return -1, d, last
        byte = np.int64(buf[d])
        d += 1
        v |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        if shift > 28:
            return -4, d, last
    v &= 0xFFFFFFFF
    delta = ~(v >> 1) if v & 1 else v >> 1
    last = (last + delta) & 0xFFFFFFFF
    return 0, d, last


@njit(cache=True)
def decode_index_kernel(buf, index_count):
    """Mode 1 decode: uint8 stream -> ``((index_count // 3, 3) uint32, status)``.

    Memory: the output plus the two 16-entry FIFOs; time O(M).
    """
    m = index_count // 3
    out = np.zeros((m, 3), np.uint32)
    size = buf.shape[0]
    if size < 1 + m + 16:
        return out, -1
    if buf[0] != INDEX_HEADER and buf[0] != INDEX_HEADER_V0:
        return out, -5
    # version 0 has no "last +- 1" codes: 0xXd and 0xXe read the vertex FIFO
    fifo_max = 0xD if buf[0] == INDEX_HEADER else 0xF
    end = size - 16
    d = 1 + m
    ea = np.zeros(16, np.int64)
    eb = np.zeros(16, np.int64)
    vf = np.zeros(16, np.int64)
    eo = 0
    vo = 0
    nxt = np.int64(0)
    last = np.int64(0)
    for t in range(m):
        cb = np.int64(buf[1 + t])
        hi = cb >> 4
        lo = cb & 15
        if hi < 15:
            j = (eo - 1 - hi) & 15
            a = ea[j]
            b = eb[j]
            if lo == 0:
                c = nxt
                nxt += 1
                vf[vo & 15] = c
                vo += 1
            elif lo < fifo_max:
                c = vf[(vo - 1 - lo) & 15]
            elif lo < 0xF:
                c = (last - 1 if lo == 0xD else last + 1) & 0xFFFFFFFF
                last = c
                vf[vo & 15] = c
                vo += 1
            else:
                st, d, last = _read_index(buf, d, end, last)
                if st < 0:
                    return out, st
                c = last
                vf[vo & 15] = c
                vo += 1
            ea[eo & 15] = c
            eb[eo & 15] = b
            eo += 1
            ea[eo & 15] = a
            eb[eo & 15] = c
            eo += 1
        else:
            explicit = lo >= 0xE
            if not explicit:
                zw = np.int64(buf[end + lo])
                a = nxt
                nxt += 1
            else:
                if d >= end:
                    return out, -1
                zw = np.int64(buf[d])
                d += 1
                if zw == 0:
                    nxt = 0
                if lo == 0xE:
                    a = nxt
                    nxt += 1
                else:
                    st, d, last = _read_index(buf, d, end, last)
                    if st < 0:
                        return out, st
                    a = last
            z = zw >> 4
            w = zw & 15
            if (z == 15 or w == 15) and not explicit:
                return out, -3
            # the FIFO is read before this triangle's pushes
            if z == 0:
                b = nxt
                nxt += 1
            elif z < 15:
                b = vf[(vo - z) & 15]
            else:
                st, d, last = _read_index(buf, d, end, last)
                if st < 0:
                    return out, st
                b = last
            if w == 0:
                c = nxt
                nxt += 1
            elif w < 15:
                c = vf[(vo - w) & 15]
            else:
                st, d, last = _read_index(buf, d, end, last)
                if st < 0:
                    return out, st
                c = last
            ea[eo & 15] = b
            eb[eo & 15] = a
            eo += 1
            ea[eo & 15] = c
            eb[eo & 15] = b
            eo += 1
            ea[eo & 15] = a
            eb[eo & 15] = c
            eo += 1
            vf[vo & 15] = a
            vo += 1
            if z == 0 or z == 15:
                vf[vo & 15] = b
                vo += 1
            if w == 0 or w == 15:
                vf[vo & 15] = c
                vo += 1
        out[t, 0] = a
        out[t, 1] = b
        out[t, 2] = c
    if d != end:
        return out, -2
    return out, 0


# ---------------------------------------------------------------- indices (mode 2)

SEQUENCE_HEADER = 0xD1
#: Version 0 of the index-sequence header (same bitstream); read only.
SEQUENCE_HEADER_V0 = 0xD0


@njit(cache=True)
def _zz_seq(idx, base):
    d = ((idx - base + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
    if d < -(1 << 30) or d >= (1 << 30):
        return -1
    return ((d << 1) ^ (d >> 31)) if d < 0 else d << 1


@njit(cache=True)
def encode_sequence_kernel(idx):
    """Mode 2 encode: ``idx`` (K,) int64 -> (uint8 stream, status); status -6 when an
    index is more than 2^30 from both baselines. Memory: 5 bytes per index bound."""
    n = idx.shape[0]
    out = np.empty(1 + 5 * n + 4, np.uint8)
    out[0] = SEQUENCE_HEADER
    p = 1
    l0 = np.int64(0)
    l1 = np.int64(0)
    for i in range(n):
        v = idx[i]
        z0 = _zz_seq(v, l0)
        z1 = _zz_seq(v, l1)
        if z0 < 0 and z1 < 0:
            return out[:1].copy(), -6
        if z1 >= 0 and (z0 < 0 or z1 < z0):
            p = _put_varint(out, p, (z1 << 1) | 1)
            l1 = v
        else:
            p = _put_varint(out, p, z0 << 1)
            l0 = v
    for i in range(4):
        out[p + i] = 0
    return out[: p + 4].copy(), 0


@njit(cache=True)
def decode_sequence_kernel(buf, count):
    """Mode 2 decode: uint8 stream -> ((count,) uint32, status). Memory: the output."""
    out = np.zeros(count, np.uint32)
    size = buf.shape[0]
    if size < 1 + count + 4:
        return out, -1
    if buf[0] != SEQUENCE_HEADER and buf[0] != SEQUENCE_HEADER_V0:
        return out, -5
    end = size - 4
    p = 1
    last = np.zeros(2, np.int64)
    for i in range(count):
        v = np.int64(0)
        shift = 0
        while True:
            if p >= end:
                return out, -1
            byte = np.int64(buf[p])
            p += 1
            v |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
            if shift > 28:
                return out, -4
        v &= 0xFFFFFFFF
        b = v & 1
        z = v >> 1
        d = ~(z >> 1) if z & 1 else z >> 1
        last[b] = (last[b] + d) & 0xFFFFFFFF
        out[i] = last[b]
    if p != end:
        return out, -2
    return out, 0
