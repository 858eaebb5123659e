"""Plain NumPy versions of :mod:`twin.texture._kernels` (slow; tests compare them)."""

from __future__ import annotations

import numpy as np


def zbuffer(px, pz, faces, width, height, near):
    """NumPy twin of :func:`twin.texture._kernels.zbuffer` (one face at a time)."""
    depth = np.full((height, width), np.inf, dtype=np.float32)
    fid = np.full((height, width), -1, dtype=np.int32)
    for f, (a, b, c) in enumerate(np.asarray(faces)):
        z = pz[[a, b, c]]
        if np.any(z <= near):
            continue
        (xa, ya), (xb, yb), (xc, yc) = px[a], px[b], px[c]
        area = (xb - xa) * (yc - ya) - (xc - xa) * (yb - ya)
        if abs(area) < 1e-12:
            continue
        i0 = max(0, int(np.ceil(min(xa, xb, xc) - 0.5)))
        i1 = min(width - 1, int(np.floor(max(xa, xb, xc) - 0.5)))
        j0 = max(0, int(np.ceil(min(ya, yb, yc) - 0.5)))
        j1 = min(height - 1, int(np.floor(max(ya, yb, yc) - 0.5)))
        if i0 > i1 or j0 > j1:
            continue
        jj, ii = np.mgrid[j0 : j1 + 1, i0 : i1 + 1]
        qx, qy = ii + 0.5, jj + 0.5
        w0 = ((xb - qx) * (yc - qy) - (xc - qx) * (yb - qy)) / area
        w1 = ((xc - qx) * (ya - qy) - (xa - qx) * (yc - qy)) / area
        w2 = 1.0 - w0 - w1
        inside = (w0 >= -1e-9) & (w1 >= -1e-9) & (w2 >= -1e-9)
        zz = 1.0 / (w0 / z[0] + w1 / z[1] + w2 / z[2])
        sub = depth[j0 : j1 + 1, i0 : i1 + 1]
        win = inside & (zz < sub)
        sub[win] = zz[win]
        fid[j0 : j1 + 1, i0 : i1 + 1][win] = f
    return depth, fid


def visible_faces(
    vertices, faces, normals, R, t, fx, fy, cx, cy, depth, cos_max, near, shrink, occ_px, occ_abs
):
    """NumPy twin of :func:`twin.texture._kernels.visible_faces` (whole arrays)."""
    from scipy import ndimage

    h, w = depth.shape

    def project(X):
        xc = X @ R.T + t
        z = xc[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.column_stack([fx * xc[:, 0] / z + cx, fy * xc[:, 1] / z + cy]), z

    uv, z = project(vertices)
    tri_uv, tri_z = uv[faces], z[faces]
    ok = np.all(tri_z > near, axis=1)
    ok &= np.all((tri_uv[..., 0] >= 0.5) & (tri_uv[..., 0] <= w - 0.5), axis=1)
    ok &= np.all((tri_uv[..., 1] >= 0.5) & (tri_uv[..., 1] <= h - 0.5), axis=1)
    tri = vertices[faces]
    cen = tri.mean(axis=1)
    to_cam = -R.T @ t - cen
    dist = np.linalg.norm(to_cam, axis=1)
    ok &= np.einsum("ij,ij->i", normals, to_cam) / np.maximum(dist, 1e-12) > cos_max
    idx = np.flatnonzero(ok)
    pts = np.concatenate(
        [cen[idx, None, :], tri[idx] + shrink * (cen[idx, None, :] - tri[idx])], axis=1
    ).reshape(-1, 3)
    puv, pz = project(pts)
    px = np.clip(puv[:, 0].astype(np.int64), 0, w - 1)
    py = np.clip(puv[:, 1].astype(np.int64), 0, h - 1)
    nearest = ndimage.minimum_filter(depth, size=3, mode="nearest")
    seen = nearest[py, px] >= pz - (occ_abs + occ_px * pz / min(fx, fy))
    ok[idx] = seen.reshape(-1, 4).all(axis=1)
    return ok


def sobel_magnitude(image):
    """SciPy twin of :func:`twin.texture._kernels.sobel_magnitude`."""
    from scipy import ndimage

    g = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    gx = ndimage.sobel(g, axis=1, mode="nearest")
    gy = ndimage.sobel(g, axis=0, mode="nearest")
    return np.hypot(gx, gy) / 8.0


def bilinear(img, x, y):
    """Bilinear samples (N, C) of ``img`` (H, W, C) at image coordinates (pixel centres
    at integer + 0.5, clamped at the border)."""
    h, w = img.shape[:2]
    fx = np.clip(np.asarray(x, dtype=np.float64) - 0.5, 0.0, w - 1.0)
    fy = np.clip(np.asarray(y, dtype=np.float64) - 0.5, 0.0, h - 1.0)
    x0 = np.minimum(fx.astype(np.int64), max(w - 2, 0))
    y0 = np.minimum(fy.astype(np.int64), max(h - 2, 0))
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    ax = (fx - x0)[:, None]
    ay = (fy - y0)[:, None]
    top = img[y0, x0].astype(np.float64) * (1 - ax) + img[y0, x1] * ax
    bot = img[y1, x0].astype(np.float64) * (1 - ax) + img[y1, x1] * ax
    return top * (1 - ay) + bot * ay


def bake(
    tex_xy, img_xy, face_page, face_view, vert_corr, edge_prof, profiles, band, images, pages, mask
):
    """NumPy twin of :func:`twin.texture._kernels.bake` (same arguments, in place)."""
    nk = profiles.shape[1]
    hp, wp = pages.shape[1:3]
    for f in range(len(tex_xy)):
        v = face_view[f]
        if v < 0:
            continue
        (xa, ya), (xb, yb), (xc, yc) = tex_xy[f]
        area = (xb - xa) * (yc - ya) - (xc - xa) * (yb - ya)
        if abs(area) < 1e-12:
            continue
        i0 = max(0, int(np.ceil(min(xa, xb, xc) - 0.5)))
        i1 = min(wp - 1, int(np.floor(max(xa, xb, xc) - 0.5)))
        j0 = max(0, int(np.ceil(min(ya, yb, yc) - 0.5)))
        j1 = min(hp - 1, int(np.floor(max(ya, yb, yc) - 0.5)))
        if i0 > i1 or j0 > j1:
            continue
        jj, ii = np.mgrid[j0 : j1 + 1, i0 : i1 + 1]
        qx, qy = (ii + 0.5).ravel(), (jj + 0.5).ravel()
        w0 = ((xb - qx) * (yc - qy) - (xc - qx) * (yb - qy)) / area
        w1 = ((xc - qx) * (ya - qy) - (xa - qx) * (yc - qy)) / area
        w2 = 1.0 - w0 - w1
        ok = (w0 >= -1e-6) & (w1 >= -1e-6) & (w2 >= -1e-6)
        w = np.column_stack([w0, w1, w2])[ok]
        ix = w @ img_xy[f, :, 0]
        iy = w @ img_xy[f, :, 1]
        val = bilinear(images[v], ix, iy) + w @ vert_corr[f]
        for k in range(3):
            e = edge_prof[f, k]
            if e < 0:
                continue
            fade = np.maximum(1.0 - w[:, k] / band, 0.0)
            b1 = w[:, (k + 1) % 3]
            b2 = w[:, (k + 2) % 3]
            s = np.clip(b2 / np.maximum(b1 + b2, 1e-12), 0.0, 1.0)
            grid = np.linspace(0.0, 1.0, nk)
            off = np.column_stack([np.interp(s, grid, profiles[e, :, ch]) for ch in range(3)])
            val += fade[:, None] * off
        val = np.clip(np.floor(val + 0.5), 0, 255)
        pages[p := face_page[f], jj.ravel()[ok], ii.ravel()[ok]] = val
        mask[p, jj.ravel()[ok], ii.ravel()[ok]] = 1


def dilate(page, mask, n):
    """NumPy twin of :func:`twin.texture._kernels.dilate` (in place)."""
    h, w = mask.shape
    for _ in range(n):
        filled = mask > 0
        pad_f = np.pad(filled, 1)
        pad_p = np.pad(page.astype(np.float64), ((1, 1), (1, 1), (0, 0)))
        cnt = np.zeros((h, w))
        acc = np.zeros(page.shape)
        for dj in (-1, 0, 1):
            for di in (-1, 0, 1):
                m = pad_f[1 + dj : 1 + dj + h, 1 + di : 1 + di + w]
                cnt += m
                acc += pad_p[1 + dj : 1 + dj + h, 1 + di : 1 + di + w] * m[..., None]
        grow = ~filled & (cnt > 0)
        page[grow] = np.floor(acc[grow] / cnt[grow, None] + 0.5).astype(page.dtype)
        mask[grow] = 2


def pcg(N, B, *, x0=None, rtol=1e-3, maxiter=5000):
    """NumPy/SciPy twin of :func:`twin.texture.level.pcg`."""
    dinv = 1.0 / N.diagonal()
    x = np.zeros_like(B) if x0 is None else x0.copy()
    r = B - N @ x
    z = r * dinv[:, None]
    p = z.copy()
    rz = np.einsum("ij,ij->j", r, z)
    bn = np.sqrt(np.einsum("ij,ij->j", B, B))
    it = 0
    while it < maxiter:
        if np.all(np.sqrt(np.einsum("ij,ij->j", r, r)) <= rtol * np.maximum(bn, 1e-300)):
            break
        q = N @ p
        pq = np.einsum("ij,ij->j", p, q)
        alpha = rz / np.where(pq == 0, 1.0, pq)
        x += alpha * p
        r -= alpha * q
        z = r * dinv[:, None]
        rz_new = np.einsum("ij,ij->j", r, z)
        p = z + (rz_new / np.where(rz == 0, 1.0, rz)) * p
        rz = rz_new
        it += 1
    return x, it
