"""Container healthchecks: ``python3 -m wildswarm.healthcheck worker|producer|web|URL``.

Exit 0 when the component's HTTP endpoint answers 200 within the timeout, 1
otherwise, with one line saying why. A worker must also report its job loop
healthy: ``wildswarm_worker_stalled_seconds`` 0 in its metrics (a loop that
cannot take work, with a delivery it never settled, turns the task unhealthy,
and Swarm replaces it). The port comes from the same settings the
component reads (``WILDSWARM_WORKER_METRICS_PORT``, ``..._PRODUCER_METRICS_PORT``,
the port of ``WILDSWARM_WEB_BIND``), so a changed port needs no change to the image.
Standard library only: it runs in every image, the slim ones included.
"""
from __future__ import annotations

import sys
import urllib.error
import urllib.request

from wildswarm.config import Settings


def web_port(bind: str) -> int:
    """The port of gunicorn's first ``host:port`` bind (``unix:`` sockets are not checked here)."""
    first = bind.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"healthcheck: cannot tell the web app's port from WILDSWARM_WEB_BIND={bind!r}")
    return int(port)


def url_for(component: str, settings: Settings) -> str:
    if "://" in component:
        return component
    if component == "worker":
        return f"http://127.0.0.1:{settings.worker_metrics_port}/metrics"
    if component == "producer":
        return f"http://127.0.0.1:{settings.producer_metrics_port}/metrics"
    if component == "web":
        return f"http://127.0.0.1:{web_port(settings.web_bind)}/healthz"
    raise SystemExit(f"healthcheck: unknown component {component!r} (worker, producer, web or a URL)")


STALLED_METRIC = "wildswarm_worker_stalled_seconds"


def stalled(metrics_text: str) -> float:
    """The worker's stall in seconds, read from its metrics (0 when absent)."""
    for line in metrics_text.splitlines():
        if line.startswith(STALLED_METRIC + " "):
            try:
                return float(line.split()[1])
            except (IndexError, ValueError):
                return 0.0
    return 0.0


def check(url: str, timeout: float = 5.0) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read(4 << 20).decode("utf-8", "replace") if url.endswith("/metrics") else ""
            if response.status == 200 and (seconds := stalled(body)) > 0:
                return False, f"{url}: the job loop has been stalled for {seconds:.0f} s"
            return response.status == 200, f"{url}: HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"{url}: HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return False, f"{url}: {exc}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    ok, line = check(url_for(args[0], Settings.from_env()))
    print(("healthy: " if ok else "unhealthy: ") + line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
