"""``reconstruct``: a folder of photos to georeferenced cameras and a dense point cloud.

Output folder::

    images.json     what ingest found: usable images, rejected ones and why, notes
    sfm/            COLMAP database, pair list and sparse models (per mapper)
    sparse/         the georeferenced sparse model (COLMAP binary, ENU metres)
    cameras.json    registered cameras (ENU frame and CRS centres), same convention as
                    the synthetic survey's cameras.json
    dense/          one depth/normal/confidence map per view (<name>.npz)
    points.laz      fused coloured points in the CRS, with normals and view counts
    report.json     registered images, reprojection error, GPS and GCP residuals,
                    dense statistics, timings
    state.json      input fingerprints of each step

A step whose outputs exist and whose inputs (image hashes, options, the previous
step's output) are unchanged is skipped, so an interrupted run resumes. Peak memory
is the largest of: SfM (features and matches of the block), one view's dense matching
(see :mod:`twin.recon.mvs`), and fusion (the depth maps of one view cluster, plus the
fused points). A block whose images and depth maps would not fit
``ReconOptions.dense_memory_gb`` (or with more views than ``max_cluster_views``) is
matched and fused by overlapping view clusters (:mod:`twin.recon.cluster`); the
report's ``dense.clustering`` lists them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from twin.errors import InputError, OutputError, ParameterError
from twin.fileio import atomic_path, write_json
from twin.recon import sfm
from twin.recon.images import scan_images
from twin.recon.mvs import MvsOptions

log = logging.getLogger(__name__)


@dataclass
class ReconOptions:
    sfm: sfm.SfmOptions = field(default_factory=sfm.SfmOptions)
    mvs: MvsOptions = field(default_factory=MvsOptions)
    dense: bool = True
    dense_scale: float = 1.0  # dense matching on images resized by this factor
    min_views: int = 2
    voxel: float | None = None  # fused-point merge cell (m); default: half the GSD
    dense_max_views: int | None = None  # only the views nearest the block centre (previews)
    # large blocks: dense matching and fusion by overlapping view clusters of at most
    # this many views (twin.recon.cluster); None: as many as dense_memory_gb allows
    max_cluster_views: int | None = None
    cluster_overlap: float = 0.5  # share of a cluster's views borrowed from its neighbours
    dense_memory_gb: float = 8.0  # budget for one cluster's images and depth maps
    focal_35mm: float | None = None  # 35 mm equivalent focal of photos without one in EXIF
    force: bool = False


def _key(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _file_hash(path: Path) -> str:
    from twin.fileio import sha256_file

    return sha256_file(path)[:16]


def reconstruct(
    images_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    crs=None,
    gcp: str | os.PathLike | None = None,
    masks: str | os.PathLike | None = None,
    options: ReconOptions | None = None,
    progress=None,
    gcp_role: str = "auto",
) -> dict:
    """Run ingest, SfM, georeferencing, dense matching and fusion; return the report.

    ``crs``: CRS of the output points and camera centres: an EPSG code, ``"EPSG:n"``,
    WKT or PROJ string, ``"UTM"`` (the block's WGS 84 UTM zone, also the default) or
    ``"GK"`` / ``"CGCS2000"`` (the block's CGCS2000 3-degree Gauss–Krüger zone).
    ``gcp``: a ground control point file (:mod:`twin.recon.gcp`: OpenSfM JSON,
    OpenDroneMap ``gcp_list.txt``, CSV; coordinates without a CRS are in ``crs``).
    ``gcp_role``: ``"auto"``, ``"control"`` or ``"check"``
    (:func:`twin.recon.sfm.georeference`).
    """
    import pycolmap

    from twin.crs import (
        GEODETIC_3D,
        LocalFrame,
        cgcs2000_gk_crs_for,
        crs_label,
        parse_crs,
        utm_crs_for,
    )
    from twin.progress import ensure

    options = options or ReconOptions()
    progress = ensure(progress)
    if gcp_role not in ("auto", "control", "check"):
        raise ParameterError(f"gcp_role must be auto, control or check, not {gcp_role!r}")
    auto_crs = None
    if isinstance(crs, str) and crs.strip().lower() in ("utm", "auto", "gk", "cgcs2000"):
        auto_crs, crs = crs.strip().lower(), None
    elif isinstance(crs, str) and crs.strip().isdigit():
        crs = f"EPSG:{crs.strip()}"
    out_crs = parse_crs(crs) if crs is not None else None  # a bad CRS fails before SfM
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError("exists and is not a folder", path=out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write the output folder: {exc.strerror}", path=out) from None
    state_path = out / "state.json"
    state = {} if options.force or not state_path.exists() else json.loads(state_path.read_text())
    timings: dict[str, float] = {}
    report: dict = {}

    def save_state():
        write_json(state_path, state)

    # a bad GCP file fails first (with --crs UTM/GK: once the photos give the zone)
    gcps = sfm.read_gcps(gcp, crs=out_crs) if gcp and not auto_crs else None
    # ---------------------------------------------------------------- ingest
    t0 = time.perf_counter()
    with progress.step("image ingest"):
        images = scan_images(images_dir, masks=masks, focal_35mm=options.focal_35mm)
    timings["ingest"] = time.perf_counter() - t0
    write_json(
        out / "images.json",
        {**images.summary(), "images": [im.to_dict() for im in images.images]},
    )
    report["images"] = images.summary()
    if len(images.images) < 2:
        raise InputError(
            f"structure from motion needs two or more usable photos, the folder has "
            f"{len(images.images)}"
            + "".join(f"; {r.name} skipped: {r.reason}" for r in images.rejected[:3]),
            path=images_dir,
        )
    frame = sfm.default_frame(images)
    if gcp and auto_crs:
        if frame is not None:
            out_crs = (
                cgcs2000_gk_crs_for(frame.lon)
                if auto_crs in ("gk", "cgcs2000")
                else utm_crs_for(frame.lon, frame.lat)
            )
        gcps = sfm.read_gcps(gcp, crs=out_crs)
    if frame is None and gcps:
        llh = np.array([g["llh"] for g in gcps if g["llh"] is not None])
        if len(llh):
            frame = LocalFrame(*(float(v) for v in llh.mean(0)))
    gcp_check = None
    if gcps:
        from twin.recon.gcp import check_gcps_against_block

        gps = sfm.gps_enu(images, frame) if frame is not None else np.zeros((0, 3))
        gcp_check = check_gcps_against_block(
            gcps, [im.name for im in images.images], frame, gps, path=gcp
        )
    if frame is None:
        raise InputError(
            "no photo has a GPS position (EXIF) and no GCP file with positions was given: "
            "the block cannot be georeferenced (give --gcp)",
            path=images_dir,
        )
    if out_crs is None and frame is not None:
        if auto_crs in ("gk", "cgcs2000"):
            out_crs = cgcs2000_gk_crs_for(frame.lon)
        else:
            out_crs = utm_crs_for(frame.lon, frame.lat)

    # ---------------------------------------------------------------- features + matches
    fkey = _key(
        sorted(im.sha256 for im in images.images),
        [list(im.camera_key) for im in images.images],
        asdict(options.sfm),
    )
    db = out / "sfm" / "database.db"
    if state.get("features") != fkey or not db.exists():
        t0 = time.perf_counter()
        with progress.step("SIFT features"):
            sfm.extract_features(images, db, options.sfm)
        timings["features"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        with progress.step("feature matching"):
            enu = (
                sfm.gps_enu(images, frame)
                if frame is not None
                else np.full((len(images.images), 3), np.nan)
            )
            report["pairs"] = sfm.match_features(images, db, enu, options.sfm)
        timings["matching"] = time.perf_counter() - t0
        rig = sfm.apply_rig(images, db) if options.sfm.rig else None
        write_json(out / "sfm" / "rig.json", {"rig": rig})
        state["features"] = fkey
        state.pop("mapping", None)
        save_state()
    # ---------------------------------------------------------------- mapping
    model_dir = out / "sfm" / "model"
    mkey = _key(
        fkey,
        options.sfm.mapper,
        options.sfm.refine_intrinsics,
        options.sfm.gps_prior,
        options.sfm.final_refinement,
    )
    if state.get("mapping") != mkey or not (model_dir / "images.bin").exists():
        t0 = time.perf_counter()
        with progress.step("incremental/global mapping"):
            rec, mrep = sfm.map_reconstruction(images, db, out / "sfm" / "mappers", options.sfm)
            if options.sfm.final_refinement:
                rec, mrep["refinement"] = sfm.refine_reconstruction(
                    rec, db, images.folder, out / "sfm" / "refined", options.sfm
                )
        timings["mapping"] = time.perf_counter() - t0
        if model_dir.exists():
            shutil.rmtree(model_dir)
        model_dir.mkdir(parents=True)
        rec.write(str(model_dir))
        write_json(out / "sfm" / "mapping.json", mrep)
        state["mapping"] = mkey
        save_state()
    rec = pycolmap.Reconstruction(str(model_dir))
    report["mapping"] = json.loads((out / "sfm" / "mapping.json").read_text())
    rig_file = out / "sfm" / "rig.json"
    report["rig"] = json.loads(rig_file.read_text())["rig"] if rig_file.exists() else None
    report["sfm"] = sfm.reprojection_stats(rec)
    registered = {im.name for _, im in rec.images.items() if im.has_pose}
    report["sfm"]["not_registered"] = sorted(
        im.name for im in images.images if im.name not in registered
    )
    # ---------------------------------------------------------------- georeference
    t0 = time.perf_counter()
    with progress.step("georeferencing"):
        geo = sfm.georeference(rec, images, frame=frame, gcps=gcps, gcp_role=gcp_role)
        sfm.apply_georef(rec, geo)
        adjusted = None
        gcp_control = bool(geo.gcp) and geo.gcp["role"].startswith("control")
        if options.sfm.prior_adjustment:
            from twin.recon.georef import adjust_with_priors, check_gcps, shift_to_gcps

            adjusted = adjust_with_priors(rec, images, geo.frame)
            if adjusted is not None and gcps:
                if gcp_control:
                    # the adjusted block keeps its shape; the GCPs move it off the
                    # GPS datum
                    out_gcp = geo.gcp.get("outliers", [])
                    geo.gcp = shift_to_gcps(rec, images, gcps, geo.frame, exclude=out_gcp)
                    geo.gcp["outliers"] = out_gcp
                else:
                    geo.gcp = check_gcps(rec, images, gcps, geo.frame)
    timings["georeference"] = time.perf_counter() - t0
    if geo.gcp and gcp_check is not None:
        geo.gcp = {**geo.gcp, **gcp_check}
    report["georeference"] = {
        "frame": geo.frame.to_dict(),
        "scale": geo.scale,
        "rotation_source": geo.rotation_source,
        "gps_used": geo.gps_used,
        "gps_inliers": geo.gps_inliers,
        "gps_rmse_m": geo.gps_rmse_m,
        "gps_residuals_m": geo.gps_residuals,
        "gcp": geo.gcp or None,
        "crs": crs_label(out_crs) if out_crs is not None else None,
        "prior_adjustment": adjusted,
    }
    sparse_dir = out / "sparse"
    sparse_dir.mkdir(exist_ok=True)
    rec.write(str(sparse_dir))
    cams = sfm.cameras_dict(rec, geo.frame, out_crs)
    write_json(out / "cameras.json", cams)
    xyz = np.array([p.xyz for _, p in rec.points3D.items()]).reshape(-1, 3)
    ckey = _key(_file_hash(out / "cameras.json"))

    # ---------------------------------------------------------------- dense
    if options.dense:
        from twin.recon import fuse as fusion
        from twin.recon.mvs import compute_depth_maps, load_views

        dkey = _key(
            ckey,
            asdict(options.mvs),
            options.dense_scale,
            options.dense_max_views,
            options.max_cluster_views,
            options.cluster_overlap,
            options.dense_memory_gb,
        )
        dense_dir = out / "dense"
        if state.get("dense") != dkey and dense_dir.exists():
            shutil.rmtree(dense_dir)
        dense_dir.mkdir(exist_ok=True)
        state["dense"] = dkey
        save_state()
        names = [im["name"] for im in cams["images"]]
        C = np.array([im["centre_enu"] for im in cams["images"]]).reshape(-1, 3)
        idx = list(range(len(names)))
        if options.dense_max_views and options.dense_max_views < len(names):
            dist = np.linalg.norm(C[:, :2] - np.median(C[:, :2], axis=0), axis=1)
            idx = sorted(np.argsort(dist)[: options.dense_max_views].tolist())
        max_views = options.max_cluster_views or _cluster_size(cams, options)
        if len(idx) > max_views:
            from twin.recon.cluster import dense_clustered

            cloud, clusters, info = dense_clustered(
                cams,
                images.folder,
                dense_dir,
                max_views=max_views,
                overlap=options.cluster_overlap,
                scale=options.dense_scale,
                points=xyz,
                which=[names[i] for i in idx],
                options=options.mvs,
                min_views=options.min_views,
                voxel=options.voxel,
                progress=progress,
            )
            timings["dense"] = info["dense_s"]
            timings["fusion"] = info["fusion_s"]
            mp, gsd, voxel = info["megapixels"], info["median_gsd_m"], info["voxel_m"]
            valid = info["valid_pixel_share"]
            cluster_report = {
                "max_views": max_views,
                "overlap": options.cluster_overlap,
                "clusters": [c.to_dict(info["names"]) for c in clusters],
            }
        else:
            views = load_views(cams, images.folder, scale=options.dense_scale)
            t0 = time.perf_counter()
            maps = compute_depth_maps(
                views,
                points=xyz,
                options=options.mvs,
                out_dir=dense_dir,
                which=idx,
                progress=progress,
            )
            timings["dense"] = time.perf_counter() - t0
            mp = sum(views[i].shape[0] * views[i].shape[1] for i in idx) / 1e6
            t0 = time.perf_counter()
            gsd = _median_gsd([views[i] for i in idx], maps)
            voxel = options.voxel if options.voxel else 0.5 * gsd
            cloud = fusion.fuse(
                views, maps, indices=idx, min_views=options.min_views, voxel=voxel,
                progress=progress,
            )  # fmt: skip
            timings["fusion"] = time.perf_counter() - t0
            valid = float(np.mean([float((m.depth > 0).mean()) for m in maps]))
            cluster_report = {"max_views": max_views, "clusters": 1}
            del maps, views
        report["dense"] = {
            "views": len(idx),
            "megapixels": mp,
            "seconds_per_megapixel": timings["dense"] / max(mp, 1e-9),
            "valid_pixel_share": valid,
            "median_gsd_m": gsd,
            "voxel_m": voxel,
            "points": len(cloud),
            "views_per_point": np.bincount(cloud.views).tolist() if len(cloud) else [],
            "clustering": cluster_report,
        }
        t0 = time.perf_counter()
        with progress.step("writing points.laz"):
            fusion.write_cloud(cloud, out / "points.laz", geo.frame, out_crs)
        timings["write"] = time.perf_counter() - t0
    report["timings_s"] = timings
    report["outputs"] = sorted(
        str(p.relative_to(out)) for p in out.iterdir() if p.name not in ("state.json",)
    )
    report["heights"] = "ellipsoidal (from the EXIF GPS altitude)"
    report["frame_crs"] = GEODETIC_3D
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=str))
    return report


BYTES_PER_PIXEL = 40  # one view in a cluster: RGB + grey copies + depth/normal/cost maps


def _cluster_size(cams: dict, options: ReconOptions) -> int:
    """Views per cluster that fit ``options.dense_memory_gb`` (at least 8)."""
    sensors = cams["cameras"]
    px = (
        max((float(c["width"]) * float(c["height"]) for c in sensors.values()), default=1.0)
        * options.dense_scale**2
    )
    return max(8, int(options.dense_memory_gb * 1e9 / (BYTES_PER_PIXEL * max(px, 1.0))))


def _median_gsd(views, maps) -> float:
    vals = []
    for v, m in zip(views, maps, strict=True):
        d = m.depth[m.depth > 0]
        if len(d):
            vals.append(float(np.median(d)) / float(v.K[0, 0]))
    return float(np.median(vals)) if vals else 0.1
