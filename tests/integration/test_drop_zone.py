"""The producer against a real broker: one job per content, refusals, --once."""
from __future__ import annotations

import shutil
import subprocess
import sys

from kit.observe import all_finished, jobs_of
from kit.procs import settings_env
from kit.waiting import wait_for
from wildswarm.jobs import JobStatus
from wildswarm.layout import Layout
from wildswarm.testing import write_clip


def producer_once(settings) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wildswarm", "producer", "--once"], env=settings_env(settings),
                          capture_output=True, text=True, timeout=60)


def test_the_same_file_dropped_twice_is_one_job(broker_settings, store, broker, spawn, tmp_path):
    s = broker_settings
    lay = Layout(s.data)
    clip = write_clip(tmp_path / "fox.mp4", seconds=0.1, frames=2)
    shutil.copy(clip, lay.input / "fox.mp4")
    shutil.copy(clip, lay.input / "fox-again.mp4")
    (lay.input / "notes.txt").write_text("not a video")
    run = producer_once(s)
    assert run.returncode == 0 and "queued 1 job(s)" in run.stdout, run.stderr
    assert broker.counts()[0] == 1
    jobs = jobs_of(store)
    assert sorted(j.status.value for j in jobs.values()) == ["failed", "queued"]
    refused = [j for j in jobs.values() if j.status is JobStatus.FAILED][0]
    assert "extension '.txt' is not accepted" in refused.error and refused.refused
    queued = [j for j in jobs.values() if j.status is JobStatus.QUEUED][0]
    duplicate = ({"fox.mp4", "fox-again.mp4"} - {queued.input_name}).pop()
    assert sorted(p.name for p in lay.input_failed.iterdir()) == sorted([duplicate, "notes.txt"])

    worker = spawn(s, "worker", node="w0")
    wait_for(lambda: all_finished(store, 2), 30, "the job", procs=(worker,))
    shutil.copy(clip, lay.input / "fox.mp4")               # dropped again after it was done
    run = producer_once(s)
    assert run.returncode == 0 and "queued 0 job(s)" in run.stdout, run.stderr
    assert len(jobs_of(store)) == 2 and broker.counts()[0] == 0
    assert [p.name for p in lay.output.iterdir()] == [queued.input_name[:-4]]
