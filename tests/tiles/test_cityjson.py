"""CityJSON 2.0 output: schema-valid, closed solids, exact coordinates and semantics."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import Polygon, box

from twin.crs import LocalFrame
from twin.errors import InputError, ParameterError
from twin.mesh.buildings import FLOOR, ROOF, WALL, building_meshes
from twin.tiles.cityjson import (
    cityjson_document,
    read_cityjson_heights,
    validate_cityjson,
    write_cityjson,
)

CRS = "EPSG:4550"
X0, Y0 = 500_000.0, 3_300_000.0
FRAME = LocalFrame.at(X0 + 50, Y0 + 50, 0.0, CRS)


@pytest.fixture(scope="module")
def meshes():
    court = Polygon(
        [(X0, Y0), (X0 + 30, Y0), (X0 + 30, Y0 + 30), (X0, Y0 + 30)],
        [[(X0 + 10, Y0 + 10), (X0 + 10, Y0 + 20), (X0 + 20, Y0 + 20), (X0 + 20, Y0 + 10)]],
    )
    gdf = gpd.GeoDataFrame(
        {
            "building_id": ["court", "gable", "hip"],
            "height": [9.0, 12.0, 11.0],
            "eave_height": [9.0, 8.0, 7.0],
            "base_height": [5.0, 6.0, 7.0],
            "roof_type": ["flat", "gable", "hip"],
        },
        geometry=[court, box(X0 + 50, Y0, X0 + 70, Y0 + 10), box(X0, Y0 + 50, X0 + 24, Y0 + 62)],
        crs=CRS,
    )
    return building_meshes(gdf, None, FRAME, lod=2)


def test_written_file_validates_and_round_trips(tmp_path, meshes):
    out = write_cityjson(meshes, tmp_path / "b.city.json", crs=CRS, frame=FRAME, title="t")
    assert out["buildings"] == 3
    assert out["referenceSystem"] == "https://www.opengis.net/def/crs/EPSG/0/4550"
    assert validate_cityjson(tmp_path / "b.city.json") == []
    doc = json.loads((tmp_path / "b.city.json").read_text())
    assert doc["version"] == "2.0" and doc["metadata"]["title"] == "t"
    verts = np.asarray(doc["vertices"], dtype=np.int64)
    assert len({tuple(v) for v in verts.tolist()}) == len(verts)  # no duplicates
    xyz = verts * doc["transform"]["scale"] + np.asarray(doc["transform"]["translate"])
    kinds = {"RoofSurface": ROOF, "WallSurface": WALL, "GroundSurface": FLOOR}
    for m in meshes:
        obj = doc["CityObjects"][m.id]
        assert obj["type"] == "Building"
        assert obj["attributes"]["roofType"] == m.attributes["roof_type"]
        assert obj["attributes"]["measuredHeight"] == pytest.approx(m.attributes["height"])
        g = obj["geometry"][0]
        assert g["type"] == "Solid" and g["lod"] == "2"
        tris = np.asarray([s[0] for s in g["boundaries"][0]])
        assert len(tris) == len(m.faces)
        # every triangle at its map position (1 mm quantisation)
        want = FRAME.to_crs(m.vertices, CRS)[m.faces.astype(np.int64)]
        assert np.abs(xyz[tris] - want).max() <= 0.0006
        names = [g["semantics"]["surfaces"][i]["type"] for i in g["semantics"]["values"][0]]
        assert [kinds[n] for n in names] == m.face_kind.tolist()
    # heights read back
    h = read_cityjson_heights(tmp_path / "b.city.json")
    assert h["gable"]["zmax"] == pytest.approx(18.0, abs=0.002)
    assert h["gable"]["zmin"] == pytest.approx(6.0, abs=0.002)


def test_validator_finds_broken_documents(meshes):
    doc = cityjson_document(meshes, CRS, frame=FRAME)
    assert validate_cityjson(doc) == []
    bad = json.loads(json.dumps(doc))
    del bad["transform"]
    assert any("transform" in p for p in validate_cityjson(bad))
    bad = json.loads(json.dumps(doc))
    g = bad["CityObjects"]["hip"]["geometry"][0]
    g["boundaries"][0].pop()  # a hole in the shell
    g["semantics"]["values"][0].pop()
    assert any("not closed" in p for p in validate_cityjson(bad))
    bad = json.loads(json.dumps(doc))
    bad["CityObjects"]["hip"]["geometry"][0]["semantics"]["values"][0].pop()
    assert any("semantics" in p for p in validate_cityjson(bad))
    bad = json.loads(json.dumps(doc))
    bad["CityObjects"]["hip"]["geometry"][0]["boundaries"][0][0][0][0] = 10**6
    assert any("out of range" in p for p in validate_cityjson(bad))
    bad = json.loads(json.dumps(doc))
    bad["metadata"]["referenceSystem"] = "EPSG:4550"
    assert any("referenceSystem" in p for p in validate_cityjson(bad))


def test_local_output_and_bad_arguments(tmp_path, meshes):
    doc = cityjson_document(meshes)  # no CRS: local ENU metres, no reference system claimed
    assert "referenceSystem" not in doc["metadata"]
    assert validate_cityjson(doc) == []
    with pytest.raises(ParameterError, match="frame"):
        cityjson_document(meshes, CRS)
    with pytest.raises(ParameterError, match="scale"):
        cityjson_document(meshes, scale=0)
    with pytest.raises(InputError, match="unique"):
        cityjson_document([meshes[0], meshes[0]])
    custom = "+proj=tmerc +lon_0=121 +k=1 +x_0=500000 +ellps=GRS80 +units=m +no_defs"
    with pytest.raises(ParameterError, match="OGC CRS URL"):
        cityjson_document(meshes, custom, frame=FRAME)
    with pytest.raises(InputError, match="not found"):
        validate_cityjson(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("{nope")
    assert validate_cityjson(tmp_path / "x.json")[0].startswith("not valid JSON")


@pytest.mark.slow
def test_official_sample_validates(shared_data):
    # the schema's oneOf over every city object type is slow: minutes on large files
    doc = json.loads((shared_data / "delft" / "delft.json").read_text())
    keep = [k for k, o in doc["CityObjects"].items() if o["type"] == "Building"][:15]
    doc["CityObjects"] = {k: doc["CityObjects"][k] for k in keep}
    assert validate_cityjson(doc, closed=False) == []
    assert any("T-junction" in p for p in validate_cityjson(doc))  # walls meet at T-junctions
