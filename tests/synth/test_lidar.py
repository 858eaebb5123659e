"""Simulated airborne LiDAR against an analytic scene (and the real small city)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from twin.crs import LocalFrame, parse_crs
from twin.synth.model import ASPRS_CLASS, Surface, TruthScene
from twin.synth.params import PRESETS

GROUND_Z = 12.0
HALF = 40.0  # the ground plane spans [-40, 40] m in east and north
BOX = (-10.0, -6.0, 10.0, 6.0)  # building footprint (xmin, ymin, xmax, ymax)
BOX_TOP = GROUND_Z + 10.0
TREE_C = np.array([22.0, 20.0, GROUND_Z + 6.0])
TREE_R = 3.0


def _albedo(points: np.ndarray, faces: np.ndarray, surface: np.ndarray) -> np.ndarray:
    s = surface[faces]
    col = np.zeros((len(points), 3))
    checker = ((np.floor(points[:, 0] / 4) + np.floor(points[:, 1] / 4)) % 2)[:, None]
    col[:] = np.where(checker > 0, [0.25, 0.4, 0.15], [0.35, 0.5, 0.2])
    col[s == Surface.ROOF] = [0.6, 0.2, 0.15]
    stripes = (np.floor(points[:, 2] / 1.5) % 2)[:, None]
    wall = np.where(stripes > 0, [0.7, 0.7, 0.65], [0.3, 0.3, 0.35])
    col[s == Surface.WALL] = wall[s == Surface.WALL]
    col[s == Surface.TREE] = [0.1, 0.3, 0.08]
    return col


def analytic_scene() -> TruthScene:
    """Ground plane (8x8 m grid of triangles) + a closed box building + a sphere tree."""
    import trimesh

    n = 11
    g = np.linspace(-HALF, HALF, n)
    gx, gy = np.meshgrid(g, g)
    gv = np.column_stack([gx.ravel(), gy.ravel(), np.full(n * n, GROUND_Z)])
    gf = []
    for j in range(n - 1):
        for i in range(n - 1):
            a, b, c, d = j * n + i, j * n + i + 1, (j + 1) * n + i + 1, (j + 1) * n + i
            gf += [[a, b, c], [a, c, d]]
    gf = np.array(gf)
    x0, y0, x1, y1 = BOX
    box = trimesh.creation.box(
        extents=[x1 - x0, y1 - y0, BOX_TOP - GROUND_Z + 0.5],
        transform=trimesh.transformations.translation_matrix(
            [(x0 + x1) / 2, (y0 + y1) / 2, (BOX_TOP + GROUND_Z - 0.5) / 2]
        ),
    )
    bv, bf = np.asarray(box.vertices), np.asarray(box.faces)
    bn = np.asarray(box.face_normals)
    bsurf = np.where(bn[:, 2] > 0.5, Surface.ROOF, Surface.WALL)
    sph = trimesh.creation.icosphere(subdivisions=3, radius=TREE_R)
    sv = np.asarray(sph.vertices) + TREE_C
    sf = np.asarray(sph.faces)
    V = np.vstack([gv, bv, sv])
    F = np.vstack([gf, bf + len(gv), sf + len(gv) + len(bv)])
    S = np.concatenate(
        [np.full(len(gf), Surface.GROUND), bsurf, np.full(len(sf), Surface.TREE)]
    ).astype(np.uint8)
    FB = np.concatenate([np.full(len(gf), -1), np.zeros(len(bf)), np.full(len(sf), -1)])
    return TruthScene(
        frame=LocalFrame(121.55, 29.87, 0.0),
        vertices=V.astype(np.float64),
        faces=F.astype(np.int64),
        face_surface=S,
        face_building=FB.astype(np.int32),
        albedo=lambda p, f: _albedo(p, f, S),
        building_ids=["B0000"],
    )


SPEC = PRESETS["small"].with_(
    lidar_altitude=60.0, lidar_density=8.0, range_noise=0.05, noise_fraction=0.002, extent=80.0
)


@pytest.fixture(scope="module")
def scene():
    return analytic_scene()


@pytest.fixture(scope="module")
def points(scene):
    from twin.synth.lidar import simulate_lidar

    t0 = time.perf_counter()
    pts = simulate_lidar(scene, SPEC, np.random.Generator(np.random.PCG64(7)))
    print(f"simulate_lidar: {len(pts)} points in {time.perf_counter() - t0:.2f} s")
    return pts


def test_points_lie_on_the_surface_within_the_range_noise(scene, points):
    import trimesh

    ok = points.classification != 7
    mesh = scene.trimesh()
    _, dist, _ = trimesh.proximity.closest_point(mesh, points.xyz[ok])
    rmse = float(np.sqrt(np.mean(dist**2)))
    # noise is along the ray: the normal component has sigma * |cos(incidence)|; on this
    # scene most points are on flat ground/roof seen within 20 degrees of the vertical
    _, tdist, _ = trimesh.proximity.closest_point(mesh, points.true_xyz[ok])
    print(f"RMSE to the surface {rmse:.4f} m (sigma {SPEC.range_noise}); truth {tdist.max():.2e}")
    assert tdist.max() < 1e-6
    assert 0.8 * SPEC.range_noise < rmse < 1.2 * SPEC.range_noise
    along = np.linalg.norm(points.xyz[ok] - points.true_xyz[ok], axis=1)
    assert np.sqrt(np.mean(along**2)) == pytest.approx(SPEC.range_noise, rel=0.05)


def test_classes_equal_the_truth_labels(scene, points):
    ok = points.face_id >= 0
    surf = scene.face_surface[points.face_id[ok]]
    expected = np.array([ASPRS_CLASS[Surface(s)] for s in surf])
    got = points.classification[ok]
    tree = surf == Surface.TREE
    # the crown's bottom is 3 m above the ground: high vegetation
    assert (got[tree] == 5).all() and tree.sum() > 50
    assert (got[~tree] == expected[~tree]).all()
    assert set(np.unique(got)) == {2, 5, 6}
    noise = points.classification == 7
    assert (points.face_id[noise] == -1).all()
    frac = noise.sum() / (points.return_number == 1).sum()
    assert frac == pytest.approx(SPEC.noise_fraction, rel=0.35)
    # outliers are off the surface: high ones in the air, low ones below the ground
    z = points.xyz[noise, 2]
    assert (z > BOX_TOP + 1).any() and (z < GROUND_Z - 1).any()


def test_density_matches_the_spec(points):
    last = points.return_number == points.number_of_returns
    inside = (np.abs(points.xyz[:, 0]) <= HALF) & (np.abs(points.xyz[:, 1]) <= HALF)
    density = (last & inside).sum() / (2 * HALF) ** 2
    print(f"last-return density {density:.2f} /m² (asked {SPEC.lidar_density})")
    assert density == pytest.approx(SPEC.lidar_density, rel=0.15)


def test_returns_strips_scan_and_time(scene, points):
    assert (points.return_number <= points.number_of_returns).all()
    multi = points.number_of_returns > 1
    assert multi.any() and (points.number_of_returns == 3).any()
    # multi-return pulses start in a tree; their last return is beyond it
    first = multi & (points.return_number == 1)
    assert (scene.face_surface[points.face_id[first]] == Surface.TREE).all()
    lastm = multi & (points.return_number == points.number_of_returns)
    assert (scene.face_surface[points.face_id[lastm]] != Surface.TREE).all()
    strips = np.unique(points.point_source_id)
    assert len(strips) >= 2
    for s in strips:
        t = points.gps_time[points.point_source_id == s]
        assert (np.diff(t) >= 0).all()
    half = SPEC.lidar_fov / 2
    assert np.abs(points.scan_angle).max() <= half + 1e-4
    assert np.abs(points.scan_angle).max() > 0.95 * half
    assert set(np.unique(points.scan_direction_flag)) == {0, 1}
    assert points.edge_of_flight_line.sum() > 0
    # adjusted standard GPS time of 2026: about 4.6e8 s
    assert 4e8 < points.gps_time.min() < 5e8
    # intensity: the dark asphalt-like roof is brighter than nothing, water absent here
    assert points.intensity[points.classification == 2].mean() > 1000


def test_same_rng_same_points(scene):
    from twin.synth.lidar import simulate_lidar

    spec = SPEC.with_(lidar_density=2.0)
    a = simulate_lidar(scene, spec, np.random.Generator(np.random.PCG64(3)))
    b = simulate_lidar(scene, spec, np.random.Generator(np.random.PCG64(3)))
    assert np.array_equal(a.xyz, b.xyz) and np.array_equal(a.intensity, b.intensity)


def test_laz_round_trip(scene, points, tmp_path):
    import laspy

    from twin.synth.lidar import write_lidar

    crs = "EPSG:4550"
    path = tmp_path / "a.laz"
    write_lidar(points, scene.frame, crs, path)
    las = laspy.read(path)
    assert las.header.version.minor == 4 and las.header.point_format.id == 7
    assert parse_crs(las.header.parse_crs()) == parse_crs(crs)
    assert las.header.global_encoding.wkt
    assert int(las.header.global_encoding.gps_time_type) == 1
    assert las.header.system_identifier.rstrip("\0") == "twin synth"
    expect = scene.frame.to_crs(points.xyz, crs)
    got = np.column_stack([las.x, las.y, las.z])
    assert np.abs(got - expect).max() <= 0.0005 + 1e-9  # scale 0.001: half a millimetre
    assert np.array_equal(np.asarray(las.classification), points.classification)
    assert np.array_equal(np.asarray(las.point_source_id), points.point_source_id)
    assert np.allclose(np.asarray(las.scan_angle) * 0.006, points.scan_angle, atol=0.0031)
    assert np.array_equal(np.asarray(las.gps_time), points.gps_time)
    assert np.array_equal(np.asarray(las.red), points.rgb[:, 0])
    # same points -> same bytes
    write_lidar(points, scene.frame, crs, tmp_path / "b.laz")
    assert path.read_bytes() == (tmp_path / "b.laz").read_bytes()


def test_bad_crs_is_a_crs_error(scene, points, tmp_path):
    from twin.errors import CRSError
    from twin.synth.lidar import write_lidar

    with pytest.raises(CRSError):
        write_lidar(points, scene.frame, "EPSG:999999", tmp_path / "x.laz")
    assert not (tmp_path / "x.laz").exists()


def test_bad_spec_is_a_parameter_error(scene):
    from twin.errors import ParameterError
    from twin.synth.lidar import simulate_lidar

    with pytest.raises(ParameterError, match="lidar_altitude"):
        simulate_lidar(scene, SPEC.with_(lidar_altitude=-5.0), np.random.default_rng(0))


def test_real_small_city(small_truth, small_spec):
    """On the procedural city: surface RMSE and class agreement, density."""
    import trimesh

    from twin.synth.lidar import simulate_lidar

    spec = small_spec.with_(lidar_density=1.0)
    t0 = time.perf_counter()
    pts = simulate_lidar(small_truth, spec, np.random.Generator(np.random.PCG64(1)))
    dt = time.perf_counter() - t0
    ok = np.flatnonzero(pts.classification != 7)
    idx = np.random.default_rng(0).choice(ok, size=min(4000, len(ok)), replace=False)
    _, dist, _ = trimesh.proximity.closest_point(small_truth.trimesh(), pts.xyz[idx])
    rmse = float(np.sqrt(np.mean(dist**2)))
    area = np.prod(np.ptp(small_truth.vertices[:, :2], axis=0))
    last = (pts.return_number == pts.number_of_returns).sum()
    print(f"small city: {len(pts)} pts in {dt:.2f} s, RMSE {rmse:.4f} m, {last / area:.2f} /m²")
    assert 0.5 * spec.range_noise < rmse < 1.2 * spec.range_noise
    assert last / area == pytest.approx(spec.lidar_density, rel=0.15)
    surf = small_truth.face_surface[pts.face_id[idx]]
    expected = np.array([ASPRS_CLASS[Surface(s)] for s in surf])
    got = pts.classification[idx]
    agree = np.where(surf == Surface.TREE, np.isin(got, [3, 4, 5]), got == expected)
    assert agree.all()


def test_empty_scene_is_an_input_error(scene, tmp_path):
    from dataclasses import replace

    from twin.errors import InputError
    from twin.synth.camera import write_images
    from twin.synth.lidar import simulate_lidar

    empty = replace(scene, faces=np.zeros((0, 3), np.int64), face_surface=np.zeros(0, np.uint8))
    with pytest.raises(InputError, match="no faces"):
        simulate_lidar(empty, SPEC, np.random.default_rng(0))
    with pytest.raises(InputError, match="no faces"):
        write_images(empty, SPEC, tmp_path, np.random.default_rng(0))
