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
        click.option("--profile", default=None,
                     help="Analysis profile (`wildswarm profiles`); the options below override its settings."),
        click.option("--fps", type=float, default=None, help="Frames analysed per second of video (0: all)."),
        click.option("--detector", default=None, help="Detector from `wildswarm models list`."),
        click.option("--classifier", default=None, help="Species classifier, or 'none'."),
        click.option("--pose", default=None, help="Pose model (superanimal_quadruped|superanimal_topviewmouse)."),
        click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default=None),
        click.option("--smooth", type=click.Choice(["none", "median", "savgol"]), default=None,
                     help="Also write keypoints_filtered.h5/.csv, each track's keypoints filtered over time."),
        click.option("--smooth-window", type=int, default=None, help="Frames the smoothing filter spans (odd)."),
        click.option("--segment-seconds", type=float, default=None,
                     help="Analyse longer videos in segments of this length, resuming from the finished ones "
                          "after a crash (default 60; 0: never)."),
        click.option("--track-lost-seconds", type=float, default=None,
                     help="An animal unseen this long comes back with a new id (default 5)."),
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
    from wildswarm.profiles import load

    profile = load(settings).get(options.pop("profile"))
    settings = profile.apply(settings).replace(**{k: v for k, v in options.items() if v is not None})
    click.echo(f"profile {profile.name}; loading models: {settings.detector}, {settings.classifier}, "
               f"{settings.pose} ...", err=True)
    pipeline = Pipeline(settings)
    if pipeline.untrained:
        click.secho("WARNING: untrained (random) weights in use: the results are meaningless "
                    "and are marked so.", fg="yellow", err=True)
    failed, named = 0, {}                 # result name -> the video of this run written there
    for video in videos:
        bar = None
        name = _result_name(video, named)

        def progress(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = tqdm(total=total, desc=video.name, unit="frame", file=sys.stderr)
            bar.total = total
            bar.n = done
            bar.refresh()

        try:
            result = pipeline.analyze(video, out, name=name, progress=progress)
        except WildswarmError as exc:
            click.secho(f"{video}: failed: {exc}", fg="red", err=True)
            failed += 1
            continue
        except OSError as exc:          # --out read-only, full, or under a file: this video's failure
            click.secho(f"{video}: failed: cannot write its result in {out}: {exc.strerror or exc}", fg="red",
                        err=True)
            failed += 1
            continue
        finally:
            if bar is not None:
                bar.close()
        click.echo(f"{video}: {result.frames_analysed} frames analysed, {result.summary['animals']['distinct']} "
                   f"animals tracked, up to {result.animals} per frame -> {result.output_dir}")
    if failed:
        sys.exit(1)


def _result_name(video: Path, named: dict[str, Path]) -> str:
    """``video``'s result folder in this run: its cleaned-up stem, numbered on where another video of the
    run cleans up alike ("a b.mp4" and "a_b.mp4"), which would otherwise replace the first's results."""
    from wildswarm.layout import stem_of
    try:
        stem = stem_of(video.name)
    except WildswarmError:
        return ""                           # a name with nothing usable: analyze says so for this video
    name, n = stem, 1
    while named.get(name, video.resolve()) != video.resolve():
        n += 1
        name = f"{stem}-{n}"
    if name != stem:
        click.secho(f"{video}: its result name {stem} is this run's {named[stem].name}'s: written as {name}",
                    fg="yellow", err=True)
    named[name] = video.resolve()
    return name


@main.group()
def models() -> None:
    """List, fetch, trust, verify and locate model weights (in WILDSWARM_MODELS_DIR, default <data>/models).

    Workers load only weight files whose SHA-256 is recorded in weights.lock.json (by fetch, trust or
    untrained) or that match a checksum upstream publishes: see docs/models.md.
    """


@models.command("list")
@click.pass_obj
@friendly_errors
def models_list(settings: Settings) -> None:
    """Every catalogued model and how its weights were recorded (`verify` checks them)."""
    from wildswarm.pipeline import models as cat
    from wildswarm.profiles import load
    needed = set(load(settings).models(settings))
    for s in cat.CATALOGUE.values():
        state = cat.state(settings.models, s)
        default = " (default)" if s.name in (settings.detector, settings.classifier, settings.pose) else ""
        default = default or (" (a profile's)" if s.name in needed else "")
        click.echo(f"{s.kind:<10} {s.name:<24} {state:<15} {s.filename:<38} {s.description}{default}")


def _names(settings: Settings, names: tuple[str, ...], all_: bool, profiles: tuple[str, ...] = ()) -> list[str]:
    from wildswarm.pipeline import models as cat
    from wildswarm.profiles import load
    if all_:
        return list(cat.CATALOGUE)
    if names:
        return list(names)
    found = load(settings)
    if profiles:
        return list(dict.fromkeys(m for p in profiles for m in found.get(p or None).models(settings)))
    return found.models(settings)      # what every analysis profile needs


_PROFILE_OPTION = click.option("--profile", "profiles", multiple=True,
                               help="Only the models of this analysis profile (repeatable; '' : the default one).")


@models.command("fetch")
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every catalogued model.")
@_PROFILE_OPTION
@click.pass_obj
@friendly_errors
def models_fetch(settings: Settings, names: tuple[str, ...], all_: bool, profiles: tuple[str, ...]) -> None:
    """Download NAMES (default: every model an analysis profile uses) and record their SHA-256 in
    weights.lock.json. One that cannot be fetched does not stop the others; exit 1 if any failed."""
    from wildswarm.pipeline import models as cat
    from wildswarm.pipeline import weights_lock
    failed = 0
    for name in _names(settings, names, all_, profiles):
        try:
            path = cat.fetch(settings.models, cat.spec(name))
        except WildswarmError as exc:
            click.secho(f"{name}: {exc}", fg="red", err=True)
            failed += 1
            continue
        click.echo(f"{name}: {path} (recorded in {weights_lock.LOCK_NAME})")
        failed += not _export_one(settings, name)
    sys.exit(1 if failed else 0)


TRUST_MEANS = ("Trusting a file records its SHA-256 in {lock}; workers then load it, and loading a checkpoint "
               "runs code from it (checkpoints are Python pickles, see docs/models.md). Trust only files you got "
               "from the source named for each model; where upstream publishes a checksum, the file must match it.")


def _is_stand_in(settings: Settings, s) -> bool:
    from wildswarm.pipeline import models as cat
    try:
        return cat.check(settings.models, s).untrained
    except WildswarmError:
        return False


@models.command("trust")
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every catalogued model whose file is in the models folder.")
@click.pass_obj
@friendly_errors
def models_trust(settings: Settings, names: tuple[str, ...], all_: bool) -> None:
    """Record weight files that were copied into the models folder by hand, so workers load them.

    For sites without internet access: copy the real files in (`wildswarm models path NAME` says
    where), then trust them. A changed file must be trusted again.
    """
    from wildswarm.pipeline import models as cat
    from wildswarm.pipeline import weights_lock
    if not names and not all_:
        raise click.UsageError("name the models whose files you copied in, or --all")
    click.echo(TRUST_MEANS.format(lock=weights_lock.lock_path(settings.models)))
    before = weights_lock.read(settings.models)
    bad = 0
    for name in _names(settings, names, all_):
        try:
            s = cat.spec(name)
            if all_ and not cat.weights_path(settings.models, s).is_file():
                continue
            if all_ and _is_stand_in(settings, s):
                click.echo(f"{name}: skipped (untrained stand-in)")
                continue
            w = cat.trust(settings.models, s)
        except WildswarmError as exc:
            click.secho(f"{name}: {exc}", fg="red")
            bad += 1
            continue
        old = before.get(s.filename)
        check = (f"published {s.published.algorithm} matches" if s.published else
                 f"no published checksum to check it against: you vouch that it is the file from {s.source}")
        click.echo(f"{name}: trusted {w.path} sha256={w.sha256} ({check})"
                   + (f"; replaces the entry of {old.when} ({old.how}, sha256 {old.sha256})"
                      if old and old.sha256 != w.sha256 else ""))
        bad += not _export_one(settings, name)
    sys.exit(1 if bad else 0)


@models.command("verify")
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True)
@_PROFILE_OPTION
@click.pass_obj
@friendly_errors
def models_verify(settings: Settings, names: tuple[str, ...], all_: bool, profiles: tuple[str, ...]) -> None:
    """Check NAMES (default: every model an analysis profile uses) as workers do: exit 1 if any would be refused.

    A file passes if it matches the checksum upstream publishes or its entry in weights.lock.json.
    """
    from wildswarm.pipeline import models as cat
    bad = 0
    checked = []
    for name in _names(settings, names, all_, profiles):
        try:
            s = cat.spec(name)
            checked.append(s)
            w = cat.check(settings.models, s)
        except WildswarmError as exc:
            click.secho(f"{name}: {exc}", fg="red")
            bad += 1
            continue
        kind = f"UNTRAINED stand-in, {w.basis}" if w.untrained else w.basis
        click.echo(f"{name}: ok {w.path} sha256={w.sha256} ({kind})")
    try:
        for warning in cat.permission_warnings(settings.models, checked):
            click.secho(f"warning: {warning}", fg="yellow")
    except OSError:
        pass
    sys.exit(1 if bad else 0)


@models.command("export")
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every catalogued model whose weights are in the models folder.")
@_PROFILE_OPTION
@click.pass_obj
@friendly_errors
def models_export(settings: Settings, names: tuple[str, ...], all_: bool, profiles: tuple[str, ...]) -> None:
    """Export NAMES (default: every model an analysis profile uses) to ONNX beside their weights, for the
    ONNX Runtime and OpenVINO backends; an export already there for the same weights is kept.

    fetch, trust and untrained do this too. The weights are checked as workers check them first."""
    bad = 0
    for name in _names(settings, names, all_, profiles):
        bad += not _export_one(settings, name, quiet_missing=all_, required=True)
    sys.exit(1 if bad else 0)


def _export_one(settings: Settings, name: str, *, quiet_missing: bool = False, required: bool = False) -> bool:
    """Export ``name`` beside its weights; False if that failed and was ``required`` (else a warning:
    recording the weights stands, and workers run an unexported model on PyTorch)."""
    from wildswarm.errors import MissingWeightsError
    from wildswarm.pipeline import backends
    from wildswarm.pipeline import models as cat
    try:
        w = cat.check(settings.models, cat.spec(name))
        path = backends.export_weights(w)
    except MissingWeightsError as exc:
        if quiet_missing:
            return True
        click.secho(f"{name}: {exc}", fg="red")
        return False
    except WildswarmError as exc:
        click.secho(f"{name}: {exc}" + ("" if required else "; it runs on PyTorch until `wildswarm models export` "
                                         "succeeds"), fg="red" if required else "yellow")
        return not required
    except ImportError as exc:
        click.secho(f"{name}: not exported ({exc}); the ONNX backends need the pipeline's onnx package", fg="yellow")
        return True
    click.echo(f"{name}: exported {path.name}")
    return True


VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv")


@models.command("quantize")
@click.option("--videos", "videos", multiple=True, required=True,
              type=click.Path(exists=True, path_type=Path),
              help="A video of your own deployments, or a folder of them (repeatable): the frames whose "
                   "ranges INT8 keeps.")
@click.option("--frames", "count", type=int, default=64, show_default=True,
              help="Frames sampled evenly across the videos.")
@_PROFILE_OPTION
@click.pass_obj
@friendly_errors
def models_quantize(settings: Settings, videos: tuple[Path, ...], count: int, profiles: tuple[str, ...]) -> None:
    """INT8 exports, for CPU nodes, of the models of the default analysis profile (or of --profile),
    calibrated on frames of your own videos. Workers use them where WILDSWARM_PRECISION=int8 (or a
    profile's precision = "int8") is set, after the same equality check as every backend.

    The float32 detector finds the animals in those frames; each model's ranges come from the inputs
    the pipeline gives it (the letterboxed frames; the crops of the animals' boxes). Use videos like
    the ones it will analyse: INT8 is only as good as its calibration, and whether real weights stay
    as accurate needs labelled videos (docs/backends.md). Run it again after new weights."""
    from wildswarm.pipeline import backends, quantize
    from wildswarm.profiles import load
    if count < 1:
        raise click.BadParameter("must be at least 1", param_hint="--frames")
    files = []
    for v in videos:
        files += sorted(f for f in v.iterdir() if f.suffix.lower() in VIDEO_SUFFIXES) if v.is_dir() else [v]
    if not files:
        raise click.UsageError(f"no video ({', '.join(VIDEO_SUFFIXES)}) in {', '.join(map(str, videos))}")
    frames, source = quantize.calibration_frames(files, count)
    click.echo(f"{source['frames']} frames from {len(source['videos'])} video(s)")
    found, done, bad = load(settings), set(), 0
    for profile in (found.get(name or None) for name in (profiles or ("",))):
        results = quantize.quantize_pipeline(profile.apply(settings), frames, {**source, "profile": profile.name},
                                             skip=done)
        for name, got in results.items():
            done.add(name)
            if isinstance(got, WildswarmError):
                click.secho(f"{name}: {got}", fg="red")
                bad += 1
                continue
            rec = backends.export_record(got)
            click.echo(f"{name}: {got.name} ({rec['calibration']['inputs']} inputs, "
                       f"{rec['calibration']['animal_boxes']} animal boxes among them, {rec['seconds']:.0f} s)")
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
@click.option("--force", is_flag=True, help="Rebuild an existing untrained stand-in.")
@click.option("--no-export", is_flag=True, help="Do not export them to ONNX (the PyTorch backend only).")
@_PROFILE_OPTION
@click.pass_obj
@friendly_errors
def models_untrained(settings: Settings, names: tuple[str, ...], all_: bool, force: bool, no_export: bool,
                     profiles: tuple[str, ...]) -> None:
    """Write NAMES with random weights in the real format, for tests (never over other weights)."""
    from wildswarm.pipeline import models as cat
    for name in _names(settings, names, all_, profiles):
        s = cat.spec(name)
        if all_ and not s.arch:
            click.echo(f"{name}: skipped (no published architecture to build)")
            continue
        path = cat.weights_path(settings.models, s)
        done = cat.ensure_untrained(settings.models, s, force=force)
        if done == "left alone":
            click.secho(f"{name}: {path} holds weights that are not an untrained stand-in; left alone", fg="yellow")
        elif done == "kept":
            click.echo(f"{name}: {path} (untrained, already there)")
        else:
            click.echo(f"{name}: {path} ({done}; UNTRAINED: random weights)")
        if done != "left alone" and not no_export:
            _export_one(settings, name)
