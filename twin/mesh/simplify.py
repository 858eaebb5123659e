"""Quadric-error edge-collapse simplification (Garland–Heckbert) with Numba kernels."""

from __future__ import annotations

import numba
import numpy as np

from twin.errors import ParameterError
from twin.mesh._result import MeshResult
from twin.mesh._simplify_kernels import (
    bounds,
    build_corner_lists,
    exact_max,
    face_normals,
    measured_error,
    morton_codes,
    output_mesh,
    permute_mesh,
    position_groups,
    radix_argsort,
    resolve_into,
    setup_vertices,
    simplify_kernel,
    sort_faces_by_min,
)
from twin.mesh._weld_kernels import weld_exact_kernel
from twin.mesh.validate import attribute_columns, attributes_like, check_mesh

__all__ = ["ERROR_SCALE", "SimplifyResult", "simplify"]

#: Collapses are ranked by ``ERROR_SCALE * sqrt(e2)``, ``e2`` the area-weighted mean
#: squared plane distance ``Q(p) / w`` of the merged quadric; ``target_error`` stops
#: on this estimate. The returned ``error`` is measured instead (see ``_measure``).
ERROR_SCALE = 2.0

#: Runs at most this many times with ``target_error``: when the measured error of a
#: run exceeds the target, the estimate's threshold is tightened and it runs again.
TARGET_ERROR_TRIES = 3

#: Meshes with fewer faces run on one thread in one part: their parallel loops
#: (well under a millisecond each) would cost more in thread hand-offs than they
#: save (measured: 2 k faces even, 8 k faces -5 % to +5 %, 20 k faces 22-29 % faster
#: on two threads).
SERIAL_FACES = 16_384

#: Larger meshes run each pass's collapses in this many parts (two halves of the
#: vertices' spatial order, collapsing at the same time; see ``run_pass``). The output
#: depends on it (and on the mesh reaching ``SERIAL_FACES``), not on the number of
#: threads.
PASS_PARTS = 2

#: Weight of the border constraint planes relative to face area (per squared edge
#: length): keeps open borders in place.
BORDER_WEIGHT = 10.0


class SimplifyResult(MeshResult):
    """``(vertices, faces, error)``, unpackable as a 3-tuple, with extras:

    ``attributes`` (or None): the per-vertex attributes of the output vertices in
    the form they came in (dtype, shape, dict keys; interpolated values of integer
    attributes rounded); ``remap`` ((N',) int64): for each output vertex, the input
    vertex it continues (its index in the input arrays).
    """

    def __new__(cls, vertices, faces, error, attributes, remap):
        return super().__new__(cls, vertices, faces, attributes, remap, error)

    @property
    def error(self) -> float:
        return self[2]


def _check_params(target_faces, target_error, m: int, attrs, attribute_weights):
    if target_faces is None and target_error is None:
        raise ParameterError("simplify needs target_faces, target_error or both")
    if target_faces is not None:
        if isinstance(target_faces, bool) or not isinstance(target_faces, int | np.integer):
            raise ParameterError(f"target_faces must be an integer, got {target_faces!r}")
        target_faces = int(target_faces)
        if target_faces < 0:
            raise ParameterError(f"target_faces must be >= 0, got {target_faces}")
        target_faces = min(target_faces, m)  # at or above M: nothing to remove
    else:
        target_faces = 0
    if target_error is not None:
        try:
            target_error = float(target_error)
        except (TypeError, ValueError):
            raise ParameterError(f"target_error must be a number, got {target_error!r}") from None
        if np.isnan(target_error) or target_error < 0:
            raise ParameterError(f"target_error must be >= 0 (mesh units), got {target_error}")
    else:
        target_error = np.inf
    k = 0 if attrs is None else attrs.shape[1]
    if attribute_weights is None:
        weights = np.ones(k)
    else:
        if attrs is None:
            raise ParameterError("attribute_weights given without attributes")
        try:
            weights = np.asarray(attribute_weights, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise ParameterError(
                f"attribute_weights must be numbers, got {attribute_weights!r}"
            ) from None
        if weights.size == 1:
            weights = np.full(k, float(weights[0]))
        if weights.shape != (k,):
            raise ParameterError(
                f"attribute_weights must have one value per attribute column ({k}), "
                f"got {weights.size}"
            )
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ParameterError(f"attribute_weights must be finite and >= 0, got {weights}")
    return target_faces, target_error, weights


def simplify(
    vertices,
    faces,
    target_faces: int | None = None,
    target_error: float | None = None,
    lock_border: bool = False,
    attributes=None,
    attribute_weights=None,
) -> SimplifyResult:
    """Simplify a triangle mesh by quadric-error edge collapse.

    Every vertex carries the area-weighted sum of the squared distances to the
    planes of its original faces (Garland–Heckbert quadrics); open borders add
    perpendicular constraint planes. Collapses run in passes (as in meshoptimizer):
    each pass ranks every live edge by the mean squared distance ``Q(p) / area`` of
    the merged quadric at the new position ``p`` (edges no collapse touched keep their
    key and place from the pass before), sorts them and collapses down the
    list, each vertex at most once per pass (so every key is exact when used), until
    the target or a per-pass error goal (1.5x the key at the pass's halfway
    candidate) is reached. ``p`` is the 3x3 optimum for two interior vertices, falling back to
    the best of the ends and the midpoint when the system is ill-conditioned or the
    optimum leaves the edge's neighbourhood; the kept end otherwise). A collapse is
    refused when it would turn a surrounding face by 90 degrees or more (or by more
    than 60 degrees from that face's original normal, so small turns cannot add up
    to a flip), make it degenerate, or break the link condition (so manifold input
    stays manifold). Vertices are processed in a spatial (Morton) order internally.

    Parameters
    ----------
    vertices : (N, 3) float, mesh units (metres in a local frame, usually).
    faces : (M, 3) integer indices.
    target_faces : stop once at most this many faces remain (>= 0; a target at or
        above M removes nothing: the mesh comes back as is, unused vertices dropped).
    target_error : stop before the first collapse whose error (the ``error`` metric,
        mesh units) would exceed this. At least one of the two targets is needed.
    lock_border : vertices on open borders neither move nor disappear, so tiles
        simplified separately still meet: their border vertices come out
        bit-identical.
    attributes : optional (N,) or (N, K) per-vertex values (UVs, normals, colours),
        any real dtype, or a dict of such arrays (``{"uv": uv, "color": rgba}``).
        They ride along (linearly interpolated along a collapsed edge) and add
        ``0.25 * sum_k (w_k * (a_u - a_v))**2`` to a collapse's priority (not to its
        geometric error). Vertices that share a position with exactly one other
        vertex form an attribute seam: a seam edge collapses only together with its
        twin on the other side, onto a seam vertex, so seams stay where they are and
        both sides keep meeting; points where more than two vertices share a
        position (seam junctions, corners of flat-shaded boxes) are locked.
    attribute_weights : (K,) non-negative weights of the attribute columns
        (default 1 each; 0 lets attributes ride along without steering).

    Returns
    -------
    SimplifyResult, unpacking as ``(vertices, faces, error)``: float64 (N', 3)
    vertices (only those still used, in input order; vertices that never moved are
    bit-identical to the input), uint32 (M', 3) faces, and ``error``, the measured
    two-sided distance at the vertices in mesh units (usable as a 3D Tiles
    ``geometricError``): the largest exact point-to-triangle distance from a removed
    or moved input vertex to the output surface, and from a moved output vertex to
    the input faces around the input vertices it replaced (0.0 when nothing moved).
    Against the Hausdorff distance measured independently with 200 k area samples
    per side (``benchmarks/_distance.py``) it came out at 1.00x on the 1 M-triangle
    city mesh at 10 % and 1 % (the latter, where the ground plane's border folds in,
    from an exact face-grid search of every input vertex whose fan distance could
    raise the maximum) and the scan at 10 %, 0.84x on the scan at 1 % (the farthest
    point there lies inside an output face, not at a vertex). With ``target_error`` a
    run whose measured error exceeds the target is repeated with a tighter threshold
    (at most ``TARGET_ERROR_TRIES`` runs).
    ``.attributes`` and ``.remap`` (input index of each output vertex) come along.

    Raises :class:`~twin.errors.InputError` for bad meshes (see
    :func:`~twin.mesh.validate.check_mesh`) and
    :class:`~twin.errors.ParameterError` for targets out of range.

    Memory: linear in N + M (about 2 N faces, 3 N edges on a typical mesh); per input
    vertex while the kernel runs: quadrics 88, pass edge lists 72 (24 bytes per
    edge), working faces 24, corner lists 28, original face normals 24, working
    positions 24, permutation 8, flags and scratch ~28 (≈ 293 in all), plus with two
    parts the halves' flags 1 and, for a moment in each pass, either the candidates'
    owners (1 byte per edge) or the second listing lane's marks (4); ≈ 298 at the
    peak; plus 8 K for K attribute columns. The error measurement afterwards
    (quadrics and edge lists freed) needs the original positions and faces (48),
    vertex -> face lists (~40) and a face grid of the output (about 16 bytes per
    output face).
    Time: O((N + M) log(N / target)) — passes over the shrinking edge list. Meshes
    under ``SERIAL_FACES`` faces run on one thread, larger ones use Numba's threads
    in set-up, ranking, sorting and measurement, and collapse the two halves of
    their vertex order at once (``PASS_PARTS``; the collapses at the seam between the
    halves follow, in order).
    """
    v_in, f_in = check_mesh(vertices, faces)
    attrs, _ = attribute_columns(attributes, v_in.shape[0])
    m = f_in.shape[0]
    target_faces, target_error, weights = _check_params(
        target_faces, target_error, m, attrs, attribute_weights
    )
    pure = attrs is None or not np.any(weights > 0)
    max_e2 = (target_error / ERROR_SCALE) ** 2 if np.isfinite(target_error) else np.inf
    threads = numba.get_num_threads()
    if m < SERIAL_FACES:
        numba.set_num_threads(1)  # this thread only; restored below
    try:
        for _attempt in range(TARGET_ERROR_TRIES):
            prep = _prepare(v_in, f_in, attrs, bool(lock_border))
            log = np.zeros((0, 2), np.int32)
            falive, _, _, _, into = simplify_kernel(
                prep.V, prep.F, prep.N0, prep.Q, prep.head, prep.nxt, prep.kind, prep.ib,
                prep.partner, prep.attrs, weights, target_faces, max_e2, pure, log,
                PASS_PARTS if m >= SERIAL_FACES else 1, numba.get_num_threads(),
            )  # fmt: skip
            prep.Q = prep.head = prep.nxt = prep.N0 = None
            error = _measure(v_in, f_in, prep, falive, into)
            if error <= target_error or max_e2 == 0.0:
                break
            # the measured error overshot the estimate that stopped the run: tighten
            max_e2 *= min(0.5, 0.8 * (target_error / error) ** 2)
    finally:
        numba.set_num_threads(threads)
    out = _output(v_in, prep, falive, attrs is not None, error)
    out.attributes = attributes_like(attributes, out.attributes)
    return out


def _measure(v_in, f_in, prep, falive, into) -> float:
    """The measured error of a finished run (see :func:`measured_error`)."""
    rep = resolve_into(into)
    # bit-identical to the working copy's start
    p0, f0 = permute_mesh(v_in, f_in, prep.perm, prep.centre)
    bounds, to_input = measured_error(p0, prep.V, prep.F, falive, f0, rep)
    del f0, rep
    # the bounds are exact where the closest output face lies in the fans searched;
    # measure exactly (face grid) every vertex whose bound could raise the maximum
    cand = np.flatnonzero(bounds > to_input)
    order = cand[np.argsort(bounds[cand])[::-1]].astype(np.int64)
    exact, _ = exact_max(p0, order, bounds, prep.V, prep.F, falive, to_input)
    return float(exact)


class _Prepared:
    """Working arrays of one simplification, in spatial (Morton) vertex order."""

    V: np.ndarray  # (N, 3) float64, centred on ``centre``
    F: np.ndarray  # (M, 3) int32 internal indices, faces sorted by first vertex
    N0: np.ndarray  # (M, 3) float32 unit normals of the original faces
    Q: np.ndarray  # (N, 11) quadrics
    head: np.ndarray
    nxt: np.ndarray
    kind: np.ndarray
    ib: np.ndarray
    partner: np.ndarray
    attrs: np.ndarray  # (N, K) float64 (K may be 0), internal order
    perm: np.ndarray  # internal vertex i is input vertex perm[i]
    centre: np.ndarray


def _morton_order(v: np.ndarray, codes: bool = False, box=None):
    """Vertex permutation along a 3D Morton (Z-order) curve of 21 bits per axis
    (stable: vertices at one position keep their input order); with ``codes`` also
    the sorted codes. ``box``: ``bounds(v)`` if already known."""
    lo, hi = bounds(v) if box is None else box
    span = float((hi - lo).max()) or 1.0
    code = morton_codes(v, lo, (2**21 - 1) / span)
    order = radix_argsort(code)
    return (order, code[order]) if codes else order


def _prepare(v_in, f_in, attrs, lock_border: bool) -> _Prepared:
    """Build the kernel's working arrays: spatially ordered vertices (neighbours close
    in memory: the kernel's random access becomes mostly cache hits), quadrics,
    corner lists and vertex kinds."""
    p = _Prepared()
    n = v_in.shape[0]
    lo, hi = bounds(v_in)
    p.centre = 0.5 * (lo + hi)
    p.perm, code = _morton_order(v_in, codes=True, box=(lo, hi))
    pos, F = permute_mesh(v_in, f_in, p.perm, np.zeros(3))  # v - 0.0 == v, bit for bit
    p.F = sort_faces_by_min(F, n)
    del F
    # position groups (bit-identical positions, -0.0 == 0.0): seams and flat shading
    pid, ok = position_groups(pos, code)
    del code
    if not ok:  # many distinct points in one Morton cell: hash them instead
        pid, _, _ = weld_exact_kernel(np.ascontiguousarray((pos + 0.0).view(np.uint64)))
        pid = pid.astype(np.int32)
    pos -= p.centre
    p.V = pos  # working copy, centred for precise quadrics
    p.N0 = face_normals(p.V, p.F)
    p.head, p.nxt = build_corner_lists(p.F, n)
    falive = np.ones(p.F.shape[0], np.uint8)
    p.Q, p.kind, p.ib, p.partner = setup_vertices(
        p.V, p.F, pid, p.head, p.nxt, falive, lock_border, BORDER_WEIGHT, numba.get_num_threads()
    )
    p.attrs = attrs[p.perm] if attrs is not None else np.zeros((n, 0))
    return p


def _output(v_in, prep: _Prepared, falive, has_attrs: bool, error: float) -> SimplifyResult:
    """Compact the surviving faces and vertices (output vertices in input order);
    vertices that never moved keep their input bits."""
    out_v, out_f, kept, src = output_mesh(v_in, prep.V, prep.F, falive, prep.perm, prep.centre)
    out_a = prep.attrs[kept] if has_attrs else None
    return SimplifyResult(out_v, out_f, error, out_a, src)
