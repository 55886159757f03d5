"""An in-memory stand-in for :class:`wildswarm.broker.Broker`, for unit tests (no RabbitMQ).

Tests that are about the broker itself use the real one (tests/integration).
"""
from __future__ import annotations

import json

from wildswarm.errors import BrokerError


class FakeBroker:
    """Records what was published, acked, requeued, handed back and dead-lettered; ``fail``: a dead broker."""

    def __init__(self, fail: bool = False):
        self.fail = fail
        self.consumers = 0                     # workers the queue reports
        self.published: list[dict] = []        # decoded message bodies, in order
        self.delayed: list[tuple[dict, float]] = []
        self.acked, self.requeued, self.dead = [], [], []
        self.handed_back = []                  # published again uncounted, then acked (a stopping worker's)
        self.cancelled = False                 # the consumer was cancelled
        self.connected = False
        self.connects = 0
        self.drop_next = False          # the next publish finds the connection closed by the broker
        self.ready = 0                  # what counts() says is on the queue

    def connect(self, declare: bool = True):
        self.connects += 1
        if self.fail:
            raise BrokerError("cannot connect to amqp://wildswarm:***@127.0.0.1:5672//: refused")
        self.connected = True
        return self

    def close(self):
        self.connected = False

    def sleep(self, seconds):
        pass

    def publish(self, body, **kw):
        if self.drop_next:
            self.drop_next = False
            raise BrokerError("publish to 'wildswarm.jobs' not confirmed: StreamLostError: Transport closed")
        if self.fail or not self.connected:
            raise BrokerError("publish not confirmed")
        self.published.append(json.loads(body))

    def publish_later(self, body, seconds, **kw):
        if self.fail or not self.connected:
            raise BrokerError("publish not confirmed")
        self.delayed.append((json.loads(body), seconds))
        return seconds

    def dead_letter(self, delivery, reason):
        self.dead.append((delivery, reason))

    def ack(self, delivery):
        self.acked.append(delivery)

    def requeue(self, delivery):
        self.requeued.append(delivery)

    def cancel(self):
        self.cancelled = True

    def hand_back(self, delivery):
        if self.fail or not self.connected:
            raise BrokerError("publish not confirmed")
        self.handed_back.append(delivery)

    def call_threadsafe(self, fn):
        fn()

    def counts(self, queue=None):
        if self.fail:
            raise BrokerError("cannot inspect the queue")
        return self.ready, self.consumers

    def get(self, queue=None, ack=True):
        return None
