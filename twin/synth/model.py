"""Types shared by the synthetic-survey generators.

The synthetic world is *defined* in the survey CRS (default EPSG:4550, CGCS2000 /
3-degree Gauss–Krüger CM 123E): map coordinates ``x`` (easting) and ``y`` (northing)
in metres plus ellipsoidal height. Its exact 3D surface (:class:`TruthScene`) is
that definition transformed vertex by vertex into a :class:`twin.crs.LocalFrame`
(ENU metres, anchored at the survey centre on the ellipsoid, h = 0), where the
sensors (LiDAR, cameras) are simulated by ray casting. So the ENU z of a point is
its ellipsoidal height to within the Earth's curvature (< 1 cm over 600 m).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import IntEnum

import numpy as np

from twin.crs import LocalFrame


class Surface(IntEnum):
    """Semantic label of every truth-mesh face."""

    GROUND = 1  # bare terrain: grass, soil, pavements
    ROAD = 2  # carriageway
    WATER = 3  # river surface
    WALL = 4  # building façade
    ROOF = 5  # building roof
    TREE = 6  # tree crown and trunk


# ASPRS LAS classes of the surfaces. Trees are split by height above ground into
# 3 (low, < 0.5 m), 4 (medium, < 2 m) and 5 (high vegetation) by the LiDAR simulator.
ASPRS_CLASS = {
    Surface.GROUND: 2,
    Surface.ROAD: 2,
    Surface.WATER: 9,
    Surface.WALL: 6,
    Surface.ROOF: 6,
    Surface.TREE: 5,
}
ASPRS_NOISE = 7


ROOF_TYPES = ("flat", "gable", "hip")


@dataclass
class Building:
    """One building: footprint in survey-CRS map coordinates, heights ellipsoidal."""

    id: str  # stable, e.g. "B0042"
    footprint: object  # shapely Polygon (may have holes: courtyards), survey CRS x/y
    shape: str  # "rect", "L", "U", "courtyard"
    base_height: float  # ellipsoidal height of the ground floor (m)
    eave_height: float  # height of the wall tops above base (m)
    ridge_height: float  # height of the highest roof point above base (m); == eave for flat
    floors: int
    roof_type: str  # one of ROOF_TYPES
    orientation: float = 0.0  # radians, direction of the ridge / main axis from east
    usage: str = "residential"

    @property
    def height(self) -> float:
        return self.ridge_height

    def attributes(self) -> dict:
        d = asdict(self)
        d.pop("footprint")
        return d


@dataclass
class Road:
    centerline: object  # shapely LineString, survey CRS x/y
    width: float
    kind: str = "street"  # "street" | "avenue"
    name: str = ""


@dataclass
class City:
    """The procedural city layout, in survey-CRS map coordinates."""

    crs: str
    bounds: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax of the survey area
    frame: LocalFrame
    terrain: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (x, y) -> ellipsoidal height
    buildings: list[Building] = field(default_factory=list)
    roads: list[Road] = field(default_factory=list)
    river: object | None = None  # shapely Polygon of the water surface
    water_level: float = 0.0  # ellipsoidal height of the river surface
    trees: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # x, y, height, radius
    floor_height: float = 3.2  # metres per storey

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.bounds
        return (0.5 * (x0 + x1), 0.5 * (y0 + y1))


@dataclass
class TruthScene:
    """The exact surface of the synthetic city in the local ENU frame.

    ``albedo(points, face_ids)`` gives the surface colour (linear RGB in [0, 1]) at
    points lying on the given faces: the procedural texture (façade windows per
    floor, roof tiles, road markings, grass) that the camera simulator renders and
    that texturing is checked against.
    """

    frame: LocalFrame
    vertices: np.ndarray  # (N, 3) float64, ENU metres
    faces: np.ndarray  # (M, 3) int64
    face_surface: np.ndarray  # (M,) uint8, Surface values
    face_building: np.ndarray  # (M,) int32, index into City.buildings or -1
    albedo: Callable[[np.ndarray, np.ndarray], np.ndarray]
    building_ids: list[str] = field(default_factory=list)

    def trimesh(self):
        import trimesh

        return trimesh.Trimesh(self.vertices, self.faces, process=False)
