"""The producer: turn videos that land in ``input/`` into jobs, each exactly once.

A file is taken once it has stopped growing: the same size and mtime seen on
two polls at least ``settle_seconds`` apart (or, on a later poll, an mtime
already ``settle_seconds`` old). Hidden files (``.name``: temporary copies)
and folders are ignored. Then:

* a file with an extension not in ``settings.extensions``, larger than
  ``settings.max_video_bytes`` or empty is refused: moved to ``input_failed/``
  with a failed job record that gives the reason;
* its job id is the hash of its content (:func:`jobs.job_id_for`); if a record
  with that id exists the video is known and is not queued again (a second copy
  under another name is moved to ``input_failed/`` as a duplicate);
* otherwise it is renamed if its name is unsafe or already taken by another
  job's input or output, published (confirmed), and given its record.

Publish first, record second: a crash in between means the file is published
again on the next run, and the worker acknowledges the second message of a
finished job without work. Nothing is lost either way.

:func:`submit_file` (``wildswarm submit``) and :func:`enqueue_staged` (a web
upload already written to :func:`staging_path`) do the same at once for a video
handed over directly: written in under a hidden name, then renamed into place.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from wildswarm import metrics
from wildswarm.broker import Backoff, Broker
from wildswarm.config import Settings
from wildswarm.errors import BrokerError, UnsafePathError, VideoError
from wildswarm.jobs import Job, JobStatus, JobStore, job_id_for
from wildswarm.layout import Layout, move_into, safe_name
from wildswarm.messages import JobMessage, utcnow

log = logging.getLogger(__name__)


def refusal(settings: Settings, name: str, size: int) -> str | None:
    """Why a file of this name and size is not accepted as a video, or None."""
    ext = Path(name).suffix.lower()
    if ext not in settings.extensions:
        return f"extension {ext or '(none)'!r} is not accepted (accepted: {', '.join(settings.extensions)})"
    if size > settings.max_video_bytes:
        return f"file is {size} bytes, over the limit of {settings.max_video_bytes} (WILDSWARM_MAX_VIDEO_BYTES)"
    if size == 0:
        return "file is empty"
    return None


def publish_job(broker: Broker, msg: JobMessage, component: str = "producer") -> None:
    try:
        broker.publish(msg.encode(), message_id=msg.job_id)
    except BrokerError:
        metrics.PUBLISH_FAILURES.labels(component).inc()
        raise
    metrics.JOBS_PUBLISHED.labels(component).inc()


def submit_file(settings: Settings, broker: Broker, video: Path) -> tuple[Job, bool]:
    """Copy ``video`` into input/ and queue it; (its job, False) if the content is already known."""
    layout = Layout(settings.data).ensure()
    video = Path(video)
    if not video.is_file():
        raise VideoError(f"{video}: no such file")
    name = safe_name(video.name)
    reason = refusal(settings, name, video.stat().st_size)
    if reason:
        raise VideoError(f"{video.name}: {reason}")
    staged = staging_path(layout, name)
    try:
        shutil.copyfile(video, staged)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return enqueue_staged(settings, broker, staged, name, source=video.name)


def staging_path(layout: Layout, name: str) -> Path:
    """A hidden path in input/ to write an incoming video to (the producer ignores hidden files)."""
    return layout.input / f".incoming-{uuid.uuid4().hex[:12]}-{safe_name(name)}"


def enqueue_staged(settings: Settings, broker: Broker, staged: Path, name: str,
                   source: str | None = None) -> tuple[Job, bool]:
    """Queue a complete video written to ``staged`` (from :func:`staging_path`), e.g. a web upload.

    The content decides the job: if it is known, ``staged`` is removed and the
    existing job returned with False. Otherwise it is renamed to a free name
    for ``name`` in input/, published, and recorded: (the new job, True).
    """
    layout, store = Layout(settings.data), JobStore(Layout(settings.data))
    try:
        job_id = job_id_for(staged)
        if store.exists(job_id):
            return store.get(job_id), False
        reason = refusal(settings, safe_name(name), staged.stat().st_size)
        if reason:
            raise VideoError(f"{name}: {reason}")
        final = layout.claim_input(staged, name)
    finally:
        staged.unlink(missing_ok=True)
    try:
        publish_job(broker, JobMessage(job_id, final.name), component="submit")
    except BrokerError as exc:
        raise BrokerError(f"{exc}; {final.name} stays in input/ and the producer queues it") from exc
    job, created = store.create(Job(id=job_id, input_name=final.name, size_bytes=final.stat().st_size))
    origin = f" from {source}" if source and source != final.name else ""
    layout.log(settings.node, f"job {job_id} {final.name}: submitted{origin}, queued")
    return job, created


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    since: float          # monotonic time first seen with this size and mtime


class Producer:
    def __init__(self, settings: Settings, broker: Broker | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.layout = Layout(settings.data).ensure()
        self.store = JobStore(self.layout)
        self.broker = broker if broker is not None else Broker(settings)
        self.clock = clock
        self.stopping = threading.Event()
        self.pending: dict[str, _Seen] = {}
        self.handled: dict[str, tuple[int, int]] = {}    # name -> (size, mtime_ns) already dealt with

    def stop(self, *_args) -> None:
        self.stopping.set()

    def note(self, line: str) -> None:
        log.info(line)
        self.layout.log(self.settings.node, line)

    # --- finding settled files -------------------------------------------------
    def scan(self) -> list[str]:
        """Names in input/ that have stopped growing and are not dealt with yet."""
        now, wall, settle = self.clock(), time.time(), self.settings.settle_seconds
        present, ready = set(), []
        self.layout.input.mkdir(parents=True, exist_ok=True)
        with os.scandir(self.layout.input) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                key = (st.st_size, st.st_mtime_ns)
                present.add(entry.name)
                if self.handled.get(entry.name) == key:
                    continue
                seen = self.pending.get(entry.name)
                if seen is None or (seen.size, seen.mtime_ns) != key:
                    self.pending[entry.name] = _Seen(*key, since=now)
                    continue
                if now - seen.since >= settle or wall - st.st_mtime >= settle:
                    ready.append(entry.name)
        for gone in set(self.pending) - present:
            del self.pending[gone]
        for gone in set(self.handled) - present:
            del self.handled[gone]
        return sorted(ready)

    # --- dealing with one file ---------------------------------------------------
    def handle(self, name: str) -> str:
        """Queue, skip or refuse ``input/<name>``; returns what happened (a metric label)."""
        path = self.layout.input / name
        seen = self.pending.pop(name)
        reason = refusal(self.settings, name, seen.size)
        if reason:
            return self._refuse(path, seen, reason)
        job_id = job_id_for(path)
        if self.store.exists(job_id):
            return self._known(path, self.store.get(job_id))
        if safe_name(name) != name or self._taken(name):
            path = self.layout.claim_input(path, name)
            self.note(f"{name}: renamed to {path.name} (unsafe or already taken)")
        publish_job(self.broker, JobMessage(job_id, path.name))
        self.store.create(Job(id=job_id, input_name=path.name, size_bytes=seen.size))
        self.note(f"job {job_id} {path.name}: queued")
        return self._done(path.name, "queued")

    def _taken(self, name: str) -> bool:
        """Whether another job already owns this name (input moved on, or its output folder)."""
        lay, stem = self.layout, Path(name).stem
        if (lay.input_done / name).exists() or (lay.input_failed / name).exists() or (lay.output / stem).exists():
            return True
        return any(p.name != name and p.stem == stem for p in lay.input.iterdir() if not p.name.startswith("."))

    def _known(self, path: Path, job: Job) -> str:
        if job.input_name != path.name:
            moved = move_into(path, self.layout.input_failed, job.id[:8])
            self.note(f"{path.name}: same content as job {job.id} ({job.input_name}, {job.status.value}); "
                      f"not queued again, moved to input_failed/{moved.name if moved else '?'}")
            return self._done(path.name, "duplicate")
        if job.status.finished:   # its worker stopped between recording and moving it
            move_into(path, self.layout.input_done if job.status is JobStatus.DONE else self.layout.input_failed,
                      job.id[:8])
        return self._done(path.name, "known")

    def _refuse(self, path: Path, seen: _Seen, reason: str) -> str:
        key = f"refused\0{path.name}\0{seen.size}\0{seen.mtime_ns}".encode()
        job_id = hashlib.sha256(key).hexdigest()[:16]
        moved = move_into(path, self.layout.input_failed, job_id[:8])
        name = moved.name if moved else path.name
        self.store.create(Job(id=job_id, input_name=name, status=JobStatus.FAILED, error=f"refused: {reason}",
                              finished_at=utcnow(), size_bytes=seen.size, node=self.settings.node))
        self.note(f"job {job_id} {path.name}: refused ({reason}); moved to input_failed/{name}")
        return self._done(path.name, "refused")

    def _done(self, name: str, result: str) -> str:
        path = self.layout.input / name
        try:
            st = path.stat()
            self.handled[name] = (st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            pass
        metrics.FILES_SEEN.labels(result).inc()
        return result

    # --- the loop ----------------------------------------------------------------------
    def poll(self) -> dict[str, str]:
        """One pass: handle every settled file. BrokerError if publishing failed (files stay pending)."""
        results = {}
        for name in self.scan():
            try:
                results[name] = self.handle(name)
            except (VideoError, UnsafePathError, OSError) as exc:   # gone, unreadable: tried again next poll
                self.pending.pop(name, None)
                log.warning("%s: skipped for now: %s", name, exc)
        return results

    def run(self, once: bool = False) -> int:
        """Poll until stopped (or, with ``once``, until nothing is left pending). Returns files queued."""
        s, backoff, queued = self.settings, Backoff(), 0
        deadline = self.clock() + s.settle_seconds + 3 * s.poll_seconds + 1
        self.note(f"producer up: watching {self.layout.input} for {', '.join(s.extensions)}; queue {s.queue}")
        while not self.stopping.is_set():
            try:
                self.broker.connect()
                queued += sum(r == "queued" for r in self.poll().values())
                backoff.reset()
            except BrokerError as exc:
                metrics.BROKER_RECONNECTS.labels("producer").inc()
                pause = backoff.next()
                self.note(f"broker unavailable ({exc}); retrying in {pause:.1f} s")
                self.broker.close()
                if once and self.clock() > deadline:
                    raise
                self._wait(pause)
                continue
            if once and (not self.pending or self.clock() > deadline):
                break
            self._wait(min(s.poll_seconds, s.settle_seconds) if once else s.poll_seconds)
        self.broker.close()
        return queued

    def _wait(self, seconds: float) -> None:
        """Sleep, keeping the broker connection's heartbeats going when there is one."""
        end = self.clock() + seconds
        while not self.stopping.is_set() and (left := end - self.clock()) > 0:
            try:
                if self.broker.connected:
                    self.broker.sleep(min(left, 0.5))
                    continue
            except BrokerError:
                self.broker.close()
            time.sleep(min(left, 0.2))
