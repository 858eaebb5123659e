"""Bundle adjustment in the survey frame with GPS position and gimbal attitude priors.

After the similarity of :func:`twin.recon.sfm.georeference` has put the sparse model in
the local ENU frame, :func:`adjust_with_priors` adjusts every rig pose, rig camera pose
(``cam_from_rig``) and 3D point once more, now with three kinds of observation besides
the image points (reprojection error, soft-L1 loss, 1 px scale):

* the EXIF GPS position of each photo (per axis: horizontal and vertical σ; a rig
  station's photos share one fix, so each of its photos counts ``1/n``);
* the XMP gimbal attitude (DJI pitch/yaw/roll) of each photo, as a rotation prior;
* a lever-arm prior of zero (σ ``lever_arm_sigma_m``) for the cameras of a rig, whose
  offsets from one another are not observable at survey range and otherwise trade off
  against their rotations.

The weights are not guessed: the σ of each group (image points, gimbal attitudes,
horizontal and vertical GPS) is re-estimated from its residuals and redundancy numbers
(Förstner's variance component estimation; for the priors the median of residual²
over redundancy, scaled to the chi-square median, so wrong priors do not inflate it)
over a few rounds, starting from the scatter seen after the similarity. Exact attitudes
thus end up weighted far above the image geometry (down to ``min_sigma_deg``) and pin
the block's rotations; real gimbals (0.5–2° of noise) get a σ of that size and barely
move it. Priors beyond 3 σ are down-weighted in the solve (Huber), so a few wrong
attitudes or GPS fixes cannot pull the block, and when the attitudes scatter by more
than ``max_sigma_deg`` after the similarity they are not used at all. Photos without
gimbal angles get no attitude prior; with fewer than three such photos, or fewer than
three GPS positions, the adjustment does not run (the similarity alone stands). The
caller skips it when ground control points were in the similarity (they would be
ignored here) and re-checks GCP check points afterwards (:func:`check_gcps`).

The solver is a Levenberg–Marquardt on the Schur complement of the points (dense in
the pose parameters, 6 per rig pose and 6 per rig camera); intrinsics stay as the
mapper left them. Peak memory grows with the number of observations (a few hundred
bytes each) plus the square of the number of rig poses.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from twin.recon.images import ImageSet, gimbal_rotation

log = logging.getLogger(__name__)

MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL")
CHI2_MEDIAN = {1: 0.45494, 2: 1.38629, 3: 2.36597}  # medians of chi-square, k dof


@dataclass
class PriorOptions:
    min_sigma_deg: float = 0.01  # floor of the attitude σ (XMP angles have 2 decimals)
    max_sigma_deg: float = 5.0  # attitudes scattering more than this are left out
    min_sigma_gps_m: float = 0.05
    min_sigma_px: float = 0.1
    lever_arm_sigma_m: float = 0.1
    loss_px: float = 1.0  # soft-L1 scale of the reprojection error (pixels)
    huber: float = 3.0  # priors beyond this many σ are down-weighted
    rounds: int = 12  # variance component estimation rounds (at most; weak blocks need ~10)
    sigma_tolerance: float = 0.05  # ... until no σ changes by more than this share
    max_iterations: int = 20  # LM iterations per round


# ----------------------------------------------------------------------- geometry
def _skew(v: np.ndarray) -> np.ndarray:
    """Cross-product matrices of (..., 3) vectors."""
    z = np.zeros(v.shape[:-1])
    return np.stack(
        [
            np.stack([z, -v[..., 2], v[..., 1]], -1),
            np.stack([v[..., 2], z, -v[..., 0]], -1),
            np.stack([-v[..., 1], v[..., 0], z], -1),
        ],
        -2,
    )


def _exp(w: np.ndarray) -> np.ndarray:
    return Rotation.from_rotvec(np.asarray(w).reshape(-1, 3)).as_matrix()


def _log(R: np.ndarray) -> np.ndarray:
    return Rotation.from_matrix(np.asarray(R).reshape(-1, 3, 3)).as_rotvec()


def _left_jacobian_inv(r: np.ndarray) -> np.ndarray:
    """d log(exp(d) exp(r)) / d d at d = 0, for (n, 3) rotation vectors ``r``."""
    th = np.linalg.norm(r, axis=1)
    K = _skew(r)
    small = th < 1e-6
    ths = np.where(small, 1.0, th)
    c = np.where(small, 1 / 12, (1 / ths**2) - (1 + np.cos(ths)) / (2 * ths * np.sin(ths)))
    return np.eye(3) - 0.5 * K + c[:, None, None] * (K @ K)


def project(Xc: np.ndarray, params: np.ndarray):
    """Pixels of camera-frame points and d(pixel)/d(Xc) (n, 2, 3).

    ``params`` (n, 6): fx, fy, cx, cy, k1, k2 of each point's camera (radial distortion
    ``1 + k1 r^2 + k2 r^4`` on normalised coordinates; zeros where the model has none)."""
    z = Xc[:, 2]
    x, y = Xc[:, 0] / z, Xc[:, 1] / z
    fx, fy, cx, cy, k1, k2 = params.T
    r2 = x * x + y * y
    d = 1 + k1 * r2 + k2 * r2 * r2
    dd = k1 + 2 * k2 * r2  # d(d)/d(r2)
    uv = np.stack([fx * x * d + cx, fy * y * d + cy], -1)
    # d(xd, yd)/d(x, y)
    a11 = d + 2 * x * x * dd
    a12 = 2 * x * y * dd
    a22 = d + 2 * y * y * dd
    A = np.empty((len(z), 2, 2))
    A[:, 0, 0], A[:, 0, 1] = fx * a11, fx * a12
    A[:, 1, 0], A[:, 1, 1] = fy * a12, fy * a22
    B = np.zeros((len(z), 2, 3))  # d(x, y)/d(Xc)
    B[:, 0, 0] = 1 / z
    B[:, 0, 2] = -x / z
    B[:, 1, 1] = 1 / z
    B[:, 1, 2] = -y / z
    return uv, A @ B


def _camera_params(cam) -> np.ndarray | None:
    p = np.asarray(cam.params, float)
    name = cam.model_name
    if name == "SIMPLE_PINHOLE":
        return np.array([p[0], p[0], p[1], p[2], 0.0, 0.0])
    if name == "PINHOLE":
        return np.array([p[0], p[1], p[2], p[3], 0.0, 0.0])
    if name == "SIMPLE_RADIAL":
        return np.array([p[0], p[0], p[1], p[2], p[3], 0.0])
    if name == "RADIAL":
        return np.array([p[0], p[0], p[1], p[2], p[3], p[4]])
    return None


# ----------------------------------------------------------------------- the problem
@dataclass
class Problem:
    """Poses, points and observations of a sparse model, as arrays.

    Frame ``f``: ``X_rig = Rf[f] @ X + tf[f]``; rig camera ``s``: ``X_cam = Rs[s] @ X_rig
    + ts[s]`` (index -1: the rig's reference camera, identity). Image ``i`` belongs to
    frame ``img_frame[i]`` and rig camera ``img_sensor[i]``."""

    Rf: np.ndarray
    tf: np.ndarray
    Rs: np.ndarray
    ts: np.ndarray
    X: np.ndarray
    img_frame: np.ndarray
    img_sensor: np.ndarray
    img_params: np.ndarray  # (n_images, 6)
    obs_img: np.ndarray
    obs_pt: np.ndarray
    obs_uv: np.ndarray

    def cam_from_world(self, img=None):
        img = np.arange(len(self.img_frame)) if img is None else np.asarray(img)
        f, s = self.img_frame[img], self.img_sensor[img]
        R = self.Rf[f].copy()
        t = self.tf[f].copy()
        m = s >= 0
        R[m] = self.Rs[s[m]] @ R[m]
        t[m] = np.einsum("nij,nj->ni", self.Rs[s[m]], t[m]) + self.ts[s[m]]
        return R, t

    def centres(self, img=None):
        R, t = self.cam_from_world(img)
        return -np.einsum("nji,nj->ni", R, t)


def problem_from_reconstruction(rec):
    """A :class:`Problem` of a pycolmap reconstruction, the image ids and names, and the
    ids of frames, rig cameras and points (for writing back); None if a camera model
    is not supported."""
    frames = {
        fid: k for k, fid in enumerate(sorted(f for f, fr in rec.frames.items() if fr.has_pose))
    }
    sensors: dict[tuple[int, int], int] = {}
    sensor_keys = []
    for rid, rig in rec.rigs.items():
        for s in rig.non_ref_sensors:
            sensors[(rid, s.id)] = len(sensor_keys)
            sensor_keys.append((rid, s))
    images = sorted(i for i, im in rec.images.items() if im.has_pose)
    img_index = {iid: k for k, iid in enumerate(images)}
    img_frame = np.empty(len(images), int)
    img_sensor = np.full(len(images), -1)
    img_params = np.empty((len(images), 6))
    for k, iid in enumerate(images):
        im = rec.images[iid]
        p = _camera_params(rec.cameras[im.camera_id])
        if p is None:
            return None
        img_params[k] = p
        fr = rec.frames[im.frame_id]
        img_frame[k] = frames[im.frame_id]
        img_sensor[k] = sensors.get((fr.rig_id, im.camera_id), -1)
    Rf = np.empty((len(frames), 3, 3))
    tf = np.empty((len(frames), 3))
    for fid, k in frames.items():
        T = rec.frames[fid].rig_from_world
        Rf[k], tf[k] = T.rotation.matrix(), np.asarray(T.translation).ravel()
    Rs = np.empty((len(sensor_keys), 3, 3))
    ts = np.empty((len(sensor_keys), 3))
    for k, (rid, s) in enumerate(sensor_keys):
        T = rec.rigs[rid].sensor_from_rig(s)
        Rs[k], ts[k] = T.rotation.matrix(), np.asarray(T.translation).ravel()
    pids = sorted(rec.points3D)
    X = np.array([rec.points3D[p].xyz for p in pids]).reshape(-1, 3)
    oi, op, uv = [], [], []
    for k, pid in enumerate(pids):
        for el in rec.points3D[pid].track.elements:
            if el.image_id not in img_index:
                continue
            oi.append(img_index[el.image_id])
            op.append(k)
            uv.append(rec.images[el.image_id].points2D[el.point2D_idx].xy)
    prob = Problem(
        Rf, tf, Rs, ts, X, img_frame, img_sensor, img_params,
        np.array(oi, int), np.array(op, int), np.array(uv, float).reshape(-1, 2),
    )  # fmt: skip
    ids = {
        "images": images,
        "names": [rec.images[i].name for i in images],
        "frames": sorted(frames, key=frames.get),
        "sensors": sensor_keys,
        "points": pids,
    }
    return prob, ids


def write_back(rec, prob: Problem, ids: dict) -> None:
    """Store the adjusted poses and points in the pycolmap reconstruction."""
    import pycolmap

    for k, fid in enumerate(ids["frames"]):
        rec.frames[fid].rig_from_world = pycolmap.Rigid3d(
            pycolmap.Rotation3d(prob.Rf[k]), prob.tf[k].reshape(3, 1)
        )
    for k, (rid, s) in enumerate(ids["sensors"]):
        rec.rigs[rid].set_sensor_from_rig(
            s, pycolmap.Rigid3d(pycolmap.Rotation3d(prob.Rs[k]), prob.ts[k].reshape(3, 1))
        )
    for k, pid in enumerate(ids["points"]):
        rec.points3D[pid].xyz = prob.X[k]
    rec.update_point_3d_errors()


# ----------------------------------------------------------------------- residuals
@dataclass
class Priors:
    """Prior observations per image (NaN rows: none) and the σ of each group."""

    R: np.ndarray  # (n_images, 3, 3) world-to-camera attitude, NaN where unknown
    C: np.ndarray  # (n_images, 3) camera centre (GPS), NaN where unknown
    share: np.ndarray  # (n_images,) 1 / photos sharing the image's GPS fix
    sigma_px: float
    sigma_rot: float  # radians
    sigma_h: float
    sigma_v: float
    sigma_lever: float


def _obs_jacobians(prob: Problem):
    """Reprojection residuals (n, 2) and Jacobians: pose block (n, 2, 12) in the order
    frame rotation, frame translation, camera rotation, camera lever arm; point (n, 2, 3)."""
    i = prob.obs_img
    f, s = prob.img_frame[i], prob.img_sensor[i]
    X = prob.X[prob.obs_pt]
    Rf = prob.Rf[f]
    Xr0 = np.einsum("nij,nj->ni", Rf, X)
    Xr = Xr0 + prob.tf[f]
    m = s >= 0
    Rs = np.broadcast_to(np.eye(3), (len(i), 3, 3)).copy()
    Rs[m] = prob.Rs[s[m]]
    Xc = np.einsum("nij,nj->ni", Rs, Xr)
    Xc[m] += prob.ts[s[m]]
    uv, D = project(Xc, prob.img_params[i])
    e = uv - prob.obs_uv
    Jc = np.zeros((len(i), 2, 12))
    Jc[:, :, 0:3] = -D @ Rs @ _skew(Xr0)
    Jc[:, :, 3:6] = D @ Rs
    Jc[m, :, 6:9] = -D[m] @ _skew(Xc[m] - prob.ts[s[m]])
    Jc[m, :, 9:12] = D[m]
    Jp = D @ Rs @ Rf
    return e, Jc, Jp, Xc[:, 2]


def _prior_terms(prob: Problem, pri: Priors):
    """Prior residuals (normalised by their σ) with pose-block Jacobians (n, 3, 12),
    the image of each, and its group (0 attitude, 1 horizontal GPS, 2 vertical GPS,
    3 lever arm: one row per axis group)."""
    out = []
    n = len(prob.img_frame)
    R, t = prob.cam_from_world()
    f, s = prob.img_frame, prob.img_sensor
    m = s >= 0
    Rs = np.broadcast_to(np.eye(3), (n, 3, 3)).copy()
    Rs[m] = prob.Rs[s[m]]
    ts = np.zeros((n, 3))
    ts[m] = prob.ts[s[m]]
    # attitude: log(R_cam R_prior^T), in the camera's frame
    a = np.flatnonzero(np.isfinite(pri.R[:, 0, 0]))
    if len(a):
        r = _log(R[a] @ np.transpose(pri.R[a], (0, 2, 1)))
        e = r / pri.sigma_rot
        Jl = _left_jacobian_inv(r)
        J = np.zeros((len(a), 3, 12))
        J[:, :, 0:3] = Jl @ Rs[a]
        J[m[a], :, 6:9] = Jl[m[a]]
        out.append((e, J / pri.sigma_rot, a, np.zeros(len(a), int)))
    # GPS: camera centre, split into horizontal (2 rows) and vertical (1 row)
    g = np.flatnonzero(np.isfinite(pri.C[:, 0]))
    if len(g):
        Rft = np.transpose(prob.Rf[f[g]], (0, 2, 1))
        Rst = np.transpose(Rs[g], (0, 2, 1))
        w = prob.tf[f[g]] + np.einsum("nij,nj->ni", Rst, ts[g])
        C = -np.einsum("nij,nj->ni", Rft, w)
        J = np.zeros((len(g), 3, 12))
        J[:, :, 0:3] = -Rft @ _skew(w)
        J[:, :, 3:6] = -Rft
        mg = m[g]
        J[mg, :, 6:9] = -Rft[mg] @ Rst[mg] @ _skew(ts[g][mg])
        J[mg, :, 9:12] = -Rft[mg] @ Rst[mg]
        sig = np.array([pri.sigma_h, pri.sigma_h, pri.sigma_v])
        wt = np.sqrt(pri.share[g])[:, None]
        e = (C - pri.C[g]) / sig * wt
        J = J / sig[None, :, None] * wt[:, :, None]
        out.append((e[:, :2], J[:, :2], g, np.ones(len(g), int)))
        out.append((e[:, 2:], J[:, 2:], g, np.full(len(g), 2)))
    return out


def _lever_terms(prob: Problem, pri: Priors):
    e = prob.ts / pri.sigma_lever
    J = np.zeros((len(e), 3, 12))
    J[:, :, 9:12] = np.eye(3) / pri.sigma_lever
    return e, J


class _Solver:
    """Levenberg–Marquardt with the points eliminated (Schur complement)."""

    def __init__(self, prob: Problem, pri: Priors, opts: PriorOptions):
        self.prob, self.pri, self.opts = prob, pri, opts
        nf, ns = len(prob.Rf), len(prob.Rs)
        self.P = 6 * nf + 6 * ns
        # global indices of each image's 12 pose parameters (dummy P for absent ones)
        n = len(prob.img_frame)
        idx = np.full((n, 12), self.P)
        idx[:, :6] = 6 * prob.img_frame[:, None] + np.arange(6)
        m = prob.img_sensor >= 0
        idx[m, 6:] = 6 * nf + 6 * prob.img_sensor[m, None] + np.arange(6)
        self.img_idx = idx
        self.sensor_idx = 6 * nf + 6 * np.arange(ns)[:, None] + np.arange(6)

    # robust weights ------------------------------------------------------------
    def _w_obs(self, e):
        s = (e**2).sum(1) / self.opts.loss_px**2
        return 1 / np.sqrt(1 + s)

    def _w_prior(self, e):
        r = np.linalg.norm(e, axis=1)
        k = self.opts.huber
        return np.where(r <= k, 1.0, k / np.maximum(r, 1e-300))

    def cost(self, prob: Problem) -> float:
        e, _, _, z = _obs_jacobians(prob)
        if np.any(z <= 0):
            return np.inf
        s = (e**2).sum(1) / self.opts.loss_px**2
        c = float((2 * (np.sqrt(1 + s) - 1)).sum()) * self.opts.loss_px**2 / self.pri.sigma_px**2
        k = self.opts.huber
        for ep, _, _, _ in _prior_terms(prob, self.pri):
            r = np.linalg.norm(ep, axis=1)
            c += float(np.where(r <= k, r**2, 2 * k * r - k * k).sum())
        el, _ = _lever_terms(prob, self.pri)
        c += float((el**2).sum())
        return c

    def normal_equations(self, prob: Problem):
        """Reduced camera system S, its right-hand side, and what back-substitution needs."""
        import scipy.sparse as sp

        P1 = self.P + 1
        e, Jc, Jp, _ = _obs_jacobians(prob)
        w = self._w_obs(e) / self.pri.sigma_px**2
        idx = self.img_idx[prob.obs_img]  # (n, 12)
        JcW = Jc * w[:, None, None]
        ii = [idx]
        blocks = [np.einsum("nki,nkj->nij", JcW, Jc)]
        grads = [np.einsum("nki,nk->ni", JcW, e)]
        for ep, J, img, _grp in _prior_terms(prob, self.pri):
            JW = J * self._w_prior(ep)[:, None, None]
            ii.append(self.img_idx[img])
            blocks.append(np.einsum("nki,nkj->nij", JW, J))
            grads.append(np.einsum("nki,nk->ni", JW, ep))
        el, Jl = _lever_terms(prob, self.pri)
        if len(el):
            ii.append(np.c_[np.full((len(el), 6), self.P), self.sensor_idx])
            blocks.append(np.einsum("nki,nkj->nij", Jl, Jl))
            grads.append(np.einsum("nki,nk->ni", Jl, el))
        idx_all = np.concatenate(ii)
        flat = (idx_all[:, :, None] * P1 + idx_all[:, None, :]).ravel()
        U = np.bincount(flat, np.concatenate(blocks).ravel(), P1 * P1).reshape(P1, P1)
        g = np.bincount(idx_all.ravel(), np.concatenate(grads).ravel(), P1)
        npt = len(prob.X)
        JpW = Jp * w[:, None, None]
        pt9 = (9 * prob.obs_pt[:, None] + np.arange(9)).ravel()
        V = np.bincount(pt9, np.einsum("nki,nkj->nij", JpW, Jp).ravel(), 9 * npt)
        V = V.reshape(npt, 3, 3)
        pt3 = (3 * prob.obs_pt[:, None] + np.arange(3)).ravel()
        gp = np.bincount(pt3, np.einsum("nki,nk->ni", JpW, e).ravel(), 3 * npt).reshape(npt, 3)
        Wb = np.einsum("nki,nkj->nij", JcW, Jp)  # (n, 12, 3)
        rows = np.repeat(idx, 3, axis=1).reshape(-1)
        cols = np.tile((3 * prob.obs_pt)[:, None] + np.arange(3), (1, 12)).reshape(-1)
        W = sp.csr_matrix((Wb.reshape(-1), (rows, cols)), shape=(P1, 3 * npt))
        return U[: self.P, : self.P], g[: self.P], V, gp, W[: self.P]

    @staticmethod
    def _block_diag(B: np.ndarray):
        import scipy.sparse as sp

        n = len(B)
        indptr = np.arange(0, 9 * n + 1, 3)
        indices = np.repeat(np.arange(3 * n).reshape(n, 1, 3), 3, axis=1).ravel()
        return sp.csr_matrix((B.reshape(-1), indices, indptr), shape=(3 * n, 3 * n))

    def step(self, prob, ne, lam):
        U, g, V, gp, W = ne
        P = self.P
        dU = np.diag(U).copy()
        Ud = U + np.diag(lam * np.maximum(dU, 1e-9))
        Vd = V + lam * np.maximum(np.einsum("nii->ni", V), 1e-9)[:, :, None] * np.eye(3)
        Vinv = np.linalg.inv(Vd)
        WVi = W @ self._block_diag(Vinv)
        S = Ud - (WVi @ W.T).toarray()
        rhs = -g + WVi @ gp.reshape(-1)
        try:
            dc = np.linalg.solve(S, rhs)
        except np.linalg.LinAlgError:  # a parameter nothing observes (a camera never seen)
            dc = np.linalg.lstsq(S, rhs, rcond=None)[0]
        dp = -np.einsum("nij,nj->ni", Vinv, gp + (W.T @ dc).reshape(-1, 3))
        nf = len(prob.Rf)
        new = Problem(**{k: getattr(prob, k) for k in prob.__dataclass_fields__})
        d = dc[: 6 * nf].reshape(nf, 6)
        new.Rf = _exp(d[:, :3]) @ prob.Rf
        new.tf = prob.tf + d[:, 3:]
        if len(prob.Rs):
            ds = dc[6 * nf : P].reshape(-1, 6)
            new.Rs = _exp(ds[:, :3]) @ prob.Rs
            new.ts = prob.ts + ds[:, 3:]
        new.X = prob.X + dp
        return new, S

    def solve(self, prob: Problem):
        lam = 1e-4
        cost = self.cost(prob)
        it = 0
        for it in range(self.opts.max_iterations):  # noqa: B007
            ne = self.normal_equations(prob)
            for _ in range(10):
                new, _ = self.step(prob, ne, lam)
                c = self.cost(new)
                if c < cost:
                    break
                lam *= 10
            else:
                break
            done = (cost - c) < 1e-6 * max(cost, 1e-300)
            prob, cost = new, c
            lam = max(lam / 10, 1e-8)
            if done:
                break
        return prob, cost, it + 1

    def covariance(self, prob: Problem) -> np.ndarray:
        """Covariance of the pose parameters (in σ units) at ``prob``."""
        U, _, V, _, W = self.normal_equations(prob)
        Vinv = np.linalg.inv(V + 1e-12 * np.eye(3))
        S = U - (W @ self._block_diag(Vinv) @ W.T).toarray()
        return np.linalg.pinv(S, hermitian=True)


# ----------------------------------------------------------------------- driver
def _priors_for(names, images: ImageSet, frame, prob: Problem):
    from twin.crs import GEODETIC_3D

    by = images.by_name()
    n = len(names)
    R = np.full((n, 3, 3), np.nan)
    C = np.full((n, 3), np.nan)
    for k, name in enumerate(names):
        im = by.get(name)
        if im is None:
            continue
        if im.has_gimbal:
            R[k] = gimbal_rotation(im.gimbal_pitch, im.gimbal_yaw, im.gimbal_roll or 0.0)
        if im.has_gps:
            llh = [im.lon, im.lat, im.alt if im.alt is not None else 0.0]
            C[k] = frame.from_crs(np.array(llh), GEODETIC_3D)
    # photos of one frame share a GPS fix: each counts 1/n
    share = np.ones(n)
    has = np.isfinite(C[:, 0])
    counts = np.bincount(prob.img_frame[has], minlength=len(prob.Rf))
    share[has] = 1.0 / np.maximum(counts[prob.img_frame[has]], 1)
    return R, C, share


def _robust_rotation_mean(mats: np.ndarray) -> np.ndarray:
    """Chordal mean of rotations, refitted on those within 3x the median angle."""
    from twin.recon.sfm import _rotation_mean

    M = _rotation_mean(mats)
    for _ in range(3):
        d = np.linalg.norm(_log(np.transpose(mats, (0, 2, 1)) @ M), axis=1)
        keep = d <= max(3 * np.median(d), 1e-9)
        M = _rotation_mean(mats[keep])
    return M


def _robust_rms(x: np.ndarray) -> float:
    """RMS of the values within 3 MAD-sigmas of zero (at least half of them)."""
    a = np.abs(np.asarray(x, float).ravel())
    if not len(a):
        return float("nan")
    s = 1.4826 * np.median(a)
    keep = a[a <= max(3 * s, np.quantile(a, 0.5))]
    return float(np.sqrt(np.mean(keep**2)))


def adjust_problem(
    prob: Problem,
    R_prior: np.ndarray,
    C_prior: np.ndarray,
    share: np.ndarray,
    options: PriorOptions | None = None,
) -> tuple[Problem | None, dict]:
    """The adjustment of :func:`adjust_with_priors` on arrays: ``R_prior`` (n_images, 3, 3)
    world-to-camera attitudes and ``C_prior`` (n_images, 3) GPS centres, NaN where
    unknown; ``share``: the weight of each GPS fix (1 / photos sharing it). Returns the
    adjusted problem and a report, or None and the reason it did not run."""
    opts = options or PriorOptions()
    R_prior = np.array(R_prior, float)
    att = np.isfinite(R_prior[:, 0, 0])
    gps = np.isfinite(C_prior[:, 0])
    if gps.sum() < 3:  # the positions fix the datum (translation and scale)
        return None, {"skipped": "fewer than three GPS positions"}
    # where the GPS alone would put the block: its similarity, residuals and precision
    from twin.recon.sfm import umeyama

    C = prob.centres()
    s_g, Q_g, t_g = umeyama(C[gps], C_prior[gps], share[gps])
    dC = s_g * C[gps] @ Q_g.T + t_g - C_prior[gps]
    sig_h = max(_robust_rms(dC[:, :2]), opts.min_sigma_gps_m)
    sig_v = max(_robust_rms(dC[:, 2]), opts.min_sigma_gps_m)
    bias = None
    if att.any():
        R, _ = prob.cam_from_world()
        # each attitude's world rotation of the block; their robust mean, the scatter
        W = np.transpose(R_prior[att], (0, 2, 1)) @ R[att]
        Q_a = _robust_rotation_mean(W)
        d_att = np.linalg.norm(_log(np.transpose(W, (0, 2, 1)) @ Q_a), axis=1)
        sig_rot = _robust_rms(d_att) / np.sqrt(3)
        if np.degrees(sig_rot) > opts.max_sigma_deg:
            log.info("gimbal angles scatter %.1f deg: not used", np.degrees(sig_rot))
            R_prior[:] = np.nan
            att[:] = False
        else:
            # a common offset of the attitudes (compass, boresight) that the GPS rules
            # out at 99.9 %: the attitudes keep their relative rotations only
            d = C[gps] - np.average(C[gps], axis=0, weights=share[gps])
            Jg = -_skew(d)
            w_pos = share[gps][:, None] / np.array([sig_h, sig_h, sig_v]) ** 2
            info = np.einsum("nki,nk,nkj->ij", Jg, w_pos, Jg) * s_g**2
            cov = np.linalg.inv(info) + np.eye(3) * sig_rot**2 / att.sum()
            gap = _log(Q_a @ Q_g.T)[0]
            # only rotations the GPS layout pins down: about an axis the centres' spread
            # across which is within 3 GPS sigmas (one strip: its own line) the GPS
            # rotation is noise, so an offset there can neither be seen nor removed
            _, axes = np.linalg.eigh(info)
            sig_pos = max(sig_h, sig_v)
            keep = []
            for u in axes.T:
                across = d - np.outer(d @ u, u)
                if np.sqrt(np.mean((across**2).sum(1))) * s_g > 3.0 * sig_pos:
                    keep.append(u)
            U = np.array(keep).reshape(-1, 3)
            g_u = U @ gap
            chi2 = float(g_u @ np.linalg.solve(U @ cov @ U.T, g_u)) if len(U) else 0.0
            limit = {0: np.inf, 1: 10.83, 2: 13.82, 3: 16.27}[len(U)]
            if chi2 > limit:
                R_prior[att] = R_prior[att] @ _exp(U.T @ g_u)[0]
                bias = {"deg": float(np.degrees(np.linalg.norm(g_u))), "chi2": chi2}
                log.info("gimbal attitudes %.2f deg off the GPS: offset removed", bias["deg"])
    else:
        sig_rot = np.pi
    e, _, _, _ = _obs_jacobians(prob)
    sig_px = max(_robust_rms(e), opts.min_sigma_px)
    pri = Priors(
        R_prior, C_prior, share, sig_px, max(sig_rot, np.radians(opts.min_sigma_deg)),
        sig_h, sig_v, opts.lever_arm_sigma_m,
    )  # fmt: skip
    start = {
        "attitude_offset_removed": bias,
        "sigma_px": sig_px,
        "sigma_attitude_deg": float(np.degrees(pri.sigma_rot)),
        "sigma_gps_h_m": sig_h,
        "sigma_gps_v_m": sig_v,
    }
    rounds = []
    for _ in range(max(1, opts.rounds)):
        solver = _Solver(prob, pri, opts)
        prob, cost, iters = solver.solve(prob)
        new = _variance_components(solver, prob, pri, opts)
        rounds.append({"iterations": iters, "cost": cost, **new["report"]})
        old = np.array([pri.sigma_px, pri.sigma_rot, pri.sigma_h, pri.sigma_v])
        pri.sigma_px, pri.sigma_rot = new["sigma_px"], new["sigma_rot"]
        pri.sigma_h, pri.sigma_v = new["sigma_h"], new["sigma_v"]
        now = np.array([pri.sigma_px, pri.sigma_rot, pri.sigma_h, pri.sigma_v])
        if np.all(np.abs(now / old - 1) <= opts.sigma_tolerance):
            break
    R, _ = prob.cam_from_world()
    d_att = np.degrees(np.linalg.norm(_log(R[att] @ np.transpose(R_prior[att], (0, 2, 1))), axis=1))
    if not att.any():
        d_att = np.full(1, np.nan)
    return prob, {
        "start": start,
        "rounds": rounds,
        "attitude_priors": int(att.sum()),
        "gps_priors": int(gps.sum()),
        "attitude_residual_deg": {"median": float(np.median(d_att)), "max": float(d_att.max())},
        "lever_arms_m": np.linalg.norm(prob.ts, axis=1).round(4).tolist(),
    }


def adjust_with_priors(
    rec, images: ImageSet, frame, options: PriorOptions | None = None
) -> dict | None:
    """Adjust the georeferenced ``rec`` (ENU metres of ``frame``) in place with GPS and
    gimbal priors (see the module docstring). Returns a report (σ per group at the start
    and after each round, GPS residuals after), or None when it did not run (and says
    why in the log): fewer than three registered photos with gimbal angles, attitudes
    scattering more than ``max_sigma_deg``, or a camera model other than ``MODELS``."""
    t0, c0 = time.perf_counter(), time.process_time()
    by = images.by_name()
    registered = [im.name for _, im in rec.images.items() if im.has_pose]
    if sum(by[n].has_gimbal for n in registered if n in by) < 3:
        log.info("fewer than three photos with gimbal angles: no prior adjustment")
        return None
    got = problem_from_reconstruction(rec)
    if got is None:
        log.info("camera model without a prior adjustment: the similarity stands")
        return None
    prob, ids = got
    Rp, Cp, share = _priors_for(ids["names"], images, frame, prob)
    if np.isfinite(Rp[:, 0, 0]).sum() < 3:
        log.info("fewer than three photos with gimbal angles: no prior adjustment")
        return None
    prob, report = adjust_problem(prob, Rp, Cp, share, options)
    if prob is None:
        log.info("no prior adjustment (%s): the similarity stands", report["skipped"])
        return None
    write_back(rec, prob, ids)
    gps = np.isfinite(Cp[:, 0])
    res = prob.centres()[gps] - Cp[gps]
    names = [n for n, g in zip(ids["names"], gps, strict=True) if g]
    return {
        **report,
        "gps_rmse_m": float(np.sqrt(np.mean((res**2).sum(1)))) if len(res) else None,
        "gps_residuals_m": {n: res[k].round(3).tolist() for k, n in enumerate(names)},
        "mean_reprojection_px": float(rec.compute_mean_reprojection_error()),
        "s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
    }


def _variance_components(solver: _Solver, prob: Problem, pri: Priors, opts: PriorOptions):
    """New σ per group from the residuals and redundancy numbers (Förstner)."""
    Sig = solver.covariance(prob)
    out = {}
    rep = {}
    rows = 0
    prior_red = 0.0
    for ep, J, img, grp in _prior_terms(prob, pri):
        g = int(grp[0])
        wp = solver._w_prior(ep)
        idx = solver.img_idx[img]
        Jf = np.zeros((len(img), J.shape[1], solver.P + 1))
        np.put_along_axis(Jf, np.broadcast_to(idx[:, None, :], J.shape), J, axis=2)
        Jf = Jf[:, :, : solver.P]
        q = np.einsum("nki,ij,nkj->n", Jf, Sig, Jf) * wp
        k = J.shape[1]
        # photos sharing one GPS fix are one observation between them
        count = pri.share[img] if g in (1, 2) else np.ones(len(img))
        rows += k * count.sum()
        prior_red += k * count.sum() - float(q.sum())
        # each prior's squared residual over its redundancy is σ²-scaled chi-square with
        # k degrees of freedom: the median of the ratios is robust to wrong priors
        red_i = np.maximum(k - q / count, 0.05 * k)
        t = (ep**2).sum(1) / count * k / red_i
        ratio = np.sqrt(np.median(t) / CHI2_MEDIAN[k])  # σ_new / σ_old
        red = float((k * count - q).sum())
        if g == 0:
            out["sigma_rot"] = max(pri.sigma_rot * ratio, np.radians(opts.min_sigma_deg))
            rep["sigma_attitude_deg"] = float(np.degrees(out["sigma_rot"]))
            rep["redundancy_attitude"] = red
        elif g == 1:
            out["sigma_h"] = max(pri.sigma_h * ratio, opts.min_sigma_gps_m)
            rep["sigma_gps_h_m"] = out["sigma_h"]
        else:
            out["sigma_v"] = max(pri.sigma_v * ratio, opts.min_sigma_gps_m)
            rep["sigma_gps_v_m"] = out["sigma_v"]
    out.setdefault("sigma_rot", pri.sigma_rot)
    out.setdefault("sigma_h", pri.sigma_h)
    out.setdefault("sigma_v", pri.sigma_v)
    # image points: what is left of the total redundancy
    e, _, _, _ = _obs_jacobians(prob)
    w = solver._w_obs(e)
    n_par = solver.P + 3 * len(prob.X)
    # total redundancy less the priors' (the lever-arm rows are taken as fully redundant
    # with the parameters they pin: they add as many rows as unknowns they decide)
    red_img = max(2 * len(e) + rows - n_par - prior_red, 1.0)
    ss = float((w * (e**2).sum(1)).sum())
    out["sigma_px"] = max(float(np.sqrt(ss / red_img)), opts.min_sigma_px)
    rep["sigma_px"] = out["sigma_px"]
    out["report"] = rep
    return out


def check_gcps(rec, images: ImageSet, gcps: list[dict], frame) -> dict:
    """Ground control points as check points of a reconstruction already in ``frame``'s
    ENU metres (after :func:`adjust_with_priors`): the report of
    :func:`twin.recon.sfm.georeference`, recomputed."""
    from twin.recon import sfm

    same = sfm.Georef(1.0, np.eye(3), np.zeros(3), frame, 0, 0, float("nan"))
    return sfm._gcp_report(rec, images, gcps, frame, same, used=False)


def shift_to_gcps(rec, images: ImageSet, gcps: list[dict], frame, exclude=()) -> dict:
    """Ground control points as control of a reconstruction already adjusted in
    ``frame``'s ENU metres (:func:`adjust_with_priors`): the block is shifted by the
    median of the GCPs' residuals (the GPS datum's offset; the block's scale and
    rotation stay those of the GPS and attitudes, which span all of it), in place.
    GCPs named in ``exclude`` (outliers) do not move it. Returns the GCP report after
    the shift, with ``shift_m``."""
    import pycolmap

    from twin.recon import sfm

    pts = sfm._gcp_points(rec, images, gcps, frame)
    if len(pts["names"]) == 0:
        return check_gcps(rec, images, gcps, frame)
    use = np.array([n not in set(exclude) for n in pts["names"]])
    if not use.any():
        use[:] = True
    shift = np.median((pts["enu"] - pts["sfm"])[use], axis=0)
    rec.transform(pycolmap.Sim3d(1.0, pycolmap.Rotation3d(np.eye(3)), shift.reshape(3, 1)))
    same = sfm.Georef(1.0, np.eye(3), np.zeros(3), frame, 0, 0, float("nan"))
    rep = sfm._gcp_report(rec, images, gcps, frame, same, used=True)
    rep["role"] = "control (block shifted onto the GCPs after the prior adjustment)"
    rep["shift_m"] = shift.round(3).tolist()
    return rep
