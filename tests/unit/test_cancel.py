"""Cancelling a job (issue 13): a queued job leaves the queue, a running one stops at its next batch of
frames and is recorded cancelled; a split video takes its segments with it; a cancelled job can be
retried or deleted. On a real job store; the worker settles with the in-memory FakeBroker."""
from __future__ import annotations

import threading
import time

import pytest

from kit.fakes import FakeBroker
from wildswarm.errors import JobConflict, JobError
from wildswarm.intake import Intake
from wildswarm.jobs import JobStatus, segment_id
from wildswarm.layout import Layout
from wildswarm.producer import submit_file
from wildswarm.publisher import Publisher
from wildswarm.runner import JobRunner, Outcome
from wildswarm.testing import SleepAnalyzer, write_clip

ID = "00000000000000cc"


@pytest.fixture
def settings(db_settings):
    return db_settings.replace(node="n1")


@pytest.fixture
def intake(settings, store):
    return Intake(settings, store, Publisher(settings, "test", broker=FakeBroker()))


def test_the_store_cancels_queued_and_running_jobs_only(store):
    store.submit(ID, "a.mp4")
    job = store.cancel(ID, "cancelled from a test")
    assert job.status is JobStatus.CANCELLED and job.status.finished and job.finished_at and job.error
    assert store.claim(ID, "w1/a", "w1") is None                    # its message comes: nothing to claim
    with pytest.raises(JobConflict, match="only a queued or running job can be cancelled"):
        store.cancel(ID, "again")
    with pytest.raises(JobError, match="no job"):
        store.cancel("00000000000000dd", "none")
    store.submit("00000000000000ee", "b.mp4")
    assert store.claim("00000000000000ee", "w1/a", "w1")
    store.cancel("00000000000000ee", "while it runs")
    # the worker finds it no longer its own at its next progress report, lease renewal or finish
    assert not store.progress("00000000000000ee", "w1/a", 5, 10)
    assert not store.heartbeat("00000000000000ee", "w1/a")
    assert store.finish("00000000000000ee", "w1/a", output="b", outputs=[], frames=10, untrained=True,
                        timings={}) is None
    assert store.get("00000000000000ee").status is JobStatus.CANCELLED
    # cancelled jobs may be retried (their input back from input_failed/) or deleted
    again = store.reset_for_retry(ID, lambda j: "a.mp4", stale_seconds=300)
    assert again.status is JobStatus.QUEUED and again.attempts == 0 and again.error is None
    assert store.delete("00000000000000ee").id == "00000000000000ee"


def test_a_split_video_is_cancelled_with_its_unfinished_segments(store):
    store.submit(ID, "long.mp4", 1000)
    store.claim(ID, "w1/a", "w1")
    store.split(ID, "w1/a", {"total": 40, "length": 12, "overlap": 4}, [True, False, False, False])
    assert store.claim(segment_id(ID, 1), "w2/b", "w2")
    with pytest.raises(JobConflict, match="cancel that one"):
        store.cancel(segment_id(ID, 2), "a segment alone")
    store.cancel(ID, "the whole video")
    states = [j.status for j in store.segment_jobs(ID)]
    assert states == [JobStatus.DONE, JobStatus.CANCELLED, JobStatus.CANCELLED, JobStatus.CANCELLED]
    assert not store.progress(segment_id(ID, 1), "w2/b", 3, 12)
    assert store.claim(segment_id(ID, 2), "w3/c", "w3") is None


def test_a_running_job_stops_at_its_next_batch_and_stays_cancelled(settings, store, intake, tmp_path):
    """Before: there was no way to stop a running job short of killing its worker."""
    lay = Layout(settings.data)
    job = submit_file(intake, write_clip(tmp_path / "long.mp4", seconds=30, frames=300)).job
    runner = JobRunner(settings, SleepAnalyzer(), store)
    verdict = {}
    thread = threading.Thread(target=lambda: verdict.update(v=runner.run(intake_message(job))))
    thread.start()
    deadline = time.monotonic() + 10
    while store.get(job.id).frames_done == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.get(job.id).status is JobStatus.RUNNING
    intake.cancel(job.id, "cancelled from a test")
    thread.join(10)                                    # long before the 30 s the clip takes
    assert verdict["v"].outcome is Outcome.CANCELLED
    done = store.get(job.id)
    assert done.status is JobStatus.CANCELLED and done.error == "cancelled from a test" and done.frames_done < 300
    assert not (lay.output / "long").exists() and (lay.input_failed / "long.mp4").exists()
    log = (lay.logs / "n1.log").read_text()
    assert "cancelled while it ran; stopped, nothing recorded" in log
    assert "input moved to input_failed/long.mp4" in log
    # and a retry takes the video back from input_failed/
    assert intake.retry(job.id).job.status is JobStatus.QUEUED and (lay.input / "long.mp4").exists()


def test_a_queued_job_cancelled_is_acknowledged_without_work_when_its_message_comes(settings, store, intake,
                                                                                   tmp_path):
    from wildswarm.broker import Delivery
    from wildswarm.messages import JobMessage
    from wildswarm.worker import Worker
    lay = Layout(settings.data)
    job = submit_file(intake, write_clip(tmp_path / "q.mp4", seconds=0.1, frames=2)).job
    intake.cancel(job.id, "cancelled from a test")
    broker = FakeBroker().connect()
    worker = Worker(settings, SleepAnalyzer(), store, broker=broker)
    worker._on_delivery(Delivery(body=JobMessage(job.id, "q.mp4").encode(), tag=1, redelivered=False,
                                 delivery_count=0))
    worker.current.thread.join(10)
    assert len(broker.acked) == 1 and store.get(job.id).status is JobStatus.CANCELLED
    assert "after it cancelled; acknowledged without work" in (lay.logs / "n1.log").read_text()
    assert not (lay.output / "q").exists()


def intake_message(job):
    from wildswarm.messages import JobMessage
    return JobMessage(job.id, job.input_name)
