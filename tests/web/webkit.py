"""Helpers for the web app tests (imported by conftest.py and the tests)."""
from __future__ import annotations

import importlib.util
import io
import json
import re
from pathlib import Path

from jsonschema import Draft202012Validator

from wildswarm.config import Settings
from wildswarm.errors import BrokerError
from wildswarm.jobs import Job, JobStatus, JobStore
from wildswarm.layout import Layout
from wildswarm.web.openapi import document

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"
TOKEN = "test-token-0123456789abcdef"
SECRET = "test-secret-key-0123456789abcdef"


def root_conftest():
    """tests/conftest.py as a module (its name ``conftest`` is shared by every conftest in sys.modules)."""
    spec = importlib.util.spec_from_file_location("wildswarm_tests_conftest", ROOT / "tests" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeBroker:
    """Stands in for :class:`wildswarm.broker.Broker`: records publishes, or fails like a dead broker."""

    def __init__(self, fail: bool = False):
        self.fail = fail
        self.published: list[dict] = []
        self.connected = False
        self.connects = 0
        self.drop_next = False          # the next publish finds the connection closed by the broker

    def connect(self, declare: bool = True):
        self.connects += 1
        if self.fail:
            raise BrokerError("cannot connect to amqp://wildswarm:***@127.0.0.1:5672//: refused")
        self.connected = True
        return self

    def close(self):
        self.connected = False

    def publish(self, body, **kw):
        if self.drop_next:
            self.drop_next = False
            raise BrokerError("publish to 'wildswarm.jobs' not confirmed: StreamLostError: Transport closed")
        if self.fail or not self.connected:
            raise BrokerError("publish not confirmed")
        self.published.append(json.loads(body))


def csrf_of(client) -> str:
    page = client.get("/login" if not client.get_cookie("wildswarm_session") else "/").get_data(as_text=True)
    return re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)


def upload(client, name: str, data: bytes, *, field: str = "file", url: str = "/api/jobs", headers=None,
           csrf: str | None = None):
    form = {field: (io.BytesIO(data), name)}
    hdrs = dict(headers or {})
    if csrf:
        hdrs["X-CSRF-Token"] = csrf
    return client.post(url, data=form, content_type="multipart/form-data", headers=hdrs)


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def make_done_job(settings: Settings, video: bytes, *, name: str = "fox", untrained: bool = True,
                  job_id: str = "00c0ffee00c0ffee") -> Job:
    """A finished job with a result folder like the pipeline's (the video is a real MP4)."""
    layout = Layout(settings.data)
    out = layout.output / name
    out.mkdir(parents=True, exist_ok=True)
    (out / "labeled.mp4").write_bytes(video)
    (out / "trajectory.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    (out / "detections.json").write_text(json.dumps({"images": [], "info": {"format_version": "1.4"}}))
    (out / "keypoints.csv").write_text("scorer,x\n0,1\n")
    (out / "keypoints.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    summary = {"video": f"{name}.mp4", "untrained_weights": untrained,
               "warning": "Made with UNTRAINED (random) weights: detections, species and keypoints are "
                          "meaningless." if untrained else None,
               "frames": {"read": 12, "analysed": 6}, "animals": {"max_per_frame": 1},
               "timings_s": {"detect": 0.5, "pose": 0.25}}
    (out / "summary.json").write_text(json.dumps(summary))
    (layout.input_done / f"{name}.mp4").write_bytes(video)
    job = Job(id=job_id, input_name=f"{name}.mp4", status=JobStatus.DONE, frames_done=6, frames_total=6,
              node="worker-1", attempts=1, started_at="2026-01-01T10:00:00+00:00",
              finished_at="2026-01-01T10:00:09+00:00", output=name, untrained=untrained,
              outputs=sorted(p.name for p in out.iterdir()), size_bytes=len(video))
    return JobStore(layout).save(job)


def make_failed_job(settings: Settings, video: bytes, *, name: str = "owl", job_id: str | None = None,
                    where: str = "input_failed", stored_as: str | None = None) -> Job:
    """A job that failed for good; its input in ``where`` as ``stored_as`` ("{tag}": the id's first 8)."""
    from wildswarm.jobs import job_id_for
    layout = Layout(settings.data)
    folder = getattr(layout, where)
    path = folder / f".{name}.tmp"
    path.write_bytes(video)
    job_id = job_id or job_id_for(path)
    path.rename(folder / (stored_as or f"{name}.mp4").format(tag=job_id[:8]))
    job = Job(id=job_id, input_name=f"{name}.mp4", status=JobStatus.FAILED, node="worker-2", attempts=3,
              frames_done=2, frames_total=6, started_at="2026-01-01T10:00:00+00:00",
              finished_at="2026-01-01T10:01:00+00:00", error="PipelineError: out of memory (attempt 3 of 3)")
    return JobStore(layout).save(job)


class OpenAPI:
    """Checks responses against /api/openapi.json: the status is documented, JSON bodies match."""

    def __init__(self):
        self.doc = document()

    def operation(self, method: str, template: str) -> dict:
        return self.doc["paths"][template][method.lower()]

    def check(self, method: str, template: str, response) -> None:
        op = self.operation(method, template)
        status = str(response.status_code)
        assert status in op["responses"], f"{method} {template}: status {status} is not documented"
        content = op["responses"][status].get("content", {})
        if "application/json" in content:
            assert response.mimetype == "application/json", response.mimetype
            schema = dict(content["application/json"]["schema"], components=self.doc["components"])
            errors = sorted(Draft202012Validator(schema).iter_errors(response.get_json()), key=str)
            assert not errors, f"{method} {template} {status}: {errors[0].message} in {response.get_json()}"
