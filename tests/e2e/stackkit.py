"""Helpers of the e2e tests: a wildswarm stack deployed on this machine's one-node Swarm.

Everything goes through the same commands users type (``make up|scale-workers|down``,
i.e. ``scripts/stack.sh``) with the settings in :attr:`Stack.env`; the test stack has a
name, secrets, ports and a data folder of its own, so it never meets a user's stack.
Clients talk to it only on 127.0.0.1.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import requests

from kit import net
from kit.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
NAME = "wildswarm-e2e"          # stack name and secret prefix of the tests
LABEL = "com.docker.stack.namespace"


def sh(*argv: str, env: dict | None = None, timeout: float = 120, check: bool = True) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-3000:]}")
    return result.stdout


def docker_problem() -> str | None:
    """Why the e2e tests cannot run here, or None."""
    if shutil.which("docker") is None:
        return "no docker CLI (make docker installs Docker Engine)"
    info = subprocess.run(["docker", "info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"],
                          capture_output=True, text=True, timeout=30)
    if info.returncode != 0:
        return "no Docker daemon answers (make docker starts one)"
    if info.stdout.split() != ["active", "true"]:
        return f"this node is no Swarm manager ({info.stdout.strip()}): make docker initialises a one-node Swarm"
    return None


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
        """service (without the stack prefix) -> (running tasks, desired tasks)."""
        out = sh("docker", "service", "ls", "--filter", f"label={LABEL}={NAME}", "--format", "{{.Name}} {{.Replicas}}")
        found = {}
        for line in out.splitlines():
            name, replicas = line.split()[:2]
            running, desired = re.match(r"(\d+)/(\d+)", replicas).groups()
            found[name.removeprefix(f"{NAME}_")] = (int(running), int(desired))
        return found

    def containers(self, service: str) -> list[str]:
        return sh("docker", "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={NAME}_{service}").split()

    def leftovers(self) -> dict[str, list[str]]:
        """Docker objects of the test stack still there."""
        kinds = {
            "containers": ["docker", "ps", "-aq", "--filter", f"label={LABEL}={NAME}"],
            "services": ["docker", "service", "ls", "-q", "--filter", f"label={LABEL}={NAME}"],
            "networks": ["docker", "network", "ls", "-q", "--filter", f"label={LABEL}={NAME}"],
            "volumes": ["docker", "volume", "ls", "-q", "--filter", f"label={LABEL}={NAME}"],
            "configs": ["docker", "config", "ls", "-q", "--filter", f"label={LABEL}={NAME}"],
            "secrets": ["docker", "secret", "ls", "-q", "--filter", f"name={NAME}_"],
        }
        return {k: v for k, argv in kinds.items() if (v := sh(*argv).split())}

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
        text = sh("docker", "exec", container, "python3", "-c", code, timeout=30)
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
