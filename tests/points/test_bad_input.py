"""Bad files give a clear TwinError naming the file, and leave no output behind."""

from __future__ import annotations

import struct

import laspy
import numpy as np
import pytest

from twin.errors import CRSError, InputError, TwinError
from twin.points import io, raster
from twin.points.ground import classify_file, classify_ground


def _patched(tmp_path, src, name, offset, fmt, value):
    data = bytearray(src.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    out = tmp_path / name
    out.write_bytes(bytes(data))
    return out


def _las(tmp_path, name, xyz, *, wkt=None, keys=None, version="1.4", pf=6):
    h = laspy.LasHeader(point_format=pf, version=version)
    h.scales = [0.01, 0.01, 0.01]
    h.offsets = [0, 0, 0]
    if wkt is not None:
        h.vlrs.append(laspy.vlrs.known.WktCoordinateSystemVlr(wkt))
    if keys is not None:
        h.vlrs.append(keys)
    las = laspy.LasData(h)
    if len(xyz):
        las.x, las.y, las.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    path = tmp_path / name
    las.write(path)
    return path


def _assert_fails(path, exc, match, tmp_path):
    """Every entry point fails with ``exc`` naming the file, and writes nothing."""
    from twin.points.classify import classify_file as classify_all
    from twin.points.filters import filter_file

    outs = [tmp_path / n for n in ("out_dtm.tif", "out.laz", "dsm.tif", "all.laz", "f.laz")]
    calls = [
        lambda: io.read(path),
        lambda: list(io.iter_chunks(path, 500)),
        lambda: raster.dtm(path, outs[0], 1.0, crs="EPSG:32631"),
        lambda: classify_file(path, outs[1], crs="EPSG:32631"),
        lambda: raster.dsm(path, outs[2], 1.0, crs="EPSG:32631"),
        lambda: classify_all(path, outs[3], crs="EPSG:32631"),
        lambda: filter_file(path, outs[4], voxel=1.0, normals=True),
    ]
    for call in calls:
        with pytest.raises(exc, match=match) as err:
            call()
        assert str(path) in str(err.value)
        assert isinstance(err.value, TwinError)
    for o in outs:
        assert not o.exists()
    assert not list(tmp_path.glob(".*.part")) and not list(tmp_path.glob(".*.laz.*"))


def test_truncated_las(points_dir, tmp_path):
    src = points_dir / "laspy_wkt_geotiff.las"
    bad = tmp_path / "cut.las"
    bad.write_bytes(src.read_bytes()[:500_000])
    _assert_fails(bad, InputError, "holds only 16619", tmp_path)


def test_truncated_laz(points_dir, tmp_path):
    src = points_dir / "laspy_autzen_trim.laz"
    bad = tmp_path / "cut.laz"
    bad.write_bytes(src.read_bytes()[:300_000])
    _assert_fails(bad, InputError, "truncated", tmp_path)


def test_header_count_too_large(points_dir, tmp_path):
    bad = _patched(tmp_path, points_dir / "pdal_autzen-utm.las", "big.las", 107, "<I", 2000)
    _assert_fails(bad, InputError, "says 2000 points but the file holds only 1065", tmp_path)


def test_header_count_too_small(points_dir, tmp_path):
    bad = _patched(tmp_path, points_dir / "pdal_autzen-utm.las", "small.las", 107, "<I", 500)
    _assert_fails(bad, InputError, "says 500 points but the file holds 1065", tmp_path)


def test_nan_scales(points_dir, tmp_path):
    bad = _patched(tmp_path, points_dir / "pdal_autzen-utm.las", "nan.las", 131, "<d", np.nan)
    _assert_fails(bad, InputError, "scale factors are unusable", tmp_path)


def test_unknown_point_format(points_dir, tmp_path):
    bad = _patched(tmp_path, points_dir / "pdal_autzen-utm.las", "pf.las", 104, "<B", 42)
    _assert_fails(bad, InputError, "unknown LAS point format 42", tmp_path)


def test_zero_points(tmp_path):
    bad = _las(tmp_path, "empty.las", np.empty((0, 3)))
    _assert_fails(bad, InputError, "no points", tmp_path)
    assert io.info(bad)["count"] == 0  # info still describes it


def test_not_a_las_file(tmp_path):
    bad = tmp_path / "notes.las"
    bad.write_text("hello")
    _assert_fails(bad, InputError, "not a readable LAS/LAZ file", tmp_path)
    with pytest.raises(InputError, match="no such file"):
        io.read(tmp_path / "missing.laz")


def test_all_points_identical(tmp_path):
    bad = _las(tmp_path, "same.las", np.tile([[100.0, 200.0, 5.0]], (50, 1)))
    cloud = io.read(bad)  # reading is fine ...
    assert len(cloud) == 50
    with pytest.raises(InputError, match="one x, y position") as err:  # ... gridding is not
        classify_ground(cloud)
    assert str(bad) in str(err.value)
    with pytest.raises(InputError, match="one x, y position"):
        raster.dtm(bad, tmp_path / "d.tif", 1.0, crs="EPSG:32631")
    assert not (tmp_path / "d.tif").exists()


@pytest.mark.parametrize(
    "wkt, reason",
    [("GARBAGE[not a crs]", "cannot be parsed by pyproj"), ("", "WKT CRS record is empty")],
)
def test_unusable_wkt(tmp_path, wkt, reason):
    xyz = np.column_stack([np.arange(100.0), np.arange(100.0) % 7, np.zeros(100)])
    path = _las(tmp_path, "badcrs.las", xyz, wkt=wkt)
    meta = io.info(path)
    assert meta["crs"] is None and reason in meta["crs_reason"]
    cloud = io.read(path)
    with pytest.raises(CRSError, match=reason) as err:
        io.reproject(cloud, "EPSG:4326")
    assert str(path) in str(err.value)
    with pytest.raises(CRSError, match=reason):
        raster.dtm(path, tmp_path / "d.tif", 1.0)
    assert not (tmp_path / "d.tif").exists()
    assert io.read(path, crs="EPSG:32631").crs.to_epsg() == 32631  # --crs rescues it


def test_user_defined_geokeys(tmp_path):
    from laspy.vlrs.geotiff import GeoKeyDirectoryVlr

    keys = GeoKeyDirectoryVlr()
    keys.parse_record_data(struct.pack("<12H", 1, 1, 0, 2, 1024, 0, 1, 1, 3072, 0, 1, 32767))
    xyz = np.column_stack([np.arange(10.0), np.arange(10.0), np.zeros(10)])
    path = _las(tmp_path, "userdef.las", xyz, keys=keys, version="1.2", pf=1)
    meta = io.info(path)
    assert meta["crs"] is None and "user-defined (32767)" in meta["crs_reason"]
