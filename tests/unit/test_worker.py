import threading
import time
from pathlib import Path

import pytest

from fakes import FakeBroker
from wildswarm.broker import Delivery
from wildswarm.config import Settings
from wildswarm.errors import ConfigError, PipelineError
from wildswarm.jobs import Job, JobStatus, JobStore, job_id_for
from wildswarm.messages import JobMessage
from wildswarm.testing import SleepAnalyzer, write_clip
from wildswarm import worker as worker_module
from wildswarm.worker import JobRunner, Outcome, Worker, load_analyzer


@pytest.fixture
def settings(tmp_path):
    return Settings(data=tmp_path / "data", node="n1", delivery_limit=3)


def queue_clip(settings, name="clip.mp4", **script):
    runner_layout = JobRunner(settings, SleepAnalyzer()).layout
    path = write_clip(runner_layout.input / name, **script)
    return JobMessage(job_id_for(path), name)


def test_success_records_outputs_moves_input_and_logs(settings):
    msg = queue_clip(settings, frames=5)
    runner = JobRunner(settings, SleepAnalyzer())
    assert runner.run(msg) is Outcome.DONE
    job = runner.store.get(msg.job_id)
    assert job.status is JobStatus.DONE and job.attempts == 1 and job.node == "n1"
    assert job.frames_done == job.frames_total == 5 and job.output == "clip"
    assert job.outputs == ["frames.csv", "summary.json"] and job.finished_at
    lay = runner.layout
    assert (lay.output / "clip" / "summary.json").exists()
    assert (lay.input_done / "clip.mp4").exists() and not (lay.input / "clip.mp4").exists()
    assert [p.name for p in lay.output.iterdir()] == ["clip"]
    log = (lay.logs / "n1.log").read_text()
    assert "started (attempt 1 of 3)" in log and "done; input moved" in log


def test_video_error_fails_at_once(settings):
    lay = JobRunner(settings, SleepAnalyzer()).layout
    (lay.input / "bad.mp4").write_bytes(b"\x00corrupt")
    msg = JobMessage(job_id_for(lay.input / "bad.mp4"), "bad.mp4")
    runner = JobRunner(settings, SleepAnalyzer())
    assert runner.run(msg) is Outcome.FAILED
    job = runner.store.get(msg.job_id)
    assert job.status is JobStatus.FAILED and "not a readable video" in job.error
    assert (lay.input_failed / "bad.mp4").exists()


def test_other_errors_retry_until_the_limit(settings):
    msg = queue_clip(settings, fail="pipeline")
    runner = JobRunner(settings, SleepAnalyzer())
    assert runner.run(msg, attempt=1) is Outcome.RETRIED
    job = runner.store.get(msg.job_id)
    assert job.status is JobStatus.QUEUED and "attempt 1 failed" in job.error
    assert runner.run(msg, attempt=2, redelivered=True) is Outcome.RETRIED
    assert runner.run(msg, attempt=3, redelivered=True) is Outcome.FAILED
    job = runner.store.get(msg.job_id)
    assert job.status is JobStatus.FAILED and "attempt 3 of 3" in job.error and job.attempts == 3
    assert (runner.layout.input_failed / "clip.mp4").exists()
    assert not any(runner.layout.output.iterdir())       # no partial output


def test_too_many_deliveries_fail_without_running(settings):
    msg = queue_clip(settings)
    runner = JobRunner(settings, SleepAnalyzer())
    assert runner.run(msg, attempt=4, redelivered=True) is Outcome.FAILED
    assert "never finished" in runner.store.get(msg.job_id).error


def test_redelivery_of_a_finished_job_does_no_work(settings):
    msg = queue_clip(settings)
    runner = JobRunner(settings, SleepAnalyzer())
    assert runner.run(msg) is Outcome.DONE
    assert runner.run(msg, attempt=2, redelivered=True) is Outcome.DUPLICATE
    assert runner.store.get(msg.job_id).attempts == 1


def test_finished_job_whose_input_was_left_behind_is_tidied(settings):
    msg = queue_clip(settings)
    runner = JobRunner(settings, SleepAnalyzer())
    runner.store.create(Job(id=msg.job_id, input_name=msg.input_name, status=JobStatus.DONE))
    assert runner.run(msg, attempt=2, redelivered=True) is Outcome.DUPLICATE
    assert (runner.layout.input_done / "clip.mp4").exists()


def test_second_message_for_a_job_running_elsewhere_is_dropped(settings, monkeypatch):
    monkeypatch.setattr(worker_module, "LEASE_STALE", 0.4)
    msg = queue_clip(settings)
    runner = JobRunner(settings, SleepAnalyzer())
    runner.store.create(Job(id=msg.job_id, input_name=msg.input_name, status=JobStatus.RUNNING, node="n2"))
    assert runner.run(msg, attempt=1) is Outcome.SKIPPED
    # ... but a redelivery is taken once n2's record has stopped changing (n2 died)
    t0 = time.monotonic()
    assert runner.run(msg, attempt=2, redelivered=True) is Outcome.DONE
    assert time.monotonic() - t0 >= 0.4


def test_redelivery_waits_for_a_live_worker_that_lost_its_connection(settings, monkeypatch):
    monkeypatch.setattr(worker_module, "LEASE_STALE", 1.0)
    msg = queue_clip(settings)
    other = JobRunner(settings.replace(node="n2"), SleepAnalyzer())
    other.store.create(Job(id=msg.job_id, input_name=msg.input_name, status=JobStatus.RUNNING, node="n2"))

    def n2_keeps_working_then_finishes():
        for _ in range(6):                       # 1.8 s of progress: longer than LEASE_STALE
            time.sleep(0.3)
            other.store.update(msg.job_id, frames_done=1)
        other.store.update(msg.job_id, status=JobStatus.DONE)

    t = threading.Thread(target=n2_keeps_working_then_finishes)
    t.start()
    runner = JobRunner(settings, SleepAnalyzer())
    assert runner.run(msg, attempt=2, redelivered=True) is Outcome.DUPLICATE
    t.join()
    assert not (runner.layout.output / "clip").exists()       # no second analysis


def test_missing_input_fails(settings):
    runner = JobRunner(settings, SleepAnalyzer())
    assert runner.run(JobMessage("0123456789abcdef", "gone.mp4")) is Outcome.FAILED
    assert "not in input/" in runner.store.get("0123456789abcdef").error


def test_progress_is_recorded_throttled(settings):
    msg = queue_clip(settings, seconds=1.2, frames=12)
    runner = JobRunner(settings, SleepAnalyzer())
    seen = []
    orig = runner.store.update

    def spy(job_id, **changes):
        if "frames_done" in changes and changes.get("status") is None:
            seen.append(changes["frames_done"])
        return orig(job_id, **changes)

    runner.store.update = spy
    assert runner.run(msg) is Outcome.DONE
    assert seen[0] == 0 and 1 <= len(seen) <= 4          # ~once a second, not once per frame


def test_cancel_interrupts_and_leaves_no_partial_output(settings):
    msg = queue_clip(settings, seconds=5, frames=50)
    runner = JobRunner(settings, SleepAnalyzer())
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    assert runner.run(msg, cancel=cancel) is Outcome.INTERRUPTED
    runner.interrupted(msg.job_id)
    job = runner.store.get(msg.job_id)
    assert job.status is JobStatus.QUEUED and "interrupted" in job.error
    assert not any(runner.layout.output.iterdir())
    assert (runner.layout.input / "clip.mp4").exists()


class Boom:
    def analyze(self, video, out_root, *, name=None, progress=None):
        raise PipelineError("model exploded")


def delivery(body: bytes, count: int = 0) -> Delivery:
    return Delivery(body=body, tag=1, redelivered=count > 0, delivery_count=count)


def run_delivery(worker: Worker, d: Delivery) -> None:
    worker._on_delivery(d)
    if worker.current is not None:
        worker.current.thread.join(10)


def test_worker_acks_after_the_job(settings):
    msg = queue_clip(settings)
    broker = FakeBroker()
    worker = Worker(settings, SleepAnalyzer(), broker=broker)
    run_delivery(worker, delivery(msg.encode()))
    assert len(broker.acked) == 1 and worker.current is None
    assert JobStore(worker.runner.layout).get(msg.job_id).status is JobStatus.DONE


def test_worker_requeues_a_failed_attempt(settings):
    msg = queue_clip(settings)
    broker = FakeBroker()
    worker = Worker(settings, Boom(), broker=broker)
    run_delivery(worker, delivery(msg.encode()))
    assert len(broker.requeued) == 1 and broker.acked == []
    run_delivery(worker, delivery(msg.encode(), count=2))
    assert len(broker.acked) == 1
    job = JobStore(worker.runner.layout).get(msg.job_id)
    assert job.status is JobStatus.FAILED and "model exploded" in job.error


def test_worker_dead_letters_malformed_messages(settings):
    broker = FakeBroker()
    worker = Worker(settings, SleepAnalyzer(), broker=broker)
    run_delivery(worker, delivery(b"{not json"))
    (d, reason), = broker.dead
    assert "malformed message" in reason and broker.acked == [d]


def test_load_analyzer(settings):
    analyzer, seconds = load_analyzer(settings.replace(analyzer="wildswarm.testing:SleepAnalyzer"))
    assert isinstance(analyzer, SleepAnalyzer) and seconds >= 0
    with pytest.raises(ConfigError):
        load_analyzer(settings.replace(analyzer="wildswarm.testing:Nope"))
