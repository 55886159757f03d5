"""Pages: upload, jobs, one job, node logs. Views only wire requests to the modules that do the work."""
from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, send_file, url_for

from wildswarm.jobs import JobStatus, JobStore
from wildswarm.web import results, service
from wildswarm.web.publisher import is_pending
from wildswarm.web.uploads import UploadRefused, accept_counted, upload_limit

bp = Blueprint("ui", __name__)

JOBS_SHOWN = 200      # newest jobs on the jobs page (and in each of its updates)


def _ctx():
    cfg = current_app.config
    return cfg["WILDSWARM_SETTINGS"], cfg["WILDSWARM_LAYOUT"], cfg["WILDSWARM_PUBLISHER"]


def _upload_page(errors: list[str] | None = None, status: int = 200):
    settings, _, _ = _ctx()
    return render_template("upload.html", limit=upload_limit(settings), errors=errors or [],
                           extensions=", ".join(settings.extensions)), status


@bp.get("/")
def index():
    return _upload_page()


@bp.post("/upload")
def upload():
    """The form without JavaScript (the page's script posts each file to the API instead)."""
    settings, _, publisher = _ctx()
    uploads = [f for f in request.files.getlist("files") if f.filename]
    if not uploads:
        from wildswarm.web import metrics
        metrics.UPLOADS_REFUSED.labels("no_file").inc()
        return _upload_page(["No file was chosen: pick one or more MP4 videos."], 400)
    accepted, errors, status = [], [], 200
    for f in uploads:
        try:
            accepted.append(accept_counted(settings, publisher, f))
        except UploadRefused as exc:
            errors.append(exc.message)
            status = exc.status if status == 200 else status
    for a in accepted:
        flash(a.message, "ok" if a.result != "pending" else "warn")
    if errors and not accepted:
        return _upload_page(errors, status)
    for e in errors:
        flash(e, "error")
    if len(accepted) == 1 and not errors:
        return redirect(url_for("ui.job", job_id=accepted[0].job.id), 303)
    return redirect(url_for("ui.jobs", new=",".join(a.job.id for a in accepted)), 303)


@bp.get("/jobs")
def jobs():
    _, layout, _ = _ctx()
    new = set(request.args.get("new", "").split(","))
    found = JobStore(layout).all()
    return render_template("jobs.html", jobs=found[:JOBS_SHOWN], total=len(found), shown=JOBS_SHOWN, new=new,
                           is_pending=is_pending)


@bp.get("/jobs/<job_id>")
def job(job_id: str):
    _, layout, _ = _ctx()
    record = JobStore(layout).get(job_id)
    folder = results.job_folder(layout, record) if record.status is JobStatus.DONE else None
    files = results.list_files(folder)
    names = {f.name for f in files}
    data = service.job_json(layout, record, detail=True)
    summary = results.read_summary(folder)
    return render_template("job.html", job=record, data=data, files=files, summary=summary,
                           summary_rows=results.summary_rows(summary),
                           has_video=results.VIDEO in names, has_plot=results.PLOT in names,
                           pending=is_pending(record), output=results.output_name(record))


@bp.post("/jobs/<job_id>/retry")
def retry(job_id: str):
    settings, _, publisher = _ctx()
    try:
        record, published = service.retry(settings, publisher, job_id)
    except service.Conflict as exc:
        flash(str(exc), "error")
        return redirect(url_for("ui.job", job_id=job_id), 303)
    flash(f"Job {record.id} is queued again." if published else
          f"Job {record.id} is reset; the job queue cannot be reached now, it is queued as soon as it answers.",
          "ok" if published else "warn")
    return redirect(url_for("ui.job", job_id=record.id), 303)


@bp.get("/logs")
def logs():
    settings, layout, _ = _ctx()
    return render_template("logs.html", logs=results.node_logs(layout, min(settings.web_log_lines, 50)), one=False)


@bp.get("/logs/<node>")
def node_log(node: str):
    settings, layout, _ = _ctx()
    found = results.node_logs(layout, settings.web_log_lines, node=node) if results.plain_name(node) else []
    if not found:
        abort(404, description=f"No log for node {node!r}.")
    return render_template("logs.html", logs=found, one=True)


@bp.get("/logs/<node>/raw")
def node_log_raw(node: str):
    _, layout, _ = _ctx()
    path = results.log_path(layout, node)
    if path is None:
        abort(404, description=f"No log for node {node!r}.")
    return send_file(path, mimetype="text/plain", conditional=True, download_name=f"{node}.log")


@bp.get("/Log")
def old_log():
    """The old system's log page."""
    return redirect(url_for("ui.logs"), 301)
