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


class Streamer:
    """An HTTP server on 127.0.0.1 that answers 200 at once, then sends a body of ``total`` bytes in chunks of
    ``chunk``, ``pause`` seconds apart (a receiver that trickles, or one that answers with a flood);
    ``sent`` counts the bytes the client took. ``head``: raw bytes sent in place of the status line and
    headers, the trickle then following them (a receiver that sends its headers a byte at a time)."""

    def __init__(self, total: int, chunk: int = 1, pause: float = 0.0, head: bytes | None = None):
        self.sent = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                try:
                    if head is None:
                        self.send_response(200)
                        self.send_header("Content-Length", str(total))
                        self.end_headers()
                    else:
                        self.wfile.write(head)
                    while outer.sent < total:
                        self.wfile.write(b"x" * chunk)
                        self.wfile.flush()
                        outer.sent += chunk
                        time.sleep(pause)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def slow_headers(pause: float = 0.2) -> Streamer:
    """A receiver that answers a status line at once, then its headers a byte every ``pause`` seconds, for as
    long as it is let (it holds its caller without a read ever waiting longer than a timeout)."""
    return Streamer(total=10**6, chunk=1, pause=pause, head=b"HTTP/1.1 200 OK\r\nX-Slow: ")
