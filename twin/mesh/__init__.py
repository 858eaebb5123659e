"""twin.mesh: building solids from footprints, and mesh storage optimisation.

Storage kernels (arrays in, arrays out; Numba with NumPy references in ``_reference``):
:func:`weld`, :func:`optimize_vertex_cache`, :func:`optimize_vertex_fetch`,
:func:`acmr`, :func:`atvr`, :func:`optimize_overdraw` / :func:`measure_overdraw`,
:func:`quantize` / :func:`dequantize`,
:func:`simplify` (quadric edge collapse; seams, locked borders, no flips),
:func:`encode_meshopt` / :func:`decode_meshopt` (the EXT_meshopt_compression bitstream,
our own encoder; meshoptimizer's decoder reads it),
:func:`encode` / :func:`decode` (twin's compact archival codec: Edgebreaker-style
connectivity, parallelogram prediction, rANS; exact on the quantised mesh).
Buildings: :func:`read_footprints`, :func:`building_meshes`, :func:`merge_meshes`,
:func:`buildings_from_points` (LoD2 from roof points). Surfaces: :func:`reconstruct`
(Poisson or DSM), :func:`write_surface`.
"""

from twin.mesh.buildings import BuildingMesh, MergedMesh, building_meshes, merge_meshes
from twin.mesh.codec import decode, decode_quantized, encode
from twin.mesh.footprints import read_footprints
from twin.mesh.meshopt_codec import (
    decode_index_buffer,
    decode_meshopt,
    decode_vertex_buffer,
    encode_index_buffer,
    encode_meshopt,
    encode_vertex_buffer,
)
from twin.mesh.optimize import OptimizeResult, optimize
from twin.mesh.overdraw import Overdraw, measure_overdraw, optimize_overdraw
from twin.mesh.quantize import (
    Quantized,
    dequantize,
    dequantize_normals,
    dequantize_uvs,
    quantize,
)
from twin.mesh.reorder import acmr, atvr, optimize_vertex_cache, optimize_vertex_fetch
from twin.mesh.roofs import BuildingsResult, buildings_from_points
from twin.mesh.simplify import SimplifyResult, simplify
from twin.mesh.surface import Surface, reconstruct, write_surface
from twin.mesh.validate import check_mesh, check_topology
from twin.mesh.weld import weld

__all__ = [
    "BuildingMesh",
    "BuildingsResult",
    "MergedMesh",
    "OptimizeResult",
    "Overdraw",
    "Quantized",
    "SimplifyResult",
    "Surface",
    "acmr",
    "atvr",
    "building_meshes",
    "buildings_from_points",
    "check_mesh",
    "check_topology",
    "decode",
    "decode_index_buffer",
    "decode_meshopt",
    "decode_quantized",
    "decode_vertex_buffer",
    "dequantize",
    "dequantize_normals",
    "dequantize_uvs",
    "encode",
    "encode_index_buffer",
    "encode_meshopt",
    "encode_vertex_buffer",
    "measure_overdraw",
    "merge_meshes",
    "optimize",
    "optimize_overdraw",
    "optimize_vertex_cache",
    "optimize_vertex_fetch",
    "quantize",
    "read_footprints",
    "reconstruct",
    "simplify",
    "weld",
    "write_surface",
]
