"""A broker restart loses nothing: queued jobs, a running job, the producer's next file."""
from __future__ import annotations

import shutil

from kit.observe import all_finished, jobs_of, log_lines, started_lines, wait_consuming, wait_moved
from kit.waiting import wait_for
from wildswarm.jobs import JobStatus
from wildswarm.layout import Layout
from wildswarm.producer import submit_file
from wildswarm.testing import write_clip


def test_jobs_queued_before_a_restart_are_all_done(broker_settings, store, intake, spawn, broker, restart_broker,
                                                   tmp_path):
    s = broker_settings
    ids = [submit_file(intake, write_clip(tmp_path / f"q{i}.mp4", seconds=0.1, frames=2)).job.id
           for i in range(4)]
    intake.publisher.close()
    broker.close()
    restart_broker()
    worker = spawn(s, "worker", node="w0")
    jobs = wait_for(lambda: all_finished(store, 4), 60, "the queued jobs", procs=(worker,))
    assert sorted(jobs) == sorted(ids)
    assert {j.status for j in jobs.values()} == {JobStatus.DONE}
    assert sorted(p.name for p in Layout(s.data).output.iterdir()) == [f"q{i}" for i in range(4)]


def test_restart_while_a_job_runs_and_the_producer_watches(broker_settings, store, spawn, restart_broker, tmp_path):
    s = broker_settings
    lay = Layout(s.data)
    workers = [spawn(s, "worker", node=f"w{i}") for i in range(2)]
    producer = spawn(s, "producer", node="p0")
    procs = (*workers, producer)
    wait_consuming(s, 2, procs)
    shutil.copy(write_clip(tmp_path / "first.mp4", seconds=12, frames=120), lay.input / "first.mp4")
    wait_for(lambda: any(j.frames_done > 0 for j in jobs_of(store).values()), 60, "the first job to run", procs=procs)
    restart_broker()
    shutil.copy(write_clip(tmp_path / "second.mp4", seconds=0.2, frames=2), lay.input / "second.mp4")
    jobs = wait_for(lambda: all_finished(store, 2), 60, "both jobs", procs=procs)
    assert sorted(j.input_name for j in jobs.values()) == ["first.mp4", "second.mp4"]
    assert {j.status for j in jobs.values()} == {JobStatus.DONE}
    # Each analysed once: the running job's redelivery (to either worker) found it leased to the worker
    # that still had it -- alive, only its connection was gone -- waited that lease out on a delay
    # queue, and was then acknowledged without work.
    for job in jobs.values():
        assert len(started_lines(s, job.id)) == 1
    first = [j for j in jobs.values() if j.input_name == "first.mp4"][0]
    wait_for(lambda: [line for line in log_lines(s) if f"job {first.id}" in line and "without work" in line],
             20, "the redelivered running job to be acknowledged without work", procs=procs)
    assert sorted(p.name for p in lay.output.iterdir()) == ["first", "second"]
    wait_moved(s, ["first.mp4", "second.mp4"], procs=procs)
    assert all(p.alive() for p in procs)
    assert all("connection lost" in w.output() for w in workers)
    wait_consuming(s, 2, procs)        # both workers are back on the queue


def test_postgres_restarted_mid_job_loses_nothing(broker_settings, store, intake, spawn, restart_db, tmp_path):
    """The job store down for a while: the running job keeps its result until the store answers, queued
    jobs wait, nothing is dead-lettered or run twice."""
    s = broker_settings
    worker = spawn(s, "worker", node="w0")
    producer = spawn(s, "producer", node="p0")
    procs = (worker, producer)
    wait_consuming(s, 1, procs)
    first = submit_file(intake, write_clip(tmp_path / "long.mp4", seconds=5, frames=50)).job
    second = submit_file(intake, write_clip(tmp_path / "next.mp4", seconds=0.2, frames=2)).job
    wait_for(lambda: store.get(first.id).frames_done > 0, 60, "the first job to run", procs=procs)
    restart_db(down_seconds=4)
    jobs = wait_for(lambda: all_finished(store, 2), 90, "both jobs after the store came back", procs=procs)
    story = "\n".join(log_lines(s))
    assert {j.status for j in jobs.values()} == {JobStatus.DONE}, story
    assert jobs[first.id].attempts == 1 and jobs[second.id].attempts == 1, story
    for job in jobs.values():
        assert len(started_lines(s, job.id)) == 1, story
    assert all(p.alive() for p in procs)
