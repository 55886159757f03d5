"""The cluster page and /api/cluster: workers from their heartbeats, the queue, the backlog and its
time to finish from the job store, node CPU and memory from Prometheus's HTTP API, and what the page
says when Prometheus does not answer."""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from wildswarm.jobs.workers import Workers
from wildswarm.web.cluster import duration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def busy_cluster(store, settings):
    """Two videos waiting (one of 300 frames at 30 frames/s, one whose length is unknown), one running
    at 40 of 100 frames; worker w1 runs it at 0.5 frames/s, w2 is idle, w3 stopped, w4 was killed."""
    store.submit("a0000000000000a1", "waiting.mp4", 10, media={"frames": 300, "fps": 30.0})
    store.submit("a0000000000000a2", "unknown.mp4", 10)
    store.submit("a0000000000000a3", "running.mp4", 10)
    assert store.claim("a0000000000000a3", "w1/p1", "w1")
    assert store.progress("a0000000000000a3", "w1/p1", 40, 100)
    workers = Workers(store.db)
    for owner, node, job, fps in (("w1/p1", "w1", "a0000000000000a3", 0.5), ("w2/p2", "w2", None, 0.0),
                                  ("w3/p3", "w3", None, 0.0), ("w4/p4", "w4", None, 3.0)):
        workers.beat(owner, node, pid=1, version="t", job_id=job, jobs_handled=2, frames=10, frames_per_s=fps)
    workers.stopped("w3/p3")
    with store.db.connection() as conn:
        conn.execute("UPDATE workers SET seen_at = now() - interval '5 minutes' WHERE owner = 'w4/p4'")


def test_the_cluster_api_reports_workers_queue_backlog_and_its_eta(make_app, store, settings, bearer, openapi):
    busy_cluster(store, settings)
    app = make_app(prometheus_url="", worker_heartbeat_seconds=10, fps=5.0)
    r = app.test_client().get("/api/cluster", headers=bearer)
    assert r.status_code == 200
    openapi.check("GET", "/api/cluster", r)
    c = r.get_json()
    states = {w["node"]: (w["state"], w["job_id"]) for w in c["workers"]}
    assert states == {"w1": ("running", "a0000000000000a3"), "w2": ("idle", None), "w3": ("stopped", None),
                      "w4": ("lost", None)}
    assert [w["node"] for w in c["workers"]][:2] == ["w1", "w2"]          # alive ones first
    assert c["alive"] == 2 and c["queue"]["queued"] == 2 and c["queue"]["running"] == 1
    # 60 frames left of the running job, 300 frames at 30/s sampled at 5/s for the waiting one; a lost
    # worker's rate does not count
    assert c["backlog"]["frames"] == 60 + 50 and c["backlog"]["unknown_jobs"] == 1
    assert c["backlog"]["frames_per_s"] == 0.5 and c["backlog"]["eta_seconds"] == pytest.approx(220)
    assert c["prometheus"] == {"url": None, "reachable": None, "error": None}
    assert len(c["throughput"]["series"]) == 36


def test_pages_open_together_share_one_round_of_the_stores_questions(make_app, store, settings, bearer, monkeypatch):
    """Audit: each poll of each open cluster page (every 5 s) asked the job store everything again, the backlog
    reading every queued and running job (206 ms at 100,000 queued of a million, bench/jobstore.py; the queue
    counts 45 ms more): the page open on a lab's ten screens kept the store that busy. The polls of a web process
    now share one round of questions per CACHE_SECONDS, as they share Prometheus's answers."""
    from wildswarm.jobs.cluster import ClusterStats
    from wildswarm.web import cluster
    busy_cluster(store, settings)
    rounds = []
    real = ClusterStats.backlog
    monkeypatch.setattr(ClusterStats, "backlog", lambda self, *a: rounds.append(1) or real(self, *a))
    monkeypatch.setattr(cluster, "CACHE_SECONDS", 0.5)
    app = make_app(prometheus_url="", worker_heartbeat_seconds=10, fps=5.0)
    screens = [app.test_client() for _ in range(3)]
    bodies = [screen.get("/api/cluster", headers=bearer).get_json() for screen in screens]
    assert len(rounds) == 1 and {b["backlog"]["frames"] for b in bodies} == {110}
    store.submit("a0000000000000a4", "later.mp4", 10, media={"frames": 30, "fps": 30.0})
    time.sleep(0.6)
    later = screens[0].get("/api/cluster", headers=bearer).get_json()
    assert len(rounds) == 2 and later["backlog"]["frames"] == 115 and later["queue"]["queued"] == 3


def test_the_cluster_page_shows_it_and_says_prometheus_is_down(make_app, store, settings):
    busy_cluster(store, settings)
    app = make_app(prometheus_url=f"http://127.0.0.1:{_free_port()}/prometheus", worker_heartbeat_seconds=10)
    c = app.test_client()
    from webkit import PASSWORD, csrf_of
    c.post("/login", data={"user": "wildswarm", "password": PASSWORD, "csrf_token": csrf_of(c), "next": "/"})
    page = c.get("/cluster")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert 'id="prometheus-down"' in html and "nodes' CPU and memory are not shown" in html
    assert "cannot connect to http://127.0.0.1:" in html
    assert "4 min" in html and 'href="/jobs/a0000000000000a3" class="name">running.mp4<' in html   # ETA; job
    assert html.count('class="worker lost"') == 1 and html.count('class="worker stopped"') == 1
    live = c.get("/cluster/live").get_data(as_text=True)
    assert 'id="workers"' in live and "<html" not in live
    assert 'aria-current="page">Cluster' in html


class FakePrometheusHandler(BaseHTTPRequestHandler):
    """Answers /api/v1/query as Prometheus 2.42 does, for the queries the page sends."""
    answers = {"cpu": ("w1", 0.25), "cores": ("w1", 16), "mem_total": ("w1", 64 * 2**30),
               "mem_available": ("w1", 48 * 2**30)}
    seen: list[str] = []

    def do_GET(self):
        from urllib.parse import parse_qs, urlsplit
        from wildswarm.web.cluster import NODE_QUERIES
        query = parse_qs(urlsplit(self.path).query)["query"][0]
        self.seen.append(urlsplit(self.path).path)
        key = next(k for k, q in NODE_QUERIES.items() if q == query)
        result = [{"metric": {"node": self.answers[key][0]}, "value": [1700000000.0, str(self.answers[key][1])]}] \
            if key in self.answers else []
        body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_node_cpu_and_memory_come_from_prometheus(make_app, store, settings, bearer):
    busy_cluster(store, settings)
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePrometheusHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        app = make_app(prometheus_url=f"http://127.0.0.1:{server.server_port}/prometheus")
        c = app.test_client().get("/api/cluster", headers=bearer).get_json()
    finally:
        server.shutdown()
    assert c["prometheus"]["reachable"] is True
    nodes = {n["node"]: n for n in c["nodes"]}
    assert nodes["w1"]["cpu"] == 0.25 and nodes["w1"]["cores"] == 16 and nodes["w1"]["mem_used"] == 16 * 2**30
    assert nodes["w1"]["gpu"] is None and nodes["w2"]["cpu"] is None      # w2: no node_exporter figures
    assert set(FakePrometheusHandler.seen) == {"/prometheus/api/v1/query"}


def test_the_throughput_counts_videos_and_frames_per_ten_minutes(store, settings):
    from wildswarm.jobs.cluster import ClusterStats
    for k in range(3):
        job_id = f"b00000000000000{k}"
        store.submit(job_id, f"v{k}.mp4", 10)
        store.claim(job_id, "w/1", "w")
        store.finish(job_id, "w/1", output=f"v{k}", outputs=[], frames=600, untrained=False, timings={})
    with store.db.connection() as conn:          # one finished an hour ago
        conn.execute("UPDATE jobs SET finished_at = now() - interval '1 hour' WHERE id = 'b000000000000000'")
    series = ClusterStats(store.db).throughput(hours=6, bucket_minutes=10)
    assert len(series) == 36 and sum(b["videos"] for b in series) == 3 and sum(b["frames"] for b in series) == 1800
    assert series[-1]["videos"] == 2
    hour_ago = [b for b in series[:-1] if b["videos"]]
    assert len(hour_ago) == 1 and hour_ago[0]["frames_per_s"] == 1.0 and hour_ago[0]["videos_per_hour"] == 6.0


def test_durations_read_as_people_say_them():
    assert duration(None).startswith("unknown") and duration(0) == "done" and duration(30) == "under a minute"
    assert duration(42 * 60) == "42 min" and duration(3 * 3600 + 600) == "3 h 10 min"
    assert duration(7200) == "2 h" and duration(50 * 3600) == "2 days 2 h"


def test_the_chart_library_is_served_by_the_app_or_its_absence_said(make_app, tmp_path, bearer):
    lib = tmp_path / "chart.min.js"
    lib.write_text("window.Chart = function () {};")
    c = make_app(chartjs_file=lib).test_client()
    r = c.get("/vendor/chart.js", headers=bearer)
    assert r.status_code == 200 and r.mimetype == "text/javascript" and b"window.Chart" in r.data
    missing = make_app(chartjs_file=tmp_path / "none.js").test_client()
    assert missing.get("/vendor/chart.js", headers=bearer).status_code == 404
    assert missing.get("/api/cluster", headers=bearer).get_json()["chart"] is False
