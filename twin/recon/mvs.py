"""Dense matching on the CPU: per-view depth and normal maps (our Numba kernels).

For each reference view:

1. **Source views** (:func:`select_sources`): views whose frustum covers the
   reference's scene (points at its median depth on a 6 x 5 pixel grid) and whose
   triangulation angle there is useful (weighted around 12 degrees; below 2 or above
   50 degrees counts nothing), best ``max_sources``.
2. **Coarse plane sweep** (:func:`twin.recon._mvs_kernels.plane_sweep`) on a
   downscaled copy (long side about ``coarse_size`` px): inverse-depth samples over the
   view's depth range, for the ground normal and the façade normals an oblique view
   predicts (horizontal, facing the camera, and 60 degrees either side); bilateral-
   weighted NCC cost aggregated over the best ``nbest`` of the sources that see the
   window (occlusion-robust; at least two must).
3. **PatchMatch** at full resolution (:func:`twin.recon._mvs_kernels.patchmatch_pass`):
   the sweep's planes upsampled, then red-black propagation of the planes of the
   adjacent pixels and of the best pixel up to 15 px away in each direction (reaching
   across weak texture), and random refinement of depth and normal.
4. Pixels whose cost stays above ``max_cost`` are dropped; ``confidence`` is
   ``1 - cost / max_cost``. Multi-view geometric consistency is checked in
   :func:`twin.recon.fuse.fuse`.

Cameras are pinhole after undistortion (SIMPLE_RADIAL images are resampled).
Peak memory per reference view: the reference and its sources as float32 grey
(4 bytes x pixels x (1 + max_sources)) plus its maps (~24 bytes a pixel), about
0.3 GB for a 6 MP view with five sources.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from twin.errors import InputError

log = logging.getLogger(__name__)


@dataclass
class View:
    """A calibrated, undistorted image: ``x_cam = R @ X + t``; pixel = K x_cam."""

    name: str
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    rgb: np.ndarray  # (H, W, 3) uint8

    @property
    def centre(self) -> np.ndarray:
        return -self.R.T @ self.t

    @property
    def shape(self) -> tuple[int, int]:
        return self.rgb.shape[:2]

    def grey(self) -> np.ndarray:
        g = self.rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.ascontiguousarray(g / 255.0)

    def project(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixels (u, v) and depths of world points."""
        x = X @ self.R.T + self.t
        z = x[:, 2]
        uv = (x @ self.K.T)[:, :2] / np.where(np.abs(z) < 1e-12, 1e-12, z)[:, None]
        return uv, z


@dataclass
class MvsOptions:
    max_sources: int = 5
    nbest: int = 3
    half: int = 4  # window half size (px); samples every `step` px
    step: int = 2
    coarse_size: int = 160
    depth_samples: int = 32
    iterations: int = 3
    max_cost: float = 0.8  # kept in the maps; fusion applies its own (stricter) bound
    spread: float = 0.6
    min_angle_deg: float = 2.0
    max_angle_deg: float = 50.0


@dataclass
class DepthMap:
    name: str
    depth: np.ndarray  # (H, W) float32, 0 = none
    normal: np.ndarray  # (H, W, 3) float32, reference camera coordinates
    cost: np.ndarray  # (H, W) float32
    confidence: np.ndarray  # (H, W) float32 in [0, 1]
    sources: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def save(self, path: Path) -> None:
        from twin.fileio import atomic_path

        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(
                    f,
                    depth=self.depth,
                    normal=self.normal.astype(np.float16),
                    cost=self.cost.astype(np.float32),
                    confidence=self.confidence.astype(np.float16),
                    sources=np.asarray(self.sources, np.int32),
                    seconds=np.float64(self.seconds),
                    name=np.array(self.name),
                )

    @classmethod
    def load(cls, path: Path) -> DepthMap:
        with np.load(path) as z:
            return cls(
                str(z["name"]),
                z["depth"],
                z["normal"].astype(np.float32),
                z["cost"].astype(np.float32),
                z["confidence"].astype(np.float32),
                z["sources"].tolist(),
                float(z["seconds"]),
            )


# ----------------------------------------------------------------------- inputs
def undistort_rgb(rgb: np.ndarray, f: float, cx: float, cy: float, k1: float) -> np.ndarray:
    """Resample a SIMPLE_RADIAL image to the pinhole camera with the same f, cx, cy."""
    if k1 == 0:
        return rgb
    from scipy.ndimage import map_coordinates

    h, w = rgb.shape[:2]
    v, u = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    x = (u - cx) / f
    y = (v - cy) / f
    s = 1 + k1 * (x * x + y * y)
    ud = f * x * s + cx - 0.5
    vd = f * y * s + cy - 0.5
    out = np.empty_like(rgb)
    for ch in range(rgb.shape[2]):
        out[..., ch] = map_coordinates(rgb[..., ch], [vd, ud], order=1, mode="nearest")
    return out


def map_file_name(name: str) -> str:
    """File name of a view's depth map: the image name without its suffix, folders
    joined by ``__`` (photos in subfolders may share a file name)."""
    p = Path(name)
    return "__".join([*p.parent.parts, p.stem]) + ".npz"


def load_views(cameras: dict, image_dir: Path, *, scale: float = 1.0) -> list[View]:
    """Views of a ``cameras.json``-style dict (``sfm.cameras_dict`` output or the
    synthetic survey's file), images read from ``image_dir`` and resized by ``scale``."""
    from PIL import Image

    views = []
    sensors = cameras.get("cameras") or cameras.get("sensors")
    for im in cameras["images"]:
        cam = sensors[im.get("camera") or im.get("sensor")]
        fname = im.get("file") or im["name"]
        path = Path(image_dir) / fname
        if not path.exists() and (Path(image_dir) / f"{fname}.jpg").exists():
            path = Path(image_dir) / f"{fname}.jpg"
        try:
            with Image.open(path) as img:
                rgb = np.asarray(img.convert("RGB"))
        except OSError as exc:
            raise InputError(f"cannot read the image: {exc}", path=path) from None
        K = np.array([[cam["fx"], 0, cam["cx"]], [0, cam["fy"], cam["cy"]], [0, 0, 1.0]])
        k1 = float(cam.get("k1", 0.0))
        if k1:
            rgb = undistort_rgb(rgb, 0.5 * (cam["fx"] + cam["fy"]), cam["cx"], cam["cy"], k1)
        if scale != 1.0:
            h, w = rgb.shape[:2]
            nw, nh = max(8, int(round(w * scale))), max(8, int(round(h * scale)))
            rgb = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.BILINEAR))
            K = np.diag([nw / w, nh / h, 1.0]) @ K
        views.append(
            View(im["name"], K, np.asarray(im["R"], float), np.asarray(im["t"], float), rgb)
        )
    return views


def depth_range(view: View, points: np.ndarray | None, default=None) -> tuple[float, float]:
    """Depth range of a view from world points it sees (2-98 percentile, widened)."""
    if points is not None and len(points):
        uv, z = view.project(points)
        h, w = view.shape
        ok = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 1] >= 0) & (uv[:, 0] < w) & (uv[:, 1] < h)
        if ok.sum() >= 10:
            lo, hi = np.percentile(z[ok], [2, 98])
            return float(lo * 0.85), float(hi * 1.15)
    if default is None:
        raise InputError(f"view {view.name}: no points to set its depth range")
    return default


def select_sources(views: list[View], i: int, depth: float, options: MvsOptions) -> list[int]:
    """Indices of the best source views for view ``i`` (see the module docstring)."""
    ref = views[i]
    h, w = ref.shape
    u, v = np.meshgrid(np.linspace(0.1, 0.9, 6) * w, np.linspace(0.1, 0.9, 5) * h)
    rays = np.linalg.inv(ref.K) @ np.vstack([u.ravel(), v.ravel(), np.ones(u.size)])
    X = (ref.R.T @ (rays * depth - ref.t[:, None])).T
    scores = []
    for j, vj in enumerate(views):
        if j == i:
            continue
        uv, z = vj.project(X)
        hj, wj = vj.shape
        inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 1] >= 0) & (uv[:, 0] < wj) & (uv[:, 1] < hj)
        if inside.sum() < 3:
            continue
        a = ref.centre - X
        b = vj.centre - X
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        ang = np.degrees(np.arccos(np.clip(cos, -1, 1)))
        if np.median(ang[inside]) > options.max_angle_deg:
            continue
        sigma = np.where(ang < 12, 5.0, 15.0)
        wgt = np.exp(-((ang - 12) ** 2) / (2 * sigma**2))
        wgt[(ang < options.min_angle_deg) | (ang > options.max_angle_deg)] = 0
        # the source must look the same way (similar appearance for NCC)
        look = float(ref.R[2] @ vj.R[2])
        if look < np.cos(np.radians(60)):
            continue
        scores.append((float((wgt * inside).sum()) * look, j))
    scores.sort(reverse=True)
    if not scores:
        return []
    top = scores[0][0]
    return [j for s, j in scores[: options.max_sources] if s > 0.05 * top]


def _downscale(img: np.ndarray, f: int) -> np.ndarray:
    if f == 1:
        return img
    h, w = (img.shape[0] // f) * f, (img.shape[1] // f) * f
    return img[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3)).astype(np.float32)


def _stack(imgs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    H = max(i.shape[0] for i in imgs)
    W = max(i.shape[1] for i in imgs)
    out = np.zeros((len(imgs), H, W), np.float32)
    dims = np.zeros((len(imgs), 2), np.int64)
    for k, im in enumerate(imgs):
        out[k, : im.shape[0], : im.shape[1]] = im
        dims[k] = im.shape
    return out, dims


def _scaled_K(K: np.ndarray, f: int) -> np.ndarray:
    S = np.diag([1.0 / f, 1.0 / f, 1.0])
    return S @ K


def sweep_normals(view: View) -> np.ndarray:
    """Plane normals (reference-camera coordinates) for the sweep: the ground normal
    and, for a tilted view, façade normals facing the camera and 60 degrees aside."""
    world = [np.array([0.0, 0.0, 1.0])]
    axis = view.R[2]
    horiz = np.array([axis[0], axis[1], 0.0])
    if np.linalg.norm(horiz) > np.sin(np.radians(20)):
        a = np.arctan2(-horiz[1], -horiz[0])
        for da in (0.0, np.radians(60), -np.radians(60)):
            world.append(np.array([np.cos(a + da), np.sin(a + da), 0.0]))
    else:  # near nadir: the four façade directions of the image axes
        for vec in (view.R[0], -view.R[0], view.R[1], -view.R[1]):
            hv = np.array([vec[0], vec[1], 0.0])
            world.append(hv / max(np.linalg.norm(hv), 1e-9))
    return np.array([view.R @ n for n in world])


def compute_depth_map(
    views: list[View],
    i: int,
    sources: list[int],
    drange: tuple[float, float],
    options: MvsOptions | None = None,
    greys: dict | None = None,
) -> DepthMap:
    """Depth, normal, cost and confidence maps of view ``i`` against ``sources``."""
    from twin.recon import _mvs_kernels as kern

    options = options or MvsOptions()
    t0 = time.perf_counter()
    ref = views[i]
    h, w = ref.shape
    if not sources:
        z = np.zeros((h, w), np.float32)
        return DepthMap(ref.name, z, np.zeros((h, w, 3), np.float32), z + 2, z, [], 0.0)
    greys = greys if greys is not None else {}

    def grey(k):
        if k not in greys:
            greys[k] = views[k].grey()
        return greys[k]

    Rs = np.array([views[j].R @ ref.R.T for j in sources])
    ts = np.array([views[j].t - Rs[k] @ ref.t for k, j in enumerate(sources)])
    dmin, dmax = drange
    # coarse plane sweep
    f = max(1, int(round(max(h, w) / options.coarse_size)))
    g_ref = grey(i)
    cref = _downscale(g_ref, f)
    csrc, cdims = _stack([_downscale(grey(j), f) for j in sources])
    cKs = np.array([_scaled_K(views[j].K, f) for j in sources])
    cKinv = np.linalg.inv(_scaled_K(ref.K, f))
    inv = np.linspace(1.0 / dmax, 1.0 / dmin, options.depth_samples)
    depths = 1.0 / inv
    normals = sweep_normals(ref)
    nbest = min(options.nbest, len(sources))
    half_c = max(2, options.half // max(1, f // 2))
    step_c = max(1, options.step * half_c // max(options.half, 1))
    cd, cn, cc = kern.plane_sweep(
        cref, csrc, cdims, cKs, Rs, ts, cKinv, depths, normals, half_c, step_c, nbest
    )
    # upsample to full resolution
    rr = np.minimum(np.arange(h) // f, cd.shape[0] - 1)
    cc_idx = np.minimum(np.arange(w) // f, cd.shape[1] - 1)
    depth = np.ascontiguousarray(cd[rr][:, cc_idx])
    normal = np.ascontiguousarray(cn[rr][:, cc_idx])
    srcs, dims = _stack([grey(j) for j in sources])
    Ks = np.array([views[j].K for j in sources])
    Kinv = np.linalg.inv(ref.K)
    cost = kern.evaluate(
        g_ref, srcs, dims, Ks, Rs, ts, Kinv, depth, normal, options.half, options.step, nbest
    )
    # evaluate the upsampled planes at full resolution, then PatchMatch
    for it in range(options.iterations):
        for colour in (0, 1):
            kern.patchmatch_pass(
                g_ref, srcs, dims, Ks, Rs, ts, Kinv, depth, normal, cost, colour, it,
                dmin, dmax, options.half, options.step, nbest, options.spread,
            )  # fmt: skip
    bad = (cost > options.max_cost) | (depth <= 0)
    depth[bad] = 0
    conf = np.clip(1.0 - cost / options.max_cost, 0, 1).astype(np.float32)
    conf[bad] = 0
    return DepthMap(
        ref.name,
        depth.astype(np.float32),
        normal.astype(np.float32),
        cost.astype(np.float32),
        conf,
        list(sources),
        time.perf_counter() - t0,
    )


def compute_depth_maps(
    views: list[View],
    *,
    points: np.ndarray | None = None,
    ranges: list[tuple[float, float]] | None = None,
    options: MvsOptions | None = None,
    out_dir: Path | None = None,
    which: list[int] | None = None,
    progress=None,
) -> list[DepthMap]:
    """Depth maps of ``views`` (or of the indices ``which``), sources chosen among all.

    Depth ranges come from ``ranges`` or from the world ``points`` (sparse SfM points)
    each view sees. With ``out_dir`` each map is saved as ``<name>.npz`` and an
    existing one is loaded instead of recomputed (resumable). Memory: one reference
    view and its sources at a time, plus the maps returned.
    """
    from twin.progress import ensure

    options = options or MvsOptions()
    progress = ensure(progress)
    which = list(range(len(views))) if which is None else list(which)
    out: list[DepthMap] = []
    with progress.step("dense matching", total=len(which)) as advance:
        for i in which:
            dst = Path(out_dir) / map_file_name(views[i].name) if out_dir else None
            if dst is not None and dst.exists():
                out.append(DepthMap.load(dst))
                advance(1)
                continue
            dr = ranges[i] if ranges is not None else depth_range(views[i], points)
            srcs = select_sources(views, i, float(np.sqrt(dr[0] * dr[1])), options)
            dm = compute_depth_map(views, i, srcs, dr, options)
            log.info(
                "%s: %d sources, %.0f%% pixels, %.1f s",
                views[i].name,
                len(srcs),
                100 * float((dm.depth > 0).mean()),
                dm.seconds,
            )
            if dst is not None:
                dm.save(dst)
            out.append(dm)
            advance(1)
    return out
