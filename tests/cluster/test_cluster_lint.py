"""The cluster playbooks: syntax, ansible-lint (production profile), and house rules."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from clusterkit import BIN, REPO, ansible_env, need_ansible

PLAYBOOKS = ["beegfs/site.yml", "beegfs/disks.yml", "beegfs/check.yml", "swarm/site.yml", "swarm/deploy.yml"]
EXAMPLE = REPO / "inventory" / "example" / "hosts.yml"


@pytest.fixture(autouse=True)
def _ansible():
    need_ansible()


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=ansible_env(), timeout=600)


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_syntax(playbook):
    done = run(str(BIN / "ansible-playbook"), "--syntax-check", "-i", str(EXAMPLE), playbook)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ansible_lint_production_profile():
    done = run(str(BIN / "ansible-lint"), "--nocolor", "beegfs", "swarm", "inventory")
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_address_is_written_into_a_playbook():
    """Addresses and host names live in the inventory only (the old system hard-coded them)."""
    ipv4 = re.compile(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b")
    found = []
    for path in sorted((REPO / "beegfs").rglob("*")) + sorted((REPO / "swarm").rglob("*")):
        if path.is_file() and path.suffix in {".yml", ".j2", ".md"} and path.name != "README.md":
            for n, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if ipv4.search(code):
                    found.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert found == []


def _tasks(node):
    """Every task, handler and play in a parsed YAML file (blocks included)."""
    if isinstance(node, list):
        for item in node:
            yield from _tasks(item)
    elif isinstance(node, dict):
        if "name" in node or any("." in str(key) for key in node):
            yield node
        for value in node.values():
            yield from _tasks(value)


def _restarts(task: dict) -> bool:
    for key, value in task.items():
        if isinstance(value, dict) and value.get("state") == "restarted":
            return True
        if str(key).split(".")[-1] in {"command", "shell", "raw"} and "restart" in json.dumps(value):
            return True
    return False


def test_daemon_restarts_roll_one_node_at_a_time():
    """A handler that restarts dockerd or a BeeGFS service on every node at once stops the
    Swarm's managers together (quorum lost) and BeeGFS everywhere: each must be throttled
    to one node at a time."""
    found, unthrottled = [], []
    for path in sorted((REPO / "beegfs").rglob("*.yml")) + sorted((REPO / "swarm").rglob("*.yml")):
        for task in _tasks(yaml.safe_load(path.read_text())):
            if _restarts(task) and re.search(r"docker|beegfs|containerd", yaml.safe_dump(task)):
                where = f"{path.relative_to(REPO)}: {task.get('name')}"
                found.append(task.get("name"))
                if task.get("throttle") != 1:
                    unthrottled.append(where)
    assert {"Restart docker", "Restart beegfs-mgmtd", "Restart beegfs-meta", "Restart beegfs-storage",
            "Restart beegfs-client"} <= set(found), found
    assert unthrottled == [], "restart without `throttle: 1`:\n" + "\n".join(unthrottled)


def test_example_inventory_has_the_old_systems_shape():
    done = run(str(BIN / "ansible-inventory"), "-i", str(EXAMPLE), "--list")
    assert done.returncode == 0, done.stderr
    inv = json.loads(done.stdout)

    def hosts(group):
        out = set(inv.get(group, {}).get("hosts", []))
        for child in inv.get(group, {}).get("children", []):
            out |= hosts(child)
        return out

    assert hosts("beegfs_mgmt") == hosts("beegfs_meta") == {"mgmt01"}
    assert hosts("swarm_managers") == {"head01"}
    assert hosts("swarm_workers") == {"worker01", "worker02", "worker03", "worker04"}
    everyone = {"mgmt01", "head01", "worker01", "worker02", "worker03", "worker04"}
    assert hosts("beegfs_storage") == hosts("beegfs_clients") == everyone
    assert hosts("gpu_nodes") == {"worker04"}
    addresses = [inv["_meta"]["hostvars"][h]["ansible_host"] for h in everyone]
    assert len(set(addresses)) == 6 and all(a.startswith("192.0.2.") for a in addresses)


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="not a git checkout")
@pytest.mark.parametrize("path", ["inventory/example/secrets/beegfs-conn.auth",
                                  "inventory/mysite/secrets/beegfs-tls-key.pem",
                                  "conn.auth"])
def test_generated_secrets_are_never_committed(path):
    done = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO)
    assert done.returncode == 0, f"{path} is not ignored by .gitignore"
