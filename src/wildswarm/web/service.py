"""What the web app does to jobs beyond uploads: describe them, and retry a failed one.

Retrying a failed job: its record is reset to queued (progress, node, times
and error cleared), its input moved back from input_failed/ to input/ if it
was moved there, and its message published again. The record is reset
*before* the input reappears in input/, so the producer, should it look, sees
a queued job (and leaves it alone) rather than a failed one it would move away.
"""
from __future__ import annotations

import os
from pathlib import Path

from flask import url_for

from wildswarm.config import Settings
from wildswarm.errors import WildswarmError
from wildswarm.jobs import Job, JobStatus, JobStore, job_id_for
from wildswarm.layout import Layout
from wildswarm.messages import JobMessage
from wildswarm.web import metrics, results
from wildswarm.web.publisher import PENDING_NOTE, Publisher, is_pending


class Conflict(WildswarmError):
    """The job is not in a state that allows the action (HTTP 409)."""


def job_json(layout: Layout, job: Job, detail: bool = False) -> dict:
    """A job record for the API: the record's fields, plus links (and files and summary with ``detail``)."""
    data = job.to_dict()
    data["pending_publish"] = is_pending(job)
    data["links"] = {"self": url_for("api.job", job_id=job.id), "page": url_for("ui.job", job_id=job.id)}
    if detail:
        folder = results.job_folder(layout, job) if job.status is JobStatus.DONE else None
        files = results.list_files(folder)
        data["files"] = [{"name": f.name, "size": f.size, "label": f.label,
                          "url": url_for("files.job_file", job_id=job.id, filename=f.name)} for f in files]
        if files:
            data["links"]["zip"] = url_for("files.job_zip", job_id=job.id)
        summary = results.read_summary(folder)
        data["warning"] = None
        if summary and (summary.get("untrained_weights") or summary.get("warning")):
            data["untrained"] = data["untrained"] or bool(summary.get("untrained_weights"))
            data["warning"] = str(summary.get("warning") or "Made with untrained (random) weights.")
    return data


def _failed_input(layout: Layout, job: Job) -> Path | None:
    """Where the input of a failed job is: input_failed/ (perhaps renamed with its id), or still input/."""
    name = job.input_name
    stem, ext = Path(name).stem, Path(name).suffix
    tag = job.id[:8]
    candidates = [layout.input_failed / name, layout.input_failed / f"{stem}-{tag}{ext}"]
    candidates += sorted(layout.input_failed.glob(f"{stem}-{tag}-*{ext}"))
    for path in candidates:
        if path.is_file() and not path.is_symlink():
            return path
    here = layout.input / name           # never moved (e.g. the worker stopped first): if it is this video
    if here.is_file() and not here.is_symlink() and job_id_for(here) == job.id:
        return here
    return None


def retry(settings: Settings, publisher: Publisher, job_id: str, upload: Path | None = None) -> tuple[Job, bool]:
    """Queue a failed job again (or publish a pending one now); returns (the job, published).

    ``upload``: a new copy of the job's video (in input/), used when its own input is gone.
    """
    layout = Layout(settings.data)
    store = JobStore(layout)
    job = store.get(job_id)
    if is_pending(job):
        published = publisher.publish(JobMessage(job.id, job.input_name))
        if published:
            job = store.update(job.id, error=None)
        return job, published
    if job.status is not JobStatus.FAILED:
        raise Conflict(f"job {job.id} is {job.status.value}; only a failed job can be retried")
    if (job.error or "").startswith("refused:"):
        raise Conflict(f"job {job.id} was refused ({job.error[8:].strip()}); upload a valid video instead")
    src = _failed_input(layout, job) or upload
    if src is None:
        raise Conflict(f"the input of job {job.id} ({job.input_name}) is no longer in input/ or input_failed/; "
                       "upload the video again")
    job = store.update(job.id, status=JobStatus.QUEUED, frames_done=0, frames_total=0, node=None, attempts=0,
                       started_at=None, finished_at=None, error=None)
    if src.parent != layout.input or src == upload:
        dest = layout.claim_input(src, job.input_name, exact_first=True)
        os.utime(dest)
        if dest.name != job.input_name:
            job = store.update(job.id, input_name=dest.name)
    published = publisher.publish(JobMessage(job.id, job.input_name))
    if not published:
        job = store.update(job.id, error=f"{PENDING_NOTE} ({publisher.last_error}); it is queued as soon as "
                                         "it answers")
        publisher.add_pending(job.id)
    metrics.RETRIES.inc()
    layout.log(settings.node, f"job {job.id} {job.input_name}: retried from the web page, "
                              f"{'queued' if published else 'saved; queued when the broker answers'}")
    return job, published
