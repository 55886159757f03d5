import re
import urllib.request

from prometheus_client import REGISTRY

from wildswarm import metrics

NAME = re.compile(r"wildswarm_[a-z]+(_[a-z]+)*_(total|seconds|jobs|bytes)")


def test_every_metric_follows_the_naming_rule():
    ours = [m for m in REGISTRY.collect() if m.name.startswith("wildswarm")]
    assert len(ours) >= 10
    for m in ours:
        full = m.name + ("_total" if m.type == "counter" else "")
        assert NAME.fullmatch(full), full
        # bounded labels only; the web app's (registered once a test imports it) add its routes
        allowed = {"outcome", "stage", "result", "component", "le"}
        if m.name.startswith("wildswarm_web_"):
            allowed |= {"method", "endpoint", "code", "reason"}
        for sample in m.samples:
            assert set(sample.labels) <= allowed, sample


def test_stage_label_is_bounded():
    assert metrics.stage_label("detect") == "detect"
    assert metrics.stage_label("some/video/name.mp4") == "other"


def test_serve_exposes_metrics():
    port = metrics.serve(0, addr="127.0.0.1")
    metrics.JOBS.labels("done").inc()
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'wildswarm_jobs_total{outcome="done"}' in body
    assert metrics.serve(-1) == -1
