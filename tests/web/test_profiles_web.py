"""Analysis profiles in the web app: listed by the API, offered on the upload page, chosen per upload
(API and form), kept with the job and shown on its page; an unknown one is refused and keeps nothing."""
from __future__ import annotations

import io

from webkit import files_under


def upload_with(c, video: bytes, name: str = "trap.mp4", **fields):
    # the profile goes first, as the page's script and the API's description send it
    return c.post("/api/jobs", data={**fields, "file": (io.BytesIO(video), name, "video/mp4")},
                  headers={"X-CSRF-Token": c.csrf}, content_type="multipart/form-data")


def test_the_api_lists_every_profile_with_its_resolved_settings(anon, bearer, settings, openapi):
    settings.profiles_path.write_text('[owls]\ndescription = "night birds"\nfps = 2.0\n')
    r = anon.get("/api/profiles", headers=bearer)
    assert r.status_code == 200
    openapi.check("GET", "/api/profiles", r)
    body = r.get_json()
    assert body["default"] == "camera-trap" and body["problem"] is None
    by_name = {p["name"]: p for p in body["profiles"]}
    assert list(by_name) == ["camera-trap", "camera-trap-species", "camera-trap-serengeti", "lab-topview-mouse",
                             "owls"]
    assert by_name["owls"] == {"name": "owls", "description": "night birds", "source": str(settings.profiles_path),
                               "sets": {"fps": 2.0}, "settings": {**by_name["camera-trap"]["settings"], "fps": 2.0}}
    assert by_name["lab-topview-mouse"]["settings"]["pose"] == "superanimal_topviewmouse"
    assert anon.get("/api/profiles").status_code == 401


def test_an_upload_keeps_its_profile_and_the_job_page_shows_it(client, store, video_bytes, openapi):
    page = client.get("/").get_data(as_text=True)
    assert '<option value="lab-topview-mouse"' in page and '<option value="camera-trap" selected' in page
    assert "input/&lt;profile&gt;/" in page
    r = upload_with(client, video_bytes, profile="lab-topview-mouse")
    assert r.status_code == 201, r.get_json()
    openapi.check("POST", "/api/jobs", r)
    assert r.get_json()["job"]["profile"] == "lab-topview-mouse"
    job = store.get(r.get_json()["job"]["id"])
    assert job.profile == "lab-topview-mouse"
    assert 'id="job-profile">lab-topview-mouse' in client.get(f"/jobs/{job.id}").get_data(as_text=True)
    other = write_other(video_bytes)
    r = upload_with(client, other, name="plain.mp4")                          # none named: the default
    assert store.get(r.get_json()["job"]["id"]).profile == "camera-trap"


def write_other(video: bytes) -> bytes:
    return video + b"\0"            # other content (another job); still an MP4 to the checks


def test_the_form_without_script_takes_the_profile_too(client, store, video_bytes):
    r = client.post("/upload", data={"csrf_token": client.csrf, "profile": "camera-trap-species",
                                     "files": (io.BytesIO(video_bytes), "f.mp4")}, content_type="multipart/form-data")
    assert r.status_code == 303
    (job,) = store.list()
    assert job.profile == "camera-trap-species"


def test_an_unknown_profile_is_refused_and_keeps_nothing(client, settings, store, video_bytes, openapi):
    before = files_under(settings.data)
    r = upload_with(client, video_bytes, profile="owls")
    assert r.status_code == 400 and r.get_json()["reason"] == "bad_profile"
    openapi.check("POST", "/api/jobs", r)
    assert "no analysis profile 'owls'" in r.get_json()["error"] and "camera-trap" in r.get_json()["error"]
    assert files_under(settings.data) == before and store.list() == []


def test_a_broken_edit_of_the_profiles_file_is_shown_and_the_last_good_set_kept(client, settings, video_bytes):
    settings.profiles_path.write_text('[owls]\nfps = 2.0\n')
    assert '<option value="owls"' in client.get("/").get_data(as_text=True)
    settings.profiles_path.write_text('[owls]\nfps = "fast"\n')
    import os
    os.utime(settings.profiles_path, ns=(1, 1))
    page = client.get("/").get_data(as_text=True)
    assert '<option value="owls"' in page and "is not a float" in page and "stay in use" in page
