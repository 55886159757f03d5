"""The producer: turn videos that land in ``input/`` into jobs, and keep the queue and the job store agreed.

A file is taken once it has stopped changing: the same size and mtime seen on
polls spanning at least ``settle_seconds`` (watched, never guessed from the
file's own mtime, so an scp that stalls for a while is not taken half-copied).
Hidden files (``.name``: temporary copies) and symbolic links are ignored; a
file in a folder of ``input/`` (one level down) is analysed with the profile the
folder is named after (``input/lab-topview-mouse/x.mp4``), and refused, with
that reason, if there is no such profile. Each settled file goes through
:mod:`wildswarm.intake`: refused, known (the same content is already a job), or
recorded and published.

Every ``reconcile_seconds`` it runs the :class:`~wildswarm.reconciler.Reconciler`
(pending publishes, abandoned and dead-lettered jobs, lost messages), and in a thread of
its own the :class:`~wildswarm.notifier.Notifier` (webhooks of ended jobs). On its
first start against a job store it imports the JSON job records of earlier
versions (``jobs/*.json``) once.

:func:`submit_file` (``wildswarm submit``) hands a video over directly: copied
into ``uploads/`` under a hidden name, then through the same intake.
"""
from __future__ import annotations

import logging
import os
import shutil
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from wildswarm import metrics
from wildswarm.broker import Broker
from wildswarm.publisher import Publisher
from wildswarm.config import Settings
from wildswarm.errors import BrokerError, JobStoreError, UnsafePathError, VideoError
from wildswarm.intake import Admission, Intake, Refused, refusal
from wildswarm.jobs import JobStore
from wildswarm.layout import Layout, safe_name
from wildswarm.leftovers import sweep_leftovers
from wildswarm.notifier import Notifier
from wildswarm.reconciler import Reconciler, safe_run

log = logging.getLogger(__name__)
LEFTOVER_SWEEP_SECONDS = 600.0   # how often the producer looks for leftovers of killed model fetches and exports


def submit_file(intake: Intake, video: Path, **given) -> Admission:
    """Copy ``video`` into uploads/ and admit it (``wildswarm submit``); ``given``: its
    ``deployment_id``, ``recorded_at`` and ``profile``, as :meth:`Intake.admit_staged` takes them."""
    video = Path(video)
    if not video.is_file():
        raise VideoError(f"{video}: no such file")
    name = safe_name(video.name)
    why = refusal(intake.settings, name, video.stat().st_size)
    if why:
        raise Refused(why[0], f"{video.name}: {why[1]}")
    layout = intake.layout
    layout.uploads.mkdir(parents=True, exist_ok=True)
    layout.input.mkdir(parents=True, exist_ok=True)      # a fresh data root: no producer has made it yet
    staged = layout.staging_path(name)
    try:
        shutil.copyfile(video, staged)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return intake.admit_staged(staged, name, source=f"submitted from {video.name}", **given)


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    since: float          # monotonic time first seen with this size and mtime


class Producer:
    def __init__(self, settings: Settings, store: JobStore, broker: Broker | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.layout = Layout(settings.data).ensure()
        self.store = store
        self.broker = broker if broker is not None else Broker(settings)
        self.publisher = Publisher(settings, "producer", broker=self.broker)
        self.intake = Intake(settings, store, self.publisher)
        self.reconciler = Reconciler(settings, store, self.broker, self.publisher, clock)
        self.clock = clock
        self.stopping = threading.Event()
        self.pending: dict[str, _Seen] = {}
        self.handled: dict[str, tuple[int, int]] = {}    # name -> (size, mtime_ns) already dealt with
        self._reconciled = float("-inf")
        self._swept = float("-inf")       # leftovers of model fetches and exports: hours old, so looked for seldom
        self._findings_after: str | None = ""     # backfill_findings: the id to go on after (None: done)

    def stop(self, *_args) -> None:
        self.stopping.set()

    def note(self, line: str) -> None:
        log.info(line)
        self.layout.log(self.settings.node, line)

    # --- finding settled files -------------------------------------------------
    def scan(self) -> list[str]:
        """Names in input/ (``name``, or ``<profile>/name`` one folder down) that have stopped changing
        and are not dealt with yet."""
        now, settle = self.clock(), self.settings.settle_seconds
        present, ready = set(), []
        for name, st in self._files():
            key = (st.st_size, st.st_mtime_ns)
            present.add(name)
            if self.handled.get(name) == key:
                continue
            seen = self.pending.get(name)
            if seen is None or (seen.size, seen.mtime_ns) != key:
                self.pending[name] = _Seen(*key, since=now)
                continue
            if now - seen.since >= settle:
                ready.append(name)
        for gone in set(self.pending) - present:
            del self.pending[gone]
        for gone in set(self.handled) - present:
            del self.handled[gone]
        return sorted(ready)

    def _files(self):
        """(name, stat) of each file in input/ and in its folders (a folder picks the analysis profile);
        hidden names and symbolic links are ignored, and a folder is never followed through a link."""
        def entries(folder: Path, prefix: str = ""):
            try:
                with os.scandir(folder) as it:
                    listed = list(it)
            except (FileNotFoundError, NotADirectoryError):
                return
            except OSError as exc:    # a folder it may not read (mode 000, a filesystem error): the rest goes on
                if not prefix:
                    raise
                log.warning("input/%s skipped for now: %s", prefix, exc.strerror or exc)
                return
            for entry in listed:
                if entry.name.startswith("."):
                    continue
                try:
                    if not prefix and entry.is_dir(follow_symlinks=False):
                        yield from entries(folder / entry.name, entry.name + "/")
                    elif entry.is_file(follow_symlinks=False):
                        yield prefix + entry.name, entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
        yield from entries(self.layout.input)

    # --- dealing with one file ---------------------------------------------------
    def handle(self, name: str) -> str:
        """Queue, skip or refuse ``input/<name>``; returns what happened (a metric label)."""
        seen = self.pending.pop(name)
        profile = name.split("/", 1)[0] if "/" in name else None
        admission = self.intake.admit_dropped(self.layout.input / name, profile=profile)
        result = admission.result
        # the file as it was seen settled, not as it is now: one that changed while it was hashed is
        # looked at again (and its new content replaces the job: Intake._replace_changed)
        self.handled[name] = (seen.size, seen.mtime_ns)
        if result in ("queued", "pending", "retried"):
            # renamed as it was queued (an unsafe name, a profile folder's file): the same file, a link
            # keeps its size and mtime, so its new name is not hashed all over again at the next scan
            self.handled[admission.job.input_name] = (seen.size, seen.mtime_ns)
        metrics.FILES_SEEN.labels("queued" if result == "pending" else result).inc()
        return result

    # --- the loop ----------------------------------------------------------------------
    def poll(self, reconcile: bool = False) -> dict[str, str]:
        """One pass: handle every settled file (those that fail now are tried again on a later poll). A pass
        over a card's thousands of videos takes as long as reading them all: a stop ends it (the rest wait for
        the next start; the stack gives a stop 20 s), and with ``reconcile`` the reconciler's turns come
        between files (dead workers' jobs, pending publishes)."""
        results = {}
        for name in self.scan():
            if self.stopping.is_set():
                break
            if reconcile:
                self.reconcile()
            try:
                results[name] = self.handle(name)
            except (VideoError, UnsafePathError, OSError, JobStoreError) as exc:
                self.pending.pop(name, None)
                log.warning("%s: skipped for now: %s", name, exc)
        return results

    def reconcile(self, force: bool = False) -> None:
        """Every ``reconcile_seconds``: the reconciler, and a sweep of part files dead uploads left and of
        what killed model fetches and exports left (workers mount models/ read-only)."""
        if force or self.clock() - self._reconciled >= self.settings.reconcile_seconds:
            self._reconciled = self.clock()
            safe_run(self.reconciler)
            try:
                self.layout.sweep_uploads(self.settings.web_stale_upload_seconds)
            except OSError as exc:
                log.warning("uploads/ not swept: %s", exc)
            if self.clock() - self._swept >= LEFTOVER_SWEEP_SECONDS:     # not a walk of two folders every 15 s
                self._swept = self.clock()
                sweep_leftovers([self.settings.models, self.settings.cache])
            self.backfill_findings()

    def backfill_findings(self) -> None:
        """A batch of the done videos an older version analysed: their findings, from their summaries
        (so the jobs page can filter them too); a batch per reconcile, until none is left."""
        if self._findings_after is None:
            return
        from wildswarm.jobs import findings
        try:
            recorded, self._findings_after = findings.backfill(self.store, self.layout.output, self._findings_after)
        except JobStoreError as exc:
            log.warning("findings of earlier results not recorded yet: %s", exc)
            return
        if recorded:
            self.note(f"recorded what {recorded} earlier result(s) found, from their summary.json")

    def profile_folders(self) -> None:
        """``input/<profile>/`` for every analysis profile, so the drop zone shows what can be picked; each
        made with ``input/``'s own mode, so whoever may drop videos into ``input/`` may drop them there."""
        for name in self.intake.profiles.current().names():
            folder = self.layout.input / name
            try:
                mode = stat.S_IMODE(self.layout.input.stat().st_mode)
                folder.mkdir()
                os.chmod(folder, mode)
            except FileExistsError:
                pass                               # made before, or by someone: left as it is
            except OSError as exc:
                log.warning("input/%s/ not made: %s", name, exc)

    def import_legacy_records(self) -> None:
        from wildswarm.jobs.legacy import import_json_records
        try:
            counts = import_json_records(self.store, self.layout.jobs)
        except JobStoreError as exc:
            log.warning("JSON job records not imported yet: %s", exc)
            return
        if counts and counts.get("imported"):
            self.note(f"imported {counts['imported']} job record(s) of an earlier version from "
                      f"{self.layout.jobs} ({counts})")

    def run(self, once: bool = False) -> int:
        """Poll until stopped (or, with ``once``, until nothing is left pending). Returns jobs admitted.

        The broker being down stops nothing: videos are recorded with their
        publish pending, and the reconciler publishes them once it answers.
        """
        s, admitted = self.settings, 0
        deadline = self.clock() + s.settle_seconds + 3 * s.poll_seconds + 1
        self.note(f"producer up: watching {self.layout.input} for {', '.join(s.extensions)}; queue {s.queue}")
        self.profile_folders()
        self.import_legacy_records()
        notifier = None if once else Notifier(s, self.store.db, self.note).start()
        while not self.stopping.is_set():
            admitted += sum(r in ("queued", "pending") for r in self.poll(reconcile=not once).values())
            if once:
                if not self.pending or self.clock() > deadline:
                    break
            else:
                self.reconcile()
            self._wait(min(s.poll_seconds, s.settle_seconds) if once else s.poll_seconds)
        if notifier is not None:
            notifier.stop()
        self.broker.close()
        return admitted

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
