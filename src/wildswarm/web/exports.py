"""Exports for download: one job's result in a field format, or many jobs' in one file.

    GET  /jobs/<id>/export/<format>          (and /api/jobs/<id>/export/<format>)
    POST /api/exports   {"format": "md-json", "jobs": ["<id>", ...], "options": {...}}   or the same as a form

The file streams out as the exporter writes it (:class:`_Pipe`: the exporter runs in a thread of
its own, 64 KiB chunks, at most 1 MiB held): the download starts with the first video, however
many it holds, so a long export (the NWB of many long videos) meets no proxy timeout, which counts
between reads; nothing of it is kept on disk. What the exporter refuses before it writes anything
(a job not finished, metadata Camtrap DP needs) is a 409 with the reasons; a failure after the
first bytes (a result file gone meanwhile) can only cut the download short, which the client sees
as a broken transfer, and is logged.
"""
from __future__ import annotations

import io
import logging
import queue
import threading
import unicodedata
from urllib.parse import quote

from flask import Blueprint, Response, jsonify, request

from wildswarm import exporters
from wildswarm.errors import ExportError
from wildswarm.exporters.base import ExportOptions, contributor, select
from wildswarm.web import service

bp = Blueprint("exports", __name__)
log = logging.getLogger(__name__)

MAX_JOBS = 2000
CHUNK = 64 * 1024           # bytes the exporter's writes are gathered into before they leave
DEPTH = 16                  # chunks made ahead of the client at most (then the exporter waits)


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


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


_DONE = object()


class _Pipe(io.RawIOBase):
    """Where an exporter writes in its thread; the response reads the chunks (``queue``), in order,
    then ``_DONE`` or a ``_Failed``. Writes are gathered into ``CHUNK``-byte chunks; what is left
    goes out only when the exporter ends well, so an exporter that fails before its first chunk (even
    one whose zip wrote its closing record) is refused whole. Not seekable, so :mod:`zipfile` writes
    its entries' sizes after them. A client that goes away (``abandon``) makes the exporter's next
    write fail, ending it."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: queue.Queue = queue.Queue(DEPTH)
        self.abandoned = threading.Event()
        self._gathered = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if self.abandoned.is_set():
            raise BrokenPipeError("the client stopped reading the export")
        self._gathered += data
        while len(self._gathered) >= CHUNK:
            self._put(bytes(self._gathered[:CHUNK]))
            del self._gathered[:CHUNK]
        return len(data)

    def _put(self, item) -> None:
        """``item`` into the queue, waiting while it is full, unless the client went away meanwhile: one
        write of many chunks (a whole JSON document, a zip entry) must not wait for ever on a queue that
        nobody reads any more."""
        while True:
            if self.abandoned.is_set():
                raise BrokenPipeError("the client stopped reading the export")
            try:
                self.queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def end(self, exc: BaseException | None = None) -> None:
        """The exporter ended: the rest and ``_DONE``, or (failed) a ``_Failed`` in place of the rest."""
        try:
            if exc is None and self._gathered:
                self._put(bytes(self._gathered))
            self._gathered.clear()
            self._put(_DONE if exc is None else _Failed(exc))
        except BrokenPipeError:
            return

    def abandon(self) -> None:
        self.abandoned.set()
        while True:                          # let a write blocked on a full queue return (and fail next)
            try:
                self.queue.get_nowait()
            except queue.Empty:
                return


def _export(exporter, results, options: ExportOptions, pipe: _Pipe) -> None:
    """The exporter's thread: the file into ``pipe``, then how it ended."""
    try:
        exporter.write(results, pipe, options)
    except BaseException as exc:  # noqa: BLE001 -- handed to the response, which decides
        pipe.end(exc)
    else:
        pipe.end()


def _stream(first, pipe: _Pipe, name: str):
    """The chunks of the export after ``first``, as the exporter makes them."""
    item = first
    try:
        while item is not _DONE:
            if isinstance(item, _Failed):
                problems = "; ".join(getattr(item.exc, "problems", None) or [])
                log.error("export %s cut short after its first bytes: %s: %s %s", name, type(item.exc).__name__,
                          item.exc, problems)
                raise item.exc
            yield item
            item = pipe.queue.get()
    finally:
        pipe.abandon()                  # the client went away (or the end): the exporter must not wait


def _attachment(response: Response, name: str) -> None:
    """``Content-Disposition: attachment`` named ``name`` (RFC 6266: an ASCII fallback and UTF-8)."""
    try:
        name.encode("ascii")
        names = {"filename": name}
    except UnicodeEncodeError:
        simple = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
        names = {"filename": simple, "filename*": "UTF-8''" + quote(name, safe="!#$&+^`|~")}
    response.headers.set("Content-Disposition", "attachment", **names)


def _send(fmt: str, job_ids: list[str], options: ExportOptions | None = None):
    if fmt not in exporters.FORMATS:
        return _error(400, f"no export format {fmt!r}; there are: {', '.join(exporters.FORMATS)}", "bad_request")
    try:
        exporter = exporters.get(fmt)
        results = select(service.store(), service.layout(), job_ids)
    except ExportError as exc:
        return _refused(exc)
    pipe = _Pipe()
    threading.Thread(target=_export, args=(exporter, results, options or ExportOptions(), pipe), daemon=True,
                     name=f"export-{fmt}").start()
    first = pipe.queue.get()              # the status follows what the exporter does before its first chunk
    if isinstance(first, _Failed):
        if isinstance(first.exc, ExportError):
            return _refused(first.exc)
        raise first.exc
    name = exporter.filename(results)
    response = Response(_stream(first, pipe, name), mimetype=exporter.mimetype)
    response.call_on_close(pipe.abandon)  # also when the client left before the first chunk was read
    _attachment(response, name)
    response.headers["Cache-Control"] = "no-store"
    return response


def _refused(exc: ExportError):
    return _error(409, str(exc).split("\n")[0], "export_refused", exc.problems or [str(exc)])


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
