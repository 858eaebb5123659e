"""`twin view`: what the page gets, and a real browser drawing the city."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from twin.errors import InputError
from twin.tiles.viewer import chromium_binary, create_viewer_app, snapshot_viewer


def test_viewer_serves_model_terrain_and_cesium(small_model):
    client = TestClient(create_viewer_app(small_model))
    cfg = client.get("/config.json").json()
    assert cfg["buildings"] == "model/tiles/buildings/tileset.json"
    assert cfg["terrain"] == "model/terrain/"
    assert len(cfg["enu_to_ecef"]) == 16
    assert client.get("/" + cfg["buildings"]).json()["asset"]["version"] == "1.1"
    assert "Cesium" in client.get("/").text
    assert client.get("/cesium/Cesium.js").status_code == 200
    # quantized-mesh tiles go out as stored (gzip) with the header that says so
    tile = next((small_model / "terrain").glob("0/*/*.terrain"))
    rel = tile.relative_to(small_model).as_posix()
    r = client.get(f"/model/{rel}", headers={"Accept-Encoding": "identity"})
    assert r.headers["content-encoding"] == "gzip"
    assert r.headers["content-type"] == "application/vnd.quantized-mesh"
    assert gzip.decompress(tile.read_bytes())  # stored compressed
    # nothing outside the model folder
    assert client.get("/model/../../etc/passwd").status_code == 404
    assert client.get("/model/%2e%2e/%2e%2e/etc/passwd").status_code == 404


def test_viewer_live_store_gets_a_read_only_token(small_model, tmp_path):
    from twin.sync.store import SQLiteStore

    store = SQLiteStore(tmp_path / "live.sqlite")
    client = TestClient(create_viewer_app(small_model, store=store))
    cfg = client.get("/config.json").json()
    token = cfg["live"].split("token=")[1]
    h = {"Authorization": f"Bearer {token}"}
    assert client.get("/sync/health", headers=h).status_code == 200
    ev = {
        "event_id": "e1",
        "entity_id": "p1",
        "type": "person",
        "observed_at": "2026-01-01T00:00:00Z",
    }
    r = client.post("/sync/events", json=[ev], headers=h)  # a read-only token cannot write
    assert r.status_code == 403 or r.json()["counts"].get("applied", 0) == 0, r.text
    assert store.state("p1") is None
    assert client.get("/history.czml").json()[0]["id"] == "document"
    store.close()


def test_viewer_refuses_a_folder_without_tiles(tmp_path):
    with pytest.raises(InputError, match="tileset"):
        create_viewer_app(tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(chromium_binary() is None, reason="Chromium is not installed")
def test_headless_chromium_draws_the_city_and_live_entities(small_survey, small_model, tmp_path):
    from twin.sync.placement import placer_from_folder
    from twin.sync.replay import replay
    from twin.sync.store import SQLiteStore

    db = tmp_path / "live.sqlite"
    store = SQLiteStore(db, placer=placer_from_folder(small_model))
    replay(small_survey / "events.ndjson", store, until=60)
    people = len(store.query(types=["person"]))
    store.close()
    assert people > 5
    png = snapshot_viewer(small_model, tmp_path / "view.png", db=db, timeout=240)
    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert img.shape[0] > 300 and img.shape[1] > 600
    # not blank: the picture has structure
    assert img.std() > 10
    # the buildings' light walls and the roofs' colours are on screen, over terrain
    walls = (img.min(axis=2) > 200).mean()
    roofs = ((img[..., 0] > 150) & (img[..., 0] - img[..., 2] > 40)).mean()
    assert walls > 0.01, walls
    assert roofs > 0.0005, roofs
    # people are drawn as orange dots (255, 165, 0) from the live store
    orange = (img[..., 0] > 220) & (np.abs(img[..., 1] - 165) < 30) & (img[..., 2] < 60)
    assert orange.sum() > 20 * 5, orange.sum()


def test_viewer_offers_the_textured_tiles_when_built(tmp_path):
    for layer in ("buildings", "textured"):
        (tmp_path / "tiles" / layer).mkdir(parents=True)
        (tmp_path / "tiles" / layer / "tileset.json").write_text('{"asset": {"version": "1.1"}}')
    cfg = TestClient(create_viewer_app(tmp_path)).get("/config.json").json()
    assert cfg["textured"] == "model/tiles/textured/tileset.json"
    assert cfg["buildings"] == "model/tiles/buildings/tileset.json"


@pytest.mark.slow
@pytest.mark.skipif(chromium_binary() is None, reason="Chromium is not installed")
def test_headless_chromium_draws_the_textured_tiles(small_survey, small_model, tmp_path):
    import shutil

    from twin.pipeline import BuildParams, build

    out = tmp_path / "model"
    shutil.copytree(small_model, out)
    build(small_survey, out, params=BuildParams(texture=True, tile_max_faces=600))
    png = snapshot_viewer(out, tmp_path / "textured.png", timeout=240)
    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert img.std() > 10
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    # the photos' colours: grass and trees, and blue-green water (the untextured
    # model has no blue at all; its snapshot gives 0 % here, this one 6 %)
    green = (g > r + 15) & (g > b + 10)
    water = (b > r + 15) & (g > r + 10)
    assert green.mean() > 0.03, green.mean()
    assert water.mean() > 0.005, water.mean()
    # the city covers much of the picture (the globe is hidden beneath it)
    assert (img.max(axis=2) > 40).mean() > 0.3
