"""Uploads: streamed into ``uploads/`` once the client is authenticated, checked, then handed to intake.

No request body is read before the client is authenticated (``security.guard``
runs first, and looks only at headers). Only the two upload endpoints may
send a large body; every other request is limited to :data:`SMALL_BODY`
bytes, so nobody can make the app write a file by posting to, say, the login page.

The body of an upload is never held whole in memory or in /tmp:
:class:`UploadRequest` has werkzeug write each uploaded file straight to
``uploads/.upload-<random>.part`` (a folder of its own, outside ``input/``)
while Flask's ``MAX_CONTENT_LENGTH`` cuts an oversized request off early. A
request's part files are removed when it ends, whatever happened; a gunicorn
worker killed mid-request leaves one behind, which :meth:`Layout.sweep_uploads`
removes (at the app's start, and periodically from the producer).

A file is refused (and its part file removed) if it has no usable name, is
not an ``.mp4``, is empty or too large, or is not an MP4 video (no ISO-BMFF
``ftyp`` box, or PyAV cannot read a video stream from it). An accepted file
goes through :class:`~wildswarm.intake.Intake` (hash, dedupe, claim a name in
``input/``, record, publish). A full disk is a clear 507, not a 500.
"""
from __future__ import annotations

import errno
import os
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import Path

from flask import Request, abort, current_app, request
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import HTTPException

from wildswarm.config import Settings
from wildswarm.errors import UnsafePathError, VideoError, WildswarmError
from wildswarm.intake import Admission, Intake, Refused
from wildswarm.layout import PART_PREFIX, Layout, safe_name
from wildswarm.web import metrics

TEMP_PREFIX = PART_PREFIX
TEMP_KEY = "wildswarm.upload_temps"
MAX_NAME_BYTES = 255
FORM_SLACK = 1 << 20          # room for multipart headers and small fields above the file limit
SMALL_BODY = 64 * 1024        # the most any request but an upload may send
UPLOAD_ENDPOINTS = frozenset({"ui.upload", "api.submit"})
FULL = (errno.ENOSPC, errno.EDQUOT)


class InsufficientStorage(HTTPException):
    code = 507
    description = "The server's disk is full: the upload could not be saved. Nothing was kept; try again later."


class UploadRefused(WildswarmError):
    """An upload that is not accepted; ``reason`` is a metric label, ``status`` the HTTP status."""

    def __init__(self, reason: str, status: int, message: str):
        super().__init__(message)
        self.reason, self.status, self.message = reason, status, message


class UploadRequest(Request):
    """A Flask request whose uploaded files are written straight into part files in uploads/."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        if self.endpoint not in UPLOAD_ENDPOINTS:       # never a file on disk for any other endpoint
            abort(413, description="This address takes no files.")
        layout: Layout = current_app.config["WILDSWARM_LAYOUT"]
        layout.uploads.mkdir(parents=True, exist_ok=True)
        path = layout.uploads / f"{TEMP_PREFIX}{uuid.uuid4().hex}.part"
        self.environ.setdefault(TEMP_KEY, []).append(path)
        return open(path, "w+b")


def body_limit(settings: Settings) -> None:
    """before_request (after the guard): the body limit of this endpoint."""
    request.max_content_length = upload_limit(settings) + FORM_SLACK if request.endpoint in UPLOAD_ENDPOINTS \
        else SMALL_BODY


def uploaded(field: str) -> list[FileStorage]:
    """The files of form field ``field``: reading the body here, a full disk is a 507."""
    try:
        return request.files.getlist(field)
    except OSError as exc:
        if exc.errno in FULL:
            raise InsufficientStorage() from None
        raise


def remove_temps(environ: dict) -> None:
    """Remove what an upload left in uploads/ (refused, aborted or failed): teardown of every request."""
    for path in environ.pop(TEMP_KEY, []):
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def upload_limit(settings: Settings) -> int:
    return min(settings.web_max_upload_bytes, settings.max_video_bytes)


# Unicode's bidirectional controls: a name that shows as "clip.mp4" but is not (e.g. U+202E reversing it)
BIDI_CONTROLS = frozenset("\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def check_name(name: str | None) -> str:
    """The safe name for a user-given file name, or :class:`UploadRefused` for a hostile one."""
    if name is None or not name.strip():
        raise UploadRefused("no_file", 400, "No file was chosen.")
    if len(name.encode("utf-8", "replace")) > MAX_NAME_BYTES:
        raise UploadRefused("bad_name", 400, f"The file name is longer than {MAX_NAME_BYTES} bytes.")
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") or c in BIDI_CONTROLS for c in name):
        raise UploadRefused("bad_name", 400, "The file name contains control characters.")
    if "/" in name or "\\" in name:
        raise UploadRefused("bad_name", 400, f"{name!r} is a path; send a plain file name (no / or \\).")
    if name.startswith("."):
        raise UploadRefused("bad_name", 400, f"{name!r}: a file name may not start with a dot.")
    ext = Path(name).suffix.lower()
    try:
        clean = safe_name(name)
        if Path(clean).suffix.lower() != ext:      # nothing usable before the extension
            clean = safe_name("upload" + ext)
    except UnsafePathError:
        raise UploadRefused("bad_name", 400, f"{name!r} has no usable characters.") from None
    return clean


def is_iso_bmff(path: Path) -> bool:
    """Whether ``path`` starts like an MP4 (ISO base media file): a box of type ``ftyp``."""
    with open(path, "rb") as fh:
        head = fh.read(12)
    return len(head) == 12 and head[4:8] == b"ftyp" and int.from_bytes(head[:4], "big") in range(8, 1 << 16)


def check_video(path: Path, name: str) -> None:
    if not is_iso_bmff(path):
        raise UploadRefused("not_video", 415, f"{name} is not an MP4 video (its content is not an MP4 container).")
    from wildswarm.pipeline.video import probe   # PyAV reads the container's header
    try:
        probe(path)
    except VideoError as exc:
        detail = str(exc).replace(str(path), name).replace(path.name, name)
        raise UploadRefused("not_video", 415, f"{name} is not a readable video: {detail}") from None


@dataclass(frozen=True)
class Accepted:
    admission: Admission

    @property
    def job(self):
        return self.admission.job

    @property
    def result(self) -> str:
        """queued | pending | duplicate (a duplicate whose failed job this copy retried counts as queued)."""
        return {"retried": "queued"}.get(self.admission.result, self.admission.result)

    @property
    def message(self) -> str:
        return self.admission.message


def accept(settings: Settings, intake: Intake, upload: FileStorage, *, deployment_id: str | None = None,
           recorded_at: str | None = None, profile: str | None = None, webhook: str | None = None) -> Accepted:
    """Check one uploaded file (already streamed to its part file) and admit it, with the deployment
    it was recorded in and when, where given, to be analysed with ``profile`` (None: the default), its
    job's end POSTed to ``webhook``."""
    layout = Layout(settings.data)
    clean = check_name(upload.filename)
    stream = upload.stream
    tmp = Path(getattr(stream, "name", "") or "")
    if not tmp.name.startswith(TEMP_PREFIX) or tmp.parent != layout.uploads:
        raise RuntimeError("uploads must be read through UploadRequest")
    stream.flush()
    size = os.fstat(stream.fileno()).st_size
    limit = upload_limit(settings)
    if Path(clean).suffix.lower() not in settings.extensions:
        raise UploadRefused("bad_type", 415, f"{upload.filename}: extension {Path(clean).suffix or '(none)'!r} "
                                             f"is not accepted (accepted: {', '.join(settings.extensions)}).")
    if size > limit:
        raise UploadRefused("too_large", 413, f"{upload.filename}: file is {size} bytes, over the upload limit "
                                              f"of {limit} bytes.")
    if size == 0:
        raise UploadRefused("empty", 400, f"{upload.filename}: file is empty.")
    check_video(tmp, clean)
    metrics.UPLOAD_BYTES.inc(size)
    try:
        admission = intake.admit_staged(tmp, clean, source="uploaded"
                                        + (f" as {upload.filename}" if upload.filename != clean else ""),
                                        deployment_id=deployment_id or None, recorded_at=recorded_at or None,
                                        profile=profile or None, webhook=webhook or None)
    except Refused as exc:
        status = {"bad_type": 415, "empty": 400, "bad_deployment": 400, "bad_time": 400,
                  "bad_profile": 400, "bad_webhook": 400}.get(exc.kind, 413)
        raise UploadRefused(exc.kind, status, str(exc)) from None
    except OSError as exc:
        if exc.errno in FULL:
            raise InsufficientStorage() from None
        raise
    return Accepted(admission)


def accept_counted(settings: Settings, intake: Intake, upload: FileStorage, **given) -> Accepted:
    """:func:`accept`, counted in the upload metrics."""
    try:
        result = accept(settings, intake, upload, **given)
    except UploadRefused as exc:
        metrics.UPLOADS_REFUSED.labels(exc.reason).inc()
        raise
    metrics.UPLOADS.labels(result.result).inc()
    return result
