"""``/healthz`` (the Swarm healthcheck) and ``/metrics`` (Prometheus)."""
from __future__ import annotations

import os
import socket
import uuid

from flask import Blueprint, Response, current_app, jsonify

from wildswarm import __version__
from wildswarm.web import metrics

bp = Blueprint("ops", __name__)

BROKER_PROBE_SECONDS = 1.0


def _writable(root) -> str | None:
    """None if a file can be written and removed in the data root, else why not."""
    probe = root / f".healthz-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"ok")
        probe.unlink()
    except OSError as exc:
        return f"{root}: {exc.strerror or exc}"
    return None


def _broker_reachable(settings) -> bool:
    try:
        with socket.create_connection((settings.broker_host, settings.broker_port), timeout=BROKER_PROBE_SECONDS):
            return True
    except OSError:
        return False


@bp.get("/healthz")
def healthz():
    """200 while the data root is writable; the broker is reported, never fatal (uploads wait for it)."""
    cfg = current_app.config
    settings, layout, publisher = cfg["WILDSWARM_SETTINGS"], cfg["WILDSWARM_LAYOUT"], cfg["WILDSWARM_PUBLISHER"]
    problem = _writable(layout.root)
    body = {
        "status": "ok" if problem is None else "error",
        "version": __version__,
        "data": {"root": str(layout.root), "writable": problem is None, "error": problem},
        "broker": {"reachable": _broker_reachable(settings), "connected": publisher.connected,
                   "pending_jobs": len(publisher.pending())},
    }
    response = jsonify(body)
    response.status_code = 200 if problem is None else 503
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
