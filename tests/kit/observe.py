"""Looking at what the system did: jobs in the store, consumers on the queue, node-log lines."""
from __future__ import annotations

from wildswarm.broker import Broker
from wildswarm.config import Settings
from wildswarm.jobs import Job, JobQuery, JobStore
from wildswarm.layout import Layout

from kit.waiting import wait_for


def consumers(settings: Settings) -> int:
    with Broker(settings) as b:
        return b.counts()[1]


def wait_consuming(settings: Settings, n: int, procs=(), timeout: float = 30) -> None:
    wait_for(lambda: consumers(settings) >= n, timeout, f"{n} consumer(s) on {settings.queue}", 0.2, procs)


def jobs_of(store: JobStore) -> dict[str, Job]:
    return {j.id: j for j in store.list(JobQuery(limit=10_000))}


def all_finished(store: JobStore, n: int) -> dict[str, Job] | None:
    jobs = jobs_of(store)
    return jobs if len(jobs) >= n and all(j.status.finished for j in jobs.values()) else None


def log_lines(settings: Settings) -> list[str]:
    logs = Layout(settings.data).logs
    return [line for p in sorted(logs.glob("*.log")) for line in p.read_text().splitlines()]


def started_lines(settings: Settings, job_id: str) -> list[str]:
    return [line for line in log_lines(settings) if f"job {job_id}" in line and "started" in line]


def waiting_in_input(settings: Settings) -> list[str]:
    """The files still in the drop zone: ``input/`` and its profile folders (which the producer makes)."""
    root = Layout(settings.data).input
    return sorted(str(p.relative_to(root)) for p in root.glob("*") if p.is_file()) + \
        sorted(str(p.relative_to(root)) for p in root.glob("*/*") if p.is_file())


def moved_inputs(settings: Settings, folder: str = "input_done") -> list[str]:
    return sorted(p.name for p in (Layout(settings.data).root / folder).iterdir())


def wait_moved(settings: Settings, expected, folder: str = "input_done", procs=(), timeout: float = 15) -> None:
    """Wait until ``folder`` (``input_done`` or ``input_failed``) holds exactly ``expected``.

    A worker records a job's outcome first and moves its input on just after (then acknowledges), so a
    test that has seen the outcome in the store must wait for the move, not look at once.
    """
    want = sorted(expected)
    wait_for(lambda: moved_inputs(settings, folder) == want, timeout, f"{folder}/ to hold {want}", 0.05, procs)
