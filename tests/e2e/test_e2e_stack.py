"""The stack as users run it: deploy, upload, results, monitoring, scaling, a killed worker, removal.

The tests run in this file's order on one stack (see conftest.py); each leaves it healthy
for the next. Real pipeline, untrained weights, real camera-trap videos.
"""
from __future__ import annotations

import json
import shutil
import zipfile
from io import BytesIO
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests

from kit.waiting import wait_for
from stackkit import ROOT, STARTING, as_json, client, dig, docker_exec, job_records

SERVICES = {"proxy", "rabbitmq", "postgres", "producer", "web", "worker", "prometheus", "docker-api", "node-exporter"}
TARGET_JOBS = {"worker", "producer", "web", "rabbitmq", "node"}


def node_hostname() -> str:
    return client().info()["Name"]


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
        spec = stack.service_attrs(name)["Spec"]
        health, limits, restart, update = (as_json(dig(spec, *keys)) for keys in (
            ("TaskTemplate", "ContainerSpec", "Healthcheck"), ("TaskTemplate", "Resources", "Limits"),
            ("TaskTemplate", "RestartPolicy"), ("UpdateConfig",)))
        assert '"Test"' in health, f"{name}: no healthcheck"
        assert '"MemoryBytes"' in limits and '"NanoCPUs"' in limits, f"{name}: no resource limits"
        assert restart != "null" and update != "null", f"{name}: no restart or update policy"
    placement = as_json(dig(stack.service_attrs("worker"), "Spec", "TaskTemplate", "Placement"))
    assert "node.labels.wildswarm.worker == true" in placement and '"MaxReplicas":2' in placement
    # The shared filesystem: one bind mount of the data folder, at /data.
    mounts = as_json(dig(stack.service_attrs("worker"), "Spec", "TaskTemplate", "ContainerSpec", "Mounts"))
    assert f'"Source":"{stack.data}"' in mounts and '"Target":"/data"' in mounts
    # ... and the model weights read-only over it: workers unpickle them, so they may not change them.
    assert f'"Source":"{stack.data}/models","Target":"/data/models","ReadOnly":true' in mounts
    worker = stack.containers("worker")[0]
    denied = docker_exec(worker, "sh", "-c", "touch /data/models/x 2>&1 || true")
    assert "Read-only file system" in denied


def test_only_the_proxy_publishes_a_port_and_plain_http_redirects_to_https(stack):
    """Audit: Prometheus (with its lifecycle API) and the RabbitMQ console were published on every interface."""
    for name in SERVICES:
        ports = as_json(dig(stack.service_attrs(name), "Endpoint", "Ports"))
        assert (ports not in ("null", "[]")) == (name == "proxy"), f"{name} publishes {ports}"
    r = requests.get(stack.url("/jobs?x=1", scheme="http"), allow_redirects=False, timeout=10)
    assert r.status_code == 308 and r.headers["Location"] == stack.url("/jobs?x=1")
    r = requests.get(stack.url("/healthz"), verify=stack.cert, timeout=10)      # TLS, verified
    assert r.status_code == 200 and r.headers["Strict-Transport-Security"].startswith("max-age=")


def test_the_consoles_sit_behind_the_login_and_each_service_has_its_own_broker_user(stack):
    anon = stack.anonymous()
    for path in ("/rabbitmq/", "/rabbitmq/api/overview", "/prometheus/classic/targets", "/prometheus/api/v1/targets"):
        r = anon.get(stack.url(path), allow_redirects=False, timeout=10)
        assert r.status_code == 302 and r.headers["Location"].startswith("/login?next="), (path, r.status_code)
    # a console address of several query parts comes back whole after the login (the proxy cut it at '&')
    graph = "/prometheus/graph?g0.expr=up&g0.tab=1&g0.range_input=1h"
    r = anon.get(stack.url(graph), allow_redirects=False, timeout=10)
    assert r.status_code == 302 and parse_qs(urlsplit(r.headers["Location"]).query) == {"next": [graph]}
    assert anon.get(stack.url("/metrics"), timeout=10).status_code == 401
    session = stack.session()
    response = stack.rabbitmq("/api/whoami", session=session)
    assert response.status_code == 200 and response.json()["name"] == "admin", response.text
    assert stack.rabbitmq("/api/whoami", auth=("guest", "guest"), session=session).status_code == 401
    users = {u["name"]: u["tags"] for u in stack.rabbitmq("/api/users", session=session).json()}
    assert set(users) == {"admin", "worker", "producer", "web"}, users
    assert all(not users[u] for u in ("worker", "producer", "web"))           # no management tags
    perms = {p["user"]: p for p in stack.rabbitmq("/api/permissions", session=session).json()}
    assert perms["web"]["configure"] == "^$" and perms["web"]["read"] == "^$"     # publishes, nothing else
    assert perms["worker"]["configure"] == "^$"
    web_pw = docker_exec(stack.containers("web")[0], "cat", "/run/secrets/broker_password").strip()
    assert stack.rabbitmq("/api/overview", auth=("web", web_pw), session=session).status_code == 401
    assert stack.secret("broker_admin_password") not in web_pw
    for service in ("web", "worker", "producer"):              # the administrator's password is in none of them
        secrets = docker_exec(stack.containers(service)[0], "ls", "/run/secrets").split()
        assert "broker_admin_password" not in secrets and "rabbitmq_definitions" not in secrets, (service, secrets)


def test_prometheus_runs_unprivileged_without_the_socket_or_its_lifecycle_api(stack):
    container = stack.containers("prometheus")[0]
    assert docker_exec(container, "id", "-u").strip() != "0"
    mounts = as_json(client().containers.get(container).attrs.get("Mounts"))
    assert "docker.sock" not in mounts
    session = stack.session()
    quit_ = session.post(stack.url("/prometheus/-/quit"), timeout=10)
    assert quit_.status_code in (403, 404, 405), quit_.status_code
    assert session.get(stack.url("/prometheus/-/healthy"), timeout=10).status_code == 200
    # its read-only Docker API answers discovery's reads and refuses every change
    code = ("import urllib.request as u, sys\n"
            "def go(m, p):\n"
            "    try: return u.urlopen(u.Request('http://docker-api:2375' + p, method=m, data=b'{}' if m != 'GET' else None), timeout=5).status\n"
            "    except u.HTTPError as e: return e.code\n"
            "print(go('GET', '/v1.41/services'), go('GET', '/v1.41/containers/json'), go('POST', '/v1.41/services/create'),"
            " go('DELETE', '/v1.41/services/x'), go('GET', '/v1.41/secrets'))")
    proxy_side = docker_exec(stack.containers("docker-api")[0], "python3", "-c",
                             code.replace("docker-api:2375", "127.0.0.1:2375"))
    assert proxy_side.split() == ["200", "403", "403", "403", "403"], proxy_side


def _tls_socket(stack):
    import socket
    import ssl
    context = ssl.create_default_context(cafile=stack.cert)
    raw = socket.create_connection(("127.0.0.1", stack.ports["https"]), timeout=10)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(stack):
    """Audit: strangers could stream files into input/ before logging in. Through the front door the
    client is refused from its headers: the proxy answers while the 50 MB body has not been sent."""
    before = sorted(str(p.relative_to(stack.data)) for p in stack.data.rglob("*") if "logs" not in p.parts)
    for path, status in (("/api/jobs", "401"), ("/upload", "302")):     # the form goes to the login page
        s = _tls_socket(stack)
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                  f"Content-Length: {50 << 20}\r\n\r\n".encode() + b"--b\r\n" + b"\0" * 1000)
        answer = s.recv(4096).decode(errors="replace")
        s.close()
        assert answer.startswith(f"HTTP/1.1 {status}"), answer[:200]
    after = sorted(str(p.relative_to(stack.data)) for p in stack.data.rglob("*") if "logs" not in p.parts)
    assert after == before


def test_an_upload_over_the_limit_is_refused_from_its_headers_in_the_api_s_own_words(stack):
    """Audit (stop 35): nginx counted the whole multipart body against MAX_UPLOAD (4g), the app the file
    alone with 1 MiB more for the form's headers and fields: a video just under the limit met nginx's
    HTML 413 instead of the app. The proxy now allows the same 1 MiB, and its own 413 is JSON."""
    limit = 4 << 30
    conf = docker_exec(stack.containers("proxy")[0], "cat", "/run/wildswarm-proxy/nginx.conf")
    assert conf.count(f"client_max_body_size {limit + (1 << 20)};") == 2, conf
    for path in ("/api/jobs", "/upload"):
        s = _tls_socket(stack)
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                  f"Content-Length: {limit + (2 << 20)}\r\n\r\n".encode())
        answer = b""
        while b"too_large" not in answer and (chunk := s.recv(4096)):
            answer += chunk
        s.close()
        head, _, body = answer.decode(errors="replace").partition("\r\n\r\n")
        assert head.startswith("HTTP/1.1 413") and "application/json" in head, answer[:300]
        assert json.loads(body[body.index("{"):body.rindex("}") + 1])["reason"] == "too_large"


def test_slow_and_idle_clients_do_not_starve_the_app(stack, make_video):
    """Audit: ten idle unauthenticated bodies took the web app's 8 threads, /healthz timed out and Swarm
    killed the web task with its uploads. The proxy holds such clients (and times them out) itself."""
    import time
    idle = []
    for i in range(24):
        s = _tls_socket(stack)
        if i % 2:      # a request whose headers never end
            s.sendall(b"GET /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        else:          # a body that stops after a few bytes
            s.sendall(b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded"
                      b"\r\nContent-Length: 4000\r\n\r\nuser=x&pass")
        idle.append(s)
    try:
        t0 = time.monotonic()
        assert requests.get(stack.url("/healthz"), verify=stack.cert, timeout=10).status_code == 200
        assert time.monotonic() - t0 < 3
        video = make_video("while-idle.mp4", frames=5)
        response = stack.api("POST", "/api/jobs", files={"file": (video.name, video.read_bytes(), "video/mp4")})
        assert response.status_code == 201, response.text
        web = stack.containers("web")[0]
        assert docker_exec(web, "python3", "-m", "wildswarm.healthcheck", "web").startswith("healthy")
    finally:
        for s in idle:
            s.close()


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
    # the worker records the outcome, then moves the input on
    wait_for(lambda: (stack.data / "input_done" / job["input_name"]).is_file(), 30, "the input in input_done/", 0.2)
    assert not (stack.data / "input" / job["input_name"]).exists()
    wait_for(lambda: "results in output/" in (stack.data / "logs" / f"{node_hostname()}.log").read_text(), 30,
             "the worker's done line in the node log", 0.2)


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

    # The cluster page reads the same Prometheus (inside the stack) for each node's CPU and memory,
    # and the workers' own heartbeats for who is alive.
    def cluster():
        c = stack.api("GET", "/api/cluster").json()
        node = next((n for n in c["nodes"] if n["node"] == node_hostname()), None)
        return c if c["prometheus"]["reachable"] and node and node["cpu"] is not None and node["mem_total"] else None
    c = wait_for(cluster, 120, "the cluster page's node figures from Prometheus", 2.0, errors=STARTING)
    assert c["alive"] == 2 and {w["node"] for w in c["workers"] if w["state"] in ("idle", "running")} == {node_hostname()}
    assert c["queue"]["done"] >= 2 and c["chart"] is True
    page = stack.api("GET", "/cluster")
    assert page.status_code == 200 and 'id="prometheus-down"' not in page.text and "Workers" in page.text


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
    client().containers.get(busy[0]).kill()

    job = stack.wait_job(job_id, timeout=900)
    assert job["status"] == "done", job.get("error")
    assert job["attempts"] == 2                       # delivered again after the kill, done then
    name = job["output"]
    outputs = [p.name for p in (stack.data / "output").iterdir() if name in p.name]
    assert outputs == [name], outputs                 # one result, no half-written leftovers
    stem = job["input_name"].rsplit(".", 1)[0]
    wait_for(lambda: [p.name for p in (stack.data / "input_done").iterdir() if p.name.startswith(stem)]
             == [job["input_name"]], 30, "the input, once, in input_done/", 0.2)
    assert not (stack.data / "input" / job["input_name"]).exists()
    assert sum(1 for j in job_records(stack, job["input_name"]) if j["input_name"] == job["input_name"]) == 1
    # Swarm replaces the killed task.
    wait_for(lambda: stack.services()["worker"] == (2, 2), 600, "two healthy workers again", 5, errors=STARTING)


def test_cancel_a_running_job_then_download_every_done_result_at_once(stack, make_video):
    """Mission control on the stack: a running job cancelled through the API stops on its worker and its
    video goes to input_failed/; every done job's results then download as one zip; the cluster page
    sees both workers back to idle."""
    video = make_video("cancel-me.mp4", frames=540, size=(640, 384), fps=10)     # 54 s: one job, no segments
    with open(video, "rb") as fh:
        job_id = stack.api("POST", "/api/jobs", files={"file": (video.name, fh, "video/mp4")}).json()["job"]["id"]

    def running():
        job = stack.job(job_id)
        assert job["status"] in ("queued", "running"), f"the job {job['status']} before it could be cancelled"
        return job["status"] == "running" and job["frames_done"] >= 1
    wait_for(running, 300, "the job to be under way", 0.3, errors=STARTING)
    r = stack.api("POST", f"/api/jobs/{job_id}/cancel")
    assert r.status_code == 202 and r.json()["job"]["status"] == "cancelled", r.text
    log = stack.data / "logs" / f"{node_hostname()}.log"
    wait_for(lambda: f"job {job_id} cancel-me.mp4: cancelled while it ran" in log.read_text(), 60,
             "the worker to stop the cancelled job", 1.0)
    job = stack.job(job_id)
    assert job["status"] == "cancelled" and job["frames_done"] < job["frames_total"]
    assert (stack.data / "input_failed" / "cancel-me.mp4").is_file()
    assert not (stack.data / "output" / "cancel-me").exists()

    done = [j["id"] for j in job_records(stack) if j["status"] == "done"]
    r = stack.api("POST", "/api/jobs/outputs.zip", json={"filter": {"status": "done"}})
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/zip"
    folders = {n.split("/")[0] for n in zipfile.ZipFile(BytesIO(r.content)).namelist()}
    assert len(folders) == len(done) >= 2, folders

    def idle():
        c = stack.api("GET", "/api/cluster").json()
        return sorted(w["state"] for w in c["workers"] if w["state"] in ("idle", "running")) == ["idle", "idle"]
    wait_for(idle, 120, "both workers idle on the cluster page", 2.0, errors=STARTING)


def test_guessing_the_password_through_the_front_door_is_throttled(stack):
    s = stack.anonymous()
    page = s.get(stack.url("/login"), timeout=10).text
    token = page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    codes = [s.post(stack.url("/login"), data={"user": "wildswarm", "password": f"guess {i}", "csrf_token": token},
                    allow_redirects=False, timeout=10).status_code for i in range(12)]
    assert codes[0] == 401 and 429 in codes and set(codes) <= {401, 429}, codes


def test_make_backup_and_restore_the_job_store(stack, make_video):
    before = {j["id"] for j in job_records(stack)}
    out = stack.make("backup", timeout=300)
    dump = Path(out.strip().splitlines()[-1])
    assert dump.is_file() and dump.stat().st_size > 0 and dump.stat().st_mode & 0o077 == 0
    video = make_video("after-backup.mp4", frames=7)
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
