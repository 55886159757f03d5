#!/usr/bin/env python3
"""Benchmark: what the queue costs per job, against the same jobs run in-process without a broker.

    python bench/dispatch.py [--jobs 500] [--latency-jobs 100] [--workers 1,2,4]    (or: make bench-dispatch)

The job is trivial on purpose, so that what is measured is dispatch: the SleepAnalyzer test aid
(``wildswarm.testing``, NOT the real pipeline) with a zero-second, one-frame clip, which still
writes a small output folder atomically. Everything else is the real job system: job records
written (atomically, fsync'd) as the job starts, progresses and ends, the input moved to
``input_done/``, a log line per step.

(a) in-process  ``JobRunner(settings, SleepAnalyzer()).run(message)`` for each job in this process:
                the same per-job work, no broker, no other process.
(b) round trip  one worker process; jobs one after another: publish (persistent, confirmed), wait
                until the job's input appears in ``input_done/`` (the worker's last step before
                its ack), then publish the next. With prefetch 1 the next delivery waits for the
                previous ack, so the ack is inside the loop. (a) and (b) jobs alternate, one of
                each in turn, so both see the same machine load; overhead per job = (b) - (a),
                as the mean of the pairs and the median of the per-pair differences.
(c) throughput  N jobs published at once to 1, 2 and 4 worker processes (`wildswarm worker`);
                jobs per second from the first publish to the last input in ``input_done/``,
                each against an (a) run of N jobs made just before it.

Prints each figure with its ratio to (a) measured in the same run, and writes them as JSON to
bench/results/dispatch-<timestamp>.json. Target: overhead per job (b) - (a) under 50 ms.
The broker is the local one (``make broker``: scripts/rabbitmq-local.sh), or WILDSWARM_BROKER_*.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from wildswarm.broker import Broker  # noqa: E402
from wildswarm.config import Settings  # noqa: E402
from wildswarm.errors import BrokerError  # noqa: E402
from wildswarm.jobs import job_id_for  # noqa: E402
from wildswarm.layout import Layout  # noqa: E402
from wildswarm.messages import JobMessage  # noqa: E402
from wildswarm.testing import SleepAnalyzer, write_clip  # noqa: E402
from wildswarm.worker import JobRunner  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TEST_PASSWORD_FILE = Path("/var/lib/wildswarm-test/broker-password")
AID = "wildswarm.testing:SleepAnalyzer"
TARGET_MS = 50.0


def base_settings() -> Settings:
    env = dict(os.environ)
    if not env.get("WILDSWARM_BROKER_PASSWORD") and not env.get("WILDSWARM_BROKER_PASSWORD_FILE") \
            and TEST_PASSWORD_FILE.exists():
        env["WILDSWARM_BROKER_PASSWORD_FILE"] = str(TEST_PASSWORD_FILE)
    return Settings.from_env(env)


def settings_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WILDSWARM_")}
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if value is not None and f.name != "broker_password":
            env["WILDSWARM_" + f.name.upper()] = ",".join(value) if isinstance(value, tuple) else str(value)
    env["WILDSWARM_BROKER_PASSWORD"] = settings.broker_password
    return env


def make_jobs(layout: Layout, n: int, prefix: str) -> list[JobMessage]:
    msgs = []
    for i in range(n):
        path = write_clip(layout.input / f"{prefix}{i:04d}.mp4", seconds=0, frames=1)
        msgs.append(JobMessage(job_id_for(path), path.name))
    return msgs


def in_process(settings: Settings, n: int, tag: str = "job") -> dict:
    layout = Layout(settings.data).ensure()
    runner = JobRunner(settings, SleepAnalyzer())
    for msg in make_jobs(layout, 3, f"warm{tag}"):
        runner.run(msg)
    msgs = make_jobs(layout, n, tag)
    t0 = time.perf_counter()
    for msg in msgs:
        runner.run(msg)
    total = time.perf_counter() - t0
    return {"jobs": n, "seconds": total, "jobs_per_s": n / total, "ms_per_job": 1000 * total / n}


class Workers:
    def __init__(self, settings: Settings, n: int, logdir: Path):
        self.settings, self.procs = settings, []
        for i in range(n):
            env = settings_env(settings.replace(node=f"bench-w{i}"))
            log = open(logdir / f"worker{i}.log", "wb")
            self.procs.append(subprocess.Popen([sys.executable, "-m", "wildswarm", "worker"], env=env,
                                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 60
        with Broker(settings) as b:
            while b.counts()[1] < n:
                if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                    raise SystemExit(f"workers did not start; see {logdir}")
                time.sleep(0.1)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()


def wait_done(layout: Layout, name: str, timeout: float = 30) -> None:
    target, deadline = layout.input_done / name, time.monotonic() + timeout
    while not target.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"job {name} not done after {timeout} s")
        time.sleep(0.0005)


def count_done(layout: Layout) -> int:
    with os.scandir(layout.input_done) as it:
        return sum(1 for _ in it)


def paired(inproc: Settings, settings: Settings, n: int, logdir: Path) -> dict:
    """(a) and (b) alternating: one in-process job, then one round trip, n times."""
    lay_a, lay_b = Layout(inproc.data).ensure(), Layout(settings.data).ensure()
    runner = JobRunner(inproc, SleepAnalyzer())
    workers = Workers(settings, 1, logdir)
    a_ms, b_ms = [], []
    try:
        with Broker(settings) as broker:
            jobs_a = make_jobs(lay_a, n + 5, "pair")
            jobs_b = make_jobs(lay_b, n + 5, "pair")
            for k, (ma, mb) in enumerate(zip(jobs_a, jobs_b)):
                t = time.perf_counter()
                runner.run(ma)
                ta = time.perf_counter() - t
                t = time.perf_counter()
                broker.publish(mb.encode(), message_id=mb.job_id)
                wait_done(lay_b, mb.input_name)
                tb = time.perf_counter() - t
                if k >= 5:                      # the first five warm up both
                    a_ms.append(1000 * ta)
                    b_ms.append(1000 * tb)
    finally:
        workers.stop()
    diffs = sorted(b - a for a, b in zip(a_ms, b_ms))
    b_sorted = sorted(b_ms)
    return {"jobs": n, "a_mean_ms": statistics.fmean(a_ms), "b_mean_ms": statistics.fmean(b_ms),
            "b_median_ms": statistics.median(b_ms), "b_p95_ms": b_sorted[int(0.95 * (n - 1))],
            "b_max_ms": b_sorted[-1], "overhead_mean_ms": statistics.fmean(b_ms) - statistics.fmean(a_ms),
            "overhead_median_ms": statistics.median(diffs)}


def throughput(settings: Settings, n_workers: int, n: int, logdir: Path) -> dict:
    layout = Layout(settings.data).ensure()
    workers = Workers(settings, n_workers, logdir)
    try:
        with Broker(settings) as broker:
            warm = make_jobs(layout, 2 * n_workers, "warm")
            for msg in warm:
                broker.publish(msg.encode(), message_id=msg.job_id)
            while count_done(layout) < len(warm):
                time.sleep(0.001)
            msgs = make_jobs(layout, n, "job")
            t0 = time.perf_counter()
            for msg in msgs:
                broker.publish(msg.encode(), message_id=msg.job_id)
            published = time.perf_counter() - t0
            deadline = time.monotonic() + 300
            while count_done(layout) < len(warm) + n:
                if time.monotonic() > deadline:
                    raise SystemExit("throughput run did not finish in 300 s")
                time.sleep(0.001)
            total = time.perf_counter() - t0
    finally:
        workers.stop()
    return {"workers": n_workers, "jobs": n, "seconds": total, "jobs_per_s": n / total,
            "publish_ms_per_job": 1000 * published / n}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=500, help="jobs per throughput run and in-process (default 500)")
    p.add_argument("--latency-jobs", type=int, default=100, help="sequential round trips (default 100)")
    p.add_argument("--workers", default="1,2,4", help="worker counts for throughput (default 1,2,4)")
    p.add_argument("--out", type=Path, default=None, help="JSON file (default bench/results/dispatch-<ts>.json)")
    args = p.parse_args(argv)
    counts = [int(x) for x in args.workers.split(",") if x]

    base = base_settings().replace(analyzer=AID, worker_metrics_port=-1, producer_metrics_port=-1)
    try:
        with Broker(base.replace(queue="wildswarm.bench.probe")) as b:
            b.delete_topology()
    except BrokerError as exc:
        raise SystemExit(f"no broker: {exc}\nstart the local one with `make broker` (scripts/rabbitmq-local.sh)")

    work = Path(tempfile.mkdtemp(prefix="wildswarm-bench-"))
    runs: list[Settings] = []

    def fresh(tag: str) -> Settings:
        s = base.replace(data=work / tag / "data", queue=f"wildswarm.bench.{os.getpid()}.{tag}")
        runs.append(s)
        return s

    print(f"dispatch benchmark: trivial job (SleepAnalyzer test aid: 0 s, 1 frame), {os.cpu_count()} CPU(s), "
          f"load average {os.getloadavg()[0]:.1f}, broker {base.broker_host}:{base.broker_port}")
    try:
        b = paired(fresh("pair-a"), fresh("pair-b"), args.latency_jobs, work)
        overhead = b["overhead_mean_ms"]
        print(f"(a) in-process, no broker   {b['a_mean_ms']:7.2f} ms/job")
        print(f"(b) round trip, 1 worker    {b['b_mean_ms']:7.2f} ms/job (median {b['b_median_ms']:.2f}, "
              f"p95 {b['b_p95_ms']:.2f}, max {b['b_max_ms']:.2f})  = {b['b_mean_ms'] / b['a_mean_ms']:.2f}x (a)")
        print(f"    overhead per job (b)-(a) {overhead:7.2f} ms mean, {b['overhead_median_ms']:.2f} ms median "
              f"of pairs; target < {TARGET_MS:.0f} ms: {'met' if overhead < TARGET_MS else 'NOT met'}")
        c = []
        for n in counts:
            base_a = in_process(fresh(f"a{n}"), args.jobs)
            r = throughput(fresh(f"w{n}"), n, args.jobs, work)
            r["in_process_jobs_per_s"] = base_a["jobs_per_s"]
            r["ratio"] = r["jobs_per_s"] / base_a["jobs_per_s"]
            c.append(r)
            print(f"(c) {n} worker(s)  {r['jobs_per_s']:7.1f} jobs/s  vs (a) just before {base_a['jobs_per_s']:6.1f} "
                  f"jobs/s = {r['ratio']:.2f}x   (publishing: {r['publish_ms_per_job']:.2f} ms/job)")
    finally:
        for s in runs:
            try:
                with Broker(s) as br:
                    br.delete_topology()
            except BrokerError:
                pass
        shutil.rmtree(work, ignore_errors=True)

    doc = {"when": datetime.now().isoformat(timespec="seconds"), "cpus": os.cpu_count(),
           "load_average": os.getloadavg(), "job": "SleepAnalyzer (test aid), 0 s, 1 frame",
           "paired_round_trip": b, "overhead_ms_per_job": overhead, "target_ms": TARGET_MS, "throughput": c}
    out = args.out or RESULTS / f"dispatch-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    print(f"results written to {out}")


if __name__ == "__main__":
    main()
