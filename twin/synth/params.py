"""Parameters of a synthetic survey (all of them recorded in ``survey.json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from twin.errors import ParameterError

# Ningbo, Zhejiang: CGCS2000 / 3-degree Gauss–Krüger CM 123E.
DEFAULT_LON = 121.55
DEFAULT_LAT = 29.87
DEFAULT_CRS = "EPSG:4550"


@dataclass(frozen=True)
class SurveySpec:
    seed: int = 0
    extent: float = 600.0  # side of the square survey area (m)
    lon: float = DEFAULT_LON  # centre of the area (degrees, CGCS2000 ≈ WGS 84)
    lat: float = DEFAULT_LAT
    crs: str = DEFAULT_CRS  # survey CRS of the DEM, footprints, LiDAR
    dem_resolution: float = 1.0  # DEM pixel size (m)
    relief: float = 40.0  # height range of the hills (m)
    base_elevation: float = 12.0  # ellipsoidal height of the valley floor (m)
    block_size: float = 90.0  # city block pitch (m), streets between
    trees: bool = True
    # airborne LiDAR
    lidar: bool = True
    lidar_density: float = 8.0  # mean last-return density (points/m²)
    lidar_altitude: float = 300.0  # flying height above the valley floor (m)
    lidar_fov: float = 40.0  # full scan angle (degrees)
    range_noise: float = 0.03  # 1-sigma range noise (m)
    noise_fraction: float = 0.0005  # share of points that are outliers (class 7)
    # oblique camera rig
    images: bool = True
    image_width: int = 1024
    image_height: int = 768
    flight_height: float = 150.0  # above the valley floor (m)
    focal_mm: float = 24.0  # nadir lens focal length on a 23.5 mm wide sensor
    oblique_focal_mm: float = 35.0
    sensor_width_mm: float = 23.5
    forward_overlap: float = 0.8
    side_overlap: float = 0.65
    gps_sigma: float = 1.5  # horizontal 1-sigma of the EXIF GPS (m); vertical is 2x
    jpeg_quality: int = 92
    # live entities
    events: bool = True
    duration: float = 600.0  # seconds of entity tracks
    people: int = 60
    vehicles: int = 20
    assets: int = 30
    incidents: int = 6
    start_time: str = "2026-05-01T08:00:00Z"

    def __post_init__(self) -> None:
        checks = [
            ("extent", 60 <= self.extent <= 5000, "between 60 and 5000 m"),
            ("dem_resolution", 0.1 <= self.dem_resolution <= 10, "between 0.1 and 10 m"),
            ("lidar_density", 0 < self.lidar_density <= 200, "in (0, 200] points/m²"),
            ("range_noise", 0 <= self.range_noise <= 1, "in [0, 1] m"),
            ("image_width", 64 <= self.image_width <= 8192, "between 64 and 8192 px"),
            ("image_height", 64 <= self.image_height <= 8192, "between 64 and 8192 px"),
            ("forward_overlap", 0 <= self.forward_overlap < 0.95, "in [0, 0.95)"),
            ("side_overlap", 0 <= self.side_overlap < 0.95, "in [0, 0.95)"),
            ("duration", 0 < self.duration <= 86400, "in (0, 86400] s"),
        ]
        for name, ok, what in checks:
            if not ok:
                raise ParameterError(f"{name}={getattr(self, name)!r} must be {what}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SurveySpec:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ParameterError(f"unknown survey parameters: {sorted(unknown)}")
        return cls(**d)

    def with_(self, **changes) -> SurveySpec:
        return replace(self, **changes)


PRESETS: dict[str, SurveySpec] = {
    # Fast: used by tests and `twin demo`. Same city generator, smaller area and sensors.
    "small": SurveySpec(
        extent=240.0,
        dem_resolution=1.0,
        block_size=80.0,
        lidar_density=6.0,
        image_width=640,
        image_height=480,
        flight_height=200.0,  # ~30 cm GSD, ~80 photos: keeps `twin demo` within minutes
        forward_overlap=0.7,
        side_overlap=0.6,
        duration=120.0,
        people=25,
        vehicles=8,
        assets=12,
        incidents=3,
    ),
    "default": SurveySpec(),
}
