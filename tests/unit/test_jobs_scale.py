"""The job store at the size of a lab's year of camera traps: what a listing, a poll, a bulk action or the
producer's periodic passes ask is answered from an index, reading about as many rows as it answers, never
every row of the table (a page or a pass whose time grows with the jobs ever recorded).

Checked by the plan, not the clock (this machine's load varies): the statements a call runs are recorded
and run again under ``EXPLAIN ANALYZE`` (in a transaction rolled back), and the rows they read counted.
"""
import contextlib
import uuid

import pytest

from wildswarm.jobs import JobQuery, JobStatus, JobStore
from wildswarm.jobs.db import Database

ROWS = 40_000           # whole videos, created over a year (a table many times larger than a page)
READ_AT_MOST = 1_000    # rows a page of 50 may read (an index walked past a few that do not match)
DEPLOYMENTS = 12        # one camera deployment a month, as a camera-trap project's are


@pytest.fixture(scope="module")
def big_store(services, tmp_path_factory):
    """A job store of ``ROWS`` videos: most done (a third empty, the rest with a species), some failed or
    cancelled, a backlog queued; analysed with the default profile but for a few, with trained weights."""
    settings = services.settings(data=tmp_path_factory.mktemp("scale"), node="test",
                                 db_schema=f"t_{uuid.uuid4().hex[:12]}", db_pool_size=2)
    store = JobStore.connect(settings)
    try:
        with store.db.connection() as conn:
            conn.execute(f"INSERT INTO deployments (id) SELECT 'cam-' || m FROM generate_series(1, {DEPLOYMENTS}) m")
            conn.execute(
                "INSERT INTO jobs (id, input_name, status, node, created_at, finished_at, "
                "deployment_id, profile, untrained, animals, tracks, species, media) "
                "SELECT lpad(to_hex(g), 16, '0'), 'cam' || g %% 97 || '_' || g || '.mp4', s, "
                "CASE WHEN s <> 'queued' THEN 'node' || g %% 8 END, t, CASE WHEN s <> 'queued' THEN t END, "
                f"'cam-' || (1 + (g - 1) * {DEPLOYMENTS} / %(n)s), CASE WHEN g %% 500 = 0 THEN 'fast' ELSE 'default' END, "
                "g %% 1000 = 0, CASE WHEN s = 'done' THEN g %% 3 END, CASE WHEN s = 'done' THEN g %% 5 END, "
                "CASE WHEN s = 'done' AND g %% 3 > 0 THEN jsonb_build_object('deer', 1) ELSE '{}' END, "
                "jsonb_build_object('duration_s', g %% 600) "
                "FROM (SELECT g, timestamptz '2025-01-01' + g * (interval '365 days' / %(n)s) AS t, "
                "CASE WHEN g > %(n)s - 500 THEN 'queued' WHEN g %% 25 = 0 THEN 'failed' "
                "WHEN g %% 97 = 0 THEN 'cancelled' ELSE 'done' END AS s FROM generate_series(1, %(n)s) g) r",
                {"n": ROWS})
            conn.execute("VACUUM ANALYZE jobs")      # the steady state of a store that has lived a while
        yield store
    finally:
        store.db.drop_schema()
        store.close()


class _Recording:
    """A connection that notes each statement run on it."""

    def __init__(self, conn, seen: list):
        self._conn, self._seen = conn, seen

    def execute(self, query, params=None, **kw):
        self._seen.append((query, params))
        return self._conn.execute(query, params, **kw)

    def __getattr__(self, name):
        return getattr(self._conn, name)


@contextlib.contextmanager
def statements(store: JobStore):
    """The statements ``store`` runs inside the block, as (SQL, parameters)."""
    seen: list = []
    real = store.db.connection

    @contextlib.contextmanager
    def recording(action: str = "job store"):
        with real(action) as conn:
            yield _Recording(conn, seen)

    store.db.connection = recording
    try:
        yield seen
    finally:
        del store.db.connection


def _read(node: dict) -> int:
    """Rows the plan's scans read: what each returned and what each passed over."""
    own = 0
    if "Relation Name" in node:
        own = (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
               + node.get("Rows Removed by Index Recheck", 0)) * node.get("Actual Loops", 1)
    return own + sum(_read(child) for child in node.get("Plans", []))


def rows_read(store: JobStore, call) -> list[tuple[int, str]]:
    """(rows read, SQL) for each statement ``call()`` runs, run again under EXPLAIN ANALYZE and undone."""
    with statements(store) as seen:
        call()
    out = []
    with store.db.connection() as conn:
        for query, params in seen:
            with contextlib.suppress(_Undo), conn.transaction():
                plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + query, params).fetchone()["QUERY PLAN"]
                out.append((_read(plan[0]["Plan"]), query))
                raise _Undo
    return out


class _Undo(Exception):
    pass


def assert_bounded(store: JobStore, call, at_most: int = READ_AT_MOST) -> None:
    read = rows_read(store, call)
    assert read, "the call ran no statement"
    for n, query in read:
        assert n <= at_most, f"read {n} rows for: {query}"


@pytest.mark.parametrize("order", ["animals", "longest", "name"])
def test_every_order_of_the_jobs_page_reads_a_page_not_the_table(big_store, order):
    """Audit: sorting the jobs page (or /api/jobs) by most animals, longest or name read and sorted every
    video for each page (a seq scan and a top-N sort: 270-340 ms at 300,000 jobs, against under 1 ms)."""
    query = JobQuery(order=order)
    page = big_store.list(query)
    assert len(page) == 50
    assert_bounded(big_store, lambda: big_store.list(query))
    assert_bounded(big_store, lambda: big_store.list(JobQuery(order=order, offset=50)))


@pytest.mark.parametrize("query", [
    JobQuery(deployment="cam-1"), JobQuery(deployment="cam-12"), JobQuery(deployment="cam-99"),
    JobQuery(profile="fast"), JobQuery(profile="none-such"), JobQuery(untrained=True),
    JobQuery(node="node3"), JobQuery(status=JobStatus.CANCELLED), JobQuery(animals=False),
], ids=lambda q: ",".join(f"{k}={v}" for k, v in q.__dict__.items() if v != getattr(JobQuery(), k)))
def test_each_filter_of_the_jobs_page_reads_what_it_shows_not_the_table(big_store, query):
    """Audit: filtering the jobs page (or /api/jobs) by a deployment, a profile or untrained weights had no
    index in the listing's order: last year's deployment walked every newer video to find its own (150 ms at
    300,000 jobs), a rarely used profile or untrained weights read every row (75-120 ms), for the page and again
    for its count."""
    matches = big_store.count(query)
    assert_bounded(big_store, lambda: big_store.list(query))
    assert_bounded(big_store, lambda: big_store.count(query, cap=10_000), at_most=max(READ_AT_MOST, matches + 100))


def test_deleting_a_job_forgets_day_old_deletions_without_reading_them_all(store):
    """Audit: each deletion also forgets the deletions over a day old, by reading every deletion of the last day
    (a seq scan of deleted_jobs): a lab clearing out 100,000 videos in bulk (1,000 a request) read the deletions
    once for each, 28 ms a job at 100,000 of them (28 s a request, the work growing with the square of the jobs)."""
    with store.db.connection() as conn:
        conn.execute("INSERT INTO deleted_jobs (id, seq, deleted_at) SELECT lpad(to_hex(g), 16, '0'), "
                     "nextval('job_seq'), now() - interval '1 hour' FROM generate_series(1, 50000) g")
        conn.execute("ANALYZE deleted_jobs")
    job, _ = store.submit("f" * 16, "a.mp4")
    store.cancel(job.id, "test")
    assert_bounded(store, lambda: store.delete(job.id))
    assert store.changes(store.latest_seq() - 1).deleted == [job.id]


def test_the_notifiers_pass_reads_the_ended_jobs_due_not_the_whole_backlog(store):
    """Audit: every 5 s the notifier looked for ended jobs due a webhook through an index of every job whose
    notification waits, the queued and running ones included: a year of videos uploaded at once with their
    deployment's webhook had it read the whole backlog each pass (29 ms at 50,000 queued, growing with them)."""
    from wildswarm.notifier import Notifications
    with store.db.connection() as conn:        # the videos analysed before, then the year uploaded at once
        conn.execute("INSERT INTO jobs (id, input_name, status, finished_at) SELECT lpad(to_hex(g), 16, '0'), "
                     "g || '.mp4', 'done', now() FROM generate_series(100001, 160000) g")
        conn.execute("INSERT INTO jobs (id, input_name, webhook_url, notify_state) SELECT lpad(to_hex(g), 16, '0'), "
                     "g || '.mp4', 'http://127.0.0.1:9/hook', 'waiting' FROM generate_series(1, 30000) g")
        conn.execute("UPDATE jobs SET status = 'done', finished_at = now() WHERE id IN ('0000000000000001', "
                     "'0000000000000002')")
        conn.execute("ANALYZE jobs")
    table = Notifications(store.db)
    assert sorted(j.id for j in table.due(hold_seconds=0)) == ["0000000000000001", "0000000000000002"]
    assert_bounded(store, lambda: table.due(hold_seconds=0))
