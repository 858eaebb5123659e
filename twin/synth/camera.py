"""The five-camera oblique rig of the synthetic survey: sensors, flight plan, photos.

Conventions (the contract for SfM and texturing work)
-----------------------------------------------------
* Poses live in the ENU frame of the :class:`~twin.synth.model.TruthScene` (metres).
* Pinhole cameras, COLMAP convention: camera x right, y down, z forward;
  ``x_cam = R @ X_world + t`` with ``t = -R @ centre``; pixel ``u = fx*x/z + cx``,
  ``v = fy*y/z + cy``; pixel centres at integer + 0.5 (top-left pixel centre (0.5, 0.5);
  OpenCV puts them at integers: subtract 0.5 from cx, cy for OpenCV).
  No lens distortion (k1 = k2 = 0). Square pixels, principal point at the image centre.
* The rig: ``nadir`` (``spec.focal_mm``) and ``forward``, ``backward``, ``left``,
  ``right`` (``spec.oblique_focal_mm``) tilted :data:`OBLIQUE_TILT_DEG` from the vertical
  towards the flight direction, against it, and to the left/right of it. All share a
  ``spec.sensor_width_mm`` wide sensor of ``spec.image_width x spec.image_height`` px.
  The nadir image's top edge points along the flight direction; an oblique image is
  level (its x axis horizontal, its top away from the ground).
* Flight: east-west strips (alternating direction, a serpentine) at
  ``spec.flight_height`` above ``spec.base_elevation`` at :data:`SPEED` m/s. Shot
  spacing along a strip and strip spacing follow ``spec.forward_overlap`` and
  ``spec.side_overlap`` of the nadir footprint on flat ground at ``base_elevation``.
  Strips cover the area's north-south extent with the nadir camera (up to 10 % of a
  strip spacing may be left to the left/right obliques at the edges) and are extended
  east and west by the oblique cameras' near-footprint offset
  ``H * tan(tilt - half vertical field of view)`` so the obliques see the area's edges.
  All five cameras fire together at each station.
* Times are UTC seconds since the Unix epoch (float); the first station is at
  ``spec.start_time``.
* Image names: ``S{strip:02d}_P{station:03d}_{camera}`` (``.jpg`` on disk).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import time as _time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from twin.errors import InputError, ParameterError
from twin.synth.params import SurveySpec

log = logging.getLogger(__name__)

OBLIQUE_TILT_DEG = 45.0
SPEED = 12.0  # m/s, a survey drone / slow aircraft
TURN_TIME = 20.0  # s between strips
MIN_COVERAGE = 0.1  # photos seeing less of the scene than this are not written
RIG = ("nadir", "forward", "backward", "left", "right")
MAKE = "Twin Synthetic"
MODELS = {
    "nadir": "TS-5 Oblique Nadir",
    "forward": "TS-5 Oblique Forward",
    "backward": "TS-5 Oblique Backward",
    "left": "TS-5 Oblique Left",
    "right": "TS-5 Oblique Right",
}
CONVENTION = (
    "ENU metres in the local frame. Pinhole, OpenCV/COLMAP: camera x right, y down, "
    "z forward; x_cam = R @ X_world + t, t = -R @ centre; u = fx*x/z + cx, "
    "v = fy*y/z + cy; pixel centres at integer+0.5 (top-left pixel centre (0.5, 0.5)); "
    "no distortion (k1 = k2 = 0). Heights ellipsoidal (WGS 84 / CGCS2000 ellipsoid). "
    "Times UTC."
)


@dataclass(frozen=True)
class Sensor:
    """Intrinsics of one rig camera (pixels; ``focal_mm`` and ``sensor_width_mm`` in mm)."""

    name: str
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    focal_mm: float
    sensor_width_mm: float

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1.0]])

    @property
    def focal_35mm(self) -> int:
        """35 mm equivalent focal length (by the 36 mm frame width), rounded."""
        return int(round(self.focal_mm * 36.0 / self.sensor_width_mm))

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "model": "PINHOLE",
            "width": self.width,
            "height": self.height,
            "fx": self.fx,
            "fy": self.fy,
            "cx": self.cx,
            "cy": self.cy,
            "k1": 0.0,
            "k2": 0.0,
            "focal_mm": self.focal_mm,
            "sensor_width_mm": self.sensor_width_mm,
            "focal_35mm": self.focal_35mm,
            "make": MAKE,
            "camera_model": MODELS.get(self.name, self.name),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Sensor:
        return cls(
            str(d["name"]),
            int(d["width"]),
            int(d["height"]),
            float(d["fx"]),
            float(d["fy"]),
            float(d["cx"]),
            float(d["cy"]),
            float(d["focal_mm"]),
            float(d["sensor_width_mm"]),
        )


@dataclass
class Shot:
    """One photo: ``name``, its :class:`Sensor`, world-to-camera ``R`` (3x3) and ``t``
    (ENU metres), the camera ``centre`` (ENU), ``time`` (UTC Unix seconds), and where
    it was taken (``strip``, ``station``, flight ``heading`` in degrees from north)."""

    name: str
    sensor: Sensor
    R: np.ndarray
    t: np.ndarray
    centre: np.ndarray
    time: float
    strip: int = 0
    station: int = 0
    heading: float = 0.0
    extra: dict = field(default_factory=dict)

    def project(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (N, 2) and camera depth z (N,) of ENU points (N, 3)."""
        xc = np.einsum("ij,kj->ik", np.asarray(X, dtype=np.float64), self.R) + self.t
        s = self.sensor
        z = xc[:, 2]
        uv = np.column_stack([s.fx * xc[:, 0] / z + s.cx, s.fy * xc[:, 1] / z + s.cy])
        return uv, z


def rig_sensors(spec: SurveySpec) -> dict[str, Sensor]:
    """The five rig sensors of ``spec`` (nadir with ``focal_mm``, obliques ``oblique_focal_mm``)."""
    out = {}
    for name in RIG:
        f_mm = spec.focal_mm if name == "nadir" else spec.oblique_focal_mm
        if f_mm <= 0 or spec.sensor_width_mm <= 0:
            raise ParameterError("focal lengths and sensor_width_mm must be > 0")
        f = f_mm / spec.sensor_width_mm * spec.image_width
        out[name] = Sensor(
            name,
            spec.image_width,
            spec.image_height,
            f,
            f,
            spec.image_width / 2,
            spec.image_height / 2,
            float(f_mm),
            float(spec.sensor_width_mm),
        )
    return out


def look_rotation(axis: np.ndarray, heading_vec: np.ndarray) -> np.ndarray:
    """World-to-camera rotation for a camera looking along ``axis`` (ENU unit vector).

    The image is level: camera y (down in the image) is the world's down direction
    projected off the axis; for a vertical axis it is minus ``heading_vec`` (the image
    top points along the flight).
    """
    z = np.asarray(axis, dtype=np.float64)
    z = z / np.linalg.norm(z)
    down = np.array([0.0, 0.0, -1.0])
    y = down - (down @ z) * z
    if np.linalg.norm(y) < 1e-9:
        y = -np.asarray(heading_vec, dtype=np.float64)
        y = y - (y @ z) * z
    y = y / np.linalg.norm(y)
    x = np.cross(y, z)
    return np.vstack([x, y, z])


def rig_axes(heading_vec: np.ndarray, tilt_deg: float = OBLIQUE_TILT_DEG) -> dict[str, np.ndarray]:
    """Optical axes (ENU unit vectors) of the five rig cameras for a flight direction."""
    h = np.asarray(heading_vec, dtype=np.float64)
    h = h / np.linalg.norm(h)
    up = np.array([0.0, 0.0, 1.0])
    right = np.cross(h, up)
    c, s = np.cos(np.radians(tilt_deg)), np.sin(np.radians(tilt_deg))
    return {
        "nadir": -up,
        "forward": -c * up + s * h,
        "backward": -c * up - s * h,
        "left": -c * up - s * right,
        "right": -c * up + s * right,
    }


def _utc_seconds(iso: str) -> float:
    t = _dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    return t.timestamp()


def utc_iso(seconds: float) -> str:
    """ISO 8601 UTC with milliseconds (``2026-05-01T08:00:01.500Z``)."""
    ms = int(round(seconds * 1000))
    t = _dt.datetime.fromtimestamp(ms // 1000, tz=_dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def footprint(spec: SurveySpec) -> tuple[float, float]:
    """Nadir ground footprint (across-track, along-track) in metres on flat ground at
    ``flight_height`` below the camera (image width across the track)."""
    s = rig_sensors(spec)["nadir"]
    H = spec.flight_height
    return H * s.width / s.fx, H * s.height / s.fy


def plan_flight(
    bounds_enu: tuple[float, float, float, float],
    spec: SurveySpec,
    *,
    frame_h: float = 0.0,
    extend: float | None = None,
) -> list[Shot]:
    """Plan the rig's stations over ``bounds_enu`` (xmin, ymin, xmax, ymax, ENU metres).

    Returns the shots in flight order (five per station, :data:`RIG` order).
    ``extend`` overrides how far (m) strips run past the east and west edges; the
    default is the obliques' near-footprint offset. ``frame_h`` is the ellipsoidal
    height of the ENU origin (0 for the survey frame). Memory: a few hundred bytes
    per shot.
    """
    x0, y0, x1, y1 = (float(b) for b in bounds_enu)
    if not (x1 > x0 and y1 > y0):
        raise ParameterError(f"empty camera survey area {bounds_enu}")
    if spec.flight_height <= 0:
        raise ParameterError(f"flight_height={spec.flight_height} must be > 0")
    sensors = rig_sensors(spec)
    H = float(spec.flight_height)
    across, along = footprint(spec)
    base = along * (1 - spec.forward_overlap)
    spacing = across * (1 - spec.side_overlap)
    if extend is None:
        obl = sensors["forward"]
        half_v = np.arctan(obl.height / 2 / obl.fy)
        extend = H * np.tan(np.radians(OBLIQUE_TILT_DEG) - half_v)
    ly = y1 - y0
    # nadir strips cover the north-south extent, tolerating a shortfall of up to 10 % of
    # a strip spacing at the edges (the left/right obliques see it)
    n_strips = 1 if ly <= across else int(np.ceil((ly - across) / spacing - 0.1)) + 1
    yc = 0.5 * (y0 + y1)
    ys = [yc + (i - (n_strips - 1) / 2) * spacing for i in range(n_strips)]
    lx = (x1 - x0) + 2 * extend
    n_st = int(np.ceil(lx / base)) + 1
    xc = 0.5 * (x0 + x1)
    xs = np.array([xc + (i - (n_st - 1) / 2) * base for i in range(n_st)])
    z = spec.base_elevation + H - frame_h
    t = _utc_seconds(spec.start_time)
    shots: list[Shot] = []
    for k, y in enumerate(ys):
        east = k % 2 == 0
        hv = np.array([1.0, 0.0, 0.0]) if east else np.array([-1.0, 0.0, 0.0])
        heading = 90.0 if east else 270.0
        axes = rig_axes(hv)
        order = xs if east else xs[::-1]
        for j, x in enumerate(order):
            c = np.array([x, y, z])
            for name in RIG:
                R = look_rotation(axes[name], hv)
                shots.append(
                    Shot(
                        name=f"S{k + 1:02d}_P{j + 1:03d}_{name}",
                        sensor=sensors[name],
                        R=R,
                        t=-R @ c,
                        centre=c.copy(),
                        time=round(t, 3),
                        strip=k + 1,
                        station=j + 1,
                        heading=heading,
                    )
                )
            t += base / SPEED
        t += TURN_TIME - base / SPEED
    return shots


def gimbal_angles(R: np.ndarray) -> dict[str, float]:
    """DJI-style gimbal angles (degrees) of a world-to-camera rotation.

    Pitch: elevation of the optical axis (-90 looking straight down, 0 level); yaw:
    azimuth clockwise from north of the optical axis (of the image top for a vertical
    axis); roll: rotation of the image about the axis (0 for a level image).
    """
    x, y, z = np.asarray(R, dtype=np.float64)
    pitch = np.degrees(np.arcsin(np.clip(z[2], -1, 1)))
    if abs(z[2]) > 1 - 1e-9:
        top = -y
        yaw = np.degrees(np.arctan2(top[0], top[1]))
        roll = 0.0
    else:
        yaw = np.degrees(np.arctan2(z[0], z[1]))
        roll = np.degrees(np.arctan2(x[2], -y[2]))
    return {"pitch": float(pitch), "yaw": float(yaw), "roll": float(roll)}


def coverage(scene, shot, grid: tuple[int, int] = (16, 12)) -> float:
    """Share of a coarse ``grid`` (columns, rows) of rays through the image that hit the
    scene: a cheap test of whether a photo shows anything of the survey area."""
    from twin.synth.render import pixel_rays, scene_caster

    s = shot.sensor
    small = Sensor(
        s.name,
        grid[0],
        grid[1],
        s.fx * grid[0] / s.width,
        s.fy * grid[1] / s.height,
        s.cx * grid[0] / s.width,
        s.cy * grid[1] / s.height,
        s.focal_mm,
        s.sensor_width_mm,
    )
    d = pixel_rays(small, shot)
    face, _ = scene_caster(scene).first_hit(np.broadcast_to(shot.centre, d.shape), d)
    return float((face >= 0).mean())


# --- writing and reading the photo set ------------------------------------------------------
def write_images(
    scene, spec: SurveySpec, out_dir: str | os.PathLike, rng: np.random.Generator, progress=None
) -> dict:
    """Plan the flight over ``scene``, render every photo and write the photo set.

    Writes ``out_dir/images/<name>.jpg`` (JPEG ``spec.jpeg_quality``, EXIF with GPS from
    the true centre plus noise ``N(0, gps_sigma)`` horizontally and ``2 gps_sigma``
    vertically, XMP gimbal angles: see :mod:`twin.synth.exif`) and
    ``out_dir/cameras.json``; returns the ``cameras.json`` dict. The area is the
    east/north extent of the scene's vertices. Planned photos whose view hits the scene
    with less than :data:`MIN_COVERAGE` of a coarse ray grid (run-in/run-out stations
    looking off the modelled world) are not written. Each file is written atomically.
    Memory grows with one image (pixels x ~300 bytes) plus the scene's BVH.
    """
    from twin.crs import GEODETIC_3D, crs_label, parse_crs
    from twin.fileio import atomic_path, write_json
    from twin.progress import ensure
    from twin.synth.exif import jpeg_bytes
    from twin.synth.render import render

    if len(scene.faces) == 0:
        raise InputError("the truth scene has no faces: nothing to photograph")
    progress = ensure(progress)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    frame = scene.frame
    crs = parse_crs(spec.crs)
    x0, y0 = scene.vertices[:, :2].min(axis=0)
    x1, y1 = scene.vertices[:, :2].max(axis=0)
    shots = plan_flight((x0, y0, x1, y1), spec, frame_h=0.0)
    centres = np.array([s.centre for s in shots])
    # one GPS fix per station (all five cameras share the rig's receiver)
    station_key = [(s.strip, s.station) for s in shots]
    keys = sorted(set(station_key), key=station_key.index)
    noise = rng.normal(0.0, 1.0, (len(keys), 3)) * np.array(
        [spec.gps_sigma, spec.gps_sigma, 2 * spec.gps_sigma]
    )
    noise_of = {k: noise[i] for i, k in enumerate(keys)}
    noisy = centres + np.array([noise_of[k] for k in station_key])
    true_llh = frame.to_crs(centres, GEODETIC_3D)
    noisy_llh = frame.to_crs(noisy, GEODETIC_3D)
    true_crs = frame.to_crs(centres, crs)
    sensors = rig_sensors(spec)
    covered = [coverage(scene, s) >= MIN_COVERAGE for s in shots]
    images = []
    rays = 0
    t_render = 0.0
    with progress.step("oblique photos", total=len(shots)) as advance:
        for i, shot in enumerate(shots):
            if not covered[i]:
                advance(1)
                continue
            t0 = _time.perf_counter()
            res = render(scene, shot.sensor, shot)
            t_render += _time.perf_counter() - t0
            rays += res.rays
            g = gimbal_angles(shot.R)
            data, gps_written = jpeg_bytes(
                res.image,
                shot,
                lon=float(noisy_llh[i, 0]),
                lat=float(noisy_llh[i, 1]),
                alt=float(noisy_llh[i, 2]),
                relative_altitude=float(noisy[i, 2] - (spec.base_elevation)),
                gimbal=g,
                quality=spec.jpeg_quality,
            )
            with atomic_path(out / "images" / f"{shot.name}.jpg") as tmp:
                tmp.write_bytes(data)
            images.append(
                {
                    "file": f"{shot.name}.jpg",
                    "name": shot.name,
                    "sensor": shot.sensor.name,
                    "R": shot.R.tolist(),
                    "t": shot.t.tolist(),
                    "centre_enu": shot.centre.tolist(),
                    "centre_crs": true_crs[i].tolist(),
                    "centre_lonlat": {
                        "lon": float(true_llh[i, 0]),
                        "lat": float(true_llh[i, 1]),
                        "h": float(true_llh[i, 2]),
                    },
                    "gps_exif": gps_written,
                    "gimbal_deg": g,
                    "heading_deg": shot.heading,
                    "strip": shot.strip,
                    "station": shot.station,
                    "time": utc_iso(shot.time),
                    "time_unix": shot.time,
                }
            )
            advance(1)
    across, along = footprint(spec)
    cams = {
        "convention": CONVENTION,
        "frame": frame.to_dict(),
        "crs": {"label": crs_label(crs), "wkt": crs.to_wkt()},
        "heights": "ellipsoidal (WGS 84 / CGCS2000 ellipsoid), metres; EXIF GPSAltitude too",
        "gps": {
            "sigma_horizontal_m": spec.gps_sigma,
            "sigma_vertical_m": 2 * spec.gps_sigma,
            "note": "gps_exif is exactly what the JPEG's EXIF holds (rational precision)",
        },
        "flight": {
            "height_above_base_m": spec.flight_height,
            "base_elevation_m": spec.base_elevation,
            "speed_m_s": SPEED,
            "forward_overlap": spec.forward_overlap,
            "side_overlap": spec.side_overlap,
            "nadir_footprint_m": [across, along],
            "nadir_gsd_m": spec.flight_height / sensors["nadir"].fx,
            "oblique_tilt_deg": OBLIQUE_TILT_DEG,
            "strips": int(max(s.strip for s in shots)),
            "stations": len(keys),
            "planned_images": len(shots),
            "skipped_images": int(len(shots) - sum(covered)),
            "min_coverage": MIN_COVERAGE,
        },
        "sensors": {name: s.to_dict() for name, s in sensors.items()},
        "images": images,
    }
    write_json(out / "cameras.json", cams)
    log.info(
        "%d photos, %d rays in %.1f s (%.2f M rays/s)",
        len(images),
        rays,
        t_render,
        rays / max(t_render, 1e-9) / 1e6,
    )
    return cams


@dataclass
class CameraSet:
    """``cameras.json`` read back: the frame, survey CRS (WKT), sensors by name, the
    shots (in file order), the EXIF GPS per image name (lon, lat, alt) and the raw dict."""

    frame: object
    crs: str
    sensors: dict[str, Sensor]
    shots: list[Shot]
    gps: dict[str, tuple[float, float, float]]
    raw: dict


def read_cameras(path: str | os.PathLike) -> CameraSet:
    """Read ``cameras.json`` (a file, or a survey folder holding one)."""
    from twin.crs import LocalFrame

    p = Path(path)
    if p.is_dir():
        p = p / "cameras.json"
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError:
        raise InputError("no such cameras file", path=p) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"cameras file is not valid JSON: {exc}", path=p) from None
    try:
        frame = LocalFrame.from_dict(d["frame"])
        sensors = {k: Sensor.from_dict(v) for k, v in d["sensors"].items()}
        shots, gps = [], {}
        for im in d["images"]:
            R = np.asarray(im["R"], dtype=np.float64)
            t = np.asarray(im["t"], dtype=np.float64)
            if R.shape != (3, 3) or t.shape != (3,):
                raise ValueError(f"image {im.get('name')!r}: R must be 3x3 and t of length 3")
            shots.append(
                Shot(
                    name=im["name"],
                    sensor=sensors[im["sensor"]],
                    R=R,
                    t=t,
                    centre=np.asarray(im["centre_enu"], dtype=np.float64),
                    time=float(im["time_unix"]),
                    strip=int(im.get("strip", 0)),
                    station=int(im.get("station", 0)),
                    heading=float(im.get("heading_deg", 0.0)),
                )
            )
            g = im["gps_exif"]
            gps[im["name"]] = (float(g["lon"]), float(g["lat"]), float(g["alt"]))
        crs = d["crs"]["wkt"]
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"cameras file is malformed: {exc!r}", path=p) from None
    return CameraSet(frame, crs, sensors, shots, gps, d)
