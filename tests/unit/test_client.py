"""The remote CLI pointed at something that is not a wildswarm web app (another console, a proxy's error
page): a clear error naming what answered, never a traceback."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler

import pytest
from click.testing import CliRunner

from kit.net import serving
from wildswarm.cli import main

ANSWERS = {"/html": (200, "text/html", b"<html><body>RabbitMQ Management</body></html>"),
           "/list": (500, "application/json", b"[1, 2]"),
           "/scalar": (200, "application/json", b"42")}


@pytest.fixture(scope="module")
def other_server():
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            code, kind, body = ANSWERS[next(p for p in ANSWERS if self.path.startswith(p))]
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    with serving(Handler) as url:
        yield url


@pytest.mark.parametrize("where, said", [("/html", "200 text/html, not the wildswarm API"),
                                         ("/list", "500 Internal Server Error"),
                                         ("/scalar", "200 application/json, not the wildswarm API")])
@pytest.mark.parametrize("command", [["status"], ["status", "0123456789abcdef"]])
def test_a_server_that_is_not_wildswarm_is_a_clear_error(other_server, tmp_path, where, said, command):
    out = CliRunner().invoke(main, [*command, "--server", other_server + where, "--token", "t" * 24],
                             env={"WILDSWARM_DATA": str(tmp_path)})
    assert out.exit_code != 0 and not isinstance(out.exception, (AttributeError, ValueError, TypeError)), \
        repr(out.exception)
    assert said in out.output and "Traceback" not in out.output


JOB_ID = "0123456789abcdef"
#: A done job as the API lists it, whose files are served by ``broken_server`` in the ways named.
DONE_JOB = {"id": JOB_ID, "input_name": "trap.mp4", "status": "done", "output": "trap",
            "files": [{"name": f"{how}.json", "size": 500 if how == "bad-length" else 1000, "label": how,
                       "url": f"/files/{how}"}
                      for how in ("short-length", "cut-chunks", "bad-length", "close-delimited")],
            "links": {"self": f"/api/jobs/{JOB_ID}", "page": f"/jobs/{JOB_ID}", "zip": "/files/cut-zip"}}


def cut_zip() -> bytes:
    """The first half of a real zip of results: whole files, but no table of contents at its end."""
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(4):
            z.writestr(f"trap/part-{i}.json", json.dumps({"frame": i, "boxes": [[i, i, 10, 10]] * 50}))
    data = buf.getvalue()
    return data[:len(data) // 2]


@pytest.fixture(scope="module")
def broken_server():
    """A server whose file downloads are 500 bytes: cut off from 1000 with a Content-Length the body never
    reaches, a chunked body without its last chunk, or an HTTP/1.0 body that simply ends (the connection
    closed); or whole, but with a Content-Length that is no number."""
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            if self.path.startswith("/api/jobs/"):
                body = json.dumps(DONE_JOB).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            how = self.path.rsplit("/", 1)[-1]
            self.close_connection = True
            if how in ("close-delimited", "cut-zip"):
                self.protocol_version = "HTTP/1.0"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if how == "short-length":
                self.send_header("Content-Length", "1000")
            elif how == "bad-length":
                self.send_header("Content-Length", "lots")
            elif how == "cut-chunks":
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if how == "cut-zip":
                self.wfile.write(cut_zip())
                return
            self.wfile.write(b"%x\r\n%s\r\n" % (500, b"x" * 500) if how == "cut-chunks" else b"x" * 500)

        def log_message(self, *args):
            pass
    with serving(Handler) as url:
        yield url


def download(server: str, tmp_path, *names: str):
    return CliRunner().invoke(main, ["download", JOB_ID, *names, "--out", str(tmp_path / "got"), "--server", server,
                                     "--token", "t" * 24], env={"WILDSWARM_DATA": str(tmp_path)})


@pytest.mark.parametrize("how", ["short-length", "cut-chunks"])
def test_a_download_that_breaks_off_is_one_clear_error_and_leaves_nothing(broken_server, tmp_path, how):
    out = download(broken_server, tmp_path, f"{how}.json")
    assert out.exit_code == 2 and isinstance(out.exception, SystemExit), repr(out.exception)
    assert f"/files/{how}: the download broke off" in out.output and "Traceback" not in out.output
    assert list((tmp_path / "got").iterdir()) == []


def test_a_content_length_that_is_no_number_does_not_stop_a_download(broken_server, tmp_path):
    out = download(broken_server, tmp_path, "bad-length.json")
    assert out.exit_code == 0, out.output
    assert (tmp_path / "got" / "bad-length.json").read_bytes() == b"x" * 500


def test_a_file_shorter_than_the_job_lists_is_not_kept(broken_server, tmp_path):
    """An HTTP/1.0 body (or a proxy's) that ends early has no length to fall short of: the size the job's
    listing gives is what tells the download is whole."""
    out = download(broken_server, tmp_path, "close-delimited.json")
    assert out.exit_code == 2 and isinstance(out.exception, SystemExit), repr(out.exception)
    assert "/files/close-delimited: 500 bytes of 1000" in out.output and "Traceback" not in out.output
    assert list((tmp_path / "got").iterdir()) == []


def test_a_zip_of_results_cut_short_is_not_kept(broken_server, tmp_path):
    """A job's zip is made as it is sent, so no size is known to check it against; over HTTP/1.0 (or a proxy
    that answers so) a zip cut off mid-way simply ended, and was kept as if whole: a results zip that no
    tool opens, found out later in the field. A zip must end in its table of contents."""
    out = download(broken_server, tmp_path)
    assert out.exit_code == 2 and isinstance(out.exception, SystemExit), repr(out.exception)
    assert "/files/cut-zip: the zip was cut off" in out.output and "Traceback" not in out.output
    assert list((tmp_path / "got").iterdir()) == []


@pytest.fixture(scope="module")
def moved_server():
    """A web app that has moved (a proxy sending http to https, a new path): ``/moved/<code>/api/...``
    answers a redirect to ``/v2/api/...`` (a POST: with that code), where GET /api/jobs is a listing and a
    POST has to come with its whole body."""
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 10                       # a POST that never sends its body is dropped, not waited on forever

        def answer(self, code: int, body: dict, location: str | None = None):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            if location:
                self.send_header("Location", location)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path.startswith("/v2/api/jobs/"):
                self.answer(404, {"error": "no such job"})
            elif self.path.startswith("/v2/"):
                self.answer(200, {"jobs": [], "total": 0})
            else:
                self.answer(301, {}, "/v2/" + self.path.split("/", 3)[-1])       # /moved/<code>/api/...

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            code = int(self.path.split("/")[2]) if self.path.startswith("/moved/") else 201
            self.answer(code, {}, "/v2/api/jobs")

        def log_message(self, *args):
            pass
    with serving(Handler) as url:
        yield url


@pytest.mark.parametrize("code", [301, 302, 307, 308])
def test_an_upload_redirected_elsewhere_is_refused_with_where_to(moved_server, tmp_path, code):
    """requests would follow a redirected POST as a GET (and read the listing there as the upload's answer)
    or send it again without its streamed body (and wait for an answer that never comes)."""
    video = tmp_path / "owl.mp4"
    video.write_bytes(b"not really a video")
    out = CliRunner().invoke(main, ["submit", str(video), "--server", f"{moved_server}/moved/{code}",
                                    "--token", "t" * 24], env={"WILDSWARM_DATA": str(tmp_path)})
    assert out.exit_code == 2 and isinstance(out.exception, SystemExit), repr(out.exception)
    assert f"{code} redirected to {moved_server}/v2/api/jobs" in out.output and "Traceback" not in out.output


@pytest.mark.parametrize("where", ["under-a-file", "a-folder-there"])
def test_a_download_that_cannot_be_written_is_one_clear_error(broken_server, tmp_path, where):
    """--out under a file, or a folder where the file goes (read-only and full disks alike): what cannot be
    written, as `wildswarm export` says it, not a traceback."""
    (tmp_path / "notes.txt").write_text("mine")
    out_dir = tmp_path / "notes.txt" / "got" if where == "under-a-file" else tmp_path / "got"
    if where == "a-folder-there":
        (out_dir / "bad-length.json").mkdir(parents=True)
    out = CliRunner().invoke(main, ["download", JOB_ID, "bad-length.json", "--out", str(out_dir), "--server",
                                    broken_server, "--token", "t" * 24], env={"WILDSWARM_DATA": str(tmp_path)})
    assert out.exit_code == 2 and isinstance(out.exception, SystemExit), repr(out.exception)
    assert "cannot write" in out.output and "Traceback" not in out.output
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert where == "under-a-file" or [p.name for p in out_dir.iterdir()] == ["bad-length.json"]


@pytest.fixture(scope="module")
def camera_stream():
    """An address that streams without end (a camera's MJPEG, a metrics feed): what a mistyped --server may
    answer with."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n\r\n" + b"\xff" * 65536 + b"\r\n")
            except OSError:                 # the client went away
                pass

        def log_message(self, *args):
            pass
    with serving(Handler) as url:
        yield url


def test_an_endless_answer_that_is_not_json_is_not_read(camera_stream, tmp_path):
    """Its content type says it is not the API before a byte of it is read: the body is never read to its end
    (there is none; the client would only grow until it is killed)."""
    run = subprocess.run([sys.executable, "-m", "wildswarm", "status", "--server", camera_stream, "--token",
                          "t" * 24], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "WILDSWARM_DATA": str(tmp_path)})
    assert run.returncode == 2 and "200 multipart/x-mixed-replace, not the wildswarm API" in run.stderr, run.stderr


@pytest.fixture(scope="module")
def silent_server():
    """A web app that takes an upload and never answers (``/read``), or stops reading it part way (``/stall``):
    a hung server, a proxy whose upstream died."""
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            if self.path.startswith("/read"):
                self.rfile.read(int(self.headers["Content-Length"]))
            release.wait(60)
            self.close_connection = True

        def log_message(self, *args):
            pass
    with serving(Handler) as url:
        yield url
        release.set()                  # the handlers waiting end, so the server's shutdown does not wait on them


@pytest.mark.parametrize("where", ["read", "stall"])
def test_an_upload_the_server_never_answers_ends_in_an_error(silent_server, tmp_path, where):
    """The upload waited for its answer without a limit (the send too, once the server stopped reading): a
    `wildswarm submit --server` of a night's videos hung for good at the first hung server, saying nothing.
    The answer is waited for as long as the web app can take (ANSWER_SECONDS; 1 s here), each send for the
    client's timeout, then it is a clear error (the first saying the video may have been queued)."""
    import time

    from wildswarm.client import Client, ServerError
    video = tmp_path / "owl.mp4"
    with open(video, "wb") as fh:                  # larger than the loopback's socket buffers together
        fh.truncate(64 << 20)
    t0 = time.monotonic()
    said = {"read": "/api/jobs: no answer within 1 s", "stall": "/api/jobs: the server stopped taking what was sent"}
    with Client(f"{silent_server}/{where}", "t" * 24, timeout=1, answer_timeout=1) as c:
        with pytest.raises(ServerError, match=said[where]):
            c.submit(video)
    assert time.monotonic() - t0 < 20
