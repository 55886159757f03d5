"""A webhook receiver for the tests: an HTTP server on 127.0.0.1 that records what it is sent."""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """An HTTP server on 127.0.0.1 that answers ``codes`` in turn (then 204), after ``delay`` seconds."""

    def __init__(self, codes=(), delay: float = 0.0):
        self.codes, self.delay, self.got = list(codes), delay, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.got.append((dict(self.headers), body))
                time.sleep(outer.delay)
                self.send_response(outer.codes.pop(0) if outer.codes else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook?token=abc"

    def close(self):
        self.server.shutdown()
        self.server.server_close()
