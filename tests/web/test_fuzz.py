"""Fuzzing the upload and API endpoints (hypothesis): no input gives a server error (5xx), every API
answer matches the OpenAPI document, and nothing is read or written outside the data root."""
from __future__ import annotations

import io
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from kit.fakes import FakeBroker
from kit.videos import write_video
from webkit import PASSWORD, SECRET, TOKEN, OpenAPI, files_under, make_done_job
from wildswarm.layout import Layout
from wildswarm.web import create_app
from wildswarm.publisher import Publisher

EXAMPLES = 100
FUZZ = hsettings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def world(tmp_path_factory, services):
    """One app for all examples (hypothesis runs many inputs per test), with a finished job in it."""
    import uuid

    from wildswarm.jobs import JobStore
    base = tmp_path_factory.mktemp("fuzz")
    (base / "outside.txt").write_text("TOP SECRET")
    settings = services.settings(data=base / "data", node="fuzz", web_password=PASSWORD, web_token=TOKEN,
                                 web_secret_key=SECRET, web_max_upload_bytes=256 * 1024,
                                 db_schema=f"fuzz_{uuid.uuid4().hex[:10]}")
    Layout(settings.data).ensure()
    store = JobStore.connect(settings)
    video = write_video(base / "v.mp4", frames=4).read_bytes()
    make_done_job(store, video)
    app = create_app(settings, store=store, publisher=Publisher(settings, "web", broker=FakeBroker()))
    outside_before = {p for p in files_under(base) if not p.startswith("data")}
    yield {"base": base, "settings": settings, "client": app.test_client(), "video": video, "openapi": OpenAPI()}
    outside_after = {p for p in files_under(base) if not p.startswith("data")}
    assert outside_after == outside_before
    assert not [p for p in (settings.data / "uploads").iterdir() if p.name.startswith(".upload-")]
    store.db.drop_schema()
    store.close()


segment = st.text(min_size=0, max_size=40)
names = st.one_of(st.text(max_size=300), st.sampled_from(["../../x.mp4", "/etc/passwd", "a\x00b.mp4", "C:\\x.mp4",
                                                          ".mp4", "..", "x.MP4", "clip.mp4", " .mp4", "%2e%2e.mp4"]))


def contents(video: bytes):
    return st.one_of(st.binary(max_size=4096), st.just(video), st.just(b""),
                     st.binary(max_size=512).map(lambda b: b"\x00\x00\x00\x18ftypisom" + b),
                     st.integers(0, len(video)).map(lambda n: video[:n]),       # truncated videos
                     st.binary(min_size=1, max_size=64).map(lambda b: video[:200] + b + video[264:]))


def no_server_error(r, what) -> None:
    assert r.status_code < 500, f"{what} -> {r.status_code}: {r.get_data(as_text=True)[:500]}"
    assert b"TOP SECRET" not in r.data


@FUZZ
@given(data=st.data())
def test_fuzz_uploads(world, data):
    c, openapi = world["client"], world["openapi"]
    name = data.draw(names, "name")
    content = data.draw(contents(world["video"]), "content")
    ctype = data.draw(st.sampled_from(["video/mp4", "application/octet-stream", "text/plain", ""]), "type")
    field = data.draw(st.sampled_from(["file", "file", "files", "other"]), "field")
    r = c.post("/api/jobs", data={field: (io.BytesIO(content), name, ctype or None)},
               content_type="multipart/form-data", headers=AUTH)
    no_server_error(r, f"upload {name!r}")
    openapi.check("POST", "/api/jobs", r)


@FUZZ
@given(body=st.binary(max_size=2048), ctype=st.sampled_from(["multipart/form-data", "multipart/form-data; boundary=x",
                                                             "application/json", "video/mp4", "text/plain", ""]))
def test_fuzz_raw_bodies(world, body, ctype):
    r = world["client"].post("/api/jobs", data=body, headers={**AUTH, "Content-Type": ctype})
    no_server_error(r, f"raw body {ctype}")
    world["openapi"].check("POST", "/api/jobs", r)


@FUZZ
@given(status=st.one_of(st.none(), segment), limit=st.one_of(st.none(), segment, st.integers().map(str)))
def test_fuzz_list(world, status, limit):
    query = {k: v for k, v in (("status", status), ("limit", limit)) if v is not None}
    r = world["client"].get("/api/jobs", query_string=query, headers=AUTH)
    no_server_error(r, f"list {query}")
    world["openapi"].check("GET", "/api/jobs", r)


@FUZZ
@given(job_id=st.one_of(segment, st.just("00c0ffee00c0ffee"), st.from_regex(r"[0-9a-f]{8,64}", fullmatch=True)),
       filename=st.one_of(segment, st.sampled_from(["labeled.mp4", "summary.json", "..", "../jobs"])),
       rng=st.one_of(st.none(), st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=30),
                     st.from_regex(r"bytes=[0-9]{0,6}-[0-9]{0,6}", fullmatch=True)))
def test_fuzz_job_paths(world, job_id, filename, rng):
    c, openapi = world["client"], world["openapi"]
    jid, fname = quote(job_id, safe=""), quote(filename, safe="")
    headers = dict(AUTH, **({"Range": rng} if rng else {}))
    for template, url in (("/api/jobs/{job_id}", f"/api/jobs/{jid}"),
                          ("/api/jobs/{job_id}/files/{filename}", f"/api/jobs/{jid}/files/{fname}"),
                          ("/api/jobs/{job_id}/outputs.zip", f"/api/jobs/{jid}/outputs.zip"),
                          (None, f"/output/{fname}"), (None, f"/plot/{fname}"), (None, f"/jobs/{jid}"),
                          (None, f"/output/fox/{fname}"), (None, f"/logs/{fname}")):
        r = c.get(url, headers=headers)
        no_server_error(r, url)
        if template and job_id and "/" not in job_id and "/" not in filename and r.status_code != 308:
            openapi.check("GET", template, r)
    r = c.post(f"/api/jobs/{jid}/retry", headers=AUTH)
    no_server_error(r, f"retry {job_id!r}")
    if job_id and "/" not in job_id and r.status_code != 308:
        openapi.check("POST", "/api/jobs/{job_id}/retry", r)


@FUZZ
@given(user=st.text(max_size=50), password=st.text(max_size=50), nxt=st.text(max_size=80),
       csrf=st.one_of(st.none(), st.text(max_size=50)))
def test_fuzz_login(world, user, password, nxt, csrf):
    c = world["client"].application.test_client()      # a fresh browser: no session
    form = {"user": user, "password": password, "next": nxt}
    if csrf is not None:
        form["csrf_token"] = csrf
    r = c.post("/login", data=form)
    no_server_error(r, "login")
    assert r.status_code in (400, 401)
    location = r.headers.get("Location", "")
    assert not location or location.startswith("/")
