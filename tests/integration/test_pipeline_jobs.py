"""The real Pipeline behind the queue: small synthetic videos, untrained weights, two workers."""
from __future__ import annotations

import pytest

from kit.observe import all_finished, wait_consuming, wait_moved
from kit.waiting import wait_for
from wildswarm.jobs import JobStatus
from wildswarm.layout import Layout
from wildswarm.producer import submit_file

pytestmark = pytest.mark.slow


def test_n_videos_two_workers_real_pipeline(broker_settings, store, intake, untrained_settings, spawn, make_video):
    u = untrained_settings
    s = broker_settings.replace(analyzer="", models_dir=u.models_dir, untrained=True, device="cpu",
                                detection_threshold=u.detection_threshold, max_animals=u.max_animals,
                                detector_image_size=u.detector_image_size, fps=u.fps, batch_size=u.batch_size,
                                lease_seconds=30)
    workers = [spawn(s, "worker", node=f"w{i}") for i in range(2)]
    wait_consuming(s, 2, tuple(workers), timeout=180)          # both have loaded their models
    videos = [make_video(f"video{i}.mp4", frames=10 + 2 * i) for i in range(4)]
    ids = [submit_file(intake, v).job.id for v in videos]
    jobs = wait_for(lambda: all_finished(store, 4), 180, "4 analysed videos", interval=0.5, procs=tuple(workers))
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
    wait_moved(s, [v.name for v in videos], procs=tuple(workers))
    assert {j.node for j in jobs.values()} == {"w0", "w1"}
