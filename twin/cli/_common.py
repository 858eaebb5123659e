"""Helpers shared by the ``twin`` command modules."""

from __future__ import annotations

import json

import click


def emit_json(obj) -> None:
    """Print ``obj`` as indented JSON (what ``--json`` options write)."""
    click.echo(json.dumps(obj, indent=2, sort_keys=False, default=str))


crs_option = click.option(
    "--crs", default=None, help="CRS to use when the file has none (EPSG code or WKT)."
)
