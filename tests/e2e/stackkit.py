"""Helpers of the e2e tests: a wildswarm stack deployed on this machine's one-node Swarm.

Everything goes through the same commands users type (``make up|scale-workers|down``,
i.e. ``scripts/stack.sh``) with the settings in :attr:`Stack.env`; the test stack has a
name, secrets, ports and a data folder of its own, so it never meets a user's stack.
Clients talk to it only on 127.0.0.1. What the tests themselves ask Docker (services, containers,
``exec`` into them, leftovers) goes through the Docker SDK (:func:`client`), not the CLI's output.
"""
from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from kit import net
from kit.waiting import wait_for

if TYPE_CHECKING:
    import docker

ROOT = Path(__file__).resolve().parents[2]
NAME = "wildswarm-e2e"          # stack name and secret prefix of the tests
LABEL = "com.docker.stack.namespace"


def sh(*argv: str, env: dict | None = None, timeout: float = 120, check: bool = True) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-3000:]}")
    return result.stdout


@functools.cache
def client() -> "docker.DockerClient":
    """This machine's Docker daemon, through the Docker SDK (one client for the session).

    Imported here, not at the top: without the package the e2e tests skip (or fail) with
    :func:`docker_problem`'s reason rather than break the collection."""
    import docker
    return docker.from_env()


def docker_problem() -> str | None:
    """Why the e2e tests cannot run here, or None."""
    if shutil.which("docker") is None:          # make up and scripts/stack.sh run the CLI
        return "no docker CLI (make docker installs Docker Engine)"
    try:
        import docker
    except ImportError:
        return "no Docker SDK for Python (the `docker` package: make venv installs it)"
    try:
        swarm = client().info()["Swarm"]
    except (docker.errors.DockerException, requests.RequestException):
        return "no Docker daemon answers (make docker starts one)"
    state, control = swarm.get("LocalNodeState"), swarm.get("ControlAvailable")
    if (state, control) != ("active", True):
        return (f"this node is no Swarm manager ({state} {str(control).lower()}): "
                "make docker initialises a one-node Swarm")
    return None


def as_json(value: Any) -> str:
    """``value`` as ``docker ... --format '{{json ...}}'`` prints it: compact JSON, ``null`` for nothing."""
    return json.dumps(value, separators=(",", ":"))


def dig(attrs: Any, *keys: str) -> Any:
    """``attrs[k1][k2]...`` of an SDK object's ``.attrs`` (the ``docker inspect`` object), None where a key is
    missing (the API leaves out empty fields; Go templates print them as null or "")."""
    for key in keys:
        if not isinstance(attrs, dict):
            return None
        attrs = attrs.get(key)
    return attrs


def docker_exec(container: str, *argv: str) -> str:
    """``docker exec CONTAINER ARGV...``'s standard output; an AssertionError with both outputs if it fails."""
    result = client().containers.get(container).exec_run(list(argv), demux=True)
    out, err = (b.decode(errors="replace") if b else "" for b in (result.output or (None, None)))
    if result.exit_code != 0:
        raise AssertionError(f"docker exec {container} {' '.join(argv)} exited {result.exit_code}:\n"
                             f"{out[-3000:]}\n{err[-3000:]}")
    return out


def run_image(image: str, *argv: str, entrypoint: str | None = None, volumes: list[str] = ()) -> str:
    """``docker run --rm --network none [-v V]... [--entrypoint E] IMAGE ARGV...``'s standard output
    (docker.errors.ContainerError, with the standard error, if it exits non-zero)."""
    out = client().containers.run(image, list(argv), entrypoint=entrypoint, volumes=list(volumes),
                                  network_mode="none", remove=True, stdout=True, stderr=False)
    return out.decode(errors="replace")


def free_port() -> int:
    """A port free on every interface: the stack publishes its ports on all of them (host mode)."""
    return net.free_port("0.0.0.0")


#: What a stack that is still starting answers with: "not yet" for kit.waiting.wait_for.
STARTING = (requests.RequestException, OSError, ValueError, KeyError)


@dataclass
class Stack:
    data: Path
    secrets: Path
    env: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)
    _session: requests.Session | None = None

    # --- the commands users type ---------------------------------------------------------
    def make(self, *targets: str, timeout: float = 1800) -> str:
        return sh("make", "--no-print-directory", *targets, env=self.env, timeout=timeout)

    def script(self, *args: str, timeout: float = 1800, check: bool = True) -> str:
        return sh("bash", "scripts/stack.sh", *args, env=self.env, timeout=timeout, check=check)

    # --- what it made ------------------------------------------------------------------------
    def secret(self, name: str) -> str:
        return (self.secrets / f"{NAME}-{name}").read_text().strip()

    def url(self, path: str = "/", scheme: str = "https") -> str:
        """An address of the stack's one front door, the proxy (HTTPS; or its plain-HTTP redirect)."""
        return f"{scheme}://127.0.0.1:{self.ports[scheme]}{path}"

    @property
    def cert(self) -> str:
        """The proxy's (self-signed) certificate, to verify its TLS against."""
        return str(self.secrets / f"{NAME}-tls_cert")

    def anonymous(self) -> requests.Session:
        """A session that verifies the proxy's certificate (and ignores REQUESTS_CA_BUNDLE and the like)."""
        s = requests.Session()
        s.trust_env = False
        s.verify = self.cert
        return s

    def session(self) -> requests.Session:
        """A browser-like session, logged in to the web app through the proxy (one, kept: the login is
        rate-limited, as it should be)."""
        if self._session is not None:
            return self._session
        s = self.anonymous()
        page = s.get(self.url("/login"), timeout=30).text
        token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
        r = s.post(self.url("/login"), data={"user": "wildswarm", "password": self.secret("web_password"),
                                             "csrf_token": token}, allow_redirects=False, timeout=30)
        assert r.status_code == 302, r.text
        self._session = s
        return s

    def services(self) -> dict[str, tuple[int, int]]:
        """service (without the stack prefix) -> (running tasks, desired tasks), as ``docker service ls``
        counts them (its REPLICAS column: the API's ServiceStatus)."""
        found = {}
        for service in client().services.list(filters={"label": f"{LABEL}={NAME}"}, status=True):
            status = service.attrs.get("ServiceStatus") or {}
            found[service.name.removeprefix(f"{NAME}_")] = (int(status.get("RunningTasks", 0)),
                                                            int(status.get("DesiredTasks", 0)))
        return found

    def service_attrs(self, service: str) -> dict:
        """``docker service inspect`` of one of the stack's services (without the stack prefix)."""
        return client().services.get(f"{NAME}_{service}").attrs

    def containers(self, service: str) -> list[str]:
        """The ids of the service's running containers on this node (``docker ps -q``)."""
        found = client().containers.list(filters={"label": f"com.docker.swarm.service.name={NAME}_{service}"})
        return [c.short_id for c in found]

    def leftovers(self) -> dict[str, list[str]]:
        """Docker objects of the test stack still there (their ids)."""
        label = {"label": f"{LABEL}={NAME}"}
        c = client()
        kinds = {
            "containers": lambda: c.containers.list(all=True, filters=label),
            "services": lambda: c.services.list(filters=label),
            "networks": lambda: c.networks.list(filters=label),
            "volumes": lambda: c.volumes.list(filters=label),
            "configs": lambda: c.configs.list(filters=label),
            "secrets": lambda: c.secrets.list(filters={"name": f"{NAME}_"}),
        }
        return {k: v for k, found in kinds.items() if (v := [o.id for o in found()])}

    # --- the web app's JSON API ----------------------------------------------------------------
    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.secret('web_token')}", **kwargs.pop("headers", {})}
        return requests.request(method, self.url(path), headers=headers, timeout=120, verify=self.cert, **kwargs)

    def job(self, job_id: str) -> dict:
        response = self.api("GET", f"/api/jobs/{job_id}")
        response.raise_for_status()
        return response.json()

    def wait_job(self, job_id: str, timeout: float = 600) -> dict:
        def finished():
            job = self.job(job_id)
            return job if job["status"] in ("done", "failed") else None
        return wait_for(finished, timeout, f"job {job_id} to finish", 2.0, errors=STARTING)

    # --- RabbitMQ's management API and Prometheus, behind the proxy's login ---------------------
    def rabbitmq(self, path: str, auth: tuple[str, str] | None = None,
                 session: requests.Session | None = None) -> requests.Response:
        auth = auth or ("admin", self.secret("broker_admin_password"))
        return (session or self.session()).get(self.url(f"/rabbitmq{path}"), auth=auth, timeout=30)

    def prometheus(self, path: str, **params) -> dict:
        response = self.session().get(self.url(f"/prometheus{path}"), params=params, timeout=30)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict]:
        return self.prometheus("/api/v1/query", query=promql)["result"]

    def worker_metric(self, container: str, name: str) -> float:
        """A metric of one worker container, read inside it (its /metrics is on the overlay network only)."""
        code = ("import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9101/metrics', timeout=5)"
                ".read().decode())")
        text = docker_exec(container, "python3", "-c", code)
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total


def stack_env(data: Path, secrets: Path, env_file: Path, ports: dict[str, int]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WILDSWARM_")}
    env.update({
        "STACK": NAME, "SECRET_PREFIX": NAME, "SECRETS_DIR": str(secrets),
        "WILDSWARM_DATA": str(data), "DATA": str(data), "WILDSWARM_ENV_FILE": str(env_file),
        "WILDSWARM_UNTRAINED": "1",
        "WORKERS": "1", "WORKERS_PER_NODE": "2",       # two workers on this one node (scale test)
        "WORKER_MEMORY_RESERVATION": "1G",
        "HTTPS_PORT": str(ports["https"]), "HTTP_PORT": str(ports["http"]),
        "WAIT_TIMEOUT": "900",
    })
    return env


def fast_settings() -> str:
    """The wildswarm settings of the test stack: the real pipeline, untrained weights, small and fast."""
    return "\n".join([
        "WILDSWARM_DEVICE=cpu",
        "WILDSWARM_DETECTION_THRESHOLD=0.001",   # random weights score every box near 0.004
        "WILDSWARM_MAX_ANIMALS=2",
        "WILDSWARM_DETECTOR_IMAGE_SIZE=320",
        "WILDSWARM_SETTLE_SECONDS=2",
        "WILDSWARM_LEASE_SECONDS=15",            # a killed worker's job is taken over 15 s later
        "WILDSWARM_WEB_LOGIN_LOCK_SECONDS=5",    # the throttling test's lock runs out soon
        "",
    ])


def job_records(stack: "Stack", name: str | None = None) -> list[dict]:
    """Jobs from the stack's job store (its web API), optionally those whose input name contains ``name``."""
    params = {"limit": "1000", **({"q": name} if name else {})}
    response = stack.api("GET", "/api/jobs", params=params)
    response.raise_for_status()
    return response.json()["jobs"]
