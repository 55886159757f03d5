"""Downloads: files with range requests, the streamed zip, the old /output and /plot links, traversal."""
from __future__ import annotations

import io
import zipfile

import pytest

from webkit import files_under, make_done_job, make_running_job


@pytest.fixture
def done(store, video_bytes):
    return make_done_job(store, video_bytes)


def test_file_download(client, done, video_bytes):
    r = client.get(f"/jobs/{done.id}/files/labeled.mp4")
    assert r.status_code == 200 and r.mimetype == "video/mp4" and r.data == video_bytes
    assert r.headers["Accept-Ranges"] == "bytes"
    r = client.get(f"/jobs/{done.id}/files/summary.json?download=1")
    assert r.status_code == 200 and "attachment" in r.headers["Content-Disposition"]
    assert client.get(f"/jobs/{done.id}/files/trajectory.png").mimetype == "image/png"


def test_range_requests_let_the_video_seek(client, done, video_bytes):
    r = client.get(f"/jobs/{done.id}/files/labeled.mp4", headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.data == video_bytes[100:200]
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(video_bytes)}"
    r = client.get(f"/jobs/{done.id}/files/labeled.mp4", headers={"Range": f"bytes={len(video_bytes) + 5}-"})
    assert r.status_code == 416


def test_a_request_for_several_ranges_gets_the_whole_file_not_a_416(client, done, video_bytes):
    """Audit: a satisfiable request for several ranges (download managers and PDF readers send them) was
    answered 416 Range Not Satisfiable, an error, where HTTP lets a server that does not serve several
    ranges send the whole file (RFC 9110 14.2). A range wholly past the end is still a 416."""
    for ranges in ("bytes=0-9,100-199", "bytes=0-0,-1"):
        r = client.get(f"/jobs/{done.id}/files/labeled.mp4", headers={"Range": ranges})
        assert r.status_code == 200 and r.data == video_bytes and "Content-Range" not in r.headers, ranges
    r = client.get(f"/output/{done.output}", headers={"Range": "bytes=0-9,20-29"})
    assert r.status_code == 200 and r.data == video_bytes
    end = len(video_bytes)
    assert client.get(f"/jobs/{done.id}/files/labeled.mp4",
                      headers={"Range": f"bytes={end + 5}-{end + 9},{end + 20}-"}).status_code == 416


def test_conditional_requests(client, done):
    first = client.get(f"/jobs/{done.id}/files/labeled.mp4")
    r = client.get(f"/jobs/{done.id}/files/labeled.mp4", headers={"If-None-Match": first.headers["ETag"]})
    assert r.status_code == 304


def test_zip_of_all_outputs_is_streamed(client, done, video_bytes):
    r = client.get(f"/jobs/{done.id}/outputs.zip")
    assert r.status_code == 200 and r.mimetype == "application/zip" and r.is_streamed
    assert r.headers["Content-Disposition"] == 'attachment; filename="fox.zip"'
    archive = zipfile.ZipFile(io.BytesIO(r.data))
    assert archive.testzip() is None
    expected = ("labeled.mp4", "trajectory.png", "summary.json", "detections.json", "keypoints.h5", "keypoints.csv",
                "tracks.csv")
    assert sorted(archive.namelist()) == sorted(f"fox/{n}" for n in expected)
    assert archive.read("fox/labeled.mp4") == video_bytes


def test_api_download_paths(client, bearer, done, video_bytes, anon, openapi):
    r = anon.get(f"/api/jobs/{done.id}/files/labeled.mp4", headers=bearer)
    assert r.status_code == 200 and r.data == video_bytes
    openapi.check("GET", "/api/jobs/{job_id}/files/{filename}", r)
    r = anon.get(f"/api/jobs/{done.id}/outputs.zip", headers=bearer)
    assert r.status_code == 200 and zipfile.ZipFile(io.BytesIO(r.data)).testzip() is None
    openapi.check("GET", "/api/jobs/{job_id}/outputs.zip", r)
    r = anon.get(f"/api/jobs/{done.id}/files/nothing.txt", headers=bearer)
    assert r.status_code == 404 and r.get_json()["reason"] == "not_found"
    openapi.check("GET", "/api/jobs/{job_id}/files/{filename}", r)


def test_no_downloads_before_done(client, store):
    store.submit("abcdef0123456789", "q.mp4")
    assert client.get("/jobs/abcdef0123456789/files/labeled.mp4").status_code == 404
    assert client.get("/jobs/abcdef0123456789/outputs.zip").status_code == 404


def test_missing_result_folder(client, store):
    make_running_job(store, name="q.mp4")
    store.finish("abcdef0123456789", "worker-3/x", output="q", outputs=[], frames=1, untrained=False, timings={})
    assert client.get("/jobs/abcdef0123456789/outputs.zip").status_code == 404
    assert b"empty or missing" in client.get("/jobs/abcdef0123456789").data


def test_old_output_link_plays_the_labeled_video(client, done, video_bytes):
    r = client.get("/output/fox")
    assert r.status_code == 200 and r.mimetype == "video/mp4" and r.data == video_bytes
    r = client.get("/output/fox", headers={"Range": "bytes=0-9"})
    assert r.status_code == 206 and r.data == video_bytes[:10]


def test_old_output_link_lists_a_folder_without_video(client, settings, done):
    (settings.data / "output" / "fox" / "labeled.mp4").unlink()
    r = client.get("/output/fox")
    assert r.status_code == 200 and r.mimetype == "text/html"
    page = r.get_data(as_text=True)
    assert 'href="/output/fox/summary.json"' in page and "labeled.mp4" not in page
    assert client.get("/output/fox/summary.json").get_json()["untrained_weights"] is True


def test_old_plot_link(client, done):
    r = client.get("/plot/fox")
    assert r.status_code == 200 and r.mimetype == "image/png" and r.data.startswith(b"\x89PNG")
    assert client.get("/plot/nobody").status_code == 404
    assert client.get("/output/nobody").status_code == 404


TRAVERSALS = ["..", "../..", "%2e%2e", "..%2f..%2fetc", "%2fetc%2fpasswd", ".hidden", "fox%00", "fox/../../uploads",
              "..%5c..%5cuploads", "%2e%2e%2f%2e%2e%2fsecret.txt", "fox/..%2f..%2fsecret.txt"]


@pytest.mark.parametrize("tail", TRAVERSALS)
def test_traversal_never_reads_outside(client, settings, done, tmp_path, tail):
    (tmp_path / "secret.txt").write_text("TOP SECRET")
    (settings.data / "uploads" / "x.txt").write_text("TOP SECRET")
    before = files_under(tmp_path)
    for url in (f"/output/{tail}", f"/plot/{tail}", f"/output/fox/{tail}", f"/jobs/{done.id}/files/{tail}",
                f"/api/jobs/{tail}", f"/jobs/{tail}", f"/logs/{tail}/raw", f"/static/{tail}"):
        r = client.get(url)
        assert r.status_code in (301, 302, 308, 404), (url, r.status_code)
        assert b"TOP SECRET" not in r.data
    assert files_under(tmp_path) == before


def test_links_inside_results_are_not_followed(client, settings, done, tmp_path):
    (tmp_path / "secret.txt").write_text("TOP SECRET")
    (settings.data / "output" / "fox" / "extra.txt").symlink_to(tmp_path / "secret.txt")
    (settings.data / "output" / "linked").symlink_to(tmp_path)
    assert client.get(f"/jobs/{done.id}/files/extra.txt").status_code == 404
    assert b"TOP SECRET" not in client.get(f"/jobs/{done.id}/outputs.zip").data
    assert client.get("/output/linked").status_code == 404
    assert client.get("/output/linked/secret.txt").status_code == 404


def test_a_file_whose_name_is_not_utf8_breaks_no_page_and_no_zip(client, anon, bearer, settings, done):
    """Audit: a file added by hand to a result folder under a name that is not UTF-8 (``caf\\xe9.csv``, as a
    Latin-1 system writes it) made the job's page, its API record and the old listing a 500 and cut the
    job's zip short; a node log so named made the whole node-logs page a 500. No link can name such a
    file: it is left out, like a hidden file or a link."""
    import os
    with open(os.fsencode(settings.data / "output" / "fox") + b"/caf\xe9.csv", "wb") as fh:
        fh.write(b"added by hand\n")
    with open(os.fsencode(settings.data / "logs") + b"/w\xe9.log", "wb") as fh:
        fh.write(b"a line\n")
    (settings.data / "logs" / "w1.log").write_text("another line\n")
    for url in (f"/jobs/{done.id}", "/output/fox?list=1", "/logs"):
        assert client.get(url).status_code == 200, url
    r = anon.get(f"/api/jobs/{done.id}", headers=bearer)
    assert r.status_code == 200 and "summary.json" in {f["name"] for f in r.get_json()["files"]}
    archive = zipfile.ZipFile(io.BytesIO(client.get(f"/jobs/{done.id}/outputs.zip").data))
    assert archive.testzip() is None and "fox/labeled.mp4" in archive.namelist()
    assert "w1" in client.get("/logs").get_data(as_text=True)
