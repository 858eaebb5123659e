"""`twin texture` end to end on a tiny synthetic survey, and bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from twin.cli import main
from twin.errors import InputError
from twin.synth.model import Surface
from twin.synth.truth import read_truth_ply
from twin.texture import TextureParams, texture_files, texture_mesh
from twin.texture.views import read_views, to_frame


def _paths(survey):
    return survey / "truth" / "mesh.ply", survey / "images", survey / "cameras.json"


@pytest.fixture(scope="module")
def cli_run(tiny_survey, tmp_path_factory):
    mesh, images, cameras = _paths(tiny_survey)
    out = tmp_path_factory.mktemp("tex-cli") / "textured"
    args = ["texture", str(mesh), str(images), str(cameras), str(out), "--json"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    return out, json.loads(r.output)


def test_cli_writes_textured_glb_obj_and_georef(tiny_survey, cli_run):
    from PIL import Image

    from twin.tiles.gltf import read_glb

    mesh, images, cameras = _paths(tiny_survey)
    out, georef = cli_run
    survey = json.loads((tiny_survey / "survey.json").read_text())
    assert georef["frame"]["origin"] == survey["frame"]["origin"]
    assert "CGCS2000" in georef["crs"]["label"]
    rep = georef["report"]
    v, f, _, _ = read_truth_ply(mesh)
    assert rep["faces"] == len(f)
    assert all(e["status"] in ("used", "not chosen for any face") for e in rep["views"])
    # GLB: every face once, UVs in [0, 1], embedded power-of-two JPEG pages
    prims = read_glb(out / "model.glb")
    assert sum(len(p["indices"]) for p in prims) == len(f)
    for p in prims:
        assert p["texture_mime"] == "image/jpeg"
        assert p["texcoords"].min() >= 0 and p["texcoords"].max() <= 1
    for w, h in rep["atlas"]["pages"]:
        assert w & (w - 1) == 0 and h & (h - 1) == 0 and max(w, h) <= 8192
    # OBJ + MTL: same faces, texture files present and of the reported size
    obj = (out / "model.obj").read_text()
    assert sum(1 for line in obj.splitlines() if line.startswith("f ")) == len(f)
    mtl = (out / "model.mtl").read_text()
    for p, (w, h) in enumerate(rep["atlas"]["pages"]):
        assert f"map_Kd texture_{p}.jpg" in mtl
        with Image.open(out / f"texture_{p}.jpg") as im:
            assert im.size == (w, h)
    # OBJ vertices are the mesh's ENU coordinates
    ov = np.array(
        [[float(x) for x in ln.split()[1:]] for ln in obj.splitlines() if ln.startswith("v ")]
    )
    assert np.abs(ov.min(axis=0) - v.min(axis=0)).max() < 1e-3
    # a second run refuses to overwrite without --overwrite
    r2 = CliRunner().invoke(main, ["texture", str(mesh), str(images), str(cameras), str(out)])
    assert r2.exit_code == 2 and "--overwrite" in r2.output


def test_glb_validates(cli_run, tmp_path):
    import io

    from PIL import Image

    from twin.tiles.gltf import GltfMesh, read_glb, write_glb
    from twin.tiles.validate import node_validator_path, validate_glb

    if not node_validator_path().exists() or shutil.which("node") is None:
        pytest.skip("gltf-validator not installed")
    out, _ = cli_run
    rep = validate_glb(out / "model.glb")
    assert rep["issues"]["numErrors"] == 0, rep["issues"]["messages"][:5]
    assert rep["info"]["hasTextures"]
    # a WebP page declares EXT_texture_webp and reads back byte for byte
    buf = io.BytesIO()
    Image.new("RGB", (16, 8), (200, 30, 10)).save(buf, "WEBP")
    m = GltfMesh(
        np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]),
        np.arange(3),
        texcoords=np.array([[0.0, 0], [1, 0], [0, 1]]),
        texture=buf.getvalue(),
        texture_mime="image/webp",
    )
    write_glb(tmp_path / "w.glb", [m])
    rep = validate_glb(tmp_path / "w.glb")
    assert rep["issues"]["numErrors"] == 0, rep["issues"]["messages"][:5]
    assert read_glb(tmp_path / "w.glb")[0]["texture"] == buf.getvalue()


def test_missing_images_and_a_blind_camera_are_reported_and_the_rest_textures(
    tiny_survey, tmp_path
):
    mesh, images, cameras = _paths(tiny_survey)
    d = json.loads(cameras.read_text())
    sky = dict(d["images"][0])
    sky["name"], sky["file"] = "looking_up", "looking_up.jpg"
    # camera z axis (the view direction) straight up: sees only sky
    R = np.array([[-1.0, 0, 0], [0, -1.0, 0], [0, 0, 1.0]])
    c = np.array(sky["centre_enu"])
    sky["R"], sky["t"] = R.tolist(), (-R @ c).tolist()
    d["images"].append(sky)
    cam2 = tmp_path / "cameras.json"
    cam2.write_text(json.dumps(d))
    part = tmp_path / "images"
    shutil.copytree(images, part)
    shutil.copy(part / d["images"][0]["file"], part / "looking_up.jpg")
    gone = sorted(part.glob("S*.jpg"))[:2]
    for p in gone:
        p.unlink()
    g = texture_files(mesh, part, cam2, tmp_path / "out")
    status = {e["name"]: e["status"] for e in g["report"]["views"]}
    for p in gone:
        assert status[p.stem] == "skipped: image file missing"
    assert status["looking_up"] == "skipped: sees no face of the mesh"
    assert sum(s == "used" for s in status.values()) >= 2
    assert (tmp_path / "out" / "model.glb").exists()


def test_no_usable_photo_is_a_clear_error(tiny_survey, tmp_path):
    mesh, _, cameras = _paths(tiny_survey)
    empty = tmp_path / "none"
    empty.mkdir()
    r = CliRunner().invoke(
        main, ["texture", str(mesh), str(empty), str(cameras), str(tmp_path / "o")]
    )
    assert r.exit_code == 2
    assert "no camera sees the mesh" in r.output
    assert not (tmp_path / "o").exists()


def test_bad_mesh_and_cameras_files_are_named(tiny_survey, tmp_path):
    _, images, cameras = _paths(tiny_survey)
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 2\nend_header\n0 0\n")
    with pytest.raises(InputError, match="bad.ply"):
        texture_files(bad, images, cameras, tmp_path / "o")
    with pytest.raises(InputError, match="nothing.ply"):
        texture_files(tmp_path / "nothing.ply", images, cameras, tmp_path / "o")
    junk = tmp_path / "cams.json"
    junk.write_text("{not json")
    with pytest.raises(InputError, match="cams.json"):
        texture_files(tiny_survey / "truth" / "mesh.ply", images, junk, tmp_path / "o")


def test_nonmanifold_mesh_still_textures(tiny_survey, tmp_path):
    from twin.fileio import write_ply

    mesh, images, cameras = _paths(tiny_survey)
    v, f, _, _ = read_truth_ply(mesh)
    # a fin: a third face on an existing ground edge, standing up 2 m
    a, b = f[0, 0], f[0, 1]
    top = (v[a] + v[b]) / 2 + [0, 0, 2.0]
    v2 = np.vstack([v, top])
    f2 = np.vstack([f, [[a, b, len(v)]]])
    p = tmp_path / "fin.ply"
    write_ply(p, v2, f2)
    (tmp_path / "labels.json").write_text((tiny_survey / "truth" / "labels.json").read_text())
    g = texture_files(p, images, cameras, tmp_path / "out")
    rep = g["report"]
    assert rep["nonmanifold_edges"] == 1
    assert rep["faces"] == len(f2)
    assert rep["faces"] - rep["unseen_faces"] > 0.5 * len(f2)


def test_unseen_faces_are_filled_not_smeared(tiny_survey):
    mesh, images, cameras = _paths(tiny_survey)
    v, f, surf, bld = read_truth_ply(mesh)
    views, _ = read_views(cameras, images)
    tm = texture_mesh(v, f, views, TextureParams(levelling="none"))
    tri = v[f]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    # buried building floors face down: no camera can see them
    floors = (surf == Surface.WALL) & (n[:, 2] < -0.9 * np.linalg.norm(n, axis=1))
    assert floors.any()
    assert (tm.labels[floors] == -1).all() and tm.unseen[floors].all()
    # and they are drawn flat (all corners of a face on one texel block centre)
    fuv = tm.uv[tm.faces[floors]]
    assert np.ptp(fuv, axis=1).max() == 0
    assert tm.report["unseen_faces"] == int(tm.unseen.sum())


def test_views_move_between_frames_exactly(tiny_survey):
    from twin.crs import LocalFrame

    _, images, cameras = _paths(tiny_survey)
    views, frame = read_views(cameras, images)
    other = LocalFrame(frame.lon + 0.001, frame.lat - 0.0007, frame.h + 12.0)
    moved = to_frame(views, frame, other)
    rng = np.random.default_rng(0)
    pts = rng.uniform(-40, 40, (50, 3))
    pts_other = other.ecef_to_enu(frame.enu_to_ecef(pts))
    for a, b in zip(views[:3], moved[:3], strict=True):
        ua, za = a.project(pts)
        ub, zb = b.project(pts_other)
        np.testing.assert_allclose(ua, ub, atol=1e-6)
        np.testing.assert_allclose(za, zb, atol=1e-6)


def test_read_mesh_from_glb_keeps_its_frame(tmp_path):
    from twin.crs import LocalFrame
    from twin.texture.io import read_mesh
    from twin.tiles.gltf import GltfMesh, write_glb

    fr = LocalFrame(121.5, 29.8, 10.0)
    v = np.array([[0.0, 0, 0], [10, 0, 1], [0, 20, 2], [10, 20, 3]])
    f = np.array([[0, 1, 2], [1, 3, 2]])
    write_glb(tmp_path / "m.glb", [GltfMesh(v, f)], extras={"frame": fr.to_dict()})
    v2, f2, fr2 = read_mesh(tmp_path / "m.glb")
    np.testing.assert_allclose(v2, v, atol=1e-5)
    np.testing.assert_array_equal(f2, f)
    assert fr2 == fr
