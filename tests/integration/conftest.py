"""Fixtures for tests against a real RabbitMQ on 127.0.0.1 and real worker processes.

The broker: if none answers on 127.0.0.1:5672 with user ``wildswarm``, the
session runs ``scripts/rabbitmq-local.sh`` (root; installs and starts one).
Every test gets its own queue (``wildswarm.test.<random>``) and data root, so
tests -- and test runs by other people on the same broker -- never meet;
the queues are deleted afterwards. Processes started here are ended by pid.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from brokerkit import Proc, answers, password, settings_env, wait_for
from wildswarm.broker import Broker
from wildswarm.config import Settings
from wildswarm.errors import BrokerError
from wildswarm.layout import Layout

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "rabbitmq-local.sh"
TEST_AID = "wildswarm.testing:SleepAnalyzer"


@pytest.fixture(scope="session")
def broker_base() -> Settings:
    """Settings pointing at the local test broker (started by the script if needed)."""
    settings = Settings(broker_host="127.0.0.1", broker_port=5672, broker_vhost="/", broker_user="wildswarm",
                        broker_password=password())
    if not answers(settings):
        if os.geteuid() != 0:
            pytest.fail(f"no RabbitMQ on 127.0.0.1:5672 and not root to start one: run `sudo {SCRIPT}`")
        subprocess.run(["bash", str(SCRIPT)], check=True, timeout=600)
        settings = settings.replace(broker_password=password())
        if not answers(settings):
            pytest.fail("scripts/rabbitmq-local.sh ran, but the broker still refuses user wildswarm")
    return settings


@pytest.fixture
def broker_settings(broker_base, tmp_path) -> Settings:
    """Settings for one test: its own queue and data root, fast polling, short grace."""
    settings = broker_base.replace(
        queue=f"wildswarm.test.{uuid.uuid4().hex[:10]}", data=tmp_path / "data", node="test",
        settle_seconds=0.3, poll_seconds=0.1, stop_grace_seconds=10.0, delivery_limit=3,
        worker_metrics_port=-1, producer_metrics_port=-1, analyzer=TEST_AID)
    Layout(settings.data).ensure()
    yield settings
    broker = Broker(settings)
    try:
        broker.connect(declare=False)
        broker.delete_topology()
    except BrokerError:
        pass
    finally:
        broker.close()


@pytest.fixture
def broker(broker_settings):
    """A connected :class:`Broker` on the test's queue (topology declared)."""
    b = Broker(broker_settings).connect()
    yield b
    b.close()


@pytest.fixture
def spawn(tmp_path):
    """``spawn(settings, "worker", node="w1")``: start ``python -m wildswarm ...``; ended after the test."""
    procs: list[Proc] = []

    def start(settings: Settings, *args: str, node: str | None = None, **env_extra) -> Proc:
        node = node or f"{args[0]}-{len(procs)}"
        log = tmp_path / f"{node}.out"
        env = settings_env(settings.replace(node=node), **env_extra)
        with open(log, "wb") as out:
            popen = subprocess.Popen([sys.executable, "-m", "wildswarm", *args], env=env, cwd=tmp_path,
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        proc = Proc(popen, log, node)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()


def _ctl(*args: str, timeout: float = 120) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, timeout=timeout,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.fixture
def restart_broker(broker_base):
    """``restart_broker(down_seconds=1)``: stop the RabbitMQ application and start it again.

    Uses ``rabbitmqctl stop_app`` / ``start_app`` on the local node (the one
    scripts/rabbitmq-local.sh manages): the Erlang VM stays, every connection is
    closed, and queues are recovered from disk as after a restart.
    """
    if shutil.which("rabbitmqctl") is None or os.geteuid() != 0:
        pytest.skip("restarting the broker needs rabbitmqctl and root (the local test broker)")

    def restart(down_seconds: float = 1.0) -> None:
        _ctl("stop_app")
        time.sleep(down_seconds)
        _ctl("start_app")
        _ctl("await_startup", "--timeout", "120")
        wait_for(lambda: answers(broker_base), 60, "the broker to accept connections again", 0.5)

    return restart
