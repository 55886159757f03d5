"""Ports, and small HTTP servers on 127.0.0.1 for tests."""
from __future__ import annotations

import contextlib
import socket
import threading
from http.server import ThreadingHTTPServer


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (``0.0.0.0``: on every interface, as a published port needs)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(handler):
    """``with serving(Handler) as url:`` a threaded HTTP server of ``handler`` (a BaseHTTPRequestHandler
    class) on a free port of 127.0.0.1, shut down at the end; ``url`` is ``http://127.0.0.1:<port>``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
