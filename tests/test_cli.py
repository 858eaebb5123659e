"""The `twin` command: help, version, and one-line errors for bad input."""

from click.testing import CliRunner

from twin import __version__
from twin.cli import main


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_help_lists_the_verbs():
    r = run("--help")
    assert r.exit_code == 0
    for verb in ("demo", "synth", "build"):
        assert verb in r.output


def test_version():
    r = run("--version")
    assert r.exit_code == 0 and __version__ in r.output


def test_every_verb_has_help_with_an_example():
    for verb in ("demo", "synth", "build"):
        r = run(verb, "--help")
        assert r.exit_code == 0 and "Example" in r.output, verb


def test_unknown_crs_is_a_one_line_error(tmp_path):
    r = CliRunner().invoke(main, ["synth", str(tmp_path / "s"), "--crs", "EPSG:999999"])
    assert r.exit_code == 2
    assert "EPSG:999999" in r.output and "Traceback" not in r.output


def test_bad_parameter_is_a_one_line_error(tmp_path):
    r = CliRunner().invoke(main, ["synth", str(tmp_path / "s"), "--extent", "5"])
    assert r.exit_code == 2 and "extent" in r.output


def test_build_without_dem_names_the_file(tmp_path):
    r = CliRunner().invoke(main, ["build", str(tmp_path), str(tmp_path / "out")])
    assert r.exit_code == 2 and "dem.tif" in r.output


def test_synth_refuses_to_overwrite_a_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    r = CliRunner().invoke(main, ["synth", str(tmp_path), "--preset", "small"])
    assert r.exit_code == 2 and "not a twin survey" in r.output
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_sync_replay_then_state_and_time_travel(tmp_path):
    import json

    events = tmp_path / "e.ndjson"
    base = {"entity_id": "urn:ngsi-ld:Vehicle:V1", "entity_type": "vehicle", "source": "test"}
    lines = [
        {
            **base,
            "event_id": "a",
            "observed_at": "2026-05-01T08:00:00.000Z",
            "position": {"lon": 121.55, "lat": 29.87, "alt": 10.0},
            "status": "driving",
        },
        {
            **base,
            "event_id": "b",
            "observed_at": "2026-05-01T08:00:10.000Z",
            "position": {"lon": 121.551, "lat": 29.87, "alt": 10.0},
            "status": "parked",
        },
        {
            **base,
            "event_id": "a",
            "observed_at": "2026-05-01T08:00:00.000Z",
            "position": {"lon": 121.55, "lat": 29.87, "alt": 10.0},
            "status": "driving",
        },
    ]
    events.write_text("\n".join(json.dumps(e) for e in lines) + "\n{not json\n")
    db = tmp_path / "live.sqlite"
    r = CliRunner().invoke(main, ["sync", "replay", str(events), "--db", str(db), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert (rep["applied"], rep["duplicate"], rep["malformed"]) == (2, 1, 1)
    r = run("sync", "state", "urn:ngsi-ld:Vehicle:V1", "--db", str(db))
    assert json.loads(r.output)["status"] == "parked"
    r = run(
        "sync", "state", "urn:ngsi-ld:Vehicle:V1", "--db", str(db), "--at", "2026-05-01T08:00:05Z"
    )
    assert json.loads(r.output)["status"] == "driving"


def test_build_with_a_truncated_dem_names_the_file(tmp_path):
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    dem = tmp_path / "dem.tif"
    with rasterio.open(
        dem,
        "w",
        driver="GTiff",
        width=64,
        height=64,
        count=1,
        dtype="float32",
        crs="EPSG:4550",
        transform=from_origin(360000, 3306000, 1, 1),
    ) as ds:
        ds.write(np.random.default_rng(0).random((64, 64), dtype=np.float32), 1)
    data = dem.read_bytes()
    dem.write_bytes(data[: len(data) // 2])
    r = CliRunner().invoke(main, ["build", str(tmp_path), str(tmp_path / "out")])
    assert r.exit_code == 2 and "dem.tif" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_points_info_and_dtm_on_a_real_file(tmp_path, shared_data):
    import json

    import rasterio

    src = shared_data / "points" / "pdal_autzen-utm.las"
    r = run("points", "info", str(src), "--json")
    d = json.loads(r.output)
    assert d["count"] == 1065 and d["crs"]["epsg"] == 26910
    out = tmp_path / "dtm.tif"
    r = CliRunner().invoke(main, ["points", "dtm", str(src), str(out), "--resolution", "5"])
    assert r.exit_code == 0, r.output
    with rasterio.open(out) as ds:
        assert ds.crs.to_epsg() == 26910 and ds.res == (5.0, 5.0)


def test_points_dtm_without_a_crs_says_why(tmp_path, shared_data):
    src = shared_data / "points" / "pdal_sample_c.las"
    r = CliRunner().invoke(main, ["points", "dtm", str(src), str(tmp_path / "d.tif")])
    assert r.exit_code == 2 and "sample_c" in r.output and "CRS" in r.output
    assert not (tmp_path / "d.tif").exists()


def test_terrain_info_and_tin_keep_the_error_bound(tmp_path, shared_data):
    import json

    import numpy as np
    import trimesh

    dem = shared_data / "dem" / "stars_olinda_dem_utm25s.tif"
    info = json.loads(run("terrain", "info", str(dem), "--json").output)
    assert info["size"] == {"rows": 111, "cols": 111} and "UTM" in info["crs"]
    out = tmp_path / "t.ply"
    r = run("terrain", "tin", str(dem), str(out), "--max-error", "5", "--json")
    s = json.loads(r.output)
    assert s["max_error_reached"] <= 5.0 and s["triangles"] < 2 * 110 * 110 / 4
    mesh = trimesh.load(out, process=False)
    assert len(mesh.faces) == s["triangles"]
    # float64 map coordinates: vertices sit exactly on DEM pixel centres
    res = info["resolution"][0]
    frac = (mesh.vertices[:, 0] - info["bounds"]["xmin"]) / res - 0.5
    assert np.abs(frac - np.round(frac)).max() < 1e-6
    # map coordinates of the DEM's CRS, inside its bounds
    b = info["bounds"]
    assert mesh.vertices[:, 0].min() >= b["xmin"] and mesh.vertices[:, 0].max() <= b["xmax"]
    r = CliRunner().invoke(main, ["terrain", "tin", str(dem), str(out), "--max-error", "0"])
    assert r.exit_code == 2 and "max_error" in r.output


def test_points_classify_finds_the_synthetic_buildings(tmp_path, small_survey):
    import json

    import laspy
    import numpy as np

    out = tmp_path / "classified.laz"
    r = run(
        "points",
        "classify",
        str(small_survey / "lidar.laz"),
        str(out),
        "--footprints",
        str(small_survey / "footprints.gpkg"),
        "--json",
    )
    counts = json.loads(r.output)
    assert counts["6"] > 0 and counts["2"] > 0
    truth = np.asarray(laspy.read(small_survey / "lidar.laz").classification)
    got = np.asarray(laspy.read(out).classification)
    tp = np.sum((got == 6) & (truth == 6))
    assert tp / np.sum(got == 6) > 0.97 and tp / np.sum(truth == 6) > 0.97


def test_terrain_tiles_writes_a_quantized_mesh_pyramid(tmp_path, shared_data):
    import json

    from twin.terrain.quantized_mesh import decode_tile

    dem = shared_data / "dem" / "stars_olinda_dem_utm25s.tif"
    out = tmp_path / "terrain"
    s = json.loads(run("terrain", "tiles", str(dem), str(out), "--max-error", "5", "--json").output)
    layer = json.loads((out / "layer.json").read_text())
    assert layer["format"] == "quantized-mesh-1.0" and layer["scheme"] == "tms"
    tiles = sorted(out.rglob("*.terrain"))
    assert len(tiles) == s["tiles"] > 2
    t = decode_tile(tiles[-1].read_bytes())
    assert len(t["faces"]) > 0 and t["max_height"] >= t["min_height"]
