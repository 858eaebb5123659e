"""LoD2 buildings from footprints and roof points: :func:`buildings_from_points`.

For every footprint:

1. **Roof points**: building points (ASPRS class 6; the cloud is classified with
   :func:`twin.points.classify` first when it has none) inside the footprint shrunk
   by ``edge`` metres (so that wall hits along the outline stay out).
2. **Planes**: sequential RANSAC (candidate planes through random point triplets,
   scored in parallel by the Numba kernel :func:`twin.mesh._roof_kernels.plane_scores`),
   each best plane refined by least squares on its inliers (``threshold`` metres),
   its inliers removed, until fewer than ``min_plane_points`` remain. Planes steeper
   than ``max_slope`` degrees (walls) are never candidates. Every roof point is then
   given to the plane nearest it and the planes refitted.
3. **Roof polygons**: the roof is the lower envelope of the planes, ``z = min_k
   plane_k(x, y)`` (flat, shed, gable, hip and mansard roofs are): each plane's
   region is where it is the lowest, a convex polygon cut by the plane-intersection
   lines, then clipped to the footprint. Planes that are nowhere the lowest are
   dropped. When the envelope explains fewer than ``min_explained`` of the roof
   points (a roof with parts at different heights), or the planes are too few for
   the points, the building becomes **LoD1**: a flat roof at the median roof-point
   height.
4. **Walls down to the terrain**: the base is the footprint's ``base_height`` where
   given, else the lowest DEM height under the footprint (as in
   :func:`twin.mesh.buildings.building_meshes`), else a low percentile of the ground
   points (class 2) within ``ground_ring`` metres around it.
   The solid (floor, walls along every ring, roof pieces) comes from the same builder
   as :mod:`twin.mesh.buildings`: closed, outward, one per building, with its id.

**Sparse or missing points**: a footprint with fewer than ``min_density`` roof points
per square metre is LoD1 (median height); one with no points gets its ``height``
attribute when it has one (LoD1, ``source="footprint"``) and is otherwise skipped.
Skipped and repaired footprints are listed in :attr:`BuildingsResult.skipped` /
``repaired`` with the reason, and warned about; the others still build.

Attributes of each :class:`~twin.mesh.buildings.BuildingMesh`: ``building_id``,
``lod`` (1 or 2), ``roof_type`` (flat, shed, gable, hip, multi-plane), ``height``
(ridge above base, m), ``eave_height`` (lowest roof height above the base),
``base_height`` (absolute, the cloud CRS's heights), ``ridge_z`` (absolute),
``base_source``, ``source`` (``lidar``/``footprint``), ``points``, ``roof_median_z``
(median roof-point height, absolute) and ``planes``
(slope and aspect in degrees, inliers, RMSE in metres).

**Memory** grows with the cloud (its building and ground points, a point-in-polygon
index) plus, per footprint, its roof points times the RANSAC candidates (a count
each, in parallel).
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from twin.crs import LocalFrame, parse_crs, unit_factors
from twin.errors import CRSError, InputError, ParameterError
from twin.mesh.buildings import BuildingMesh, _base_from_dem, _Roof, _roof_for, _solid
from twin.progress import Progress, ensure

log = logging.getLogger(__name__)

BUILDING, GROUND = 6, 2


@dataclass(eq=False)
class RoofPlane:
    """A roof plane ``n . (p - origin) + d = 0`` (unit normal pointing up), with the
    number of its ``points`` and their ``rmse`` (m)."""

    normal: np.ndarray
    d: float
    points: int = 0
    rmse: float = 0.0

    @property
    def slope_deg(self) -> float:
        return math.degrees(math.acos(min(1.0, abs(float(self.normal[2])))))

    @property
    def aspect_deg(self) -> float:
        """Downhill direction, degrees clockwise from north (y)."""
        return math.degrees(math.atan2(self.normal[0], self.normal[1])) % 360.0

    def z(self, x, y) -> np.ndarray:
        n = self.normal
        return -(self.d + n[0] * np.asarray(x) + n[1] * np.asarray(y)) / n[2]

    def to_dict(self) -> dict:
        return {
            "slope_deg": round(self.slope_deg, 3),
            "aspect_deg": round(self.aspect_deg, 3),
            "points": int(self.points),
            "rmse": round(self.rmse, 4),
        }


@dataclass
class BuildingsResult:
    """``buildings`` (solids in ENU), the ``frame``, ``skipped`` and ``repaired``
    footprints as ``(building_id, reason)`` pairs, and ``counts`` per LoD/source."""

    buildings: list[BuildingMesh]
    frame: LocalFrame
    skipped: list[tuple[str, str]] = field(default_factory=list)
    repaired: list[tuple[str, str]] = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    crs: object = None


# ------------------------------------------------------------------------ planes
def _fit(xyz: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares plane (PCA) through points: (unit normal up, d)."""
    c = xyz.mean(axis=0)
    _, _, vt = np.linalg.svd(xyz - c, full_matrices=False)
    n = vt[-1]
    if n[2] < 0:
        n = -n
    return n, float(-n @ c)


def detect_planes(
    xyz: np.ndarray,
    threshold: float = 0.15,
    min_points: int = 15,
    max_planes: int = 8,
    max_slope: float = 70.0,
    candidates: int = 400,
    seed: int = 0,
) -> tuple[list[RoofPlane], np.ndarray]:
    """Roof planes of points (metres, ideally centred): sequential RANSAC (module doc).

    Returns ``(planes, labels)``: ``labels[i]`` the plane of point ``i`` (nearest
    within ``threshold``), -1 for none. Deterministic for a given ``seed``."""
    from twin.mesh._roof_kernels import plane_scores

    xyz = np.ascontiguousarray(xyz, dtype=np.float64)
    rng = np.random.Generator(np.random.PCG64(seed))
    min_nz = math.cos(math.radians(max_slope))
    left = np.arange(len(xyz))
    planes: list[RoofPlane] = []
    while len(left) >= max(min_points, 3) and len(planes) < max_planes:
        pts = xyz[left]
        tri = rng.integers(0, len(pts), size=(candidates, 3))
        counts, normals, offsets = plane_scores(pts, tri, threshold, min_nz)
        k = int(np.argmax(counts))
        if counts[k] < min_points:
            break
        n, d = normals[k], offsets[k]
        for _ in range(3):  # refine on the inliers
            inl = np.abs(pts @ n + d) <= threshold
            if inl.sum() < 3:
                break
            n, d = _fit(pts[inl])
        inl = np.abs(pts @ n + d) <= threshold
        if inl.sum() < min_points or n[2] < min_nz:
            break
        planes.append(RoofPlane(n, d))
        left = left[~inl]
    labels = np.full(len(xyz), -1, dtype=np.int64)
    if not planes:
        return planes, labels
    res = np.abs(np.column_stack([xyz @ p.normal + p.d for p in planes]))
    best = np.argmin(res, axis=1)
    ok = res[np.arange(len(xyz)), best] <= threshold
    labels[ok] = best[ok]
    kept = []
    for i, p in enumerate(planes):
        sel = labels == i
        if sel.sum() >= min_points:
            p.normal, p.d = _fit(xyz[sel])
            r = xyz[sel] @ p.normal + p.d
            p.points, p.rmse = int(sel.sum()), float(np.sqrt(np.mean(r**2)))
            kept.append(p)
    if len(kept) != len(planes):
        return detect_planes_relabel(xyz, kept, threshold)
    return planes, labels


def detect_planes_relabel(xyz, planes, threshold):
    labels = np.full(len(xyz), -1, dtype=np.int64)
    if planes:
        res = np.abs(np.column_stack([xyz @ p.normal + p.d for p in planes]))
        best = np.argmin(res, axis=1)
        ok = res[np.arange(len(xyz)), best] <= threshold
        labels[ok] = best[ok]
    return planes, labels


def _merge_coplanar(planes: list[RoofPlane], xyz, labels, angle=3.0, offset=0.3):
    """Merge planes whose normals differ by less than ``angle`` degrees and whose
    offsets at their points differ by less than ``offset`` metres."""
    changed = True
    while changed and len(planes) > 1:
        changed = False
        for i in range(len(planes)):
            for j in range(i + 1, len(planes)):
                a, b = planes[i], planes[j]
                if math.degrees(math.acos(min(1.0, float(a.normal @ b.normal)))) > angle:
                    continue
                pts = xyz[(labels == i) | (labels == j)]
                if (
                    np.max(np.abs(pts @ a.normal + a.d)) > offset + 0.5
                    and np.max(np.abs(pts @ b.normal + b.d)) > offset + 0.5
                ):
                    continue
                # same plane split in two: refit together
                sel = (labels == i) | (labels == j)
                n, d = _fit(xyz[sel])
                r = xyz[sel] @ n + d
                planes[i] = RoofPlane(n, d, int(sel.sum()), float(np.sqrt(np.mean(r**2))))
                labels[labels == j] = i
                labels[labels > j] -= 1
                del planes[j]
                changed = True
                break
            if changed:
                break
    return planes, labels


# ------------------------------------------------------------------------ roof polygons
def _clip_halfplane(poly: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """Convex polygon (K, 2) clipped to ``a + b x + c y <= 0`` (Sutherland-Hodgman)."""
    if len(poly) == 0:
        return poly
    out = []
    val = a + poly @ np.array([b, c])
    k = len(poly)
    for i in range(k):
        p, q = poly[i], poly[(i + 1) % k]
        vp, vq = val[i], val[(i + 1) % k]
        if vp <= 0:
            out.append(p)
        if (vp < 0 < vq) or (vq < 0 < vp):
            t = vp / (vp - vq)
            out.append(p + t * (q - p))
    return np.asarray(out).reshape(-1, 2)


def envelope_roof(planes: list[RoofPlane], bounds, origin) -> tuple[_Roof, list[int]]:
    """The lower envelope of ``planes`` (in coordinates relative to ``origin``) as a
    :class:`~twin.mesh.buildings._Roof` over (a box around) ``bounds``; also the
    indices of the planes that have a region."""
    from shapely.geometry import Polygon

    x0, y0, x1, y1 = bounds
    pad = 1.0 + (x1 - x0) + (y1 - y0)
    ox, oy = origin
    box = np.array(
        [[x0 - pad, y0 - pad], [x1 + pad, y0 - pad], [x1 + pad, y1 + pad], [x0 - pad, y1 + pad]]
    ) - np.array([ox, oy])
    coef = []
    for p in planes:  # z = c0 + c1 x + c2 y
        n = p.normal
        coef.append((-p.d / n[2], -n[0] / n[2], -n[1] / n[2]))
    coef = np.asarray(coef)
    regions, plist, used = [], [], []
    for k in range(len(planes)):
        poly = box
        for j in range(len(planes)):
            if j != k:
                poly = _clip_halfplane(poly, *(coef[k] - coef[j]))
        if len(poly) >= 3:
            g = Polygon(poly + np.array([ox, oy]))
            if g.area > 1e-6:
                regions.append(g)
                plist.append(tuple(float(c) for c in coef[k]))
                used.append(k)
    return _Roof(regions, plist, (ox, oy)), used


def _roof_type(planes: list[RoofPlane]) -> str:
    sloped = [p for p in planes if p.slope_deg >= 5.0]
    if not sloped:
        return "flat"
    if len(planes) == 1:
        return "shed"
    if len(sloped) == 2 and len(planes) == 2:
        a, b = sloped
        if float(a.normal[:2] @ b.normal[:2]) < 0:
            return "gable"
    if len(sloped) == 4 and len(planes) == 4:
        return "hip"
    return "multi-plane"


# ------------------------------------------------------------------------ one building
def _roof_points(xyz, tree_pts, geom, edge):
    import shapely

    shrunk = geom.buffer(-edge) if edge > 0 else geom
    if shrunk.is_empty:
        shrunk = geom
    idx = tree_pts.query(shrunk, predicate="contains")
    if len(idx) == 0:
        idx = tree_pts.query(geom, predicate="intersects")
    del shapely
    return np.sort(idx)


def _flat_roof(geom, z: float) -> _Roof:
    return _roof_for(geom, "flat", z, z, z)


@dataclass
class _Fit:
    roof: _Roof
    lod: int
    roof_type: str
    planes: list
    why: str = ""


def _fit_roof(pts: np.ndarray, geom, params: dict) -> _Fit:
    """The roof of one footprint from its roof points (metres, map coordinates)."""
    area = geom.area
    if len(pts) < params["min_density"] * area or len(pts) < 3:
        return _Fit(_flat_roof(geom, float(np.median(pts[:, 2]))), 1, "flat", [], "sparse")
    origin = pts.mean(axis=0)
    rel = pts - origin
    planes, labels = detect_planes(
        rel,
        threshold=params["threshold"],
        min_points=max(params["min_plane_points"], int(0.03 * len(pts))),
        max_planes=params["max_planes"],
        max_slope=params["max_slope"],
        seed=params["seed"],
    )
    planes, labels = _merge_coplanar(planes, rel, labels)
    median = float(np.median(pts[:, 2]))
    if not planes:
        return _Fit(_flat_roof(geom, median), 1, "flat", [], "no roof plane found")
    explained = np.count_nonzero(labels >= 0) / len(pts)
    if explained < params["min_explained"]:
        return _Fit(_flat_roof(geom, median), 1, "flat", planes, "planes explain too few points")
    # flat planes: exactly horizontal at their mean height
    for i, p in enumerate(planes):
        if p.slope_deg < params["flat_slope"]:
            zmean = float(np.mean(rel[labels == i, 2]))
            p.normal = np.array([0.0, 0.0, 1.0])
            p.d = -zmean
    b = geom.bounds
    roof, used = envelope_roof(
        planes, (b[0] - origin[0], b[1] - origin[1], b[2] - origin[0], b[3] - origin[1]), (0, 0)
    )
    env = np.min(np.column_stack([p.z(rel[:, 0], rel[:, 1]) for p in planes]), axis=1)
    ok = np.abs(rel[:, 2] - env) <= 2 * params["threshold"]
    if ok.mean() < params["min_explained"]:
        return _Fit(_flat_roof(geom, median), 1, "flat", planes, "roof parts at several heights")
    planes = [planes[k] for k in used]
    shifted = _Roof(
        [_shift(r, origin[0], origin[1]) for r in roof.regions],
        [(c0 + origin[2], c1, c2) for c0, c1, c2 in roof.planes],
        (float(origin[0]), float(origin[1])),
    )
    return _Fit(shifted, 2, _roof_type(planes), planes)


def _shift(poly, dx, dy):
    import shapely

    return shapely.transform(poly, lambda xy: xy + np.array([dx, dy]))


def _valid_parts(geom):
    """(polygons, note): the polygonal parts of a footprint, repaired when invalid."""
    import shapely

    from twin.mesh.footprints import _polygonal_part

    note = ""
    if geom is None or geom.is_empty:
        return [], "empty geometry"
    if not geom.is_valid:
        reason = shapely.is_valid_reason(geom)
        geom = _polygonal_part(shapely.make_valid(geom))
        if geom is None or geom.is_empty:
            return [], f"invalid ring ({reason}) and nothing polygonal left after repair"
        note = f"invalid ring ({reason}) repaired with make_valid"
    parts = [g for g in getattr(geom, "geoms", [geom]) if g.area > 1e-6]
    return parts, note


# ------------------------------------------------------------------------ public
def buildings_from_points(
    points,
    footprints,
    dem=None,
    frame: LocalFrame | None = None,
    *,
    crs=None,
    threshold: float = 0.15,
    min_density: float = 1.0,
    min_plane_points: int = 15,
    min_explained: float = 0.8,
    max_planes: int = 8,
    max_slope: float = 70.0,
    flat_slope: float = 3.0,
    edge: float = 0.3,
    ground_ring: float = 3.0,
    seed: int = 0,
    progress: Progress | None = None,
) -> BuildingsResult:
    """LoD2 (or LoD1) solids of ``footprints`` from roof ``points`` (module doc).

    ``points``: LAS/LAZ path or :class:`~twin.points.PointCloud` in a projected CRS
    (``crs`` when the file has none). ``footprints``: a footprint file path or a
    GeoDataFrame (as :func:`twin.mesh.read_footprints` returns; reprojected to the
    cloud's CRS). ``dem``: a :class:`~twin.terrain.dem.Dem` or path for the bases
    (else ground points). ``frame``: the output ENU frame (default: anchored at the
    footprints' centre). Lengths in metres, slopes in degrees, ``min_density`` in
    points per m². Raises :class:`InputError` for an empty cloud or footprint layer,
    :class:`CRSError` when a CRS is missing or geographic.
    """
    import geopandas as gpd
    import shapely

    from twin.points.cloud import PointCloud

    if not (threshold > 0 and min_density >= 0 and 0 < min_explained <= 1):
        raise ParameterError("threshold must be > 0, min_density >= 0, min_explained in (0, 1]")
    progress = ensure(progress)
    if not isinstance(points, PointCloud):
        from twin.points.io import read

        points = read(points, crs=crs, fields=["classification"])
    elif crs is not None and points.crs is None:
        from dataclasses import replace

        points = replace(points, crs=parse_crs(crs))
    if len(points) == 0:
        raise InputError("the point cloud is empty", path=points.source)
    the_crs = points.require_crs()
    if the_crs.is_geographic:
        raise CRSError(
            "roof planes need a projected CRS in metres or feet; reproject the cloud first",
            path=points.source,
        )
    if not isinstance(footprints, gpd.GeoDataFrame):
        from twin.mesh.footprints import read_footprints

        footprints = read_footprints(footprints)
    if len(footprints) == 0:
        raise InputError("the footprint layer is empty")
    if footprints.crs is None:
        raise CRSError("the footprints have no CRS", path=footprints.attrs.get("path"))
    fp = footprints if parse_crs(footprints.crs).equals(the_crs) else footprints.to_crs(the_crs)
    if dem is not None and not hasattr(dem, "heights"):
        from twin.terrain.dem import read_dem

        dem = read_dem(dem)
    hf, vf = unit_factors(the_crs)
    scale = np.array([hf, hf, vf])

    cls = points.fields.get("classification")
    if cls is None or not np.any(cls == BUILDING):
        from twin.points.classify import classify

        with progress.step("buildings: classify points"):
            cls = classify(points, footprints=fp)
    xyz_m = points.xyz * scale
    bld = np.flatnonzero(cls == BUILDING)
    gnd = np.flatnonzero(cls == GROUND)
    bxyz = xyz_m[bld]
    gxyz = xyz_m[gnd]
    tree_b = shapely.STRtree(shapely.points(bxyz[:, 0], bxyz[:, 1]))
    tree_g = shapely.STRtree(shapely.points(gxyz[:, 0], gxyz[:, 1])) if len(gxyz) else None

    ids = (
        fp["building_id"].astype(str).tolist()
        if "building_id" in fp.columns
        else [f"b{i}" for i in range(len(fp))]
    )
    geoms_m = [
        shapely.transform(g, lambda xy: xy * hf) if g is not None else None for g in fp.geometry
    ]
    bases = np.full(len(fp), np.nan)
    base_src = np.full(len(fp), "ground points", dtype=object)
    if "base_height" in fp.columns:
        bases = np.asarray(fp["base_height"], dtype=np.float64) * vf
        base_src[np.isfinite(bases)] = "column"
    need = ~np.isfinite(bases)
    if dem is not None and need.any():
        geoms = [fp.geometry.iloc[i] for i in np.flatnonzero(need)]
        bases[need] = _base_from_dem(geoms, fp.crs, dem) * unit_factors(dem.crs)[1]
        base_src[need & np.isfinite(bases)] = "dem"
    params = dict(
        threshold=threshold,
        min_density=min_density,
        min_plane_points=min_plane_points,
        min_explained=min_explained,
        max_planes=max_planes,
        max_slope=max_slope,
        flat_slope=flat_slope,
        seed=seed,
    )
    result = BuildingsResult([], frame, crs=the_crs)
    pending = []
    with progress.step("buildings: roofs", total=len(fp)) as advance:
        for i, bid in enumerate(ids):
            advance(1)
            parts, note = _valid_parts(geoms_m[i])
            if not parts:
                result.skipped.append((bid, note))
                continue
            if note:
                result.repaired.append((bid, note))
            geom = shapely.union_all(parts) if len(parts) > 1 else parts[0]
            base = bases[i]
            base_source = base_src[i]
            if not np.isfinite(base):
                if tree_g is not None:
                    ring = geom.buffer(ground_ring).difference(geom)
                    gi = tree_g.query(ring, predicate="contains")
                    if len(gi):
                        base = float(np.percentile(gxyz[gi, 2], 5))
            if not np.isfinite(base):
                result.skipped.append((bid, "no base height (no DEM or ground points near it)"))
                continue
            idx = _roof_points(bxyz, tree_b, geom, edge)
            pts = bxyz[idx]
            pts = pts[pts[:, 2] > base + 1.0]
            row = fp.iloc[i]
            source = "lidar"
            if len(pts) == 0:
                h = float(row["height"]) if "height" in fp.columns else float("nan")
                if not (h > 0):
                    result.skipped.append((bid, "no roof points over the footprint"))
                    continue
                fit = _Fit(_flat_roof(geom, base + h), 1, "flat", [], "no roof points")
                source = "footprint"
            else:
                fit = _fit_roof(pts, geom, params)
            try:
                solid = _build(parts, fit.roof, base)
                low = solid[0][solid[1][solid[2] == 1].ravel(), 2].min()
                if fit.lod == 2 and low < base + 0.5:
                    raise InputError("the roof planes reach down to the ground")
            except InputError as exc:
                fit = _Fit(_flat_roof(geom, float(np.median(pts[:, 2]))), 1, "flat", [], str(exc))
                try:
                    solid = _build(parts, fit.roof, base)
                except InputError as exc2:
                    result.skipped.append((bid, f"solid failed: {exc2}"))
                    continue
            v, f, k = solid
            top = v[:, 2].max()
            roof_v = v[v[:, 2] > base + 1e-6]
            attrs = {
                "building_id": bid,
                "lod": fit.lod,
                "roof_type": fit.roof_type,
                "height": float(top - base),
                "eave_height": float(roof_v[:, 2].min() - base) if len(roof_v) else 0.0,
                "base_height": float(base / vf),
                "ridge_z": float(top / vf),
                "base_source": base_source,
                "source": source,
                "points": int(len(pts)),
                "roof_median_z": float(np.median(pts[:, 2]) / vf) if len(pts) else float(top / vf),
                "planes": [p.to_dict() for p in fit.planes] if fit.lod == 2 else [],
            }
            if fit.why:
                attrs["lod1_reason"] = fit.why
            pending.append((attrs, v / scale, f, k))
    if result.skipped:
        warnings.warn(
            f"{len(result.skipped)} footprints skipped: "
            + "; ".join(f"{b}: {r}" for b, r in result.skipped[:5])
            + (" ..." if len(result.skipped) > 5 else ""),
            stacklevel=2,
        )
    for bid, why in result.repaired:
        log.warning("footprint %s: %s", bid, why)
    if frame is None:
        c = np.asarray(fp.geometry.union_all().centroid.coords)[0]
        z0 = float(np.median(gxyz[:, 2]) / vf) if len(gxyz) else 0.0
        frame = LocalFrame.at(float(c[0]), float(c[1]), z0, crs=the_crs)
    result.frame = frame
    if pending:
        allv = np.concatenate([p[1] for p in pending])
        enu = frame.from_crs(allv, the_crs)
        start = 0
        for attrs, v, f, k in pending:
            result.buildings.append(
                BuildingMesh(
                    id=attrs["building_id"],
                    vertices=enu[start : start + len(v)],
                    faces=f.astype(np.uint32),
                    face_kind=k,
                    attributes=attrs,
                )
            )
            start += len(v)
    lods = [b.attributes["lod"] for b in result.buildings]
    result.counts = {
        "footprints": len(fp),
        "lod2": lods.count(2),
        "lod1": lods.count(1),
        "skipped": len(result.skipped),
        "repaired": len(result.repaired),
    }
    return result


def _build(parts, roof: _Roof, base: float):
    vs, fs, ks = [], [], []
    off = 0
    for part in parts:
        v, f, k = _solid(part, roof, base)
        if len(f) == 0:
            continue
        vs.append(v)
        fs.append(f + off)
        ks.append(k)
        off += len(v)
    if not vs:
        raise InputError("the footprint gave no solid")
    return np.concatenate(vs), np.concatenate(fs), np.concatenate(ks)


__all__ = [
    "BuildingsResult",
    "RoofPlane",
    "buildings_from_points",
    "detect_planes",
    "envelope_roof",
]
