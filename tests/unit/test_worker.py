"""The runner (claim, analyse under a lease, record, move) and the worker's settling, on a real job store.

The broker is the in-memory FakeBroker here: what the worker tells it is what is tested;
tests/integration runs the same code against the real RabbitMQ.
"""
import threading
import time
from pathlib import Path

import pytest

from kit.fakes import FakeBroker
from kit.planner import Planner
from wildswarm import worker as worker_module
from wildswarm.broker import Delivery
from wildswarm.errors import ConfigError, PipelineError
from wildswarm.jobs import JobStatus, JobStore, job_id_for
from wildswarm.layout import Layout
from wildswarm.messages import JobMessage, timestamp
from wildswarm.runner import JobRunner, Outcome
from wildswarm.pipeline import segments
from wildswarm.pipeline.video import probe
from wildswarm.testing import SleepAnalyzer, write_clip
from kit.videos import write_video
from wildswarm.worker import Worker, load_analyzer


@pytest.fixture
def settings(db_settings):
    return db_settings.replace(node="n1")


def queue_clip(store: JobStore, settings, name="clip.mp4", **script) -> JobMessage:
    """A clip in input/, recorded and published as intake does."""
    path = write_clip(Layout(settings.data).input / name, **script)
    job, _ = store.submit(job_id_for(path), name, path.stat().st_size)
    store.mark_published(job.id)
    return JobMessage.for_job(job)


def runner(settings, store, analyzer=None, node=None) -> JobRunner:
    s = settings.replace(node=node) if node else settings
    return JobRunner(s, analyzer or SleepAnalyzer(), store)


def test_success_records_outputs_moves_input_and_logs(settings, store):
    msg = queue_clip(store, settings, frames=5)
    r = runner(settings, store)
    assert r.run(msg).outcome is Outcome.DONE
    job = store.get(msg.job_id)
    assert job.status is JobStatus.DONE and job.attempts == 1 and job.node == "n1"
    assert job.frames_done == job.frames_total == 5 and job.output == "clip"
    assert job.outputs == ["frames.csv", "summary.json"] and job.finished_at and job.lease_until is None
    lay = r.layout
    assert (lay.output / "clip" / "summary.json").exists()
    assert (lay.input_done / "clip.mp4").exists() and not (lay.input / "clip.mp4").exists()
    assert [p.name for p in lay.output.iterdir()] == ["clip"]
    log = (lay.logs / "n1.log").read_text()
    assert "started (attempt 1 of 3)" in log and "done: results in output/clip/" in log


def test_video_error_fails_at_once(settings, store):
    lay = Layout(settings.data)
    (lay.input / "bad.mp4").write_bytes(b"\x00corrupt")
    job, _ = store.submit(job_id_for(lay.input / "bad.mp4"), "bad.mp4")
    assert runner(settings, store).run(JobMessage(job.id, "bad.mp4")).outcome is Outcome.FAILED
    job = store.get(job.id)
    assert job.status is JobStatus.FAILED and "not a readable video" in job.error
    assert (lay.input_failed / "bad.mp4").exists()


def test_retriable_errors_back_off_then_fail_at_the_limit(settings, store):
    msg = queue_clip(store, settings, fail="pipeline")
    r = runner(settings, store)
    first = r.run(msg)
    assert first.outcome is Outcome.RETRIED and first.delay == 1           # retry_delay_seconds
    job = store.get(msg.job_id)
    assert job.status is JobStatus.QUEUED and "attempt 1 failed" in job.error and job.retry_at is not None
    second = r.run(msg, redelivered=True)
    assert second.outcome is Outcome.RETRIED and second.delay == 4         # x4 for each further attempt
    assert r.run(msg, redelivered=True).outcome is Outcome.FAILED
    job = store.get(msg.job_id)
    assert job.status is JobStatus.FAILED and "attempt 3 of 3" in job.error and job.attempts == 3
    assert (r.layout.input_failed / "clip.mp4").exists()
    assert not any(r.layout.output.iterdir())       # no partial output


def test_a_job_claimed_too_often_fails_without_running(settings, store):
    msg = queue_clip(store, settings)
    for i in range(3):                                  # three workers claimed it and died
        assert store.claim(msg.job_id, f"dead{i}", "gone")
        store.requeue(msg.job_id, f"dead{i}", "interrupted")
    assert runner(settings, store).run(msg, redelivered=True).outcome is Outcome.FAILED
    job = store.get(msg.job_id)
    assert "claimed 4 times" in job.error and not (Layout(settings.data).output / "clip").exists()


def test_a_message_for_a_finished_job_does_no_work(settings, store):
    msg = queue_clip(store, settings)
    r = runner(settings, store)
    assert r.run(msg).outcome is Outcome.DONE
    assert r.run(msg, redelivered=True).outcome is Outcome.DUPLICATE
    assert store.get(msg.job_id).attempts == 1


def test_a_finished_job_whose_input_was_left_behind_is_tidied(settings, store):
    msg = queue_clip(store, settings)
    store.claim(msg.job_id, "w0", "n0")
    store.finish(msg.job_id, "w0", output="clip", outputs=[], frames=1, untrained=True, timings={})
    assert runner(settings, store).run(msg, redelivered=True).outcome is Outcome.DUPLICATE
    assert (Layout(settings.data).input_done / "clip.mp4").exists()


def test_two_deliveries_of_one_job_run_the_pipeline_once_and_done_stays_done(settings, store):
    """Audit: with two messages for one job, worker B's transient error turned A's finished job failed."""
    msg = queue_clip(store, settings, seconds=0.6, frames=6)
    calls, lock = [], threading.Lock()

    class Counting(SleepAnalyzer):
        def analyze(self, video, out_root, **kw):
            with lock:
                calls.append(video)
            return super().analyze(video, out_root, **kw)

    class Flaky:
        def analyze(self, video, out_root, **kw):
            raise PipelineError("transient")

    a, b = runner(settings, store, Counting(), node="A"), runner(settings, store, Counting(), node="B")
    verdicts = {}
    threads = [threading.Thread(target=lambda n, r: verdicts.__setitem__(n, r.run(msg).outcome), args=(n, r))
               for n, r in (("A", a), ("B", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(o.value for o in verdicts.values()) == ["done", "skipped"] and len(calls) == 1
    job = store.get(msg.job_id)
    assert job.status is JobStatus.DONE and job.attempts == 1
    # a later delivery to a worker whose analysis would fail never turns the finished job failed
    flaky = runner(settings, store, Flaky(), node="C")
    assert flaky.run(msg, redelivered=True).outcome is Outcome.DUPLICATE
    assert store.get(msg.job_id).status is JobStatus.DONE and (a.layout.output / "clip").is_dir()


def test_a_job_another_worker_holds_waits_out_its_lease(settings, store):
    msg = queue_clip(store, settings)
    assert store.claim(msg.job_id, "other", "n2")
    r = runner(settings, store)
    assert r.run(msg).outcome is Outcome.SKIPPED                     # a duplicate message: dropped
    deferred = r.run(msg, redelivered=True)                          # n2 may have died: look again later
    assert deferred.outcome is Outcome.DEFERRED and deferred.delay == settings.lease_seconds
    assert store.get(msg.job_id).node == "n2"
    time.sleep(settings.lease_seconds + 0.5)                         # n2 never renewed its lease
    assert r.run(msg, redelivered=True).outcome is Outcome.DONE
    job = store.get(msg.job_id)
    assert job.status is JobStatus.DONE and job.node == "n1" and job.attempts == 2


def test_a_message_with_no_job_behind_it_is_rejected(settings, store):
    verdict = runner(settings, store).run(JobMessage("0123456789abcdef", "gone.mp4"))
    assert verdict.outcome is Outcome.REJECTED and "no job" in verdict.reason


def test_missing_input_fails(settings, store):
    store.submit("0123456789abcdef", "gone.mp4")
    assert runner(settings, store).run(JobMessage("0123456789abcdef", "gone.mp4")).outcome is Outcome.FAILED
    assert "not in input/" in store.get("0123456789abcdef").error


def test_progress_is_recorded_throttled(settings, store):
    msg = queue_clip(store, settings, seconds=1.2, frames=12)
    r = runner(settings, store)
    seen = []
    orig = store.progress

    def spy(job_id, owner, done, total):
        seen.append(done)
        return orig(job_id, owner, done, total)

    store.progress = spy
    assert r.run(msg).outcome is Outcome.DONE
    assert seen[0] == 0 and 1 <= len(seen) <= 4          # ~once a second, not once per frame


def test_shutdown_interrupts_and_gives_the_job_back(settings, store):
    msg = queue_clip(store, settings, seconds=5, frames=50)
    r = runner(settings, store)
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    assert r.run(msg, cancel=cancel).outcome is Outcome.INTERRUPTED
    job = store.get(msg.job_id)
    assert job.status is JobStatus.QUEUED and "interrupted" in job.error and job.lease_until is None
    assert not any(r.layout.output.iterdir())
    assert (r.layout.input / "clip.mp4").exists()


def take_over_at(store, job_id: str, seconds: float) -> None:
    """In ``seconds``, another worker holds the job, as the reconciler's requeue and a second claim leave it."""
    def take_over():
        with store.db.connection() as conn:
            conn.execute("UPDATE jobs SET lease_owner = 'thief', node = 'n9' WHERE id = %s", (job_id,))
    threading.Timer(seconds, take_over).start()


def test_a_lost_lease_stops_the_analysis_and_records_nothing(settings, store):
    msg = queue_clip(store, settings, seconds=3, frames=30)
    r = runner(settings, store)
    take_over_at(store, msg.job_id, 0.4)   # as if this worker had stopped answering and another claimed it
    assert r.run(msg).outcome is Outcome.LOST
    job = store.get(msg.job_id)
    assert job.status is JobStatus.RUNNING and job.node == "n9"
    assert (r.layout.input / "clip.mp4").exists() and not (r.layout.output / "clip").exists()


def test_a_take_over_seen_first_by_a_progress_write_is_a_lost_job_not_an_interruption(settings, store, monkeypatch):
    """Audit: the progress write (every second) notices a take-over before the lease thread (every quarter
    lease). The runner then asked to give the job back, matched nothing, and called it INTERRUPTED, which
    the worker leaves unsettled for a shutdown to return: while not shutting down it sat idle, its one
    unacknowledged delivery holding its prefetch, until the broker's consumer timeout (hours)."""
    monkeypatch.setattr(store, "lease_seconds", 60.0)             # the lease thread renews every 15 s
    msg = queue_clip(store, settings, seconds=3, frames=30)
    take_over_at(store, msg.job_id, 0.4)
    assert runner(settings, store).run(msg).outcome is Outcome.LOST
    job = store.get(msg.job_id)
    assert job.status is JobStatus.RUNNING and job.node == "n9"       # the other worker's record stands
    assert "interrupted" not in (job.error or "")


def test_the_worker_acknowledges_a_job_taken_over_and_takes_the_next(settings, store, monkeypatch):
    monkeypatch.setattr(store, "lease_seconds", 60.0)
    msg = queue_clip(store, settings, seconds=3, frames=30)
    broker = FakeBroker().connect()
    worker = Worker(settings, SleepAnalyzer(), store, broker=broker)
    take_over_at(store, msg.job_id, 0.4)
    run_delivery(worker, delivery(msg.encode()))
    assert len(broker.acked) == 1 and broker.requeued == [] and worker.current is None
    other = queue_clip(store, settings, name="next.mp4")
    run_delivery(worker, delivery(other.encode()))
    assert store.get(other.job_id).status is JobStatus.DONE


@pytest.mark.parametrize("stopping", [False, True])
def test_an_interrupted_job_s_delivery_is_given_back_unless_the_worker_is_stopping(settings, store, stopping):
    """A stopping worker leaves the delivery for its closing channel to return; a worker that goes on
    must not keep it unsettled (the store was unreachable when the job was stopped, say)."""
    from wildswarm.runner import Verdict
    msg = queue_clip(store, settings)
    broker = FakeBroker().connect()
    worker = Worker(settings, SleepAnalyzer(), store, broker=broker)
    if stopping:
        worker.stopping.set()
    d = delivery(msg.encode())
    current = worker_module._Current(d, msg.job_id, workers=None)
    worker._settle(current, Verdict(Outcome.INTERRUPTED))
    assert broker.acked == [] and broker.requeued == ([] if stopping else [d])


# --- long videos: how they are cut ---------------------------------------------------------------------
def long_video(store, settings, name="long.mp4") -> JobMessage:
    path = write_video(Layout(settings.data).input / name, frames=60, fps=10)   # 30 frames at 5 fps
    job, _ = store.submit(job_id_for(path), name, path.stat().st_size)
    store.mark_published(job.id)
    return JobMessage.for_job(job)


@pytest.fixture
def cut(settings):
    return settings.replace(fps=5, batch_size=4, segment_seconds=2.4, segment_overlap_seconds=0.8)


def test_a_long_video_is_cut_for_the_workers_on_the_queue_and_keeps_its_plan_when_retried(cut, store):
    assert Planner(cut).plan(probe(write_video(cut.data / "probe.mp4", frames=60, fps=10))).count == 3
    msg = long_video(store, cut)
    split = runner(cut, store, Planner(cut)).run(msg, workers=2)
    assert split.outcome is Outcome.SPLIT and len(split.messages) == 4       # 3 segments of 12, or 4 of 8
    assert store.get(msg.job_id).plan == {"total": 30, "length": 8, "overlap": 4}
    store.fail_split(msg.job_id, "segment 1: boom")
    store.reset_for_retry(msg.job_id, lambda j: j.input_name, 60)
    again = runner(cut, store, Planner(cut), node="n2").run(msg, workers=5)  # the same cut, whoever is there
    assert again.outcome is Outcome.SPLIT and len(again.messages) == 4
    assert store.get(msg.job_id).plan == {"total": 30, "length": 8, "overlap": 4}


def test_the_worker_tells_the_runner_how_many_workers_consume_the_queue(cut, store):
    msg = long_video(store, cut)
    broker = FakeBroker().connect()
    broker.consumers = 2
    worker = Worker(cut, Planner(cut), store, broker=broker)
    run_delivery(worker, delivery(msg.encode()))
    assert len(broker.acked) == 1 and len(broker.published) == 4             # the video and its 4 segment jobs
    assert store.get(msg.job_id).segments == 4


class Merger(Planner):
    """Planner that also analyses segments (counting their frames) and merges them (a result folder)."""

    def analyze_segment(self, video, out_root, name, k, seg_plan, report=None):
        first, stop = seg_plan.owned(k)
        frames = (stop if stop is not None else seg_plan.total) - first
        if report:
            report(frames)
        return frames

    def merge(self, video, out_root, name, seg_plan):
        from wildswarm.testing import TestResult
        folder = Path(out_root) / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "summary.json").write_text("{}")
        return TestResult(name=name, output_dir=folder, files=("summary.json",), frames_read=seg_plan.total,
                          frames_analysed=seg_plan.total)


class Keyed(Merger):
    """Merger under a key of its own: a worker of one version (or one set of settings) in a rolling update."""

    def __init__(self, settings, key: str):
        super().__init__(settings)
        self.key = key

    def prepare_segments(self, video, out_root, name, seg_plan):
        return segments.prepare(out_root, name, self.key, seg_plan, {"version": self.key})

    def check_segments(self, video, out_root, name, seg_plan):
        return segments.check(out_root, name, self.key, {"version": self.key})


def test_a_worker_of_another_version_plans_the_segments_again_and_counts_no_attempt(cut, store):
    msg = long_video(store, cut)
    split = runner(cut, store, Keyed(cut, "old")).run(msg, workers=2)
    first = store.claim(split.messages[1].job_id, "old-worker/1", "n1")      # an old worker runs segment 1
    assert first is not None
    new = runner(cut, store, Keyed(cut, "new"), node="n2")
    again = new.run(split.messages[0])
    assert again.outcome is Outcome.SPLIT                                     # its messages published, then acked
    assert [m.job_id for m in again.messages] == [m.job_id for m in split.messages]
    video = store.get(msg.job_id)
    assert video.replans == 1 and video.attempts == 1 and video.status is JobStatus.RUNNING
    parts = store.segment_jobs(msg.job_id)
    assert all(p.status is JobStatus.QUEUED and p.attempts == 0 for p in parts)
    # the old worker's segment was taken from it: it records nothing
    assert store.finish(first.id, "old-worker/1", output="long", outputs=[], frames=8, untrained=True,
                        timings={}) is None
    assert segments.planned(segments.folder(Layout(cut.data).output, "long"))["settings"] == {"version": "new"}
    assert "planned again by n2" in (Layout(cut.data).logs / "n2.log").read_text()
    verdicts = [new.run(m).outcome for m in again.messages]
    assert verdicts == [Outcome.DONE] * len(again.messages)     # the last segment's worker merged
    assert store.get(msg.job_id).status is JobStatus.DONE


def test_workers_that_disagree_for_good_fail_the_video_saying_what_differs(cut, store, monkeypatch):
    monkeypatch.setattr("wildswarm.segment_runs.MAX_REPLANS", 3)
    msg = long_video(store, cut)
    seg = runner(cut, store, Keyed(cut, "a")).run(msg, workers=2).messages[0]
    verdicts = [runner(cut, store, Keyed(cut, key), node=f"n-{key}").run(seg).outcome for key in "babab"]
    assert verdicts[:3] == [Outcome.SPLIT] * 3 and verdicts[3] is Outcome.FAILED
    video = store.get(msg.job_id)
    assert video.status is JobStatus.FAILED and video.replans == 3
    assert "planned 4 times by workers that disagree (version 'b' -> 'a')" in video.error
    assert (Layout(cut.data).input_failed / "long.mp4").exists()


def split_video(cut, store):
    """A long video split by a worker: (its message, its segment jobs' messages)."""
    msg = long_video(store, cut)
    split = runner(cut, store, Merger(cut)).run(msg, workers=2)
    assert split.outcome is Outcome.SPLIT
    return msg, list(split.messages)


def segment_ended(store, seg: JobMessage, *, failed: bool = False) -> None:
    """A segment claimed and recorded done (or failed) by a worker that then stopped, as a SIGKILL leaves it."""
    assert store.claim(seg.job_id, "gone/1", "n7") is not None
    if failed:
        assert store.fail(seg.job_id, "gone/1", "PipelineError: boom") is not None
    else:
        assert store.finish(seg.job_id, "gone/1", output="long", outputs=[], frames=8, untrained=True,
                            timings={}) is not None


def test_a_worker_killed_between_the_last_segment_and_the_merge_leaves_the_merge_to_the_redelivery(cut, store):
    """Audit: the last segment recorded done, then its worker died before claiming the merge. The segment's
    message came again and was acknowledged as a duplicate: the video stayed running, 100 % done, held by
    its segments with a lease that never expires, and Retry refused it."""
    msg, segs = split_video(cut, store)
    for seg in segs:
        segment_ended(store, seg)
    verdict = runner(cut, store, Merger(cut), node="n2").run(segs[-1], redelivered=True)
    assert verdict.outcome is Outcome.DONE
    video = store.get(msg.job_id)
    assert video.status is JobStatus.DONE and video.output == "long"
    assert (Layout(cut.data).input_done / "long.mp4").exists()


class DiskMerger(Merger):
    """Merger whose segments leave their parts on disk, as the pipeline's do (part.json under the plan's key);
    its merge, like the pipeline's, commits the result and leaves the segments to the runner."""
    KEY = "same video, same settings"

    def analyze_segment(self, video, out_root, name, k, seg_plan, report=None):
        part = segments.folder(out_root, name) / segments.part_name(k)
        part.mkdir(parents=True, exist_ok=True)
        (part / segments.PART_FILE).write_text('{"key": "%s", "frames": 8}' % self.KEY)
        return super().analyze_segment(video, out_root, name, k, seg_plan, report)

    def prepare_segments(self, video, out_root, name, seg_plan):
        return segments.prepare(out_root, name, self.KEY, seg_plan)


def test_a_merger_killed_after_its_merge_but_before_recording_it_costs_no_segment(cut, store):
    """The merge removed the segments as soon as the result was committed, before the runner recorded the
    video done: a merger killed in between left a video whose every segment was analysed again (an hour
    of cluster time for an hour of video). The runner now removes them once the video is recorded done."""
    lay = Layout(cut.data)
    msg, segs = split_video(cut, store)
    analyzer = DiskMerger(cut)
    for seg in segs[:-1]:
        assert runner(cut, store, analyzer).run(seg).outcome is Outcome.DONE
    # the last segment's worker records it, wins the merge, merges ... and is SIGKILLed before recording it
    dying = runner(cut, store, analyzer)
    last = store.claim(segs[-1].job_id, dying.owner, "n1")
    plan = segments.SegmentPlan(**store.get(msg.job_id).plan)
    analyzer.analyze_segment(None, lay.output, "long", last.segment, plan)
    assert store.finish(last.id, dying.owner, output="long", outputs=[], frames=8, untrained=True, timings={})
    video = store.claim_merge(msg.job_id, dying.owner, "n1")
    analyzer.merge(None, lay.output, "long", plan)
    time.sleep(cut.lease_seconds + 0.5)
    assert [j.id for j in store.requeue_expired(0)] == [msg.job_id]
    again = runner(cut, store, analyzer, node="n2").run(msg, redelivered=True)
    assert again.outcome is Outcome.DONE and not again.messages          # merged again, nothing re-analysed
    assert store.get(msg.job_id).status is JobStatus.DONE
    assert not segments.folder(lay.output, "long").exists()             # gone once the video is recorded


def test_a_worker_killed_between_the_split_and_the_merge_leaves_the_merge_to_the_redelivery(cut, store):
    """Every segment already done on disk (a retried video): the split, then the worker died before it
    claimed the merge; the video's own message comes again."""
    msg = long_video(store, cut)
    assert store.claim(msg.job_id, "gone/1", "n7") is not None
    assert store.split(msg.job_id, "gone/1", {"total": 30, "length": 8, "overlap": 4}, [True] * 4) == []
    verdict = runner(cut, store, Merger(cut), node="n2").run(msg, redelivered=True)
    assert verdict.outcome is Outcome.DONE and store.get(msg.job_id).status is JobStatus.DONE


def test_a_worker_killed_between_a_failed_segment_and_its_video_fails_the_video_on_redelivery(cut, store):
    msg, segs = split_video(cut, store)
    segment_ended(store, segs[1], failed=True)
    verdict = runner(cut, store, Merger(cut), node="n2").run(segs[1], redelivered=True)
    assert verdict.outcome is Outcome.FAILED
    video = store.get(msg.job_id)
    assert video.status is JobStatus.FAILED and "segment 1" in video.error and "boom" in video.error
    assert (Layout(cut.data).input_failed / "long.mp4").exists()
    assert runner(cut, store, Merger(cut)).run(segs[1], redelivered=True).outcome is Outcome.DUPLICATE


def test_a_last_segment_whose_recorded_finish_went_unanswered_still_merges(cut, store, monkeypatch):
    """The store recorded the segment done but the answer was lost (the connection dropped): the retried
    call matched nothing, the runner called the job lost and never claimed the merge."""
    from wildswarm.errors import JobStoreUnavailable
    msg, segs = split_video(cut, store)
    for seg in segs[:-1]:
        segment_ended(store, seg)
    real, calls = store.finish, []

    def finish_then_lose_the_answer(*args, **kwargs):
        calls.append(real(*args, **kwargs))
        if len(calls) == 1:
            raise JobStoreUnavailable("connection lost after the commit")
        return calls[-1]

    monkeypatch.setattr(store, "finish", finish_then_lose_the_answer)
    verdict = runner(cut, store, Merger(cut), node="n2").run(segs[-1])
    assert calls[0] is not None and calls[1] is None                  # recorded once; the retry matched nothing
    assert verdict.outcome is Outcome.DONE and store.get(msg.job_id).status is JobStatus.DONE


# --- the worker: what it tells the broker ------------------------------------------------------------
class Boom:
    def analyze(self, video, out_root, *, name=None, progress=None):
        raise PipelineError("model exploded")


def delivery(body: bytes, count: int = 0) -> Delivery:
    return Delivery(body=body, tag=1, redelivered=count > 0, delivery_count=count)


def run_delivery(worker: Worker, d: Delivery) -> None:
    worker._on_delivery(d)
    if worker.current is not None:
        worker.current.thread.join(10)


def test_worker_acks_after_the_job(settings, store):
    msg = queue_clip(store, settings)
    broker = FakeBroker().connect()
    worker = Worker(settings, SleepAnalyzer(), store, broker=broker)
    run_delivery(worker, delivery(msg.encode()))
    assert len(broker.acked) == 1 and worker.current is None
    assert store.get(msg.job_id).status is JobStatus.DONE


def submitted_long_ago(store, job_id: str) -> str:
    """Backdate a job's record by an hour; the time its messages must carry."""
    with store.db.connection() as conn:
        conn.execute("UPDATE jobs SET created_at = now() - interval '1 hour' WHERE id = %s", (job_id,))
    return timestamp(store.get(job_id).created_at)


def test_worker_backs_a_retriable_failure_off_through_a_delay_queue(settings, store):
    msg = queue_clip(store, settings)
    submitted = submitted_long_ago(store, msg.job_id)
    broker = FakeBroker().connect()
    worker = Worker(settings, Boom(), store, broker=broker)
    run_delivery(worker, delivery(msg.encode()))
    assert broker.requeued == [] and len(broker.acked) == 1
    # the message published again says when the job was submitted, not when it failed
    assert broker.delayed == [({"job_id": msg.job_id, "input_name": "clip.mp4", "submitted_at": submitted,
                                "version": 1}, 1)]
    run_delivery(worker, delivery(msg.encode(), count=0))
    run_delivery(worker, delivery(msg.encode(), count=0))
    assert len(broker.acked) == 3 and [d for _, d in broker.delayed] == [1, 4]
    job = store.get(msg.job_id)
    assert job.status is JobStatus.FAILED and "model exploded" in job.error


def test_worker_dead_letters_malformed_messages_and_messages_without_a_job(settings, store):
    broker = FakeBroker().connect()
    worker = Worker(settings, SleepAnalyzer(), store, broker=broker)
    run_delivery(worker, delivery(b"{not json"))
    run_delivery(worker, delivery(JobMessage("0123456789abcdef", "x.mp4").encode()))
    (d1, r1), (d2, r2) = broker.dead
    assert "malformed message" in r1 and "no job" in r2 and broker.acked == [d1, d2]


def test_worker_gives_a_delivery_back_after_an_unexpected_error(settings, store, monkeypatch):
    monkeypatch.setattr(worker_module, "UNEXPECTED_PAUSE", 0.1)
    msg = queue_clip(store, settings)
    broker = FakeBroker().connect()
    worker = Worker(settings, SleepAnalyzer(), store, broker=broker)
    monkeypatch.setattr(worker.runner, "run", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("a bug")))
    run_delivery(worker, delivery(msg.encode()))
    assert len(broker.requeued) == 1 and broker.acked == [] and worker.current is None


def test_a_read_only_filesystem_mid_job_still_settles_the_delivery(settings, store, tmpfs, monkeypatch):
    """Audit: on a read-only (or full) filesystem the error handler failed writing the node log, the
    delivery was neither acked nor requeued, and the worker stayed wedged with a green healthcheck."""
    settings = settings.replace(data=tmpfs.path / "data")
    Layout(settings.data).ensure()
    msg = queue_clip(store, settings, seconds=1.5, frames=15)
    broker = FakeBroker().connect()
    worker = Worker(settings, SleepAnalyzer(), store, broker=broker)
    threading.Timer(0.5, tmpfs.read_only).start()       # mid-job: results cannot be written
    run_delivery(worker, delivery(msg.encode()))
    tmpfs.read_write()
    assert len(broker.acked) == 1 and [d for _, d in broker.delayed] == [1]    # settled: retried later
    assert worker.current is None and worker.stalled_seconds() == 0
    job = store.get(msg.job_id)
    assert job.status is JobStatus.QUEUED and "Read-only file system" in job.error
    # ... and once the filesystem is back the job finishes, once
    run_delivery(worker, delivery(msg.encode()))
    assert store.get(msg.job_id).status is JobStatus.DONE


def test_a_full_filesystem_mid_job_still_settles_the_delivery(settings, store, tmpfs):
    settings = settings.replace(data=tmpfs.path / "data")
    Layout(settings.data).ensure()
    msg = queue_clip(store, settings, seconds=1.0, frames=10)
    broker = FakeBroker().connect()
    worker = Worker(settings, SleepAnalyzer(), store, broker=broker)
    threading.Timer(0.3, tmpfs.fill).start()
    run_delivery(worker, delivery(msg.encode()))
    assert len(broker.acked) == 1 and worker.current is None
    assert "No space left" in store.get(msg.job_id).error
    tmpfs.unfill()
    run_delivery(worker, delivery(msg.encode()))
    assert store.get(msg.job_id).status is JobStatus.DONE


def test_a_delivery_never_settled_turns_the_worker_unhealthy(settings, store, monkeypatch):
    monkeypatch.setattr(worker_module, "STALL_AFTER", 0.3)
    msg = queue_clip(store, settings)
    broker = FakeBroker().connect()
    broker.call_threadsafe = lambda fn: None          # the settle callback is lost
    worker = Worker(settings, SleepAnalyzer(), store, broker=broker)
    worker._tick = time.monotonic() + 3600            # the loop itself is fine
    run_delivery(worker, delivery(msg.encode()))
    assert worker.current is not None and worker.stalled_seconds() == 0
    time.sleep(0.5)
    assert worker.stalled_seconds() > 0.3


def test_load_analyzer(settings):
    cache, seconds = load_analyzer(settings.replace(analyzer="wildswarm.testing:SleepAnalyzer"))
    assert isinstance(cache.get().analyzer, SleepAnalyzer) and seconds >= 0
    assert cache.loads == {"camera-trap": 1}          # the default profile, loaded at start, once
    with pytest.raises(ConfigError):
        load_analyzer(settings.replace(analyzer="wildswarm.testing:Nope"))


def test_the_heartbeat_records_the_worker_its_job_and_its_rate_then_its_stop(settings, store):
    """The cluster page's view of a worker: alive, the job it runs and its frames/s; then stopped."""
    from wildswarm.jobs.workers import Workers
    from wildswarm.worker import Heartbeat
    msg = queue_clip(store, settings, frames=5)
    worker = Worker(settings.replace(worker_heartbeat_seconds=0.2), SleepAnalyzer(), store, broker=FakeBroker())
    clock = [100.0]
    beat = Heartbeat(worker, clock=lambda: clock[0])
    registry = Workers(store.db)
    beat.beat()
    (w,) = registry.recent(0.2)
    assert (w.node, w.state, w.job_id, w.frames, w.frames_per_s) == ("n1", "idle", None, 0, 0.0)
    run_delivery(worker, delivery(msg.encode()))         # 5 frames
    worker.current = type("Current", (), {"job_id": "feedfacefeedface"})()
    clock[0] += 10
    beat.beat()
    (w,) = registry.recent(0.2)
    assert (w.state, w.job_id, w.frames, w.jobs_handled, w.frames_per_s) == ("running", "feedfacefeedface", 5, 1, 0.5)
    clock[0] += Heartbeat.WINDOW + 5                    # the window moved past the frames: idle since
    beat.beat()
    assert registry.recent(0.2)[0].frames_per_s == pytest.approx(0.0)
    time.sleep(0.7)                                     # three beats missed: lost (killed, or its node gone)
    assert registry.recent(0.2)[0].state == "lost" and registry.recent(0.2)[0].job_id is None
    with beat:
        time.sleep(0.3)
        assert registry.recent(0.2)[0].state == "running"
    (w,) = registry.recent(0.2)
    assert w.state == "stopped" and w.frames_per_s == 0
    assert registry.recent(0.2, within_seconds=0) == []


def test_a_delivery_that_reaches_a_stopping_worker_is_handed_back_uncounted_else_nacked(settings, store):
    msg = queue_clip(store, settings)
    broker = FakeBroker().connect()
    worker = Worker(settings, SleepAnalyzer(), store, broker=broker)
    worker.stopping.set()
    first, second = delivery(msg.encode()), delivery(msg.encode(), count=1)
    worker._on_delivery(first)
    assert broker.cancelled and broker.handed_back == [first] and broker.requeued == [] and worker.current is None
    broker.connected = False                  # the publish is not confirmed: a nack, counted
    worker._on_delivery(second)
    assert broker.handed_back == [first] and broker.requeued == [second]
    assert store.get(msg.job_id).status is JobStatus.QUEUED                  # never started
