"""Footprint input: normalised columns, repairs, and clear errors for bad files."""

from __future__ import annotations

import sqlite3
import warnings

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import LineString, MultiPolygon, Polygon, box

from twin.errors import CRSError, InputError
from twin.mesh.footprints import read_footprints

CRS = "EPSG:4550"


def gpkg(path, geoms, crs=CRS, layer="buildings", **cols):
    gdf = gpd.GeoDataFrame(cols, geometry=geoms, crs=crs)
    gdf.to_file(path, layer=layer, driver="GPKG", engine="pyogrio")
    return path


def test_columns_are_normalised(tmp_path):
    p = gpkg(
        tmp_path / "fp.gpkg",
        [box(0, 0, 10, 10), MultiPolygon([box(20, 0, 25, 5), box(30, 0, 35, 5)])],
        building_id=["A", "B"],
        height=[12.0, 8.0],
        eave_height=[9.0, 8.0],
        roof_type=["gable", "Flat"],
    )
    fp = read_footprints(p)
    assert list(fp["building_id"]) == ["A", "B"]
    assert list(fp["roof_type"]) == ["gable", "flat"]
    assert np.all(np.isnan(fp["base_height"]))  # absent: the DEM will give it
    assert fp.crs.to_epsg() == 4550
    assert fp.attrs["twin"]["features"] == 2


def test_missing_heights_are_counted_and_warned(tmp_path):
    p = gpkg(tmp_path / "fp.gpkg", [box(0, 0, 10, 10), box(20, 0, 30, 10)], height=[5.0, None])
    with pytest.warns(UserWarning, match="1 of 2 footprints have no height"):
        fp = read_footprints(p)
    assert fp.attrs["twin"]["default_height"] == 1
    assert np.isnan(fp["height"][1]) and fp["height"][0] == 5.0
    assert list(fp["building_id"]) == ["b0", "b1"]


def test_invalid_rings_are_repaired_and_counted(tmp_path):
    bowtie = Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])  # self-intersecting
    p = gpkg(tmp_path / "fp.gpkg", [bowtie, box(20, 0, 30, 10)], height=[5.0, 6.0])
    with pytest.warns(UserWarning, match="1 invalid footprints repaired"):
        fp = read_footprints(p)
    assert fp.attrs["twin"]["repaired"] == 1
    assert fp.geometry.is_valid.all()
    assert fp.geometry[0].area == pytest.approx(50.0)  # two triangles of 25 m²


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_footprints(tmp_path / "none.gpkg")


def test_not_a_vector_file(tmp_path):
    p = tmp_path / "fp.gpkg"
    p.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(InputError, match="not a readable vector file") as e:
        read_footprints(p)
    assert e.value.path == str(p)


def test_no_layers(tmp_path):
    p = tmp_path / "empty.sqlite"
    sqlite3.connect(p).execute("PRAGMA user_version = 1").connection.close()
    with pytest.raises(InputError, match="no layers|not a readable") as e:
        read_footprints(p)
    assert str(p) in str(e.value)
    q = tmp_path / "table.sqlite"
    sqlite3.connect(q).execute("CREATE TABLE t (a INTEGER)").connection.close()
    with pytest.raises(InputError, match="no layer has geometry"):
        read_footprints(q)


def test_empty_layer(tmp_path):
    p = tmp_path / "fp.gpkg"
    gpd.GeoDataFrame({"height": []}, geometry=[], crs=CRS).to_file(
        p, layer="buildings", driver="GPKG", engine="pyogrio"
    )
    with pytest.raises(InputError, match="no features") as e:
        read_footprints(p)
    assert str(p) in str(e.value)


def test_no_crs(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyogrio warns about writing no CRS
        p = gpkg(tmp_path / "fp.gpkg", [box(0, 0, 10, 10)], crs=None, height=[5.0])
    with pytest.raises(CRSError, match="no CRS"):
        read_footprints(p)
    assert read_footprints(p, crs="EPSG:28992").crs.to_epsg() == 28992


def test_not_polygons(tmp_path):
    p = gpkg(tmp_path / "fp.gpkg", [LineString([(0, 0), (5, 5)])], height=[5.0])
    with pytest.raises(InputError, match="not polygons.*LineString"):
        read_footprints(p)


def test_unknown_layer(tmp_path):
    p = gpkg(tmp_path / "fp.gpkg", [box(0, 0, 1, 1)], height=[1.0])
    with pytest.raises(InputError, match="no layer 'roads'; layers: buildings"):
        read_footprints(p, layer="roads")


def test_delft_spatialite(shared_data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fp = read_footprints(shared_data / "delft/bgt_pand.sqlite")
    assert len(fp) == 160 and fp.crs.to_epsg() == 28992
    assert fp.attrs["twin"]["default_height"] == 160
    assert fp["building_id"].str.startswith("NL.").all() or fp["building_id"].is_unique
    assert set(fp.geom_type) <= {"Polygon", "MultiPolygon"}
