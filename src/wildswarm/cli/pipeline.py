"""``wildswarm analyze`` and ``wildswarm models``: the pipeline's commands."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from wildswarm.cli import friendly_errors, main
from wildswarm.config import Settings
from wildswarm.errors import WildswarmError


def _pipeline_options(fn):
    for decorator in reversed((
        click.option("--fps", type=float, default=None, help="Frames analysed per second of video (0: all)."),
        click.option("--detector", default=None, help="Detector from `wildswarm models list`."),
        click.option("--classifier", default=None, help="Species classifier, or 'none'."),
        click.option("--pose", default=None, help="Pose model (superanimal_quadruped|superanimal_topviewmouse)."),
        click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default=None),
        click.option("--untrained", is_flag=True, default=None,
                     help="Run with untrained (random) weights, built where missing: for tests only."),
    )):
        fn = decorator(fn)
    return fn


@main.command()
@click.argument("videos", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("output"),
              show_default=True, help="Folder that receives one result folder per video.")
@_pipeline_options
@click.pass_obj
@friendly_errors
def analyze(settings: Settings, videos: tuple[Path, ...], out: Path, **options) -> None:
    """Analyse VIDEOS: detections, species, poses, labeled video, plot and summary per video."""
    from tqdm import tqdm
    from wildswarm.pipeline.run import Pipeline

    settings = settings.replace(**{k: v for k, v in options.items() if v is not None})
    click.echo(f"loading models: {settings.detector}, {settings.classifier}, {settings.pose} ...", err=True)
    pipeline = Pipeline(settings)
    if pipeline.untrained:
        click.secho("WARNING: untrained (random) weights in use: the results are meaningless "
                    "and are marked so.", fg="yellow", err=True)
    failed = 0
    for video in videos:
        bar = None

        def progress(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = tqdm(total=total, desc=video.name, unit="frame", file=sys.stderr)
            bar.total = total
            bar.n = done
            bar.refresh()

        try:
            result = pipeline.analyze(video, out, progress=progress)
        except WildswarmError as exc:
            click.secho(f"{video}: failed: {exc}", fg="red", err=True)
            failed += 1
            continue
        finally:
            if bar is not None:
                bar.close()
        click.echo(f"{video}: {result.frames_analysed} frames analysed, up to {result.animals} animals "
                   f"per frame -> {result.output_dir}")
    if failed:
        sys.exit(1)


@main.group()
def models() -> None:
    """List, fetch, verify and locate model weights (in WILDSWARM_MODELS_DIR, default <data>/models)."""


@models.command("list")
@click.pass_obj
def models_list(settings: Settings) -> None:
    """Every catalogued model and whether its weights are present."""
    from wildswarm.pipeline import models as cat
    for s in cat.CATALOGUE.values():
        path = cat.weights_path(settings.models, s)
        state = ("untrained" if cat.is_untrained(path) else "present") if path.is_file() else "missing"
        default = " (default)" if s.name in (settings.detector, settings.classifier, settings.pose) else ""
        click.echo(f"{s.kind:<10} {s.name:<24} {state:<9} {s.filename:<38} {s.description}{default}")


def _names(settings: Settings, names: tuple[str, ...], all_: bool) -> list[str]:
    from wildswarm.pipeline import models as cat
    if all_:
        return list(cat.CATALOGUE)
    if names:
        return list(names)
    return [n for n in (settings.detector, settings.classifier, settings.pose) if n and n != "none"]


@models.command("fetch")
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every catalogued model.")
@click.pass_obj
@friendly_errors
def models_fetch(settings: Settings, names: tuple[str, ...], all_: bool) -> None:
    """Download NAMES (default: the configured models) with the libraries' own downloaders."""
    from wildswarm.pipeline import models as cat
    for name in _names(settings, names, all_):
        path = cat.fetch(settings.models, cat.spec(name))
        click.echo(f"{name}: {path}")


@models.command("verify")
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True)
@click.pass_obj
def models_verify(settings: Settings, names: tuple[str, ...], all_: bool) -> None:
    """Check that the weights of NAMES are present and match their published checksums."""
    from wildswarm.pipeline import models as cat
    bad = 0
    for name in _names(settings, names, all_):
        try:
            w = cat.require(settings.models, cat.spec(name), allow_untrained=True)
        except WildswarmError as exc:
            click.secho(f"{name}: {exc}", fg="red")
            bad += 1
            continue
        check = "checksum ok" if w.spec.sha256 else "no published checksum"
        kind = "UNTRAINED stand-in" if w.untrained else check
        click.echo(f"{name}: {w.path} sha256={w.sha256} ({kind})")
    sys.exit(1 if bad else 0)


@models.command("path")
@click.argument("name", required=False)
@click.pass_obj
@friendly_errors
def models_path(settings: Settings, name: str | None) -> None:
    """The models folder, or where NAME's weight file belongs."""
    from wildswarm.pipeline import models as cat
    click.echo(cat.weights_path(settings.models, cat.spec(name)) if name else settings.models)


@models.command("untrained")
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every catalogued model that can be built.")
@click.option("--force", is_flag=True, help="Overwrite an existing untrained stand-in.")
@click.pass_obj
@friendly_errors
def models_untrained(settings: Settings, names: tuple[str, ...], all_: bool, force: bool) -> None:
    """Write NAMES with random weights in the real format, for tests (never over real weights)."""
    from wildswarm.pipeline import models as cat
    for name in _names(settings, names, all_):
        s = cat.spec(name)
        if all_ and not s.arch:
            click.echo(f"{name}: skipped (no published architecture to build)")
            continue
        path = cat.weights_path(settings.models, s)
        if path.exists() and not cat.is_untrained(path):
            click.secho(f"{name}: {path} holds real weights; left alone", fg="yellow")
            continue
        if path.exists() and not force:
            click.echo(f"{name}: {path} (untrained, already there)")
            continue
        click.echo(f"{name}: {cat.build_untrained(settings.models, s)} (UNTRAINED: random weights)")
