"""Coordinate reference systems and local frames.

Inputs keep their CRS (EPSG code, WKT, PROJ string: whatever pyproj understands).
Processing runs in a :class:`LocalFrame`: an east-north-up (ENU) Cartesian frame in
metres, anchored at a geodetic origin near the data. Outputs place it on the globe
with :meth:`LocalFrame.enu_to_ecef_matrix` (the 3D Tiles root transform).

Conventions
-----------
* All arrays are ``(N, 3)`` float64, axis order x/east, y/north, z/up, whatever the
  CRS's own axis order (pyproj is always used with ``always_xy=True``).
* ECEF is EPSG:4978 (WGS 84 geocentric). CGCS2000 (EPSG:4490 and its Gauss–Krüger
  zones EPSG:4491–4554) is aligned with ITRF at the centimetre level; pyproj treats
  CGCS2000 ⇄ WGS 84 as a null transformation, and so do we.
* Heights: a 2D CRS carries ellipsoidal heights. In a projected 2D CRS whose unit is
  the foot or the US survey foot, z is taken in that same unit (the LAS convention);
  pass ``z_unit="metre"`` where a file says otherwise. A compound CRS with a
  gravity-related vertical part is transformed exactly when PROJ has the geoid
  model; without it, heights are kept as they are and a warning says so (the error
  is the local geoid undulation, up to tens of metres).
"""

from __future__ import annotations

import functools
import logging
import warnings
from dataclasses import dataclass

import numpy as np
import pyproj
from pyproj.exceptions import CRSError as _PyprojCRSError

from twin.errors import CRSError

log = logging.getLogger(__name__)

ECEF = "EPSG:4978"
GEODETIC_3D = "EPSG:4979"  # WGS 84 longitude, latitude, ellipsoidal height
CGCS2000 = "EPSG:4490"
CGCS2000_3D = "EPSG:4480"

CRSLike = "pyproj.CRS | str | int"


def parse_crs(value, *, source=None) -> pyproj.CRS:
    """Return a :class:`pyproj.CRS` for an EPSG code, ``"EPSG:n"``, WKT, PROJ string,
    or a CRS object (pyproj or rasterio). ``source`` (a file path) is named in errors."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise CRSError("no coordinate reference system given", path=source)
    if isinstance(value, pyproj.CRS):
        return value
    if hasattr(value, "to_wkt") and not isinstance(value, str):  # rasterio CRS and friends
        value = value.to_wkt()
    if isinstance(value, (int, np.integer)):
        value = f"EPSG:{int(value)}"
    try:
        crs = pyproj.CRS.from_user_input(value)
    except (_PyprojCRSError, TypeError, ValueError) as exc:
        text = str(value)
        shown = text if len(text) < 80 else text[:77] + "..."
        raise CRSError(f"cannot understand the CRS {shown!r}: {exc}", path=source) from None
    return crs


def crs_label(crs) -> str:
    """A short human label: ``EPSG:4550 (CGCS2000 / 3-degree Gauss-Kruger CM 123E)``."""
    crs = parse_crs(crs)
    code = crs.to_epsg(min_confidence=90)
    return f"EPSG:{code} ({crs.name})" if code else crs.name


def horizontal_unit_factor(crs) -> float:
    """Metres per unit of the CRS's first horizontal axis (1 for geographic CRSs)."""
    crs = parse_crs(crs)
    base = crs.sub_crs_list[0] if crs.is_compound else crs
    if base.is_geographic:
        return 1.0
    axis = base.axis_info[0]
    return float(axis.unit_conversion_factor or 1.0)


@functools.lru_cache(maxsize=256)
def _transformer(src_wkt: str, dst_wkt: str) -> tuple[pyproj.Transformer, bool]:
    """A cached always-xy transformer; second item False when the exact vertical
    transformation is unavailable and heights are passed through instead."""
    src = pyproj.CRS.from_wkt(src_wkt)
    dst = pyproj.CRS.from_wkt(dst_wkt)
    exact = True
    if src.is_compound or dst.is_compound:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # we warn ourselves, once, in transform()
                group = pyproj.transformer.TransformerGroup(src, dst, always_xy=True)
            exact = bool(group.best_available) and len(group.transformers) > 0
        except _PyprojCRSError:
            exact = False
        if not exact:
            src = _horizontal_3d(src)
            dst = _horizontal_3d(dst)
    return pyproj.Transformer.from_crs(src, dst, always_xy=True), exact


def _horizontal_3d(crs: pyproj.CRS) -> pyproj.CRS:
    if crs.is_compound:
        crs = crs.sub_crs_list[0]
    if len(crs.axis_info) == 2 and not crs.is_geocentric:
        crs = crs.to_3d()
    return crs


def _as_3d(crs: pyproj.CRS) -> pyproj.CRS:
    if crs.is_compound or crs.is_geocentric or len(crs.axis_info) >= 3:
        return crs
    return crs.to_3d()


def unit_factors(crs) -> tuple[float, float]:
    """(metres per horizontal unit, metres per z unit) of a CRS; (1, 1) for None.

    z follows the horizontal unit for a 2D projected CRS (the LAS convention), the
    vertical sub-CRS's unit for a compound CRS, metres for a geographic CRS."""
    if crs is None:
        return 1.0, 1.0
    crs = parse_crs(crs)
    h = horizontal_unit_factor(crs)
    if crs.is_compound and len(crs.sub_crs_list) > 1:
        ax = crs.sub_crs_list[1].axis_info
        v = float(ax[0].unit_conversion_factor or 1.0) if ax else 1.0
    elif crs.is_geographic or crs.is_geocentric:
        v = 1.0
    elif len(crs.axis_info) >= 3:
        v = float(crs.axis_info[2].unit_conversion_factor or 1.0)
    else:
        v = h
    return h, v


def _z_factor(crs: pyproj.CRS, z_unit: str, exact: bool) -> float:
    """Factor that turns input z into the metres the PROJ pipeline expects.

    PROJ converts z itself for 3D and compound CRSs when it has the full operation;
    when a compound CRS falls back to its horizontal part (no geoid model), z is read
    in the vertical sub-CRS's unit here; a 2D projected CRS's z is in its horizontal
    unit (``z_unit="auto"``) or metres."""
    if z_unit not in ("auto", "metre", "meter", "m"):
        raise CRSError(f"unknown z_unit {z_unit!r} (use 'auto' or 'metre')")
    if crs.is_compound:
        return 1.0 if exact else unit_factors(crs)[1]
    if crs.is_geocentric or len(crs.axis_info) >= 3:
        return 1.0
    if z_unit != "auto":
        return 1.0
    return horizontal_unit_factor(crs)


def _check_xyz(xyz) -> tuple[np.ndarray, bool]:
    arr = np.asarray(xyz, dtype=np.float64)
    single = arr.ndim == 1
    if single:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] not in (2, 3):
        raise CRSError(f"coordinates must have shape (N, 2) or (N, 3), got {arr.shape}")
    if arr.shape[1] == 2:
        arr = np.column_stack([arr, np.zeros(len(arr))])
    return arr, single


_warned: set[str] = set()


def transform(xyz, src, dst, *, z_unit: str = "auto") -> np.ndarray:
    """Transform ``(N, 3)`` (or ``(N, 2)``, z = 0) coordinates from ``src`` to ``dst``.

    Vectorised, float64. Raises :class:`~twin.errors.CRSError` when a CRS is unusable
    or a point falls outside what the transformation can represent.
    """
    arr, single = _check_xyz(xyz)
    s = parse_crs(src)
    d = parse_crs(dst)
    s3, d3 = _as_3d(s), _as_3d(d)
    tr, exact = _transformer(s3.to_wkt(), d3.to_wkt())
    zs = _z_factor(s, z_unit, exact)
    zd = _z_factor(d, z_unit, exact)
    if not exact:
        key = f"{s.name}->{d.name}"
        if key not in _warned:
            _warned.add(key)
            warnings.warn(
                f"no geoid model available for {s.name} -> {d.name}: heights kept as "
                "they are (error up to the local geoid undulation)",
                stacklevel=2,
            )
    x, y, z = tr.transform(arr[:, 0], arr[:, 1], arr[:, 2] * zs, errcheck=False)
    out = np.column_stack([x, y, np.asarray(z) / zd])
    if not np.all(np.isfinite(out[np.all(np.isfinite(arr), axis=1)])):
        raise CRSError(
            f"some coordinates cannot be transformed from {crs_label(s)} to "
            f"{crs_label(d)} (outside the CRS's area of use?)"
        )
    return out[0] if single else out


def geodetic_to_ecef(lon, lat, h) -> np.ndarray:
    """WGS 84 longitude/latitude (degrees) and ellipsoidal height (m) to ECEF, closed form."""
    a = 6378137.0
    f = 1 / 298.257223563
    e2 = f * (2 - f)
    lon = np.radians(np.asarray(lon, dtype=np.float64))
    lat = np.radians(np.asarray(lat, dtype=np.float64))
    h = np.asarray(h, dtype=np.float64)
    n = a / np.sqrt(1 - e2 * np.sin(lat) ** 2)
    return np.stack(
        [
            (n + h) * np.cos(lat) * np.cos(lon),
            (n + h) * np.cos(lat) * np.sin(lon),
            (n * (1 - e2) + h) * np.sin(lat),
        ],
        axis=-1,
    )


def enu_rotation(lon: float, lat: float) -> np.ndarray:
    """3x3 matrix whose rows are the east, north and up unit vectors (in ECEF)."""
    lo, la = np.radians(lon), np.radians(lat)
    sl, cl = np.sin(lo), np.cos(lo)
    sp, cp = np.sin(la), np.cos(la)
    return np.array(
        [
            [-sl, cl, 0.0],
            [-sp * cl, -sp * sl, cp],
            [cp * cl, cp * sl, sp],
        ]
    )


@dataclass(frozen=True)
class LocalFrame:
    """A local east-north-up Cartesian frame in metres.

    ``lon``/``lat`` (degrees) and ``h`` (ellipsoidal height, m) give the origin on the
    WGS 84 / CGCS2000 ellipsoid. ``enu = R @ (ecef - origin)`` with ``R`` the rows of
    :func:`enu_rotation`. Distances and angles in the frame are true 3D Euclidean
    ones (no map-projection scale), which is what photogrammetry and meshing need.
    """

    lon: float
    lat: float
    h: float = 0.0

    @classmethod
    def at(cls, x: float, y: float, z: float = 0.0, crs=GEODETIC_3D) -> LocalFrame:
        """A frame anchored at a point given in any CRS."""
        lon, lat, h = transform([x, y, z], crs, GEODETIC_3D)
        return cls(float(lon), float(lat), float(h))

    @classmethod
    def from_dict(cls, d: dict) -> LocalFrame:
        o = d["origin"]
        return cls(float(o["lon"]), float(o["lat"]), float(o["h"]))

    def to_dict(self) -> dict:
        return {
            "type": "ENU",
            "origin": {"lon": self.lon, "lat": self.lat, "h": self.h},
            "origin_crs": GEODETIC_3D,
            "units": "metre",
            "ecef_crs": ECEF,
            "enu_to_ecef": self.enu_to_ecef_matrix().tolist(),
        }

    @property
    def origin_ecef(self) -> np.ndarray:
        return geodetic_to_ecef(self.lon, self.lat, self.h)

    @property
    def rotation(self) -> np.ndarray:
        """Rows: east, north, up unit vectors expressed in ECEF."""
        return enu_rotation(self.lon, self.lat)

    def ecef_to_enu(self, ecef) -> np.ndarray:
        arr, single = _check_xyz(ecef)
        out = (arr - self.origin_ecef) @ self.rotation.T
        return out[0] if single else out

    def enu_to_ecef(self, enu) -> np.ndarray:
        arr, single = _check_xyz(enu)
        out = arr @ self.rotation + self.origin_ecef
        return out[0] if single else out

    def from_crs(self, xyz, crs, *, z_unit: str = "auto") -> np.ndarray:
        """Coordinates in ``crs`` to this frame's ENU metres."""
        return self.ecef_to_enu(transform(xyz, crs, ECEF, z_unit=z_unit))

    def to_crs(self, enu, crs, *, z_unit: str = "auto") -> np.ndarray:
        """ENU metres in this frame to coordinates in ``crs``."""
        return transform(self.enu_to_ecef(enu), ECEF, crs, z_unit=z_unit)

    def to_geodetic(self, enu) -> np.ndarray:
        """ENU to WGS 84 (lon, lat degrees; ellipsoidal height metres)."""
        return self.to_crs(enu, GEODETIC_3D)

    def enu_to_ecef_matrix(self) -> np.ndarray:
        """4x4 row-major matrix mapping homogeneous ENU to ECEF.

        3D Tiles and glTF store matrices column-major: use ``m.T.ravel()``.
        """
        m = np.eye(4)
        m[:3, :3] = self.rotation.T
        m[:3, 3] = self.origin_ecef
        return m


def utm_crs_for(lon: float, lat: float) -> pyproj.CRS:
    """The WGS 84 UTM zone CRS containing a point."""
    zone = min(int((lon + 180) // 6) + 1, 60)
    return pyproj.CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def cgcs2000_gk_crs_for(lon: float) -> pyproj.CRS:
    """The CGCS2000 3-degree Gauss–Krüger CRS (CM form, EPSG:4534–4554) for a longitude.

    EPSG:4534 is CM 75E; zones step 3 degrees up to EPSG:4554 (CM 135E).
    """
    cm = 3 * round(lon / 3)
    if not 75 <= cm <= 135:
        raise CRSError(f"longitude {lon} is outside China's CGCS2000 3-degree zones")
    return pyproj.CRS.from_epsg(4534 + (cm - 75) // 3)
