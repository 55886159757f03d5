"""A long video's jobs on a real PostgreSQL: split, segment claims, exactly one merge, failure, retry."""
import threading

import pytest

from wildswarm.errors import JobConflict
from wildswarm.jobs import JobQuery, JobStatus, segment_id

ID = "00000000000000aa"
PLAN = {"total": 40, "length": 12, "overlap": 4}


def split(store, finished=(False, False, False, False)):
    store.submit(ID, "long.mp4", 1000)
    store.claim(ID, "w1/a", "w1")
    return store.split(ID, "w1/a", PLAN, list(finished))


def run_segment(store, k, owner="w2/b", frames=12):
    job = store.claim(segment_id(ID, k), owner, owner.split("/")[0])
    assert job is not None and job.segment == k and job.parent_id == ID
    assert store.finish(job.id, owner, output="long", outputs=[], frames=frames, untrained=True, timings={})
    return job


def test_a_split_job_waits_for_its_segments_which_are_jobs_of_their_own(store):
    todo = split(store)
    assert [j.id for j in todo] == [segment_id(ID, k) for k in range(4)]
    assert all(j.publish_pending and j.status is JobStatus.QUEUED and j.input_name == "long.mp4" for j in todo)
    video = store.get(ID)
    assert video.status is JobStatus.RUNNING and video.segments == 4 and video.plan == PLAN
    assert video.frames_total == 40
    # its lease never runs out while segments wait in the queue, and no second worker takes it
    assert store.claim(ID, "w9/z", "w9") is None and store.requeue_expired(0) == []
    # listings, counts and changes show the video only
    assert [j.id for j in store.list(JobQuery())] == [ID] and store.count(JobQuery()) == 1
    assert store.count_by_status()["queued"] == 0
    assert [j.id for j in store.changes(0)[0]] == [ID]


def test_segment_progress_adds_up_on_the_video(store):
    split(store)
    a = store.claim(segment_id(ID, 0), "w2/b", "w2")
    b = store.claim(segment_id(ID, 1), "w3/c", "w3")
    assert store.progress(a.id, "w2/b", 5, 12) and store.progress(b.id, "w3/c", 7, 12)
    assert store.get(ID).frames_done == 12
    store.finish(a.id, "w2/b", output="long", outputs=[], frames=12, untrained=True, timings={})
    assert store.get(ID).frames_done == 19


def test_a_video_whose_segments_find_more_frames_than_its_header_promised_never_shows_over_100_percent(store):
    """Audit: the video's total is the header's estimate (a Matroska's duration times its rate), its done the
    sum of its segments' frames: more frames than promised showed a progress above 1, which the API's schema
    forbids (and the page's bar drew past its end)."""
    split(store)
    for k in range(3):
        run_segment(store, k)
    last = store.claim(segment_id(ID, 3), "w4/d", "w4")
    assert store.progress(last.id, "w4/d", 9, 4)                   # the last segment runs on past the promise
    video = store.get(ID)
    assert video.frames_done == 45 and video.frames_total >= 45 and video.progress <= 1.0
    assert 0 <= video.to_dict()["progress"] <= 1 and store.get(last.id).progress == 1.0


def test_the_merge_is_claimed_once_and_only_when_every_segment_is_done(store):
    split(store)
    for k in range(3):
        run_segment(store, k)
        assert store.claim_merge(ID, "w2/b", "w2") is None      # segment 3 is not done yet
    last = store.claim(segment_id(ID, 3), "w4/d", "w4")
    store.finish(last.id, "w4/d", output="long", outputs=[], frames=4, untrained=True, timings={})
    winners, barrier = [], threading.Barrier(8)

    def try_merge(i):
        barrier.wait()
        if store.claim_merge(ID, f"w{i}/m", f"w{i}"):
            winners.append(i)
    threads = [threading.Thread(target=try_merge, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(winners) == 1
    owner = f"w{winners[0]}/m"
    done = store.finish(ID, owner, output="long", outputs=["summary.json"], frames=40, untrained=True, timings={})
    assert done.status is JobStatus.DONE and done.frames_done == 40


def test_two_last_segments_finishing_together_merge_once(store):
    split(store, finished=(True, True, False, False))
    a = store.claim(segment_id(ID, 2), "w2/b", "w2")
    b = store.claim(segment_id(ID, 3), "w3/c", "w3")
    merged, barrier = [], threading.Barrier(2)

    def finish(job, owner):
        barrier.wait()
        store.finish(job.id, owner, output="long", outputs=[], frames=12, untrained=True, timings={})
        if store.claim_merge(ID, owner, owner[:2]):
            merged.append(owner)
    threads = [threading.Thread(target=finish, args=(a, "w2/b")), threading.Thread(target=finish, args=(b, "w3/c"))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(merged) == 1


def test_splitting_again_keeps_what_is_on_disk_and_queues_the_rest(store):
    split(store)
    run_segment(store, 0)
    run_segment(store, 1)
    assert store.claim_merge(ID, "w2/b", "w2") is None            # 2 and 3 are not done
    assert store.split(ID, "w1/a", PLAN, [True] * 4) is None       # held by its segments now, not by w1
    # Later the video is claimed again (its merging worker died and its lease ran out): the disk
    # decides -- segment 1's result is gone, 3's is there.
    with store.db.connection() as conn:
        conn.execute("UPDATE jobs SET lease_owner = 'w5/e', lease_until = now() + interval '1 minute' WHERE id = %s",
                     (ID,))
    todo = store.split(ID, "w5/e", PLAN, [True, False, False, True])
    assert [j.segment for j in todo] == [1, 2]
    assert store.get(segment_id(ID, 3)).status is JobStatus.DONE


def test_a_failed_segment_fails_its_video_and_its_queued_segments(store):
    split(store)
    job = store.claim(segment_id(ID, 1), "w2/b", "w2")
    store.fail(job.id, "w2/b", "not a video")
    video = store.fail_split(ID, "segment 1: not a video")
    assert video.status is JobStatus.FAILED and "segment 1" in video.error
    assert store.get(segment_id(ID, 2)).status is JobStatus.FAILED
    assert store.claim(segment_id(ID, 3), "w3/c", "w3") is None    # nothing left to run
    assert store.unannounced(0) == [] and store.pending() == []


def test_retrying_a_split_video_keeps_its_finished_segments(store):
    split(store)
    run_segment(store, 0)
    job = store.claim(segment_id(ID, 1), "w2/b", "w2")
    store.fail(job.id, "w2/b", "boom")
    store.fail_split(ID, "segment 1: boom")
    with pytest.raises(JobConflict, match="segment 1 of job"):
        store.reset_for_retry(segment_id(ID, 1), lambda j: j.input_name, 60)
    again = store.reset_for_retry(ID, lambda j: "long-2.mp4", 60)
    assert again.status is JobStatus.QUEUED and again.input_name == "long-2.mp4"
    assert [j.segment for j in store.segment_jobs(ID)] == [0]   # the unfinished ones go; split makes them anew
    assert store.get(segment_id(ID, 0)).input_name == "long-2.mp4"


def test_segments_of_a_failed_video_are_never_requeued_or_republished(store):
    split(store)
    running = store.claim(segment_id(ID, 2), "w2/b", "w2")
    store.fail_split(ID, "segment 1: not a video")
    with store.db.connection() as conn:   # segment 2's worker died meanwhile: its lease is long gone
        conn.execute("UPDATE jobs SET lease_until = now() - interval '1 hour' WHERE id = %s", (running.id,))
    assert store.requeue_expired(0) == [] and store.pending() == [] and store.unannounced(0) == []


def test_segments_left_running_by_a_failed_video_end_rather_than_count_as_work_for_ever(store):
    """A video fails with one segment while two others run: the one whose worker meets a passing error
    and gives it back, and the one whose worker dies, are never claimed again (their video no longer
    waits), so they must end too, not stay queued or running for ever on the cluster page's queue."""
    from wildswarm.jobs.cluster import ClusterStats
    split(store)
    retrying = store.claim(segment_id(ID, 0), "w2/b", "w2")
    dying = store.claim(segment_id(ID, 2), "w3/c", "w3")
    failing = store.claim(segment_id(ID, 1), "w4/d", "w4")
    store.fail(failing.id, "w4/d", "not a video")
    assert store.fail_split(ID, "segment 1: not a video").status is JobStatus.FAILED
    store.requeue(retrying.id, "w2/b", "attempt 1 failed: OSError: stale file handle", 0)
    assert store.claim(retrying.id, "w5/e", "w5") is None                    # nobody ever runs it again
    with store.db.connection() as conn:                                       # segment 2's worker died
        conn.execute("UPDATE jobs SET lease_until = now() - interval '1 hour' WHERE id = %s", (dying.id,))
    assert store.requeue_expired(0) == []                                     # the reconciler's pass
    stats = ClusterStats(store.db)
    queue = stats.queue()
    assert (queue.queued, queue.running, queue.failed) == (0, 0, 1)
    assert stats.backlog(lambda profile: 5.0).jobs == 0
    assert {store.get(segment_id(ID, k)).status for k in range(4)} == {JobStatus.FAILED}
