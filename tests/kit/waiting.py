"""Waiting for a condition, with a deadline and a failure that says what was awaited."""
from __future__ import annotations

import time
from typing import Callable, Iterable

import pytest


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1,
             procs: Iterable = (), errors: tuple[type[BaseException], ...] = ()):
    """Poll ``predicate`` until truthy (returned) or fail after ``timeout`` seconds.

    ``procs``: :class:`kit.procs.Proc` whose output is shown if it times out. ``errors``:
    exceptions that mean "not yet" (a service still starting), the last one shown on failure.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except errors as exc:
            last_error = exc
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    detail = "\n".join(f"--- {p.name} (pid {p.pid}, alive={p.alive()}):\n{p.output()[-3000:]}" for p in procs)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}"
                + (f" (last error: {last_error!r})" if last_error else "") + (f"\n{detail}" if detail else ""))
