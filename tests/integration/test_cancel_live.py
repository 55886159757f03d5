"""Cancel on a live system: a real worker process on the real RabbitMQ and PostgreSQL stops the job it
runs at its next batch of frames, acknowledges the cancelled queued job's message without work, and
goes on to the next job."""
from __future__ import annotations

import signal

from kit.observe import log_lines, started_lines, wait_consuming
from kit.waiting import wait_for
from wildswarm.jobs import JobStatus
from wildswarm.layout import Layout
from wildswarm.producer import submit_file
from wildswarm.testing import write_clip


def test_a_running_and_a_queued_job_cancelled_while_a_worker_runs(broker_settings, store, intake, spawn, tmp_path):
    s = broker_settings
    worker = spawn(s, "worker", node="w0")
    wait_consuming(s, 1, (worker,))
    running = submit_file(intake, write_clip(tmp_path / "long.mp4", seconds=60, frames=600)).job
    waiting = submit_file(intake, write_clip(tmp_path / "next.mp4", seconds=0.2, frames=2)).job
    wait_for(lambda: store.get(running.id).frames_done > 0, 60, "the first job to run", procs=(worker,))
    intake.cancel(waiting.id, "cancelled from a test")
    intake.cancel(running.id, "cancelled from a test")
    wait_for(lambda: any("cancelled while it ran" in line for line in log_lines(s)), 20,
             "the worker to stop the running job", procs=(worker,))
    wait_for(lambda: any(f"job {waiting.id}" in line and "without work" in line for line in log_lines(s)), 20,
             "the cancelled queued job's message to be acknowledged without work", procs=(worker,))
    after = submit_file(intake, write_clip(tmp_path / "after.mp4", seconds=0.2, frames=2)).job
    wait_for(lambda: store.get(after.id).status is JobStatus.DONE, 30, "the next job", procs=(worker,))
    story = "\n".join(log_lines(s))
    assert store.get(running.id).status is JobStatus.CANCELLED and store.get(running.id).frames_done < 600, story
    assert store.get(waiting.id).status is JobStatus.CANCELLED and started_lines(s, waiting.id) == [], story
    lay = Layout(s.data)
    assert sorted(p.name for p in lay.output.iterdir()) == ["after"]
    assert {"long.mp4", "next.mp4"} <= {p.name for p in lay.input_failed.iterdir()}
    assert worker.alive()


def test_a_retried_job_leaves_no_partial_result_of_a_worker_killed_before_it_was_cancelled(
        broker_settings, store, intake, spawn, tmp_path):
    """Audit: the worker that runs a job cleaned up what an earlier attempt left only when the attempt
    number was above 1; a person's retry starts the count again, so a job whose worker was killed mid-write,
    then cancelled and retried, ended done with ``output/.tmp-long-XXXXXXXX`` beside its result for good."""
    s = broker_settings
    lay = Layout(s.data)
    worker = spawn(s, "worker", node="w0")
    wait_consuming(s, 1, (worker,))
    job = submit_file(intake, write_clip(tmp_path / "long.mp4", seconds=6, frames=60)).job
    wait_for(lambda: store.get(job.id).frames_done > 0, 60, "the job to run", procs=(worker,))
    worker.signal(signal.SIGKILL)
    worker.popen.wait(5)
    intake.cancel(job.id, "cancelled from a test")                 # its worker is gone: nobody cleans up now
    assert [p.name.startswith(".tmp-long-") for p in lay.output.iterdir()] == [True]
    intake.retry(job.id)
    worker = spawn(s, "worker", node="w1")
    done = wait_for(lambda: (j := store.get(job.id)).status is JobStatus.DONE and j, 60, "the retried job",
                    procs=(worker,))
    assert done.attempts == 1
    assert sorted(p.name for p in lay.output.iterdir()) == ["long"]
