"""The cluster page: every worker (alive, its job, its rate), each node's CPU and memory, the queue,
the backlog with its time to finish, and the throughput of the last hours.

Workers, queue, backlog and throughput come from the job store (workers write a heartbeat), so the
page works whatever else is down. Node CPU, memory and GPU come from Prometheus's HTTP API
(``WILDSWARM_PROMETHEUS_URL``, which node_exporter feeds); when it does not answer, the page says so
and shows the rest. The chart is drawn in the browser with Chart.js, served by this app from
Debian's libjs-chart.js (``WILDSWARM_CHARTJS_FILE``): no CDN, the stack works offline.
"""
from __future__ import annotations

import functools
import threading
import time
from datetime import datetime, timezone

import requests
from flask import Blueprint, abort, current_app, jsonify, render_template, send_file

from wildswarm.errors import JobStoreError
from wildswarm.jobs.cluster import ClusterStats
from wildswarm.jobs.workers import Workers
from wildswarm.profiles import ProfileError

bp = Blueprint("cluster", __name__)

PROMETHEUS_TIMEOUT = 2.0
CACHE_SECONDS = 3.0         # several browsers polling share one round of queries per process
BUCKET_MINUTES = 10         # the throughput chart's step
#: PromQL per node (the ``node`` label every target of the stack carries): the value shown.
NODE_QUERIES = {
    "cpu": '1 - avg by (node) (rate(node_cpu_seconds_total{mode="idle"}[2m]))',
    "cores": 'count by (node) (node_cpu_seconds_total{mode="idle"})',
    "mem_total": "sum by (node) (node_memory_MemTotal_bytes)",
    "mem_available": "sum by (node) (node_memory_MemAvailable_bytes)",
    "gpu": "avg by (node) (DCGM_FI_DEV_GPU_UTIL) / 100",
    "gpu_mem_used": "sum by (node) (DCGM_FI_DEV_FB_USED) * 1048576",
}


class PrometheusDown(Exception):
    pass


def node_metrics(url: str) -> dict[str, dict[str, float]]:
    """{node: {cpu, cores, mem_total, mem_available[, gpu, gpu_mem_used]}} from Prometheus at ``url``;
    :class:`PrometheusDown` with the reason when it does not answer."""
    out: dict[str, dict[str, float]] = {}
    session = requests.Session()
    for key, query in NODE_QUERIES.items():
        try:
            r = session.get(url.rstrip("/") + "/api/v1/query", params={"query": query}, timeout=PROMETHEUS_TIMEOUT)
            r.raise_for_status()
            body = r.json()
        except requests.Timeout:
            raise PrometheusDown(f"{url} did not answer within {PROMETHEUS_TIMEOUT:g} s") from None
        except requests.ConnectionError:
            raise PrometheusDown(f"cannot connect to {url}") from None
        except requests.HTTPError as exc:
            raise PrometheusDown(f"{url} answered HTTP {exc.response.status_code}") from None
        except (requests.RequestException, ValueError) as exc:
            raise PrometheusDown(f"{url} answered what is not Prometheus's API ({type(exc).__name__})") from None
        if body.get("status") != "success":
            raise PrometheusDown(str(body.get("error") or body)[:200])
        for sample in body["data"]["result"]:
            node = sample["metric"].get("node")
            if node:
                try:
                    out.setdefault(node, {})[key] = float(sample["value"][1])
                except (KeyError, IndexError, TypeError, ValueError):
                    continue
    return out


class _Cache:
    def __init__(self):
        self.lock = threading.Lock()
        self.at, self.value = 0.0, None


def _cached(key: str, make, errors: tuple[type[Exception], ...] = (PrometheusDown,)):
    """``make()``, or what it gave (or raised, of ``errors``) less than :data:`CACHE_SECONDS` ago: Prometheus
    and the job store are asked once per period and web process, not once per poll of every open page (the
    backlog alone reads every queued and running job: 206 ms at 100,000 queued, bench/jobstore.py)."""
    cfg = current_app.config
    cache = cfg.setdefault(f"WILDSWARM_CLUSTER_CACHE_{key}", _Cache())
    with cache.lock:
        if cache.value is None or time.monotonic() - cache.at > CACHE_SECONDS:
            try:
                cache.value = (make(), None)
            except errors as exc:
                cache.value = (None, exc)
            cache.at = time.monotonic()
        value, error = cache.value
    if error is not None:
        raise error
    return value


def snapshot() -> dict:
    """Everything the page shows, as JSON-ready data."""
    cfg = current_app.config
    settings, store, intake = cfg["WILDSWARM_SETTINGS"], cfg["WILDSWARM_STORE"], cfg["WILDSWARM_INTAKE"]
    now = datetime.now(timezone.utc)
    body: dict = {"at": now.isoformat(timespec="seconds"), "heartbeat_seconds": settings.worker_heartbeat_seconds}

    @functools.cache              # a profile per queued job: resolved once per snapshot
    def sampling_fps(profile: str | None) -> float:
        try:
            return float(intake.profiles.get(profile).apply(settings).fps)
        except ProfileError:
            return settings.fps

    def ask_store():
        stats = ClusterStats(store.db)
        return (Workers(store.db).recent(settings.worker_heartbeat_seconds), stats.queue(),
                stats.backlog(sampling_fps), stats.throughput(bucket_minutes=BUCKET_MINUTES))

    try:
        workers, queue, backlog, throughput = _cached("store", ask_store, errors=(JobStoreError,))
        body["store"] = {"reachable": True, "error": None}
    except JobStoreError as exc:
        body["store"] = {"reachable": False, "error": str(exc)}
        workers, queue, backlog, throughput = [], None, None, []
    alive = [w for w in workers if w.state in ("running", "idle")]
    rate = sum(w.frames_per_s for w in alive)
    body["workers"] = [w.to_dict() for w in workers]
    body["queue"] = queue.to_dict() if queue else None
    body["backlog"] = None if backlog is None else {
        "frames": backlog.frames, "jobs": backlog.jobs, "estimated_jobs": backlog.estimated_jobs,
        "unknown_jobs": backlog.unknown_jobs, "frames_per_s": round(rate, 2), "eta_seconds": backlog.eta_seconds(rate)}
    body["alive"] = len(alive)
    body["throughput"] = {"bucket_seconds": BUCKET_MINUTES * 60, "series": throughput}
    body["prometheus"] = {"url": settings.prometheus_url or None, "reachable": None, "error": None}
    nodes: dict[str, dict] = {}
    if settings.prometheus_url:
        try:
            nodes = _cached("nodes", lambda: node_metrics(settings.prometheus_url))
            body["prometheus"]["reachable"] = True
        except PrometheusDown as exc:
            body["prometheus"].update(reachable=False, error=str(exc))
    names = sorted({w.node for w in workers} | set(nodes))
    body["nodes"] = [{"node": n, **_node(nodes.get(n, {})),
                      "workers": sum(1 for w in alive if w.node == n)} for n in names]
    body["chart"] = settings.chartjs_file.is_file()
    return body


def _node(m: dict) -> dict:
    total, avail = m.get("mem_total"), m.get("mem_available")
    return {"cpu": m.get("cpu"), "cores": int(m["cores"]) if "cores" in m else None, "mem_total": total,
            "mem_used": (total - avail) if total is not None and avail is not None else None,
            "gpu": m.get("gpu"), "gpu_mem_used": m.get("gpu_mem_used")}


def duration(seconds: float | None) -> str:
    """A time to finish as people say it: "under a minute", "42 min", "3 h 10 min", "2 days 4 h"."""
    if seconds is None:
        return "unknown (no worker is analysing)"
    if seconds < 60:
        return "done" if seconds == 0 else "under a minute"
    minutes = int(round(seconds / 60))
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} days {hours} h"


@bp.get("/cluster")
def page():
    return render_template("cluster.html", c=snapshot(), duration=duration)


@bp.get("/cluster/live")
def live():
    """The page's changing part, which its script swaps in every few seconds."""
    return render_template("_cluster_live.html", c=snapshot(), duration=duration)


@bp.get("/api/cluster")
def api():
    response = jsonify(snapshot())
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/vendor/chart.js")
def chartjs():
    path = current_app.config["WILDSWARM_SETTINGS"].chartjs_file
    if not path.is_file():
        abort(404, description=f"the charting library is not installed here ({path}: Debian's libjs-chart.js)")
    return send_file(path, mimetype="text/javascript", max_age=86400)
