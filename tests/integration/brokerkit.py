"""Helpers for the broker tests (imported by conftest.py and the tests)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import fields
from pathlib import Path
from typing import Callable

import pytest

from wildswarm.broker import Broker
from wildswarm.config import Settings
from wildswarm.errors import BrokerError
from wildswarm.jobs import Job, JobStore
from wildswarm.layout import Layout

PASSWORD_FILE = Path(os.environ.get("WILDSWARM_TEST_BROKER_PASSWORD_FILE",
                                    "/var/lib/wildswarm-test/broker-password"))


def password() -> str:
    if os.environ.get("WILDSWARM_BROKER_PASSWORD"):
        return os.environ["WILDSWARM_BROKER_PASSWORD"]
    return PASSWORD_FILE.read_text().strip() if PASSWORD_FILE.exists() else ""


def answers(settings: Settings) -> bool:
    broker = Broker(settings)
    try:
        broker.connect(declare=False)
        return True
    except BrokerError:
        return False
    finally:
        broker.close()


def settings_env(settings: Settings, **extra) -> dict[str, str]:
    """The environment that gives a subprocess exactly these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WILDSWARM_")}
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if value is None or f.name == "broker_password":
            continue
        env["WILDSWARM_" + f.name.upper()] = ",".join(value) if isinstance(value, tuple) else str(value)
    if PASSWORD_FILE.exists() and PASSWORD_FILE.read_text().strip() == settings.broker_password:
        env["WILDSWARM_BROKER_PASSWORD_FILE"] = str(PASSWORD_FILE)
    else:
        env["WILDSWARM_BROKER_PASSWORD"] = settings.broker_password
    env.update({k: str(v) for k, v in extra.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Proc:
    """A ``wildswarm`` subprocess with its output in a file."""

    def __init__(self, popen: subprocess.Popen, log: Path, name: str):
        self.popen, self.log, self.name = popen, log, name

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def stop(self, timeout: float = 15) -> int:
        self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            return self.popen.wait(5)


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1,
             procs: tuple[Proc, ...] = ()):
    """Poll ``predicate`` until truthy (returned) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    detail = "\n".join(f"--- {p.name} (pid {p.pid}, alive={p.alive()}):\n{p.output()[-3000:]}" for p in procs)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{detail}")


def consumers(settings: Settings) -> int:
    with Broker(settings) as b:
        return b.counts()[1]


def wait_consuming(settings: Settings, n: int, procs: tuple[Proc, ...] = (), timeout: float = 30) -> None:
    wait_for(lambda: consumers(settings) >= n, timeout, f"{n} consumer(s) on {settings.queue}", 0.2, procs)


def jobs_of(settings: Settings) -> dict[str, Job]:
    return {j.id: j for j in JobStore(Layout(settings.data)).all()}


def all_finished(settings: Settings, n: int) -> dict[str, Job] | None:
    jobs = jobs_of(settings)
    return jobs if len(jobs) >= n and all(j.status.finished for j in jobs.values()) else None


def log_lines(settings: Settings) -> list[str]:
    logs = Layout(settings.data).logs
    return [line for p in sorted(logs.glob("*.log")) for line in p.read_text().splitlines()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


