"""All Numba kernels of :mod:`twin.mesh` storage optimisation, in one namespace.

The kernels live in topic modules (``_weld_kernels``, ``_cache_kernels``; the
simplifier and codecs will add ``_simplify_kernels`` and ``_codec_kernels``) and
are compiled with ``cache=True`` so the compile cost is paid once per machine.
Each has a plain Python/NumPy twin in :mod:`twin.mesh._reference`.
"""

from __future__ import annotations

from twin.mesh._cache_kernels import fifo_misses_kernel, first_use_kernel, vertex_cache_kernel
from twin.mesh._weld_kernels import clean_faces_kernel, weld_exact_kernel, weld_grid_kernel

__all__ = [
    "clean_faces_kernel",
    "fifo_misses_kernel",
    "first_use_kernel",
    "vertex_cache_kernel",
    "weld_exact_kernel",
    "weld_grid_kernel",
]
