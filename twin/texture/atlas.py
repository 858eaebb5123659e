"""Texture atlas: charts, packing into pages, baking with bleeding margins.

A *chart* is a connected set of faces (sharing edges) textured from the same photo.
Its texture patch is the part of that photo under its faces: chart UVs are the
photo's pixel coordinates of its corners (times ``scale``), so a patch at scale 1
copies photo pixels one to one and keeps the photo's resolution. Patches (their
bounding boxes plus a ``margin`` of texels on every side) are packed into
power-of-two pages (at most ``max_size`` texels a side) by a shelf packer: patches
sorted by height, placed left to right on shelves; the page width that gives the
smallest single page is chosen, and only when one ``max_size`` page cannot hold
everything are several used (the last trimmed to the power-of-two height it needs).
Faces no photo sees are grouped into connected *fill* components, each baked as a
small flat block of the mean colour of the textured faces around it (mid-grey when
there are none): filled, and flagged in the result.

Baking (:func:`twin.texture._kernels.bake`) draws each face into its page and
samples its photo bilinearly plus the levelling offsets;
:func:`~twin.texture._kernels.dilate` then bleeds ``margin`` rings of colour around
every patch so bilinear and mipmap lookups near chart borders never read the empty
background.

Peak memory: the pages (3 bytes + 1 mask byte per texel) plus per-face arrays (~150
bytes per face).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from twin.errors import ParameterError

FILL_BLOCK = 4  # texels a side of a flat fill block


@dataclass
class Atlas:
    """Charts and their placement. Per face: ``chart`` (M,), ``page`` (M,),
    ``tex_xy`` (M, 3, 2) texel coordinates in its page; per page its ``(width,
    height)`` in ``sizes``; ``n_charts`` seen charts and ``n_fill`` fill blocks."""

    chart: np.ndarray
    page: np.ndarray
    tex_xy: np.ndarray
    sizes: list[tuple[int, int]]
    n_charts: int
    n_fill: int
    utilisation: float


def charts(n_faces: int, pairs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components of faces with equal labels (unseen faces, label -1, form
    their own components). Returns ``(chart id per face, count)``."""
    same = labels[pairs[:, 0]] == labels[pairs[:, 1]]
    p = pairs[same]
    g = sparse.coo_matrix((np.ones(len(p)), (p[:, 0], p[:, 1])), shape=(n_faces, n_faces))
    n, comp = connected_components(g, directed=False)
    return comp.astype(np.int64), int(n)


def _pow2(n: int) -> int:
    return 1 << max(0, int(np.ceil(np.log2(max(n, 1)))))


def shelf_pack(
    w: np.ndarray, h: np.ndarray, size: int, height: int | None = None
) -> tuple[np.ndarray, np.ndarray, list]:
    """Pack rectangles (w, h texels) into ``size`` wide, ``height`` (default ``size``)
    tall pages, tallest first, left to right on shelves.

    Returns ``(page (N,), xy (N, 2) top-left corners, [(width, height) per page])``
    with every page a power of two on each side (the last one trimmed in height)."""
    height = size if height is None else height
    n = len(w)
    order = np.lexsort((-w, -h))
    page = np.zeros(n, dtype=np.int64)
    xy = np.zeros((n, 2), dtype=np.int64)
    used: list[int] = []
    cur, x, y, shelf_h = 0, 0, 0, 0
    for i in order:
        wi, hi = int(w[i]), int(h[i])
        if wi > size or hi > height:
            raise ParameterError(f"a {wi}x{hi} patch does not fit a {size}x{height} page")
        if x + wi > size:
            x, y, shelf_h = 0, y + shelf_h, 0
        if y + hi > height:
            used.append(height)
            cur, x, y, shelf_h = cur + 1, 0, 0, 0
        page[i], xy[i] = cur, (x, y)
        x += wi
        shelf_h = max(shelf_h, hi)
    used.append(y + shelf_h)
    sizes = [(size, height) for _ in used[:-1]] + [(size, min(height, _pow2(used[-1])))]
    return page, xy, sizes


def pack_pages(w: np.ndarray, h: np.ndarray, max_size: int):
    """:func:`shelf_pack` into the smallest single page (power-of-two width tried from
    the widest patch up to ``max_size``; height trimmed), else ``max_size`` pages."""
    best = None
    width = max(64, _pow2(int(w.max())))
    while width <= max_size:
        if width * max_size >= (w * h).sum():
            cpage, cxy, sizes = shelf_pack(w, h, width, max_size)
            if len(sizes) == 1:
                pw, ph = sizes[0]
                # smallest area first, then the squarer page
                key = (pw * ph, abs(np.log2(pw / ph)))
                if best is None or key < best[0]:
                    best = (key, cpage, cxy, sizes)
        width *= 2
    if best is not None:
        return best[1:]
    return shelf_pack(w, h, max_size)


def build_atlas(
    labels: np.ndarray,
    img_xy: np.ndarray,
    pairs: np.ndarray,
    *,
    scale: float = 1.0,
    margin: int = 2,
    max_size: int = 8192,
) -> Atlas:
    """Charts and their packing for faces with ``labels`` (-1: unseen) whose corners
    lie at ``img_xy`` (M, 3, 2) in their photos."""
    if max_size < 64 or max_size & (max_size - 1):
        raise ParameterError(f"max texture size {max_size} must be a power of two >= 64")
    if not scale > 0:
        raise ParameterError(f"texture scale {scale} must be > 0")
    m = len(labels)
    chart, n = charts(m, pairs, labels)
    seen_chart = np.zeros(n, bool)
    seen_chart[chart[labels >= 0]] = True
    lo = np.full((n, 2), np.inf)
    hi = np.full((n, 2), -np.inf)
    sel = labels >= 0
    np.minimum.at(lo, chart[sel], img_xy[sel].min(axis=1))
    np.maximum.at(hi, chart[sel], img_xy[sel].max(axis=1))
    origin = np.where(seen_chart[:, None], np.floor(lo), 0.0)
    ext = np.where(seen_chart[:, None], np.ceil(hi) - origin, 0.0)
    # per-chart scale: a patch never exceeds a page
    s = np.full(n, float(scale))
    big = ext.max(axis=1) * s + 2 * margin > max_size
    s[big] = (max_size - 2 * margin - 2) / ext[big].max(axis=1)
    w = np.where(seen_chart, np.ceil(ext[:, 0] * s).astype(np.int64) + 2 * margin, FILL_BLOCK)
    h = np.where(seen_chart, np.ceil(ext[:, 1] * s).astype(np.int64) + 2 * margin, FILL_BLOCK)
    cpage, cxy, sizes = pack_pages(w, h, max_size)
    page = cpage[chart]
    tex = np.empty((m, 3, 2))
    c = chart[sel]
    tex[sel] = (img_xy[sel] - origin[c][:, None, :]) * s[c][:, None, None] + (cxy[c] + margin)[
        :, None, :
    ]
    un = ~sel
    tex[un] = (cxy[chart[un]] + FILL_BLOCK / 2.0)[:, None, :]
    total = sum(a * b for a, b in sizes)
    used_area = float(((w - 2 * margin) * (h - 2 * margin))[seen_chart].sum())
    return Atlas(
        chart,
        page,
        tex,
        sizes,
        int(seen_chart.sum()),
        int((~seen_chart).sum()),
        used_area / max(total, 1),
    )


def fill_colours(
    chart: np.ndarray, labels: np.ndarray, pairs: np.ndarray, face_colour: np.ndarray
) -> np.ndarray:
    """Flat RGB (n_charts, 3) for unseen charts: the mean colour of the textured faces
    bordering each (mid-grey where none does); NaN rows for seen charts."""
    n = int(chart.max()) + 1 if len(chart) else 0
    out = np.full((n, 3), np.nan)
    unseen = np.unique(chart[labels < 0])
    if len(unseen) == 0:
        return out
    acc = np.zeros((n, 3))
    cnt = np.zeros(n)
    for a, b in ((0, 1), (1, 0)):
        fa, fb = pairs[:, a], pairs[:, b]
        m = (labels[fa] < 0) & (labels[fb] >= 0)
        np.add.at(acc, chart[fa[m]], face_colour[fb[m]])
        np.add.at(cnt, chart[fa[m]], 1.0)
    out[unseen] = np.where(
        cnt[unseen, None] > 0, acc[unseen] / np.maximum(cnt[unseen, None], 1), 128.0
    )
    return out


def bake_pages(
    atlas: Atlas,
    labels: np.ndarray,
    img_xy: np.ndarray,
    corner_corr: np.ndarray,
    edge_prof: np.ndarray,
    profiles: np.ndarray,
    images: np.ndarray,
    fill: np.ndarray,
    *,
    margin: int = 2,
    band: float = 1.0,
    kernels=None,
) -> list[np.ndarray]:
    """The texture pages (H, W, 3) uint8. ``images`` (V, H, W, 3) uint8 (photos padded
    to a common size); ``fill`` from :func:`fill_colours`; ``kernels`` the module with
    ``bake`` and ``dilate`` (the Numba one by default, :mod:`._reference` in tests)."""
    if kernels is None:
        from twin.texture import _kernels as kernels
    hmax = max(h for _, h in atlas.sizes)
    wmax = max(w for w, _ in atlas.sizes)
    n_pages = len(atlas.sizes)
    pages = np.zeros((n_pages, hmax, wmax, 3), dtype=np.uint8)
    mask = np.zeros((n_pages, hmax, wmax), dtype=np.uint8)
    kernels.bake(
        atlas.tex_xy,
        img_xy,
        atlas.page,
        labels,
        corner_corr,
        edge_prof,
        profiles if len(profiles) else np.zeros((1, 2, 3), np.float32),
        float(band),
        images,
        pages,
        mask,
    )
    # flat fill blocks
    unseen = np.unique(atlas.chart[labels < 0])
    if len(unseen):
        first = np.full(int(atlas.chart.max()) + 1, -1)
        idx = np.flatnonzero(labels < 0)
        first[atlas.chart[idx[::-1]]] = idx[::-1]
        for c in unseen:
            f = first[c]
            x0, y0 = (atlas.tex_xy[f, 0] - FILL_BLOCK / 2.0).astype(np.int64)
            p = atlas.page[f]
            pages[p, y0 : y0 + FILL_BLOCK, x0 : x0 + FILL_BLOCK] = np.clip(np.rint(fill[c]), 0, 255)
            mask[p, y0 : y0 + FILL_BLOCK, x0 : x0 + FILL_BLOCK] = 1
    out = []
    for p, (w, h) in enumerate(atlas.sizes):
        page = pages[p, :h, :w]
        mk = np.ascontiguousarray(mask[p, :h, :w])
        page = np.ascontiguousarray(page)
        kernels.dilate(page, mk, int(margin))
        out.append(page)
    return out
