"""Pages: upload, jobs, one job, node logs. Views only wire requests to the modules that do the work."""
from __future__ import annotations

from urllib.parse import urlencode

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, send_file, url_for

from wildswarm.errors import JobConflict
from wildswarm.exporters.camtrap_dp import CAPTURE_METHODS, SAMPLING_DESIGNS
from wildswarm.jobs import JobStatus
from wildswarm.jobs.findings import species_seen
from wildswarm.web import exports, results, service
from wildswarm.web.query import TOTAL_CAP, BadQuery, job_query
from wildswarm.web.uploads import UploadRefused, accept_counted, upload_limit, uploaded

bp = Blueprint("ui", __name__)

JOBS_SHOWN = 50       # jobs per page of the jobs page
FILTERS = ("status", "q", "node", "from", "to", "animals", "species", "profile", "deployment", "untrained", "order")


def _ctx():
    cfg = current_app.config
    return cfg["WILDSWARM_SETTINGS"], cfg["WILDSWARM_LAYOUT"], cfg["WILDSWARM_INTAKE"]


def _upload_page(errors: list[str] | None = None, status: int = 200):
    settings, _, intake = _ctx()
    return render_template("upload.html", limit=upload_limit(settings), errors=errors or [],
                           extensions=", ".join(settings.extensions), deployments=_deployments(),
                           profiles=intake.profiles.current(), profile_problem=intake.profiles.problem), status


@bp.get("/")
def index():
    return _upload_page()


@bp.post("/upload")
def upload():
    """The form without JavaScript (the page's script posts each file to the API instead)."""
    settings, _, intake = _ctx()
    uploads = [f for f in uploaded("files") if f.filename]
    if not uploads:
        from wildswarm.web import metrics
        metrics.UPLOADS_REFUSED.labels("no_file").inc()
        return _upload_page(["No file was chosen: pick one or more MP4 videos."], 400)
    accepted, errors, status = [], [], 200
    for f in uploads:
        try:
            accepted.append(accept_counted(settings, intake, f, deployment_id=request.form.get("deployment"),
                                           recorded_at=request.form.get("recorded_at"),
                                           profile=request.form.get("profile"),
                                           webhook=request.form.get("webhook")))
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
    store = service.store()
    new = set(request.args.get("new", "").split(","))
    try:
        query = job_query(request.args, default_limit=JOBS_SHOWN)
    except BadQuery as exc:
        abort(400, description=str(exc))
    found = store.list(query)
    total = store.count(query, cap=TOTAL_CAP)
    filters = {k: request.args[k] for k in FILTERS if request.args.get(k)}
    view = "grid" if request.args.get("view") == "grid" else "list"      # a grid of posters, or the table
    kept = {**filters, **({"limit": query.limit} if request.args.get("limit") else {})}    # and the page size
    shown = {**kept, **({"view": view} if view == "grid" else {})}
    page = {"offset": query.offset, "limit": query.limit, "total": total, "capped": total >= TOTAL_CAP,
            "prev": url_for("ui.jobs", **shown, offset=max(0, query.offset - query.limit)) if query.offset else None,
            "next": url_for("ui.jobs", **shown, offset=query.offset + query.limit)
            if query.offset + len(found) < total else None,
            "list": url_for("ui.jobs", **kept), "grid": url_for("ui.jobs", **kept, view="grid")}
    live = not filters and query.offset == 0 and view == "list"    # the first page of everything updates itself
    posters = {j.id: url_for("files.job_file", job_id=j.id, filename=results.POSTER)
               for j in found if view == "grid" and results.has_poster(service.layout(), j)}
    return render_template("jobs.html", jobs=found, page=page, new=new, filters=filters, live=live, view=view,
                           posters=posters,
                           statuses=[s.value for s in JobStatus], nodes=store.nodes(), seq=store.latest_seq(),
                           api=url_for("api.jobs"), exports=exports.offered(), sampling_designs=SAMPLING_DESIGNS,
                           capture_methods=CAPTURE_METHODS, species_seen=species_seen(store),
                           profile_names=_ctx()[2].profiles.current().names(),
                           query_string=urlencode({k: v for k, v in filters.items()}),
                           deployment_ids=[d.id for d in _deployments()])


def _deployments():
    """The known deployments, to offer in a form; none while the store is down (the page still loads,
    and the upload or filter itself says if the store is down)."""
    from wildswarm.errors import JobStoreError
    from wildswarm.web.deployments import known
    try:
        return known().all()
    except JobStoreError:
        return []


@bp.get("/jobs/<job_id>")
def job(job_id: str):
    from wildswarm.web.deployments import known
    _, layout, _ = _ctx()
    record = service.store().get(job_id)
    folder = results.job_folder(layout, record) if record.status is JobStatus.DONE else None
    files = results.list_files(folder)
    names = {f.name for f in files}
    data = service.job_json(record, detail=True)
    summary = results.read_summary(folder)
    return render_template("job.html", job=record, data=data, files=files, summary=summary,
                           card=results.summary_card(summary, record.size_bytes), retriable=record.retriable,
                           has_video=results.VIDEO in names, has_plot=results.PLOT in names,
                           has_poster=results.POSTER in names,
                           pending=record.publish_pending, output=results.output_name(record),
                           exports=exports.offered(), sampling_designs=SAMPLING_DESIGNS,
                           capture_methods=CAPTURE_METHODS,
                           deployment=known().get(record.deployment_id) if record.deployment_id else None)


@bp.post("/jobs/<job_id>/retry")
def retry(job_id: str):
    from wildswarm.web import metrics
    _, _, intake = _ctx()
    try:
        admission = intake.retry(job_id, how="retried from the web page")
    except JobConflict as exc:
        flash(str(exc), "error")
        return redirect(url_for("ui.job", job_id=job_id), 303)
    metrics.RETRIES.inc()
    record = admission.job
    flash(f"Job {record.id} is queued again." if admission.result != "pending" else
          f"Job {record.id} is reset; the job queue cannot be reached now, it is queued as soon as it answers.",
          "ok" if admission.result != "pending" else "warn")
    return redirect(url_for("ui.job", job_id=record.id), 303)


@bp.post("/jobs/<job_id>/cancel")
def cancel(job_id: str):
    _, _, intake = _ctx()
    try:
        job = intake.cancel(job_id, how="cancelled from the web page")
    except JobConflict as exc:
        flash(str(exc), "error")
        return redirect(url_for("ui.job", job_id=job_id), 303)
    flash(f"Job {job.id} is cancelled" + (": its worker stops at its next batch of frames."
                                          if job.node else "."), "ok")
    return redirect(url_for("ui.job", job_id=job.id), 303)


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
