"""Simulated airborne LiDAR of a :class:`~twin.synth.model.TruthScene`.

Model
-----
* **Flight.** Parallel east-west strips (alternating direction, ``point_source_id`` =
  strip number from 1) at ``spec.lidar_altitude`` above ``spec.base_elevation``, at
  :data:`SPEED` m/s, spaced for :data:`SIDE_OVERLAP` side overlap of the nominal swath
  ``2 H tan(fov/2)`` and centred on the area; each strip is flown across the whole
  area (east-west extent of the scene's vertices).
* **Scanner.** An oscillating mirror: the scan angle is a triangle wave between
  ``-fov/2`` and ``+fov/2`` across the track (a zig-zag on the ground). The pulse
  rate is chosen so that the mean last-return density inside the area equals
  ``spec.lidar_density`` on a flat ground at the valley floor; the mirror frequency so
  that the along-track spacing of scan lines equals the across-track pulse spacing.
  Positive scan angles point to the right of the flight direction (LAS convention),
  in degrees in :class:`LidarPoints` and in 0.006-degree units in the LAS file.
* **Returns.** Each pulse is cast on the truth mesh (embree, float64 distances). A
  pulse whose first hit is a TREE face continues with probability
  :data:`P_THROUGH_CANOPY`: then, with probability :data:`P_MID_RETURN`, the next
  surface inside the canopy (at least :data:`MIN_RETURN_SEPARATION` m further, e.g.
  the back of the crown) gives an intermediate return, and the first non-tree
  surface beyond (ground, roof) gives the last return. ``number_of_returns`` is then
  2 or 3.
* **Noise.** Gaussian range noise ``N(0, spec.range_noise)`` along the ray (so the
  distance to the surface is its normal component). ``spec.noise_fraction`` of the
  pulses become outliers (class 7, single return): half "high" points in the air 5 to
  60 m before the surface, half "low" points 2 to 15 m below it.
* **Intensity** (uint16): a reflectance per surface type times ``|cos(incidence)|``,
  scaled by ``(H / range)**2``, divided by the number of returns sharing the pulse,
  with 5 % multiplicative speckle.
* **Classes**: ASPRS class of the hit face's :class:`~twin.synth.model.Surface`
  (:data:`~twin.synth.model.ASPRS_CLASS`); TREE hits are split by height above the
  ground (terrain faces) straight below: < 0.5 m class 3, < 2 m class 4, else 5.
* **Time**: adjusted standard GPS time (GPS seconds minus 1e9, LAS global-encoding
  bit 0 set), from ``spec.start_time`` (UTC) + 18 leap seconds; strips are flown one
  after another with a :data:`TURN_TIME` s turn between them.
* **Colour**: RGB (uint16, 8-bit sRGB times 257) from the scene's albedo at the true
  hit point (grey for outliers); written as LAS point format 7.

Truth-only arrays (``face_id``, ``true_xyz``) are kept in :class:`LidarPoints` but not
written to the file. For outliers ``face_id`` is -1 and ``true_xyz`` is the outlier
position itself.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, fields

import numpy as np

from twin.crs import LocalFrame, parse_crs
from twin.errors import InputError, OutputError, ParameterError
from twin.synth.model import ASPRS_CLASS, ASPRS_NOISE, Surface, TruthScene
from twin.synth.params import SurveySpec
from twin.synth.render import RayCaster, face_normals, linear_to_srgb8, scene_caster

SPEED = 60.0  # aircraft ground speed (m/s)
SIDE_OVERLAP = 0.25  # between neighbouring strips (share of the nominal swath)
TURN_TIME = 90.0  # seconds between the end of one strip and the start of the next
P_THROUGH_CANOPY = 0.6  # probability that a pulse hitting a tree continues beyond
P_MID_RETURN = 0.35  # of those, probability of an intermediate return in the crown
MIN_RETURN_SEPARATION = 1.5  # metres between two returns of the same pulse
GPS_EPOCH = _dt.datetime(1980, 1, 6, tzinfo=_dt.UTC)
GPS_LEAP_SECONDS = 18  # GPS - UTC since 2017-01-01
REFLECTANCE = {
    Surface.GROUND: 0.35,
    Surface.ROAD: 0.12,
    Surface.WATER: 0.03,
    Surface.WALL: 0.40,
    Surface.ROOF: 0.25,
    Surface.TREE: 0.50,
}
_TREE = int(Surface.TREE)
_GROUND_SURFACES = (int(Surface.GROUND), int(Surface.ROAD), int(Surface.WATER))


@dataclass
class LidarPoints:
    """Simulated LiDAR returns in the scene's ENU frame, ordered by pulse time.

    Arrays of length N: ``xyz`` (N, 3) float64 ENU metres (noisy); ``intensity`` uint16;
    ``return_number`` / ``number_of_returns`` uint8; ``scan_angle`` float32 degrees
    (positive right of the flight direction); ``gps_time`` float64 adjusted standard GPS
    time (s); ``classification`` uint8 ASPRS; ``point_source_id`` uint16 (strip, from 1);
    ``scan_direction_flag`` / ``edge_of_flight_line`` uint8 (0/1); ``rgb`` (N, 3) uint16.
    Truth only: ``face_id`` int64 (-1 for outliers), ``true_xyz`` noise-free ENU.
    """

    xyz: np.ndarray
    intensity: np.ndarray
    return_number: np.ndarray
    number_of_returns: np.ndarray
    scan_angle: np.ndarray
    gps_time: np.ndarray
    classification: np.ndarray
    point_source_id: np.ndarray
    scan_direction_flag: np.ndarray
    edge_of_flight_line: np.ndarray
    rgb: np.ndarray
    face_id: np.ndarray
    true_xyz: np.ndarray

    def __len__(self) -> int:
        return len(self.xyz)


@dataclass(frozen=True)
class LidarPlan:
    """Flight and scanner settings derived from a spec and the area (ENU metres)."""

    strips_y: tuple[float, ...]  # northing of each strip's track
    x0: float  # west end of the strips
    x1: float  # east end
    altitude: float  # ENU z of the aircraft
    swath: float  # nominal swath width on flat ground at base elevation (m)
    pulse_rate: float  # pulses per second
    scan_rate: float  # mirror oscillations per second (two scan lines each)
    half_fov: float  # radians


def adjusted_gps_time(utc_iso: str) -> float:
    """Adjusted standard GPS time (GPS seconds since 1980-01-06 minus 1e9) of a UTC time."""
    t = _dt.datetime.fromisoformat(utc_iso.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    return (t - GPS_EPOCH).total_seconds() + GPS_LEAP_SECONDS - 1e9


def plan_lidar(
    bounds_enu: tuple[float, float, float, float], spec: SurveySpec, frame_h: float = 0.0
) -> LidarPlan:
    """Strips and pulse/scan rates covering ``bounds_enu`` (xmin, ymin, xmax, ymax)."""
    x0, y0, x1, y1 = (float(b) for b in bounds_enu)
    if not (x1 > x0 and y1 > y0):
        raise ParameterError(f"empty LiDAR survey area {bounds_enu}")
    H = float(spec.lidar_altitude)
    if H <= 0 or not 0 < spec.lidar_fov < 170:
        raise ParameterError("lidar_altitude must be > 0 and lidar_fov in (0, 170) degrees")
    half = np.radians(spec.lidar_fov) / 2
    swath = 2 * H * np.tan(half)
    spacing = swath * (1 - SIDE_OVERLAP)
    ly = y1 - y0
    n = 1 if ly <= swath else int(np.ceil((ly - swath) / spacing)) + 1
    yc = 0.5 * (y0 + y1)
    ys = tuple(yc + (i - (n - 1) / 2) * spacing for i in range(n))
    # share of each strip's pulses (uniform in scan angle) landing inside [y0, y1]
    frac = 0.0
    for y in ys:
        a = max(-half, np.arctan((y0 - y) / H))
        b = min(half, np.arctan((y1 - y) / H))
        frac += max(0.0, b - a) / (2 * half)
    length = x1 - x0
    pulses_needed = spec.lidar_density * length * ly
    pulse_rate = pulses_needed * SPEED / (length * frac)
    scan_rate = 0.5 * np.sqrt(pulse_rate * SPEED / swath)
    return LidarPlan(
        strips_y=ys,
        x0=x0,
        x1=x1,
        altitude=spec.base_elevation + H - frame_h,
        swath=swath,
        pulse_rate=float(pulse_rate),
        scan_rate=float(scan_rate),
        half_fov=float(half),
    )


def _triangle_wave(phase: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Triangle wave in [-1, 1] of ``phase`` (cycles) and its direction (+1 rising)."""
    f = phase - np.floor(phase)
    rising = f < 0.5
    val = np.where(rising, -1 + 4 * f, 3 - 4 * f)
    return val, np.where(rising, 1, -1)


def _ground_caster(scene: TruthScene) -> RayCaster:
    c = getattr(scene, "_twin_ground_caster", None)
    if c is None:
        idx = np.flatnonzero(np.isin(scene.face_surface, _GROUND_SURFACES))
        c = RayCaster(scene.vertices, scene.faces[idx], idx)
        scene._twin_ground_caster = c  # type: ignore[attr-defined]
    return c


def _non_tree_caster(scene: TruthScene) -> RayCaster:
    c = getattr(scene, "_twin_non_tree_caster", None)
    if c is None:
        idx = np.flatnonzero(scene.face_surface != _TREE)
        c = RayCaster(scene.vertices, scene.faces[idx], idx)
        scene._twin_non_tree_caster = c  # type: ignore[attr-defined]
    return c


def classify_hits(scene: TruthScene, xyz: np.ndarray, face: np.ndarray) -> np.ndarray:
    """ASPRS classes of noise-free hits on ``face``; trees split 3/4/5 by height above
    the terrain straight below (5 where no terrain is found)."""
    surf = scene.face_surface[face]
    lut = np.zeros(256, dtype=np.uint8)
    for s, c in ASPRS_CLASS.items():
        lut[int(s)] = c
    cls = lut[surf]
    tree = np.flatnonzero(surf == _TREE)
    if len(tree):
        start = xyz[tree] + np.array([0.0, 0.0, 1e-3])
        down = np.broadcast_to(np.array([0.0, 0.0, -1.0]), start.shape)
        gface, gdist = _ground_caster(scene).first_hit(start, down)
        hag = np.where(gface >= 0, gdist, np.inf)
        cls[tree] = np.where(hag < 0.5, 3, np.where(hag < 2.0, 4, 5))
    return cls


def simulate_lidar(scene: TruthScene, spec: SurveySpec, rng: np.random.Generator) -> LidarPoints:
    """Fly the LiDAR survey over ``scene`` and return every return (see module docs).

    The area is the east/north extent of the scene's vertices. Deterministic for a
    given ``rng`` state. Strips are simulated one at a time: peak memory grows with the
    pulses of one strip (about 400 bytes each) plus the returned points (about 110
    bytes per point: density x area) and the embree BVH of the scene.
    """
    if len(scene.faces) == 0:
        raise InputError("the truth scene has no faces: nothing to scan")
    x0, y0 = scene.vertices[:, :2].min(axis=0)
    x1, y1 = scene.vertices[:, :2].max(axis=0)
    plan = plan_lidar((x0, y0, x1, y1), spec, frame_h=0.0)
    t_start = adjusted_gps_time(spec.start_time)
    caster = scene_caster(scene)
    out: list[LidarPoints] = []
    t_strip = t_start
    dur = (plan.x1 - plan.x0) / SPEED
    for k, ys in enumerate(plan.strips_y):
        n = int(np.floor(dur * plan.pulse_rate))
        t = np.arange(n) / plan.pulse_rate
        east = k % 2 == 0  # alternate flight direction
        heading = np.array([1.0, 0.0, 0.0]) if east else np.array([-1.0, 0.0, 0.0])
        right = np.cross(heading, [0.0, 0.0, 1.0])
        ax = plan.x0 + SPEED * t if east else plan.x1 - SPEED * t
        origin = np.column_stack([ax, np.full(n, ys), np.full(n, plan.altitude)])
        wave, direction = _triangle_wave(t * plan.scan_rate + 0.25)
        theta = wave * plan.half_fov
        dirs = np.sin(theta)[:, None] * right + np.cos(theta)[:, None] * np.array([0, 0, -1.0])
        edge = np.zeros(n, np.uint8)
        edge[:-1] = direction[:-1] != direction[1:]
        face, dist = caster.first_hit(origin, dirs)
        keep = face >= 0
        out.append(
            _strip_returns(
                scene,
                spec,
                rng,
                dict(
                    origin=origin[keep],
                    dirs=dirs[keep],
                    face=face[keep],
                    dist=dist[keep],
                    theta=np.degrees(theta[keep]),
                    time=t_strip + t[keep],
                    strip=np.full(int(keep.sum()), k + 1, np.uint16),
                    sdir=(direction[keep] > 0).astype(np.uint8),
                    edge=edge[keep],
                ),
            )
        )
        t_strip += dur + TURN_TIME
    return LidarPoints(
        **{f.name: np.concatenate([getattr(p, f.name) for p in out]) for f in fields(LidarPoints)}
    )


def _empty() -> LidarPoints:
    z = np.zeros
    return LidarPoints(
        xyz=z((0, 3)),
        intensity=z(0, np.uint16),
        return_number=z(0, np.uint8),
        number_of_returns=z(0, np.uint8),
        scan_angle=z(0, np.float32),
        gps_time=z(0),
        classification=z(0, np.uint8),
        point_source_id=z(0, np.uint16),
        scan_direction_flag=z(0, np.uint8),
        edge_of_flight_line=z(0, np.uint8),
        rgb=z((0, 3), np.uint16),
        face_id=z(0, np.int64),
        true_xyz=z((0, 3)),
    )


def _strip_returns(
    scene: TruthScene, spec: SurveySpec, rng: np.random.Generator, P: dict
) -> LidarPoints:
    """Returns, noise, classes and intensity of one strip's pulses that hit the scene."""
    caster = scene_caster(scene)
    normals = face_normals(scene)
    H = float(spec.lidar_altitude)
    n_pulse = len(P["face"])
    if n_pulse == 0:
        return _empty()

    # --- returns per pulse ------------------------------------------------------------------
    first_tree = scene.face_surface[P["face"]] == _TREE
    through = first_tree & (rng.random(n_pulse) < P_THROUGH_CANOPY)
    want_mid = through & (rng.random(n_pulse) < P_MID_RETURN)
    ti = np.flatnonzero(through)
    p_first = P["origin"][ti] + P["dirs"][ti] * P["dist"][ti, None]
    # last return: first non-tree surface beyond the canopy
    lface, ldist = _non_tree_caster(scene).first_hit(
        p_first + P["dirs"][ti] * MIN_RETURN_SEPARATION, P["dirs"][ti]
    )
    ok_last = lface >= 0
    ldist = ldist + MIN_RETURN_SEPARATION + P["dist"][ti]
    # intermediate: next surface of any kind, if still clearly before the last one
    mi = np.flatnonzero(want_mid[ti] & ok_last)
    mface, mdist = caster.first_hit(
        p_first[mi] + P["dirs"][ti[mi]] * MIN_RETURN_SEPARATION, P["dirs"][ti[mi]]
    )
    mdist = mdist + MIN_RETURN_SEPARATION + P["dist"][ti[mi]]
    ok_mid = (
        (mface >= 0)
        & (scene.face_surface[np.maximum(mface, 0)] == _TREE)
        & (mdist < ldist[mi] - MIN_RETURN_SEPARATION)
    )

    nret = np.ones(n_pulse, np.uint8)
    nret[ti[ok_last]] = 2
    nret[ti[mi[ok_mid]]] = 3
    # assemble (pulse, return number, face, dist) rows, ordered by pulse then return
    rows_p = [np.arange(n_pulse), ti[mi[ok_mid]], ti[ok_last]]
    rows_r = [
        np.ones(n_pulse, np.uint8),
        np.full(int(ok_mid.sum()), 2, np.uint8),
        nret[ti[ok_last]],
    ]
    rows_f = [P["face"], mface[ok_mid], lface[ok_last]]
    rows_d = [P["dist"], mdist[ok_mid], ldist[ok_last]]
    pulse = np.concatenate(rows_p)
    rnum = np.concatenate(rows_r)
    face = np.concatenate(rows_f)
    dist = np.concatenate(rows_d)
    order = np.lexsort((rnum, pulse))
    pulse, rnum, face, dist = pulse[order], rnum[order], face[order], dist[order]
    m = len(pulse)

    o = P["origin"][pulse]
    d = P["dirs"][pulse]
    true_xyz = o + d * dist[:, None]
    noisy = dist + rng.normal(0.0, spec.range_noise, m)
    xyz = o + d * noisy[:, None]
    cls = classify_hits(scene, true_xyz, face)

    # intensity
    refl = np.zeros(256)
    for s, r in REFLECTANCE.items():
        refl[int(s)] = r
    cosi = np.abs(np.einsum("ij,ij->i", normals[face], d))
    inten = refl[scene.face_surface[face]] * cosi * (H / np.maximum(dist, 1.0)) ** 2
    inten = inten / nret[pulse] * (1 + 0.05 * rng.standard_normal(m))
    intensity = np.clip(np.round(inten * 60000), 0, 65535).astype(np.uint16)

    rgb = (linear_to_srgb8(np.asarray(scene.albedo(true_xyz, face))).astype(np.uint16)) * 257

    # outliers: whole pulses replaced by one noise point
    n_out = int(round(spec.noise_fraction * n_pulse))
    out_pulses = np.sort(rng.choice(n_pulse, size=min(n_out, n_pulse), replace=False))
    is_out = np.isin(pulse, out_pulses)
    drop = is_out & (rnum > 1)
    first_of_out = np.flatnonzero(is_out & (rnum == 1))
    high = rng.random(len(first_of_out)) < 0.5
    off = np.where(
        high, -rng.uniform(5, 60, len(first_of_out)), rng.uniform(2, 15, len(first_of_out))
    )
    xyz[first_of_out] = xyz[first_of_out] + d[first_of_out] * off[:, None]
    true_xyz[first_of_out] = xyz[first_of_out]
    face[first_of_out] = -1
    cls[first_of_out] = ASPRS_NOISE
    nret_pt = nret[pulse].copy()
    nret_pt[first_of_out] = 1
    intensity[first_of_out] = np.clip(rng.uniform(0, 3000, len(first_of_out)), 0, 65535).astype(
        np.uint16
    )
    rgb[first_of_out] = 128 * 257
    keep = ~drop

    return LidarPoints(
        xyz=xyz[keep],
        intensity=intensity[keep],
        return_number=rnum[keep],
        number_of_returns=nret_pt[keep],
        scan_angle=P["theta"][pulse][keep].astype(np.float32),
        gps_time=P["time"][pulse][keep],
        classification=cls[keep],
        point_source_id=P["strip"][pulse][keep],
        scan_direction_flag=P["sdir"][pulse][keep],
        edge_of_flight_line=P["edge"][pulse][keep],
        rgb=rgb[keep],
        face_id=face[keep],
        true_xyz=true_xyz[keep],
    )


def write_lidar(points: LidarPoints, frame: LocalFrame, crs, path: str | os.PathLike) -> None:
    """Write ``points`` as LAS 1.4 point format 7 LAZ (laspy + lazrs).

    Coordinates go from ENU to ``crs`` with ``frame.to_crs``; scale 0.001 (mm),
    offsets the minimum rounded down to 1 km; the CRS as an OGC WKT VLR (global
    encoding WKT bit set) and GPS time flagged as adjusted standard GPS time. The
    header's creation date is the UTC date of the first GPS time and the system id
    "twin synth", so the same points give the same bytes. Written to a temporary name
    and renamed. Memory grows with the point count (about 100 bytes per point).
    """
    import laspy

    from twin import __version__
    from twin.fileio import atomic_path

    crs_obj = parse_crs(crs)
    n = len(points.xyz)
    xyz = frame.to_crs(points.xyz, crs_obj) if n else np.zeros((0, 3))
    header = laspy.LasHeader(point_format=7, version="1.4")
    header.scales = np.array([0.001, 0.001, 0.001])
    header.offsets = np.floor(xyz.min(axis=0) / 1000.0) * 1000.0 if n else np.zeros(3)
    header.add_crs(crs_obj)
    header.global_encoding.gps_time_type = laspy.header.GpsTimeType.STANDARD
    header.system_identifier = "twin synth"
    header.generating_software = f"twin {__version__}"[:32]
    if n:
        gps = float(points.gps_time.min()) + 1e9 - GPS_LEAP_SECONDS
        header.creation_date = (GPS_EPOCH + _dt.timedelta(seconds=gps)).date()
    else:
        header.creation_date = _dt.date(2026, 1, 1)
    las = laspy.LasData(header)
    las.x = xyz[:, 0]
    las.y = xyz[:, 1]
    las.z = xyz[:, 2]
    las.intensity = points.intensity
    las.return_number = points.return_number
    las.number_of_returns = points.number_of_returns
    las.scan_direction_flag = points.scan_direction_flag
    las.edge_of_flight_line = points.edge_of_flight_line
    las.classification = points.classification
    las.scan_angle = np.round(points.scan_angle / 0.006).astype(np.int16)
    las.point_source_id = points.point_source_id
    las.gps_time = points.gps_time
    las.red = points.rgb[:, 0]
    las.green = points.rgb[:, 1]
    las.blue = points.rgb[:, 2]
    try:
        with atomic_path(path) as tmp:
            las.write(str(tmp), do_compress=True, laz_backend=laspy.LazBackend.Lazrs)
    except OSError as exc:
        raise OutputError(f"cannot write the LAZ file: {exc}", path=path) from None
