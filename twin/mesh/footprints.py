"""Building footprint input: :func:`read_footprints`.

The result is a GeoDataFrame with the columns the building stage relies on, whatever
the source called them or left out:

===============  ==========================================================================
``building_id``  str; the file's ``building_id`` (or ``id``, ``gml_id``, ``identificatie``)
                 when present, else ``"b<row>"``
``height``       float, ridge height above the base (m); NaN where unknown
``eave_height``  float, wall-top height above the base (m); NaN where unknown
``base_height``  float, ground-floor height (m, the CRS's heights); NaN where unknown
``roof_type``    ``flat``, ``gable`` or ``hip`` (``flat`` where absent or unknown)
``geometry``     valid 2D Polygon or MultiPolygon (holes kept) in the file's CRS
===============  ==========================================================================

Other columns are kept as they are. ``gdf.attrs["twin"]`` records what was repaired or
defaulted (counts), and each such fix is also reported once with :mod:`warnings`.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np

from twin.crs import parse_crs
from twin.errors import CRSError, InputError

log = logging.getLogger(__name__)

ROOF_TYPES = ("flat", "gable", "hip")
_ID_COLUMNS = ("building_id", "id", "gml_id", "identificatie", "fid")
_POLYGONAL = {"Polygon", "MultiPolygon"}


def _polygonal_part(geom):
    """The polygonal part of a geometry (e.g. of make_valid's GeometryCollection)."""
    import shapely
    from shapely.geometry import MultiPolygon, Polygon

    if geom is None or geom.is_empty:
        return None
    if isinstance(geom, (Polygon, MultiPolygon)):
        return geom
    polys = []
    for g in getattr(geom, "geoms", []):
        p = _polygonal_part(g)
        if p is not None:
            polys.extend(p.geoms if isinstance(p, MultiPolygon) else [p])
    if not polys:
        return None
    return polys[0] if len(polys) == 1 else shapely.union_all(polys)


def read_footprints(path: str | os.PathLike, crs=None, layer: str | int | None = None):
    """Read building footprints (GeoPackage, SpatiaLite, Shapefile, GeoJSON, ...).

    ``layer``: name or index; by default the first layer with polygon geometry.
    ``crs`` is used when the file has none (and overrides the file's when given).
    Invalid rings are repaired with ``make_valid`` (keeping polygonal parts); empty
    and null geometries are dropped; both are counted in ``gdf.attrs["twin"]`` and
    warned about. Missing heights stay NaN (the building stage then uses its
    ``default_height``, LoD1), counted and warned about too.

    Raises :class:`InputError` for a missing or unreadable file, no layers, an
    unknown or empty layer, geometries that are not polygons, and :class:`CRSError`
    when no CRS is known. Memory grows with the file's feature count.
    """
    import geopandas as gpd
    import pyogrio
    import shapely

    path = Path(path)
    if not path.exists():
        raise InputError("footprint file not found", path=path)
    try:
        layers = pyogrio.list_layers(path)
    except Exception as exc:  # pyogrio raises DataSourceError and plain errors
        raise InputError(f"not a readable vector file ({exc})", path=path) from None
    if len(layers) == 0:
        raise InputError("the file has no layers", path=path)
    names = [str(n) for n, _ in layers]
    if layer is None:
        poly = [str(n) for n, g in layers if g and "polygon" in str(g).lower()]
        geo = [str(n) for n, g in layers if g]
        if not geo:
            raise InputError(f"no layer has geometry (layers: {', '.join(names)})", path=path)
        layer = poly[0] if poly else geo[0]
    elif isinstance(layer, int):
        if not 0 <= layer < len(names):
            raise InputError(f"no layer number {layer} (the file has {len(names)})", path=path)
        layer = names[layer]
    elif layer not in names:
        raise InputError(f"no layer {layer!r}; layers: {', '.join(names)}", path=path)
    try:
        gdf = gpd.read_file(path, layer=layer, engine="pyogrio")
    except Exception as exc:
        raise InputError(f"cannot read layer {layer!r} ({exc})", path=path) from None
    if len(gdf) == 0:
        raise InputError(f"layer {layer!r} has no features (empty footprint layer)", path=path)
    if not isinstance(gdf, gpd.GeoDataFrame) or gdf.geometry.name not in gdf.columns:
        raise InputError(f"layer {layer!r} has no geometry column", path=path)

    if crs is not None:
        gdf = gdf.set_crs(parse_crs(crs, source=path), allow_override=True)
    elif gdf.crs is None:
        raise CRSError(f"layer {layer!r} has no CRS: give one (e.g. crs='EPSG:28992')", path=path)
    else:
        gdf = gdf.set_crs(parse_crs(gdf.crs, source=path), allow_override=True)

    report = {"layer": layer, "features": int(len(gdf))}
    geoms = gdf.geometry.values
    empty = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    types = shapely.get_type_id(geoms)
    # 3 Polygon, 6 MultiPolygon; -1 missing
    bad = ~empty & ~np.isin(types, (3, 6))
    if bad.any():
        kinds = sorted({g.geom_type for g in geoms[bad]})
        raise InputError(
            f"layer {layer!r}: {int(bad.sum())} of {len(gdf)} geometries are not polygons "
            f"({', '.join(kinds)}); footprints must be Polygon or MultiPolygon",
            path=path,
        )
    if empty.any():
        report["dropped_empty"] = int(empty.sum())
        warnings.warn(f"{path}: {int(empty.sum())} empty or null footprints dropped", stacklevel=2)
        gdf = gdf[~empty].copy()
        if len(gdf) == 0:
            raise InputError(f"layer {layer!r}: every footprint geometry is empty", path=path)
    geoms = shapely.force_2d(gdf.geometry.values)
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        fixed = [_polygonal_part(shapely.make_valid(g)) for g in geoms[invalid]]
        geoms = np.array(geoms, dtype=object)
        geoms[np.flatnonzero(invalid)] = fixed
        lost = np.array([g is None for g in geoms])
        report["repaired"] = int(invalid.sum() - lost.sum())
        report["dropped_invalid"] = int(lost.sum())
        warnings.warn(
            f"{path}: {int(invalid.sum())} invalid footprints repaired with make_valid"
            + (f", {int(lost.sum())} dropped (nothing polygonal left)" if lost.any() else ""),
            stacklevel=2,
        )
        gdf = gdf[~lost].copy()
        geoms = geoms[~lost]
        if len(gdf) == 0:
            raise InputError(f"layer {layer!r}: no valid footprint left after repair", path=path)
    gdf = gdf.set_geometry(gpd.GeoSeries(geoms, index=gdf.index, crs=gdf.crs))
    if gdf.geometry.name != "geometry":
        gdf = gdf.rename_geometry("geometry")

    ids = next((c for c in _ID_COLUMNS if c in gdf.columns), None)
    if ids is None or gdf[ids].isna().any():
        gdf["building_id"] = [f"b{i}" for i in range(len(gdf))]
    else:
        gdf["building_id"] = gdf[ids].astype(str)

    for col in ("height", "eave_height", "base_height"):
        if col in gdf.columns:
            vals = np.array(gdf[col].astype("float64"), dtype=np.float64)
        else:
            vals = np.full(len(gdf), np.nan)
        if col != "base_height":
            vals[~(vals > 0)] = np.nan  # zero, negative or missing heights are unknown
        gdf[col] = vals
    missing = int(np.isnan(gdf["height"].to_numpy()).sum())
    if missing:
        report["default_height"] = missing
        warnings.warn(
            f"{path}: {missing} of {len(gdf)} footprints have no height: they will be "
            "LoD1 blocks of the default height",
            stacklevel=2,
        )
    if "roof_type" in gdf.columns:
        rt = gdf["roof_type"].astype(str).str.lower()
        unknown = ~rt.isin(ROOF_TYPES)
        if unknown.any():
            report["unknown_roof_type"] = int(unknown.sum())
            log.warning("%s: %d unknown roof types taken as flat", path, int(unknown.sum()))
        gdf["roof_type"] = rt.where(~unknown, "flat")
    else:
        gdf["roof_type"] = "flat"
    gdf = gdf.reset_index(drop=True)
    gdf.attrs["twin"] = report
    gdf.attrs["path"] = str(path)
    return gdf
