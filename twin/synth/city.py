"""The procedural city: river valley, street grid, parcels, buildings, trees, terrain.

Everything here is in survey-CRS map coordinates (``spec.crs``, metres, x east /
y north) plus ellipsoidal heights. The layout is drawn in a slightly rotated grid
frame ``(u, v)`` centred on the area (streets run along u and v) and mapped back
to x/y at the end. Same ``spec.seed`` => same city, bit for bit.

Layout rules (the invariants the tests check):

* the area is the square ``City.bounds`` of side ``spec.extent`` whose south-west
  corner is the projected centre minus ``extent / 2``, floored to whole metres;
* a river crosses the area: water where ``|t - t_c(s)| < width / 2`` in a river frame
  ``(s, t)``; its surface is flat at ``City.water_level == spec.base_elevation``
  (the DEM is hydro-flattened) and the banks rise 2 m within 5 m of the water;
* roads (avenues 18 m wide every third grid line, streets 10 m) keep 6 m off the
  river, beyond its bank (no bridges); blocks are what is left after roads,
  sidewalks and a 6 m riverside promenade; about one block in seven is a park;
* blocks start 2.5 m (a sidewalk) from the carriageway; buildings stand inside their
  parcel shrunk by 3.5 m, so they never touch a road (>= 6 m away), the river or
  each other (gaps >= 7 m);
* terrain: smooth hills (``spec.relief``) rising away from the valley; under each
  building a flat pad at ``base_height`` that extends ``pad_margin`` (1.5 DEM
  pixels, at least 1.5 m) beyond the footprint, so walls meet the ground with no
  gap, and blends back to the natural surface over ``PAD_BLEND`` metres
  (smoothstep, C1), ending before the carriageway: roads keep the natural surface.
  On hillsides those blends are steep (a pad is a cut-and-fill terrace).
"""

from __future__ import annotations

import math

import numpy as np
import shapely
from shapely import affinity
from shapely.geometry import LineString, MultiPolygon, Polygon, box
from shapely.ops import unary_union

from twin.crs import LocalFrame, transform
from twin.errors import ParameterError
from twin.synth.model import Building, City, Road
from twin.synth.params import SurveySpec

PAD_BLEND = 4.0  # metres over which a building pad blends into the natural terrain
SIDEWALK = 2.5  # between carriageway and block: keeps pad blends off the roads
SETBACK = 3.5  # building to parcel edge (m): gaps between buildings >= 7 m
AVENUE_WIDTH = 18.0
STREET_WIDTH = 10.0
FLOOR_HEIGHT = 3.2
MAX_HEIGHT = 60.0
MIN_HEIGHT = 6.0


def _rng(seed: int, stream: int) -> np.random.Generator:
    """An independent PCG64 stream per part of the city, so changing one part's draw
    count does not reshuffle the others."""
    return np.random.Generator(np.random.PCG64([int(seed) & 0xFFFFFFFF, stream]))


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def check_spec(spec: SurveySpec) -> None:
    """Raise :class:`ParameterError` for specs the city generator cannot honour."""
    if not isinstance(spec, SurveySpec):
        raise ParameterError(f"expected a SurveySpec, got {type(spec).__name__}")
    checks = [
        ("block_size", 30 <= spec.block_size <= 400, "between 30 and 400 m"),
        ("relief", 0 <= spec.relief <= 500, "between 0 and 500 m"),
        ("base_elevation", -100 <= spec.base_elevation <= 5000, "between -100 and 5000 m"),
        ("lat", -80 <= spec.lat <= 84, "between -80 and 84 degrees"),
        ("lon", -180 <= spec.lon <= 180, "between -180 and 180 degrees"),
        ("seed", 0 <= int(spec.seed) < 2**32, "in [0, 2**32)"),
    ]
    for name, ok, what in checks:
        if not ok:
            raise ParameterError(f"{name}={getattr(spec, name)!r} must be {what}")
    if spec.dem_resolution * 8 > spec.extent:
        raise ParameterError(
            f"dem_resolution={spec.dem_resolution!r} is too coarse for extent={spec.extent!r} "
            "(need at least 8 pixels across)"
        )


class Terrain:
    """Ellipsoidal terrain height ``z = terrain(x, y)`` in survey-CRS map metres.

    Natural surface: flat water inside the river, a 2 m bank, then hills of height
    up to ``relief`` rising away from the valley. Building pads are flattened to
    their ``base_height`` (see module docstring). Vectorised; memory grows with the
    number of points (a few float64 arrays) plus the point/pad pairs found near
    buildings.
    """

    def __init__(self, spec: SurveySpec, center: tuple[float, float], rng: np.random.Generator):
        self.cx, self.cy = center
        e = float(spec.extent)
        self.base = float(spec.base_elevation)
        self.relief = float(spec.relief)
        # river frame
        self.beta = float(rng.uniform(0.15, 0.85) * math.pi)
        self.offset = float(rng.uniform(-0.2, 0.2) * e)
        self.amp = float(rng.uniform(0.03, 0.07) * e)
        self.wavelength = float(rng.uniform(0.9, 1.4) * e)
        self.phase = float(rng.uniform(0, 2 * math.pi))
        self.width = float(np.clip(0.09 * e, 12.0, 45.0))
        self.bank = 2.0
        self.bank_width = 5.0
        self.valley = max(0.35 * e, 150.0)
        # hills: a few long plane waves
        n = 4
        self.kx = np.empty(n)
        self.ky = np.empty(n)
        self.wphase = rng.uniform(0, 2 * math.pi, n)
        self.wamp = rng.uniform(0.5, 1.0, n)
        for i in range(n):
            lam = rng.uniform(0.6, 1.6) * max(e, 200.0)
            ang = rng.uniform(0, math.pi)
            self.kx[i] = 2 * math.pi * math.cos(ang) / lam
            self.ky[i] = 2 * math.pi * math.sin(ang) / lam
        # building pads, filled in by make_city
        self.pads: list[Polygon] = []
        self.pad_base = np.zeros(0)
        self.pad_margin = 1.5
        self._tree: shapely.STRtree | None = None

    # -- the river frame -------------------------------------------------------------
    def river_coords(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Along-river ``s`` and across-river distance from the centreline ``d`` (m)."""
        dx = np.asarray(x, dtype=np.float64) - self.cx
        dy = np.asarray(y, dtype=np.float64) - self.cy
        cb, sb = math.cos(self.beta), math.sin(self.beta)
        s = cb * dx + sb * dy
        t = -sb * dx + cb * dy
        tc = self.offset + self.amp * np.sin(2 * math.pi * s / self.wavelength + self.phase)
        return s, np.abs(t - tc)

    def river_polygon(self, bounds: tuple[float, float, float, float]) -> Polygon:
        """The water surface clipped to ``bounds`` (sampled every metre along s)."""
        x0, y0, x1, y1 = bounds
        half = 0.8 * max(x1 - x0, y1 - y0)
        s = np.arange(-half, half + 1.0, 1.0)
        tc = self.offset + self.amp * np.sin(2 * math.pi * s / self.wavelength + self.phase)
        cb, sb = math.cos(self.beta), math.sin(self.beta)
        left = np.column_stack([s, tc + self.width / 2])
        right = np.column_stack([s, tc - self.width / 2])[::-1]
        st = np.vstack([left, right])
        xy = np.column_stack(
            [self.cx + cb * st[:, 0] - sb * st[:, 1], self.cy + sb * st[:, 0] + cb * st[:, 1]]
        )
        poly = Polygon(xy).intersection(box(*bounds))
        if isinstance(poly, MultiPolygon):
            poly = max(poly.geoms, key=lambda g: g.area)
        return poly

    # -- surfaces ------------------------------------------------------------------------
    def natural(self, x, y) -> np.ndarray:
        """Terrain without building pads (ellipsoidal m)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        _, d = self.river_coords(x, y)
        dx = x - self.cx
        dy = y - self.cy
        h = np.zeros(np.broadcast(x, y).shape)
        for kx, ky, ph, a in zip(self.kx, self.ky, self.wphase, self.wamp, strict=True):
            h += a * np.cos(kx * dx + ky * dy + ph)
        hn = 0.5 + 0.5 * h / self.wamp.sum()
        r = d - self.width / 2
        bank = self.bank * _smoothstep(r / self.bank_width)
        ramp = _smoothstep(r / self.valley)
        return self.base + bank + self.relief * ramp * hn

    def set_pads(self, pads: list[Polygon], bases: np.ndarray, pad_margin: float) -> None:
        self.pads = list(pads)
        self.pad_base = np.asarray(bases, dtype=np.float64)
        self.pad_margin = float(pad_margin)
        reach = self.pad_margin + PAD_BLEND
        self._tree = shapely.STRtree([p.buffer(reach, join_style="mitre") for p in self.pads])

    def __call__(self, x, y) -> np.ndarray:
        """Terrain with building pads: ellipsoidal height (m) at map x/y (m)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        x, y = np.broadcast_arrays(x, y)
        shape = x.shape
        xf, yf = x.ravel(), y.ravel()
        z = self.natural(xf, yf)
        if self._tree is None or not self.pads or xf.size == 0:
            return z.reshape(shape)
        pts = shapely.points(xf, yf)
        pi, bi = self._tree.query(pts, predicate="intersects")
        if pi.size:
            pads = np.asarray(self.pads, dtype=object)
            dist = shapely.distance(pts[pi], pads[bi])
            w = 1.0 - _smoothstep((dist - self.pad_margin) / PAD_BLEND)
            wsum = np.bincount(pi, weights=w, minlength=xf.size)
            wb = np.bincount(pi, weights=w * self.pad_base[bi], minlength=xf.size)
            low = wsum <= 1.0
            z = np.where(low, z + wb - wsum * z, wb / np.maximum(wsum, 1e-300))
        return z.reshape(shape)


def _project_center(spec: SurveySpec) -> tuple[float, float]:
    p = transform([spec.lon, spec.lat, 0.0], "EPSG:4326", spec.crs)
    return float(p[0]), float(p[1])


def _split(poly: Polygon, target: float, rng: np.random.Generator) -> list[Polygon]:
    """Recursively halve a (uv-frame) block along its longer side into parcels."""
    x0, y0, x1, y1 = poly.bounds
    w, h = x1 - x0, y1 - y0
    if max(w, h) <= 1.35 * target:
        return [poly]
    f = rng.uniform(0.4, 0.6)
    if w >= h:
        c = x0 + f * w
        halves = [box(x0 - 1, y0 - 1, c, y1 + 1), box(c, y0 - 1, x1 + 1, y1 + 1)]
    else:
        c = y0 + f * h
        halves = [box(x0 - 1, y0 - 1, x1 + 1, c), box(x0 - 1, c, x1 + 1, y1 + 1)]
    out: list[Polygon] = []
    for half in halves:
        part = poly.intersection(half)
        for g in getattr(part, "geoms", [part]):
            if isinstance(g, Polygon) and g.area > 1.0:
                out.extend(_split(g, target, rng))
    return out


def _shape_polygon(
    kind: str, x0: float, y0: float, w: float, h: float, t: float, flip_u: bool, flip_v: bool
) -> Polygon:
    """Footprint of a given shape in a w x h box at (x0, y0) (uv frame), wings t thick."""
    if kind == "rect":
        pts = [(0, 0), (w, 0), (w, h), (0, h)]
        holes = []
    elif kind == "L":
        pts = [(0, 0), (w, 0), (w, t), (t, t), (t, h), (0, h)]
        holes = []
    elif kind == "U":
        pts = [(0, 0), (w, 0), (w, h), (w - t, h), (w - t, t), (t, t), (t, h), (0, h)]
        holes = []
    else:  # courtyard
        pts = [(0, 0), (w, 0), (w, h), (0, h)]
        holes = [[(t, t), (t, h - t), (w - t, h - t), (w - t, t)]]

    def place(ring):
        out = []
        for u, v in ring:
            u = w - u if flip_u else u
            v = h - v if flip_v else v
            out.append((x0 + u, y0 + v))
        return out

    poly = Polygon(place(pts), [place(r) for r in holes])
    return shapely.geometry.polygon.orient(poly, sign=1.0)


def make_city(spec: SurveySpec) -> City:
    """Generate the procedural city for a survey spec (deterministic in ``spec.seed``).

    Returns a :class:`~twin.synth.model.City` in ``spec.crs`` map coordinates with
    ``City.terrain`` a :class:`Terrain`. Takes well under a second for the "small"
    preset; memory grows with the number of buildings and trees (a few hundred
    shapely geometries for 600 m).
    """
    check_spec(spec)
    cx_p, cy_p = _project_center(spec)
    e = float(spec.extent)
    x0 = math.floor(cx_p - e / 2)
    y0 = math.floor(cy_p - e / 2)
    bounds = (float(x0), float(y0), float(x0 + e), float(y0 + e))
    cx, cy = x0 + e / 2, y0 + e / 2
    area = box(*bounds)
    frame = LocalFrame(spec.lon, spec.lat, 0.0)

    terrain = Terrain(spec, (cx, cy), _rng(spec.seed, 1))
    river = terrain.river_polygon(bounds)

    # --- grid frame (u, v): rotated by alpha about the centre --------------------------
    rng = _rng(spec.seed, 2)
    alpha = float(rng.uniform(-8, 8) * math.pi / 180)
    ca, sa = math.cos(alpha), math.sin(alpha)
    # uv -> xy: x = cx + ca u - sa v ; y = cy + sa u + ca v
    to_xy = [ca, -sa, sa, ca, cx, cy]
    to_uv = [ca, sa, -sa, ca, -(ca * cx + sa * cy), -(-sa * cx + ca * cy)]

    def xy(g):
        return affinity.affine_transform(g, to_xy)

    def uv(g):
        return affinity.affine_transform(g, to_uv)

    area_uv = uv(area)
    river_uv = uv(river)
    pitch = float(spec.block_size)
    reach = 0.75 * e * math.sqrt(2)
    roads: list[Road] = []
    road_polys_uv = []
    for axis in (0, 1):
        phase = rng.uniform(0, pitch)
        ks = np.arange(-math.ceil(reach / pitch) - 1, math.ceil(reach / pitch) + 2)
        for k in ks:
            pos = phase + k * pitch + rng.uniform(-0.08, 0.08) * pitch
            avenue = k % 3 == 0
            width = AVENUE_WIDTH if avenue else STREET_WIDTH
            if axis == 0:
                line = LineString([(pos, -reach), (pos, reach)])
            else:
                line = LineString([(-reach, pos), (reach, pos)])
            clipped = line.intersection(area_uv).difference(river_uv.buffer(6.0 + width / 2))
            parts = [g for g in getattr(clipped, "geoms", [clipped]) if g.length > 10.0]
            kind = "avenue" if avenue else "street"
            for j, part in enumerate(parts):
                if not isinstance(part, LineString):
                    continue
                name = f"{'Avenue' if avenue else 'Street'} {'NS' if axis == 0 else 'EW'}{k:+d}"
                if len(parts) > 1:
                    name += f" ({'abcdefgh'[j % 8]})"
                roads.append(Road(centerline=xy(part), width=width, kind=kind, name=name))
                road_polys_uv.append(part.buffer(width / 2, cap_style="flat"))
    roads_uv = unary_union(road_polys_uv) if road_polys_uv else Polygon()

    # --- blocks, parks, parcels ----------------------------------------------------------
    blocks_geom = area_uv.difference(roads_uv.buffer(SIDEWALK, join_style="mitre")).difference(
        river_uv.buffer(6.0)
    )
    blocks = [g for g in getattr(blocks_geom, "geoms", [blocks_geom]) if g.area > 150.0]
    blocks.sort(key=lambda g: (round(g.centroid.y, 3), round(g.centroid.x, 3)))
    rng_b = _rng(spec.seed, 3)
    parks: list[Polygon] = []
    footprints_uv: list[tuple[Polygon, str, float]] = []  # polygon, shape, ridge axis angle
    half = e / 2
    for block in blocks:
        if block.area > 900.0 and rng_b.uniform() < 0.14:
            parks.append(block)
            continue
        # most blocks are cut into 22-38 m parcels; some stay whole (a large
        # courtyard or U-shaped block building)
        target = rng_b.uniform(22, 38) if rng_b.uniform() > 0.18 else 70.0
        for parcel in _split(block, target, rng_b):
            inner = parcel.buffer(-SETBACK, join_style="mitre")
            if inner.is_empty:
                continue
            if not isinstance(inner, Polygon):
                inner = max(inner.geoms, key=lambda g: g.area)
            bx0, by0, bx1, by1 = inner.bounds
            W, H = bx1 - bx0, by1 - by0
            if min(W, H) < 8.0:
                continue
            w = min(W * rng_b.uniform(0.75, 1.0), 48.0)
            h = min(H * rng_b.uniform(0.75, 1.0), 48.0)
            roll = rng_b.uniform()
            m = min(w, h)
            if m >= 30:  # block-sized parcels: mostly perimeter blocks
                roll *= 0.5
            if m >= 20 and roll < 0.25:
                kind = "courtyard"
            elif m >= 18 and roll < 0.45:
                kind = "U"
            elif m >= 13 and roll < 0.7:
                kind = "L"
            else:
                kind = "rect"
            flip_u = bool(rng_b.uniform() < 0.5)
            flip_v = bool(rng_b.uniform() < 0.5)
            placed = None
            for _ in range(6):
                t = float(np.clip(0.38 * min(w, h), 7.0, 13.0))
                if kind == "courtyard" and min(w, h) - 2 * t < 6.0:
                    kind = "L"
                if kind == "U" and (w - 2 * t < 4.0 or h - t < 4.0):
                    kind = "L"
                if kind == "L" and min(w, h) - t < 4.0:
                    kind = "rect"
                ox = bx0 + rng_b.uniform(0, max(W - w, 0.0))
                oy = by0 + rng_b.uniform(0, max(H - h, 0.0))
                poly = _shape_polygon(kind, ox, oy, w, h, t, flip_u, flip_v)
                if poly.is_valid and inner.contains(poly):
                    placed = poly
                    break
                w *= 0.85
                h *= 0.85
                if min(w, h) < 7.0:
                    break
                if kind != "rect" and min(w, h) < 13.0:
                    kind = "rect"
            if placed is None:
                continue
            axis_angle = alpha if w >= h else alpha + math.pi / 2
            footprints_uv.append((placed, kind, axis_angle))

    # --- building attributes -----------------------------------------------------------
    rng_h = _rng(spec.seed, 4)
    pad_margin = 1.5 * max(1.0, float(spec.dem_resolution))
    buildings: list[Building] = []
    for i, (poly_uv, kind, axis_angle) in enumerate(footprints_uv):
        poly = shapely.geometry.polygon.orient(xy(poly_uv), sign=1.0)
        c = poly_uv.centroid
        r = min(math.hypot(c.x, c.y) / half, 1.0)
        hmax = MAX_HEIGHT - 44.0 * r
        eave_t = MIN_HEIGHT + (hmax - MIN_HEIGHT) * rng_h.uniform() ** 1.8
        roof_roll = rng_h.uniform()
        pitch_deg = rng_h.uniform(28, 40)
        if kind == "rect" and eave_t < 22 and roof_roll < 0.65:
            roof = "gable" if roof_roll < 0.33 else "hip"
        else:
            roof = "flat"
        floors = int(max(2, round(eave_t / FLOOR_HEIGHT)))
        floors = min(floors, int((MAX_HEIGHT - 0.4) / FLOOR_HEIGHT))
        eave = floors * FLOOR_HEIGHT + 0.4
        if roof == "flat":
            ridge = eave
        else:
            bx0, by0, bx1, by1 = poly_uv.bounds
            short = min(bx1 - bx0, by1 - by0)
            ridge = min(eave + 0.5 * short * math.tan(math.radians(pitch_deg)), MAX_HEIGHT)
        ext = np.asarray(poly.exterior.coords)[:-1]
        samples = np.vstack([ext, [[poly.centroid.x, poly.centroid.y]]])
        base = float(np.mean(terrain.natural(samples[:, 0], samples[:, 1])))
        base = round(base, 3)
        usage = "commercial" if r < 0.35 and floors >= 6 else "residential"
        if kind == "courtyard" and floors <= 4:
            usage = "public"
        buildings.append(
            Building(
                id=f"B{i + 1:04d}",
                footprint=poly,
                shape=kind,
                base_height=base,
                eave_height=float(eave),
                ridge_height=float(ridge),
                floors=floors,
                roof_type=roof,
                orientation=float(axis_angle % math.pi),
                usage=usage,
            )
        )
    terrain.set_pads(
        [Polygon(b.footprint.exterior) for b in buildings],
        np.array([b.base_height for b in buildings]),
        pad_margin,
    )

    # --- trees ---------------------------------------------------------------------------
    rng_t = _rng(spec.seed, 5)
    cand: list[tuple[float, float]] = []
    if spec.trees:
        for road in roads:
            if road.kind == "street" and rng_t.uniform() < 0.4:
                continue
            line = uv(road.centerline)
            (a0, b0), (a1, b1) = line.coords[0], line.coords[-1]
            L = line.length
            du, dv = (a1 - a0) / L, (b1 - b0) / L
            for side in (-1.0, 1.0):
                off = road.width / 2 + 1.8
                s = rng_t.uniform(2, 9)
                while s < L - 2:
                    cand.append((a0 + du * s - side * dv * off, b0 + dv * s + side * du * off))
                    s += rng_t.uniform(8, 11)
        for park in parks:
            n = int(park.area / 110.0)
            px0, py0, px1, py1 = park.bounds
            for _ in range(n):
                cand.append((rng_t.uniform(px0, px1), rng_t.uniform(py0, py1)))
    trees = np.zeros((0, 4))
    if cand:
        cu = np.asarray(cand)
        xs = cx + ca * cu[:, 0] - sa * cu[:, 1]
        ys = cy + sa * cu[:, 0] + ca * cu[:, 1]
        heights = rng_t.uniform(5.0, 14.0, len(xs))
        radii = np.clip(heights * rng_t.uniform(0.22, 0.32, len(xs)), 1.5, 4.0)
        pts = shapely.points(xs, ys)
        roads_xy = xy(roads_uv)
        parks_xy = unary_union([xy(p) for p in parks]) if parks else Polygon()
        inner_area = area.buffer(-1.0)
        ok = shapely.contains(inner_area, pts)
        ok &= shapely.distance(river.buffer(3.0), pts) > 0
        ok &= shapely.distance(roads_xy, pts) >= 1.0
        if buildings:
            btree = shapely.STRtree([b.footprint for b in buildings])
            near = btree.query(pts, predicate="dwithin", distance=float(radii.max()) + 1.0)
            dist = shapely.distance(pts[near[0]], btree.geometries[near[1]])
            clash = dist < radii[near[0]] + 1.0
            ok[near[0][clash]] = False
        in_park = shapely.contains(parks_xy, pts) if parks else np.zeros(len(xs), bool)
        ok &= in_park | (shapely.distance(roads_xy, pts) < 4.0)
        keep: list[int] = []
        for i in np.flatnonzero(ok):  # no two trunks closer than 4 m
            k = np.asarray(keep, dtype=np.int64)
            if k.size == 0 or np.min((xs[k] - xs[i]) ** 2 + (ys[k] - ys[i]) ** 2) >= 16.0:
                keep.append(int(i))
        keep = np.asarray(keep, dtype=np.int64)
        trees = np.column_stack([xs[keep], ys[keep], heights[keep], radii[keep]])

    city = City(
        crs=spec.crs,
        bounds=bounds,
        frame=frame,
        terrain=terrain,
        buildings=buildings,
        roads=roads,
        river=river,
        water_level=float(spec.base_elevation),
        trees=trees,
        floor_height=FLOOR_HEIGHT,
    )
    city.parks = [xy(p) for p in parks]  # type: ignore[attr-defined]
    return city


def road_surface(city: City):
    """Union of all carriageways (shapely geometry, survey-CRS map metres)."""
    return unary_union([r.centerline.buffer(r.width / 2, cap_style="flat") for r in city.roads])


def point_in(geom, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Vectorised point-in-geometry test (boundary counts as inside)."""
    if geom is None or geom.is_empty:
        return np.zeros(np.shape(x), dtype=bool)
    shapely.prepare(geom)
    return shapely.intersects_xy(geom, x, y)


__all__ = ["Terrain", "check_spec", "make_city", "point_in", "road_surface"]
