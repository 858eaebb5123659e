"""Welding: merge duplicate vertices, drop degenerate and duplicate faces."""

from __future__ import annotations

import numpy as np

from twin.errors import ParameterError
from twin.mesh._kernels import clean_faces_kernel, weld_exact_kernel, weld_grid_kernel
from twin.mesh._result import MeshResult
from twin.mesh.validate import attribute_columns, check_mesh

__all__ = ["WeldResult", "weld"]


class WeldResult(MeshResult):
    """What :func:`weld` returns: ``(vertices, faces)`` with ``.attributes`` and
    ``.remap``."""


def _check_tol(tol, vertices: np.ndarray) -> float:
    try:
        tol = float(tol)
    except (TypeError, ValueError):
        raise ParameterError(f"tol must be a number, got {tol!r}") from None
    if not np.isfinite(tol) or tol < 0:
        raise ParameterError(f"tol must be a finite number >= 0, got {tol}")
    if tol > 0:
        span = float(np.abs(vertices).max())
        if span / tol > 2.0**40:
            raise ParameterError(
                f"tol={tol} is too small for coordinates up to {span:.6g} "
                "(the hash grid would need more than 2**40 cells per axis); "
                "move the mesh to a local frame or use tol=0 for exact welding"
            )
    return tol


def weld(
    vertices,
    faces,
    tol: float = 0.0,
    attributes=None,
) -> WeldResult:
    """Merge duplicate vertices and drop degenerate, duplicate and unused elements.

    Parameters
    ----------
    vertices : (N, 3) float, any frame (units of the mesh, usually metres).
    faces : (M, 3) integer indices into ``vertices``.
    tol : merge distance in the mesh's units. ``0`` merges only bit-identical
        positions (``-0.0`` equals ``0.0``). ``tol > 0`` visits vertices in order and
        merges each into the lowest-index earlier *representative* within ``tol``
        (Euclidean distance); clusters are therefore at most ``2 tol`` across and
        never chain. The representative's position (and attributes) is kept.
    attributes : optional (N,) or (N, K) per-vertex values (UVs, normals, colours),
        any real dtype, or a dict of such arrays (``{"uv": uv, "color": rgba}``).
        Vertices are merged only if their attributes are equal (``tol == 0``) or
        within ``tol`` per component (``tol > 0``), so UV seams and hard normal
        edges survive.

    Returns
    -------
    A :class:`WeldResult`: unpacks as ``vertices, faces``; ``.attributes`` and
    ``.remap`` come along.

    vertices : (N', 3) float64, the kept representatives in order of first occurrence.
    faces : (M', 3) uint32, input face order with degenerate faces (two corners on
        one welded vertex) and duplicates (same three vertices in the same cyclic
        order as an earlier face; the opposite winding is kept) removed.
    attributes : the kept representatives' attributes in the form they came in
        (same dtype and shape per array, a dict for a dict), or None.
    remap : (N,) int64, for every *input* vertex its index in the output vertices,
        or -1 when it was dropped because no kept face uses it. ``out_vertices[
        remap[i]]`` is the welded position of input vertex i.

    Memory: O(N + M): a hash table of 2-4 slots per vertex (and per face) plus the
    outputs; about 100 bytes per input vertex at peak. Time: expected O(N + M).
    """
    v, f = check_mesh(vertices, faces)
    attrs, attr_rows = attribute_columns(attributes, v.shape[0])
    tol = _check_tol(tol, v)
    if tol == 0.0:
        cols = v if attrs is None else np.hstack([v, attrs])
        keys = (cols + 0.0).view(np.uint64)  # + 0.0 turns -0.0 into 0.0
        remap, first, count = weld_exact_kernel(np.ascontiguousarray(keys))
    else:
        a = attrs if attrs is not None else np.zeros((v.shape[0], 0))
        remap, first, count = weld_grid_kernel(v, a, tol, 2.0 * tol)
    first = first[:count]
    new_faces, keep = clean_faces_kernel(f, remap)
    new_faces = new_faces[keep]
    used = np.zeros(count, bool)
    used[new_faces.ravel()] = True
    compact = np.cumsum(used) - 1
    compact[~used] = -1
    out_faces = compact[new_faces].astype(np.uint32)
    kept = first[used]
    out_v = v[kept]
    out_a = attr_rows(kept)
    return WeldResult(out_v, out_faces.reshape(-1, 3), out_a, compact[remap])
