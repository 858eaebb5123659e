"""`twin demo` end to end: what a user runs first."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_demo_runs_the_whole_chain(tmp_path, shared_data):
    from twin.demo import run_demo
    from twin.sync.store import SQLiteStore
    from twin.tiles.validate import validate_tileset

    out = tmp_path / "demo"
    summary = run_demo(out, replay_seconds=60.0)
    c = summary["counts"]
    assert c["buildings"] == c["buildings_modelled"] > 0
    assert c["images"] > 0 and c["lidar_points"] > 0
    assert summary["replay"]["applied"] > 0 and summary["replay"]["rejected"] == 0
    assert validate_tileset(summary["tileset"]) == []
    with SQLiteStore(summary["store"]) as store:
        assert store.count() == summary["entities_in_store"] > 0
    manifest = json.loads((out / "model" / "manifest.json").read_text())
    assert {o["path"] for o in manifest["outputs"]} >= {"model.glb", "tiles/tileset.json"}
    # folder sizes count every file on disk (the terrain pyramid is many tiles)
    terrain = [k for k in summary["sizes_mb"] if k.startswith("terrain/")]
    files = [p for p in (out / "model" / "terrain").rglob("*") if p.is_file()]
    assert terrain == [f"terrain/ ({len(files)} files)"] and len(files) > 10
    # Running it again replaces its own output; a foreign folder is refused.
    run_demo(out, replay_seconds=5.0)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    from twin.errors import OutputError

    with pytest.raises(OutputError):
        run_demo(tmp_path / "mine")
