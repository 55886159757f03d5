"""The stack as users run it: deploy, upload, results, monitoring, scaling, a killed worker, removal.

The tests run in this file's order on one stack (see conftest.py); each leaves it healthy
for the next. Real pipeline, untrained weights, real camera-trap videos.
"""
from __future__ import annotations

import shutil
import zipfile
from io import BytesIO

import pytest

from stackkit import NAME, job_records, sh, wait_for

SERVICES = {"rabbitmq", "producer", "web", "worker", "prometheus", "node-exporter"}
TARGET_JOBS = {"worker", "producer", "web", "rabbitmq", "node"}


def node_hostname() -> str:
    return sh("docker", "info", "--format", "{{.Name}}").strip()


def drop(stack, *videos) -> None:
    """Put videos into input/ as scp users do: written under a hidden name, then renamed."""
    for video in videos:
        shutil.copy(video, stack.data / "input" / f".{video.name}.part")
    for video in videos:
        (stack.data / "input" / f".{video.name}.part").rename(stack.data / "input" / video.name)


def job_id_of(stack, input_name: str) -> str | None:
    return next((j["id"] for j in job_records(stack.data) if j["input_name"] == input_name), None)


def test_every_service_is_up_and_healthy_and_declares_what_rule_8_asks(stack):
    services = stack.services()
    assert set(services) == SERVICES
    assert all(running == desired > 0 for running, desired in services.values()), services
    for name in SERVICES:
        spec = sh("docker", "service", "inspect", f"{NAME}_{name}", "--format",
                  "{{json .Spec.TaskTemplate.ContainerSpec.Healthcheck}}|{{json .Spec.TaskTemplate.Resources.Limits}}"
                  "|{{json .Spec.TaskTemplate.RestartPolicy}}|{{json .Spec.UpdateConfig}}").strip()
        health, limits, restart, update = spec.split("|")
        assert '"Test"' in health, f"{name}: no healthcheck"
        assert '"MemoryBytes"' in limits and '"NanoCPUs"' in limits, f"{name}: no resource limits"
        assert restart != "null" and update != "null", f"{name}: no restart or update policy"
    placement = sh("docker", "service", "inspect", f"{NAME}_worker", "--format",
                   "{{json .Spec.TaskTemplate.Placement}}")
    assert "node.labels.wildswarm.worker == true" in placement and '"MaxReplicas":2' in placement
    # The shared filesystem: one bind mount of the data folder, at /data.
    mounts = sh("docker", "service", "inspect", f"{NAME}_worker", "--format",
                "{{json .Spec.TaskTemplate.ContainerSpec.Mounts}}")
    assert f'"Source":"{stack.data}"' in mounts and '"Target":"/data"' in mounts


def test_rabbitmq_console_takes_the_stacks_credentials_and_refuses_guest(stack):
    response = stack.rabbitmq("/api/whoami")
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "wildswarm"
    assert stack.rabbitmq("/api/whoami", auth=("guest", "guest")).status_code == 401
    assert stack.rabbitmq("/api/overview", auth=("wildswarm", "not-the-password")).status_code == 401
    users = {u["name"] for u in stack.rabbitmq("/api/users").json()}
    assert users == {"wildswarm"}, users


def test_a_video_uploaded_through_the_web_app_is_analysed_by_a_worker_and_downloads(stack, seed_videos):
    video = seed_videos[0]
    with open(video, "rb") as fh:
        response = stack.api("POST", "/api/jobs", files={"file": (video.name, fh, "video/mp4")})
    assert response.status_code == 201, response.text
    job_id = response.json()["job"]["id"]

    job = stack.wait_job(job_id)
    assert job["status"] == "done", job.get("error")
    assert job["node"] == node_hostname()          # the worker task's node wrote it
    assert job["untrained"] is True                 # and the result says so
    folder = stack.data / "output" / job["output"]
    names = {f["name"] for f in job["files"]}
    assert {"labeled.mp4", "detections.json", "keypoints.h5", "keypoints.csv", "trajectory.png",
            "summary.json"} <= names
    for f in job["files"]:
        response = stack.api("GET", f"/api/jobs/{job_id}/files/{f['name']}")
        assert response.status_code == 200, f["name"]
        assert response.content == (folder / f["name"]).read_bytes(), f"{f['name']} differs from the shared folder"
    archive = zipfile.ZipFile(BytesIO(stack.api("GET", f"/api/jobs/{job_id}/outputs.zip").content))
    for name in archive.namelist():
        assert archive.read(name) == (folder / name.split("/")[-1]).read_bytes()
    assert (stack.data / "input_done" / job["input_name"]).is_file()
    assert not (stack.data / "input" / job["input_name"]).exists()
    assert "results in output/" in (stack.data / "logs" / f"{node_hostname()}.log").read_text()


def test_scale_workers_gives_two_tasks_that_share_the_queue(stack, make_video):
    stack.make("scale-workers", "N=2", timeout=900)
    assert stack.services()["worker"] == (2, 2)
    containers = stack.containers("worker")
    assert len(containers) == 2
    queue = "/api/queues/%2F/wildswarm.jobs"
    wait_for("two consumers on the job queue", lambda: stack.rabbitmq(queue).json()["consumers"] == 2, timeout=120)
    before = {c: stack.worker_metric(c, 'wildswarm_jobs_total{outcome="done"}') for c in containers}

    # Two new videos dropped into input/ at once (scp's way): the producer queues both, and
    # with one unacknowledged job per worker each worker takes one.
    drop(stack, *(make_video(f"shared-{i}.mp4", frames=40 + i, size=(320, 192), fps=10) for i in range(2)))

    def both_done():
        jobs = [j for j in job_records(stack.data) if j["input_name"].startswith("shared-")]
        return len(jobs) == 2 and all(j["status"] == "done" for j in jobs)
    wait_for("both dropped videos to be analysed", both_done, timeout=600)
    after = {c: stack.worker_metric(c, 'wildswarm_jobs_total{outcome="done"}') for c in containers}
    assert all(after[c] - before[c] == 1 for c in containers), (before, after)


def test_prometheus_scrapes_every_service_and_counts_the_finished_jobs(stack):
    def all_up():
        targets = stack.prometheus("/api/v1/targets", state="active")["activeTargets"]
        up = {t["labels"]["job"] for t in targets if t["health"] == "up"}
        return up if TARGET_JOBS <= up else None
    wait_for("worker, producer, web, rabbitmq and node targets up", all_up, timeout=120)
    done = sum(1 for j in job_records(stack.data) if j["status"] == "done")
    assert done >= 2          # the scale test's two, at least

    def counted():
        result = stack.query('sum(wildswarm_jobs_total{job="worker",outcome="done"})')
        return result and float(result[0]["value"][1]) == done
    wait_for(f"the worker job counter to reach {done}", counted, timeout=90)


def test_a_worker_killed_mid_job_leaves_the_job_to_finish_once(stack, seed_videos):
    video = seed_videos[-1]
    drop(stack, video)
    job_id = wait_for("the producer to queue the video", lambda: job_id_of(stack, video.name), timeout=120)

    def running():
        job = stack.job(job_id)
        assert job["status"] != "done", "the job finished before the worker could be killed"
        return job["status"] == "running" and job["frames_done"] >= 1
    wait_for("the job to be under way", running, timeout=300, interval=0.3)
    busy = [c for c in stack.containers("worker") if stack.worker_metric(c, "wildswarm_inprogress_jobs") == 1]
    assert len(busy) == 1, busy
    sh("docker", "kill", busy[0])

    job = stack.wait_job(job_id, timeout=900)
    assert job["status"] == "done", job.get("error")
    assert job["attempts"] == 2                       # delivered again after the kill, done then
    name = job["output"]
    outputs = [p.name for p in (stack.data / "output").iterdir() if name in p.name]
    assert outputs == [name], outputs                 # one result, no half-written leftovers
    stem = job["input_name"].rsplit(".", 1)[0]
    assert [p.name for p in (stack.data / "input_done").iterdir() if p.name.startswith(stem)] == [job["input_name"]]
    assert not (stack.data / "input" / job["input_name"]).exists()
    assert sum(1 for j in job_records(stack.data) if j["input_name"] == job["input_name"]) == 1
    # Swarm replaces the killed task.
    wait_for("two healthy workers again", lambda: stack.services()["worker"] == (2, 2), timeout=600, interval=5)


def test_make_down_removes_the_stack_and_everything_the_tests_made(stack):
    stack.make("down", timeout=600)
    assert stack.leftovers() == {}
    # The results stay where users find them.
    assert any((stack.data / "output").iterdir())
