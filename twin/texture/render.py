"""Render a textured mesh from a camera, and image-quality metrics (PSNR, SSIM).

:func:`render_textured` draws the mesh into a depth buffer
(:func:`twin.texture._kernels.zbuffer`), recovers perspective-correct barycentric
coordinates per pixel, interpolates the UVs and samples the face's page bilinearly:
what a viewer shows, without lighting (the texture already holds the photo's
shading). Used to compare a textured model with held-out photos and for previews.
Memory grows with the image's pixels (~60 bytes each) and the mesh.
"""

from __future__ import annotations

import numpy as np

from twin.texture._kernels import zbuffer
from twin.texture._reference import bilinear
from twin.texture.select import NEAR
from twin.texture.views import View


def render_textured(
    vertices: np.ndarray,
    faces: np.ndarray,
    uv: np.ndarray,
    face_page: np.ndarray,
    pages: list[np.ndarray],
    view: View,
    *,
    background=(0, 0, 0),
) -> tuple[np.ndarray, np.ndarray]:
    """The (H, W, 3) uint8 image of the textured mesh seen by ``view`` and the
    (H, W) int32 face id per pixel (-1: background). ``uv`` (N, 2) glTF UVs of
    ``vertices``; ``face_page`` (M,) page of each face."""
    px, pz = view.project(vertices)
    depth, fid = zbuffer(px, pz, faces, view.width, view.height, NEAR)
    out = np.empty((view.height, view.width, 3), np.uint8)
    out[:] = np.asarray(background, np.uint8)
    jj, ii = np.nonzero(fid >= 0)
    if len(jj) == 0:
        return out, fid
    f = fid[jj, ii]
    tri = faces[f]
    x, y = ii + 0.5, jj + 0.5
    (xa, ya), (xb, yb), (xc, yc) = (px[tri[:, k]].T for k in range(3))
    area = (xb - xa) * (yc - ya) - (xc - xa) * (yb - ya)
    w0 = ((xb - x) * (yc - y) - (xc - x) * (yb - y)) / area
    w1 = ((xc - x) * (ya - y) - (xa - x) * (yc - y)) / area
    w = np.column_stack([w0, w1, 1.0 - w0 - w1]) / pz[tri]
    w /= w.sum(axis=1, keepdims=True)
    tuv = np.einsum("nk,nkc->nc", w, uv[tri])
    fp = face_page[f]
    for p, page in enumerate(pages):
        m = fp == p
        if not m.any():
            continue
        h, wd = page.shape[:2]
        col = bilinear(page, tuv[m, 0] * wd, tuv[m, 1] * h)
        out[jj[m], ii[m]] = np.clip(np.rint(col), 0, 255).astype(np.uint8)
    return out, fid


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio (dB, 8-bit peak) of two images over ``mask``."""
    d = a.astype(np.float64) - b.astype(np.float64)
    if mask is not None:
        d = d[mask]
    mse = float(np.mean(d * d)) if d.size else 0.0
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean structural similarity (Wang et al. 2004: Gaussian window sigma 1.5,
    K1 = 0.01, K2 = 0.03, 8-bit range) of the luminance of two RGB images, averaged
    over ``mask``."""
    from scipy import ndimage

    wts = np.array([0.299, 0.587, 0.114])
    x = a.astype(np.float64) @ wts
    y = b.astype(np.float64) @ wts
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def g(z):
        return ndimage.gaussian_filter(z, 1.5, truncate=3.5)

    mx, my = g(x), g(y)
    sxx = g(x * x) - mx * mx
    syy = g(y * y) - my * my
    sxy = g(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s[mask].mean() if mask is not None else s.mean())


# barycentric sample points inside a face (a 10-point spread) for face mean colours
_FACE_SAMPLES = np.array(
    [
        [1 / 3, 1 / 3, 1 / 3],
        [2 / 3, 1 / 6, 1 / 6],
        [1 / 6, 2 / 3, 1 / 6],
        [1 / 6, 1 / 6, 2 / 3],
        [1 / 2, 1 / 2, 0.0],
        [0.0, 1 / 2, 1 / 2],
        [1 / 2, 0.0, 1 / 2],
        [0.45, 0.45, 0.1],
        [0.1, 0.45, 0.45],
        [0.45, 0.1, 0.45],
    ]
)


def face_colours(tm) -> np.ndarray:
    """Mean RGB (M, 3) of each face's texture (10 barycentric samples)."""
    fuv = tm.uv[tm.faces]  # (M, 3, 2)
    out = np.zeros((len(tm.faces), 3))
    for p, page in enumerate(tm.pages):
        sel = np.flatnonzero(tm.face_page == p)
        h, w = page.shape[:2]
        uv = np.einsum("sk,mkc->msc", _FACE_SAMPLES, fuv[sel]).reshape(-1, 2)
        col = bilinear(page, uv[:, 0] * w, uv[:, 1] * h).reshape(len(sel), -1, 3)
        out[sel] = col.mean(axis=1)
    return out


def seam_jumps(tm, *, max_dihedral_deg: float = 10.0) -> dict:
    """Colour jump across chart boundaries versus inside charts, on the texture.

    For every pair of textured faces sharing an edge, near-coplanar (normals within
    ``max_dihedral_deg``: a crease is a real colour edge), the jump is the mean
    absolute RGB difference of the two faces' mean texture colours (see
    :func:`face_colours`): a seam shows as a level step between neighbours, which
    per-face means measure without the photos' pixel grain. Returns the mean jump
    over pairs in different charts (``seam``) and in the same chart (``interior``),
    with counts. ``tm`` is a :class:`~twin.texture.mapping.TexturedMesh`."""
    from twin.texture.select import face_adjacency, face_normals

    src = tm.source_vertex[tm.faces]
    nv = int(tm.source_vertex.max()) + 1
    pairs, _, _ = face_adjacency(src, nv)
    lab = tm.labels
    ok = (lab[pairs[:, 0]] >= 0) & (lab[pairs[:, 1]] >= 0)
    verts = np.zeros((nv, 3))
    verts[tm.source_vertex] = tm.vertices
    nrm = face_normals(verts, src)
    cosd = np.einsum("ij,ij->i", nrm[pairs[:, 0]], nrm[pairs[:, 1]])
    ok &= cosd > np.cos(np.radians(max_dihedral_deg))
    pairs = pairs[ok]
    col = face_colours(tm)
    jump = np.abs(col[pairs[:, 0]] - col[pairs[:, 1]]).mean(axis=1)
    # adjacent faces with the same view are in the same chart (charts are the
    # connected components of equal labels)
    same = lab[pairs[:, 0]] == lab[pairs[:, 1]]
    return {
        "seam": float(jump[~same].mean()) if (~same).any() else 0.0,
        "interior": float(jump[same].mean()) if same.any() else 0.0,
        "seam_pairs": int((~same).sum()),
        "interior_pairs": int(same.sum()),
    }
