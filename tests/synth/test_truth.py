"""The exact truth mesh: closed outward solids, DEM = terrain vertices, labels, PLY, albedo."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import rasterio
import shapely
import trimesh

from twin.errors import InputError
from twin.synth.appearance import linear_to_srgb8
from twin.synth.city import make_city
from twin.synth.model import Building, Surface
from twin.synth.params import PRESETS
from twin.synth.terrain import write_dem
from twin.synth.truth import (
    WALL_BELOW,
    build_truth,
    building_solid,
    read_truth_ply,
    triangulate_polygon,
    write_truth,
)


def _solid(scene, i):
    m = scene.face_building == i
    f = scene.faces[m]
    used, inv = np.unique(f, return_inverse=True)
    return trimesh.Trimesh(scene.vertices[used], inv.reshape(-1, 3), process=False), m


def _footprint_area_enu(scene, b):
    ring = np.asarray(b.footprint.exterior.coords)[:, :2]
    e = scene.frame.from_crs(np.column_stack([ring, np.zeros(len(ring))]), "EPSG:4550")
    area = shapely.Polygon(e[:, :2]).area
    for hole in b.footprint.interiors:
        h = np.asarray(hole.coords)[:, :2]
        e = scene.frame.from_crs(np.column_stack([h, np.zeros(len(h))]), "EPSG:4550")
        area -= shapely.Polygon(e[:, :2]).area
    return area


def test_every_building_is_a_closed_outward_solid_with_the_right_volume(small_city, small_truth):
    scene = small_truth
    for i, b in enumerate(small_city.buildings):
        mesh, _ = _solid(scene, i)
        assert mesh.is_watertight and mesh.is_winding_consistent, b.id
        # edges each used exactly twice
        e = np.sort(mesh.edges, axis=1)
        _, counts = np.unique(e, axis=0, return_counts=True)
        assert np.all(counts == 2), b.id
        area = _footprint_area_enu(scene, b)
        prism = area * (b.eave_height + WALL_BELOW)
        if b.roof_type == "flat":
            expected = prism
        elif b.roof_type == "gable":
            expected = prism + 0.5 * area * (b.ridge_height - b.eave_height)
        else:  # hip: between the eave prism and the gable volume
            expected = None
        assert mesh.volume > 0, b.id  # outward normals
        if expected is not None:
            assert mesh.volume == pytest.approx(expected, rel=2e-3), b.id
        else:
            gable = prism + 0.5 * area * (b.ridge_height - b.eave_height)
            assert prism < mesh.volume < gable, b.id


def test_courtyard_u_and_l_solids_are_closed(small_spec):
    city = make_city(PRESETS["default"].with_(trees=False))
    picked = {}
    for b in city.buildings:
        picked.setdefault((b.shape, b.roof_type), b)
    assert ("courtyard", "flat") in picked and ("U", "flat") in picked
    for b in picked.values():
        v, f, s = building_solid(b)
        m = trimesh.Trimesh(v, f, process=False)
        assert m.is_watertight and m.is_winding_consistent and m.volume > 0, b.id
        area = b.footprint.area
        if b.roof_type == "flat":
            assert m.volume == pytest.approx(area * (b.eave_height + WALL_BELOW), rel=1e-9)
        roof = f[s == Surface.ROOF]
        if b.roof_type == "flat":  # the roof covers exactly the footprint (holes kept)
            tri = v[roof]
            a = 0.5 * np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])[:, 2]
            assert np.all(a > 0) and a.sum() == pytest.approx(area, rel=1e-9)


def test_triangulation_keeps_holes_and_winds_ccw():
    poly = shapely.Polygon(
        [(0, 0), (20, 0), (20, 20), (0, 20)], [[(5, 5), (5, 15), (15, 15), (15, 5)]]
    )
    xy, tris = triangulate_polygon(poly)
    assert len(xy) == 8 and len(tris) == 8
    p = xy[tris]
    a = 0.5 * (
        (p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1])
        - (p[:, 1, 1] - p[:, 0, 1]) * (p[:, 2, 0] - p[:, 0, 0])
    )
    assert np.all(a > 0) and a.sum() == pytest.approx(300.0)
    assert not np.any(shapely.contains_xy(poly.interiors[0].convex_hull, *p.mean(axis=1).T))


def test_roofs_reach_the_ridge_and_walls_start_below_the_base(small_city, small_truth):
    scene = small_truth
    crs_v = scene.frame.to_crs(scene.vertices, small_city.crs)
    kinds = set()
    for i, b in enumerate(small_city.buildings):
        m = scene.face_building == i
        vz = crs_v[np.unique(scene.faces[m]), 2]
        assert vz.max() == pytest.approx(b.base_height + b.ridge_height, abs=1e-6), b.id
        assert vz.min() == pytest.approx(b.base_height - WALL_BELOW, abs=1e-6), b.id
        roof = m & (scene.face_surface == Surface.ROOF)
        assert roof.any() and np.all(scene.face_normals[roof, 2] > 0.3), b.id
        walls = m & (scene.face_surface == Surface.WALL)
        # the sides (not the floor) are vertical
        side = walls & (np.abs(scene.face_normals[:, 2]) < 0.999)
        assert np.abs(scene.face_normals[side, 2]).max() < 0.02, b.id
        kinds.add(b.roof_type)
        if b.roof_type in ("gable", "hip"):
            # two ridge vertices at the ridge height
            top = np.sum(np.abs(vz - (b.base_height + b.ridge_height)) < 1e-6)
            assert top == 2, b.id
    assert kinds == {"flat", "gable", "hip"}


def test_dem_pixels_are_the_truth_terrain_vertices(small_city, small_spec, small_truth, tmp_path):
    scene = small_truth
    ny, nx = scene.terrain_shape
    with rasterio.open(
        write_dem(small_city, small_spec, tmp_path / "dem.tif") and tmp_path / "dem.tif"
    ) as ds:
        z = ds.read(1).astype(np.float64)
        rows, cols = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        px, py = rasterio.transform.xy(ds.transform, rows.ravel(), cols.ravel())
    assert z.shape == (ny, nx)
    back = scene.frame.to_crs(scene.vertices[: nx * ny], small_city.crs)
    assert np.abs(back[:, 0] - np.asarray(px)).max() < 1e-6
    assert np.abs(back[:, 1] - np.asarray(py)).max() < 1e-6
    assert np.abs(back[:, 2] - z.ravel()).max() < 1e-6
    # and every terrain face uses only these vertices, facing up
    terr = scene.face_building < 0
    terr &= scene.face_surface != Surface.TREE
    assert terr.sum() == 2 * (nx - 1) * (ny - 1)
    assert scene.faces[terr].max() < nx * ny
    assert np.all(scene.face_normals[terr, 2] > 0)


def test_every_surface_is_labelled_consistently(small_city, small_truth):
    scene = small_truth
    counts = np.bincount(scene.face_surface, minlength=7)
    for s in Surface:
        assert counts[s] > 0, s.name
    bld = np.isin(scene.face_surface, [Surface.WALL, Surface.ROOF])
    assert np.all(scene.face_building[bld] >= 0)
    assert np.all(scene.face_building[~bld] == -1)
    assert set(np.unique(scene.face_building[bld])) == set(range(len(small_city.buildings)))
    assert scene.building_ids == [b.id for b in small_city.buildings]
    # water faces are flat at the water level (ENU z within the Earth's curvature)
    water = scene.face_surface == Surface.WATER
    wz = scene.frame.to_crs(scene.vertices[np.unique(scene.faces[water])], small_city.crs)[:, 2]
    centroids = scene.frame.to_crs(scene.vertices[scene.faces[water]].mean(axis=1), small_city.crs)
    assert shapely.contains_xy(small_city.river, centroids[:, 0], centroids[:, 1]).all()
    assert np.median(np.abs(wz - small_city.water_level)) < 1e-4


def test_truth_is_deterministic_and_fast(small_city, small_spec, small_truth):
    t = time.perf_counter()
    again = build_truth(make_city(small_spec), small_spec)
    dt = time.perf_counter() - t
    print(f"small city + truth: {dt:.2f} s, {len(again.faces)} faces")
    assert dt < 10.0  # ~1 s measured on one core; the spec asks < 5 s
    assert np.array_equal(again.vertices, small_truth.vertices)
    assert np.array_equal(again.faces, small_truth.faces)
    assert np.array_equal(again.face_surface, small_truth.face_surface)
    pts = small_truth.vertices[small_truth.faces[:5000:7]].mean(axis=1)
    ids = np.arange(0, 5000, 7)
    assert np.array_equal(again.albedo(pts, ids), small_truth.albedo(pts, ids))


def _points_on_faces(scene, surface, n, rng):
    ids = np.flatnonzero(scene.face_surface == surface)
    ids = rng.choice(ids, n)
    tri = scene.vertices[scene.faces[ids]]
    w = rng.dirichlet([1, 1, 1], n)
    return np.einsum("nk,nkd->nd", w, tri), ids


def test_albedo_has_detail_on_every_surface_and_is_fast(small_truth):
    scene = small_truth
    rng = np.random.default_rng(3)
    for s in Surface:
        pts, ids = _points_on_faces(scene, s, 2000, rng)
        rgb = scene.albedo(pts, ids)
        assert rgb.shape == (2000, 3) and rgb.min() >= 0 and rgb.max() <= 1
        # high-frequency detail: points 5 cm apart along the face differ noticeably
        nrm = scene.face_normals[ids]
        step = np.cross(nrm, [0.3, 0.5, 0.81])
        step *= 0.05 / np.linalg.norm(step, axis=1, keepdims=True)
        rgb2 = scene.albedo(pts + step, ids)
        lum_diff = np.abs(rgb2 - rgb).sum(axis=1)
        assert np.median(lum_diff) > 0.002, s.name
        assert (rgb.std(axis=0) / rgb.mean(axis=0)).max() > 0.08, s.name
    pts, ids = _points_on_faces(scene, Surface.GROUND, 500_000, rng)
    t = time.perf_counter()
    scene.albedo(pts, ids)
    rate = 500_000 / (time.perf_counter() - t)
    print(f"albedo: {rate / 1e6:.2f} M points/s")
    assert rate > 3e5


def test_facades_have_window_rows_per_floor(small_city, small_truth):
    scene = small_truth
    i = int(
        np.argmax([b.eave_height if b.roof_type == "flat" else 0 for b in small_city.buildings])
    )
    b = small_city.buildings[i]
    # the longest wall face of that building
    m = np.flatnonzero(
        (scene.face_building == i)
        & (scene.face_surface == Surface.WALL)
        & (np.abs(scene.face_normals[:, 2]) < 0.1)
    )
    tri = scene.vertices[scene.faces[m]]
    fid = m[np.argmax(np.linalg.norm(tri[:, 1] - tri[:, 0], axis=1))]
    v = scene.vertices[scene.faces[fid]]
    n = scene.face_normals[fid]
    t = np.cross([0, 0, 1.0], n)
    t /= np.linalg.norm(t)
    base_enu = v[:, 2].min() + WALL_BELOW
    # a vertical profile through the middle of a window column, 1 cm steps, eave - 1 m high
    start = v[:, :2].mean(axis=0)
    s0 = start @ t[:2]
    shift = (np.floor(s0 / 3.0) + 0.5) * 3.0 - s0  # to a window column centre
    z = np.arange(base_enu + 0.01, base_enu + b.eave_height - 1.0, 0.01)
    pts = np.column_stack(
        [np.full_like(z, start[0] + shift * t[0]), np.full_like(z, start[1] + shift * t[1]), z]
    )
    # points must be on the triangle: project onto the wall plane, same face id
    rgb = scene.albedo(pts, np.full(len(z), fid))
    lum = rgb.mean(axis=1)
    dark = lum < 0.6 * np.percentile(lum, 90)  # glass and its frame against the façade
    rises = np.flatnonzero(np.diff(dark.astype(int)) == 1)
    # one window per floor (the top floor's window may be cut by the eave margin)
    assert b.floors - 1 <= len(rises) <= b.floors
    spacing = np.diff(z[rises])
    assert np.allclose(spacing, small_city.floor_height, atol=0.02)


def test_ply_round_trip_and_labels(small_city, small_truth, tmp_path):
    d = write_truth(small_truth, small_city, tmp_path)
    v, f, s, bld = read_truth_ply(d / "mesh.ply")
    assert np.array_equal(v, small_truth.vertices)
    assert np.array_equal(f, small_truth.faces)
    assert np.array_equal(s, small_truth.face_surface)
    assert np.array_equal(bld, small_truth.face_building)
    labels = json.loads((d / "labels.json").read_text())
    assert labels["surface"]["ROOF"] == 5 and labels["buildings"][0] == "B0001"
    assert labels["frame"]["origin"]["lon"] == PRESETS["small"].lon
    raw = (d / "mesh.ply").read_bytes()
    hdr = raw[: raw.index(b"end_header")].decode()
    assert "format binary_little_endian 1.0" in hdr and "property double x" in hdr
    assert "property uchar red" in hdr and "property int building" in hdr
    # vertex colours are the albedo at the vertex
    m = trimesh.load(d / "mesh.ply", process=False)
    assert len(m.vertices) == len(v) and len(m.faces) == len(f)
    col = np.asarray(m.visual.vertex_colors)[:, :3]
    f0 = small_truth.faces[0]
    assert np.array_equal(
        col[f0[0]],
        linear_to_srgb8(small_truth.albedo(small_truth.vertices[f0[:1]], np.array([0])))[0],
    )
    # second write: same bytes
    d2 = write_truth(small_truth, small_city, tmp_path / "again")
    assert (d2 / "mesh.ply").read_bytes() == raw
    assert not list(tmp_path.rglob("*.tmp"))


def test_bad_ply_files_name_the_file(tmp_path, small_city, small_truth):
    d = write_truth(small_truth, small_city, tmp_path)
    raw = (d / "mesh.ply").read_bytes()
    cut = tmp_path / "cut.ply"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="cut.ply.*truncated"):
        read_truth_ply(cut)
    junk = tmp_path / "junk.ply"
    junk.write_bytes(b"hello")
    with pytest.raises(InputError, match="junk.ply"):
        read_truth_ply(junk)
    with pytest.raises(InputError, match="missing.ply"):
        read_truth_ply(tmp_path / "missing.ply")
    asc = tmp_path / "ascii.ply"
    asc.write_bytes(raw[:40].replace(b"binary_little_endian", b"ascii") + b"end_header\n")
    with pytest.raises(InputError, match="ascii.ply"):
        read_truth_ply(asc)


def test_gable_and_hip_need_rectangles():
    from twin.errors import ParameterError

    poly = shapely.Polygon([(0, 0), (20, 0), (20, 8), (8, 8), (8, 20), (0, 20)])
    b = Building("B9999", poly, "L", 10.0, 6.8, 9.0, 2, "gable")
    with pytest.raises(ParameterError, match="B9999"):
        building_solid(b)


def test_walls_meet_the_terrain_without_a_gap(small_city, small_spec):
    """Every DEM sample around a footprint's outline is the pad height, so the
    piecewise-linear truth terrain meets each wall between base and base - 0.5 m."""
    from twin.synth.terrain import dem_grid

    grid = dem_grid(small_city, small_spec)
    res = grid.resolution
    for b in small_city.buildings:
        ring = b.footprint.exterior
        d = np.arange(0, ring.length, 0.25 * res)
        pts = np.array([ring.interpolate(t).coords[0] for t in d])
        col = np.floor((pts[:, 0] - grid.x[0]) / res).astype(int)
        row = np.floor((grid.y[0] - pts[:, 1]) / res).astype(int)
        z = np.stack([grid.heights[row + dr, col + dc] for dr in (0, 1) for dc in (0, 1)], axis=1)
        assert np.abs(z - b.base_height).max() < 1e-4, b.id
