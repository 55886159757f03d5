"""``/healthz`` (the Swarm healthcheck) and ``/metrics`` (Prometheus)."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import uuid

from flask import Blueprint, Response, current_app, jsonify

from wildswarm import __version__
from wildswarm.errors import JobStoreError
from wildswarm.web import metrics
from wildswarm.web.security import logged_in

bp = Blueprint("ops", __name__)

BROKER_PROBE_SECONDS = 1.0


def _writable(root) -> str | None:
    """None if a file can be written and removed in the data root, else why not (it never raises)."""
    probe = root / f".healthz-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"ok")
    except OSError as exc:
        return f"{root}: {exc.strerror or exc}"
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    return None


def _broker_reachable(settings) -> bool:
    try:
        with socket.create_connection((settings.broker_host, settings.broker_port), timeout=BROKER_PROBE_SECONDS):
            return True
    except OSError:
        return False


@bp.get("/healthz")
def healthz():
    """200 whenever the app can answer: what it depends on is reported, never fatal.

    A full or read-only disk, a job store or broker that is down: restarting
    the web app mends none of them, and Swarm restarting it in a loop (as it
    does on a failing healthcheck) would only cut off uploads in flight and the
    pages that say what is wrong. ``status`` is ``ok`` or ``degraded``. The details (the data root's
    path, free space, error texts, pending publishes, the version) go to a logged-in client or the
    bearer token only: behind the stack's proxy anyone can reach this.
    """
    cfg = current_app.config
    settings, layout, store = cfg["WILDSWARM_SETTINGS"], cfg["WILDSWARM_LAYOUT"], cfg["WILDSWARM_STORE"]
    known = logged_in()     # a stranger (the proxy serves /healthz to anyone) gets the verdicts only
    problem = _writable(layout.uploads)      # a folder the service owns (the root may be root's)
    try:
        pending, store_error = len(store.pending(1000 if known else 1)), None
    except JobStoreError as exc:
        pending, store_error = None, str(exc)
    broker = _broker_reachable(settings)
    status = "ok" if problem is None and store_error is None and broker else "degraded"
    if not known:
        body = {"status": status, "data": {"writable": problem is None}, "store": {"reachable": store_error is None},
                "broker": {"reachable": broker}}
    else:
        try:
            free = shutil.disk_usage(layout.uploads).free
        except OSError:
            free = None
        body = {
            "status": status,
            "version": __version__,
            "data": {"root": str(layout.root), "writable": problem is None, "error": problem, "free_bytes": free},
            "store": {"reachable": store_error is None, "error": store_error},
            "broker": {"reachable": broker, "pending_jobs": pending},
        }
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/metrics", endpoint="metrics")
def metrics_view():
    data, content_type = metrics.exposition()
    return Response(data, content_type=content_type)


@bp.get("/favicon.ico")
def favicon():
    """Browsers ask for it on every page that does not name one (a bare image or video)."""
    return current_app.send_static_file("favicon.svg")
