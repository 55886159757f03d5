"""Acting on many jobs at once: bulk retry and delete, by selection or by filter, through the API
(checked against OpenAPI) and the jobs page's form (delete confirmed first); nothing outside a
deleted job's own folders is touched, and one job's conflict never stops the others."""
from __future__ import annotations

from webkit import files_under, make_done_job, make_failed_job, make_running_job
from wildswarm.jobs import JobStatus
from wildswarm.layout import Layout


def test_bulk_retry_through_the_api_reports_each_job(anon, bearer, store, broker, video_bytes, openapi):
    failed = [make_failed_job(store, video_bytes + bytes([k]), name=f"owl{k}") for k in range(3)]
    done = make_done_job(store, video_bytes, name="fox")
    ids = [j.id for j in failed] + [done.id, "0000000000000bad"]
    r = anon.post("/api/jobs/bulk", json={"action": "retry", "jobs": ids}, headers=bearer)
    assert r.status_code == 200, r.get_json()
    openapi.check("POST", "/api/jobs/bulk", r)
    body = r.get_json()
    assert body["counts"] == {"retried": 3, "conflict": 1, "missing": 1}
    assert [x["result"] for x in body["results"]] == ["retried"] * 3 + ["conflict", "missing"]
    assert all(store.get(j.id).status is JobStatus.QUEUED for j in failed)
    assert store.get(done.id).status is JobStatus.DONE and len(broker.published) == 3


def test_bulk_delete_by_filter_removes_records_and_results_but_keeps_inputs(anon, bearer, store, settings,
                                                                            video_bytes, openapi):
    lay = Layout(settings.data)
    a = make_done_job(store, video_bytes, name="fox", job_id="d000000000000001")
    b = make_done_job(store, video_bytes, name="badger", job_id="d000000000000002")
    running = make_running_job(store)
    (lay.output / "unrelated").mkdir()
    before = files_under(settings.data)
    r = anon.post("/api/jobs/bulk", json={"action": "delete", "filter": {"status": "done"}}, headers=bearer)
    openapi.check("POST", "/api/jobs/bulk", r)
    body = r.get_json()
    assert body["counts"] == {"deleted": 2}
    assert sorted(x["removed"][0] for x in body["results"]) == ["output/badger", "output/fox"]
    assert store.find(a.id) is None and store.find(b.id) is None and store.get(running.id).status is JobStatus.RUNNING
    gone = before - files_under(settings.data)
    assert all(p.startswith(("output/fox", "output/badger")) for p in gone)
    assert (lay.input_done / "fox.mp4").exists() and (lay.output / "unrelated").is_dir()      # inputs kept
    r = anon.post("/api/jobs/bulk", json={"action": "delete", "jobs": [running.id]}, headers=bearer)
    assert r.get_json()["results"][0]["result"] == "conflict" and "only a done, failed or cancelled job" in \
        r.get_json()["results"][0]["message"]


def test_bulk_delete_with_inputs_and_a_hostile_record_touches_nothing_else(anon, bearer, store, settings, video_bytes):
    lay = Layout(settings.data)
    failed = make_failed_job(store, video_bytes, name="owl")
    done = make_done_job(store, video_bytes + b"1", name="fox", job_id="d000000000000003")
    with store.db.connection("test") as conn:               # a record naming a path, never a folder of its own
        conn.execute("UPDATE jobs SET output = '..' WHERE id = %s", (done.id,))
    r = anon.post("/api/jobs/bulk", json={"action": "delete", "jobs": [failed.id, done.id], "delete_inputs": True},
                  headers=bearer)
    results = {x["id"]: x for x in r.get_json()["results"]}
    assert results[failed.id]["removed"] == ["input_failed/owl.mp4"]
    assert results[done.id]["removed"] == ["input_done/fox.mp4"]
    assert lay.output.is_dir() and (lay.output / "fox").is_dir() and lay.input.is_dir()   # '..' removed nothing


def test_bulk_requests_that_cannot_be_acted_on_are_400(anon, bearer, openapi):
    for body in ({"action": "pause", "jobs": ["a"]}, {"action": "retry"}, {"action": "retry", "jobs": []},
                 {"action": "retry", "jobs": ["x"] * 1001}, {"action": "delete", "filter": {"status": "sleeping"}},
                 {"action": "delete", "filter": {"status": 3}}, ["retry"]):
        r = anon.post("/api/jobs/bulk", json=body, headers=bearer)
        assert r.status_code == 400, body
        openapi.check("POST", "/api/jobs/bulk", r)


def test_the_jobs_page_retries_the_ticked_and_deletes_after_confirming(client, store, settings, video_bytes):
    lay = Layout(settings.data)
    failed = make_failed_job(store, video_bytes, name="owl")
    done = make_done_job(store, video_bytes + b"1", name="fox", job_id="d000000000000004")
    page = client.get("/jobs").get_data(as_text=True)
    assert f'value="{failed.id}" form="export-form"' in page and 'id="bulk-button"' in page
    r = client.post("/jobs/bulk", data={"csrf_token": client.csrf, "action": "retry", "job": [failed.id]})
    assert r.status_code == 303 and store.get(failed.id).status is JobStatus.QUEUED
    assert "1 of 1 job(s) queued again." in client.get("/jobs").get_data(as_text=True)

    r = client.post("/jobs/bulk", data={"csrf_token": client.csrf, "action": "delete", "all": "yes",
                                        "filter": "status=done"})
    confirm = r.get_data(as_text=True)
    assert r.status_code == 200 and "Delete 1 job?" in confirm and "output/fox/" in confirm
    assert "the videos stay in" in confirm and store.find(done.id) is not None          # nothing yet
    r = client.post("/jobs/bulk", data={"csrf_token": client.csrf, "action": "delete", "confirm": "yes",
                                        "job": [done.id], "filter": "status=done"})
    assert r.status_code == 303 and r.headers["Location"].endswith("/jobs?status=done")
    assert store.find(done.id) is None and not (lay.output / "fox").exists() and (lay.input_done / "fox.mp4").exists()
    assert client.post("/jobs/bulk", data={"action": "delete", "job": [failed.id]}).status_code == 400   # no CSRF token


def test_many_jobs_results_download_as_one_streamed_zip(client, anon, bearer, store, video_bytes, openapi):
    import io
    import zipfile
    fox = make_done_job(store, video_bytes, name="fox", job_id="d000000000000011")
    owl = make_done_job(store, video_bytes + b"1", name="owl", job_id="d000000000000012")
    running = make_running_job(store)
    r = anon.post("/api/jobs/outputs.zip", json={"jobs": [fox.id, owl.id, running.id, "0000000000000bad"]},
                  headers=bearer)
    assert r.status_code == 200 and r.mimetype == "application/zip" and r.is_streamed
    openapi.check("POST", "/api/jobs/outputs.zip", r)
    with zipfile.ZipFile(io.BytesIO(r.data)) as z:
        names = set(z.namelist())
        skipped = z.read("skipped.txt").decode()
    assert {"fox/summary.json", "fox/labeled.mp4", "owl/summary.json", "owl/detections.json"} <= names
    assert f"{running.id} running.mp4: running, no results" in skipped and "0000000000000bad: no such job" in skipped
    by_filter = anon.post("/api/jobs/outputs.zip", json={"filter": {"status": "done", "q": "owl"}}, headers=bearer)
    with zipfile.ZipFile(io.BytesIO(by_filter.data)) as z:
        assert {n.split("/")[0] for n in z.namelist()} == {"owl"}
    none = anon.post("/api/jobs/outputs.zip", json={"jobs": [running.id]}, headers=bearer)
    assert none.status_code == 409 and "has results" in none.get_json()["error"]
    openapi.check("POST", "/api/jobs/outputs.zip", none)
    form = client.post("/jobs/bulk", data={"csrf_token": client.csrf, "action": "download", "job": [fox.id]})
    assert form.status_code == 200 and "wildswarm-results-1.zip" in form.headers["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(form.data)) as z:
        assert {n.split("/")[0] for n in z.namelist()} == {"fox"}


def test_deleting_a_failed_long_video_removes_its_finished_segments_unless_a_video_of_its_stem_waits(
        anon, bearer, store, settings, video_bytes):
    lay = Layout(settings.data)
    owl = make_failed_job(store, video_bytes, name="owl")            # failed after two of its segments
    badger = make_failed_job(store, video_bytes + b"1", name="badger")
    for stem in ("owl", "badger"):
        (lay.output / ".segments" / stem / "00000").mkdir(parents=True)
        (lay.output / ".segments" / stem / "00000" / "frames.npz").write_bytes(b"x")
    (lay.input / "badger.MP4").write_bytes(video_bytes + b"2")       # a video of badger's stem waits: its own
    r = anon.post("/api/jobs/bulk", json={"action": "delete", "jobs": [owl.id, badger.id]}, headers=bearer)
    results = {x["id"]: x for x in r.get_json()["results"]}
    assert results[owl.id]["removed"] == ["output/.segments/owl"] and not (lay.output / ".segments" / "owl").exists()
    assert results[badger.id]["removed"] == [] and (lay.output / ".segments" / "badger" / "00000").is_dir()
    assert (lay.input_failed / "owl.mp4").exists()                   # inputs kept: not asked to delete them


def test_deleting_a_job_removes_what_a_killed_attempt_at_its_result_left_and_nothing_of_others(
        anon, bearer, store, settings, video_bytes):
    """Audit: a worker killed mid-write leaves ``output/.tmp-<name>-XXXXXXXX`` (a partial labeled video);
    deleting the job removed its result folder but left that for good."""
    lay = Layout(settings.data)
    owl = make_failed_job(store, video_bytes, name="owl")
    for leftover in (".tmp-owl-k3j_9x0a", ".old-owl-4242", ".tmp-owlet-k3j_9x0a", ".tmp-fox-aaaaaaaa"):
        (lay.output / leftover).mkdir(parents=True)
        (lay.output / leftover / "labeled.mp4").write_bytes(b"x" * 100)
    r = anon.post("/api/jobs/bulk", json={"action": "delete", "jobs": [owl.id]}, headers=bearer)
    assert sorted(r.get_json()["results"][0]["removed"]) == ["output/.old-owl-4242", "output/.tmp-owl-k3j_9x0a"]
    assert sorted(p.name for p in lay.output.iterdir()) == [".tmp-fox-aaaaaaaa", ".tmp-owlet-k3j_9x0a"]
