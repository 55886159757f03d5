"""The images: non-root, a healthcheck each, the ML stack only in the worker; the monitoring config is valid."""
from __future__ import annotations

import re

import pytest

from stackkit import ROOT, as_json, client, dig, run_image, sh

APP = {"worker": "wildswarm/worker:latest", "web": "wildswarm/web:latest", "producer": "wildswarm/producer:latest"}
INFRA = {"rabbitmq": "wildswarm/rabbitmq:3.10", "prometheus": "wildswarm/prometheus:2.42",
         "node-exporter": "wildswarm/node-exporter:1.5", "postgres": "wildswarm/postgres:15",
         "proxy": "wildswarm/proxy:latest"}


def inspect(image: str, *keys: str):
    """A field of ``docker image inspect IMAGE`` (keys: "Config", "User"), None where the image has none."""
    return dig(client().images.get(image).attrs, *keys)


@pytest.fixture(scope="module")
def images(docker_ready):
    sh("bash", "images/build.sh", timeout=3600)      # up to date after make images: seconds
    return {**APP, **INFRA}


@pytest.mark.parametrize("name", sorted({**APP, **INFRA}))
def test_image_runs_as_an_ordinary_user_and_has_a_healthcheck(images, name):
    image = images[name]
    user = inspect(image, "Config", "User")
    assert user and user.split(":")[0] not in ("root", "0"), f"{image} runs as root"
    assert "CMD" in as_json(inspect(image, "Config", "Healthcheck"))
    assert inspect(image, "Config", "Labels", "org.wildswarm.inputs")   # build cache key


@pytest.mark.parametrize("name", sorted(APP))
def test_only_the_worker_carries_the_ml_stack(images, name):
    code = "import importlib.util as u; print(bool(u.find_spec('torch')), bool(u.find_spec('wildswarm')))"
    out = run_image(images[name], "python3", "-c", code)
    assert out.split() == (["True", "True"] if name == "worker" else ["False", "True"])
    size = int(inspect(images[name], "Size"))
    # the web image exports (pandas, PyTables, h5py, pynwb for NWB): larger than the producer, far from torch
    limit = {"producer": 400e6, "web": 600e6}.get(name)
    assert (size > 2e9) if name == "worker" else (size < limit), f"{name}: {size / 1e6:.0f} MB"


def test_entrypoint_only_wires_commands(images):
    out = run_image(images["producer"], "--version")
    assert re.search(r"wildswarm, version \d", out)
    assert "Usage" in run_image(images["web"], "web", "--help")


def test_prometheus_config_and_alert_rules_pass_promtool(images, tmp_path):
    # Docker fills in the stack's name when the config is templated; promtool checks the result.
    text = (ROOT / "monitoring" / "prometheus.yml").read_text()
    rendered = re.sub(r"\{\{[^}]*\}\}", "wildswarm", text)
    assert "{{" not in rendered
    (tmp_path / "prometheus.yml").write_text(rendered)
    (tmp_path / "alerts.yml").write_text((ROOT / "monitoring" / "alerts.yml").read_text())
    tmp_path.chmod(0o755)
    for f in tmp_path.iterdir():
        f.chmod(0o644)
    mounts = [f"{tmp_path / 'prometheus.yml'}:/etc/prometheus/prometheus.yml:ro",
              f"{tmp_path / 'alerts.yml'}:/etc/prometheus/alerts.yml:ro"]
    out = run_image(images["prometheus"], "check", "config", "/etc/prometheus/prometheus.yml",
                    entrypoint="promtool", volumes=mounts)
    assert "SUCCESS" in out and "rules found" in out
