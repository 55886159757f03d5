"""``wildswarm download --server``: a result file whose download broke off resumes where it stopped.

A labeled video is gigabytes; over a field station's link a download that broke off at 90 % started
again from nothing, every time. The web app serves result files with byte ranges and an ETag, so
the part already received is kept (hidden, beside the destination) and the next run asks for the rest
only, if the file is still the one it began (``If-Range``); a file changed since is fetched whole.

The server is the real web app over real HTTP (Werkzeug's server in a thread); a WSGI layer in front
of it cuts the first answer for the file short, as a dropped link does.
"""
from __future__ import annotations

import re
import threading

import pytest
from click.testing import CliRunner

from webkit import TOKEN, make_done_job
from wildswarm.cli import main
from wildswarm.layout import Layout


class Cutting:
    """The app, but the next ``cuts`` answers for a labeled video stop after ``after`` bytes (the connection
    then closes); every request's Range header is noted."""

    def __init__(self, app, after: int):
        self.app, self.after, self.cuts, self.ranges, self.sent = app, after, 0, [], []

    def __call__(self, environ, start_response):
        if not environ["PATH_INFO"].endswith("/labeled.mp4"):
            return self.app(environ, start_response)
        self.ranges.append(environ.get("HTTP_RANGE"))
        body = self.app(environ, start_response)
        cut, self.cuts = self.cuts > 0, max(0, self.cuts - 1)
        return self._counted(body, self.after if cut else None)

    def _counted(self, body, limit):
        sent = 0
        try:
            for block in body:
                if limit is not None and sent + len(block) >= limit:
                    yield block[:limit - sent]
                    self.sent.append(limit)
                    raise ConnectionAbortedError("the link dropped")      # Werkzeug closes the connection
                sent += len(block)
                yield block
            self.sent.append(sent)
        finally:
            if hasattr(body, "close"):
                body.close()


@pytest.fixture
def served(app):
    from werkzeug.serving import make_server
    cutting = Cutting(app.wsgi_app, after=0)
    app.wsgi_app = cutting
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", cutting
    server.shutdown()


@pytest.fixture
def big_video(video_bytes) -> bytes:
    return video_bytes * (1 + (3 << 20) // len(video_bytes))          # several of the client's 1 MiB blocks


def kept(output: str) -> int:
    """The bytes a broken-off download says it kept (whole blocks of what arrived before the cut)."""
    return int(re.search(r"broke off after (\d+) bytes", output)[1])


def download(base: str, tmp_path, job_id: str):
    return CliRunner().invoke(main, ["download", job_id, "labeled.mp4", "--out", str(tmp_path / "got"),
                                     "--server", base, "--token", TOKEN], env={"WILDSWARM_DATA": str(tmp_path / "x")})


def test_a_download_that_broke_off_resumes_where_it_stopped(served, store, big_video, tmp_path):
    base, cutting = served
    job = make_done_job(store, big_video)
    cutting.after, cutting.cuts = 2_500_000, 1
    first = download(base, tmp_path, job.id)
    assert first.exit_code == 2 and 0 < kept(first.output) <= 2_500_000, first.output
    assert "run the same command again to go on from there" in first.output and "Traceback" not in first.output
    assert not (tmp_path / "got" / "labeled.mp4").exists()
    have = kept(first.output)

    again = download(base, tmp_path, job.id)
    assert again.exit_code == 0, again.output
    assert (tmp_path / "got" / "labeled.mp4").read_bytes() == big_video
    assert cutting.ranges == [None, f"bytes={have}-"] and cutting.sent == [2_500_000, len(big_video) - have]
    assert [p.name for p in (tmp_path / "got").iterdir()] == ["labeled.mp4"]        # nothing hidden left


def test_a_file_changed_since_the_download_broke_off_is_fetched_whole(served, store, big_video, tmp_path):
    """The job analysed again (a retry with other weights) rewrote its labeled video: the bytes kept are of
    the old one, and the server, asked for the rest only if the file is unchanged (If-Range), sends it whole."""
    base, cutting = served
    job = make_done_job(store, big_video)
    cutting.after, cutting.cuts = 1_000_000, 1
    assert download(base, tmp_path, job.id).exit_code == 2
    new = big_video[::-1]
    (Layout(store.db.settings.data).output / "fox" / "labeled.mp4").write_bytes(new)
    again = download(base, tmp_path, job.id)
    assert again.exit_code == 0, again.output
    assert (tmp_path / "got" / "labeled.mp4").read_bytes() == new and cutting.sent[-1] == len(new)
    assert [p.name for p in (tmp_path / "got").iterdir()] == ["labeled.mp4"]


def test_a_download_that_broke_off_twice_resumes_twice(served, store, big_video, tmp_path):
    base, cutting = served
    job = make_done_job(store, big_video)
    cutting.after, cutting.cuts = 1_200_000, 2
    first = download(base, tmp_path, job.id)
    second = download(base, tmp_path, job.id)
    assert second.exit_code == 2 and kept(first.output) < kept(second.output) <= 2_400_000, second.output
    assert download(base, tmp_path, job.id).exit_code == 0
    assert (tmp_path / "got" / "labeled.mp4").read_bytes() == big_video
    assert cutting.ranges == [None, f"bytes={kept(first.output)}-", f"bytes={kept(second.output)}-"]
