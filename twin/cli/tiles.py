"""`twin view`: the built model in a local web viewer (CesiumJS)."""

from __future__ import annotations

import click


@click.command("view")
@click.argument("model", type=click.Path(exists=True, file_okay=False))
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--db",
    type=click.Path(dir_okay=False),
    default=None,
    help="Live sync store (SQLite) whose entities are shown; default MODEL/../live.sqlite "
    "when present.",
)
@click.option(
    "--snapshot",
    type=click.Path(dir_okay=False),
    default=None,
    help="Instead of serving: render the view in headless Chromium to this PNG.",
)
def view(model, port, host, db, snapshot):
    """Show a built model (3D Tiles on quantized-mesh terrain, live entities).

    \b
    Example:
      twin demo twin-demo && twin view twin-demo/model
      (then open http://127.0.0.1:8000; no network or token needed)
    """
    from pathlib import Path

    from twin.tiles.viewer import serve_viewer, snapshot_viewer

    if db is None:
        guess = Path(model).resolve().parent / "live.sqlite"
        db = guess if guess.exists() else None
    if snapshot:
        snapshot_viewer(model, snapshot, db=db)
        click.echo(f"{snapshot}: the viewer's picture")
        return
    click.echo(f"twin viewer: http://{host}:{port}/  (Ctrl+C to stop)")
    serve_viewer(model, host=host, port=port, db=db)


@click.group()
def tiles():
    """3D Tiles of a built model: incremental updates."""


@tiles.command("update")
@click.argument("model", type=click.Path(exists=True, file_okay=False))
@click.option("--footprints", type=click.Path(dir_okay=False), default=None,
              help="New building footprints (replace the model's).")  # fmt: skip
@click.option("--dem", type=click.Path(dir_okay=False), default=None,
              help="New DEM (replace the model's).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print what changed as JSON.")
def tiles_update(model, footprints, dem, as_json):
    """Rewrite only the tiles (and their ancestors) whose content changed.

    \b
    Example:
      twin tiles update twin-demo/model --footprints new-blocks.gpkg
    """
    from twin.cli._common import emit_json
    from twin.pipeline import update
    from twin.progress import terminal

    m = update(model, dem=dem, footprints=footprints, progress=None if as_json else terminal())
    changed = {k: v["changed"] for k, v in m["stages"]["export"]["tiles"].items()}
    if as_json:
        emit_json({"changed": changed, "stages": m["stages"]})
        return
    for layer, uris in changed.items():
        kept = m["stages"]["export"]["tiles"][layer]["kept"]
        click.echo(f"{layer}: {len(uris)} tiles rewritten or removed, {kept} kept")
