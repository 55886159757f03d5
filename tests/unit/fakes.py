"""In-memory stand-ins for the broker, for unit tests (no RabbitMQ)."""
from __future__ import annotations

from wildswarm.errors import BrokerError


class FakeBroker:
    def __init__(self, fail: bool = False):
        self.published: list[tuple[bytes, dict]] = []
        self.acked, self.requeued, self.dead = [], [], []
        self.fail = fail
        self.connected = True

    def connect(self):
        if self.fail:
            raise BrokerError("cannot connect: refused")
        self.connected = True
        return self

    def close(self):
        self.connected = False

    def sleep(self, seconds):
        pass

    def publish(self, body, **kw):
        if self.fail:
            raise BrokerError("publish not confirmed")
        self.published.append((body, kw))

    def dead_letter(self, delivery, reason):
        self.dead.append((delivery, reason))

    def ack(self, delivery):
        self.acked.append(delivery)

    def requeue(self, delivery):
        self.requeued.append(delivery)

    def call_threadsafe(self, fn):
        fn()
