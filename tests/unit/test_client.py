"""The remote CLI pointed at something that is not a wildswarm web app (another console, a proxy's error
page): a clear error naming what answered, never a traceback."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

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
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


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
