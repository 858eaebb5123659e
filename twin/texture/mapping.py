"""Texture a mesh from georeferenced photos: the whole chain in one call.

:func:`texture_mesh` runs, for a mesh in a local ENU frame and :class:`View` s in
the same frame:

1. visibility and quality of every (face, view) pair (:mod:`twin.texture.select`),
   then a photo-consistency check that drops views whose colour of a face disagrees
   with the other views (something unmodelled in front of it);
2. per-face view selection by alpha expansion on a Potts MRF;
3. global and local colour levelling across seams (:mod:`twin.texture.level`);
4. charts, packing and baking into texture pages (:mod:`twin.texture.atlas`).

Views without an image, with an unreadable one, or seeing no face are reported in
``report["views"]`` and left out; the rest still texture the mesh. Faces no view sees
are filled with the mean colour of the textured faces around them and flagged in
``TexturedMesh.unseen``; they never borrow a photo that does not show them.

Peak memory grows with the photos kept for baking (3 bytes per pixel of each view
that textures at least one face, padded to the largest view), the texture pages
(4 bytes per texel) and the mesh (~300 bytes per face).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np

from twin.errors import InputError, ParameterError, TwinError
from twin.progress import Progress, ensure
from twin.texture import atlas as _atlas
from twin.texture import level as _level
from twin.texture import select as _select
from twin.texture.views import View, load_image

log = logging.getLogger(__name__)


@dataclass
class TextureParams:
    """Knobs of :func:`texture_mesh` (defaults suit aerial surveys).

    ``smoothness``: Potts weight of the view selection (data costs are in [0, 1]);
    ``max_angle_deg``: steepest viewing angle to a face normal a view may texture;
    ``levelling``: "global+local", "global" or "none"; ``scale``: texels per photo
    pixel; ``margin``: bleeding texels around each patch; ``max_size``: largest page
    side (a power of two <= 8192); ``consistency``: a view whose colour of a face
    differs from the face's consensus over 3+ views by more than this (grey levels)
    is not used for it (0 turns the check off)."""

    smoothness: float = 0.5
    max_angle_deg: float = 80.0
    levelling: str = "global+local"
    scale: float = 1.0
    margin: int = 2
    max_size: int = 8192
    local_band: float = 1.0
    consistency: float = 30.0

    def __post_init__(self) -> None:
        if self.levelling not in ("global+local", "global", "none"):
            raise ParameterError(
                f"levelling={self.levelling!r} must be 'global+local', 'global' or 'none'"
            )
        if self.smoothness < 0:
            raise ParameterError(f"smoothness={self.smoothness} must be >= 0")
        if not 0 < self.max_angle_deg < 90:
            raise ParameterError(f"max_angle_deg={self.max_angle_deg} must be in (0, 90)")
        if self.max_size > 8192:
            raise ParameterError(f"max_size={self.max_size} must be <= 8192")
        if self.consistency < 0:
            raise ParameterError(f"consistency={self.consistency} must be >= 0")
        if not 0 <= self.margin <= 64:
            raise ParameterError(f"margin={self.margin} must be in [0, 64]")


@dataclass
class TexturedMesh:
    """A textured mesh: per-chart split ``vertices`` (N, 3) ENU, ``faces`` (M, 3)
    into them (same face order as the input), ``uv`` (N, 2) glTF texture coordinates
    of each vertex in its face's page, ``face_page`` (M,), ``pages`` (H, W, 3) uint8
    images, ``labels`` (M,) the view index that textures each face (-1: unseen),
    ``unseen`` (M,) bool, ``view_names`` and a ``report`` dict."""

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray
    face_page: np.ndarray
    pages: list[np.ndarray]
    labels: np.ndarray
    unseen: np.ndarray
    view_names: list[str]
    report: dict = field(default_factory=dict)
    source_vertex: np.ndarray | None = None  # input vertex of each output vertex

    def face_uv(self) -> np.ndarray:
        """(M, 3, 2) UVs of each face's corners."""
        return self.uv[self.faces]


def _check_mesh(vertices, faces) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0:
        raise InputError(f"mesh vertices must be (N, 3), got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
        raise InputError(f"mesh faces must be (M, 3) triangles, got {f.shape}")
    f = f.astype(np.int64)
    if f.min() < 0 or f.max() >= len(v):
        raise InputError("a face refers to a vertex that does not exist")
    if not np.all(np.isfinite(v)):
        raise InputError("mesh vertices contain NaN or infinity")
    return v, f


def texture_mesh(
    vertices: np.ndarray,
    faces: np.ndarray,
    views: list[View],
    params: TextureParams | None = None,
    *,
    progress: Progress | None = None,
) -> TexturedMesh:
    """Texture ``faces`` over ``vertices`` (ENU, the views' frame) from ``views``.

    See the module docstring for the steps and what peak memory grows with."""
    params = params or TextureParams()
    progress = ensure(progress)
    v, f = _check_mesh(vertices, faces)
    m = len(f)
    report: dict = {"faces": m, "vertices": len(v), "views": []}
    normals = _select.face_normals(v, f)
    degenerate = int((np.abs(normals).sum(axis=1) == 0).sum())
    with progress.step("adjacency"):
        pairs, edges, nonmanifold = _select.face_adjacency(f, len(v))
    report["nonmanifold_edges"] = nonmanifold
    report["degenerate_faces"] = degenerate
    if nonmanifold:
        log.warning("mesh has %d non-manifold edges (texturing goes on)", nonmanifold)
    # --- visibility and data term, view by view
    used_views: list[View] = []
    images: list[np.ndarray] = []
    cf, cv, cq = [], [], []

    def look(view: View):
        """One view's image, candidates and qualities (or a reason to skip it)."""
        if view.path is None:
            return "skipped: image file missing", None, None, None
        try:
            img = load_image(view)
        except TwinError as exc:
            return f"skipped: {exc}", None, None, None
        grad = _select.sobel_magnitude(img)
        idx, q = _select.view_candidates(
            v, f, normals, view, grad, max_angle_deg=params.max_angle_deg
        )
        if len(idx) == 0:
            return "skipped: sees no face of the mesh", None, idx, None
        return "used", img, idx, q

    # two views at a time: the depth buffer (Numba, nogil) and the image filters
    # (SciPy) release the GIL
    from concurrent.futures import ThreadPoolExecutor

    workers = max(1, min(2, os.cpu_count() or 1))
    with progress.step("visibility", total=len(views)) as advance:
        with ThreadPoolExecutor(workers) as pool:
            for view, (status, img, idx, q) in zip(views, pool.map(look, views), strict=True):
                entry = {"name": view.name, "status": status}
                if idx is not None:
                    entry["visible_faces"] = int(len(idx))
                report["views"].append(entry)
                advance(1)
                if status != "used":
                    log.warning("camera %s: %s", view.name, status)
                    continue
                k = len(used_views)
                used_views.append(view)
                images.append(img)
                cf.append(idx)
                cv.append(np.full(len(idx), k, dtype=np.int64))
                cq.append(q)
    if not used_views:
        raise InputError(
            "no camera sees the mesh (check that the mesh and the cameras share a frame, "
            "and that the images exist)"
        )
    cand = _select.Candidates(
        np.concatenate(cf), np.concatenate(cv), np.concatenate(cq), np.array([len(c) for c in cf])
    )
    del cf, cv, cq
    if params.consistency > 0:
        with progress.step("photo-consistency"):
            cen = v[f[cand.face]].mean(axis=1)
            col = _level.sample_views(cen, cand.view, used_views, images)
            ok = _select.photo_consistent(cand, col, m, threshold=params.consistency)
            report["inconsistent_candidates"] = int((~ok).sum())
            cand = _select.Candidates(cand.face[ok], cand.view[ok], cand.quality[ok], cand.visible)
    # --- view selection
    with progress.step("view selection (alpha expansion)"):
        cost, greedy = _select.data_costs(cand, m)
        labels, st = _select.alpha_expansion(
            m, cand.face, cand.view, cost, pairs, params.smoothness, greedy
        )
    unseen = labels < 0
    report["selection"] = {
        "smoothness": params.smoothness,
        "greedy_energy": st["initial_energy"],
        "energy": st["energy"],
        "cycles": st["cycles"],
        "moves": st["moves"],
    }
    report["unseen_faces"] = int(unseen.sum())
    if unseen.any():
        log.info("%d faces seen by no camera: filled from their neighbours", unseen.sum())
    # keep only the views that texture something
    used = np.unique(labels[labels >= 0])
    remap = np.full(len(used_views), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    labels = np.where(labels >= 0, remap[np.maximum(labels, 0)], -1)
    used_views = [used_views[i] for i in used]
    images = [images[i] for i in used]
    for e in report["views"]:
        if e.get("status") == "used" and e["name"] not in {u.name for u in used_views}:
            e["status"] = "not chosen for any face"
    # image coordinates of every face corner in its view
    img_xy = np.zeros((m, 3, 2))
    for k, view in enumerate(used_views):
        sel = np.flatnonzero(labels == k)
        uv, _ = view.project(v[f[sel]].reshape(-1, 3))
        img_xy[sel] = uv.reshape(-1, 3, 2)
    # --- colour levelling
    corr = np.zeros((m, 3, 3))
    edge_prof = np.full((m, 3), -1, dtype=np.int32)
    profiles = np.zeros((0, _level.K_SAMPLES, 3), np.float32)
    if params.levelling != "none":
        with progress.step("seam levelling"):
            seam, c1, c2 = _level.seam_samples(v, pairs, edges, labels, used_views, images)
            # crease edges (roof/wall) see different surroundings in each photo:
            # they do not measure exposure differences
            cos_seam = np.einsum("ij,ij->i", normals[pairs[seam, 0]], normals[pairs[seam, 1]])
            corr, _g, lst = _level.global_levelling(
                len(v),
                f,
                labels,
                pairs,
                edges,
                seam,
                c1,
                c2,
                seam_weight=(cos_seam > np.cos(np.radians(25.0))).astype(float),
            )
            if params.levelling == "global+local":
                edge_prof, profiles = _level.local_levelling(f, pairs, edges, seam, c1, c2, corr)
        report["levelling"] = {"mode": params.levelling, **lst}
    # --- atlas and bake
    with progress.step("atlas"):
        at = _atlas.build_atlas(
            labels,
            img_xy,
            pairs,
            scale=params.scale,
            margin=params.margin,
            max_size=params.max_size,
        )
        seen_idx = np.flatnonzero(labels >= 0)
        face_col = np.zeros((m, 3))
        if len(seen_idx):
            cen = v[f[seen_idx]].mean(axis=1)
            face_col[seen_idx] = _level.sample_views(cen, labels[seen_idx], used_views, images)
        fill = _atlas.fill_colours(at.chart, labels, pairs, face_col)
    with progress.step("bake"):
        hmax = max(im.shape[0] for im in images)
        wmax = max(im.shape[1] for im in images)
        stack = np.zeros((len(images), hmax, wmax, 3), dtype=np.uint8)
        for k, im in enumerate(images):
            stack[k, : im.shape[0], : im.shape[1]] = im
        del images
        pages = _atlas.bake_pages(
            at,
            labels,
            img_xy,
            corr.astype(np.float32),
            edge_prof,
            profiles,
            stack,
            fill,
            margin=params.margin,
            band=params.local_band,
        )
        del stack
    report["atlas"] = {
        "charts": at.n_charts,
        "fill_blocks": at.n_fill,
        "pages": [list(s) for s in at.sizes],
        "utilisation": at.utilisation,
    }
    # --- split vertices per chart (one UV per output vertex)
    key = at.chart[:, None].astype(np.int64) * len(v) + f
    uniq, first, inv = np.unique(key.ravel(), return_index=True, return_inverse=True)
    out_faces = inv.reshape(-1, 3)
    src = f.ravel()[first]
    sizes = np.array(at.sizes, dtype=np.float64)
    corner_page = np.repeat(at.page, 3)[first]
    uv = at.tex_xy.reshape(-1, 2)[first] / sizes[corner_page]
    return TexturedMesh(
        vertices=v[src],
        faces=out_faces,
        uv=uv,
        face_page=at.page,
        pages=pages,
        labels=labels,
        unseen=unseen,
        view_names=[u.name for u in used_views],
        report=report,
        source_vertex=src,
    )


def texture_files(
    mesh: str | os.PathLike,
    images: str | os.PathLike,
    cameras: str | os.PathLike,
    out: str | os.PathLike,
    params: TextureParams | None = None,
    *,
    fmt: str = "jpg",
    quality: int = 90,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict:
    """``twin texture``: read ``mesh``, the photos in ``images`` and ``cameras``
    (``cameras.json`` or a survey folder holding one), texture, and write the
    textured model into ``out`` (see :mod:`twin.texture.io`). Returns the
    ``georef.json`` dict (its ``report`` says which views were used or skipped)."""
    from twin.texture.io import FORMATS, read_mesh, write_textured
    from twin.texture.render import seam_jumps
    from twin.texture.views import read_views, to_frame

    if fmt not in FORMATS:
        raise ParameterError(f"texture format {fmt!r} must be one of {sorted(FORMATS)}")
    progress = ensure(progress)
    with progress.step("read mesh and cameras"):
        v, f, mesh_frame = read_mesh(mesh)
        views, cam_frame = read_views(cameras, images)
    frame = mesh_frame or cam_frame
    views = to_frame(views, cam_frame, frame)
    tm = texture_mesh(v, f, views, params, progress=progress)
    tm.report["seams"] = seam_jumps(tm)
    from twin.synth.camera import read_cameras

    raw = read_cameras(cameras).raw.get("crs", {})
    crs = {"label": raw.get("label"), "wkt": raw.get("wkt")} if raw else None
    with progress.step("write"):
        return write_textured(
            tm, out, frame=frame, crs=crs, fmt=fmt, quality=quality, overwrite=overwrite
        )
