"""Ports."""
from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (``0.0.0.0``: on every interface, as a published port needs)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
