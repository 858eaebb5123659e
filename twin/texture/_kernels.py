"""Numba kernels of the texture stage (plain NumPy versions in :mod:`._reference`).

* :func:`zbuffer`: depth buffer of a triangle mesh seen by a pinhole camera (pixel
  centres at integer + 0.5, depth interpolated as 1/z, both sides of a face drawn).
* :func:`bake`: fills texture pages texel by texel: the texel's position in the
  source photo comes from the face's affine texel -> image map, the colour is a
  bilinear sample of that photo plus the face's levelling correction (per-vertex
  global offsets interpolated barycentrically, and an edge-band local offset along
  seam edges that fades into the face).
* :func:`dilate`: bleeding margins: empty texels next to filled ones take the mean of
  their filled 8-neighbours, ``n`` rings deep.
* :func:`visible_faces`: the visibility test of view selection (in front, inside the
  image, turned to the camera, not occluded in the depth buffer), face by face.
* :func:`bilinear_many`: bilinear photo samples at many points.
* :func:`pcg_csr`: the levelling's Jacobi-preconditioned conjugate gradients on a
  CSR matrix, all right-hand sides at once.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_EPS = 1e-9


@njit(cache=True, nogil=True)
def zbuffer(px, pz, faces, width, height, near):  # pragma: no cover - compiled
    """Depth (H, W) float32 (inf where empty) and face id (H, W) int32 (-1 where empty)
    of ``faces`` (M, 3) whose vertices project to pixel coordinates ``px`` (N, 2) at
    camera depths ``pz`` (N,). Faces with a vertex nearer than ``near`` are skipped."""
    depth = np.full((height, width), np.inf, dtype=np.float32)
    fid = np.full((height, width), -1, dtype=np.int32)
    for f in range(faces.shape[0]):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        za, zb, zc = pz[a], pz[b], pz[c]
        if za <= near or zb <= near or zc <= near:
            continue
        xa, ya = px[a, 0], px[a, 1]
        xb, yb = px[b, 0], px[b, 1]
        xc, yc = px[c, 0], px[c, 1]
        area = (xb - xa) * (yc - ya) - (xc - xa) * (yb - ya)
        if abs(area) < 1e-12:
            continue
        i0 = max(0, int(np.ceil(min(xa, xb, xc) - 0.5)))
        i1 = min(width - 1, int(np.floor(max(xa, xb, xc) - 0.5)))
        j0 = max(0, int(np.ceil(min(ya, yb, yc) - 0.5)))
        j1 = min(height - 1, int(np.floor(max(ya, yb, yc) - 0.5)))
        if i0 > i1 or j0 > j1:
            continue
        inv = 1.0 / area
        for j in range(j0, j1 + 1):
            py = j + 0.5
            for i in range(i0, i1 + 1):
                qx = i + 0.5
                w0 = ((xb - qx) * (yc - py) - (xc - qx) * (yb - py)) * inv
                w1 = ((xc - qx) * (ya - py) - (xa - qx) * (yc - py)) * inv
                w2 = 1.0 - w0 - w1
                if w0 < -_EPS or w1 < -_EPS or w2 < -_EPS:
                    continue
                z = 1.0 / (w0 / za + w1 / zb + w2 / zc)
                if z < depth[j, i]:
                    depth[j, i] = z
                    fid[j, i] = f
    return depth, fid


@njit(cache=True, inline="always")
def _bilinear(img, x, y, ch):  # pragma: no cover - compiled
    """Bilinear sample of channel ``ch`` of ``img`` (H, W, C) at image coordinates
    (x, y) with pixel centres at integer + 0.5 (clamped at the border)."""
    h, w = img.shape[0], img.shape[1]
    fx = min(max(x - 0.5, 0.0), w - 1.0)
    fy = min(max(y - 0.5, 0.0), h - 1.0)
    x0 = min(int(fx), w - 2) if w > 1 else 0
    y0 = min(int(fy), h - 2) if h > 1 else 0
    x1 = min(x0 + 1, w - 1)
    y1 = min(y0 + 1, h - 1)
    ax = fx - x0
    ay = fy - y0
    top = img[y0, x0, ch] * (1.0 - ax) + img[y0, x1, ch] * ax
    bot = img[y1, x0, ch] * (1.0 - ax) + img[y1, x1, ch] * ax
    return top * (1.0 - ay) + bot * ay


@njit(cache=True, parallel=True)
def bake(
    tex_xy,
    img_xy,
    face_page,
    face_view,
    vert_corr,
    edge_prof,
    profiles,
    band,
    images,
    pages,
    mask,
):  # pragma: no cover - compiled
    """Fill ``pages`` (P, Hp, Wp, 3) uint8 (rounded, clamped) and ``mask`` (P, Hp, Wp)
    uint8 in place.

    Per face ``f``: corners at texel coordinates ``tex_xy[f]`` (3, 2) of page
    ``face_page[f]`` and image coordinates ``img_xy[f]`` (3, 2) of photo
    ``images[face_view[f]]`` (V, H, W, 3) uint8; ``face_view < 0`` faces are skipped.
    ``vert_corr[f]`` (3, 3): additive RGB correction at each corner. ``edge_prof[f, k]``
    indexes ``profiles`` (E, K, 3) for the edge opposite corner k (-1: none): the
    local offset along that edge, fading to 0 at ``band`` (barycentric) into the face.
    """
    nk = profiles.shape[1]
    for f in prange(tex_xy.shape[0]):
        v = face_view[f]
        if v < 0:
            continue
        p = face_page[f]
        hp, wp = pages.shape[1], pages.shape[2]
        xa, ya = tex_xy[f, 0, 0], tex_xy[f, 0, 1]
        xb, yb = tex_xy[f, 1, 0], tex_xy[f, 1, 1]
        xc, yc = tex_xy[f, 2, 0], tex_xy[f, 2, 1]
        area = (xb - xa) * (yc - ya) - (xc - xa) * (yb - ya)
        if abs(area) < 1e-12:
            continue
        inv = 1.0 / area
        i0 = max(0, int(np.ceil(min(xa, xb, xc) - 0.5)))
        i1 = min(wp - 1, int(np.floor(max(xa, xb, xc) - 0.5)))
        j0 = max(0, int(np.ceil(min(ya, yb, yc) - 0.5)))
        j1 = min(hp - 1, int(np.floor(max(ya, yb, yc) - 0.5)))
        img = images[v]
        for j in range(j0, j1 + 1):
            py = j + 0.5
            for i in range(i0, i1 + 1):
                qx = i + 0.5
                w0 = ((xb - qx) * (yc - py) - (xc - qx) * (yb - py)) * inv
                w1 = ((xc - qx) * (ya - py) - (xa - qx) * (yc - py)) * inv
                w2 = 1.0 - w0 - w1
                if w0 < -1e-6 or w1 < -1e-6 or w2 < -1e-6:
                    continue
                ix = w0 * img_xy[f, 0, 0] + w1 * img_xy[f, 1, 0] + w2 * img_xy[f, 2, 0]
                iy = w0 * img_xy[f, 0, 1] + w1 * img_xy[f, 1, 1] + w2 * img_xy[f, 2, 1]
                for ch in range(3):
                    val = _bilinear(img, ix, iy, ch)
                    val += w0 * vert_corr[f, 0, ch] + w1 * vert_corr[f, 1, ch]
                    val += w2 * vert_corr[f, 2, ch]
                    for k in range(3):
                        e = edge_prof[f, k]
                        if e < 0:
                            continue
                        bk = w0 if k == 0 else (w1 if k == 1 else w2)
                        fade = 1.0 - bk / band
                        if fade <= 0.0:
                            continue
                        # position along the edge from corner k+1 to corner k+2
                        b1 = w1 if k == 0 else (w2 if k == 1 else w0)
                        b2 = w2 if k == 0 else (w0 if k == 1 else w1)
                        s = b2 / max(b1 + b2, 1e-12)
                        q = min(max(s, 0.0), 1.0) * (nk - 1)
                        q0 = min(int(q), nk - 2) if nk > 1 else 0
                        q1 = min(q0 + 1, nk - 1)
                        aq = q - q0
                        off = profiles[e, q0, ch] * (1.0 - aq) + profiles[e, q1, ch] * aq
                        val += fade * off
                    pages[p, j, i, ch] = np.uint8(min(max(np.floor(val + 0.5), 0.0), 255.0))
                mask[p, j, i] = 1


@njit(cache=True, parallel=True)
def dilate(page, mask, n):  # pragma: no cover - compiled
    """Grow the filled region of ``page`` (H, W, 3) uint8 by ``n`` texel rings in
    place: an empty texel with filled 8-neighbours takes their mean. ``mask`` (H, W)
    uint8 is updated (grown texels become 2)."""
    h, w, nc = page.shape
    for _ in range(n):
        new = mask.copy()
        for j in prange(h):
            for i in range(w):
                if mask[j, i]:
                    continue
                cnt = 0
                acc0 = 0.0
                acc1 = 0.0
                acc2 = 0.0
                for dj in range(-1, 2):
                    jj = j + dj
                    if jj < 0 or jj >= h:
                        continue
                    for di in range(-1, 2):
                        ii = i + di
                        if ii < 0 or ii >= w or not mask[jj, ii]:
                            continue
                        cnt += 1
                        acc0 += page[jj, ii, 0]
                        if nc > 1:
                            acc1 += page[jj, ii, 1]
                            acc2 += page[jj, ii, 2]
                if cnt:
                    page[j, i, 0] = np.uint8(np.floor(acc0 / cnt + 0.5))
                    if nc > 1:
                        page[j, i, 1] = np.uint8(np.floor(acc1 / cnt + 0.5))
                        page[j, i, 2] = np.uint8(np.floor(acc2 / cnt + 0.5))
                    new[j, i] = 2
        mask[:] = new


@njit(cache=True, nogil=True)
def visible_faces(
    vertices, faces, normals, R, t, fx, fy, cx, cy, depth, cos_max, near, shrink, occ_px, occ_abs
):  # pragma: no cover - compiled
    """Which faces (bool (M,)) a pinhole camera (``x_cam = R X + t``) sees unoccluded:
    every corner in front (depth > ``near``) and inside the image, the face turned to
    the camera (cosine of the view angle > ``cos_max``), and its centroid and its
    corners pulled ``shrink`` towards the centroid no farther than
    ``occ_abs + occ_px`` pixel footprints behind the nearest ``depth`` (H, W) in the
    3 x 3 pixels around them. One face at a time, without temporaries."""
    h, w = depth.shape
    m = faces.shape[0]
    ok = np.zeros(m, dtype=np.bool_)
    ox = -(R[0, 0] * t[0] + R[1, 0] * t[1] + R[2, 0] * t[2])
    oy = -(R[0, 1] * t[0] + R[1, 1] * t[1] + R[2, 1] * t[2])
    oz = -(R[0, 2] * t[0] + R[1, 2] * t[1] + R[2, 2] * t[2])
    fmin = min(fx, fy)
    pts = np.empty((4, 3))
    for f in range(m):
        good = True
        for k in range(3):
            X = vertices[faces[f, k]]
            zc = R[2, 0] * X[0] + R[2, 1] * X[1] + R[2, 2] * X[2] + t[2]
            if not zc > near:
                good = False
                break
            u = fx * (R[0, 0] * X[0] + R[0, 1] * X[1] + R[0, 2] * X[2] + t[0]) / zc + cx
            v = fy * (R[1, 0] * X[0] + R[1, 1] * X[1] + R[1, 2] * X[2] + t[1]) / zc + cy
            if not (u >= 0.5 and u <= w - 0.5 and v >= 0.5 and v <= h - 0.5):
                good = False
                break
        if not good:
            continue
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        for d in range(3):
            pts[0, d] = (vertices[a, d] + vertices[b, d] + vertices[c, d]) / 3.0
        dx, dy, dz = ox - pts[0, 0], oy - pts[0, 1], oz - pts[0, 2]
        dist = np.sqrt(dx * dx + dy * dy + dz * dz)
        cosang = (normals[f, 0] * dx + normals[f, 1] * dy + normals[f, 2] * dz) / max(dist, 1e-12)
        if not cosang > cos_max:
            continue
        for k in range(3):
            vk = faces[f, k]
            for d in range(3):
                pts[k + 1, d] = vertices[vk, d] + shrink * (pts[0, d] - vertices[vk, d])
        for k in range(4):
            X = pts[k]
            zc = R[2, 0] * X[0] + R[2, 1] * X[1] + R[2, 2] * X[2] + t[2]
            u = fx * (R[0, 0] * X[0] + R[0, 1] * X[1] + R[0, 2] * X[2] + t[0]) / zc + cx
            v = fy * (R[1, 0] * X[0] + R[1, 1] * X[1] + R[1, 2] * X[2] + t[1]) / zc + cy
            px = min(max(int(u), 0), w - 1)
            py = min(max(int(v), 0), h - 1)
            nearest = np.inf
            for jj in range(max(py - 1, 0), min(py + 2, h)):
                for ii in range(max(px - 1, 0), min(px + 2, w)):
                    if depth[jj, ii] < nearest:
                        nearest = depth[jj, ii]
            tol = occ_abs + occ_px * zc / fmin
            if not nearest >= zc - tol:
                good = False
                break
        ok[f] = good
    return ok


@njit(cache=True, nogil=True)
def bilinear_many(img, x, y):  # pragma: no cover - compiled
    """Bilinear samples (N, C) float64 of ``img`` (H, W, C) at image coordinates
    ``x``, ``y`` (N,) (pixel centres at integer + 0.5, clamped at the border)."""
    n = x.shape[0]
    nc = img.shape[2]
    out = np.empty((n, nc))
    for i in range(n):
        for ch in range(nc):
            out[i, ch] = _bilinear(img, x[i], y[i], ch)
    return out


@njit(cache=True, nogil=True)
def pcg_csr(indptr, indices, data, dinv, B, x, rtol, maxiter):  # pragma: no cover - compiled
    """Jacobi-preconditioned conjugate gradients on the SPD CSR matrix
    (``indptr``, ``indices``, ``data``) with inverse diagonal ``dinv``, for all
    columns of ``B`` (n, c) at once, from ``x`` (updated in place). Stops when every
    column's residual is at most ``rtol`` times its right-hand side. Returns the
    iterations done (same algorithm as :func:`twin.texture.level.pcg`). Serial: a
    parallel region per vector operation costs more than it gains on a busy machine."""
    n, c = B.shape
    r = np.empty_like(B)
    z = np.empty_like(B)
    q = np.empty_like(B)
    for i in range(n):
        for j in range(c):
            acc = 0.0
            for k in range(indptr[i], indptr[i + 1]):
                acc += data[k] * x[indices[k], j]
            r[i, j] = B[i, j] - acc
            z[i, j] = r[i, j] * dinv[i]
    p = z.copy()
    rz = np.zeros(c)
    bn = np.zeros(c)
    alpha = np.zeros(c)
    beta = np.zeros(c)
    for j in range(c):
        s1 = 0.0
        s2 = 0.0
        for i in range(n):
            s1 += r[i, j] * z[i, j]
            s2 += B[i, j] * B[i, j]
        rz[j] = s1
        bn[j] = np.sqrt(s2)
    it = 0
    while it < maxiter:
        done = True
        for j in range(c):
            s = 0.0
            for i in range(n):
                s += r[i, j] * r[i, j]
            if np.sqrt(s) > rtol * max(bn[j], 1e-300):
                done = False
        if done:
            break
        for i in range(n):
            for j in range(c):
                acc = 0.0
                for k in range(indptr[i], indptr[i + 1]):
                    acc += data[k] * p[indices[k], j]
                q[i, j] = acc
        for j in range(c):
            s = 0.0
            for i in range(n):
                s += p[i, j] * q[i, j]
            alpha[j] = rz[j] / (1.0 if s == 0 else s)
        for i in range(n):
            for j in range(c):
                x[i, j] += alpha[j] * p[i, j]
                r[i, j] -= alpha[j] * q[i, j]
                z[i, j] = r[i, j] * dinv[i]
        for j in range(c):
            s = 0.0
            for i in range(n):
                s += r[i, j] * z[i, j]
            beta[j] = s / (1.0 if rz[j] == 0 else rz[j])
            rz[j] = s
        for i in range(n):
            for j in range(c):
                p[i, j] = z[i, j] + beta[j] * p[i, j]
        it += 1
    return it


@njit(cache=True, nogil=True)
def sobel_magnitude(image):  # pragma: no cover - compiled
    """Sobel gradient magnitude (H, W) float32 of the luminance (0.299 R + 0.587 G +
    0.114 B) of an RGB uint8 image, edges clamped, divided by 8 (grey levels per
    pixel): :func:`twin.texture.select.sobel_magnitude` in one pass."""
    h, w = image.shape[0], image.shape[1]
    g = np.empty((h, w), dtype=np.float32)
    for j in range(h):
        for i in range(w):
            g[j, i] = (
                np.float32(image[j, i, 0]) * np.float32(0.299)
                + np.float32(image[j, i, 1]) * np.float32(0.587)
                + np.float32(image[j, i, 2]) * np.float32(0.114)
            )
    out = np.empty((h, w), dtype=np.float32)
    for j in range(h):
        jm, jp = max(j - 1, 0), min(j + 1, h - 1)
        for i in range(w):
            im, ip = max(i - 1, 0), min(i + 1, w - 1)
            gx = (g[jm, ip] - g[jm, im]) + 2.0 * (g[j, ip] - g[j, im]) + (g[jp, ip] - g[jp, im])
            gy = (g[jp, im] - g[jm, im]) + 2.0 * (g[jp, i] - g[jm, i]) + (g[jp, ip] - g[jm, ip])
            out[j, i] = np.sqrt(gx * gx + gy * gy) / 8.0
    return out


@njit(cache=True, nogil=True)
def face_pixel_sums(fid, values, n_faces):  # pragma: no cover - compiled
    """Per face: the sum of ``values`` (H, W) over the pixels whose ``fid`` (H, W) is
    that face, and how many there are (``fid`` < 0: no face)."""
    s = np.zeros(n_faces)
    c = np.zeros(n_faces, dtype=np.int64)
    h, w = fid.shape
    for j in range(h):
        for i in range(w):
            k = fid[j, i]
            if k >= 0:
                s[k] += values[j, i]
                c[k] += 1
    return s, c
