"""What an interrupted test session leaves on the machine is gone before the next one starts.

A CI run killed at its time limit, or a machine stopped mid-run, leaves the e2e stack deployed
(the Swarm starts it again with the daemon) and the session's RabbitMQ and PostgreSQL containers.
The next ``make test`` removes them (tests/kit/machine.py, from tests/conftest.py); a live
session's services and anything not the suite's own are left alone.
"""
from __future__ import annotations

import os
import subprocess
import time
import uuid

from kit import machine
from stackkit import sh

IMAGE = "wildswarm/producer:latest"


def test_stale_compose_projects_are_those_of_sessions_that_are_gone():
    dead = subprocess.Popen(["true"])
    dead.wait()
    names = [f"wildswarm-test-{os.getpid()}", f"wildswarm-test-{dead.pid}", f"myproject-{dead.pid}",
             "wildswarm-test-abc"]
    assert machine.stale_compose_projects(names) == [f"wildswarm-test-{dead.pid}"]


def test_the_header_says_cores_load_memory_and_what_docker_runs(docker_ready):
    lines = machine.header()
    assert lines[0].startswith("machine: ") and " cores " in lines[0] and "load" in lines[0]
    assert lines[1].startswith("docker: ") and "container(s) running" in lines[1]


def test_an_interrupted_sessions_stack_and_services_are_removed_and_a_live_ones_kept(docker_ready, tmp_path):
    tag = uuid.uuid4().hex[:8]
    stack = f"{machine.E2E_STACK_PREFIX}-leftover-{tag}"
    (tmp_path / "stack.yml").write_text(
        'version: "3.8"\nservices:\n  idle:\n'
        f'    image: {IMAGE}\n    entrypoint: ["sleep", "3600"]\n')
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale, live = f"wildswarm-test-{dead.pid}", f"wildswarm-test-{os.getpid()}"
    containers = {}
    try:
        sh("docker", "stack", "deploy", "-c", str(tmp_path / "stack.yml"), stack)
        # running, as an interrupted session's stack is: removed while its task's container was still being
        # made, that container could appear after `down` had looked (seen once on a loaded CI machine)
        deadline = time.monotonic() + 120
        while not sh("docker", "ps", "-q", "--filter", f"label=com.docker.stack.namespace={stack}").strip():
            assert time.monotonic() < deadline, f"the stack {stack} did not start its task in 120 s"
            time.sleep(1)
        for project in (stale, live):
            containers[project] = sh("docker", "run", "-d", "--label", f"com.docker.compose.project={project}",
                                     "--entrypoint", "sleep", IMAGE, "3600").strip()
        lines = []
        removed = machine.remove_leftovers(log=lines.append, stack_prefix=stack)
        assert removed == [stack, stale]
        assert stack not in sh("docker", "stack", "ls", "--format", "{{.Name}}").split()
        assert not sh("docker", "ps", "-aq", "--filter", f"label=com.docker.stack.namespace={stack}").strip()
        assert not sh("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={stale}").strip()
        assert sh("docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={live}").strip()
        assert any(stack in line and "removed" in line for line in lines)
        assert any(stale in line and "removed" in line for line in lines)
    finally:
        sh("docker", "stack", "rm", stack, check=False)
        for cid in containers.values():
            sh("docker", "rm", "-f", cid, check=False)
