"""The ``twin`` command line. Each verb has ``--help`` with an example."""

from __future__ import annotations

import json
import sys

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


def emit_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False, default=str))


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
@click.option("--force", is_flag=True, help="Rebuild every stage even if unchanged.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest to stdout.")
def build(survey, out, dem, footprints, lod, terrain_max_error, terrain_step, force, as_json):
    """Build a georeferenced city model (GLB + 3D Tiles) from a survey folder.

    \b
    Example:
      twin synth survey --preset small && twin build survey model
    """
    from twin.pipeline import BuildParams
    from twin.pipeline import build as run_build
    from twin.progress import terminal

    params = BuildParams(lod=lod, terrain_max_error=terrain_max_error, terrain_step=terrain_step)
    manifest = run_build(
        survey,
        out,
        dem=dem,
        footprints=footprints,
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


# ---------------------------------------------------------------- points
@main.group()
def points():
    """Point clouds (LAS/LAZ/COPC): info, ground classification, DTM and DSM."""


_crs_option = click.option(
    "--crs", default=None, help="CRS to use when the file has none (EPSG code or WKT)."
)


@points.command("info")
@click.argument("file", type=click.Path(dir_okay=False))
@_crs_option
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
@_crs_option
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
    @_crs_option
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
@main.group()
def terrain():
    """Terrain: DEM facts, error-bounded TINs, quantized-mesh tiles."""


@terrain.command("info")
@click.argument("dem", type=click.Path(dir_okay=False))
@click.option("--crs", default=None, help="CRS to use when the file has none.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def terrain_info(dem, crs, as_json):
    """Size, resolution, CRS, bounds, height range and nodata of a DEM.

    \b
    Example:
      twin terrain info survey/dem.tif --json
    """
    from twin.crs import crs_label
    from twin.terrain.dem import read_dem

    d = read_dem(dem, crs=crs)
    valid = d.valid
    h = d.heights[valid]
    x0, y0, x1, y1 = d.bounds()
    out = {
        "path": str(dem),
        "size": {"rows": d.shape[0], "cols": d.shape[1]},
        "resolution": [abs(d.transform.a), abs(d.transform.e)],
        "crs": crs_label(d.crs),
        "bounds": {"xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1},
        "heights": {"min": float(h.min()), "max": float(h.max()), "mean": float(h.mean())},
        "nodata": d.nodata,
        "valid_fraction": float(valid.mean()),
        "pixel_is_area": d.pixel_is_area,
    }
    if as_json:
        emit_json(out)
    else:
        for k, v in out.items():
            click.echo(f"{k:15s} {v}")


@terrain.command("tin")
@click.argument("dem", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option(
    "--max-error",
    type=float,
    required=True,
    help="Maximum vertical error (m) of the TIN at every DEM sample: a guarantee.",
)
@click.option(
    "--mode",
    type=click.Choice(["greedy", "rtin"]),
    default="greedy",
    show_default=True,
    help="greedy: fewest triangles; rtin: fastest.",
)
@click.option("--crs", default=None, help="CRS to use when the file has none.")
@click.option("--json", "as_json", is_flag=True, help="Print a summary as JSON.")
def terrain_tin(dem, out, max_error, mode, crs, as_json):
    """Triangulate a DEM within a guaranteed vertical error; write PLY (map coordinates)
    or GLB (local ENU frame, y-up, the frame in the GLB's extras).

    \b
    Example:
      twin terrain tin survey/dem.tif terrain.glb --max-error 0.5
    """
    import time
    from pathlib import Path

    from twin.errors import ParameterError
    from twin.terrain.dem import read_dem
    from twin.terrain.tin import tin

    suffix = Path(out).suffix.lower()
    if suffix not in (".ply", ".glb"):
        raise ParameterError(f"output must end in .ply or .glb, got {out!r}")
    d = read_dem(dem, crs=crs)
    t0 = time.perf_counter()
    v, f, reached = tin(d.heights, max_error, transform=d.transform, mask=d.valid, mode=mode)
    seconds = time.perf_counter() - t0
    _write_terrain_mesh(out, v, f, d)
    summary = {
        "out": str(out),
        "vertices": int(len(v)),
        "triangles": int(len(f)),
        "max_error": max_error,
        "max_error_reached": float(reached),
        "mode": mode,
        "seconds": round(seconds, 3),
        "dem_samples": int(d.valid.sum()),
    }
    if as_json:
        emit_json(summary)
    else:
        click.echo(
            f"{out}: {len(f):,} triangles from {summary['dem_samples']:,} samples, "
            f"max error {reached:.3f} (asked {max_error}) in {seconds:.2f} s"
        )


@terrain.command("tiles")
@click.argument("dem", type=click.Path(dir_okay=False))
@click.argument("outdir", type=click.Path(file_okay=False))
@click.option(
    "--max-error",
    type=float,
    required=True,
    help="Vertical error (m) of the finest level; doubles per level up.",
)
@click.option(
    "--max-zoom",
    type=int,
    default=None,
    help="Finest level (default: the DEM's native resolution).",
)
@click.option("--crs", default=None, help="CRS to use when the file has none.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def terrain_tiles(dem, outdir, max_error, max_zoom, crs, as_json):
    """Cut a DEM into quantized-mesh-1.0 tiles for CesiumJS (layer.json + gzipped
    {z}/{x}/{y}.terrain; serve them with Content-Encoding: gzip).

    \b
    Example:
      twin terrain tiles survey/dem.tif terrain/ --max-error 0.5
    """
    from twin.progress import terminal
    from twin.terrain.tiling import write_terrain_tiles

    s = write_terrain_tiles(
        dem,
        outdir,
        max_error=max_error,
        max_zoom=max_zoom,
        progress=None if as_json else terminal(),
        crs=crs,
    )
    if as_json:
        emit_json(s)
    else:
        click.echo(f"{outdir}: {s['tiles']} tiles, levels 0-{s['max_zoom']}, {s['bytes']:,} bytes")


def _write_terrain_mesh(out, v, f, dem) -> None:
    from pathlib import Path

    from twin.fileio import write_ply

    if Path(out).suffix.lower() == ".ply":
        from twin.crs import crs_label

        write_ply(out, v, f, comments=(f"crs {crs_label(dem.crs)}", "twin terrain tin"))
        return
    import numpy as np

    from twin.crs import LocalFrame
    from twin.tiles.gltf import GltfMesh, write_glb

    cx, cy = v[:, 0].mean(), v[:, 1].mean()
    frame = LocalFrame.at(cx, cy, 0.0, dem.crs)
    enu = frame.from_crs(v, dem.crs)
    write_glb(
        out,
        [GltfMesh(name="terrain", positions=enu, indices=np.asarray(f))],
        extras={"frame": frame.to_dict(), "source_crs": dem.crs.to_wkt()},
    )


# ---------------------------------------------------------------- sync
@main.group()
def sync():
    """Live entity state: replay, serve (HTTP + WebSocket), query, export."""


@sync.command("replay")
@click.argument("events", type=click.Path(dir_okay=False))
@click.option(
    "--db",
    type=click.Path(dir_okay=False),
    default="twin-live.sqlite",
    show_default=True,
    help="SQLite store (created if absent).",
)
@click.option(
    "--speed",
    type=float,
    default=None,
    help="Pace by event time at this speed-up (10 = ten times real time); "
    "default: as fast as possible.",
)
@click.option(
    "--until", type=float, default=None, help="Stop after this many seconds of event time."
)
@click.option("--batch-size", type=click.IntRange(1, 1_000_000), default=5000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the replay report as JSON.")
def sync_replay(events, db, speed, until, batch_size, as_json):
    """Replay an NDJSON event file into a store, with a per-outcome report.

    \b
    Example:
      twin sync replay survey/events.ndjson --db live.sqlite --speed 10
    """
    from twin.sync.replay import replay
    from twin.sync.store import SQLiteStore

    with SQLiteStore(db) as store:
        report = replay(events, store, speed=speed, until=until, batch_size=batch_size)
    d = report.to_dict()
    if as_json:
        emit_json(d)
        return
    click.echo(
        f"{d['events']} events from {d['lines']} lines: {d['applied']} applied, "
        f"{d['stale']} stale, {d['duplicate']} duplicate, {d['rejected']} rejected, "
        f"{d['malformed']} malformed ({d['events_per_second']:.0f} events/s)"
    )
    for line, event_id, reason in d["errors"][:20]:
        click.echo(f"  line {line} {event_id or ''}: {reason}", err=True)


@sync.command("state")
@click.argument("entity_id")
@click.option(
    "--db",
    type=click.Path(dir_okay=False, exists=True),
    default="twin-live.sqlite",
    show_default=True,
)
@click.option("--at", default=None, help="Time travel: the state as of this ISO 8601 time.")
@click.option("--history", "with_history", is_flag=True, help="Also print the history.")
def sync_state(entity_id, db, at, with_history):
    """Print an entity's current state (or its state at a past time) as JSON.

    \b
    Example:
      twin sync state urn:ngsi-ld:Vehicle:V0003 --db live.sqlite --at 2026-05-01T08:00:30Z
    """
    import dataclasses

    from twin.errors import InputError
    from twin.sync.store import SQLiteStore

    with SQLiteStore(db) as store:
        entity = store.state(entity_id, at=at)
        if entity is None:
            raise InputError(f"no entity {entity_id!r}" + (f" at {at}" if at else ""), path=db)
        out = {**dataclasses.asdict(entity), "observed_at": entity.observed_at}
        if with_history:
            out["history"] = store.history(entity_id)
    emit_json(out)


@sync.command("serve")
@click.option(
    "--db",
    type=click.Path(dir_okay=False),
    default="twin-live.sqlite",
    show_default=True,
    help="SQLite store (created if absent).",
)
@click.option(
    "--tokens",
    type=click.Path(dir_okay=False, exists=True),
    required=True,
    help="JSON/TOML file: token -> {name, scopes: {write: [types] or '*', read}}.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8765, show_default=True)
@click.option(
    "--model",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="A `twin build` output (or survey) folder: place entities on that model.",
)
def sync_serve(db, tokens, host, port, model):
    """Serve the live store over HTTP (batch POST /events, GET /entities...) and
    WebSocket (/ws, filtered deltas with a resume cursor), with token auth and scopes.

    \b
    Example:
      twin sync serve --db live.sqlite --tokens tokens.json --model twin-demo/model
    """
    from twin.sync.server import serve

    serve(db, tokens=tokens, host=host, port=port, model=model)


@sync.command("export-czml")
@click.option(
    "--db",
    type=click.Path(dir_okay=False, exists=True),
    default="twin-live.sqlite",
    show_default=True,
)
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--t0", default=None, help="Start time (ISO 8601); default: the first event.")
@click.option("--t1", default=None, help="End time (ISO 8601); default: the last event.")
@click.option("--types", default=None, help="Comma-separated entity types.")
def sync_export_czml(db, out, t0, t1, types):
    """Export entity history as time-dynamic CZML (for Cesium).

    \b
    Example:
      twin sync export-czml --db live.sqlite live.czml --types person,vehicle
    """
    from twin.sync.czml import export_czml
    from twin.sync.store import SQLiteStore

    with SQLiteStore(db) as store:
        r = export_czml(store, out, t0=t0, t1=t1, types=types.split(",") if types else None)
    click.echo(f"{out}: {r['entities']} entities, {r['samples']} samples")


@sync.command("export-geojson")
@click.option(
    "--db",
    type=click.Path(dir_okay=False, exists=True),
    default="twin-live.sqlite",
    show_default=True,
)
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--at", default=None, help="Snapshot time (ISO 8601); default: now.")
@click.option("--types", default=None, help="Comma-separated entity types.")
def sync_export_geojson(db, out, at, types):
    """Export a GeoJSON snapshot of entity state (current, or as of --at).

    \b
    Example:
      twin sync export-geojson --db live.sqlite incidents.geojson --types incident
    """
    from twin.sync.geojson import export_geojson
    from twin.sync.store import SQLiteStore

    with SQLiteStore(db) as store:
        n = export_geojson(store, out, at=at, types=types.split(",") if types else None)
    click.echo(f"{out}: {n} features")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
