"""Poison input ends failed or dead-lettered with its reason, and the worker goes on."""
from __future__ import annotations

from brokerkit import all_finished, jobs_of, wait_consuming, wait_for
from wildswarm.broker import REASON_HEADER, Broker, dead_letter_queue
from wildswarm.jobs import JobStatus
from wildswarm.layout import Layout
from wildswarm.producer import submit_file
from wildswarm.testing import write_clip


def test_poison_jobs_stop_somewhere_visible_and_the_worker_goes_on(broker_settings, spawn, broker, tmp_path):
    s = broker_settings
    worker = spawn(s, "worker", node="w0")
    wait_consuming(s, 1, (worker,))
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)   # an MP4 header, then junk
    bad, _ = submit_file(s, broker, corrupt)
    broker.publish(b"{this is not a job", message_id="junk")
    broker.publish(b'{"job_id": "0123456789abcdef", "input_name": "x.mp4", "version": 99}')
    failing, _ = submit_file(s, broker, write_clip(tmp_path / "crashes.mp4", fail="pipeline"))
    good, _ = submit_file(s, broker, write_clip(tmp_path / "good.mp4", seconds=0.2, frames=2))

    jobs = wait_for(lambda: all_finished(s, 3), 60, "the three jobs to finish", procs=(worker,))
    assert jobs[bad.id].status is JobStatus.FAILED and jobs[bad.id].attempts == 1       # permanent: at once
    assert "not a readable video" in jobs[bad.id].error
    assert jobs[failing.id].status is JobStatus.FAILED and jobs[failing.id].attempts == s.delivery_limit
    assert f"attempt {s.delivery_limit} of {s.delivery_limit}" in jobs[failing.id].error
    assert jobs[good.id].status is JobStatus.DONE                                        # the worker went on
    lay = Layout(s.data)
    assert sorted(p.name for p in lay.input_failed.iterdir()) == ["corrupt.mp4", "crashes.mp4"]
    assert [p.name for p in lay.output.iterdir()] == ["good"]

    dead_q = dead_letter_queue(s.queue)
    wait_for(lambda: broker.counts(dead_q)[0] == 2, 10, "two dead letters")
    letters = [broker.get(dead_q) for _ in range(2)]
    reasons = sorted(d.headers[REASON_HEADER] for d in letters)
    assert "malformed message: message is not UTF-8 JSON" in reasons[0]
    assert "unsupported message version 99" in reasons[1]
    assert broker.counts() == (0, 1) and worker.alive()
    assert len(jobs_of(s)) == 3          # malformed messages made no job records


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
