"""Mesh storage optimisation, one import: weld, cache/fetch order, metrics, quantise.

The simplifier (``simplify.py``) and the codecs (``meshopt.py`` for
EXT_meshopt_compression, ``codec.py`` for the archival format) join this list as
they land; ``twin.mesh`` re-exports these names.
"""

from __future__ import annotations

from twin.mesh.quantize import Quantized, dequantize, dequantize_normals, dequantize_uvs, quantize
from twin.mesh.reorder import acmr, atvr, optimize_vertex_cache, optimize_vertex_fetch
from twin.mesh.validate import check_mesh
from twin.mesh.weld import weld

__all__ = [
    "Quantized",
    "acmr",
    "atvr",
    "check_mesh",
    "dequantize",
    "dequantize_normals",
    "dequantize_uvs",
    "optimize_vertex_cache",
    "optimize_vertex_fetch",
    "quantize",
    "weld",
]
