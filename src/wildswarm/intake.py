"""Intake: the one way a video becomes a job.

The producer (a file settled in ``input/``), ``wildswarm submit`` and a web
upload (a complete copy staged in ``uploads/``) and a retry all come through
here, in the same order:

1. **check** the name and size (:func:`refusal`): :class:`Refused` if it is not a video we take;
2. **hash** the content: the job id, so the same video is one job however it arrives;
3. **dedupe**: a known video is not queued again (unless it failed and its input is gone:
   then this copy retries it);
4. **claim a name** in ``input/`` (never overwriting, safe characters only);
5. **record** the job, its message marked pending;
6. **publish** the message (confirmed) and mark it published. If the broker cannot be
   reached, the job stays recorded with its publish pending, and the reconciler publishes
   it once the broker answers: nothing is lost either way.

Record before publish: a crash between the two leaves a pending job that the
reconciler publishes; a message never points at a job that has no record.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from wildswarm.publisher import Publisher
from wildswarm.config import Settings
from wildswarm.errors import JobConflict, JobStoreError, VideoError
from wildswarm.jobs import Job, JobStatus, JobStore, job_id_for
from wildswarm.jobs.admissions import Admissions
from wildswarm.jobs.deployments import Deployments, exact_time
from wildswarm.layout import Layout, free_name, move_into, readable, renamed_readable, safe_name
from wildswarm.messages import JobMessage
from wildswarm.profiles import ProfileBook, ProfileError

log = logging.getLogger(__name__)


class Refused(VideoError):
    """Not a video we take; ``kind`` says why: bad_type | too_large | empty | bad_deployment | bad_time |
    bad_profile."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def refusal(settings: Settings, name: str, size: int) -> tuple[str, str] | None:
    """(kind, why) a file of this name and size is not accepted as a video, or None."""
    ext = Path(name).suffix.lower()
    if ext not in settings.extensions:
        return "bad_type", f"extension {ext or '(none)'!r} is not accepted (accepted: {', '.join(settings.extensions)})"
    if size > settings.max_video_bytes:
        return "too_large", (f"file is {size} bytes, over the limit of {settings.max_video_bytes} "
                             "(WILDSWARM_MAX_VIDEO_BYTES)")
    if size == 0:
        return "empty", "file is empty"
    return None


def given_time(text: str) -> str:
    """A recording time a person gave, checked (:func:`~wildswarm.jobs.deployments.exact_time`): :class:`Refused`
    unless it has its time of day and its UTC offset."""
    try:
        return exact_time(text).isoformat(timespec="seconds")
    except ValueError as exc:
        raise Refused("bad_time", f"recorded at: {exc}") from None


@dataclass(frozen=True)
class Admission:
    """What became of a video handed to intake."""

    job: Job
    result: str        # queued | pending | duplicate | known | retried | refused
    message: str


class Intake:
    def __init__(self, settings: Settings, store: JobStore, publisher: Publisher):
        self.settings = settings
        self.store = store
        self.publisher = publisher
        self.layout = Layout(settings.data)
        self.deployments = Deployments(store.db)
        self.admissions = Admissions(store.db)
        self.profiles = ProfileBook(settings)

    def note(self, line: str) -> None:
        log.info(line)
        self.layout.log(self.settings.node, line)

    # --- a complete copy, staged outside input/ (web upload, wildswarm submit) -----------------
    def admit_staged(self, staged: Path, name: str, source: str, *, deployment_id: str | None = None,
                     recorded_at: str | None = None, profile: str | None = None,
                     webhook: str | None = None) -> Admission:
        """Queue the video written to ``staged`` under the name ``name``; ``staged`` is gone afterwards.
        ``deployment_id``: the known deployment it was recorded in; ``recorded_at``: when it was
        recorded (ISO 8601), for a video whose own metadata does not say or says wrong; ``profile``:
        the analysis profile to analyse it with (None: the default one); ``webhook``: a URL to POST to
        when its job ends (None: its deployment's, if any)."""
        try:
            st = staged.stat()
            self._check(name, st.st_size)
            profile = self.profile(profile)
            webhook = self.webhook(webhook)
            media = self._media(staged, deployment_id, recorded_at)
            job_id = job_id_for(staged)
            known = self.store.find(job_id)
            if known is not None:
                if self._lost_failed_input(known):
                    retried = self.retry(job_id, copy=staged, how=f"{source} of a failed job whose input was gone")
                    return Admission(retried.job, retried.result, f"{name} is job {job_id}, which had failed and "
                                     "whose input was gone: this copy queues it again.")
                return Admission(known, "duplicate", f"{name} is a video wildswarm already has: job {job_id} "
                                                     f"({known.input_name}, {known.status.value}).")
            # kept until its job is recorded: a process that dies once the video is in input/ loses none of it
            self.admissions.ask(job_id, name, {"source": source, "profile": profile, "deployment_id": deployment_id,
                                               "recorded_at": recorded_at, "webhook": webhook})
            try:
                final = self.layout.claim_input(staged, name)
            except Exception:
                with contextlib.suppress(JobStoreError):
                    self.admissions.forget(job_id)
                raise
        finally:
            staged.unlink(missing_ok=True)
        return self._record_and_publish(job_id, final, st, source, deployment_id=deployment_id, media=media,
                                        profile=profile, webhook=webhook)

    # --- a file settled in input/ (the producer) --------------------------------------------------------
    def admit_dropped(self, path: Path, profile: str | None = None) -> Admission:
        """Queue, skip or refuse ``input/<name>``, a file someone copied there; or ``input/<profile>/<name>``,
        analysed with that profile (it moves to ``input/`` once it is a job)."""
        if not stat.S_ISREG(path.lstat().st_mode):    # swapped for a link since the scan saw it: not followed
            raise VideoError(f"{path.name} is no longer a plain file")
        path = renamed_readable(path)          # the job store and the logs take UTF-8 names only
        if profile is not None:
            profile = readable(profile)        # a folder so named is no profile: refused, saying so
        st = path.stat()            # before it is hashed: a change while it is read shows at the next scan
        size = st.st_size
        if profile is None:
            known = self._recorded_unchanged(path, st)
            if known is not None:
                return Admission(known, "known", f"{path.name} is job {known.id}")
        why = refusal(self.settings, path.name, size)
        if why is None and profile is not None:
            try:
                self.profile(profile)
            except Refused as exc:
                why = (exc.kind, f"input/{profile}/: {exc}")
        if why:
            return self._refuse_dropped(path, size, why[1])
        job_id = job_id_for(path)
        known = self.store.find(job_id)
        if known is not None:
            return self._known_dropped(path, known, st)
        where = "input/" if profile is None else f"input/{profile}/"
        asked = {"source": f"dropped into {where}", "profile": self.profile(profile)}
        if profile is None:
            asked = self._unfinished_admission(path, job_id) or asked
            self._replace_changed(path, job_id)
        if profile is not None or safe_name(path.name) != path.name or self.layout.name_taken(path.name, mine=path):
            if profile is not None:          # moved up into input/: its folder's profile kept until it is recorded
                self.admissions.ask(job_id, path.name, asked)
            renamed = self.layout.claim_input(path, path.name)
            if renamed.name != path.name:
                self.note(f"{where}{path.name}: renamed to {renamed.name} (unsafe or already taken)")
            path = renamed
        dep = asked.get("deployment_id")
        return self._record_and_publish(job_id, path, st, asked["source"], deployment_id=dep,
                                        media=self._media(path, dep, asked.get("recorded_at")),
                                        profile=asked["profile"], webhook=asked.get("webhook"))

    def _unfinished_admission(self, path: Path, job_id: str) -> dict | None:
        """What ``input/<name>`` asked for when it came (an upload, a submit, a profile folder), if the process
        admitting it stopped between moving it into input/ and recording its job; None for a dropped file."""
        asked = self.admissions.asked(job_id)
        if asked is None:
            return None
        asked = dict(asked, source=f"{asked.get('source') or 'admitted'} (its admission finished by the producer: "
                                   "the process admitting it stopped)")
        if asked.get("deployment_id") and self.deployments.get(asked["deployment_id"]) is None:
            self.note(f"{path.name}: its deployment {asked['deployment_id']!r} is gone: recorded without one")
            asked["deployment_id"] = None
        try:
            asked["profile"] = self.profile(asked.get("profile"))
        except Refused as exc:
            self.note(f"{path.name}: {exc}: analysed with the default profile")
            asked["profile"] = self.profile(None)
        return asked

    def _recorded_unchanged(self, path: Path, st: os.stat_result) -> Job | None:
        """The queued or running job whose video ``input/<name>`` is, if the file still has the size and
        modification time it had when intake hashed it: known without reading it again (a restarted producer
        would otherwise read every video waiting for a worker, and every upload the web app had hashed)."""
        job = self.store.unfinished_named(path.name)
        if job is not None and job.size_bytes == st.st_size and job.input_mtime_ns == st.st_mtime_ns:
            return job
        return None

    def _replace_changed(self, path: Path, job_id: str) -> None:
        """``input/<name>`` was queued as another job and its content has changed since (a copy that stalled
        past the settle time and resumed, a file overwritten): that job would analyse what it was not
        hashed from. It is cancelled, saying so, and the file becomes a job of its own (the caller's)."""
        old = self.store.unfinished_named(path.name)
        if old is None or old.id == job_id:
            return
        why = (f"its video input/{path.name} changed after it was queued (a copy that resumed, or the file "
               f"replaced): replaced by job {job_id}")
        try:
            self.store.cancel(old.id, why)
        except JobConflict:           # it ended meanwhile: nothing to replace
            return
        self.note(f"job {old.id} {old.input_name}: cancelled: {why}")

    # --- retry --------------------------------------------------------------------------------------------
    def retry(self, job_id: str, copy: Path | None = None, how: str = "retried") -> Admission:
        """Queue a failed (or stranded) job again; :class:`JobConflict` if it may not be.

        ``copy``: a new copy of its video, used when its own input is gone.
        """
        def restore(job: Job) -> str:
            src = self.layout.failed_input(job) or copy
            if src is None:
                raise JobConflict(f"the input of job {job.id} ({job.input_name}) is no longer in input/ or "
                                  "input_failed/; upload the video again")
            if src.parent == self.layout.input and (src != copy or src.name == job.input_name):
                return src.name
            return self.layout.claim_input(src, job.input_name, exact_first=True).name

        job = self.store.reset_for_retry(job_id, restore, stale_seconds=self.settings.republish_after_seconds)
        admission = self._publish(job, how)
        return Admission(admission.job, "retried" if admission.result == "queued" else admission.result,
                         admission.message)

    # --- the steps ----------------------------------------------------------------------------------------
    def profile(self, name: str | None) -> str:
        """The profile a job asking for ``name`` gets (None or "": the default one); :class:`Refused`
        if there is no such profile."""
        try:
            return self.profiles.get(name or None).name
        except ProfileError as exc:
            raise Refused("bad_profile", str(exc)) from None

    @staticmethod
    def webhook(url: str | None) -> str | None:
        """A webhook URL as given (None or "": none); :class:`Refused` unless it is an http(s) URL."""
        from wildswarm.notifier import WebhookError, check_webhook
        if not url:
            return None
        try:
            return check_webhook(url)
        except WebhookError as exc:
            raise Refused("bad_webhook", str(exc)) from None

    def _check(self, name: str, size: int) -> None:
        why = refusal(self.settings, name, size)
        if why:
            raise Refused(why[0], f"{name}: {why[1]}")

    def _media(self, video: Path, deployment_id: str | None = None, recorded_at: str | None = None) -> dict:
        """The video's own metadata, and the recording time given with it; checks the deployment
        is known first (:class:`Refused`), so nothing is claimed for an upload that names none."""
        if deployment_id is not None and self.deployments.get(deployment_id) is None:
            raise Refused("bad_deployment", f"there is no deployment {deployment_id!r}: add it first, or choose "
                                            "one that is known")
        from wildswarm.pipeline.media_tags import media_metadata    # PyAV: the web and producer images have it
        from wildswarm.pipeline.video import probe
        try:
            media = media_metadata(video)
            info = probe(video)      # its length: the cluster page's backlog counts the frames still to analyse
            media.update(duration_s=round(info.duration, 3), fps=round(info.fps, 3), frames=info.frames,
                         width=info.width, height=info.height, codec=info.codec)
        except VideoError:
            media = {}           # not a readable video: the worker says so, with its reason
        if recorded_at:
            media["given_time"] = given_time(recorded_at)
        return media

    def _record_and_publish(self, job_id: str, final: Path, st: os.stat_result, source: str, *,
                            deployment_id: str | None = None, media: dict | None = None, profile: str | None = None,
                            webhook: str | None = None) -> Admission:
        """``st``: the file's stat from before it was hashed (its size and time are recorded with the job)."""
        job, created = self.store.submit(job_id, final.name, st.st_size, deployment_id=deployment_id, media=media,
                                         profile=profile, webhook_url=webhook, input_mtime_ns=st.st_mtime_ns)
        if not created and job.input_name == final.name:
            # this very file, recorded first by the producer (it saw the file settle in input/ before this
            # admission recorded it, finishing it with what it asked for): the job's video, not a duplicate
            return Admission(job, "pending" if job.publish_pending else "queued",
                             f"{final.name} is queued as job {job_id}.")
        if not created:          # the same video, admitted at the same moment by another path
            moved = move_into(final, self.layout.input_failed, job_id[:8])
            self.note(f"{final.name}: same content as job {job_id} ({job.input_name}); not queued again"
                      + (f", moved to input_failed/{moved.name}" if moved else ""))
            return Admission(job, "duplicate", f"{final.name} is job {job_id} ({job.input_name}, {job.status.value}).")
        return self._publish(job, source)

    # --- cancel -----------------------------------------------------------------------------------------
    def cancel(self, job_id: str, how: str = "cancelled") -> Job:
        """Cancel a queued or running job (:class:`JobConflict` if it has ended): its message is acknowledged
        without work when it comes, a running worker stops at its next batch of frames. Its video goes to
        input_failed/, from where a retry takes it back."""
        job = self.store.cancel(job_id, how)
        src = self.layout.input / job.input_name
        moved = None
        if src.is_file() and not src.is_symlink():
            try:
                moved = move_into(src, self.layout.input_failed, job.id[:8])
            except OSError as exc:        # the worker (or the producer) moves it on later
                log.warning("job %s: input not moved: %s", job.id, exc)
        self.note(f"job {job.id} {job.input_name}: {how}" + (f"; input moved to input_failed/{moved.name}"
                                                             if moved else ""))
        return job

    def _publish(self, job: Job, how: str) -> Admission:
        if self.publisher.publish(JobMessage.for_job(job)):
            job = self.store.mark_published(job.id) or self.store.get(job.id)
            self.note(f"job {job.id} {job.input_name}: {how}, queued")
            return Admission(job, "queued", f"{job.input_name} is queued as job {job.id}.")
        self.note(f"job {job.id} {job.input_name}: {how}; the broker is unreachable, queued when it answers")
        return Admission(job, "pending", f"{job.input_name} is saved as job {job.id}. The job queue cannot be "
                                         "reached right now; the job is queued automatically as soon as it answers.")

    def _lost_failed_input(self, job: Job, copy: Path | None = None) -> bool:
        """A retriable job whose video is no longer kept (but for ``copy``, a new copy of it, which then
        retries it)."""
        return job.retriable and self.layout.failed_input(job) in (None, copy)

    def _known_dropped(self, path: Path, job: Job, st: os.stat_result) -> Admission:
        if self._lost_failed_input(job, copy=path):
            try:
                retried = self.retry(job.id, copy=path, how=f"{path.name} dropped again, of a job whose input was gone")
            except JobConflict as exc:    # not retriable after all: kept with the failed inputs, as before
                self.note(f"{path.name}: same content as job {job.id}, not queued again: {exc}")
            else:
                return Admission(retried.job, retried.result, f"{path.name} is job {job.id}, which had "
                                 f"{job.status.value} and whose input was gone: this copy queues it again.")
        if job.input_name != path.name or path.parent != self.layout.input:
            moved = move_into(path, self.layout.input_failed, job.id[:8])
            self.note(f"{path.name}: same content as job {job.id} ({job.input_name}, {job.status.value}); "
                      f"not queued again, moved to input_failed/{moved.name if moved else '?'}")
            return Admission(job, "duplicate", f"{path.name} is job {job.id}")
        if job.status.finished:   # its worker stopped between recording and moving it
            move_into(path, self.layout.input_done if job.status is JobStatus.DONE else self.layout.input_failed,
                      job.id[:8])
        elif job.input_mtime_ns != st.st_mtime_ns:
            # written again unchanged (an rsync without -t, a touch): known by its new time at the next start
            self.store.note_input_read(job.id, st.st_size, st.st_mtime_ns)
        return Admission(job, "known", f"{path.name} is job {job.id}")

    def _refuse_dropped(self, path: Path, size: int, reason: str) -> Admission:
        """Record the refusal, under the name the file will have in input_failed/, then move it there: a
        producer killed between the two finds it in input/ again and refuses it again (the same id: its name,
        size and time), so it never sits in input_failed/ with no job and no reason anywhere; a store that
        cannot record it leaves it in input/ for a later scan."""
        st = path.stat()
        key = f"refused\0{path.name}\0{size}\0{st.st_mtime_ns}".encode()
        job_id = hashlib.sha256(key).hexdigest()[:16]
        tag, failed = job_id[:8], self.layout.input_failed
        job = self.store.refuse(job_id, free_name(failed, path.name, tag), size, reason, self.settings.node)
        moved = move_into(path, failed, tag)
        if moved is not None and moved.name != job.input_name:       # another file took that name meanwhile
            job = self.store.refuse(job_id, moved.name, size, reason, self.settings.node)
        self.note(f"job {job_id} {path.name}: refused ({reason}); moved to input_failed/{job.input_name}")
        return Admission(job, "refused", reason)
