"""Deployments: kept in the job store, chosen on upload with the recording time, shown on the job page."""
from __future__ import annotations

import io
from datetime import datetime

import pytest

from kit.videos import write_video
from webkit import files_under

CAM = {"id": "cam42-2026-07", "location_name": "Mara river, north bank", "latitude": -1.4061,
       "longitude": 35.0112, "coordinate_uncertainty": 30, "deployment_start": "2026-07-01T06:00:00+03:00",
       "deployment_end": "2026-07-21T18:00:00+03:00", "camera_model": "Reconyx-HF2X", "camera_height": 0.8}


def test_a_deployment_is_saved_listed_and_replaced_through_the_api(anon, bearer, openapi):
    r = anon.post("/api/deployments", json=CAM, headers=bearer)
    assert r.status_code == 201, r.get_json()
    openapi.check("POST", "/api/deployments", r)
    saved = datetime.fromisoformat(r.get_json()["deployment_start"])
    assert saved == datetime.fromisoformat(CAM["deployment_start"]) and saved.tzinfo is not None   # the same instant
    r = anon.get("/api/deployments", headers=bearer)
    openapi.check("GET", "/api/deployments", r)
    assert [d["id"] for d in r.get_json()["deployments"]] == [CAM["id"]]
    changed = anon.post("/api/deployments", json={**CAM, "camera_height": 1.2}, headers=bearer)
    assert changed.status_code == 201 and changed.get_json()["camera_height"] == 1.2
    assert len(anon.get("/api/deployments", headers=bearer).get_json()["deployments"]) == 1


def test_a_bad_deployment_is_refused_with_what_is_wrong(anon, bearer, openapi):
    for bad, words in (({**CAM, "latitude": 91}, "latitude must be between"),
                       ({**CAM, "longitude": None}, "both latitude and longitude"),
                       ({**CAM, "id": "../etc"}, "a deployment id is"),
                       ({**CAM, "deployment_end": "2026-06-01T00:00:00Z"}, "ends before it starts"),
                       ({**CAM, "deployment_start": "yesterday"}, "not an ISO 8601"),
                       # a day alone was midnight UTC, a time without offset UTC: the last day's videos then
                       # fell outside the deployment, and every Camtrap DP date was hours off
                       ({**CAM, "deployment_end": "2026-07-21"}, "a day without its time of day"),
                       ({**CAM, "deployment_start": "2026-07-01T06:00:00"}, "has no UTC offset"),
                       ({**CAM, "colour": "green"}, "unknown deployment field")):
        r = anon.post("/api/deployments", json=bad, headers=bearer)
        assert r.status_code == 400 and words in r.get_json()["error"], (bad, r.get_json())
        openapi.check("POST", "/api/deployments", r)
    assert anon.get("/api/deployments", headers=bearer).get_json()["deployments"] == []


def test_a_deployment_with_numbers_of_the_wrong_kind_is_refused_and_the_list_stays_json(anon, bearer, openapi):
    """A number field given a list, an overflowing float, NaN or infinity, true, or a fraction of a metre
    of uncertainty is a 400 saying which field, not a 500; and nothing is stored that would make every
    later GET /api/deployments answer with NaN, which is not JSON."""
    for bad, field in (({**CAM, "latitude": [1]}, "latitude"),
                       ({**CAM, "coordinate_uncertainty": 1e999}, "coordinate_uncertainty"),
                       ({**CAM, "coordinate_uncertainty": 2.5}, "coordinate_uncertainty"),
                       ({**CAM, "camera_height": "nan"}, "camera_height"),
                       ({**CAM, "camera_height": "inf"}, "camera_height"),
                       ({**CAM, "longitude": True}, "longitude"),
                       ({**CAM, "location_name": ["a", "b"]}, "location_name"),
                       ({**CAM, "comments": {"a": 1}}, "comments")):
        r = anon.post("/api/deployments", json=bad, headers=bearer)
        assert r.status_code == 400 and field in r.get_json()["error"], (bad, r.status_code, r.get_data(as_text=True))
        openapi.check("POST", "/api/deployments", r)
    r = anon.get("/api/deployments", headers=bearer)
    assert r.get_json()["deployments"] == []
    ok = anon.post("/api/deployments", json={**CAM, "coordinate_uncertainty": "30", "camera_height": "0.8",
                                             "camera_id": 1234}, headers=bearer)
    assert ok.status_code == 201, ok.get_json()           # numbers as text, and a camera id given as a number
    got = ok.get_json()
    assert got["coordinate_uncertainty"] == 30 and got["camera_height"] == 0.8 and got["camera_id"] == "1234"


def upload_with(c, video: bytes, **fields):
    return c.post("/api/jobs", data={**fields, "file": (io.BytesIO(video), "trap.mp4", "video/mp4")},
                  headers={"X-CSRF-Token": c.csrf}, content_type="multipart/form-data")


def test_an_upload_keeps_its_deployment_and_recording_time_and_the_page_shows_them(client, store, video_bytes):
    assert client.post("/api/deployments", json=CAM, headers={"X-CSRF-Token": client.csrf}).status_code == 201
    r = upload_with(client, video_bytes, deployment=CAM["id"], recorded_at="2026-07-03T05:12:00+03:00")
    assert r.status_code == 201, r.get_json()
    job = store.get(r.get_json()["job"]["id"])
    assert job.deployment_id == CAM["id"] and job.media["given_time"] == "2026-07-03T05:12:00+03:00"
    page = client.get(f"/jobs/{job.id}").get_data(as_text=True)
    assert CAM["id"] in page and "Mara river, north bank" in page and "2026-07-03T05:12:00+03:00 (given)" in page
    assert 'value="cam42-2026-07"' in client.get("/").get_data(as_text=True)        # offered on the upload page


def test_an_upload_naming_an_unknown_deployment_or_a_bad_time_is_refused_and_keeps_nothing(client, settings,
                                                                                       video_bytes):
    before = files_under(settings.data)
    r = upload_with(client, video_bytes, deployment="nowhere")
    assert r.status_code == 400 and r.get_json()["reason"] == "bad_deployment" and "nowhere" in r.get_json()["error"]
    r = upload_with(client, video_bytes, recorded_at="last tuesday")
    assert r.status_code == 400 and r.get_json()["reason"] == "bad_time"
    assert files_under(settings.data) - before <= {"logs", "logs/web-test.log"}


def test_the_video_s_own_creation_time_and_camera_are_read_at_intake(client, store, settings):
    import av
    path = write_video(settings.data.parent / "cam.mp4", frames=6)
    tagged = settings.data.parent / "tagged.mp4"
    with av.open(str(path)) as src, av.open(str(tagged), "w", options={"movflags": "use_metadata_tags"}) as dst:
        dst.metadata.update({"creation_time": "2026-07-04T21:05:09.000000Z", "make": "Reconyx", "model": "HF2X"})
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    r = upload_with(client, tagged.read_bytes())
    assert r.status_code == 201, r.get_json()
    media = store.get(r.get_json()["job"]["id"]).media
    assert media["creation_time"] == "2026-07-04T21:05:09+00:00"
    assert (media["make"], media["model"]) == ("Reconyx", "HF2X")


def test_the_deployments_page_adds_one_from_its_form(client):
    r = client.post("/deployments", data={**{k: str(v) for k, v in CAM.items()}, "csrf_token": client.csrf})
    assert r.status_code == 303
    page = client.get("/deployments").get_data(as_text=True)
    assert CAM["id"] in page and "Reconyx-HF2X" in page
    r = client.post("/deployments", data={"id": "x", "latitude": "100", "longitude": "0", "csrf_token": client.csrf})
    assert r.status_code == 400 and "latitude must be between" in r.get_data(as_text=True)


def test_a_deployment_field_holding_a_lone_surrogate_is_a_400_not_a_500(anon, bearer, openapi):
    """Audit: JSON may escape half a UTF-16 pair ("\\ud800"); such text cannot be UTF-8, and saving it
    crashed in the database driver (UnicodeEncodeError): a 500 where a 400 says which field."""
    r = anon.post("/api/deployments", data='{"id": "cam1", "location_name": "Mara \\ud800 river"}',
                  content_type="application/json", headers=bearer)
    assert r.status_code == 400 and "location_name" in r.get_json()["error"], (r.status_code, r.data[:300])
    openapi.check("POST", "/api/deployments", r)
    assert anon.get("/api/deployments", headers=bearer).get_json()["deployments"] == []


@pytest.mark.parametrize("given, said", [
    ("2026-07-03", "a day without its time of day"),
    ("2026-07-03T05:12:00", "no UTC offset"),
])
def test_a_recording_time_given_without_its_time_of_day_or_offset_is_asked_for_again(client, store, video_bytes,
                                                                                    given, said):
    """Audit: a recording time given as a day alone was taken as midnight UTC, and one without an offset as
    UTC (a camera's local time, typed from its screen, three hours off in Kenya): exported to Camtrap DP
    and NWB as the time the animals were seen. Both are asked for, never made up."""
    r = upload_with(client, video_bytes, recorded_at=given)
    assert r.status_code == 400 and r.get_json()["reason"] == "bad_time", r.get_json()
    assert said in r.get_json()["error"] and store.list() == []
