"""wildswarm.healthcheck: the containers' healthcheck command."""
from __future__ import annotations

import http.server
import threading

import pytest

from wildswarm.config import Settings
from wildswarm.healthcheck import check, main, url_for, web_port


@pytest.fixture
def server():
    """A tiny HTTP server on 127.0.0.1: /ok answers 200, anything else 500."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/ok" else 500)
            self.end_headers()

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_urls_come_from_the_components_own_settings():
    s = Settings(worker_metrics_port=9201, producer_metrics_port=9202, web_bind="0.0.0.0:8123")
    assert url_for("worker", s) == "http://127.0.0.1:9201/metrics"
    assert url_for("producer", s) == "http://127.0.0.1:9202/metrics"
    assert url_for("web", s) == "http://127.0.0.1:8123/healthz"
    assert url_for("http://x:1/y", s) == "http://x:1/y"
    with pytest.raises(SystemExit):
        url_for("nonsense", s)


@pytest.mark.parametrize("bind, port", [("0.0.0.0:8000", 8000), ("[::]:8080, 127.0.0.1:9", 8080),
                                        ("127.0.0.1:1", 1)])
def test_web_port_is_the_first_binds(bind, port):
    assert web_port(bind) == port


@pytest.mark.parametrize("bind", ["unix:/run/web.sock", "8000", "host:"])
def test_web_port_refuses_what_it_cannot_check(bind):
    with pytest.raises(SystemExit):
        web_port(bind)


def test_check_is_healthy_only_on_200(server):
    assert check(f"{server}/ok")[0] is True
    ok, line = check(f"{server}/broken")
    assert ok is False and "HTTP 500" in line


def test_check_reports_a_closed_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ok, line = check(f"http://127.0.0.1:{port}/metrics", timeout=2)
    assert ok is False and str(port) in line


def test_main_exit_status(server, capsys):
    assert main([f"{server}/ok"]) == 0
    assert "healthy" in capsys.readouterr().out
    assert main([f"{server}/nope"]) == 1
    assert "unhealthy" in capsys.readouterr().out
    assert main([]) == 2
