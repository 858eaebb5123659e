"""LoD1/LoD2 building solids from footprints: :func:`building_meshes`, :func:`merge_meshes`.

Each building becomes a closed, watertight, outward-oriented solid (one shell per
polygon of a MultiPolygon): a floor (the footprint, facing down) at the base
height, vertical walls along every ring (courtyard holes included) up to the roof,
and a roof.

Heights, all in the footprint CRS's height system (ellipsoidal by default):

* **base**: the ``base_height`` column where it is given and finite, else the
  *minimum* DEM height under the footprint (bilinear DEM samples at its vertices
  and at every DEM pixel centre inside it), so that no wall floats above the
  ground on a slope; ``attributes["base_source"]`` says which ("column" or "dem").
* **roof**: ``base + height`` (``height`` is the ridge height above the base; the
  ``default_height`` where unknown). LoD1, flat roofs, and LoD2 roofs without a
  usable ``eave_height < height`` are flat at that height.
* **LoD2 gable**: the oriented minimum rotated rectangle of the footprint gives the
  ridge direction (its longer side) and half-width ``w``; the roof is the height
  field ``eave + (height - eave) * (1 - |u| / w)`` (``u`` the distance across the
  ridge line), i.e. two planes meeting at the ridge; walls under its ends become
  the (triangular, on a rectangle) gable walls.
* **LoD2 hip**: ``eave + s * min(w - |u|, l - |v|)`` with ``s = (height - eave) / w``
  and ``l`` the half-length: two trapezoids and two triangles of equal slope.

Non-rectangular footprints keep their outline: the roof height field is cut along
its creases, so every roof triangle is planar and every wall's top follows it.

Face kinds: :data:`WALL` (0), :data:`ROOF` (1), :data:`FLOOR` (2).
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from twin.crs import LocalFrame, parse_crs, transform, unit_factors, utm_crs_for
from twin.errors import InputError, ParameterError
from twin.terrain.dem import Dem

log = logging.getLogger(__name__)

WALL, ROOF, FLOOR = 0, 1, 2
FACE_KINDS = {WALL: "wall", ROOF: "roof", FLOOR: "floor"}
_SNAP = 1e-6  # metres: consecutive footprint vertices closer than this are one
_WELD = 1e-4  # metres: roof vertices closer than this are welded


@dataclass
class BuildingMesh:
    """One building solid in local ENU metres.

    ``vertices`` (N, 3) float64, ``faces`` (M, 3) uint32 (CCW seen from outside),
    ``face_kind`` (M,) uint8 (:data:`WALL`, :data:`ROOF`, :data:`FLOOR`),
    ``attributes`` the footprint's values and the heights used.
    """

    id: str
    vertices: np.ndarray
    faces: np.ndarray
    face_kind: np.ndarray
    attributes: dict = field(default_factory=dict)


@dataclass
class MergedMesh:
    """Several building solids in one mesh; ``feature_id`` (M,) uint32 is the index of
    the building (in the list given to :func:`merge_meshes`) each face belongs to."""

    vertices: np.ndarray
    faces: np.ndarray
    face_kind: np.ndarray
    feature_id: np.ndarray


# --- roof height fields ---------------------------------------------------------------------
@dataclass
class _Roof:
    """A roof as planar pieces: ``regions`` (polygons in map x/y, together covering the
    footprint) and for each a plane ``z = p0 + p1 * x + p2 * y`` (relative to ``origin``)."""

    regions: list
    planes: list[tuple[float, float, float]]
    origin: tuple[float, float]

    def z(self, k: int, xy: np.ndarray) -> np.ndarray:
        p0, p1, p2 = self.planes[k]
        return p0 + p1 * (xy[:, 0] - self.origin[0]) + p2 * (xy[:, 1] - self.origin[1])


def _frame_of_rectangle(geom) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Centre, unit along-ridge vector, unit across vector, half-length, half-width of
    the minimum-area rotated rectangle of ``geom`` (long side = ridge direction).

    Our own rotating-calipers search over the convex hull's edge directions: exact to
    rounding (GEOS's ``minimum_rotated_rectangle`` is off by ~0.1 mm here, enough to
    leave slivers along the hip creases). Memory grows with hull size squared.
    """
    import shapely

    hull = np.asarray(shapely.convex_hull(geom).exterior.coords)[:-1, :2]
    origin = hull.mean(axis=0)
    pts = hull - origin
    edges = np.roll(pts, -1, axis=0) - pts
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    keep = lengths > 1e-12
    a_all = edges[keep] / lengths[keep, None]  # (E, 2) candidate axis directions
    n_all = np.column_stack([-a_all[:, 1], a_all[:, 0]])
    pa = pts @ a_all.T  # (H, E)
    pn = pts @ n_all.T
    area = np.ptp(pa, axis=0) * np.ptp(pn, axis=0)
    k = int(np.argmin(area))
    a, n = a_all[k], n_all[k]
    lo_a, hi_a = pa[:, k].min(), pa[:, k].max()
    lo_n, hi_n = pn[:, k].min(), pn[:, k].max()
    centre = origin + a * (lo_a + hi_a) / 2 + n * (lo_n + hi_n) / 2
    hl, hw = (hi_a - lo_a) / 2, (hi_n - lo_n) / 2
    if hl < hw:
        a, n, hl, hw = n, -a, hw, hl
    return centre, a, n, float(hl), float(hw)


def _roof_for(geom, roof_type: str, base: float, eave: float, top: float):
    """The roof of a building as a :class:`_Roof` (map coordinates, absolute heights)."""
    from shapely.geometry import Polygon, box

    minx, miny, maxx, maxy = geom.bounds
    if roof_type == "flat" or not (eave < top - 1e-6):
        pad = 1.0 + (maxx - minx) + (maxy - miny)
        return _Roof([box(minx - pad, miny - pad, maxx + pad, maxy + pad)], [(top, 0, 0)], (0, 0))
    c, a, n, hl, hw = _frame_of_rectangle(geom)
    if hw <= 1e-6:
        return _roof_for(geom, "flat", base, top, top)
    s = (top - eave) / hw  # slope: height per metre across the ridge
    ox, oy = float(c[0]), float(c[1])

    def plane(grad: np.ndarray, z0: float) -> tuple[float, float, float]:
        return (z0, float(grad[0]), float(grad[1]))

    if roof_type == "gable":
        k = 2.0  # regions reach twice as far as the rectangle: footprint always inside
        r0, r1 = -k * hl * a, k * hl * a
        side_neg = Polygon([r0 - k * hw * n, r1 - k * hw * n, r1, r0])
        side_pos = Polygon([r1 + k * hw * n, r0 + k * hw * n, r0, r1])
        regions = [_shift(side_neg, ox, oy), _shift(side_pos, ox, oy)]
        # z = top - s*|u|, u = n.(p - c): on the u<0 side z = top + s*u
        planes = [plane(s * n, top), plane(-s * n, top)]
        return _Roof(regions, planes, (ox, oy))
    if roof_type == "hip":
        ridge = max(hl - hw, 0.0)
        r0, r1 = -ridge * a, ridge * a
        corners = {
            "A": -hl * a - hw * n,
            "B": hl * a - hw * n,
            "C": hl * a + hw * n,
            "D": -hl * a + hw * n,
        }
        k = 3.0  # extend the outer corners along the hip creases
        ext = {
            "A": r0 + k * (corners["A"] - r0),
            "B": r1 + k * (corners["B"] - r1),
            "C": r1 + k * (corners["C"] - r1),
            "D": r0 + k * (corners["D"] - r0),
        }
        zr = eave + s * hw  # == top
        regions = [
            Polygon([ext["A"], ext["B"], r1, r0]),  # u < 0 side
            Polygon([ext["C"], ext["D"], r0, r1]),  # u > 0 side
            Polygon([ext["B"], ext["C"], r1]),  # v > 0 end
            Polygon([ext["D"], ext["A"], r0]),  # v < 0 end
        ]
        # plane values at the centre c: sides reach zr on the ridge line (u = 0);
        # ends: z = eave + s*(hl - |v|) -> at v = 0 that is eave + s*hl
        z_end = eave + s * hl
        planes = [plane(s * n, zr), plane(-s * n, zr), plane(-s * a, z_end), plane(s * a, z_end)]
        return _Roof([_shift(r, ox, oy) for r in regions], planes, (ox, oy))
    raise ParameterError(f"unknown roof type {roof_type!r} (use flat, gable or hip)")


def _shift(poly, dx: float, dy: float):
    import shapely

    return shapely.transform(poly, lambda xy: xy + np.array([dx, dy]))


# --- one solid ------------------------------------------------------------------------------
def _rings(poly) -> list[np.ndarray]:
    """Exterior (CCW) then holes (CW), without the closing vertex, duplicates removed."""
    from shapely.geometry.polygon import orient

    poly = orient(poly, sign=1.0)
    out = []
    for ring in [poly.exterior, *poly.interiors]:
        xy = np.asarray(ring.coords)[:-1, :2]
        keep = np.ones(len(xy), dtype=bool)
        keep[1:] = np.any(np.abs(np.diff(xy, axis=0)) > _SNAP, axis=1)
        xy = xy[keep]
        if len(xy) > 1 and np.all(np.abs(xy[0] - xy[-1]) <= _SNAP):
            xy = xy[:-1]
        if len(xy) >= 3:
            out.append(xy)
    return out


def _triangulate(poly) -> tuple[np.ndarray, np.ndarray]:
    """Constrained Delaunay triangles of a polygon: ``(tri_xy (T, 3, 2), ccw)``."""
    import shapely

    tris = shapely.constrained_delaunay_triangles(poly)
    out = [np.asarray(t.exterior.coords)[:3, :2] for t in getattr(tris, "geoms", [])]
    if not out:
        return np.zeros((0, 3, 2))
    t = np.asarray(out)
    cross = (t[:, 1, 0] - t[:, 0, 0]) * (t[:, 2, 1] - t[:, 0, 1]) - (t[:, 1, 1] - t[:, 0, 1]) * (
        t[:, 2, 0] - t[:, 0, 0]
    )
    t[cross < 0] = t[cross < 0][:, ::-1]
    return t[np.abs(cross) > 1e-12]


def _clusters(xy: np.ndarray, tol: float) -> np.ndarray:
    """Label points closer than ``tol`` (transitively) with the index of the first
    point of their cluster."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    pairs = cKDTree(xy).query_pairs(tol, output_type="ndarray")
    n = len(xy)
    g = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, comp = connected_components(g, directed=False)
    first = np.full(comp.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, comp, np.arange(n))
    return first[comp]


def _solid(poly, roof: _Roof, base: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed solid of one polygon in map coordinates: (vertices, faces, kinds).

    Roof pieces are cut by GEOS, which may place a crease/outline intersection a few
    micrometres away from the footprint corner it should be: roof vertices closer
    than :data:`_WELD` are welded (onto the footprint corner where there is one).
    """
    import shapely
    from shapely.geometry import Polygon

    rings = _rings(poly)
    if not rings:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros(0, np.uint8)
    poly = Polygon(rings[0], rings[1:])
    ring_xy = np.vstack(rings)
    nring = len(ring_xy)

    # roof: the footprint cut along the roof's creases, each piece planar
    tri_xy, tri_z = [], []
    for k, region in enumerate(roof.regions):
        piece = shapely.intersection(poly, region)
        parts = [g for g in getattr(piece, "geoms", [piece]) if g.geom_type == "Polygon"]
        for part in parts:
            if part.area <= 1e-9:
                continue
            tri = _triangulate(part)
            if len(tri):
                tri_xy.append(tri)
                tri_z.append(roof.z(k, tri.reshape(-1, 2)).reshape(-1, 3))
    if not tri_xy:
        raise InputError("the roof of a footprint came out empty (degenerate footprint?)")
    txy = np.concatenate(tri_xy).reshape(-1, 2)
    tz = np.concatenate(tri_z).reshape(-1)
    # top vertices: footprint corners first (they win as cluster representatives)
    pts = np.vstack([ring_xy, txy])
    label = _clusters(pts, _WELD)
    reps, top_id = np.unique(label, return_inverse=True)
    ztop = np.full(len(reps), np.nan)
    ztop[top_id[nring:]] = tz
    if np.isnan(ztop).any():
        raise InputError("a footprint corner is not under any roof piece (internal roof error)")
    top_xyz = np.column_stack([pts[reps], ztop])
    ntop = len(top_xyz)
    roof_f = top_id[nring:].reshape(-1, 3)
    roof_f = roof_f[
        (roof_f[:, 0] != roof_f[:, 1])
        & (roof_f[:, 1] != roof_f[:, 2])
        & (roof_f[:, 0] != roof_f[:, 2])
    ]
    faces = [roof_f]
    kinds = [np.full(len(roof_f), ROOF, np.uint8)]

    # floor: the footprint (triangulation keeps its corners), facing down
    from scipy.spatial import cKDTree

    ftri = _triangulate(poly).reshape(-1, 2)
    dist, near = cKDTree(ring_xy).query(ftri)
    if np.any(dist > _WELD):
        raise InputError("floor triangulation added a vertex (internal error)")
    floor_f = (ntop + near.reshape(-1, 3))[:, ::-1]
    faces.append(floor_f)
    kinds.append(np.full(len(floor_f), FLOOR, np.uint8))

    # walls: for each ring edge p->q (outside on its right): bottom p, q and the roof
    # vertices along the edge on top. The roof is concave (a min of planes), so the
    # wall polygon is convex and a fan from the bottom corner at p triangulates it.
    walls = []
    top_xy = top_xyz[:, :2]
    start = 0
    for ring in rings:
        m = len(ring)
        for i in range(m):
            a, b = start + i, start + (i + 1) % m
            p, q = ring_xy[a], ring_xy[b]
            pt, qt = top_id[a], top_id[b]
            d = q - p
            length = math.sqrt(float(d @ d))
            rel = top_xy - p
            t = rel @ d / length
            dist = np.abs(rel[:, 0] * d[1] - rel[:, 1] * d[0]) / length
            on = (dist < 2 * _WELD) & (t > 0) & (t < length)
            on[[pt, qt]] = False
            chain = np.flatnonzero(on)[np.argsort(t[on])]
            top = [qt, *chain[::-1].tolist(), pt]  # from q back to p along the roof line
            pb, qb = ntop + a, ntop + b
            walls.append([pb, qb, qt])
            walls.extend([pb, top[j], top[j + 1]] for j in range(len(top) - 1))
        start += m
    faces.append(np.asarray(walls, dtype=np.int64))
    kinds.append(np.full(len(walls), WALL, np.uint8))

    v = np.vstack([top_xyz, np.column_stack([ring_xy, np.full(nring, base)])])
    return v, np.concatenate(faces).astype(np.int64), np.concatenate(kinds)


# --- public ---------------------------------------------------------------------------------
def _base_from_dem(geoms, fp_crs, dem: Dem) -> np.ndarray:
    """Minimum DEM height under each footprint (NaN where the DEM has none)."""
    import shapely

    out = np.full(len(geoms), np.nan)
    same = parse_crs(fp_crs).equals(dem.crs)
    rows, cols = dem.shape
    inv = ~dem.transform
    for i, g in enumerate(geoms):
        xy = shapely.get_coordinates(g)
        dem_g = g
        if not same:
            xy = transform(xy, fp_crs, dem.crs)[:, :2]
            dem_g = shapely.transform(g, lambda p: transform(p, fp_crs, dem.crs)[:, :2])
        samples = [dem.sample(xy[:, 0], xy[:, 1])]
        # pixel centres inside the footprint: scan its pixel-index bounding box
        fc = inv.a * xy[:, 0] + inv.b * xy[:, 1] + inv.c
        fr = inv.d * xy[:, 0] + inv.e * xy[:, 1] + inv.f
        c0, c1, r0, r1 = fc.min(), fc.max(), fr.min(), fr.max()
        ca, cb = max(int(np.floor(c0)), 0), min(int(np.ceil(c1)), cols)
        ra, rb = max(int(np.floor(r0)), 0), min(int(np.ceil(r1)), rows)
        if ca < cb and ra < rb:
            rr, cc = np.meshgrid(np.arange(ra, rb), np.arange(ca, cb), indexing="ij")
            px, py = dem.pixel_centres(rr.ravel(), cc.ravel())
            inside = shapely.contains_xy(dem_g, px, py)
            samples.append(dem.heights[rr.ravel()[inside], cc.ravel()[inside]])
        s = np.concatenate(samples)
        if np.isfinite(s).any():
            out[i] = float(np.nanmin(s))
    return out


def _value(row, col: str) -> float:
    v = row.get(col, np.nan)
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def building_meshes(
    footprints_gdf,
    dem: Dem | None,
    frame: LocalFrame,
    lod: int = 2,
    default_height: float = 10.0,
) -> list[BuildingMesh]:
    """Closed LoD1 (``lod=1``) or LoD2 (``lod=2``) solids of every footprint, in ENU.

    ``footprints_gdf``: a GeoDataFrame as :func:`twin.mesh.footprints.read_footprints`
    returns (columns ``height``, optional ``eave_height``, ``base_height``,
    ``roof_type``, ``building_id``; Polygon/MultiPolygon with holes); footprints in a
    geographic CRS are first projected (to the DEM's CRS, else their UTM zone) so
    roofs are laid out in metres. ``dem``: where
    there is no ``base_height`` (may be None when every row has one). All vertices
    are made in the footprint CRS (x, y, height) and transformed with one
    ``frame.from_crs`` call. Footprints whose base is unknown (outside the DEM) are
    skipped with a warning. See the module docstring for the roof rules.

    Units: ``height``, ``eave_height`` and ``base_height`` are metres whatever the CRS;
    DEM heights are in the DEM CRS's vertical unit (feet for a US state-plane DEM) and
    are converted.

    Memory grows with the total number of footprint vertices (plus the DEM pixels
    under the largest footprint while its base is found).
    """
    if lod not in (1, 2):
        raise ParameterError(f"lod must be 1 or 2, got {lod!r}")
    if not (default_height > 0):
        raise ParameterError(f"default_height must be positive, got {default_height!r}")
    gdf = footprints_gdf
    if gdf.crs is None:
        raise InputError("footprints have no CRS", path=gdf.attrs.get("path"))
    if parse_crs(gdf.crs).is_geographic:
        # roofs need metres: work in the DEM's projected CRS, else the UTM zone
        if dem is not None and dem.crs.is_projected:
            gdf = gdf.to_crs(dem.crs)
        else:
            lon, lat = np.asarray(gdf.geometry.union_all().centroid.coords)[0]
            gdf = gdf.to_crs(utm_crs_for(float(lon), float(lat)))
    n = len(gdf)
    geoms = list(gdf.geometry.values)
    base = (
        np.asarray(gdf["base_height"], dtype=np.float64)
        if "base_height" in gdf.columns
        else np.full(n, np.nan)
    )
    need = ~np.isfinite(base)
    source = np.where(need, "dem", "column")
    if need.any():
        if dem is None:
            raise ParameterError("footprints without base_height need a DEM")
        base = base.copy()
        # DEM heights are in the DEM CRS's vertical unit; solids are built in metres.
        from_dem = _base_from_dem([geoms[i] for i in np.flatnonzero(need)], gdf.crs, dem)
        base[need] = from_dem * unit_factors(dem.crs)[1]

    all_v: list[np.ndarray] = []
    pending: list[tuple[dict, np.ndarray, np.ndarray]] = []
    skipped = 0
    for i, row in enumerate(gdf.to_dict("records")):
        g = geoms[i]
        if g is None or g.is_empty or not np.isfinite(base[i]):
            skipped += 1
            continue
        height = _value(row, "height")
        if not (height > 0):
            height = float(default_height)
        eave = _value(row, "eave_height")
        roof_type = str(row.get("roof_type") or "flat")
        if lod == 1 or not (0 < eave < height) or roof_type not in ("gable", "hip"):
            roof_type, eave = "flat", height
        b0 = float(base[i])
        roof = _roof_for(g, roof_type, b0, b0 + eave, b0 + height)
        vs, fs, ks = [], [], []
        off = 0
        for part in getattr(g, "geoms", [g]):
            v, f, k = _solid(part, roof, b0)
            vs.append(v)
            fs.append(f + off)
            ks.append(k)
            off += len(v)
        bid = str(row.get("building_id", f"b{i}"))
        attrs = {
            "building_id": bid,
            "roof_type": roof_type,
            "lod": lod,
            "height": height,
            "eave_height": eave,
            "base_height": b0,
            "base_source": str(source[i]),
        }
        for extra in ("floors", "shape", "usage"):
            if extra in row and row[extra] is not None:
                val = row[extra]
                attrs[extra] = val.item() if hasattr(val, "item") else val
        v = np.concatenate(vs)
        all_v.append(v)
        pending.append((attrs, np.concatenate(fs), np.concatenate(ks)))
    if skipped:
        warnings.warn(
            f"{skipped} footprints skipped: no base height (outside the DEM or nodata)",
            stacklevel=2,
        )
    if not pending:
        return []
    counts = [len(v) for v in all_v]
    xyz = np.concatenate(all_v)
    xyz[:, 2] /= unit_factors(gdf.crs)[1]  # metres -> the CRS's z unit (feet CRSs)
    enu = frame.from_crs(xyz, gdf.crs)
    out = []
    start = 0
    for (attrs, f, k), c in zip(pending, counts, strict=True):
        out.append(
            BuildingMesh(
                id=attrs["building_id"],
                vertices=enu[start : start + c],
                faces=f.astype(np.uint32),
                face_kind=k,
                attributes=attrs,
            )
        )
        start += c
    return out


def merge_meshes(meshes: list[BuildingMesh]) -> MergedMesh:
    """Concatenate building solids into one mesh; ``feature_id`` = list index per face.

    Vertices are not shared between buildings. Memory: the total size of the inputs.
    """
    if not meshes:
        return MergedMesh(
            np.zeros((0, 3)),
            np.zeros((0, 3), np.uint32),
            np.zeros(0, np.uint8),
            np.zeros(0, np.uint32),
        )
    offsets = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
    faces = np.concatenate(
        [m.faces.astype(np.int64) + o for m, o in zip(meshes, offsets, strict=True)]
    )
    return MergedMesh(
        vertices=np.concatenate([m.vertices for m in meshes]),
        faces=faces.astype(np.uint32),
        face_kind=np.concatenate([m.face_kind for m in meshes]).astype(np.uint8),
        feature_id=np.concatenate(
            [np.full(len(m.faces), i, np.uint32) for i, m in enumerate(meshes)]
        ),
    )
