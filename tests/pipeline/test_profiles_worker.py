"""Profiles on one worker, with the real pipelines (untrained weights): jobs that alternate between
two profiles load each profile's models once, and each job's record and summary say which profile
and which settings analysed it."""
import json

import pytest

from kit.videos import write_video
from wildswarm.errors import MissingWeightsError
from wildswarm.jobs import JobStatus, job_id_for
from wildswarm.layout import Layout
from wildswarm.messages import JobMessage
from wildswarm.pipeline.cache import PipelineCache
from wildswarm.runner import JobRunner, Outcome

pytestmark = pytest.mark.slow


@pytest.fixture
def settings(db_settings, untrained_models_dir):
    return db_settings.replace(node="n1", models_dir=untrained_models_dir, untrained=True, device="cpu",
                               detection_threshold=0.001, max_animals=2, detector_image_size=320, fps=5, batch_size=4)


def queue(store, settings, name: str, frames: int, profile: str | None) -> JobMessage:
    path = write_video(Layout(settings.data).input / name, frames=frames)
    job, _ = store.submit(job_id_for(path), name, path.stat().st_size, profile=profile)
    store.mark_published(job.id)
    return JobMessage(job.id, name)


def test_two_profiles_in_alternation_load_their_models_once_each(settings, store):
    cache = PipelineCache(settings)
    runner = JobRunner(settings, cache, store)
    profiles = ["camera-trap", "lab-topview-mouse", "camera-trap", "lab-topview-mouse", None]
    msgs = [queue(store, settings, f"v{k}.mp4", 10 + k, p) for k, p in enumerate(profiles)]
    pipelines = []
    for msg in msgs:
        assert runner.run(msg).outcome is Outcome.DONE, store.get(msg.job_id).error
        pipelines.append(cache.get(store.get(msg.job_id).profile).analyzer)
    assert cache.loads == {"camera-trap": 1, "lab-topview-mouse": 1}          # two loads for five jobs
    assert pipelines[0] is pipelines[2] is pipelines[4] and pipelines[1] is pipelines[3]
    assert pipelines[0] is not pipelines[1]
    # the cache counts both networks of each (MegaDetector v6-c 97 MB, SuperAnimal HRNet-w32 112 MB, float32)
    assert 2 * 190 * 2 ** 20 < cache.used < 2 * 230 * 2 ** 20

    out = Layout(settings.data).output
    for k, (msg, asked) in enumerate(zip(msgs, profiles)):
        job = store.get(msg.job_id)
        profile = asked or "camera-trap"                 # a job that names none: the default
        summary = json.loads((out / f"v{k}" / "summary.json").read_text())
        assert job.status is JobStatus.DONE and job.profile == profile and summary["profile"] == profile
        mouse = profile == "lab-topview-mouse"
        assert job.profile_settings["pose"] == summary["settings"]["pose"] == \
            ("superanimal_topviewmouse" if mouse else "superanimal_quadruped")
        assert job.profile_settings["fps"] == summary["settings"]["fps"] == (10.0 if mouse else 5.0)
        assert job.profile_settings["detection_threshold"] == 0.001           # the stack's, kept by both
        assert len(summary["bodyparts"]) == (27 if mouse else 39)
        assert (job.animals, job.tracks) == (summary["animals"]["max_per_frame"], summary["animals"]["distinct"])
        assert ("keypoints_filtered.csv" in job.outputs) == mouse              # the mouse profile smooths
        md = json.loads((out / f"v{k}" / "detections.json").read_text())
        assert md["info"]["wildswarm"]["profile"] == profile


def test_a_profile_whose_weights_are_missing_fails_its_job_with_the_remedy(settings, store, tmp_path):
    s = settings.replace(untrained=False, models_dir=tmp_path / "empty-models")
    s.profiles_path.parent.mkdir(parents=True, exist_ok=True)
    runner = JobRunner(s, PipelineCache(s), store)
    msg = queue(store, s, "w.mp4", 12, "lab-topview-mouse")
    assert runner.run(msg).outcome is Outcome.FAILED
    job = store.get(msg.job_id)
    assert job.status is JobStatus.FAILED and "wildswarm models fetch" in job.error and job.attempts == 1
    assert MissingWeightsError.__name__ not in job.error     # the message, not a traceback's type
