"""The producer (drop zone), intake (the one way in) and the reconciler, on a real job store.

The broker is the in-memory FakeBroker: these tests are about what is recorded and
published; tests/integration runs the same code against the real RabbitMQ.
"""
import os
import time

import pytest

from kit.fakes import FakeBroker
from wildswarm.broker import Delivery
from wildswarm.publisher import Publisher
from wildswarm.errors import JobConflict, VideoError
from wildswarm.intake import Refused, refusal
from wildswarm.jobs import JobStatus, job_id_for
from wildswarm.layout import Layout
from wildswarm.messages import JobMessage, timestamp
from wildswarm.producer import Producer, submit_file
from wildswarm.reconciler import death_reason


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def env(db_settings, store):
    settings = db_settings.replace(settle_seconds=5, poll_seconds=1, max_video_bytes=1000, node="test-node")
    clock, broker = Clock(), FakeBroker()
    producer = Producer(settings, store, broker=broker, clock=clock)
    return settings, producer, broker, clock, producer.layout


def drop(layout: Layout, name: str, data: bytes = b"video", age: float = 0.0):
    path = layout.input / name
    path.write_bytes(data)
    if age:
        t = time.time() - age
        os.utime(path, (t, t))
    return path


def settle(producer, clock, seconds: float = 6) -> dict:
    producer.poll()
    clock.now += seconds
    return producer.poll()


def names(broker) -> list[str]:
    return [m["input_name"] for m in broker.published]


def test_waits_until_the_file_stops_changing(env, store):
    _, producer, broker, clock, lay = env
    path = drop(lay, "a.mp4", b"v1")
    assert producer.poll() == {}            # first sight
    clock.now += 3
    path.write_bytes(b"v1 and more")         # still growing (fresh mtime)
    assert producer.poll() == {}
    clock.now += 3
    assert producer.poll() == {}            # unchanged for only 3 s
    clock.now += 3
    assert producer.poll() == {"a.mp4": "queued"}
    (msg,) = broker.published
    assert msg["input_name"] == "a.mp4" and msg["job_id"] == job_id_for(path)
    job = store.get(msg["job_id"])
    assert job.status is JobStatus.QUEUED and job.size_bytes == len(b"v1 and more") and not job.publish_pending


def test_an_old_file_is_watched_as_long_as_a_new_one(env):
    """Audit: a file whose mtime was old was taken after one unchanged poll, so an scp that had
    stalled for a few seconds was analysed truncated. Now only watching it unchanged counts."""
    _, producer, broker, clock, lay = env
    drop(lay, "stalled.mp4", age=60)
    assert producer.poll() == {}
    clock.now += 1
    assert producer.poll() == {}            # one unchanged poll is not enough, however old the mtime
    clock.now += 4
    assert producer.poll() == {"stalled.mp4": "queued"}


def test_each_file_is_published_once(env, store):
    settings, producer, broker, clock, lay = env
    drop(lay, "a.mp4")
    for _ in range(4):
        producer.poll()
        clock.now += 6
    assert len(broker.published) == 1
    again = Producer(settings, store, broker=broker, clock=clock)     # a restarted producer knows it
    for _ in range(3):
        again.poll()
        clock.now += 6
    assert len(broker.published) == 1


def test_same_content_twice_is_one_job(env):
    _, producer, broker, clock, lay = env
    drop(lay, "a.mp4", b"same")
    drop(lay, "copy.mp4", b"same")
    results = settle(producer, clock)
    assert sorted(results.values()) == ["duplicate", "queued"] and len(broker.published) == 1
    dup = [n for n, r in results.items() if r == "duplicate"][0]
    assert (lay.input_failed / dup).exists() and not (lay.input / dup).exists()


@pytest.mark.parametrize("name, data, reason", [
    ("notes.txt", b"x", "extension"),
    ("big.mp4", b"x" * 2000, "over the limit"),
    ("empty.mp4", b"", "empty"),
])
def test_refused_files_fail_with_their_reason(env, store, name, data, reason):
    _, producer, broker, clock, lay = env
    drop(lay, name, data)
    assert settle(producer, clock) == {name: "refused"}
    assert broker.published == [] and (lay.input_failed / name).exists()
    (job,) = store.list()
    assert job.status is JobStatus.FAILED and job.refused and reason in job.error and job.input_name == name


def test_a_refusal_the_store_cannot_record_leaves_the_file_where_it_was(env, store):
    """Audit: a refused file was moved to input_failed/ before its refusal was recorded; when the store
    failed just then, the file lay in input_failed/ with no job and no reason anywhere, and no later scan
    looked at it again. It stays in input/ now, refused (and recorded) once the store answers."""
    from wildswarm.errors import JobStoreError
    _, producer, broker, clock, lay = env
    drop(lay, "notes.txt")
    with store.db.connection() as conn:                  # the store fails: its table is not there
        conn.execute("ALTER TABLE jobs RENAME TO jobs_away")
    try:
        with pytest.raises(JobStoreError):
            producer.intake.admit_dropped(lay.input / "notes.txt")
    finally:
        with store.db.connection() as conn:
            conn.execute("ALTER TABLE jobs_away RENAME TO jobs")
    assert (lay.input / "notes.txt").exists() and list(lay.input_failed.iterdir()) == []
    assert settle(producer, clock) == {"notes.txt": "refused"}
    (job,) = store.list()
    assert job.refused and (lay.input_failed / job.input_name).exists()


def test_hidden_files_deep_folders_and_links_are_ignored(env, tmp_path):
    _, producer, broker, clock, lay = env
    drop(lay, ".partial.mp4")
    (lay.input / "sub").mkdir()
    (lay.input / "lab-topview-mouse" / "deeper").mkdir(parents=True)
    drop(lay, "lab-topview-mouse/deeper/two-down.mp4")            # only one level of folders is a profile
    drop(lay, "lab-topview-mouse/.copying.mp4")
    (tmp_path / "elsewhere.mp4").write_bytes(b"not ours")
    (lay.input / "link.mp4").symlink_to(tmp_path / "elsewhere.mp4")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "x.mp4").write_bytes(b"not ours either")
    (lay.input / "camera-trap-species").symlink_to(tmp_path / "outside")   # a folder link is never followed
    assert settle(producer, clock) == {}
    assert (tmp_path / "elsewhere.mp4").exists() and (lay.input / "link.mp4").is_symlink()
    assert (tmp_path / "outside" / "x.mp4").exists() and store_is_empty(producer)


def test_a_folder_it_may_not_read_stops_only_that_folder_not_the_producer(env, store, monkeypatch):
    """Audit: a folder in input/ that the producer may not list (made mode 000 by someone who may drop videos,
    or a filesystem error on it) raised PermissionError out of poll(), and the producer died at every start."""
    _, producer, broker, clock, lay = env
    (lay.input / "locked").mkdir()
    drop(lay, "trap.mp4", b"fox")
    scandir = os.scandir

    def denied(path):       # tests run as root, for whom mode 000 denies nothing
        if os.fspath(path).endswith("/locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)
    monkeypatch.setattr("wildswarm.producer.os.scandir", denied)
    assert settle(producer, clock) == {"trap.mp4": "queued"}
    assert names(broker) == ["trap.mp4"]


def store_is_empty(producer) -> bool:
    return producer.store.list() == []


def test_a_file_in_a_profile_folder_is_analysed_with_that_profile(env, store):
    _, producer, broker, clock, lay = env
    lay.input.chmod(0o3775)                              # the drop zone's mode in the stack (stack.sh)
    producer.profile_folders()
    assert {"camera-trap", "lab-topview-mouse"} <= {p.name for p in lay.input.iterdir()}
    assert oct((lay.input / "lab-topview-mouse").stat().st_mode & 0o7777) == oct(0o3775)
    drop(lay, "lab-topview-mouse/arena 3.mp4", b"mouse")
    drop(lay, "trap.mp4", b"fox")
    assert settle(producer, clock) == {"lab-topview-mouse/arena 3.mp4": "queued", "trap.mp4": "queued"}
    jobs = {j.input_name: j for j in store.list()}
    assert jobs["arena_3.mp4"].profile == "lab-topview-mouse" and jobs["trap.mp4"].profile == "camera-trap"
    assert (lay.input / "arena_3.mp4").read_bytes() == b"mouse"            # moved up into input/ as its job's
    assert not any((lay.input / "lab-topview-mouse").iterdir()) and sorted(names(broker)) == ["arena_3.mp4",
                                                                                               "trap.mp4"]
    assert "dropped into input/lab-topview-mouse/, queued" in (lay.logs / "test-node.log").read_text()


def test_a_folder_that_is_no_profile_refuses_its_files_saying_so(env, store):
    _, producer, broker, clock, lay = env
    (lay.input / "mouse-lab").mkdir()
    drop(lay, "mouse-lab/m.mp4", b"mouse")
    assert settle(producer, clock) == {"mouse-lab/m.mp4": "refused"}
    (job,) = store.list()
    assert job.refused and "input/mouse-lab/: there is no analysis profile 'mouse-lab'" in job.error
    assert "lab-topview-mouse" in job.error and (lay.input_failed / "m.mp4").exists() and broker.published == []


def test_a_known_video_dropped_into_a_profile_folder_is_not_left_there(env, store):
    _, producer, broker, clock, lay = env
    drop(lay, "owl.mp4", b"owl")
    settle(producer, clock)
    (lay.input / "camera-trap").mkdir()
    drop(lay, "camera-trap/owl.mp4", b"owl")                     # the same content, the same name
    assert settle(producer, clock) == {"camera-trap/owl.mp4": "duplicate"}
    assert not (lay.input / "camera-trap" / "owl.mp4").exists() and len(store.list()) == 1


def test_unsafe_or_taken_names_are_renamed(env):
    _, producer, broker, clock, lay = env
    (lay.output / "a").mkdir()                    # another job's results
    drop(lay, "a.mp4", b"new")
    drop(lay, "my clip.mp4", b"other")
    settle(producer, clock)
    assert sorted(names(broker)) == ["a-1.mp4", "my_clip.mp4"]
    assert sorted(p.name for p in lay.input.iterdir()) == ["a-1.mp4", "my_clip.mp4"]


def test_a_broker_that_is_down_loses_nothing(env, store):
    """The video is recorded with its publish pending; the reconciler publishes it once the broker answers."""
    _, producer, broker, clock, lay = env
    broker.fail = True
    drop(lay, "a.mp4")
    assert settle(producer, clock) == {"a.mp4": "pending"}
    (job,) = store.list()
    assert job.publish_pending and job.status is JobStatus.QUEUED and broker.published == []
    producer.reconcile(force=True)                # still down: still pending
    assert store.get(job.id).publish_pending
    broker.fail = False
    producer.reconcile(force=True)
    assert names(broker) == ["a.mp4"] and not store.get(job.id).publish_pending


def test_run_once_exits_after_queueing(env):
    settings, producer, broker, clock, lay = env
    producer.clock = time.monotonic
    producer.settings = settings.replace(settle_seconds=0.2, poll_seconds=0.05)
    drop(lay, "a.mp4")
    assert producer.run(once=True) == 1


def test_submit_copies_through_uploads_then_publishes(env, store, tmp_path):
    settings, producer, broker, _, lay = env
    video = tmp_path / "up load.mp4"
    video.write_bytes(b"content")
    admission = submit_file(producer.intake, video)
    assert admission.result == "queued" and admission.job.input_name == "up_load.mp4"
    assert (lay.input / "up_load.mp4").read_bytes() == b"content"
    assert [p.name for p in lay.input.iterdir()] == ["up_load.mp4"] and not any(lay.uploads.iterdir())
    assert broker.published[0]["job_id"] == admission.job.id
    again = submit_file(producer.intake, video)
    assert again.result == "duplicate" and again.job.id == admission.job.id and len(broker.published) == 1


def test_submit_with_a_profile_and_with_one_that_does_not_exist(env, store, tmp_path):
    _, producer, broker, _, lay = env
    (tmp_path / "m.mp4").write_bytes(b"mouse")
    assert submit_file(producer.intake, tmp_path / "m.mp4", profile="lab-topview-mouse").job.profile == \
        "lab-topview-mouse"
    (tmp_path / "n.mp4").write_bytes(b"other mouse")
    with pytest.raises(Refused, match="no analysis profile 'mice'") as err:
        submit_file(producer.intake, tmp_path / "n.mp4", profile="mice")
    assert err.value.kind == "bad_profile" and len(store.list()) == 1 and not any(lay.uploads.iterdir())


def test_submit_refuses_bad_files(env, tmp_path):
    _, producer, _, _, _ = env
    (tmp_path / "x.avi").write_bytes(b"1")
    with pytest.raises(Refused, match="extension"):
        submit_file(producer.intake, tmp_path / "x.avi")
    with pytest.raises(VideoError, match="no such file"):
        submit_file(producer.intake, tmp_path / "missing.mp4")


def test_refusal_rules(db_settings):
    s = db_settings.replace(max_video_bytes=10, extensions=(".mp4", ".mov"))
    assert refusal(s, "a.MOV", 5) is None
    assert refusal(s, "a", 5)[0] == "bad_type"
    assert refusal(s, "a.mp4", 11)[0] == "too_large" and refusal(s, "a.mp4", 0)[0] == "empty"


# --- retry, through intake ------------------------------------------------------------------------------
def failed_job(store, lay, name="owl.mp4", data=b"owl video"):
    (lay.input_failed / name).write_bytes(data)
    job_id = job_id_for(lay.input_failed / name)
    store.submit(job_id, name)
    store.claim(job_id, "w1", "n1")
    store.fail(job_id, "w1", "PipelineError: out of memory")
    return job_id


def test_retry_moves_the_input_back_and_publishes(env, store):
    _, producer, broker, _, lay = env
    job_id = failed_job(store, lay)
    admission = producer.intake.retry(job_id)
    assert admission.result == "retried" and admission.job.status is JobStatus.QUEUED
    assert (lay.input / "owl.mp4").exists() and not (lay.input_failed / "owl.mp4").exists()
    assert names(broker) == ["owl.mp4"] and not store.get(job_id).publish_pending
    with pytest.raises(JobConflict):                 # queued now, its message just published
        producer.intake.retry(job_id)


def test_retry_of_a_failed_job_whose_input_is_gone_is_a_conflict_that_changes_nothing(env, store):
    _, producer, broker, _, lay = env
    job_id = failed_job(store, lay)
    (lay.input_failed / "owl.mp4").unlink()
    with pytest.raises(JobConflict, match="upload the video again"):
        producer.intake.retry(job_id)
    assert store.get(job_id).status is JobStatus.FAILED and broker.published == []


def test_a_new_copy_of_a_failed_video_whose_input_is_gone_retries_it(env, store, tmp_path):
    _, producer, broker, _, lay = env
    job_id = failed_job(store, lay)
    (lay.input_failed / "owl.mp4").unlink()
    copy = lay.staging_path("owl again.mp4")
    copy.write_bytes(b"owl video")
    admission = producer.intake.admit_staged(copy, "owl_again.mp4", source="uploaded")
    assert admission.result == "retried" and admission.job.id == job_id
    assert (lay.input / "owl.mp4").read_bytes() == b"owl video" and not copy.exists()


def test_names_that_differ_only_in_their_extension_never_share_a_result_folder(env, store):
    """Results go to output/<stem>/. An upload of fox.MP4 (cameras write upper case) while fox.mp4 was
    queued kept its name, and both jobs wrote output/fox/: the second to finish replaced the first's
    results. A name is now taken while any video of that stem waits in input/ or sits in input_failed/
    (its job may be retried), as the producer's own drop check already did for input/."""
    _, producer, broker, _, lay = env
    intake = producer.intake
    admitted = []
    for name, data in (("fox.mp4", b"fox one"), ("fox.MP4", b"fox two"), ("fox.Mp4", b"fox three")):
        staged = lay.staging_path(name)
        staged.write_bytes(data)
        admitted.append(intake.admit_staged(staged, name, source="uploaded"))
    stems = [os.path.splitext(a.job.input_name)[0] for a in admitted]
    assert [a.result for a in admitted] == ["queued"] * 3 and len(set(stems)) == 3, stems
    # a failed job's video waits in input_failed/ for a retry: a new video of that stem gets another name
    failed_job(store, lay, name="owl.MP4")
    staged = lay.staging_path("owl.mp4")
    staged.write_bytes(b"another owl")
    assert intake.admit_staged(staged, "owl.mp4", source="uploaded").job.input_name == "owl-1.mp4"


def test_a_retry_takes_another_name_when_its_own_stem_has_been_taken_since(env, store):
    _, producer, broker, _, lay = env
    job_id = failed_job(store, lay, name="owl.mp4")
    (lay.input / "owl.MP4").write_bytes(b"a video queued under that stem meanwhile")
    admission = producer.intake.retry(job_id)
    assert admission.result == "retried" and admission.job.input_name == "owl-1.mp4"
    assert (lay.input / "owl-1.mp4").read_bytes() == b"owl video"


def test_a_failed_video_dropped_again_after_its_input_was_removed_is_retried(env, store):
    """docs/jobs.md: a known video is not queued again unless it failed and its input is gone: then the
    new copy retries it. Uploads did; a copy dropped into input/ went to input_failed/ without a word."""
    _, producer, broker, clock, lay = env
    job_id = failed_job(store, lay)
    (lay.input_failed / "owl.mp4").unlink()                 # tidied away
    drop(lay, "owl.mp4", b"owl video")
    assert settle(producer, clock) == {"owl.mp4": "retried"}
    assert store.get(job_id).status is JobStatus.QUEUED and names(broker) == ["owl.mp4"]


def test_a_cancelled_video_whose_input_is_gone_is_queued_again_by_a_new_copy(env, store):
    """Retry accepts a cancelled job; when its input was tidied away, retry said 'upload it again' and the
    upload said 'duplicate': nothing but deleting the record got the video analysed."""
    _, producer, broker, _, lay = env
    path = drop(lay, "owl.mp4", b"owl video")
    job_id = job_id_for(path)
    store.submit(job_id, "owl.mp4")
    store.cancel(job_id, "cancelled by a test")
    path.unlink()
    staged = lay.staging_path("owl.mp4")
    staged.write_bytes(b"owl video")
    admission = producer.intake.admit_staged(staged, "owl.mp4", source="uploaded")
    assert admission.result == "retried" and store.get(job_id).status is JobStatus.QUEUED


def test_a_file_that_changes_after_it_was_queued_replaces_its_job_instead_of_adding_a_second(env, store):
    """A copy that stalls past the settle time is taken half-copied (the settle time is the guard); when the
    copy then resumed (or someone overwrote the file), the new content became a second job of the same
    input name: the first job analysed the grown file under the old content's id, the second failed
    'not in input/'. Now the file's new content replaces the job: the old one is cancelled saying why, its
    message is acknowledged without work, and the new one analyses the whole file."""
    from wildswarm.runner import JobRunner, Outcome
    from wildswarm.testing import SleepAnalyzer, write_clip
    _, producer, broker, clock, lay = env
    path = write_clip(lay.input / "fox.mp4", frames=3)            # the first part of the copy
    assert settle(producer, clock) == {"fox.mp4": "queued"}
    with open(path, "ab") as fh:                                  # the copy resumes
        fh.write(b" " * 100)
    assert settle(producer, clock) == {"fox.mp4": "queued"}
    old, new = (store.get(m["job_id"]) for m in broker.published)
    assert old.status is JobStatus.CANCELLED and "changed after it was queued" in old.error and new.id in old.error
    assert new.status is JobStatus.QUEUED and new.input_name == "fox.mp4" and new.id == job_id_for(path)
    run = JobRunner(producer.settings, SleepAnalyzer(), store)
    assert [run.run(JobMessage.for_job(j)).outcome for j in (old, new)] == [Outcome.DUPLICATE, Outcome.DONE]
    assert settle(producer, clock) == {}                          # and nothing more comes of it


def test_the_producer_sweeps_what_killed_model_fetches_and_exports_left(env):
    """Workers mount models/ read-only and may sit on nodes that never restart: the producer, which
    writes the whole data folder, removes the hours-old leftovers of killed fetches and exports."""
    settings, producer, _, clock, _ = env
    old = [settings.models / ".fetch-a1", settings.cache / "exports" / ".export-b2", settings.models / ".w.pt.x.tmp"]
    fresh = settings.cache / "exports" / ".export-c3"
    for p in old[:2] + [fresh]:
        p.mkdir(parents=True)
    old[2].write_bytes(b"x")
    t = time.time() - 7 * 3600
    for p in old:
        os.utime(p, (t, t))
    producer.reconcile(force=True)
    assert not any(p.exists() for p in old) and fresh.is_dir()
    again = settings.models / ".fetch-d4"          # looked for every ten minutes, not at every reconcile
    again.mkdir()
    os.utime(again, (t, t))
    producer.reconcile(force=True)
    assert again.is_dir()
    clock.now += 600
    producer.reconcile(force=True)
    assert not again.exists()


# --- the reconciler ----------------------------------------------------------------------------------------
def test_the_reconciler_requeues_jobs_whose_worker_died(env, store, monkeypatch):
    settings, producer, broker, clock, lay = env
    drop(lay, "a.mp4")
    settle(producer, clock)
    job_id = broker.published[0]["job_id"]
    assert store.claim(job_id, "dead-worker", "n1")
    with store.db.connection() as conn:          # its lease ran out a while ago
        conn.execute("UPDATE jobs SET lease_until = now() - interval '1 hour' WHERE id = %s", (job_id,))
    producer.reconcile(force=True)
    assert store.get(job_id).status is JobStatus.RUNNING      # the store only just answered this reconciler:
    clock.now += settings.lease_seconds                       # live workers get a lease to renew first
    producer.reconcile(force=True)
    job = store.get(job_id)
    assert job.status is JobStatus.QUEUED and not job.publish_pending and len(broker.published) == 2


def test_the_reconciler_republishes_a_lost_message_only_when_the_queue_is_empty(env, store):
    settings, producer, broker, clock, lay = env
    drop(lay, "a.mp4")
    settle(producer, clock)
    with store.db.connection() as conn:          # submitted and published long ago
        conn.execute("UPDATE jobs SET published_at = now() - interval '1 hour', "
                     "created_at = now() - interval '1 hour'")
    broker.ready = 3                             # messages wait on the queue: it may be among them
    producer.reconcile(force=True)
    assert len(broker.published) == 1
    broker.ready = 0                             # nothing on the queue: its message is lost
    producer.reconcile(force=True)
    assert len(broker.published) == 2
    job = store.get(broker.published[1]["job_id"])
    # published again, it still says when the job was submitted
    assert broker.published[1]["submitted_at"] == timestamp(job.created_at)


class DeadLetters(FakeBroker):
    def __init__(self, messages):
        super().__init__()
        self.queue = list(messages)

    def counts(self, queue=None):
        return (len(self.queue), 0) if queue and queue.endswith(".dead") else (self.ready, 0)

    def get(self, queue=None, ack=True):
        return self.queue.pop(0) if self.queue else None

    def requeue(self, delivery):
        super().requeue(delivery)
        self.queue.insert(0, delivery)


def test_dead_letters_become_failed_jobs_with_their_reason(env, store):
    """Audit: a message dead-lettered after the delivery limit left its job 'queued' forever."""
    settings, producer, _, clock, lay = env
    drop(lay, "a.mp4")
    drop(lay, "b.mp4", b"other")
    settle(producer, clock)
    a, b = sorted(store.list(), key=lambda j: j.input_name)
    store.claim(b.id, "live-worker", "n2")       # a live worker holds b: its dead letter waits
    deaths = [{"x-death": [{"reason": b"delivery_limit", "queue": "q", "count": 4}]}, {}]
    letters = [Delivery(JobMessage(j.id, j.input_name).encode(), i, True, 3, headers=h)
               for i, (j, h) in enumerate(zip((a, b), deaths))]
    letters.insert(0, Delivery(b"{garbage", 9, True, 0))
    broker = DeadLetters(letters)
    producer.reconciler.broker = broker
    producer.reconciler.run_once()
    failed = store.get(a.id)
    assert failed.status is JobStatus.FAILED and "delivered too many times" in failed.error
    assert (lay.input_failed / "a.mp4").exists() and not (lay.input / "a.mp4").exists()
    assert store.get(b.id).status is JobStatus.RUNNING
    assert [d.tag for d in broker.acked] == [9, 0] and [d.tag for d in broker.requeued] == [1]


def test_a_dead_lettered_job_is_counted_where_the_jobsfailing_alert_looks(env, store):
    # a video that kills its worker (out of memory) on every delivery is dead-lettered and failed by the
    # reconciler: no worker ever counts it, so JobsFailing stayed silent about exactly these failures
    import re
    from pathlib import Path

    import yaml
    from prometheus_client import REGISTRY
    alerts = yaml.safe_load((Path(__file__).resolve().parents[2] / "monitoring" / "alerts.yml").read_text())
    expr = next(r["expr"] for g in alerts["groups"] for r in g["rules"] if r["alert"] == "JobsFailing")
    name, label, value = re.search(r'(wildswarm_\w+)\{(\w+)="(\w+)"\}', expr).groups()
    _, producer, _, clock, lay = env
    drop(lay, "a.mp4")
    settle(producer, clock)
    (a,) = store.list()
    before = REGISTRY.get_sample_value(name, {label: value}) or 0.0
    death = {"x-death": [{"reason": b"delivery_limit", "queue": "q", "count": 4}]}
    producer.reconciler.broker = DeadLetters([Delivery(JobMessage(a.id, a.input_name).encode(), 0, True, 3,
                                                       headers=death)])
    producer.reconciler.run_once()
    assert store.get(a.id).status is JobStatus.FAILED
    assert (REGISTRY.get_sample_value(name, {label: value}) or 0.0) == before + 1


def test_a_dead_segment_whose_video_the_store_could_not_fail_fails_it_at_the_next_pass(env, store, monkeypatch):
    """Audit: a segment's dead letter failed the segment, then its video (fail_split); with the job store gone
    between the two, the dead letter was neither acknowledged nor put back: it sat unacknowledged on the
    producer's channel until a restart, and delivered again it found the segment failed already and was
    acknowledged without failing the video, which stayed 'running', held by its segments, for good. The
    dead letter goes back on its queue, and the next pass fails the video."""
    from wildswarm.errors import JobStoreUnavailable
    from wildswarm.jobs import segment_id
    _, producer, _, clock, lay = env
    drop(lay, "long.mp4")
    settle(producer, clock)
    (video,) = store.list()
    store.claim(video.id, "w1/a", "w1")
    store.split(video.id, "w1/a", {"total": 40, "length": 12, "overlap": 4}, [False, False, False, False])
    seg = store.get(segment_id(video.id, 1))
    death = {"x-death": [{"reason": b"delivery_limit", "queue": "q", "count": 4}]}
    broker = DeadLetters([Delivery(JobMessage.for_job(seg).encode(), 7, True, 3, headers=death)])
    producer.reconciler.broker = broker
    real, calls = store.fail_split, []

    def store_gone_once(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise JobStoreUnavailable("the job store cannot be reached (recording a failed job)")
        return real(*args, **kwargs)
    monkeypatch.setattr(store, "fail_split", store_gone_once)
    producer.reconcile(force=True)                      # the store fails mid-way: tried again next pass
    assert [d.tag for d in broker.requeued] == [7] and broker.queue, "the dead letter was left unacknowledged"
    assert store.get(seg.id).status is JobStatus.FAILED
    producer.reconcile(force=True)
    failed = store.get(video.id)
    assert failed.status is JobStatus.FAILED and "segment 1 dead-lettered" in failed.error
    assert [d.tag for d in broker.acked] == [7] and not broker.queue
    assert (lay.input_failed / "long.mp4").exists()


def test_a_waiting_video_rewritten_unchanged_is_known_by_its_new_time_after_a_restart(env, store):
    """A waiting video written again with the same bytes (a nightly rsync of the card without -t, a touch) is
    hashed again and found to be its job; its job kept the time it had first, so every later producer start
    read it in full again. The job now records the time its bytes were last read at."""
    _, producer, broker, clock, lay = env
    path = drop(lay, "a.mp4")
    settle(producer, clock)
    (job,) = store.list()
    assert job.input_mtime_ns == path.stat().st_mtime_ns
    later = time.time() + 60
    os.utime(path, (later, later))
    assert settle(producer, clock) == {"a.mp4": "known"}
    assert store.get(job.id).input_mtime_ns == path.stat().st_mtime_ns
    assert len(broker.published) == 1


def test_death_reasons():
    assert death_reason({"x-wildswarm-error": b"malformed message: x"}) == "malformed message: x"
    assert "too many" in death_reason({"x-death": [{"reason": b"delivery_limit"}]})
    assert "expired" in death_reason({"x-death": [{"reason": b"expired"}]})
    assert death_reason({}) == "dead-lettered (no reason recorded)"


def test_the_json_records_of_an_earlier_version_are_imported_at_start(env, store):
    settings, producer, broker, clock, lay = env
    lay.jobs.mkdir()
    (lay.jobs / "00000000000000a1.json").write_text(
        '{"id": "00000000000000a1", "input_name": "old.mp4", "status": "done", "node": "w1"}')
    producer.import_legacy_records()
    assert store.get("00000000000000a1").status is JobStatus.DONE
    assert "imported 1 job record" in (lay.logs / "test-node.log").read_text()


def test_publisher_counts_and_never_raises(db_settings):
    broker = FakeBroker(fail=True)
    publisher = Publisher(db_settings, "test", broker=broker)
    assert publisher.publish(JobMessage("0123456789abcdef", "a.mp4")) is False and publisher.last_error
    broker.fail = False
    broker.drop_next = True                       # a stale connection: tried once more on a fresh one
    assert publisher.publish(JobMessage("0123456789abcdef", "a.mp4")) is True
    assert len(broker.published) == 1


def test_after_an_outage_of_the_store_live_workers_get_time_to_renew_their_leases(env, store):
    from wildswarm.errors import JobStoreUnavailable
    settings, producer, broker, clock, lay = env
    drop(lay, "a.mp4")
    settle(producer, clock)
    job_id = broker.published[0]["job_id"]
    assert store.claim(job_id, "live-worker", "n1")
    real = store.pending
    store.pending = lambda *a: (_ for _ in ()).throw(JobStoreUnavailable("the store is down"))
    producer.reconcile(force=True)                  # down for 30 s
    clock.now += 30
    producer.reconcile(force=True)
    store.pending = real
    with store.db.connection() as conn:             # meanwhile the worker's lease ran out (it could not renew)
        conn.execute("UPDATE jobs SET lease_until = now() - interval '1 minute' WHERE id = %s", (job_id,))
    producer.reconcile(force=True)                  # back: not judged yet
    clock.now += 59
    producer.reconcile(force=True)                  # twice the outage has not passed yet
    assert store.get(job_id).status is JobStatus.RUNNING
    clock.now += 2
    producer.reconcile(force=True)
    assert store.get(job_id).status is JobStatus.QUEUED        # it never renewed: abandoned


def test_an_outage_the_store_waited_out_inside_one_pass_also_gives_workers_time(env, store):
    """CI: PostgreSQL restarted while a job ran; the reconciler's pass waited for a connection the
    whole outage and then got one, so it saw no error, judged the worker's lapsed lease at once and
    queued the running job a second time. A pass that waited that long for the store is an outage."""
    settings, producer, broker, clock, lay = env
    drop(lay, "a.mp4")
    settle(producer, clock)
    job_id = broker.published[0]["job_id"]
    assert store.claim(job_id, "live-worker", "n1")
    real = store.pending

    def waits_out_the_outage(*args):
        clock.now += 10                             # the pool waited 10 s for a connection, then got one
        return real(*args)
    store.pending = waits_out_the_outage
    with store.db.connection() as conn:             # meanwhile the worker's lease ran out (it could not renew)
        conn.execute("UPDATE jobs SET lease_until = now() - interval '1 minute' WHERE id = %s", (job_id,))
    producer.reconcile(force=True)
    store.pending = real
    assert store.get(job_id).status is JobStatus.RUNNING
    clock.now += 19
    producer.reconcile(force=True)                  # twice the outage has not passed yet
    assert store.get(job_id).status is JobStatus.RUNNING
    clock.now += 2
    producer.reconcile(force=True)
    assert store.get(job_id).status is JobStatus.QUEUED        # it never renewed: abandoned


def test_a_lost_message_that_cannot_be_republished_now_is_left_pending(env, store, monkeypatch):
    settings, producer, broker, clock, lay = env
    drop(lay, "a.mp4")
    settle(producer, clock)
    (job,) = store.list()
    with store.db.connection() as conn:          # published long ago, and the queue is empty: lost
        conn.execute("UPDATE jobs SET published_at = now() - interval '1 hour'")
    monkeypatch.setattr(producer.reconciler.publisher, "publish", lambda msg: False)
    producer.reconcile(force=True)
    assert store.get(job.id).publish_pending         # the pending pass publishes it when the broker answers
    monkeypatch.undo()
    producer.reconcile(force=True)
    assert not store.get(job.id).publish_pending and len(broker.published) == 2


def test_results_analysed_before_findings_were_kept_get_them_from_their_summary(env, store):
    import json
    settings, producer, _, _, lay = env
    for k, summary in enumerate(({"animals": {"max_per_frame": 2, "distinct": 3},
                                  "tracks": [{"id": 1, "species": "zebra"}]}, None, {"animals": {"max_per_frame": 0}})):
        job_id = f"b00000000000000{k}"
        store.submit(job_id, f"old{k}.mp4", 10)
        store.claim(job_id, "w/1", "w")
        store.finish(job_id, "w/1", output=f"old{k}", outputs=[], frames=1, untrained=False, timings={})
        if summary is not None:                            # old1's result folder is gone
            (lay.output / f"old{k}").mkdir()
            (lay.output / f"old{k}" / "summary.json").write_text(json.dumps(summary))
    assert store.get("b000000000000000").animals is None
    producer.reconcile(force=True)
    old0, old1, old2 = (store.get(f"b00000000000000{k}") for k in range(3))
    assert (old0.animals, old0.tracks, old0.species) == (2, 3, {"zebra": 1})
    assert old1.animals is None and (old2.animals, old2.tracks) == (0, 0)
    assert producer._findings_after is None                 # all looked at: not again
    assert "recorded what 2 earlier result(s) found" in (lay.logs / "test-node.log").read_text()


@pytest.mark.parametrize("odd", [
    {"animals": {"max_per_frame": 1, "species": ["zebra"]}},             # species as a list of names
    {"animals": {"max_per_frame": 1}, "tracks": 3},                      # tracks as a count
    {"animals": {"max_per_frame": 1}, "tracks": ["1"]},                  # a track that is not an object
    {"animals": {"max_per_frame": "n/a"}},
])
def test_a_summary_whose_findings_cannot_be_read_is_passed_over_not_the_producers_end(env, store, odd):
    # the backfill runs in every reconcile from the producer's start: one summary.json it cannot read stopped
    # the producer, and the next one after its restart, for good (no intake, no reconciling)
    import json
    settings, producer, _, _, lay = env
    for k, summary in enumerate((odd, {"animals": {"max_per_frame": 2, "distinct": 1},
                                       "tracks": [{"id": 1, "species": "zebra"}]})):
        job_id = f"c00000000000000{k}"
        store.submit(job_id, f"old{k}.mp4", 10)
        store.claim(job_id, "w/1", "w")
        store.finish(job_id, "w/1", output=f"old{k}", outputs=[], frames=1, untrained=False, timings={})
        (lay.output / f"old{k}").mkdir()
        (lay.output / f"old{k}" / "summary.json").write_text(json.dumps(summary))
    producer.reconcile(force=True)
    assert store.get("c000000000000000").animals is None
    assert (store.get("c000000000000001").animals, store.get("c000000000000001").species) == (2, {"zebra": 1})
    assert producer._findings_after is None
