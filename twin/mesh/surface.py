"""Surface reconstruction from point clouds: :func:`reconstruct`.

Two methods, both returning a triangle mesh in a local ENU frame (metres), cropped to
the survey area, with its holes reported:

``"poisson"``
    Screened Poisson reconstruction (Open3D) of the points with normals (estimated
    from the ``k`` nearest neighbours and turned to face up, the sensor side of an
    airborne survey, when the cloud has none). Poisson closes every surface, so the
    parts it invents far from the data (low *density*: few samples supported them)
    are trimmed: vertices whose density is below the ``trim`` quantile go, and so do
    faces farther than ``max_distance`` from every input point. Non-manifold edges
    and degenerate faces are removed. Works on any cloud (oblique photogrammetry
    sees walls and overhangs).
``"dsm"``
    A 2.5D mesh of the digital surface model: the highest non-noise point of each
    ``resolution``-metre cell, small voids filled (front-by-front mean of the
    neighbours), voids larger than ``max_fill`` square metres left open as holes;
    the grid triangulated with the error-bounded greedy TIN of
    :func:`twin.terrain.tin.tin` (``max_error`` metres vertically; ``0`` keeps the
    regular grid). For nadir-only data (airborne LiDAR, nadir photos).

**Tiles.** With ``tile_size`` (metres), the area is cut into square tiles that are
reconstructed one by one. DSM tiles share their border rows and columns of cells;
every border sample is made a vertex on both sides, so neighbouring tiles meet at the
same vertices and the welded mesh has no cracks. Poisson tiles are reconstructed
with ``overlap`` metres of neighbouring points, each at the octree cell an untiled run
would use or finer, and clipped exactly at their square (:func:`clip_to_box`: triangles
crossing a side are split on it); the two rims on each shared side, which match
within about one octree cell, are then zipped (:func:`zip_seam`: each rim's vertices
are inserted into the other rim and the pairs welded), tiles first along each row,
then row to row. A rim loop only one side has (a small closed surface the other
tile did not reconstruct) is capped, and sliver loops where three or four tiles
meet are filled; what still stays open is reported as a hole and counted in
``info["stitch"]["open_seam_edges"]``.

**Holes** (:class:`Hole`: size and place): for Poisson, the connected chains of
boundary edges (used by one face) that do not touch the outline of the area; for the
DSM, the voids of the grid larger than ``max_fill`` (left open in the mesh).

**Memory.** DSM: the grid of the whole area (a few float64 arrays of its cells) plus
one tile's TIN: measured about 340 bytes per grid cell in all (78 MB for 480 x 480
cells). Poisson: Open3D's octree and output mesh of one tile plus that tile's points
and normals: measured about 3 kB per input point of a tile at depth 9-10 (560 MB for
215 k points); tiles bound it for large areas, the output mesh grows with the area
(stitching works on the joined mesh: a few arrays of its faces).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from twin.crs import LocalFrame
from twin.errors import InputError, ParameterError
from twin.progress import Progress, ensure

log = logging.getLogger(__name__)

METHODS = ("poisson", "dsm")
NOISE_CLASSES = (7, 18)


@dataclass
class Hole:
    """A hole in a reconstructed surface.

    Poisson: a connected chain of boundary edges: ``edges`` how many, ``perimeter``
    (m). DSM: a void of the grid (connected cells without a point, larger than
    ``max_fill``): ``area`` (m²), ``edges`` and ``perimeter`` 0. Both: ``centroid``
    (ENU x, y, z; z is NaN for a DSM void), ``extent`` (m, the diagonal of its x/y
    bounding box)."""

    edges: int
    perimeter: float
    centroid: tuple[float, float, float]
    extent: float
    area: float = float("nan")

    def to_dict(self) -> dict:
        def r(x):
            return None if not math.isfinite(x) else round(x, 3)

        return {
            "edges": self.edges,
            "perimeter": r(self.perimeter),
            "area": r(self.area),
            "centroid": [r(c) for c in self.centroid],
            "extent": r(self.extent),
        }


@dataclass
class Surface:
    """A reconstructed surface: ``vertices`` (N, 3) float64 in ``frame``'s ENU metres,
    ``faces`` (M, 3) uint32 (counter-clockwise seen from outside / above), the
    ``holes`` found and ``info`` (method, parameters, counts, timings)."""

    vertices: np.ndarray
    faces: np.ndarray
    frame: LocalFrame | None
    method: str
    holes: list[Hole] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def to_trimesh(self):
        import trimesh

        return trimesh.Trimesh(self.vertices, self.faces, process=False)


# ---------------------------------------------------------------------------- input
def local_points(points, frame: LocalFrame | None = None, crs=None):
    """``(xyz (N, 3) ENU float64, classes (N,) uint8 or None, frame, source)`` of
    ``points``: a LAS/LAZ path, a :class:`~twin.points.PointCloud` (in its CRS or
    already local), or an (N, 3) array taken as ENU metres already. Noise (classes 7
    and 18) is dropped. Raises :class:`InputError` when nothing is left."""
    from twin.points.cloud import PointCloud

    source = None
    if isinstance(points, (str, os.PathLike)):
        from twin.points.io import read

        source = str(points)
        points = read(points, crs=crs, fields=["classification"])
    if isinstance(points, PointCloud):
        source = source or points.source
        cls = points.fields.get("classification")
        xyz = points.xyz
        if cls is not None:
            keep = ~np.isin(cls, NOISE_CLASSES)
            xyz, cls = xyz[keep], cls[keep]
        if len(xyz) == 0:
            raise InputError("the point cloud is empty (no non-noise points)", path=source)
        if points.frame is not None:
            if frame is not None and frame != points.frame:
                xyz = frame.ecef_to_enu(points.frame.enu_to_ecef(xyz))
            else:
                frame = points.frame
        else:
            src = points.crs if points.crs is not None else crs
            if src is None:
                points.require_crs()  # raises CRSError with the reason
            if frame is None:
                mins, maxs = xyz.min(axis=0), xyz.max(axis=0)
                frame = LocalFrame.at(*((mins + maxs) / 2), crs=src)
            xyz = frame.from_crs(xyz, src)
        return np.ascontiguousarray(xyz, dtype=np.float64), cls, frame, source
    try:
        xyz = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"points cannot be read as an (N, 3) array: {exc}") from None
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise InputError(f"points must have shape (N, 3), got {xyz.shape}")
    xyz = xyz[np.isfinite(xyz).all(axis=1)]
    if len(xyz) == 0:
        raise InputError("the point cloud is empty")
    return np.ascontiguousarray(xyz), None, frame, source


def _area_polygon(area, xyz: np.ndarray):
    """The crop area as a shapely polygon in ENU x/y (default: the points' x/y box)."""
    from shapely.geometry import box
    from shapely.geometry.base import BaseGeometry

    if area is None:
        lo, hi = xyz[:, :2].min(axis=0), xyz[:, :2].max(axis=0)
        return box(lo[0], lo[1], hi[0], hi[1])
    if isinstance(area, BaseGeometry):
        if area.is_empty or area.area <= 0:
            raise ParameterError("the crop area is empty")
        return area
    a = np.asarray(area, dtype=np.float64).ravel()
    if a.shape != (4,) or not np.all(np.isfinite(a)) or a[2] <= a[0] or a[3] <= a[1]:
        raise ParameterError(f"area must be (xmin, ymin, xmax, ymax) with max > min, got {area!r}")
    return box(*a)


# ---------------------------------------------------------------------------- holes
def _edge_counts(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique undirected edges (E, 2) and how many faces use each."""
    f = np.asarray(faces, dtype=np.int64)
    if len(f) == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    e.sort(axis=1)
    n = int(f.max()) + 1
    keys, counts = np.unique(e[:, 0] * n + e[:, 1], return_counts=True)
    return np.column_stack([keys // n, keys % n]), counts


def boundary_edges(faces: np.ndarray) -> np.ndarray:
    """(B, 2) edges used by exactly one face (sorted vertex pairs)."""
    edges, counts = _edge_counts(faces)
    return edges[counts == 1]


def non_manifold_edges(faces: np.ndarray) -> np.ndarray:
    """(K, 2) edges used by more than two faces."""
    edges, counts = _edge_counts(faces)
    return edges[counts > 2]


def find_holes(vertices: np.ndarray, faces: np.ndarray, area=None, tol: float = 1e-3):
    """Holes of a surface: chains of boundary edges none of whose vertices lies on the
    outline of ``area`` (a shapely polygon in the vertices' x/y; ``None``: every chain
    is a hole). Memory grows with the number of faces."""
    import shapely
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    be = boundary_edges(faces)
    if len(be) == 0:
        return []
    v = np.asarray(vertices, dtype=np.float64)
    ids, inv = np.unique(be, return_inverse=True)
    inv = inv.reshape(-1, 2)
    n = len(ids)
    g = coo_matrix((np.ones(len(inv)), (inv[:, 0], inv[:, 1])), shape=(n, n))
    ncomp, comp = connected_components(g, directed=False)
    on_border = np.zeros(n, bool)
    if area is not None:
        on_border = shapely.distance(area.boundary, shapely.points(v[ids, :2])) <= tol
    edge_comp = comp[inv[:, 0]]
    lengths = np.linalg.norm(v[be[:, 0]] - v[be[:, 1]], axis=1)
    per = np.bincount(edge_comp, weights=lengths, minlength=ncomp)
    nedge = np.bincount(edge_comp, minlength=ncomp)
    touches = np.bincount(comp, weights=on_border, minlength=ncomp) > 0
    holes = []
    for c in np.flatnonzero(~touches):
        pts = v[ids[comp == c]]
        lo, hi = pts[:, :2].min(axis=0), pts[:, :2].max(axis=0)
        holes.append(
            Hole(
                edges=int(nedge[c]),
                perimeter=float(per[c]),
                centroid=tuple(float(x) for x in pts.mean(axis=0)),
                extent=float(np.hypot(*(hi - lo))),
            )
        )
    holes.sort(key=lambda h: -h.perimeter)
    return holes


# ---------------------------------------------------------------------------- DSM
def _tiles(n: int, size: int) -> list[tuple[int, int]]:
    """Inclusive index ranges of ``size`` cells covering 0..n-1, neighbours sharing
    their border index."""
    if n <= size + 1:
        return [(0, n - 1)]
    starts = list(range(0, n - 1, size))
    return [(s, min(s + size, n - 1)) for s in starts if s < n - 1]


def _inside_mask(area, x0, y0, resolution, shape) -> np.ndarray:
    import shapely

    gx = x0 + np.arange(shape[1]) * resolution
    gy = y0 + np.arange(shape[0]) * resolution
    return shapely.contains_xy(area.buffer(1e-9), *np.meshgrid(gx, gy))


def dsm_grid(xyz: np.ndarray, area, resolution: float, max_fill: float):
    """The DSM of ENU points on a ``resolution`` grid over ``area``'s bounds.

    Returns ``(heights (ny, nx) with NaN holes, x0, y0)``: row 0 is the south row,
    sample ``(r, c)`` sits at ``(x0 + c * resolution, y0 + r * resolution)``.
    Heights: the highest point of each cell; voids of at most ``max_fill`` square
    metres filled front by front with the mean of their filled neighbours; samples
    outside ``area`` NaN. Memory: a few float64 arrays of the grid's size."""
    from scipy import ndimage

    from twin.points import _kernels as PK

    x0, y0, x1, y1 = area.bounds
    nx = int(math.floor((x1 - x0) / resolution)) + 1
    ny = int(math.floor((y1 - y0) / resolution)) + 1
    if nx < 2 or ny < 2:
        raise ParameterError(f"the area is smaller than two cells of {resolution} m")
    if nx * ny > 400_000_000:
        raise ParameterError(f"a {nx} x {ny} DSM grid is too large; use a coarser resolution")
    ix = np.rint((xyz[:, 0] - x0) / resolution).astype(np.int64)
    iy = np.rint((xyz[:, 1] - y0) / resolution).astype(np.int64)
    ok = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    top = np.full((ny, nx), -np.inf)
    PK.grid_max_into(ix[ok], iy[ok], np.ascontiguousarray(xyz[ok, 2]), top)
    h = np.where(np.isfinite(top), top, np.nan)
    if not np.isfinite(h).any():
        raise InputError("no point lies inside the area")
    inside = _inside_mask(area, x0, y0, resolution, (ny, nx))
    void = ~np.isfinite(h) & inside
    if void.any():
        lab, nlab = ndimage.label(void)
        size = np.bincount(lab.ravel(), minlength=nlab + 1) * resolution**2
        big = size > max_fill
        big[0] = False
        keep_open = big[lab]
        filled = PK.inpaint(np.where(inside, h, np.nan))
        h = np.where(void & ~keep_open, filled, h)
    h[~inside] = np.nan
    return h, x0, y0


def _force_border_rect(cols, rows, faces, r0, r1, c0, c1):
    """Make every grid sample on the tile border (rows r0/r1, columns c0/c1) a vertex:
    border edges spanning several samples are split and their triangle fanned from
    the opposite vertex. Works on global (col, row) integer vertex positions."""
    key_of = {}
    cl, rl = list(map(int, cols)), list(map(int, rows))
    for i, (c, r) in enumerate(zip(cl, rl, strict=True)):
        key_of[(c, r)] = i

    def vid(c, r):
        i = key_of.get((c, r))
        if i is None:
            i = len(cl)
            key_of[(c, r)] = i
            cl.append(c)
            rl.append(r)
        return i

    def between(a, b):
        ca, ra, cb, rb = cl[a], rl[a], cl[b], rl[b]
        if ca == cb and ca in (c0, c1) and abs(rb - ra) > 1:
            s = 1 if rb > ra else -1
            return [vid(ca, r) for r in range(ra + s, rb, s)]
        if ra == rb and ra in (r0, r1) and abs(cb - ca) > 1:
            s = 1 if cb > ca else -1
            return [vid(c, ra) for c in range(ca + s, cb, s)]
        return []

    f = np.asarray(faces, dtype=np.int64)
    cols = np.asarray(cols)
    rows = np.asarray(rows)
    border = (cols == c0) | (cols == c1) | (rows == r0) | (rows == r1)
    touch = border[f].sum(axis=1) >= 2
    out = [f[~touch]]
    work = [tuple(int(i) for i in t) for t in f[touch]]
    done = []
    while work:
        tri = work.pop()
        for k in range(3):
            a, b, c = tri[k], tri[(k + 1) % 3], tri[(k + 2) % 3]
            mid = between(a, b)
            if mid:
                chain = [a, *mid, b]
                work.extend((chain[i], chain[i + 1], c) for i in range(len(chain) - 1))
                break
        else:
            done.append(tri)
    if done:
        out.append(np.asarray(done, dtype=np.int64))
    return np.asarray(cl), np.asarray(rl), np.concatenate(out)


def _grid_faces(valid: np.ndarray) -> np.ndarray:
    """Two CCW triangles per cell whose four corners are valid; vertex id = r*nx + c
    (row 0 south)."""
    ny, nx = valid.shape
    vid = np.arange(ny * nx).reshape(ny, nx)
    sw, se = vid[:-1, :-1].ravel(), vid[:-1, 1:].ravel()
    nw, ne = vid[1:, :-1].ravel(), vid[1:, 1:].ravel()
    v = valid.ravel()
    ok = v[sw] & v[se] & v[nw] & v[ne]
    sw, se, nw, ne = sw[ok], se[ok], nw[ok], ne[ok]
    return np.concatenate([np.column_stack([sw, se, ne]), np.column_stack([sw, ne, nw])])


def _dsm_tile(h: np.ndarray, filled: np.ndarray, r0, r1, c0, c1, max_error: float):
    """Mesh of the samples rows r0..r1, cols c0..c1: (cols, rows, faces) in global grid
    indices, every border sample a vertex. ``h`` has NaN in holes, ``filled`` has them
    interpolated (NaN only outside the area). Regular grid (``max_error`` 0): cells
    with a hole corner are left out. TIN: triangulated on ``filled``; a triangle whose
    centroid is nearest a hole sample, or with a vertex outside the area, is left out."""
    sub = h[r0 : r1 + 1, c0 : c1 + 1]
    valid = np.isfinite(sub)
    if valid.sum() < 3:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3), np.int64)
    if max_error <= 0:
        faces = _grid_faces(valid)
        ny, nx = sub.shape
        rr, cc = np.divmod(np.arange(ny * nx), nx)
        return cc + c0, rr + r0, faces
    from twin.terrain.tin import tin

    verts, faces, _ = tin(filled[r0 : r1 + 1, c0 : c1 + 1], max_error)
    cols = np.rint(verts[:, 0]).astype(np.int64) + c0
    rows = np.rint(verts[:, 1]).astype(np.int64) + r0
    cols, rows, faces = _force_border_rect(cols, rows, faces, r0, r1, c0, c1)
    if not valid.all():
        fc = cols[faces].mean(axis=1)
        fr = rows[faces].mean(axis=1)
        bad = ~np.isfinite(h[np.rint(fr).astype(np.int64), np.rint(fc).astype(np.int64)])
        bad |= ~np.isfinite(filled[rows[faces], cols[faces]]).all(axis=1)
        faces = faces[~bad]
    return cols, rows, faces


def _grid_holes(h, area, x0, y0, resolution) -> list[Hole]:
    """Voids of the DSM inside the area as :class:`Hole` s (largest first)."""
    from scipy import ndimage

    void = ~np.isfinite(h) & _inside_mask(area, x0, y0, resolution, h.shape)
    lab, n = ndimage.label(void)
    out = []
    for k, sl in enumerate(ndimage.find_objects(lab), start=1):
        rr, cc = np.nonzero(lab[sl] == k)
        rr, cc = rr + sl[0].start, cc + sl[1].start
        x, y = x0 + cc * resolution, y0 + rr * resolution
        out.append(
            Hole(
                edges=0,
                perimeter=0.0,
                centroid=(float(x.mean()), float(y.mean()), float("nan")),
                extent=float(np.hypot(np.ptp(x) + resolution, np.ptp(y) + resolution)),
                area=float(len(rr) * resolution**2),
            )
        )
    out.sort(key=lambda hole: -hole.area)
    return out


def _dsm_mesh(xyz, area, resolution, max_error, max_fill, tile_size, progress):
    from twin.points import _kernels as PK

    h, x0, y0 = dsm_grid(xyz, area, resolution, max_fill)
    ny, nx = h.shape
    filled = h
    if max_error > 0 and not np.isfinite(h).all():
        inside = _inside_mask(area, x0, y0, resolution, h.shape)
        filled = np.where(inside, PK.inpaint(np.where(inside, h, np.nan)), np.nan)
    cells = nx * ny if not tile_size else max(int(round(tile_size / resolution)), 2)
    row_t = _tiles(ny, cells) if tile_size else [(0, ny - 1)]
    col_t = _tiles(nx, cells) if tile_size else [(0, nx - 1)]
    parts = []
    with progress.step("surface: DSM tiles", total=len(row_t) * len(col_t)) as advance:
        for r0, r1 in row_t:
            for c0, c1 in col_t:
                cols, rows, faces = _dsm_tile(h, filled, r0, r1, c0, c1, max_error)
                if len(faces):
                    key = rows * nx + cols
                    parts.append(key[faces])
                advance(1)
    if not parts:
        raise InputError("the DSM has no cell with four valid corners: nothing to mesh")
    gfaces = np.concatenate(parts)
    keys, inv = np.unique(gfaces, return_inverse=True)
    rows, cols = np.divmod(keys, nx)
    verts = np.column_stack([x0 + cols * resolution, y0 + rows * resolution, filled[rows, cols]])
    faces = inv.reshape(-1, 3)
    holes = _grid_holes(h, area, x0, y0, resolution)
    info = {
        "holes": holes,
        "resolution": resolution,
        "grid": [int(ny), int(nx)],
        "tiles": len(row_t) * len(col_t),
        "max_error": max_error,
        "open_cells": int(np.count_nonzero(~np.isfinite(h))),
    }
    return verts, faces, info


# ---------------------------------------------------------------------------- stitching
def clip_to_box(vertices, faces, box, eps: float = 1e-6):
    """The part of a mesh inside the vertical prism over ``box`` (xmin, ymin, xmax, ymax):
    triangles crossing a side are split exactly at it (each cut edge gets one new
    vertex, shared by the triangles on both of its sides), vertices within ``eps`` of a
    side are moved onto it. Returns compacted ``(vertices, faces)``; the cut rim lies
    exactly on the box sides. Memory grows with the mesh."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    x0, y0, x1, y1 = box
    for axis, c, sign in ((0, x0, -1.0), (0, x1, 1.0), (1, y0, -1.0), (1, y1, 1.0)):
        v, f = _clip_halfspace(v, f, axis, c, sign, eps)
        if len(f) == 0:
            break
    return _compact(v, f)


def _compact(v, f):
    used = np.zeros(len(v), bool)
    used[f.ravel()] = True
    remap = np.cumsum(used) - 1
    return v[used], remap[f]


def _clip_halfspace(v, f, axis, c, sign, eps):
    """Keep ``sign * (coord[axis] - c) <= 0``; split the triangles that cross."""
    d = sign * (v[:, axis] - c)
    near = np.abs(d) <= eps
    if near.any():
        v = v.copy()
        v[near, axis] = c
        d[near] = 0.0
    sd = np.sign(d)[f]
    keep = (sd <= 0).all(axis=1)
    cross = (sd > 0).any(axis=1) & (sd < 0).any(axis=1)
    if not cross.any():
        return v, f[keep]
    new_pos: list[np.ndarray] = []
    cut: dict[tuple[int, int], int] = {}
    n0 = len(v)

    def cut_vertex(a: int, b: int) -> int:
        key = (a, b) if a < b else (b, a)
        i = cut.get(key)
        if i is None:
            t = d[a] / (d[a] - d[b])
            p = v[a] + t * (v[b] - v[a])
            p[axis] = c
            i = n0 + len(new_pos)
            new_pos.append(p)
            cut[key] = i
        return i

    tris = []
    for tri in f[cross].tolist():
        poly = []
        for k in range(3):
            a, b = tri[k], tri[(k + 1) % 3]
            if d[a] <= 0:
                poly.append(a)
            if d[a] * d[b] < 0:
                poly.append(cut_vertex(a, b))
        for k in range(1, len(poly) - 1):
            tris.append((poly[0], poly[k], poly[k + 1]))
    v = np.vstack([v, np.asarray(new_pos)]) if new_pos else v
    f = np.concatenate([f[keep], np.asarray(tris, dtype=np.int64).reshape(-1, 3)])
    return v, f


class _Union:
    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        p = self.parent
        root = i
        while p[root] != root:
            root = p[root]
        while p[i] != root:
            p[i], i = root, p[i]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _seam_half_edges(v, f, axis, c):
    """Boundary half-edges lying on the plane ``coord[axis] == c``: (a, b) in their
    face's winding, the face, the opposite corner and the side (-1/+1) of the face."""
    on = v[:, axis] == c
    cand = np.flatnonzero(on[f].sum(axis=1) >= 2)  # only these can use an edge on the plane
    if len(cand) == 0:
        return None
    fc = f[cand]
    he = fc[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    opp = fc[:, [2, 0, 1]].ravel()
    face = np.repeat(cand, 3)
    lo, hi = np.minimum(he[:, 0], he[:, 1]), np.maximum(he[:, 0], he[:, 1])
    key = lo * len(v) + hi
    _, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
    sel = (cnt[inv] == 1) & on[he[:, 0]] & on[he[:, 1]]
    side = np.sign(v[f[face[sel]]].mean(axis=1)[:, axis] - c)
    ok = side != 0
    idx = np.flatnonzero(sel)[ok]
    return he[idx], face[idx], opp[idx], side[ok].astype(np.int64)


def zip_seam(vertices, faces, axis: int, c: float, tol: float, snap: float | None = None):
    """Close the crack between the two parts of a mesh that meet at the vertical plane
    ``coord[axis] == c`` (each clipped exactly at it, see :func:`clip_to_box`).

    The open rims on the plane (boundary edges with both ends on it) of the two sides
    are zipped: every rim vertex of one side within ``tol`` (in the plane) of the
    other side's rim is inserted into that rim (the edge is split and its triangle
    fanned) or matched to a rim vertex there when within ``snap``; matched pairs are
    welded at their mean position. Both rims then run through the same vertices, so
    the edges are shared. Rim parts with no counterpart (a hole on one side) stay
    open. Returns ``(vertices, faces, stats)``. Memory grows with the mesh."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    snap = tol * 0.05 if snap is None else snap
    got = _seam_half_edges(v, f, axis, c)
    stats = {"rim_edges": 0, "welded": 0}
    if got is None:
        return v, f, stats
    he, face, opp, side = got
    stats["rim_edges"] = int(len(he))
    if not ((side < 0).any() and (side > 0).any()):
        return v, f, stats
    from scipy.spatial import cKDTree

    other = 1 - axis
    p2 = np.column_stack([v[:, other], v[:, 2]])
    splits: dict[int, list[tuple[float, int]]] = {}  # half-edge row -> [(t, new vertex)]
    new_pos: list[np.ndarray] = []
    pairs: list[tuple[int, int]] = []
    n0 = len(v)
    for s_from, s_to in ((1, -1), (-1, 1)):
        rows = np.flatnonzero(side == s_to)
        segs = he[rows]
        a2, b2 = p2[segs[:, 0]], p2[segs[:, 1]]
        tree = cKDTree(0.5 * (a2 + b2))
        pts = np.unique(he[side == s_from].ravel())
        k = min(8, len(rows))
        _, cand = tree.query(p2[pts], k=k)
        cand = cand.reshape(len(pts), k)
        ab = b2[cand] - a2[cand]  # (P, k, 2)
        ap = p2[pts][:, None, :] - a2[cand]
        L2 = np.maximum(np.einsum("pkc,pkc->pk", ab, ab), 1e-300)
        t = np.clip(np.einsum("pkc,pkc->pk", ap, ab) / L2, 0.0, 1.0)
        dist = np.linalg.norm(ap - t[..., None] * ab, axis=2)
        best = np.argmin(dist, axis=1)
        r = np.arange(len(pts))
        bd, bt, brow = dist[r, best], t[r, best], rows[cand[r, best]]
        L = np.sqrt(L2[r, best])
        for p, dd, tt, row, ln in zip(pts.tolist(), bd, bt, brow.tolist(), L, strict=True):
            if dd > tol:
                continue
            a, b = int(he[row, 0]), int(he[row, 1])
            if tt * ln <= snap:
                pairs.append((p, a))
            elif (1.0 - tt) * ln <= snap:
                pairs.append((p, b))
            else:
                i = n0 + len(new_pos)
                new_pos.append(v[a] + tt * (v[b] - v[a]))
                splits.setdefault(row, []).append((float(tt), i))
                pairs.append((p, i))
    if not pairs:
        return v, f, stats
    if new_pos:
        v = np.vstack([v, np.asarray(new_pos)])
    # fan the triangles of split rim edges
    drop = []
    tris = []
    for row, pts_t in splits.items():
        a, b, o = int(he[row, 0]), int(he[row, 1]), int(opp[row])
        chain = [a, *(i for _, i in sorted(pts_t)), b]
        drop.append(int(face[row]))
        tris.extend((chain[j], chain[j + 1], o) for j in range(len(chain) - 1))
    if drop:
        keep = np.ones(len(f), bool)
        keep[drop] = False
        f = np.concatenate([f[keep], np.asarray(tris, dtype=np.int64).reshape(-1, 3)])
    # weld matched pairs at their mean
    uf = _Union(len(v))
    for p, q in pairs:
        uf.union(p, q)
    members = np.unique(np.asarray(pairs).ravel())
    roots = np.array([uf.find(int(i)) for i in members])
    sums = np.zeros((len(v), 3))
    cnt = np.zeros(len(v))
    np.add.at(sums, roots, v[members])
    np.add.at(cnt, roots, 1.0)
    has = cnt > 0
    v = v.copy()
    v[has] = sums[has] / cnt[has, None]
    v[has, axis] = c
    root_of = np.arange(len(v))
    root_of[members] = roots
    f = root_of[f]
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    # the same triangle twice (both windings): a collapsed sliver pair, both go
    touched = np.zeros(len(v), bool)
    touched[members] = True
    near = np.flatnonzero(touched[f].any(axis=1))
    key = np.sort(f[near], axis=1)
    _, inv, cnt_f = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    if (cnt_f > 1).any():
        keep = np.ones(len(f), bool)
        keep[near[cnt_f[inv.ravel()] > 1]] = False
        f = f[keep]
    stats["welded"] = int(len(pairs))
    v, f = _compact(v, f)
    return v, f, stats


# ---------------------------------------------------------------------------- Poisson
def _poisson_piece(xyz, normals, depth, trim, scale, threads):
    import open3d as o3d

    centre = xyz.mean(axis=0)
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz - centre))
    pc.normals = o3d.utility.Vector3dVector(normals)
    with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
        mesh, dens = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(
            pc, depth=depth, scale=scale, linear_fit=True, n_threads=threads
        )
    dens = np.asarray(dens)
    if trim > 0 and len(dens):
        mesh.remove_vertices_by_mask(dens < np.quantile(dens, trim))
    f = np.asarray(mesh.triangles, dtype=np.int64)
    if len(f) and len(non_manifold_edges(f)):  # rare: Open3D's cleanup is slow on big meshes
        mesh.remove_degenerate_triangles()
        mesh.remove_duplicated_triangles()
        mesh.remove_non_manifold_edges()
        f = np.asarray(mesh.triangles, dtype=np.int64)
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    v = np.asarray(mesh.vertices)
    used = np.zeros(len(v), bool)
    used[f.ravel()] = True
    remap = np.cumsum(used) - 1
    return v[used] + centre, remap[f]


def estimate_normals(xyz: np.ndarray, k: int = 16, wall_radius: float = 3.0) -> np.ndarray:
    """Unit normals of ENU points from their ``k`` nearest neighbours (Open3D), turned
    to point up (+z), and steep ones (walls) away from the higher points within
    ``wall_radius`` metres (the roof they hang from). Memory: the points plus a
    KD-tree of them."""
    import open3d as o3d

    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz - xyz.mean(axis=0)))
    pc.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(int(k)))
    n = np.asarray(pc.normals).copy()
    n[n[:, 2] < 0] *= -1.0
    # steep normals (walls): outward is away from the roof above them, i.e. from the
    # x/y centre of the neighbours more than 1 m higher within ``wall_radius``
    steep = np.flatnonzero(np.abs(n[:, 2]) < 0.5)
    if len(steep):
        from scipy.spatial import cKDTree

        tree = cKDTree(xyz[:, :2])
        _, nb = tree.query(xyz[steep, :2], k=48, distance_upper_bound=wall_radius)
        ok = nb < len(xyz)
        nbc = np.where(ok, nb, 0)
        high = ok & (xyz[nbc, 2] > xyz[steep, 2][:, None] + 1.0)
        cnt = high.sum(axis=1)
        has = cnt > 0
        cx = (xyz[nbc, 0] * high).sum(axis=1) / np.maximum(cnt, 1)
        cy = (xyz[nbc, 1] * high).sum(axis=1) / np.maximum(cnt, 1)
        dot = n[steep, 0] * (xyz[steep, 0] - cx) + n[steep, 1] * (xyz[steep, 1] - cy)
        n[steep[has & (dot < 0)]] *= -1.0
    return n


def _poisson_mesh(xyz, normals, area, depth, resolution, trim, max_distance, tile_size, overlap,
                  k, progress):  # fmt: skip
    import shapely
    from scipy.spatial import cKDTree

    if normals is None:
        with progress.step("surface: normals"):
            normals = estimate_normals(xyz, k)
    x0, y0, x1, y1 = area.bounds
    if tile_size:
        xs = np.arange(x0, x1, tile_size)
        ys = np.arange(y0, y1, tile_size)
        boxes = [(a, b, min(a + tile_size, x1), min(b + tile_size, y1)) for b in ys for a in xs]
    else:
        xs, ys = np.array([x0]), np.array([y0])
        boxes = [(x0, y0, x1, y1)]
    tree = cKDTree(xyz) if max_distance else None
    import numba

    threads = max(1, numba.get_num_threads())
    # octree cell: ``resolution`` or finer, from the extent of all the points
    ext_all = max(float(np.max(xyz.max(axis=0) - xyz.min(axis=0))), 1e-6)
    d_all = int(np.clip(math.ceil(math.log2(max(ext_all * 1.1 / resolution, 2))), 5, 11))
    cell = ext_all * 1.1 / 2**d_all
    pieces: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    used_depths, cells = [], []
    nxt = len(xs) if tile_size else 1
    with progress.step("surface: Poisson", total=len(boxes)) as advance:
        for n, (bx0, by0, bx1, by1) in enumerate(boxes):
            pad = overlap
            sel = (
                (xyz[:, 0] >= bx0 - pad)
                & (xyz[:, 0] <= bx1 + pad)
                & (xyz[:, 1] >= by0 - pad)
                & (xyz[:, 1] <= by1 + pad)
            )
            if sel.sum() < 20:
                advance(1)
                continue
            p = xyz[sel]
            ext = max(float(np.max(p.max(axis=0) - p.min(axis=0))), 1e-6)
            if depth:
                d, scale = depth, 1.1
            else:
                # every tile works at the untiled run's cell or finer; the cube stays
                # at 1.1 x the points' box (a larger one lets Poisson close surfaces
                # far from the data inside it)
                d = int(np.clip(math.ceil(math.log2(max(ext * 1.1 / cell, 2))), 5, 11))
                scale = 1.1
            used_depths.append(d)
            cells.append(ext * scale / 2**d)
            v, f = _poisson_piece(p, normals[sel], d, trim, scale, threads)
            if len(f):
                # cut exactly at the tile's sides: neighbours meet on the same planes
                v, f = clip_to_box(v, f, (bx0, by0, bx1, by1))
            if len(f):
                cen = v[f].mean(axis=1)
                inside = shapely.contains_xy(area.buffer(1e-9), cen[:, 0], cen[:, 1])
                if max_distance:
                    dist, _ = tree.query(cen[inside], distance_upper_bound=max_distance)
                    inside[np.flatnonzero(inside)[~np.isfinite(dist)]] = False
                v, f = _compact(v, f[inside])
            if len(f):
                pieces[divmod(n, nxt)] = (v, f)
            advance(1)
    if not pieces:
        raise InputError("Poisson reconstruction produced no surface inside the area")
    seam = {"seams": 0, "rim_edges": 0, "welded": 0, "open_seam_edges": 0}
    tol = 2.0 * max(cells)
    with progress.step("surface: stitch tiles"):
        rows = []
        for j in sorted({k[0] for k in pieces}):
            acc = None
            for i in range(nxt):
                if (j, i) not in pieces:
                    continue
                if acc is None:
                    acc = pieces[(j, i)]
                    continue
                acc = _zip_parts(acc, pieces[(j, i)], 0, float(xs[i]), tol, seam)
            rows.append((j, acc))
        v, f = rows[0][1]
        for j, part in rows[1:]:
            v, f = _zip_parts((v, f), part, 1, float(ys[j]), tol, seam)
        if len(pieces) > 1:
            # where three or four tiles meet, a sliver loop can be left: closed
            lines = [(0, float(x)) for x in xs[1:]] + [(1, float(y)) for y in ys[1:]]
            v, f, seam["filled_slivers"] = _fill_seam_slivers(v, f, lines, tol)
            # a weld that crossed the rims' order can leave a fin (an edge with three
            # faces): its faces next to the seam go and the loop left is filled
            for _ in range(3):
                nm = non_manifold_edges(f)
                if len(nm) == 0:
                    break
                near = np.zeros(len(v), bool)
                for axis, c in lines:
                    near |= np.abs(v[:, axis] - c) <= tol
                bad = np.zeros(len(v), bool)
                bad[nm[near[nm].all(axis=1)].ravel()] = True
                drop = bad[f].sum(axis=1) >= 2
                if not drop.any():
                    break
                v, f = _compact(v, f[~drop])
                v, f, k = _fill_seam_slivers(v, f, lines, tol)
                seam["filled_slivers"] += k
                seam["fins_removed"] = seam.get("fins_removed", 0) + int(drop.sum())
            be = boundary_edges(f)
            on = np.zeros(len(be), bool)
            for axis, c in lines:
                on |= (v[be, axis] == c).all(axis=1)
            seam["open_seam_edges"] = int(on.sum())
    info = {
        "depth": sorted(set(used_depths)),
        "trim_quantile": trim,
        "max_distance": max_distance,
        "tiles": len(boxes),
    }
    if tile_size:
        info["stitch"] = seam
    return v, f, info


def _zip_parts(a, b, axis, c, tol, stats):
    """Two meshes joined and zipped along the plane ``coord[axis] == c``."""
    v = np.vstack([a[0], b[0]])
    f = np.concatenate([a[1], b[1] + len(a[0])])
    v, f, st = zip_seam(v, f, axis, c, tol)
    v, f, capped = cap_rim_loops(v, f, axis, c)
    left = _seam_half_edges(v, f, axis, c)
    stats["seams"] += 1
    stats["rim_edges"] += st["rim_edges"]
    stats["welded"] += st["welded"]
    stats["capped_loops"] = stats.get("capped_loops", 0) + capped
    stats["open_seam_edges"] += 0 if left is None else int(len(left[0]))
    return v, f


def _boundary_cycles(he: np.ndarray) -> list[list[int]]:
    """Closed cycles of directed boundary half-edges (each used once; at a pinch
    vertex any unused outgoing edge continues the walk). Open chains are left out."""
    out_of: dict[int, list[int]] = {}
    for a, b in he.tolist():
        out_of.setdefault(a, []).append(b)
    cycles = []
    for start in list(out_of):
        while out_of.get(start):
            loop = [start]
            cur = out_of[start].pop()
            while cur != start and out_of.get(cur):
                loop.append(cur)
                cur = out_of[cur].pop()
            if cur == start and len(loop) >= 3:
                cycles.append(loop)
    return cycles


def _fan(v, loops):
    """Triangles closing each loop (wound against it) and the centre vertices added."""
    new_pos, tris = [], []
    for loop in loops:
        if len(loop) == 3:
            tris.append((loop[2], loop[1], loop[0]))
            continue
        centre = len(v) + len(new_pos)
        new_pos.append(v[loop].mean(axis=0))
        tris.extend((loop[(i + 1) % len(loop)], loop[i], centre) for i in range(len(loop)))
    return np.asarray(new_pos).reshape(-1, 3), np.asarray(tris, dtype=np.int64).reshape(-1, 3)


def _fill_seam_slivers(v, f, lines, tol):
    """Fan-fill closed boundary loops shorter than ``8 * tol`` whose vertices all lie
    within ``tol`` of a seam line (``(axis, c)`` pairs). Returns ``(v, f, filled)``."""
    be = f[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    lo, hi = np.minimum(be[:, 0], be[:, 1]), np.maximum(be[:, 0], be[:, 1])
    _, inv, cnt = np.unique(lo * len(v) + hi, return_inverse=True, return_counts=True)
    he = be[cnt[inv] == 1]
    near = np.zeros(len(v), bool)
    for axis, c in lines:
        near |= np.abs(v[:, axis] - c) <= tol
    he = he[near[he[:, 0]] & near[he[:, 1]]]
    if len(he) == 0:
        return v, f, 0
    loops = []
    for loop in _boundary_cycles(he):
        pts = v[loop]
        if np.linalg.norm(pts - np.roll(pts, -1, axis=0), axis=1).sum() <= 8 * tol:
            loops.append(loop)
    if not loops:
        return v, f, 0
    new_pos, tris = _fan(v, loops)
    return np.vstack([v, new_pos]), np.concatenate([f, tris]), len(loops)


def cap_rim_loops(vertices, faces, axis: int, c: float):
    """Close the rim loops left open on the plane ``coord[axis] == c`` (a small closed
    surface, e.g. a tree crown, that one side's reconstruction has and the other's
    lacks): each closed chain of rim edges gets a fan from its centre, wound against
    the rim so the orientation is kept. Open chains stay open. Returns
    ``(vertices, faces, loops capped)``."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    got = _seam_half_edges(v, f, axis, c)
    if got is None or len(got[0]) == 0:
        return v, f, 0
    loops = _boundary_cycles(got[0])
    if not loops:
        return v, f, 0
    new_pos, tris = _fan(v, loops)
    v = np.vstack([v, new_pos])
    v[len(v) - len(new_pos) :, axis] = c
    return v, np.concatenate([f, tris]), len(loops)


# ---------------------------------------------------------------------------- public
def reconstruct(
    points,
    method: str = "poisson",
    *,
    frame: LocalFrame | None = None,
    crs=None,
    area=None,
    resolution: float = 0.5,
    normals: np.ndarray | None = None,
    depth: int | None = None,
    trim: float = 0.005,
    max_distance: float | None = None,
    max_error: float = 0.1,
    max_fill: float = 100.0,
    tile_size: float | None = None,
    overlap: float = 10.0,
    k: int = 16,
    progress: Progress | None = None,
) -> Surface:
    """Reconstruct a surface mesh from ``points`` (see the module docstring).

    ``points``: a LAS/LAZ path, a :class:`~twin.points.PointCloud`, or (N, 3) ENU
    metres. ``frame``: the local frame of the output (default: the cloud's own, else
    one anchored at the centre of its bounds). ``crs``: the CRS of a file or cloud
    that has none. ``area``: the survey area to crop to, in ENU x/y, as
    ``(xmin, ymin, xmax, ymax)`` or a shapely polygon (default: the points' box).
    ``resolution``: DSM cell size, and the target Poisson octree cell (m) from which
    ``depth`` is chosen when not given. ``normals``: (N, 3) per point (else
    estimated). Poisson: ``trim`` (density quantile removed), ``max_distance`` (m;
    ``None`` keeps faces however far from the points). DSM: ``max_error`` (m, TIN
    bound; 0 = regular grid), ``max_fill`` (m², largest void interpolated).
    ``tile_size``/``overlap``: tiling in metres. Peak memory: see the module doc.

    Raises :class:`InputError` for an empty cloud or one with no point in the area,
    :class:`ParameterError` for bad parameters.
    """
    import time

    if method not in METHODS:
        raise ParameterError(f"unknown method {method!r} (use {' or '.join(METHODS)})")
    for name, v, lo in (
        ("resolution", resolution, 0.0),
        ("overlap", overlap, -1e-12),
        ("max_fill", max_fill, -1e-12),
        ("max_error", max_error, -1e-12),
    ):
        if not (isinstance(v, (int, float, np.floating)) and math.isfinite(v) and v > lo):
            raise ParameterError(f"{name} must be a {'positive' if lo == 0 else 'non-negative'} "
                                 f"number, got {v!r}")  # fmt: skip
    if not 0 <= trim < 1:
        raise ParameterError(f"trim must be a quantile in [0, 1), got {trim!r}")
    if tile_size is not None and not (tile_size > 2 * resolution):
        raise ParameterError(f"tile_size must exceed two cells, got {tile_size!r}")
    if depth is not None and not (isinstance(depth, int) and 4 <= depth <= 12):
        raise ParameterError(f"depth must be an integer in [4, 12], got {depth!r}")
    progress = ensure(progress)
    t0 = time.perf_counter()
    with progress.step("surface: read points"):
        xyz, _, frame, source = local_points(points, frame, crs)
    poly = _area_polygon(area, xyz)
    x0, y0, x1, y1 = poly.bounds
    m = overlap + resolution
    near = (
        (xyz[:, 0] >= x0 - m)
        & (xyz[:, 0] <= x1 + m)
        & (xyz[:, 1] >= y0 - m)
        & (xyz[:, 1] <= y1 + m)
    )
    if not near.any():
        raise InputError("no point lies inside the area", path=source)
    if normals is not None:
        normals = np.asarray(normals, dtype=np.float64)
        if normals.shape != xyz.shape:
            raise InputError(f"normals have shape {normals.shape}, the points {xyz.shape}")
        normals = normals[near]
    xyz = xyz[near]
    try:
        if method == "dsm":
            v, f, info = _dsm_mesh(xyz, poly, resolution, max_error, max_fill, tile_size, progress)
        else:
            v, f, info = _poisson_mesh(
                xyz, normals, poly, depth, resolution, trim, max_distance, tile_size, overlap, k,
                progress,
            )  # fmt: skip
    except InputError as exc:
        raise InputError(exc.reason, path=source) from None
    if method == "dsm":
        holes = info.pop("holes")
    else:
        holes = find_holes(v, f, poly, tol=max(resolution, 1e-3) * 1.01)
    info.update(
        method=method,
        points=int(len(xyz)),
        vertices=int(len(v)),
        faces=int(len(f)),
        holes=len(holes),
        non_manifold_edges=int(len(non_manifold_edges(f))),
        seconds=round(time.perf_counter() - t0, 3),
        area=[round(b, 3) for b in poly.bounds],
    )
    if source:
        info["source"] = str(source)
    return Surface(
        vertices=np.ascontiguousarray(v, dtype=np.float64),
        faces=np.ascontiguousarray(f, dtype=np.uint32),
        frame=frame,
        method=method,
        holes=holes,
        info=info,
    )


def write_surface(surface: Surface, path: str | os.PathLike) -> dict:
    """Write a surface as PLY (``.ply``) or GLB (``.glb``, float32 positions relative to
    their centre) and a ``<path>.json`` sidecar beside it (frame, holes, info); both
    atomically. Returns the sidecar dict."""
    from twin.errors import OutputError
    from twin.fileio import write_json, write_ply

    path = Path(path)
    ext = path.suffix.lower()
    if ext not in (".ply", ".glb"):
        raise OutputError("the surface file must end in .ply or .glb", path=path)
    meta = {
        "frame": surface.frame.to_dict() if surface.frame is not None else None,
        "units": "metre",
        "method": surface.method,
        "holes": [h.to_dict() for h in surface.holes],
        "info": surface.info,
    }
    if ext == ".ply":
        write_ply(path, surface.vertices, surface.faces, comments=("twin surface, local ENU m",))
    else:
        from twin.tiles.gltf import GltfMesh, write_glb

        centre = 0.5 * (surface.vertices.min(axis=0) + surface.vertices.max(axis=0))
        meta["rtc_center"] = centre.tolist()
        write_glb(
            path,
            [GltfMesh(positions=surface.vertices - centre, indices=surface.faces)],
            extras={"rtc_center": centre.tolist()},
        )
    write_json(path.with_name(path.name + ".json"), meta)
    return meta


__all__ = [
    "Hole",
    "Surface",
    "boundary_edges",
    "clip_to_box",
    "dsm_grid",
    "estimate_normals",
    "find_holes",
    "local_points",
    "non_manifold_edges",
    "reconstruct",
    "write_surface",
    "zip_seam",
]
