"""Large blocks: overlapping view clusters for dense matching and fusion.

:func:`cluster_views` splits a block's views into clusters of at most ``max_views``
views, spatially, from the ground point each view looks at (:func:`view_targets`: the
camera centre pushed along its optical axis to the ground, so an oblique belongs where
it looks, not where it flies). The targets are bisected recursively along the longer
side at the median until each cell holds at most ``max_views * (1 - overlap)`` views:
those are the cell's *reference* views, and every view is a reference in exactly one
cluster. Each cluster is then filled up to ``max_views`` with the other views whose
targets lie nearest its cell (the overlap), which serve as matching sources and as
fusion partners.

:func:`dense_clustered` runs dense matching (:func:`twin.recon.mvs.compute_depth_maps`)
cluster by cluster, each reference view once, with sources chosen among its cluster's
views (clusters are built so that each reference's sources, as chosen in the whole
block, are in its cluster). Fusion (:func:`twin.recon.fuse.fuse`) runs per cluster
too: each reference view's depth map is fused once, in its own cluster, checked
against the maps of the cluster's other views; the clusters' points are then merged
on one voxel grid (:func:`twin.recon.fuse.voxel_merge`), so surface seen from two
clusters is not duplicated.

Peak memory grows with ``max_views``: the images of one cluster plus one reference
view's matching (see :mod:`twin.recon.mvs`; about 0.3 GB for a 6 MP view), then the
depth maps of one cluster during fusion (about 28 bytes a pixel each: 8 views of
6 MP ≈ 1.3 GB), plus the fused points (about 40 bytes each before the final merge).
Apart from the points it does not grow with the number of views in the block.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from twin.errors import ParameterError

log = logging.getLogger(__name__)


@dataclass
class ViewCluster:
    """Views of one cluster (indices into the block's views)."""

    refs: list[int]  # matched as references here, and only here
    views: list[int]  # refs and the overlapping neighbours (sorted)
    bounds: tuple[float, float, float, float]  # ground cell (xmin, ymin, xmax, ymax), ENU m
    stats: dict = field(default_factory=dict)

    def owns(self, xy: np.ndarray) -> np.ndarray:
        """Whether points (ENU x, y) fall in this cluster's cell (half-open)."""
        x0, y0, x1, y1 = self.bounds
        xy = np.asarray(xy, float).reshape(-1, 2)
        return (xy[:, 0] >= x0) & (xy[:, 0] < x1) & (xy[:, 1] >= y0) & (xy[:, 1] < y1)

    def to_dict(self, names: list[str] | None = None) -> dict:
        d = {
            "refs": [names[i] for i in self.refs] if names else list(self.refs),
            "views": len(self.views),
            "bounds": [float(b) for b in self.bounds],
        }
        d.update(self.stats)
        return d


def view_targets(
    centres: np.ndarray, axes: np.ndarray, ground: float | None = None, max_range: float = 5.0
) -> np.ndarray:
    """The ground point each view looks at (ENU): the centre moved along its optical
    axis ``axes`` (unit, ENU) to the height ``ground`` (default: the lowest centre less
    the median camera height spread, i.e. a plane below the cameras), at most
    ``max_range`` times the height above it; views looking up or level keep their centre.
    """
    centres = np.asarray(centres, float).reshape(-1, 3)
    axes = np.asarray(axes, float).reshape(-1, 3)
    if ground is None:
        ground = float(np.min(centres[:, 2])) - max(
            1.0, float(np.median(centres[:, 2]) - np.min(centres[:, 2]))
        )
    out = centres.copy()
    h = centres[:, 2] - ground
    down = (axes[:, 2] < -0.05) & (h > 0)
    reach = np.minimum(h[down] / -axes[down, 2], max_range * h[down])
    out[down] = centres[down] + axes[down] * reach[:, None]
    return out


def cluster_views(
    targets: np.ndarray,
    max_views: int,
    *,
    overlap: float = 0.5,
    sources: list[list[int]] | None = None,
) -> list[ViewCluster]:
    """Overlapping spatial clusters of at most ``max_views`` views (see the module
    docstring). ``targets``: the ENU ground point of each view (:func:`view_targets`),
    or camera positions. ``overlap``: the share of each cluster's views that are
    borrowed from its neighbours (0 to 0.9). ``sources``: each view's matching sources
    (indices); a cell is then also split until its views and all their sources fit in
    ``max_views``, and the sources join the cluster first, so a view is matched with
    the same sources as in the whole block. Raises :class:`ParameterError` for a
    ``max_views`` under 2."""
    targets = np.asarray(targets, float).reshape(-1, 3)
    n = len(targets)
    if max_views < 2:
        raise ParameterError(f"max_views must be 2 or more, got {max_views}")
    if not 0.0 <= overlap <= 0.9:
        raise ParameterError(f"overlap must be within [0, 0.9], got {overlap}")
    inf = float("inf")
    if n <= max_views:
        return [ViewCluster(list(range(n)), list(range(n)), (-inf, -inf, inf, inf))]
    core = max(1, int(max_views * (1.0 - overlap)))
    xy = targets[:, :2]
    leaves: list[tuple[np.ndarray, tuple]] = []
    stack = [(np.arange(n), (-inf, -inf, inf, inf))]
    while stack:
        idx, box = stack.pop()
        need = set(idx.tolist())
        if sources is not None:
            for i in idx:
                need.update(sources[i])
        if len(idx) <= 1 or (len(idx) <= core and len(need) <= max_views):
            leaves.append((idx, box))
            continue
        ext = np.ptp(xy[idx], axis=0)
        ax = int(np.argmax(ext))
        order = idx[np.argsort(xy[idx, ax], kind="stable")]
        half = len(order) // 2
        cut = 0.5 * (xy[order[half - 1], ax] + xy[order[half], ax])
        lo, hi = order[:half], order[half:]
        box_lo, box_hi = list(box), list(box)
        box_lo[2 + ax] = cut
        box_hi[ax] = cut
        if ext[ax] == 0:  # identical targets: the lower half keeps the whole cell
            box_lo = list(box)
            box_hi = [inf, inf, inf, inf]
        stack.append((hi, tuple(box_hi)))
        stack.append((lo, tuple(box_lo)))
    clusters = []
    for idx, box in leaves:
        x0, y0, x1, y1 = box
        dx = np.maximum(np.maximum(x0 - xy[:, 0], xy[:, 0] - x1), 0.0)
        dy = np.maximum(np.maximum(y0 - xy[:, 1], xy[:, 1] - y1), 0.0)
        dist = np.hypot(dx, dy)
        dist[idx] = -2.0
        if sources is not None:
            src = [j for i in idx for j in sources[i] if j not in set(idx.tolist())]
            dist[src] = -1.0
        near = np.argsort(dist, kind="stable")[: max(max_views, len(idx))]
        clusters.append(ViewCluster(sorted(int(i) for i in idx), sorted(int(i) for i in near), box))
    return clusters


def clusters_for_views(views, max_views: int, *, overlap: float = 0.5) -> list[ViewCluster]:
    """:func:`cluster_views` of :class:`twin.recon.mvs.View` objects (their targets from
    the camera centres and optical axes)."""
    C = np.array([v.centre for v in views]).reshape(-1, 3)
    A = np.array([v.R[2] for v in views]).reshape(-1, 3)
    return cluster_views(view_targets(C, A), max_views, overlap=overlap)


def dense_clustered(
    cameras: dict,
    image_dir: str | Path,
    dense_dir: str | Path,
    *,
    max_views: int,
    overlap: float = 0.5,
    scale: float = 1.0,
    points: np.ndarray | None = None,
    ranges: dict[str, tuple[float, float]] | None = None,
    which: list[str] | None = None,
    options=None,
    min_views: int = 2,
    voxel: float | None = None,
    progress=None,
):
    """Dense matching and fusion of the views of ``cameras`` (a ``cameras.json``-style
    dict) cluster by cluster (see the module docstring).

    ``which``: names of the views to reconstruct (default: all); clusters are built over
    them. ``points``: sparse world points for the depth ranges, or ``ranges`` by view
    name. Depth maps are saved as ``dense_dir/<name>.npz`` and reused when present
    (resumable). ``voxel``: the fused-point merge cell (m); default half the median
    GSD of the depth maps. Returns ``(cloud, clusters, info)``: the
    :class:`twin.recon.fuse.FusedCloud`, the :class:`ViewCluster` list (indices into
    ``which``) and a dict with the matched view names in order, seconds and megapixels.
    """
    from twin.progress import ensure
    from twin.recon import fuse as fusion
    from twin.recon import mvs

    progress = ensure(progress)
    dense_dir = Path(dense_dir)
    dense_dir.mkdir(parents=True, exist_ok=True)
    imgs = cameras["images"]
    if which is not None:
        keep = set(which)
        imgs = [im for im in imgs if im["name"] in keep]
    names = [im["name"] for im in imgs]
    # clusters from the geometry only (no image is read): where each view looks, and
    # the sources the matcher would pick for it in the whole block
    geo = [_geometry_view(cameras, im, scale) for im in imgs]
    if ranges is not None:
        rg = [ranges.get(n) for n in names]
    else:
        rg = [mvs.depth_range(v, points, default=(1.0, 1e4)) for v in geo]
    srcs = [
        mvs.select_sources(geo, i, float(np.sqrt(rg[i][0] * rg[i][1])), options or mvs.MvsOptions())
        for i in range(len(geo))
    ]
    C = np.array([v.centre for v in geo]).reshape(-1, 3)
    A = np.array([v.R[2] for v in geo]).reshape(-1, 3)
    clusters = cluster_views(view_targets(C, A), max_views, overlap=overlap, sources=srcs)
    del geo
    matched: list[str] = []
    t_match = 0.0
    mp = 0.0
    gsd: list[float] = []
    valid: list[float] = []
    with progress.step("dense matching by cluster", total=len(clusters)) as advance:
        for c in clusters:
            sub = {**cameras, "images": [imgs[i] for i in c.views]}
            views = mvs.load_views(sub, Path(image_dir), scale=scale)
            local = {i: k for k, i in enumerate(c.views)}
            refs = [local[i] for i in c.refs]
            t0 = time.perf_counter()
            maps = mvs.compute_depth_maps(
                views,
                ranges=[rg[i] for i in c.views],
                options=options,
                out_dir=dense_dir,
                which=refs,
            )
            t_match += time.perf_counter() - t0
            for k, m in zip(refs, maps, strict=True):
                matched.append(views[k].name)
                mp += views[k].shape[0] * views[k].shape[1] / 1e6
                valid.append(float((m.depth > 0).mean()))
                d = m.depth[m.depth > 0]
                if len(d):
                    gsd.append(float(np.median(d)) / float(views[k].K[0, 0]))
            del maps, views
            advance(1)
    if voxel is None:
        voxel = 0.5 * (float(np.median(gsd)) if gsd else 0.1)
    # fusion: each cluster fuses its reference views' maps, checked against the maps of
    # all its views (the reference's sources and neighbours); the others' own points
    # are left to their clusters (their confidence is marked and the points dropped)
    parts = []
    t0 = time.perf_counter()
    with progress.step("fusion by cluster", total=len(clusters)) as advance:
        for c in clusters:
            sub = {**cameras, "images": [imgs[i] for i in c.views]}
            views = mvs.load_views(sub, Path(image_dir), scale=scale)
            refs = set(c.refs)
            maps = []
            for i, v in zip(c.views, views, strict=True):
                m = mvs.DepthMap.load(dense_dir / mvs.map_file_name(v.name))
                if i not in refs:
                    m.confidence = np.full(m.depth.shape, -1.0, np.float32)
                maps.append(m)
            cloud = fusion.fuse(views, maps, min_views=min_views, voxel=None)
            mine = cloud.confidence >= 0
            c.stats = {"points_before_merge": int(mine.sum())}
            parts.append(fusion.FusedCloud(*(a[mine] for a in _fields(cloud))))
            del maps, views, cloud
            advance(1)
    cloud = fusion.FusedCloud(*(np.concatenate([_fields(p)[q] for p in parts]) for q in range(5)))
    del parts
    cloud = fusion.voxel_merge(cloud, voxel)
    info = {
        "matched": matched,
        "names": names,
        "dense_s": t_match,
        "fusion_s": time.perf_counter() - t0,
        "megapixels": mp,
        "valid_pixel_share": float(np.mean(valid)) if valid else 0.0,
        "median_gsd_m": float(np.median(gsd)) if gsd else None,
        "voxel_m": voxel,
    }
    return cloud, clusters, info


def _geometry_view(cameras: dict, im: dict, scale: float):
    """A :class:`twin.recon.mvs.View` with the camera of ``im`` and no pixels (a
    zero-stride stand-in image of the right size) for source selection."""
    from twin.recon.mvs import View

    sensors = cameras.get("cameras") or cameras.get("sensors")
    cam = sensors[im.get("camera") or im.get("sensor")]
    w, h = int(cam["width"]), int(cam["height"])
    K = np.array([[cam["fx"], 0, cam["cx"]], [0, cam["fy"], cam["cy"]], [0, 0, 1.0]])
    if scale != 1.0:
        nw, nh = max(8, int(round(w * scale))), max(8, int(round(h * scale)))
        K = np.diag([nw / w, nh / h, 1.0]) @ K
        w, h = nw, nh
    rgb = np.broadcast_to(np.zeros(1, np.uint8), (h, w, 3))
    return View(im["name"], K, np.asarray(im["R"], float), np.asarray(im["t"], float), rgb)


def _fields(cloud) -> tuple:
    return (cloud.xyz, cloud.rgb, cloud.normal, cloud.views, cloud.confidence)
