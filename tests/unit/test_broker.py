"""The broker module's logic that needs no RabbitMQ (the rest: tests/integration)."""
import pika.exceptions
import pytest

from wildswarm.broker import Backoff, Broker, Delivery, dead_letter_queue, queue_arguments, translated
from wildswarm.config import Settings
from wildswarm.errors import BrokerError


def test_queue_arguments_come_from_settings():
    args = queue_arguments(Settings(queue="q1", delivery_limit=5))
    assert args == {"x-queue-type": "quorum", "x-delivery-limit": 5, "x-dead-letter-exchange": "q1.dlx"}
    assert dead_letter_queue("q1") == "q1.dead"


def test_pika_errors_become_broker_errors():
    with pytest.raises(BrokerError, match="doing it: AMQPConnectionError"):
        with translated("doing it"):
            raise pika.exceptions.AMQPConnectionError("refused")
    with pytest.raises(BrokerError, match="doing it"):
        with translated("doing it"):
            raise ConnectionResetError("reset")


def test_backoff_grows_to_a_cap():
    b = Backoff(first=1, cap=4)
    pauses = [b.next() for _ in range(5)]
    assert 0.8 <= pauses[0] <= 1.2 and all(p <= 4 * 1.2 for p in pauses) and pauses[-1] >= 3.2
    b.reset()
    assert b.next() <= 1.2


def test_delivery_attempt():
    assert Delivery(b"", 1, False, 0).attempt == 1
    assert Delivery(b"", 1, True, 2).attempt == 3


def test_unreachable_broker_is_a_broker_error():
    s = Settings(broker_host="127.0.0.1", broker_port=1, broker_password="x")   # nothing listens on port 1
    with pytest.raises(BrokerError, match="cannot connect"):
        Broker(s).connect()
    assert "x" not in s.broker_url_redacted.split("@")[0].split(":")[-1]
