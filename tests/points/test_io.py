"""LAS/LAZ/COPC I/O, CRS detection, streaming, reprojection, Open3D round trips."""

from __future__ import annotations

import hashlib

import laspy
import numpy as np
import pyproj
import pytest

from twin.crs import LocalFrame, transform
from twin.errors import CRSError
from twin.points import io
from twin.points.cloud import PointCloud

# file -> (count, EPSG or None, substring of the CRS name or of the reason)
EXPECTED = {
    "laspy_wkt_geotiff.las": (25408, None, "Nebraska"),
    "pdal_sample_c.las": (14408, None, "no CRS record"),
    "laspy_autzen_trim.laz": (110000, None, "Lambert_Conformal_Conic"),
    "laspy_simple.copc.laz": (1065, None, "Oregon"),
    "pdal_autzen-utm.las": (1065, 26910, "UTM zone 10N"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_info_and_read_real_files(points_dir, name):
    count, epsg, text = EXPECTED[name]
    path = points_dir / name
    meta = io.info(path)
    assert meta["count"] == count
    assert sum(meta["classes"].values()) == count
    cloud = io.read(path)
    assert len(cloud) == count
    with laspy.open(path) as r:
        las = r.read()
    np.testing.assert_allclose(cloud.xyz, np.asarray(las.xyz), atol=1e-9)
    np.testing.assert_array_equal(cloud.classification, np.asarray(las.classification))
    if meta["crs"] is None:
        assert text in meta["crs_reason"]
        with pytest.raises(CRSError, match="no CRS record"):
            cloud.require_crs()
    else:
        assert text in meta["crs"]["label"]
        if epsg:
            assert meta["crs"]["epsg"] == epsg
    assert np.all(np.array(meta["bounds"]["min"]) <= cloud.xyz.min(axis=0) + 1e-6)


def test_units_of_real_crs(points_dir):
    ne = io.info(points_dir / "laspy_wkt_geotiff.las")["crs"]
    assert ne["horizontal_unit_m"] == pytest.approx(1200 / 3937)  # US survey foot
    assert ne["vertical_unit_m"] == pytest.approx(1200 / 3937)
    copc = io.info(points_dir / "laspy_simple.copc.laz")["crs"]  # metres + NAVD88 ftUS
    assert copc["horizontal_unit_m"] == 1.0
    assert copc["vertical_unit_m"] == pytest.approx(1200 / 3937)
    # density: points per square metre of the header bounds (feet converted)
    m = io.info(points_dir / "laspy_wkt_geotiff.las")
    (x0, y0, _), (x1, y1, _) = m["bounds"]["min"], m["bounds"]["max"]
    assert m["density"] == pytest.approx(25408 / ((x1 - x0) * (y1 - y0) * (1200 / 3937) ** 2))


def test_delft_has_no_crs_and_accepts_one(delft_laz):
    meta = io.info(delft_laz)
    assert meta["crs"] is None and "no CRS record" in meta["crs_reason"]
    assert meta["classes"] == {1: 86308, 2: 87130, 6: 33312, 9: 568, 26: 1114}
    meta = io.info(delft_laz, crs="EPSG:7415")
    assert meta["crs"]["epsg"] == 7415 and meta["crs"]["source"] == "argument"
    assert 10 < meta["density"] < 15


def test_write_roundtrip_preserves_fields_and_vlrs(points_dir, tmp_path):
    src = points_dir / "laspy_wkt_geotiff.las"
    cloud = io.read(src)
    for ext in ("las", "laz"):
        out = io.write(cloud, tmp_path / f"copy.{ext}")
        back = io.read(out)
        np.testing.assert_allclose(back.xyz, cloud.xyz, atol=1e-9)
        assert set(back.fields) == set(cloud.fields)
        for k in cloud.fields:
            np.testing.assert_array_equal(back.fields[k], cloud.fields[k], err_msg=k)
        assert back.crs == cloud.crs
        assert [type(v).__name__ for v in back.header.vlrs] == [
            type(v).__name__ for v in cloud.header.vlrs
        ]
        assert str(back.header.version) == "1.4" and back.point_format == 6
    assert not list(tmp_path.glob("*.part"))


def test_write_is_deterministic_and_adds_extra_bytes(scene, tmp_path):
    c = scene.cloud[:5000]
    c.fields["height_above_ground"] = np.linspace(0, 1, len(c), dtype=np.float32)
    a = io.write(c, tmp_path / "a.laz")
    b = io.write(c, tmp_path / "b.laz")
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    back = io.read(a)
    np.testing.assert_array_equal(
        back.fields["height_above_ground"], c.fields["height_above_ground"]
    )
    assert back.crs.to_epsg() == 32631
    np.testing.assert_allclose(back.xyz, c.xyz, atol=0.0006)


def test_iter_chunks_equals_read_and_bbox(points_dir):
    path = points_dir / "laspy_autzen_trim.laz"
    whole = io.read(path, fields=["classification"])
    chunks = list(io.iter_chunks(path, 7000, fields=["classification"]))
    assert max(len(c) for c in chunks) <= 7000
    np.testing.assert_array_equal(io.concat(chunks).xyz, whole.xyz)
    (x0, y0, _), (x1, y1, _) = whole.bounds()
    bbox = (x0, y0, (x0 + x1) / 2, (y0 + y1) / 2)
    part = io.read(path, bbox=bbox)
    inside = (whole.x <= bbox[2]) & (whole.y <= bbox[3])
    assert len(part) == inside.sum() > 0
    assert len(io.read(path, bbox=(0, 0, 1, 1))) == 0


def test_copc_bbox_and_level(points_dir):
    path = points_dir / "laspy_simple.copc.laz"
    whole = io.read(path)
    (x0, y0, _), (x1, y1, _) = whole.bounds()
    bbox = (x0, y0, (x0 + x1) / 2, (y0 + y1) / 2)
    part = io.read(path, bbox=bbox)
    inside = (whole.x <= bbox[2]) & (whole.y <= bbox[3])
    assert len(part) == inside.sum()
    coarse = io.read(path, level=0)
    assert 0 < len(coarse) < len(whole)
    assert len(io.read(path, level=range(0, 10))) == len(whole)


def test_open3d_and_slicing(points_dir):
    cloud = io.read(points_dir / "laspy_autzen_trim.laz")
    pc = cloud.to_open3d()
    assert len(pc.points) == len(cloud) and pc.has_colors()
    back = PointCloud.from_open3d(pc, crs=cloud.crs)
    np.testing.assert_array_equal(back.xyz, cloud.xyz)
    assert back.fields["red"].max() <= 65535
    ground = cloud[cloud.classification == 2]
    assert len(ground) == 26107 and set(ground.fields) == set(cloud.fields)


def test_reproject_feet_and_local(points_dir):
    cloud = io.read(points_dir / "laspy_wkt_geotiff.las")
    utm = io.reproject(cloud, "EPSG:32614")
    ref = transform(cloud.xyz[:10], cloud.crs, "EPSG:32614")
    np.testing.assert_allclose(utm.xyz[:10], ref)
    # z in US survey feet became metres (2D projected CRS: z follows the feet)
    np.testing.assert_allclose(utm.z, cloud.z * 1200 / 3937, atol=1e-6)
    # horizontal distances: 1 ftUS = 0.3048006 m (scale factor of the projections ~1)
    d_ft = np.hypot(*(cloud.xyz[0, :2] - cloud.xyz[1000, :2]))
    d_m = np.hypot(*(utm.xyz[0, :2] - utm.xyz[1000, :2]))
    assert d_m == pytest.approx(d_ft * 1200 / 3937, rel=2e-3)
    local = io.to_local(cloud)
    assert local.crs is None and isinstance(local.frame, LocalFrame)
    assert np.abs(local.xyz[:, :2]).max() < 100  # a 60 m x 12 m patch around the origin
    assert np.hypot(*(local.xyz[0, :2] - local.xyz[1000, :2])) == pytest.approx(d_m, rel=1e-3)


def test_bad_crs_argument(points_dir):
    with pytest.raises(CRSError, match="EPSG:999999"):
        io.read(points_dir / "pdal_autzen-utm.las", crs="EPSG:999999")
    assert io.read(points_dir / "pdal_sample_c.las", crs=pyproj.CRS(2227)).crs.to_epsg() == 2227
