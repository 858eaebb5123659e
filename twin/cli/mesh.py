"""`twin mesh`: surfaces from point clouds, LoD2 buildings, mesh optimisation."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from twin.cli._common import crs_option, emit_json


@click.group()
def mesh():
    """Meshes: surface reconstruction, LoD2 buildings from points, optimisation."""


def _frame_option(f):
    return click.option(
        "--frame",
        "frame_json",
        type=click.Path(dir_okay=False, exists=True),
        default=None,
        help="JSON with the local frame to use (a survey.json, or a file with a 'frame').",
    )(f)


def _read_frame(path):
    if path is None:
        return None
    from twin.crs import LocalFrame
    from twin.errors import InputError

    try:
        doc = json.loads(Path(path).read_text())
        return LocalFrame.from_dict(doc.get("frame", doc))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"no local frame in this JSON ({exc})", path=path) from None


@mesh.command("reconstruct")
@click.argument("points", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option(
    "--method",
    type=click.Choice(["poisson", "dsm"]),
    default="poisson",
    show_default=True,
    help="Screened Poisson (any cloud) or a 2.5D DSM mesh (nadir data).",
)
@click.option("--resolution", type=float, default=0.5, show_default=True, help="Cell size (m).")
@click.option(
    "--max-error", type=float, default=0.1, show_default=True, help="DSM TIN bound (m); 0: grid."
)
@click.option(
    "--tile-size",
    type=float,
    default=None,
    help="Reconstruct in tiles of this size (m), stitched without cracks.",
)
@click.option(
    "--area",
    default=None,
    metavar="XMIN,YMIN,XMAX,YMAX",
    help="Crop to this box (local ENU metres); default: the points' box.",
)
@crs_option
@_frame_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def reconstruct_cmd(
    points, out, method, resolution, max_error, tile_size, area, crs, frame_json, as_json
):
    """Reconstruct a surface mesh (PLY or GLB in a local ENU frame) from POINTS.

    OUT gets a sidecar OUT.json with the frame, holes and statistics.

    \b
    Example:
      twin mesh reconstruct survey/lidar.laz surface.ply --method dsm --frame survey/survey.json
      twin mesh reconstruct cloud.laz surface.glb --method poisson --tile-size 200
    """
    from twin.errors import ParameterError
    from twin.mesh.surface import reconstruct, write_surface
    from twin.progress import terminal

    box = None
    if area:
        try:
            box = tuple(float(v) for v in area.split(","))
        except ValueError:
            raise ParameterError(f"--area must be XMIN,YMIN,XMAX,YMAX, got {area!r}") from None
    s = reconstruct(
        points,
        method,
        frame=_read_frame(frame_json),
        crs=crs,
        area=box,
        resolution=resolution,
        max_error=max_error,
        tile_size=tile_size,
        progress=None if as_json else terminal(),
    )
    meta = write_surface(s, out)
    meta["path"] = str(out)
    if as_json:
        emit_json(meta)
    else:
        i = s.info
        click.echo(
            f"{out}: {i['faces']} faces, {i['vertices']} vertices, {len(s.holes)} holes "
            f"({method}, {i['seconds']:.1f} s); frame and holes in {out}.json"
        )


@mesh.command("buildings")
@click.argument("points", type=click.Path(dir_okay=False))
@click.argument("footprints", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--dem", type=click.Path(dir_okay=False), default=None, help="DEM for the bases.")
@click.option("--cityjson", is_flag=True, help="Write OUT as CityJSON 2.0 instead of GLB.")
@click.option(
    "--cityjson-crs",
    default=None,
    help="CRS written in CityJSON (default: the cloud's; e.g. EPSG:7415 for RD + NAP).",
)
@crs_option
@_frame_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def buildings_cmd(points, footprints, out, dem, cityjson, cityjson_crs, crs, frame_json, as_json):
    """LoD2 building solids from roof points (class 6) and FOOTPRINTS.

    Writes a GLB of all solids (one feature id per building) with OUT.json beside it,
    or with --cityjson a CityJSON 2.0 file with RoofSurface/WallSurface/GroundSurface.

    \b
    Example:
      twin mesh buildings survey/lidar.laz survey/footprints.gpkg b.city.json \\
          --dem survey/dem.tif --cityjson
      twin mesh buildings ahn3.laz bgt_pand.sqlite delft.city.json --crs EPSG:28992 \\
          --cityjson --cityjson-crs EPSG:7415
    """
    from twin.fileio import write_json
    from twin.mesh.roofs import buildings_from_points
    from twin.progress import terminal

    res = buildings_from_points(
        points,
        footprints,
        dem,
        _read_frame(frame_json),
        crs=crs,
        progress=None if as_json else terminal(),
    )
    summary = {
        "path": str(out),
        "counts": res.counts,
        "skipped": [{"building_id": b, "reason": r} for b, r in res.skipped],
        "repaired": [{"building_id": b, "reason": r} for b, r in res.repaired],
        "frame": res.frame.to_dict(),
    }
    if cityjson:
        from twin.tiles.cityjson import write_cityjson

        summary["cityjson"] = write_cityjson(res, out, crs=cityjson_crs or res.crs)
    else:
        from twin.mesh.buildings import merge_meshes
        from twin.tiles.gltf import GltfMesh, write_glb

        m = merge_meshes(res.buildings)
        if len(m.faces) == 0:
            from twin.errors import InputError

            raise InputError("no building could be built (see the warnings)", path=footprints)
        # one vertex set per face so each face carries its building's feature id
        f = m.faces.astype("int64")
        pos = m.vertices[f].reshape(-1, 3)
        fid = m.feature_id.repeat(3)
        write_glb(out, [GltfMesh(positions=pos, indices=np.arange(len(pos)), feature_ids=fid)])
        summary["buildings"] = [
            {k: v for k, v in b.attributes.items() if k != "planes"} for b in res.buildings
        ]
        write_json(Path(str(out) + ".json"), summary)
    if as_json:
        emit_json(summary)
    else:
        c = res.counts
        click.echo(
            f"{out}: {c['lod2']} LoD2 + {c['lod1']} LoD1 buildings, {c['skipped']} skipped"
            + (f", {c['repaired']} repaired" if c["repaired"] else "")
        )


def _size(n: int) -> str:
    return f"{n} bytes" if n < 100_000 else f"{n / 1e6:.3f} MB"


@mesh.command("optimize")
@click.argument("src", metavar="IN", type=click.Path(dir_okay=False))
@click.argument("out", metavar="OUT", type=click.Path(dir_okay=False))
@click.option(
    "--simplify",
    "ratio",
    type=float,
    default=None,
    help="Keep this fraction of the triangles (0 < R <= 1), e.g. 0.1.",
)
@click.option(
    "--bits", type=click.IntRange(1, 16), default=14, show_default=True,
    help="Position quantisation bits per axis.",
)  # fmt: skip
@click.option(
    "--codec",
    type=click.Choice(["meshopt", "draco", "twin", "none"]),
    default="meshopt",
    show_default=True,
    help="meshopt / draco: compressed GLB; twin: our archive; none: float32 GLB.",
)
@click.option("--weld-tol", type=float, default=0.0, show_default=True, help="Weld distance.")
@click.option("--lock-border", is_flag=True, help="Keep open borders fixed when simplifying.")
@click.option(
    "--overdraw", type=click.FloatRange(min=1.0), default=1.05, show_default=True,
    help="GLB: draw outward-facing clusters first, ACMR at most this factor worse.",
)  # fmt: skip
@click.option("--no-overdraw", is_flag=True, help="Keep the vertex-cache triangle order.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def optimize_cmd(
    src, out, ratio, bits, codec, weld_tol, lock_border, overdraw, no_overdraw, as_json
):
    """Optimise a mesh file (PLY, OBJ, GLB, also meshopt-compressed, or a twin
    archive) for storage: weld, simplify, vertex cache and fetch order, quantise,
    compress; write OUT (GLB or archive) and print the sizes before and after.
    A bad or unreadable IN exits with status 2 and one line naming it.

    \b
    Example:
      twin mesh optimize city.ply city.glb --simplify 0.1 --codec meshopt
      twin mesh optimize scan.obj scan.glb --codec draco --bits 12 --json
    """
    from twin.mesh.optimize import optimize

    r = optimize(
        src, out, simplify=ratio, bits=bits, codec=codec, weld_tol=weld_tol,
        lock_border=lock_border, overdraw=None if no_overdraw else overdraw,
    )  # fmt: skip
    d = r.as_dict()
    if as_json:
        emit_json(d)
        return
    before = f"{r.input_faces} triangles, {_size(r.raw_bytes)} raw"
    if r.input_bytes is not None:
        before += f" (file: {_size(r.input_bytes)})"
    click.echo(f"in:  {src}: {before}")
    if r.ratio >= 1:
        vs_raw = f"{r.ratio:.1f}x smaller than raw"
    else:  # a tiny mesh: the container outweighs the data
        vs_raw = f"{1 / r.ratio:.1f}x larger than raw"
    click.echo(
        f"out: {out}: {r.output_faces} triangles, {_size(r.output_bytes)} "
        f"({d['bytes_per_triangle']:.2f} B/triangle, {vs_raw})"
    )
    if r.simplify_error:
        click.echo(f"simplification error: {r.simplify_error:.4g} (mesh units)")
