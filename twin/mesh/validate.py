"""Input checks shared by every public mesh-storage function.

Each check either returns arrays in the exact layout the Numba kernels expect
(C-contiguous ``float64`` vertices, C-contiguous ``uint32`` faces, ``float64``
attributes) or raises :class:`twin.errors.InputError` /
:class:`twin.errors.ParameterError` with a message naming the offending array (and
the file, when the caller passes ``path``). Nothing here ever lets a bad index reach
a kernel, where it would read out of bounds instead of failing.

Memory: a check copies its input only when the dtype or layout differs from the
kernel layout (one array of the input's size); the range checks allocate nothing
proportional to the mesh beyond NumPy's reductions.
"""

from __future__ import annotations

import os

import numpy as np

from twin.errors import InputError, ParameterError

#: Largest vertex count a ``uint32`` index buffer can address (index 2**32 - 1 is
#: reserved as the primitive-restart value by graphics APIs, so it is excluded).
MAX_VERTICES = 2**32 - 1

PathLike = str | os.PathLike | None


def check_vertices(vertices, *, path: PathLike = None, what: str = "vertices") -> np.ndarray:
    """Return ``vertices`` as a C-contiguous ``float64`` (N, 3) array, or raise.

    Rejects: non-numeric dtypes, a shape other than (N, 3), N == 0, N larger than
    ``uint32`` indices can address, and NaN or infinite coordinates (the message
    gives the first bad row).
    """
    try:
        arr = np.asarray(vertices)
    except Exception as exc:  # ragged lists and the like
        raise InputError(f"{what} cannot be read as an array: {exc}", path=path) from None
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise InputError(f"{what} must be a real number array, got dtype {arr.dtype}", path=path)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise InputError(f"{what} must have shape (N, 3), got {arr.shape}", path=path)
    if arr.shape[0] == 0:
        raise InputError(f"{what} is empty (a mesh needs at least one vertex)", path=path)
    if arr.shape[0] > MAX_VERTICES:
        raise InputError(
            f"{what} has {arr.shape[0]} rows, more than uint32 indices can address "
            f"({MAX_VERTICES}); split the mesh into tiles first",
            path=path,
        )
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if np.isfinite(arr).all():  # one flat pass; rows are only looked at on failure
        return arr
    finite = np.isfinite(arr).all(axis=1)
    bad = int(np.flatnonzero(~finite)[0])
    raise InputError(
        f"{what} row {bad} is not finite ({arr[bad].tolist()}); "
        f"{int((~finite).sum())} rows have NaN or infinite coordinates",
        path=path,
    )


def check_faces(
    faces, n_vertices: int, *, path: PathLike = None, what: str = "faces", allow_empty=False
) -> np.ndarray:
    """Return ``faces`` as a C-contiguous ``uint32`` (M, 3) array, or raise.

    Rejects: non-integer dtypes (a float array of whole numbers is also refused: it
    usually means the columns were mixed up), a shape other than (M, 3), M == 0
    (unless ``allow_empty``), negative indices and indices ``>= n_vertices``.
    """
    try:
        arr = np.asarray(faces)
    except Exception as exc:
        raise InputError(f"{what} cannot be read as an array: {exc}", path=path) from None
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"{what} must be an integer array, got dtype {arr.dtype}", path=path)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise InputError(f"{what} must have shape (M, 3) (triangles), got {arr.shape}", path=path)
    if arr.shape[0] == 0:
        if allow_empty:
            return np.zeros((0, 3), np.uint32)
        raise InputError(f"{what} is empty (a mesh needs at least one triangle)", path=path)
    n_vertices = int(n_vertices)
    if n_vertices > MAX_VERTICES:
        raise InputError(
            f"{n_vertices} vertices is more than uint32 indices can address ({MAX_VERTICES})",
            path=path,
        )
    lo = int(arr.min())
    hi = int(arr.max())
    if lo < 0:
        row = int(np.flatnonzero((arr < 0).any(axis=1))[0])
        raise InputError(f"{what} row {row} has a negative index ({arr[row].tolist()})", path=path)
    if hi >= n_vertices:
        row = int(np.flatnonzero((arr >= n_vertices).any(axis=1))[0])
        raise InputError(
            f"{what} row {row} indexes vertex {int(arr[row].max())}, "
            f"out of range for {n_vertices} vertices",
            path=path,
        )
    return np.ascontiguousarray(arr, dtype=np.uint32)


def check_mesh(vertices, faces, *, path: PathLike = None) -> tuple[np.ndarray, np.ndarray]:
    """Check a triangle mesh; return ``(float64 (N,3) vertices, uint32 (M,3) faces)``.

    Raises :class:`~twin.errors.InputError` for an empty mesh, NaN/inf coordinates,
    negative or out-of-range indices, wrong shapes or dtypes, or more vertices than
    ``uint32`` indices allow. ``path`` (the file the mesh came from, if any) is named
    in the message.
    """
    v = check_vertices(vertices, path=path)
    f = check_faces(faces, v.shape[0], path=path)
    return v, f


def check_attributes(
    attributes, n_vertices: int, *, path: PathLike = None, what: str = "attributes"
) -> np.ndarray | None:
    """Return per-vertex attributes as a C-contiguous ``float64`` (N, K) array (or None).

    A 1-D array of length N is taken as one attribute column. Rows must match the
    vertex count and every value must be finite.
    """
    if attributes is None:
        return None
    try:
        arr = np.asarray(attributes)
    except Exception as exc:
        raise InputError(f"{what} cannot be read as an array: {exc}", path=path) from None
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise InputError(f"{what} must be a real number array, got dtype {arr.dtype}", path=path)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise InputError(f"{what} must have shape (N,) or (N, K), got {arr.shape}", path=path)
    if arr.shape[0] != n_vertices:
        raise InputError(
            f"{what} has {arr.shape[0]} rows but the mesh has {n_vertices} vertices", path=path
        )
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if np.isfinite(arr).all():  # one flat pass; rows are only looked at on failure
        return arr
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise InputError(f"{what} row {bad} is not finite ({arr[bad].tolist()})", path=path)
    return arr


def attribute_columns(attributes, n_vertices: int, *, path: PathLike = None):
    """Per-vertex attributes as float64 columns plus a function that gives rows back
    in the caller's own form: ``(cols (N, K) float64 or None, rows)`` where
    ``rows(index)`` returns ``attributes[index]`` with the input's dtype and shape
    (a 1-D array stays 1-D, uint8 colours stay uint8) or, for a dict of arrays (e.g.
    ``{"uv": (N, 2), "normal": (N, 3), "color": (N, 4) uint8}``), a dict of them.
    Each array is checked as :func:`check_attributes` does (the message names its key).
    """
    if attributes is None:
        return None, lambda index: None
    if isinstance(attributes, dict):
        if not attributes:
            raise InputError("attributes is an empty dict", path=path)
        raw = {}
        cols = []
        for key, a in attributes.items():
            cols.append(check_attributes(a, n_vertices, path=path, what=f"attributes[{key!r}]"))
            raw[key] = np.asarray(a)
        return np.hstack(cols), lambda index: {k: a[index] for k, a in raw.items()}
    cols = check_attributes(attributes, n_vertices, path=path)
    raw = np.asarray(attributes)
    return cols, lambda index: raw[index]


def attributes_like(attributes, cols: np.ndarray | None):
    """Float64 attribute columns ``cols`` (N', K) (e.g. interpolated by a collapse)
    back in the form of the caller's ``attributes``: the same dtype per array
    (integers rounded and clipped to their range), a 1-D array as 1-D, a dict of
    arrays as a dict split column by column in the dict's order."""
    if attributes is None or cols is None:
        return None

    def like(a, c):
        a = np.asarray(a)
        if np.issubdtype(a.dtype, np.integer):
            info = np.iinfo(a.dtype)
            c = np.clip(np.rint(c), info.min, info.max)
        c = c.astype(a.dtype)
        return c[:, 0] if a.ndim == 1 else c

    if not isinstance(attributes, dict):
        return like(attributes, cols)
    out, j = {}, 0
    for key, a in attributes.items():
        k = 1 if np.ndim(a) == 1 else np.shape(a)[1]
        out[key] = like(a, cols[:, j : j + k])
        j += k
    return out


def check_cache_size(cache_size) -> int:
    """A post-transform cache size: an integer in [3, 1024]."""
    if isinstance(cache_size, bool) or not isinstance(cache_size, int | np.integer):
        raise ParameterError(f"cache_size must be an integer, got {cache_size!r}")
    if not 3 <= int(cache_size) <= 1024:
        raise ParameterError(f"cache_size must be in [3, 1024], got {cache_size}")
    return int(cache_size)


def check_n_vertices(n_vertices, faces: np.ndarray | None = None) -> int:
    """A vertex count: a positive integer that ``uint32`` indices can address."""
    if isinstance(n_vertices, bool) or not isinstance(n_vertices, int | np.integer):
        raise ParameterError(f"n_vertices must be an integer, got {n_vertices!r}")
    n = int(n_vertices)
    if n <= 0:
        raise InputError(f"n_vertices must be positive, got {n}")
    if n > MAX_VERTICES:
        raise InputError(f"{n} vertices is more than uint32 indices can address ({MAX_VERTICES})")
    return n


def check_topology(
    vertices,
    faces,
    *,
    manifold: bool = True,
    min_area: float | None = 0.0,
    path: PathLike = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`check_mesh` plus the surface checks a stage that needs a clean 2-manifold
    asks for; returns the same ``(vertices, faces)``.

    Every storage function (weld, cache, fetch, overdraw, quantise, both codecs)
    accepts non-manifold edges and zero-area faces and keeps them exactly (weld
    drops faces with a repeated corner); call this where a stage cannot.

    - ``manifold``: raise if an edge is shared by more than two faces (the message
      gives the edge, how many faces use it and the first of them).
    - ``min_area``: raise if a face's area is ``<= min_area`` (0.0: zero-area faces,
      i.e. a repeated corner or three collinear corners); None skips the check.

    Raises :class:`~twin.errors.InputError` naming ``path``. Memory: about 60 bytes
    per face (edge keys and their sort).
    """
    v, f = check_mesh(vertices, faces, path=path)
    if min_area is not None and not (np.isfinite(min_area) and float(min_area) >= 0):
        raise ParameterError(f"min_area must be a number >= 0 or None, got {min_area!r}")
    if min_area is not None:
        a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
        area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
        bad = np.flatnonzero(area <= float(min_area))
        if bad.size:
            t = int(bad[0])
            raise InputError(
                f"face {t} {f[t].tolist()} has area {area[t]:.3g} <= {float(min_area):g} "
                f"({bad.size} such faces); weld or drop them first",
                path=path,
            )
    if manifold:
        e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]).astype(np.int64)
        e.sort(axis=1)
        keys = e[:, 0] * np.int64(v.shape[0]) + e[:, 1]
        uniq, first, count = np.unique(keys, return_index=True, return_counts=True)
        over = np.flatnonzero(count > 2)
        if over.size:
            k = int(over[0])
            edge = [int(uniq[k] // v.shape[0]), int(uniq[k] % v.shape[0])]
            t = int(first[k]) % f.shape[0]
            raise InputError(
                f"non-manifold edge {edge} is shared by {int(count[k])} faces (first: face "
                f"{t}); {over.size} such edges",
                path=path,
            )
    return v, f
