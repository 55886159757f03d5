"""Uploads: streamed into a hidden file in input/, checked, renamed into place, queued at once.

The request body is never held whole in memory or in /tmp: :class:`UploadRequest`
has werkzeug write each uploaded file straight to ``input/.upload-<random>.part``
(hidden, so the producer ignores it) while Flask's ``MAX_CONTENT_LENGTH`` cuts
an oversized request off early. A file is refused, and its temporary file
removed, if it has no usable name, is not an ``.mp4``, is empty or too large
(the producer's own :func:`~wildswarm.producer.refusal`), or is not an MP4 video
(no ISO-BMFF ``ftyp`` box, or PyAV cannot read a video stream from it). An
accepted file is renamed (hard link, never overwriting) to a unique safe name
in input/, published through the process's :class:`Publisher`, and recorded.
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from flask import Request, current_app
from werkzeug.datastructures import FileStorage

from wildswarm.config import Settings
from wildswarm.errors import UnsafePathError, VideoError, WildswarmError
from wildswarm.jobs import Job, JobStatus, JobStore, job_id_for
from wildswarm.layout import Layout, safe_name
from wildswarm.messages import JobMessage
from wildswarm.producer import refusal
from wildswarm.web import metrics
from wildswarm.web.publisher import PENDING_NOTE, Publisher

TEMP_PREFIX = ".upload-"
TEMP_KEY = "wildswarm.upload_temps"
MAX_NAME_BYTES = 255
FORM_SLACK = 1 << 20          # room for multipart headers and small fields above the file limit


class UploadRefused(WildswarmError):
    """An upload that is not accepted; ``reason`` is a metric label, ``status`` the HTTP status."""

    def __init__(self, reason: str, status: int, message: str):
        super().__init__(message)
        self.reason, self.status, self.message = reason, status, message


@dataclass(frozen=True)
class Accepted:
    job: Job
    result: str        # queued | pending | duplicate
    message: str


class UploadRequest(Request):
    """A Flask request whose uploaded files are written straight into hidden files in input/."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        layout: Layout = current_app.config["WILDSWARM_LAYOUT"]
        layout.input.mkdir(parents=True, exist_ok=True)
        path = layout.input / f"{TEMP_PREFIX}{uuid.uuid4().hex}.part"
        self.environ.setdefault(TEMP_KEY, []).append(path)
        return open(path, "w+b")


def remove_temps(environ: dict) -> None:
    """Remove what an upload left in input/ (refused, aborted or failed): teardown of every request."""
    for path in environ.pop(TEMP_KEY, []):
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def upload_limit(settings: Settings) -> int:
    return min(settings.web_max_upload_bytes, settings.max_video_bytes)


def check_name(name: str | None) -> str:
    """The safe name for a user-given file name, or :class:`UploadRefused` for a hostile one."""
    if name is None or not name.strip():
        raise UploadRefused("no_file", 400, "No file was chosen.")
    if len(name.encode("utf-8", "replace")) > MAX_NAME_BYTES:
        raise UploadRefused("bad_name", 400, f"The file name is longer than {MAX_NAME_BYTES} bytes.")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
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


def _lost_failed_input(layout: Layout, job: Job) -> bool:
    from wildswarm.web.service import _failed_input
    return job.status is JobStatus.FAILED and not (job.error or "").startswith("refused:") \
        and _failed_input(layout, job) is None


def accept(settings: Settings, publisher: Publisher, upload: FileStorage) -> Accepted:
    """Check one uploaded file (already streamed to its temporary file) and queue it."""
    layout = Layout(settings.data)
    store = JobStore(layout)
    clean = check_name(upload.filename)
    stream = upload.stream
    tmp = Path(getattr(stream, "name", "") or "")
    if not tmp.name.startswith(TEMP_PREFIX) or tmp.parent != layout.input:
        raise RuntimeError("uploads must be read through UploadRequest")
    stream.flush()
    size = os.fstat(stream.fileno()).st_size
    reason = refusal(settings, clean, size)
    limit = upload_limit(settings)
    if reason is None and size > limit:
        reason = f"file is {size} bytes, over the upload limit of {limit} bytes"
    if reason:
        kind = ("bad_type" if Path(clean).suffix.lower() not in settings.extensions else
                "empty" if size == 0 else "too_large")
        status = {"bad_type": 415, "empty": 400, "too_large": 413}[kind]
        raise UploadRefused(kind, status, f"{upload.filename}: {reason}.")
    check_video(tmp, clean)
    job_id = job_id_for(tmp)
    metrics.UPLOAD_BYTES.inc(size)
    if store.exists(job_id):
        job = store.get(job_id)
        if _lost_failed_input(layout, job):     # failed, and its input is gone: this copy retries it
            from wildswarm.web import service
            job, queued = service.retry(settings, publisher, job.id, upload=tmp)
            then = "queues it again" if queued else "is kept; it is queued when the broker answers"
            return Accepted(job, "queued" if queued else "pending",
                            f"{upload.filename} is job {job.id}, which had failed and whose input was gone: "
                            f"this upload {then}.")
        tmp.unlink(missing_ok=True)
        return Accepted(job, "duplicate", f"{upload.filename} was uploaded before: it is job {job.id} "
                                          f"({job.input_name}, {job.status.value}).")
    os.utime(tmp)        # a fresh mtime: the producer leaves it alone until it has settled
    final = layout.claim_input(tmp, clean)
    queued = publisher.publish(JobMessage(job_id, final.name))
    note = None if queued else f"{PENDING_NOTE} ({publisher.last_error}); it is queued as soon as it answers"
    job, created = store.create(Job(id=job_id, input_name=final.name, size_bytes=size, error=note))
    if not queued and created:
        publisher.add_pending(job_id)
    renamed = f" as {final.name}" if final.name != upload.filename else ""
    layout.log(settings.node, f"job {job_id} {final.name}: uploaded{renamed}, "
                              f"{'queued' if queued else 'saved; broker unreachable, queued when it answers'}")
    if queued:
        return Accepted(job, "queued", f"{upload.filename} uploaded{renamed} and queued as job {job_id}.")
    return Accepted(job, "pending", f"{upload.filename} is saved{renamed} as job {job_id}. The job queue cannot be "
                                    "reached right now; the job is queued automatically as soon as it answers.")


def accept_counted(settings: Settings, publisher: Publisher, upload: FileStorage) -> Accepted:
    """:func:`accept`, counted in the upload metrics."""
    try:
        result = accept(settings, publisher, upload)
    except UploadRefused as exc:
        metrics.UPLOADS_REFUSED.labels(exc.reason).inc()
        raise
    metrics.UPLOADS.labels(result.result).inc()
    return result
