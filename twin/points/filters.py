"""Point filters: outlier removal, voxel downsampling, normals, height above ground.

In-memory functions take a :class:`~twin.points.PointCloud` (lengths in metres; feet
and US survey feet CRSs are converted with :func:`twin.crs.unit_factors`):

* :func:`statistical_outliers`: a point whose mean distance to its ``k`` nearest
  neighbours exceeds the cloud's mean of that distance by ``std_ratio`` standard
  deviations is an outlier (the statistic of PCL and Open3D: ours with ``k`` equals
  Open3D's ``remove_statistical_outlier(nb_neighbors=k + 1)``, which counts the point
  itself);
* :func:`radius_outliers`: fewer than ``min_neighbors`` other points within
  ``radius`` metres (a Numba cube-hash count);
* :func:`remove_outliers`: either of them, returning the cleaned cloud;
* :func:`voxel_downsample`: one point per ``size``-metre voxel (voxels aligned to
  multiples of ``size`` in the CRS, so tiles agree), at the centroid of the voxel's
  points (``mode="centroid"``) or at its first point (``"first"``); every field is
  carried along from a representative point (the one nearest the centroid, or the
  first);
* :func:`estimate_normals`: unit normals from a PCA of each point's ``k`` nearest
  neighbours (SciPy KD-tree + a closed-form Numba 3 x 3 eigen solver, or Open3D with
  ``method="open3d"``), oriented up (``n_z >= 0``);
* :func:`height_above_ground`: height above a DTM GeoTIFF, the cloud's class 2
  points, or the ground filter's surface.

:func:`filter_file` applies them to a LAS/LAZ file tile by tile with overlap halos.
**Memory**: the in-memory functions grow with the cloud (a KD-tree, about 40 bytes a
point, plus ``k + 1`` neighbour distances and indices, 16 bytes each, per point);
:func:`filter_file` grows with one buffered tile plus one chunk, not with the file.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from twin.errors import CRSError, InputError, OutputError, ParameterError
from twin.points import _filter_kernels as FK
from twin.points.cloud import PointCloud
from twin.progress import Progress, ensure

NORMAL_FIELDS = ("normal_x", "normal_y", "normal_z")
HAG_FIELD = "height_above_ground"


# ----------------------------------------------------------------------------- checks


def _check_cloud(cloud: PointCloud, what: str) -> None:
    if not isinstance(cloud, PointCloud):
        raise ParameterError(f"{what} needs a twin.points.PointCloud, got {type(cloud).__name__}")
    if len(cloud) == 0:
        raise InputError(f"{what}: the cloud has no points", path=cloud.source)
    bad = ~np.isfinite(cloud.xyz).all(axis=1)
    if bad.any():
        raise InputError(
            f"{what}: {int(bad.sum())} of {len(cloud)} points have NaN or infinite "
            "coordinates (drop them first: cloud[np.isfinite(cloud.xyz).all(axis=1)])",
            path=cloud.source,
        )
    if cloud.crs is not None and cloud.crs.is_geographic:
        raise CRSError(
            f"{what} needs projected coordinates, not degrees ({cloud.crs.name}); "
            "reproject first (twin.points.reproject)",
            path=cloud.source,
        )


def _positive(**values) -> None:
    for name, v in values.items():
        if not (isinstance(v, (int, float, np.number)) and np.isfinite(v) and v > 0):
            raise ParameterError(f"{name} must be a positive number, got {v!r}")


def _check_k(k) -> int:
    if not (isinstance(k, (int, np.integer)) and k >= 1):
        raise ParameterError(f"k must be a whole number of neighbours >= 1, got {k!r}")
    return int(k)


def _factors(cloud: PointCloud) -> np.ndarray:
    from twin.crs import unit_factors

    hf, vf = unit_factors(cloud.crs)
    return np.array([hf, hf, vf])


def _metres(cloud: PointCloud) -> np.ndarray:
    """Coordinates in metres relative to the cloud's minimum (precise float64)."""
    return (cloud.xyz - cloud.xyz.min(axis=0)) * _factors(cloud)


# ----------------------------------------------------------------------------- outliers


def knn(xyz_m: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices (``(N, k)``; the point itself first; ``inf`` and ``N``
    pad missing ones) of each point's ``k`` nearest points among ``xyz_m``.

    A SciPy KD-tree queried in spatial order (points sorted by 5-unit cubes), which
    is 1.5-2x faster than in a shuffled order. Memory: the tree plus ``16 k`` bytes a
    point."""
    from scipy.spatial import cKDTree

    n = len(xyz_m)
    kk = min(k, n)
    _, order, _ = FK.cell_index(xyz_m, 5.0)
    xs = np.ascontiguousarray(xyz_m[order])
    dist, j = cKDTree(xs).query(xs, k=kk, workers=-1)
    dist = np.asarray(dist, dtype=np.float64).reshape(n, kk)
    j = np.asarray(j, dtype=np.int64).reshape(n, kk)
    back = np.r_[order, n]
    d_out = np.empty_like(dist)
    n_out = np.empty_like(j)
    d_out[order] = dist
    n_out[order] = back[j]
    return d_out, n_out


def mean_neighbour_distance(cloud: PointCloud, k: int = 8) -> np.ndarray:
    """Mean distance (metres) from each point to its ``k`` nearest other points."""
    _check_cloud(cloud, "outlier removal")
    k = _check_k(k)
    dist, _ = knn(_metres(cloud), k + 1)
    return FK.mean_knn_distance(dist)


def sor_threshold(mean_dist: np.ndarray, std_ratio: float) -> float:
    """The statistical filter's cut: mean + ``std_ratio`` x standard deviation (n - 1)
    of the finite mean distances."""
    d = mean_dist[np.isfinite(mean_dist)]
    if len(d) < 2:
        return math.inf
    return float(d.mean() + std_ratio * d.std(ddof=1))


def statistical_outliers(cloud: PointCloud, k: int = 8, std_ratio: float = 2.0) -> np.ndarray:
    """Outliers (bool per point, True = outlier) by the statistical filter: mean
    distance to the ``k`` nearest neighbours above the cloud's mean + ``std_ratio``
    standard deviations. Raises InputError for an empty cloud or NaN coordinates."""
    _positive(std_ratio=std_ratio)
    d = mean_neighbour_distance(cloud, k)
    return d > sor_threshold(d, std_ratio)


def radius_outliers(cloud: PointCloud, radius: float = 1.0, min_neighbors: int = 2) -> np.ndarray:
    """Outliers (bool per point): fewer than ``min_neighbors`` other points within
    ``radius`` metres. Memory grows with the points (a sort by ``radius`` cubes)."""
    _check_cloud(cloud, "outlier removal")
    _positive(radius=radius)
    if not (isinstance(min_neighbors, (int, np.integer)) and min_neighbors >= 1):
        raise ParameterError(f"min_neighbors must be a whole number >= 1, got {min_neighbors!r}")
    return radius_counts(_metres(cloud), radius) < min_neighbors


def radius_counts(xyz_m: np.ndarray, radius: float) -> np.ndarray:
    """Number of other points within ``radius`` of each point (``(N, 3)`` metres)."""
    skey, order, dims = FK.cell_index(xyz_m, radius)
    return FK.radius_count(np.ascontiguousarray(xyz_m), float(radius), skey, order, dims)


def remove_outliers(
    cloud: PointCloud,
    method: str = "statistical",
    *,
    k: int = 8,
    std_ratio: float = 2.0,
    radius: float = 1.0,
    min_neighbors: int = 2,
) -> PointCloud:
    """The cloud without its outliers (``method``: ``"statistical"`` or ``"radius"``,
    parameters as :func:`statistical_outliers` / :func:`radius_outliers`)."""
    if method == "statistical":
        out = statistical_outliers(cloud, k, std_ratio)
    elif method == "radius":
        out = radius_outliers(cloud, radius, min_neighbors)
    else:
        raise ParameterError(f"method must be 'statistical' or 'radius', got {method!r}")
    return cloud[~out]


# ----------------------------------------------------------------------------- voxels


def voxel_index(xyz: np.ndarray, size_units: np.ndarray) -> np.ndarray:
    """Integer voxel coordinates ``floor(xyz / size)`` (``(N, 3)`` int64): voxels are
    aligned to multiples of the size in the CRS, whatever the points."""
    return np.floor(xyz / size_units).astype(np.int64)


def _voxel_reduce(ijk: np.ndarray, xyz: np.ndarray, centroid: bool):
    """(representatives in input order, their voxel centroids) of integer voxels."""
    lo = ijk.min(axis=0)
    span = ijk.max(axis=0) - lo + 1
    if float(span[0]) * float(span[1]) * float(span[2]) >= 2.0**62:
        raise ParameterError("the voxel size is too small for a cloud this large")
    rel = ijk - lo
    key = (rel[:, 0] * span[1] + rel[:, 1]) * span[2] + rel[:, 2]
    _, inv = np.unique(key, return_inverse=True)
    inv = inv.ravel().astype(np.int64)
    nvox = int(inv.max()) + 1
    cen, rep = FK.voxel_representatives(inv, xyz, nvox, centroid)
    order = np.argsort(rep, kind="stable")
    return rep[order], cen[order]


def voxel_downsample(cloud: PointCloud, size: float, mode: str = "centroid") -> PointCloud:
    """At most one point per ``size``-metre voxel (see the module doc); every field of
    the cloud is kept (from each voxel's representative point); points keep the
    order of their representatives. Memory grows with the points (a sort of keys)."""
    _check_cloud(cloud, "voxel downsampling")
    _positive(size=size)
    if mode not in ("centroid", "first"):
        raise ParameterError(f"mode must be 'centroid' or 'first', got {mode!r}")
    units = size / _factors(cloud)
    rel = cloud.xyz - cloud.xyz.min(axis=0)  # precise centroids of big coordinates
    rep, cen = _voxel_reduce(voxel_index(cloud.xyz, units), rel, mode == "centroid")
    out = cloud[rep]
    if mode == "centroid":
        out.xyz = cen + cloud.xyz.min(axis=0)
    return out


# ----------------------------------------------------------------------------- normals


def _normals_numba(xyz_m: np.ndarray, k: int) -> np.ndarray:
    from twin.points import _features as F

    _, nbr = knn(xyz_m, k)
    _, nrm = F.covariance_eigen(xyz_m, nbr)
    return nrm


def _normals_open3d(xyz_m: np.ndarray, k: int) -> np.ndarray:
    import open3d as o3d

    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz_m))
    pc.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(k))
    nrm = np.asarray(pc.normals).copy()
    nrm[nrm[:, 2] < 0] *= -1
    return nrm


def estimate_normals(
    cloud: PointCloud, k: int = 16, *, method: str = "numba", store: bool = False
) -> np.ndarray:
    """Unit normals (``(N, 3)`` float64, ``n_z >= 0``) from a PCA of each point's
    ``k`` nearest neighbours (the point included), in the metric axes of the CRS.

    ``method``: ``"numba"`` (SciPy KD-tree, Numba covariance and closed-form eigen
    solver; faster here, see ``benchmarks/points.py --only filters``) or ``"open3d"``
    (``estimate_normals`` with a k-NN search). A neighbourhood that is a line or a
    point gives (0, 0, 1). With ``store``, the normals are also put in the cloud's
    ``normal_x/y/z`` float32 fields (written as extra bytes, used by
    :meth:`PointCloud.to_open3d`)."""
    _check_cloud(cloud, "normal estimation")
    k = _check_k(k)
    if k < 3:
        raise ParameterError(f"normals need k >= 3 neighbours, got {k}")
    xyz = _metres(cloud)
    if method == "numba":
        nrm = _normals_numba(xyz, k)
    elif method == "open3d":
        nrm = _normals_open3d(xyz, k)
    else:
        raise ParameterError(f"method must be 'numba' or 'open3d', got {method!r}")
    if store:
        for i, name in enumerate(NORMAL_FIELDS):
            cloud.fields[name] = nrm[:, i].astype(np.float32)
    return nrm


# ----------------------------------------------------------------------------- HAG


def _raster_heights(dtm, xyz: np.ndarray, crs, source) -> np.ndarray:
    """Bilinear DTM heights under points (NaN on nodata / outside); CRS units."""
    import rasterio
    from rasterio.windows import Window, from_bounds

    from twin.points import _kernels as K

    path = Path(dtm)
    try:
        ds = rasterio.open(path)
    except Exception as exc:
        raise InputError(f"not a readable DTM GeoTIFF: {exc}", path=path) from None
    with ds:
        if crs is not None and ds.crs is not None:
            from twin.crs import parse_crs

            rcrs = parse_crs(ds.crs.to_wkt(), source=path)
            if not rcrs.equals(crs, ignore_axis_order=True) and not (
                crs.is_compound and rcrs.equals(crs.sub_crs_list[0], ignore_axis_order=True)
            ):
                raise CRSError(
                    f"the DTM is in {rcrs.name}, the cloud in {crs.name}; use one CRS",
                    path=path,
                )
        lo, hi = xyz[:, :2].min(axis=0), xyz[:, :2].max(axis=0)
        win = from_bounds(lo[0], lo[1], hi[0], hi[1], transform=ds.transform)
        win = win.round_offsets(op="floor").round_lengths(op="ceil")
        c0, r0 = max(int(win.col_off) - 1, 0), max(int(win.row_off) - 1, 0)
        c1 = min(int(win.col_off + win.width) + 2, ds.width)
        r1 = min(int(win.row_off + win.height) + 2, ds.height)
        if c1 <= c0 or r1 <= r0:
            return np.full(len(xyz), np.nan)
        w = Window(c0, r0, c1 - c0, r1 - r0)
        z = ds.read(1, window=w, masked=True).astype(np.float64).filled(np.nan)
        t = ds.window_transform(w)
    if abs(t.a - abs(t.e)) > 1e-9 * abs(t.a) or t.b or t.d:
        raise InputError("the DTM must be north-up with square cells", path=path)
    grid = z[::-1].copy()
    x0, y0 = t.c, t.f + t.e * z.shape[0]
    out = K.bilinear(grid, x0, y0, t.a, xyz[:, 0], xyz[:, 1])
    outside = (
        (xyz[:, 0] < t.c)
        | (xyz[:, 0] > t.c + t.a * z.shape[1])
        | (xyz[:, 1] < y0)
        | (xyz[:, 1] > t.f)
    )
    out[outside] = np.nan
    return out


def ground_heights(xyz: np.ndarray, ground: np.ndarray, cell: float, source=None) -> np.ndarray:
    """Heights (CRS units) under points of a mean-height DTM of the ``ground`` points
    on a ``cell`` grid (CRS units), voids inpainted; bilinear."""
    from twin.points import _kernels as K
    from twin.points.classify import _dtm_from_ground

    grid, d = _dtm_from_ground(xyz, ground, cell, source)
    return K.bilinear(d, grid.x0, grid.y0, grid.cell, xyz[:, 0], xyz[:, 1])


def height_above_ground(
    cloud: PointCloud,
    dtm: str | os.PathLike | None = None,
    *,
    cell: float = 1.0,
    progress: Progress | None = None,
    **ground_params,
) -> np.ndarray:
    """Height of every point above the ground, in metres (float64).

    The ground is, in order: ``dtm`` (a GeoTIFF in the cloud's CRS, sampled
    bilinearly; NaN where it has nodata or does not reach), else the cloud's class 2
    points (mean height per ``cell``-metre cell, voids inpainted), else the ground
    filter's provisional DTM (``ground_params`` as
    :func:`twin.points.classify_ground`). Memory: a grid plus N floats."""
    _check_cloud(cloud, "height above ground")
    f = _factors(cloud)
    if dtm is not None:
        base = _raster_heights(dtm, cloud.xyz, cloud.crs, cloud.source)
        return (cloud.z - base) * f[2]
    cls = cloud.fields.get("classification")
    if cls is not None and np.any(cls == 2):
        _positive(cell=cell)
        base = ground_heights(cloud.xyz, cls == 2, cell / f[0], cloud.source)
        return (cloud.z - base) * f[2]
    from twin.points.ground import height_above_ground as filter_hag

    return filter_hag(cloud, progress=progress, **ground_params)


# ----------------------------------------------------------------------------- files


def filter_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    outliers: str | None = None,
    k: int = 8,
    std_ratio: float = 2.0,
    radius: float = 1.0,
    min_neighbors: int = 2,
    voxel: float | None = None,
    voxel_mode: str = "centroid",
    normals: bool = False,
    normal_k: int = 16,
    hag: bool = False,
    dtm: str | os.PathLike | None = None,
    crs=None,
    tile: float = 200.0,
    buffer: float = 10.0,
    chunk_points: int = 1_000_000,
    workdir: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Filter a LAS/LAZ file into ``dst`` (LAS/LAZ), streaming tile by tile.

    In order: outliers removed (``outliers``: ``"statistical"`` with ``k`` and
    ``std_ratio``, its mean and deviation taken over the whole file; ``"radius"`` with
    ``radius`` and ``min_neighbors``), voxel downsampling (``voxel`` metres,
    ``voxel_mode``), normals (``normals``: ``normal_x/y/z`` float32 extra bytes, from
    ``normal_k`` neighbours among the points kept) and height above ground (``hag``:
    a ``height_above_ground`` float32 extra byte in metres, from ``dtm`` or else from
    the file's class 2 points). Every other field is kept as read.

    Passes: (1) the points are spilled, ``chunk_points`` at a time, into one temporary
    file per ``tile`` x ``tile`` metre tile grown by a ``buffer``-metre halo (raw LAS
    records; a point near a border goes to every tile whose halo holds it);
    (2, statistical only) each buffered tile's mean neighbour distances, and the
    file's statistics from the tiles' core points; (3) each buffered tile is
    filtered in memory and its core points are written. Tiles are multiples of the
    voxel, so no voxel straddles two tiles. The halo must exceed the neighbourhoods
    (``radius``; the ``k`` nearest points) for the result to equal the in-memory one;
    an isolated point whose neighbours reach past the halo gets its distance within
    the buffered tile (an upper bound), which widens the statistical cut a little
    (tests: at least 99.8 % of decisions equal to the in-memory filter's).
    Points come out tile by tile (in file order within a tile).

    A file without a usable CRS (and no ``crs``) is taken to be in metres.

    **Memory** grows with one buffered tile (its points times the record size plus
    about 100 + 16 k bytes), plus one chunk; disk: the records times
    ``1 + 4 buffer / tile`` in ``workdir`` (default: beside ``dst``), deleted at the
    end. The output is written to a temporary name and renamed. Returns counts:
    ``input_points``, ``outliers``, ``output_points``, ``tiles`` and the statistical
    ``threshold`` (metres) when used.
    """
    import laspy

    from twin.crs import parse_crs, unit_factors
    from twin.fileio import atomic_path
    from twin.points.io import _laz_backend, _open, _why, file_crs

    src, dst = Path(src), Path(dst)
    if dst.suffix.lower() not in (".las", ".laz"):
        raise OutputError("the file name must end in .las or .laz", path=dst)
    if src.resolve() == dst.resolve():
        raise OutputError("the output would overwrite the input", path=dst)
    if outliers not in (None, "statistical", "radius"):
        raise ParameterError(f"outliers must be 'statistical' or 'radius', got {outliers!r}")
    if voxel_mode not in ("centroid", "first"):
        raise ParameterError(f"voxel_mode must be 'centroid' or 'first', got {voxel_mode!r}")
    _positive(tile=tile, buffer=buffer, std_ratio=std_ratio, radius=radius)
    if voxel is not None:
        _positive(voxel=voxel)
    k, normal_k = _check_k(k), _check_k(normal_k)
    if chunk_points < 1:
        raise ParameterError(f"chunk_points must be >= 1, got {chunk_points}")
    if outliers is None and voxel is None and not normals and not hag:
        raise ParameterError("nothing to do: choose outliers, voxel, normals and/or hag")
    if buffer >= tile:
        raise ParameterError(f"buffer ({buffer} m) must be smaller than the tile ({tile} m)")
    if outliers == "radius" and buffer < radius:
        raise ParameterError(f"buffer ({buffer} m) must be at least the radius ({radius} m)")
    progress = ensure(progress)
    with _open(src) as reader:
        header = reader.header
        mins, maxs, total = np.array(header.mins), np.array(header.maxs), int(header.point_count)
        names = list(header.point_format.dimension_names)
    if total == 0:
        raise InputError("the file has no points", path=src)
    the_crs = parse_crs(crs, source=src) if crs is not None else file_crs(header, src)[0]
    if the_crs is not None and the_crs.is_geographic:
        raise CRSError(
            f"filters need projected coordinates, not degrees ({the_crs.name})", path=src
        )
    hf, vf = unit_factors(the_crs)
    fac = np.array([hf, hf, vf])
    # tiles: m base steps of g CRS units (g = the voxel when downsampling)
    if voxel is not None:
        g, m = voxel / hf, max(1, int(round(tile / voxel)))
    else:
        g, m = tile / hf, 1
    i0, j0 = math.floor(mins[0] / g), math.floor(mins[1] / g)
    ntx = (math.floor(maxs[0] / g) - i0) // m + 1
    nty = (math.floor(maxs[1] / g) - j0) // m + 1
    b = buffer / hf

    def tile_of(x, y):
        tx = (np.floor(x / g).astype(np.int64) - i0) // m
        ty = (np.floor(y / g).astype(np.int64) - j0) // m
        np.clip(tx, 0, ntx - 1, out=tx)
        np.clip(ty, 0, nty - 1, out=ty)
        return ty * ntx + tx

    wd = Path(workdir) if workdir is not None else dst.parent
    try:
        wd.mkdir(parents=True, exist_ok=True)
        tmpdir = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=wd))
    except OSError as exc:
        raise OutputError(f"cannot make a work folder in {wd}: {exc.strerror}", path=dst) from None
    stats = {"input_points": total, "outliers": 0, "output_points": 0, "tiles": 0}
    try:
        # pass 1: spill raw records into buffered tiles
        dtype = None
        nonempty: set[int] = set()
        n_ground = 0
        done = 0
        with _open(src) as reader, progress.step("filter: spill to tiles", total=total) as adv:
            sc, off = np.asarray(reader.header.scales), np.asarray(reader.header.offsets)
            it = reader.chunk_iterator(int(chunk_points))
            while True:
                try:
                    points = next(it)
                except StopIteration:
                    break
                except Exception as exc:
                    raise InputError(
                        f"corrupt or truncated point data after {done} of {total} points: "
                        f"{_why(exc)}",
                        path=src,
                    ) from None
                if len(points) == 0:
                    break
                rec = points.array
                dtype = rec.dtype
                done += len(rec)
                x = rec["X"] * sc[0] + off[0]
                y = rec["Y"] * sc[1] + off[1]
                if "classification" in names:
                    n_ground += int(np.count_nonzero(np.asarray(points.classification) == 2))
                keys = np.empty((len(rec), 9), dtype=np.int64)
                col = 0
                for dx in (-b, 0.0, b):
                    for dy in (-b, 0.0, b):
                        keys[:, col] = tile_of(x + dx, y + dy)
                        col += 1
                keys.sort(axis=1)
                first = np.ones(keys.shape, dtype=bool)
                first[:, 1:] = keys[:, 1:] != keys[:, :-1]
                pt = np.nonzero(first)[0]
                ks = keys[first]
                order = np.argsort(ks, kind="stable")
                pt, ks = pt[order], ks[order]
                cuts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
                for a, e in zip(cuts, [*cuts[1:], len(ks)], strict=True):
                    key = int(ks[a])
                    with open(tmpdir / f"{key}.bin", "ab") as fh:
                        rec[pt[a:e]].tofile(fh)
                    nonempty.add(key)
                adv(len(rec))
        if done != total:
            raise InputError(
                f"the file ends after {done} of the header's {total} points "
                "(truncated, or the header's point count is wrong)",
                path=src,
            )
        if hag and dtm is None and n_ground == 0:
            raise InputError(
                "height above ground needs ground points (class 2): classify the file first "
                "(twin points classify) or give a DTM",
                path=src,
            )

        def load(key):
            rec = np.fromfile(tmpdir / f"{key}.bin", dtype=dtype)
            xyz = np.column_stack([rec[d] * sc[i] + off[i] for i, d in enumerate("XYZ")])
            return rec, xyz

        # pass 2: the statistical filter's global threshold
        threshold = None
        if outliers == "statistical":
            s1 = s2 = 0.0
            cnt = 0
            with progress.step("filter: neighbour distances", total=len(nonempty)) as adv:
                for key in sorted(nonempty):
                    rec, xyz = load(key)
                    cl = PointCloud(xyz, crs=the_crs, source=str(src))
                    d = mean_neighbour_distance(cl, k)
                    np.save(tmpdir / f"{key}.d.npy", d.astype(np.float32))
                    core = d[(tile_of(xyz[:, 0], xyz[:, 1]) == key) & np.isfinite(d)]
                    s1 += float(core.sum())
                    s2 += float(np.square(core).sum())
                    cnt += len(core)
                    adv(1)
            if cnt >= 2:
                mean = s1 / cnt
                var = max((s2 - cnt * mean * mean) / (cnt - 1), 0.0)
                threshold = mean + std_ratio * math.sqrt(var)
            else:
                threshold = math.inf
            stats["threshold"] = threshold

        # pass 3: filter each buffered tile, write its core
        out_header = _output_header(header, normals, hag)
        with (
            atomic_path(dst) as tmp,
            laspy.open(
                tmp,
                mode="w",
                header=out_header,
                do_compress=dst.suffix.lower() == ".laz",
                laz_backend=_laz_backend(),
            ) as writer,
            progress.step("filter: tiles", total=len(nonempty)) as adv,
        ):
            osc, ooff = np.asarray(out_header.scales), np.asarray(out_header.offsets)
            for key in sorted(nonempty):
                rec, xyz = load(key)
                core_in = tile_of(xyz[:, 0], xyz[:, 1]) == key
                keep = np.ones(len(rec), bool)
                if outliers == "statistical":
                    d = np.load(tmpdir / f"{key}.d.npy").astype(np.float64)
                    keep = ~(d > threshold)
                    (tmpdir / f"{key}.d.npy").unlink()
                elif outliers == "radius":
                    keep = radius_counts((xyz - xyz.min(axis=0)) * fac, radius) >= min_neighbors
                stats["outliers"] += int(np.count_nonzero(core_in & ~keep))
                ground_xyz = None
                if hag and dtm is None and "classification" in names:
                    cls = laspy.ScaleAwarePointRecord(rec, header.point_format, sc, off)
                    ground_xyz = xyz[keep & (np.asarray(cls.classification) == 2)]
                idx = np.flatnonzero(keep)
                pts = xyz[idx]
                if voxel is not None and len(idx):
                    rep, cen = _voxel_reduce(
                        voxel_index(pts, voxel / fac),
                        pts - pts.min(axis=0),
                        voxel_mode == "centroid",
                    )
                    if voxel_mode == "centroid":
                        pts = cen + pts.min(axis=0)
                    else:
                        pts = pts[rep]
                    idx = idx[rep]
                core = tile_of(xyz[idx, 0], xyz[idx, 1]) == key
                if normals and len(idx):
                    nrm = estimate_normals(PointCloud(pts, crs=the_crs, source=str(src)), normal_k)
                if hag and len(idx):
                    cp = pts[core]
                    if dtm is not None:
                        base = _raster_heights(dtm, cp, the_crs, src)
                    elif ground_xyz is not None and len(ground_xyz):
                        allx = np.vstack([ground_xyz, cp])
                        gm = np.zeros(len(allx), bool)
                        gm[: len(ground_xyz)] = True
                        base = ground_heights(allx, gm, 1.0 / hf, src)[len(ground_xyz) :]
                    else:
                        base = np.full(len(cp), np.nan)
                    hag_v = (cp[:, 2] - base) * vf
                sel = np.flatnonzero(core)
                (tmpdir / f"{key}.bin").unlink()
                adv(1)
                if len(sel) == 0:
                    continue
                out = laspy.ScaleAwarePointRecord.zeros(len(sel), header=out_header)
                arr = out.array
                src_rec = rec[idx[sel]]
                for name in src_rec.dtype.names:
                    arr[name] = src_rec[name]
                if voxel is not None and voxel_mode == "centroid":
                    for i, d in enumerate("XYZ"):
                        arr[d] = np.round((pts[sel, i] - ooff[i]) / osc[i])
                if normals:
                    for i, name in enumerate(NORMAL_FIELDS):
                        out[name] = nrm[sel, i].astype(np.float32)
                if hag:
                    out[HAG_FIELD] = hag_v.astype(np.float32)
                writer.write_points(out)
                stats["output_points"] += len(sel)
                stats["tiles"] += 1
        if stats["output_points"] == 0:
            dst.unlink(missing_ok=True)
            raise InputError("every point was removed; nothing was written", path=src)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    stats["path"] = str(dst)
    return stats


def _output_header(header, normals: bool, hag: bool):
    """A copy of the input header (no COPC records) with the new extra bytes."""
    import copy

    import laspy

    h = copy.deepcopy(header)
    h.vlrs = [v for v in h.vlrs if "Copc" not in type(v).__name__]
    have = set(h.point_format.dimension_names)
    new = []
    if normals:
        new += [n for n in NORMAL_FIELDS if n not in have]
    if hag and HAG_FIELD not in have:
        new.append(HAG_FIELD)
    if new:
        h.add_extra_dims([laspy.ExtraBytesParams(name=n, type=np.float32) for n in new])
    return h
