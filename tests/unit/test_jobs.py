"""The job store on a real PostgreSQL: transitions, their preconditions, queries, the JSON import."""
import json
import threading
import time
from datetime import date

import pytest

from wildswarm.errors import JobConflict, JobError
from wildswarm.jobs import JobQuery, JobStatus, JobStore, job_id_for
from wildswarm.jobs.db import Database, migrations
from wildswarm.jobs.legacy import import_json_records

ID = "0123456789abcdef"


def ids(n: int) -> list[str]:
    return [f"{i:016x}" for i in range(1, n + 1)]


def test_status_is_a_str_enum():
    assert JobStatus("done") is JobStatus.DONE
    assert JobStatus.DONE == "done"
    assert JobStatus.FAILED.finished and not JobStatus.RUNNING.finished


def test_job_id_is_content_derived(tmp_path):
    a, b, c = tmp_path / "a.mp4", tmp_path / "b.mp4", tmp_path / "c.mp4"
    a.write_bytes(b"same")
    b.write_bytes(b"same")
    c.write_bytes(b"other")
    assert job_id_for(a) == job_id_for(b) != job_id_for(c)
    assert len(job_id_for(a)) == 16


def test_migrations_are_numbered_and_applied_once(db_settings):
    numbers = [n for n, _, _ in migrations()]
    assert numbers == sorted(set(numbers)) and numbers[0] == 1
    db = Database(db_settings).open()
    try:
        assert db.migrate() == []            # already applied by open()
        with db.connection() as conn:
            rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
        assert [r["version"] for r in rows] == numbers
    finally:
        db.close()


def test_submit_is_once_per_content(store):
    job, created = store.submit(ID, "a.mp4", 10)
    assert created and job.status is JobStatus.QUEUED and job.publish_pending and job.size_bytes == 10
    again, created = store.submit(ID, "other.mp4", 10)
    assert not created and again.input_name == "a.mp4"
    published = store.mark_published(ID)
    assert not published.publish_pending and published.seq > job.seq


def test_exactly_one_of_many_claims_wins(store):
    store.submit(ID, "a.mp4")
    winners, barrier = [], threading.Barrier(16)

    def claim(i):
        barrier.wait()
        if store.claim(ID, f"w{i}", f"node{i}"):
            winners.append(i)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    job = store.get(ID)
    assert job.status is JobStatus.RUNNING and job.attempts == 1 and job.node == f"node{winners[0]}"
    assert job.lease_until is not None


def test_only_the_lease_holder_changes_a_running_job(store):
    store.submit(ID, "a.mp4")
    store.claim(ID, "w1", "n1")
    assert store.heartbeat(ID, "w1") and not store.heartbeat(ID, "w2")
    assert store.progress(ID, "w1", 3, 12) and not store.progress(ID, "w2", 4, 12)
    assert store.finish(ID, "w2", output="a", outputs=[], frames=1, untrained=False, timings={}) is None
    assert store.fail(ID, "w2", "no") is None and store.requeue(ID, "w2", "no") is None
    assert store.get(ID).frames_done == 3


def test_a_finished_job_is_never_overwritten(store):
    store.submit(ID, "a.mp4")
    store.claim(ID, "w1", "n1")
    done = store.finish(ID, "w1", output="a", outputs=["summary.json"], frames=6, untrained=True,
                        timings={"total": 1.5})
    assert done.status is JobStatus.DONE and done.progress == 1.0 and done.outputs == ["summary.json"]
    assert store.claim(ID, "w2", "n2") is None
    assert store.fail(ID, "w1", "late failure") is None
    assert store.requeue(ID, "w1", "late retry") is None
    assert store.fail_abandoned(ID, "dead-lettered") is None
    with pytest.raises(JobConflict):
        store.reset_for_retry(ID, lambda job: job.input_name, stale_seconds=0)
    assert store.get(ID).status is JobStatus.DONE


def test_an_expired_lease_makes_the_job_claimable_again(db_settings):
    store = JobStore.connect(db_settings.replace(lease_seconds=0.3))
    try:
        store.submit(ID, "a.mp4")
        assert store.claim(ID, "w1", "n1")
        assert store.claim(ID, "w2", "n2") is None          # w1's lease lives
        time.sleep(0.5)
        taken = store.claim(ID, "w2", "n2")
        assert taken.node == "n2" and taken.attempts == 2
        assert not store.heartbeat(ID, "w1")                 # w1 learns it lost the job
    finally:
        store.close()


def test_requeue_with_a_delay_and_the_reconciler_questions(db_settings):
    store = JobStore.connect(db_settings.replace(lease_seconds=0.2))
    try:
        a, b, c = ids(3)
        for i in (a, b, c):
            store.submit(i, f"{i}.mp4")
        assert [j.id for j in store.pending()] == [a, b, c]
        for i in (a, b, c):
            store.mark_published(i)
        assert store.pending() == []
        store.claim(a, "w1", "n1")
        back = store.requeue(a, "w1", "attempt 1 failed: boom", delay_seconds=60)
        assert back.status is JobStatus.QUEUED and back.retry_at is not None and back.attempts == 1
        time.sleep(0.3)
        # published long enough ago, and due: b and c; a waits out its delay
        assert {j.id for j in store.unannounced(0.1)} == {b, c}
        store.claim(b, "w2", "n2")
        time.sleep(0.5)                                      # w2 stopped renewing its lease
        assert store.requeue_expired(10) == []               # ... but not for long enough yet
        (abandoned,) = store.requeue_expired(0.1)
        assert abandoned.id == b and abandoned.status is JobStatus.QUEUED and abandoned.publish_pending
    finally:
        store.close()


def test_dead_lettered_jobs_fail_unless_a_live_worker_holds_them(store):
    a, b = ids(2)
    store.submit(a, "a.mp4")
    store.submit(b, "b.mp4")
    failed = store.fail_abandoned(a, "dead-lettered: delivered too many times")
    assert failed.status is JobStatus.FAILED and "too many" in failed.error and failed.finished_at
    store.claim(b, "w1", "n1")
    assert store.fail_abandoned(b, "dead-lettered") is None
    assert store.get(b).status is JobStatus.RUNNING


def test_refused_files_are_failed_for_good(store):
    job = store.refuse(ID, "notes.txt", 5, "extension '.txt' is not accepted", "n1")
    assert job.status is JobStatus.FAILED and job.refused and "txt" in job.error
    with pytest.raises(JobConflict, match="refused"):
        store.reset_for_retry(ID, lambda j: j.input_name, stale_seconds=0)


def test_retry_a_failed_job_resets_it_and_runs_restore_under_the_lock(store):
    store.submit(ID, "a.mp4")
    store.claim(ID, "w1", "n1")
    store.fail(ID, "w1", "PipelineError: out of memory")
    job = store.reset_for_retry(ID, lambda j: "a-1.mp4", stale_seconds=300)
    assert job.status is JobStatus.QUEUED and job.publish_pending and job.attempts == 0
    assert job.input_name == "a-1.mp4" and job.error is None and job.node is None and job.finished_at is None
    with pytest.raises(JobConflict, match="already queued"):      # its message is being published
        store.reset_for_retry(ID, lambda j: "x.mp4", stale_seconds=300)


def test_two_concurrent_retries_are_one_retry_and_one_conflict(store):
    store.submit(ID, "a.mp4")
    store.claim(ID, "w1", "n1")
    store.fail(ID, "w1", "boom")
    barrier, results, restored = threading.Barrier(2), [], []

    def restore(job):
        restored.append(job.id)
        time.sleep(0.2)                   # the slow part (moving the input) happens under the row lock
        return job.input_name

    def retry():
        barrier.wait()
        try:
            store.reset_for_retry(ID, restore, stale_seconds=300)
            results.append("ok")
        except JobConflict:
            results.append("conflict")

    threads = [threading.Thread(target=retry) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["conflict", "ok"] and restored == [ID]


def test_a_stale_queued_job_may_be_retried_but_not_a_fresh_one(store):
    store.submit(ID, "a.mp4")
    store.mark_published(ID)
    with pytest.raises(JobConflict):
        store.reset_for_retry(ID, lambda j: j.input_name, stale_seconds=300)
    job = store.reset_for_retry(ID, lambda j: pytest.fail("a queued job's input is in place"), stale_seconds=0)
    assert job.publish_pending and job.status is JobStatus.QUEUED
    with pytest.raises(JobError):
        store.reset_for_retry("feedfacefeedface", lambda j: "x", stale_seconds=0)


def test_listing_filters_pages_and_counts_in_sql(store):
    names = ["Fox_A.mp4", "fox-b.mp4", "owl.mp4", "100%_real.mp4", "under_score.mp4"]
    for i, name in zip(ids(5), names):
        store.submit(i, name)
    first = ids(5)[0]
    store.claim(first, "w1", "node-a")
    store.finish(first, "w1", output="x", outputs=[], frames=1, untrained=True, timings={})
    newest = store.list(JobQuery(limit=2))
    assert [j.input_name for j in newest] == ["under_score.mp4", "100%_real.mp4"]
    assert [j.input_name for j in store.list(JobQuery(limit=2, offset=2))] == ["owl.mp4", "fox-b.mp4"]
    assert [j.input_name for j in store.list(JobQuery(limit=2, oldest_first=True))] == ["Fox_A.mp4", "fox-b.mp4"]
    assert {j.input_name for j in store.list(JobQuery(search="FOX"))} == {"Fox_A.mp4", "fox-b.mp4"}
    assert [j.input_name for j in store.list(JobQuery(search="%"))] == ["100%_real.mp4"]   # not a wildcard
    assert [j.input_name for j in store.list(JobQuery(search="o_l"))] == []                # _ is literal too ("owl")
    assert [j.input_name for j in store.list(JobQuery(status=JobStatus.DONE))] == ["Fox_A.mp4"]
    assert [j.input_name for j in store.list(JobQuery(node="node-a"))] == ["Fox_A.mp4"]
    assert [j.input_name for j in store.list(JobQuery(untrained=True))] == ["Fox_A.mp4"]
    today = date.today()
    assert len(store.list(JobQuery(created_from=today, created_to=today))) == 5
    assert store.list(JobQuery(created_to=date(2000, 1, 1))) == []
    assert store.count() == 5 and store.count(cap=3) == 3
    assert store.count(JobQuery(status=JobStatus.QUEUED)) == 4
    assert store.count_by_status() == {"queued": 4, "running": 0, "done": 1, "failed": 0, "cancelled": 0}
    assert store.nodes() == ["node-a"]


def test_a_name_search_finds_a_name_whose_letters_python_and_postgresql_lower_differently(store):
    """Python lowers "İ" to "i" and a combining dot, PostgreSQL to a plain "i": the search lowered in Python
    and the names lowered in SQL never met, so a video was not found by its own name."""
    store.submit(ID, "İzmir-kedi.mp4")
    for term in ("İzmir", "izmir", "İZMİR-KEDİ.mp4", "kedi"):
        assert [j.id for j in store.list(JobQuery(search=term))] == [ID], term
        assert store.count(JobQuery(search=term)) == 1, term


def test_changes_since_answers_only_what_changed(store):
    a, b = ids(2)
    store.submit(a, "a.mp4")
    store.submit(b, "b.mp4")
    changed, seq, deleted = store.changes(0)
    assert [j.id for j in changed] == [a, b] and seq == store.latest_seq() and deleted == []
    assert store.changes(seq) == ([], seq, [])
    store.claim(a, "w1", "n1")
    store.heartbeat(a, "w1")                   # a lease renewal is no visible change
    store.progress(a, "w1", 2, 10)
    changed, seq2, _ = store.changes(seq)
    assert [j.id for j in changed] == [a] and changed[0].frames_done == 2 and seq2 > seq


def test_changes_since_name_the_jobs_deleted_meanwhile_in_their_order(store):
    """Audit: a job deleted (by a colleague, or the CLI) stayed on every open jobs page as it was until the
    page was reloaded: the changes a page polls for never said a job was gone."""
    a, b, c = ids(3)
    for job_id in (a, b, c):
        store.submit(job_id, f"{job_id}.mp4")
        store.cancel(job_id, "test")
    _, seq, _ = store.changes(0)
    store.delete(a)
    store.delete(b)
    changed, seq2, deleted = store.changes(seq)
    assert changed == [] and deleted == [a, b] and seq2 == store.latest_seq() > seq
    assert store.changes(seq2) == ([], seq2, [])
    store.submit(a, "a-again.mp4")             # the same video again: the same id, back after its deletion
    changed, seq3, deleted = store.changes(seq)
    assert deleted == [a, b] and [j.id for j in changed] == [a] and seq3 > seq2
    first, upto, gone = store.changes(seq, limit=1)                  # a page at a time, nothing skipped
    assert (first, gone) == ([], [a]) and store.changes(upto, limit=1)[2] == [b]


def write_record(folder, **fields):
    folder.mkdir(parents=True, exist_ok=True)
    record = {"id": ID, "input_name": "a.mp4", "status": "queued", "created_at": "2026-01-01T10:00:00+00:00"}
    record.update(fields)
    (folder / f"{record['id']}.json").write_text(json.dumps(record))


def test_json_records_of_earlier_versions_are_imported_once(store, tmp_path):
    folder = tmp_path / "jobs"
    write_record(folder, id="00000000000000a1", status="done", node="w1", attempts=1, output="a",
                 outputs=["summary.json"], untrained=True, timings={"total": 2.0},
                 finished_at="2026-01-01T10:05:00+00:00")
    write_record(folder, id="00000000000000a2", input_name="b.mp4", status="failed",
                 error="refused: extension '.txt' is not accepted")
    write_record(folder, id="00000000000000a3", input_name="c.mp4", status="running", node="w2")
    write_record(folder, id="00000000000000a4", input_name="d.mp4", status="queued",
                 error="not queued yet: the broker was unreachable (refused)")
    (folder / "junk.json").write_text("{not json")
    (folder / "link.json").symlink_to(folder / "00000000000000a1.json")
    counts = import_json_records(store, folder)
    assert counts == {"imported": 4, "known": 0, "unreadable": 2}
    done = store.get("00000000000000a1")
    assert done.status is JobStatus.DONE and done.untrained and done.outputs == ["summary.json"]
    assert done.created_at.year == 2026 and done.timings == {"total": 2.0}
    refused = store.get("00000000000000a2")
    assert refused.refused and refused.error == "extension '.txt' is not accepted"
    for job_id in ("00000000000000a3", "00000000000000a4"):      # queued again, to be published
        job = store.get(job_id)
        assert job.status is JobStatus.QUEUED and job.publish_pending and job.error is None
    assert import_json_records(store, folder) is None            # once
    assert store.count() == 4


@pytest.mark.parametrize("bad", [
    {"id": "00000000000000A9"},                                  # not an id the store takes (upper case)
    {"input_name": "x" * 300 + ".mp4"},                          # longer than a name may be
    {"input_name": "a\u0000.mp4"},                               # NUL: not PostgreSQL text
    {"frames_done": 10**12},                                     # over an integer column
    {"attempts": 1e400},                                         # JSON's 1e400 is float infinity
    {"timings": {"total": float("nan")}},                        # NaN: not JSON PostgreSQL takes
    {"node": {"name": "w1"}},                                    # not text
    {"error": "\ud800"},                                         # a lone surrogate: not UTF-8
], ids=["id", "long-name", "nul", "int-range", "infinity", "nan", "node-object", "surrogate"])
def test_a_malformed_json_record_is_unreadable_and_never_keeps_the_others_out(store, tmp_path, bad):
    """One record an old version (or a disk error) left malformed is counted unreadable: the good records
    are still imported, once, instead of the whole import failing (or crashing the producer) on every start."""
    folder = tmp_path / "jobs"
    write_record(folder, id="00000000000000b1", status="done", output="a")
    record = {"id": "00000000000000b2", "input_name": "b.mp4", "status": "failed", **bad}
    (folder / "00000000000000b2.json").write_text(json.dumps(record))
    (folder / "deep.json").write_text("[" * 100_000 + "]" * 100_000)   # nested past Python's recursion limit
    assert import_json_records(store, folder) == {"imported": 1, "known": 0, "unreadable": 2}
    assert [j.id for j in store.list(JobQuery())] == ["00000000000000b1"]


def test_a_store_that_cannot_be_reached_is_a_clear_error(db_settings):
    from wildswarm.errors import JobStoreUnavailable
    unreachable = db_settings.replace(db_port=1, db_timeout_seconds=1)
    with pytest.raises(JobStoreUnavailable, match="unreachable"):
        JobStore.connect(unreachable)


def test_listings_sort_by_animals_found_length_or_name_and_page_without_overlap(store):
    """The results browser's orders: most animals first (empty and unanalysed last), longest video, name."""
    for k, (name, animals, seconds) in enumerate((("b.mp4", 2, 10.0), ("A.mp4", 0, 60.0), ("c.mp4", 5, None),
                                                   ("d.mp4", None, 30.0))):
        job_id = f"e00000000000000{k}"
        store.submit(job_id, name, 10, media={"duration_s": seconds} if seconds else {})
        if animals is not None:
            store.claim(job_id, "w/1", "w")
            store.finish(job_id, "w/1", output=name[:-4], outputs=[], frames=1, untrained=False, timings={},
                         findings={"animals": animals, "tracks": animals, "species": {}})
    names = lambda **q: [j.input_name for j in store.list(JobQuery(**q))]       # noqa: E731
    assert names(order="animals") == ["c.mp4", "b.mp4", "A.mp4", "d.mp4"]
    assert names(order="longest") == ["A.mp4", "d.mp4", "b.mp4", "c.mp4"]
    assert names(order="name") == ["A.mp4", "b.mp4", "c.mp4", "d.mp4"]
    assert names(order="animals", limit=2) + names(order="animals", limit=2, offset=2) == names(order="animals")


def test_the_cluster_queue_counts_each_state_and_the_nodes_are_listed_from_the_index(store):
    """ClusterStats.queue() counts each state with a query of its own (each on an index, rather than one
    pass over every row); every count must still be what the states say."""
    from wildswarm.jobs.cluster import ClusterStats
    j = ids(9)
    for n, job_id in enumerate(j):
        store.submit(job_id, f"v{n}.mp4")
        if n != 2:
            store.mark_published(job_id)
    with store.db.connection() as conn:
        def set_(job_id, sql):
            conn.execute(f"UPDATE jobs SET {sql} WHERE id = %s", (job_id,))
        set_(j[1], "retry_at = now() + interval '1 hour'")                               # queued, retrying
                                                                                          # j[2]: queued, unannounced
        set_(j[3], "status = 'running', node = 'w2', lease_owner = 'w2/x', lease_until = now() + interval '1 minute'")
        set_(j[4], "status = 'failed', error = 'dead-lettered: the broker gave up'")
        set_(j[5], "status = 'failed', error = 'PipelineError: boom'")
        set_(j[6], "status = 'done', node = 'w1'")
        set_(j[7], "status = 'done', node = 'w3'")
        set_(j[8], "status = 'running', segments = 2, lease_owner = 'segments', lease_until = 'infinity'")  # waits
    q = ClusterStats(store.db).queue()
    assert (q.queued, q.retrying, q.pending_publish, q.running, q.dead_lettered, q.failed, q.done) == (3, 1, 1, 1, 1, 2, 2)
    assert store.nodes() == ["w1", "w2", "w3"]
