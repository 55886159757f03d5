"""scripts/stack.sh restore (make restore FILE=...): the job store is put back while nothing writes it,
and the services it paused run again however the restore ends.

No Docker: a stand-in `docker` on PATH keeps a Swarm's services in a file. Their tasks run on other
nodes (this node's `docker ps` sees none of them) and take a few looks to stop, as a worker does
within its stop grace period.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICES = {"producer": 1, "web": 1, "worker": 2}

FAKE_DOCKER = r'''#!{python}
import json, os, signal, sys
state_file = os.environ["FAKE_DOCKER_STATE"]
state = json.load(open(state_file))
args = sys.argv[1:]


def save():
    json.dump(state, open(state_file, "w"))


def service(name):
    return state["services"].get(name.removeprefix("wildswarm_"))


if args[:1] == ["ps"]:
    # This node runs the job store only; the stack's other tasks are elsewhere.
    if "label=com.docker.swarm.service.name=wildswarm_postgres" in args:
        print("pg1")
elif args[:2] == ["service", "inspect"]:
    s = service(args[2])
    if s is None:
        sys.exit(1)
    print(s["desired"])
elif args[:2] == ["service", "scale"]:
    name, n = args[-1].split("=")
    service(name)["desired"] = int(n)
    save()
elif args[:2] == ["service", "ps"]:
    s = service(args[2])
    if s is None:
        sys.exit(1)
    for i in range(s["running"]):
        print(f"{args[2]}.{i + 1} Running 3 minutes ago")
    # A task scaled away stops a moment later (its stop grace period), one look at a time.
    if s["running"] > s["desired"]:
        s["running"] -= 1
    elif s["running"] < s["desired"]:
        s["running"] = s["desired"]
    save()
elif args[:2] == ["service", "ls"]:
    for name, s in state["services"].items():
        print(f"wildswarm_{name} {s['running']}/{s['desired']}")
elif args[:1] == ["exec"]:
    state["restored_while_running"] = {k: s["running"] for k, s in state["services"].items() if s["running"]}
    save()
    sys.stdin.read()
    if os.environ.get("FAKE_DOCKER_INTERRUPT"):
        os.kill(os.getppid(), signal.SIGTERM)    # the operator's session ends mid-restore
        sys.exit(143)
    sys.exit(int(os.environ.get("FAKE_DOCKER_RESTORE_RC", "0")))
else:
    sys.exit(f"fake docker: unexpected {args}")
'''


@pytest.fixture
def swarm(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER.replace("{python}", sys.executable))
    docker.chmod(0o755)
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"services": {k: {"desired": n, "running": n} for k, n in SERVICES.items()}}))
    dump = tmp_path / "wildswarm-jobs-20261207T000000Z.dump"
    dump.write_bytes(b"PGDMP fake dump")

    def restore(**env: str) -> tuple[subprocess.CompletedProcess, dict]:
        full = {k: v for k, v in os.environ.items() if not k.startswith(("WILDSWARM_", "FAKE_DOCKER"))}
        full.update(env, PATH=f"{bin_dir}:{os.environ['PATH']}", STACK="wildswarm", FAKE_DOCKER_STATE=str(state))
        done = subprocess.run(["bash", str(REPO / "scripts" / "stack.sh"), "restore", str(dump)],
                              capture_output=True, text=True, env=full, timeout=120)
        return done, json.loads(state.read_text())

    return restore


def desired(state: dict) -> dict:
    return {name: s["desired"] for name, s in state["services"].items()}


def test_restore_waits_until_the_tasks_on_every_node_have_stopped(swarm):
    done, state = swarm()
    assert done.returncode == 0, done.stderr
    assert state["restored_while_running"] == {}, f"restored while tasks still ran:\n{done.stderr}"
    assert desired(state) == SERVICES


def test_a_failed_restore_starts_the_services_again(swarm):
    done, state = swarm(FAKE_DOCKER_RESTORE_RC="1")
    assert done.returncode != 0
    assert "pg_restore failed" in done.stderr
    assert desired(state) == SERVICES


def test_an_interrupted_restore_starts_the_services_again(swarm):
    done, state = swarm(FAKE_DOCKER_INTERRUPT="1")
    assert done.returncode != 0
    assert desired(state) == SERVICES, f"left paused after the interruption:\n{done.stderr}"
