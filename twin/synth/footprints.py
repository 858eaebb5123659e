"""Write the synthetic city's building footprints as a GeoPackage."""

from __future__ import annotations

import os

from twin.fileio import atomic_path
from twin.synth.model import City

LAYER = "buildings"
# GeoPackage files record a modification time; pin it so the same seed gives the same bytes.
_FIXED_DATE = "2026-01-01T00:00:00.000Z"


def footprints_frame(city: City):
    """The footprints as a GeoDataFrame in the survey CRS (one row per building)."""
    import geopandas as gpd

    rows = []
    for b in city.buildings:
        rows.append(
            {
                "building_id": b.id,
                "shape": b.shape,
                "roof_type": b.roof_type,
                "floors": int(b.floors),
                "height": round(float(b.ridge_height), 3),
                "eave_height": round(float(b.eave_height), 3),
                "base_height": round(float(b.base_height), 3),
                "usage": b.usage,
                "geometry": b.footprint,
            }
        )
    columns = ["building_id", "shape", "roof_type", "floors", "height", "eave_height"]
    columns += ["base_height", "usage", "geometry"]
    return gpd.GeoDataFrame(rows, columns=columns, geometry="geometry", crs=city.crs)


def write_footprints(city: City, path: str | os.PathLike) -> None:
    """GeoPackage layer ``buildings``: id, shape, roof type, floors, heights (m; ``height``
    and ``eave_height`` above ``base_height``, which is ellipsoidal), in the survey CRS."""
    import pyogrio

    gdf = footprints_frame(city)
    previous = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": _FIXED_DATE})
    try:
        with atomic_path(path) as tmp:
            tmp.unlink()  # GDAL wants to create the file itself
            gdf.to_file(tmp, layer=LAYER, driver="GPKG", engine="pyogrio")
    finally:  # a process-wide GDAL setting: put it back
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": previous})
