"""Pages: jobs list, job page in every state, retry, node logs."""
from __future__ import annotations

import pytest

from webkit import make_done_job, make_failed_job, make_running_job
from wildswarm.jobs import JobStatus


def test_jobs_page_lists_every_job(client, store, video_bytes):
    make_done_job(store, video_bytes)
    make_failed_job(store, video_bytes)
    make_running_job(store, node="worker-7")
    page = client.get("/jobs").get_data(as_text=True)
    for words in ("fox.mp4", "owl.mp4", "running.mp4", "worker-7", "25%", "3/12", "status done", "status failed",
                  "status running", 'data-api="/api/jobs"', 'data-live="yes"', "untrained", "Jobs 1–3 of 3."):
        assert words in page, words
    assert f'data-seq="{store.latest_seq()}"' in page
    assert 'src="/static/app.js"' in page


def test_jobs_page_filters_and_pages_in_the_url(client, store, video_bytes):
    make_done_job(store, video_bytes)
    make_failed_job(store, video_bytes)
    make_running_job(store, node="worker-7")
    page = client.get("/jobs?status=failed").get_data(as_text=True)
    assert "owl.mp4" in page and "fox.mp4" not in page and 'data-live="no"' in page
    assert '<option value="failed" selected>' in page and 'href="/jobs">Clear' in page
    page = client.get("/jobs?q=FOX").get_data(as_text=True)
    assert "fox.mp4" in page and "owl.mp4" not in page
    page = client.get("/jobs?node=worker-7").get_data(as_text=True)
    assert "running.mp4" in page and "owl.mp4" not in page
    page = client.get("/jobs?limit=1").get_data(as_text=True)
    # the page size asked for is kept from page to page (the links dropped it: page 2 showed 50)
    assert "Jobs 1–1 of 3." in page and 'id="next" href="/jobs?limit=1&amp;offset=1"' in page
    page = client.get("/jobs?limit=1&offset=2").get_data(as_text=True)
    assert "Jobs 3–3 of 3." in page and 'id="prev" href="/jobs?limit=1&amp;offset=1"' in page
    assert 'id="next"' not in page and 'href="/jobs?limit=1&amp;view=grid"' in page
    assert client.get("/jobs?status=bogus").status_code == 400
    assert client.get("/jobs?limit=%C2%B2").status_code == 400
    assert "No job matches these filters" in client.get("/jobs?q=zebra").get_data(as_text=True)


def test_jobs_page_when_empty(client):
    page = client.get("/jobs").get_data(as_text=True)
    assert "No jobs yet" in page and '<p id="no-jobs" class="empty" >' in page        # not hidden


def test_done_job_page_plays_the_video_and_offers_everything(client, settings, video_bytes, store):
    job = make_done_job(store, video_bytes, untrained=True)
    page = client.get(f"/jobs/{job.id}").get_data(as_text=True)
    video = f'<video id="labeled" controls preload="metadata" playsinline src="/jobs/{job.id}/files/labeled.mp4">'
    assert video in page
    assert f'src="/jobs/{job.id}/files/trajectory.png"' in page
    assert 'id="untrained-warning"' in page and "UNTRAINED (random) weights" in page
    assert f'href="/jobs/{job.id}/outputs.zip"' in page
    for name in ("labeled.mp4", "detections.json", "keypoints.h5", "keypoints.csv", "trajectory.png", "summary.json",
                 "tracks.csv"):
        assert f"/jobs/{job.id}/files/{name}?download=1" in page, name
    assert "Animal tracks (MOTChallenge CSV)" in page             # the label pipeline/files.py gives it
    assert "worker-1" in page and job.finished_at.strftime("%Y-%m-%d %H:%M:%S UTC") in page
    assert "1 animal tracked, up to 1 in one frame." in page        # the summary, readable
    assert "<td>animal1</td>" in page and "frames 0–10" in page and "<dt>Frame size</dt><dd>160 × 96</dd>" in page
    r = client.get(f"/jobs/{job.id}/files/tracks.csv")
    assert r.status_code == 200 and r.mimetype == "text/csv"


def test_trained_job_shows_no_warning(client, settings, video_bytes, store):
    job = make_done_job(store, video_bytes, untrained=False)
    page = client.get(f"/jobs/{job.id}").get_data(as_text=True)
    assert "untrained-warning" not in page


def test_queued_and_running_pages_poll(client, store):
    make_running_job(store, done=5, total=10, node="w")
    page = client.get("/jobs/abcdef0123456789").get_data(as_text=True)
    assert 'data-api="/api/jobs/abcdef0123456789"' in page and 'data-status="running"' in page
    assert "50%" in page and "<video" not in page and "Retry" not in page


def test_failed_job_shows_its_reason_and_a_retry_button(client, settings, video_bytes, store):
    job = make_failed_job(store, video_bytes)
    page = client.get(f"/jobs/{job.id}").get_data(as_text=True)
    assert "PipelineError: out of memory" in page and 'id="retry"' in page
    assert f'action="/jobs/{job.id}/retry"' in page


@pytest.mark.parametrize("job_id", ["nope", "0123456789abcdef", "../../etc/passwd", "ABCDEF0123456789"])
def test_unknown_job_is_404(client, job_id):
    assert client.get(f"/jobs/{job_id}").status_code == 404


@pytest.mark.parametrize("where,stored_as", [("input_failed", None), ("input_failed", "owl-{tag}.mp4"),
                                             ("input", None)])
def test_retry_moves_the_input_back_resets_and_republishes(client, settings, broker, video_bytes, where, stored_as,
                                                           store):
    job = make_failed_job(store, video_bytes, where=where, stored_as=stored_as)
    r = client.post(f"/jobs/{job.id}/retry", data={"csrf_token": client.csrf})
    assert r.status_code == 303 and r.headers["Location"] == f"/jobs/{job.id}"
    record = store.get(job.id)
    assert record.status is JobStatus.QUEUED and record.error is None and record.attempts == 0
    assert record.frames_done == 0 and record.node is None and record.finished_at is None
    assert (settings.data / "input" / "owl.mp4").read_bytes() == video_bytes
    assert list((settings.data / "input_failed").iterdir()) == []
    assert [(m["job_id"], m["input_name"]) for m in broker.published] == [(job.id, "owl.mp4")]
    assert "queued again" in client.get(r.headers["Location"]).get_data(as_text=True)


def test_retry_when_the_name_is_taken_again(client, settings, broker, video_bytes, store):
    job = make_failed_job(store, video_bytes)
    (settings.data / "input" / "owl.mp4").write_bytes(b"someone else's video")
    client.post(f"/jobs/{job.id}/retry", data={"csrf_token": client.csrf})
    record = store.get(job.id)
    assert record.input_name == "owl-1.mp4" and (settings.data / "input" / "owl-1.mp4").read_bytes() == video_bytes
    assert broker.published[0]["input_name"] == "owl-1.mp4"


def test_retry_refusals(client, settings, broker, video_bytes, store):
    done = make_done_job(store, video_bytes)
    r = client.post(f"/jobs/{done.id}/retry", data={"csrf_token": client.csrf}, follow_redirects=True)
    assert b"only a failed, cancelled or stranded job" in r.data
    gone = make_failed_job(store, video_bytes, job_id="00000000deadbeef", name="gone")
    (settings.data / "input_failed" / "gone.mp4").unlink()
    r = client.post(f"/jobs/{gone.id}/retry", data={"csrf_token": client.csrf}, follow_redirects=True)
    assert b"no longer in input/ or input_failed/" in r.data
    refused = store.refuse("00000000f00dcafe", "x.avi", 3, "extension '.avi' is not accepted", "producer")
    r = client.post(f"/jobs/{refused.id}/retry", data={"csrf_token": client.csrf}, follow_redirects=True)
    assert b"upload a valid video instead" in r.data
    assert broker.published == []
    assert client.post(f"/jobs/{gone.id}/retry").status_code == 400          # no CSRF token


def test_node_logs_page_shows_the_tail_of_each_node(client, settings):
    logs = settings.data / "logs"
    (logs / "worker-1.log").write_text("".join(f"line {i} of worker-1\n" for i in range(500)))
    (logs / "producer.log").write_text("producer up\n")
    (logs / "notes.txt").write_text("not a log")
    page = client.get("/logs").get_data(as_text=True)
    assert "worker-1" in page and "producer up" in page and "line 499 of worker-1" in page
    assert "line 400 of worker-1" not in page and "not a log" not in page
    assert 'href="/logs/worker-1"' in page and 'href="/logs/worker-1/raw"' in page
    one = client.get("/logs/worker-1").get_data(as_text=True)
    assert "line 300 of worker-1" in one and "line 299 of worker-1" not in one     # web_log_lines = 200
    raw = client.get("/logs/worker-1/raw")
    assert raw.status_code == 200 and raw.data.count(b"\n") == 500 and raw.mimetype == "text/plain"


def test_node_logs_page_when_empty(client):
    assert b"No node has written a log yet" in client.get("/logs").data


@pytest.mark.parametrize("node", ["nobody", "..", ".hidden", "worker-1.log", "%2e%2e%2fjobs"])
def test_unknown_or_hostile_node_is_404(client, settings, node):
    (settings.data / "logs" / "worker-1.log").write_text("x\n")
    assert client.get(f"/logs/{node}").status_code == 404
    assert client.get(f"/logs/{node}/raw").status_code == 404


def test_log_links_outside_the_root_are_not_followed(client, settings, tmp_path):
    secret = tmp_path / "secret.log"
    secret.write_text("TOP SECRET\n")
    (settings.data / "logs" / "evil.log").symlink_to(secret)
    assert b"TOP SECRET" not in client.get("/logs").data
    assert client.get("/logs/evil/raw").status_code == 404


def test_old_log_route_redirects(client):
    r = client.get("/Log")
    assert r.status_code == 301 and r.headers["Location"] == "/logs"


def test_jobs_page_shows_one_page_of_the_newest_jobs(client, store, monkeypatch):
    import wildswarm.web.ui as ui
    monkeypatch.setattr(ui, "JOBS_SHOWN", 2)
    for n in range(3):
        store.submit(f"{n:016x}", f"v{n}.mp4")
    page = client.get("/jobs").get_data(as_text=True)
    assert "Jobs 1–2 of 3." in page and "v2.mp4" in page and "v0.mp4" not in page


def test_a_result_with_a_poster_shows_it_before_the_video_plays(client, store, settings, video_bytes):
    from PIL import Image
    job = make_done_job(store, video_bytes)
    Image.new("RGB", (160, 96), (40, 90, 40)).save(settings.data / "output" / "fox" / "poster.jpg", "JPEG")
    page = client.get(f"/jobs/{job.id}").get_data(as_text=True)
    assert f'poster="/jobs/{job.id}/files/poster.jpg"' in page
    assert "Poster: the annotated frame with the most animals (JPEG)" in page
    r = client.get(f"/jobs/{job.id}/files/poster.jpg")
    assert r.status_code == 200 and r.mimetype == "image/jpeg"


@pytest.fixture
def berlin_database(monkeypatch):
    """The job store's connections in a time zone other than UTC (PostgreSQL's own ``timezone`` setting,
    which initdb takes from the server's clock, does the same)."""
    monkeypatch.setenv("PGTZ", "Europe/Berlin")


def test_live_rows_show_the_same_utc_times_as_the_page_whatever_the_database_time_zone(berlin_database, client,
                                                                                        store):
    """The jobs page writes times in UTC; its script rewrites a row from the API's time (app.js ``when``),
    labelling it UTC only when it is. So the API must give UTC too, or a row that updates live jumps by the
    database's offset and loses its label."""
    job = make_running_job(store, node="worker-7")
    page = client.get("/jobs").get_data(as_text=True)
    created = client.get(f"/api/jobs/{job.id}").get_json()["created_at"]
    assert created.endswith(("+00:00", "Z")), created
    assert created.replace("T", " ")[:19] + " UTC" in page
    assert client.get("/api/jobs?since=0").get_json()["jobs"][0]["created_at"] == created
