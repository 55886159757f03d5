"""``wildswarm export``: finished results in the field's formats (wiring only: wildswarm.exporters)."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from wildswarm.cli import friendly_errors, main
from wildswarm.config import Settings
from wildswarm.exporters import FORMATS


@main.command()
@click.argument("jobs", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), required=True,
              help="md-json: MegaDetector 1.6 batch file; camtrap-dp: Camera Trap Data Package (zip); nwb: "
                   "NWB with ndx-pose (one .nwb, a zip for several); csv: plain tables (zip); mot: "
                   "MOTChallenge tracks (zip).")
@click.option("--all", "everything", is_flag=True, help="Every finished job (newest first).")
@click.option("--search", default=None, help="With --all: only jobs whose input name contains this.")
@click.option("--deployment", default=None, help="Every finished job of this deployment.")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="File to write (default: a name made from the videos and the format, here); - for stdout.")
@click.option("--title", default=None, help="The export's title (Camtrap DP).")
@click.option("--contributor", "contributors", multiple=True, metavar='"NAME <EMAIL>"',
              help="Camtrap DP: a contributor to the package (repeat).")
@click.option("--sampling-design", default=None, help="Camtrap DP: simpleRandom, systematicRandom, "
              "clusteredRandom, experimental, targeted or opportunistic.")
@click.option("--capture-method", default=None, help="Camtrap DP: activityDetection or timeLapse.")
@click.option("--media-observations", is_flag=True, help="Camtrap DP: a media-level row with its box per animal too.")
@click.option("--subject", "subject", multiple=True, metavar="FIELD=VALUE",
              help="NWB: the subject, e.g. species='Mus musculus' sex=F age=P90D (repeat).")
@click.pass_obj
@friendly_errors
def export(settings: Settings, jobs: tuple[str, ...], fmt: str, everything: bool, search: str | None,
           deployment: str | None, out: Path | None, title: str | None, contributors: tuple[str, ...],
           sampling_design: str | None, capture_method: str | None, media_observations: bool,
           subject: tuple[str, ...]) -> None:
    """Export finished JOBS (job ids, or result folders such as output/<name> of `wildswarm analyze`)."""
    from wildswarm import exporters
    from wildswarm.errors import ExportError
    from wildswarm.exporters.base import ExportOptions, VideoResult, contributor, select

    options = ExportOptions(title=title, contributors=tuple(contributor(c) for c in contributors),
                            sampling_design=sampling_design, capture_method=capture_method,
                            media_observations=media_observations,
                            subject={k: v for k, _, v in (s.partition("=") for s in subject)} or None)
    folders = [Path(j) for j in jobs if (Path(j) / "summary.json").is_file()]
    ids = [j for j in jobs if not (Path(j) / "summary.json").is_file()]
    results = [VideoResult(job_id="", video=_video_of(f), folder=f) for f in folders]
    if ids or everything or deployment:
        from wildswarm.jobs import JobQuery, JobStatus, JobStore
        from wildswarm.jobs.deployments import Deployments
        from wildswarm.layout import Layout
        store = JobStore.connect(settings)
        try:
            if everything:
                ids += [j.id for j in store.list(JobQuery(status=JobStatus.DONE, search=search, limit=100_000))]
            if deployment:
                known = Deployments(store.db)
                if known.get(deployment) is None:
                    raise ExportError(f"there is no deployment {deployment!r}")
                ids += known.finished_jobs(deployment)
            results += select(store, Layout(settings.data), ids)
        finally:
            store.close()
    if not results:
        raise ExportError("nothing to export: name job ids or result folders, or use --all or --deployment")
    exporter = exporters.get(fmt)
    if str(out) == "-":
        exporter.write(results, sys.stdout.buffer, options)
        return
    target = out or Path(exporter.filename(results))
    if not target.name:
        raise ExportError(f"-o {str(out)!r}: name a file to write")
    tmp = target.with_name(f".{target.name}.part")
    try:
        with open(tmp, "wb") as f:
            exporter.write(results, f, options)
        tmp.replace(target)
    except OSError as exc:            # a folder that is not there, read-only, or full
        raise ExportError(f"{target}: cannot write: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    click.echo(f"{target}: {len(results)} video{'s' if len(results) != 1 else ''}, {exporter.label}")


def _video_of(folder: Path) -> str:
    import json
    return json.loads((folder / "summary.json").read_text()).get("video") or folder.name
