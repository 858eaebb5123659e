"""Greedy TINs of large rasters in tiles, in parallel, with matching borders.

The grid is cut into tiles of ``tile_size`` x ``tile_size`` samples that share their
border rows and columns. First every tile border is refined on its own, as a 1-D
profile (:func:`twin.terrain._kernels.refine_profile`): the samples along it that a
polyline needs to stay within ``max_error``. Both tiles on a border get exactly these
vertices (same positions, same heights) and triangulate their interior with them as
forced vertices on their boundary, the border samples themselves left out of the
interior refinement (the profile already bounds them). Each tile's boundary edges are
therefore the same chain of segments as its neighbour's: the merged mesh has no
cracks and no T-junctions, and the error bound holds everywhere, which the final
verification (rasterising the merged TIN back) checks.

Constraint segments are split where they cross a tile border; the crossing points
become fixed vertices of that border's profile, so they are shared too.

Tiles run on a thread pool: the refinement kernel releases the GIL (``nogil``), so
tiles triangulate in parallel in one process without copying the raster to other
processes (a Dask graph over tiles would add scheduling and serialisation for the
same parallelism; the pipeline can still schedule whole rasters with Dask).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from twin.errors import ParameterError
from twin.terrain import _kernels

#: Smallest tile side accepted (samples).
MIN_TILE = 16


def tile_lines(n: int, tile_size: int) -> np.ndarray:
    """Grid lines (indices 0..n-1) that bound tiles of ``tile_size`` samples (tiles
    share their border line); the last tile may be smaller, never below half a tile
    (it is merged into its neighbour instead)."""
    step = tile_size - 1
    lines = list(range(0, n - 1, step)) + [n - 1]
    if len(lines) > 2 and lines[-1] - lines[-2] < step // 2:
        del lines[-2]
    return np.asarray(lines, dtype=np.int64)


def _split_at_lines(pts, seg, seg_linear, xs, ys):
    """Split constraint segments where they cross the tile lines x in xs, y in ys.

    Returns (points (P, 3) with the height column, segments (S, 2), linear flags,
    mask of the crossing points whose height is still to be sampled); a crossing
    point lies exactly on its line (one coordinate is the integer) and, on a segment
    with linear heights, gets the height interpolated along it."""
    out_pts = [pts]
    resample = [np.zeros(len(pts), bool)]
    out_seg = []
    out_lin = []
    npts = len(pts)
    for k in range(len(seg)):
        i, j = seg[k]
        a = pts[i]
        b = pts[j]
        ts = []
        for lines, axis in ((xs, 0), (ys, 1)):
            lo, hi = sorted((a[axis], b[axis]))
            inner = lines[(lines > lo) & (lines < hi)]
            for v in inner:
                t = (v - a[axis]) / (b[axis] - a[axis])
                p = a + t * (b - a)
                p[axis] = v
                ts.append((t, p))
        if not ts:
            out_seg.append((i, j))
            out_lin.append(seg_linear[k])
            continue
        ts.sort(key=lambda q: q[0])
        ids = [i]
        for _, p in ts:
            out_pts.append(p[None, :])
            resample.append(np.array([not seg_linear[k]]))
            ids.append(npts)
            npts += 1
        ids.append(j)
        for u, v in zip(ids[:-1], ids[1:], strict=True):
            out_seg.append((u, v))
            out_lin.append(seg_linear[k])
    allp = np.concatenate(out_pts)
    res = np.concatenate(resample)
    # merge points closer than 1e-9 grid units (a crossing at a tile corner), snapping
    # near-integers so that shared border points are bit-identical
    r = np.round(allp[:, :2])
    near = np.abs(allp[:, :2] - r) <= 1e-9
    allp[:, :2] = np.where(near, r, allp[:, :2])
    key = np.round(allp[:, :2] * 1e9)
    _, first, inv = np.unique(key, axis=0, return_index=True, return_inverse=True)
    inv = inv.ravel()
    uniq = allp[first]
    s = inv[np.asarray(out_seg, dtype=np.int64).reshape(-1, 2)]
    keep = s[:, 0] != s[:, 1]
    return uniq, s[keep], np.asarray(out_lin, dtype=np.uint8)[keep], res[first]


def _profiles(line_of, corner_z, xs, ys, cpts, max_error):
    """Border vertices of every tile edge: dict (kind, line index, interval index) ->
    (positions along the line, heights), endpoints included. ``line_of(kind, line)``
    gives the heights along grid row (kind "h") or column ("v") ``line``, NaN where
    invalid."""
    out = {}
    for kind, lines, other in (("h", ys, xs), ("v", xs, ys)):
        for li, line in enumerate(lines):
            prof = line_of(kind, int(line))
            if len(cpts):
                axis = 1 if kind == "h" else 0
                on = cpts[cpts[:, axis] == line]
            else:
                on = np.zeros((0, 3))
            for k in range(len(other) - 1):
                a, b = int(other[k]), int(other[k + 1])
                za = corner_z[(li, k)] if kind == "h" else corner_z[(k, li)]
                zb = corner_z[(li, k + 1)] if kind == "h" else corner_z[(k + 1, li)]
                along = 0 if kind == "h" else 1
                fixed = on[(on[:, along] > a) & (on[:, along] < b)]
                fixed = fixed[np.argsort(fixed[:, along])]
                pos = np.concatenate([[0.0], fixed[:, along] - a, [float(b - a)]])
                zfix = np.concatenate([[za], fixed[:, 2], [zb]])
                sub = np.ascontiguousarray(prof[a : b + 1])
                chosen = _kernels.refine_profile(sub, pos, zfix, max_error)
                idx = np.nonzero(chosen)[0]
                p = np.concatenate([pos, idx.astype(np.float64)])
                z = np.concatenate([zfix, sub[idx]])
                order = np.argsort(p, kind="stable")
                out[(kind, li, k)] = (p[order] + a, z[order])
    return out


def tin_tiled(herr, valid, max_error, tile_size, workers=None, forced=None):
    """Greedy TIN of a grid in tiles (see the module docstring), in grid units:
    ``(vertices, faces, reached, uncovered)``, verified tile by tile (the worst
    error of any valid sample and the count of valid samples left uncovered);
    triangles over no valid sample are dropped. ``forced``: constraint points and segments as for
    :func:`twin.terrain.tin._greedy` (grid units) or None.

    Memory: the input (and, with holes, a filled copy), per running tile its copy
    (8 bytes per tile sample) and refinement arrays (~100 bytes per tile triangle),
    plus the output of all tiles (24 bytes per vertex, 12 per triangle) and the
    merge (about 40 bytes per vertex).
    """
    from twin.terrain.tin import _nearest_valid

    rows, cols = herr.shape
    tile_size = int(tile_size)
    if tile_size < MIN_TILE:
        raise ParameterError(f"tile_size must be >= {MIN_TILE} samples, got {tile_size}")
    if tile_size > 2**14 + 1:
        raise ParameterError(f"tile_size must be <= {2**14 + 1} samples, got {tile_size}")
    xs = tile_lines(cols, tile_size)
    ys = tile_lines(rows, tile_size)
    corner_z = {}
    for j, y in enumerate(ys):
        for i, x in enumerate(xs):
            corner_z[(j, i)] = _nearest_valid(herr, valid, int(y), int(x))

    if forced is not None:
        fx, fy, fz, seg, seg_linear, hfill = forced
        pts = np.column_stack([fx, fy, fz])
        pts, seg, seg_linear, resample = _split_at_lines(pts, seg, seg_linear, xs, ys)
        if resample.any():
            from twin.terrain.tin import bilinear

            pts[resample, 2] = bilinear(hfill, pts[resample, 0], pts[resample, 1])
        on_line = np.isin(pts[:, 0], xs) | np.isin(pts[:, 1], ys)
        cpts = pts[on_line]
    else:
        pts = np.zeros((0, 3))
        seg = np.zeros((0, 2), np.int64)
        seg_linear = np.zeros(0, np.uint8)
        hfill = np.empty((1, 1))
        cpts = pts

    prof = _profiles(
        lambda kind, line: herr[line, :] if kind == "h" else herr[:, line],
        corner_z,
        xs,
        ys,
        cpts,
        max_error,
    )

    jobs = [(j, i) for j in range(len(ys) - 1) for i in range(len(xs) - 1)]
    if len(seg):
        mid = 0.5 * (pts[seg[:, 0], :2] + pts[seg[:, 1], :2])
        tj = np.clip(np.searchsorted(ys, mid[:, 1], side="right") - 1, 0, len(ys) - 2)
        ti = np.clip(np.searchsorted(xs, mid[:, 0], side="right") - 1, 0, len(xs) - 2)
    else:
        tj = ti = np.zeros(0, np.int64)

    def run(job):
        j, i = job
        r0, r1 = int(ys[j]), int(ys[j + 1])
        c0, c1 = int(xs[i]), int(xs[i + 1])
        cons = None
        mine = (tj == j) & (ti == i)
        if mine.any():
            tseg = seg[mine]
            ids, local = np.unique(tseg, return_inverse=True)
            cp = pts[ids] - np.array([c0, r0, 0.0])
            tfill = np.ascontiguousarray(hfill[r0 : r1 + 1, c0 : c1 + 1])
            cons = (cp, local.reshape(-1, 2), seg_linear[mine], tfill)
        px, py, pz, tri, keep, reached, unc = tile_tin(
            herr[r0 : r1 + 1, c0 : c1 + 1],
            tile_corners(corner_z, j, i),
            tile_borders(prof, xs, ys, j, i),
            max_error,
            cons,
        )
        if len(seg):
            keep = None  # all kept (constraint vertices stay even over nodata)
        return px + np.float64(c0), py + np.float64(r0), pz, tri, keep, reached, unc

    workers = workers or os.cpu_count() or 1
    if workers > 1 and len(jobs) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(run, jobs))
    else:
        results = [run(job) for job in jobs]
    return _merge(results, xs, ys, cols)


def _merge(results, xs, ys, cols):
    """Merge tile TINs: the vertices tiles share on their borders become one.

    Returns ``(vertices (N, 3), faces (M, 3) int64, reached, uncovered)`` with the
    faces of triangles over no valid sample dropped. Vertices used by no kept
    triangle stay (the caller removes them). Memory: the output plus, per tile, its
    vertex map (8 bytes per vertex) and faces (24 bytes per triangle)."""
    line_x = np.zeros(int(xs[-1]) + 2, bool)
    line_x[xs] = True
    line_y = np.zeros(int(ys[-1]) + 2, bool)
    line_y[ys] = True
    borders = []
    grid_keys = []
    float_keys = []
    for px, py, *_ in results:
        ix = px.astype(np.int64)
        iy = py.astype(np.int64)
        integral = (ix == px) & (iy == py)
        on = ((ix == px) & line_x[np.clip(ix, 0, len(line_x) - 1)]) | (
            (iy == py) & line_y[np.clip(iy, 0, len(line_y) - 1)]
        )
        borders.append((on, integral))
        g = on & integral
        grid_keys.append(iy[g] * (cols + 1) + ix[g])
        f = on & ~integral
        float_keys.append(np.column_stack([px[f], py[f]]))
    ukeys, ginv = np.unique(np.concatenate(grid_keys), return_inverse=True)
    fk = np.concatenate(float_keys)
    if len(fk):
        ufloat, finv = np.unique(fk, axis=0, return_inverse=True)
        finv = finv.ravel()
    else:
        ufloat, finv = np.zeros((0, 2)), np.zeros(0, np.int64)
    n_inner = sum(int((~on).sum()) for on, _ in borders)
    nb = len(ukeys)
    n = n_inner + nb + len(ufloat)
    verts = np.empty((n, 3))
    m = sum(len(r[3]) if r[4] is None else int(r[4].sum()) for r in results)
    faces = np.empty((m, 3), np.int64)
    vo = 0
    fo = 0
    go = 0
    flo = 0
    reached = -1.0
    uncovered = 0
    for (px, py, pz, tri, keep, r, unc), (on, integral) in zip(results, borders, strict=True):
        gmap = np.empty(len(px), np.int64)
        inner = ~on
        k = int(inner.sum())
        gmap[inner] = vo + np.arange(k)
        verts[vo : vo + k, 0] = px[inner]
        verts[vo : vo + k, 1] = py[inner]
        verts[vo : vo + k, 2] = pz[inner]
        vo += k
        for sel, inv, base in (
            (on & integral, ginv, n_inner),
            (on & ~integral, finv, n_inner + nb),
        ):
            c = int(sel.sum())
            if not c:
                continue
            off = go if base == n_inner else flo
            ids = base + inv[off : off + c]
            gmap[sel] = ids
            verts[ids, 0] = px[sel]
            verts[ids, 1] = py[sel]
            verts[ids, 2] = pz[sel]
            if base == n_inner:
                go += c
            else:
                flo += c
        t = tri if keep is None else tri[keep]
        faces[fo : fo + len(t)] = gmap[t]
        fo += len(t)
        reached = max(reached, r)
        uncovered += unc
    return verts, faces, reached, uncovered


def tile_corners(corner_z, j, i) -> np.ndarray:
    """Heights of tile (j, i)'s corners in the kernel's order (top-left, top-right,
    bottom-right, bottom-left)."""
    return np.array(
        [corner_z[(j, i)], corner_z[(j, i + 1)], corner_z[(j + 1, i + 1)], corner_z[(j + 1, i)]]
    )


def tile_borders(prof, xs, ys, j, i):
    """The border vertices of tile (j, i) in its own grid units, corners left out:
    ``(x, y, z)`` arrays."""
    r0, r1 = int(ys[j]), int(ys[j + 1])
    c0, c1 = int(xs[i]), int(xs[i + 1])
    bx, by, bz = [], [], []
    for kind, li, k, fixed in (
        ("h", j, i, r0),
        ("h", j + 1, i, r1),
        ("v", i, j, c0),
        ("v", i + 1, j, c1),
    ):
        p, z = prof[(kind, li, k)]
        p, z = p[1:-1], z[1:-1]
        if kind == "h":
            bx.append(p - c0)
            by.append(np.full(len(p), float(fixed - r0)))
        else:
            bx.append(np.full(len(p), float(fixed - c0)))
            by.append(p - r0)
        bz.append(z)
    return np.concatenate(bx), np.concatenate(by), np.concatenate(bz)


def tile_tin(own, corners, borders, max_error, cons=None):
    """Greedy TIN of one tile, verified against all its samples.

    ``own``: the tile's heights (NaN where invalid), its border rows and columns
    included; ``corners``: the four corner heights (:func:`tile_corners`);
    ``borders``: the border vertices (:func:`tile_borders`), the only vertices the
    tile gets on its border; ``cons``: ``(points (K, 3), segments (S, 2), linear
    flags, filled heights)`` of constraint segments in the tile's grid units, or None.
    Returns ``(px, py, pz, faces, keep, reached, uncovered)`` in the tile's grid
    units, ``keep`` the mask of triangles over a valid sample (None: all).
    Memory: the tile's copy (8 bytes per sample) and its refinement arrays (about
    100 bytes per triangle). Releases the GIL in the kernels.
    """
    sub = own.copy()
    sub[0, :] = np.nan
    sub[-1, :] = np.nan
    sub[:, 0] = np.nan
    sub[:, -1] = np.nan
    gx, gy, gz = borders
    if cons is not None:
        cp, tseg, tlin, tfill = cons
        gx = np.concatenate([gx, cp[:, 0]])
        gy = np.concatenate([gy, cp[:, 1]])
        gz = np.concatenate([gz, cp[:, 2]])
        tseg = tseg + (len(gx) - len(cp))
        px, py, pz, tri, _, _, failed = _kernels.greedy_refine_forced(
            sub, corners, max_error, gx, gy, gz, tseg.astype(np.int64), tlin, tfill
        )
        if failed:
            raise RuntimeError(f"{failed} constraint items of a tile could not be forced")
    else:  # every vertex a grid sample: the int32-coordinate kernel
        px, py, pz, tri, _ = _kernels.greedy_refine(sub, corners, max_error, gx, gy, gz)
    tri = tri.reshape(-1, 3)
    # verify the tile against all its samples (its borders included): a triangle
    # lies in one tile, so this is the verification of the merged TIN, per tile
    if cons is not None:
        err, tri_err = _kernels.tin_sample_errors(px, py, pz, tri.astype(np.int64), own)
        uncovered = int(np.isinf(err).sum())
    else:
        tri_err, uncovered = _kernels.tin_max_error_int_serial(
            px.astype(np.int64), py.astype(np.int64), pz, tri, own
        )
    keep = tri_err >= 0.0
    if keep.all():
        keep = None
    reached = float(tri_err.max()) if len(tri_err) else -1.0
    return px, py, pz, tri, keep, reached, uncovered
