"""Placement of live entities on the model: local frame, ground height, building, floor.

A :class:`Placer` turns WGS 84 positions (longitude, latitude in degrees, optional
ellipsoidal altitude in metres) into where they are on the 3D model, vectorised:

* ``enu``: east/north/up metres in the model's local frame
  (:class:`twin.crs.LocalFrame`), at the *placed* height (see below);
* ``ground``: terrain height under the point (bilinear DEM sample, the DEM's heights,
  ellipsoidal by twin's convention), NaN outside the DEM or without one;
* ``building``: index into the footprints (``-1`` outside every footprint), found by
  containment with a shapely ``STRtree`` (``predicate="within"``), and its id;
* ``floor``: the given floor, else ``floor((alt - base_height) / floor_height)``
  clipped to the building's floors (:data:`NO_FLOOR` outside buildings or when
  neither floor nor altitude is known);
* ``height``: the placed ellipsoidal height. Outdoors, ``ground + outdoor_offset``
  (snapped onto the terrain: consumer GPS heights are off by metres) unless
  ``snap=False`` and an altitude was given; indoors, the given altitude, else
  ``base_height + floor * floor_height + indoor_offset``;
* ``snapped``: where asked (``snap_to_mesh``), the position is snapped onto the
  model's mesh surface by ray casting straight down in the local frame (Open3D's
  ``RaycastingScene``): from ``mesh_search`` metres above the placed height (from
  above the whole mesh for outdoor positions without an altitude), the first
  surface hit gives the height (+ ``outdoor_offset`` outdoors, ``indoor_offset``
  indoors). Positions where the ray hits nothing keep their height.

Latitude/longitude are taken as WGS 84 and transformed to the DEM's and the
footprints' CRS with pyproj (for CGCS2000 the two datums agree to well under a metre).
Memory grows linearly with the number of positions in one call (a few arrays of
float64 per position); the footprint tree grows with the number of footprints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from twin.crs import LocalFrame, geodetic_to_ecef, parse_crs
from twin.errors import InputError, ParameterError

if TYPE_CHECKING:  # pragma: no cover
    from twin.sync.model import Event
    from twin.terrain.dem import Dem

NO_FLOOR = -32768  # floor value of positions outside every building
WGS84 = "EPSG:4326"


@dataclass
class Placement:
    """Where a batch of positions lies on the model (one row per input position).

    ``enu`` (n, 3) float64 local-frame metres; ``ground`` (n,) terrain height (m, NaN
    where unknown); ``height`` (n,) placed ellipsoidal height (m); ``building`` (n,)
    int64 footprint index or -1; ``building_id`` (n,) object array of ids or None;
    ``floor`` (n,) int64, :data:`NO_FLOOR` where none; ``x``/``y`` the map coordinates
    in the terrain's (else the footprints') CRS.
    """

    enu: np.ndarray
    ground: np.ndarray
    height: np.ndarray
    building: np.ndarray
    building_id: np.ndarray
    floor: np.ndarray
    x: np.ndarray
    y: np.ndarray
    snapped: np.ndarray | None = None  # (n,) bool: placed on the mesh surface

    def __len__(self) -> int:
        return len(self.ground)

    @property
    def indoor(self) -> np.ndarray:
        return self.building >= 0


def _transformer(crs):
    import pyproj

    return pyproj.Transformer.from_crs(WGS84, crs, always_xy=True)


class Placer:
    """Places WGS 84 positions onto a model: ENU frame, terrain, buildings, floors.

    ``frame``: the model's :class:`~twin.crs.LocalFrame` (a dict from ``survey.json``'s
    ``frame`` works too). ``terrain``: a :class:`~twin.terrain.dem.Dem` or a path read
    with :func:`~twin.terrain.dem.read_dem`. ``footprints``: a GeoDataFrame with
    ``building_id`` and ``base_height`` (optional ``floors``) as
    :func:`~twin.mesh.footprints.read_footprints` returns, or a path read with it.
    ``floor_height`` metres per storey; ``outdoor_offset`` metres above the terrain
    for outdoor entities; ``indoor_offset`` metres above the floor slab for indoor
    ones without an altitude. ``mesh``: the model's surface in its local ENU frame
    (metres, z up), as ``(vertices (N, 3), faces (M, 3))``, a ``trimesh.Trimesh``, or
    a mesh file trimesh reads (PLY, OBJ, ...) holding ENU coordinates, for snapping
    positions onto it by ray casting (:meth:`place` ``snap_to_mesh``; ``snap_to_mesh``
    here is the default, and an event's ``attributes.snap == "mesh"`` asks for it).
    ``mesh_search``: metres above a position the downward ray starts. Memory: the DEM
    grid plus the footprint tree (plus the mesh's ray-casting structure).
    """

    def __init__(
        self,
        frame: LocalFrame | dict,
        terrain: Dem | str | os.PathLike | None = None,
        footprints=None,
        floor_height: float = 3.2,
        *,
        outdoor_offset: float = 0.0,
        indoor_offset: float = 0.0,
        snap: bool = True,
        mesh=None,
        snap_to_mesh: bool = False,
        mesh_search: float = 2.0,
    ):
        if isinstance(frame, dict):
            frame = LocalFrame.from_dict(frame)
        if not isinstance(frame, LocalFrame):
            raise ParameterError(f"frame must be a LocalFrame, got {type(frame).__name__}")
        if not (np.isfinite(floor_height) and floor_height > 0):
            raise ParameterError(
                f"floor_height must be a positive number of metres, not {floor_height}"
            )
        self.frame = frame
        self.floor_height = float(floor_height)
        self.outdoor_offset = float(outdoor_offset)
        self.indoor_offset = float(indoor_offset)
        self.snap = bool(snap)
        self._rot = frame.rotation
        self._origin = frame.origin_ecef
        if terrain is not None and not hasattr(terrain, "sample"):
            from twin.terrain.dem import read_dem

            terrain = read_dem(terrain)
        self.terrain = terrain
        self._dem_tf = _transformer(terrain.crs) if terrain is not None else None
        self._tree = None
        self._fp_tf = None
        if footprints is not None:
            self._init_footprints(footprints)
        if not (np.isfinite(mesh_search) and mesh_search >= 0):
            raise ParameterError(f"mesh_search must be >= 0 metres, not {mesh_search}")
        self.mesh_search = float(mesh_search)
        self.snap_to_mesh = bool(snap_to_mesh)
        self._scene = None
        self._mesh_top = 0.0
        if mesh is not None:
            self._init_mesh(mesh)
        elif snap_to_mesh:
            raise ParameterError("snap_to_mesh needs a mesh")

    def _init_mesh(self, mesh) -> None:
        import open3d as o3d

        src = None
        if isinstance(mesh, (str, os.PathLike)):
            import trimesh

            src = mesh
            try:
                mesh = trimesh.load(mesh, force="mesh", process=False)
            except Exception as exc:  # trimesh raises many kinds for a bad file
                raise InputError(f"cannot read the mesh: {exc}", path=src) from None
        if hasattr(mesh, "vertices") and hasattr(mesh, "faces"):
            v, f = mesh.vertices, mesh.faces
        else:
            try:
                v, f = mesh
            except (TypeError, ValueError):
                raise ParameterError(
                    "mesh must be (vertices, faces), a Trimesh or a file"
                ) from None
        v = np.asarray(v, dtype=np.float64)
        f = np.asarray(f)
        if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
            raise InputError(
                f"the mesh must have (N, 3) vertices and (M, 3) triangles, got {v.shape} "
                f"and {f.shape}",
                path=src,
            )
        if not np.isfinite(v).all() or f.min() < 0 or f.max() >= len(v):
            raise InputError("the mesh has non-finite vertices or bad face indices", path=src)
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(
            o3d.core.Tensor(v.astype(np.float32)), o3d.core.Tensor(f.astype(np.uint32))
        )
        self._scene = scene
        self._mesh_top = float(v[:, 2].max())

    def _snap(self, enu: np.ndarray, start_z: np.ndarray) -> np.ndarray:
        """Height (ENU z) of the first surface straight below ``(x, y, start_z)``,
        NaN where the ray hits nothing."""
        import open3d as o3d

        n = len(enu)
        rays = np.zeros((n, 6), np.float32)
        rays[:, 0:2] = enu[:, 0:2]
        rays[:, 2] = start_z
        rays[:, 5] = -1.0
        t = self._scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy().astype(np.float64)
        return np.where(np.isfinite(t), start_z - t, np.nan)

    def _init_footprints(self, footprints) -> None:
        import shapely

        if isinstance(footprints, (str, os.PathLike)):
            from twin.mesh.footprints import read_footprints

            footprints = read_footprints(footprints)
        src = getattr(footprints, "attrs", {}).get("path", "footprints")
        for col in ("building_id", "geometry"):
            if col not in footprints.columns:
                raise InputError(f"footprints have no {col!r} column", path=src)
        if footprints.crs is None:
            raise InputError("footprints have no CRS", path=src)
        fp_crs = parse_crs(footprints.crs)
        geoms = np.asarray(footprints.geometry.values, dtype=object)
        self._tree = shapely.STRtree(geoms)
        self.building_ids = np.asarray(footprints["building_id"].astype(str).values, dtype=object)
        n = len(geoms)
        base = (
            footprints["base_height"].to_numpy(dtype=np.float64)
            if "base_height" in footprints.columns
            else np.full(n, np.nan)
        )
        floors = (
            footprints["floors"].to_numpy(dtype=np.float64)
            if "floors" in footprints.columns
            else np.full(n, np.nan)
        )
        self._top_floor = np.where(np.isfinite(floors) & (floors >= 1), floors - 1, 300).astype(
            np.int64
        )
        if self.terrain is not None and not np.isfinite(base).all():
            # unknown base: the terrain under the footprint's representative point
            missing = ~np.isfinite(base)
            pts = shapely.point_on_surface(geoms[missing])
            px, py = shapely.get_x(pts), shapely.get_y(pts)
            if not fp_crs.equals(self.terrain.crs):
                import pyproj

                tf = pyproj.Transformer.from_crs(fp_crs, self.terrain.crs, always_xy=True)
                px, py = tf.transform(px, py)
            base[missing] = self.terrain.sample(px, py)
        self._base = base
        same = self.terrain is not None and fp_crs.equals(self.terrain.crs)
        self._fp_tf = None if same else _transformer(fp_crs)

    # ------------------------------------------------------------------ placing
    def place(self, lon, lat, alt=None, floor=None, snap_to_mesh=None) -> Placement:
        """Place positions (arrays or scalars broadcast together).

        ``lon``/``lat`` WGS 84 degrees; ``alt`` ellipsoidal metres (NaN where unknown);
        ``floor`` integer floors (:data:`NO_FLOOR` or negative-out-of-range where
        unknown; a float array may use NaN). ``snap_to_mesh``: True, False or a
        boolean array, which positions to snap onto the mesh (default: the Placer's
        ``snap_to_mesh``). Returns a :class:`Placement`. Memory grows linearly with
        the number of positions.
        """
        import shapely

        lon = np.atleast_1d(np.asarray(lon, dtype=np.float64))
        lat = np.atleast_1d(np.asarray(lat, dtype=np.float64))
        lon, lat = np.broadcast_arrays(lon, lat)
        n = lon.size
        lon, lat = lon.ravel(), lat.ravel()
        alt_a = (
            np.full(n, np.nan)
            if alt is None
            else np.broadcast_to(np.asarray(alt, dtype=np.float64), (n,)).astype(np.float64)
        )
        if floor is None:
            given_floor = np.zeros(n, dtype=bool)
            floor_a = np.zeros(n, dtype=np.int64)
        else:
            f = np.broadcast_to(np.asarray(floor, dtype=np.float64), (n,))
            given_floor = np.isfinite(f) & (f != NO_FLOOR)
            floor_a = np.where(given_floor, f, 0).astype(np.int64)
        if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
            raise ParameterError("lon/lat must be finite")

        if self._dem_tf is not None:
            x, y = self._dem_tf.transform(lon, lat)
            ground = self.terrain.sample(x, y)
        else:
            x = y = None
            ground = np.full(n, np.nan)

        bidx = np.full(n, -1, dtype=np.int64)
        bid = np.full(n, None, dtype=object)
        fl = np.full(n, NO_FLOOR, dtype=np.int64)
        if self._tree is not None:
            if self._fp_tf is not None:
                fx, fy = self._fp_tf.transform(lon, lat)
            else:
                fx, fy = x, y
            if x is None:
                x, y = fx, fy
            hit = self._tree.query(shapely.points(fx, fy), predicate="within")
            bidx[hit[0]] = hit[1]
            inside = bidx >= 0
            b = bidx[inside]
            base = self._base[b]
            base = np.where(np.isfinite(base), base, ground[inside])
            a = alt_a[inside]
            from_alt = np.floor((a - base) / self.floor_height)
            from_alt = np.where(np.isfinite(from_alt), from_alt, 0.0)
            f_in = np.where(given_floor[inside], floor_a[inside], from_alt).astype(np.int64)
            f_in = np.clip(f_in, -10, self._top_floor[b])
            fl[inside] = f_in
            bid[inside] = self.building_ids[b]
        else:
            inside = np.zeros(n, dtype=bool)
            base = np.zeros(0)
            f_in = np.zeros(0, dtype=np.int64)
        if x is None:
            x, y = lon.copy(), lat.copy()

        # placed height: outdoors on the terrain, indoors on the floor (or as given)
        height = alt_a.copy()
        out = ~inside
        snap_out = out & np.isfinite(ground) & (self.snap | ~np.isfinite(alt_a))
        height[snap_out] = ground[snap_out] + self.outdoor_offset
        if inside.any():
            h_in = alt_a[inside]
            slab = base + f_in * self.floor_height + self.indoor_offset
            height[inside] = np.where(np.isfinite(h_in), h_in, slab)
        height = np.where(np.isfinite(height), height, 0.0)

        ecef = geodetic_to_ecef(lon, lat, height)
        enu = (ecef - self._origin) @ self._rot.T
        snapped = None
        if snap_to_mesh is None:
            snap_to_mesh = self.snap_to_mesh
        ask = np.broadcast_to(np.asarray(snap_to_mesh, dtype=bool), (n,))
        if ask.any():
            if self._scene is None:
                raise ParameterError("snapping onto the mesh needs a Placer with a mesh")
            idx = np.flatnonzero(ask)
            known = np.isfinite(alt_a[idx]) | inside[idx]
            start = np.where(known, enu[idx, 2] + self.mesh_search, self._mesh_top + 1.0)
            z = self._snap(enu[idx], start)
            hit = np.isfinite(z)
            off = np.where(inside[idx], self.indoor_offset, self.outdoor_offset)
            dz = np.where(hit, z + off - enu[idx, 2], 0.0)
            # the local vertical is the ellipsoid normal to within the frame's extent
            enu[idx, 2] += dz
            height[idx] += dz
            snapped = np.zeros(n, dtype=bool)
            snapped[idx[hit]] = True
        return Placement(
            enu=enu,
            ground=ground,
            height=height,
            building=bidx,
            building_id=bid,
            floor=fl,
            x=np.asarray(x, dtype=np.float64),
            y=np.asarray(y, dtype=np.float64),
            snapped=snapped,
        )

    def place_events(self, events: list[Event | None]) -> int:
        """Place every event that has a position, in one vectorised call, and set its
        ``placed_building``, ``placed_floor`` and ``x``/``y``/``z`` (ENU metres).

        An event's ``attributes.floor`` is used as the given floor; ``alt`` as the
        altitude; ``attributes.snap`` (``"mesh"``/true, or false) overrides the
        Placer's ``snap_to_mesh``. Returns the number of events placed. Memory grows with the batch.
        """
        idx = [i for i, e in enumerate(events) if e is not None and e.lon is not None]
        if not idx:
            return 0
        evs = [events[i] for i in idx]
        lon = np.fromiter((e.lon for e in evs), np.float64, len(evs))
        lat = np.fromiter((e.lat for e in evs), np.float64, len(evs))
        alt = np.fromiter((np.nan if e.alt is None else e.alt for e in evs), np.float64, len(evs))
        floor = np.fromiter(
            (
                f
                if isinstance(f := e.attributes.get("floor"), int) and not isinstance(f, bool)
                else np.nan
                for e in evs
            ),
            np.float64,
            len(evs),
        )
        snap = None
        if self._scene is not None:
            snap = np.fromiter(
                (
                    self.snap_to_mesh
                    if (a := e.attributes.get("snap")) is None
                    else a == "mesh" or a is True
                    for e in evs
                ),
                bool,
                len(evs),
            )
        p = self.place(lon, lat, alt, floor, snap_to_mesh=snap)
        enu = p.enu.tolist()
        fl = p.floor.tolist()
        for e, b, f, (ex, ny, up) in zip(evs, p.building_id.tolist(), fl, enu, strict=True):
            e.placed_building = b
            e.placed_floor = None if f == NO_FLOOR else f
            e.x, e.y, e.z = ex, ny, up
        return len(evs)


def placer_from_folder(folder: str | os.PathLike, floor_height: float | None = None) -> Placer:
    """A :class:`Placer` for a model or survey folder.

    A ``twin build`` output folder (``manifest.json``): the model's own local frame and
    the DEM and footprints it was built from, so placements are in the very
    coordinates of ``model.glb`` and the tiles. A survey folder (``survey.json``): the
    survey's frame, ``dem.tif`` and ``footprints.gpkg`` (each used when present). The
    floor height defaults to the survey's ``floor_height`` parameter, else 3.2 m."""
    import json
    from pathlib import Path

    folder = Path(folder)
    manifest = folder / "manifest.json"
    meta_path = manifest if manifest.exists() else folder / "survey.json"
    try:
        meta = json.loads(meta_path.read_text())
        frame = LocalFrame.from_dict(meta["frame"])
    except FileNotFoundError:
        raise InputError(
            "neither manifest.json (a twin build) nor survey.json: no local frame to "
            "place entities in",
            path=folder,
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"no usable local frame: {exc}", path=meta_path) from None
    if meta_path == manifest:
        inputs = {i.get("role"): Path(i["path"]) for i in meta.get("inputs", [])}
        dem, fp = inputs.get("dem"), inputs.get("footprints")
        survey_json = dem.parent / "survey.json" if dem is not None else None
        params = {}
        if survey_json is not None and survey_json.exists():
            params = json.loads(survey_json.read_text()).get("parameters", {})
    else:
        dem, fp = folder / "dem.tif", folder / "footprints.gpkg"
        params = meta.get("parameters", {})
    if floor_height is None:
        floor_height = float(params.get("floor_height", 3.2))
    return Placer(
        frame,
        dem if dem is not None and dem.exists() else None,
        fp if fp is not None and fp.exists() else None,
        floor_height,
    )


__all__ = ["NO_FLOOR", "Placement", "Placer", "placer_from_folder"]
