"""Acting on many jobs at once: retry or delete a selection, or every job a filter matches.

    POST /api/jobs/bulk   {"action": "retry" | "cancel" | "delete", "jobs": [id, ...]}, or {"action": ..., "filter":
                          {"status": "failed", "q": "cam07", ...}} (the listing's filters); for delete,
                          "delete_inputs": true also removes the videos from input_done/ and input_failed/.
                          Answers each job's result: retried | pending | cancelled | deleted | conflict | missing.
    POST /api/jobs/outputs.zip  {"jobs": [...]} or {"filter": {...}}: the done ones' results as one zip,
                          streamed (each job in its own folder; skipped.txt names the others and why)
    POST /jobs/bulk       the jobs page's form (the ticked jobs, or all that match its filters); a delete
                          shows what will be removed and asks to confirm first; "download" answers the zip

Retry and cancel go through intake (as one job's buttons do); delete removes the record first (only a done or
failed job: the job store checks it in the same statement), then its result folder and, if asked,
its input. Nothing outside the data root is touched, and links are never followed.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from flask import Blueprint, current_app, flash, jsonify, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from wildswarm.errors import JobConflict, JobError, UnsafePathError
from wildswarm.jobs import Job
from wildswarm.layout import SEGMENTS_DIR, Layout, partial_results, stem_of
from wildswarm.web import service
from wildswarm.web.query import BadQuery, job_query

bp = Blueprint("bulk", __name__)

ACTIONS = ("retry", "cancel", "delete")
FORM_ACTIONS = (*ACTIONS, "download")
MAX_JOBS = 1000          # one request acts on at most this many jobs


class BulkError(ValueError):
    """A bulk request that cannot be acted on as sent (HTTP 400)."""


def selection(jobs, filter_args: MultiDict | None) -> list[str]:
    """The job ids a request means: the ones it lists, or every one its filter matches (newest first)."""
    if filter_args is not None:
        try:
            query = job_query(filter_args, default_limit=MAX_JOBS)
        except BadQuery as exc:
            raise BulkError(f"filter: {exc}") from None
        return [j.id for j in service.store().list(query)]
    if not isinstance(jobs, list) or not jobs or not all(isinstance(j, str) and 0 < len(j) <= 64 for j in jobs):
        raise BulkError("jobs must be a non-empty list of job ids (or send a filter)")
    if len(jobs) > MAX_JOBS:
        raise BulkError(f"at most {MAX_JOBS} jobs at once")
    return list(dict.fromkeys(jobs))


def act(action: str, job_ids: list[str], *, delete_inputs: bool = False) -> list[dict]:
    """Do ``action`` to each job; one result per job, whatever happened to the others."""
    from wildswarm.web import metrics
    intake = current_app.config["WILDSWARM_INTAKE"]
    results = []
    for job_id in job_ids:
        try:
            if action == "retry":
                admission = intake.retry(job_id, how="retried with others from the web app")
                metrics.RETRIES.inc()
                results.append({"id": job_id, "result": "retried" if admission.result != "pending" else "pending",
                                "message": admission.message})
            elif action == "cancel":
                job = intake.cancel(job_id, how="cancelled with others from the web app")
                results.append({"id": job_id, "result": "cancelled", "message": f"{job.input_name}: cancelled"})
            else:
                job = service.store().delete(job_id)
                removed = remove_files(service.layout(), job, delete_inputs)
                results.append({"id": job_id, "result": "deleted", "removed": removed,
                                "message": f"{job.input_name}: record deleted"
                                           + (f"; removed {', '.join(removed)}" if removed else "")})
        except JobConflict as exc:
            results.append({"id": job_id, "result": "conflict", "message": str(exc)})
        except JobError as exc:
            results.append({"id": job_id, "result": "missing", "message": str(exc)})
    return results


def _inside(layout: Layout, path: Path) -> bool:
    try:
        layout.inside(path)
    except (UnsafePathError, OSError, RuntimeError):    # outside the data root, or unresolvable
        return False
    return not path.is_symlink()


def remove_files(layout: Layout, job: Job, delete_inputs: bool) -> list[str]:
    """A deleted job's result folder (and its segments' leftovers) and, if asked, its input: the paths
    removed, relative to the data root. Best effort: the record is gone already."""
    def plain(name: str | None) -> bool:          # one name, never a path: nothing above its folder
        return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")

    targets: list[Path] = []
    if plain(job.output):
        targets += [layout.output / job.output, layout.output / SEGMENTS_DIR / job.output]
    stem = stem_of(job.input_name) if plain(job.input_name) else None
    if stem and not layout.stem_waiting(stem):       # unless a waiting video of its stem owns them:
        if stem != job.output:
            targets.append(layout.output / SEGMENTS_DIR / stem)          # a failed long video's finished segments,
        targets += partial_results(layout.output, stem)                  # what its killed attempts left mid-write
    if delete_inputs and plain(job.input_name):
        stem, ext, tag = Path(job.input_name).stem, Path(job.input_name).suffix, job.id[:8]
        for folder in (layout.input_done, layout.input_failed):
            targets += [folder / job.input_name, folder / f"{stem}-{tag}{ext}"]
            targets += sorted(folder.glob(f"{stem}-{tag}-*{ext}"))
    removed = []
    for path in targets:
        if path.parent not in (layout.output, layout.output / SEGMENTS_DIR, layout.input_done, layout.input_failed):
            continue
        if not path.exists() or not _inside(layout, path):
            continue
        try:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        except OSError:
            continue
        removed.append(str(path.relative_to(layout.root)))
    return removed


def results_zip(job_ids: list[str]):
    """The results of the done jobs among ``job_ids`` as one streamed zip (409 if none has any)."""
    from flask import abort
    from wildswarm.jobs import JobStatus
    from wildswarm.web import results
    from wildswarm.web.files import zip_response
    layout, entries, skipped = service.layout(), [], []
    for job_id in job_ids:
        job = service.store().find(job_id)
        if job is None:
            skipped.append(f"{job_id[:64]}: no such job")
            continue
        folder = results.job_folder(layout, job) if job.status is JobStatus.DONE else None
        files = results.list_files(folder)
        if not files:
            skipped.append(f"{job.id} {job.input_name}: {job.status.value}, no results")
            continue
        entries.append((folder, files, folder.name))
    if not entries:
        abort(409, description="None of these jobs has results to download: " + "; ".join(skipped[:20]))
    notes = {"skipped.txt": "Not in this archive:\n" + "\n".join(skipped) + "\n"} if skipped else {}
    return zip_response(entries, f"wildswarm-results-{len(entries)}", notes)


def json_selection(body: dict) -> list[str]:
    """The job ids a JSON body means: its "jobs", or every job its "filter" matches (:class:`BulkError`)."""
    given = body.get("filter")
    if given is not None and not (isinstance(given, dict) and all(isinstance(v, str) for v in given.values())):
        raise BulkError("filter must be an object of the listing's filters, as strings")
    return selection(body.get("jobs"), MultiDict(given) if given is not None else None)


@bp.post("/api/jobs/outputs.zip")
def api_zip():
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _error(400, 'send a JSON object: {"jobs": [...]} or {"filter": {...}}')
    try:
        ids = json_selection(body)
    except BulkError as exc:
        return _error(400, str(exc))
    return results_zip(ids)


def _counts(results: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in results:
        counts[r["result"]] = counts.get(r["result"], 0) + 1
    return counts


@bp.post("/api/jobs/bulk")
def api_bulk():
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _error(400, 'send a JSON object: {"action": "retry", "cancel" or "delete", "jobs": [...]} or "filter"')
    action = body.get("action")
    if action not in ACTIONS:
        return _error(400, f"action must be one of: {', '.join(ACTIONS)}")
    try:
        ids = json_selection(body)
    except BulkError as exc:
        return _error(400, str(exc))
    results = act(action, ids, delete_inputs=body.get("delete_inputs") is True)
    return jsonify(action=action, results=results, counts=_counts(results))


def _error(status: int, message: str):
    response = jsonify(error=message, reason="bad_request")
    response.status_code = status
    return response


@bp.post("/jobs/bulk")
def page_bulk():
    """The jobs page's form: the ticked jobs, or with ``all`` every job its filters match."""
    form = request.form
    action = form.get("action")
    # the page's filters, encoded again: a line break pasted into the field would break the Location header
    back = url_for("ui.jobs") + ("?" + urlencode(parse_qsl(form["filter"])) if form.get("filter") else "")
    if action not in FORM_ACTIONS:
        flash("Choose what to do with the jobs: download, retry, cancel or delete.", "error")
        return redirect(back, 303)
    try:
        ids = selection(form.getlist("job"), MultiDict(parse_qsl(form.get("filter", ""))) if form.get("all") else None)
    except BulkError:
        flash("No job was ticked: tick some, or choose every job that matches the filters.", "error")
        return redirect(back, 303)
    if action == "download":
        return results_zip(ids)
    delete_inputs = form.get("delete_inputs") == "yes"
    if action == "delete" and form.get("confirm") != "yes":
        jobs = [j for j in (service.store().find(i) for i in ids) if j is not None]
        return render_template("bulk_confirm.html", jobs=jobs, delete_inputs=delete_inputs, back=back,
                               filter=form.get("filter", ""))
    results = act(action, ids, delete_inputs=delete_inputs)
    counts = _counts(results)
    done = sum(counts.get(k, 0) for k in ("retried", "pending", "cancelled", "deleted"))
    verb = {"retry": "queued again", "cancel": "cancelled", "delete": "deleted"}[action]
    flash(f"{done} of {len(results)} job(s) {verb}.", "ok" if done == len(results) else "warn")
    for r in results:
        if r["result"] in ("conflict", "missing"):
            flash(r["message"], "error")
    return redirect(back, 303)
