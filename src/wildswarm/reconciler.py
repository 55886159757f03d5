"""The reconciler: no job is ever stranded between the job store and the queue.

The job store is the truth and a message is only a pointer to a job, so the
reconciler compares the two every ``reconcile_seconds`` (the producer runs it)
and mends what it finds:

* **pending**: a job recorded while the broker was unreachable (its publish
  pending) is published now;
* **abandoned**: a running job whose worker stopped renewing its lease more than
  a lease ago is queued again and published -- but only once the store has answered
  this reconciler for a whole lease, and after an outage of the store for twice as long
  as that outage lasted: live workers could not renew their leases meanwhile, and their
  connection pools retry with a doubling backoff, so they get that long to renew first.
  An outage is a pass that failed, or one that waited longer than a renewal interval
  for the store to answer (its pool got a connection once the store came back);
* **dead-lettered**: each message on the dead-letter queue becomes a failed job
  with the reason (a malformed message is only logged), its input moved to
  ``input_failed/`` (a segment's fails its whole video); one for a job a live
  worker still holds waits for the next pass;
* **lost**: a queued job whose message was published over
  ``republish_after_seconds`` ago, while the queue holds no ready message at all,
  has lost its message (the broker's data was lost, say): it is published again.

Publishing a job twice is harmless: its claim decides, and a worker acknowledges a
message for a job that is running elsewhere or finished without work.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Callable

from wildswarm import metrics
from wildswarm.broker import REASON_HEADER, Broker, dead_letter_queue
from wildswarm.publisher import Publisher
from wildswarm.config import Settings
from wildswarm.errors import BrokerError, JobStoreError, MessageError
from wildswarm.jobs import Job, JobStatus, JobStore
from wildswarm.layout import Layout, move_into, remove_partial_results, stem_of
from wildswarm.messages import JobMessage

log = logging.getLogger(__name__)

BATCH = 200       # jobs or dead letters handled per kind and pass


def death_reason(headers: dict) -> str:
    """Why a message was dead-lettered: our own reason header, else what the broker recorded."""
    if headers.get(REASON_HEADER):
        reason = headers[REASON_HEADER]
        return reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
    deaths = headers.get("x-death") or []
    if deaths and isinstance(deaths[0], dict):
        d = deaths[0]
        why = d.get("reason", b"")
        why = why.decode() if isinstance(why, bytes) else str(why)
        if why == "delivery_limit":
            return "delivered too many times without being settled (the worker crashed or was killed each time)"
        return f"dead-lettered by the broker ({why or 'no reason given'})"
    if headers.get("x-first-death-reason"):
        return f"dead-lettered by the broker ({headers['x-first-death-reason']})"
    return "dead-lettered (no reason recorded)"


class Reconciler:
    def __init__(self, settings: Settings, store: JobStore, broker: Broker, publisher: Publisher,
                 clock: Callable[[], float] = time.monotonic):
        self.settings, self.store, self.broker, self.publisher = settings, store, broker, publisher
        self.layout = Layout(settings.data)
        self.clock = clock
        self.store_up_since: float | None = None      # when the store last came back (this reconciler's view)
        self.store_down_since: float | None = None    # when it was first seen down, during an outage
        self.quiet_seconds = settings.lease_seconds   # how long it must answer before leases are judged

    def note(self, line: str) -> None:
        log.info(line)
        self.layout.log(self.settings.node, line)

    def run_once(self) -> Counter:
        """One pass; counts of what it did. BrokerError/JobStoreError propagate (tried again next pass)."""
        done: Counter = Counter()
        asked = self.clock()
        try:
            pending = self.store.pending(BATCH)
        except JobStoreError:
            self.store_up_since = None
            if self.store_down_since is None:
                self.store_down_since = asked
            raise
        answered = self.clock()
        if answered - asked > self.settings.lease_seconds / 4:
            # The pass waited for a connection through an outage and then got one, so no error was seen;
            # the workers' renewals (every quarter lease) failed meanwhile all the same.
            self.store_up_since = None
            if self.store_down_since is None:
                self.store_down_since = asked
        if self.store_up_since is None:
            self.store_up_since = answered
            outage = self.store_up_since - self.store_down_since if self.store_down_since is not None else 0.0
            self.quiet_seconds = max(self.settings.lease_seconds, 2 * outage)
            self.store_down_since = None
        self.broker.connect()
        for job in pending:
            done["published" if self._publish(job, "publish was pending") else "still_pending"] += 1
        if self.clock() - self.store_up_since >= self.quiet_seconds:
            for job in self.store.requeue_expired(self.settings.lease_seconds):
                self.note(f"job {job.id} {job.input_name}: its worker stopped renewing its lease; queued again")
                done["abandoned"] += 1
                self._publish(job, "abandoned by its worker")
        done.update(self._dead_letters())
        ready, _ = self.broker.counts()
        if ready == 0:
            for job in self.store.unannounced(self.settings.republish_after_seconds, BATCH):
                if self._publish(job, "its message was lost"):
                    done["republished"] += 1
                else:                      # the broker went away meanwhile: the pending pass retries it
                    self.store.mark_publish_pending(job.id)
        return +done

    def _publish(self, job: Job, why: str) -> bool:
        if not self.publisher.publish(JobMessage.for_job(job)):
            return False
        self.store.mark_published(job.id)
        self.note(f"job {job.id} {job.input_name}: published ({why})")
        return True

    def _dead_letters(self) -> Counter:
        done: Counter = Counter()
        queue = dead_letter_queue(self.settings.queue)
        ready, _ = self.broker.counts(queue)
        for _ in range(min(ready, BATCH)):
            d = self.broker.get(queue, ack=False)
            if d is None:
                break
            reason = death_reason(d.headers)
            try:
                msg = JobMessage.decode(d.body)
            except MessageError as exc:
                self.note(f"dead letter {d.message_id or '?'}: malformed, dropped ({reason}; {exc})")
                self.broker.ack(d)
                done["malformed"] += 1
                continue
            try:
                outcome = self._dead_letter(msg, reason)
            except BaseException:               # the store failed mid-way: the letter goes back, to be
                self.broker.requeue(d)          # settled next pass (each step is safe to take again)
                raise
            done[outcome] += 1
            if outcome == "dead_waiting":
                self.broker.requeue(d)          # a live worker holds it: look again next pass
                break
            self.broker.ack(d)
        return done

    def _dead_letter(self, msg: JobMessage, reason: str) -> str:
        """Fail the job of a dead-lettered message (and a segment's video with it); returns what became of it."""
        job = self.store.fail_abandoned(msg.job_id, f"dead-lettered: {reason}")
        if job is None:
            current = self.store.find(msg.job_id)
            if current is not None and current.status is JobStatus.RUNNING:
                return "dead_waiting"
            if current is None or not (current.parent_id and current.status is JobStatus.FAILED):
                return "dead_settled"           # finished meanwhile, or no such job
            job = current    # a failed segment: its video may still wait for it (failing it was cut short)
        if job.parent_id:                       # a segment: its video fails with it
            video = self.store.fail_split(job.parent_id, f"segment {job.segment} dead-lettered: {reason}")
            if video is None:
                return "dead_settled"           # failed already, or retried meanwhile
            self._move_failed_input(video)
            self.note(f"job {job.parent_id} {job.input_name}: failed: segment {job.segment} dead-lettered: {reason}")
        else:
            self._move_failed_input(job)
            self.note(f"job {job.id} {job.input_name}: failed: dead-lettered: {reason}")
        metrics.JOBS.labels("failed").inc()     # no worker counted it: it died with it (JobsFailing)
        return "dead_failed"

    def _move_failed_input(self, job: Job) -> None:
        """A failed whole video's input to input_failed/, and what its killed attempts left of its result
        (a partial labeled video can be gigabytes) out of output/: no worker will come back for it. Its
        finished segments stay for a retry; deleting the job removes them."""
        try:
            move_into(self.layout.input / job.input_name, self.layout.input_failed, job.id[:8])
        except OSError as exc:
            log.warning("job %s: input not moved to input_failed/: %s", job.id, exc)
        stem = stem_of(job.input_name)
        if not self.layout.stem_waiting(stem):        # else that video's own attempt may be writing it
            for path in remove_partial_results(self.layout.output, stem):
                log.info("job %s: removed %s, what a killed attempt at its result left", job.id, path.name)


def safe_run(reconciler: Reconciler) -> Counter | None:
    """:meth:`Reconciler.run_once`, or None when the broker or the store failed (tried again next time)."""
    try:
        return reconciler.run_once()
    except (BrokerError, JobStoreError) as exc:
        log.warning("reconciling skipped: %s", exc)
        return None
