"""What the web app shows of a job, and how it reads the job store for a request."""
from __future__ import annotations

from flask import current_app, url_for

from wildswarm.exporters import FORMATS
from wildswarm.jobs import Job, JobStatus, JobStore
from wildswarm.layout import Layout
from wildswarm.web import results


def store() -> JobStore:
    return current_app.config["WILDSWARM_STORE"]


def layout() -> Layout:
    return current_app.config["WILDSWARM_LAYOUT"]


def job_json(job: Job, detail: bool = False) -> dict:
    """A job for the API: its fields, plus links (and its files and summary with ``detail``)."""
    data = job.to_dict()
    data["pending_publish"] = job.publish_pending
    data["links"] = {"self": url_for("api.job", job_id=job.id), "page": url_for("ui.job", job_id=job.id)}
    if detail:
        folder = results.job_folder(layout(), job) if job.status is JobStatus.DONE else None
        files = results.list_files(folder)
        data["files"] = [{"name": f.name, "size": f.size, "label": f.label,
                          "url": url_for("files.job_file", job_id=job.id, filename=f.name)} for f in files]
        if files:
            data["links"]["zip"] = url_for("files.job_zip", job_id=job.id)
            data["links"]["exports"] = {fmt: url_for("exports.api_job_export", job_id=job.id, format=fmt)
                                        for fmt in FORMATS}
        summary = results.read_summary(folder)
        data["warning"] = None
        if summary and (summary.get("untrained_weights") or summary.get("warning")):
            data["untrained"] = data["untrained"] or bool(summary.get("untrained_weights"))
            data["warning"] = str(summary.get("warning") or "Made with untrained (random) weights.")
        data["segment_jobs"] = [{"segment": p.segment, "status": p.status.value, "node": p.node,
                                 "attempts": p.attempts, "frames_done": p.frames_done,
                                 "frames_total": p.frames_total}
                                for p in (store().segment_jobs(job.id) if job.segments else [])]
    return data

