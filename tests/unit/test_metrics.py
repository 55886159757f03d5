import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml

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


ALERTS = Path(__file__).resolve().parents[2] / "monitoring" / "alerts.yml"


def test_every_series_an_alert_rule_selects_is_exported_before_its_first_event():
    # A labelled counter has no series until its first inc(): the first failed job after a worker starts
    # is born at 1, so increase() over it is 0 and JobsFailing misses it; and while no worker has finished a
    # job since it started, rate(...{outcome="done"}) is empty and QueueBacklog's `and` can never be true.
    code = ("import wildswarm.worker, wildswarm.producer\n"
            "from wildswarm.publisher import Publisher\n"
            "Publisher(None, 'producer')\n"
            "from prometheus_client import generate_latest\n"
            "print(generate_latest().decode())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    samples = [line for line in r.stdout.splitlines() if line.startswith("wildswarm_")]
    rules = [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]
    selected = 0
    for rule in rules:
        for name, matchers in re.findall(r"(wildswarm_[a-z_]+)(?:\{([^}]*)\})?", rule["expr"]):
            wanted = [""]
            for label, values in re.findall(r'(\w+)=~?"([^"]*)"', matchers):
                wanted = [f'{label}="{v}"' for v in values.split("|")]
            for want in wanted:
                selected += 1
                assert any(s.startswith(name + "{") and want in s and s.split()[-1] == "0.0" for s in samples), \
                    f"{rule['alert']}: no {name}{{{want}}} 0 is exported before the first event"
    assert selected >= 4
