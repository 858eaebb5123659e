"""`twin terrain`: DEM info, TIN, quantized-mesh tiles."""

from __future__ import annotations

import click

from twin.cli._common import emit_json


@click.group()
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
@click.option(
    "--tile-size",
    type=int,
    default=None,
    help="Triangulate in tiles of N x N samples in parallel (large rasters; 129-257 is fastest).",
)
@click.option(
    "--constraints",
    "constraints_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Vector file (GeoPackage, GeoJSON, ...) of lines/polygons forced in as TIN edges.",
)
@click.option(
    "--footprints",
    "footprints_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Building footprints: rings forced in, terrain flat at each base height inside.",
)
@click.option(
    "--base",
    type=click.Choice(["min", "median"]),
    default="min",
    show_default=True,
    help="Base height of a footprint: lowest or median ground under it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a summary as JSON.")
def terrain_tin(
    dem,
    out,
    max_error,
    mode,
    crs,
    tile_size,
    constraints_path,
    footprints_path,
    base,
    as_json,
):
    """Triangulate a DEM within a guaranteed vertical error; write PLY (map coordinates)
    or GLB (local ENU frame, y-up, the frame in the GLB's extras).

    \b
    Examples:
      twin terrain tin survey/dem.tif terrain.glb --max-error 0.5
      twin terrain tin big.tif terrain.ply --max-error 1 --tile-size 257

    A large raster (over 4096 x 4096 samples, or one whose untiled TIN could need
    more than half the memory) is triangulated in tiles (default 257) read window by
    window: memory bounded by the tile size plus the output (greedy mode, without
    --constraints/--footprints, which read the raster whole).
      twin terrain tin survey/dem.tif seated.glb --max-error 0.2 \\
          --footprints survey/footprints.gpkg --base min
    """
    import time
    from pathlib import Path

    from twin.errors import InputError, ParameterError
    from twin.progress import terminal
    from twin.terrain.dem import read_dem
    from twin.terrain.tin import tin

    suffix = Path(out).suffix.lower()
    if suffix not in (".ply", ".glb"):
        raise ParameterError(f"output must end in .ply or .glb, got {out!r}")
    from twin.terrain.dem import DemReader
    from twin.terrain.windowed import DEFAULT_TILE, LARGE_SAMPLES, is_large, tin_file

    reader = DemReader(dem, crs=crs)
    if is_large(reader.shape) and not constraints_path and not footprints_path:
        rows, cols = reader.shape
        if mode != "greedy":
            raise InputError(
                f"{rows} x {cols} samples is a large raster (over {LARGE_SAMPLES:,} samples "
                "or half the memory): RTIN needs it whole in memory; use --mode greedy, "
                "which triangulates it in tiles from windowed reads",
                path=reader.path,
            )
        t0 = time.perf_counter()
        st: dict = {}
        v, f, reached = tin_file(
            reader,
            max_error,
            tile_size or DEFAULT_TILE,
            progress=None if as_json else terminal(),
            stats=st,
        )
        seconds = time.perf_counter() - t0
        _write_terrain_mesh(out, v, f, reader)
        _report_tin(
            as_json,
            out,
            v,
            f,
            max_error,
            reached,
            mode,
            seconds,
            st["valid_samples"],
            st["tile_size"],
            windowed=True,
        )
        return
    d = read_dem(dem, crs=crs)
    constraints = _read_vectors(constraints_path, d.crs) if constraints_path else None
    t0 = time.perf_counter()
    bases = None
    if footprints_path:
        from twin.terrain.seating import seated_tin

        if mode != "greedy":
            raise ParameterError("--footprints needs --mode greedy")
        fp = _read_vectors(footprints_path, d.crs)
        v, f, reached, bases = seated_tin(
            d.heights, fp, max_error, d.transform, d.valid, stat=base, tile_size=tile_size
        )
    else:
        v, f, reached = tin(
            d.heights,
            max_error,
            transform=d.transform,
            mask=d.valid,
            mode=mode,
            constraints=constraints,
            tile_size=tile_size,
        )
    seconds = time.perf_counter() - t0
    _write_terrain_mesh(out, v, f, d)
    extra = {}
    if bases is not None:
        extra["footprints"] = int(len(bases))
        extra["base"] = base
        extra["base_heights"] = [None if b != b else round(float(b), 4) for b in bases]
    _report_tin(
        as_json,
        out,
        v,
        f,
        max_error,
        reached,
        mode,
        seconds,
        int(d.valid.sum()),
        tile_size,
        windowed=False,
        extra=extra,
    )


def _report_tin(
    as_json, out, v, f, max_error, reached, mode, seconds, samples, tile_size, windowed, extra=None
):
    summary = {
        "out": str(out),
        "vertices": int(len(v)),
        "triangles": int(len(f)),
        "max_error": max_error,
        "max_error_reached": float(reached),
        "mode": mode,
        "seconds": round(seconds, 3),
        "dem_samples": int(samples),
        "tile_size": tile_size,
        "windowed": windowed,
        **(extra or {}),
    }
    if as_json:
        emit_json(summary)
    else:
        click.echo(
            f"{out}: {len(f):,} triangles from {summary['dem_samples']:,} samples, "
            f"max error {reached:.3f} (asked {max_error}) in {seconds:.2f} s"
            + (" (tiles from windowed reads)" if windowed else "")
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

    A large raster (over 4096 x 4096 samples, or half the memory) is read window by
    window: coarse levels sample an overview of at most 2048 x 2048 samples, finer
    ones each tile's full-resolution window.
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


def _read_vectors(path, crs):
    """Geometries of a vector file, in ``crs`` (reprojected when the file has another)."""
    from pathlib import Path

    from twin.errors import InputError

    p = Path(path)
    if not p.exists():
        raise InputError("vector file not found", path=p)
    try:
        import geopandas as gpd

        gdf = gpd.read_file(p)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise InputError(f"not a readable vector file ({exc})", path=p) from None
    if gdf.crs is not None and crs is not None and not gdf.crs.equals(crs):
        gdf = gdf.to_crs(crs)
    return list(gdf.geometry.dropna())


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
