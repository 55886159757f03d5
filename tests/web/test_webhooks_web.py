"""Webhooks given through the web app: with an upload (API and form field) or on a deployment; a URL
that is not http(s) is refused with the reason. The sending is tests/unit/test_notifier.py's."""
from __future__ import annotations

import io


def test_an_upload_names_its_webhook_or_is_refused_for_a_bad_one(anon, bearer, store, video_bytes, openapi):
    r = anon.post("/api/jobs", data={"webhook": "https://lab.example.org/hook?t=1",
                                     "file": (io.BytesIO(video_bytes), "fox.mp4")}, headers=bearer)
    assert r.status_code == 201, r.get_json()
    openapi.check("POST", "/api/jobs", r)
    job = r.get_json()["job"]
    assert job["webhook_url"] == "https://lab.example.org/hook?t=1" and job["notify_state"] == "waiting"
    page = anon.get(f"/jobs/{job['id']}", headers=bearer).get_data(as_text=True)
    assert "when the job ends" in page and "https://lab.example.org/hook" in page and "t=1" not in page
    assert 'id="job-video"' in page and "frames/s" in page            # the video's header, read at intake
    bad = anon.post("/api/jobs", data={"webhook": "file:///etc/passwd",
                                       "file": (io.BytesIO(video_bytes + b"x"), "owl.mp4")}, headers=bearer)
    assert bad.status_code == 400 and bad.get_json()["reason"] == "bad_webhook"
    openapi.check("POST", "/api/jobs", bad)
    assert len(store.list()) == 1


def test_a_deployment_keeps_a_webhook_apart_from_its_fields(anon, bearer, store, video_bytes, openapi):
    r = anon.post("/api/deployments", json={"id": "cam9", "webhook_url": "https://lab.example.org/cam9"},
                  headers=bearer)
    assert r.status_code == 201 and r.get_json()["webhook_url"] == "https://lab.example.org/cam9"
    openapi.check("POST", "/api/deployments", r)
    listed = anon.get("/api/deployments", headers=bearer)
    openapi.check("GET", "/api/deployments", listed)
    assert listed.get_json()["deployments"][0]["webhook_url"] == "https://lab.example.org/cam9"
    bad = anon.post("/api/deployments", json={"id": "cam9", "webhook_url": "ftp://x"}, headers=bearer)
    assert bad.status_code == 400 and "http:// or https://" in bad.get_json()["error"]
    up = anon.post("/api/jobs", data={"deployment": "cam9", "file": (io.BytesIO(video_bytes), "fox.mp4")},
                   headers=bearer)
    assert up.get_json()["job"]["webhook_url"] == "https://lab.example.org/cam9"
