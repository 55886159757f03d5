"""RabbitMQ: topology, confirmed publishing, consuming. The only module that imports pika.

Topology (declared idempotently by every component on every connect)::

    <queue>        durable quorum queue of jobs; x-delivery-limit = settings.delivery_limit,
                   dead-lettering to <queue>.dlx
    <queue>.dlx    fanout exchange for messages that will never be processed
    <queue>.dead   durable quorum queue bound to it, where the reconciler turns each into a
                   failed job with its reason
    <queue>.delay.<N>s  durable quorum queues whose messages wait N seconds, then go back to
                   <queue> (dead-lettered at least once): retries back off through them, and a
                   message for a job another worker may still hold waits out that lease there

Messages are persistent and every publish waits for the broker's confirm, so
a job that :meth:`Broker.publish` returned for is on disk. A quorum queue
counts deliveries (``x-delivery-count``: 0 on the first); after more than
``delivery_limit`` returns the broker dead-letters a message by itself, a
backstop for workers that die on it every time. A delivery a worker cannot
start (it is stopping) is not nacked, which would count: :meth:`Broker.hand_back`
publishes it again, its earlier deliveries carried in ``x-wildswarm-deliveries``,
and acknowledges it.

Acknowledgement timeout: RabbitMQ closes a consumer's channel when a delivery
stays unacknowledged longer than ``consumer_timeout`` (30 minutes by default).
A worker holds its delivery for the whole analysis, so raise it above the
longest video's analysis time in ``rabbitmq.conf`` (``consumer_timeout =
21600000`` is 6 hours; scripts/rabbitmq-local.sh sets that). For quorum queues
in 3.10 the setting is server-wide; a per-queue ``x-consumer-timeout`` exists
only from 3.11.15.

Every pika exception leaves this module as :class:`wildswarm.errors.BrokerError`.
"""
from __future__ import annotations

import contextlib
import logging
import random
from dataclasses import dataclass, field
from typing import Callable, Iterator

import pika
import pika.exceptions

from wildswarm.config import Settings
from wildswarm.errors import BrokerError

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/json"
REASON_HEADER = "x-wildswarm-error"
EARLIER_HEADER = "x-wildswarm-deliveries"   # deliveries counted before the message was handed back


def dead_letter_exchange(queue: str) -> str:
    return f"{queue}.dlx"


def dead_letter_queue(queue: str) -> str:
    return f"{queue}.dead"


def delay_queue(queue: str, seconds: float) -> str:
    return f"{queue}.delay.{int(seconds)}s"


def delay_tiers(settings: Settings) -> list[int]:
    """The delays (whole seconds, at least 1) a message can wait: each retry's, and one lease."""
    tiers = {retry_delay(settings, n) for n in range(1, max(1, settings.delivery_limit) + 1)}
    tiers.add(max(1, int(round(settings.lease_seconds))))
    return sorted(tiers)


def retry_delay(settings: Settings, attempt: int) -> int:
    """Seconds before attempt ``attempt + 1``: the base delay, x4 for each further attempt, capped."""
    seconds = settings.retry_delay_seconds * 4 ** max(0, attempt - 1)
    return max(1, int(round(min(seconds, settings.retry_delay_max_seconds))))


def queue_arguments(settings: Settings) -> dict:
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": int(settings.delivery_limit),
        "x-dead-letter-exchange": dead_letter_exchange(settings.queue),
    }


@contextlib.contextmanager
def translated(action: str) -> Iterator[None]:
    """Turn pika's (and the socket's) exceptions into :class:`BrokerError`."""
    try:
        yield
    except pika.exceptions.AMQPError as exc:
        detail = str(exc) or type(exc).__name__
        raise BrokerError(f"{action}: {type(exc).__name__}: {detail}") from exc
    except OSError as exc:
        raise BrokerError(f"{action}: {exc}") from exc


@dataclass(frozen=True)
class Delivery:
    """One message handed to a consumer."""

    body: bytes
    tag: int
    redelivered: bool
    delivery_count: int                 # earlier deliveries (x-delivery-count + before a hand-back), 0 first
    headers: dict = field(default_factory=dict)
    message_id: str | None = None
    generation: int = 0                 # which connection delivered it (tags die with it)

    @property
    def attempt(self) -> int:
        """1 on the first delivery, 2 on the second, ..."""
        return self.delivery_count + 1


def _count(value) -> int:
    """A delivery-count header as a number: anything else (a message published by hand, say) counts 0, so
    a malformed header never raises in pika's callback, which would end the consumer's process."""
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def _delivery(method, props, body: bytes, generation: int) -> Delivery:
    headers = dict(props.headers or {})
    count = _count(headers.get("x-delivery-count")) + _count(headers.get(EARLIER_HEADER))
    return Delivery(body=body, tag=method.delivery_tag, redelivered=bool(method.redelivered), delivery_count=count,
                    headers=headers, message_id=props.message_id, generation=generation)


class Backoff:
    """Growing, jittered pauses between reconnection attempts."""

    def __init__(self, first: float = 0.5, cap: float = 5.0):
        self.first, self.cap, self.current = first, cap, first

    def next(self) -> float:
        pause = self.current * random.uniform(0.8, 1.2)
        self.current = min(self.cap, self.current * 2)
        return pause

    def reset(self) -> None:
        self.current = self.first


class Broker:
    """One connection and one channel, with the topology declared on connect.

    Blocking and not thread-safe, like pika's ``BlockingConnection`` under it:
    other threads may only call :meth:`call_threadsafe`.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self.queue = settings.queue
        self._connection: pika.BlockingConnection | None = None
        self._channel = None
        self._consumer_tag: str | None = None
        self.generation = 0

    # --- connection --------------------------------------------------------
    @property
    def connected(self) -> bool:
        return bool(self._connection and self._connection.is_open and self._channel and self._channel.is_open)

    def connect(self, declare: bool = True) -> "Broker":
        """Open the connection and channel (if not open) and declare the topology (unless told not to)."""
        if self.connected:
            return self
        self.close()
        s = self.settings
        params = pika.ConnectionParameters(
            host=s.broker_host, port=s.broker_port, virtual_host=s.broker_vhost,
            credentials=pika.PlainCredentials(s.broker_user, s.broker_password),
            heartbeat=s.broker_heartbeat, blocked_connection_timeout=max(30, 2 * s.broker_heartbeat),
            connection_attempts=1, socket_timeout=10, stack_timeout=20,
            client_properties={"connection_name": f"wildswarm {s.node}"},
        )
        with translated(f"cannot connect to {s.broker_url_redacted}"):
            self._connection = pika.BlockingConnection(params)
            self._channel = self._connection.channel()
            self._channel.confirm_delivery()
        self.generation += 1
        if declare:
            self.declare()
        return self

    def connect_retrying(self, should_stop: Callable[[], bool] = lambda: False,
                         on_error: Callable[[BrokerError, float], None] | None = None,
                         backoff: Backoff | None = None) -> bool:
        """Connect, retrying with backoff until it works (True) or ``should_stop()`` (False)."""
        import time
        backoff = backoff or Backoff()
        while not should_stop():
            try:
                self.connect()
                return True
            except BrokerError as exc:
                pause = backoff.next()
                if on_error:
                    on_error(exc, pause)
                deadline = time.monotonic() + pause
                while time.monotonic() < deadline and not should_stop():
                    time.sleep(0.1)
        return False

    def declare(self) -> None:
        """Declare exchange and queues; the same arguments every time, so it is idempotent.

        With ``broker_declare`` off, only check that they exist (passive declares need no
        ``configure`` permission): in the stack, the producer's broker user declares the
        topology, and the workers' and the web app's users may not change it.
        """
        ch, q = self._channel, self.queue
        if not self.settings.broker_declare:
            with translated(f"the queues of {q!r} are not declared yet (the producer declares them)"):
                ch.exchange_declare(dead_letter_exchange(q), passive=True)
                for name in (q, dead_letter_queue(q), *(delay_queue(q, s) for s in delay_tiers(self.settings))):
                    ch.queue_declare(name, passive=True)
            return
        with translated(f"cannot declare queue {q!r} (declared earlier with other arguments?)"):
            ch.exchange_declare(dead_letter_exchange(q), exchange_type="fanout", durable=True)
            ch.queue_declare(dead_letter_queue(q), durable=True, arguments={"x-queue-type": "quorum"})
            ch.queue_bind(dead_letter_queue(q), dead_letter_exchange(q))
            ch.queue_declare(q, durable=True, arguments=queue_arguments(self.settings))
            for seconds in delay_tiers(self.settings):
                ch.queue_declare(delay_queue(q, seconds), durable=True, arguments={
                    "x-queue-type": "quorum", "x-message-ttl": seconds * 1000,
                    "x-dead-letter-exchange": "", "x-dead-letter-routing-key": q,
                    "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"})

    def close(self) -> None:
        """Close quietly: unacknowledged deliveries go back to the queue."""
        conn, self._connection, self._channel, self._consumer_tag = self._connection, None, None, None
        if conn is not None and conn.is_open:
            with contextlib.suppress(Exception):
                conn.close()

    def __enter__(self) -> "Broker":
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- publishing ----------------------------------------------------------
    def publish(self, body: bytes, *, message_id: str | None = None, headers: dict | None = None,
                exchange: str = "", routing_key: str | None = None) -> None:
        """Publish persistently and wait for the broker's confirm; BrokerError if it is not confirmed."""
        if not self.connected:
            raise BrokerError("not connected")
        props = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent, content_type=CONTENT_TYPE,
                                     message_id=message_id, headers=headers or None)
        target = routing_key if routing_key is not None else self.queue
        with translated(f"publish to {target!r} not confirmed"):
            self._channel.basic_publish(exchange, target, body, properties=props, mandatory=True)

    def publish_later(self, body: bytes, seconds: float, *, message_id: str | None = None) -> int:
        """Publish to the job queue in at least ``seconds`` (the next delay tier up); returns that delay."""
        tiers = delay_tiers(self.settings)
        tier = next((s for s in tiers if s >= seconds), tiers[-1])
        self.publish(body, message_id=message_id, routing_key=delay_queue(self.queue, tier))
        return tier

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Put ``delivery`` on the dead-letter queue with ``reason``; the caller then acks it."""
        headers = dict(delivery.headers)
        headers[REASON_HEADER] = reason[:1000]
        headers["x-wildswarm-queue"] = self.queue
        self.publish(delivery.body, message_id=delivery.message_id, headers=headers,
                     exchange=dead_letter_exchange(self.queue), routing_key=dead_letter_queue(self.queue))

    # --- consuming -----------------------------------------------------------
    def consume(self, on_delivery: Callable[[Delivery], None], prefetch: int = 1) -> None:
        """Start consuming the job queue; ``on_delivery`` runs in :meth:`process`."""
        generation = self.generation

        def callback(_ch, method, props, body):
            on_delivery(_delivery(method, props, body, generation))

        with translated("cannot start consuming"):
            self._channel.basic_qos(prefetch_count=prefetch)
            self._consumer_tag = self._channel.basic_consume(self.queue, callback)

    def cancel(self) -> None:
        """Stop receiving new deliveries; those held stay ours to ack."""
        if self._consumer_tag and self.connected:
            with translated("cannot cancel the consumer"):
                self._channel.basic_cancel(self._consumer_tag)
        self._consumer_tag = None

    def process(self, seconds: float) -> None:
        """Do the connection's I/O (heartbeats, deliveries, callbacks) for up to ``seconds``."""
        if self._connection is None:
            raise BrokerError("not connected")
        with translated("connection to the broker lost"):
            self._connection.process_data_events(time_limit=seconds)
        if self._channel is None or not self._channel.is_open:
            # e.g. an unacknowledged delivery outlived consumer_timeout: the connection
            # stays up, but this channel (and its consumer) is gone.
            reason = getattr(self._channel, "_closing_reason", None)
            raise BrokerError(f"channel closed by the broker: {reason or 'no reason given'}")

    def sleep(self, seconds: float) -> None:
        """Wait while keeping the connection alive (heartbeats)."""
        if self._connection is None:
            raise BrokerError("not connected")
        with translated("connection to the broker lost"):
            self._connection.sleep(seconds)

    def call_threadsafe(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the connection's thread, from any thread (wakes :meth:`process`)."""
        conn = self._connection
        if conn is None:
            raise BrokerError("not connected")
        with translated("connection to the broker lost"):
            conn.add_callback_threadsafe(fn)

    def _check(self, delivery: Delivery) -> None:
        if delivery.generation != self.generation or not self.connected:
            raise BrokerError("the delivery's connection is gone; the broker delivers it again")

    def ack(self, delivery: Delivery) -> None:
        self._check(delivery)
        with translated("ack failed"):
            self._channel.basic_ack(delivery.tag)

    def hand_back(self, delivery: Delivery) -> None:
        """Give back a delivery this consumer cannot start, without counting it as a delivery: published
        again (confirmed) to the job queue with its earlier deliveries in a header, then acknowledged.
        A nack would count, and a message that met a few stopping workers would be dead-lettered unrun."""
        self._check(delivery)
        headers = {k: v for k, v in delivery.headers.items() if k not in ("x-delivery-count", EARLIER_HEADER)}
        if delivery.delivery_count:
            headers[EARLIER_HEADER] = delivery.delivery_count
        self.publish(delivery.body, message_id=delivery.message_id, headers=headers)
        self.ack(delivery)

    def requeue(self, delivery: Delivery) -> None:
        """Give the delivery back; the broker counts it and delivers it again (or dead-letters it)."""
        self._check(delivery)
        with translated("nack failed"):
            self._channel.basic_nack(delivery.tag, requeue=True)

    # --- inspection (status, tests, benchmarks) ------------------------------
    def counts(self, queue: str | None = None) -> tuple[int, int]:
        """(ready messages, consumers) of ``queue`` (default: the job queue)."""
        if not self.connected:
            raise BrokerError("not connected")
        with translated("cannot inspect the queue"):
            frame = self._channel.queue_declare(queue or self.queue, passive=True)
        return frame.method.message_count, frame.method.consumer_count

    def get(self, queue: str | None = None, ack: bool = True) -> Delivery | None:
        """Take one message without a consumer, or None; with ``ack`` False the caller settles it."""
        if not self.connected:
            raise BrokerError("not connected")
        with translated("cannot get a message"):
            method, props, body = self._channel.basic_get(queue or self.queue, auto_ack=ack)
        if method is None:
            return None
        return _delivery(method, props, body, self.generation)

    def delete_topology(self) -> None:
        """Delete the job queue, its delay queues, the dead-letter queue and exchange (tests, benchmarks)."""
        q = self.queue
        with translated(f"cannot delete queue {q!r}"):
            self._channel.queue_delete(q)
            for seconds in delay_tiers(self.settings):
                self._channel.queue_delete(delay_queue(q, seconds))
            self._channel.queue_delete(dead_letter_queue(q))
            self._channel.exchange_delete(dead_letter_exchange(q))
