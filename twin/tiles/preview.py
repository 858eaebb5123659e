"""A quick shaded picture of ENU meshes: :func:`render_preview`.

Orthographic ray casting with trimesh's embree intersector, Lambert shading under
one sun plus ambient light, one colour per face. Meant for README pictures and for
looking at output, not for photogrammetry (the synthetic survey has its own camera
renderer).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from twin.errors import ParameterError
from twin.fileio import atomic_path

VIEWS = {
    # (azimuth of the viewing direction, degrees clockwise from north; elevation, degrees)
    "oblique": (45.0, -40.0),  # looking north-east and down, from the south-west
    "top": (0.0, -90.0),
    "south": (0.0, -20.0),
}
_SUN = np.array([-0.25, -0.55, 0.8])  # from the south-south-west, high: lights the oblique view
_SKY = np.array([0.85, 0.90, 0.96])


def _as_triangles(item) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vertices (N,3) ENU, faces (M,3), face colours (M,3) in [0,1]) of one input."""
    if hasattr(item, "positions"):  # a GltfMesh
        v = np.asarray(item.positions, dtype=np.float64)
        f = np.asarray(item.indices, dtype=np.int64).reshape(-1, 3)
        if item.colors is not None:
            col = np.asarray(item.colors)
            col = col[:, :3] / 255.0 if col.dtype == np.uint8 else col[:, :3].astype(float)
            fc = col[f].mean(axis=1)
        else:
            fc = np.tile(np.asarray(item.base_color[:3], float), (len(f), 1))
        return v, f, fc
    v, f, c = item
    v = np.asarray(v, dtype=np.float64)
    f = np.asarray(f, dtype=np.int64).reshape(-1, 3)
    c = np.asarray(c, dtype=np.float64)
    if c.ndim == 1:
        c = np.tile(c[:3], (len(f), 1))
    if c.max() > 1.0:
        c = c / 255.0
    return v, f, c[:, :3]


def render_preview(
    meshes_with_colors,
    path_png: str | os.PathLike,
    view: str = "oblique",
    size: tuple[int, int] = (1024, 768),
) -> Path:
    """Render meshes to a PNG and return its path.

    ``meshes_with_colors``: a list of :class:`~twin.tiles.gltf.GltfMesh` (per-vertex
    colours averaged per face) or ``(vertices, faces, face_colors)`` tuples, all in
    ENU metres. ``view``: ``"oblique"`` (from the south-west, 40 degrees down),
    ``"top"`` or ``"south"``. Memory and time grow with the pixel count (one ray per
    pixel, about 1 M rays/s) plus the triangle count (the BVH).
    """
    import trimesh
    from PIL import Image

    if view not in VIEWS:
        raise ParameterError(f"unknown view {view!r}; use one of {', '.join(VIEWS)}")
    w, h = int(size[0]), int(size[1])
    if w < 8 or h < 8:
        raise ParameterError(f"image size {size} is too small")
    vs, fs, cs = [], [], []
    off = 0
    for item in meshes_with_colors:
        v, f, c = _as_triangles(item)
        vs.append(v)
        fs.append(f + off)
        cs.append(c)
        off += len(v)
    if not vs or off == 0:
        raise ParameterError("nothing to render")
    v = np.concatenate(vs)
    f = np.concatenate(fs)
    colors = np.concatenate(cs)
    centre = (v.min(axis=0) + v.max(axis=0)) / 2.0
    v = v - centre  # embree works in float32: keep coordinates small
    mesh = trimesh.Trimesh(v, f, process=False)

    az, el = np.radians(VIEWS[view][0]), np.radians(VIEWS[view][1])
    d = np.array([np.sin(az) * np.cos(el), np.cos(az) * np.cos(el), np.sin(el)])
    right = np.cross(d, [0.0, 0.0, 1.0])
    if np.linalg.norm(right) < 1e-9:  # straight down: north is up in the picture
        right = np.array([1.0, 0.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, d)
    lo, hi = v.min(axis=0), v.max(axis=0)
    corners = np.array(
        [[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
    )
    pr, pu = corners @ right, corners @ up
    scale = 1.04 * max(np.ptp(pr) / w, np.ptp(pu) / h, 1e-9)  # metres per pixel
    cr, cu = (pr.min() + pr.max()) / 2, (pu.min() + pu.max()) / 2
    ii, jj = np.meshgrid(np.arange(w), np.arange(h))
    sr = cr + (ii.ravel() + 0.5 - w / 2) * scale
    su = cu - (jj.ravel() + 0.5 - h / 2) * scale
    back = float(np.abs(corners @ d).max()) + 1.0
    origins = sr[:, None] * right + su[:, None] * up - back * d
    dirs = np.broadcast_to(d, origins.shape)
    hit = mesh.ray.intersects_first(origins, dirs)

    img = np.tile(_SKY, (w * h, 1))
    ok = hit >= 0
    n = mesh.face_normals[hit[ok]]
    n = np.where((n @ d)[:, None] > 0, -n, n)  # the side facing the camera
    sun = _SUN / np.linalg.norm(_SUN)
    shade = 0.35 + 0.65 * np.clip(n @ sun, 0.0, 1.0)
    img[ok] = colors[hit[ok]] * shade[:, None]
    rgb = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8).reshape(h, w, 3)
    path = Path(path_png)
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")
    return path
