import os
import time

import pytest

from fakes import FakeBroker
from wildswarm.config import Settings
from wildswarm.errors import BrokerError, VideoError
from wildswarm.jobs import JobStatus, JobStore, job_id_for
from wildswarm.layout import Layout
from wildswarm.messages import JobMessage
from wildswarm.producer import Producer, refusal, submit_file


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def env(tmp_path):
    settings = Settings(data=tmp_path / "data", settle_seconds=5, poll_seconds=1, max_video_bytes=1000,
                        node="test-node")
    clock, broker = Clock(), FakeBroker()
    producer = Producer(settings, broker=broker, clock=clock)
    return settings, producer, broker, clock, producer.layout


def drop(layout: Layout, name: str, data: bytes = b"video", age: float = 0.0):
    path = layout.input / name
    path.write_bytes(data)
    if age:
        t = time.time() - age
        os.utime(path, (t, t))
    return path


def messages(broker):
    return [JobMessage.decode(body) for body, _ in broker.published]


def test_waits_until_the_file_stops_growing(env):
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
    (msg,) = messages(broker)
    assert msg.input_name == "a.mp4" and msg.job_id == job_id_for(path)
    job = JobStore(lay).get(msg.job_id)
    assert job.status is JobStatus.QUEUED and job.size_bytes == len(b"v1 and more")


def test_an_old_file_is_taken_on_the_second_poll(env):
    _, producer, broker, clock, lay = env
    drop(lay, "old.mp4", age=60)
    assert producer.poll() == {}
    clock.now += 1
    assert producer.poll() == {"old.mp4": "queued"}


def test_each_file_is_published_once(env):
    _, producer, broker, clock, lay = env
    drop(lay, "a.mp4", age=60)
    for _ in range(4):
        producer.poll()
        clock.now += 1
    assert len(broker.published) == 1
    # a restarted producer knows it from its record
    again = Producer(producer.settings, broker=broker, clock=clock)
    for _ in range(3):
        again.poll()
        clock.now += 1
    assert len(broker.published) == 1


def test_same_content_twice_is_one_job(env):
    _, producer, broker, clock, lay = env
    drop(lay, "a.mp4", b"same", age=60)
    drop(lay, "copy.mp4", b"same", age=60)
    producer.poll()
    clock.now += 1
    results = producer.poll()
    assert sorted(results.values()) == ["duplicate", "queued"]
    assert len(broker.published) == 1
    dup = [n for n, r in results.items() if r == "duplicate"][0]
    assert (lay.input_failed / dup).exists() and not (lay.input / dup).exists()


@pytest.mark.parametrize("name, data, reason", [
    ("notes.txt", b"x", "extension"),
    ("big.mp4", b"x" * 2000, "over the limit"),
    ("empty.mp4", b"", "empty"),
])
def test_refused_files_fail_with_their_reason(env, name, data, reason):
    _, producer, broker, clock, lay = env
    drop(lay, name, data, age=60)
    producer.poll()
    clock.now += 1
    assert producer.poll() == {name: "refused"}
    assert broker.published == []
    assert (lay.input_failed / name).exists()
    (job,) = JobStore(lay).all()
    assert job.status is JobStatus.FAILED and reason in job.error and job.input_name == name


def test_hidden_files_and_folders_are_ignored(env):
    _, producer, broker, clock, lay = env
    drop(lay, ".partial.mp4", age=60)
    (lay.input / "sub").mkdir()
    producer.poll()
    clock.now += 10
    assert producer.poll() == {}


def test_unsafe_or_taken_names_are_renamed(env):
    _, producer, broker, clock, lay = env
    (lay.output / "a").mkdir()                    # another job's results
    drop(lay, "a.mp4", b"new", age=60)
    drop(lay, "my clip.mp4", b"other", age=60)
    producer.poll()
    clock.now += 1
    producer.poll()
    names = sorted(m.input_name for m in messages(broker))
    assert names == ["a-1.mp4", "my_clip.mp4"]
    assert sorted(p.name for p in lay.input.iterdir()) == names


def test_publish_failure_keeps_the_file_pending(env):
    _, producer, broker, clock, lay = env
    drop(lay, "a.mp4", age=60)
    producer.poll()
    clock.now += 1
    broker.fail = True
    with pytest.raises(BrokerError):
        producer.poll()
    assert JobStore(lay).all() == []              # no record: not known yet
    broker.fail = False
    producer.poll()
    clock.now += 1
    assert producer.poll() == {"a.mp4": "queued"}


def test_run_once_exits_after_queueing(env):
    settings, producer, broker, clock, lay = env
    producer.clock = time.monotonic
    producer.settings = settings.replace(settle_seconds=0.2, poll_seconds=0.05)
    drop(lay, "a.mp4", age=60)
    assert producer.run(once=True) == 1


def test_run_once_gives_up_without_a_broker(tmp_path):
    settings = Settings(data=tmp_path, settle_seconds=0.1, poll_seconds=0.05)
    with pytest.raises(BrokerError):
        Producer(settings, broker=FakeBroker(fail=True)).run(once=True)


def test_submit_copies_then_publishes(env, tmp_path):
    settings, _, broker, _, lay = env
    video = tmp_path / "up load.mp4"
    video.write_bytes(b"content")
    job, created = submit_file(settings, broker, video)
    assert created and job.input_name == "up_load.mp4"
    assert (lay.input / "up_load.mp4").read_bytes() == b"content"
    assert [p.name for p in lay.input.iterdir()] == ["up_load.mp4"]   # no temp copy left
    assert messages(broker)[0].job_id == job.id
    again, created = submit_file(settings, broker, video)
    assert not created and again.id == job.id and len(broker.published) == 1


def test_submit_refuses_bad_files(env, tmp_path):
    settings, _, broker, _, _ = env
    (tmp_path / "x.avi").write_bytes(b"1")
    with pytest.raises(VideoError, match="extension"):
        submit_file(settings, broker, tmp_path / "x.avi")
    with pytest.raises(VideoError, match="no such file"):
        submit_file(settings, broker, tmp_path / "missing.mp4")


def test_refusal_rules():
    s = Settings(max_video_bytes=10, extensions=(".mp4", ".mov"))
    assert refusal(s, "a.MOV", 5) is None
    assert "extension" in refusal(s, "a", 5)
