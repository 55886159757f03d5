"""Fixtures of the e2e tests: a real wildswarm stack on this machine's one-node Swarm.

``make test`` and ``make e2e`` first install and start Docker Engine where it is missing,
initialise the Swarm and build the images (``make docker images``), and set
WILDSWARM_REQUIRE_DOCKER=1: then a missing Docker fails these tests instead of skipping
them. The stack is deployed once with ``scripts/stack.sh up`` (what ``make
up`` runs) for the module that uses it and removed after it with its secrets and volumes,
even when tests fail.
"""
from __future__ import annotations

import os

import pytest

from stackkit import LABEL, NAME, Stack, client, docker_problem, fast_settings, free_port, stack_env


@pytest.fixture(scope="session")
def docker_ready() -> None:
    problem = docker_problem()
    if problem:
        if os.environ.get("WILDSWARM_REQUIRE_DOCKER") == "1":
            pytest.fail(problem)
        pytest.skip(problem)


@pytest.fixture(scope="module")
def stack(docker_ready, tmp_path_factory) -> Stack:
    """The test stack, deployed and healthy; removed (with secrets and volumes) after the module,
    so it does not sit on the machine's two cores while the rest of the suite runs."""
    base = tmp_path_factory.mktemp("e2e")
    data, secrets = base / "data", base / "secrets"
    data.mkdir()
    secrets.mkdir(mode=0o700)
    env_file = base / "wildswarm.env"
    env_file.write_text(fast_settings())
    ports = {"https": free_port(), "http": free_port()}
    s = Stack(data=data, secrets=secrets, env=stack_env(data, secrets, env_file, ports), ports=ports)
    s.env["BACKUP_DIR"] = str(base / "backups")
    s.env["PURGE"] = "1"
    s.script("down", timeout=300)          # what a crashed earlier run may have left
    try:
        s.script("up", timeout=3600)
    except BaseException:
        _dump(s)
        s.script("down", timeout=300, check=False)
        raise
    yield s
    s.script("down", timeout=300, check=False)


def _dump(s: Stack) -> None:
    """What went wrong, into the test output (what ``docker stack ps --no-trunc`` and ``docker service logs
    --tail 40`` show); never raises, the deployment's own error is the one to report."""
    import docker
    c = client()
    try:
        for service in c.services.list(filters={"label": f"{LABEL}={NAME}"}):
            for task in service.tasks():
                status = task.get("Status", {})
                print(service.name, task.get("Slot", ""), task.get("NodeID", "")[:12], task.get("DesiredState"),
                      status.get("State"), status.get("Timestamp"), status.get("Err", ""))
    except docker.errors.DockerException as e:
        print(f"(the stack's tasks: {e})")
    for service in ("proxy", "rabbitmq", "postgres", "producer", "web", "worker", "prometheus", "docker-api",
                    "node-exporter"):
        print(f"--- {service}")
        try:
            logs = c.services.get(f"{NAME}_{service}").logs(stdout=True, stderr=True, tail=40)
            print(b"".join(logs).decode(errors="replace"))
        except docker.errors.DockerException as e:
            print(f"(no logs: {e})")
