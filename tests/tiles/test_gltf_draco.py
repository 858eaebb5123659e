"""GLB with KHR_draco_mesh_compression: valid, decoded by DracoPy back to the source
mesh within the quantisation, attributes kept, and a Draco LOD tileset that validates."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from tests.tiles.test_gltf_meshopt import canon, meshes
from tests.tiles.test_lod import FRAME, boxes, terrain
from twin.tiles.gltf import (
    DRACO_UV_BITS,
    GltfMesh,
    read_glb,
    read_glb_json,
    read_property_tables,
    write_glb,
)
from twin.tiles.lod import LodParams, read_tile, write_lod_tileset
from twin.tiles.validate import node_validator_path, validate_glb, validate_tileset

DracoPy = pytest.importorskip("DracoPy")
BITS = 14


def textured():
    """A terrain patch with UVs and a tiny JPEG, and per-vertex normals."""
    t = terrain(30)
    uv = (t.vertices[:, :2] - t.vertices[:, :2].min(0)) / np.ptp(t.vertices[:, :2], axis=0)
    normals = np.tile([0.0, 0.6, 0.8], (len(t.vertices), 1))
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(buf, "JPEG")
    return GltfMesh(positions=t.vertices - 200, indices=t.faces, texcoords=uv, normals=normals,
                    texture=buf.getvalue(), name="photo")  # fmt: skip


def all_meshes():
    return [*meshes(), textured()]


@pytest.fixture(scope="module")
def glbs(tmp_path_factory):
    d = tmp_path_factory.mktemp("draco")
    out = {}
    for name, fb in (("required", False), ("fallback", True)):
        out[name] = write_glb(d / f"{name}.glb", all_meshes(), compression="draco", bits=BITS,
                              draco_fallback=fb)  # fmt: skip
    return out


def decode_primitive(doc, binary, prim):
    ext = prim["extensions"]["KHR_draco_mesh_compression"]
    view = doc["bufferViews"][ext["bufferView"]]
    blob = binary[view.get("byteOffset", 0) : view.get("byteOffset", 0) + view["byteLength"]]
    dec = DracoPy.decode(blob)
    by_id = {int(a["unique_id"]): np.asarray(a["data"]) for a in dec.attributes}
    return dec, {sem: by_id[uid] for sem, uid in ext["attributes"].items()}


def test_dracopy_decodes_every_primitive_to_the_source(glbs):
    for path in glbs.values():
        doc, binary = read_glb_json(path)
        for src, mesh in zip(all_meshes(), doc["meshes"], strict=True):
            (prim,) = mesh["primitives"]
            dec, attrs = decode_primitive(doc, binary, prim)
            # accessors describe the decoded data, as the extension's specification asks
            pos_acc = doc["accessors"][prim["attributes"]["POSITION"]]
            assert pos_acc["count"] == len(dec.points)
            assert doc["accessors"][prim["indices"]]["count"] == np.asarray(dec.faces).size
            got = np.asarray(dec.points, np.float64)
            assert np.allclose(pos_acc["min"], got.min(0)) and np.allclose(
                pos_acc["max"], got.max(0)
            )
            v0 = np.asarray(src.positions, np.float64)
            g0 = np.column_stack([v0[:, 0], v0[:, 2], -v0[:, 1]])  # glTF y-up
            step = np.ptp(g0, axis=0).max() / (2**BITS - 1)
            d, near = cKDTree(g0).query(got)
            assert d.max() <= 0.5 * step * np.sqrt(3) * 1.001 + 1e-6
            assert canon(near[np.asarray(dec.faces)]) == canon(src.indices)
            if src.colors is not None:
                c = attrs["COLOR_0"][:, :3].astype(float) / 255.0
                assert np.abs(c - src.colors[near]).max() <= 0.5 / 255 + 1e-9
            if src.feature_ids is not None:
                fid = attrs["_FEATURE_ID_0"].reshape(-1)
                assert np.array_equal(fid, np.asarray(src.feature_ids, np.float32)[near])
            if src.texcoords is not None:
                duv = np.abs(attrs["TEXCOORD_0"] - src.texcoords[near]).max()
                assert duv <= 1.0 / (2**DRACO_UV_BITS - 1)
                n = attrs["NORMAL"]
                assert np.abs(n - [0.0, 0.8, -0.6]).max() < 0.01  # (E, U, -N) of (0, .6, .8)


def test_fallback_rules_of_the_extension(glbs):
    doc, _ = read_glb_json(glbs["required"])
    assert doc["extensionsRequired"] == ["KHR_draco_mesh_compression"]
    for mesh in doc["meshes"]:
        prim = mesh["primitives"][0]
        for i in [*prim["attributes"].values(), prim["indices"]]:
            assert "bufferView" not in doc["accessors"][i]  # no fallback: nothing to point at
    doc, _ = read_glb_json(glbs["fallback"])
    assert "KHR_draco_mesh_compression" in doc["extensionsUsed"]
    assert "KHR_draco_mesh_compression" not in doc.get("extensionsRequired", [])
    for mesh in doc["meshes"]:
        prim = mesh["primitives"][0]
        for i in [*prim["attributes"].values(), prim["indices"]]:
            assert "bufferView" in doc["accessors"][i]


def test_fallback_data_is_the_decoded_mesh_and_both_read_alike(glbs):
    """The uncompressed fallback equals what a Draco decoder returns, so a client
    with or without a decoder draws the same triangles."""
    a = read_glb(glbs["required"])  # decoded by DracoPy
    doc, binary = read_glb_json(glbs["fallback"])
    for prim in doc["meshes"]:
        prim["primitives"][0].pop("extensions")  # read the fallback views only
    from twin.tiles.gltf import _read_primitives

    b = _read_primitives(doc, binary)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x["positions"], y["positions"])
        assert np.array_equal(x["indices"], y["indices"])
        for k in ("colors", "feature_ids", "texcoords"):
            if k in x:
                assert np.array_equal(x[k], y[k])
        if "texture" in x:
            assert x["texture"] == y["texture"]
    (table,) = read_property_tables(glbs["required"])
    assert table["properties"]["building_id"][4] == "b4"


def test_validator_reports_no_errors(glbs):
    if not node_validator_path().exists():
        pytest.skip("npm gltf-validator not installed")
    for path in glbs.values():
        report = validate_glb(path)
        assert report["issues"]["numErrors"] == 0, report["issues"]["messages"][:5]


def test_draco_lod_tileset_validates_and_decodes_to_the_uncompressed_tiles(tmp_path):
    layers = [terrain(60), boxes(3)]
    kw = {"max_faces": 2000}
    plain = write_lod_tileset(tmp_path / "plain", layers, FRAME,
                              params=LodParams(compression="none", **kw))  # fmt: skip
    packed = write_lod_tileset(tmp_path / "draco", layers, FRAME,
                               params=LodParams(compression="draco", **kw))  # fmt: skip
    assert validate_tileset(tmp_path / "draco" / "tileset.json") == []
    assert sorted(plain["written"]) == sorted(packed["written"])
    assert packed["bytes"] < 0.3 * plain["bytes"]
    have_validator = node_validator_path().exists()
    for uri in packed["written"]:
        ref = {p["name"]: p for p in read_tile(tmp_path / "plain" / uri)}
        for p in read_tile(tmp_path / "draco" / uri):
            r = ref[p["name"]]
            step = np.ptp(r["vertices"], axis=0).max() / (2**BITS - 1)
            d, near = cKDTree(r["vertices"]).query(p["vertices"])
            assert d.max() <= 0.5 * step * np.sqrt(3) * 1.01 + 1e-6, uri
            assert canon(near[p["faces"]]) == canon(r["faces"]), uri
            if "feature_ids" in r:
                assert np.array_equal(p["feature_ids"], r["feature_ids"][near])
        if have_validator and uri.count("/") and uri.startswith("t/0"):
            report = validate_glb(tmp_path / "draco" / uri)
            assert report["issues"]["numErrors"] == 0
