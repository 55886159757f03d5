"""The real RabbitMQ and PostgreSQL the tests talk to.

By default they are the project's own images (``make images``), brought up
once per test session with docker-compose through pytest-docker
(``kit/compose.yml``), on free ports of 127.0.0.1 and with fresh random
passwords. For quick local runs against services already running on this
machine, set ``WILDSWARM_TEST_SERVICES=host``: RabbitMQ from
``scripts/rabbitmq-local.sh`` and PostgreSQL from ``scripts/postgres-local.sh``
(127.0.0.1:5672 and :5432). CI uses the containers.

Every test gets its own queue and its own database schema, so tests never meet.
"""
from __future__ import annotations

import contextlib
import json
import re
import os
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from wildswarm.broker import Broker
from wildswarm.config import Settings
from wildswarm.errors import BrokerError, JobStoreError

KIT = Path(__file__).resolve().parent
COMPOSE_FILE = KIT / "compose.yml"
HOST_BROKER_PASSWORD_FILE = Path(os.environ.get("WILDSWARM_TEST_BROKER_PASSWORD_FILE",
                                                "/var/lib/wildswarm-test/broker-password"))
HOST_DB_PASSWORD_FILE = Path(os.environ.get("WILDSWARM_TEST_DB_PASSWORD_FILE", "/var/lib/wildswarm-test/db-password"))


@dataclass
class Services:
    """Where the test services are, and how to restart each (``restart["rabbitmq"](down_seconds)``)."""

    broker_port: int
    broker_http_port: int
    broker_password: str
    db_port: int
    db_password: str
    restart: dict[str, Callable[[float], None]] = field(default_factory=dict)

    def settings(self, **changes) -> Settings:
        return Settings(broker_host="127.0.0.1", broker_port=self.broker_port, broker_vhost="/",
                        broker_user="wildswarm", broker_password=self.broker_password,
                        db_host="127.0.0.1", db_port=self.db_port, db_name="wildswarm", db_user="wildswarm",
                        db_password=self.db_password).replace(**changes)


def broker_answers(settings: Settings) -> bool:
    broker = Broker(settings)
    try:
        broker.connect(declare=False)
        return True
    except BrokerError:
        return False
    finally:
        broker.close()


def broker_nodes(services: Services, timeout: float = 10) -> list[dict]:
    """RabbitMQ's nodes as its management API describes them (``/api/nodes``)."""
    import requests
    base = f"http://127.0.0.1:{services.broker_http_port}"
    for prefix in ("/rabbitmq", ""):         # the stack's config serves the API under /rabbitmq
        r = requests.get(f"{base}{prefix}/api/nodes", auth=("wildswarm", services.broker_password), timeout=timeout)
        if r.status_code == 200:
            return r.json()
    raise BrokerError(f"RabbitMQ's management API answers {r.status_code}")


@contextlib.contextmanager
def broker_policy(services: Services, name: str, queue: str, definition: dict):
    """A RabbitMQ policy on ``queue`` alone while the block runs (through the management API), cleared
    after: e.g. ``{"max-length": 1, "overflow": "reject-publish"}``, a queue that nacks publishes."""
    import requests
    auth, base = ("wildswarm", services.broker_password), f"http://127.0.0.1:{services.broker_http_port}"
    prefix = next(p for p in ("/rabbitmq", "") if requests.get(f"{base}{p}/api/overview", auth=auth,
                                                                 timeout=10).status_code == 200)
    url = f"{base}{prefix}/api/policies/%2F/{name}"
    r = requests.put(url, auth=auth, timeout=10, json={"pattern": f"^{re.escape(queue)}$", "definition": definition,
                                                       "apply-to": "queues", "priority": 10})
    r.raise_for_status()
    try:
        yield
    finally:
        requests.delete(url, auth=auth, timeout=10)


def broker_alarms(services: Services, timeout: float = 10) -> list[str]:
    """RabbitMQ's resource alarms, in words: while one is on, the broker blocks every publisher, so
    tests that publish hang until their own timeouts instead of failing."""
    import requests
    try:
        nodes = broker_nodes(services, timeout)
    except (requests.RequestException, BrokerError) as e:
        return [f"the management API does not answer ({e})"]
    said = []
    for node in nodes:
        if node.get("disk_free_alarm"):
            said.append(f"disk alarm on {node.get('name')}: {node.get('disk_free', 0) / 2**20:.0f} MB free, "
                        f"limit {node.get('disk_free_limit', 0) / 2**20:.0f} MB")
        if node.get("mem_alarm"):
            said.append(f"memory alarm on {node.get('name')}: {node.get('mem_used', 0) / 2**20:.0f} MB used, "
                        f"limit {node.get('mem_limit', 0) / 2**20:.0f} MB")
    return said


def db_answers(settings: Settings) -> bool:
    import psycopg
    from wildswarm.jobs.db import conninfo
    try:
        with psycopg.connect(conninfo(settings), connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except (psycopg.Error, JobStoreError):
        return False


# The stack's broker stops every publisher below 1 GB of free disk, so that a full shared
# filesystem cannot take the queue's messages with it. The test broker's queues are throwaway, and
# on a crowded CI machine that margin blocked every test that publishes, each until its timeout:
# it keeps RabbitMQ's own default instead.
TEST_DISK_FREE_LIMIT = "50MB"


def broker_config_for_tests() -> str:
    """The stack's config/rabbitmq.conf, but for the free-disk limit (``TEST_DISK_FREE_LIMIT``)."""
    text = (KIT.parents[1] / "config" / "rabbitmq.conf").read_text()
    line = next((ln for ln in text.splitlines() if ln.startswith("disk_free_limit.absolute")), None)
    if line is None:
        raise AssertionError("config/rabbitmq.conf sets no disk_free_limit.absolute: update tests/kit/services.py")
    return text.replace(line, f"disk_free_limit.absolute = {TEST_DISK_FREE_LIMIT}")


def write_secrets(folder: Path) -> tuple[str, str]:
    """Random passwords for the session, RabbitMQ's definitions file and its config; (broker, db) passwords."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)                  # the containers' own users read them through a bind mount
    broker_pw, db_pw = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    definitions = {
        "users": [{"name": "wildswarm", "password": broker_pw, "tags": "administrator"}],
        "vhosts": [{"name": "/"}],
        "permissions": [{"user": "wildswarm", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}],
    }
    for name, text in (("rabbitmq_definitions", json.dumps(definitions)), ("db_password", db_pw),
                       ("rabbitmq.conf", broker_config_for_tests())):
        (folder / name).write_text(text)
        (folder / name).chmod(0o644)
    return broker_pw, db_pw


def compose(project: str, *args: str, timeout: float = 180) -> None:
    subprocess.run(["docker-compose", "-f", str(COMPOSE_FILE), "-p", project, *args], check=True,
                   timeout=timeout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def host_services() -> Services:
    """The services of this machine (``WILDSWARM_TEST_SERVICES=host``)."""
    pw = HOST_BROKER_PASSWORD_FILE.read_text().strip() if HOST_BROKER_PASSWORD_FILE.exists() else ""

    def restart_rabbitmq(down_seconds: float = 1.0) -> None:
        import time
        for step in (("stop_app",), ("start_app",), ("await_startup", "--timeout", "120")):
            subprocess.run(["rabbitmqctl", "-q", *step], check=True, timeout=180,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if step == ("stop_app",):
                time.sleep(down_seconds)

    def restart_postgres(down_seconds: float = 1.0) -> None:
        subprocess.run(["pg_ctlcluster", "15", "main", "restart"], check=True, timeout=120)

    db_pw = HOST_DB_PASSWORD_FILE.read_text().strip() if HOST_DB_PASSWORD_FILE.exists() else ""
    return Services(5672, 15672, pw, 5432, db_pw,
                    restart={"rabbitmq": restart_rabbitmq, "postgres": restart_postgres})
