"""twin.mesh: building solids from footprints, and mesh storage optimisation.

Storage kernels (arrays in, arrays out; Numba with NumPy references in ``_reference``):
:func:`weld`, :func:`optimize_vertex_cache`, :func:`optimize_vertex_fetch`,
:func:`acmr`, :func:`atvr`, :func:`quantize` / :func:`dequantize`,
:func:`simplify` (quadric edge collapse; seams, locked borders, no flips).
Buildings: :func:`read_footprints`, :func:`building_meshes`, :func:`merge_meshes`.
"""

from twin.mesh.buildings import BuildingMesh, MergedMesh, building_meshes, merge_meshes
from twin.mesh.footprints import read_footprints
from twin.mesh.quantize import (
    Quantized,
    dequantize,
    dequantize_normals,
    dequantize_uvs,
    quantize,
)
from twin.mesh.reorder import acmr, atvr, optimize_vertex_cache, optimize_vertex_fetch
from twin.mesh.simplify import SimplifyResult, simplify
from twin.mesh.validate import check_mesh
from twin.mesh.weld import weld

__all__ = [
    "BuildingMesh",
    "MergedMesh",
    "Quantized",
    "SimplifyResult",
    "acmr",
    "atvr",
    "building_meshes",
    "check_mesh",
    "dequantize",
    "dequantize_normals",
    "dequantize_uvs",
    "merge_meshes",
    "optimize_vertex_cache",
    "optimize_vertex_fetch",
    "quantize",
    "read_footprints",
    "simplify",
    "weld",
]
