"""broker.py against a real RabbitMQ: topology, confirms, delivery counts, errors."""
from __future__ import annotations

import pytest

from kit.waiting import wait_for
from wildswarm.broker import Broker, dead_letter_queue
from wildswarm.errors import BrokerError
from wildswarm.messages import JobMessage
from wildswarm.testing import SleepAnalyzer
from wildswarm.worker import Worker


def test_declaring_is_idempotent_and_mismatches_are_broker_errors(broker_settings, broker):
    Broker(broker_settings).connect().close()            # a second component declares the same
    with pytest.raises(BrokerError, match="other arguments"):
        Broker(broker_settings.replace(delivery_limit=7)).connect()


def test_confirmed_persistent_publish_and_delivery_count(broker_settings, broker):
    broker.publish(b"hello", message_id="m1")
    assert broker.counts() == (1, 0)
    got = []
    broker.consume(got.append)
    wait_for(lambda: broker.process(0.1) or got, 10, "a delivery")
    first = got.pop()
    assert first.body == b"hello" and first.attempt == 1 and first.message_id == "m1"
    broker.requeue(first)
    wait_for(lambda: broker.process(0.1) or got, 10, "the redelivery")
    again = got.pop()
    assert again.attempt == 2 and again.redelivered
    broker.ack(again)
    broker.process(0.2)
    assert broker.counts() == (0, 1)


def test_unroutable_publish_is_not_confirmed(broker_settings, broker):
    with pytest.raises(BrokerError, match="not confirmed"):
        broker.publish(b"x", routing_key=broker_settings.queue + ".nowhere")


def test_a_channel_closed_by_the_broker_is_noticed(broker_settings, broker):
    """E.g. consumer_timeout: the connection stays, the channel goes; process() must say so."""
    broker.consume(lambda d: None)
    broker._channel.basic_ack(424242)                    # unknown tag: the broker closes the channel
    with pytest.raises(BrokerError, match="channel closed"):
        for _ in range(50):
            broker.process(0.1)


def test_delay_queues_hand_messages_back_after_their_delay(broker_settings, broker):
    import time

    from wildswarm.broker import delay_tiers
    tiers = delay_tiers(broker_settings)
    assert tiers == [1, 4, 16] or tiers[0] == 1          # retry_delay_seconds 1 (x4), lease 4 s
    t0 = time.monotonic()
    assert broker.publish_later(b"later", 0.5, message_id="m2") == 1      # the next tier up
    assert broker.counts() == (0, 0)
    wait_for(lambda: broker.counts()[0] == 1, 10, "the message back on the job queue")
    assert time.monotonic() - t0 >= 0.9
    d = broker.get(ack=False)
    assert d.body == b"later" and "x-death" in d.headers
    broker.ack(d)


def test_stale_deliveries_cannot_be_acked(broker_settings, broker):
    broker.publish(b"x")
    got = []
    broker.consume(got.append)
    wait_for(lambda: broker.process(0.1) or got, 10, "a delivery")
    broker.close()
    broker.connect()
    with pytest.raises(BrokerError, match="delivers it again"):
        broker.ack(got[0])
    assert broker.counts(dead_letter_queue(broker_settings.queue)) == (0, 0)


def test_a_user_that_may_not_declare_only_checks_the_topology(broker_settings):
    """In the stack the workers' and the web app's broker users have no configure permission: they
    check the queues passively, and say plainly when the producer has not declared them yet."""
    passive = broker_settings.replace(broker_declare=False)
    with pytest.raises(BrokerError, match="not declared yet"):
        Broker(passive).connect()
    Broker(broker_settings).connect().close()            # the producer declares them
    b = Broker(passive).connect()
    try:
        b.publish(b"x")
        assert b.counts()[0] == 1
    finally:
        b.close()


def test_the_test_broker_keeps_rabbitmqs_default_disk_limit_and_blocks_nobody(services):
    """The stack's broker blocks publishers below 1 GB free; the test broker at RabbitMQ's default, so
    that a crowded CI disk does not stall every publishing test (kit/services.py)."""
    from kit.services import TEST_DISK_FREE_LIMIT, broker_alarms, broker_nodes
    # the node's figures appear with the management plugin's first sample, seconds after start
    nodes = wait_for(lambda: [n for n in broker_nodes(services) if "disk_free_limit" in n], 30, "the node's figures")
    assert [n["disk_free_limit"] for n in nodes] == [50 * 10**6] and TEST_DISK_FREE_LIMIT == "50MB"
    assert broker_alarms(services) == []


def test_a_stopping_worker_hands_a_delivery_back_without_counting_it(broker_settings, broker, store):
    """Audit (stop 35): a worker told to stop nacked what the broker had just dispatched to it. A quorum
    queue counts every nack as a delivery, so a message that met a few stopping workers in a row (a
    rolling update, ``make scale-workers`` down) was dead-lettered, and its job failed unrun."""
    body = JobMessage(job_id="0123456789abcdef", input_name="clip.mp4").encode()
    broker.publish(body, message_id="0123456789abcdef")
    broker.requeue(wait_for(lambda: broker.get(ack=False), 10, "the first delivery"))   # died on it: counted
    for _ in range(broker_settings.delivery_limit + 1):       # one stopping worker after another
        worker = Worker(broker_settings, SleepAnalyzer(), store, broker=Broker(broker_settings))
        worker.broker.connect(declare=False)
        worker.stopping.set()
        handed = []
        worker.broker.consume(lambda d, w=worker: (handed.append(d), w._on_delivery(d)))
        wait_for(lambda w=worker: w.broker.process(0.1) or handed, 10, "the delivery to the stopping worker")
        worker.broker.cancel()
        worker.broker.process(0.2)
        worker.broker.close()
    got = []
    broker.consume(got.append)
    wait_for(lambda: broker.process(0.1) or got, 10, "the message, still on the job queue")
    assert got[0].body == body and got[0].message_id == "0123456789abcdef"
    assert got[0].attempt == 2 and got[0].headers["x-wildswarm-deliveries"] == 1   # the hand-backs uncounted
    broker.ack(got[0])
    assert broker.counts(dead_letter_queue(broker_settings.queue))[0] == 0


def test_a_split_whose_segment_publish_is_nacked_still_settles_the_videos_delivery(broker_settings, store, services):
    """'Every path settles the delivery': a segment publish the broker nacks (a full queue that rejects
    publishes, a quorum queue without a leader) raised out of the split, was only logged, and the video's
    delivery was neither acked nor nacked: with prefetch 1 the worker took nothing more until the broker's
    consumer timeout (hours), while its health check passed. The segments are recorded with their
    publish pending, so the reconciler publishes what the broker refused: the delivery is acked."""
    import threading
    from kit.planner import Planner
    from kit.services import broker_policy
    from kit.videos import write_video
    from wildswarm.jobs import job_id_for
    from wildswarm.layout import Layout

    s = broker_settings.replace(node="w1", fps=5, batch_size=4, segment_seconds=2.4, segment_overlap_seconds=0.8)
    path = write_video(Layout(s.data).ensure().input / "long.mp4", frames=60, fps=10)
    job, _ = store.submit(job_id_for(path), "long.mp4", path.stat().st_size)
    publisher = Broker(s).connect()
    worker = Worker(s, Planner(s), store, broker=Broker(s))
    thread = threading.Thread(target=worker.run, daemon=True)
    try:
        with broker_policy(services, f"test-{s.queue}", s.queue, {"max-length": 1, "overflow": "reject-publish"}):
            publisher.publish(JobMessage.for_job(job).encode(), message_id=job.id)
            thread.start()
            wait_for(lambda: store.get(job.id).segments, 30, "the video split")
            assert [p for p in store.segment_jobs(job.id) if p.publish_pending], "the full queue refused some"
            # settled, the worker's one prefetch is free: it takes the segment the queue did accept
            wait_for(lambda: any(p.attempts for p in store.segment_jobs(job.id)), 30,
                     "the worker taking the segment on the queue (the video's delivery settled)")
    finally:
        worker.stop()
        thread.join(20)
        publisher.close()

