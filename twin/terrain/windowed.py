"""Greedy TINs of DEM files larger than memory: tile by tile from windowed reads.

:func:`tin_file` runs the tiled algorithm of :mod:`twin.terrain.tiled` without ever
holding the raster: the tile border lines (whole rows and columns of the raster) are
read and refined as 1-D profiles first, so neighbouring tiles share exactly the
same border vertices (no cracks, no T-junctions); then each tile's window is read
(with its border rows and columns), triangulated, verified against every sample in
it, and its vertices and faces are appended to the output. The result is the same
TIN, vertex for vertex, as ``tin(read_dem(path).heights, ..., tile_size=...)``.

Peak memory: a few tiles' windows and refinement arrays at a time (two per worker
thread in flight), the border profiles (8 bytes per sample of every tile line), and
the output TIN (about 24 bytes per vertex and 12 per triangle, twice while the
chunks are joined at the end). It does not grow with the raster size beyond that.

A raster counts as *large* (:func:`is_large`) when it has more than
:data:`LARGE_SAMPLES` samples or an untiled TIN of it could need more than half the
memory available now; the CLI triangulates such rasters with :func:`tin_file`.
"""

from __future__ import annotations

import math
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from twin.errors import InputError, ParameterError
from twin.progress import Progress, ensure
from twin.terrain.dem import DemReader, available_memory
from twin.terrain.tiled import (
    MIN_TILE,
    _profiles,
    tile_borders,
    tile_corners,
    tile_lines,
    tile_tin,
)

#: Rasters with more samples than this (4096 x 4096) are "large": the CLI
#: triangulates them from windowed reads (an untiled greedy TIN of one needs about
#: 2.5 GB at a high triangle density).
LARGE_SAMPLES = 4096 * 4096

#: Tile side used for file-backed TINs unless one is given.
DEFAULT_TILE = 257


def is_large(shape: tuple[int, int]) -> bool:
    """True when a raster of ``shape`` should be triangulated from windowed reads:
    more than :data:`LARGE_SAMPLES` samples, or more than half the memory available
    now at :data:`twin.terrain.tin.BYTES_PER_SAMPLE` per sample."""
    from twin.terrain.tin import BYTES_PER_SAMPLE

    n = int(shape[0]) * int(shape[1])
    return n > LARGE_SAMPLES or BYTES_PER_SAMPLE * n > available_memory() // 2


def tin_file(
    source,
    max_error: float,
    tile_size: int = DEFAULT_TILE,
    *,
    crs=None,
    workers: int | None = None,
    progress: Progress | None = None,
    stats: dict | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Greedy TIN of a DEM raster within ``max_error``, read window by window.

    ``source``: a raster path or a :class:`twin.terrain.dem.DemReader` (``crs`` is
    used for a path whose file has none). ``tile_size``: samples a side of each tile
    (>= 16; tiles share their border rows and columns). ``workers``: threads
    (default: the CPU count); tiles are read and triangulated in parallel, at most
    two per worker in flight (windows are read in the calling thread). ``stats``: a
    dict to fill with ``tiles``,
    ``tile_size`` and ``valid_samples`` (the count of valid samples in the raster).

    Returns ``(vertices, faces, max_error_reached)`` like :func:`twin.terrain.tin`
    with a transform: (N, 3) float64 map x, map y (pixel centres), height; (M, 3)
    uint32 faces, counter-clockwise seen from above; the worst error of any valid
    sample, measured per tile by rasterising the tile's TIN over all its samples.
    Nodata samples never count toward the error and never become vertices (a raster
    corner on nodata takes the nearest valid height), so holes are bridged by their
    rim and never make a spike or a pit; triangles over no valid sample are dropped.

    Memory: see the module docstring (bounded by the tile size plus the output).
    Raises :class:`InputError` for an unreadable file, fewer than 2 rows or columns
    or no valid sample; :class:`ParameterError` for a bad ``max_error`` or
    ``tile_size``.
    """
    try:
        max_error = float(max_error)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"max_error must be a number, got {max_error!r}") from exc
    if not math.isfinite(max_error) or max_error <= 0.0:
        raise ParameterError(f"max_error must be a positive finite number, got {max_error!r}")
    tile_size = int(tile_size)
    if tile_size < MIN_TILE or tile_size > 2**14 + 1:
        raise ParameterError(f"tile_size must be in {MIN_TILE}..{2**14 + 1}, got {tile_size}")
    reader = source if isinstance(source, DemReader) else DemReader(source, crs=crs)
    rows, cols = reader.shape
    if rows < 2 or cols < 2:
        raise InputError(
            f"the raster has {rows} x {cols} samples: at least 2 rows and 2 columns are "
            "needed to triangulate",
            path=reader.path,
        )
    xs = tile_lines(cols, tile_size)
    ys = tile_lines(rows, tile_size)
    prog = ensure(progress)

    # border lines: whole rows and columns, read once each
    hlines = {int(y): reader.read(int(y), int(y) + 1, 0, cols)[0] for y in ys}
    corner_z = {}
    for j, y in enumerate(ys):
        for i, x in enumerate(xs):
            z = hlines[int(y)][int(x)]
            if not np.isfinite(z):
                z = reader.nearest_valid(int(y), int(x))
                if z is None:
                    raise InputError("every DEM cell is nodata: no height to use", path=reader.path)
            corner_z[(j, i)] = float(z)

    def line_of(kind, line):
        return hlines[line] if kind == "h" else reader.read(0, rows, line, line + 1)[:, 0]

    prof = _profiles(line_of, corner_z, xs, ys, np.zeros((0, 3)), max_error)
    hlines.clear()

    # every border vertex gets its index up front: tiles map theirs by grid key
    keys, bz = [], []
    for (kind, li, _), (p, z) in prof.items():
        pi = np.round(p).astype(np.int64)
        if kind == "h":
            keys.append(int(ys[li]) * cols + pi)
        else:
            keys.append(pi * cols + int(xs[li]))
        bz.append(z)
    bkeys, first = np.unique(np.concatenate(keys), return_index=True)
    bz = np.concatenate(bz)[first]
    nb = len(bkeys)
    bverts = np.column_stack(
        [(bkeys % cols).astype(np.float64), (bkeys // cols).astype(np.float64), bz]
    )
    del keys, first, bz

    itype = np.uint32 if rows * cols < 2**32 else np.int64
    vchunks = [bverts]
    fchunks = []
    state = {"next": nb, "reached": -1.0, "uncovered": 0, "valid": 0}

    def load(job):
        """Read a tile's window (in the calling thread: GDAL's allocations stay in
        one place) and count the valid samples it owns."""
        j, i = job
        r0, r1 = int(ys[j]), int(ys[j + 1])
        c0, c1 = int(xs[i]), int(xs[i + 1])
        own = reader.read(r0, r1 + 1, c0, c1 + 1)
        # the tile owns its samples past its top and left border lines (the first
        # row and column of tiles own those lines too): a partition of the grid
        nvalid = int(np.isfinite(own[(1 if j else 0) :, (1 if i else 0) :]).sum())
        return j, i, own, nvalid

    def run(j, i, own, nvalid):
        res = tile_tin(
            own, tile_corners(corner_z, j, i), tile_borders(prof, xs, ys, j, i), max_error
        )
        return int(ys[j]), int(ys[j + 1]), int(xs[i]), int(xs[i + 1]), res, nvalid

    def append(r0, r1, c0, c1, res, nvalid):
        state["valid"] += nvalid
        px, py, pz, tri, keep, reached, unc = res
        on = (px == 0) | (py == 0) | (px == c1 - c0) | (py == r1 - r0)
        gmap = np.empty(len(px), np.int64)
        key = (py[on].astype(np.int64) + r0) * cols + (px[on].astype(np.int64) + c0)
        ids = np.searchsorted(bkeys, key)
        if len(key) and (ids.max() >= nb or not np.array_equal(bkeys[ids], key)):
            raise RuntimeError("a tile border vertex is not a border profile vertex")  # a bug
        gmap[on] = ids
        inner = ~on
        k = int(inner.sum())
        gmap[inner] = state["next"] + np.arange(k)
        state["next"] += k
        vchunks.append(np.column_stack([px[inner] + c0, py[inner] + r0, pz[inner]]))
        t = tri if keep is None else tri[keep]
        fchunks.append(gmap[t].astype(itype))
        state["reached"] = max(state["reached"], reached)
        state["uncovered"] += unc

    jobs = [(j, i) for j in range(len(ys) - 1) for i in range(len(xs) - 1)]
    workers = max(1, int(workers or os.cpu_count() or 1))
    with prog.step("terrain tin (tiles)", total=len(jobs)) as advance:
        if workers == 1 or len(jobs) == 1:
            for job in jobs:
                append(*run(*load(job)))
                advance(1)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                pending = deque()
                for job in jobs:
                    pending.append(pool.submit(run, *load(job)))
                    if len(pending) >= 2 * workers:
                        append(*pending.popleft().result())
                        advance(1)
                while pending:
                    append(*pending.popleft().result())
                    advance(1)
    if stats is not None:
        stats.update(tiles=len(jobs), tile_size=tile_size, valid_samples=state["valid"])
    if state["uncovered"]:
        raise RuntimeError(f"{state['uncovered']} valid samples not covered by the TIN")  # a bug
    reached = state["reached"]
    if not reached <= max_error:
        raise RuntimeError(f"TIN error {reached} exceeds max_error {max_error}")  # a bug
    verts = np.concatenate(vchunks)
    vchunks.clear()
    faces = np.concatenate(fchunks) if fchunks else np.zeros((0, 3), itype)
    fchunks.clear()
    if not len(faces):
        raise InputError("every DEM cell is nodata: no height to use", path=reader.path)
    used = np.zeros(len(verts), bool)
    used[faces.ravel()] = True
    if not used.all():
        remap = (np.cumsum(used) - 1).astype(itype)
        verts = verts[used]
        faces = remap[faces]
    # grid units -> map coordinates (pixel centres), in place
    t = reader.transform
    cx = verts[:, 0] + 0.5
    cy = verts[:, 1] + 0.5
    verts[:, 0] = t.a * cx + t.b * cy + t.c
    verts[:, 1] = t.d * cx + t.e * cy + t.f
    if t.a * t.e - t.b * t.d < 0.0:  # the transform mirrors: keep faces CCW in map space
        faces[:, [1, 2]] = faces[:, [2, 1]]
    return verts, faces.astype(np.uint32, copy=False), reached
