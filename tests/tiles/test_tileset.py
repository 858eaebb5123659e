"""3D Tiles 1.1 tileset: schema-valid, placed on the globe where the ENU frame is,
and a broken tileset is caught."""

from __future__ import annotations

import json

import numpy as np
import pyproj
import pytest

from twin.crs import LocalFrame, transform
from twin.errors import InputError, ParameterError
from twin.tiles.gltf import GltfMesh, write_glb
from twin.tiles.tileset import TileContent, write_tileset
from twin.tiles.validate import schema_dir, validate_tileset

from .shapes import box_mesh

CRS = "EPSG:4550"
X, Y, H = 360_000.0, 3_306_500.0, 12.0  # near Ningbo in CGCS2000 / GK CM 123E


@pytest.fixture(autouse=True)
def _schemas():
    if not (schema_dir() / "tileset.schema.json").exists():
        pytest.skip(f"3D Tiles schemas not found at {schema_dir()}")


@pytest.fixture
def tileset(tmp_path):
    frame = LocalFrame.at(X, Y, H, CRS)
    contents = []
    for name, lo, hi in (
        ("ground", (-100, -80, -3), (100, 80, 4)),
        ("houses", (-30, -20, 0), (40, 25, 18)),
    ):
        v, f = box_mesh(lo, hi)
        write_glb(tmp_path / f"{name}.glb", [GltfMesh(positions=v, indices=f, name=name)])
        contents.append(TileContent(uri=f"{name}.glb", vertices=v))
    path = write_tileset(tmp_path, contents, frame, geometric_error=50.0)
    return path, frame


def test_tileset_validates_against_the_schema(tileset):
    path, _ = tileset
    assert validate_tileset(path) == []
    doc = json.loads(path.read_text())
    assert doc["asset"]["version"] == "1.1"
    root = doc["root"]
    assert root["refine"] == "REPLACE" and root["geometricError"] == 50.0
    assert [c["geometricError"] for c in root["children"]] == [0.0, 0.0]
    assert [c["content"]["uri"] for c in root["children"]] == ["ground.glb", "houses.glb"]
    # tight boxes: the houses' box is its own bounds (+1 mm)
    box = np.array(root["children"][1]["boundingVolume"]["box"])
    assert np.allclose(box[:3], [5, 2.5, 9]) and np.allclose(
        box[[3, 7, 11]], [35.001, 22.501, 9.001]
    )


def test_root_transform_places_the_enu_origin_on_the_globe(tileset):
    path, frame = tileset
    m = np.array(json.loads(path.read_text())["root"]["transform"]).reshape(4, 4).T
    ecef = pyproj.Transformer.from_crs("EPSG:4979", "EPSG:4978", always_xy=True)
    expect = np.array(ecef.transform(frame.lon, frame.lat, frame.h))
    assert np.allclose(m[:3, 3], expect, atol=1e-6)
    # the origin is the anchor point given in EPSG:4550, and 1 km east is 1 km east
    back = transform(m[:3, 3], "EPSG:4978", CRS)
    assert np.allclose(back, [X, Y, H], atol=1e-6)
    east = m @ [1000.0, 0, 0, 1] - m @ [0, 0, 0, 1]
    assert np.linalg.norm(east[:3]) == pytest.approx(1000.0, abs=1e-9)
    up = m[:3, 2]
    assert np.allclose(up, expect / np.linalg.norm(expect), atol=4e-3)  # geodetic vs radial


def test_single_content_sits_on_the_root(tmp_path):
    v, f = box_mesh((0, 0, 0), (1, 1, 1))
    write_glb(tmp_path / "only.glb", [GltfMesh(positions=v, indices=f)])
    p = write_tileset(tmp_path, [TileContent("only.glb", v)], LocalFrame(121.5, 29.9), 2.0)
    doc = json.loads(p.read_text())
    assert doc["root"]["content"] == {"uri": "only.glb"} and "children" not in doc["root"]
    assert validate_tileset(p) == []


def _broken(path, edit):
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    return validate_tileset(path)


def test_a_broken_tileset_fails_validation(tileset):
    path, _ = tileset
    original = path.read_text()

    def no_error(d):
        del d["root"]["geometricError"]

    problems = _broken(path, no_error)
    assert any("geometricError" in p and p.startswith("schema: root") for p in problems)

    path.write_text(original)
    problems = _broken(path, lambda d: d["root"].__setitem__("refine", 5))
    assert any(p.startswith("schema: root/refine") for p in problems)

    path.write_text(original)
    problems = _broken(path, lambda d: d["root"].__setitem__("refine", "MERGE"))
    assert problems == ["root: refine 'MERGE' is neither 'ADD' nor 'REPLACE'"]

    path.write_text(original)
    problems = _broken(path, lambda d: d["root"]["children"][0].__setitem__("geometricError", 80))
    assert problems == ["root.children[0]: geometricError 80 is larger than its parent's 50.0"]

    path.write_text(original)

    def move_out(d):
        d["root"]["children"][1]["boundingVolume"]["box"][0] += 500.0

    assert _broken(path, move_out) == [
        "root.children[1]: boundingVolume is not inside its parent's"
    ]

    path.write_text(original)
    problems = _broken(
        path, lambda d: d["root"]["children"][0]["content"].__setitem__("uri", "missing.glb")
    )
    assert problems == ["root.children[0].content: file 'missing.glb' not found beside the tileset"]

    path.write_text("{not json")
    assert validate_tileset(path)[0].startswith("not valid JSON")


def test_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        validate_tileset(tmp_path / "tileset.json")
    v, _ = box_mesh((0, 0, 0), (1, 1, 1))
    with pytest.raises(ParameterError):
        write_tileset(tmp_path, [], LocalFrame(0, 0), 1.0)
    with pytest.raises(ParameterError, match="geometric error"):
        write_tileset(
            tmp_path, [TileContent("a.glb", v, geometric_error=5.0)], LocalFrame(0, 0), 1.0
        )


def test_misaligned_glb_and_broken_external_tilesets_are_found(tileset, tmp_path):
    import shutil

    path, _ = tileset
    base = tmp_path / "t"
    shutil.copytree(path.parent, base)
    doc = json.loads((base / path.name).read_text())
    glb = base / doc["root"]["children"][0]["content"]["uri"]
    glb.write_bytes(glb.read_bytes() + b"\x00\x00\x00\x00")
    problems = validate_tileset(base / path.name)
    assert any("not a multiple of 8" in p for p in problems)
    # an outer tileset referring to this one reports its problems too
    outer = {
        "asset": {"version": "1.1"},
        "geometricError": 100.0,
        "root": {
            "boundingVolume": doc["root"]["boundingVolume"],
            "geometricError": 60.0,
            "refine": "ADD",
            "content": {"uri": f"t/{path.name}"},
        },
    }
    (tmp_path / "outer.json").write_text(json.dumps(outer))
    problems = validate_tileset(tmp_path / "outer.json")
    assert any(p.startswith("root.content -> ") and "multiple of 8" in p for p in problems)
