"""``twin recon``: photos to georeferenced cameras and a dense coloured point cloud."""

from __future__ import annotations

import click

from twin.cli._common import emit_json


@click.command()
@click.argument("images", type=click.Path(exists=True, file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option(
    "--crs",
    default=None,
    help="CRS of the output points and of GCP coordinates without one: EPSG code, WKT, "
    "'UTM' (the block's zone, default) or 'GK' (CGCS2000 3-degree Gauss-Kruger zone).",
)
@click.option(
    "--gcp",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Ground control points: OpenSfM ground_control_points.json, OpenDroneMap "
    "gcp_list.txt (CRS line, then 'x y z px py image [name]'), or CSV with a header "
    "(name, x, y, z [, crs] [, image, px, py]).",
)
@click.option(
    "--gcp-role",
    type=click.Choice(["auto", "control", "check"]),
    default="auto",
    show_default=True,
    help="GCPs in the georeferencing fit (control), only as check points, or control "
    "when three or more are seen in two photos (auto).",
)
@click.option(
    "--masks",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Folder of masks named <image>.png (default: IMAGES/../masks when present).",
)
@click.option(
    "--mapper",
    type=click.Choice(["auto", "incremental", "global"]),
    default="auto",
    show_default=True,
    help="SfM mapper; auto falls back to global when incremental registers too few.",
)
@click.option(
    "--focal-35mm",
    type=click.FloatRange(1.0, 2000.0),
    default=None,
    help="35 mm equivalent focal length (mm) of photos whose EXIF has none "
    "(default: estimated by SfM from a guess).",
)
@click.option("--no-dense", is_flag=True, help="Stop after SfM and georeferencing.")
@click.option(
    "--dense-scale",
    type=click.FloatRange(0.05, 1.0),
    default=1.0,
    show_default=True,
    help="Run dense matching on images resized by this factor.",
)
@click.option(
    "--max-cluster-views",
    type=click.IntRange(2, None),
    default=None,
    help="Dense matching and fusion by overlapping clusters of at most N views "
    "(default: as many as fit in about 8 GB).",
)
@click.option("--force", is_flag=True, help="Redo every step even if its inputs are unchanged.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def recon(
    images,
    out,
    crs,
    gcp,
    gcp_role,
    masks,
    mapper,
    focal_35mm,
    no_dense,
    dense_scale,
    max_cluster_views,
    force,
    as_json,
):
    """Reconstruct cameras and a dense point cloud (LAZ) from a folder of photos.

    IMAGES and its subfolders hold the photos (.jpg, .png, .tif in any case; a
    masks folder is skipped). Reads EXIF/XMP (GPS, focal length, gimbal
    angles), runs SfM (pycolmap, CPU),
    georeferences to the GPS (and GCPs), then dense matching and fusion. Writes
    OUT/cameras.json, OUT/points.laz and OUT/report.json; rerunning skips the steps
    whose inputs did not change.

    \b
    Example:
      twin synth survey --preset small --no-lidar --no-events
      twin recon survey/images recon --crs EPSG:4550
      twin recon survey/images recon --crs EPSG:4550 --max-cluster-views 40
      twin recon photos out --crs UTM --gcp gcp_list.txt --gcp-role check
    """
    from twin.progress import terminal
    from twin.recon.run import ReconOptions, reconstruct
    from twin.recon.sfm import SfmOptions

    options = ReconOptions(
        sfm=SfmOptions(mapper=mapper),
        dense=not no_dense,
        dense_scale=dense_scale,
        max_cluster_views=max_cluster_views,
        force=force,
        focal_35mm=focal_35mm,
    )
    report = reconstruct(
        images,
        out,
        crs=crs,
        gcp=gcp,
        gcp_role=gcp_role,
        masks=masks,
        options=options,
        progress=None if as_json else terminal(),
    )
    if as_json:
        emit_json(report)
        return
    im = report["images"]
    s = report["sfm"]
    g = report["georeference"]
    click.echo(
        f"images: {im['usable']} usable, {len(im['rejected'])} rejected"
        + "".join(f"\n  skipped {r['name']}: {r['reason']}" for r in im["rejected"])
    )
    click.echo(
        f"SfM ({report['mapping']['mapper']}): {s['registered']}/{im['usable']} registered, "
        f"{s['points3D']} points, mean reprojection error {s['mean_reprojection_px']:.2f} px"
    )
    click.echo(
        f"georeferenced: GPS RMSE {g['gps_rmse_m']:.2f} m "
        f"({g['gps_inliers']}/{g['gps_used']} inliers), rotation from {g['rotation_source']}"
    )
    if g.get("gcp"):
        click.echo(f"GCPs ({g['gcp']['role']}): RMSE {g['gcp']['rmse_m']} m")
    if "dense" in report:
        d = report["dense"]
        cl = d.get("clustering", {}).get("clusters", 1)
        click.echo(
            f"dense: {d['points']} points from {d['views']} views "
            f"({d['seconds_per_megapixel']:.1f} s/MP"
            + (f", {len(cl)} clusters)" if isinstance(cl, list) else ")")
        )
    click.echo(f"written to {out} (report.json has the details)")
