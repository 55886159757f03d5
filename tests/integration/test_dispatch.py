"""Jobs through a real RabbitMQ to real worker processes (analyser: the SleepAnalyzer test aid)."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request

from kit.net import free_port
from kit.observe import (all_finished, consumers, jobs_of, started_lines, wait_consuming, wait_moved,
                         waiting_in_input)
from kit.procs import settings_env
from kit.waiting import wait_for
from wildswarm.jobs import JobStatus
from wildswarm.layout import Layout
from wildswarm.producer import submit_file
from wildswarm.testing import write_clip


def outputs(settings) -> list[str]:
    return sorted(p.name for p in Layout(settings.data).output.iterdir())


def metric(port: int, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith(name))


def test_n_videos_two_workers_each_done_exactly_once(broker_settings, store, spawn, tmp_path):
    s = broker_settings
    ports = [free_port(), free_port()]
    workers = [spawn(s, "worker", node=f"w{i}", WILDSWARM_WORKER_METRICS_PORT=p) for i, p in enumerate(ports)]
    wait_consuming(s, 2, tuple(workers))
    clips = [write_clip(tmp_path / f"clip{i}.mp4", seconds=0.6, frames=6) for i in range(8)]
    submit = subprocess.run([sys.executable, "-m", "wildswarm", "submit", "--wait", *map(str, clips)],
                            env=settings_env(s), capture_output=True, text=True, timeout=120)
    assert submit.returncode == 0, submit.stdout + submit.stderr
    jobs = wait_for(lambda: all_finished(store, 8), 60, "8 finished jobs", procs=tuple(workers))
    assert len(jobs) == 8
    assert {j.status for j in jobs.values()} == {JobStatus.DONE}
    assert {j.attempts for j in jobs.values()} == {1}
    assert {j.node for j in jobs.values()} == {"w0", "w1"}            # both workers took jobs
    for job in jobs.values():
        assert len(started_lines(s, job.id)) == 1                     # analysed exactly once
        assert sorted(job.outputs) == ["frames.csv", "summary.json"]
    lay = Layout(s.data)
    assert outputs(s) == sorted(f"clip{i}" for i in range(8))          # complete, no temp folders
    assert all((lay.output / f"clip{i}" / "summary.json").exists() for i in range(8))
    wait_moved(s, [c.name for c in clips], procs=tuple(workers))
    assert waiting_in_input(s) == []
    wait_for(lambda: sum(metric(p, 'wildswarm_jobs_total{outcome="done"}') for p in ports) == 8, 10,
             "8 done jobs counted in the workers' metrics")      # counted just after the record is written
    assert sum(metric(p, "wildswarm_frames_analysed_total") for p in ports) == 8 * 6
    assert all(w.alive() for w in workers)


def test_worker_killed_mid_job_the_job_is_delivered_again(broker_settings, store, intake, spawn, broker, tmp_path):
    s = broker_settings
    workers = {n: spawn(s, "worker", node=n) for n in ("w0", "w1")}
    wait_consuming(s, 2, tuple(workers.values()))
    job = submit_file(intake, write_clip(tmp_path / "long.mp4", seconds=4, frames=40)).job
    running = wait_for(lambda: (j := jobs_of(store)[job.id]).frames_done > 0 and j, 60, "the job to make progress",
                       procs=tuple(workers.values()))
    victim = workers[running.node]
    victim.signal(signal.SIGKILL)
    victim.popen.wait(5)
    # the other worker waits out the dead one's lease (lease_seconds), then takes the job over
    done = wait_for(lambda: all_finished(store, 1), 40, "the job to finish elsewhere", procs=tuple(workers.values()))
    job = done[job.id]
    assert job.status is JobStatus.DONE and job.attempts == 2 and job.node != victim.name
    assert outputs(s) == ["long"]                                     # one complete folder, no leftovers
    assert sorted(p.name for p in (Layout(s.data).output / "long").iterdir()) == ["frames.csv", "summary.json"]
    wait_moved(s, ["long.mp4"], procs=tuple(workers.values()))


def test_heartbeats_keep_flowing_during_a_long_job(broker_settings, store, intake, spawn, broker, tmp_path):
    s = broker_settings.replace(broker_heartbeat=2)
    worker = spawn(s, "worker", node="w0")
    wait_consuming(s, 1, (worker,))
    long_job = submit_file(intake, write_clip(tmp_path / "long.mp4", seconds=9, frames=9)).job
    short_job = submit_file(intake, write_clip(tmp_path / "short.mp4", seconds=0.1, frames=1)).job
    jobs = wait_for(lambda: all_finished(store, 2), 40, "both jobs", procs=(worker,))
    assert jobs[long_job.id].status is JobStatus.DONE and jobs[long_job.id].attempts == 1
    assert jobs[short_job.id].status is JobStatus.DONE and jobs[short_job.id].attempts == 1
    assert worker.alive() and consumers(s) == 1
    assert "connection lost" not in worker.output()                 # 9 s > 2 heartbeat timeouts, no drop


def test_sigterm_finishes_the_current_job_within_grace(broker_settings, store, intake, spawn, broker, tmp_path):
    s = broker_settings
    worker = spawn(s, "worker", node="w0")
    wait_consuming(s, 1, (worker,))
    job = submit_file(intake, write_clip(tmp_path / "a.mp4", seconds=2, frames=20)).job
    wait_for(lambda: jobs_of(store)[job.id].status is JobStatus.RUNNING, 60, "the job to start", procs=(worker,))
    worker.signal(signal.SIGTERM)
    assert worker.popen.wait(15) == 0
    done = jobs_of(store)[job.id]
    assert done.status is JobStatus.DONE and done.attempts == 1
    assert broker.counts() == (0, 0)                                 # acked before exiting
    assert store.get(job.id).lease_until is None


def test_sigterm_past_grace_leaves_the_job_to_another_worker(broker_settings, store, intake, spawn, broker, tmp_path):
    s = broker_settings.replace(stop_grace_seconds=0.5)
    first = spawn(s, "worker", node="w0")
    wait_consuming(s, 1, (first,))
    job = submit_file(intake, write_clip(tmp_path / "a.mp4", seconds=5, frames=50)).job
    wait_for(lambda: jobs_of(store)[job.id].frames_done > 0, 60, "the job to make progress", procs=(first,))
    t0 = time.monotonic()
    first.signal(signal.SIGTERM)
    assert first.popen.wait(15) == 0 and time.monotonic() - t0 < 10
    left = jobs_of(store)[job.id]
    assert left.status is JobStatus.QUEUED and "interrupted" in left.error
    second = spawn(s, "worker", node="w1")
    done = wait_for(lambda: all_finished(store, 1), 30, "the job on the second worker", procs=(second,))[job.id]
    assert done.status is JobStatus.DONE and done.node == "w1" and done.attempts == 2
    assert outputs(s) == ["a"]
