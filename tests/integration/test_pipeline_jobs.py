"""The real Pipeline behind the queue: small synthetic videos, untrained weights, two workers."""
from __future__ import annotations

import pytest

from brokerkit import all_finished, wait_consuming, wait_for
from wildswarm.jobs import JobStatus
from wildswarm.layout import Layout
from wildswarm.producer import submit_file

pytestmark = pytest.mark.slow


def test_n_videos_two_workers_real_pipeline(broker_settings, untrained_settings, spawn, broker, make_video):
    s = untrained_settings.replace(
        data=broker_settings.data, queue=broker_settings.queue, broker_password=broker_settings.broker_password,
        settle_seconds=0.3, poll_seconds=0.1, worker_metrics_port=-1, analyzer="")
    workers = [spawn(s, "worker", node=f"w{i}") for i in range(2)]
    wait_consuming(s, 2, tuple(workers), timeout=180)          # both have loaded their models
    videos = [make_video(f"video{i}.mp4", frames=10 + 2 * i) for i in range(4)]
    ids = [submit_file(s, broker, v)[0].id for v in videos]
    jobs = wait_for(lambda: all_finished(s, 4), 180, "4 analysed videos", interval=0.5, procs=tuple(workers))
    assert sorted(jobs) == sorted(ids)
    for job in jobs.values():
        assert job.status is JobStatus.DONE, job.error
        assert job.attempts == 1 and job.untrained and job.frames_done == job.frames_total > 0
        assert "labeled.mp4" in job.outputs and "summary.json" in job.outputs
    lay = Layout(s.data)
    assert sorted(p.name for p in lay.output.iterdir()) == [f"video{i}" for i in range(4)]
    for i in range(4):
        files = {p.name for p in (lay.output / f"video{i}").iterdir()}
        assert {"labeled.mp4", "detections.json", "summary.json"} <= files
    assert sorted(p.name for p in lay.input_done.iterdir()) == [v.name for v in videos]
    assert {j.node for j in jobs.values()} == {"w0", "w1"}
