"""``wildswarm profiles``: the analysis profiles a job may name, and checking the operator's file."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from wildswarm.cli import friendly_errors, main
from wildswarm.config import Settings


@main.group(invoke_without_command=True)
@click.pass_context
@friendly_errors
def profiles(ctx: click.Context) -> None:
    """Analysis profiles: shipped ones, and the operator's (WILDSWARM_PROFILES_FILE, default
    <data>/profiles.toml), which add to or replace them. Without a subcommand: list them."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(profiles_list)


@profiles.command("list")
@click.pass_obj
@friendly_errors
def profiles_list(settings: Settings) -> None:
    """Each profile, where it comes from, and what it sets (the rest are the stack's settings)."""
    from wildswarm.profiles import load
    found = load(settings)
    for p in found:
        sets = ", ".join(f"{k}={v}" for k, v in p.values) or "nothing: the stack's settings"
        default = " (default)" if p.name == found.default else ""
        click.echo(f"{p.name}{default} [{p.source}]\n    {p.description}\n    sets: {sets}")


@profiles.command("show")
@click.argument("name", required=False)
@click.pass_obj
@friendly_errors
def profiles_show(settings: Settings, name: str | None) -> None:
    """NAME (default: the default profile) as JSON, with every setting it resolves to here."""
    from wildswarm.profiles import load
    click.echo(json.dumps(load(settings).get(name).describe(settings), indent=2))


@profiles.command("check")
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
@friendly_errors
def profiles_check(settings: Settings, path: Path | None) -> None:
    """Check a profiles file (default: the operator's) as the services read it; exit 1 if it is wrong."""
    from wildswarm.profiles import load
    settings = settings.replace(profiles_file=path) if path else settings
    if not settings.profiles_path.is_file():
        click.echo(f"{settings.profiles_path}: no such file; the shipped profiles are in use")
        sys.exit(1 if path else 0)
    found = load(settings)       # a ProfileError ends here, with where and why
    click.echo(f"{settings.profiles_path}: ok; profiles: {', '.join(found.names())}")
