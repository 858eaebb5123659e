"""Ray casting on the truth surface and the photo renderer of the synthetic survey.

Frames and conventions (the contract for SfM and texturing work)
----------------------------------------------------------------
* Everything is simulated in the ENU frame of the :class:`~twin.synth.model.TruthScene`
  (metres, float64).
* Cameras are ideal pinholes in the OpenCV/COLMAP convention: camera x right, y down,
  z forward (the optical axis); a world point ``X`` maps to ``x_cam = R @ X + t`` and to
  the pixel ``u = fx * x/z + cx``, ``v = fy * y/z + cy``. Pixel centres lie at
  integer + 0.5: the top-left pixel's centre is ``(0.5, 0.5)``, so pixel ``(i, j)``
  (column, row) covers ``[i, i+1) x [j, j+1)``. No lens distortion (k1 = k2 = 0).
* :func:`render` casts one ray through each pixel centre (plus, with
  ``supersample=n``, an ``n x n`` grid of sub-pixel rays averaged for the colour only):
  ``depth`` is the distance along the optical axis (camera z, metres) of the centre
  ray's hit, ``inf`` for sky; ``face_id`` is the truth face the centre ray hit, -1 for
  sky.
* Shading is Lambertian: ``albedo * (SUN_IRRADIANCE * max(0, n.s) * lit + AMBIENT)``
  with a fixed sun direction :data:`SUN_DIR` (azimuth 135 deg, i.e. south-east,
  elevation 50 deg), cast shadows (one shadow ray per pixel), a sky-blue ambient term,
  then sRGB encoding. Rays that miss see a sky gradient (white-blue at the horizon to
  deeper blue at the zenith).

Ray/triangle distances are recomputed in float64 from the triangle's plane (embree
works in float32), so a hit lies on the truth surface to ~1e-9 m.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from twin.synth.model import TruthScene

# Fixed lighting: sun from the south-east, 50 degrees above the horizon (ENU unit vector
# pointing *towards* the sun).
_SUN_AZ = np.radians(135.0)
_SUN_EL = np.radians(50.0)
SUN_DIR = np.array(
    [np.sin(_SUN_AZ) * np.cos(_SUN_EL), np.cos(_SUN_AZ) * np.cos(_SUN_EL), np.sin(_SUN_EL)]
)
SUN_IRRADIANCE = 1.0
AMBIENT = np.array([0.30, 0.33, 0.40])  # sky light, slightly blue
EXPOSURE = 1.0
_SKY_HORIZON = np.array([0.75, 0.82, 0.92])  # linear RGB
_SKY_ZENITH = np.array([0.18, 0.32, 0.65])

_CHUNK = 1 << 19  # rays per embree call: bounds the temporary memory (~100 B per ray)


class RayCaster:
    """First-hit ray casting (embree, through the ``embreex`` binding trimesh uses) on a
    set of triangles.

    ``face_index`` maps the triangles given here back to scene face ids (for a subset
    of the scene, e.g. only the ground). Memory grows with the face count (the embree
    BVH, about 100 bytes per face) and, per call, with the number of rays in a chunk.
    """

    def __init__(
        self, vertices: np.ndarray, faces: np.ndarray, face_index: np.ndarray | None = None
    ):
        vertices = np.asarray(vertices, dtype=np.float64)
        faces = np.asarray(faces, dtype=np.int64)
        self.n_faces = len(faces)
        self.face_index = None if face_index is None else np.asarray(face_index, np.int64)
        if self.n_faces == 0:
            self._rmi = None
            return
        from embreex import rtcore_scene
        from embreex.mesh_construction import TriangleMesh

        # embree works in float32: shift the vertices next to the origin first
        self._shift = vertices.min(axis=0)
        self._rmi = rtcore_scene.EmbreeScene()
        TriangleMesh(
            scene=self._rmi,
            vertices=(vertices - self._shift).astype(np.float32),
            indices=faces.astype(np.int32),
        )
        tri = vertices[faces]
        self.v0 = tri[:, 0]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        self.normals = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-300)

    def first_hit(self, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cast rays; ``dirs`` must be unit vectors (ENU).

        Returns ``(face, dist)``: the hit face id (scene ids if ``face_index`` was
        given; -1 for a miss) and the float64 distance along the ray (``inf`` for a miss).
        """
        origins = np.asarray(origins, dtype=np.float64)
        dirs = np.asarray(dirs, dtype=np.float64)
        n = len(origins)
        face = np.full(n, -1, dtype=np.int64)
        dist = np.full(n, np.inf)
        if self._rmi is None or n == 0:
            return face, dist
        for s in range(0, n, _CHUNK):
            o = origins[s : s + _CHUNK]
            d = dirs[s : s + _CHUNK]
            tri = np.asarray(
                self._rmi.run((o - self._shift).astype(np.float32), d.astype(np.float32)),
                dtype=np.int64,
            )
            hit = np.flatnonzero(tri >= 0)
            if len(hit) == 0:
                continue
            f = tri[hit]
            nrm = self.normals[f]
            den = np.einsum("ij,ij->i", nrm, d[hit])
            den = np.where(np.abs(den) < 1e-12, 1e-12, den)
            t = np.einsum("ij,ij->i", nrm, self.v0[f] - o[hit]) / den
            t = np.maximum(t, 0.0)
            face[s + hit] = f if self.face_index is None else self.face_index[f]
            dist[s + hit] = t
        return face, dist


def scene_caster(scene: TruthScene) -> RayCaster:
    """The (cached) :class:`RayCaster` of the whole scene."""
    caster = getattr(scene, "_twin_caster", None)
    if caster is None:
        caster = RayCaster(scene.vertices, scene.faces)
        scene._twin_caster = caster  # type: ignore[attr-defined]
    return caster


def face_normals(scene: TruthScene) -> np.ndarray:
    """Unit normals (ENU) of every scene face, from the vertex winding."""
    cached = getattr(scene, "face_normals", None)
    if cached is not None and len(cached) == len(scene.faces):
        return np.asarray(cached, dtype=np.float64)
    return scene_caster(scene).normals


@dataclass
class RenderResult:
    """One rendered photo: ``image`` (H, W, 3) uint8 sRGB, ``depth`` (H, W) float32
    metres along the optical axis (``inf`` for sky), ``face_id`` (H, W) int32 (-1 sky)."""

    image: np.ndarray
    depth: np.ndarray
    face_id: np.ndarray
    rays: int = 0  # rays cast (primary + shadow)


def linear_to_srgb8(rgb: np.ndarray) -> np.ndarray:
    """Linear RGB in [0, 1] to 8-bit sRGB (IEC 61966-2-1 transfer curve)."""
    c = np.clip(rgb, 0.0, 1.0)
    s = np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.power(c, 1 / 2.4) - 0.055)
    return np.round(s * 255.0).astype(np.uint8)


def pixel_rays(sensor, shot, offsets: np.ndarray | None = None) -> np.ndarray:
    """Unit ray directions (ENU) through pixels, shape (H*W*k, 3), row-major.

    ``offsets`` (k, 2) are sub-pixel positions in [0, 1) (default: the centre 0.5, 0.5);
    the k rays of one pixel are consecutive.
    """
    if offsets is None:
        offsets = np.array([[0.5, 0.5]])
    xc = _camera_rays(sensor, np.asarray(offsets, dtype=np.float64).tobytes())
    # (R.T @ xc.T).T, still unit length; einsum: numpy's matmul is slow for (N, 3) @ (3, 3)
    return np.einsum("ij,jk->ik", xc, np.asarray(shot.R, dtype=np.float64))


@functools.lru_cache(maxsize=8)
def _camera_rays(sensor, offsets_bytes: bytes) -> np.ndarray:
    """Unit ray directions in the camera frame (cached per sensor and sub-pixel offsets)."""
    offsets = np.frombuffer(offsets_bytes, dtype=np.float64).reshape(-1, 2)
    jj, ii = np.mgrid[0 : sensor.height, 0 : sensor.width]
    u = (ii[..., None] + offsets[:, 0]).ravel()
    v = (jj[..., None] + offsets[:, 1]).ravel()
    xc = np.column_stack(
        [(u - sensor.cx) / sensor.fx, (v - sensor.cy) / sensor.fy, np.ones(len(u))]
    )
    xc /= np.linalg.norm(xc, axis=1, keepdims=True)
    xc.flags.writeable = False
    return xc


def sky_color(dirs: np.ndarray) -> np.ndarray:
    """Linear RGB of the sky seen along unit directions (a gradient with elevation)."""
    w = np.clip(dirs[:, 2], 0.0, 1.0)[:, None] ** 0.5
    return _SKY_HORIZON * (1 - w) + _SKY_ZENITH * w


def shade(
    scene: TruthScene,
    origins: np.ndarray,
    dirs: np.ndarray,
    face: np.ndarray,
    dist: np.ndarray,
    *,
    shadows: bool = True,
) -> tuple[np.ndarray, int]:
    """Linear RGB radiance seen along rays whose hits are known; (N, 3) and shadow rays cast."""
    out = np.empty((len(dirs), 3))
    miss = face < 0
    out[miss] = sky_color(dirs[miss])
    hit = np.flatnonzero(~miss)
    if len(hit) == 0:
        return out, 0
    f = face[hit]
    p = origins[hit] + dirs[hit] * dist[hit, None]
    nrm = face_normals(scene)[f]
    # light the side of the face the ray sees (thin or open surfaces)
    flip = np.einsum("ij,ij->i", nrm, dirs[hit]) > 0
    nrm = np.where(flip[:, None], -nrm, nrm)
    cos_sun = np.maximum(nrm @ SUN_DIR, 0.0)
    lit = np.ones(len(hit))
    n_shadow = 0
    if shadows:
        sel = np.flatnonzero(cos_sun > 0)
        start = p[sel] + nrm[sel] * 1e-3
        sface, _ = scene_caster(scene).first_hit(start, np.broadcast_to(SUN_DIR, start.shape))
        lit[sel[sface >= 0]] = 0.0
        n_shadow = len(sel)
    albedo = np.clip(np.asarray(scene.albedo(p, f), dtype=np.float64), 0.0, 1.0)
    irr = SUN_IRRADIANCE * (cos_sun * lit)[:, None] + AMBIENT
    out[hit] = EXPOSURE * albedo * irr
    return out, n_shadow


def render(
    scene: TruthScene, sensor, shot, *, supersample: int = 1, shadows: bool = True
) -> RenderResult:
    """Render the photo ``shot`` (a :class:`~twin.synth.camera.Shot`) of ``scene``.

    One ray through each pixel centre gives ``depth`` and ``face_id``; the colour is
    the mean of ``supersample**2`` stratified sub-pixel rays (the centre ray when 1).
    Memory grows with the pixel count times ``supersample**2`` (about 200 bytes per
    ray, in chunks of 2**19 rays inside embree) and with the scene's faces (BVH).
    """
    h, w = sensor.height, sensor.width
    centre = np.asarray(shot.centre, dtype=np.float64)
    dirs = pixel_rays(sensor, shot)
    origins = np.broadcast_to(centre, dirs.shape)
    caster = scene_caster(scene)
    face, dist = caster.first_hit(origins, dirs)
    rays = len(dirs)
    zc = dirs @ np.asarray(shot.R)[2]  # cos of the angle to the optical axis
    depth = np.where(face >= 0, dist * zc, np.inf).astype(np.float32).reshape(h, w)
    if supersample <= 1:
        rgb, ns = shade(scene, origins, dirs, face, dist, shadows=shadows)
        rays += ns
    else:
        k = int(supersample)
        g = (np.arange(k) + 0.5) / k
        offs = np.column_stack([np.repeat(g, k), np.tile(g, k)])
        sdirs = pixel_rays(sensor, shot, offs)
        sorig = np.broadcast_to(centre, sdirs.shape)
        sface, sdist = caster.first_hit(sorig, sdirs)
        srgb, ns = shade(scene, sorig, sdirs, sface, sdist, shadows=shadows)
        rgb = srgb.reshape(-1, k * k, 3).mean(axis=1)
        rays += len(sdirs) + ns
    image = linear_to_srgb8(rgb).reshape(h, w, 3)
    return RenderResult(image, depth, face.astype(np.int32).reshape(h, w), rays)
