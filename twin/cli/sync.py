"""`twin sync`: live entity state (replay, serve, query, export)."""

from __future__ import annotations

import click

from twin.cli._common import emit_json


def _open(db: str, *, exists: bool, **kw):
    """The store at ``db`` (SQLite path or postgresql:// URL); ``exists``: a SQLite
    file must be there already (reading commands)."""
    from pathlib import Path

    from twin.errors import InputError
    from twin.sync.store import open_store

    if exists and "://" not in db and not Path(db).is_file():
        raise InputError("no such store file", path=db)
    return open_store(db, **kw)


def _t(value: str | None, what: str):
    """A time option (ISO 8601 with a zone, or epoch seconds/ms/us/ns) -> epoch ns."""
    if value is None:
        return None
    from twin.sync.model import parse_time_arg

    return parse_time_arg(value, what=what)


def _type_list(text: str | None) -> list[str] | None:
    """``person,vehicle`` -> a list of known entity types (ParameterError otherwise)."""
    from twin.sync.model import parse_types

    return parse_types(text)


def _out_path(out: str | None, output: str | None, db: str, suffix: str) -> str:
    """The output file: the argument or ``-o``, else the store's file name with
    ``suffix`` (``twin-live`` + suffix for a database URL)."""
    from pathlib import Path

    from twin.errors import ParameterError

    if out and output and out != output:
        raise ParameterError(f"two output files given: {out} and {output}")
    if out or output:
        return out or output
    return "twin-live" + suffix if "://" in db else str(Path(db).with_suffix(suffix))


def _bbox_arg(text: str | None):
    """``lon0,lat0,lon1,lat1`` -> a 4-tuple of floats (ParameterError otherwise)."""
    if not text:
        return None
    from twin.sync.server import _bbox

    return _bbox(text)


def _output_option(suffix: str):
    """``-o/--output FILE``, the alternative to an export's OUT argument."""
    return click.option(
        "-o",
        "--output",
        "output",
        type=click.Path(dir_okay=False),
        default=None,
        help=f"Output file (or as the argument); default: the store's name with {suffix}.",
    )


_db_option = click.option(
    "--db",
    default="twin-live.sqlite",
    show_default=True,
    help="SQLite store file, or a postgresql:// URL.",
)


@click.group()
def sync():
    """Live entity state: replay, serve (HTTP, WebSocket, MQTT), state, indicators, export."""


@sync.command("replay")
@click.argument("events", type=click.Path(dir_okay=False, allow_dash=False))
@click.option(
    "--db",
    default="twin-live.sqlite",
    show_default=True,
    help="SQLite store file (created if absent), or a postgresql:// URL.",
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
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "ndjson", "csv", "geojson"]),
    default="auto",
    show_default=True,
    help="Event file format (auto: from the file name, else its first character).",
)
@click.option(
    "--crs",
    default=None,
    help="CRS of positions that name none (CSV x/y columns, GeoJSON coordinates), "
    "e.g. EPSG:32651; default WGS 84.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the replay report as JSON.")
def sync_replay(events, db, speed, until, batch_size, fmt, crs, as_json):
    """Replay an event file (NDJSON, CSV or GeoJSON) into a store, with a
    per-outcome report (EVENTS '-': standard input). Malformed records are
    reported by line and skipped; a file without a single valid event is an error.

    \b
    Example:
      twin sync replay survey/events.ndjson --db live.sqlite --speed 10
      twin sync replay positions.csv --db live.sqlite --crs EPSG:32651
      cat day1.ndjson day2.ndjson | twin sync replay - --db live.sqlite
    """
    from twin.errors import InputError
    from twin.sync.replay import replay

    if speed is not None and not speed > 0:
        from twin.errors import ParameterError

        raise ParameterError(f"--speed must be > 0, got {speed}")
    with _open(db, exists=False) as store:
        report = replay(
            events,
            store,
            speed=speed,
            until=until,
            batch_size=batch_size,
            fmt=None if fmt == "auto" else fmt,
            crs=crs,
        )
    d = report.to_dict()
    if d["events"] == 0 and d["malformed"] > 0:
        ln, _, reason = d["errors"][0]
        raise InputError(
            f"no valid event in {d['malformed']} records ({d['unit']} {ln}: {reason})",
            path=events,
        )
    if as_json:
        emit_json(d)
        return
    click.echo(
        f"{d['events']} events from {d['lines']} {d['unit']}s: {d['applied']} applied, "
        f"{d['stale']} stale, {d['duplicate']} duplicate, {d['rejected']} rejected, "
        f"{d['malformed']} malformed ({d['events_per_second']:.0f} events/s)"
    )
    for line, event_id, reason in d["errors"][:20]:
        click.echo(f"  {events}: {d['unit']} {line} {event_id or ''}: {reason}", err=True)


@sync.command("state")
@click.argument("entity_id")
@_db_option
@click.option(
    "--at",
    default=None,
    help="Time travel: the state as of this time (ISO 8601 with a zone, or epoch "
    "seconds/ms/us/ns).",
)
@click.option("--history", "with_history", is_flag=True, help="Also print the history.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["twin", "ngsi-ld", "ngsi-ld-keyvalues"]),
    default="twin",
    show_default=True,
    help="twin's JSON form, or NGSI-LD (normalized or keyValues).",
)
def sync_state(entity_id, db, at, with_history, fmt):
    """Print an entity's current state (or its state at a past time) as JSON.

    \b
    Example:
      twin sync state urn:ngsi-ld:Vehicle:V0003 --db live.sqlite --at 2026-05-01T08:00:30Z
    """
    import dataclasses

    from twin.errors import InputError
    from twin.sync.model import to_ngsi_ld

    t = _t(at, "--at")
    with _open(db, exists=True) as store:
        entity = store.state(entity_id, at=t)
        if entity is None:
            raise InputError(f"no entity {entity_id!r}" + (f" at {at}" if at else ""), path=db)
        if fmt == "twin":
            out = {**dataclasses.asdict(entity), "observed_at": entity.observed_at}
        else:
            out = to_ngsi_ld(entity, key_values=fmt == "ngsi-ld-keyvalues", context=True)
        if with_history:
            out["history"] = store.history(entity_id)
    emit_json(out)


@sync.command("indicators")
@_db_option
@click.option("--t0", default=None, help="Window start (ISO 8601); default: the first event.")
@click.option("--t1", default=None, help="Window end (ISO 8601); default: now.")
@click.option("--types", default=None, help="Comma-separated entity types.")
@click.option("--cells", default=None, help="Comma-separated cells (grid/IX/IY, district/NAME).")
@click.option("--json", "as_json", is_flag=True, help="Print the indicators as JSON.")
def sync_indicators(db, t0, t1, types, cells, as_json):
    """City vital signs per cell and type: entities (density), open incidents,
    event rate, mean dispatch and response times over a time window.

    \b
    Example:
      twin sync indicators --db live.sqlite --t0 2026-05-01T08:00Z --t1 2026-05-01T09:00Z
    """
    with _open(db, exists=True) as store:
        rows = store.indicators(
            _t(t0, "--t0"),
            _t(t1, "--t1"),
            types=_type_list(types),
            cells=cells.split(",") if cells else None,
        )
        meta = {"cell_deg": store.cell_deg, "bucket_s": store.bucket_s}
    if as_json:
        emit_json({**meta, "indicators": rows})
        return
    click.echo(
        f"{'cell':<22} {'type':<9} {'count':>7} {'open':>5} {'events':>8} "
        f"{'per s':>8} {'per km2':>9} {'dispatch s':>10} {'response s':>10}"
    )
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for d in rows:
        click.echo(
            f"{d['cell']:<22} {d['type']:<9} {d['count']:>7} {d['open']:>5} {d['events']:>8} "
            f"{d['rate_per_s']:>8.2f} {fmt(d['density_per_km2'], '.1f'):>9} "
            f"{fmt(d['mean_dispatch_s'], '.0f'):>10} {fmt(d['mean_response_s'], '.0f'):>10}"
        )


@sync.command("serve")
@click.option(
    "--db",
    default="twin-live.sqlite",
    show_default=True,
    help="SQLite store file (created if absent), or a postgresql:// URL.",
)
@click.option(
    "--tokens",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    envvar="TWIN_SYNC_TOKENS",
    help="JSON/TOML file: token -> {name, scopes: {write: [types] or '*', read}} "
    "(or $TWIN_SYNC_TOKENS). Without one, a random admin token is made for this run "
    "and printed: every endpoint still needs a token.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8765, show_default=True)
@click.option(
    "--model",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="A `twin build` output (or survey) folder: place entities on that model.",
)
@click.option(
    "--mqtt",
    default=None,
    metavar="HOST:PORT/TOPIC",
    help="Also ingest from this MQTT topic (QoS 1, acknowledged after commit; "
    "outcomes published on TOPIC/outcomes).",
)
@click.option(
    "--mqtt-types",
    default=None,
    help="Comma-separated entity types the MQTT feed may write (default: all).",
)
def sync_serve(db, tokens, host, port, model, mqtt, mqtt_types):
    """Serve the live store over HTTP (batch POST /events, GET /entities...) and
    WebSocket (/ws, filtered deltas with a resume cursor), with token auth and scopes.

    \b
    Example:
      twin sync serve --db live.sqlite --tokens tokens.json --model twin-demo/model
      twin sync serve --db live.sqlite --tokens tokens.json --mqtt 127.0.0.1:1883/city/events
      twin sync serve --db postgresql://twin@localhost/twin --tokens tokens.json
    """
    from twin.sync.server import serve

    if tokens is None:
        import secrets

        token = secrets.token_urlsafe(24)
        tokens = {token: {"name": "admin", "scopes": {"write": "*", "read": True}}}
        click.echo(
            f"no --tokens file: this run's admin token (read and write) is {token}\n"
            f"  curl -H 'Authorization: Bearer {token}' http://{host}:{port}/health",
            err=True,
        )
    types = mqtt_types.split(",") if mqtt_types else None
    serve(db, tokens=tokens, host=host, port=port, model=model, mqtt=mqtt, mqtt_types=types)


@sync.command("export-czml")
@_db_option
@click.argument("out", type=click.Path(dir_okay=False), required=False)
@_output_option(".czml")
@click.option(
    "--t0", default=None, help="Start time (ISO 8601 or epoch); default: the first event."
)
@click.option("--t1", default=None, help="End time (ISO 8601 or epoch); default: the last event.")
@click.option("--types", default=None, help="Comma-separated entity types.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def sync_export_czml(db, out, output, t0, t1, types, as_json):
    """Export entity history as time-dynamic CZML (for Cesium).

    \b
    Example:
      twin sync export-czml --db live.sqlite live.czml --types person,vehicle
    """
    from twin.sync.czml import export_czml

    out = _out_path(out, output, db, ".czml")
    with _open(db, exists=True) as store:
        r = export_czml(
            store,
            out,
            t0=_t(t0, "--t0"),
            t1=_t(t1, "--t1"),
            types=_type_list(types),
        )
    if as_json:
        emit_json(r)
        return
    click.echo(f"{out}: {r['entities']} entities, {r['samples']} samples")


@sync.command("export-geojson")
@_db_option
@click.argument("out", type=click.Path(dir_okay=False), required=False)
@_output_option(".geojson")
@click.option("--at", default=None, help="Snapshot time (ISO 8601); default: now.")
@click.option("--types", default=None, help="Comma-separated entity types.")
@click.option(
    "--bbox",
    default=None,
    metavar="LON0,LAT0,LON1,LAT1",
    help="Only entities inside this WGS 84 box.",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def sync_export_geojson(db, out, output, at, types, bbox, as_json):
    """Export a GeoJSON snapshot of entity state (current, or as of --at).

    \b
    Example:
      twin sync export-geojson --db live.sqlite incidents.geojson --types incident
    """
    from twin.sync.geojson import export_geojson

    out = _out_path(out, output, db, ".geojson")
    with _open(db, exists=True) as store:
        n = export_geojson(
            store, out, at=_t(at, "--at"), types=_type_list(types), bbox=_bbox_arg(bbox)
        )
    if as_json:
        emit_json({"path": str(out), "features": n})
        return
    click.echo(f"{out}: {n} features")
