"""The JSON API, validated against its own OpenAPI document."""
from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from webkit import make_done_job, make_failed_job, upload
from wildswarm.jobs import Job, JobStatus, JobStore
from wildswarm.layout import Layout


def test_the_document_is_valid_openapi(anon):
    doc = anon.get("/api/openapi.json").get_json()
    validate(doc)
    assert doc["openapi"].startswith("3.")
    assert {"/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/retry", "/api/jobs/{job_id}/files/{filename}",
            "/api/jobs/{job_id}/outputs.zip", "/healthz", "/metrics"} <= set(doc["paths"])


def test_every_api_route_is_documented(app, openapi):
    """Routes under /api/ and the API's neighbours are all in the document (and nothing else is)."""
    import re
    documented = set(openapi.doc["paths"])
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        if path.startswith("/api/"):
            assert path in documented, path
    routes = {re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", r.rule) for r in app.url_map.iter_rules()}
    assert documented <= routes


def test_list_jobs(anon, bearer, settings, video_bytes, openapi):
    make_done_job(settings, video_bytes)
    make_failed_job(settings, video_bytes)
    JobStore(Layout(settings.data)).save(Job(id="abcdef0123456789", input_name="q.mp4"))
    r = anon.get("/api/jobs", headers=bearer)
    openapi.check("GET", "/api/jobs", r)
    body = r.get_json()
    assert body["count"] == body["total"] == 3
    assert {j["status"] for j in body["jobs"]} == {"done", "failed", "queued"}
    r = anon.get("/api/jobs?status=failed", headers=bearer)
    openapi.check("GET", "/api/jobs", r)
    assert [j["input_name"] for j in r.get_json()["jobs"]] == ["owl.mp4"]
    r = anon.get("/api/jobs?limit=1", headers=bearer)
    assert r.get_json()["count"] == 1 and r.get_json()["total"] == 3


@pytest.mark.parametrize("query", ["status=nope", "limit=0", "limit=-1", "limit=abc", "limit=100000", "limit=1.5"])
def test_list_jobs_bad_parameters(anon, bearer, openapi, query):
    r = anon.get(f"/api/jobs?{query}", headers=bearer)
    assert r.status_code == 400
    openapi.check("GET", "/api/jobs", r)


def test_get_done_job_lists_its_files_and_warning(anon, bearer, settings, video_bytes, openapi):
    job = make_done_job(settings, video_bytes)
    r = anon.get(f"/api/jobs/{job.id}", headers=bearer)
    openapi.check("GET", "/api/jobs/{job_id}", r)
    body = r.get_json()
    assert body["status"] == "done" and body["progress"] == 1.0 and body["untrained"] is True
    assert "UNTRAINED" in body["warning"]
    assert {f["name"] for f in body["files"]} == {"labeled.mp4", "trajectory.png", "summary.json", "detections.json",
                                                  "keypoints.h5", "keypoints.csv"}
    assert body["files"][0]["url"] == f"/jobs/{job.id}/files/labeled.mp4"
    assert body["links"]["zip"] == f"/jobs/{job.id}/outputs.zip"
    for f in body["files"]:
        assert anon.get(f["url"], headers=bearer).status_code == 200


@pytest.mark.parametrize("job_id", ["0123456789abcdef", "nothex", "../../../etc/passwd", "a" * 65])
def test_get_unknown_job(anon, bearer, openapi, job_id):
    r = anon.get(f"/api/jobs/{job_id}", headers=bearer)
    assert r.status_code == 404 and r.get_json()["reason"] == "not_found"
    if "/" not in job_id:
        openapi.check("GET", "/api/jobs/{job_id}", r)


def test_submit_then_follow_it(anon, bearer, settings, video_bytes, openapi):
    r = upload(anon, "api.mp4", video_bytes, headers=bearer)
    openapi.check("POST", "/api/jobs", r)
    job_url = r.headers["Location"]
    r = anon.get(job_url, headers=bearer)
    openapi.check("GET", "/api/jobs/{job_id}", r)
    assert r.get_json()["status"] == "queued" and r.get_json()["files"] == [] and r.get_json()["warning"] is None


def test_retry_api(anon, bearer, settings, broker, video_bytes, openapi):
    job = make_failed_job(settings, video_bytes)
    r = anon.post(f"/api/jobs/{job.id}/retry", headers=bearer)
    assert r.status_code == 202
    openapi.check("POST", "/api/jobs/{job_id}/retry", r)
    assert r.get_json()["job"]["status"] == "queued" and r.get_json()["published"] is True
    r = anon.post(f"/api/jobs/{job.id}/retry", headers=bearer)           # queued now: not failed
    assert r.status_code == 409
    openapi.check("POST", "/api/jobs/{job_id}/retry", r)
    r = anon.post("/api/jobs/0123456789abcdef/retry", headers=bearer)
    assert r.status_code == 404
    openapi.check("POST", "/api/jobs/{job_id}/retry", r)


def test_retry_with_the_broker_down_keeps_the_job_pending(settings, video_bytes, openapi, bearer):
    from webkit import FakeBroker
    from wildswarm.web import create_app
    from wildswarm.web.publisher import Publisher
    broker = FakeBroker(fail=True)
    c = create_app(settings, publisher=Publisher(settings, broker=broker)).test_client()
    job = make_failed_job(settings, video_bytes)
    r = c.post(f"/api/jobs/{job.id}/retry", headers=bearer)
    openapi.check("POST", "/api/jobs/{job_id}/retry", r)
    assert r.status_code == 202 and r.get_json()["published"] is False
    assert r.get_json()["job"]["pending_publish"] is True
    assert (settings.data / "input" / "owl.mp4").exists()
    broker.fail = False
    r = c.post(f"/api/jobs/{job.id}/retry", headers=bearer)           # "Queue now"
    assert r.status_code == 202 and r.get_json()["published"] is True
    assert JobStore(Layout(settings.data)).get(job.id).error is None


def test_session_clients_use_the_api_with_the_csrf_header(client, video_bytes):
    assert client.get("/api/jobs").status_code == 200
    assert upload(client, "s.mp4", video_bytes, csrf=client.csrf).status_code == 201


def test_running_job_progress(anon, bearer, settings, openapi):
    JobStore(Layout(settings.data)).save(Job(id="abcdef0123456789", input_name="r.mp4", status=JobStatus.RUNNING,
                                             frames_done=3, frames_total=4, node="n1"))
    r = anon.get("/api/jobs/abcdef0123456789", headers=bearer)
    openapi.check("GET", "/api/jobs/{job_id}", r)
    assert r.get_json()["progress"] == 0.75 and r.get_json()["node"] == "n1"
