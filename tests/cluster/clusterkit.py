"""Containers standing in for cluster hosts, and ansible-playbook runs against them.

(Helpers for tests/cluster; the fixtures are in conftest.py.)

The playbooks run for real through Docker's connection plugin (`docker exec`), with
the steps that need BeeGFS's package repository or a kernel module switched off by
their variables (beegfs_use_packages, beegfs_start_services) and no systemd
(docker_manage_service). The Swarm nodes run their own dockerd (Docker-in-Docker on
a user-defined bridge network of this machine); /beegfs is one folder of this
machine bind-mounted into every container.

Everything a test starts carries the label org.wildswarm.test=cluster and is removed
afterwards: containers (with their anonymous volumes), the network, loop devices,
and the cgroups of the inner containers.
"""
from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
IMAGE_DIR = Path(__file__).resolve().parent / "image"
BIN = Path(sys.executable).parent
LABEL = "org.wildswarm.test=cluster"

# Outer containers: every capability this machine grants (it lacks CAP_SYS_RESOURCE,
# so --privileged is refused), no seccomp/AppArmor filter, the host's cgroup tree
# writable for the inner dockerd. A Swarm node needs all of it; nodes without
# dockerd need only the mount and loop-device parts, but one recipe keeps it simple.
NODE_RUN_ARGS = [
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--security-opt", "systempaths=unconfined",
    "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
]

# The stack's images (stack.yml's *_IMAGE variables) -> the stand-in's tags.
STACK_IMAGES = ("RABBITMQ", "POSTGRES", "PRODUCER", "WEB", "WORKER", "PROMETHEUS", "NODE_EXPORTER", "PROXY")


@functools.cache
def docker_client():
    """This machine's Docker daemon through the Docker SDK (the `docker` package), for the kit's own
    queries; the nodes' inner dockerds are reached with `docker` run inside them."""
    import docker
    return docker.from_env()


def sh(*argv: str, check: bool = True, input: str | None = None, timeout: float = 300) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} -> {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done.stdout


def ansible_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_PIPELINING="True",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def _missing(problem: str) -> None:
    """Skip, or fail under `make test` (WILDSWARM_REQUIRE_DOCKER=1: it installs all of it)."""
    if os.environ.get("WILDSWARM_REQUIRE_DOCKER") == "1":
        pytest.fail(problem)
    pytest.skip(problem)


def need_ansible() -> None:
    if not (BIN / "ansible-playbook").exists():
        _missing(f"ansible-playbook not in {BIN}: pip install -e '.[dev]' (or scripts/ansible-local.sh)")


def need_docker() -> None:
    if shutil.which("docker") is None:
        _missing("no Docker daemon answers (scripts/docker-local.sh starts one)")
    try:
        import docker
    except ImportError:
        _missing("no Docker SDK for Python (the `docker` package: make venv installs it)")
    try:
        docker_client().ping()
    except Exception:          # docker.errors.DockerException, or the connection's own error
        _missing("no Docker daemon answers (scripts/docker-local.sh starts one)")


@dataclass
class Run:
    """One ansible-playbook run: its exit status, output and PLAY RECAP per host."""
    rc: int
    output: str
    recap: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0

    @classmethod
    def parse(cls, rc: int, output: str, seconds: float = 0.0) -> "Run":
        recap = {}
        for m in re.finditer(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", output, re.M):
            recap[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
        return cls(rc, output, recap, seconds)

    def changed(self) -> dict[str, int]:
        return {host: r["changed"] for host, r in self.recap.items() if r["changed"]}

    def tail(self, lines: int = 80) -> str:
        """The failures (each with the task it came from), then the last lines."""
        out, task = [], ""
        for block in re.split(r"\n(?=TASK \[|PLAY |RUNNING HANDLER)", self.output):
            if block.startswith(("TASK [", "RUNNING HANDLER")):
                task = block.splitlines()[0]
            if re.search(r"^(fatal|failed):", block, re.M):
                out.append(block if block.startswith(("TASK [", "RUNNING HANDLER")) else f"{task}\n{block}")
        return "\n".join(out + ["...", *self.output.splitlines()[-lines:]])


def ansible_playbook(inventory: Path, *playbooks: str, extra: list[str] = (),
                     timeout: float = 900) -> Run:
    argv = [str(BIN / "ansible-playbook"), "-i", str(inventory), *extra,
            *[str(REPO / p) for p in playbooks]]
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=ansible_env(),
                          timeout=timeout)
    return Run.parse(done.returncode, done.stdout + done.stderr, time.monotonic() - started)


@dataclass
class Node:
    name: str            # the inventory's name
    container: str
    address: str = ""
    groups: tuple[str, ...] = ()
    hostvars: dict = field(default_factory=dict)

    def exec(self, *argv: str, check: bool = True, input: str | None = None) -> str:
        return sh("docker", "exec", "-i", self.container, *argv, check=check, input=input)

    def rc(self, *argv: str) -> int:
        return docker_client().containers.get(self.container).exec_run(list(argv)).exit_code


@dataclass
class Cluster:
    """Containers on one network, an inventory describing them, and the extra vars."""
    prefix: str
    workdir: Path
    node_image: str
    standin_image: str
    network: str = ""
    nodes: dict[str, Node] = field(default_factory=dict)
    loops: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)     # image tags made for this cluster

    def start(self, name: str, groups: tuple[str, ...], *, dockerd: bool = False,
              mounts: list[str] = (), devices: list[str] = (), **hostvars) -> Node:
        container = f"{self.prefix}-{name}"
        argv = ["docker", "run", "-d", "--name", container, "--hostname", name,
                "--network", self.network, "--label", LABEL,
                "--label", f"org.wildswarm.test.pid={os.getpid()}",
                "-v", "/var/lib/docker", *NODE_RUN_ARGS,
                "-e", f"START_DOCKERD={1 if dockerd else 0}",
                "-e", f"CGROUP_PARENT=/{container}"]
        for m in mounts:
            argv += ["-v", m]
        for d in devices:
            argv += ["--device", d]
        sh(*argv, self.node_image)
        networks = docker_client().containers.get(container).attrs["NetworkSettings"]["Networks"]
        address = "".join(n.get("IPAddress") or "" for n in networks.values())
        node = Node(name, container, address, groups, hostvars)
        self.nodes[name] = node
        return node

    def loop_device(self, size_mb: int = 64, fstype: str = "", files: dict[str, str] = None) -> str:
        """A loop device over a sparse file: blank, or formatted with `files` on it."""
        image = self.workdir / f"disk{len(self.loops)}.img"
        with open(image, "wb") as f:
            f.truncate(size_mb * 1024 * 1024)
        if fstype:
            content = self.workdir / f"disk{len(self.loops)}-content"
            content.mkdir()
            for rel, text in (files or {}).items():
                (content / rel).write_text(text)
            sh(f"mkfs.{fstype}", "-q", "-d", str(content), str(image))
        device = sh("losetup", "--find", "--show", str(image)).strip()
        self.loops.append(device)
        return device

    def wait_for_dockerd(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        for node in self.nodes.values():
            if node.exec("sh", "-c", "echo $START_DOCKERD").strip() != "1":
                continue
            while not node.exec("docker", "version", "--format", "{{.Server.Version}}", check=False).strip():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dockerd in {node.container} did not start:\n"
                                       + node.exec("tail", "-20", "/var/log/dockerd.log", check=False))
                time.sleep(1)

    def write_inventory(self, folder: Path, names: list[str] | None = None) -> Path:
        """hosts.yml for `names` (default: all), group_vars from inventory/example."""
        folder.mkdir(parents=True, exist_ok=True)
        names = names or list(self.nodes)
        hosts, groups = {}, {}
        for name in names:
            node = self.nodes[name]
            hosts[name] = {
                "ansible_connection": "community.docker.docker",
                "ansible_host": node.container,
                "ansible_user": "root",
                "ansible_become": False,      # root already; the images have no sudo
                "ansible_python_interpreter": "/usr/bin/python3",
                "cluster_address": node.address,
                **node.hostvars,
            }
            for group in node.groups:
                groups.setdefault(group, {"hosts": {}})["hosts"][name] = None
        inventory = {"all": {"hosts": hosts, "children": groups}}
        (folder / "hosts.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
        if not (folder / "group_vars").exists():
            (folder / "group_vars").symlink_to(REPO / "inventory" / "example" / "group_vars")
        return folder / "hosts.yml"

    def remove(self) -> None:
        names = [n.container for n in self.nodes.values()]
        if names:
            sh("docker", "rm", "-f", "-v", *names, check=False)
        if self.network:
            sh("docker", "network", "rm", self.network, check=False)
        for device in self.loops:
            sh("losetup", "-d", device, check=False)
        if self.tags:
            sh("docker", "rmi", *self.tags, check=False)
        remove_cgroups(self.prefix)


def remove_cgroups(prefix: str) -> None:
    """The (empty) cgroups the inner dockerds made under /<prefix>-<node> in each hierarchy."""
    for top in Path("/sys/fs/cgroup").glob(f"*/{prefix}-*"):
        for sub in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True) + [top]:
            if sub.is_dir():
                try:
                    sub.rmdir()
                except OSError:
                    pass


def remove_stale() -> None:
    """Leftovers of earlier runs whose pytest process is gone (killed mid-run)."""
    stale = []
    for container in docker_client().containers.list(all=True, filters={"label": LABEL}):
        pid = container.labels.get("org.wildswarm.test.pid", "")
        if not pid.isdigit() or not Path(f"/proc/{pid}").exists():
            stale.append(container.name)
    if stale:
        sh("docker", "rm", "-f", "-v", *stale, check=False)
        for prefix in {n.rsplit("-", 1)[0] for n in stale}:
            remove_cgroups(prefix)
    for net in docker_client().networks.list(filters={"label": LABEL}):
        sh("docker", "network", "rm", net.name, check=False)


def write_extra_vars(path: Path, **overrides) -> Path:
    """The test switches: no package repository, no kernel module, no systemd."""
    values = {
        "beegfs_use_packages": False,
        "beegfs_start_services": False,
        "docker_install_source": "distro",   # docker.io is in the node image already
        "docker_manage_service": False,      # dockerd runs without systemd in the containers
        "docker_nvidia_runtime": False,      # no NVIDIA repository or GPU here
        "shared_fs_check_fstype": "",        # /beegfs is a bind mount, not BeeGFS
    }
    values.update(overrides)
    path.write_text(json.dumps(values, indent=2))
    return path
