"""Ground classification (ASPRS class 2): a simple morphological filter (SMRF family).

The algorithm (after Pingel, Clarke and McBride 2013, written from the paper):

1. **Minimum surface.** The lowest and second-lowest point of every ``cell`` x ``cell``
   grid cell (known noise, classes 7 and 18, left out).
2. **Low outliers.** A cell minimum more than ``low_threshold`` below the median of its
   neighbours' minima (5 x 5 cells) is replaced by the cell's second-lowest point, or
   dropped when that one is low too.
3. **Voids.** Small holes (within 2 cells of data) are inpainted (mean of filled
   neighbours, front by front); larger voids become pits at the tile's lowest height
   (openings keep pits and steps, so ground beside a void is safe, and a roof at the
   edge of the data, which a smooth inpainting would extend into a plateau, stays
   removable).
4. **Progressive opening.** Grey openings with square windows of radius r = 1 .. R cells
   (R = ``window / cell``), each applied to the previous opened surface; a cell whose
   drop exceeds ``slope * r * cell`` is an object (building, tree, car). The grid is
   padded by R cells with an odd reflection (``2 z_edge - z``), which keeps planes
   planes, so steep slopes at the data's edge are not mistaken for objects.
   4b. **Edges** (``edge_step``, default 2 m; ``None`` turns 4b and 4c off): the
   filter runs again with a pit around the grid instead of the reflection; the cells
   flagged only then are objects when they stand more than ``edge_step`` above the
   ground beside them (a roof cut by the edge of the data ends in a wall; terrain
   continues smoothly) or have no ground beside them.
   4c. **Raised islands**: small groups and thin strips of unflagged cells (a seam or
   dip in a roof) more than ``edge_step / 2`` above the DTM made without them are
   objects (left as ground they would seed the DTM at roof height).
5. **Provisional DTM.** The minimum surface with the objects removed, inpainted (each
   empty cell takes the mean of its filled neighbours, front by front).
6. **Points.** A point is ground when ``|z - DTM(x, y)| <= threshold + scalar * s``,
   with ``s`` the DTM's local slope (rise over run), both bilinear at the point.

``window`` must exceed half the width of the largest building (a roof narrower than
``2 * window`` is removed); ``slope`` must exceed the steepest terrain's slope at the
scale of a cell. All parameters are in metres; the grid works in the CRS's units
(feet and US survey feet are converted; z follows :func:`twin.points.io.unit_factors`).

**Memory.** Steps 1 and 6 stream points (one chunk at a time); steps 2-5 work on the
grid tile by tile (``tile`` metres plus a buffer of ``window`` on each side), so peak
memory grows with the number of grid cells (area / cell^2, 8 bytes a cell, a few
grids) plus one tile's temporaries plus one chunk, not with the number of points.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twin.errors import InputError, ParameterError
from twin.points import _kernels as K
from twin.points.cloud import PointCloud
from twin.progress import Progress, ensure

GROUND = 2
NOISE_CLASSES = (7, 18)


@dataclass
class GridSpec:
    """A raster grid: lower-left corner ``(x0, y0)``, ``cell`` size and shape, in the
    CRS's horizontal units. Cell ``(j, i)`` covers ``x0 + i*cell .. x0 + (i+1)*cell``."""

    x0: float
    y0: float
    cell: float
    nx: int
    ny: int

    @classmethod
    def covering(cls, mins, maxs, cell: float, *, source=None) -> GridSpec:
        mins = np.asarray(mins, dtype=float)
        maxs = np.asarray(maxs, dtype=float)
        if not (np.all(np.isfinite(mins[:2])) and np.all(np.isfinite(maxs[:2]))):
            raise InputError("the cloud's bounds are not finite", path=source)
        if maxs[0] - mins[0] <= 0 and maxs[1] - mins[1] <= 0:
            raise InputError(
                "all points lie at one x, y position: there is no area to grid", path=source
            )
        x0 = math.floor(mins[0] / cell) * cell
        y0 = math.floor(mins[1] / cell) * cell
        nx = int(math.floor((maxs[0] - x0) / cell)) + 1
        ny = int(math.floor((maxs[1] - y0) / cell)) + 1
        if nx * ny > 2_000_000_000:
            raise ParameterError(f"a {nx} x {ny} grid is too large; use a larger cell")
        return cls(x0, y0, cell, nx, ny)

    def index(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Column and row (int64, clipped into the grid) of points."""
        ix = np.floor((x - self.x0) / self.cell).astype(np.int64)
        iy = np.floor((y - self.y0) / self.cell).astype(np.int64)
        np.clip(ix, 0, self.nx - 1, out=ix)
        np.clip(iy, 0, self.ny - 1, out=iy)
        return ix, iy


@dataclass
class GroundModel:
    """The provisional DTM of step 5 and its slope, on ``grid``: what labels points.

    ``dtm`` is in the CRS's z units; ``slope`` is dimensionless (metres per metre)."""

    grid: GridSpec
    dtm: np.ndarray
    slope: np.ndarray
    threshold: float
    scalar: float
    hf: float
    vf: float

    def height_above(self, xyz: np.ndarray) -> np.ndarray:
        """Height of points above the provisional DTM, in metres."""
        d = K.bilinear(self.dtm, self.grid.x0, self.grid.y0, self.grid.cell, xyz[:, 0], xyz[:, 1])
        return (xyz[:, 2] - d) * self.vf

    def is_ground(self, xyz: np.ndarray) -> np.ndarray:
        """Step 6: bool per point."""
        g = self.grid
        s = K.bilinear(self.slope, g.x0, g.y0, g.cell, xyz[:, 0], xyz[:, 1])
        return np.abs(self.height_above(xyz)) <= self.threshold + self.scalar * s


def _check_params(cell, slope, window, threshold, scalar, low_threshold, tile):
    for name, v in dict(cell=cell, window=window, threshold=threshold, tile=tile).items():
        if not (np.isfinite(v) and v > 0):
            raise ParameterError(f"{name} must be a positive number of metres, got {v}")
    for name, v in dict(slope=slope, scalar=scalar, low_threshold=low_threshold).items():
        if not (np.isfinite(v) and v >= 0):
            raise ParameterError(f"{name} must be >= 0, got {v}")
    if window < cell:
        raise ParameterError(f"window ({window} m) must be at least one cell ({cell} m)")


def _odd_pad(a: np.ndarray, p: int) -> np.ndarray:
    """Pad by ``p`` cells with an odd reflection about the edge (keeps planes planar)."""
    if p == 0:
        return a
    py, px = min(p, a.shape[0] - 1), min(p, a.shape[1] - 1)
    b = np.pad(a, ((py, py), (px, px)), mode="reflect", reflect_type="odd")
    if (py, px) != (p, p):
        b = np.pad(b, ((p - py, p - py), (p - px, p - px)), mode="edge")
    return b


def _fill_voids(sub: np.ndarray, radius: int) -> np.ndarray:
    """Step 3: small holes (within 2 cells of data) inpainted; larger voids become pits
    at the lowest height. Openings keep pits and steps, so ground beside a void is safe,
    and a roof at the data's edge is bounded (a smooth fill would extend it)."""
    from scipy import ndimage

    have = np.isfinite(sub)
    if have.all():
        return sub
    near = ndimage.binary_dilation(have, structure=np.ones((3, 3), bool), iterations=2)
    out = K.inpaint(np.where(near | have, sub, np.nan)) if radius else sub
    out = np.where(near, out, np.nanmin(sub))
    return out


def _edge_objects(
    filled: np.ndarray, obj: np.ndarray, radius: int, cell: float, slope: float, step: float
) -> np.ndarray:
    """Step 4b: objects cut by the grid's edge (roofs at the edge of the data).

    The odd reflection of step 4 continues a roof at the edge into a plateau wider
    than the window, so it survives the opening. Here the filter runs again with a
    pit around the grid: cells flagged only then are either steep terrain at the edge
    or such roofs. A connected group of them is an object when it stands more than
    ``step`` (z units) above the ground cells beside it (mean over its border): a roof
    ends in a wall, terrain continues; so is a group with no ground cell beside it (a
    dip in a roof, which would otherwise seed the DTM at roof height). ``filled``: the
    void-filled minimum surface; ``obj``: step 4's objects (same shape). Returns the
    cells to add to ``obj``."""
    from scipy import ndimage

    low = np.pad(filled, radius, mode="constant", constant_values=np.nanmin(filled) - 1e4)
    pit = K.progressive_objects(low, cell, slope, radius)[radius:-radius, radius:-radius]
    extra = pit & ~obj
    if not extra.any():
        return extra
    lab, n = ndimage.label(extra, structure=np.ones((3, 3), bool))
    ground = ~pit & ~obj
    drop = np.zeros(n + 1)
    cnt = np.zeros(n + 1)
    for dj, di in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        a = np.roll(lab, (dj, di), axis=(0, 1))  # the group label of the neighbour
        z_a = np.roll(filled, (dj, di), axis=(0, 1))
        edge = (a > 0) & ground
        # np.roll wraps around: drop pairs that crossed the grid's edge
        if dj == 1:
            edge[0, :] = False
        elif dj == -1:
            edge[-1, :] = False
        if di == 1:
            edge[:, 0] = False
        elif di == -1:
            edge[:, -1] = False
        np.add.at(drop, a[edge], z_a[edge] - filled[edge])
        np.add.at(cnt, a[edge], 1)
    keep = np.zeros(n + 1, bool)
    # a group with no ground beside it lies inside objects (a dip in a roof)
    keep[1:] = (cnt[1:] == 0) | (drop[1:] > step * np.maximum(cnt[1:], 1))
    return keep[lab]


def _raised_islands(sub: np.ndarray, obj: np.ndarray, step: float, max_cells: int) -> np.ndarray:
    """Step 4c: small groups of non-object cells that stand on objects.

    A seam or a dip in a roof can escape the opening; left as ground, it seeds the
    DTM at roof height under the whole roof. Each group of non-object cells other
    than the largest (at most ``max_cells``) is compared with the DTM made without
    it, and so is each thin strip of them (what a 3 x 3 binary opening removes):
    more than ``step`` (z units) above it on average, it is an object. A
    courtyard or the ground between parked cars sits at the level of the ground
    around and stays. Returns the cells to add to ``obj``."""
    from scipy import ndimage

    free = ~obj & np.isfinite(sub)
    lab, n = ndimage.label(free, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros(obj.shape, bool)
    size = np.bincount(lab.ravel(), minlength=n + 1)
    size[0] = 0
    small = (size <= max_cells) & (np.arange(n + 1) != int(np.argmax(size)))
    small[0] = False
    # thin strips (a seam one or two cells wide reaching the ground) count too
    thin = free & ~ndimage.binary_opening(free, structure=np.ones((3, 3), bool))
    cand = small[lab] | thin
    if not cand.any():
        return cand
    lab, n = ndimage.label(cand, structure=np.ones((3, 3), bool))
    around = K.inpaint(np.where(free & ~cand, sub, np.nan))
    if not np.isfinite(around).any():
        return np.zeros(obj.shape, bool)
    size = np.bincount(lab.ravel(), minlength=n + 1)
    rise = np.bincount(lab[cand], weights=(sub - around)[cand], minlength=n + 1)
    raised = rise > step * np.maximum(size, 1)
    raised[0] = False
    return raised[lab]


def ground_model(
    chunks: Callable[[], Iterable[np.ndarray]],
    mins,
    maxs,
    *,
    hf: float = 1.0,
    vf: float = 1.0,
    cell: float = 1.0,
    slope: float = 0.15,
    window: float = 18.0,
    threshold: float = 0.5,
    scalar: float = 1.25,
    low_threshold: float = 1.0,
    tile: float = 1000.0,
    edge_step: float | None = 2.0,
    source=None,
    progress: Progress | None = None,
) -> GroundModel:
    """Steps 1-5 of the filter over points given as a re-iterable of ``(N, 3)`` arrays
    (candidates only: leave noise out), inside ``mins``/``maxs`` (CRS units).

    ``hf``/``vf``: metres per horizontal/vertical unit. Memory: see the module doc."""
    _check_params(cell, slope, window, threshold, scalar, low_threshold, tile)
    progress = ensure(progress)
    grid = GridSpec.covering(mins, maxs, cell / hf, source=source)
    m1 = np.full((grid.ny, grid.nx), np.inf)
    m2 = np.full((grid.ny, grid.nx), np.inf)
    with progress.step("ground: minimum surface") as advance:
        for xyz in chunks():
            if len(xyz) == 0:
                continue
            ix, iy = grid.index(xyz[:, 0], xyz[:, 1])
            a1, a2 = K.grid_min2(ix, iy, np.ascontiguousarray(xyz[:, 2]), grid.nx, grid.ny)
            a1 = np.nan_to_num(a1, nan=np.inf)
            a2 = np.nan_to_num(a2, nan=np.inf)
            m2 = np.minimum(np.minimum(m2, a2), np.maximum(m1, a1))
            m1 = np.minimum(m1, a1)
            advance(len(xyz))
    m1[np.isinf(m1)] = np.nan
    m2[np.isinf(m2)] = np.nan
    del a1, a2
    if not np.isfinite(m1).any():
        raise InputError("no points to classify", path=source)
    surface = K.remove_low_outliers(m1, m2, low_threshold / vf, 2)
    del m1, m2
    radius = max(1, int(math.ceil(window / cell)))
    buf = radius + 4
    tcells = max(64, int(round(tile / cell)))
    dtm = np.full(surface.shape, np.nan)
    tiles = [(j, i) for j in range(0, grid.ny, tcells) for i in range(0, grid.nx, tcells)]
    with progress.step("ground: morphological filter", total=len(tiles)) as advance:
        for j, i in tiles:
            ja, jb = max(j - buf, 0), min(j + tcells + buf, grid.ny)
            ia, ib = max(i - buf, 0), min(i + tcells + buf, grid.nx)
            sub = surface[ja:jb, ia:ib]
            if np.isfinite(sub).any():
                filled = _fill_voids(sub, radius)
                padded = _odd_pad(filled, radius)
                obj = K.progressive_objects(padded, cell / vf, slope, radius)
                obj = obj[radius : radius + sub.shape[0], radius : radius + sub.shape[1]]
                if edge_step is not None and min(sub.shape) > 2 * radius:
                    obj |= _edge_objects(filled, obj, radius, cell / vf, slope, edge_step / vf)
                if edge_step is not None:
                    obj |= _raised_islands(sub, obj, edge_step / 2 / vf, int(2500 / cell**2))
                pro = np.where(obj | ~np.isfinite(sub), np.nan, sub)
                if not np.isfinite(pro).any():
                    pro = filled  # everything flagged: keep the minimum surface
                part = K.inpaint(pro)
                cj, ci = j - ja, i - ia
                core = part[cj : cj + min(tcells, grid.ny - j), ci : ci + min(tcells, grid.nx - i)]
                dtm[j : j + core.shape[0], i : i + core.shape[1]] = core
            advance(1)
    if not np.isfinite(dtm).all():
        dtm = K.inpaint(dtm)
    gy, gx = np.gradient(dtm * vf, cell) if min(dtm.shape) > 1 else (dtm * 0, dtm * 0)
    slope_grid = np.hypot(gx, gy)
    return GroundModel(grid, dtm, slope_grid, threshold, scalar, hf, vf)


def _check_projected(crs, source) -> None:
    from twin.errors import CRSError

    if crs is not None and crs.is_geographic:
        raise CRSError(
            f"the ground filter needs projected coordinates, not degrees ({crs.name}); "
            "reproject first (twin.points.reproject, e.g. to the UTM zone)",
            path=source,
        )


def _candidates(cloud: PointCloud) -> np.ndarray:
    cls = cloud.fields.get("classification")
    if cls is None:
        return np.ones(len(cloud), dtype=bool)
    return ~np.isin(cls, NOISE_CLASSES)


def cloud_model(cloud: PointCloud, **params) -> tuple[GroundModel, np.ndarray]:
    """Steps 1-5 for an in-memory cloud: the :class:`GroundModel` and the candidate
    mask (non-noise points). ``params`` as :func:`ground_model` (metres)."""
    from twin.points.io import unit_factors

    if len(cloud) == 0:
        raise InputError("the cloud has no points", path=cloud.source)
    if not np.all(np.isfinite(cloud.xyz)):
        raise InputError("the cloud has NaN or infinite coordinates", path=cloud.source)
    _check_projected(cloud.crs, cloud.source)
    hf, vf = unit_factors(cloud.crs)
    cand = _candidates(cloud)
    pts = cloud.xyz[cand]
    if len(pts) == 0:
        raise InputError("every point is classed as noise", path=cloud.source)
    mins = np.array([cloud.xyz[:, i].min() for i in range(3)])
    maxs = np.array([cloud.xyz[:, i].max() for i in range(3)])
    model = ground_model(lambda: [pts], mins, maxs, hf=hf, vf=vf, source=cloud.source, **params)
    return model, cand


def height_above_ground(
    cloud: PointCloud, *, progress: Progress | None = None, **params
) -> np.ndarray:
    """Height of every point above the filter's provisional DTM, in metres (float64;
    noise points included). ``params`` as :func:`classify_ground`. The feature the
    building and vegetation classes start from. Memory: a grid plus N floats."""
    model, _ = cloud_model(cloud, progress=progress, **params)
    return model.height_above(cloud.xyz)


def classify_ground(
    cloud: PointCloud,
    cell: float = 1.0,
    slope: float = 0.15,
    window: float = 18.0,
    threshold: float = 0.5,
    scalar: float = 1.25,
    *,
    low_threshold: float = 1.0,
    tile: float = 1000.0,
    write: bool = False,
    reset: bool = False,
    progress: Progress | None = None,
) -> np.ndarray:
    """Ground points of an in-memory cloud: a bool array (True = ground).

    Parameters are in metres (see the module doc). With ``write``, the result goes into
    ``cloud.fields["classification"]``: points of class 0, 1 or 2 become 2 (ground) or
    1 (unclassified); every other class (buildings, water, ... from the provider) is
    left unchanged, unless ``reset``, which sets every non-noise point to 2 or 1.
    Noise (7, 18) is never ground and never changed.
    Raises InputError for an empty cloud or one whose points all share one x, y.
    """
    model, cand = cloud_model(
        cloud,
        cell=cell,
        slope=slope,
        window=window,
        threshold=threshold,
        scalar=scalar,
        low_threshold=low_threshold,
        tile=tile,
        progress=progress,
    )
    with ensure(progress).step("ground: label points", total=len(cloud)) as advance:
        ground = model.is_ground(cloud.xyz) & cand
        advance(len(cloud))
    if write:
        _write_classes(cloud.classification, ground, cand, reset)
    return ground


def _write_classes(cls: np.ndarray, ground: np.ndarray, cand: np.ndarray, reset: bool) -> None:
    """Write the result into ASPRS classes in place (rules in :func:`classify_ground`)."""
    if reset:
        cls[cand] = 1
        cls[ground] = GROUND
    else:
        free = cls <= GROUND  # 0 created, 1 unclassified, 2 ground: ours to decide
        cls[free & ~ground] = 1
        cls[free & ground] = GROUND


def classify_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    crs=None,
    cell: float = 1.0,
    slope: float = 0.15,
    window: float = 18.0,
    threshold: float = 0.5,
    scalar: float = 1.25,
    low_threshold: float = 1.0,
    reset: bool = False,
    chunk_points: int = 1_000_000,
    progress: Progress | None = None,
) -> dict:
    """Classify ground in a LAS/LAZ file and write the result to ``dst`` (LAS/LAZ),
    streaming: two passes over ``src``, ``chunk_points`` at a time; the output is
    written chunk by chunk to a temporary name and renamed at the end; class rules as
    :func:`classify_ground` with ``write=True``. Peak memory: one chunk plus the grid
    (see the module doc). Returns the count of each class written.
    """
    import laspy

    from twin.errors import OutputError
    from twin.fileio import atomic_path
    from twin.points.io import _laz_backend, _open, file_crs, iter_chunks, unit_factors

    src, dst = Path(src), Path(dst)
    if dst.suffix.lower() not in (".las", ".laz"):
        raise OutputError("the file name must end in .las or .laz", path=dst)
    if src.resolve() == dst.resolve():
        raise OutputError("the output would overwrite the input", path=dst)
    progress = ensure(progress)
    with _open(src) as reader:
        header = reader.header
        mins, maxs, total = np.array(header.mins), np.array(header.maxs), header.point_count
    if total == 0:
        raise InputError("the file has no points", path=src)
    the_crs = None
    if crs is not None:
        from twin.crs import parse_crs

        the_crs = parse_crs(crs, source=src)
    else:
        the_crs = file_crs(header, src)[0]
    _check_projected(the_crs, src)
    hf, vf = unit_factors(the_crs)

    def chunks():
        for c in iter_chunks(src, chunk_points, fields=["classification"]):
            yield c.xyz[_candidates(c)]

    model = ground_model(
        chunks,
        mins,
        maxs,
        hf=hf,
        vf=vf,
        cell=cell,
        slope=slope,
        window=window,
        threshold=threshold,
        scalar=scalar,
        low_threshold=low_threshold,
        source=src,
        progress=progress,
    )
    counts = np.zeros(256, dtype=np.int64)
    with _open(src) as reader, atomic_path(dst) as tmp:
        out_header = reader.header
        # the output is a plain LAS/LAZ: drop the COPC records that would claim otherwise
        out_header.vlrs = [v for v in out_header.vlrs if "Copc" not in type(v).__name__]
        with (
            laspy.open(
                tmp,
                mode="w",
                header=out_header,
                do_compress=dst.suffix.lower() == ".laz",
                laz_backend=_laz_backend(),
            ) as writer,
            progress.step("ground: label and write", total=total) as advance,
        ):
            for points in reader.chunk_iterator(chunk_points):
                if len(points) == 0:
                    break
                arr = points.array
                xyz = np.column_stack(
                    [
                        arr[d] * out_header.scales[k] + out_header.offsets[k]
                        for k, d in enumerate("XYZ")
                    ]
                )
                cls = np.array(points.classification)
                cand = ~np.isin(cls, NOISE_CLASSES)
                ground = model.is_ground(xyz) & cand
                _write_classes(cls, ground, cand, reset)
                points.classification = cls
                counts += np.bincount(cls, minlength=256)[:256]
                writer.write_points(points)
                advance(len(points))
    return {int(c): int(counts[c]) for c in np.flatnonzero(counts)}
