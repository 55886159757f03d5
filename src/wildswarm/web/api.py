"""The JSON API for scripts: list jobs, get one, submit a video, retry; described by ``/api/openapi.json``.

Downloads (``/api/jobs/<id>/files/<name>``, ``/api/jobs/<id>/outputs.zip``) are
served by the files blueprint. Errors are ``{"error": message, "reason": word}``.
"""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request, url_for

from wildswarm.jobs import JobStatus, JobStore
from wildswarm.web import service
from wildswarm.web.openapi import document
from wildswarm.web.uploads import UploadRefused, accept_counted

bp = Blueprint("api", __name__, url_prefix="/api")

MAX_LIMIT = 1000


def _error(status: int, message: str, reason: str):
    response = jsonify(error=message, reason=reason)
    response.status_code = status
    return response


@bp.get("/openapi.json")
def openapi():
    return jsonify(document())


@bp.get("/jobs")
def jobs():
    layout = current_app.config["WILDSWARM_LAYOUT"]
    status = request.args.get("status")
    if status is not None and status not in {s.value for s in JobStatus}:
        return _error(400, f"status must be one of {', '.join(s.value for s in JobStatus)}", "bad_request")
    raw_limit = request.args.get("limit", "200")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
        return _error(400, f"limit must be a whole number from 1 to {MAX_LIMIT}", "bad_request")
    found = [j for j in JobStore(layout).all() if status is None or j.status.value == status]
    shown = found[: int(raw_limit)]
    return jsonify(jobs=[service.job_json(layout, j) for j in shown], count=len(shown), total=len(found))


@bp.get("/jobs/<job_id>")
def job(job_id: str):
    layout = current_app.config["WILDSWARM_LAYOUT"]
    return jsonify(service.job_json(layout, JobStore(layout).get(job_id), detail=True))


@bp.post("/jobs")
def submit():
    cfg = current_app.config
    uploads = request.files.getlist("file")
    if len(uploads) > 1:
        return _error(400, "send one video per request (form field 'file')", "bad_request")
    if not uploads or not uploads[0].filename:
        from wildswarm.web import metrics
        metrics.UPLOADS_REFUSED.labels("no_file").inc()
        return _error(400, "no file: send the video as multipart/form-data field 'file'", "no_file")
    try:
        accepted = accept_counted(cfg["WILDSWARM_SETTINGS"], cfg["WILDSWARM_PUBLISHER"], uploads[0])
    except UploadRefused as exc:
        return _error(exc.status, exc.message, exc.reason)
    body = {"job": service.job_json(cfg["WILDSWARM_LAYOUT"], accepted.job), "result": accepted.result,
            "message": accepted.message}
    response = jsonify(body)
    response.status_code = 200 if accepted.result == "duplicate" else 201
    response.headers["Location"] = url_for("api.job", job_id=accepted.job.id)
    return response


@bp.post("/jobs/<job_id>/retry")
def retry(job_id: str):
    cfg = current_app.config
    try:
        record, published = service.retry(cfg["WILDSWARM_SETTINGS"], cfg["WILDSWARM_PUBLISHER"], job_id)
    except service.Conflict as exc:
        return _error(409, str(exc), "conflict")
    message = "queued again" if published else "reset; queued as soon as the job queue answers"
    response = jsonify(job=service.job_json(cfg["WILDSWARM_LAYOUT"], record), published=published, message=message)
    response.status_code = 202
    return response
