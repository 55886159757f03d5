"""Poison input ends failed or dead-lettered with its reason, and the worker goes on."""
from __future__ import annotations

import signal
import time

from kit.observe import all_finished, jobs_of, wait_consuming, wait_moved, waiting_in_input
from kit.waiting import wait_for
from wildswarm.broker import EARLIER_HEADER, REASON_HEADER, Broker, dead_letter_queue
from wildswarm.jobs import JobStatus
from wildswarm.layout import Layout
from wildswarm.producer import submit_file
from wildswarm.testing import write_clip


def test_poison_jobs_stop_somewhere_visible_and_the_worker_goes_on(broker_settings, store, intake, spawn, broker,
                                                                   tmp_path):
    s = broker_settings
    worker = spawn(s, "worker", node="w0")
    wait_consuming(s, 1, (worker,))
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)   # an MP4 header, then junk
    bad = submit_file(intake, corrupt).job
    broker.publish(b"{this is not a job", message_id="junk")
    broker.publish(b'{"job_id": "0123456789abcdef", "input_name": "x.mp4", "version": 99}')
    failing = submit_file(intake, write_clip(tmp_path / "crashes.mp4", fail="pipeline")).job
    good = submit_file(intake, write_clip(tmp_path / "good.mp4", seconds=0.2, frames=2)).job

    # the retriable one backs off through the delay queues (1 s, then 4 s) before failing for good
    jobs = wait_for(lambda: all_finished(store, 3), 60, "the three jobs to finish", procs=(worker,))
    assert jobs[bad.id].status is JobStatus.FAILED and jobs[bad.id].attempts == 1       # permanent: at once
    assert "not a readable video" in jobs[bad.id].error
    assert jobs[failing.id].status is JobStatus.FAILED and jobs[failing.id].attempts == s.delivery_limit
    assert f"attempt {s.delivery_limit} of {s.delivery_limit}" in jobs[failing.id].error
    assert jobs[good.id].status is JobStatus.DONE                                        # the worker went on
    lay = Layout(s.data)
    wait_moved(s, ["corrupt.mp4", "crashes.mp4"], "input_failed", procs=(worker,))
    assert [p.name for p in lay.output.iterdir()] == ["good"]

    dead_q = dead_letter_queue(s.queue)
    wait_for(lambda: broker.counts(dead_q)[0] == 2, 10, "two dead letters")
    letters = [broker.get(dead_q) for _ in range(2)]
    reasons = sorted(d.headers[REASON_HEADER] for d in letters)
    assert "malformed message: message is not UTF-8 JSON" in reasons[0]
    assert "unsupported message version 99" in reasons[1]
    assert broker.counts() == (0, 1) and worker.alive()
    assert len(jobs_of(store)) == 3          # malformed messages made no job records


def test_a_message_the_workers_never_finish_is_dead_lettered_by_the_broker(broker_settings, broker):
    """The broker's own backstop: returned more than delivery_limit times, a message is dead-lettered."""
    s = broker_settings
    broker.publish(b'{"job_id": "0123456789abcdef", "input_name": "x.mp4", "version": 1}')
    returns = 0
    with Broker(s) as consumer:
        got = []
        consumer.consume(got.append)
        while returns < s.delivery_limit + 1:
            wait_for(lambda: consumer.process(0.1) or got, 10, "a delivery")
            delivery = got.pop()
            assert delivery.delivery_count == returns
            consumer.requeue(delivery)
            returns += 1
    assert returns == s.delivery_limit + 1
    wait_for(lambda: broker.counts(dead_letter_queue(s.queue))[0] == 1, 10, "the broker to dead-letter it")
    assert broker.counts()[0] == 0


def test_a_dead_lettered_job_ends_failed_with_its_reason_not_queued_forever(broker_settings, store, intake, spawn,
                                                                             broker, tmp_path):
    """Audit: after the quorum queue's delivery limit, a message was dead-lettered while its record still
    said 'queued' and the video stayed in input/; nothing ever read the dead-letter queue, a restarted
    producer answered "known", and retry answered 409. Now the producer's reconciler turns each dead
    letter into a failed job with the reason, its input in input_failed/, and Retry works."""
    s = broker_settings
    job = submit_file(intake, write_clip(tmp_path / "stuck.mp4", seconds=0.1, frames=1)).job
    with Broker(s) as consumer:                      # a consumer that never settles it (crashes each time)
        got = []
        consumer.consume(got.append)
        for _ in range(s.delivery_limit + 1):
            wait_for(lambda: consumer.process(0.1) or got, 10, "a delivery")
            consumer.requeue(got.pop())
    wait_for(lambda: broker.counts(dead_letter_queue(s.queue))[0] == 1, 10, "the broker to dead-letter it")
    assert store.get(job.id).status is JobStatus.QUEUED          # as the audit found it
    producer = spawn(s, "producer", node="p0")
    failed = wait_for(lambda: (j := store.get(job.id)).status is JobStatus.FAILED and j, 30,
                      "the reconciler to fail the dead-lettered job", procs=(producer,))
    assert "dead-lettered" in failed.error and "too many times" in failed.error
    lay = Layout(s.data)
    wait_moved(s, ["stuck.mp4"], "input_failed", procs=(producer,))
    assert waiting_in_input(s) == []
    assert broker.counts(dead_letter_queue(s.queue))[0] == 0
    # ... and it can be retried: a worker then finishes it, once
    assert intake.retry(job.id).result == "retried"
    worker = spawn(s, "worker", node="w0")
    done = wait_for(lambda: all_finished(store, 1), 30, "the retried job", procs=(worker, producer))[job.id]
    assert done.status is JobStatus.DONE and [p.name for p in lay.output.iterdir()] == ["stuck"]


def partial_results(layout: Layout) -> list[str]:
    return sorted(p.name for p in layout.output.iterdir() if p.name.startswith((".tmp-", ".old-")))


def test_the_partial_result_of_a_killed_attempt_is_removed_when_its_job_is_dead_lettered(
        broker_settings, store, intake, spawn, broker, tmp_path):
    """Audit: a worker killed mid-write leaves ``output/.tmp-<name>-XXXXXXXX`` (for a real video the
    labeled video so far: up to gigabytes). Only the job's next attempt removed it; a job that the broker
    dead-lettered after its last one (a video that kills every worker that takes it) failed with it left
    in output/ for good. The reconciler that fails it removes it now."""
    s = broker_settings
    lay = Layout(s.data)
    worker = spawn(s, "worker", node="w0")
    wait_consuming(s, 1, (worker,))
    job = submit_file(intake, write_clip(tmp_path / "stuck.mp4", seconds=60, frames=600)).job
    wait_for(lambda: store.get(job.id).frames_done > 0, 60, "the job to make progress", procs=(worker,))
    worker.signal(signal.SIGKILL)
    worker.popen.wait(5)
    assert [p[:len(".tmp-stuck-")] for p in partial_results(lay)] == [".tmp-stuck-"]    # as the killed one left it
    dead_q = dead_letter_queue(s.queue)
    with Broker(s) as consumer:           # every later delivery dies too: returned unsettled until dead-lettered
        got = []
        consumer.consume(got.append)

        def returned_until_dead() -> bool:
            consumer.process(0.1)
            while got:
                consumer.requeue(got.pop())
            return broker.counts(dead_q)[0] == 1
        wait_for(returned_until_dead, 30, "the broker to dead-letter it")
    producer = spawn(s, "producer", node="p0")
    failed = wait_for(lambda: (j := store.get(job.id)).status is JobStatus.FAILED and j, 60,
                      "the reconciler to fail the dead-lettered job", procs=(producer,))
    assert "dead-lettered" in failed.error
    wait_for(lambda: partial_results(lay) == [], 10, "the partial result to be removed", procs=(producer,))
    wait_moved(s, ["stuck.mp4"], "input_failed", procs=(producer,))


def test_deeply_nested_json_is_dead_lettered_and_no_process_dies_of_it(broker_settings, store, spawn, broker):
    """Audit: a body of 60,000 '[' (well under the 64 KiB limit) made json.loads raise RecursionError, which no
    one caught: the worker that took it died (and the next, until the broker dead-lettered it), and then the
    producer's reconciler died on the dead letter at each start, leaving it unacknowledged for the next."""
    s = broker_settings.replace(reconcile_seconds=0.5)
    worker = spawn(s, "worker", node="w0")
    wait_consuming(s, 1, (worker,))
    broker.publish(b"[" * 60000, message_id="deep")
    dead_q = dead_letter_queue(s.queue)
    wait_for(lambda: broker.counts(dead_q)[0] == 1, 30, "the nested message dead-lettered", procs=(worker,))
    assert worker.alive()
    producer = spawn(s, "producer", node="p0")       # its reconciler reads the dead letter, drops it, goes on
    wait_for(lambda: broker.counts(dead_q)[0] == 0, 30, "the reconciler to drop the dead letter", procs=(producer,))
    time.sleep(1.5)
    assert producer.alive() and worker.alive()


def test_a_message_with_a_malformed_delivery_header_kills_no_process(broker_settings, store, spawn, broker):
    """Audit: the count header a stopping worker writes when it hands a message back (x-wildswarm-deliveries)
    was read with int() in pika's callback; a message with any other value there raised ValueError out of the
    worker's connection loop and killed each worker that took it, then the producer at each reconcile."""
    s = broker_settings.replace(reconcile_seconds=0.5)
    worker = spawn(s, "worker", node="w0")
    wait_consuming(s, 1, (worker,))
    body = b'{"job_id": "0123456789abcdef", "input_name": "x.mp4", "version": 1}'
    broker.publish(body, message_id="odd", headers={EARLIER_HEADER: "many"})
    dead_q = dead_letter_queue(s.queue)
    wait_for(lambda: broker.counts(dead_q)[0] == 1, 30, "the message dead-lettered", procs=(worker,))
    assert worker.alive()
    broker.publish(body, message_id="odd-dead", headers={EARLIER_HEADER: "many"}, routing_key=dead_q)
    producer = spawn(s, "producer", node="p0")
    wait_for(lambda: broker.counts(dead_q)[0] == 0, 30, "the reconciler to settle the dead letters", procs=(producer,))
    time.sleep(1.5)
    assert producer.alive() and worker.alive()
