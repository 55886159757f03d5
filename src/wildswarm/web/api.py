"""The JSON API for scripts: list jobs, get one, submit a video, retry; described by ``/api/openapi.json``.

Downloads (``/api/jobs/<id>/files/<name>``, ``/api/jobs/<id>/outputs.zip``) are
served by the files blueprint. Errors are ``{"error": message, "reason": word}``.
Listing filters, sorts, pages and counts in the job store (SQL with indexes);
``?since=<seq>`` answers only the jobs changed (and the ids of those deleted) after change number ``seq``.
"""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request, url_for

from wildswarm.web import service
from wildswarm.web.openapi import document
from wildswarm.web.query import BadQuery, CHANGES_LIMIT, TOTAL_CAP, job_query, whole_number
from wildswarm.web.uploads import UploadRefused, accept_counted, uploaded

bp = Blueprint("api", __name__, url_prefix="/api")


def _error(status: int, message: str, reason: str):
    response = jsonify(error=message, reason=reason)
    response.status_code = status
    return response


@bp.get("/openapi.json")
def openapi():
    return jsonify(document())


@bp.get("/jobs")
def jobs():
    store = service.store()
    try:
        if "since" in request.args:
            since = whole_number(request.args, "since", 0, 0, 2**62)
            changed, seq, deleted = store.changes(since, CHANGES_LIMIT)
            return jsonify(jobs=[service.job_json(j) for j in changed], count=len(changed), seq=seq,
                           deleted=deleted, more=len(changed) + len(deleted) == CHANGES_LIMIT)
        query = job_query(request.args, default_limit=200)
    except BadQuery as exc:
        return _error(400, str(exc), "bad_request")
    found = store.list(query)
    total = store.count(query, cap=TOTAL_CAP)
    return jsonify(jobs=[service.job_json(j) for j in found], count=len(found), total=total,
                   total_exact=total < TOTAL_CAP, offset=query.offset, seq=store.latest_seq())


@bp.get("/jobs/<job_id>")
def job(job_id: str):
    return jsonify(service.job_json(service.store().get(job_id), detail=True))


@bp.post("/jobs")
def submit():
    cfg = current_app.config
    files = uploaded("file")
    if len(files) > 1:
        return _error(400, "send one video per request (form field 'file')", "bad_request")
    if not files or not files[0].filename:
        from wildswarm.web import metrics
        metrics.UPLOADS_REFUSED.labels("no_file").inc()
        return _error(400, "no file: send the video as multipart/form-data field 'file'", "no_file")
    try:
        accepted = accept_counted(cfg["WILDSWARM_SETTINGS"], cfg["WILDSWARM_INTAKE"], files[0],
                                  deployment_id=request.form.get("deployment"),
                                  recorded_at=request.form.get("recorded_at"),
                                  profile=request.form.get("profile"),
                                  webhook=request.form.get("webhook"))
    except UploadRefused as exc:
        return _error(exc.status, exc.message, exc.reason)
    body = {"job": service.job_json(accepted.job), "result": accepted.result, "message": accepted.message}
    response = jsonify(body)
    response.status_code = 200 if accepted.result == "duplicate" else 201
    response.headers["Location"] = url_for("api.job", job_id=accepted.job.id)
    return response


@bp.post("/jobs/<job_id>/retry")
def retry(job_id: str):
    from wildswarm.web import metrics
    admission = current_app.config["WILDSWARM_INTAKE"].retry(job_id, how="retried from the web API")
    metrics.RETRIES.inc()
    published = admission.result != "pending"
    message = "queued again" if published else "reset; queued as soon as the job queue answers"
    response = jsonify(job=service.job_json(admission.job), published=published, message=message)
    response.status_code = 202
    return response


@bp.post("/jobs/<job_id>/cancel")
def cancel(job_id: str):
    """A queued job leaves the queue; a running one stops at its next batch of frames (409 once it has ended)."""
    job = current_app.config["WILDSWARM_INTAKE"].cancel(job_id, how="cancelled from the web API")
    response = jsonify(job=service.job_json(job), message="cancelled")
    response.status_code = 202
    return response


@bp.get("/profiles")
def profiles():
    """The analysis profiles a job may name, each with the settings it resolves to."""
    cfg = current_app.config
    book = cfg["WILDSWARM_INTAKE"].profiles
    current = book.current()
    return jsonify(default=current.default, profiles=[p.describe(cfg["WILDSWARM_SETTINGS"]) for p in current],
                   problem=book.problem)
