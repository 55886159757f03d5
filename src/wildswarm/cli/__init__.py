"""The ``wildswarm`` command: wiring only (``cli/pipeline.py``, ``cli/jobs.py``, ``cli/web.py``, ``cli/export.py``).

Each command builds a :class:`Settings` (environment, then options), hands it
to the module that does the work, and turns a :class:`WildswarmError` into a
one-line message and exit status 2 -- never a traceback for bad input.
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from wildswarm import __version__
from wildswarm.config import Settings
from wildswarm.errors import WildswarmError


def friendly_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except WildswarmError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wildswarm")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Shared-filesystem root (WILDSWARM_DATA, default ./data).")
@click.pass_context
def main(ctx: click.Context, data: str | None) -> None:
    """Analyse wildlife videos: MegaDetector finds animals, DeepLabCut SuperAnimal their pose."""
    try:
        ctx.obj = Settings.from_env(data=data)
    except WildswarmError as exc:
        raise click.UsageError(str(exc)) from None


# Each group of commands lives in its own module and registers itself on ``main``.
from wildswarm.cli import pipeline as _pipeline  # noqa: E402,F401
from wildswarm.cli import jobs as _jobs  # noqa: E402,F401
from wildswarm.cli import web as _web  # noqa: E402,F401
from wildswarm.cli import export as _export  # noqa: E402,F401
from wildswarm.cli import profiles as _profiles  # noqa: E402,F401
