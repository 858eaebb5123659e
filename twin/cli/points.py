"""`twin points`: LAS/LAZ/COPC info, classification, DTM and DSM."""

from __future__ import annotations

import click

from twin.cli._common import crs_option, emit_json


@click.group()
def points():
    """Point clouds (LAS/LAZ/COPC): info, classify, filter, DTM and DSM."""


@points.command("info")
@click.argument("file", type=click.Path(dir_okay=False))
@crs_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def points_info(file, crs, as_json):
    """Count, bounds, CRS (or why there is none), point format, classes, density.

    \b
    Example:
      twin points info survey/lidar.laz --json
    """
    from twin.points.io import info

    d = info(file, crs=crs)
    if as_json:
        emit_json(d)
        return
    c = d.get("crs")
    click.echo(f"{file}: {d['count']:,} points, LAS {d['version']} format {d['point_format']}")
    click.echo(f"  CRS: {c['label'] if c else 'none (' + str(d.get('crs_reason')) + ')'}")
    click.echo(f"  bounds: {d['bounds']['min']} .. {d['bounds']['max']}")
    if d.get("density"):
        click.echo(f"  density: {d['density']:.2f} points/m²")
    if d.get("classes"):
        click.echo("  classes: " + ", ".join(f"{k}: {v:,}" for k, v in d["classes"].items()))


@points.command("classify")
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@crs_option
@click.option(
    "--footprints",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Building footprints (any vector file): buildings are matched to them.",
)
@click.option("--ground-only", is_flag=True, help="Only classify ground (class 2).")
@click.option(
    "--window",
    type=float,
    default=18.0,
    show_default=True,
    help="Ground filter: largest opening window (m), > half the widest building.",
)
@click.option(
    "--threshold",
    type=float,
    default=0.5,
    show_default=True,
    help="Ground filter: height threshold above the provisional DTM (m).",
)
@click.option("--min-building-height", type=float, default=2.0, show_default=True)
@click.option("--min-building-area", type=float, default=10.0, show_default=True)
@click.option(
    "--water/--no-water",
    default=False,
    show_default=True,
    help="Detect large flat water surfaces (class 9).",
)
@click.option(
    "--tile",
    type=float,
    default=250.0,
    show_default=True,
    help="Tile size (CRS units): memory grows with it, not with the file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the class counts as JSON.")
def points_classify(
    src,
    dst,
    crs,
    footprints,
    ground_only,
    window,
    threshold,
    min_building_height,
    min_building_area,
    water,
    tile,
    as_json,
):
    """Classify ground (2), buildings (6), vegetation (3/4/5), noise (7), optionally
    water (9), streamed tile by tile.

    \b
    Example:
      twin points classify survey/lidar.laz classified.laz --footprints survey/footprints.gpkg
    """
    from twin.progress import terminal

    progress = None if as_json else terminal()
    if ground_only:
        from twin.points.ground import classify_file

        counts = classify_file(
            src, dst, crs=crs, window=window, threshold=threshold, progress=progress
        )
    else:
        from twin.points.classify import classify_file

        fp = None
        if footprints:
            from twin.mesh.footprints import read_footprints

            fp = read_footprints(footprints)
        counts = classify_file(
            src,
            dst,
            fp,
            crs=crs,
            tile=tile,
            progress=progress,
            window=window,
            threshold=threshold,
            min_building_height=min_building_height,
            min_building_area=min_building_area,
            water=water,
        )
    if as_json:
        emit_json({str(k): v for k, v in sorted(counts.items())})
    else:
        click.echo(f"{dst}: " + ", ".join(f"class {k}: {v:,}" for k, v in sorted(counts.items())))


def _raster_command(kind: str):
    @points.command(
        kind,
        help=(
            f"Write a {kind.upper()} Cloud-Optimised GeoTIFF from a LAS/LAZ file.\n\n"
            f"\b\nExample:\n  twin points {kind} survey/lidar.laz {kind}.tif --resolution 0.5"
        ),
    )
    @click.argument("src", type=click.Path(dir_okay=False))
    @click.argument("out", type=click.Path(dir_okay=False))
    @click.option(
        "--resolution",
        type=float,
        default=1.0,
        show_default=True,
        help="Cell size in the CRS's horizontal unit.",
    )
    @crs_option
    @click.option(
        "--fill",
        type=click.Choice(["tin", "none"]),
        default="tin",
        show_default=True,
        help="Fill empty cells by TIN interpolation.",
    )
    @click.option(
        "--hillshade",
        type=click.Path(dir_okay=False),
        default=None,
        help="Also write a hillshade PNG to look at.",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
    def command(src, out, resolution, crs, fill, hillshade, as_json):
        from twin.points import raster
        from twin.progress import terminal

        fn = getattr(raster, kind)
        summary = fn(
            src,
            out,
            resolution=resolution,
            crs=crs,
            fill=fill,
            progress=None if as_json else terminal(),
        )
        if hillshade:
            raster.hillshade_png(out, hillshade)
        if as_json:
            emit_json(summary)
        else:
            click.echo(f"{kind.upper()} written to {out}")

    return command


points_dtm = _raster_command("dtm")
points_dsm = _raster_command("dsm")


@points.command("filter")
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option(
    "--outliers",
    type=click.Choice(["statistical", "radius"]),
    default=None,
    help="Remove outliers: statistical (mean k-NN distance) or radius (too few neighbours).",
)
@click.option("--k", type=int, default=8, show_default=True, help="Statistical: neighbours.")
@click.option(
    "--std-ratio",
    type=float,
    default=2.0,
    show_default=True,
    help="Statistical: cut at mean + this many standard deviations.",
)
@click.option("--radius", type=float, default=1.0, show_default=True, help="Radius (m).")
@click.option(
    "--min-neighbors",
    type=int,
    default=2,
    show_default=True,
    help="Radius: fewer other points than this within the radius is an outlier.",
)
@click.option(
    "--voxel", type=float, default=None, help="Keep one point per voxel of this size (m)."
)
@click.option(
    "--voxel-mode",
    type=click.Choice(["centroid", "first"]),
    default="centroid",
    show_default=True,
    help="Voxel point at the centroid, or the voxel's first point.",
)
@click.option("--normals", is_flag=True, help="Add normal_x/y/z extra bytes (PCA of k-NN).")
@click.option("--normal-k", type=int, default=16, show_default=True)
@click.option(
    "--hag",
    is_flag=True,
    help="Add a height_above_ground extra byte (from --dtm, else the file's class 2).",
)
@click.option(
    "--dtm",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="DTM GeoTIFF (same CRS) for --hag.",
)
@crs_option
@click.option(
    "--tile",
    type=float,
    default=200.0,
    show_default=True,
    help="Tile size (m): memory grows with it, not with the file.",
)
@click.option("--buffer", type=float, default=10.0, show_default=True, help="Tile halo (m).")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def points_filter(
    src,
    dst,
    outliers,
    k,
    std_ratio,
    radius,
    min_neighbors,
    voxel,
    voxel_mode,
    normals,
    normal_k,
    hag,
    dtm,
    crs,
    tile,
    buffer,
    as_json,
):
    """Remove outliers, downsample to voxels, add normals and height above ground,
    streamed tile by tile (other fields kept).

    \b
    Example:
      twin points filter lidar.laz clean.laz --outliers statistical --voxel 0.5 --normals
    """
    from twin.points.filters import filter_file
    from twin.progress import terminal

    stats = filter_file(
        src,
        dst,
        outliers=outliers,
        k=k,
        std_ratio=std_ratio,
        radius=radius,
        min_neighbors=min_neighbors,
        voxel=voxel,
        voxel_mode=voxel_mode,
        normals=normals,
        normal_k=normal_k,
        hag=hag,
        dtm=dtm,
        crs=crs,
        tile=tile,
        buffer=buffer,
        progress=None if as_json else terminal(),
    )
    if as_json:
        emit_json(stats)
    else:
        click.echo(
            f"{dst}: {stats['output_points']:,} of {stats['input_points']:,} points "
            f"({stats['outliers']:,} outliers removed)"
        )


# ---------------------------------------------------------------- terrain
