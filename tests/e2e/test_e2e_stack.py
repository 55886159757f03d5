"""The stack as users run it: deploy, upload, results, monitoring, scaling, a killed worker, removal.

The tests run in this file's order on one stack (see conftest.py); each leaves it healthy
for the next. Real pipeline, untrained weights, real camera-trap videos.
"""
from __future__ import annotations

import shutil
import zipfile
from io import BytesIO
from pathlib import Path

import pytest

from kit.waiting import wait_for
from stackkit import NAME, ROOT, STARTING, job_records, sh

SERVICES = {"rabbitmq", "postgres", "producer", "web", "worker", "prometheus", "node-exporter"}
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
    return next((j["id"] for j in job_records(stack, input_name) if j["input_name"] == input_name), None)


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
    # ... and the model weights read-only over it: workers unpickle them, so they may not change them.
    assert f'"Source":"{stack.data}/models","Target":"/data/models","ReadOnly":true' in mounts
    worker = stack.containers("worker")[0]
    denied = sh("docker", "exec", worker, "sh", "-c", "touch /data/models/x 2>&1 || true")
    assert "Read-only file system" in denied


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


def test_scale_workers_beyond_what_fits_says_so_at_once(stack):
    """Audit: `make scale-workers N=2` on one node hung for 15 minutes (`docker service ps` truncated the
    error the script looked for). N beyond WORKERS_PER_NODE x labelled nodes is refused at once."""
    import subprocess
    import time
    t0 = time.monotonic()
    result = subprocess.run(["make", "--no-print-directory", "scale-workers", "N=3"], cwd=ROOT,
                            env=stack.env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and time.monotonic() - t0 < 60
    assert "3 workers cannot run: at most 2 per node" in result.stderr and "1 ready node" in result.stderr
    assert stack.services()["worker"] == (1, 1)


def test_scale_workers_gives_two_tasks_that_share_the_queue(stack, make_video):
    stack.make("scale-workers", "N=2", timeout=900)
    assert stack.services()["worker"] == (2, 2)
    containers = stack.containers("worker")
    assert len(containers) == 2
    queue = "/api/queues/%2F/wildswarm.jobs"
    wait_for(lambda: stack.rabbitmq(queue).json()["consumers"] == 2, 120, "two consumers on the job queue", 2.0,
             errors=STARTING)
    before = {c: stack.worker_metric(c, 'wildswarm_jobs_total{outcome="done"}') for c in containers}

    # Two new videos dropped into input/ at once (scp's way): the producer queues both, and
    # with one unacknowledged job per worker each worker takes one.
    drop(stack, *(make_video(f"shared-{i}.mp4", frames=40 + i, size=(320, 192), fps=10) for i in range(2)))

    def both_done():
        jobs = [j for j in job_records(stack, "shared-") if j["input_name"].startswith("shared-")]
        return len(jobs) == 2 and all(j["status"] == "done" for j in jobs)
    wait_for(both_done, 600, "both dropped videos to be analysed", 2.0, errors=STARTING)
    after = {c: stack.worker_metric(c, 'wildswarm_jobs_total{outcome="done"}') for c in containers}
    assert all(after[c] - before[c] == 1 for c in containers), (before, after)


def test_prometheus_scrapes_every_service_and_counts_the_finished_jobs(stack):
    def all_up():
        targets = stack.prometheus("/api/v1/targets", state="active")["activeTargets"]
        up = {t["labels"]["job"] for t in targets if t["health"] == "up"}
        return up if TARGET_JOBS <= up else None
    wait_for(all_up, 120, "worker, producer, web, rabbitmq and node targets up", 2.0, errors=STARTING)
    done = sum(1 for j in job_records(stack) if j["status"] == "done")
    assert done >= 2          # the scale test's two, at least

    def counted():
        result = stack.query('sum(wildswarm_jobs_total{job="worker",outcome="done"})')
        return result and float(result[0]["value"][1]) == done
    wait_for(counted, 90, f"the worker job counter to reach {done}", 2.0, errors=STARTING)


def test_a_worker_killed_mid_job_leaves_the_job_to_finish_once(stack, seed_videos):
    video = seed_videos[-1]
    drop(stack, video)
    job_id = wait_for(lambda: job_id_of(stack, video.name), 120, "the producer to queue the video", 2.0,
                      errors=STARTING)

    def running():
        job = stack.job(job_id)
        assert job["status"] != "done", "the job finished before the worker could be killed"
        return job["status"] == "running" and job["frames_done"] >= 1
    wait_for(running, 300, "the job to be under way", 0.3, errors=STARTING)
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
    assert sum(1 for j in job_records(stack, job["input_name"]) if j["input_name"] == job["input_name"]) == 1
    # Swarm replaces the killed task.
    wait_for(lambda: stack.services()["worker"] == (2, 2), 600, "two healthy workers again", 5, errors=STARTING)


def test_make_backup_and_restore_the_job_store(stack, make_video):
    before = {j["id"] for j in job_records(stack)}
    out = stack.make("backup", timeout=300)
    dump = Path(out.strip().splitlines()[-1])
    assert dump.is_file() and dump.stat().st_size > 0 and dump.stat().st_mode & 0o077 == 0
    video = make_video("after-backup.mp4", frames=6)
    response = stack.api("POST", "/api/jobs", files={"file": (video.name, video.read_bytes(), "video/mp4")})
    assert response.status_code == 201, response.text
    later = response.json()["job"]["id"]
    assert later in {j["id"] for j in job_records(stack)}
    stack.make("restore", f"FILE={dump}", timeout=600)
    wait_for(lambda: stack.api("GET", "/healthz").ok, 300, "the web app after the restore", 2.0, errors=STARTING)
    assert {j["id"] for j in job_records(stack)} == before          # as it was when backed up
    wait_for(lambda: all(r == d > 0 for r, d in stack.services().values()), 600, "every service back", 5,
             errors=STARTING)


def test_make_down_removes_the_stack_and_everything_the_tests_made(stack):
    stack.make("down", timeout=600)
    assert stack.leftovers() == {}
    # The results stay where users find them.
    assert any((stack.data / "output").iterdir())
