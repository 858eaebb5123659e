"""twin.points: point clouds (LAS/LAZ/COPC) in any CRS, streamed, classified, rasterised.

* :mod:`twin.points.io`: :func:`read`, :func:`write`, :func:`iter_chunks`, :func:`info`,
  :func:`reproject`, :func:`to_local` (laspy + lazrs; CRS from WKT or GeoTIFF keys);
* :mod:`twin.points.ground`: :func:`classify_ground` (SMRF-family progressive
  morphological filter, Numba kernels), :func:`classify_file` (streamed),
  :func:`twin.points.ground.height_above_ground` (above the filter's surface);
* :mod:`twin.points.classify`: :func:`classify` (ground, building, vegetation, noise,
  optional water from local shape features, returns and footprints),
  :func:`classify_points_file` (the same, streamed by tiles), :func:`building_ids`;
* :mod:`twin.points.filters`: :func:`statistical_outliers`, :func:`radius_outliers`,
  :func:`remove_outliers`, :func:`voxel_downsample`, :func:`estimate_normals`,
  :func:`height_above_ground` (from a DTM, class 2 or the ground filter) and
  :func:`filter_file` (all of them streamed tile by tile with halos);
* :mod:`twin.points.raster`: :func:`dtm` / :func:`dsm` Cloud-Optimised GeoTIFFs with
  TIN gap filling;
* :mod:`twin.points.metrics`: total error, Cohen's kappa, precision/recall.
"""

from twin.points import metrics
from twin.points.classify import building_ids, class_report, classify
from twin.points.classify import classify_file as classify_points_file
from twin.points.cloud import PointCloud
from twin.points.filters import (
    estimate_normals,
    filter_file,
    height_above_ground,
    radius_outliers,
    remove_outliers,
    statistical_outliers,
    voxel_downsample,
)
from twin.points.ground import GroundModel, classify_file, classify_ground
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
    "estimate_normals",
    "filter_file",
    "file_crs",
    "height_above_ground",
    "hillshade_png",
    "info",
    "iter_chunks",
    "metrics",
    "radius_outliers",
    "read",
    "remove_outliers",
    "reproject",
    "statistical_outliers",
    "to_local",
    "unit_factors",
    "voxel_downsample",
    "write",
]
