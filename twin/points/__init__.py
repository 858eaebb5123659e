"""twin.points: point clouds (LAS/LAZ/COPC) in any CRS, streamed, classified, rasterised.

* :mod:`twin.points.io`: :func:`read`, :func:`write`, :func:`iter_chunks`, :func:`info`,
  :func:`reproject`, :func:`to_local` (laspy + lazrs; CRS from WKT or GeoTIFF keys);
* :mod:`twin.points.ground`: :func:`classify_ground` (SMRF-family progressive
  morphological filter, Numba kernels), :func:`classify_file` (streamed),
  :func:`height_above_ground`;
* :mod:`twin.points.classify`: :func:`classify` (ground, building, vegetation, noise,
  optional water from local shape features, returns and footprints),
  :func:`classify_points_file` (the same, streamed by tiles), :func:`building_ids`;
* :mod:`twin.points.raster`: :func:`dtm` / :func:`dsm` Cloud-Optimised GeoTIFFs with
  TIN gap filling;
* :mod:`twin.points.metrics`: total error, Cohen's kappa, precision/recall.
"""

from twin.points import metrics
from twin.points.classify import building_ids, class_report, classify
from twin.points.classify import classify_file as classify_points_file
from twin.points.cloud import PointCloud
from twin.points.ground import (
    GroundModel,
    classify_file,
    classify_ground,
    height_above_ground,
)
from twin.points.io import (
    concat,
    file_crs,
    info,
    iter_chunks,
    read,
    reproject,
    to_local,
    unit_factors,
    write,
)
from twin.points.raster import dsm, dtm, hillshade_png

__all__ = [
    "GroundModel",
    "PointCloud",
    "building_ids",
    "class_report",
    "classify",
    "classify_points_file",
    "classify_file",
    "classify_ground",
    "concat",
    "dsm",
    "dtm",
    "file_crs",
    "height_above_ground",
    "hillshade_png",
    "info",
    "iter_chunks",
    "metrics",
    "read",
    "reproject",
    "to_local",
    "unit_factors",
    "write",
]
