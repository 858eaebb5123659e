"""The ``twin`` command line. Each verb has ``--help`` with an example."""

from __future__ import annotations

import click

from twin import __version__
from twin.errors import TwinError


class _Group(click.Group):
    """A group that turns TwinError into a one-line message and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except TwinError as exc:
            click.secho(f"twin: error: {exc}", fg="red", err=True)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="twin")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """twin: digital-twin city models from survey data.

    \b
    Start with:  twin demo            (synthetic survey -> model -> tiles -> live replay)
    Then:        twin synth OUT       (a synthetic survey with exact ground truth)
                 twin build SURVEY OUT
    Every verb has --help with an example; --json where a script wants output.
    """
    import logging

    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


from twin.cli._common import emit_json  # noqa: E402


# ---------------------------------------------------------------- synth
@main.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option(
    "--preset",
    type=click.Choice(["small", "default"]),
    default="default",
    show_default=True,
    help="Size preset; options below override it.",
)
@click.option("--seed", type=int, default=None, help="Random seed (same seed, same bytes).")
@click.option("--extent", type=float, default=None, help="Side of the square area (m).")
@click.option("--lon", type=float, default=None, help="Centre longitude (degrees).")
@click.option("--lat", type=float, default=None, help="Centre latitude (degrees).")
@click.option("--crs", default=None, help="Survey CRS (default EPSG:4550, CGCS2000 GK CM 123E).")
@click.option("--dem-resolution", type=float, default=None, help="DEM pixel size (m).")
@click.option("--lidar-density", type=float, default=None, help="LiDAR points per m².")
@click.option("--image-size", default=None, metavar="WxH", help="Image size, e.g. 1024x768.")
@click.option("--duration", type=float, default=None, help="Seconds of entity events.")
@click.option("--no-lidar", is_flag=True, help="Skip the LiDAR simulation.")
@click.option("--no-images", is_flag=True, help="Skip the oblique photos.")
@click.option("--no-events", is_flag=True, help="Skip the entity events.")
@click.option("--overwrite", is_flag=True, help="Replace an existing survey in OUT.")
@click.option("--json", "as_json", is_flag=True, help="Print survey.json to stdout.")
def synth(
    out,
    preset,
    seed,
    extent,
    lon,
    lat,
    crs,
    dem_resolution,
    lidar_density,
    image_size,
    duration,
    no_lidar,
    no_images,
    no_events,
    overwrite,
    as_json,
):
    """Generate a synthetic city survey with exact ground truth into OUT.

    \b
    Example:
      twin synth survey --preset small --seed 7
      twin synth big --extent 1200 --no-images --crs EPSG:32651
    """
    from twin.errors import ParameterError
    from twin.progress import terminal
    from twin.synth.params import PRESETS
    from twin.synth.survey import generate

    changes = {
        k: v
        for k, v in dict(
            seed=seed,
            extent=extent,
            lon=lon,
            lat=lat,
            crs=crs,
            dem_resolution=dem_resolution,
            lidar_density=lidar_density,
            duration=duration,
        ).items()
        if v is not None
    }
    if image_size:
        try:
            w, h = (int(v) for v in image_size.lower().split("x"))
        except ValueError:
            raise ParameterError(
                f"--image-size must look like 1024x768, got {image_size!r}"
            ) from None
        changes.update(image_width=w, image_height=h)
    if no_lidar:
        changes["lidar"] = False
    if no_images:
        changes["images"] = False
    if no_events:
        changes["events"] = False
    spec = PRESETS[preset].with_(**changes)
    survey = generate(out, spec, overwrite=overwrite, progress=None if as_json else terminal())
    if as_json:
        emit_json(survey)
    else:
        c = survey["counts"]
        click.echo(f"survey written to {out}: " + ", ".join(f"{v} {k}" for k, v in c.items()))


# ---------------------------------------------------------------- build
@main.command()
@click.argument("survey", type=click.Path(exists=True))
@click.argument("out", type=click.Path(file_okay=False))
@click.option(
    "--dem",
    type=click.Path(dir_okay=False),
    default=None,
    help="DEM GeoTIFF (default: SURVEY/dem.tif).",
)
@click.option(
    "--footprints",
    type=click.Path(dir_okay=False),
    default=None,
    help="Footprints (GeoPackage, shapefile, ...; default: SURVEY/footprints.gpkg).",
)
@click.option(
    "--lod",
    type=click.IntRange(1, 2),
    default=2,
    show_default=True,
    help="Building level of detail.",
)
@click.option(
    "--terrain-max-error",
    type=click.FloatRange(min=0),
    default=0.25,
    show_default=True,
    help="Terrain TIN vertical error bound (m) at every DEM sample; 0 = regular grid.",
)
@click.option(
    "--terrain-step",
    type=click.IntRange(1, 64),
    default=2,
    show_default=True,
    help="Grid step in DEM pixels when --terrain-max-error is 0.",
)
@click.option(
    "--buildings-from",
    type=click.Choice(["footprints", "lidar"]),
    default="footprints",
    show_default=True,
    help="Solids from footprint attributes, or LoD2 roofs fitted to the LiDAR's points.",
)
@click.option(
    "--lidar",
    type=click.Path(dir_okay=False),
    default=None,
    help="LAS/LAZ for --buildings-from lidar (default: SURVEY/lidar.laz).",
)
@click.option(
    "--implicit-tiles",
    is_flag=True,
    help="3D Tiles 1.1 implicit quadtrees (binary subtrees with each tile's measured "
    "error and box) instead of one explicit tileset.json per layer: for large cities.",
)
@click.option(
    "--texture",
    is_flag=True,
    help="Also paint the model with SURVEY/images (textured/) and tile it "
    "(tiles/textured, shown instead of the untextured layers).",
)
@click.option(
    "--compression",
    type=click.Choice(["meshopt", "draco", "none"]),
    default="meshopt",
    show_default=True,
    help="Tile GLBs: EXT_meshopt_compression, KHR_draco_mesh_compression or plain float32.",
)
@click.option("--force", is_flag=True, help="Rebuild every stage even if unchanged.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest to stdout.")
def build(
    survey,
    out,
    dem,
    footprints,
    lod,
    terrain_max_error,
    terrain_step,
    buildings_from,
    lidar,
    implicit_tiles,
    texture,
    compression,
    force,
    as_json,
):
    """Build a georeferenced city model (GLB + 3D Tiles) from a survey folder.

    \b
    Example:
      twin synth survey --preset small && twin build survey model
      twin build survey model --buildings-from lidar   (LoD2 roofs from the LiDAR)
      twin build survey model --texture --compression draco
    """
    from twin.pipeline import BuildParams
    from twin.pipeline import build as run_build
    from twin.progress import terminal

    params = BuildParams(
        lod=lod,
        terrain_max_error=terrain_max_error,
        terrain_step=terrain_step,
        buildings_from=buildings_from,
        texture=texture,
        tile_implicit=implicit_tiles,
        tile_compression=compression,
    )
    manifest = run_build(
        survey,
        out,
        dem=dem,
        footprints=footprints,
        lidar=lidar,
        params=params,
        force=force,
        progress=None if as_json else terminal(),
    )
    if as_json:
        emit_json(manifest)
    else:
        for o in manifest["outputs"]:
            click.echo(f"  {o['path']}  ({o['bytes'] / 1e6:.2f} MB)")
        click.echo(f"model written to {out} (manifest.json has the lineage)")


# ---------------------------------------------------------------- demo
@main.command()
@click.argument("out", type=click.Path(file_okay=False), default="twin-demo")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--replay-seconds",
    type=float,
    default=60.0,
    show_default=True,
    help="How much of the event stream to replay into the live store.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def demo(out, seed, replay_seconds, as_json):
    """Run the whole chain on embedded defaults: synthetic survey -> model -> tiles -> live.

    \b
    Example:
      twin demo            # writes ./twin-demo
    """
    from twin.demo import run_demo
    from twin.progress import terminal

    summary = run_demo(
        out, seed=seed, replay_seconds=replay_seconds, progress=None if as_json else terminal()
    )
    if as_json:
        emit_json(summary)
    else:
        from twin.demo import print_summary

        print_summary(summary)


# ------------------------------------------------ stage command groups
# One module per pipeline stage; each defines a click group registered here.
from twin.cli.points import points  # noqa: E402
from twin.cli.recon import recon  # noqa: E402
from twin.cli.sync import sync  # noqa: E402
from twin.cli.terrain import terrain  # noqa: E402
from twin.cli.tiles import tiles, view  # noqa: E402

for _group in (points, terrain, sync, tiles, view):
    main.add_command(_group)
main.add_command(recon)
main.add_command(__import__("twin.cli.texture", fromlist=["texture"]).texture)
main.add_command(__import__("twin.cli.mesh", fromlist=["mesh"]).mesh)

if __name__ == "__main__":  # pragma: no cover
    main()
