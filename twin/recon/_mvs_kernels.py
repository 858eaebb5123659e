"""Numba kernels of the dense matcher (plane sweep, PatchMatch, consistency).

Conventions: images are grey float32 ``(H, W)``; pixel ``(r, c)`` has its centre at
``(c + 0.5, r + 0.5)`` (COLMAP). A hypothesis is a depth ``d`` (camera z, metres) and
a unit normal ``n`` in reference-camera coordinates facing the camera (``n . ray <
0``). For a source view with relative pose ``x_s = R x_ref + t`` the plane
``n . X = rho`` (``rho = n . X_p``) induces the homography ``H = K_s (R + t n^T / rho)
K_ref^-1``. The matching cost of one source is ``1 - NCC`` over a ``(2 half + 1)²``
window sampled every ``step`` pixels, bilateral-weighted (weights from the reference
window: grey-level difference to the centre, sigma ``SIGMA_COLOUR``, and distance,
sigma ``half``; a window straddling an edge matches the centre's side); it is 2.0 when
the window leaves the source image or is textureless. Views are aggregated by the mean
of the ``nbest`` lowest valid (< 2) costs (occlusion-robust), with at least two sources
seeing the window (or every source, when there are fewer): a source that does not see
a window says nothing about the hypothesis, so it must not favour depths that happen
to project into more views.
:mod:`twin.recon._mvs_reference` holds the plain NumPy version
of :func:`pixel_cost` that the tests compare against.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

BAD = 2.0
MIN_VAR = 1e-6
# bilateral weights of the NCC window: grey-level (0..1) and spatial (``half`` px) sigma
SIGMA_COLOUR = 0.12
# PatchMatch propagation reach (px): the best of the other colour's pixels up to FAR away
FAR = 15
# sources (at least) that must see a window with some texture for a hypothesis to count
MIN_VALID = 2


@njit(cache=True, fastmath=True)
def _hash01(a, b, c, d):
    """Deterministic pseudo-random number in [0, 1) of four integers."""
    h = np.uint64(a) * np.uint64(0x9E3779B97F4A7C15)
    h ^= np.uint64(b) * np.uint64(0xBF58476D1CE4E5B9)
    h ^= np.uint64(c) * np.uint64(0x94D049BB133111EB)
    h ^= np.uint64(d) * np.uint64(0x2545F4914F6CDD1D)
    h ^= h >> np.uint64(31)
    h *= np.uint64(0x7FB5D329728EA185)
    h ^= h >> np.uint64(27)
    return float(h >> np.uint64(11)) / 9007199254740992.0


@njit(cache=True)
def buffer_size(n_sources, half, step):
    """Length of the work buffer :func:`pixel_cost` needs (one per thread)."""
    k = 2 * (half // step) + 1
    return n_sources + 4 * k * k


@njit(cache=True, fastmath=True)
def pixel_cost(
    ref, srcs, dims, Ks, Rs, ts, Kinv, r, c, d, n0, n1, n2, half, step, nbest, buf
) -> float:
    """Aggregated matching cost of hypothesis (d, n) at reference pixel (r, c);
    ``buf`` has :func:`buffer_size` elements."""
    H, W = ref.shape
    u = c + 0.5
    v = r + 0.5
    rx = Kinv[0, 0] * u + Kinv[0, 1] * v + Kinv[0, 2]
    ry = Kinv[1, 0] * u + Kinv[1, 1] * v + Kinv[1, 2]
    rz = Kinv[2, 0] * u + Kinv[2, 1] * v + Kinv[2, 2]
    rho = d * (n0 * rx + n1 * ry + n2 * rz)
    if rho > -1e-9 or d <= 0:
        return BAD
    S = srcs.shape[0]
    # the reference window once: sample positions, values and bilateral weights
    centre = ref[r, c]
    inv_c = 1.0 / (2.0 * SIGMA_COLOUR * SIGMA_COLOUR)
    inv_s = 1.0 / (2.0 * max(half, 1) * max(half, 1))
    nw = 0
    wsum = 0.0
    wr = 0.0
    wrr = 0.0
    for dy in range(-half, half + 1, step):
        rr = r + dy
        if rr < 0 or rr >= H:
            continue
        for dx in range(-half, half + 1, step):
            cc = c + dx
            if cc < 0 or cc >= W:
                continue
            rv = ref[rr, cc]
            dc = rv - centre
            w = np.exp(-dc * dc * inv_c - (dx * dx + dy * dy) * inv_s)
            o = S + 4 * nw
            buf[o] = cc + 0.5
            buf[o + 1] = rr + 0.5
            buf[o + 2] = rv
            buf[o + 3] = w
            wsum += w
            wr += w * rv
            wrr += w * rv * rv
            nw += 1
    if nw < 4:
        return BAD
    mr = wr / wsum
    vr = wrr / wsum - mr * mr
    if vr <= MIN_VAR:
        return BAD
    M = np.empty((3, 3))
    Hm = np.empty((3, 3))
    for s in range(S):
        for i in range(3):
            ti = ts[s, i] / rho
            M[i, 0] = Rs[s, i, 0] + ti * n0
            M[i, 1] = Rs[s, i, 1] + ti * n1
            M[i, 2] = Rs[s, i, 2] + ti * n2
        # Hm = Ks @ M @ Kinv
        for i in range(3):
            a0 = Ks[s, i, 0] * M[0, 0] + Ks[s, i, 1] * M[1, 0] + Ks[s, i, 2] * M[2, 0]
            a1 = Ks[s, i, 0] * M[0, 1] + Ks[s, i, 1] * M[1, 1] + Ks[s, i, 2] * M[2, 1]
            a2 = Ks[s, i, 0] * M[0, 2] + Ks[s, i, 1] * M[1, 2] + Ks[s, i, 2] * M[2, 2]
            for j in range(3):
                Hm[i, j] = a0 * Kinv[0, j] + a1 * Kinv[1, j] + a2 * Kinv[2, j]
        hs = dims[s, 0]
        ws = dims[s, 1]
        img = srcs[s]
        sw = 0.0
        sww = 0.0
        srs = 0.0
        ok = True
        for k in range(nw):
            o = S + 4 * k
            qu = buf[o]
            qv = buf[o + 1]
            pz = Hm[2, 0] * qu + Hm[2, 1] * qv + Hm[2, 2]
            if pz <= 1e-12:
                ok = False
                break
            x = (Hm[0, 0] * qu + Hm[0, 1] * qv + Hm[0, 2]) / pz - 0.5
            y = (Hm[1, 0] * qu + Hm[1, 1] * qv + Hm[1, 2]) / pz - 0.5
            if x < 0.0 or y < 0.0 or x >= ws - 1 or y >= hs - 1:
                ok = False
                break
            ix = int(x)
            iy = int(y)
            fx = x - ix
            fy = y - iy
            a = img[iy, ix] + fx * (img[iy, ix + 1] - img[iy, ix])
            b = img[iy + 1, ix] + fx * (img[iy + 1, ix + 1] - img[iy + 1, ix])
            val = a + fy * (b - a)
            w = buf[o + 3]
            sw += w * val
            sww += w * val * val
            srs += w * buf[o + 2] * val
        cost = BAD
        if ok:
            ms = sw / wsum
            vs = sww / wsum - ms * ms
            if vs > MIN_VAR:
                ncc = (srs / wsum - mr * ms) / np.sqrt(vr * vs)
                cost = min(max(1.0 - ncc, 0.0), BAD)
        buf[s] = cost
    # mean of the nbest lowest valid costs (insertion sort of a tiny array); a
    # source that does not see the window does not count against the hypothesis
    nvalid = 0
    for i in range(S):
        if buf[i] < BAD:
            nvalid += 1
    if nvalid < min(MIN_VALID, S):
        return BAD
    for i in range(1, S):
        x = buf[i]
        j = i - 1
        while j >= 0 and buf[j] > x:
            buf[j + 1] = buf[j]
            j -= 1
        buf[j + 1] = x
    k = min(nbest, nvalid)
    tot = 0.0
    for i in range(k):
        tot += buf[i]
    return tot / k


@njit(cache=True, fastmath=True)
def _ray(Kinv, r, c):
    u = c + 0.5
    v = r + 0.5
    return (
        Kinv[0, 0] * u + Kinv[0, 1] * v + Kinv[0, 2],
        Kinv[1, 0] * u + Kinv[1, 1] * v + Kinv[1, 2],
        Kinv[2, 0] * u + Kinv[2, 1] * v + Kinv[2, 2],
    )


@njit(cache=True, parallel=True, fastmath=True)
def plane_sweep(ref, srcs, dims, Ks, Rs, ts, Kinv, depths, normals, half, step, nbest):
    """Best (depth, normal, cost) per pixel over every depth of ``depths`` and every
    normal of ``normals`` ((M, 3), reference-camera coordinates); a normal facing away
    from a pixel's ray is flipped."""
    H, W = ref.shape
    best_d = np.zeros((H, W), np.float32)
    best_n = np.zeros((H, W, 3), np.float32)
    best_c = np.full((H, W), BAD, np.float32)
    for r in prange(H):
        buf = np.empty(buffer_size(srcs.shape[0], half, step))
        for c in range(W):
            rx, ry, rz = _ray(Kinv, r, c)
            for m in range(normals.shape[0]):
                n0 = normals[m, 0]
                n1 = normals[m, 1]
                n2 = normals[m, 2]
                if n0 * rx + n1 * ry + n2 * rz > 0:
                    n0 = -n0
                    n1 = -n1
                    n2 = -n2
                if n0 * rx + n1 * ry + n2 * rz > -0.05 * np.sqrt(rx * rx + ry * ry + rz * rz):
                    continue  # plane seen edge-on from this pixel
                for k in range(depths.shape[0]):
                    cst = pixel_cost(
                        ref, srcs, dims, Ks, Rs, ts, Kinv, r, c, depths[k], n0, n1, n2,
                        half, step, nbest, buf,
                    )  # fmt: skip
                    if cst < best_c[r, c]:
                        best_c[r, c] = cst
                        best_d[r, c] = depths[k]
                        best_n[r, c, 0] = n0
                        best_n[r, c, 1] = n1
                        best_n[r, c, 2] = n2
    return best_d, best_n, best_c


@njit(cache=True, fastmath=True)
def _try(
    ref, srcs, dims, Ks, Rs, ts, Kinv, r, c, d, n0, n1, n2, half, step, nbest, buf,
    depth, normal, cost, dmin, dmax,
):  # fmt: skip
    if not (dmin <= d <= dmax):
        return
    cst = pixel_cost(ref, srcs, dims, Ks, Rs, ts, Kinv, r, c, d, n0, n1, n2, half, step, nbest, buf)
    if cst < cost[r, c]:
        cost[r, c] = cst
        depth[r, c] = d
        normal[r, c, 0] = n0
        normal[r, c, 1] = n1
        normal[r, c, 2] = n2


@njit(cache=True, parallel=True, fastmath=True)
def patchmatch_pass(
    ref, srcs, dims, Ks, Rs, ts, Kinv, depth, normal, cost, colour, iteration,
    dmin, dmax, half, step, nbest, spread,
):  # fmt: skip
    """One red-black PatchMatch half-iteration over pixels with ``(r + c) % 2 ==
    colour``: each tries the planes of its four adjacent pixels and, in each of the four
    directions, of the lowest-cost pixel 3 to ``FAR`` pixels away (the other colour:
    propagation reaches across weakly textured areas), then two random perturbations of
    depth and normal whose size shrinks with ``iteration``. Updates ``depth``,
    ``normal`` and ``cost`` in place."""
    H, W = ref.shape
    ody = np.array([-1, 1, 0, 0])
    odx = np.array([0, 0, -1, 1])
    for r in prange(H):
        buf = np.empty(buffer_size(srcs.shape[0], half, step))
        for c in range((r + colour) % 2, W, 2):
            rx, ry, rz = _ray(Kinv, r, c)
            for o in range(8):
                if o < 4:  # the adjacent pixel
                    rr = r + ody[o]
                    cc = c + odx[o]
                else:  # the lowest-cost pixel 3, 5, ... FAR px away in that direction
                    rr = -1
                    cc = -1
                    best = BAD + 1.0
                    for k in range(3, FAR + 1, 2):
                        qr = r + ody[o - 4] * k
                        qc = c + odx[o - 4] * k
                        if qr < 0 or qr >= H or qc < 0 or qc >= W:
                            break
                        if depth[qr, qc] > 0 and cost[qr, qc] < best:
                            best = cost[qr, qc]
                            rr = qr
                            cc = qc
                if rr < 0 or rr >= H or cc < 0 or cc >= W:
                    continue
                dn = depth[rr, cc]
                if dn <= 0 or cost[rr, cc] >= cost[r, c]:
                    continue
                n0 = normal[rr, cc, 0]
                n1 = normal[rr, cc, 1]
                n2 = normal[rr, cc, 2]
                qx, qy, qz = _ray(Kinv, rr, cc)
                den = n0 * rx + n1 * ry + n2 * rz
                if den > -1e-6:
                    continue
                d = dn * (n0 * qx + n1 * qy + n2 * qz) / den
                _try(
                    ref, srcs, dims, Ks, Rs, ts, Kinv, r, c, d, n0, n1, n2, half, step,
                    nbest, buf, depth, normal, cost, dmin, dmax,
                )  # fmt: skip
            # random refinement
            scale = spread / (1.0 + iteration)
            for k in range(2):
                d0 = depth[r, c]
                if d0 <= 0:
                    d0 = 0.5 * (dmin + dmax)
                u1 = _hash01(r, c, iteration * 4 + k, 1) - 0.5
                d = d0 * (1.0 + scale * 0.2 * u1) if k == 0 else d0
                a0 = normal[r, c, 0] + scale * (_hash01(r, c, iteration * 4 + k, 2) - 0.5)
                a1 = normal[r, c, 1] + scale * (_hash01(r, c, iteration * 4 + k, 3) - 0.5)
                a2 = normal[r, c, 2] + scale * (_hash01(r, c, iteration * 4 + k, 4) - 0.5)
                nn = np.sqrt(a0 * a0 + a1 * a1 + a2 * a2)
                if nn < 1e-9:
                    continue
                a0 /= nn
                a1 /= nn
                a2 /= nn
                if a0 * rx + a1 * ry + a2 * rz > -0.05:
                    continue
                _try(
                    ref, srcs, dims, Ks, Rs, ts, Kinv, r, c, d, a0, a1, a2, half, step,
                    nbest, buf, depth, normal, cost, dmin, dmax,
                )  # fmt: skip


@njit(cache=True, parallel=True, fastmath=True)
def consistency(depth, Kinv, K_s, R_s, t_s, depth_s, max_rel, max_px):
    """Per reference pixel, whether the source depth map ``depth_s`` agrees: the pixel's
    3D point projects into the source, the source depth there (nearest pixel) back-
    projects within ``max_px`` pixels of the reference pixel and its depth within a
    relative ``max_rel``. Returns a uint8 mask and the source's point in reference
    camera coordinates (for averaging)."""
    H, W = depth.shape
    hs, ws = depth_s.shape
    ok = np.zeros((H, W), np.uint8)
    pts = np.zeros((H, W, 3), np.float32)
    # inverse relative pose (source to reference)
    Rt = R_s.T
    Ks_inv = np.linalg.inv(K_s)
    K_ref = np.linalg.inv(Kinv)
    for r in prange(H):
        for c in range(W):
            d = depth[r, c]
            if d <= 0:
                continue
            rx, ry, rz = _ray(Kinv, r, c)
            X0 = d * rx
            X1 = d * ry
            X2 = d * rz
            y0 = R_s[0, 0] * X0 + R_s[0, 1] * X1 + R_s[0, 2] * X2 + t_s[0]
            y1 = R_s[1, 0] * X0 + R_s[1, 1] * X1 + R_s[1, 2] * X2 + t_s[1]
            y2 = R_s[2, 0] * X0 + R_s[2, 1] * X1 + R_s[2, 2] * X2 + t_s[2]
            if y2 <= 0:
                continue
            u = (K_s[0, 0] * y0 + K_s[0, 1] * y1 + K_s[0, 2] * y2) / y2
            v = (K_s[1, 0] * y0 + K_s[1, 1] * y1 + K_s[1, 2] * y2) / y2
            ci = int(np.floor(u))
            ri = int(np.floor(v))
            if ci < 0 or ri < 0 or ci >= ws or ri >= hs:
                continue
            ds = depth_s[ri, ci]
            if ds <= 0:
                continue
            sx, sy, sz = _ray(Ks_inv, ri, ci)
            z0 = ds * sx - t_s[0]
            z1 = ds * sy - t_s[1]
            z2 = ds * sz - t_s[2]
            b0 = Rt[0, 0] * z0 + Rt[0, 1] * z1 + Rt[0, 2] * z2
            b1 = Rt[1, 0] * z0 + Rt[1, 1] * z1 + Rt[1, 2] * z2
            b2 = Rt[2, 0] * z0 + Rt[2, 1] * z1 + Rt[2, 2] * z2
            if b2 <= 0:
                continue
            pu = (K_ref[0, 0] * b0 + K_ref[0, 1] * b1 + K_ref[0, 2] * b2) / b2
            pv = (K_ref[1, 0] * b0 + K_ref[1, 1] * b1 + K_ref[1, 2] * b2) / b2
            e = np.sqrt((pu - c - 0.5) ** 2 + (pv - r - 0.5) ** 2)
            if e <= max_px and abs(b2 - d) <= max_rel * d:
                ok[r, c] = 1
                pts[r, c, 0] = b0
                pts[r, c, 1] = b1
                pts[r, c, 2] = b2
    return ok, pts


@njit(cache=True, parallel=True, fastmath=True)
def evaluate(ref, srcs, dims, Ks, Rs, ts, Kinv, depth, normal, half, step, nbest):
    """Cost of every pixel's current plane (depth <= 0 gives the bad cost)."""
    H, W = ref.shape
    cost = np.full((H, W), BAD, np.float32)
    for r in prange(H):
        buf = np.empty(buffer_size(srcs.shape[0], half, step))
        for c in range(W):
            d = depth[r, c]
            if d > 0:
                cost[r, c] = pixel_cost(
                    ref, srcs, dims, Ks, Rs, ts, Kinv, r, c, d,
                    normal[r, c, 0], normal[r, c, 1], normal[r, c, 2], half, step, nbest, buf,
                )  # fmt: skip
    return cost
