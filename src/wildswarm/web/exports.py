"""Exports for download: one job's result in a field format, or many jobs' in one file.

    GET  /jobs/<id>/export/<format>          (and /api/jobs/<id>/export/<format>)
    POST /api/exports   {"format": "md-json", "jobs": ["<id>", ...], "options": {...}}   or the same as a form

The file is made in an anonymous temporary file beside the uploads (the export of many videos'
NWB, videos included, can be large) and streamed from it; nothing of it stays on disk.
"""
from __future__ import annotations

import tempfile

from flask import Blueprint, jsonify, request, send_file

from wildswarm import exporters
from wildswarm.errors import ExportError
from wildswarm.exporters.base import ExportOptions, contributor, select
from wildswarm.web import service

bp = Blueprint("exports", __name__)

MAX_JOBS = 2000


def offered() -> list[dict]:
    """The formats, as the pages and the API list them."""
    return [{"format": name, "label": exporters.get(name).label} for name in exporters.FORMATS]


def _error(status: int, message: str, reason: str, problems=()):
    response = jsonify(error=message, reason=reason, problems=list(problems))
    response.status_code = status
    return response


def options_from(given) -> ExportOptions:
    """Export options from a JSON object or a form (what Camtrap DP and NWB ask for)."""
    if not isinstance(given, dict):
        raise ExportError("options must be an object")
    names = {"title", "contributors", "sampling_design", "capture_method", "project_title", "media_observations",
             "subject"}
    unknown = sorted(set(given) - names)
    if unknown:
        raise ExportError(f"unknown export option(s): {', '.join(unknown)}")
    people = given.get("contributors") or []
    if isinstance(people, str):
        people = [line for line in people.splitlines() if line.strip()]
    if not isinstance(people, list):
        raise ExportError("contributors must be a list")
    contributors = tuple(contributor(p) if isinstance(p, str) else p for p in people)
    if not all(isinstance(p, dict) and isinstance(p.get("title"), str) and p["title"].strip() for p in contributors):
        raise ExportError("each contributor needs a name (title)")
    text = {k: given.get(k) or None for k in ("title", "sampling_design", "capture_method", "project_title")}
    if not all(v is None or isinstance(v, str) for v in text.values()):
        raise ExportError("title, sampling_design, capture_method and project_title are text")
    subject = given.get("subject")          # its fields are checked by ExportOptions
    return ExportOptions(contributors=contributors, media_observations=given.get("media_observations") in
                         (True, "1", "true", "on"), subject=subject, **text)


def _send(fmt: str, job_ids: list[str], options: ExportOptions | None = None):
    if fmt not in exporters.FORMATS:
        return _error(400, f"no export format {fmt!r}; there are: {', '.join(exporters.FORMATS)}", "bad_request")
    try:
        exporter = exporters.get(fmt)
        results = select(service.store(), service.layout(), job_ids)
        spool = tempfile.TemporaryFile(dir=service.layout().uploads)
        try:
            exporter.write(results, spool, options or ExportOptions())
        except BaseException:
            spool.close()
            raise
    except ExportError as exc:
        return _error(409, str(exc).split("\n")[0], "export_refused", exc.problems or [str(exc)])
    spool.seek(0)
    response = send_file(spool, mimetype=exporter.mimetype, as_attachment=True,
                         download_name=exporter.filename(results), conditional=False, max_age=0)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/jobs/<job_id>/export/<format>", endpoint="job_export")
@bp.get("/api/jobs/<job_id>/export/<format>", endpoint="api_job_export")
def job_export(job_id: str, format: str):  # noqa: A002 -- the URL says format
    service.store().get(job_id)                  # 404 for a job that does not exist
    return _send(format, [job_id])


# The jobs page's form also carries its bulk actions' fields (web/bulk.py): not export options.
FORM_ONLY = ("format", "job", "csrf_token", "filter", "all", "action", "delete_inputs")


@bp.post("/api/exports")
def export_many():
    if request.is_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return _error(400, "send a JSON object: {\"format\": ..., \"jobs\": [...]}", "bad_request")
        fmt, jobs, given = body.get("format"), body.get("jobs"), body.get("options", {})
    else:
        fmt, jobs = request.form.get("format"), request.form.getlist("job")
        given = {k: v for k, v in request.form.items() if k not in FORM_ONLY and v}
    try:
        options = options_from(given)
    except ExportError as exc:
        return _error(400, str(exc), "bad_request")
    if not isinstance(fmt, str) or fmt not in exporters.FORMATS:
        return _error(400, f"format must be one of: {', '.join(exporters.FORMATS)}", "bad_request")
    if not isinstance(jobs, list) or not jobs or not all(isinstance(j, str) and 0 < len(j) <= 64 for j in jobs):
        return _error(400, "jobs must be a non-empty list of job ids", "bad_request")
    if len(jobs) > MAX_JOBS:
        return _error(400, f"at most {MAX_JOBS} jobs in one export", "bad_request")
    return _send(fmt, jobs, options)
