"""`wildswarm submit|status|download --server`: a remote user with only the web address and a token,
against a real `wildswarm web` (gunicorn) over HTTP, a real broker and job store, and a real worker
running the real pipeline on untrained weights."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import pytest

from kit.procs import settings_env, start_web
from kit.videos import write_video
from wildswarm.config import Settings
from wildswarm.jobs import job_id_for

TOKEN = "remote-cli-test-token-0123456789"

pytestmark = pytest.mark.slow


@pytest.fixture
def server(broker_settings, store, spawn, untrained_models_dir):
    worker = broker_settings.replace(analyzer="", untrained=True, models_dir=untrained_models_dir, device="cpu",
                                     detection_threshold=0.001, max_animals=2, detector_image_size=320, fps=5)
    spawn(worker, "worker", node="worker-1")
    _, web, base = start_web(broker_settings, spawn, password="remote test password",
                             secret="remote-test-secret-key-0123456789", token=TOKEN)
    return base


def cli(tmp_path, *args, **env):
    """`wildswarm ...` as a remote user runs it: no WILDSWARM_DATA, no broker, no database."""
    base_env = settings_env(Settings(data=tmp_path / "not-the-shared-filesystem"))
    run = subprocess.run([sys.executable, "-m", "wildswarm", *args], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env={**base_env, **env})
    return run.returncode, run.stdout, run.stderr


def test_submit_wait_status_and_download_through_the_web_app(server, store, tmp_path):
    videos = [write_video(tmp_path / f"trap{k}.mp4", frames=10 + k) for k in range(2)]
    (tmp_path / "token").write_text(TOKEN + "\n")
    code, out, err = cli(tmp_path, "submit", "--server", server, "--token-file", str(tmp_path / "token"),
                         "--profile", "camera-trap", "--wait", *map(str, videos))
    assert code == 0, out + err
    ids = [job_id_for(v) for v in videos]
    for job_id, video in zip(ids, videos):
        assert f"{job_id}  {video.name}  queued" in out and f"{job_id}  {video.name}  done" in out
        job = store.get(job_id)
        assert job.status.value == "done" and job.profile == "camera-trap"
    assert "trap0.mp4" in err                                     # its upload's progress bar

    # again: recognised by its content before any upload
    code, out, _ = cli(tmp_path, "submit", "--server", server, str(videos[0]), WILDSWARM_SERVER_TOKEN=TOKEN)
    assert code == 0 and "already on the server (done); not uploaded again" in out

    code, out, _ = cli(tmp_path, "status", "--server", server, "--status", "done", WILDSWARM_SERVER_TOKEN=TOKEN)
    assert code == 0 and all(i in out for i in ids) and "2 of 2 jobs" in out
    code, out, _ = cli(tmp_path, "status", ids[1], "--json", WILDSWARM_SERVER=server, WILDSWARM_SERVER_TOKEN=TOKEN)
    assert code == 0 and json.loads(out)["input_name"] == "trap1.mp4"

    code, out, _ = cli(tmp_path, "download", ids[0], "--out", str(tmp_path / "got"), "--server", server,
                       "--token", TOKEN)
    assert code == 0 and out.strip() == str(tmp_path / "got" / "trap0.zip")
    with zipfile.ZipFile(tmp_path / "got" / "trap0.zip") as z:
        assert {"trap0/labeled.mp4", "trap0/summary.json", "trap0/detections.json"} <= set(z.namelist())
    code, out, _ = cli(tmp_path, "download", ids[1], "summary.json", "--out", str(tmp_path / "got"), "--server",
                       server, "--token", TOKEN)
    assert code == 0 and json.loads((tmp_path / "got" / "summary.json").read_text())["video"] == "trap1.mp4"
    assert not list((tmp_path / "got").glob(".*.part"))


def test_refusals_and_a_wrong_token_are_clear(server, tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    good = write_video(tmp_path / "ok.mp4", frames=9)
    code, out, err = cli(tmp_path, "submit", "--server", server, "--token", TOKEN, "--profile", "owls", str(good),
                         str(bad), str(tmp_path / "missing.mp4"))
    assert code == 2
    assert "refused: ok.mp4" in err and "no analysis profile 'owls'" in err
    assert "refused: notes.mp4" in err and "missing.mp4: no such file" in err and "Traceback" not in err
    code, out, err = cli(tmp_path, "status", "--server", server, "--token", "wrong-token-0123456789")
    assert code != 0 and "401" in err and "Traceback" not in err
    code, out, err = cli(tmp_path, "status", "--server", "http://127.0.0.1:9", "--token", TOKEN)
    assert code != 0 and "cannot be reached" in err
    code, _, err = cli(tmp_path, "status", "--server", server)
    assert code != 0 and "no API token" in err


def test_cancel_through_the_web_app(broker_settings, store, spawn, tmp_path):
    """No worker: the job waits in the queue until `wildswarm cancel --server` takes it out."""
    _, web, base = start_web(broker_settings, spawn, password="remote test password",
                             secret="remote-test-secret-key-0123456789", token=TOKEN)
    video = write_video(tmp_path / "owl.mp4", frames=9)
    code, out, err = cli(tmp_path, "submit", "--server", base, "--token", TOKEN, str(video))
    assert code == 0, out + err
    job_id = job_id_for(video)
    code, out, err = cli(tmp_path, "cancel", job_id, "--server", base, "--token", TOKEN)
    assert code == 0 and f"{job_id}  owl.mp4  cancelled" in out, out + err
    assert store.get(job_id).status.value == "cancelled"
    code, out, err = cli(tmp_path, "cancel", job_id, "0000000000000bad", "--server", base, "--token", TOKEN)
    assert code == 1 and "409" in err and "only a queued or running job" in err and "404" in err
    assert "Traceback" not in err
