"""``wildswarm web``: gunicorn with the app factory, configured by settings only (no broker needed)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from kit.net import free_port
from kit.procs import settings_env
from kit.videos import SEED_VIDEOS, write_video
from webkit import PASSWORD, SECRET, TOKEN
from wildswarm.cli import main
from wildswarm.cli.web import gunicorn_options
from wildswarm.config import Settings
from wildswarm.jobs import job_id_for


def env_for(tmp_path: Path, settings: Settings | None = None, **extra) -> dict:
    env = settings_env(settings) if settings else {k: v for k, v in os.environ.items()
                                                   if not k.startswith("WILDSWARM_")}
    env = {k: v for k, v in env.items() if not k.startswith("PROMETHEUS_")}
    env.update({"WILDSWARM_DATA": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1", "WILDSWARM_NODE": "web-cli"})
    env.update({k: str(v) for k, v in extra.items()})
    return env


def test_gunicorn_options_come_from_settings():
    opts = gunicorn_options(Settings(web_bind="127.0.0.1:9000", web_workers=3, web_threads=2, web_timeout=60))
    assert opts["bind"] == ["127.0.0.1:9000"] and opts["workers"] == 3 and opts["threads"] == 2
    assert opts["worker_class"] == "gthread" and opts["timeout"] == 60


def test_refuses_to_start_without_credentials(tmp_path):
    r = subprocess.run([sys.executable, "-m", "wildswarm", "web", "--bind", "127.0.0.1:1"], env=env_for(tmp_path),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "no credential is set" in r.stderr and "WILDSWARM_WEB_AUTH=0" in r.stderr
    assert "Traceback" not in r.stderr


def _get(url: str, headers: dict | None = None, data: bytes | None = None):
    req = urllib.request.Request(url, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def _multipart(name: str, content: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: video/mp4\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_serves_under_gunicorn_and_keeps_uploads_while_the_broker_is_down(tmp_path, db_settings, store):
    port, dead_port = free_port(), free_port()
    (tmp_path / "token").write_text(TOKEN)
    env = env_for(tmp_path, db_settings, WILDSWARM_WEB_TOKEN_FILE=tmp_path / "token",
                  WILDSWARM_WEB_PASSWORD=PASSWORD, WILDSWARM_WEB_SECRET_KEY=SECRET, WILDSWARM_WEB_WORKERS=2,
                  WILDSWARM_BROKER_PORT=dead_port, WILDSWARM_BROKER_HOST="127.0.0.1")
    log = open(tmp_path / "web.out", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "wildswarm", "web", "--bind", f"127.0.0.1:{port}"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, body, _ = _get(base + "/healthz")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "web.out").read_text()
                time.sleep(0.2)
        health = json.loads(body)
        assert status == 200 and health["data"]["writable"] and health["broker"]["reachable"] is False
        assert health["store"]["reachable"] is True
        status, page, _ = _get(base + "/jobs")             # redirected to the login page
        assert status == 200 and b"Log in" in page
        video = write_video(tmp_path / "v.mp4").read_bytes()
        body, ctype = _multipart("gunicorn.mp4", video)
        status, answer, _ = _get(base + "/api/jobs", {"Authorization": f"Bearer {TOKEN}", "Content-Type": ctype},
                                 body)
        answer = json.loads(answer)
        assert status == 201 and answer["result"] == "pending", answer
        assert (tmp_path / "data" / "input" / "gunicorn.mp4").read_bytes() == video
        job = store.get(answer["job"]["id"])
        assert job.status.value == "queued" and job.publish_pending
        status, metrics, _ = _get(base + "/metrics")
        text = metrics.decode()
        assert status == 200 and 'wildswarm_web_uploads_total{result="pending"} 1.0' in text
        assert "wildswarm_web_requests_total" in text
        # Real camera-trap videos over real HTTP: their bytes once tripped Werkzeug's
        # form-memory limit mid-file (413 for a 0.3 MB upload), which the test client never shows.
        seeds = SEED_VIDEOS
        for seed in sorted(seeds.glob("*.mp4")) if seeds.is_dir() else []:
            body, ctype = _multipart(seed.name, seed.read_bytes())
            status, answer, _ = _get(base + "/api/jobs", {"Authorization": f"Bearer {TOKEN}", "Content-Type": ctype},
                                     body)
            assert status == 201, answer
            assert (tmp_path / "data" / "input" / seed.name).read_bytes() == seed.read_bytes()
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()
    out = (tmp_path / "web.out").read_text()
    assert "Booting worker" in out and "Traceback" not in out
    assert PASSWORD not in out and TOKEN not in out and SECRET not in out


@pytest.fixture
def live(app):
    """The web app served over real HTTP on 127.0.0.1 (Werkzeug's server, in a thread): its base URL."""
    from werkzeug.serving import make_server
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_remote_submit_sends_a_file_name_that_is_not_utf8(live, tmp_path, video_bytes, store):
    """``caf\\xe9.mp4`` from a Latin-1 system reaches Python as a lone surrogate, which no multipart header can
    carry: sent with a replacement character, it becomes ``caf.mp4`` on the server as in a local submit."""
    name = os.fsdecode(b"caf\xe9.mp4")
    (tmp_path / name).write_bytes(video_bytes)
    out = CliRunner().invoke(main, ["submit", str(tmp_path / name), "--server", live, "--token", TOKEN],
                             env={"WILDSWARM_DATA": str(tmp_path / "elsewhere")})
    assert out.exit_code == 0, repr(out.exception)
    job = store.get(job_id_for(tmp_path / name))
    assert job.input_name == "caf.mp4" and f"{job.id}  caf.mp4  queued" in out.output


def test_a_token_with_a_line_break_is_never_printed(live, tmp_path):
    """A token from an env file with Windows line ends (``TOKEN\\r``) is the token, as one read from a file
    is; a line break inside it is an error that does not show the secret (requests' header check quotes it)."""
    env = {"WILDSWARM_DATA": str(tmp_path), "WILDSWARM_SERVER": live}
    out = CliRunner().invoke(main, ["status"], env={**env, "WILDSWARM_SERVER_TOKEN": TOKEN + "\r\n"})
    assert out.exit_code == 0 and "no jobs match" in out.output, out.output
    broken = TOKEN[:10] + "\n" + TOKEN[10:]
    out = CliRunner().invoke(main, ["status"], env={**env, "WILDSWARM_SERVER_TOKEN": broken})
    assert out.exit_code == 2 and "line break" in out.output, out.output
    assert TOKEN[:10] not in out.output and TOKEN[10:] not in out.output
