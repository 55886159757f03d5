"""``wildswarm web``: the web app under gunicorn (wiring only)."""
from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile

import click

from wildswarm.cli import friendly_errors, main
from wildswarm.config import Settings


def gunicorn_options(settings: Settings) -> dict:
    """gunicorn settings from ours: threads for concurrent uploads, logs to stderr."""
    return {
        "bind": [b.strip() for b in settings.web_bind.split(",") if b.strip()],
        "workers": max(1, settings.web_workers),
        "worker_class": "gthread",
        "threads": max(1, settings.web_threads),
        "timeout": max(10, settings.web_timeout),
        "graceful_timeout": 30,
        "keepalive": 5,
        "accesslog": "-",
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "wildswarm-web",
        "worker_tmp_dir": "/dev/shm" if os.path.isdir("/dev/shm") else None,
        "forwarded_allow_ips": "127.0.0.1",
    }


@main.command()
@click.option("--bind", default=None,
              help="Address to listen on, host:port (WILDSWARM_WEB_BIND, default 0.0.0.0:8000).")
@click.option("--workers", type=int, default=None, help="gunicorn worker processes (WILDSWARM_WEB_WORKERS).")
@click.pass_obj
@friendly_errors
def web(settings: Settings, bind: str | None, workers: int | None) -> None:
    """Serve the web app (upload, jobs, results, node logs, JSON API) with gunicorn."""
    settings = settings.replace(**{k: v for k, v in (("web_bind", bind), ("web_workers", workers)) if v})
    metrics_dir = None
    if settings.web_workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # prometheus-client's multiprocess mode, so /metrics counts every worker, not the one asked.
        # It must be set before prometheus_client is first imported (by wildswarm.web below).
        metrics_dir = tempfile.mkdtemp(prefix="wildswarm-web-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from wildswarm.web.security import check_settings
    try:
        check_settings(settings)             # refuse to start before any worker is forked
    except BaseException:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        raise
    if not settings.web_secret_key:          # access control off: one made-up key shared by all workers
        settings = settings.replace(web_secret_key=secrets.token_hex(32))
    try:
        _Server(settings).run()
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    sys.exit(0)


def _child_exit(_server, worker) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess
        multiprocess.mark_process_dead(worker.pid)


def _make_server_class():
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):
        def __init__(self, settings: Settings):
            self.settings = settings
            super().__init__()

        def load_config(self) -> None:
            for key, value in gunicorn_options(self.settings).items():
                if value is not None:
                    self.cfg.set(key, value)
            self.cfg.set("child_exit", _child_exit)

        def load(self):
            from wildswarm.web import create_app
            return create_app(self.settings)

    return Server


def _Server(settings: Settings):
    return _make_server_class()(settings)
