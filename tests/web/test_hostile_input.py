"""Hostile and careless input to the web app (an audit's findings): each answer is a clear 4xx or the job the user
meant, never a 5xx, a job store "outage" or two videos writing one result folder."""
from __future__ import annotations

import io

import pytest

from webkit import make_done_job, upload


def test_a_deployment_ending_after_year_9999_in_utc_is_a_400_and_does_not_break_the_list(client, anon, bearer,
                                                                                         video_bytes):
    good = {"id": "cam1", "deployment_start": "2026-01-01T00:00:00Z", "deployment_end": "2026-02-01T00:00:00Z"}
    assert anon.post("/api/deployments", json=good, headers=bearer).status_code == 201
    job = anon.post("/api/jobs", data={"file": (io.BytesIO(video_bytes), "clip.mp4"), "deployment": "cam1"},
                    content_type="multipart/form-data", headers=bearer).get_json()["job"]
    # a typo'd end: 9999-12-31T23:00-05:00 is 10000-01-01T04:00Z; PostgreSQL stores it, Python cannot read it back
    r = anon.post("/api/deployments", json=dict(good, deployment_end="9999-12-31T23:00:00-05:00"), headers=bearer)
    print("POST /api/deployments", r.status_code, r.get_json())
    for url in ("/api/deployments", "/deployments", f"/jobs/{job['id']}"):
        got = client.get(url)
        print("GET", url, got.status_code, (got.get_json() or {}).get("error") if got.is_json else "")
    upload = anon.post("/api/jobs", data={"file": (io.BytesIO(video_bytes[:-1] + b"x"), "other.mp4"),
                                          "deployment": "cam1"}, content_type="multipart/form-data", headers=bearer)
    print("POST /api/jobs deployment=cam1", upload.status_code, upload.get_json())
    assert r.status_code == 400
    assert anon.get("/api/deployments", headers=bearer).status_code == 200


def test_a_nul_byte_in_a_user_given_value_is_a_4xx_not_a_job_store_outage(app, anon, bearer, video_bytes):
    from webkit import csrf_of
    browser = app.test_client()
    answers = {
        "login user": browser.post("/login", data={"user": "wild\x00swarm", "password": "x",
                                                   "csrf_token": csrf_of(browser)}),
        "upload deployment": anon.post("/api/jobs", data={"file": (io.BytesIO(video_bytes), "clip.mp4"),
                                                          "deployment": "a\x00b"},
                                       content_type="multipart/form-data", headers=bearer),
        "cancel id": anon.post("/api/jobs/a%00b/cancel", headers=bearer),
        "bulk delete id": anon.post("/api/jobs/bulk", json={"action": "delete", "jobs": ["a\x00b"]}, headers=bearer),
    }
    for what, r in answers.items():
        print(f"{what}: {r.status_code} {r.get_json() if r.is_json else ''}")
    assert all(r.status_code < 500 for r in answers.values())


def test_two_videos_whose_names_differ_only_in_the_extension_case_get_different_output_folders(
        anon, bearer, settings, store, video_bytes):
    from kit.videos import write_video
    from wildswarm.layout import stem_of
    other = write_video(settings.data.parent / "other.mp4", frames=8).read_bytes()
    a = anon.post("/api/jobs", data={"file": (io.BytesIO(video_bytes), "clip.mp4")},
                  content_type="multipart/form-data", headers=bearer).get_json()["job"]
    b = anon.post("/api/jobs", data={"file": (io.BytesIO(other), "clip.MP4")},
                  content_type="multipart/form-data", headers=bearer).get_json()["job"]
    print("job A", a["id"], a["input_name"], "-> output/" + stem_of(a["input_name"]))
    print("job B", b["id"], b["input_name"], "-> output/" + stem_of(b["input_name"]))
    print("input/:", sorted(p.name for p in (settings.data / "input").iterdir()))
    # each worker does what runner.py does: analyse into output/<stem_of(input_name)>/ (OutputFolder), record it
    from wildswarm.pipeline.outputs import OutputFolder
    for job, content in ((a, b"labeled video of A"), (b, b"labeled video of B")):
        name = stem_of(job["input_name"])
        with OutputFolder(settings.data / "output", name) as tmp:
            (tmp / "labeled.mp4").write_bytes(content)
        store.claim(job["id"], "w/x", "w")
        store.finish(job["id"], "w/x", output=name, outputs=["labeled.mp4"], frames=1, untrained=True, timings={})
    for job in (a, b):
        got = anon.get(f"/api/jobs/{job['id']}/files/labeled.mp4", headers=bearer)
        print(f"GET job {job['input_name']} labeled.mp4 ->", got.status_code, got.data)
    assert stem_of(a["input_name"]) != stem_of(b["input_name"]), "both jobs write output/clip/"


def test_the_same_video_uploaded_four_times_at_once_is_one_job(app, bearer, settings, store, broker, video_bytes,
                                                                monkeypatch):
    import threading
    from wildswarm import intake as intake_module
    gate = threading.Barrier(4, timeout=20)
    real = intake_module.job_id_for

    def together(path):                 # all four reach the dedupe check at the same moment
        job_id = real(path)
        gate.wait()
        return job_id
    monkeypatch.setattr(intake_module, "job_id_for", together)
    answers = []

    def send(i):
        c = app.test_client()
        r = c.post("/api/jobs", data={"file": (io.BytesIO(video_bytes), "clip.mp4")},
                   content_type="multipart/form-data", headers=bearer)
        answers.append((r.status_code, (r.get_json() or {}).get("result"), r.get_data(as_text=True)[:200]))
    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    tree = {d: sorted(p.name for p in (settings.data / d).iterdir()) for d in ("input", "input_failed", "uploads")}
    print(answers)
    print(tree, "published:", len(broker.published))
    assert sorted(a[0] for a in answers) == [200, 200, 200, 201]
    # one copy stays, the job's (the name it gets depends on which racer records first: clip.mp4 or a
    # clip-N.mp4 when a racer's copy held clip.mp4 at that moment); the others wait in input_failed/
    (job,) = store.list()
    assert tree["input"] == [job.input_name] and len(tree["input_failed"]) == 3 and len(broker.published) == 1


def _with_latin1_title(src_path, dst_path):
    """The same video, its container title tag holding Latin-1 bytes ("Café ..."), as older cameras write."""
    import av
    with av.open(str(src_path)) as src, av.open(str(dst_path), "w") as dst:
        dst.metadata["title"] = "QQQQQQQQQQQQ"
        stream = dst.add_stream_from_template(src.streams.video[0])
        for pkt in src.demux(src.streams.video[0]):
            if pkt.dts is not None:
                pkt.stream = stream
                dst.mux(pkt)
    data = dst_path.read_bytes()
    assert data.count(b"QQQQQQQQQQQQ") == 1
    dst_path.write_bytes(data.replace(b"QQQQQQQQQQQQ", b"Caf\xe9 camera "))
    return dst_path


def test_a_playable_video_whose_title_tag_is_not_utf8_is_accepted(anon, bearer, settings, tmp_path):
    import av
    from kit.videos import write_video
    video = _with_latin1_title(write_video(tmp_path / "v.mp4"), tmp_path / "latin1.mp4")
    with av.open(str(video), metadata_errors="replace") as c:      # FFmpeg reads it; every frame decodes
        print("decodes:", sum(1 for _ in c.decode(video=0)), "frames; title", c.metadata.get("title"))
    r = anon.post("/api/jobs", data={"file": (io.BytesIO(video.read_bytes()), "cam07.mp4")},
                  content_type="multipart/form-data", headers=bearer)
    print(r.status_code, r.get_json())
    assert r.status_code == 201


def test_a_cancelled_job_whose_input_is_gone_can_be_queued_again_by_uploading_the_video(anon, bearer, settings,
                                                                                      video_bytes):
    send = lambda: anon.post("/api/jobs", data={"file": (io.BytesIO(video_bytes), "clip.mp4")},
                             content_type="multipart/form-data", headers=bearer)
    job = send().get_json()["job"]
    assert anon.post(f"/api/jobs/{job['id']}/cancel", headers=bearer).status_code == 202
    for p in (settings.data / "input_failed").iterdir():         # someone tidies input_failed/
        p.unlink()
    retry = anon.post(f"/api/jobs/{job['id']}/retry", headers=bearer)
    print("retry:", retry.status_code, retry.get_json()["error"])
    again = send()
    print("upload again:", again.status_code, again.get_json()["result"], again.get_json()["message"])
    assert again.get_json()["result"] in ("queued", "pending")


def test_a_bulk_form_whose_filter_holds_a_line_break_is_a_redirect_or_a_400_not_a_500(client):
    r = client.post("/jobs/bulk", data={"action": "retry", "filter": "status=failed\r\nX-Injected: 1",
                                        "csrf_token": client.csrf})
    print(r.status_code)
    assert r.status_code in (303, 400)


@pytest.mark.parametrize("path, body", [
    ("/api/jobs/bulk", '{"action": "retry", "filter": {"q": "cam\\ud800"}}'),
    ("/api/jobs/bulk", '{"action": "retry", "filter": {"node": "w\\ud800"}}'),
    ("/api/jobs/bulk", '{"action": "delete", "filter": {"status": "failed", "species": "fox\\ud800"}}'),
    ("/api/jobs/bulk", '{"action": "delete", "jobs": ["abc\\ud800"]}'),
    ("/api/jobs/bulk", '{"action": "cancel", "jobs": ["abc\\ud800"]}'),
    ("/api/jobs/outputs.zip", '{"filter": {"q": "cam\\ud800"}}'),
], ids=["bulk-q", "bulk-node", "bulk-species", "bulk-delete-id", "bulk-cancel-id", "zip-q"])
def test_a_lone_surrogate_in_a_bulk_filter_or_job_id_is_answered_as_documented_not_a_500(anon, bearer, openapi,
                                                                                        path, body):
    """JSON may escape half a UTF-16 pair ("\\ud800"): text UTF-8 cannot hold, which the database driver
    refuses with a UnicodeEncodeError (a 500). A filter holding it is a bad filter (400); an id holding it
    is no job's."""
    r = anon.post(path, data=body, content_type="application/json", headers=bearer)
    assert r.status_code in (200, 400), (r.status_code, r.data[:300])
    openapi.check("POST", path, r)
    if r.status_code == 200:
        assert r.get_json()["counts"] == {"missing": 1}
