#!/usr/bin/env python3
"""Benchmark: the job store at a million jobs, against the JSON-file records it replaced.

    python bench/jobstore.py [--jobs 1000000] [--json-jobs 20000]     (or: make bench-jobstore)

Fills a schema of its own in PostgreSQL with ``--jobs`` job records in a realistic mix of
states (most done, some failed and refused, a backlog queued, a few running, names like a
camera-trap project's), then measures, in the same run:

* list the newest 50 (what the jobs page and ``/api/jobs`` ask), p50 and p95;
* filter by status, by node, and by a name search, p50 and p95;
* count by status, and what the cluster page (queue counts, every 5 s) and the jobs page's filters
  (the nodes, the species seen) ask;
* claim contention: 16 threads claiming from 10,000 queued jobs, each trying every job in
  its own random order: every job must be claimed exactly once; claims per second;
* what the jobs page's poll transfers: the first load of 50 jobs against a steady-state
  ``?since=`` poll when nothing changed, and one when one job made progress (bytes);
* the baseline, the old way: the newest 50 of ``--json-jobs`` JSON records read from a
  folder (what ``JobStore.all()`` did before), p50 and p95.

Prints each figure, the ratios against the baseline, and the targets (list and filter
p95 under 50 ms at one million; zero double claims); writes them as JSON to
bench/results/jobstore-<timestamp>.json. The store is the one WILDSWARM_DB_* names
(``make bench-jobstore`` starts scripts/postgres-local.sh's); the schema is dropped after.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from wildswarm.config import Settings  # noqa: E402
from wildswarm.jobs import JobQuery, JobStatus, JobStore  # noqa: E402
from wildswarm.jobs.cluster import ClusterStats  # noqa: E402
from wildswarm.jobs.db import Database  # noqa: E402
from wildswarm.jobs.findings import species_seen  # noqa: E402

RESULTS = ROOT / "bench" / "results"
LOCAL_PASSWORD_FILE = Path("/var/lib/wildswarm-test/db-password")
TARGET_P95_MS = 50.0
MIX = [("done", 0.85), ("failed", 0.04), ("refused", 0.01), ("queued", 0.095), ("running", 0.005)]
NODES = [f"node{n:02d}" for n in range(1, 9)]


def settings() -> Settings:
    env = dict(os.environ)
    if not env.get("WILDSWARM_DB_PASSWORD") and not env.get("WILDSWARM_DB_PASSWORD_FILE") \
            and LOCAL_PASSWORD_FILE.exists():
        env["WILDSWARM_DB_PASSWORD_FILE"] = str(LOCAL_PASSWORD_FILE)
    return Settings.from_env(env, db_schema=f"bench_{uuid.uuid4().hex[:8]}", node="bench", db_pool_size=17)


def name_of(i: int) -> str:
    site, day = i % 97, (i // 97) % 365
    return f"cam{site:02d}_2026-{1 + day // 31:02d}-{1 + day % 28:02d}_{i:07d}.mp4"


def rows(n: int, rng: random.Random):
    """(id, input_name, status, ...) tuples for COPY, created over a year, newest last."""
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    states = [s for s, _ in MIX]
    weights = [w for _, w in MIX]
    for i in range(n):
        state = rng.choices(states, weights)[0]
        created = start + timedelta(seconds=i * 31)
        node = rng.choice(NODES) if state in ("done", "failed", "running") else None
        status = "failed" if state == "refused" else state
        finished = created + timedelta(minutes=3) if status in ("done", "failed") else None
        lease = datetime.now(timezone.utc) + timedelta(hours=1) if status == "running" else None
        # a queued video's length is known from its header (read at intake) until a worker starts it
        media = '{"frames": 900, "fps": 30.0, "duration_s": 30.0}' if status == "queued" else "{}"
        yield (f"{i:016x}", name_of(i), status, 60 if status == "done" else 0, 0 if status == "queued" else 60, node,
               1 if node else 0, created, created, finished, lease, "bench" if lease else None,
               state == "refused", status == "done" and i % 10 == 0, 1_000_000 + i,
               "PipelineError: out of memory" if state == "failed" else ("not a video" if state == "refused" else None),
               media)


def fill(store: JobStore, n: int) -> float:
    rng = random.Random(7)
    t0 = time.perf_counter()
    with store.db.connection("filling") as conn:
        with conn.cursor().copy(
                "COPY jobs (id, input_name, status, frames_done, frames_total, node, attempts, created_at, "
                "published_at, finished_at, lease_until, lease_owner, refused, untrained, size_bytes, error, media) "
                "FROM STDIN") as copy:
            for row in rows(n, rng):
                copy.write_row(row)
        conn.execute("VACUUM ANALYZE jobs")    # the steady state of a store that has lived a while
    return time.perf_counter() - t0


def timed(fn, repeat: int) -> dict:
    fn()                                             # warm
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(1000 * (time.perf_counter() - t0))
    samples.sort()
    return {"p50_ms": round(statistics.median(samples), 2),
            "p95_ms": round(samples[min(len(samples) - 1, int(0.95 * len(samples)))], 2), "n": repeat}


def claim_contention(store: JobStore, n: int = 10_000, threads: int = 16) -> dict:
    ids = [f"c{i:015x}" for i in range(n)]
    with store.db.connection("claim setup") as conn:
        with conn.cursor().copy("COPY jobs (id, input_name, status, published_at) FROM STDIN") as copy:
            for job_id in ids:
                copy.write_row((job_id, f"{job_id}.mp4", "queued", datetime.now(timezone.utc)))
    wins: dict[str, list[int]] = {}
    lock, barrier = threading.Lock(), threading.Barrier(threads)
    attempts = [0] * threads

    def work(t: int) -> None:
        order = ids[:]
        random.Random(t).shuffle(order)
        barrier.wait()
        for job_id in order:
            attempts[t] += 1
            if store.claim(job_id, f"bench-{t}", f"node{t}"):
                with lock:
                    wins.setdefault(job_id, []).append(t)

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    t0 = time.perf_counter()
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    seconds = time.perf_counter() - t0
    doubles = sum(1 for w in wins.values() if len(w) > 1)
    return {"jobs": n, "threads": threads, "claimed": len(wins), "double_claims": doubles,
            "never_claimed": n - len(wins), "claim_attempts": sum(attempts), "seconds": round(seconds, 2),
            "claims_per_s": round(n / seconds, 1), "attempts_per_s": round(sum(attempts) / seconds, 1)}


def poll_bytes(store: JobStore, s: Settings) -> dict:
    """Bytes the jobs page moves: first load of 50, then ?since= polls (nothing changed; one job moved)."""
    from wildswarm.publisher import Publisher
    from wildswarm.web import create_app
    with tempfile.TemporaryDirectory(prefix="bench-web-") as data:
        return _poll_bytes(store, create_app(s.replace(web_auth=False, data=Path(data)), store=store,
                                             publisher=Publisher(s, "bench")))


def _poll_bytes(store: JobStore, app) -> dict:
    c = app.test_client()
    first = c.get("/api/jobs?limit=50")
    seq = first.get_json()["seq"]
    idle = c.get(f"/api/jobs?since={seq}")
    running = store.list(JobQuery(status=JobStatus.RUNNING, limit=1))[0]
    with store.db.connection() as conn:        # one job makes progress, as its worker would record it
        conn.execute("UPDATE jobs SET frames_done = frames_done + 1, seq = nextval('job_seq') WHERE id = %s",
                     (running.id,))
    moved = c.get(f"/api/jobs?since={seq}")
    assert len(moved.get_json()["jobs"]) == 1
    return {"first_load_bytes": len(first.data), "idle_poll_bytes": len(idle.data), "one_change_poll_bytes":
            len(moved.data), "idle_poll_ms": timed(lambda: c.get(f"/api/jobs?since={seq}"), 50)["p50_ms"],
            "first_load_ms": timed(lambda: c.get("/api/jobs?limit=50"), 20)["p50_ms"]}


def json_baseline(n: int, repeat: int) -> dict:
    """The old way: every record a JSON file; the newest 50 = read them all, sort, slice."""
    folder = Path(tempfile.mkdtemp(prefix="bench-json-jobs-"))
    rng = random.Random(7)
    for row in rows(n, rng):
        record = {"id": row[0], "input_name": row[1], "status": row[2], "frames_done": row[3],
                  "frames_total": row[4], "node": row[5], "attempts": row[6], "created_at": row[7].isoformat(),
                  "finished_at": row[9].isoformat() if row[9] else None, "error": row[15]}
        (folder / f"{row[0]}.json").write_text(json.dumps(record, indent=2, sort_keys=True))

    def newest_50():
        jobs = [json.loads(p.read_text()) for p in folder.glob("*.json")]
        jobs.sort(key=lambda j: j["created_at"], reverse=True)
        return jobs[:50]

    result = timed(newest_50, repeat)
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1_000_000)
    ap.add_argument("--json-jobs", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=40)
    args = ap.parse_args()
    s = settings()
    store = JobStore(Database(s, max_size=17).open(wait_seconds=30))
    out: dict = {"jobs": args.jobs, "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "cpus": os.cpu_count()}
    try:
        print(f"filling {args.jobs:,} jobs ...", flush=True)
        out["fill_seconds"] = round(fill(store, args.jobs), 1)
        print(f"  {out['fill_seconds']} s; counts {store.count_by_status()}", flush=True)
        queries = {
            "list newest 50": JobQuery(limit=50),
            "list newest 50, page 20": JobQuery(limit=50, offset=950),
            "filter status=failed": JobQuery(status=JobStatus.FAILED, limit=50),
            "filter status=queued, oldest first": JobQuery(status=JobStatus.QUEUED, oldest_first=True, limit=50),
            "filter node=node03": JobQuery(node="node03", limit=50),
            "search 'cam42_2026-07'": JobQuery(search="cam42_2026-07", limit=50),
            "search 'rare' (no match)": JobQuery(search="zzzz", limit=50),
            "filter untrained + date range": JobQuery(untrained=True, created_from=datetime(2026, 3, 1).date(),
                                                      created_to=datetime(2026, 3, 31).date(), limit=50),
        }
        out["queries"] = {}
        for label, q in queries.items():
            out["queries"][label] = timed(lambda q=q: store.list(q), args.repeat)
            out["queries"][label]["with_count_p95_ms"] = timed(
                lambda q=q: (store.list(q), store.count(q, cap=10_000)), max(10, args.repeat // 2))["p95_ms"]
        out["count_by_status"] = timed(store.count_by_status, max(5, args.repeat // 4))
        # what every open cluster page asks every 5 s, and the jobs page's filters on each load
        cluster = ClusterStats(store.db)
        out["pages"] = {"cluster page: queue counts": timed(cluster.queue, max(5, args.repeat // 4)),
                        "cluster page: backlog": timed(lambda: cluster.backlog(lambda profile: 1.0),
                                                       max(5, args.repeat // 4)),
                        "jobs page: nodes": timed(store.nodes, max(5, args.repeat // 4)),
                        "jobs page: species seen": timed(lambda: species_seen(store), max(5, args.repeat // 4))}
        print("claim contention ...", flush=True)
        out["claims"] = claim_contention(store)
        out["poll"] = poll_bytes(store, s)
    finally:
        store.db.drop_schema()
        store.close()
    print(f"baseline: {args.json_jobs:,} JSON records ...", flush=True)
    out["json_baseline"] = json_baseline(args.json_jobs, max(5, args.repeat // 8))
    report(out, args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"jobstore-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"\nwritten to {path.relative_to(ROOT)}")
    worst = max(v["p95_ms"] for v in out["queries"].values())
    return 0 if worst < TARGET_P95_MS and out["claims"]["double_claims"] == 0 else 1


def report(out: dict, args) -> None:
    base = out["json_baseline"]
    print(f"\njob store, {out['jobs']:,} jobs (filled in {out['fill_seconds']} s), {out['cpus']} CPUs")
    print(f"{'query':<38}{'p50 ms':>9}{'p95 ms':>9}{'+count p95':>12}{'baseline/p50':>14}")
    for label, r in out["queries"].items():
        print(f"{label:<38}{r['p50_ms']:>9.2f}{r['p95_ms']:>9.2f}{r['with_count_p95_ms']:>12.2f}"
              f"{base['p50_ms'] / r['p50_ms']:>13.0f}x")
    c = out["count_by_status"]
    print(f"{'count by status':<38}{c['p50_ms']:>9.2f}{c['p95_ms']:>9.2f}")
    for label, r in out["pages"].items():
        print(f"{label:<38}{r['p50_ms']:>9.2f}{r['p95_ms']:>9.2f}")
    print(f"{'baseline: newest 50 of JSON records':<38}{base['p50_ms']:>9.2f}{base['p95_ms']:>9.2f}"
          f"   ({args.json_jobs:,} records, read and sorted)")
    cl = out["claims"]
    print(f"\nclaims: {cl['threads']} threads on {cl['jobs']:,} queued jobs: {cl['claimed']:,} claimed, "
          f"{cl['double_claims']} double, {cl['never_claimed']} never; {cl['claims_per_s']:,} claims/s "
          f"({cl['attempts_per_s']:,} attempts/s)")
    p = out["poll"]
    print(f"jobs page: first load {p['first_load_bytes']:,} bytes ({p['first_load_ms']} ms); steady poll "
          f"{p['idle_poll_bytes']} bytes ({p['idle_poll_ms']} ms); a poll after one change "
          f"{p['one_change_poll_bytes']:,} bytes")
    worst = max(v["p95_ms"] for v in out["queries"].values())
    print(f"targets: list/filter p95 < {TARGET_P95_MS:.0f} ms: {'met' if worst < TARGET_P95_MS else 'MISSED'} "
          f"(worst {worst:.1f} ms); zero double claims: {'met' if cl['double_claims'] == 0 else 'MISSED'}")


if __name__ == "__main__":
    sys.exit(main())
