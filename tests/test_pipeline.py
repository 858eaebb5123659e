"""`twin build` end to end on the small synthetic survey: lineage, georeference, formats."""

from __future__ import annotations

import json

import numpy as np
import pytest

from twin.crs import transform
from twin.fileio import sha256_file


def _manifest(model):
    return json.loads((model / "manifest.json").read_text())


def test_manifest_traces_every_output_to_its_inputs(small_survey, small_model):
    m = _manifest(small_model)
    roles = {i["role"]: i for i in m["inputs"]}
    assert roles["dem"]["sha256"] == sha256_file(small_survey / "dem.tif")
    assert roles["footprints"]["sha256"] == sha256_file(small_survey / "footprints.gpkg")
    assert roles["dem"]["crs"].startswith("EPSG:4550")
    for o in m["outputs"]:
        assert sha256_file(small_model / o["path"]) == o["sha256"], o["path"]
    names = {o["path"] for o in m["outputs"]}
    assert {"model.glb", "tiles/tileset.json", "preview.png"} <= names
    for lib in ("numpy", "numba", "pyproj", "PROJ", "GDAL"):
        assert lib in m["libraries"]
    assert m["parameters"]["lod"] == 2
    assert (
        m["counts"]["buildings_modelled"]
        == json.loads((small_survey / "survey.json").read_text())["counts"]["buildings"]
    )


def test_tileset_validates_against_the_3d_tiles_schema(small_model, shared_data):
    from twin.tiles.validate import validate_tileset

    assert validate_tileset(small_model / "tiles" / "tileset.json") == []


@pytest.mark.node
def test_glbs_pass_the_khronos_validator(small_model):
    from twin.tiles.validate import validate_glb

    for glb in [small_model / "model.glb", *sorted((small_model / "tiles").glob("*.glb"))]:
        report = validate_glb(glb)
        assert report["issues"]["numErrors"] == 0, (glb.name, report["issues"]["messages"][:5])


def _leaves(model, layer):
    """The full-resolution contents of a layer's LOD tileset (ENU vertices)."""
    from twin.tiles.lod import read_tile

    base = model / "tiles" / layer
    doc = json.loads((base / "tileset.json").read_text())
    out = []

    def walk(tile):
        if tile.get("children"):
            for c in tile["children"]:
                walk(c)
        elif "content" in tile:
            for prim in read_tile(base / tile["content"]["uri"]):
                prim["path"] = base / tile["content"]["uri"]
                out.append(prim)

    walk(doc["root"])
    return out


def test_buildings_are_placed_on_the_globe_where_the_footprints_are(small_survey, small_model):
    """Root transform x glTF (y-up) content lands each roof over its footprint in EPSG:4550."""
    import geopandas as gpd

    ts = json.loads((small_model / "tiles" / "buildings" / "tileset.json").read_text())
    m = np.array(ts["root"]["transform"], dtype=float).reshape(4, 4).T  # column-major
    enu = np.concatenate([p["vertices"] for p in _leaves(small_model, "buildings")])
    ecef = enu @ m[:3, :3].T + m[:3, 3]
    xyz = transform(ecef, "EPSG:4978", "EPSG:4550")
    fp = gpd.read_file(small_survey / "footprints.gpkg")
    x0, y0, x1, y1 = fp.total_bounds
    # float32 content relative to the frame: centimetre-level placement
    assert xyz[:, 0].min() == pytest.approx(x0, abs=0.05)
    assert xyz[:, 0].max() == pytest.approx(x1, abs=0.05)
    assert xyz[:, 1].min() == pytest.approx(y0, abs=0.05)
    assert xyz[:, 1].max() == pytest.approx(y1, abs=0.05)
    top = (fp["base_height"] + fp["height"]).max()
    assert xyz[:, 2].max() == pytest.approx(top, abs=0.05)


def test_rebuild_reuses_unchanged_stages(small_survey, small_model, tmp_path):
    import shutil

    from twin.pipeline import BuildParams, build

    out = tmp_path / "model"
    shutil.copytree(small_model, out)
    m = build(small_survey, out)
    assert {k: v["status"] for k, v in m["stages"].items()} == {
        "terrain": "reused",
        "buildings": "reused",
        "export": "built",
        "terrain_tiles": "built",
    }
    m2 = build(small_survey, out, params=BuildParams(lod=1))
    assert m2["stages"]["terrain"]["status"] == "reused"
    assert m2["stages"]["buildings"]["status"] == "built"
    assert m2["counts"]["building_triangles"] < m["counts"]["building_triangles"]


def test_model_glb_says_where_its_local_frame_is(small_model):
    from twin.crs import LocalFrame
    from twin.tiles.gltf import read_glb_json

    doc, _ = read_glb_json(small_model / "model.glb")
    frame = LocalFrame.from_dict(doc["extras"]["frame"])
    ts = json.loads((small_model / "tiles" / "terrain" / "tileset.json").read_text())
    m = np.array(ts["root"]["transform"], dtype=float).reshape(4, 4).T
    assert np.allclose(m, frame.enu_to_ecef_matrix(), atol=1e-6)


def test_a_failed_rebuild_leaves_no_manifest(small_survey, small_model, tmp_path):
    import shutil

    from twin.errors import TwinError
    from twin.pipeline import build

    out = tmp_path / "model"
    shutil.copytree(small_model, out)
    bad = tmp_path / "fp.gpkg"
    bad.write_bytes(b"not a geopackage")
    with pytest.raises(TwinError, match="fp.gpkg"):
        build(small_survey, out, footprints=bad)
    assert not (out / "manifest.json").exists()


def test_buildings_carry_their_attributes_for_picking(small_survey, small_model):
    """EXT_mesh_features ids index an EXT_structural_metadata table of the footprints."""
    import geopandas as gpd

    from twin.tiles.gltf import read_property_tables

    fp = gpd.read_file(small_survey / "footprints.gpkg").set_index("building_id")
    seen = set()
    for prim in _leaves(small_model, "buildings"):
        (table,) = read_property_tables(prim["path"])
        props = table["properties"]
        assert table["class"] == "building"
        fid = prim["feature_ids"].astype(int)
        assert table["count"] == len(np.unique(fid))
        for i, bid in enumerate(props["building_id"]):
            seen.add(bid)
            assert props["height"][i] == pytest.approx(fp.loc[bid, "height"])
            assert props["floors"][i] == fp.loc[bid, "floors"]
            assert props["roof_type"][i] == fp.loc[bid, "roof_type"]
            # the highest vertex of each feature is its building's ridge (base + height)
            top = prim["vertices"][fid == i, 2].max()
            expected = props["base_height"][i] + props["height"][i]
            assert abs(top - expected) < 0.05 + 1e-3 * expected
    assert seen == set(fp.index)


def test_terrain_is_an_error_bounded_tin_of_the_dem(small_survey, small_model):
    import rasterio

    from twin.crs import LocalFrame

    m = _manifest(small_model)
    t = m["stages"]["terrain"]
    assert t["max_error_reached"] <= m["parameters"]["terrain_max_error"] == 0.25
    assert t["triangles"] < 0.25 * 2 * t["dem_samples"]  # far fewer than the grid
    frame = LocalFrame.from_dict(m["frame"])
    enu = np.concatenate([p["vertices"] for p in _leaves(small_model, "terrain")])
    xyz = frame.to_crs(enu, "EPSG:4550")
    with rasterio.open(small_survey / "dem.tif") as ds:
        inv = ~ds.transform
        cols = np.floor(inv.a * xyz[:, 0] + inv.b * xyz[:, 1] + inv.c).astype(int)
        rows = np.floor(inv.d * xyz[:, 0] + inv.e * xyz[:, 1] + inv.f).astype(int)
        z = ds.read(1)[np.clip(rows, 0, ds.height - 1), np.clip(cols, 0, ds.width - 1)]
    # TIN vertices are DEM samples (float32 content: millimetres)
    assert np.abs(xyz[:, 2] - z).max() < 0.01


def test_update_rewrites_only_the_tiles_of_changed_buildings(small_survey, small_model, tmp_path):
    import shutil

    import geopandas as gpd

    from twin.pipeline import BuildParams, build, update
    from twin.tiles.gltf import read_property_tables
    from twin.tiles.validate import validate_tileset

    out = tmp_path / "model"
    shutil.copytree(small_model, out)
    first = build(small_survey, out, params=BuildParams(tile_max_faces=300))
    tiles0 = first["stages"]["export"]["tiles"]["buildings"]
    assert tiles0["levels"] >= 2
    fp = gpd.read_file(small_survey / "footprints.gpkg")
    bid = fp.loc[0, "building_id"]
    fp.loc[0, "height"] += 5.0
    new = tmp_path / "footprints.gpkg"
    fp.to_file(new)
    m = update(out, footprints=new)
    tiles = m["stages"]["export"]["tiles"]
    # the seated terrain is rebuilt (its key has the footprints) but comes out the
    # same (the building's base did not move), so none of its tiles is rewritten
    assert tiles["terrain"]["changed"] == []
    changed = tiles["buildings"]["changed"]
    # the leaf holding the building and its ancestors: one tile per level
    assert 1 <= len(changed) <= tiles0["levels"]
    assert sorted(int(u.split("/")[1]) for u in changed) == list(range(len(changed)))
    assert tiles["buildings"]["kept"] == tiles0["count"] - len(changed)
    assert validate_tileset(out / "tiles" / "tileset.json") == []
    # the new height is in the rewritten leaf
    for prim in _leaves(out, "buildings"):
        (table,) = read_property_tables(prim["path"])
        names = table["properties"]["building_id"]
        if bid in names:
            i = names.index(bid)
            assert table["properties"]["height"][i] == pytest.approx(fp.loc[0, "height"])
            assert prim["path"].relative_to(out / "tiles" / "buildings").as_posix() in changed


def test_plain_obj_matches_the_glb(small_model):
    import trimesh

    from twin.tiles.gltf import gltf_to_enu, read_glb

    obj = trimesh.load(small_model / "model.obj", process=False, force="mesh")
    glb = read_glb(small_model / "model.glb")
    text = (small_model / "model.obj").read_text()
    assert [ln[2:] for ln in text.splitlines() if ln.startswith("o ")] == [p["name"] for p in glb]
    v = np.concatenate([gltf_to_enu(p["positions"].astype(float)) for p in glb])
    assert len(obj.faces) == sum(len(p["indices"]) for p in glb)
    assert np.abs(obj.vertices - v).max() < 1e-3
    assert "# frame:" in (small_model / "model.obj").read_text()[:400]


def test_buildings_as_cityjson_in_the_survey_crs(small_survey, small_model):
    import geopandas as gpd

    from twin.tiles.cityjson import validate_cityjson

    path = small_model / "model.city.json"
    assert validate_cityjson(path) == []
    doc = json.loads(path.read_text())
    assert doc["metadata"]["referenceSystem"].endswith("EPSG/0/4550")
    fp = gpd.read_file(small_survey / "footprints.gpkg").set_index("building_id")
    assert set(doc["CityObjects"]) == set(fp.index)
    v = np.asarray(doc["vertices"]) * doc["transform"]["scale"] + doc["transform"]["translate"]
    x0, y0, x1, y1 = fp.total_bounds
    assert v[:, 0].min() == pytest.approx(x0, abs=0.01)
    assert v[:, 1].max() == pytest.approx(y1, abs=0.01)
    for bid, obj in list(doc["CityObjects"].items())[:5]:
        assert obj["attributes"]["measuredHeight"] == pytest.approx(fp.loc[bid, "height"])


@pytest.mark.slow
def test_buildings_from_lidar_fit_the_true_roofs(small_survey, small_model, tmp_path):
    import shutil

    import geopandas as gpd

    from twin.pipeline import BuildParams, build

    out = tmp_path / "model"
    shutil.copytree(small_model, out)
    m = build(small_survey, out, params=BuildParams(buildings_from="lidar"))
    assert m["stages"]["buildings"]["status"] == "built"
    assert m["stages"]["terrain"]["status"] == "reused"
    assert {i["role"] for i in m["inputs"]} == {"dem", "footprints", "lidar"}
    fp = gpd.read_file(small_survey / "footprints.gpkg").set_index("building_id")
    doc = json.loads((out / "model.city.json").read_text())
    scale, shift = doc["transform"]["scale"], doc["transform"]["translate"]
    v = np.asarray(doc["vertices"]) * scale + shift
    assert len(doc["CityObjects"]) == len(fp)
    for bid, obj in doc["CityObjects"].items():
        idx = np.unique(np.asarray(obj["geometry"][0]["boundaries"]).ravel())
        top = v[idx, 2].max()
        truth = fp.loc[bid, "base_height"] + fp.loc[bid, "height"]
        assert abs(top - truth) < 0.3, (bid, top, truth)


def test_buildings_are_seated_on_the_terrain(small_model):
    """Every building's lowest vertices lie on the terrain surface (no gap, no
    floating house), and no terrain pokes through a building's floor."""
    from twin.terrain.seating import terrain_heights_at
    from twin.tiles.gltf import gltf_to_enu, read_glb

    prims = {p["name"]: p for p in read_glb(small_model / "model.glb")}
    t, b = prims["terrain"], prims["buildings"]
    tv = gltf_to_enu(t["positions"].astype(np.float64))
    bv = gltf_to_enu(b["positions"].astype(np.float64))
    fid = b["feature_ids"].astype(int)
    checked = 0
    for i in np.unique(fid):
        v = bv[fid == i]
        low = v[v[:, 2] <= v[:, 2].min() + 1e-3]
        ground = terrain_heights_at(tv, t["indices"], low[:, 0], low[:, 1])
        assert np.abs(ground - low[:, 2]).max() < 0.01, i
        checked += 1
    assert checked >= 20


@pytest.mark.slow
def test_build_with_texture_paints_the_model(small_survey, small_model, tmp_path):
    import shutil

    from twin.pipeline import BuildParams, build
    from twin.tiles.gltf import read_glb

    out = tmp_path / "model"
    shutil.copytree(small_model, out)
    m = build(small_survey, out, params=BuildParams(texture=True))
    assert m["stages"]["texture"]["status"] == "built"
    (prim,) = read_glb(out / "textured" / "model.glb")
    assert prim["texcoords"] is not None and prim["texture"][:2] == b"\xff\xd8"  # JPEG
    report = json.loads((out / "textured" / "georef.json").read_text())["report"]
    # the oblique photos see nearly all of the model (what they miss is filled, counted)
    assert report["unseen_faces"] < 0.2 * report["faces"]


def test_build_with_draco_tiles(small_survey, small_model, tmp_path):
    import shutil

    from twin.pipeline import BuildParams, build
    from twin.tiles.gltf import read_glb_json
    from twin.tiles.lod import read_tile
    from twin.tiles.validate import validate_tileset

    out = tmp_path / "model"
    shutil.copytree(small_model, out)
    m = build(small_survey, out, params=BuildParams(tile_compression="draco"))
    assert m["parameters"]["tile_compression"] == "draco"
    assert validate_tileset(out / "tiles" / "tileset.json") == []
    ref = {
        p["name"]: p for p in _leaves(small_model, "buildings") + _leaves(small_model, "terrain")
    }
    for layer in ("terrain", "buildings"):
        for glb in (out / "tiles" / layer / "t").rglob("*.glb"):
            doc, _ = read_glb_json(glb)
            assert doc["extensionsRequired"] == ["KHR_draco_mesh_compression"]
        for p in _leaves(out, layer):
            r = ref[p["name"]]
            # Draco's 14-bit grid over the tile vs the meshopt grid: a few millimetres
            assert len(p["faces"]) == len(r["faces"])
            lo, hi = r["vertices"].min(axis=0), r["vertices"].max(axis=0)
            assert np.allclose(p["vertices"].min(axis=0), lo, atol=0.02)
            assert np.allclose(p["vertices"].max(axis=0), hi, atol=0.02)
            assert set(read_tile(p["path"])[0]) >= {"vertices", "faces"}


@pytest.mark.slow
def test_build_with_texture_tiles_the_textured_model(small_survey, small_model, tmp_path):
    import io
    import shutil

    from PIL import Image
    from scipy.spatial import cKDTree

    from twin.pipeline import BuildParams, build
    from twin.tiles.gltf import read_glb, read_property_tables
    from twin.tiles.lod import read_tile
    from twin.tiles.validate import node_validator_path, validate_glb, validate_tileset

    out = tmp_path / "model"
    shutil.copytree(small_model, out)
    m = build(small_survey, out, params=BuildParams(texture=True, tile_max_faces=600))
    tiles = m["stages"]["export"]["tiles"]["textured"]
    assert tiles["levels"] >= 2
    top = json.loads((out / "tiles" / "tileset.json").read_text())
    assert [c["content"]["uri"] for c in top["root"]["children"]] == ["textured/tileset.json"]
    assert validate_tileset(out / "tiles" / "tileset.json") == []
    names = {o["path"] for o in m["outputs"]}
    assert "tiles/textured/tileset.json" in names
    # the source: textured/model.glb (one mesh per page), faces found by centroid
    src = read_glb(out / "textured" / "model.glb")
    cents, cols = [], []
    for prim in src:
        img = np.asarray(Image.open(io.BytesIO(prim["texture"])).convert("RGB"), float)
        v = np.asarray(prim["positions"], float)
        v = np.column_stack([v[:, 0], -v[:, 2], v[:, 1]])
        f = np.asarray(prim["indices"])
        cents.append(v[f].mean(axis=1))
        cols.append(_sample(img, np.asarray(prim["texcoords"], float)[f].mean(axis=1)))
    tree, cols = cKDTree(np.concatenate(cents)), np.concatenate(cols)
    doc = json.loads((out / "tiles" / "textured" / "tileset.json").read_text())
    by_level: dict[int, int] = {}
    checked = 0

    def walk(t, level):
        nonlocal checked
        for c in t.get("children", []):
            walk(c, level + 1)
        if "content" not in t:
            return
        path = out / "tiles" / "textured" / t["content"]["uri"]
        for p in read_tile(path):
            img = np.asarray(Image.open(io.BytesIO(p["texture"])).convert("RGB"), float)
            by_level[level] = by_level.get(level, 0) + len(p["texture"])
            if "children" in t:
                continue
            # a leaf draws every face with the colours of the textured model
            d, near = tree.query(p["vertices"][p["faces"]].mean(axis=1))
            assert d.max() < 0.01
            uv = np.asarray(p["texcoords"], float)[p["faces"]].mean(axis=1)
            diff = np.abs(_sample(img, uv) - cols[near]).max(axis=1)
            # re-encoded photo texels; UVs 3 texels off give a 95th percentile >= 25
            assert np.median(diff) <= 7 and np.percentile(diff, 95) <= 20, path
            checked += 1
        if node_validator_path().exists() and level <= 1:
            assert validate_glb(path)["issues"]["numErrors"] == 0

    walk(doc["root"], 0)
    assert checked >= 2
    levels = [by_level[k] for k in sorted(by_level)]
    assert all(a < b for a, b in zip(levels, levels[1:], strict=False)), levels
    # a click on the textured model finds the building: ids and the property table
    leaf = next((out / "tiles" / "textured" / "t").rglob("*.glb"))
    tables = read_property_tables(leaf)
    assert tables and tables[0]["properties"]["building_id"][-1] == "ground"


def _sample(img, uv):
    h, w = img.shape[:2]
    x = np.clip(np.rint(uv[:, 0] * w - 0.5).astype(int), 0, w - 1)
    y = np.clip(np.rint(uv[:, 1] * h - 0.5).astype(int), 0, h - 1)
    return img[y, x]


def test_bad_input_for_the_tiles(small_survey, small_model, tmp_path):
    """A DEM in no CRS, a textured model whose texture cannot be read, a tiles folder
    holding another tileset: one clear line each, nothing that looks complete."""
    import shutil

    import rasterio
    from click.testing import CliRunner

    from twin.cli import main
    from twin.crs import LocalFrame
    from twin.errors import InputError
    from twin.pipeline import BuildParams, _textured_tiles

    with rasterio.open(small_survey / "dem.tif") as src:
        profile, data = src.profile, src.read()
    profile.pop("crs", None)
    nocrs = tmp_path / "nocrs.tif"
    with rasterio.open(nocrs, "w", **profile) as dst:
        dst.write(data)
    r = CliRunner().invoke(
        main, ["build", str(small_survey), str(tmp_path / "m"), "--dem", str(nocrs)]
    )
    assert r.exit_code == 2
    assert "no CRS" in r.output and "nocrs.tif" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "m" / "manifest.json").exists()

    # a textured model with a broken image
    from twin.tiles.gltf import GltfMesh, write_glb

    out = tmp_path / "t"
    (out / "textured").mkdir(parents=True)
    v = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0]], float)
    uv = np.array([[0, 0], [1, 0], [0, 1]], float)
    mesh = GltfMesh(v, np.array([[0, 1, 2]]), texcoords=uv, texture=b"\xff\xd8 not a jpeg")
    write_glb(out / "textured" / "model.glb", [mesh])
    frame = LocalFrame(121.55, 29.87, 0.0)
    with pytest.raises(InputError, match="cannot be read") as e:
        _textured_tiles(out, frame, BuildParams(texture=True), None, [])
    assert "model.glb" in str(e.value)
    assert not (out / "tiles" / "textured" / "tileset.json").exists()

    # a layer folder holding another tileset is not ours to update: it is rebuilt
    model = tmp_path / "model"
    shutil.copytree(small_model, model)
    foreign = model / "tiles" / "terrain"
    shutil.rmtree(foreign)
    foreign.mkdir()
    (foreign / "tileset.json").write_text('{"asset": {"version": "1.0"}, "root": {}}')
    from twin.pipeline import build
    from twin.tiles.validate import validate_tileset

    build(small_survey, model)
    assert validate_tileset(model / "tiles" / "tileset.json") == []
    assert (foreign / "tiles.index.json").exists()
