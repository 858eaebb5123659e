"""``twin recon`` and ``twin.recon`` on inputs beyond the reference survey: GCP file
forms, CRS choices, awkward photo folders (no SfM run unless marked slow)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from twin.crs import GEODETIC_3D, LocalFrame, transform
from twin.errors import CRSError, InputError
from twin.recon.gcp import check_gcps_against_block, read_gcps

FRAME = LocalFrame(121.55, 29.87, 20.0)
# three ground points of a 240 m block (ENU metres) and the photos that see them
ENU = np.array([[10.0, -20.0, 3.0], [-55.5, 40.25, 12.0], [70.0, 65.0, -4.5]])
OBS = {
    "g1": [("S01_P003_nadir.jpg", 101.5, 220.25), ("S01_P004_nadir.jpg", 300.0, 210.0)],
    "g2": [("S02_P002_left.jpg", 12.0, 400.5)],
    "g3": [],
}


def _llh():
    return FRAME.to_crs(ENU, GEODETIC_3D)


def _write_all(tmp_path):
    """The same three GCPs in every accepted form; returns {form: (path, crs arg)}."""
    llh = _llh()
    gk = transform(llh, GEODETIC_3D, "EPSG:4550")
    utm = transform(llh, GEODETIC_3D, "EPSG:32651")
    names = list(OBS)
    files = {}
    pts = []
    for i, n in enumerate(names):
        pts.append(
            {
                "id": n,
                "position": {"longitude": llh[i, 0], "latitude": llh[i, 1], "altitude": llh[i, 2]},
                "observations": [{"shot_id": im, "pixel": [u, v]} for im, u, v in OBS[n]],
            }
        )
    (tmp_path / "gcp.json").write_text(json.dumps({"points": pts}))
    files["json"] = (tmp_path / "gcp.json", None)
    for label, head, xyz in (
        ("odm_utm", "WGS84 UTM 51N", utm),
        ("odm_epsg", "EPSG:32651", utm),
        ("odm_lonlat", "EPSG:4326", llh),
    ):
        lines = [head]
        for i, n in enumerate(names):
            for im, u, v in OBS[n]:
                lines.append(f"{xyz[i, 0]:.9f}\t{xyz[i, 1]:.9f} {xyz[i, 2]:.4f} {u} {v} {im} {n}")
        p = tmp_path / f"{label}.txt"
        p.write_text("\n".join(lines) + "\n")
        files[label] = (p, None)
    rows = ["Name,X,Y,Z,image,px,py"]
    for i, n in enumerate(names):
        for im, u, v in OBS[n] or [("", "", "")]:
            rows.append(f"{n},{gk[i, 0]:.4f},{gk[i, 1]:.4f},{gk[i, 2]:.4f},{im},{u},{v}")
    (tmp_path / "gk.csv").write_text("\n".join(rows))
    files["csv_survey_crs"] = (tmp_path / "gk.csv", "EPSG:4550")
    rows = ["id;easting;northing;height;crs;image;u;v"]
    for i, n in enumerate(names):
        for im, u, v in OBS[n] or [("", "", "")]:
            rows.append(f"{n};{utm[i, 0]:.4f};{utm[i, 1]:.4f};{utm[i, 2]:.4f};32651;{im};{u};{v}")
    (tmp_path / "utm.csv").write_text("\n".join(rows))
    files["csv_crs_column"] = (tmp_path / "utm.csv", None)
    rows = ["name,lon,lat,alt"] + [
        f"{n},{llh[i, 0]:.10f},{llh[i, 1]:.10f},{llh[i, 2]:.4f}" for i, n in enumerate(names)
    ]
    (tmp_path / "lonlat.csv").write_text("\n".join(rows))
    files["csv_lonlat_positions_only"] = (tmp_path / "lonlat.csv", None)
    # degrees under x, y with the survey CRS given: read as lon/lat
    (tmp_path / "xy_degrees.csv").write_text("\n".join(["name,x,y,z", *rows[1:]]))
    files["csv_xy_degrees_positions_only"] = (tmp_path / "xy_degrees.csv", "EPSG:4550")
    return files


def test_every_gcp_form_gives_the_same_points(tmp_path):
    for form, (path, crs) in _write_all(tmp_path).items():
        gcps = read_gcps(path, crs=crs)
        by = {g["id"]: g for g in gcps}
        if form.startswith("odm"):
            assert set(by) == {"g1", "g2"}, form  # a gcp_list only holds observed points
        else:
            assert set(by) == set(OBS), form
        for i, n in enumerate(OBS):
            if n not in by:
                continue
            back = FRAME.from_crs(np.array([by[n]["llh"]]), GEODETIC_3D)[0]
            assert np.abs(back - ENU[i]).max() < 2e-3, (form, n, back, ENU[i])
            if not form.endswith("positions_only"):
                got = [(o["image"], *o["pixel"]) for o in by[n]["observations"]]
                assert got == [(im, float(u), float(v)) for im, u, v in OBS[n]], form
            else:
                assert by[n]["observations"] == []


def test_unnamed_gcp_list_lines_group_by_coordinates(tmp_path):
    p = tmp_path / "gcp_list.txt"
    p.write_text(
        "EPSG:32651\n"
        "352000.0 3305000.0 12.5 10 20 a.jpg\n"
        "352000.0 3305000.0 12.5 30 40 b.jpg\n"
        "352100.0 3305000.0 13.0 50 60 a.jpg\n"
    )
    gcps = read_gcps(p)
    assert [len(g["observations"]) for g in gcps] == [2, 1]


@pytest.mark.parametrize(
    ("text", "crs", "error", "match"),
    [
        ("name,x,y,z\ng1,640000,3306000,10\n", None, CRSError, "without a CRS"),
        ("name,x,y,z,crs\ng1,640000,3306000,10,EPSG:99999\n", None, CRSError, "line 2"),
        ("name,lon,lat,z\ng1,3306000,640000,10\n", None, CRSError, "not longitude/latitude"),
        ("name,x,y,z\ng1,640000,north,10\n", "EPSG:4550", InputError, "line 2"),
        ("id,x,y,z,image,px\ng,1,2,3,a.jpg,4\n", "EPSG:4550", InputError, "px and py"),
        ("name,x,y,z\ng,1,2,3\ng,1,5,3\n", "EPSG:4550", InputError, "two different positions"),
        ("352000 3305000 12.5 10 20 a.jpg\n", None, InputError, "CRS line"),
        ("NAD27 Mars grid\n1 2 3 4 5 a.jpg\n", None, CRSError, "CRS line"),
        ("EPSG:32651\n352000 3305000 12.5 10 a.jpg\n", None, InputError, "line 2"),
        ("EPSG:32651\n", None, InputError, "no ground control point lines"),
        ("", None, InputError, "empty"),
        ('{"points": [{"position": {"lat": 1}}]}', None, InputError, "not a ground control"),
    ],
)
def test_bad_gcp_files_say_what_is_wrong(tmp_path, text, crs, error, match):
    p = tmp_path / "gcp.txt"
    p.write_text(text)
    with pytest.raises(error, match=match) as exc:
        read_gcps(p, crs=crs)
    assert str(p) in str(exc.value)


def test_gcps_are_checked_against_the_block(tmp_path):
    files = _write_all(tmp_path)
    names = ["S01_P003_nadir.jpg", "S01_P004_nadir.jpg", "S02_P002_left.jpg", "x.jpg"]
    block = np.array([[-100.0, -100.0, 150.0], [100.0, 100.0, 150.0]])
    gcps = read_gcps(files["csv_survey_crs"][0], crs="EPSG:4550")
    rep = check_gcps_against_block(gcps, names[1:], FRAME, block)
    # the observation of a photo not in the block is dropped and reported
    assert rep["unknown_images"] == ["S01_P003_nadir.jpg"] and rep["observations_used"] == 2
    # names with folders match by file name
    gcps = read_gcps(files["json"][0])
    nested = ["nadir/S01_P003_nadir.jpg", "nadir/S01_P004_nadir.jpg", "left/S02_P002_left.jpg"]
    rep = check_gcps_against_block(gcps, nested, FRAME, block)
    assert rep["unknown_images"] == [] and rep["observations_used"] == 3
    assert gcps[0]["observations"][0]["image"] == "nadir/S01_P003_nadir.jpg"
    # a file for other photos altogether
    with pytest.raises(InputError, match="none of the GCP observations"):
        check_gcps_against_block(read_gcps(files["json"][0]), ["IMG_1.JPG"], FRAME, block)
    # x and y swapped: thousands of km away
    rows = (tmp_path / "gk.csv").read_text().splitlines()
    swapped = [rows[0]] + [
        ",".join([c[0], c[2], c[1], *c[3:]]) for c in (r.split(",") for r in rows[1:])
    ]
    (tmp_path / "swapped.csv").write_text("\n".join(swapped))
    with pytest.raises((InputError, CRSError), match="far outside|cannot be transformed"):
        g = read_gcps(tmp_path / "swapped.csv", crs="EPSG:4550")
        check_gcps_against_block(g, names, FRAME, block)
    # the survey CRS given wrongly (UTM numbers read as Gauss-Krueger): km off
    utm_rows = (tmp_path / "utm.csv").read_text().replace(";32651;", ";;")
    (tmp_path / "nocrs.csv").write_text(utm_rows)
    with pytest.raises(InputError, match="far outside"):
        g = read_gcps(tmp_path / "nocrs.csv", crs="EPSG:4550")
        check_gcps_against_block(g, names, FRAME, block)


def _photos(survey, folder, names):
    folder.mkdir(parents=True)
    for n in names:
        shutil.copy(survey / "images" / n, folder / n)
    return folder


def test_cli_refuses_unusable_folders_in_one_line(small_survey, tmp_path):
    from twin.cli import main

    runner = CliRunner()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    r = runner.invoke(main, ["recon", str(empty), str(tmp_path / "o1")])
    assert r.exit_code == 2 and "no images" in r.output and "Traceback" not in r.output
    one = _photos(small_survey, tmp_path / "one", ["S01_P003_nadir.jpg"])
    r = runner.invoke(main, ["recon", str(one), str(tmp_path / "o2"), "--no-dense"])
    assert r.exit_code == 2 and "two or more" in r.output, r.output
    assert "Traceback" not in r.output
    r = runner.invoke(main, ["recon", str(one), str(empty / "notes.txt" / "out")])
    assert r.exit_code == 2 and "cannot write the output folder" in r.output
    r = runner.invoke(main, ["recon", str(one), str(tmp_path / "o3"), "--crs", "EPSG:123456"])
    assert r.exit_code == 2 and "EPSG:123456" in r.output
    r = runner.invoke(
        main, ["recon", str(one), str(tmp_path / "o4"), "--gcp", str(empty / "notes.txt")]
    )
    assert r.exit_code == 2 and "notes.txt" in r.output


# ----------------------------------------------------------------------- one strip
STRIP = dict(extent=120.0, seed=3, crs="EPSG:4547", image_width=480, image_height=360)


@pytest.fixture(scope="module")
def strip_survey(tmp_path_factory):
    """A block of one flight strip (10 photos: nadir, forward and backward views only),
    in CGCS2000 Gauss-Krueger CM 114E, its photos in subfolders with upper-case and
    non-ASCII names."""
    from twin.synth.params import PRESETS
    from twin.synth.survey import generate

    root = tmp_path_factory.mktemp("strip")
    generate(root / "survey", PRESETS["small"].with_(lidar=False, events=False, **STRIP))
    photos = root / "photos"
    names = {}
    for p in sorted((root / "survey" / "images").glob("*.jpg")):
        sub = "nadir" if "nadir" in p.stem else "schräg"
        rel = f"{sub}/{p.stem}.JPG" if sub == "nadir" else f"{sub}/{p.stem}_ü.jpg"
        (photos / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, photos / rel)
        names[rel] = p.stem
    return root / "survey", photos, names


def _strip_gcps(survey, names, path, count=4):
    """Ground control points from the truth mesh: ground vertices seen unoccluded by
    three or more photos, spread across the block, with their exact pixels; a CSV in
    the survey CRS (no crs column) with one row per observation."""
    from twin.recon import evaluate
    from twin.synth.camera import read_cameras
    from twin.synth.truth import read_truth_ply

    truth = read_cameras(survey)
    V, F, _, _ = read_truth_ply(survey / "truth" / "mesh.ply")
    scene = evaluate._scene(V, F)
    cand = V[::7]
    cams = [
        dict(K=s.sensor.K, R=s.R, t=s.t, width=s.sensor.width, height=s.sensor.height)
        for s in truth.shots
    ]
    seen = np.array([evaluate.visible_count(scene, cand, [c]) > 0 for c in cams])
    cand, seen = cand[seen.sum(0) >= 3], seen[:, seen.sum(0) >= 3]
    pick = [int(np.argmin(cand[:, 0] + cand[:, 1]))]
    for _ in range(count - 1):  # farthest-point spread
        d = np.min([np.linalg.norm(cand[:, :2] - cand[k, :2], axis=1) for k in pick], axis=0)
        pick.append(int(np.argmax(d)))
    by_stem = {v: k for k, v in names.items()}
    xyz = truth.frame.to_crs(cand[pick], STRIP["crs"])
    rows = ["name,x,y,z,image,px,py"]
    for g, k in enumerate(pick):
        for j in np.flatnonzero(seen[:, k]):
            s = truth.shots[j]
            x = s.sensor.K @ (s.R @ cand[k] + s.t)
            u, v = x[:2] / x[2]
            rows.append(
                f"G{g},{xyz[g, 0]:.4f},{xyz[g, 1]:.4f},{xyz[g, 2]:.4f},{by_stem[s.name]},{u},{v}"
            )
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _camera_errors(survey, out, names):
    from twin.recon import sfm
    from twin.synth.camera import read_cameras

    truth = read_cameras(survey)
    cams = json.loads((out / "cameras.json").read_text())
    frame = LocalFrame.from_dict(cams["frame"])
    M = truth.frame.rotation @ frame.rotation.T
    shots = {s.name: s for s in truth.shots}
    pos, rot, crs = [], [], []
    for im in cams["images"]:
        s = shots[names[im["name"]]]
        c = truth.frame.ecef_to_enu(frame.enu_to_ecef(np.array(im["centre_enu"])))
        pos.append(np.linalg.norm(c - s.centre))
        rot.append(float(sfm._angle_deg(np.asarray(im["R"]) @ M.T @ s.R.T)))
        crs.append(
            np.linalg.norm(
                np.subtract(im["centre_crs"], truth.frame.to_crs(s.centre[None], STRIP["crs"])[0])
            )
        )
    return np.array(pos), np.array(rot), np.array(crs)


@pytest.mark.slow
def test_one_strip_block_in_subfolders_with_a_gcp_csv(strip_survey, tmp_path):
    """All photos register; the rotation about the strip's own line (which GPS
    positions on a line cannot give) comes from the gimbal angles: every camera within
    0.1 degree. GCPs from a CSV in the survey CRS first check the block, then, on a
    rerun into the same folder (SfM reused), are control: the adjusted block is shifted
    onto them."""
    from twin.recon.run import ReconOptions, reconstruct

    survey, photos, names = strip_survey
    gcp = _strip_gcps(survey, names, tmp_path / "gcp.csv")
    opts = ReconOptions(dense=False)
    opts.sfm.num_threads = 1
    out = tmp_path / "out"
    rep = reconstruct(photos, out, crs=STRIP["crs"], gcp=gcp, gcp_role="check", options=opts)
    assert rep["sfm"]["registered"] == len(names) == 10
    assert sorted(
        im["name"] for im in json.loads((out / "cameras.json").read_text())["images"]
    ) == sorted(names)
    pos, rot, crs = _camera_errors(survey, out, names)
    print("check:", np.sqrt(np.mean(pos**2)), rot.max(), rep["georeference"]["gcp"])
    assert rot.max() < 0.1
    assert np.sqrt(np.mean(pos**2)) < 1.5 and np.abs(crs - pos).max() < 0.05
    g = rep["georeference"]["gcp"]
    assert g["role"].startswith("check") and g["triangulated"] == 4 and g["rmse_m"] < 1.5
    assert g["unknown_images"] == [] and rep["georeference"]["crs"].startswith("EPSG:4547")
    again = reconstruct(photos, out, crs=STRIP["crs"], gcp=gcp, gcp_role="control", options=opts)
    assert "features" not in again["timings_s"] and "mapping" not in again["timings_s"]
    g = again["georeference"]["gcp"]
    assert g["role"].startswith("control") and g["rmse_m"] < 0.5  # ~1 GSD
    pos2, rot2, _ = _camera_errors(survey, out, names)
    print("control:", np.sqrt(np.mean(pos2**2)), rot2.max(), g)
    # the block moved onto the GCPs (off the GPS datum), its shape kept
    assert g["rmse_m"] < rep["georeference"]["gcp"]["rmse_m"]
    assert np.sqrt(np.mean(pos2**2)) < 1.5 and rot2.max() < 0.1
    # a fifth GCP 30 m off (G0's photos, wrong coordinates): left out, the rest hold
    rows = gcp.read_text().splitlines()
    extra = []
    for r in rows[1:]:
        c = r.split(",")
        if c[0] == "G0":
            extra.append(",".join(["Gx", str(float(c[1]) + 30.0), *c[2:]]))
    (tmp_path / "bad.csv").write_text("\n".join(rows + extra) + "\n", encoding="utf-8")
    third = reconstruct(
        photos, out, crs=STRIP["crs"], gcp=tmp_path / "bad.csv", gcp_role="control", options=opts
    )
    g = third["georeference"]["gcp"]
    assert g["outliers"] == ["Gx"] and g["triangulated"] == 5
    assert all(np.linalg.norm(v) < 0.5 for k, v in g["residuals_m"].items() if k != "Gx")
    pos3, rot3, _ = _camera_errors(survey, out, names)
    assert np.sqrt(np.mean(pos3**2)) < 1.5 and rot3.max() < 0.1


def test_folders_case_and_names(small_survey, tmp_path):
    """Photos in subfolders (hidden and mask folders left out), upper-case suffixes,
    non-ASCII names, PNG/TIFF without EXIF (focal length estimated, or given)."""
    from PIL import Image

    from twin.recon.images import scan_images

    src = small_survey / "images"
    root = tmp_path / "photos"
    for sub in ("nadir", "obliques/links", ".thumbs", "masks"):
        (root / sub).mkdir(parents=True)
    shutil.copy(src / "S01_P003_nadir.jpg", root / "nadir" / "S01_P003_nadir.JPG")
    shutil.copy(src / "S01_P004_nadir.jpg", root / "nadir" / "Straße_04.jpeg")
    shutil.copy(src / "S01_P004_left.jpg", root / "obliques" / "links" / "S01_P003_nadir.jpg")
    shutil.copy(src / "S01_P004_nadir.jpg", root / ".thumbs" / "t.jpg")
    Image.open(src / "S01_P005_nadir.jpg").save(root / "masks" / "m.png")
    Image.open(src / "S01_P006_nadir.jpg").save(root / "P006.PNG")
    Image.open(src / "S01_P007_nadir.jpg").save(root / "P007.tif")
    images = scan_images(root)
    names = [im.name for im in images.images]
    assert names == [
        "P006.PNG",
        "P007.tif",
        "nadir/S01_P003_nadir.JPG",
        "nadir/Straße_04.jpeg",
        "obliques/links/S01_P003_nadir.jpg",
    ]
    by = images.by_name()
    assert by["nadir/Straße_04.jpeg"].has_gps and by["nadir/S01_P003_nadir.JPG"].has_gimbal
    png = by["P006.PNG"]
    assert not png.has_gps and png.focal_source == "guess"
    assert "estimated" in png.notes[-1] and "--focal-35mm" in png.notes[-1]
    assert images.summary()["focal_guessed"] == ["P006.PNG", "P007.tif"]
    given = scan_images(root, focal_35mm=24.0).by_name()["P007.tif"]
    assert given.focal_source.startswith("given")
    assert given.focal_px == pytest.approx(24.0 / 36.0 * 320)
    # the same file name in two folders: depth maps do not collide
    from twin.recon.mvs import map_file_name

    assert map_file_name("nadir/S01_P003_nadir.JPG") != map_file_name(
        "obliques/links/S01_P003_nadir.jpg"
    )


def test_cli_refuses_photos_without_any_position(small_survey, tmp_path):
    from PIL import Image

    from twin.cli import main

    folder = tmp_path / "png"
    folder.mkdir()
    for n in ("S01_P003_nadir", "S01_P004_nadir", "S01_P005_nadir"):
        Image.open(small_survey / "images" / f"{n}.jpg").save(folder / f"{n}.png")
    r = CliRunner().invoke(main, ["recon", str(folder), str(tmp_path / "out")])
    assert r.exit_code == 2 and "no photo has a GPS position" in r.output
    assert "--gcp" in r.output and "Traceback" not in r.output


@pytest.mark.slow
def test_one_strip_without_gimbal_tags_is_levelled_on_the_ground(strip_survey, tmp_path):
    """Without XMP gimbal angles the GPS positions of one strip leave the rotation about
    it open (seen: 109 degrees off); levelling the sparse points' plane brings it
    within the ground's own cross slope (measured 0.8-1.2 degree median)."""
    from PIL import Image

    from twin.recon.run import ReconOptions, reconstruct

    survey, photos, names = strip_survey
    plain = tmp_path / "photos"
    for rel in names:
        (plain / rel).parent.mkdir(parents=True, exist_ok=True)
        with Image.open(photos / rel) as im:  # EXIF kept, XMP dropped
            im.save(plain / rel, format="JPEG", quality=95, exif=im.info["exif"])
    opts = ReconOptions(dense=False)
    opts.sfm.num_threads = 1
    out = tmp_path / "out"
    rep = reconstruct(plain, out, crs=STRIP["crs"], options=opts)
    assert rep["sfm"]["registered"] == 10
    assert "level ground" in rep["georeference"]["rotation_source"]
    pos, rot, _ = _camera_errors(survey, out, names)
    print(np.median(rot), rot.max(), np.sqrt(np.mean(pos**2)))
    assert np.median(rot) < 2.0 and rot.max() < 3.0
    assert np.sqrt(np.mean(pos**2)) < 4.0


def test_cli_reads_a_gcp_csv_in_the_auto_utm_zone(small_survey, tmp_path):
    """``--crs UTM`` with a CSV without a crs column: its x, y are in the block's UTM
    zone (here 51N); the file is checked before SfM (its photos are not in the folder)."""
    from twin.cli import main

    folder = _photos(small_survey, tmp_path / "p", ["S01_P003_nadir.jpg", "S01_P004_nadir.jpg"])
    utm = transform(_llh(), GEODETIC_3D, "EPSG:32651")
    rows = ["name,x,y,z,image,px,py"] + [
        f"g{i},{x:.3f},{y:.3f},{z:.3f},IMG_{i}.JPG,10,20" for i, (x, y, z) in enumerate(utm)
    ]
    (tmp_path / "gcp.csv").write_text("\n".join(rows))
    args = ["recon", str(folder), str(tmp_path / "out"), "--gcp", str(tmp_path / "gcp.csv")]
    r = CliRunner().invoke(main, [*args, "--crs", "UTM"])
    assert r.exit_code == 2 and "none of the GCP observations" in r.output, r.output
    r = CliRunner().invoke(main, args)  # no --crs: the file cannot say where it is
    assert r.exit_code == 2 and "without a CRS" in r.output, r.output
