"""Exports over the web: one job's result in a field format, many jobs' in one file, refusals."""
from __future__ import annotations

import http.client
import io
import json
import shutil
import threading
import time
import zipfile

import pytest

from kit.validators import camtrap_problems, megadetector_problems
from webkit import make_running_job
from wildswarm.jobs.deployments import Deployment, Deployments
from wildswarm.layout import Layout

CAM = {"id": "cam42-2026-07", "location_name": "Mara river", "latitude": -1.4061, "longitude": 35.0112,
       "deployment_start": "2026-07-01T06:00:00+03:00", "deployment_end": "2026-07-21T18:00:00+03:00"}

pytestmark = pytest.mark.slow          # the seed videos are analysed once for the session


@pytest.fixture
def finished(store, settings, seed_results, seed_videos):
    """The seed videos' real results as finished jobs of this test's job store, recorded at a deployment."""
    layout = Layout(settings.data)
    Deployments(store.db).save(Deployment.parse(CAM))
    jobs = []
    for n, (folder, video) in enumerate(zip(seed_results, seed_videos)):
        shutil.copytree(folder, layout.output / folder.name)
        shutil.copy2(video, layout.input_done / video.name)
        job_id = f"5eed{n:012x}"
        store.submit(job_id, video.name, video.stat().st_size, deployment_id=CAM["id"],
                     media={"given_time": f"2026-07-0{n + 3}T05:12:00+03:00"})
        store.claim(job_id, "w/x", "w")
        jobs.append(store.finish(job_id, "w/x", output=folder.name, outputs=[], frames=1, untrained=True, timings={}))
    return jobs


def test_one_job_exports_in_each_format(client, finished):
    job = finished[0]
    r = client.get(f"/jobs/{job.id}/export/md-json")
    assert r.status_code == 200 and r.mimetype == "application/json"
    assert f'filename={job.output}-md-json.json' in r.headers["Content-Disposition"]
    doc = json.loads(r.data)
    assert megadetector_problems(doc) == ([], []) and [e["file"] for e in doc["images"]] == [job.input_name]
    for fmt, inside in (("csv", "detections.csv"), ("mot", f"{job.output}.txt"), ("nwb", f"{job.output}.nwb")):
        r = client.get(f"/jobs/{job.id}/export/{fmt}")
        assert r.status_code == 200 and r.mimetype == "application/zip", (fmt, r.data[:200])
        assert inside in zipfile.ZipFile(io.BytesIO(r.data)).namelist()
    assert client.get(f"/jobs/{job.id}/export/xls").status_code == 400
    page = client.get(f"/jobs/{job.id}").get_data(as_text=True)          # the job page offers each format
    assert all(f'href="/jobs/{job.id}/export/{fmt}"' in page for fmt in ("md-json", "nwb", "csv", "mot"))
    assert 'id="camtrap-export"' in page and 'value="camtrap-dp"' in page   # a form: it asks what it needs
    links = client.get(f"/api/jobs/{job.id}").get_json()["links"]["exports"]
    assert links["nwb"] == f"/api/jobs/{job.id}/export/nwb"


def test_many_jobs_export_to_one_file_through_the_api(app, finished, bearer, openapi):
    c = app.test_client()
    r = c.post("/api/exports", json={"format": "md-json", "jobs": [j.id for j in finished]}, headers=bearer)
    assert r.status_code == 200, r.data
    openapi.check("POST", "/api/exports", r)
    doc = json.loads(r.data)
    assert megadetector_problems(doc) == ([], []) and len(doc["images"]) == 2
    assert "wildswarm-2-videos-md-json.json" in r.headers["Content-Disposition"]


def test_an_export_naming_an_unfinished_or_unknown_job_is_refused_and_says_which(app, store, finished, bearer,
                                                                               openapi):
    running = make_running_job(store)
    c = app.test_client()
    r = c.post("/api/exports", json={"format": "csv", "jobs": [finished[0].id, running.id, "0000000000000bad"]},
               headers=bearer)
    assert r.status_code == 409
    openapi.check("POST", "/api/exports", r)
    body = r.get_json()
    assert body["reason"] == "export_refused" and len(body["problems"]) == 2
    assert any(running.id in p and "running" in p for p in body["problems"])
    assert any("0000000000000bad" in p and "no such job" in p for p in body["problems"])
    for bad in ({"format": "csv", "jobs": []}, {"format": "xls", "jobs": [finished[0].id]}, {"jobs": "x"}, [1]):
        assert c.post("/api/exports", json=bad, headers=bearer).status_code == 400


def test_an_nwb_subject_of_unknown_fields_is_a_400_not_a_500(app, finished, bearer, openapi):
    c = app.test_client()
    for subject in ({"colour": "red"}, {"age": 5}):
        r = c.post("/api/exports", json={"format": "nwb", "jobs": [finished[0].id], "options": {"subject": subject}},
                   headers=bearer)
        assert r.status_code == 400 and "subject" in r.get_json()["error"], (subject, r.status_code, r.data[:300])
        openapi.check("POST", "/api/exports", r)


def held_nwb(monkeypatch, held_name: str):
    """NWB exports that wait, before the NWB file of ``held_name``, until the test releases them."""
    from wildswarm.exporters import nwb
    release, reached, real = threading.Event(), threading.Event(), nwb.write_file

    def write_file(r, path, options=None):
        if r.name == held_name:
            reached.set()
            assert release.wait(20), "the test never released the export"
        return real(r, path, options)
    monkeypatch.setattr(nwb, "write_file", write_file)
    return release, reached


def test_an_export_streams_as_it_is_made_so_a_long_one_outlives_no_proxy_timeout(app, finished, bearer):
    """Audit: an export was written whole before its first byte left. The NWB of many long videos took
    longer than the proxy's 300 s timeout: the user got a 504 while the app went on writing it. Now
    the first video's files are downloading while the second's NWB is still being made."""
    release, reached = held_nwb(monkeypatch := pytest.MonkeyPatch(), finished[1].output)
    try:
        c = app.test_client()
        started = time.monotonic()
        r = c.post("/api/exports", json={"format": "nwb", "jobs": [j.id for j in finished]}, headers=bearer)
        assert r.status_code == 200 and r.mimetype == "application/zip"
        assert time.monotonic() - started < 15 and not release.is_set()      # answered while the export waits
        chunks = iter(r.response)
        first = next(chunks)
        assert first.startswith(b"PK\x03\x04") and reached.wait(10)          # the first video's files are out
        release.set()
        data = first + b"".join(chunks)
    finally:
        release.set()
        monkeypatch.undo()
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert {f"{j.output}.nwb" for j in finished} <= set(names)
    assert "wildswarm-2-videos-nwb.zip" in r.headers["Content-Disposition"]


def test_an_export_that_fails_midway_breaks_the_download_and_one_refused_at_first_is_a_409(app, finished, bearer,
                                                                                         caplog):
    from wildswarm.errors import ExportError
    from wildswarm.exporters import nwb
    c = app.test_client()
    real = nwb.write_file

    def second_fails(r, path, options=None):
        if r.name == finished[1].output:
            raise ExportError(f"cannot export {r.name}:", ["keypoints.h5 cannot be read: gone"])
        return real(r, path, options)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nwb, "write_file", second_fails)
        r = c.post("/api/exports", json={"format": "nwb", "jobs": [j.id for j in finished]}, headers=bearer)
        assert r.status_code == 200
        with pytest.raises(ExportError, match="cannot export"):
            b"".join(r.response)                 # under gunicorn: the connection closes before the zip's end
        assert "cut short after its first bytes" in caplog.text
        r = c.post("/api/exports", json={"format": "nwb", "jobs": [finished[1].id]}, headers=bearer)
        assert r.status_code == 409 and r.get_json()["problems"] == ["keypoints.h5 cannot be read: gone"]


def test_under_gunicorn_a_download_cut_short_is_a_broken_transfer_never_a_whole_looking_file(settings, finished,
                                                                                             bearer, spawn):
    """A result file that cannot be read once the export is under way: the web server closes the
    connection before the end of the chunked body, so the client knows its file is incomplete."""
    from kit.procs import start_web
    from webkit import PASSWORD, SECRET, TOKEN
    _, web, base = start_web(settings, spawn, password=PASSWORD, secret=SECRET, token=TOKEN)
    broken = Layout(settings.data).output / finished[1].output / "keypoints.h5"
    broken.write_bytes(b"not HDF5 at all")
    conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=60)
    conn.request("POST", "/api/exports", body=json.dumps({"format": "nwb", "jobs": [j.id for j in finished]}),
                 headers={**bearer, "Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("Transfer-Encoding") == "chunked"
    with pytest.raises(http.client.IncompleteRead):
        r.read()
    conn.close()
    assert "cut short after its first bytes" in web.output() and "keypoints.h5 cannot be read" in web.output()
    conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=60)     # the server is fine
    conn.request("POST", "/api/exports", body=json.dumps({"format": "nwb", "jobs": [finished[0].id]}),
                 headers={**bearer, "Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200 and f"{finished[0].output}.nwb" in zipfile.ZipFile(io.BytesIO(r.read())).namelist()
    conn.close()


def test_the_export_form_needs_the_csrf_token(client, finished):
    form = {"format": "md-json", "job": [j.id for j in finished]}
    assert client.post("/api/exports", data=form).status_code in (400, 403)
    r = client.post("/api/exports", data={**form, "csrf_token": client.csrf})
    assert r.status_code == 200 and len(json.loads(r.data)["images"]) == 2


def test_a_camera_trap_data_package_of_a_deployment_validates_and_missing_metadata_is_asked_for(app, finished,
                                                                                               bearer, tmp_path):
    c = app.test_client()
    ids = [j.id for j in finished]
    r = c.post("/api/exports", json={"format": "camtrap-dp", "jobs": ids}, headers=bearer)
    assert r.status_code == 409
    problems = r.get_json()["problems"]
    assert any("contributors" in p for p in problems) and any("sampling design" in p for p in problems)
    options = {"contributors": ["A. Ranger <ranger@example.org>"], "sampling_design": "targeted",
               "capture_method": "activityDetection", "title": "Mara river, July"}
    r = c.post("/api/exports", json={"format": "camtrap-dp", "jobs": ids, "options": options}, headers=bearer)
    assert r.status_code == 200 and r.mimetype == "application/zip", r.data[:300]
    assert camtrap_problems(r.data, tmp_path) == []
    package = json.loads((tmp_path / "datapackage.json").read_text())
    assert package["title"] == "Mara river, July" and package["contributors"][0]["email"] == "ranger@example.org"
    bad = c.post("/api/exports", json={"format": "camtrap-dp", "jobs": ids, "options": {"colour": 1}}, headers=bearer)
    assert bad.status_code == 400 and "colour" in bad.get_json()["error"]


def test_the_job_page_s_camtrap_form_exports_the_package(client, finished, tmp_path):
    form = {"csrf_token": client.csrf, "format": "camtrap-dp", "job": finished[0].id,
            "contributors": "A. Ranger <ranger@example.org>\nB. Tracker", "sampling_design": "opportunistic",
            "capture_method": "activityDetection", "media_observations": "1"}
    r = client.post("/api/exports", data=form)
    assert r.status_code == 200 and r.mimetype == "application/zip", r.data[:300]
    assert camtrap_problems(r.data, tmp_path) == []
    package = json.loads((tmp_path / "datapackage.json").read_text())
    assert [c["title"] for c in package["contributors"]] == ["A. Ranger", "B. Tracker"]
    assert package["project"]["observationLevel"] == ["event", "media"]


def test_the_jobs_page_exports_the_ticked_jobs(client, finished, store):
    from webkit import make_running_job
    running = make_running_job(store)
    page = client.get("/jobs").get_data(as_text=True)
    for job in [*finished, running]:                     # a box to tick for each job (bulk actions use it too)
        assert f'name="job" value="{job.id}" form="export-form"' in page
    assert 'id="export-form"' in page and '<option value="camtrap-dp">' in page
    # the form carries the bulk actions' fields too: they are not export options
    r = client.post("/api/exports", data={"csrf_token": client.csrf, "format": "csv", "action": "retry",
                                          "filter": "", "job": [j.id for j in finished]})
    assert r.status_code == 200 and "wildswarm-2-videos-csv.zip" in r.headers["Content-Disposition"]


def test_a_download_the_client_leaves_ends_its_exporter_even_mid_way_through_one_large_write(app, finished, bearer,
                                                                                            monkeypatch):
    """Audit: the md-json exporter writes its whole document in one write (a zip entry of the CSV tables is
    one write too). A client that went away while that write was under way made the exporter's thread wait
    for ever on the full queue, holding the whole export in memory: one leaked thread per cancelled download."""
    from wildswarm.exporters import megadetector as md
    real = md.merge

    def many(docs, files=None):                   # a batch of many videos: a document of several MiB
        doc = real(docs, files)
        doc["images"] = doc["images"] * (1 + (4 << 20) // len(md.dumps(doc)))
        return doc
    monkeypatch.setattr(md, "merge", many)
    c = app.test_client()
    r = c.post("/api/exports", json={"format": "md-json", "jobs": [j.id for j in finished]}, headers=bearer)
    assert r.status_code == 200
    next(iter(r.response))                        # the first chunk arrives, then the client goes away
    r.close()
    deadline = time.monotonic() + 10
    while any(t.name == "export-md-json" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [t for t in threading.enumerate() if t.name == "export-md-json"], "the exporter waits for ever"
