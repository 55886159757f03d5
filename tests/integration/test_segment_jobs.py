"""Long videos across workers: segment jobs on the queue, exactly one merge, a kill costs one segment."""
from __future__ import annotations

import json
import signal

import pytest

from kit.observe import all_finished, log_lines, wait_consuming, wait_moved, waiting_in_input
from kit.waiting import wait_for
from wildswarm.jobs import JobStatus
from wildswarm.layout import Layout
from wildswarm.pipeline import outputs, segments
from wildswarm.producer import submit_file

pytestmark = pytest.mark.slow


def segment_settings(broker_settings, untrained_settings, **more):
    u = untrained_settings
    return broker_settings.replace(**{
        "analyzer": "", "models_dir": u.models_dir, "untrained": True, "device": "cpu",
        "detection_threshold": u.detection_threshold, "max_animals": u.max_animals,
        "detector_image_size": u.detector_image_size, "fps": 5, "batch_size": 4,
        "pose": "superanimal_topviewmouse", "segment_seconds": 0.8, "segment_overlap_seconds": 0.8, **more})


def test_a_long_video_is_shared_by_two_workers_and_merged_once(broker_settings, store, intake, untrained_settings,
                                                                 spawn, make_video):
    s = segment_settings(broker_settings, untrained_settings, lease_seconds=30, segment_seconds=2.4)
    workers = [spawn(s, "worker", node=f"w{i}") for i in range(2)]
    wait_consuming(s, 2, tuple(workers), timeout=180)
    video = make_video("long.mp4", frames=60, fps=10)   # 30 analysed frames: 3 segments of 12, cut as 4 of 8 for 2
    job_id = submit_file(intake, video).job.id
    jobs = wait_for(lambda: all_finished(store, 1), 600, "the long video analysed", interval=0.5,
                    procs=tuple(workers))
    job = jobs[job_id]
    assert job.status is JobStatus.DONE, job.error
    assert job.attempts == 1 and job.segments == 4 and job.frames_done == job.frames_total == 30
    assert job.plan == {"total": 30, "length": 8, "overlap": 4}
    parts = store.segment_jobs(job_id)
    assert [p.segment for p in parts] == list(range(4)) and all(p.status is JobStatus.DONE for p in parts)
    assert all(p.attempts == 1 for p in parts)
    assert {p.node for p in parts} == {"w0", "w1"}                  # both workers took segments
    lay = Layout(s.data)
    folder = lay.output / "long"
    assert sorted(p.name for p in folder.iterdir()) == sorted(outputs.ALL_FILES)
    summary = json.loads((folder / outputs.SUMMARY).read_text())
    assert summary["segments"]["count"] == 4 and summary["frames"]["analysed"] == 30
    assert len({p["pid"] for p in summary["segments"]["parts"]}) == 2
    # the segments go once the video is recorded done, a moment after the record this test saw
    wait_for(lambda: not (lay.output / segments.SEGMENTS_DIR / "long").exists(), 15, "the segments removed",
             procs=tuple(workers))
    wait_moved(s, ["long.mp4"], procs=tuple(workers))
    assert waiting_in_input(s) == []
    merges = [line for line in log_lines(s) if f"job {job_id}" in line and "merging" in line]
    assert len(merges) == 1


def test_a_worker_killed_mid_segment_costs_that_segment_only(broker_settings, store, intake, untrained_settings,
                                                              spawn, make_video):
    s = segment_settings(broker_settings, untrained_settings, lease_seconds=8)
    a = spawn(s, "worker", node="wa")
    wait_consuming(s, 1, (a,), timeout=180)
    video = make_video("longer.mp4", frames=80, fps=10)         # 40 analysed frames: 10 segments of 4
    job_id = submit_file(intake, video).job.id

    def a_is_midway():
        parts = store.segment_jobs(job_id)
        done = [p for p in parts if p.status is JobStatus.DONE]
        running = [p for p in parts if p.status is JobStatus.RUNNING and p.frames_done > 0]
        return running[0] if len(done) >= 3 and running else None
    killed_in = wait_for(a_is_midway, 240, "worker A midway through a segment", interval=0.05, procs=(a,))
    a.signal(signal.SIGKILL)
    done_before = {p.segment for p in store.segment_jobs(job_id) if p.status is JobStatus.DONE}
    b = spawn(s, "worker", node="wb")
    jobs = wait_for(lambda: all_finished(store, 1), 600, "the video finished by worker B", interval=0.5, procs=(b,))
    job = jobs[job_id]
    assert job.status is JobStatus.DONE, job.error
    parts = {p.segment: p for p in store.segment_jobs(job_id)}
    # the segment A was in ran again (attempt 2, on B); every segment A had finished was never redone
    assert parts[killed_in.segment].attempts == 2 and parts[killed_in.segment].node == "wb"
    assert all(parts[k].attempts == 1 and parts[k].node == "wa" for k in done_before)
    assert all(p.attempts == 1 for k, p in parts.items() if k != killed_in.segment)
    summary = json.loads((Layout(s.data).output / "longer" / outputs.SUMMARY).read_text())
    assert summary["frames"]["analysed"] == 40 and summary["segments"]["count"] == 10


def test_a_merger_killed_mid_merge_is_replaced_and_the_result_is_complete(broker_settings, store, intake,
                                                                          untrained_settings, spawn, make_video):
    s = segment_settings(broker_settings, untrained_settings, lease_seconds=4, reconcile_seconds=1)
    producer = spawn(s, "producer", node="p0")      # its reconciler queues the video again
    a = spawn(s, "worker", node="wa")
    wait_consuming(s, 1, (a,), timeout=180)
    video = make_video("merged.mp4", frames=60, fps=10)
    job_id = submit_file(intake, video).job.id
    wait_for(lambda: any(f"job {job_id}" in line and "merging" in line for line in log_lines(s)), 240,
             "worker A to start the merge", interval=0.02, procs=(a,))
    a.signal(signal.SIGKILL)
    assert store.get(job_id).status is JobStatus.RUNNING        # killed mid-merge, not after it
    b = spawn(s, "worker", node="wb")
    jobs = wait_for(lambda: all_finished(store, 1), 600, "worker B to merge", interval=0.5, procs=(b, producer))
    job = jobs[job_id]
    assert job.status is JobStatus.DONE and job.node == "wb" and job.attempts == 2, job.error
    assert all(p.attempts == 1 and p.node == "wa" for p in store.segment_jobs(job_id))   # none redone
    merges = [line for line in log_lines(s) if f"job {job_id}" in line and "merging" in line]
    assert len(merges) == 2
    lay = Layout(s.data)
    # nothing half-written left; the segments go once the video is recorded done, a moment after the record
    wait_for(lambda: sorted(p.name for p in lay.output.iterdir()) == ["merged"], 15,
             "only the merged result in output/", procs=(b,))
    assert sorted(p.name for p in (lay.output / "merged").iterdir()) == sorted(outputs.ALL_FILES)
    summary = json.loads((lay.output / "merged" / outputs.SUMMARY).read_text())
    assert summary["frames"]["analysed"] == 30 and summary["segments"]["count"] == 8


def test_segments_planned_before_a_rolling_update_are_planned_again_by_the_new_workers(
        broker_settings, store, intake, untrained_settings, spawn, make_video):
    """A rolling update (``docker service update``: a new image or new settings) replaces the workers one
    by one. A long video split by an old worker then has its segments taken by new ones, whose results
    would differ: each used to fail its check as an ordinary failure, and after three attempts the whole
    video failed, and every video split before the update with it. Now the first new worker to meet
    such a segment plans the video again, under its own settings, and the result is one version's."""
    old = segment_settings(broker_settings, untrained_settings, lease_seconds=8, retry_delay_seconds=1)
    new = old.replace(detection_threshold=old.detection_threshold * 2)    # what the update changed
    a = spawn(old, "worker", node="old")
    wait_consuming(old, 1, (a,), timeout=180)
    video = make_video("updated.mp4", frames=80, fps=10)         # 40 analysed frames: 10 segments of 4
    job_id = submit_file(intake, video).job.id
    wait_for(lambda: sum(p.status is JobStatus.DONE for p in store.segment_jobs(job_id)) >= 2, 240,
             "the old worker to finish two segments", interval=0.05, procs=(a,))
    assert a.stop(timeout=60) == 0                                 # the update stops it (it ends its segment)
    assert not store.get(job_id).status.finished
    b = spawn(new, "worker", node="new")
    jobs = wait_for(lambda: all_finished(store, 1), 600, "the video finished by the new worker", interval=0.5,
                    procs=(b,))
    job = jobs[job_id]
    assert job.status is JobStatus.DONE, job.error
    assert job.replans == 1 and job.attempts == 1
    parts = store.segment_jobs(job_id)
    assert len(parts) == 10 and all(p.status is JobStatus.DONE and p.node == "new" for p in parts)
    summary = json.loads((Layout(new.data).output / "updated" / outputs.SUMMARY).read_text())
    assert summary["settings"]["detection_threshold"] == new.detection_threshold
    assert summary["frames"]["analysed"] == 40 and summary["segments"]["count"] == 10
    assert len({p["pid"] for p in summary["segments"]["parts"]}) == 1          # every part made by the new worker
    lines = [line for line in log_lines(new) if f"job {job_id}" in line and "planned again" in line]
    assert len(lines) == 1, lines
