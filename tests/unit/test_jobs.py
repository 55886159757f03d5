import json
import threading
import time

import pytest

from wildswarm.errors import JobError, UnsafePathError
from wildswarm.jobs import Job, JobStatus, JobStore, KeepAlive, job_id_for, wait_while_alive
from wildswarm.layout import Layout


@pytest.fixture
def store(tmp_path):
    return JobStore(Layout(tmp_path).ensure())


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


def test_create_is_once(store):
    job, created = store.create(Job(id="0123456789abcdef", input_name="a.mp4"))
    assert created
    again, created = store.create(Job(id="0123456789abcdef", input_name="other.mp4"))
    assert not created and again.input_name == "a.mp4"


def test_record_round_trip_and_progress(store):
    store.create(Job(id="0123456789abcdef", input_name="a.mp4"))
    job = store.update("0123456789abcdef", status=JobStatus.RUNNING, frames_done=5, frames_total=20,
                       node="n1", attempts=2)
    raw = json.loads(store.path(job.id).read_text())
    assert raw["status"] == "running" and raw["progress"] == 0.25 and raw["node"] == "n1"
    assert store.get(job.id) == job
    done = store.update(job.id, status=JobStatus.DONE)
    assert done.progress == 1.0


def test_records_are_written_atomically(store):
    store.create(Job(id="0123456789abcdef", input_name="a.mp4"))
    assert [p.name for p in store.layout.jobs.iterdir()] == ["0123456789abcdef.json"]


def test_missing_and_unreadable_records(store):
    with pytest.raises(JobError, match="no job"):
        store.get("0123456789abcdef")
    (store.layout.jobs / "fedcba9876543210.json").write_text("{half")
    with pytest.raises(JobError, match="unreadable"):
        store.get("fedcba9876543210")
    with pytest.raises(UnsafePathError):
        store.get("../../etc/passwd")


def test_all_skips_foreign_files_newest_first(store):
    store.save(Job(id="aaaaaaaaaaaaaaaa", input_name="a.mp4", created_at="2024-01-01T00:00:00+00:00"))
    store.save(Job(id="bbbbbbbbbbbbbbbb", input_name="b.mp4", created_at="2024-01-02T00:00:00+00:00"))
    (store.layout.jobs / "notes.json").write_text("{}")
    (store.layout.jobs / "cccccccccccccccc.json").write_text("garbage")
    assert [j.id for j in store.all()] == ["bbbbbbbbbbbbbbbb", "aaaaaaaaaaaaaaaa"]


def test_keepalive_touches_the_record(store):
    job, _ = store.create(Job(id="0123456789abcdef", input_name="a.mp4"))
    before = store.path(job.id).stat().st_mtime_ns
    with KeepAlive(store, job.id, interval=0.05):
        time.sleep(0.3)
    assert store.path(job.id).stat().st_mtime_ns > before


def test_wait_while_alive(store):
    job = store.save(Job(id="0123456789abcdef", input_name="a.mp4", status=JobStatus.RUNNING, node="n2"))
    t0 = time.monotonic()
    assert wait_while_alive(store, job, stale=0.3, cancel=threading.Event()) is None     # nobody touches it
    assert time.monotonic() - t0 >= 0.3
    with KeepAlive(store, job.id, interval=0.05):
        threading.Timer(0.6, lambda: store.update(job.id, status=JobStatus.DONE)).start()
        done = wait_while_alive(store, job, stale=0.3, cancel=threading.Event())
    assert done.status is JobStatus.DONE
    cancel = threading.Event()
    cancel.set()
    assert wait_while_alive(store, store.update(job.id, status=JobStatus.RUNNING), 5, cancel) is None
