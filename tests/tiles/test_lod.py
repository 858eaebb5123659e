"""Quadtree LOD tilesets: exact leaves, no cracks, measured errors, incremental updates."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from scipy.spatial import cKDTree

from twin.crs import LocalFrame
from twin.errors import InputError, OutputError
from twin.tiles.gltf import PropertyTable
from twin.tiles.lod import (
    Layer,
    LodParams,
    read_tile,
    write_lod_tileset,
    write_tileset_of_tilesets,
)
from twin.tiles.validate import validate_tileset

FRAME = LocalFrame(121.55, 29.87, 10.0)
SIZE = 400.0


def height(x, y):
    return 12.0 * np.sin(x / 37.0) * np.cos(y / 53.0) + 0.02 * x


def terrain(n=120):
    """A (n+1)^2-vertex height field over SIZE x SIZE metres: 2 n^2 faces."""
    g = np.linspace(0.0, SIZE, n + 1)
    x, y = np.meshgrid(g, g)
    v = np.column_stack([x.ravel(), y.ravel(), height(x.ravel(), y.ravel())])
    i = np.arange(n)
    a = (i[None, :] + (n + 1) * i[:, None]).ravel()
    f = np.concatenate(
        [np.column_stack([a, a + 1, a + n + 2]), np.column_stack([a, a + n + 2, a + n + 1])]
    )
    colors = np.column_stack([np.full(len(v), 0.4), (v[:, 2] + 20) / 40, np.full(len(v), 0.3)])
    return Layer("terrain", v, f.astype(np.uint32), colors=colors)


def boxes(k=6):
    """k x k unit boxes (10 m, 12 faces each) with a property table."""
    vs, fs, ids = [], [], []
    cube = np.array([[x, y, z] for z in (0, 1) for y in (0, 1) for x in (0, 1)], float)
    quads = [(0, 2, 3, 1), (4, 5, 7, 6), (0, 1, 5, 4), (2, 6, 7, 3), (0, 4, 6, 2), (1, 3, 7, 5)]
    tri = np.array([[q[0], q[1], q[2]] for q in quads] + [[q[0], q[2], q[3]] for q in quads])
    for b in range(k * k):
        ox, oy = 20 + (b % k) * (SIZE - 40) / k, 20 + (b // k) * (SIZE - 40) / k
        vs.append(cube * [10, 10, 10 + b] + [ox, oy, 30])
        fs.append(tri + 8 * b)
        ids.append(np.full(8, b))
    table = PropertyTable("building", {"building_id": [f"b{b}" for b in range(k * k)],
                                       "height": [10.0 + b for b in range(k * k)]})  # fmt: skip
    return Layer(
        "buildings",
        np.concatenate(vs),
        np.concatenate(fs).astype(np.uint32),
        feature_ids=np.concatenate(ids),
        features=table,
    )


def tiles_of(out):
    doc = json.loads((out / "tileset.json").read_text())
    tiles = []

    def walk(t, level):
        tiles.append((t, level))
        for c in t.get("children", []):
            walk(c, level + 1)

    walk(doc["root"], 0)
    return doc, tiles


# positions are quantised per tile (14 bits of the tile's box): a few millimetres
TOL = 0.02


def input_ids(layer, vertices, tol=TOL):
    """Each vertex's index in the input layer when it is one of its vertices (within
    the quantisation step), else -1 (a vertex simplification placed)."""
    d, near = cKDTree(layer.vertices).query(vertices)
    return np.where(d <= tol, near, -1)


def canon(faces) -> Counter:
    out = Counter()
    for a, b, c in np.asarray(faces, np.int64).reshape(-1, 3):
        out[min((a, b, c), (b, c, a), (c, a, b))] += 1
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("lod") / "tiles"
    layer = terrain()
    summary = write_lod_tileset(out, [layer], FRAME, params=LodParams(max_faces=4000))
    return out, layer, summary


def test_tree_validates_and_has_levels(built):
    out, layer, summary = built
    assert validate_tileset(out / "tileset.json") == []
    assert summary["levels"] >= 3
    assert summary["faces_in"] == len(layer.faces)
    doc, tiles = tiles_of(out)
    for t, _ in tiles:
        if "content" in t:
            faces = sum(len(p["faces"]) for p in read_tile(out / t["content"]["uri"]))
            assert faces <= 4000 * 1.05
    # root carries the frame's transform; every tile refines by replacement
    assert np.allclose(doc["root"]["transform"], FRAME.enu_to_ecef_matrix().T.ravel())
    assert all(t["refine"] == "REPLACE" for t, _ in tiles)


def test_leaves_are_the_input_exactly(built):
    out, layer, _ = built
    _, tiles = tiles_of(out)
    got = Counter()
    for t, _ in tiles:
        if not t.get("children"):
            assert t["geometricError"] == 0.0
            for p in read_tile(out / t["content"]["uri"]):
                ids = input_ids(layer, p["vertices"])
                assert (ids >= 0).all()
                got += canon(ids[p["faces"]])
    assert got == canon(layer.faces)


def _level_mesh(out, tiles, level, layer):
    """The surface a client draws when refining exactly to ``level``, as vertex ids:
    input vertices keep their input index (shared across tiles), others get new ids."""
    fs, pos, n = [], [layer.vertices], len(layer.vertices)
    for t, lv in tiles:
        if lv == level or (lv < level and not t.get("children")):
            for p in read_tile(out / t["content"]["uri"]):
                ids = input_ids(layer, p["vertices"])
                new = ids < 0
                ids[new] = n + np.arange(new.sum())
                n += int(new.sum())
                pos.append(p["vertices"][new])
                fs.append(ids[p["faces"]])
    return np.concatenate(pos), np.concatenate(fs)


def _open_edges(f):
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    uniq, cnt = np.unique(e, axis=0, return_counts=True)
    return uniq[cnt == 1]


def test_no_cracks_at_any_level(built):
    out, layer, summary = built
    _, tiles = tiles_of(out)
    for level in range(summary["levels"]):
        pos, f = _level_mesh(out, tiles, level, layer)
        edges = _open_edges(f)
        # every open edge lies on the outer border of the square: neighbours meet
        mid = (pos[edges[:, 0]] + pos[edges[:, 1]]) / 2
        on_border = (
            (np.abs(mid[:, 0]) < 1e-3)
            | (np.abs(mid[:, 0] - SIZE) < 1e-3)
            | (np.abs(mid[:, 1]) < 1e-3)
            | (np.abs(mid[:, 1] - SIZE) < 1e-3)
        )
        assert on_border.all(), f"level {level}: {int((~on_border).sum())} interior open edges"


def test_geometric_error_bounds_the_measured_error(built):
    out, _, _ = built
    _, tiles = tiles_of(out)
    checked = 0
    for t, _ in tiles:
        if t.get("children"):
            for child in t["children"]:
                assert child["geometricError"] <= t["geometricError"]
            for p in read_tile(out / t["content"]["uri"]):
                v = p["vertices"]
                # vertical distance of the simplified surface to the true height field,
                # sampled at vertices and face centroids
                c = v[p["faces"]].mean(axis=1)
                pts = np.concatenate([v, c])
                dev = np.abs(pts[:, 2] - height(pts[:, 0], pts[:, 1]))
                assert dev.max() <= t["geometricError"] + 0.05
                checked += 1
    assert checked >= 3


def test_buildings_keep_their_ids_and_attributes(tmp_path):
    layer = boxes()
    out = tmp_path / "b"
    write_lod_tileset(out, [layer], FRAME, params=LodParams(max_faces=100))
    _, tiles = tiles_of(out)
    from twin.tiles.gltf import read_property_tables

    seen = set()
    for t, _ in tiles:
        if "content" not in t or t.get("children"):
            continue
        path = out / t["content"]["uri"]
        (p,) = read_tile(path)
        (table,) = read_property_tables(path)
        ids = np.asarray(p["feature_ids"]).astype(int)
        names = table["properties"]["building_id"]
        heights = table["properties"]["height"]
        for fid in np.unique(ids):
            b = int(names[fid][1:])
            seen.add(b)
            zs = p["vertices"][ids == fid, 2]
            assert abs(zs.max() - zs.min() - heights[fid]) < TOL  # the box's own height
    assert seen == set(range(36))


def test_incremental_update_rewrites_only_changed_tiles(tmp_path):
    out, cache = tmp_path / "t", tmp_path / "cache"
    layer = terrain(80)
    first = write_lod_tileset(
        out, [layer], FRAME, params=LodParams(max_faces=2000), cache_dir=cache
    )
    before = {u: (out / u).read_bytes() for u in first["written"]}
    # raise the ground in one corner cell only
    v = layer.vertices.copy()
    corner = (v[:, 0] < 40) & (v[:, 1] < 40)
    v[corner, 2] += 3.0
    changed = Layer("terrain", v, layer.faces, colors=layer.colors)
    second = write_lod_tileset(
        out, [changed], FRAME, params=LodParams(max_faces=2000), cache_dir=cache
    )
    assert second["written"] and second["kept"]
    assert len(second["written"]) < first["tiles"] / 2
    # what was rewritten is the changed leaf and its ancestors: one per level
    levels = [int(u.split("/")[1]) for u in second["written"]]
    assert sorted(levels) == list(range(len(levels)))
    for u in second["kept"]:
        assert (out / u).read_bytes() == before[u]
    assert validate_tileset(out / "tileset.json") == []
    # a rebuild from scratch gives the same bytes as the update (deterministic)
    fresh = tmp_path / "fresh"
    write_lod_tileset(fresh, [changed], FRAME, params=LodParams(max_faces=2000))
    for u in second["written"] + second["kept"]:
        assert (out / u).read_bytes() == (fresh / u).read_bytes()


def test_tileset_of_tilesets(tmp_path):
    write_lod_tileset(tmp_path / "terrain", [terrain(40)], FRAME)
    write_lod_tileset(tmp_path / "buildings", [boxes(3)], FRAME)
    path = write_tileset_of_tilesets(
        tmp_path, ["terrain/tileset.json", "buildings/tileset.json"], FRAME
    )
    assert validate_tileset(path) == []
    doc = json.loads(path.read_text())
    assert "transform" not in doc["root"]  # the children carry it
    # the ECEF boxes contain the children's ECEF content positions
    centre = np.asarray(doc["root"]["boundingVolume"]["box"][:3])
    assert abs(np.linalg.norm(centre) - 6.37e6) < 3e4


def test_bad_input_and_foreign_folders(tmp_path):
    bad = terrain(10)
    bad.vertices[3, 2] = np.nan
    with pytest.raises(InputError, match="NaN"):
        write_lod_tileset(tmp_path / "x", [bad], FRAME)
    empty = Layer("e", np.zeros((0, 3)), np.zeros((0, 3), np.uint32))
    with pytest.raises(InputError, match="empty"):
        write_lod_tileset(tmp_path / "x", [empty], FRAME)
    oob = Layer("o", np.zeros((3, 3)), np.array([[0, 1, 5]], np.uint32))
    with pytest.raises(InputError, match="out of range"):
        write_lod_tileset(tmp_path / "x", [oob], FRAME)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "tileset.json").write_text('{"asset": {"version": "1.0"}}')
    with pytest.raises(OutputError, match="not empty"):
        write_lod_tileset(foreign, [terrain(10)], FRAME)
    assert (foreign / "tileset.json").read_text() == '{"asset": {"version": "1.0"}}'
    assert not list(tmp_path.glob(".x.*"))  # nothing half-written left behind


def test_an_unfinished_update_never_looks_complete(tmp_path, monkeypatch):
    import twin.tiles.lod as lod

    out = tmp_path / "tiles"
    layer = terrain(40)
    write_lod_tileset(out, [layer], FRAME, params=LodParams(max_faces=800))
    moved = Layer("terrain", layer.vertices + [0, 0, 1.0], layer.faces, colors=layer.colors)
    calls = []
    real = lod._write_content

    def dies_on_the_second_tile(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(*args, **kw)

    monkeypatch.setattr(lod, "_write_content", dies_on_the_second_tile)
    with pytest.raises(OSError, match="disk full"):
        write_lod_tileset(out, [moved], FRAME, params=LodParams(max_faces=800))
    monkeypatch.undo()
    # one tile is new, the rest old: no tileset.json says the folder is complete
    assert not (out / "tileset.json").exists()
    with pytest.raises(OutputError, match="did not finish"):
        write_lod_tileset(out, [moved], FRAME, params=LodParams(max_faces=800))
    s = write_lod_tileset(out, [moved], FRAME, params=LodParams(max_faces=800), overwrite=True)
    assert s["kept"] == [] and validate_tileset(out / "tileset.json") == []
    _, tiles = tiles_of(out)
    for t, _ in tiles:
        if "content" in t and "children" not in t:
            (p,) = read_tile(out / t["content"]["uri"])
            assert (input_ids(moved, p["vertices"]) >= 0).all()  # the new surface


def test_tiles_need_a_frame_and_skip_empty_layers(tmp_path):
    from twin.errors import CRSError

    with pytest.raises(CRSError, match="local frame"):
        write_lod_tileset(tmp_path / "x", [terrain(10)], None)
    assert not (tmp_path / "x").exists()
    empty = Layer("empty", np.zeros((0, 3)), np.zeros((0, 3), np.uint32))
    s = write_lod_tileset(tmp_path / "y", [empty, terrain(10)], FRAME)
    assert validate_tileset(tmp_path / "y" / "tileset.json") == []
    names = {p["name"] for u in s["written"] for p in read_tile(tmp_path / "y" / u)}
    assert names == {"terrain"}
