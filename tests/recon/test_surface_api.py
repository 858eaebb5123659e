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
            if form != "csv_lonlat_positions_only":
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
    r = runner.invoke(main, ["recon", str(one), str(tmp_path / "o3"), "--crs", "EPSG:123456"])
    assert r.exit_code == 2 and "EPSG:123456" in r.output
    r = runner.invoke(
        main, ["recon", str(one), str(tmp_path / "o4"), "--gcp", str(empty / "notes.txt")]
    )
    assert r.exit_code == 2 and "notes.txt" in r.output
