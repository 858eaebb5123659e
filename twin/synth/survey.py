"""``twin synth``: a complete synthetic city survey with exact ground truth.

Writes, into one folder::

    dem.tif            GeoTIFF terrain (survey CRS, ellipsoidal heights, nodata -9999)
    footprints.gpkg    building footprints with id, heights, floors, roof type
    truth/mesh.ply     the exact surface in the local ENU frame, per-face labels
    truth/labels.json  label table, building ids, the frame
    lidar.laz          simulated airborne LiDAR (LAS 1.4, survey CRS in a WKT VLR)
    images/*.jpg       five-camera oblique rig, EXIF GPS + XMP gimbal angles
    cameras.json       exact intrinsics and poses of every image
    events.ndjson      live entity tracks (people, vehicles, assets, incidents)
    survey.json        parameters, CRS, frame, counts and SHA-256 of every file

Same seed and parameters give the same bytes. The folder is built under a temporary
name and renamed when complete, so a half-written survey never looks finished.
Each sensor draws from its own random stream: turning images off does not change
the LiDAR.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from twin import __version__
from twin.crs import crs_label, parse_crs
from twin.errors import OutputError
from twin.fileio import atomic_dir, sha256_file, write_json
from twin.progress import Progress, ensure
from twin.synth.params import PRESETS, SurveySpec

FILES = {
    "dem.tif": "terrain heights (GeoTIFF, survey CRS, ellipsoidal heights)",
    "footprints.gpkg": "building footprints (GeoPackage layer 'buildings')",
    "truth/mesh.ply": "exact surface, local ENU frame, per-face surface and building labels",
    "truth/labels.json": "label codes, building ids and the local frame of the truth mesh",
    "lidar.laz": "simulated airborne LiDAR (LAS 1.4 / LAZ)",
    "cameras.json": "exact camera intrinsics and poses of images/*.jpg",
    "events.ndjson": "live entity events (NDJSON, WGS 84 positions)",
}

# Independent random streams per component (numpy SeedSequence spawn keys).
_STREAM = {"lidar": 1, "images": 2, "events": 3}


def _rng(spec: SurveySpec, component: str) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64([spec.seed, _STREAM[component]]))


def _looks_like_survey(path: Path) -> bool:
    return (path / "survey.json").exists()


def generate(
    out_dir: str | os.PathLike,
    spec: SurveySpec | None = None,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict:
    """Generate a synthetic survey into ``out_dir`` and return the ``survey.json`` dict.

    ``overwrite`` replaces an existing survey folder; a non-empty folder that is not a
    twin survey is never replaced. Peak memory grows with the truth mesh (about
    ``(extent / dem_resolution)²`` terrain cells) and one rendered image at a time.
    """
    spec = spec or PRESETS["default"]
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError("exists and is not a folder", path=out)
    if out.exists() and any(out.iterdir()):
        if not _looks_like_survey(out):
            raise OutputError("folder exists and is not a twin survey; not touching it", path=out)
        if not overwrite:
            raise OutputError("a survey is already there (use --overwrite to replace it)", path=out)
    progress = ensure(progress)
    crs = parse_crs(spec.crs)
    counts: dict[str, int] = {}

    from twin.synth.city import make_city
    from twin.synth.footprints import write_footprints
    from twin.synth.terrain import write_dem
    from twin.synth.truth import build_truth, write_truth

    with atomic_dir(out) as tmp:
        with progress.step("city layout and terrain"):
            city = make_city(spec)
            grid = write_dem(city, spec, tmp / "dem.tif")
            write_footprints(city, tmp / "footprints.gpkg")
            counts["buildings"] = len(city.buildings)
            counts["trees"] = int(len(city.trees))
        with progress.step("truth mesh"):
            scene = build_truth(city, spec, grid)
            write_truth(scene, city, tmp)
            counts["truth_faces"] = int(len(scene.faces))
        if spec.lidar:
            from twin.synth.lidar import simulate_lidar, write_lidar

            with progress.step("airborne LiDAR"):
                pts = simulate_lidar(scene, spec, _rng(spec, "lidar"))
                write_lidar(pts, scene.frame, spec.crs, tmp / "lidar.laz")
                counts["lidar_points"] = int(len(pts.xyz))
        if spec.images:
            from twin.synth.camera import write_images

            cams = write_images(scene, spec, tmp, _rng(spec, "images"), progress=progress)
            counts["images"] = len(cams["images"])
        if spec.events:
            from twin.synth.events import generate_events, write_events

            with progress.step("entity events"):
                events = generate_events(city, spec, _rng(spec, "events"))
                write_events(events, tmp / "events.ndjson")
                counts["events"] = len(events)
                counts["entities"] = len({e["entity_id"] for e in events})

        files = {}
        for name, what in FILES.items():
            p = tmp / name
            if p.exists():
                files[name] = {"sha256": sha256_file(p), "bytes": p.stat().st_size, "what": what}
        images = sorted((tmp / "images").glob("*.jpg")) if (tmp / "images").exists() else []
        if images:
            import hashlib

            h = hashlib.sha256()
            for p in images:
                h.update(p.name.encode() + b"\0" + bytes.fromhex(sha256_file(p)))
            files["images/"] = {
                "sha256_of_list": h.hexdigest(),
                "count": len(images),
                "bytes": sum(p.stat().st_size for p in images),
                "what": "JPEG photos with EXIF GPS and XMP gimbal angles",
            }
        x0, y0, x1, y1 = city.bounds
        survey = {
            "generator": f"twin synth {__version__}",
            "seed": spec.seed,
            "crs": {"label": crs_label(crs), "wkt": crs.to_wkt()},
            "heights": "ellipsoidal (CGCS2000/GRS 80 ellipsoid), metres",
            "bounds": {"xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1},
            "frame": scene.frame.to_dict(),
            "parameters": spec.to_dict(),
            "counts": counts,
            "files": files,
        }
        write_json(tmp / "survey.json", survey)
    return survey


def read_survey(path: str | os.PathLike) -> dict:
    """Read ``survey.json`` from a survey folder (or the file itself)."""
    import json

    from twin.errors import InputError

    p = Path(path)
    if p.is_dir():
        p = p / "survey.json"
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise InputError("no survey.json: not a twin survey folder", path=p.parent) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"survey.json is not valid JSON: {exc}", path=p) from None
