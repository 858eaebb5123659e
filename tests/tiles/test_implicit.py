"""Implicit quadtree tilesets: official schemas, exact round trip of the explicit tree,
the availability bits as 3D Tiles defines them, CesiumJS drawing one."""

from __future__ import annotations

import json
import shutil
import struct

import numpy as np
import pytest

from tests.tiles.test_lod import FRAME, SIZE, terrain
from twin.errors import InputError, ParameterError
from twin.tiles.implicit import (
    _explicit_tiles,
    demorton2,
    morton2,
    read_implicit,
    read_subtree,
    validate_subtree,
    write_implicit,
)
from twin.tiles.lod import LodParams, write_lod_tileset
from twin.tiles.validate import validate_tileset


def explicit_tiles(folder):
    doc = json.loads((folder / "tileset.json").read_text())
    return _explicit_tiles(doc, folder / "tileset.json")


@pytest.fixture(scope="module")
def explicit(tmp_path_factory):
    out = tmp_path_factory.mktemp("implicit") / "explicit"
    layer = terrain(80)
    summary = write_lod_tileset(out, [layer], FRAME, params=LodParams(max_faces=700))
    assert summary["levels"] >= 4
    return out, layer, explicit_tiles(out)


def test_morton_order_interleaves_x_lowest():
    assert [morton2(x, y) for x, y in [(0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (3, 1)]] == [
        0,
        1,
        2,
        3,
        4,
        7,
    ]
    # the specification's examples (Availability Indexing)
    assert morton2(0b11, 0b00) == 0b0101
    assert morton2(0b1010, 0b0011) == 0b01001110
    assert morton2(0b0110, 0b0101) == 0b00110110
    for m in range(300):
        assert morton2(*demorton2(m)) == m


@pytest.mark.parametrize("levels", [1, 2, 3, 10])
def test_round_trip_gives_the_explicit_tree(explicit, tmp_path, levels):
    src, _, truth = explicit
    out = tmp_path / "tiles"
    shutil.copytree(src, out)
    summary = write_implicit(out, subtree_levels=levels)
    n_levels = max(k[0] for k in truth) + 1
    assert summary["tiles"] == len(truth) and summary["levels"] == n_levels
    # one subtree per available tile at levels 0, L, 2L, ...
    assert summary["subtrees"] == sum(1 for k in truth if k[0] % levels == 0)
    assert validate_tileset(out / "tileset.json") == []
    files = sorted((out / "subtrees").rglob("*.subtree"))
    assert len(files) == summary["subtrees"]
    for f in files:
        assert validate_subtree(f) == [], f
    # every tile, content, measured error and box comes back exactly
    assert read_implicit(out) == truth
    doc = json.loads((out / "tileset.json").read_text())
    root = doc["root"]
    assert "children" not in root
    assert root["refine"] == "REPLACE"
    assert root["content"]["uri"] == "t/{level}/{x}_{y}.glb"
    assert root["implicitTiling"]["availableLevels"] == n_levels
    assert np.allclose(root["transform"], FRAME.enu_to_ecef_matrix().T.ravel())
    # root volume: the quadtree's root square (the terrain spans 0..SIZE in x and y)
    box = np.asarray(root["boundingVolume"]["box"])
    assert np.allclose(box[:2], SIZE / 2, atol=1e-6)
    assert np.allclose(box[[3, 7]], SIZE / 2, atol=1e-6)
    assert box[[4, 5, 6, 8, 9, 10]].tolist() == [0] * 6
    # every content file the template names exists
    for lv, x, y in truth:
        assert (out / f"t/{lv}/{x}_{y}.glb").exists()


def test_tile_coordinates_match_the_implicit_subdivision(explicit, tmp_path):
    """x grows along the root box's +x (east), y along +y (north): each tile's
    measured box sits in the cell the implicit rules give its coordinates."""
    src, _, truth = explicit
    out = tmp_path / "tiles"
    shutil.copytree(src, out)
    write_implicit(out, subtree_levels=2)
    for (lv, x, y), t in read_implicit(out).items():
        cell = SIZE / 2**lv
        cx, cy = t["box"][0], t["box"][1]
        # contents hold the faces whose centroid is in the cell: the box's centre
        # lies in the cell up to a sliver of faces poking out
        assert x * cell - 0.1 * cell <= cx <= (x + 1) * cell + 0.1 * cell, (lv, x, y)
        assert y * cell - 0.1 * cell <= cy <= (y + 1) * cell + 0.1 * cell, (lv, x, y)


def test_square_is_recovered_from_the_leaves(explicit, tmp_path):
    src, _, _ = explicit
    out = tmp_path / "tiles"
    shutil.copytree(src, out)
    write_implicit(out)  # no square given
    sq = json.loads((out / "tileset.json").read_text())["asset"]["extras"]["quadtree_square"]
    assert np.allclose(sq["lo"], [0, 0], atol=1e-9) and abs(sq["size"] - SIZE) < 1e-9


def test_availability_bits_as_the_specification_orders_them(tmp_path):
    """A hand-made tree 0/0_0 -> 1/1_0 -> 2/3_1 -> 3/7_2: Morton order within a
    level, levels concatenated, least significant bit first; tile metadata rows in
    that order; a child subtree below level 3."""
    box = [50, 50, 5, 50, 0, 0, 0, 50, 0, 0, 0, 5]

    def tile(lv, x, y, kids):
        t = {"boundingVolume": {"box": box}, "geometricError": 8.0 / 2**lv, "refine": "REPLACE"}
        t["content"] = {"uri": f"t/{lv}/{x}_{y}.glb"}
        if kids:
            t["children"] = kids
        return t

    root = tile(0, 0, 0, [tile(1, 1, 0, [tile(2, 3, 1, [tile(3, 7, 2, [])])])])
    doc = {"asset": {"version": "1.1"}, "geometricError": 16.0, "root": root}
    (tmp_path / "tileset.json").write_text(json.dumps(doc))
    write_implicit(tmp_path, subtree_levels=3, square=(np.zeros(2), 100.0))
    sdoc, body = read_subtree(tmp_path / "subtrees/L3/0/0_0.subtree")
    bv = sdoc["bufferViews"][sdoc["tileAvailability"]["bitstream"]]
    bits = body[bv["byteOffset"] : bv["byteOffset"] + bv["byteLength"]]
    # bit 0: root; bit 1 + morton(1, 0) = 2; bit 5 + morton(3, 1) = 12
    assert bits[:2] == bytes([0b101, 0b10000])
    assert sdoc["contentAvailability"][0]["bitstream"] == sdoc["tileAvailability"]["bitstream"] + 1
    # child subtree 3/7_2: morton(7 - 0, 2 - 0) = 0b011101 = 29 -> byte 3, bit 5
    cv = sdoc["bufferViews"][sdoc["childSubtreeAvailability"]["bitstream"]]
    child = body[cv["byteOffset"] : cv["byteOffset"] + cv["byteLength"]]
    assert len(child) == 8 and child[3] == 1 << 5 and sum(child) == 1 << 5
    errors = sdoc["propertyTables"][0]["properties"]["geometricError"]["values"]
    ev = sdoc["bufferViews"][errors]
    vals = np.frombuffer(body[ev["byteOffset"] : ev["byteOffset"] + ev["byteLength"]], "<f8")
    assert vals.tolist() == [8.0, 4.0, 2.0]
    assert (tmp_path / "subtrees/L3/3/7_2.subtree").exists()
    assert validate_tileset(tmp_path / "tileset.json") == []
    assert sorted(read_implicit(tmp_path)) == [(0, 0, 0), (1, 1, 0), (2, 3, 1), (3, 7, 2)]


def test_lod_params_implicit_writes_the_same_tree(explicit, tmp_path):
    src, layer, truth = explicit
    out = tmp_path / "tiles"
    write_lod_tileset(out, [layer], FRAME, params=LodParams(max_faces=700, implicit=True))
    assert "implicitTiling" in json.loads((out / "tileset.json").read_text())["root"]
    assert read_implicit(out) == truth
    assert validate_tileset(out / "tileset.json") == []
    # re-partitioning an implicit folder keeps the tree and removes stale subtrees
    write_implicit(out, subtree_levels=1)
    assert read_implicit(out) == truth
    assert len(list((out / "subtrees").rglob("*.subtree"))) == len(truth)
    assert [d.name for d in (out / "subtrees").iterdir()] == ["L1"]


def test_bad_input_is_reported(tmp_path, explicit):
    with pytest.raises(InputError, match="tileset"):
        write_implicit(tmp_path / "nothing")
    src, _, _ = explicit
    out = tmp_path / "tiles"
    shutil.copytree(src, out)
    with pytest.raises(ParameterError, match="subtree_levels"):
        write_implicit(out, subtree_levels=0)
    doc = json.loads((out / "tileset.json").read_text())
    doc["root"]["children"][0]["content"]["uri"] = "other/name.glb"
    (out / "tileset.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="not named"):
        write_implicit(out)
    bad = tmp_path / "bad.subtree"
    bad.write_bytes(b"subt" + struct.pack("<IQQ", 1, 400, 0) + b"{}")
    with pytest.raises(InputError, match="truncated"):
        read_subtree(bad)
    assert validate_subtree(bad)
    bad.write_bytes(b"glTF" + bytes(20))
    with pytest.raises(InputError, match="not a subtree"):
        read_subtree(bad)


def _coverage(png):
    from PIL import Image

    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    # drawn ground: pixels that differ from the empty globe seen in the top corner
    return img, np.abs(img - img[0, 0]).sum(axis=2) > 30


@pytest.mark.slow
def test_cesium_draws_the_implicit_tileset_like_the_explicit_one(explicit, tmp_path, monkeypatch):
    from twin.tiles import viewer
    from twin.tiles.viewer import chromium_binary, snapshot_viewer

    requested: list[str] = []
    make_app = viewer.create_viewer_app

    def recording_app(*args, **kwargs):
        app = make_app(*args, **kwargs)

        @app.middleware("http")
        async def record(request, call_next):
            requested.append(request.url.path)
            return await call_next(request)

        return app

    monkeypatch.setattr(viewer, "create_viewer_app", recording_app)

    if chromium_binary() is None:
        pytest.skip("Chromium is not installed")
    src, _, _ = explicit
    pictures, fetched = {}, {}
    for kind in ("explicit", "implicit"):
        requested.clear()
        model = tmp_path / kind
        shutil.copytree(src, model / "tiles" / "buildings")
        # errors x100 so that CesiumJS, looking at the whole terrain, refines to
        # deeper levels in places (the measured errors are centimetres)
        ts = model / "tiles" / "buildings" / "tileset.json"
        doc = json.loads(ts.read_text())
        doc["geometricError"] *= 100
        todo = [doc["root"]]
        while todo:
            t = todo.pop()
            t["geometricError"] *= 100
            todo += t.get("children", [])
        ts.write_text(json.dumps(doc))
        if kind == "implicit":
            write_implicit(model / "tiles" / "buildings", subtree_levels=2)
        png = snapshot_viewer(model, tmp_path / f"{kind}.png", timeout=120)
        shutil.copy(png, f"/tmp/twin_{kind}_view.png")
        pictures[kind] = _coverage(png)
        fetched[kind] = {p.split("/tiles/buildings/")[-1] for p in requested if "/t/" in p}
        fetched[kind + "_subtrees"] = {p for p in requested if p.endswith(".subtree")}
    # CesiumJS walked the implicit tree as deep as the explicit one: the same contents
    assert fetched["implicit"] == fetched["explicit"]
    levels = {int(p.split("/")[1]) for p in fetched["implicit"]}
    assert max(levels) >= 2, fetched["implicit"]
    assert fetched["implicit_subtrees"] and not fetched["explicit_subtrees"]
    (img_e, mask_e), (img_i, mask_i) = pictures["explicit"], pictures["implicit"]
    assert 0.2 < mask_e.mean() < 0.95, mask_e.mean()
    # the same ground drawn in the same place
    assert abs(mask_i.mean() - mask_e.mean()) < 0.1 * mask_e.mean()
    iou = (mask_i & mask_e).sum() / (mask_i | mask_e).sum()
    assert iou > 0.9, iou
    assert np.abs(img_i - img_e).mean() < 3


def test_incremental_update_keeps_the_implicit_tree_in_step(explicit, tmp_path):
    """A changed corner of the city: the implicit tree is the new explicit tree."""
    src, layer, _ = explicit
    out = tmp_path / "tiles"
    shutil.copytree(src, out)
    params = LodParams(max_faces=700, implicit=True)
    v = layer.vertices.copy()
    corner = (v[:, 0] > 300) & (v[:, 1] > 300)
    v[corner, 2] += 5.0
    moved = type(layer)(layer.name, v, layer.faces, colors=layer.colors)
    summary = write_lod_tileset(out, [moved], FRAME, params=params)
    assert summary["kept"] and summary["written"]
    truth_dir = tmp_path / "truth"
    write_lod_tileset(truth_dir, [moved], FRAME, params=LodParams(max_faces=700))
    assert read_implicit(out) == explicit_tiles(truth_dir)
    assert validate_tileset(out / "tileset.json") == []


def test_an_implicit_layer_joins_a_tileset_of_tilesets(explicit, tmp_path):
    from twin.tiles.lod import write_tileset_of_tilesets

    src, _, _ = explicit
    shutil.copytree(src, tmp_path / "terrain")
    write_implicit(tmp_path / "terrain", subtree_levels=2)
    shutil.copytree(src, tmp_path / "plain")
    top = write_tileset_of_tilesets(tmp_path, ["terrain/tileset.json", "plain/tileset.json"], FRAME)
    assert validate_tileset(top) == []
