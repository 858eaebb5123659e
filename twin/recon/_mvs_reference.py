"""Plain NumPy reference of the dense matcher's cost (tests compare the kernel to it)."""

from __future__ import annotations

import numpy as np

BAD = 2.0
SIGMA_COLOUR = 0.12  # as twin.recon._mvs_kernels


def bilinear(img: np.ndarray, x: float, y: float) -> float | None:
    """Image value at pixel coordinates (x, y) with pixel centres at integer + 0.5."""
    h, w = img.shape
    x, y = x - 0.5, y - 0.5
    if x < 0 or y < 0 or x >= w - 1 or y >= h - 1:
        return None
    ix, iy = int(x), int(y)
    fx, fy = x - ix, y - iy
    top = (1 - fx) * img[iy, ix] + fx * img[iy, ix + 1]
    bot = (1 - fx) * img[iy + 1, ix] + fx * img[iy + 1, ix + 1]
    return float((1 - fy) * top + fy * bot)


def pixel_cost(ref, srcs, Ks, Rs, ts, K_ref, r, c, d, n, half, step, nbest) -> float:
    """Mean of the ``nbest`` lowest valid ``1 - NCC`` costs (bilateral-weighted NCC:
    weights from the reference window's grey levels and distances) of the plane (depth
    ``d`` at pixel (r, c), normal ``n`` in reference camera coordinates) over the source
    views; at least two sources (all when fewer) must see the window with texture, else
    ``BAD``."""
    n = np.asarray(n, float)
    Kinv = np.linalg.inv(K_ref)
    X = d * (Kinv @ np.array([c + 0.5, r + 0.5, 1.0]))
    rho = float(n @ X)
    if rho > -1e-9 or d <= 0:
        return BAD
    H, W = ref.shape
    # bilateral weights from the reference window (grey level and distance to centre)
    pix, a, wgt = [], [], []
    for dy in range(-half, half + 1, step):
        for dx in range(-half, half + 1, step):
            rr, cc = r + dy, c + dx
            if not (0 <= rr < H and 0 <= cc < W):
                continue
            pix.append((cc + 0.5, rr + 0.5))
            a.append(float(ref[rr, cc]))
            dcol = float(ref[rr, cc]) - float(ref[r, c])
            dsq = dx * dx + dy * dy
            wgt.append(np.exp(-(dcol**2) / (2 * SIGMA_COLOUR**2) - dsq / (2 * max(half, 1) ** 2)))
    a, wgt = np.asarray(a), np.asarray(wgt)
    if len(a) < 4:
        return BAD
    wgt = wgt / wgt.sum()
    ma = float(wgt @ a)
    va = float(wgt @ (a - ma) ** 2)
    if va <= 1e-6:
        return BAD
    costs = []
    for img, K, R, t in zip(srcs, Ks, Rs, ts, strict=True):
        Hm = K @ (R + np.outer(t, n) / rho) @ Kinv
        b = []
        for qu, qv in pix:
            p = Hm @ np.array([qu, qv, 1.0])
            val = bilinear(img, p[0] / p[2], p[1] / p[2]) if p[2] > 1e-12 else None
            if val is None:
                break
            b.append(val)
        cost = BAD
        if len(b) == len(pix):
            b = np.asarray(b)
            mb = float(wgt @ b)
            vb = float(wgt @ (b - mb) ** 2)
            if vb > 1e-6:
                ncc = float(wgt @ ((a - ma) * (b - mb))) / np.sqrt(va * vb)
                cost = min(max(1.0 - ncc, 0.0), BAD)
        costs.append(cost)
    valid = sorted(c for c in costs if c < BAD)
    if len(valid) < min(2, len(costs)):
        return BAD
    return float(np.mean(valid[: min(nbest, len(valid))]))
