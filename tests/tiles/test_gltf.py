"""GLB writer: what is written reads back (y-up swap), byte layout, Khronos validator."""

from __future__ import annotations

import json
import shutil
import struct

import numpy as np
import pytest

from twin.errors import InputError, ParameterError, TwinError
from twin.tiles.gltf import GltfMesh, gltf_to_enu, read_glb, read_glb_json, write_glb
from twin.tiles.validate import node_validator_path, validate_glb

from .shapes import box_mesh


def cube(offset=(0.0, 0.0, 0.0), size=2.0):
    """A closed, outward cube in ENU."""
    lo = np.asarray(offset, float)
    return box_mesh(lo, lo + size)


def two_meshes():
    v, f = cube((100.0, -250.0, 12.0))
    colors = np.linspace(0, 1, 24).reshape(8, 3).astype(np.float32)
    a = GltfMesh(
        positions=v, indices=f, name="a", colors=colors, feature_ids=np.repeat([0.0, 1.0], 4)
    )
    w, g = cube((-40.0, 30.0, 0.5), 5.0)
    rgba = (np.arange(32).reshape(8, 4) * 7).astype(np.uint8)
    b = GltfMesh(positions=w, indices=g, name="b", colors=rgba, base_color=(0.5, 0.5, 0.5, 1.0))
    return [a, b]


def test_read_back_equals_what_was_written_in_y_up(tmp_path):
    meshes = two_meshes()
    p = write_glb(tmp_path / "m.glb", meshes)
    back = read_glb(p)
    assert [m["name"] for m in back] == ["a", "b"]
    for m, r in zip(meshes, back, strict=True):
        enu = m.positions.astype(np.float32)
        # stored: x = E, y = U, z = -N
        assert np.array_equal(r["positions"], np.column_stack([enu[:, 0], enu[:, 2], -enu[:, 1]]))
        assert np.array_equal(gltf_to_enu(r["positions"]), enu)
        assert np.array_equal(r["indices"], m.indices)
        assert r["indices"].dtype == np.uint32
    assert np.array_equal(back[0]["colors"], meshes[0].colors)
    assert np.array_equal(back[0]["feature_ids"], [0, 0, 0, 0, 1, 1, 1, 1])
    assert np.array_equal(back[1]["colors"], meshes[1].colors)


def test_byte_layout_alignment_and_header(tmp_path):
    p = write_glb(tmp_path / "m.glb", two_meshes(), extras={"frame": "ENU"})
    data = p.read_bytes()
    magic, version, total = struct.unpack_from("<III", data)
    assert (magic, version, total) == (0x46546C67, 2, len(data))
    jlen, jtype = struct.unpack_from("<II", data, 12)
    assert jtype == 0x4E4F534A and jlen % 4 == 0
    bstart = 20 + jlen
    blen, btype = struct.unpack_from("<II", data, bstart)
    assert btype == 0x004E4942
    assert (bstart + 8) % 8 == 0 and blen % 8 == 0 and len(data) % 8 == 0
    js = data[20:bstart]
    assert b"\x00" not in js and json.loads(js)  # padded with spaces, still JSON
    doc, binary = read_glb_json(p)
    assert doc["asset"]["version"] == "2.0" and doc["asset"]["generator"].startswith("twin ")
    assert doc["extras"] == {"frame": "ENU"}
    for view in doc["bufferViews"]:
        assert view["byteOffset"] % 4 == 0
    end = max(v["byteOffset"] + v["byteLength"] for v in doc["bufferViews"])
    assert binary[end:] == b"\x00" * (len(binary) - end)
    for mesh, r in zip(doc["meshes"], read_glb(p), strict=True):
        prim = mesh["primitives"][0]
        acc = doc["accessors"][prim["attributes"]["POSITION"]]
        assert acc["min"] == r["positions"].min(axis=0).tolist()
        assert acc["max"] == r["positions"].max(axis=0).tolist()
        assert doc["accessors"][prim["indices"]]["componentType"] == 5123  # uint16
        mat = doc["materials"][prim["material"]]
        assert mat["doubleSided"] is False and "baseColorFactor" in mat["pbrMetallicRoughness"]
    assert doc["extensionsUsed"] == ["EXT_mesh_features"]


def test_large_meshes_use_uint32_indices_and_same_input_same_bytes(tmp_path):
    n = 70_000
    v = np.column_stack([np.arange(n, dtype=float), np.zeros(n), np.zeros(n)])
    f = np.column_stack([np.arange(n - 2), np.arange(1, n - 1), np.arange(2, n)])
    v[:, 1] = np.arange(n) % 2  # non-degenerate strip
    m = GltfMesh(positions=v, indices=f)
    a = write_glb(tmp_path / "a.glb", [m]).read_bytes()
    b = write_glb(tmp_path / "b.glb", [m]).read_bytes()
    assert a == b
    doc, _ = read_glb_json(tmp_path / "a.glb")
    assert doc["accessors"][doc["meshes"][0]["primitives"][0]["indices"]]["componentType"] == 5125
    assert np.array_equal(read_glb(tmp_path / "a.glb")[0]["indices"], f)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.glb", "b.glb"]  # no temp left


def test_bad_meshes_and_bad_files(tmp_path):
    v, f = cube()
    with pytest.raises(ParameterError, match="outside"):
        write_glb(tmp_path / "x.glb", [GltfMesh(positions=v, indices=f + 1)])
    with pytest.raises(ParameterError, match="NaN"):
        write_glb(tmp_path / "x.glb", [GltfMesh(positions=v * np.nan, indices=f)])
    with pytest.raises(ParameterError, match="colors"):
        write_glb(tmp_path / "x.glb", [GltfMesh(positions=v, indices=f, colors=np.ones((3, 3)))])
    assert not (tmp_path / "x.glb").exists()
    p = write_glb(tmp_path / "ok.glb", [GltfMesh(positions=v, indices=f)])
    p.write_bytes(p.read_bytes()[:-16])
    with pytest.raises(InputError, match="truncated"):
        read_glb(p)


def _have_validator() -> bool:
    return shutil.which("node") is not None and (node_validator_path() / "package.json").exists()


@pytest.mark.node
@pytest.mark.skipif(not _have_validator(), reason="node or node_modules/gltf-validator absent")
def test_khronos_validator_reports_no_errors_or_warnings(tmp_path):
    p = write_glb(tmp_path / "m.glb", two_meshes())
    report = validate_glb(p)
    issues = report["issues"]
    assert issues["numErrors"] == 0, issues["messages"]
    assert issues["numWarnings"] == 0, issues["messages"]
    # only the (unvalidated) EXT_mesh_features extension is mentioned
    assert {m["code"] for m in issues["messages"]} <= {"UNSUPPORTED_EXTENSION"}
    assert report["info"]["totalVertexCount"] == 16


@pytest.mark.node
@pytest.mark.skipif(not _have_validator(), reason="node or node_modules/gltf-validator absent")
def test_khronos_validator_catches_a_broken_file(tmp_path):
    p = write_glb(tmp_path / "m.glb", two_meshes())
    doc, binary = read_glb_json(p)
    doc["accessors"][0]["max"] = [0.0, 0.0, 0.0]  # lie about the bounds
    js = json.dumps(doc).encode()
    js += b" " * (-len(js) % 4)
    data = struct.pack("<III", 0x46546C67, 2, 28 + len(js) + len(binary))
    data += struct.pack("<II", len(js), 0x4E4F534A) + js
    data += struct.pack("<II", len(binary), 0x004E4942) + binary
    (tmp_path / "bad.glb").write_bytes(data)
    assert validate_glb(tmp_path / "bad.glb")["issues"]["numErrors"] > 0


def test_validator_missing_gives_a_clear_error(tmp_path, monkeypatch):
    p = write_glb(tmp_path / "m.glb", two_meshes())
    monkeypatch.setenv("TWIN_NODE_MODULES", str(tmp_path / "nowhere"))
    with pytest.raises(TwinError, match="gltf-validator not found|Node.js is not installed"):
        validate_glb(p)


def test_preview_shows_the_meshes_in_their_colours(tmp_path):
    from PIL import Image

    from twin.tiles.preview import _SKY, _SUN, render_preview

    plate = (
        np.array([[-50, -50, 0], [50, -50, 0], [50, 50, 0], [-50, 50, 0]], float),
        np.array([[0, 1, 2], [0, 2, 3]]),
        np.array([0.2, 0.8, 0.2]),
    )
    v, f = cube((-10.0, -10.0, 0.0), 20.0)
    red = GltfMesh(positions=v, indices=f, colors=np.tile([1.0, 0.0, 0.0], (8, 1)))
    p = render_preview([plate, red], tmp_path / "p.png", view="top", size=(160, 120))
    img = np.asarray(Image.open(p)).astype(float)
    assert img.shape == (120, 160, 3)
    lit = 0.35 + 0.65 * (_SUN / np.linalg.norm(_SUN))[2]  # flat faces facing up
    assert np.allclose(img[60, 80], np.round(np.array([1.0, 0, 0]) * lit * 255), atol=1)
    assert np.allclose(img[60, 30], np.round(np.array([0.2, 0.8, 0.2]) * lit * 255), atol=1)
    # the 100 m plate fills the 120 px height (4 % margin), centred: the corner is sky
    assert np.allclose(img[0, 0], np.round(_SKY * 255), atol=1)
    before = p.read_bytes()
    render_preview([plate, red], p, view="top", size=(160, 120))
    assert p.read_bytes() == before  # deterministic
    with pytest.raises(ParameterError, match="unknown view"):
        render_preview([plate], tmp_path / "x.png", view="side")


def test_read_glb_names_the_file_when_the_binary_chunk_is_short(tmp_path):
    path = tmp_path / "m.glb"
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float64)
    write_glb(path, [GltfMesh(positions=v, indices=np.array([[0, 1, 2]]))])
    data = bytearray(path.read_bytes())
    jlen = struct.unpack_from("<I", data, 12)[0]
    off = 20 + jlen
    struct.pack_into("<I", data, off, 4)  # BIN chunk claims 4 bytes only
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="m.glb"):
        read_glb(path)
