"""Mesh storage optimisation, one import: weld, cache/fetch/overdraw order, metrics,
quantise, simplify, the EXT_meshopt_compression streams and the archival codec.

``twin.mesh`` re-exports these names; this module gathers just the storage ones.
"""

from __future__ import annotations

from twin.mesh.codec import decode, decode_quantized, encode
from twin.mesh.meshopt_codec import (
    decode_index_buffer,
    decode_index_sequence,
    decode_meshopt,
    decode_vertex_buffer,
    encode_index_buffer,
    encode_index_sequence,
    encode_meshopt,
    encode_vertex_buffer,
)
from twin.mesh.optimize import OptimizeResult, optimize
from twin.mesh.overdraw import measure_overdraw, optimize_overdraw
from twin.mesh.quantize import Quantized, dequantize, dequantize_normals, dequantize_uvs, quantize
from twin.mesh.reorder import acmr, atvr, optimize_vertex_cache, optimize_vertex_fetch
from twin.mesh.simplify import SimplifyResult, simplify
from twin.mesh.validate import check_mesh, check_topology
from twin.mesh.weld import weld

__all__ = [
    "OptimizeResult",
    "Quantized",
    "SimplifyResult",
    "acmr",
    "atvr",
    "check_mesh",
    "check_topology",
    "decode",
    "decode_index_buffer",
    "decode_index_sequence",
    "decode_meshopt",
    "decode_quantized",
    "decode_vertex_buffer",
    "dequantize",
    "dequantize_normals",
    "dequantize_uvs",
    "encode",
    "encode_index_buffer",
    "encode_index_sequence",
    "encode_meshopt",
    "encode_vertex_buffer",
    "measure_overdraw",
    "optimize",
    "optimize_overdraw",
    "optimize_vertex_cache",
    "optimize_vertex_fetch",
    "quantize",
    "simplify",
    "weld",
]
