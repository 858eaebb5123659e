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
    """
    import logging

    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def emit_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False, default=str))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
