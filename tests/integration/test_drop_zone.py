"""The producer against a real broker: one job per content, refusals, --once."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time

from kit.observe import all_finished, jobs_of
from kit.procs import settings_env
from kit.waiting import wait_for
from wildswarm.jobs import JobStatus, job_id_for
from wildswarm.layout import Layout, safe_name
from wildswarm.testing import write_clip


def producer_once(settings) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wildswarm", "producer", "--once"], env=settings_env(settings),
                          capture_output=True, text=True, timeout=60)


def test_the_same_file_dropped_twice_is_one_job(broker_settings, store, broker, spawn, tmp_path):
    s = broker_settings
    lay = Layout(s.data)
    clip = write_clip(tmp_path / "fox.mp4", seconds=0.1, frames=2)
    shutil.copy(clip, lay.input / "fox.mp4")
    shutil.copy(clip, lay.input / "fox-again.mp4")
    (lay.input / "notes.txt").write_text("not a video")
    run = producer_once(s)
    assert run.returncode == 0 and "queued 1 job(s)" in run.stdout, run.stderr
    assert broker.counts()[0] == 1
    jobs = jobs_of(store)
    assert sorted(j.status.value for j in jobs.values()) == ["failed", "queued"]
    refused = [j for j in jobs.values() if j.status is JobStatus.FAILED][0]
    assert "extension '.txt' is not accepted" in refused.error and refused.refused
    queued = [j for j in jobs.values() if j.status is JobStatus.QUEUED][0]
    duplicate = ({"fox.mp4", "fox-again.mp4"} - {queued.input_name}).pop()
    assert sorted(p.name for p in lay.input_failed.iterdir()) == sorted([duplicate, "notes.txt"])

    worker = spawn(s, "worker", node="w0")
    wait_for(lambda: all_finished(store, 2), 30, "the job", procs=(worker,))
    shutil.copy(clip, lay.input / "fox.mp4")               # dropped again after it was done
    run = producer_once(s)
    assert run.returncode == 0 and "queued 0 job(s)" in run.stdout, run.stderr
    assert len(jobs_of(store)) == 2 and broker.counts()[0] == 0
    assert [p.name for p in lay.output.iterdir()] == [queued.input_name[:-4]]


def test_a_name_that_is_not_utf8_is_renamed_not_the_producers_end(broker_settings, store, broker, spawn, tmp_path):
    """Audit: a file whose name is not UTF-8 (Latin-1 from an old camera's software, CP437 from a zip) reached
    the job store (and the node log) as it was: the encoding error ended the producer, at every start, and
    nothing dropped after it was ever queued. Its name (or its folder's) is made UTF-8 first."""
    s = broker_settings
    lay = Layout(s.data)
    (lay.input / "camera-trap").mkdir()
    clips = [write_clip(tmp_path / f"c{i}.mp4", seconds=0.1, frames=2) for i in range(4)]
    dropped = [os.fsencode(lay.input / "Bl\udce5b\udce6r 1.mp4"),          # Latin-1 bytes, as os.fsdecode reads them
               os.fsencode(lay.input / "camera-trap" / "\udce9l\udce9phant.mp4"),
               os.fsencode(lay.input / "notes \udce9t\udce9.txt"),
               os.fsencode(lay.input) + b"/bl\xe5b\xe6r/x.mp4"]      # a folder of that name
    os.mkdir(os.path.dirname(dropped[-1]))
    for clip, path in zip(clips, dropped):
        shutil.copy(clip, path)
    producer = spawn(s, "producer", node="p0")
    jobs = wait_for(lambda: len(jobs_of(store)) == 4 and jobs_of(store), 30, "four jobs", procs=(producer,))
    assert producer.alive()
    got = {j.input_name: j for j in jobs.values()}
    assert got["Blbr_1.mp4"].status is JobStatus.QUEUED
    assert got["lphant.mp4"].status is JobStatus.QUEUED and got["lphant.mp4"].profile == "camera-trap"
    assert "is not accepted" in got["notes \ufffdt\ufffd.txt"].error
    refused = [j for j in jobs.values() if j.refused and "no analysis profile 'bl\ufffdb\ufffdr'" in j.error]
    assert len(refused) == 1, {j.input_name: j.error for j in jobs.values()}
    wait_for(lambda: broker.counts()[0] == 2, 10, "two messages", procs=(producer,))
    assert "\ufffd" in (lay.logs / "p0.log").read_text(encoding="utf-8")


def test_a_name_of_no_latin_letters_keeps_its_extension(broker_settings, store, broker, tmp_path):
    """Audit: safe_name dropped every non-ASCII character before it split off the extension, then the dot:
    a video named in Cyrillic, Chinese or Japanese (Кабан.mp4, 猫.MP4) was queued from input/ as an
    extension-less ``mp4`` (a second one ``mp4-1``), and ``wildswarm submit`` refused it ("extension
    '(none)' is not accepted"). The stem becomes "video" and the extension is kept, as safe_name says."""
    s = broker_settings
    lay = Layout(s.data)
    shutil.copy(write_clip(tmp_path / "a.mp4", seconds=0.1, frames=2), lay.input / "Кабан у реки.mp4")
    shutil.copy(write_clip(tmp_path / "b.mp4", seconds=0.1, frames=2), lay.input / "猫.MP4")
    run = producer_once(s)
    assert run.returncode == 0 and "queued 2 job(s)" in run.stdout, run.stderr
    assert sorted(j.input_name for j in jobs_of(store).values()) == ["video-1.MP4", "video.mp4"]
    assert sorted(p.name for p in lay.input.iterdir() if p.is_file()) == ["video-1.MP4", "video.mp4"]
    submitted = write_clip(tmp_path / "鳥.mp4", seconds=0.1, frames=2)
    run = subprocess.run([sys.executable, "-m", "wildswarm", "submit", str(submitted)], env=settings_env(s),
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert sorted(j.input_name for j in jobs_of(store).values()) == ["video-1.MP4", "video-2.mp4", "video.mp4"]
    assert broker.counts()[0] == 3


def test_a_name_near_the_filesystems_limit_still_moves_on_when_its_name_is_taken(broker_settings, store, broker,
                                                                                 tmp_path):
    """Audit: a refused or duplicate file moves to input_failed/ with ``-<tag>`` before its extension when
    its name is taken there; for a name near the 255-byte limit (a camera-trap description typed into the
    name) that name was too long: ENAMETOOLONG, "skipped for now" at every settle, and the file stayed in
    input/ for good. The stem gives way to the tag."""
    s = broker_settings
    lay = Layout(s.data)
    base = "Standort 14 Nordhang " + "Dachs am Bau in der Abenddämmerung " * 6
    stem = base + "x" * (250 - len(os.fsencode(base)))
    assert len(os.fsencode(stem + ".txt")) == 254
    (lay.input_failed / f"{stem}.txt").write_text("refused before")          # the same name, refused earlier
    (lay.input / f"{stem}.txt").write_text("notes, dropped again")
    clip = write_clip(tmp_path / "v.mp4", seconds=0.1, frames=2)
    shutil.copy(clip, lay.input / f"{stem}.mp4")
    run = producer_once(s)
    assert run.returncode == 0 and "queued 1 job(s)" in run.stdout, run.stderr
    (lay.input_failed / f"{stem}.mp4").write_text("another file of that name")
    shutil.copy(clip, lay.input / f"{stem}.mp4")          # the same video again: a duplicate
    run = producer_once(s)
    assert run.returncode == 0 and "skipped for now" not in run.stderr, run.stderr
    assert [p.name for p in lay.input.iterdir() if p.is_file()] == [safe_name(f"{stem}.mp4")]
    failed = [p.name for p in lay.input_failed.iterdir()]
    assert len(failed) == 4 and all(len(os.fsencode(n)) <= 255 for n in failed), failed
    assert {j.status.value for j in jobs_of(store).values()} == {"failed", "queued"}


N_WAITING = 300


def test_a_stop_during_a_long_pass_is_not_kept_waiting_for_all_of_it(broker_settings, store, broker, spawn,
                                                                      tmp_path):
    """Audit: one pass handled every settled file before the loop looked again: with a camera's thousands of
    videos waiting (each hashed in full), a stop waited for all of them -- past the stack's 20 s grace, so
    Swarm killed the producer mid-file -- and the reconciler (the jobs of dead workers, pending publishes,
    dead letters) did not run for as long. A pass now ends at a stop, and after reconcile_seconds."""
    s = broker_settings.replace(reconcile_seconds=1.0)
    lay = Layout(s.data)
    for i in range(N_WAITING):           # videos of 64 MiB (sparse: no disk used, but each read in full)
        os.truncate(write_clip(lay.input / f"trap-{i:04d}.mp4", seconds=0.1, frames=2), 64 << 20)
    producer = spawn(s, "producer", node="p0")
    wait_for(lambda: len(jobs_of(store)) >= 5, 60, "the first jobs", procs=(producer,))
    part = lay.uploads / ".upload-deadbeef-x.mp4"            # what a dead upload left: a reconcile sweeps it
    part.write_bytes(b"x")
    os.utime(part, (time.time() - 2 * s.web_stale_upload_seconds,) * 2)
    wait_for(lambda: not part.exists(), 60, "the reconcile", procs=(producer,))
    assert len(jobs_of(store)) < N_WAITING / 2, "the reconciler waited for the whole pass"
    t0 = time.monotonic()
    producer.signal(signal.SIGTERM)
    try:
        producer.popen.wait(10)
    except subprocess.TimeoutExpired:
        pass
    took, queued = time.monotonic() - t0, len(jobs_of(store))
    assert not producer.alive() and took < 5, f"still going {took:.1f} s after SIGTERM, {queued} of {N_WAITING} queued"
    assert queued < N_WAITING
    # the rest are queued by the next producer, each once
    again = spawn(s, "producer", node="p1")
    wait_for(lambda: len(jobs_of(store)) == N_WAITING, 120, "every job", procs=(again,))
    wait_for(lambda: broker.counts()[0] == N_WAITING, 30, "one message each", procs=(again,))


def test_a_video_renamed_as_it_is_queued_is_not_read_again(broker_settings, store, broker, spawn):
    """Audit: a file that intake renamed as it queued it (a name with a space, any file from a profile
    folder: it moves up into input/) was a new name to the producer's next scan: it settled again and was
    hashed again in full, only to be found 'known'. A card of videos copied into input/camera-trap/ was read
    from the shared filesystem twice over. The new name is recorded as dealt with, as the old one was."""
    s = broker_settings
    lay = Layout(s.data)
    (lay.input / "camera-trap").mkdir()
    n, size = 12, 64 << 20
    for i in range(n):               # 64 MiB each, sparse: no disk used, but every hash reads it all
        os.truncate(write_clip(lay.input / "camera-trap" / f"Trap {i:04d}.mp4", seconds=0.1, frames=2), size)
    producer = spawn(s, "producer", node="p0")
    wait_for(lambda: len(jobs_of(store)) == n, 60, "the jobs", procs=(producer,))
    time.sleep(10 * s.settle_seconds + 10 * s.poll_seconds)      # the renamed files' next scans
    with open(f"/proc/{producer.pid}/io") as fh:
        read = int(dict(line.split(": ") for line in fh.read().splitlines())["rchar"])
    assert read < 1.5 * n * size, f"read {read / (n * size):.2f} times what was dropped"
    assert sorted(p.name for p in lay.input.iterdir() if p.is_file()) == [f"Trap_{i:04d}.mp4" for i in range(n)]
    assert broker.counts()[0] == n


def test_submitting_a_file_whose_name_is_not_utf8_queues_it_and_the_rest(broker_settings, store, broker, tmp_path):
    """Audit: ``wildswarm submit`` wrote "submitted from <the file's own name>" to the node log; a name that is
    not UTF-8 (an old camera tool's Latin-1) made the log's write raise UnicodeEncodeError -- not an OSError,
    so not the best effort Layout.log promises -- after the job was queued: the command ended with a
    traceback and the videos after it on its command line were never submitted."""
    s = broker_settings
    first = os.fsencode(tmp_path) + b"/Bl\xe5b\xe6r.mp4"
    shutil.copy(write_clip(tmp_path / "a.mp4", seconds=0.1, frames=2), first)
    second = write_clip(tmp_path / "fox.mp4", seconds=0.1, frames=2)
    run = subprocess.run([sys.executable, "-m", "wildswarm", "submit", os.fsdecode(first), str(second)],
                         env=settings_env(s), capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert sorted(j.input_name for j in jobs_of(store).values()) == ["Blbr.mp4", "fox.mp4"]
    assert broker.counts()[0] == 2
    assert "submitted from Bl" in (Layout(s.data).logs / f"{s.node}.log").read_text(encoding="utf-8")


def test_a_file_swapped_for_a_link_while_others_are_hashed_is_not_followed(broker_settings, store, spawn, tmp_path):
    """Audit: links in input/ are ignored, but only when the scan looks; a pass then handles file after file,
    each hashed in full. A file swapped for a symbolic link meanwhile was followed: the file it pointed to,
    anywhere on the filesystem, was hashed, queued, and hard-linked into input/ (os.link follows links).
    Intake now looks at the file itself, and never links through a link."""
    s = broker_settings.replace(settle_seconds=1.0)
    lay = Layout(s.data)
    os.truncate(write_clip(lay.input / "a.mp4", seconds=0.1, frames=2), 3 << 30)    # sparse: seconds to hash
    write_clip(lay.input / "b.mp4", seconds=0.1, frames=2)
    secret = write_clip(tmp_path / "secret.mp4", seconds=0.1, frames=2)            # not in the drop zone
    producer = spawn(s, "producer", node="p0")

    def hashing_a():
        with contextlib.suppress(FileNotFoundError):
            return any(os.readlink(f"/proc/{producer.pid}/fd/{fd}").endswith("/input/a.mp4")
                       for fd in os.listdir(f"/proc/{producer.pid}/fd"))
    wait_for(hashing_a, 30, "a.mp4 to be hashed", interval=0.01, procs=(producer,))
    os.symlink(secret, lay.input / ".swap")
    os.replace(lay.input / ".swap", lay.input / "b.mp4")
    wait_for(lambda: jobs_of(store), 30, "a's job", procs=(producer,))
    time.sleep(3)
    assert job_id_for(secret) not in jobs_of(store), "the link's target was queued"
    assert os.stat(secret).st_nlink == 1, "the link's target was hard-linked into the drop zone"


def test_a_restarted_producer_does_not_read_the_waiting_videos_again(broker_settings, store, broker, spawn,
                                                                     tmp_path):
    """A restarted producer (every stack update, a node lost) knew nothing it had dealt with: every video
    waiting in input/ for a worker, hundreds after a card was dropped, was read in full again from the
    shared filesystem, only to be found 'known' -- and so was every upload, once by the web app and again
    by the producer. A queued video's size and modification time are recorded with its job; a file that
    still has both is its job's, unread. A file changed since (same size, new content) is read again and
    replaces its job, as before."""
    s = broker_settings
    lay = Layout(s.data)
    n, size = 10, 64 << 20
    for i in range(n):               # 64 MiB each, sparse: no disk used, but every hash reads it all
        os.truncate(write_clip(lay.input / f"trap-{i:04d}.mp4", seconds=0.1, frames=2), size)
    run = producer_once(s)
    assert run.returncode == 0 and f"queued {n} job(s)" in run.stdout, run.stderr
    uploaded = write_clip(tmp_path / "upload.mp4", seconds=0.1, frames=2)       # staged and queued by intake
    os.truncate(uploaded, size)
    run = subprocess.run([sys.executable, "-m", "wildswarm", "submit", str(uploaded)], env=settings_env(s),
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    changed = lay.input / "trap-0003.mp4"                  # rewritten in place while it waited
    old_id = job_id_for(changed)
    with open(changed, "r+b") as fh:
        fh.seek(size - 1)
        fh.write(b"\x01")
    assert changed.stat().st_size == size
    producer = spawn(s, "producer", node="p1")
    wait_for(lambda: jobs_of(store)[old_id].status is JobStatus.CANCELLED, 60, "the changed video's job replaced",
             procs=(producer,))
    time.sleep(10 * s.settle_seconds + 10 * s.poll_seconds)      # every other file's settle and scan
    with open(f"/proc/{producer.pid}/io") as fh:
        read = int(dict(line.split(": ") for line in fh.read().splitlines())["rchar"])
    assert read < 3 * size, f"read {read / size:.1f} videos' worth, of the one that changed"
    jobs = jobs_of(store)
    assert len(jobs) == n + 2 and job_id_for(changed) in jobs
    assert sorted(j.status.value for j in jobs.values()).count("queued") == n + 1
    assert broker.counts()[0] == n + 2
