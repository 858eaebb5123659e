"""Structure from motion with pycolmap (CPU), then georeferencing to the survey.

Steps (each function reads and writes files under a work folder so a run can resume):

1. :func:`extract_features`: a COLMAP database with one camera model per group of
   images that share intrinsics (:meth:`ImageSet.camera_groups`), focal length from
   EXIF as the prior, SIFT features (masks honoured; a low contrast threshold;
   domain-size pooled descriptors on request, about twice the CPU time).
2. :func:`match_features`: pairs chosen by :func:`select_pairs` (every pair for small
   sets; for larger ones each image's nearest neighbours by where it looks, from GPS
   and the gimbal angles, plus its nearest by camera position; images without GPS are
   paired by file order), SIFT matching and two-view geometric verification.
   :func:`apply_rig`: the photos of a multi-camera rig (same capture time, one per
   camera) become frames of one rig, so the mapper solves one pose per station.
3. :func:`map_reconstruction`: incremental mapping; when it registers under
   ``min_registered`` of the images (by default: when any image is left out; forward
   motion, a poor initial pair) the global mapper runs too and the model with more
   registered images wins.
4. :func:`georeference`: a robust similarity (RANSAC over three-camera samples, then
   Umeyama on the inliers) from SfM camera centres to the GPS positions in a local
   ENU frame (:class:`twin.crs.LocalFrame` at the mean GPS position unless given); when
   the photos carry gimbal angles, the rotation also draws on them, weighted by how
   well each source pins it down (unless the two rotations differ by more than three
   times their combined precision: a compass or boresight offset; then the GPS rotation
   stands). Ground control points, when given, join the fit (three or more with
   positions) or serve as check points, and their residuals are reported. Then
   :func:`twin.recon.georef.adjust_with_priors` adjusts the block once more with the
   GPS positions and gimbal attitudes as weighted priors.

Peak memory grows with the number of SIFT features (database) and of matched pairs;
COLMAP holds the sparse model in memory (a few hundred bytes per 3D point).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from twin.errors import InputError, TwinError
from twin.recon.images import ImageInfo, ImageSet, gimbal_rotation

log = logging.getLogger(__name__)


@dataclass
class SfmOptions:
    camera_model: str = "SIMPLE_RADIAL"
    max_image_size: int = 3200  # SIFT runs on images downscaled to this long side
    max_features: int = 8192
    exhaustive_below: int = 60  # match every pair when there are fewer images
    neighbours: int = 30  # pairs per image by viewed ground point (larger sets)
    mapper: str = "auto"  # "auto" (incremental, global fallback), "incremental", "global"
    min_registered: float = 1.0  # share of images below which the fallback runs
    num_threads: int = -1
    seed: int = 0
    refine_intrinsics: bool | None = None  # None: only cameras whose focal was guessed
    peak_threshold: float = 0.002  # SIFT contrast threshold (COLMAP's default 0.0067)
    domain_size_pooling: bool = False  # DSP-SIFT (CPU only): more matches, 2x the CPU
    rig: bool = True  # photos of a multi-camera rig mapped as a rig (see apply_rig)
    gps_prior: bool = False  # incremental mapping with the EXIF GPS as position priors
    final_refinement: bool = True  # re-triangulate every match, then a robust global BA
    # after the similarity: BA with GPS and gimbal-attitude priors (twin.recon.georef)
    prior_adjustment: bool = True


@dataclass
class Georef:
    """``enu = scale * R @ x_sfm + t`` and how well it fits."""

    scale: float
    R: np.ndarray
    t: np.ndarray
    frame: object  # twin.crs.LocalFrame
    gps_inliers: int
    gps_used: int
    gps_rmse_m: float
    gps_residuals: dict[str, list[float]] = field(default_factory=dict)
    rotation_source: str = "gps"
    gcp: dict = field(default_factory=dict)

    def apply(self, x: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(x) @ self.R.T + self.t


@contextlib.contextmanager
def quiet_colmap(level: int = 2):
    """Silence COLMAP's glog chatter (INFO/WARNING) inside the block."""
    import pycolmap

    old = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = level
    try:
        yield
    finally:
        pycolmap.logging.minloglevel = old


# ----------------------------------------------------------------------- features
def extract_features(
    images: ImageSet, database: Path, options: SfmOptions | None = None
) -> dict[str, int]:
    """Create ``database`` (replacing one there) with cameras, images and SIFT features.

    Returns image name -> COLMAP image id.
    """
    import pycolmap

    options = options or SfmOptions()
    database = Path(database)
    database.parent.mkdir(parents=True, exist_ok=True)
    for p in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        if p.exists():
            p.unlink()
    ext = pycolmap.FeatureExtractionOptions()
    ext.num_threads = options.num_threads
    ext.max_image_size = options.max_image_size
    ext.sift.max_num_features = options.max_features
    ext.sift.peak_threshold = options.peak_threshold
    ext.sift.domain_size_pooling = options.domain_size_pooling
    ids: dict[str, int] = {}
    with quiet_colmap():
        for group in images.camera_groups().values():
            im0 = group[0]
            with pycolmap.Database.open(str(database)) as db:
                cam = pycolmap.Camera.create_from_model_name(
                    0, options.camera_model, float(im0.focal_px), im0.width, im0.height
                )
                cam.has_prior_focal_length = im0.focal_source != "guess"
                cam_id = db.write_camera(cam)
            reader = pycolmap.ImageReaderOptions()
            reader.existing_camera_id = cam_id
            masked = [im for im in group if im.mask is not None]
            for subset, mask_dir in (
                ([im for im in group if im.mask is None], None),
                (masked, masked[0].mask.parent if masked else None),
            ):
                if not subset:
                    continue
                r = pycolmap.ImageReaderOptions()
                r.existing_camera_id = cam_id
                if mask_dir is not None:
                    r.mask_path = str(mask_dir)
                pycolmap.extract_features(
                    str(database),
                    str(images.folder),
                    image_names=[im.name for im in subset],
                    reader_options=r,
                    extraction_options=ext,
                    device=pycolmap.Device.cpu,
                )
        with pycolmap.Database.open(str(database)) as db:
            for im in db.read_all_images():
                ids[im.name] = im.image_id
    missing = [im.name for im in images.images if im.name not in ids]
    if missing:
        raise TwinError(f"COLMAP could not read {len(missing)} images: {missing[:5]}")
    return ids


# ----------------------------------------------------------------------- rigs
def apply_rig(images: ImageSet, database: Path) -> dict | None:
    """Declare the photos of a multi-camera rig as one rig in ``database``.

    The stations come from :meth:`ImageSet.rig_stations` (same capture time, one photo
    per camera). Every image of a station becomes part of one COLMAP frame of a rig
    whose reference sensor is the camera seen at most stations; the other cameras'
    ``cam_from_rig`` rotations start from the XMP gimbal angles (a rotation mean over
    the stations that have both photos) with no lever arm, and bundle adjustment
    refines them. Images outside the rig keep a rig and frame of their own. The
    mapper then estimates one pose per station, so a weakly tied oblique inherits the
    pose of its station. Returns a summary, or None (database unchanged) when the set
    is not from a rig or a rig photo lacks gimbal angles.
    """
    import pycolmap

    stations = images.rig_stations()
    if not stations:
        return None
    if not all(im.has_gimbal for g in stations for im in g):
        log.info("rig photos without gimbal angles: mapping them as independent cameras")
        return None
    count: dict[tuple, int] = {}
    for g in stations:
        for im in g:
            count[im.camera_key] = count.get(im.camera_key, 0) + 1
    ref_key = max(count, key=lambda k: (count[k], str(k)))

    def rot(im):
        return gimbal_rotation(im.gimbal_pitch, im.gimbal_yaw, im.gimbal_roll or 0.0)

    rel: dict[tuple, list[np.ndarray]] = {k: [] for k in count if k != ref_key}
    for g in stations:
        ref = [im for im in g if im.camera_key == ref_key]
        if not ref:
            continue
        for im in g:
            if im.camera_key != ref_key:
                rel[im.camera_key].append(rot(im) @ rot(ref[0]).T)
    if any(not v for v in rel.values()):
        log.info("a rig camera never fires with the reference camera: no rig")
        return None
    CAM = pycolmap.SensorType.CAMERA
    with pycolmap.Database.open(str(database)) as db:
        dbims = {im.name: im for im in db.read_all_images()}
        cam_of = {}
        for g in stations:
            for im in g:
                cam_of[im.camera_key] = dbims[im.name].camera_id
        rig = pycolmap.Rig()
        rig.add_ref_sensor(pycolmap.sensor_t(CAM, cam_of[ref_key]))
        spread = {}
        for k, mats in rel.items():
            Rm = _rotation_mean(np.array(mats))
            spread[str(k[1] if len(k) > 1 else k[0])] = float(
                np.max(_angle_deg(np.einsum("ij,njk->nik", Rm.T, np.array(mats))))
            )
            rig.add_sensor(
                pycolmap.sensor_t(CAM, cam_of[k]),
                pycolmap.Rigid3d(pycolmap.Rotation3d(Rm), np.zeros((3, 1))),
            )
        rig_cams = set(cam_of.values())
        db.clear_frames()
        db.clear_rigs()
        rig_id = db.write_rig(rig)
        in_frame = set()
        for g in stations:
            fr = pycolmap.Frame()
            fr.rig_id = rig_id
            for im in g:
                fr.add_data_id(dbims[im.name].data_id)
                in_frame.add(im.name)
            db.write_frame(fr)
        own_rig: dict[int, int] = {}
        for name, im in sorted(dbims.items()):
            if name in in_frame:
                continue
            if im.camera_id in rig_cams:
                rid = rig_id
            else:
                if im.camera_id not in own_rig:
                    r = pycolmap.Rig()
                    r.add_ref_sensor(pycolmap.sensor_t(CAM, im.camera_id))
                    own_rig[im.camera_id] = db.write_rig(r)
                rid = own_rig[im.camera_id]
            fr = pycolmap.Frame()
            fr.rig_id = rid
            fr.add_data_id(im.data_id)
            db.write_frame(fr)
    return {
        "stations": len(stations),
        "cameras": len(count),
        "images": sum(len(g) for g in stations),
        "reference": str(ref_key[1] if len(ref_key) > 1 else ref_key[0]),
        "gimbal_spread_deg": spread,
    }


# ----------------------------------------------------------------------- pairs
def _view_targets(images: list[ImageInfo], enu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ground point each image looks at and its viewing direction (ENU); NaN if unknown."""
    n = len(images)
    target = np.full((n, 3), np.nan)
    dirs = np.full((n, 3), np.nan)
    for i, im in enumerate(images):
        if not np.all(np.isfinite(enu[i])):
            continue
        target[i] = enu[i]
        if im.has_gimbal:
            R = gimbal_rotation(im.gimbal_pitch, im.gimbal_yaw, im.gimbal_roll or 0.0)
            d = R[2]
            dirs[i] = d
            height = im.relative_altitude if im.relative_altitude else None
            if height and height > 0 and d[2] < -0.05:
                target[i] = enu[i] + d * min(height / -d[2], 5 * height)
    return target, dirs


def select_pairs(images: list[ImageInfo], enu: np.ndarray, options: SfmOptions) -> list[tuple]:
    """Image pairs to match (names), see the module docstring."""
    n = len(images)
    if n <= options.exhaustive_below:
        return [(images[i].name, images[j].name) for i in range(n) for j in range(i + 1, n)]
    from scipy.spatial import cKDTree

    target, dirs = _view_targets(images, enu)
    pairs: set[tuple[int, int]] = set()
    ok = np.flatnonzero(np.all(np.isfinite(target), axis=1))
    k = min(options.neighbours, len(ok) - 1)
    if k > 0:
        tree_t = cKDTree(target[ok])
        tree_c = cKDTree(enu[ok])
        _, nn_t = tree_t.query(target[ok], k=min(3 * k, len(ok)))
        _, nn_c = tree_c.query(enu[ok], k=min(k // 2 + 1, len(ok)))
        for a, row in enumerate(nn_t):
            i = ok[a]
            taken = 0
            for b in np.atleast_1d(row):
                j = ok[b]
                if j == i:
                    continue
                if np.all(np.isfinite(dirs[[i, j]])) and dirs[i] @ dirs[j] < np.cos(np.radians(80)):
                    continue
                pairs.add((min(i, j), max(i, j)))
                taken += 1
                if taken >= k:
                    break
            for b in np.atleast_1d(nn_c[a]):
                j = ok[b]
                if j == i:
                    continue
                if np.all(np.isfinite(dirs[[i, j]])) and dirs[i] @ dirs[j] < np.cos(np.radians(80)):
                    continue
                pairs.add((min(i, j), max(i, j)))
    # images without a position: their neighbours in file order, and the set's
    # images spread evenly so they can still join
    nogps = [i for i in range(n) if i not in set(ok.tolist())]
    for i in nogps:
        for j in range(max(0, i - 5), min(n, i + 6)):
            if j != i:
                pairs.add((min(i, j), max(i, j)))
        for j in np.linspace(0, n - 1, min(n, 3 * options.neighbours)).astype(int):
            if j != i:
                pairs.add((min(i, j), max(i, j)))
    return [(images[i].name, images[j].name) for i, j in sorted(pairs)]


def match_features(
    images: ImageSet, database: Path, enu: np.ndarray, options: SfmOptions | None = None
) -> int:
    """Match the selected pairs and verify them; returns the number of pairs tried."""
    import pycolmap

    options = options or SfmOptions()
    pairs = select_pairs(images.images, enu, options)
    pair_file = Path(database).with_suffix(".pairs.txt")
    pair_file.write_text("".join(f"{a} {b}\n" for a, b in pairs))
    mo = pycolmap.FeatureMatchingOptions()
    mo.num_threads = options.num_threads
    mo.use_gpu = False
    po = pycolmap.ImportedPairingOptions()
    po.match_list_path = str(pair_file)
    with quiet_colmap():
        pycolmap.match_image_pairs(
            str(database), matching_options=mo, pairing_options=po, device=pycolmap.Device.cpu
        )
    return len(pairs)


# ----------------------------------------------------------------------- mapping
def _best(recs: dict) -> object | None:
    if not recs:
        return None
    return max(recs.values(), key=lambda r: (r.num_reg_images(), r.num_points3D()))


def map_reconstruction(
    images: ImageSet, database: Path, out: Path, options: SfmOptions | None = None
) -> tuple[object, dict]:
    """Run the mapper(s); returns the best ``pycolmap.Reconstruction`` and a report."""
    import pycolmap

    options = options or SfmOptions()
    out = Path(out)
    n = len(images.images)
    refine = options.refine_intrinsics
    if refine is None:
        refine = any(im.focal_source == "guess" for im in images.images)
    guessed = {im.name for im in images.images if im.focal_source == "guess"}
    with pycolmap.Database.open(str(database)) as db:
        trusted = {i.camera_id for i in db.read_all_images() if i.name not in guessed}
        trusted -= {i.camera_id for i in db.read_all_images() if i.name in guessed}
    report: dict = {"tried": [], "refine_intrinsics": bool(refine)}
    best = None
    with quiet_colmap():
        if options.mapper in ("auto", "incremental"):
            t0 = time.perf_counter()
            io = pycolmap.IncrementalPipelineOptions()
            io.num_threads = options.num_threads
            io.random_seed = options.seed
            io.multiple_models = False
            if options.gps_prior:
                io.use_prior_position = True
            if not refine:
                io.ba_refine_focal_length = False
                io.ba_refine_extra_params = False
                io.mapper.abs_pose_refine_focal_length = False
                io.mapper.abs_pose_refine_extra_params = False
            elif trusted and options.refine_intrinsics is None:
                # refine only the cameras whose focal length was guessed
                io.constant_cameras = trusted
                io.mapper.constant_cameras = trusted
            (out / "incremental").mkdir(parents=True, exist_ok=True)
            rec = _best(
                pycolmap.incremental_mapping(
                    str(database), str(images.folder), str(out / "incremental"), io
                )
            )
            reg = rec.num_reg_images() if rec else 0
            report["tried"].append(
                {"mapper": "incremental", "registered": reg, "s": time.perf_counter() - t0}
            )
            best = rec
        if options.mapper == "global" or (
            options.mapper == "auto"
            and (best is None or best.num_reg_images() < options.min_registered * n)
        ):
            t0 = time.perf_counter()
            go = pycolmap.GlobalPipelineOptions()
            go.num_threads = options.num_threads
            go.random_seed = options.seed
            if not refine:
                go.mapper.bundle_adjustment.refine_focal_length = False
                go.mapper.bundle_adjustment.refine_extra_params = False
            (out / "global").mkdir(parents=True, exist_ok=True)
            rec = _best(
                pycolmap.global_mapping(str(database), str(images.folder), str(out / "global"), go)
            )
            reg = rec.num_reg_images() if rec else 0
            report["tried"].append(
                {"mapper": "global", "registered": reg, "s": time.perf_counter() - t0}
            )
            if rec is not None and (best is None or reg > best.num_reg_images()):
                best = rec
    if best is None or best.num_reg_images() < 2:
        raise TwinError(
            f"structure from motion failed: no two of the {n} images could be registered "
            "(too little overlap or texture?)"
        )
    report["mapper"] = next(
        t["mapper"] for t in report["tried"] if t["registered"] == best.num_reg_images()
    )
    return best, report


def refine_reconstruction(rec, database: Path, image_dir: Path, out: Path, options=None):
    """Re-triangulate all verified matches against ``rec``'s poses (keeping its points,
    adding two-view tracks) and run a global bundle adjustment with a soft-L1 loss;
    returns the refined reconstruction and its statistics before and after.

    The incremental mapper leaves many matches untriangulated (tracks seen in only two
    images, points filtered on the way); with them, end-of-strip cameras are tied by
    2-3 times as many points and their rotation and position errors shrink."""
    import pycolmap

    options = options or SfmOptions()
    t0, c0 = time.perf_counter(), time.process_time()
    before = reprojection_stats(rec)
    io = pycolmap.IncrementalPipelineOptions()
    io.num_threads = options.num_threads
    io.triangulation.ignore_two_view_tracks = False
    Path(out).mkdir(parents=True, exist_ok=True)
    with quiet_colmap():
        rec = pycolmap.triangulate_points(
            rec, str(database), str(image_dir), str(out), clear_points=False, options=io
        )
        ba = pycolmap.BundleAdjustmentOptions()
        refine = options.refine_intrinsics
        if not refine:
            ba.refine_focal_length = False
            ba.refine_extra_params = False
        ba.ceres.loss_function_type = pycolmap.LossFunctionType.SOFT_L1
        ba.print_summary = False
        ba.ceres.solver_options.num_threads = options.num_threads
        pycolmap.bundle_adjustment(rec, ba)
    return rec, {
        "before": before,
        "after": reprojection_stats(rec),
        "s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
    }


# ----------------------------------------------------------------------- georeferencing
def umeyama(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None):
    """Least-squares similarity ``dst ≈ s R src + t`` (Umeyama 1991)."""
    src = np.asarray(src, float)
    dst = np.asarray(dst, float)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, float)
    w = w / w.sum()
    ms, md = w @ src, w @ dst
    xs, xd = src - ms, dst - md
    cov = (xd * w[:, None]).T @ xs
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1
    R = U @ D @ Vt
    var = (w * (xs**2).sum(1)).sum()
    s = float(np.trace(np.diag(S) @ D) / var) if var > 0 else 1.0
    return s, R, md - s * R @ ms


def _scale_translation(src, dst, R):
    ms, md = src.mean(0), dst.mean(0)
    xs, xd = src - ms, dst - md
    s = float((xd * (xs @ R.T)).sum() / max((xs**2).sum(), 1e-300))
    return s, md - s * R @ ms


def robust_similarity(
    src: np.ndarray, dst: np.ndarray, threshold: float, *, iters: int = 2000, seed: int = 0
):
    """RANSAC over three-point samples with Umeyama refits; returns (s, R, t, inliers)."""
    n = len(src)
    if n < 3:
        raise TwinError(f"georeferencing needs three or more GPS positions, got {n}")
    rng = np.random.default_rng(seed)
    best = None
    best_score = -1.0
    for _ in range(iters if n > 3 else 1):
        idx = rng.choice(n, 3, replace=False)
        a = src[idx]
        if np.linalg.norm(np.cross(a[1] - a[0], a[2] - a[0])) < 1e-12 * max(
            np.ptp(src, axis=0).max() ** 2, 1e-300
        ):
            continue
        s, R, t = umeyama(a, dst[idx])
        r = np.linalg.norm(s * src @ R.T + t - dst, axis=1)
        inl = r < threshold
        score = inl.sum() - (r[inl] / threshold).sum() * 1e-3
        if score > best_score:
            best, best_score = inl, score
    if best is None or best.sum() < 3:
        best = np.ones(n, bool)
    for _ in range(5):
        s, R, t = umeyama(src[best], dst[best])
        r = np.linalg.norm(s * src @ R.T + t - dst, axis=1)
        new = r < threshold
        if new.sum() < 3 or np.array_equal(new, best):
            break
        best = new
    return s, R, t, best


def _rotation_mean(mats: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    w = np.ones(len(mats)) if weights is None else weights
    M = np.einsum("i,ijk->jk", w, mats)
    U, _, Vt = np.linalg.svd(M)
    D = np.eye(3)
    D[2, 2] = np.sign(np.linalg.det(U @ Vt))
    return U @ D @ Vt


def _level_about_line(rec, src, dst, s, R, t, axis):
    """For aerial blocks whose cameras lie on a line (one strip) and carry no attitude:
    the rotation about that line (ENU ``axis``) that makes the sparse points' best plane
    level, cameras above it. None unless the points are flat (plane thickness under a
    third of its narrower extent) and the cameras stand well above them (more than
    half that extent): street-level sets are left alone. Returns R, s, t, degrees."""
    X = np.array([p.xyz for _, p in rec.points3D.items()]).reshape(-1, 3)
    if len(X) < 20:
        return None
    P = s * X @ R.T + t
    C = s * src @ R.T + t
    c0 = np.median(P, axis=0)
    w, V = np.linalg.eigh(np.cov((P - c0).T))
    n = V[:, 0]
    h = (C - c0) @ n
    if np.median(h) < 0:
        n, h = -n, -h
    if np.sqrt(w[0]) > np.sqrt(w[1]) / 3.0 or np.median(h) < 0.5 * np.sqrt(w[1]):
        return None
    a = axis / np.linalg.norm(axis)
    z = np.array([0.0, 0.0, 1.0])
    n_p, z_p = n - (n @ a) * a, z - (z @ a) * a
    theta = float(np.arctan2(a @ np.cross(n_p, z_p), n_p @ z_p))
    R2 = _rotvec_matrix(a * theta) @ R
    s2, t2 = _scale_translation(src, dst, R2)
    return R2, s2, t2, float(np.degrees(abs(theta)))


def _fit_with_attitude(src, dst, R0, var_c: float, sig_rot: float):
    """Similarity ``dst ≈ s R src + t`` with a prior ``R ≈ R0`` (σ ``sig_rot`` radians)
    and position residuals of variance ``var_c`` per coordinate; returns R, s, t."""
    from scipy.optimize import least_squares

    s0, t0 = _scale_translation(src, dst, R0)

    def fun(x):
        R = _rotvec_matrix(x[:3]) @ R0
        r = np.exp(x[3]) * src @ R.T + x[4:] - dst
        return np.concatenate([r.ravel() / np.sqrt(var_c), x[:3] / sig_rot])

    x = least_squares(fun, np.r_[0.0, 0.0, 0.0, np.log(s0), t0], method="lm").x
    return _rotvec_matrix(x[:3]) @ R0, float(np.exp(x[3])), x[4:]


def _rotvec(R: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(R).as_rotvec()


def _rotvec_matrix(v: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(v).as_matrix()


def _angle_deg(R: np.ndarray) -> np.ndarray:
    tr = np.trace(R, axis1=-2, axis2=-1)
    return np.degrees(np.arccos(np.clip((tr - 1) / 2, -1, 1)))


def camera_poses(rec) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Image name -> (R world-to-camera, camera centre) of a registered image."""
    out = {}
    for _, im in rec.images.items():
        if not im.has_pose:
            continue
        T = im.cam_from_world()
        R = T.rotation.matrix()
        out[im.name] = (R, -R.T @ T.translation)
    return out


def georeference(
    rec,
    images: ImageSet,
    *,
    frame=None,
    gcps: list[dict] | None = None,
    threshold: float | None = None,
    gcp_role: str = "auto",
) -> Georef:
    """Similarity from the SfM frame to ENU metres (see the module docstring).

    ``threshold``: RANSAC inlier distance (m); by default 3x the median residual of a
    first all-points fit, at least 1 m. Raises :class:`TwinError` with fewer than
    three registered images with GPS and no GCPs. ``gcp_role``: ``"auto"`` (GCPs join
    the fit when three or more are triangulated, else they are checks), ``"control"``
    (they must join: raises :class:`TwinError` with fewer than three triangulated) or
    ``"check"`` (never in the fit; residuals only).
    """
    from twin.crs import GEODETIC_3D, LocalFrame

    poses = camera_poses(rec)
    by = images.by_name()
    names = [n for n in poses if by[n].has_gps]
    llh = np.array(
        [[by[n].lon, by[n].lat, by[n].alt if by[n].alt is not None else 0.0] for n in names]
    ).reshape(-1, 3)
    if frame is None:
        if len(names) == 0:
            raise TwinError("no registered image has GPS: cannot georeference the reconstruction")
        frame = LocalFrame(*(float(v) for v in llh.mean(0)))
    enu = frame.from_crs(llh, GEODETIC_3D) if len(names) else np.zeros((0, 3))
    src = np.array([poses[n][1] for n in names]).reshape(-1, 3)
    gcp_fit = _gcp_points(rec, images, gcps or [], frame)
    if gcp_role not in ("auto", "control", "check"):
        raise InputError(f"gcp_role must be auto, control or check, not {gcp_role!r}")
    use_gcp = len(gcp_fit["names"]) >= 3 and gcp_role != "check"
    if gcp_role == "control" and gcps and not use_gcp:
        raise TwinError(
            f"GCPs as control need three with a position, each seen in two or more "
            f"registered photos; {len(gcp_fit['names'])} of {len(gcps)} qualify "
            "(use them as checks instead)"
        )
    if len(names) < 3 and not use_gcp:
        raise TwinError(
            f"georeferencing needs three registered images with GPS (or three GCPs); "
            f"{len(names)} have GPS"
        )
    if len(names) >= 3:
        if threshold is None:
            s0, R0, t0 = umeyama(src, enu)
            r0 = np.linalg.norm(s0 * src @ R0.T + t0 - enu, axis=1)
            threshold = max(1.0, 3.0 * float(np.median(r0)))
        s, R, t, inl = robust_similarity(src, enu, threshold)
    else:
        inl = np.zeros(len(names), bool)
        s, R, t = umeyama(gcp_fit["sfm"], gcp_fit["enu"])
    source = "gps"
    # gimbal angles: each registered image gives one estimate of the rotation
    gim = [n for n in poses if by[n].has_gimbal]
    if len(gim) >= 3 and inl.sum() >= 3:
        Q = np.array(
            [
                gimbal_rotation(by[n].gimbal_pitch, by[n].gimbal_yaw, by[n].gimbal_roll or 0.0).T
                @ poses[n][0]
                for n in gim
            ]
        )
        Qm = _rotation_mean(Q)
        spread = float(np.sqrt(np.mean(_angle_deg(np.einsum("ij,njk->nik", Qm.T, Q)) ** 2)))
        sig_g = np.radians(max(spread, 0.005)) / np.sqrt(len(gim))
        # the GPS rotation's covariance (radians², world axes) from the camera layout:
        # a rotation about an axis is pinned by the cameras' spread across it, so a
        # single strip leaves the rotation about its own line open (then the gimbal
        # angles decide it)
        a = s * src[inl] @ R.T
        a = a - a.mean(0)
        res = np.linalg.norm(a + s * src[inl].mean(0) @ R.T + t - enu[inl], axis=1)
        var_c = max(float(np.mean(res**2)) / 3.0, 1e-6)  # per coordinate (m²)
        info = (a**2).sum() * np.eye(3) - a.T @ a
        cov_p = var_c * np.linalg.inv(info + 1e-9 * np.trace(info) * np.eye(3) + 1e-12)
        # a common offset of the gimbal angles (compass, boresight) shows as a gap to
        # the GPS rotation beyond both precisions: then the GPS rotation stands
        delta = _rotvec(Qm @ R.T)
        cov = cov_p + sig_g**2 * np.eye(3)
        mahal = float(np.sqrt(delta @ np.linalg.solve(cov, delta)))
        gap = float(np.degrees(np.linalg.norm(delta)))
        sig_p = float(np.degrees(np.sqrt(np.linalg.eigvalsh(cov_p).max())))
        weak = sig_p > 1.0
        if spread < 5.0 and mahal > 3.0 and not weak:
            source = f"gps (gimbal angles {gap:.2f} deg off the GPS rotation: not used)"
        elif spread < 5.0:
            # information-weighted: exp(K delta) R, K = (I_p + I_g)^-1 I_g
            Ip = np.linalg.inv(cov_p)
            Ig = np.eye(3) / sig_g**2
            K = np.linalg.solve(Ip + Ig, Ig)
            wg = float(np.trace(K)) / 3.0
            if weak:
                # far from linear: solve GPS positions and the attitude prior together,
                # starting from the gimbal rotation
                R, s, t = _fit_with_attitude(src[inl], enu[inl], Qm, var_c, sig_g)
            else:
                R = _rotvec_matrix(K @ delta) @ R
                s, t = _scale_translation(src[inl], enu[inl], R)
            source = (
                f"gps+gimbal (gimbal weight {wg:.2f}, spread {spread:.3f} deg, "
                f"{gap:.3f} deg off the GPS rotation, GPS sigma up to {sig_p:.3f} deg)"
            )
        if weak and not source.startswith("gps+gimbal"):
            source += " (camera positions nearly on a line: rotation about it uncertain)"
    elif inl.sum() >= 3:
        a = enu[inl] - enu[inl].mean(0)
        ev, evec = np.linalg.eigh(a.T @ a)
        if ev[1] < 1e-3 * ev[2] or np.sqrt(ev[1] / len(a)) < 2.0:
            level = _level_about_line(rec, src[inl], enu[inl], s, R, t, evec[:, 2])
            if level is not None:
                R, s, t, tilt = level
                source += (
                    f" + level ground (camera positions nearly on a line, no gimbal "
                    f"angles: the rotation about it levels the sparse points' plane, "
                    f"{tilt:.1f} deg turned; as good as the ground is level across it)"
                )
            else:
                source += (
                    " (camera positions nearly on a line, no gimbal angles: "
                    "rotation about it uncertain)"
                )
    gcp_outliers: list[str] = []
    if use_gcp and inl.sum() >= 3:
        # a GCP far off the others' agreement with the GPS fit (a wrong coordinate or
        # a mislabelled photo) stays out of the fit; it is still reported
        r = s * gcp_fit["sfm"] @ R.T + t - gcp_fit["enu"]
        dev = np.linalg.norm(r - np.median(r, axis=0), axis=1)
        bad = dev > max(5.0, 3.0 * float(np.median(dev)))
        if bad.any() and (~bad).sum() >= 3:
            gcp_outliers = [n for n, b in zip(gcp_fit["names"], bad, strict=True) if b]
            gcp_fit = {
                k: (v[~bad] if k != "names" else [n for n, b in zip(v, bad, strict=True) if not b])
                for k, v in gcp_fit.items()
            }
            log.warning(
                "GCPs %s disagree with the others by metres: left out of the fit", gcp_outliers
            )
    if use_gcp:
        # GCPs (weighted as many cameras) refine the similarity with the GPS inliers
        a = np.vstack([src[inl], gcp_fit["sfm"]])
        b = np.vstack([enu[inl], gcp_fit["enu"]])
        wts = np.r_[np.ones(inl.sum()), np.full(len(gcp_fit["names"]), max(10.0, inl.sum()))]
        s, R, t = umeyama(a, b, wts)
        source += "+gcp"
    res = s * src @ R.T + t - enu
    geo = Georef(
        scale=float(s),
        R=R,
        t=np.asarray(t, float),
        frame=frame,
        gps_inliers=int(inl.sum()),
        gps_used=len(names),
        gps_rmse_m=float(np.sqrt(np.mean((res[inl] ** 2).sum(1)))) if inl.any() else float("nan"),
        gps_residuals={n: res[i].round(3).tolist() for i, n in enumerate(names)},
        rotation_source=source,
    )
    if gcps:
        geo.gcp = _gcp_report(rec, images, gcps, frame, geo, used=use_gcp)
        geo.gcp["outliers"] = gcp_outliers
    return geo


# ----------------------------------------------------------------------- GCPs
def read_gcps(path: str | os.PathLike, crs=None) -> list[dict]:
    """Ground control points from OpenSfM JSON, OpenDroneMap ``gcp_list.txt`` or CSV
    (see :mod:`twin.recon.gcp`); ``crs``: the CRS of coordinates in a file that names
    none. Points without a position are kept (no check)."""
    from twin.recon.gcp import read_gcps as _read

    return _read(path, crs=crs)


def _gcp_pixel(obs: dict, cam) -> np.ndarray | None:
    if obs.get("pixel") is not None:
        return np.asarray(obs["pixel"], float)
    if obs.get("projection") is not None:
        w, h = cam.width, cam.height
        x, y = obs["projection"]
        s = max(w, h)
        return np.array([x * s + w / 2.0, y * s + h / 2.0])
    return None


def _triangulate(rec, gcp: dict) -> np.ndarray | None:
    """Linear triangulation of one GCP in the reconstruction's frame."""
    rows = []
    names = {im.name: im for _, im in rec.images.items() if im.has_pose}
    for o in gcp["observations"]:
        im = names.get(o["image"])
        if im is None:
            continue
        cam = rec.cameras[im.camera_id]
        uv = _gcp_pixel(o, cam)
        if uv is None:
            continue
        ray = cam.cam_from_img(uv)  # normalised (x, y) with distortion removed
        T = im.cam_from_world()
        P = np.hstack([T.rotation.matrix(), T.translation.reshape(3, 1)])
        x, y = float(ray[0]), float(ray[1])
        rows.append(x * P[2] - P[0])
        rows.append(y * P[2] - P[1])
    if len(rows) < 4:
        return None
    _, _, Vt = np.linalg.svd(np.array(rows))
    X = Vt[-1]
    return X[:3] / X[3] if abs(X[3]) > 1e-12 else None


def _gcp_points(rec, images, gcps, frame) -> dict:
    from twin.crs import GEODETIC_3D

    names, sfm, enu = [], [], []
    for g in gcps:
        if g["llh"] is None:
            continue
        X = _triangulate(rec, g)
        if X is None:
            continue
        names.append(g["id"])
        sfm.append(X)
        enu.append(frame.from_crs(np.array(g["llh"]), GEODETIC_3D))
    return {
        "names": names,
        "sfm": np.array(sfm).reshape(-1, 3),
        "enu": np.array(enu).reshape(-1, 3),
    }


def _gcp_report(rec, images, gcps, frame, geo: Georef, *, used: bool) -> dict:
    pts = _gcp_points(rec, images, gcps, frame)
    res = geo.apply(pts["sfm"]) - pts["enu"] if len(pts["names"]) else np.zeros((0, 3))
    return {
        "role": "control (in the fit)" if used else "check (not in the fit)",
        "given": len(gcps),
        "with_position": sum(g["llh"] is not None for g in gcps),
        "triangulated": len(pts["names"]),
        "residuals_m": {n: res[i].round(3).tolist() for i, n in enumerate(pts["names"])},
        "rmse_m": float(np.sqrt(np.mean((res**2).sum(1)))) if len(res) else None,
    }


# ----------------------------------------------------------------------- apply and export
def apply_georef(rec, geo: Georef) -> None:
    """Transform a reconstruction in place into the ENU frame of ``geo``."""
    import pycolmap

    rec.transform(pycolmap.Sim3d(geo.scale, pycolmap.Rotation3d(geo.R), geo.t.reshape(3, 1)))


def gps_enu(images: ImageSet, frame) -> np.ndarray:
    """ENU positions of the images' GPS (NaN rows without GPS)."""
    from twin.crs import GEODETIC_3D

    out = np.full((len(images.images), 3), np.nan)
    idx = [i for i, im in enumerate(images.images) if im.has_gps]
    if idx:
        llh = np.array(
            [
                [
                    images.images[i].lon,
                    images.images[i].lat,
                    images.images[i].alt if images.images[i].alt is not None else 0.0,
                ]
                for i in idx
            ]
        )
        out[idx] = frame.from_crs(llh, GEODETIC_3D)
    return out


def default_frame(images: ImageSet):
    """A local frame at the mean GPS position (None when no image has GPS)."""
    from twin.crs import LocalFrame

    g = [im for im in images.images if im.has_gps]
    if not g:
        return None
    return LocalFrame(
        float(np.mean([im.lon for im in g])),
        float(np.mean([im.lat for im in g])),
        float(np.mean([im.alt if im.alt is not None else 0.0 for im in g])),
    )


def cameras_dict(rec, frame, crs=None) -> dict:
    """The registered cameras in the convention of the synthetic ``cameras.json``
    (COLMAP axes, ``x_cam = R X + t``; pixel centres at integer + 0.5), in ENU metres
    and, with ``crs``, camera centres in that CRS too."""
    from twin.crs import crs_label, parse_crs

    cams = {}
    for cid, cam in rec.cameras.items():
        K = cam.calibration_matrix()
        k = [float(v) for v in cam.params[3:]] if cam.model_name == "SIMPLE_RADIAL" else []
        if cam.model_name == "PINHOLE":
            k = []
        cams[str(cid)] = {
            "model": cam.model_name,
            "width": int(cam.width),
            "height": int(cam.height),
            "fx": float(K[0, 0]),
            "fy": float(K[1, 1]),
            "cx": float(K[0, 2]),
            "cy": float(K[1, 2]),
            "params": [float(v) for v in cam.params],
            "k1": k[0] if k else 0.0,
        }
    imgs = []
    poses = camera_poses(rec)
    names = sorted(poses)
    centres = np.array([poses[n][1] for n in names]).reshape(-1, 3)
    crs_xyz = None
    out = {
        "convention": (
            "ENU metres in the local frame. COLMAP/OpenCV camera axes: x right, y down, "
            "z forward; x_cam = R @ X_world + t, t = -R @ centre; pixel centres at "
            "integer + 0.5. SIMPLE_RADIAL: x_d = x (1 + k1 r^2) on normalised coordinates."
        ),
        "frame": frame.to_dict() if frame is not None else None,
    }
    if crs is not None and frame is not None and len(centres):
        c = parse_crs(crs)
        crs_xyz = frame.to_crs(centres, c)
        out["crs"] = {"label": crs_label(c), "wkt": c.to_wkt()}
    by_name = {im.name: im for _, im in rec.images.items()}
    for i, n in enumerate(names):
        R, C = poses[n]
        d = {
            "name": n,
            "camera": str(by_name[n].camera_id),
            "R": R.tolist(),
            "t": (-R @ C).tolist(),
            "centre_enu": C.tolist(),
        }
        if crs_xyz is not None:
            d["centre_crs"] = crs_xyz[i].tolist()
        imgs.append(d)
    out["cameras"] = cams
    out["images"] = imgs
    return out


def reprojection_stats(rec) -> dict:
    errs = np.array([p.error for _, p in rec.points3D.items()], dtype=np.float64)
    tl = np.array([p.track.length() for _, p in rec.points3D.items()], dtype=np.float64)
    return {
        "registered": int(rec.num_reg_images()),
        "points3D": int(rec.num_points3D()),
        "mean_reprojection_px": float(rec.compute_mean_reprojection_error()),
        "median_point_error_px": float(np.median(errs)) if len(errs) else None,
        "mean_track_length": float(tl.mean()) if len(tl) else None,
    }
