"""`twin texture`: paint a mesh with georeferenced photos."""

from __future__ import annotations

import click

from twin.cli._common import emit_json


@click.command()
@click.argument("mesh", type=click.Path(dir_okay=False))
@click.argument("images", type=click.Path(file_okay=False))
@click.argument("cameras", type=click.Path())
@click.argument("out", type=click.Path(file_okay=False))
@click.option(
    "--smoothness",
    type=click.FloatRange(min=0),
    default=0.5,
    show_default=True,
    help="Potts weight of the view selection (data costs are in [0, 1]).",
)
@click.option(
    "--levelling",
    type=click.Choice(["global+local", "global", "none"]),
    default="global+local",
    show_default=True,
    help="Colour levelling across seams.",
)
@click.option(
    "--max-angle",
    type=click.FloatRange(1, 89),
    default=80.0,
    show_default=True,
    help="Steepest viewing angle (degrees from the face normal) a photo may texture.",
)
@click.option(
    "--scale",
    type=click.FloatRange(min=0.05, max=4),
    default=1.0,
    show_default=True,
    help="Texels per photo pixel.",
)
@click.option(
    "--max-size",
    type=click.Choice(["1024", "2048", "4096", "8192"]),
    default="8192",
    show_default=True,
    help="Largest texture page side (texels).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jpg", "webp", "png", "ktx2"]),
    default="jpg",
    show_default=True,
    help="Texture image format (ktx2: KTX 2.0 pages with mipmaps beside PNG ones).",
)
@click.option("--quality", type=click.IntRange(1, 100), default=90, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace a textured model already in OUT.")
@click.option("--json", "as_json", is_flag=True, help="Print georef.json (with the report).")
def texture(
    mesh,
    images,
    cameras,
    out,
    smoothness,
    levelling,
    max_angle,
    scale,
    max_size,
    fmt,
    quality,
    overwrite,
    as_json,
):
    """Texture MESH with the photos in IMAGES posed by CAMERAS; write OUT.

    MESH: PLY, GLB (from twin build), OBJ; CAMERAS: cameras.json (or a survey
    folder). OUT gets model.glb, model.obj + model.mtl + texture pages and
    georef.json (local frame, CRS, report). Cameras without an image or seeing
    nothing are reported and skipped; faces no photo sees are filled and counted.

    \b
    Example:
      twin synth survey --preset small --no-lidar --no-events
      twin texture survey/truth/mesh.ply survey/images survey/cameras.json textured
    """
    from twin.progress import terminal
    from twin.texture.mapping import TextureParams, texture_files

    params = TextureParams(
        smoothness=smoothness,
        levelling=levelling,
        max_angle_deg=max_angle,
        scale=scale,
        max_size=int(max_size),
    )
    georef = texture_files(
        mesh,
        images,
        cameras,
        out,
        params,
        fmt=fmt,
        quality=quality,
        overwrite=overwrite,
        progress=None if as_json else terminal(),
    )
    if as_json:
        emit_json(georef)
        return
    r = georef["report"]
    used = sum(1 for v in r["views"] if v.get("status") == "used")
    click.echo(
        f"textured {r['faces']} faces from {used} of {len(r['views'])} photos "
        f"({r['unseen_faces']} faces seen by none, filled); "
        f"{r['atlas']['charts']} charts on {len(r['atlas']['pages'])} page(s)"
    )
    for v in r["views"]:
        if v.get("status", "").startswith("skipped"):
            click.echo(f"  {v['name']}: {v['status']}")
    click.echo(f"model written to {out} (georef.json has the frame and the report)")
