"""Point filters against synthetic truth: injected outliers, voxel occupancy and
fields, normals of analytic surfaces, height above a known terrain; kernels against
their NumPy references; streamed files against the in-memory functions; bad input."""

from __future__ import annotations

import numpy as np
import pyproj
import pytest

from twin.errors import CRSError, InputError, OutputError, ParameterError
from twin.points import _filter_kernels as FK
from twin.points import _filters_reference as FR
from twin.points import filters as Fl
from twin.points import io
from twin.points.cloud import PointCloud

UTM = pyproj.CRS(32631)
FEET = pyproj.CRS(6880)  # Nebraska, US survey feet


def _rng(seed):
    return np.random.Generator(np.random.PCG64(seed))


def _surface(n=20_000, seed=0):
    """A wavy surface z = 2 sin(x/7) cos(y/9) over 100 m x 100 m with its true unit
    normals (upward), 2 pts/m^2, 1 cm noise, in UTM (metres)."""
    rng = _rng(seed)
    x, y = rng.uniform(0, 100, n), rng.uniform(0, 100, n)
    z = 2 * np.sin(x / 7) * np.cos(y / 9) + rng.normal(0, 0.01, n)
    zx = 2 / 7 * np.cos(x / 7) * np.cos(y / 9)
    zy = -2 / 9 * np.sin(x / 7) * np.sin(y / 9)
    nrm = np.column_stack([-zx, -zy, np.ones(n)])
    nrm /= np.linalg.norm(nrm, axis=1)[:, None]
    xyz = np.column_stack([x + 500_000, y + 5_700_000, z + 40])
    return xyz, nrm


def _with_outliers(n_out=200, seed=1):
    """The surface plus ``n_out`` points scattered 3-30 m above or below it."""
    xyz, _ = _surface()
    rng = _rng(seed)
    o = np.column_stack(
        [
            rng.uniform(0, 100, n_out) + 500_000,
            rng.uniform(0, 100, n_out) + 5_700_000,
            40 + rng.choice([-1, 1], n_out) * rng.uniform(3, 30, n_out),
        ]
    )
    all_xyz = np.vstack([xyz, o])
    truth = np.r_[np.zeros(len(xyz), bool), np.ones(n_out, bool)]
    order = rng.permutation(len(all_xyz))
    cloud = PointCloud(
        all_xyz[order],
        fields={"gps_time": np.arange(len(all_xyz), dtype=np.float64)},
        crs=UTM,
        source="outliers.laz",
    )
    return cloud, truth[order]


def _pr(pred, truth):
    tp = np.count_nonzero(pred & truth)
    return tp / max(pred.sum(), 1), tp / max(truth.sum(), 1)


# ----------------------------------------------------------------- outliers


def test_statistical_outliers_recall_precision_and_open3d():
    import open3d as o3d

    cloud, truth = _with_outliers()
    pred = Fl.statistical_outliers(cloud, k=8, std_ratio=2.0)
    precision, recall = _pr(pred, truth)
    # measured: precision 1.0, recall 0.985 (outliers next to each other by chance stay)
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)
    # the same statistic as Open3D's (which counts the point itself among k + 1)
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(cloud.xyz - cloud.xyz.min(0)))
    _, kept = pc.remove_statistical_outlier(nb_neighbors=9, std_ratio=2.0)
    o3d_pred = np.ones(len(cloud), bool)
    o3d_pred[kept] = False
    assert np.mean(o3d_pred == pred) > 0.9999
    clean = Fl.remove_outliers(cloud)
    assert len(clean) == len(cloud) - pred.sum()
    np.testing.assert_array_equal(clean.fields["gps_time"], cloud.fields["gps_time"][~pred])


def test_radius_outliers_recall_precision():
    cloud, truth = _with_outliers()
    # 2 pts/m^2 on the surface: ~14 others within 1.5 m (Poisson: P(< 2) = 1e-5);
    # a scattered outlier has none
    pred = Fl.radius_outliers(cloud, radius=1.5, min_neighbors=2)
    precision, recall = _pr(pred, truth)
    # measured: precision 0.95, recall 1.0 (a few sparse surface points have < 2)
    assert precision >= 0.9 and recall >= 0.99, (precision, recall)
    clean = Fl.remove_outliers(cloud, "radius", radius=1.5, min_neighbors=2)
    assert len(clean) == len(cloud) - pred.sum()


@pytest.mark.parametrize("radius", [0.5, 1.3])
def test_radius_count_matches_reference(radius):
    xyz = _rng(3).uniform(0, 10, (4000, 3)) * [1, 1, 0.3]
    xyz[:50] = xyz[50:100]  # duplicates count as neighbours
    skey, order, dims = FK.cell_index(xyz, radius)
    got = FK.radius_count(xyz, radius, skey, order, dims)
    np.testing.assert_array_equal(got, FR.radius_count(xyz, radius))


def test_mean_knn_distance_matches_reference():
    d = np.sort(_rng(4).uniform(0, 3, (500, 7)), axis=1)
    d[:, 0] = 0
    d[:20, 4:] = np.inf  # missing neighbours (cKDTree pads with inf)
    d[20:23, 1:] = np.inf
    np.testing.assert_allclose(FK.mean_knn_distance(d), FR.mean_knn_distance(d))
    assert np.all(np.isinf(FK.mean_knn_distance(d)[20:23]))


# ----------------------------------------------------------------- voxels


@pytest.mark.parametrize("mode", ["centroid", "first"])
def test_voxel_downsample_one_point_per_voxel_keeps_fields(mode):
    xyz, _ = _surface(30_000, seed=5)
    cloud = PointCloud(
        xyz,
        fields={
            "gps_time": np.arange(len(xyz), dtype=np.float64),
            "intensity": (np.arange(len(xyz)) % 6000).astype(np.uint16),
            "my_extra": _rng(6).normal(0, 1, len(xyz)).astype(np.float32),
        },
        crs=UTM,
    )
    size = 2.0
    out = Fl.voxel_downsample(cloud, size, mode)
    occupied = np.unique(np.floor(xyz / size).astype(np.int64), axis=0)
    vox = np.floor(out.xyz / size).astype(np.int64)
    assert len(np.unique(vox, axis=0)) == len(out) == len(occupied)  # exactly one each
    assert set(out.fields) == set(cloud.fields)
    src = out.fields["gps_time"].astype(np.int64)  # each point's representative
    for name in ("intensity", "my_extra"):
        np.testing.assert_array_equal(out.fields[name], cloud.fields[name][src])
    # the representative lies in the output point's voxel
    np.testing.assert_array_equal(np.floor(xyz[src] / size).astype(np.int64), vox)
    assert np.all(np.diff(src) > 0)  # order of the input kept
    if mode == "first":
        np.testing.assert_array_equal(out.xyz, xyz[src])
    else:  # centroids of each voxel's points
        key = {tuple(v): i for i, v in enumerate(vox)}
        allv = np.floor(xyz / size).astype(np.int64)
        sel = np.array([key[tuple(v)] for v in allv])
        cen = np.column_stack(
            [np.bincount(sel, weights=xyz[:, a] - xyz[:, a].min()) for a in range(3)]
        ) / np.bincount(sel)[:, None] + xyz.min(0)
        np.testing.assert_allclose(out.xyz, cen, atol=1e-6)


@pytest.mark.parametrize("centroid", [True, False])
def test_voxel_kernel_matches_reference(centroid):
    rng = _rng(7)
    xyz = np.round(rng.uniform(0, 5, (3000, 3)), 2)  # a 1 cm grid: many exact ties
    inv = np.unique(np.floor(xyz).astype(np.int64), axis=0, return_inverse=True)[1].ravel()
    cen, rep = FK.voxel_representatives(inv, xyz, int(inv.max()) + 1, centroid)
    cen_r, rep_r = FR.voxel_representatives(inv, xyz, int(inv.max()) + 1, centroid)
    np.testing.assert_allclose(cen, cen_r, atol=1e-12)
    np.testing.assert_array_equal(rep, rep_r)


def test_voxel_size_in_feet():
    """A 1 m voxel in a US-survey-feet CRS spans 3.28 ft."""
    xyz = _rng(8).uniform(0, 100, (20_000, 3))
    cloud = PointCloud(xyz, crs=FEET)  # Nebraska, US survey feet
    out = Fl.voxel_downsample(cloud, 1.0, "first")
    ft = 3937 / 1200
    assert len(out) == len(np.unique(np.floor(xyz / ft).astype(np.int64), axis=0))


# ----------------------------------------------------------------- normals


def _angle_deg(a, b):
    return np.degrees(np.arccos(np.clip(np.abs(np.sum(a * b, axis=1)), 0, 1)))


@pytest.mark.parametrize("method", ["numba", "open3d"])
def test_normals_of_analytic_surfaces(method):
    # the wavy surface
    xyz, truth = _surface()
    cloud = PointCloud(xyz, crs=UTM)
    nrm = Fl.estimate_normals(cloud, k=16, method=method)
    err = _angle_deg(nrm, truth)
    # measured: median 0.4 deg, 95th percentile 1.0 deg (1 cm noise, 2 pts/m^2)
    assert np.median(err) < 1.0 and np.percentile(err, 95) < 3.0, np.percentile(err, [50, 95])
    assert np.all(nrm[:, 2] >= 0) and np.allclose(np.linalg.norm(nrm, axis=1), 1)
    # a sphere of radius 10: normals are radial (up to sign)
    rng = _rng(9)
    v = rng.normal(size=(20_000, 3))
    v /= np.linalg.norm(v, axis=1)[:, None]
    sph = PointCloud(v * 10 + [100, 100, 100])
    err = _angle_deg(Fl.estimate_normals(sph, k=12, method=method), v)
    assert np.median(err) < 1.0 and np.percentile(err, 99) < 3.0, np.percentile(err, [50, 99])
    # a 35-degree plane in feet: the metric normal is the same
    g = rng.uniform(0, 300, (5000, 2))
    t = np.radians(35)
    plane = np.column_stack([g[:, 0], g[:, 1], np.tan(t) * g[:, 0]])
    nrm = Fl.estimate_normals(PointCloud(plane, crs=FEET), k=10, method=method)
    assert _angle_deg(nrm, np.array([[-np.sin(t), 0, np.cos(t)]])).max() < 0.01


def test_numba_and_open3d_normals_agree_and_store():
    xyz, _ = _surface(8000, seed=2)
    cloud = PointCloud(xyz, crs=UTM)
    a = Fl.estimate_normals(cloud, k=16, store=True)
    b = Fl.estimate_normals(cloud, k=16, method="open3d")
    assert np.percentile(_angle_deg(a, b), 99.9) < 0.01
    pc = cloud.to_open3d()  # stored fields travel to Open3D
    np.testing.assert_allclose(np.asarray(pc.normals), a, atol=1e-6)


# ----------------------------------------------------------------- height above ground


def test_height_above_ground_from_classes_and_dtm(small_scene, tmp_path):
    from twin.points import raster

    s = small_scene
    truth_hag = s.cloud.z - s.terrain(s.cloud.x, s.cloud.y)
    c = s.cloud[:]
    c.fields["classification"] = s.truth.copy()  # exact ground classes
    from_classes = Fl.height_above_ground(c)
    dtm = raster.dtm(c, tmp_path / "dtm.tif", 1.0, ground="existing")["path"]
    from_dtm = Fl.height_above_ground(c, dtm)
    # NaN only where the DTM has nodata (a corner outside its TIN)
    assert np.isnan(from_dtm).sum() < 10
    from_filter = Fl.height_above_ground(s.cloud)  # unclassified: the ground filter
    open_ground = s.truth == 2
    for hag in (from_classes, from_dtm, from_filter):
        err = hag[open_ground] - truth_hag[open_ground]
        # measured: 0.04-0.05 m RMSE (0.04 m range noise)
        assert np.sqrt(np.nanmean(err**2)) < 0.1
    b = s.truth == 6
    assert np.nanmedian(np.abs(from_dtm[b] - truth_hag[b])) < 0.2


def test_dtm_in_another_crs_is_refused(small_scene, tmp_path):
    from twin.points import raster

    c = small_scene.cloud[:]
    c.fields["classification"] = small_scene.truth.copy()
    dtm = raster.dtm(c, tmp_path / "dtm.tif", 2.0, ground="existing")["path"]
    other = PointCloud(c.xyz, crs=pyproj.CRS(32632), source="other.laz")
    with pytest.raises(CRSError, match="dtm.tif"):
        Fl.height_above_ground(other, dtm)
    with pytest.raises(InputError, match="not a readable DTM"):
        Fl.height_above_ground(c, tmp_path / "missing.tif")


# ----------------------------------------------------------------- bad input


def test_bad_input():
    empty = PointCloud(np.zeros((0, 3)), source="empty.laz")
    for fn in (
        Fl.statistical_outliers,
        Fl.radius_outliers,
        Fl.estimate_normals,
        Fl.height_above_ground,
        lambda c: Fl.voxel_downsample(c, 1.0),
    ):
        with pytest.raises(InputError, match="empty.laz.*no points"):
            fn(empty)
    xyz, _ = _surface(1000)
    xyz[7, 2] = np.nan
    nan = PointCloud(xyz, source="nan.laz")
    for fn in (
        Fl.statistical_outliers,
        Fl.radius_outliers,
        Fl.estimate_normals,
        lambda c: Fl.voxel_downsample(c, 1.0),
    ):
        with pytest.raises(InputError, match="nan.laz.*1 of 1000 points have NaN"):
            fn(nan)
    ok = PointCloud(_surface(1000)[0])
    with pytest.raises(ParameterError, match="size"):
        Fl.voxel_downsample(ok, 0)
    with pytest.raises(ParameterError, match="mode"):
        Fl.voxel_downsample(ok, 1.0, "middle")
    with pytest.raises(ParameterError, match="k must"):
        Fl.statistical_outliers(ok, k=0)
    with pytest.raises(ParameterError, match="k >= 3"):
        Fl.estimate_normals(ok, k=2)
    with pytest.raises(ParameterError, match="method"):
        Fl.estimate_normals(ok, method="gpu")
    with pytest.raises(ParameterError, match="radius"):
        Fl.radius_outliers(ok, radius=-1)
    with pytest.raises(ParameterError, match="method"):
        Fl.remove_outliers(ok, "median")
    deg = PointCloud(np.column_stack([np.linspace(4, 5, 50)] * 3), crs=pyproj.CRS(4326), source="d")
    with pytest.raises(CRSError, match="degrees"):
        Fl.voxel_downsample(deg, 1.0)


# ----------------------------------------------------------------- files


@pytest.fixture(scope="module")
def outlier_file(tmp_path_factory):
    cloud, truth = _with_outliers()
    path = tmp_path_factory.mktemp("filters") / "in.laz"
    io.write(cloud, path)
    return path, truth


def _by_time(c):
    return c[np.argsort(c.fields["gps_time"])]


def test_filter_file_matches_memory(outlier_file, tmp_path):
    src, truth = outlier_file
    mem = io.read(src)
    kw = dict(tile=30.0, buffer=5.0, chunk_points=4000)  # 16+ tiles, 6 chunks
    # radius: exactly the in-memory decision
    s = Fl.filter_file(src, tmp_path / "r.las", outliers="radius", radius=1.5, **kw)
    out = io.read(tmp_path / "r.las")
    keep = ~Fl.radius_outliers(mem, 1.5, 2)
    np.testing.assert_array_equal(np.sort(out.fields["gps_time"]), mem.fields["gps_time"][keep])
    assert s["output_points"] == keep.sum() and s["tiles"] >= 16
    # statistical: the file's statistics; isolated points whose neighbours reach past
    # the halo get a larger distance in their tile, so the cut is a little wider
    s = Fl.filter_file(src, tmp_path / "s.las", outliers="statistical", **kw)
    out = io.read(tmp_path / "s.las")
    gone = ~np.isin(mem.fields["gps_time"], out.fields["gps_time"])
    assert np.mean(gone == Fl.statistical_outliers(mem)) > 0.998
    precision, recall = _pr(gone, truth)
    assert precision >= 0.95 and recall >= 0.9, (precision, recall)
    # voxels: the same points and centroids (to the file's 1 mm grid)
    Fl.filter_file(src, tmp_path / "v.laz", voxel=1.5, **kw)
    a, b = _by_time(io.read(tmp_path / "v.laz")), _by_time(Fl.voxel_downsample(mem, 1.5))
    np.testing.assert_array_equal(a.fields["gps_time"], b.fields["gps_time"])
    np.testing.assert_allclose(a.xyz, b.xyz, atol=0.0011)
    # normals: as in memory on the surface (halo 5 m > the 16 neighbours' reach; an
    # isolated outlier's neighbours reach past it)
    Fl.filter_file(src, tmp_path / "n.laz", normals=True, **kw)
    out = _by_time(io.read(tmp_path / "n.laz"))
    nrm = np.column_stack([out.fields[f] for f in Fl.NORMAL_FIELDS])
    ref = Fl.estimate_normals(_by_time(mem), 16)
    assert np.mean(_angle_deg(nrm, ref)[~truth] < 0.05) > 0.999  # float32 fields
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n.laz", "r.las", "s.las", "v.laz"]


def test_filter_file_hag_and_all_steps(small_scene, tmp_path):
    s = small_scene
    c = s.cloud[:]
    c.fields["classification"] = s.truth.copy()
    c.fields["gps_time"] = np.arange(len(c), dtype=np.float64)
    src = io.write(c, tmp_path / "scene.las")
    st = Fl.filter_file(
        src,
        tmp_path / "out.laz",
        outliers="radius",
        radius=2.0,
        voxel=0.5,
        normals=True,
        hag=True,
        tile=40.0,
        buffer=6.0,
    )
    out = io.read(tmp_path / "out.laz")
    assert st["output_points"] == len(out)
    assert {"normal_x", "normal_y", "normal_z", "height_above_ground"} <= set(out.fields)
    assert out.point_format == 6 and out.crs.to_epsg() == 32631
    g = out.classification == 2
    truth_hag = out.z - s.terrain(out.x, out.y)
    err = out.fields["height_above_ground"][g] - truth_hag[g]
    assert np.sqrt(np.mean(err**2)) < 0.1
    # ground normals: near vertical; the high outliers (birds) are gone
    assert np.median(out.fields["normal_z"][g]) > 0.98
    assert (truth_hag > 30).sum() < 0.2 * ((s.truth == 7).sum() / 2)


def test_filter_file_bad_input(small_scene, points_dir, tmp_path):
    src = io.write(small_scene.cloud, tmp_path / "in.las")  # no class 2
    with pytest.raises(InputError, match="in.las.*needs ground points"):
        Fl.filter_file(src, tmp_path / "o.las", hag=True)
    with pytest.raises(ParameterError, match="nothing to do"):
        Fl.filter_file(src, tmp_path / "o.las")
    with pytest.raises(OutputError, match="o.txt"):
        Fl.filter_file(src, tmp_path / "o.txt", voxel=1.0)
    with pytest.raises(OutputError, match="overwrite"):
        Fl.filter_file(src, src, voxel=1.0)
    with pytest.raises(ParameterError, match="buffer"):
        Fl.filter_file(src, tmp_path / "o.las", voxel=1.0, tile=5.0, buffer=10.0)
    with pytest.raises(ParameterError, match="radius"):
        Fl.filter_file(src, tmp_path / "o.las", outliers="radius", radius=20.0)
    with pytest.raises(CRSError, match="EPSG:999999"):
        Fl.filter_file(src, tmp_path / "o.las", voxel=1.0, crs="EPSG:999999")
    bad = tmp_path / "cut.las"
    bad.write_bytes((points_dir / "laspy_wkt_geotiff.las").read_bytes()[:500_000])
    with pytest.raises(InputError, match="cut.las"):
        Fl.filter_file(bad, tmp_path / "o.las", voxel=1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.las", "in.las"]


def test_cli_filter(outlier_file, tmp_path):
    import json

    from click.testing import CliRunner

    from twin.cli import main

    src, truth = outlier_file
    dst = tmp_path / "clean.laz"
    r = CliRunner().invoke(
        main,
        ["points", "filter", str(src), str(dst), "--outliers", "statistical", "--voxel", "1",
         "--normals", "--json"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    stats = json.loads(r.output)
    out = io.read(dst)
    assert stats["output_points"] == len(out) and stats["outliers"] >= 0.9 * truth.sum()
    assert "normal_z" in out.fields
    r = CliRunner().invoke(main, ["points", "filter", str(src), str(tmp_path / "x.laz")])
    assert r.exit_code == 2 and "nothing to do" in r.output


def test_filter_file_memory_follows_the_tile(small_scene, tmp_path):
    """Peak Python/NumPy memory of a streamed filter grows with the tile, not the file."""
    import tracemalloc

    src = io.write(small_scene.cloud, tmp_path / "scene.las")  # 43 k points, 120 m
    kw = dict(voxel=0.5, normals=True, outliers="radius", radius=2.0, buffer=4.0)
    Fl.filter_file(src, tmp_path / "warm.laz", tile=20.0, chunk_points=5000, **kw)
    tracemalloc.start()
    io.read(src)
    whole = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    peaks = {}
    for tile in (20.0, 40.0):
        tracemalloc.start()
        Fl.filter_file(src, tmp_path / "out.laz", tile=tile, chunk_points=5000, **kw)
        peaks[tile] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # measured: 3.3 MB (20 m tiles), 7.5 MB (40 m tiles), 4.2 MB to read it whole; on
    # the 303 k-point scene: 7 MB (30 m tiles) against 24 MB to read it whole
    assert peaks[20.0] < whole and peaks[20.0] < 0.6 * peaks[40.0], (peaks, whole)
