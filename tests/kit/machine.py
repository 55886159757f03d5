"""The machine a test session runs on: what it is doing besides (the report header), and what an
earlier, interrupted test session left running on it (removed before this one starts).

A CI log is often all there is of a failed run. The header says how loaded the machine was, how
much memory and disk were free (RabbitMQ blocks every publisher below 1 GB of free disk) and what
Docker was already running when the session began, so a run that fails from a crowded machine
says so in its first lines.

An earlier session killed half-way (a CI timeout, a developer's Ctrl-C twice, a machine stopped
and started again) leaves its e2e stack deployed and its compose services behind; the Swarm
starts the stack again with the daemon, and its workers then sit on the cores that this session's
tests time. Both are the test suite's own (stack ``wildswarm-e2e*``, compose project
``wildswarm-test-<pid>`` of a process that is gone): nothing of a user's is touched.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
E2E_STACK_PREFIX = "wildswarm-e2e"
COMPOSE_PREFIX = "wildswarm-test-"


def _docker(*argv: str, timeout: float = 30) -> str | None:
    """``docker argv`` 's output, or None when there is no answering daemon."""
    if shutil.which("docker") is None:
        return None
    try:
        r = subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout if r.returncode == 0 else None


def _meminfo() -> dict[str, int]:
    out = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            out[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def resources() -> str:
    """One line: cores, load, free memory, and free disk where the tests and Docker write."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    mem = _meminfo()
    gb = lambda b: f"{b / 2**30:.1f} GB"  # noqa: E731
    disks = []
    for what, folder in (("temporary files", tempfile.gettempdir()), ("Docker", "/var/lib/docker"),
                         ("this checkout", str(ROOT))):
        try:
            disks.append(f"{gb(shutil.disk_usage(folder).free)} for {what}")
        except OSError:
            pass
    return (f"machine: {len(os.sched_getaffinity(0))} cores for this process, load {load}, "
            f"memory {gb(mem.get('MemAvailable', 0))} free of {gb(mem.get('MemTotal', 0))}, "
            f"disk {', '.join(disks)} free")


# Kept in the temporary folder by design, per user and across runs: PyTorch's compile cache and
# ONNX Runtime's session stamp (51 bytes).
LIBRARY_CACHES = ("torchinductor_", ".ses")


def left_behind(folder: Path) -> list[str]:
    """What a run left in a temporary ``folder``, less the libraries' own per-user caches."""
    return sorted(p.name for p in Path(folder).iterdir() if not p.name.startswith(LIBRARY_CACHES))


def header() -> list[str]:
    """Lines for pytest's report header: the machine's resources, and what Docker runs already."""
    lines = [resources()]
    services = _docker("service", "ls", "--format", "{{.Name}} {{.Replicas}}")
    containers = _docker("ps", "--format", "{{.Names}}")
    if containers is None:
        lines.append("docker: no daemon answers yet")
    else:
        names = containers.split()
        lines.append(f"docker: {len(names)} container(s) running"
                     + (f" ({', '.join(sorted(names)[:8])}{', ...' if len(names) > 8 else ''})" if names else "")
                     + (f"; Swarm services: {', '.join(services.splitlines())}" if services and services.strip()
                        else ""))
    return lines


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_compose_projects(projects: list[str]) -> list[str]:
    """The test sessions' compose projects (``wildswarm-test-<pid>``) whose process is gone."""
    stale = []
    for name in projects:
        pid = name[len(COMPOSE_PREFIX):]
        if name.startswith(COMPOSE_PREFIX) and pid.isdigit() and not _alive(int(pid)):
            stale.append(name)
    return stale


def remove_leftovers(log=print, stack_prefix: str = E2E_STACK_PREFIX) -> list[str]:
    """Remove what interrupted test sessions left running; what was removed, by name."""
    removed = []
    stacks = _docker("stack", "ls", "--format", "{{.Name}}") or ""
    for name in (n for n in stacks.split() if n.startswith(stack_prefix)):
        with tempfile.TemporaryDirectory() as nowhere:     # its secret files went with its session
            env = os.environ | {"STACK": name, "SECRET_PREFIX": name, "PURGE": "1", "SECRETS_DIR": nowhere}
            r = subprocess.run(["bash", "scripts/stack.sh", "down"], cwd=ROOT, env=env, capture_output=True,
                               text=True, timeout=300)
        log(f"leftovers: the e2e stack {name} of an earlier test session "
            f"{'removed' if r.returncode == 0 else 'could not be removed: ' + r.stderr.strip()[-300:]}")
        removed.append(name)
    labels = _docker("ps", "-a", "--filter", "label=com.docker.compose.project",
                     "--format", '{{.Label "com.docker.compose.project"}}') or ""
    for project in stale_compose_projects(sorted(set(labels.split()))):
        label = f"label=com.docker.compose.project={project}"
        ids = (_docker("ps", "-aq", "--filter", label) or "").split()
        if ids:
            _docker("rm", "-f", "-v", *ids, timeout=120)
        for kind in ("network", "volume"):
            found = (_docker(kind, "ls", "-q", "--filter", label) or "").split()
            if found:
                _docker(kind, "rm", *found, timeout=60)
        log(f"leftovers: the services ({len(ids)} container(s)) of the test session {project}, which is gone, removed")
        removed.append(project)
    return removed
