"""The exact ground-truth surface of the synthetic city, and its PLY file.

:func:`build_truth` turns a :class:`~twin.synth.model.City` into a
:class:`~twin.synth.model.TruthScene` in the local ENU frame
``LocalFrame(spec.lon, spec.lat, 0)``. All geometry is first built in the survey
CRS (map x/y metres, ellipsoidal z), then every vertex is transformed to ENU in one
vectorised call.

Mesh layout (vertex and face order is part of the contract):

1. **Terrain**: vertices ``0 .. nrows*ncols-1`` are the DEM pixel centres in raster
   order (row-major, north row first) with the DEM's float32 heights, so the DEM is
   an exact sampling of the truth surface. Each pixel-centre cell is split into two
   triangles (SW-SE-NE, SW-NE-NW), normals up. A face is WATER when its centroid
   lies in the river polygon (the river is *not* a separate mesh: the terrain is
   hydro-flattened to ``water_level`` there), else ROAD when in a carriageway, else
   GROUND. The terrain continues under buildings.
2. **Buildings**, in ``City.buildings`` order: each a closed solid (every edge used
   by exactly two faces, outward normals): a floor 0.5 m below ``base_height``
   (buried, labelled WALL), walls up to ``base + eave_height`` (WALL), a roof (ROOF):
   flat (the footprint triangulated, courtyard holes kept), gable (two planes and
   two triangular gable walls labelled WALL) or hip (two trapezoids and two
   triangles), ridge at ``base + ridge_height``. ``face_building`` = building index.
3. **Trees**: a closed hexagonal trunk and a closed icosphere crown (ellipsoid from
   35 % of the height to the top), labelled TREE, ``face_building`` = -1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry import Polygon

from twin.errors import InputError, OutputError, ParameterError
from twin.fileio import atomic_path
from twin.synth.appearance import ROOF_CODE, Albedo, linear_to_srgb8
from twin.synth.city import point_in, road_surface
from twin.synth.model import ASPRS_CLASS, Building, City, Surface, TruthScene
from twin.synth.params import SurveySpec
from twin.synth.terrain import DemGrid, dem_grid

WALL_BELOW = 0.5  # walls start this far below base_height (m)
TRUNK_RADIUS = 0.25


# --- building solids ----------------------------------------------------------------------
def _rings(poly: Polygon) -> list[np.ndarray]:
    """Exterior (CCW) and holes (CW) of an oriented polygon, without closing vertex."""
    poly = shapely.geometry.polygon.orient(poly, sign=1.0)
    return [np.asarray(poly.exterior.coords)[:-1, :2]] + [
        np.asarray(r.coords)[:-1, :2] for r in poly.interiors
    ]


def triangulate_polygon(poly: Polygon) -> tuple[np.ndarray, np.ndarray]:
    """Triangulate a polygon (holes allowed) without adding vertices.

    Returns ``(xy, tris)``: the ring vertices (exterior CCW then holes CW, as in
    :func:`_rings`) and ``(T, 3)`` indices into them, every triangle CCW seen from
    above. Uses GEOS constrained Delaunay (shapely >= 2.1).
    """
    rings = _rings(poly)
    xy = np.vstack(rings)
    index = {(float(x), float(y)): i for i, (x, y) in enumerate(xy)}
    tris_geom = shapely.constrained_delaunay_triangles(Polygon(rings[0], rings[1:]))
    tris = []
    for t in getattr(tris_geom, "geoms", []):
        c = np.asarray(t.exterior.coords)[:3]
        try:
            ids = [index[(float(x), float(y))] for x, y in c]
        except KeyError as exc:  # pragma: no cover - GEOS never adds Steiner points here
            raise ParameterError(f"polygon triangulation added a vertex {exc}") from None
        a, b, cc = xy[ids]
        if (b[0] - a[0]) * (cc[1] - a[1]) - (b[1] - a[1]) * (cc[0] - a[0]) < 0:
            ids = [ids[0], ids[2], ids[1]]
        tris.append(ids)
    tris_arr = np.asarray(tris, dtype=np.int64).reshape(-1, 3)
    if len(tris_arr) != len(xy) - 2 + 2 * (len(rings) - 1):
        raise ParameterError(
            f"triangulating a footprint gave {len(tris_arr)} triangles for {len(xy)} vertices"
        )
    return xy, tris_arr


def building_solid(b: Building) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed solid of one building in survey-CRS coordinates.

    Returns ``(vertices (n, 3), faces (m, 3), surface (m,))`` with outward normals.
    """
    zb = b.base_height - WALL_BELOW
    zt = b.base_height + b.eave_height
    zr = b.base_height + b.ridge_height
    if b.roof_type == "flat" or b.ridge_height <= b.eave_height + 1e-6:
        xy, tris = triangulate_polygon(b.footprint)
        n = len(xy)
        verts = np.vstack(
            [np.column_stack([xy, np.full(n, zb)]), np.column_stack([xy, np.full(n, zt)])]
        )
        faces = [tris[:, ::-1], tris + n]  # floor faces down, roof up
        surf = [np.full(len(tris), Surface.WALL), np.full(len(tris), Surface.ROOF)]
        walls = []
        start = 0
        for ring in _rings(b.footprint):
            k = len(ring)
            i = start + np.arange(k)
            j = start + (np.arange(k) + 1) % k
            walls.append(np.column_stack([i, j, j + n]))
            walls.append(np.column_stack([i, j + n, i + n]))
            start += k
        w = np.vstack(walls)
        faces.append(w)
        surf.append(np.full(len(w), Surface.WALL))
        return verts, np.vstack(faces).astype(np.int64), np.concatenate(surf).astype(np.uint8)
    if b.roof_type not in ("gable", "hip"):
        raise ParameterError(f"building {b.id}: unknown roof type {b.roof_type!r}")
    ring = _rings(b.footprint)
    if len(ring) != 1 or len(ring[0]) != 4:
        raise ParameterError(f"building {b.id}: {b.roof_type} roofs need a rectangle footprint")
    p = ring[0]
    # start the ring at a long edge: p0 -> p1 runs along the ridge
    if np.linalg.norm(p[1] - p[0]) < np.linalg.norm(p[2] - p[1]):
        p = np.roll(p, -1, axis=0)
    m30 = 0.5 * (p[3] + p[0])
    m12 = 0.5 * (p[1] + p[2])
    if b.roof_type == "gable":
        r0, r1 = m30, m12
    else:
        along = p[1] - p[0]
        L = np.linalg.norm(along)
        W = np.linalg.norm(p[3] - p[0])
        inset = min(0.5 * W, 0.5 * L - 0.25)
        r0 = m30 + along / L * inset
        r1 = m12 - along / L * inset
    verts = np.vstack(
        [
            np.column_stack([p, np.full(4, zb)]),  # 0..3 bottom
            np.column_stack([p, np.full(4, zt)]),  # 4..7 eave
            [[r0[0], r0[1], zr], [r1[0], r1[1], zr]],  # 8, 9 ridge
        ]
    )
    B, T, R0, R1 = 0, 4, 8, 9
    faces = [[B + 0, B + 2, B + 1], [B + 0, B + 3, B + 2]]
    surf = [Surface.WALL, Surface.WALL]
    for i in range(4):
        j = (i + 1) % 4
        faces += [[B + i, B + j, T + j], [B + i, T + j, T + i]]
        surf += [Surface.WALL, Surface.WALL]
    end = Surface.WALL if b.roof_type == "gable" else Surface.ROOF
    faces += [
        [T + 0, T + 1, R1],
        [T + 0, R1, R0],  # long side p0-p1
        [T + 2, T + 3, R0],
        [T + 2, R0, R1],  # long side p2-p3
        [T + 1, T + 2, R1],  # end p1-p2
        [T + 3, T + 0, R0],  # end p3-p0
    ]
    surf += [Surface.ROOF] * 4 + [end, end]
    return verts, np.asarray(faces, dtype=np.int64), np.asarray(surf, dtype=np.uint8)


# --- trees --------------------------------------------------------------------------------
def _icosphere() -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=1, radius=1.0)
    return np.asarray(s.vertices), np.asarray(s.faces, dtype=np.int64)


def _trunk_template(k: int = 6) -> tuple[np.ndarray, np.ndarray]:
    a = 2 * np.pi * np.arange(k) / k
    ring = np.column_stack([np.cos(a), np.sin(a)])
    v = np.vstack([np.column_stack([ring, np.zeros(k)]), np.column_stack([ring, np.ones(k)])])
    v = np.vstack([v, [[0, 0, 0], [0, 0, 1]]])
    f = []
    for i in range(k):
        j = (i + 1) % k
        f += [[i, j, j + k], [i, j + k, i + k]]
        f += [[2 * k, j, i], [2 * k + 1, i + k, j + k]]
    return v, np.asarray(f, dtype=np.int64)


def tree_meshes(city: City) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trunks and crowns of all trees (survey CRS): ``(vertices, faces, part)`` with
    part 1 = trunk, 0 = crown."""
    trees = np.asarray(city.trees, dtype=np.float64).reshape(-1, 4)
    if len(trees) == 0:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros(0, np.uint8)
    x, y, h, r = trees.T
    g = np.asarray(city.terrain(x, y), dtype=np.float64)
    tv, tf = _trunk_template()
    sv, sf = _icosphere()
    crown_bottom = g + 0.35 * h
    trunk_z0 = g - 0.3
    trunk_h = crown_bottom + 0.3 * (h * 0.65) - trunk_z0  # into the crown
    tvv = np.empty((len(trees), len(tv), 3))
    tvv[..., 0] = x[:, None] + TRUNK_RADIUS * tv[None, :, 0]
    tvv[..., 1] = y[:, None] + TRUNK_RADIUS * tv[None, :, 1]
    tvv[..., 2] = trunk_z0[:, None] + trunk_h[:, None] * tv[None, :, 2]
    rv = 0.5 * 0.65 * h
    cz = crown_bottom + rv
    svv = np.empty((len(trees), len(sv), 3))
    svv[..., 0] = x[:, None] + r[:, None] * sv[None, :, 0]
    svv[..., 1] = y[:, None] + r[:, None] * sv[None, :, 1]
    svv[..., 2] = cz[:, None] + rv[:, None] * sv[None, :, 2]
    nt, ns = len(tv), len(sv)
    per = nt + ns
    offs = np.arange(len(trees))[:, None, None] * per
    faces = np.concatenate([tf[None] + offs, sf[None] + offs + nt], axis=1).reshape(-1, 3)
    verts = np.concatenate([tvv, svv], axis=1).reshape(-1, 3)
    part = np.tile(np.r_[np.ones(len(tf), np.uint8), np.zeros(len(sf), np.uint8)], len(trees))
    return verts, faces, part


# --- terrain ------------------------------------------------------------------------------
def terrain_faces(grid: DemGrid) -> np.ndarray:
    """Two upward triangles per cell of pixel centres, vertex index = row * ncols + col."""
    ny, nx = grid.shape
    r, c = np.meshgrid(np.arange(ny - 1), np.arange(nx - 1), indexing="ij")
    nw = (r * nx + c).ravel()
    ne = nw + 1
    sw = nw + nx
    se = sw + 1
    return np.vstack([np.column_stack([sw, se, ne]), np.column_stack([sw, ne, nw])]).astype(
        np.int64
    )


def build_truth(city: City, spec: SurveySpec, grid: DemGrid | None = None) -> TruthScene:
    """The exact truth surface of ``city`` in ENU (see the module docstring for layout).

    ``grid`` may pass an already sampled :func:`~twin.synth.terrain.dem_grid`.
    Memory grows with the DEM pixel count (two faces and one vertex per pixel, about
    100 bytes per pixel including labels) plus a few hundred bytes per building/tree.
    """
    if spec.crs != city.crs:
        raise ParameterError(f"spec CRS {spec.crs!r} differs from the city's {city.crs!r}")
    if grid is None:
        grid = dem_grid(city, spec)
    ny, nx = grid.shape
    gx, gy = np.meshgrid(grid.x, grid.y)
    tverts = np.column_stack([gx.ravel(), gy.ravel(), grid.heights.astype(np.float64).ravel()])
    tfaces = terrain_faces(grid)
    cen = tverts[tfaces].mean(axis=1)
    tsurf = np.full(len(tfaces), Surface.GROUND, dtype=np.uint8)
    roads = road_surface(city) if city.roads else None
    if roads is not None:
        tsurf[point_in(roads, cen[:, 0], cen[:, 1])] = Surface.ROAD
    if city.river is not None:
        tsurf[point_in(city.river, cen[:, 0], cen[:, 1])] = Surface.WATER

    verts = [tverts]
    faces = [tfaces]
    surfs = [tsurf]
    fbld = [np.full(len(tfaces), -1, np.int32)]
    parts = [np.zeros(len(tfaces), np.uint8)]
    nv = len(tverts)
    for i, b in enumerate(city.buildings):
        v, f, s = building_solid(b)
        verts.append(v)
        faces.append(f + nv)
        surfs.append(s)
        fbld.append(np.full(len(f), i, np.int32))
        parts.append(np.zeros(len(f), np.uint8))
        nv += len(v)
    tv, tf, tp = tree_meshes(city)
    verts.append(tv)
    faces.append(tf + nv)
    surfs.append(np.full(len(tf), Surface.TREE, np.uint8))
    fbld.append(np.full(len(tf), -1, np.int32))
    parts.append(tp)

    crs_xyz = np.vstack(verts)
    frame = city.frame
    enu = frame.from_crs(crs_xyz, city.crs)
    F = np.vstack(faces).astype(np.int64)
    S = np.concatenate(surfs).astype(np.uint8)
    FB = np.concatenate(fbld).astype(np.int32)
    P = np.concatenate(parts).astype(np.uint8)

    tri = enu[F]
    nrm = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-300)

    # per-building ENU base height (ENU z differs from ellipsoidal h by the curvature)
    nb = len(city.buildings)
    base_enu = np.zeros(nb)
    if nb:
        cxy = np.array(
            [
                [b.footprint.centroid.x, b.footprint.centroid.y, b.base_height]
                for b in city.buildings
            ]
        )
        base_enu = frame.from_crs(cxy, city.crs)[:, 2]
    segs = []
    for road in city.roads:
        c = np.asarray(road.centerline.coords)
        if len(c) < 2:
            continue
        e = frame.from_crs(np.column_stack([c[:, :2], np.full(len(c), city.water_level)]), city.crs)
        for a, bb in zip(e[:-1], e[1:], strict=True):
            segs.append([a[0], a[1], bb[0], bb[1], road.width])
    albedo = Albedo(
        face_surface=S,
        face_building=FB,
        face_normal=nrm,
        face_part=P,
        building_base=base_enu,
        building_eave=np.array([b.eave_height for b in city.buildings]),
        building_roof=np.array([ROOF_CODE[b.roof_type] for b in city.buildings], dtype=np.int64),
        floor_height=city.floor_height,
        road_segments=np.asarray(segs).reshape(-1, 5),
        seed=spec.seed,
    )
    scene = TruthScene(
        frame=frame,
        vertices=enu,
        faces=F,
        face_surface=S,
        face_building=FB,
        albedo=albedo,
        building_ids=[b.id for b in city.buildings],
    )
    scene.terrain_shape = (ny, nx)  # type: ignore[attr-defined]
    scene.face_normals = nrm  # type: ignore[attr-defined]
    return scene


# --- files --------------------------------------------------------------------------------
def vertex_colors(scene: TruthScene) -> np.ndarray:
    """sRGB uint8 colour of every vertex: the albedo at the vertex, evaluated on the
    first face that uses it."""
    nv = len(scene.vertices)
    face_of = np.full(nv, -1, dtype=np.int64)
    ids = np.repeat(np.arange(len(scene.faces)), 3)
    flat = scene.faces.ravel()
    face_of[flat[::-1]] = ids[::-1]  # first face wins
    rgb = np.zeros((nv, 3))
    used = face_of >= 0
    rgb[used] = scene.albedo(scene.vertices[used], face_of[used])
    return linear_to_srgb8(rgb)


_FACE_DTYPE = np.dtype([("n", "u1"), ("v", "<i4", (3,)), ("surface", "u1"), ("building", "<i4")])
_VERT_DTYPE = np.dtype(
    [("x", "<f8"), ("y", "<f8"), ("z", "<f8"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
)


def write_truth(scene: TruthScene, city: City, out_dir: str | os.PathLike) -> Path:
    """Write ``out_dir/truth/mesh.ply`` and ``out_dir/truth/labels.json``.

    PLY: binary little-endian; vertex ``x y z`` double (ENU metres, frame in
    labels.json) + ``red green blue`` uchar (sRGB-encoded albedo); face
    ``vertex_indices`` (uchar count, int indices) + ``surface`` uchar (Surface code) +
    ``building`` int (index into labels.json "buildings", -1 for none). Written to a
    temporary name and renamed. Returns the truth directory.
    """
    d = Path(out_dir) / "truth"
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the truth folder: {exc}", path=d) from exc
    nv, nf = len(scene.vertices), len(scene.faces)
    vert = np.empty(nv, _VERT_DTYPE)
    vert["x"], vert["y"], vert["z"] = scene.vertices.T
    rgb = vertex_colors(scene)
    vert["red"], vert["green"], vert["blue"] = rgb.T
    face = np.empty(nf, _FACE_DTYPE)
    face["n"] = 3
    face["v"] = scene.faces
    face["surface"] = scene.face_surface
    face["building"] = scene.face_building
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        "comment twin synthetic city truth surface; ENU metres (see labels.json frame)\n"
        f"element vertex {nv}\n"
        "property double x\nproperty double y\nproperty double z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        f"element face {nf}\n"
        "property list uchar int vertex_indices\n"
        "property uchar surface\nproperty int building\n"
        "end_header\n"
    ).encode("ascii")
    labels = {
        "surface": {s.name: int(s.value) for s in Surface},
        "asprs_class": {s.name: int(c) for s, c in ASPRS_CLASS.items()},
        "buildings": list(scene.building_ids),
        "frame": scene.frame.to_dict(),
        "crs": city.crs,
        "heights": "ellipsoidal",
        "vertex_color": "sRGB-encoded albedo",
        "counts": {"vertices": nv, "faces": nf},
    }
    ply = d / "mesh.ply"
    lab = d / "labels.json"
    try:
        with atomic_path(ply) as tmp, open(tmp, "wb") as fh:
            fh.write(header)
            fh.write(vert.tobytes())
            fh.write(face.tobytes())
        with atomic_path(lab) as tmp:
            tmp.write_text(json.dumps(labels, indent=1) + "\n")
    except OSError as exc:
        raise OutputError(f"cannot write the truth mesh: {exc}", path=d) from exc
    return d


_PLY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}


def read_truth_ply(
    path: str | os.PathLike,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read a truth ``mesh.ply``: ``(vertices (N,3) f8, faces (M,3) i8, face_surface
    (M,) u1, face_building (M,) i4)``. Raises :class:`InputError` naming the file for
    anything that is not a binary little-endian triangle PLY with those properties."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the truth mesh: {exc.strerror or exc}", path=path) from None
    end = raw.find(b"end_header\n")
    if not raw.startswith(b"ply\n") or end < 0:
        raise InputError("not a PLY file (no 'ply' magic or no end_header)", path=path)
    lines = raw[:end].decode("ascii", "replace").splitlines()
    elements: list[tuple[str, int, list[tuple[str, str]]]] = []
    fmt = None
    for line in lines[1:]:
        tok = line.split()
        if not tok or tok[0] == "comment":
            continue
        if tok[0] == "format":
            fmt = tok[1]
        elif tok[0] == "element":
            elements.append((tok[1], int(tok[2]), []))
        elif tok[0] == "property" and elements:
            if tok[1] == "list":
                if tok[2] not in _PLY_TYPES or tok[3] not in _PLY_TYPES:
                    raise InputError(f"unknown PLY list types in {line!r}", path=path)
                elements[-1][2].append((tok[4], f"list:{_PLY_TYPES[tok[2]]}:{_PLY_TYPES[tok[3]]}"))
            else:
                if tok[1] not in _PLY_TYPES:
                    raise InputError(f"unknown PLY property type {tok[1]!r}", path=path)
                elements[-1][2].append((tok[2], _PLY_TYPES[tok[1]]))
    if fmt != "binary_little_endian":
        raise InputError(f"PLY format {fmt!r} is not binary_little_endian", path=path)
    offset = end + len(b"end_header\n")
    out: dict[str, np.ndarray] = {}
    for name, count, props in elements:
        fields = []
        for pname, ptype in props:
            if ptype.startswith("list:"):
                _, ct, it = ptype.split(":")
                fields.append((pname + "_n", "<" + ct))
                fields.append((pname, "<" + it, (3,)))
            else:
                fields.append((pname, "<" + ptype))
        dt = np.dtype(fields)
        need = dt.itemsize * count
        if offset + need > len(raw):
            raise InputError(
                f"PLY is truncated: element {name!r} needs {need} bytes, {len(raw) - offset} left",
                path=path,
            )
        arr = np.frombuffer(raw, dtype=dt, count=count, offset=offset)
        for pname, ptype in props:
            if ptype.startswith("list:") and count and np.any(arr[pname + "_n"] != 3):
                raise InputError(f"element {name!r} has non-triangle faces", path=path)
        out[name] = arr
        offset += need
    if "vertex" not in out or "face" not in out:
        raise InputError("PLY has no vertex or no face element", path=path)
    v, f = out["vertex"], out["face"]
    for need_name, names in (("vertex", ("x", "y", "z")), ("face", ("vertex_indices",))):
        for n in names:
            if n not in out[need_name].dtype.names:
                raise InputError(f"PLY {need_name} element has no {n!r} property", path=path)
    verts = np.column_stack([v["x"], v["y"], v["z"]]).astype(np.float64)
    faces = np.asarray(f["vertex_indices"], dtype=np.int64).reshape(-1, 3)
    surf = (
        np.asarray(f["surface"], dtype=np.uint8)
        if "surface" in f.dtype.names
        else np.zeros(len(faces), np.uint8)
    )
    bld = (
        np.asarray(f["building"], dtype=np.int32)
        if "building" in f.dtype.names
        else np.full(len(faces), -1, np.int32)
    )
    if len(faces) and (faces.min() < 0 or faces.max() >= len(verts)):
        raise InputError("face vertex indices out of range", path=path)
    return verts, faces, surf, bld
