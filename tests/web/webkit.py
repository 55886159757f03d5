"""Helpers for the web app tests (imported by conftest.py and the tests)."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
from jsonschema import Draft202012Validator

from wildswarm.exporters import megadetector as md
from wildswarm.jobs import Job, JobStore, job_id_for
from wildswarm.layout import Layout
from wildswarm.pipeline.outputs import keypoint_table, write_keypoints
from wildswarm.pipeline.pose import KeyPoints
from wildswarm.web.openapi import document

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"
TOKEN = "test-token-0123456789abcdef"
SECRET = "test-secret-key-0123456789abcdef"


def csrf_of(client) -> str:
    """The CSRF token of the client's session (from the page it lands on: the upload page, or the login)."""
    page = client.get("/", follow_redirects=True).get_data(as_text=True)
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


def make_done_job(store: JobStore, video: bytes, *, name: str = "fox", untrained: bool = True,
                  job_id: str = "00c0ffee00c0ffee") -> Job:
    """A finished job with a result folder like the pipeline's (the video is a real MP4)."""
    layout = Layout(store.db.settings.data)
    out = layout.output / name
    out.mkdir(parents=True, exist_ok=True)
    (out / "labeled.mp4").write_bytes(video)
    (out / "trajectory.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    (out / "detections.json").write_text(json.dumps(md.document(
        [md.video_entry(f"{name}.mp4", 10.0, [0, 2, 4, 6, 8, 10],
                        [md.detection(0, 0.9, (10, 20, 40, 60), (160, 96), 0)])],
        md.info(detector="MDV6-yolov9-c", image_size=640, threshold=0.2, untrained=untrained))))
    table = keypoint_table([(i, i / 10) for i in range(0, 12, 2)], [KeyPoints(np.full((1, 2, 2), 20.0, np.float32),
                                                                               np.full((1, 2), 0.9, np.float32))] * 6,
                           [np.array([1])] * 6, ["nose", "tail_base"], "wildswarm_test")
    write_keypoints(out, table)
    (out / "tracks.csv").write_text("1,1,10.00,20.00,30.00,40.00,0.9000,-1,-1,-1\n")
    summary = {"video": f"{name}.mp4", "untrained_weights": untrained,
               "warning": "Made with UNTRAINED (random) weights: detections, species and keypoints are "
                          "meaningless." if untrained else None,
               "frames": {"read": 12, "analysed": 6, "output_fps": 5.0}, "animals": {"max_per_frame": 1, "distinct": 1},
               "input": {"width": 160, "height": 96, "fps": 10.0, "frames": 12, "duration_s": 1.2},
               "bodyparts": ["nose", "tail_base"], "skeleton": [[0, 1]],
               "tracks": [{"id": 1, "name": "animal1", "first_frame": 0, "last_frame": 10, "frames": 6}],
               "timings_s": {"detect": 0.5, "pose": 0.25}}
    (out / "summary.json").write_text(json.dumps(summary))
    (layout.input_done / f"{name}.mp4").write_bytes(video)
    store.submit(job_id, f"{name}.mp4", len(video))
    store.claim(job_id, "worker-1/x", "worker-1")
    return store.finish(job_id, "worker-1/x", output=name, outputs=[p.name for p in out.iterdir()], frames=6,
                        untrained=untrained, timings={"detect": 0.5})


def make_failed_job(store: JobStore, video: bytes, *, name: str = "owl", job_id: str | None = None,
                    where: str = "input_failed", stored_as: str | None = None) -> Job:
    """A job that failed for good; its input in ``where`` as ``stored_as`` ("{tag}": the id's first 8)."""
    layout = Layout(store.db.settings.data)
    folder = getattr(layout, where)
    path = folder / f".{name}.tmp"
    path.write_bytes(video)
    job_id = job_id or job_id_for(path)
    path.rename(folder / (stored_as or f"{name}.mp4").format(tag=job_id[:8]))
    store.submit(job_id, f"{name}.mp4", len(video))
    store.mark_published(job_id)
    store.claim(job_id, "worker-2/x", "worker-2")
    store.progress(job_id, "worker-2/x", 2, 6)
    return store.fail(job_id, "worker-2/x", "PipelineError: out of memory (attempt 3 of 3)")


def make_running_job(store: JobStore, job_id: str = "abcdef0123456789", name: str = "running.mp4",
                     done: int = 3, total: int = 12, node: str = "worker-3") -> Job:
    store.submit(job_id, name)
    store.mark_published(job_id)
    store.claim(job_id, f"{node}/x", node)
    store.progress(job_id, f"{node}/x", done, total)
    return store.get(job_id)


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
