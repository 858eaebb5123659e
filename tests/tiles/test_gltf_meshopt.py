"""GLB with KHR_mesh_quantization + EXT_meshopt_compression: valid, exact within
the quantisation step, and readable by meshoptimizer's reference decoder."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from tests.tiles.test_lod import boxes, terrain
from twin.mesh.meshopt_codec import decode_index_buffer, decode_vertex_buffer
from twin.tiles.gltf import GltfMesh, read_glb_json, read_property_tables, write_glb
from twin.tiles.lod import read_tile
from twin.tiles.validate import node_validator_path, validate_glb


def canon(faces) -> set:
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    out = set()
    for a, b, c in f:
        r = min((a, b, c), (b, c, a), (c, a, b))
        out.add(r)
    return out


def meshes():
    t, b = terrain(50), boxes(3)
    normals = np.tile([0.0, 0.0, 1.0], (len(t.vertices), 1))
    return [
        GltfMesh(positions=t.vertices - 200, indices=t.faces, colors=t.colors, normals=normals,
                 name="terrain"),
        GltfMesh(positions=b.vertices - 200, indices=b.faces, feature_ids=b.feature_ids,
                 features=b.features, name="buildings"),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def glbs(tmp_path_factory):
    d = tmp_path_factory.mktemp("glb")
    plain, packed = d / "plain.glb", d / "meshopt.glb"
    write_glb(plain, meshes())
    write_glb(packed, meshes(), compression="meshopt", bits=14)
    return plain, packed


def test_same_triangles_within_half_a_step(glbs):
    plain, packed = glbs
    assert packed.stat().st_size < 0.3 * plain.stat().st_size
    for src, got in zip(meshes(), read_tile(packed), strict=True):
        v0 = np.asarray(src.positions)
        step = np.ptp(v0, axis=0).max() / (2**14 - 1)
        # each decoded vertex is within half a step of one source vertex
        d, near = cKDTree(v0).query(got["vertices"])
        assert d.max() <= 0.5 * step * np.sqrt(3) + 1e-9
        assert len(np.unique(near)) == len(got["vertices"])
        assert canon(near[got["faces"]]) == canon(src.indices)


def test_attributes_survive(glbs):
    _, packed = glbs
    t, b = read_tile(packed)
    src = meshes()
    _, near = cKDTree(src[0].positions).query(t["vertices"])
    rgba = np.asarray(t["colors"], float) / 255.0
    assert np.abs(rgba[:, :3] - src[0].colors[near]).max() <= 0.5 / 255 + 1e-9
    _, near = cKDTree(src[1].positions).query(b["vertices"])
    assert np.array_equal(np.asarray(b["feature_ids"]).astype(int), src[1].feature_ids[near])
    (table,) = read_property_tables(packed)
    assert table["properties"]["building_id"][4] == "b4"


def test_extensions_declared_and_validator_clean(glbs):
    _, packed = glbs
    doc, _ = read_glb_json(packed)
    for ext in ("EXT_meshopt_compression", "KHR_mesh_quantization"):
        assert ext in doc["extensionsRequired"]
    assert doc["buffers"][1]["extensions"]["EXT_meshopt_compression"]["fallback"] is True
    if not node_validator_path().exists():
        pytest.skip("npm gltf-validator not installed")
    report = validate_glb(packed)
    assert report["issues"]["numErrors"] == 0
    assert report["issues"]["numWarnings"] == 0


def test_meshoptimizer_decodes_every_compressed_view(glbs):
    mo = pytest.importorskip("meshoptimizer")
    mo.encode_vertex_version(0)
    _, packed = glbs
    doc, binary = read_glb_json(packed)
    plain = {p["name"]: p for p in read_tile(glbs[0])}
    checked = 0
    for acc in doc["accessors"]:
        view = doc["bufferViews"][acc["bufferView"]]
        ext = view.get("extensions", {}).get("EXT_meshopt_compression")
        if ext is None:
            continue
        data = binary[ext["byteOffset"] : ext["byteOffset"] + ext["byteLength"]]
        if ext["mode"] == "ATTRIBUTES":
            out = mo.decode_vertex_buffer(ext["count"], ext["byteStride"], data)
            theirs = np.frombuffer(out.tobytes(), np.uint8)
            ours = decode_vertex_buffer(data, ext["count"], ext["byteStride"]).reshape(-1)
        else:
            out = mo.decode_index_buffer(ext["count"], ext["byteStride"], data)
            # the wrapper writes index_size-byte indices into a uint32 array
            raw = np.asarray(out).tobytes()[: ext["count"] * ext["byteStride"]]
            size = np.uint16 if ext["byteStride"] == 2 else np.uint32
            theirs = np.frombuffer(raw, size).astype(np.int64)
            ours = decode_index_buffer(data, ext["count"], ext["byteStride"]).astype(np.int64)
        assert np.array_equal(theirs, ours.reshape(-1))
        checked += 1
    assert checked >= 6
    # and our own reader agrees with meshoptimizer on the geometry
    assert {p["name"] for p in read_tile(packed)} == set(plain)
