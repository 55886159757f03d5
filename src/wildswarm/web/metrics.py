"""The web app's Prometheus metrics, defined once (``wildswarm_web_<noun>_<unit|total>``).

Labels take a few fixed values: an HTTP method (``other`` for one the app does not answer), a Flask
endpoint name (the route, never the URL: ``ui.job``, not ``/jobs/3f2a...``), a status code, an
upload result or a refusal reason. Never a video name or a job id.
"""
from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest

REQUEST_BUCKETS = (0.005, 0.025, 0.1, 0.25, 1, 2.5, 10, 30, 120, 600)

REQUESTS = Counter("wildswarm_web_requests_total", "HTTP requests answered, by method, endpoint and status code",
                   ["method", "endpoint", "code"])
REQUEST_DURATION = Histogram("wildswarm_web_request_duration_seconds", "Time to answer a request, by endpoint",
                             ["endpoint"], buckets=REQUEST_BUCKETS)
#: result: queued | pending (saved, broker unreachable) | duplicate (content already known)
UPLOADS = Counter("wildswarm_web_uploads_total", "Videos uploaded and accepted, by result", ["result"])
UPLOAD_BYTES = Counter("wildswarm_web_upload_bytes_total", "Bytes of accepted uploads")
#: reason: see :data:`REFUSAL_REASONS`
UPLOADS_REFUSED = Counter("wildswarm_web_uploads_refused_total", "Uploads refused, by reason", ["reason"])
RETRIES = Counter("wildswarm_web_retries_total", "Failed jobs re-queued from the web app")

REFUSAL_REASONS = ("no_file", "bad_name", "bad_type", "not_video", "too_large", "empty")


#: The methods counted by name (those the app answers: its routes', and Flask's own HEAD and OPTIONS).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    """The HTTP method, or ``other``: a client may send any token as its method (nginx and gunicorn pass
    ``ABCD`` on), and a label per made-up method would grow every worker's memory and Prometheus's
    series with each new one, without a login (bounded label set)."""
    return method if method in METHODS else "other"


def endpoint_label(endpoint: str | None) -> str:
    """The Flask endpoint, or ``unmatched`` for URLs no route matched (bounded label set)."""
    return endpoint or "unmatched"


def exposition() -> tuple[bytes, str]:
    """The text exposition of every metric of this process (or of all gunicorn workers).

    Under gunicorn with several workers, ``wildswarm web`` points prometheus-client's
    own ``PROMETHEUS_MULTIPROC_DIR`` at a folder shared by the workers; the values
    of all of them are then collected here.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
