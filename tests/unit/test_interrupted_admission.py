"""An admission cut short between moving its video into input/ and recording its job.

A web worker, ``wildswarm submit`` or the producer (moving a file up from ``input/<profile>/``) killed
at that step left a video in input/ with no job. The producer then queued it as a file someone dropped
there: the default profile, and no deployment, recording time or webhook, though the user had asked for
them (and the upload was told it failed, or never answered). What an admission asks for is now recorded
before its video moves; the producer finishes the admission with it. A refusal is recorded before its
file moves to input_failed/ too.

The processes here are real ones, SIGKILLed at that step; the broker is unreachable (never reached).
"""
import os
import signal
import subprocess
import sys

import pytest

from kit.fakes import FakeBroker
from kit.procs import settings_env
from wildswarm.intake import Intake
from wildswarm.jobs import JobStatus, job_id_for
from wildswarm.jobs.deployments import Deployment, Deployments
from wildswarm.layout import Layout
from wildswarm.producer import Producer
from wildswarm.publisher import Publisher

pytestmark = pytest.mark.slow

# ``wildswarm`` killed by the kernel as it reaches ``{step}`` (``module:name`` or ``module:Class.name``)
KILLED_AT = (
    "import importlib, os, signal\n"
    "module, path = '{step}'.split(':')\n"
    "owner = importlib.import_module(module)\n"
    "*parents, name = path.split('.')\n"
    "for parent in parents:\n"
    "    owner = getattr(owner, parent)\n"
    "setattr(owner, name, lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL))\n"
    "from wildswarm.cli import main\n"
    "main(prog_name='wildswarm')\n")

RECORDING = "wildswarm.intake:Intake._record_and_publish"
HOOK = "https://lab.example.org/hooks/wildswarm"


def killed_at(step: str, settings, *args: str) -> None:
    proc = subprocess.run([sys.executable, "-c", KILLED_AT.format(step=step), *args], env=settings_env(settings),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr


def finish_in_producer(settings, store) -> dict:
    """A producer started after the crash: what it does with input/ once the file has settled."""
    producer = Producer(settings.replace(settle_seconds=0.0), store, broker=FakeBroker())
    producer.poll()
    return producer.poll()


def test_a_submit_killed_before_recording_its_job_is_queued_as_it_asked(db_settings, store, tmp_path):
    settings = db_settings.replace(broker_port=1)
    Deployments(store.db).save(Deployment.parse({"id": "arena-2", "latitude": 52.1, "longitude": 5.2}))
    video = tmp_path / "mouse 7.mp4"
    video.write_bytes(b"a mouse in arena 2")
    killed_at(RECORDING, settings, "submit", "--profile", "lab-topview-mouse", "--deployment", "arena-2",
                        "--recorded-at", "2026-05-01T04:00:00Z", "--webhook", HOOK, str(video))
    inside = settings.data / "input" / "mouse_7.mp4"
    assert inside.read_bytes() == video.read_bytes() and store.list() == []       # the step it died at

    assert finish_in_producer(settings, store) == {"mouse_7.mp4": "queued"}
    (job,) = store.list()
    assert job.id == job_id_for(video) and job.status is JobStatus.QUEUED and job.input_name == "mouse_7.mp4"
    assert job.profile == "lab-topview-mouse" and job.deployment_id == "arena-2"
    assert job.media["given_time"] == "2026-05-01T04:00:00+00:00" and job.webhook_url == HOOK
    assert "submitted from mouse 7.mp4" in (settings.data / "logs" / f"{settings.node}.log").read_text()


def test_a_producer_killed_moving_a_file_up_from_its_profile_folder_keeps_the_profile(db_settings, store):
    settings = db_settings.replace(broker_port=1)
    folder = settings.data / "input" / "lab-topview-mouse"
    folder.mkdir(parents=True)
    (folder / "arena 3.mp4").write_bytes(b"mouse")
    killed_at(RECORDING, settings, "producer", "--once")
    assert (settings.data / "input" / "arena_3.mp4").exists() and store.list() == []

    assert finish_in_producer(settings, store) == {"arena_3.mp4": "queued"}
    (job,) = store.list()
    assert job.profile == "lab-topview-mouse" and job.input_name == "arena_3.mp4"


def test_a_plain_dropped_file_still_gets_the_default_profile(db_settings, store):
    (db_settings.data / "input" / "trap.mp4").write_bytes(b"fox")
    assert finish_in_producer(db_settings, store) == {"trap.mp4": "queued"}
    (job,) = store.list()
    assert job.profile == "camera-trap" and job.deployment_id is None and job.webhook_url is None


def test_an_upload_the_producer_recorded_first_keeps_its_video(db_settings, store, monkeypatch):
    """The producer may see the moved video settle before a slow uploader records it (a job store that
    answers late): the uploader's record then finds the job made, and moved the job's own video to
    input_failed/ as a duplicate, leaving the job nothing to analyse."""
    intake = Intake(db_settings, store, Publisher(db_settings, "web", broker=FakeBroker()))
    real = intake._record_and_publish

    def producer_first(job_id, final, *args, **kwargs):
        assert finish_in_producer(db_settings, store) == {final.name: "queued"}
        return real(job_id, final, *args, **kwargs)

    monkeypatch.setattr(intake, "_record_and_publish", producer_first)      # this uploader's only
    staged = db_settings.data / "uploads" / ".staged-owl.mp4"
    staged.write_bytes(b"owl")
    admission = intake.admit_staged(staged, "owl.mp4", "uploaded via the web", profile="lab-topview-mouse")
    assert admission.result == "queued" and admission.job.profile == "lab-topview-mouse"
    assert (db_settings.data / "input" / "owl.mp4").read_bytes() == b"owl"
    assert not any(db_settings.data.joinpath("input_failed").iterdir()) and len(store.list()) == 1


@pytest.mark.parametrize("step", ["wildswarm.jobs.store:JobStore.refuse", "wildswarm.intake:move_into"])
def test_a_producer_killed_refusing_a_file_leaves_it_refused_with_its_reason(db_settings, store, step):
    """The producer moved a refused file to input_failed/ and then recorded why: killed between the two, the
    file sat in input_failed/ with no job and no reason anywhere, and no later scan looked there. The refusal
    is now recorded first; a producer killed before the move refuses the same file again when it restarts."""
    settings = db_settings.replace(broker_port=1)
    (settings.data / "input" / "notes.mp4").write_bytes(b"")
    killed_at(step, settings, "producer", "--once")
    assert finish_in_producer(settings, store) == {"notes.mp4": "refused"}
    (job,) = store.list()
    assert job.refused and job.input_name == "notes.mp4" and "empty" in job.error
    assert (settings.data / "input_failed" / "notes.mp4").exists()
    assert not (settings.data / "input" / "notes.mp4").exists()


def test_two_refused_files_of_one_name_each_keep_their_own(db_settings, store):
    """Recorded before it moves, a refusal must still name the file it will be in input_failed/: two cards'
    ``NOTES.TXT`` refused one after the other, each job names its own file (deleting one with its input, or
    looking for it, never reaches the other's)."""
    layout = Layout(db_settings.data)
    (layout.input / "NOTES.TXT").write_text("card 1")
    assert finish_in_producer(db_settings, store) == {"NOTES.TXT": "refused"}
    (layout.input / "NOTES.TXT").write_text("card 2, longer")
    assert finish_in_producer(db_settings, store) == {"NOTES.TXT": "refused"}
    jobs = store.list()
    assert len(jobs) == 2 and len({j.input_name for j in jobs}) == 2
    for job in jobs:
        assert layout.failed_input(job) == layout.input_failed / job.input_name
    assert sorted(p.read_text() for p in layout.input_failed.iterdir()) == ["card 1", "card 2, longer"]
