"""``wildswarm worker|producer|submit|status|download|deployments``: the job system's commands (wiring only)."""
from __future__ import annotations

import json
import logging
import signal
import sys
import time
from pathlib import Path

import click

from wildswarm.cli import friendly_errors, main, remote
from wildswarm.config import Settings


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pika").setLevel(logging.WARNING)


@main.command()
@click.option("--metrics-port", type=int, default=None,
              help="Port of /metrics (WILDSWARM_WORKER_METRICS_PORT; 0: any free port, -1: none).")
@click.pass_obj
@friendly_errors
def worker(settings: Settings, metrics_port: int | None) -> None:
    """Consume jobs from the queue and analyse them, one at a time, until SIGTERM."""
    from wildswarm import metrics
    from wildswarm.jobs import JobStore
    from wildswarm.worker import Worker, load_analyzer

    _logging()
    store = JobStore.connect(settings, wait_seconds=settings.db_wait_seconds)
    analyzer, seconds = load_analyzer(settings)
    metrics.MODEL_LOAD.set(seconds)
    w = Worker(settings, analyzer, store)
    metrics.WORKER_STALLED.set_function(w.stalled_seconds)
    metrics.serve(settings.worker_metrics_port if metrics_port is None else metrics_port)
    w.install_signal_handlers()
    try:
        code = w.run()
    finally:
        store.close()
    sys.exit(code)


@main.command()
@click.option("--once", is_flag=True, help="Queue what is in input/ now, then exit.")
@click.option("--metrics-port", type=int, default=None,
              help="Port of /metrics (WILDSWARM_PRODUCER_METRICS_PORT; 0: any free port, -1: none).")
@click.pass_obj
@friendly_errors
def producer(settings: Settings, once: bool, metrics_port: int | None) -> None:
    """Watch input/ and queue each new video once it has stopped growing; reconcile the queue and job store."""
    from wildswarm import metrics
    from wildswarm.jobs import JobStore
    from wildswarm.producer import Producer

    _logging()
    store = JobStore.connect(settings, wait_seconds=settings.db_wait_seconds)
    p = Producer(settings, store)
    if not once:
        metrics.serve(settings.producer_metrics_port if metrics_port is None else metrics_port)
        signal.signal(signal.SIGTERM, p.stop)
        signal.signal(signal.SIGINT, p.stop)
    try:
        queued = p.run(once=once)
    finally:
        store.close()
    if once:
        click.echo(f"queued {queued} job(s)")


@main.command()
@click.argument("videos", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--wait", is_flag=True, help="Show each job's progress until it is done or failed.")
@click.option("--profile", default=None, help="Analysis profile (`wildswarm profiles`; default: WILDSWARM_PROFILE).")
@click.option("--deployment", default=None, help="The known deployment the videos were recorded in "
                                                 "(wildswarm deployments).")
@click.option("--recorded-at", default=None, help="When the video was recorded, for a video whose own "
                                                  "metadata does not say: ISO 8601 with the time of day and the "
                                                  "UTC offset (2026-07-03T05:12:00+03:00).")
@click.option("--webhook", default=None, help="An http(s) URL that receives a JSON POST when each job ends "
                                              "(default: the deployment's).")
@remote.server_options
@click.pass_obj
@friendly_errors
def submit(settings: Settings, videos: tuple[Path, ...], wait: bool, profile: str | None, deployment: str | None,
           recorded_at: str | None, webhook: str | None, server: str | None, token: str | None,
           token_file: Path | None, ca_bundle: Path | None) -> None:
    """Copy VIDEOS into input/ and queue a job for each (once per content); with --server, upload them to
    that web app instead (a video it already has is recognised by its content and not sent again)."""
    if remote.remote(settings, server):
        with remote.client(settings, remote.remote(settings, server), token, token_file, ca_bundle) as c:
            sys.exit(remote.submit(c, videos, {"profile": profile, "deployment": deployment,
                                               "recorded_at": recorded_at, "webhook": webhook}, wait))
    from wildswarm.publisher import Publisher
    from wildswarm.errors import VideoError
    from wildswarm.intake import Intake, Refused
    from wildswarm.jobs import JobStore
    from wildswarm.producer import submit_file

    jobs, refused = [], 0
    store = JobStore.connect(settings)
    publisher = Publisher(settings, "submit")
    intake = Intake(settings, store, publisher)
    try:
        profile = intake.profile(profile)            # an unknown one (or a bad webhook) ends here, before any copy
        webhook = intake.webhook(webhook)
        for video in videos:
            try:
                admission = submit_file(intake, video, deployment_id=deployment, recorded_at=recorded_at,
                                        profile=profile, webhook=webhook)
            except (Refused, VideoError) as exc:
                click.secho(f"refused: {exc}", fg="red", err=True)
                refused += 1
                continue
            job = admission.job
            state = {"queued": "queued", "retried": "queued again",
                     "pending": "recorded; queued when the broker answers"}.get(
                admission.result, f"already known ({job.status.value})")
            click.echo(f"{job.id}  {job.input_name}  {state}")
            if job.id not in jobs:
                jobs.append(job.id)
        publisher.close()
        failed = _wait_for(store, jobs) if wait and jobs else 0
    finally:
        store.close()
    sys.exit(2 if refused else 1 if failed else 0)


def _wait_for(store, job_ids: list[str]) -> int:
    """Progress bars until every job is finished; returns how many failed."""
    from tqdm import tqdm

    bars = {i: tqdm(total=1, desc=f"{i[:8]} {store.get(i).input_name[:24]}", position=n, unit="frame")
            for n, i in enumerate(job_ids)}
    open_ids, failed = set(job_ids), 0
    while open_ids:
        for job_id in sorted(open_ids):
            job, bar = store.get(job_id), bars[job_id]
            bar.total = max(job.frames_total, 1)
            bar.n = bar.total if job.status.value == "done" else min(job.frames_done, bar.total)
            bar.set_postfix_str(f"{job.status.value} {job.node or ''}".strip(), refresh=False)
            bar.refresh()
            if job.status.finished:
                open_ids.discard(job_id)
                failed += job.status.value == "failed"
                bar.close()
                if job.error:
                    tqdm.write(f"{job_id}: {job.status.value}: {job.error}")
        if open_ids:
            time.sleep(0.5)
    return failed


@main.command()
@click.argument("job_id", required=False)
@click.option("--status", "status_", type=click.Choice(["queued", "running", "done", "failed", "cancelled"]), default=None,
              help="Only jobs with this status.")
@click.option("--search", default=None, help="Only jobs whose input name contains this (any case).")
@click.option("--node", default=None, help="Only jobs run on this node.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True, help="How many (newest first).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@remote.server_options
@click.pass_obj
@friendly_errors
def status(settings: Settings, job_id: str | None, status_: str | None, search: str | None, node: str | None,
           limit: int, as_json: bool, server: str | None, token: str | None, token_file: Path | None,
           ca_bundle: Path | None) -> None:
    """List the newest jobs (filtered), or show job JOB_ID in detail; counts by status at the end."""
    from wildswarm.jobs import JobQuery, JobStatus, JobStore

    if remote.remote(settings, server):
        with remote.client(settings, remote.remote(settings, server), token, token_file, ca_bundle) as c:
            remote.status(c, job_id, {"status": status_, "q": search, "node": node, "limit": min(limit, 1000)},
                          as_json)
        return

    store = JobStore.connect(settings)
    try:
        if job_id:
            click.echo(json.dumps(store.get(job_id).to_dict(), indent=2, sort_keys=True))
            return
        query = JobQuery(status=JobStatus(status_) if status_ else None, search=search, node=node, limit=limit)
        jobs = store.list(query)
        if as_json:
            click.echo(json.dumps([j.to_dict() for j in jobs], indent=2, sort_keys=True))
            return
        rows = [("ID", "STATUS", "PROGRESS", "TRIES", "NODE", "CREATED", "INPUT")]
        rows += [(j.id, ("pending" if j.publish_pending else j.status.value), f"{100 * j.progress:.0f}%",
                  str(j.attempts), j.node or "-", j.to_dict()["created_at"].replace("T", " ")[:19], j.input_name)
                 for j in jobs]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
        for r in rows:
            click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
        counts = store.count_by_status()
        click.echo(("" if jobs else "no jobs match\n") + "  ".join(f"{k} {v}" for k, v in counts.items()))
    finally:
        store.close()


@main.command()
@click.argument("job_id")
@click.argument("names", nargs=-1)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True,
              help="Folder to save into.")
@remote.server_options
@click.pass_obj
@friendly_errors
def download(settings: Settings, job_id: str, names: tuple[str, ...], out: Path, server: str | None,
             token: str | None, token_file: Path | None, ca_bundle: Path | None) -> None:
    """Save job JOB_ID's results from a wildswarm web app: all as one zip, or the files NAMES
    (labeled.mp4, detections.json, ...). Needs --server (or WILDSWARM_SERVER); on the shared
    filesystem they are in output/<name>/ already."""
    if not remote.remote(settings, server):
        raise click.UsageError("download needs --server URL (or WILDSWARM_SERVER)")
    with remote.client(settings, remote.remote(settings, server), token, token_file, ca_bundle) as c:
        remote.download(c, job_id, out, names)


@main.command()
@click.argument("job_ids", nargs=-1, required=True)
@remote.server_options
@click.pass_obj
@friendly_errors
def cancel(settings: Settings, job_ids: tuple[str, ...], server: str | None, token: str | None,
           token_file: Path | None, ca_bundle: Path | None) -> None:
    """Cancel jobs JOB_IDS: a queued one leaves the queue, a running one stops at its next batch of frames.
    Exits 1 if any could not be cancelled (it had ended, or there is no such job)."""
    from wildswarm.client import ServerError
    from wildswarm.errors import JobError
    failed = 0
    if remote.remote(settings, server):
        with remote.client(settings, remote.remote(settings, server), token, token_file, ca_bundle) as c:
            for job_id in job_ids:
                try:
                    job = c.cancel(job_id)
                    click.echo(f"{job['id']}  {job['input_name']}  cancelled")
                except ServerError as exc:
                    click.secho(f"{job_id}: {exc}", fg="red", err=True)
                    failed += 1
        sys.exit(1 if failed else 0)
    from wildswarm.intake import Intake
    from wildswarm.jobs import JobStore
    from wildswarm.publisher import Publisher
    store = JobStore.connect(settings)
    intake = Intake(settings, store, Publisher(settings, "cancel"))
    try:
        for job_id in job_ids:
            try:
                job = intake.cancel(job_id, how="cancelled with wildswarm cancel")
                click.echo(f"{job.id}  {job.input_name}  cancelled")
            except JobError as exc:           # JobConflict too: it had ended, or is a segment
                click.secho(f"{job_id}: {exc}", fg="red", err=True)
                failed += 1
    finally:
        store.close()
    sys.exit(1 if failed else 0)


@main.command()
@click.option("--add", "fields", multiple=True, metavar="FIELD=VALUE",
              help="Add (or replace, by id) a deployment: id=..., latitude=..., longitude=..., deployment_start=..., "
                   "deployment_end=..., location_name=..., camera_model=..., webhook_url=... (repeat).")
@click.pass_obj
@friendly_errors
def deployments(settings: Settings, fields: tuple[str, ...]) -> None:
    """List the deployments (where and when cameras recorded), or add one with --add."""
    from wildswarm.errors import JobError
    from wildswarm.jobs import JobStore
    from wildswarm.jobs.deployments import Deployments

    store = JobStore.connect(settings)
    try:
        known = Deployments(store.db)
        if fields:
            pairs = [f.partition("=") for f in fields]
            bad = [f for f, (_, eq, _) in zip(fields, pairs) if not eq]
            if bad:
                raise JobError(f"--add takes FIELD=VALUE, not {bad[0]!r}")
            dep, hook = known.save_given({k.strip(): v for k, _, v in pairs})
            click.echo(f"saved deployment {dep.id}" + (f" (notifies {hook.split('?')[0]})" if hook else ""))
            return
        for d in known.all():
            where = f"{d.latitude}, {d.longitude}" if d.latitude is not None else "no coordinates"
            click.echo(f"{d.id}  {d.location_name or '-'}  ({where})  {d.deployment_start or '?'} .. "
                       f"{d.deployment_end or '?'}  {d.camera_model or ''}".rstrip())
    finally:
        store.close()

