"""``wildswarm`` subprocesses (workers, producers, web servers) with exactly the settings a test gives."""
from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import fields
from pathlib import Path

from wildswarm.config import SECRET_FIELDS, Settings


def settings_env(settings: Settings, **extra) -> dict[str, str]:
    """The environment that gives a subprocess exactly these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WILDSWARM_")}
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if value is None or (f.name in SECRET_FIELDS and not value):
            continue
        env["WILDSWARM_" + f.name.upper()] = ",".join(value) if isinstance(value, tuple) else str(value)
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


def start_web(settings: Settings, spawn, *, password: str, secret: str, token: str, **changes):
    """A real ``wildswarm web`` (gunicorn) on a free port of 127.0.0.1, answering /healthz:
    (its settings, the process, its base URL)."""
    import urllib.request

    from kit.net import free_port
    from kit.waiting import wait_for

    def healthy(base: str) -> bool:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    port = free_port()
    web_settings = settings.replace(web_password=password, web_secret_key=secret, web_token=token, web_auth=True,
                                    web_workers=2, web_threads=4, web_bind=f"127.0.0.1:{port}",
                                    web_max_upload_bytes=50 * 1024 * 1024, **changes)
    web = spawn(web_settings, "web", node="web")
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: healthy(base), 30, "the web server to answer /healthz", 0.2, (web,))
    return web_settings, web, base
