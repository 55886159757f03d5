"""Downloads: each result file (with HTTP range requests, so videos play and seek), all of them as
one streamed zip, node logs, and the old system's links ``/output/<name>`` and ``/plot/<name>``.

Names in URLs are only ever compared with what a directory listing of the
data root holds (:mod:`wildswarm.web.results`); nothing outside it is read.
"""
from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, render_template, request, send_file, url_for

from wildswarm.jobs import JobStatus
from wildswarm.pipeline import files as result_files
from wildswarm.web import results, service

bp = Blueprint("files", __name__)

#: Files pipeline/files.py does not name (older results, files added by hand), by suffix.
MIMETYPES = {".mp4": "video/mp4", ".png": "image/png", ".json": "application/json", ".csv": "text/csv",
             ".h5": "application/x-hdf5"}


def _send(path, as_attachment: bool = False):
    if _several_ranges(path):        # Werkzeug serves one range only and answers several with a 416 (an
        request.environ.pop("HTTP_RANGE", None)      # error): the whole file instead, as RFC 9110 allows
    known = result_files.BY_NAME.get(path.name)
    mimetype = known.mimetype if known else MIMETYPES.get(path.suffix.lower(), "application/octet-stream")
    response = send_file(path, mimetype=mimetype, conditional=True, as_attachment=as_attachment,
                         download_name=path.name, max_age=0)
    response.headers["Accept-Ranges"] = "bytes"
    return response


def _several_ranges(path) -> bool:
    """Whether the request asks for several byte ranges of ``path``, one of them in the file."""
    from werkzeug.http import parse_range_header
    asked = parse_range_header(request.headers.get("Range"))
    if asked is None or asked.units != "bytes" or len(asked.ranges) < 2:
        return False
    try:
        size = path.stat().st_size
    except OSError:
        return False
    return any(start < 0 or start < size for start, _ in asked.ranges) and size > 0


def _job_folder(job_id: str):
    layout = current_app.config["WILDSWARM_LAYOUT"]
    job = service.store().get(job_id)
    if job.status is not JobStatus.DONE:
        abort(404, description=f"Job {job.id} is {job.status.value}: it has no results yet.")
    folder = results.job_folder(layout, job)
    if folder is None:
        abort(404, description=f"The results of job {job.id} are missing.")
    return job, folder


def _wants_download() -> bool:
    return request.args.get("download", "") in ("1", "true", "yes")


@bp.get("/jobs/<job_id>/files/<filename>", endpoint="job_file")
@bp.get("/api/jobs/<job_id>/files/<filename>", endpoint="api_job_file")
def job_file(job_id: str, filename: str):
    _, folder = _job_folder(job_id)
    path = results.find_file(folder, filename)
    if path is None:
        abort(404, description=f"Job {job_id} has no file {filename!r}.")
    return _send(path, as_attachment=_wants_download())


@bp.get("/jobs/<job_id>/outputs.zip", endpoint="job_zip")
@bp.get("/api/jobs/<job_id>/outputs.zip", endpoint="api_job_zip")
def job_zip(job_id: str):
    job, folder = _job_folder(job_id)
    files = results.list_files(folder)
    if not files:
        abort(404, description=f"Job {job.id} has no result files.")
    return zip_response([(folder, files, folder.name)], folder.name)


def zip_response(entries, name: str, notes: dict[str, str] | None = None) -> Response:
    """Result folders (folder, files, prefix) as a streamed zip download named ``name``.zip."""
    response = Response(results.zip_many(entries, notes), mimetype="application/zip")
    response.headers["Content-Disposition"] = f'attachment; filename="{_ascii(name)}.zip"'
    response.headers["Cache-Control"] = "no-store"
    return response


def _ascii(name: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in name) or "results"


@bp.get("/output/<name>")
def output(name: str):
    """Old link: the labeled video of ``name``, or the listing of its result folder."""
    layout = current_app.config["WILDSWARM_LAYOUT"]
    folder = results.output_folder(layout, name)
    if folder is None:
        abort(404, description=f"No results named {name!r}.")
    video = results.find_file(folder, results.VIDEO)
    if video is not None and not request.args.get("list"):
        return _send(video)
    files = results.list_files(folder)
    return render_template("output.html", name=folder.name, files=files,
                           links={f.name: url_for("files.output_file", name=folder.name, filename=f.name)
                                  for f in files})


@bp.get("/output/<name>/<filename>")
def output_file(name: str, filename: str):
    layout = current_app.config["WILDSWARM_LAYOUT"]
    path = results.find_file(results.output_folder(layout, name), filename)
    if path is None:
        abort(404, description=f"No file {filename!r} in results {name!r}.")
    return _send(path, as_attachment=_wants_download())


@bp.get("/plot/<name>")
def plot(name: str):
    """Old link: the trajectory plot of ``name``."""
    layout = current_app.config["WILDSWARM_LAYOUT"]
    path = results.find_file(results.output_folder(layout, name), results.PLOT)
    if path is None:
        abort(404, description=f"No trajectory plot for {name!r}.")
    return _send(path)
