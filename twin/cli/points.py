"""`twin points`: LAS/LAZ/COPC info, classification, DTM and DSM."""

from __future__ import annotations

import click

from twin.cli._common import crs_option, emit_json


@click.group()
def points():
    """Point clouds (LAS/LAZ/COPC): info, ground classification, DTM and DSM."""


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
@click.option("--min-building-height", type=float, default=2.5, show_default=True)
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


# ---------------------------------------------------------------- terrain
