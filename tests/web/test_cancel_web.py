"""Cancel from the web app: one job through the API (OpenAPI-checked) and the job page's button, many
through the bulk form; a cancelled job can be retried. A real job store; the worker side is in
tests/unit/test_cancel.py and tests/integration/test_cancel_live.py."""
from __future__ import annotations

from webkit import make_done_job, make_running_job
from wildswarm.jobs import JobStatus
from wildswarm.layout import Layout


def test_cancel_through_the_api(anon, bearer, store, openapi):
    running = make_running_job(store)
    r = anon.post(f"/api/jobs/{running.id}/cancel", headers=bearer)
    assert r.status_code == 202, r.get_json()
    openapi.check("POST", "/api/jobs/{job_id}/cancel", r)
    assert r.get_json()["job"]["status"] == "cancelled"
    assert store.get(running.id).status is JobStatus.CANCELLED
    again = anon.post(f"/api/jobs/{running.id}/cancel", headers=bearer)
    assert again.status_code == 409 and "only a queued or running job" in again.get_json()["error"]
    openapi.check("POST", "/api/jobs/{job_id}/cancel", again)
    missing = anon.post("/api/jobs/00000000000000ff/cancel", headers=bearer)
    assert missing.status_code == 404
    openapi.check("POST", "/api/jobs/{job_id}/cancel", missing)


def test_the_job_page_cancels_then_offers_a_retry(client, store, settings, video_bytes):
    lay = Layout(settings.data)
    r = client.post("/api/jobs", data={"file": (__import__("io").BytesIO(video_bytes), "fox.mp4")},
                    headers={"X-CSRF-Token": client.csrf})
    job_id = r.get_json()["job"]["id"]
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert 'id="cancel"' in page and 'id="retry"' not in page
    r = client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": client.csrf})
    assert r.status_code == 303
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "is cancelled" in page and 'class="status cancelled"' in page
    assert 'id="cancel"' not in page and 'id="retry"' in page
    assert (lay.input_failed / "fox.mp4").exists() and not (lay.input / "fox.mp4").exists()
    r = client.post(f"/jobs/{job_id}/retry", data={"csrf_token": client.csrf})
    assert store.get(job_id).status is JobStatus.QUEUED and (lay.input / "fox.mp4").exists()
    forged = client.post(f"/jobs/{job_id}/cancel", data={})          # no CSRF token
    assert forged.status_code == 400 and store.get(job_id).status is JobStatus.QUEUED


def test_bulk_cancel_from_the_jobs_page_and_the_api(client, anon, bearer, store, video_bytes, openapi):
    a = make_running_job(store, job_id="a000000000000001", name="a.mp4")
    b = make_running_job(store, job_id="a000000000000002", name="b.mp4")
    done = make_done_job(store, video_bytes, name="fox")
    r = client.post("/jobs/bulk", data={"csrf_token": client.csrf, "action": "cancel", "job": [a.id, done.id]})
    assert r.status_code == 303
    assert store.get(a.id).status is JobStatus.CANCELLED and store.get(done.id).status is JobStatus.DONE
    flashed = client.get(r.headers["Location"]).get_data(as_text=True)
    assert "1 of 2 job(s) cancelled" in flashed and "only a queued or running job" in flashed
    r = anon.post("/api/jobs/bulk", json={"action": "cancel", "filter": {"status": "running"}}, headers=bearer)
    openapi.check("POST", "/api/jobs/bulk", r)
    assert r.get_json()["counts"] == {"cancelled": 1} and store.get(b.id).status is JobStatus.CANCELLED
    listing = anon.get("/api/jobs?status=cancelled", headers=bearer)
    openapi.check("GET", "/api/jobs", listing)
    assert sorted(j["id"] for j in listing.get_json()["jobs"]) == [a.id, b.id]
