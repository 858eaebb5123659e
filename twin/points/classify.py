"""Building (ASPRS 6) and vegetation (3/4/5) classification of airborne LiDAR.

The pipeline of :func:`classify`, all lengths in metres (feet CRSs are converted):

1. **Ground** (2): the SMRF-family filter of :mod:`twin.points.ground` (or a given
   bool mask), and the **height above ground** (HAG) of every point from its DTM.
2. **Local shape** of every object point (not ground, not noise, not water): the
   covariance of its ``k`` nearest object neighbours (scipy ``cKDTree``, tile by tile
   with a buffer) decomposed by a Numba kernel (:mod:`twin.points._features`) into
   linearity, planarity, scatter and verticality. Points denser than one per
   ``spacing``-metre voxel (0.3 m) are thinned to voxel centroids first, so that
   ``k`` neighbours span a similar area whatever the density.
3. **Returns**: a point that is not the last return of its pulse (``return_number <
   number_of_returns``) passed through something: vegetation, or a roof edge; such a
   point is building only when its neighbourhood is flat (step 4).
4. **Building candidates**: flat points (``l3 / l2 <= flatness``: the third axis of the
   neighbourhood small against the second) that are roofs
   (normal within ``max_roof_slope`` degrees of vertical, HAG >= ``min_building_height``)
   or walls (verticality >= 0.8, any height above the ground).
5. **Regions**: candidates are grouped into connected components of ``voxel``-sized 3D
   voxels (26-connected). A region is a building when its roof covers at least
   ``min_building_area`` square metres (counted on a 1 m grid) and at most
   ``max_pass_through`` of the object points in its voxels are non-last returns (trees
   let pulses through, roofs do not). Non-candidate object points sharing a voxel
   with a building region, or under a building's roof (walls, eaves: within one 1 m
   cell of its roof and at most 0.5 m above it), are added unless they are
   pass-through returns in a rough neighbourhood (ridges, edges, chimneys, walls).
6. **Vegetation**: the other object points, by HAG: < 0.5 m low (3), 0.5-2 m medium (4),
   >= 2 m high (5).
7. **Low noise**: object points more than ``low_noise`` metres below the DTM become
   noise (7) (multipath; ``None`` turns this off). **Kept**: points given as noise
   (7, 18) or water (9) keep their class.
8. **Water** (optional, ``water=True``): ground points in large (>= ``min_water_area``),
   very flat, dark regions (intensity below ``water_intensity`` times the median ground
   intensity) with single returns become 9.

**Footprints** (a GeoDataFrame, reprojected to the cloud's CRS): an object point
inside a footprint with HAG >= ``min_building_height`` that is not a pass-through
return in a rough neighbourhood is building; so are the regions of step 5 that lie
mostly inside footprints (walls). A point outside every footprint is building only when
its region is *strongly* planar: mean ``l3 / l2 <= flatness / 2`` and roof area >= 2 x
``min_building_area`` (a building missing from the footprint layer); otherwise it is
vegetation by step 6.

**Memory.** Step 2 works tile by tile (``tile`` metres square plus a ``buffer``): its
temporaries (KD-tree, ``k`` neighbour indices, covariances) grow with the points of one
tile. The per-point arrays (HAG, metre coordinates, 4 features, flags and labels:
about 100 bytes a point), the voxel keys and the ground grid grow with the cloud;
:func:`classify_file` streams a file through buffered tiles so that nothing grows with
the file but the output classes (a memory-mapped byte a point).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from twin.errors import CRSError, InputError, ParameterError
from twin.points import _features as F
from twin.points import _kernels as K
from twin.points.cloud import PointCloud
from twin.points.ground import NOISE_CLASSES, GridSpec, cloud_model
from twin.progress import Progress, ensure

if TYPE_CHECKING:
    import geopandas as gpd

GROUND = 2
LOW_VEGETATION = 3
MEDIUM_VEGETATION = 4
HIGH_VEGETATION = 5
BUILDING = 6
WATER = 9
KEPT_CLASSES = (*NOISE_CLASSES, WATER)

# the 13 "forward" offsets of a 26-neighbourhood (the other 13 are their negatives)
_FORWARD = np.array(
    [
        (dx, dy, dz)
        for dx in (-1, 0, 1)
        for dy in (-1, 0, 1)
        for dz in (-1, 0, 1)
        if (dx, dy, dz) > (0, 0, 0)
    ],
    dtype=np.int64,
)


def point_features(
    xyz: np.ndarray,
    *,
    k: int = 12,
    tile: float = 250.0,
    buffer: float = 5.0,
    progress: Progress | None = None,
) -> np.ndarray:
    """Linearity, planarity, scatter and verticality (``(N, 4)`` float32) of each
    point from its ``k`` nearest neighbours among ``xyz`` (``(N, 3)``, metres).

    Works tile by tile (``tile`` x ``tile`` metres, neighbours searched within the tile
    grown by ``buffer`` metres), so the KD-tree and neighbour arrays grow with one
    tile's points; the output grows with N (16 bytes a point)."""
    from scipy.spatial import cKDTree

    xyz = np.asarray(xyz, dtype=np.float64)
    n = len(xyz)
    out = np.zeros((n, 4), dtype=np.float32)
    out[:, 2] = 1.0
    if n == 0:
        return out
    if k < 3:
        raise ParameterError(f"k must be at least 3 neighbours, got {k}")
    x0, y0 = xyz[:, 0].min(), xyz[:, 1].min()
    tx = np.floor((xyz[:, 0] - x0) / tile).astype(np.int64)
    ty = np.floor((xyz[:, 1] - y0) / tile).astype(np.int64)
    ntx = int(tx.max()) + 1
    key = ty * ntx + tx
    order = np.argsort(key, kind="stable")
    skey = key[order]
    starts = np.flatnonzero(np.r_[True, skey[1:] != skey[:-1]])
    ends = np.r_[starts[1:], n]
    with ensure(progress).step("classify: local features", total=n) as advance:
        for a, b in zip(starts, ends, strict=True):
            core = order[a:b]
            kx, ky = int(tx[core[0]]), int(ty[core[0]])
            lo = np.array([x0 + kx * tile - buffer, y0 + ky * tile - buffer])
            hi = lo + tile + 2 * buffer
            # points of the 3 x 3 tiles around, cut to the buffered tile
            near = np.isin(key, [(ky + j) * ntx + kx + i for j in (-1, 0, 1) for i in (-1, 0, 1)])
            cand = np.flatnonzero(near)
            p = xyz[cand]
            inside = np.all((p[:, :2] >= lo) & (p[:, :2] < hi), axis=1)
            cand = cand[inside]
            local = xyz[cand]
            centre = local.mean(axis=0)
            local = local - centre
            kk = min(k, len(local))
            tree = cKDTree(local)
            _, nbr = tree.query(xyz[core] - centre, k=kk)
            nbr = np.asarray(nbr, dtype=np.int64).reshape(len(core), kk)
            ev, nrm = F.covariance_eigen(local, nbr)
            out[core] = F.shape_features(ev, nrm)
            advance(len(core))
    return out


def _voxel_keys(vox: np.ndarray) -> np.ndarray:
    """One int64 per voxel (``(N, 3)`` non-negative int64 indices, each < 2**21)."""
    return (vox[:, 0] << 42) | (vox[:, 1] << 21) | vox[:, 2]


def voxel_keys(xyz: np.ndarray, voxel: float, origin=None) -> np.ndarray:
    """The int64 key of the ``voxel``-sized cube holding each point, cubes counted
    from ``origin`` (default: the points' minimum), so two calls with one origin
    agree."""
    origin = xyz.min(axis=0) if origin is None else np.asarray(origin, float)
    vox = np.floor((xyz - origin) / voxel).astype(np.int64) + 1
    if len(vox) and (vox.min() < 1 or vox.max() >= 2**21 - 2):
        raise ParameterError(f"voxel {voxel} m is too small for a cloud this large")
    return _voxel_keys(vox)


def voxel_components(xyz: np.ndarray, voxel: float, origin=None) -> np.ndarray:
    """26-connected components of the ``voxel``-sized cubes holding points (see
    :func:`voxel_keys` for ``origin``): a label 0..C-1 per point, numbered in order of
    the voxel keys. Memory grows with the number of occupied voxels."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(xyz)
    if n == 0:
        return np.zeros(0, np.int64)
    keys = voxel_keys(xyz, voxel, origin)
    ukeys, inv = np.unique(keys, return_inverse=True)
    uvox = np.column_stack([(ukeys >> 42) & 0x1FFFFF, (ukeys >> 21) & 0x1FFFFF, ukeys & 0x1FFFFF])
    rows, cols = [], []
    for off in _FORWARD:
        nk = _voxel_keys(uvox + off)
        pos = np.searchsorted(ukeys, nk)
        pos = np.minimum(pos, len(ukeys) - 1)
        hit = ukeys[pos] == nk
        rows.append(np.flatnonzero(hit))
        cols.append(pos[hit])
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    m = len(ukeys)
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(m, m))
    _, lab = connected_components(graph, directed=False)
    return lab[inv.ravel()].astype(np.int64)


def _dtm_from_ground(xyz: np.ndarray, ground: np.ndarray, cell: float, source) -> tuple:
    """A mean-height DTM from given ground points: (GridSpec, grid), CRS units."""
    g = xyz[ground]
    if len(g) == 0:
        raise InputError("the given ground mask selects no points", path=source)
    grid = GridSpec.covering(xyz.min(axis=0), xyz.max(axis=0), cell, source=source)
    ix, iy = grid.index(g[:, 0], g[:, 1])
    sums = np.zeros((grid.ny, grid.nx))
    counts = np.zeros((grid.ny, grid.nx))
    K.grid_sum_count(ix, iy, np.ascontiguousarray(g[:, 2]), sums, counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        dtm = np.where(counts > 0, sums / counts, np.nan)
    if not np.isfinite(dtm).all():
        dtm = K.inpaint(dtm)
    return grid, dtm


def _returns(cloud: PointCloud) -> tuple[np.ndarray, np.ndarray]:
    """(pass-through: not the last return of a multi-return pulse, multi-return)."""
    rn = cloud.fields.get("return_number")
    nr = cloud.fields.get("number_of_returns")
    n = len(cloud)
    if rn is None or nr is None:
        return np.zeros(n, bool), np.zeros(n, bool)
    rn = rn.astype(np.int16)
    nr = nr.astype(np.int16)
    return (rn < nr) & (nr > 1), nr > 1


def footprint_index(cloud: PointCloud, footprints: gpd.GeoDataFrame, mask=None) -> np.ndarray:
    """Position (``iloc``) of the footprint containing each point (-1: none), for the
    points in ``mask`` (others -1). Footprints are reprojected to the cloud's CRS.
    Memory grows with the points tested (one shapely point each)."""
    import shapely

    crs = cloud.require_crs()
    if footprints.crs is None:
        raise CRSError("the footprints have no CRS; set one (gdf.set_crs(...))", path="footprints")
    fp = footprints.to_crs(crs) if not footprints.crs.equals(crs) else footprints
    geoms = fp.geometry.to_numpy()
    out = np.full(len(cloud), -1, dtype=np.int64)
    idx = np.arange(len(cloud)) if mask is None else np.flatnonzero(mask)
    if len(idx) == 0 or len(geoms) == 0:
        return out
    pts = shapely.points(cloud.xyz[idx, 0], cloud.xyz[idx, 1])
    tree = shapely.STRtree(geoms)
    pi, gi = tree.query(pts, predicate="within")
    out[idx[pi]] = gi
    return out


def classify(
    cloud: PointCloud,
    ground: np.ndarray | None = None,
    footprints: gpd.GeoDataFrame | None = None,
    *,
    min_building_height: float = 2.0,
    min_building_area: float = 10.0,
    flatness: float = 0.1,
    max_roof_slope: float = 60.0,
    max_pass_through: float = 0.25,
    k: int = 12,
    voxel: float = 1.5,
    water: bool = False,
    low_noise: float | None = 1.0,
    min_water_area: float = 200.0,
    water_intensity: float = 0.35,
    tile: float = 250.0,
    spacing: float | None = 0.3,
    progress: Progress | None = None,
    **ground_params,
) -> np.ndarray:
    """ASPRS classes (uint8, one per point) of ``cloud``: 2 ground, 6 building, 3/4/5
    vegetation, 7/18 noise and 9 water kept from the input, 9 detected water with
    ``water``, 1 for what is none of these. The cloud is not modified.

    ``ground``: a bool mask of ground points (else the ground filter runs with
    ``ground_params``, see :func:`twin.points.classify_ground`). ``footprints``: a
    GeoDataFrame of building polygons (needs the cloud's CRS). Lengths in metres,
    areas in square metres, slopes in degrees; the steps and memory are in the module
    doc. Raises InputError for an empty cloud or a wrong-sized ground mask, CRSError
    when footprints are given and the cloud (or the footprints) has no CRS.
    """
    from twin.crs import unit_factors

    n = len(cloud)
    if n == 0:
        raise InputError("the cloud has no points", path=cloud.source)
    if footprints is not None:
        cloud.require_crs()
    for name, v in dict(
        min_building_height=min_building_height,
        min_building_area=min_building_area,
        voxel=voxel,
        tile=tile,
    ).items():
        if not (np.isfinite(v) and v > 0):
            raise ParameterError(f"{name} must be a positive number, got {v}")
    if not 0 < flatness <= 1:
        raise ParameterError(f"flatness must be in (0, 1], got {flatness}")
    progress = ensure(progress)
    hf, vf = unit_factors(cloud.crs)
    given = cloud.fields.get("classification")
    kept = np.isin(given, KEPT_CLASSES) if given is not None else np.zeros(n, bool)

    # 1. ground and height above ground
    model, cand = cloud_model(cloud, progress=progress, **ground_params)
    if ground is None:
        with progress.step("classify: ground", total=n):
            is_ground = model.is_ground(cloud.xyz) & cand
        hag = model.height_above(cloud.xyz)
    else:
        is_ground = np.asarray(ground, dtype=bool)
        if is_ground.shape != (n,):
            raise InputError(
                f"the ground mask has shape {is_ground.shape}, the cloud {n} points",
                path=cloud.source,
            )
        is_ground = is_ground & cand
        grid, dtm = _dtm_from_ground(cloud.xyz, is_ground, model.grid.cell, cloud.source)
        d = K.bilinear(dtm, grid.x0, grid.y0, grid.cell, cloud.xyz[:, 0], cloud.xyz[:, 1])
        hag = (cloud.xyz[:, 2] - d) * vf
    is_ground &= ~kept
    obj = cand & ~is_ground & ~kept
    oi = np.flatnonzero(obj)
    xyz_m = cloud.xyz[oi] * np.array([hf, hf, vf])

    # 2-3. local shape and returns
    feat = _spaced_features(xyz_m, k, spacing, tile, progress)
    passing, _ = _returns(cloud)
    pass_o = passing[oi]
    hag_o = hag[oi]

    # 4. building candidates
    nz_min = math.cos(math.radians(max_roof_slope))
    vert = feat[:, 3]
    # l3 / l2 = scatter / (planarity + scatter): small on any surface, whatever the
    # neighbourhood's shape (planarity itself drops to ~0.5 for random samplings)
    rough = feat[:, 2] / np.maximum(feat[:, 1] + feat[:, 2], 1e-12)
    planar = rough <= flatness
    roof = planar & (1.0 - vert >= nz_min) & (hag_o >= min_building_height)
    wall = planar & (vert >= 0.8) & (hag_o > 0)
    cand_b = (roof | wall) & ~pass_o
    solid = (~pass_o | planar) & (hag_o > 0)  # may join a building region
    inside_o = None
    if footprints is not None:
        inside = footprint_index(cloud, footprints, mask=obj)
        inside_o = inside[oi] >= 0

    building_o = np.zeros(len(oi), bool)
    with progress.step("classify: building regions"):
        # 5. regions: components of the candidates' voxels; the voxels of all object
        # points on the same origin give each region's pass-through share
        ci = np.flatnonzero(cand_b)
        if len(ci):
            origin = xyz_m.min(axis=0)
            ukeys, vox_of = np.unique(voxel_keys(xyz_m, voxel, origin), return_inverse=True)
            vox_of = vox_of.ravel()
            lab = voxel_components(xyz_m[ci], voxel, origin)
            nlab = int(lab.max()) + 1
            # roof area per region: unique 1 m cells of roof candidates
            rc = roof[ci]
            cells = np.floor(xyz_m[ci][:, :2]).astype(np.int64)
            ck = (cells[:, 0] - cells[:, 0].min()) * (1 << 31) + (cells[:, 1] - cells[:, 1].min())
            pair = np.unique(np.column_stack([lab[rc], ck[rc]]), axis=0)
            area = np.bincount(pair[:, 0], minlength=nlab).astype(float) if len(pair) else 0.0
            # pass-through share among all object points in the region's voxels
            vreg = np.full(len(ukeys), -1, dtype=np.int64)
            vreg[vox_of[ci]] = lab
            reg_all = vreg[vox_of]
            inreg = reg_all >= 0
            tot = np.bincount(reg_all[inreg], minlength=nlab).astype(float)
            thr = np.bincount(reg_all[inreg & pass_o], minlength=nlab).astype(float)
            share = thr / np.maximum(tot, 1)
            mean_rough = np.bincount(lab, weights=rough[ci], minlength=nlab) / np.maximum(
                np.bincount(lab, minlength=nlab), 1
            )
            ok = (area >= min_building_area) & (share <= max_pass_through)
            if inside_o is not None:
                frac_in = np.bincount(lab, weights=inside_o[ci], minlength=nlab) / np.maximum(
                    np.bincount(lab, minlength=nlab), 1
                )
                strong = (mean_rough <= flatness / 2) & (area >= 2 * min_building_area)
                ok &= (frac_in >= 0.5) | strong
            building_o[ci] = ok[lab]
            # grow: object points sharing a voxel with an accepted region
            good_vox = np.zeros(len(vreg), bool)
            acc = ok[lab]
            good_vox[vox_of[ci[acc]]] = True
            grow = good_vox[vox_of] & solid
            building_o |= grow
            building_o |= _under_roofs(xyz_m, roof & building_o, solid)
        if inside_o is not None:
            building_o |= inside_o & (hag_o >= min_building_height) & solid

    # 6-7. vegetation by height, kept classes
    out = np.ones(n, dtype=np.uint8)
    out[is_ground] = GROUND
    veg = np.where(
        hag_o < 0.5, LOW_VEGETATION, np.where(hag_o < 2.0, MEDIUM_VEGETATION, HIGH_VEGETATION)
    ).astype(np.uint8)
    out[oi] = np.where(building_o, BUILDING, veg)
    if low_noise is not None:
        out[oi[hag_o < -abs(low_noise)]] = 7
    if given is not None:
        out[kept] = given[kept]

    # 8. water
    if water:
        out[_detect_water(cloud, out == GROUND, min_water_area, water_intensity, hf)] = WATER
    return out


def _spaced_features(xyz_m, k, spacing, tile, progress) -> np.ndarray:
    """:func:`point_features` of points thinned to one per ``spacing``-metre voxel
    (the centroid of its points; every point takes its voxel's features), so that a
    neighbourhood of ``k`` spans about the same area whatever the density: at
    100 points/m^2, 12 raw neighbours cover 0.1 m^2 of a tree crown, which then looks
    flat. ``None`` uses every point."""
    if spacing is None or len(xyz_m) == 0:
        return point_features(xyz_m, k=k, tile=tile, progress=progress)
    from twin.points._filter_kernels import voxel_representatives

    ijk = np.floor((xyz_m - xyz_m.min(axis=0)) / spacing).astype(np.int64)
    span = ijk.max(axis=0) + 1
    key = (ijk[:, 0] * span[1] + ijk[:, 1]) * span[2] + ijk[:, 2]
    _, inv = np.unique(key, return_inverse=True)
    inv = inv.ravel().astype(np.int64)
    nvox = int(inv.max()) + 1
    if nvox > 0.8 * len(xyz_m):  # already sparse: thinning would change little
        return point_features(xyz_m, k=k, tile=tile, progress=progress)
    lo = xyz_m.min(axis=0)
    cen, _ = voxel_representatives(inv, xyz_m - lo, nvox, False)
    return point_features(cen + lo, k=k, tile=tile, progress=progress)[inv]


def _under_roofs(
    xyz: np.ndarray, roof: np.ndarray, eligible: np.ndarray, cell: float = 1.0, rise: float = 0.5
) -> np.ndarray:
    """Eligible points under a building roof: in a ``cell``-metre column (grown by one
    cell) holding roof points, at most ``rise`` metres above that column's highest
    roof point (walls, eaves, balconies). Memory grows with the roof cells."""
    out = np.zeros(len(xyz), bool)
    if not roof.any() or not eligible.any():
        return out
    o = xyz[:, :2].min(axis=0)
    ij = np.floor((xyz[:, :2] - o) / cell).astype(np.int64) + 1
    span = int(ij[:, 1].max()) + 2

    r = ij[roof]
    rz = xyz[roof, 2]
    keys, tops = [], []
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            keys.append((r[:, 0] + di) * span + r[:, 1] + dj)
            tops.append(rz)
    keys = np.concatenate(keys)
    tops = np.concatenate(tops)
    order = np.lexsort((-tops, keys))
    keys, tops = keys[order], tops[order]
    first = np.r_[True, keys[1:] != keys[:-1]]
    ukeys, utop = keys[first], tops[first]
    ei = np.flatnonzero(eligible)
    pk = ij[ei, 0] * span + ij[ei, 1]
    pos = np.minimum(np.searchsorted(ukeys, pk), len(ukeys) - 1)
    hit = (ukeys[pos] == pk) & (xyz[ei, 2] <= utop[pos] + rise)
    out[ei[hit]] = True
    return out


def _detect_water(
    cloud: PointCloud, ground: np.ndarray, min_area: float, rel_intensity: float, hf: float
) -> np.ndarray:
    """Ground points in large, flat, dark, single-return regions (bool per point)."""
    from scipy import ndimage

    inten = cloud.fields.get("intensity")
    out = np.zeros(len(cloud), bool)
    gi = np.flatnonzero(ground)
    if inten is None or len(gi) == 0:
        return out
    inten = inten.astype(np.float64)
    med = np.median(inten[gi])
    if med <= 0:
        return out
    dark = inten[gi] < rel_intensity * med
    passing, multi = _returns(cloud)
    dark &= ~multi[gi]
    cell = 2.0 / hf
    g = cloud.xyz[gi]
    grid = GridSpec.covering(g.min(axis=0), g.max(axis=0), cell, source=cloud.source)
    ix, iy = grid.index(g[:, 0], g[:, 1])
    flat = iy * grid.nx + ix
    cnt = np.bincount(flat, minlength=grid.nx * grid.ny)
    dk = np.bincount(flat, weights=dark, minlength=grid.nx * grid.ny)
    zs = np.bincount(flat, weights=g[:, 2], minlength=grid.nx * grid.ny)
    zz = np.bincount(flat, weights=g[:, 2] ** 2, minlength=grid.nx * grid.ny)
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt(np.maximum(zz / cnt - (zs / cnt) ** 2, 0))
        wet = (cnt > 0) & (dk >= 0.8 * cnt) & (sd < 0.15)
    wet = ndimage.binary_closing(wet.reshape(grid.ny, grid.nx), iterations=1)
    lab, nlab = ndimage.label(wet)
    if nlab == 0:
        return out
    areas = np.bincount(lab.ravel())[1:] * (cell * hf) ** 2
    big = np.r_[False, areas >= min_area]
    out[gi] = big[lab.ravel()[flat]] & dark
    return out


def building_ids(
    cloud: PointCloud,
    classes: np.ndarray,
    footprints: gpd.GeoDataFrame | None = None,
    *,
    voxel: float = 1.5,
) -> np.ndarray:
    """Building id (int64) of every point, -1 for points that are not building (6).

    Without footprints: 26-connected components of ``voxel``-metre voxels of the
    building points, numbered 0.. in order of their first voxel. With footprints:
    the position (``iloc``) of the footprint containing the point, so
    ``footprints["building_id"].to_numpy()[ids[ids >= 0]]`` gives the footprint's id;
    building points outside every footprint get ``len(footprints) + component``.
    Memory grows with the number of building points."""
    from twin.crs import unit_factors

    classes = np.asarray(classes)
    if classes.shape != (len(cloud),):
        raise InputError(
            f"classes have shape {classes.shape}, the cloud {len(cloud)} points",
            path=cloud.source,
        )
    out = np.full(len(cloud), -1, dtype=np.int64)
    b = classes == BUILDING
    if not b.any():
        return out
    hf, vf = unit_factors(cloud.crs)
    if footprints is not None:
        out = footprint_index(cloud, footprints, mask=b)
        rest = np.flatnonzero(b & (out < 0))
        if len(rest):
            lab = voxel_components(cloud.xyz[rest] * np.array([hf, hf, vf]), voxel)
            out[rest] = len(footprints) + lab
        return out
    bi = np.flatnonzero(b)
    lab = voxel_components(cloud.xyz[bi] * np.array([hf, hf, vf]), voxel)
    out[bi] = lab
    return out


def class_report(predicted: np.ndarray, truth: np.ndarray, mask=None) -> dict[str, float]:
    """Accuracy of ASPRS classes against a reference, JSON-ready: overall accuracy and
    multi-class Cohen's kappa (classes compared as given, so 3/4/5 are distinct), and
    precision/recall of building (6) and of vegetation (3-5 merged). ``mask`` limits
    the points scored. Memory: a few arrays of the inputs' length."""
    p = np.asarray(predicted).astype(np.int64)
    t = np.asarray(truth).astype(np.int64)
    if p.shape != t.shape:
        raise ParameterError(f"predicted {p.shape} and truth {t.shape} differ in shape")
    if mask is not None:
        p, t = p[mask], t[mask]
    n = len(p)
    if n == 0:
        raise ParameterError("no points to score")
    cm = np.zeros((256, 256), dtype=np.int64)
    np.add.at(cm, (p, t), 1)
    po = np.trace(cm) / n
    pe = float((cm.sum(axis=1) * cm.sum(axis=0)).sum()) / (n * n)
    out = {"overall_accuracy": float(po), "kappa": float((po - pe) / (1 - pe)) if pe < 1 else 1.0}
    for name, cls in (("building", (BUILDING,)), ("vegetation", (3, 4, 5))):
        pp, tt = np.isin(p, cls), np.isin(t, cls)
        tp = int(np.count_nonzero(pp & tt))
        out[f"{name}_precision"] = tp / max(int(pp.sum()), 1) if pp.any() else 1.0
        out[f"{name}_recall"] = tp / max(int(tt.sum()), 1) if tt.any() else 1.0
    out["n"] = n
    return out


_SPILL = np.dtype(
    [
        ("xyz", "<f8", (3,)),
        ("index", "<i8"),
        ("classification", "u1"),
        ("return_number", "u1"),
        ("number_of_returns", "u1"),
        ("intensity", "<u2"),
    ]
)


def classify_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    footprints: gpd.GeoDataFrame | None = None,
    *,
    crs=None,
    tile: float = 250.0,
    buffer: float = 30.0,
    chunk_points: int = 1_000_000,
    workdir: str | os.PathLike | None = None,
    progress: Progress | None = None,
    **params,
) -> dict[int, int]:
    """Classify ground, buildings and vegetation in a LAS/LAZ file, streaming, and
    write the result to ``dst`` (LAS/LAZ, every other field as read).

    Three passes: (1) the points are spilled, ``chunk_points`` at a time, into one
    temporary file per ``tile`` x ``tile`` metre tile grown by ``buffer`` metres
    (points near a border go to every tile whose buffer holds them; 35 bytes a point);
    (2) each tile is classified in memory by :func:`classify` (``params``, e.g.
    ``min_building_height``, ``water``, ground filter parameters) and the classes of
    its core points are stored in a memory-mapped array; (3) the input is streamed to
    a temporary output that is renamed onto ``dst`` at the end. ``buffer`` should
    exceed the ground filter's ``window`` (18 m) and half the largest building.

    **Memory**: one tile plus its buffer (its points times ~100 bytes, see
    :func:`classify`) plus one chunk; disk: about ``35 * N * (1 + 4 * buffer / tile)``
    bytes in ``workdir`` (default: beside ``dst``) plus ``N`` bytes of classes.
    Returns the count of each class written.
    """
    import shutil
    import tempfile

    import laspy

    from twin.crs import parse_crs, unit_factors
    from twin.errors import OutputError
    from twin.fileio import atomic_path
    from twin.points.io import _laz_backend, _open, file_crs, iter_chunks

    src, dst = Path(src), Path(dst)
    if dst.suffix.lower() not in (".las", ".laz"):
        raise OutputError("the file name must end in .las or .laz", path=dst)
    if src.resolve() == dst.resolve():
        raise OutputError("the output would overwrite the input", path=dst)
    for name, v in dict(tile=tile, buffer=buffer).items():
        if not (np.isfinite(v) and v > 0):
            raise ParameterError(f"{name} must be a positive number of metres, got {v}")
    if buffer >= tile:
        raise ParameterError(f"buffer ({buffer} m) must be smaller than the tile ({tile} m)")
    progress = ensure(progress)
    with _open(src) as reader:
        header = reader.header
        mins, maxs, total = np.array(header.mins), np.array(header.maxs), int(header.point_count)
    if total == 0:
        raise InputError("the file has no points", path=src)
    the_crs = parse_crs(crs, source=src) if crs is not None else file_crs(header, src)[0]
    if footprints is not None and the_crs is None:
        raise CRSError("footprints need the file's CRS; pass crs=", path=src)
    hf = unit_factors(the_crs)[0]
    t, b = tile / hf, buffer / hf
    ntx = max(1, int(math.ceil((maxs[0] - mins[0]) / t + 1e-9)))
    nty = max(1, int(math.ceil((maxs[1] - mins[1]) / t + 1e-9)))
    wd = Path(workdir) if workdir is not None else dst.parent
    wd.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=wd))
    try:
        # pass 1: spill points into buffered tiles
        nonempty = set()
        fields = ["classification", "return_number", "number_of_returns", "intensity"]
        done = 0
        with progress.step("classify: spill to tiles", total=total) as advance:
            for c in iter_chunks(src, chunk_points, crs=the_crs, fields=fields):
                rec = np.empty(len(c), dtype=_SPILL)
                rec["xyz"] = c.xyz
                rec["index"] = np.arange(done, done + len(c))
                for f in fields[:3]:
                    rec[f] = c.fields[f]
                rec["intensity"] = c.fields["intensity"]
                done += len(c)
                # the tiles whose buffered square holds each point (1, 2 or 4)
                keys = np.empty((len(c), 9), dtype=np.int64)
                col = 0
                for dx in (-1, 0, 1):
                    for dy in (-1, 0, 1):
                        ix = np.floor((c.x + dx * b - mins[0]) / t).astype(np.int64)
                        iy = np.floor((c.y + dy * b - mins[1]) / t).astype(np.int64)
                        np.clip(ix, 0, ntx - 1, out=ix)
                        np.clip(iy, 0, nty - 1, out=iy)
                        keys[:, col] = iy * ntx + ix
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
                    k = int(ks[a])
                    with open(tmpdir / f"{k}.bin", "ab") as fh:
                        rec[pt[a:e]].tofile(fh)
                    nonempty.add(k)
                advance(len(c))
        classes = np.lib.format.open_memmap(
            tmpdir / "classes.npy", mode="w+", dtype=np.uint8, shape=(total,)
        )
        classes[:] = 1
        # pass 2: classify tile by tile, keep the core points' classes
        with progress.step("classify: tiles", total=len(nonempty)) as advance:
            for k in sorted(nonempty):
                rec = np.fromfile(tmpdir / f"{k}.bin", dtype=_SPILL)
                ky, kx = divmod(k, ntx)
                x, y = rec["xyz"][:, 0], rec["xyz"][:, 1]
                hx = np.clip(np.floor((x - mins[0]) / t).astype(np.int64), 0, ntx - 1)
                hy = np.clip(np.floor((y - mins[1]) / t).astype(np.int64), 0, nty - 1)
                core = (hx == kx) & (hy == ky)
                if core.any():
                    cloud = PointCloud(
                        xyz=rec["xyz"],
                        fields={f: rec[f].copy() for f in (*fields[:3], "intensity")},
                        crs=the_crs,
                        source=str(src),
                    )
                    try:
                        lab = classify(cloud, footprints=footprints, **params)
                    except InputError:
                        # a tile whose points are all noise or share one x, y: keep them
                        lab = cloud.fields["classification"]
                    classes[rec["index"][core]] = lab[core]
                (tmpdir / f"{k}.bin").unlink()
                advance(1)
        classes.flush()
        # pass 3: copy the input with the new classes
        counts = np.zeros(256, dtype=np.int64)
        with _open(src) as reader, atomic_path(dst) as tmp:
            out_header = reader.header
            out_header.vlrs = [v for v in out_header.vlrs if "Copc" not in type(v).__name__]
            with (
                laspy.open(
                    tmp,
                    mode="w",
                    header=out_header,
                    do_compress=dst.suffix.lower() == ".laz",
                    laz_backend=_laz_backend(),
                ) as writer,
                progress.step("classify: write", total=total) as advance,
            ):
                pos = 0
                for points in reader.chunk_iterator(chunk_points):
                    if len(points) == 0:
                        break
                    cls = np.asarray(classes[pos : pos + len(points)])
                    pos += len(points)
                    points.classification = cls
                    counts += np.bincount(cls, minlength=256)[:256]
                    writer.write_points(points)
                    advance(len(points))
        del classes
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return {int(c): int(counts[c]) for c in np.flatnonzero(counts)}
