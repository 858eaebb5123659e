"""Depth maps to one coloured point cloud, and writing it as LAS/LAZ.

:func:`fuse`: every valid pixel of every depth map is checked against the depth maps
of its view's sources and of the nearest other views looking the same way
(``max_partners`` in all) (:func:`twin.recon._mvs_kernels.consistency`: reprojection
within ``max_px`` pixels and depth within ``max_rel``); pixels agreed by fewer than
``min_views`` views (itself included) are dropped as outliers; the others become the
mean of the agreeing 3D points, with the reference pixel's colour, the normal of its
plane (world frame) and the number of agreeing views. Points are then merged on a
voxel grid of ``voxel`` metres (mean position, colour and normal, largest view count)
so overlapping views do not multiply the cloud.

Memory: all depth maps of the block (about 28 bytes a pixel) plus the fused points
before merging (about 40 bytes each); large blocks are fused per cluster.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twin.errors import OutputError
from twin.recon.mvs import DepthMap, View

log = logging.getLogger(__name__)


@dataclass
class FusedCloud:
    """Points in the views' world frame (ENU metres for a georeferenced block)."""

    xyz: np.ndarray  # (N, 3) float64
    rgb: np.ndarray  # (N, 3) uint8
    normal: np.ndarray  # (N, 3) float32
    views: np.ndarray  # (N,) uint8, agreeing views
    confidence: np.ndarray  # (N,) float32

    def __len__(self) -> int:
        return len(self.xyz)


def fuse(
    views: list[View],
    maps: list[DepthMap],
    *,
    indices: list[int] | None = None,
    min_views: int = 2,
    max_rel: float = 0.01,
    max_px: float = 1.0,
    voxel: float | None = None,
    max_partners: int = 10,
    max_cost: float | None = 0.7,
    progress=None,
) -> FusedCloud:
    """Fuse ``maps`` (``maps[k]`` belongs to ``views[indices[k]]``; by default
    ``indices`` is ``range(len(maps))``). See the module docstring."""
    from twin.progress import ensure
    from twin.recon import _mvs_kernels as kern

    progress = ensure(progress)
    indices = list(range(len(maps))) if indices is None else list(indices)
    by_view = {v: k for k, v in enumerate(indices)}
    parts = []
    with progress.step("fusion", total=len(maps)) as advance:
        for k, dm in enumerate(maps):
            i = indices[k]
            ref = views[i]
            d = dm.depth
            if max_cost is not None:
                d = np.where(dm.cost <= max_cost, d, 0).astype(np.float32)
            valid = d > 0
            if not valid.any():
                advance(1)
                continue
            Kinv = np.linalg.inv(ref.K)
            count = valid.astype(np.int32)
            acc = np.zeros(d.shape + (3,), np.float64)
            v, u = np.nonzero(valid)
            rays = np.stack([u + 0.5, v + 0.5, np.ones_like(u, float)])
            own = (Kinv @ rays).T * d[v, u][:, None]
            acc[v, u] = own
            for j in _partners(views, i, dm.sources, indices, max_partners):
                if j not in by_view:
                    continue
                src = views[j]
                R = src.R @ ref.R.T
                t = src.t - R @ ref.t
                mj = maps[by_view[j]]
                dj = mj.depth if max_cost is None else np.where(mj.cost <= max_cost, mj.depth, 0)
                ok, pts = kern.consistency(d, Kinv, src.K, R, t, dj, max_rel, max_px)
                count += ok
                acc += pts
            keep = valid & (count >= min_views)
            v, u = np.nonzero(keep)
            pc = acc[v, u] / count[v, u][:, None]
            xw = (pc - ref.t) @ ref.R
            nw = dm.normal[v, u] @ ref.R
            parts.append(
                (
                    xw,
                    ref.rgb[v, u],
                    nw.astype(np.float32),
                    np.minimum(count[v, u], 255).astype(np.uint8),
                    dm.confidence[v, u].astype(np.float32),
                )
            )
            advance(1)
    if not parts:
        return FusedCloud(
            np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros((0, 3), np.float32),
            np.zeros(0, np.uint8), np.zeros(0, np.float32),
        )  # fmt: skip
    cloud = FusedCloud(*(np.concatenate([p[q] for p in parts]) for q in range(5)))
    if voxel:
        cloud = voxel_merge(cloud, voxel)
    return cloud


def _partners(views, i, sources, indices, k) -> list[int]:
    """The view's matching sources, then other fused views looking the same way
    (optical axes within 60 degrees), nearest first, ``k`` in all."""
    out = [j for j in sources if j != i]
    ref = views[i]
    cand = [j for j in indices if j != i and j not in out and float(ref.R[2] @ views[j].R[2]) > 0.5]
    cand.sort(key=lambda j: float(np.linalg.norm(views[j].centre - ref.centre)))
    return (out + cand)[: max(k, len(out))]


def voxel_merge(cloud: FusedCloud, voxel: float) -> FusedCloud:
    """Mean of the points in each ``voxel``-metre cell (view count: the largest)."""
    if len(cloud) == 0:
        return cloud
    key = np.floor((cloud.xyz - cloud.xyz.min(0)) / voxel).astype(np.int64)
    _, inv, n = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    inv = inv.ravel()
    m = len(n)

    def mean(a):
        out = np.zeros((m,) + a.shape[1:], np.float64)
        np.add.at(out, inv, a)
        return out / n.reshape((-1,) + (1,) * (a.ndim - 1))

    nrm = mean(cloud.normal.astype(np.float64))
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
    views = np.zeros(m, np.uint8)
    np.maximum.at(views, inv, cloud.views)
    return FusedCloud(
        mean(cloud.xyz),
        np.clip(np.round(mean(cloud.rgb.astype(np.float64))), 0, 255).astype(np.uint8),
        nrm.astype(np.float32),
        views,
        mean(cloud.confidence.astype(np.float64)).astype(np.float32),
    )


def to_point_cloud(cloud: FusedCloud, frame, crs=None):
    """A :class:`twin.points.cloud.PointCloud` in ``crs`` (default: the UTM zone of the
    frame's origin, ellipsoidal heights) with RGB, normals, view counts, confidence."""
    from twin.crs import parse_crs, utm_crs_for
    from twin.points.cloud import PointCloud

    c = parse_crs(crs) if crs is not None else utm_crs_for(frame.lon, frame.lat)
    xyz = frame.to_crs(cloud.xyz, c) if len(cloud) else np.zeros((0, 3))
    rgb16 = cloud.rgb.astype(np.uint16) * 257
    fields = {
        "red": rgb16[:, 0],
        "green": rgb16[:, 1],
        "blue": rgb16[:, 2],
        "normal_x": cloud.normal[:, 0],
        "normal_y": cloud.normal[:, 1],
        "normal_z": cloud.normal[:, 2],
        "views": cloud.views,
        "confidence": cloud.confidence,
    }
    return PointCloud(xyz, fields=fields, crs=c, point_format=7, scales=np.full(3, 0.001))


def write_cloud(cloud: FusedCloud, path: str | Path, frame, crs=None) -> Path:
    """Write the fused points as LAS/LAZ (by extension) in ``crs`` (see
    :func:`to_point_cloud`), atomically; normals in the local ENU frame as extra bytes."""
    from twin.points.io import write

    if len(cloud) == 0:
        raise OutputError("dense matching produced no points", path=path)
    return write(to_point_cloud(cloud, frame, crs), path)
