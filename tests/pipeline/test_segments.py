"""Long videos in segments: the plan, seeking, stitching tracks at seams, equality with a whole run, resume."""
import json
import os
import signal
import subprocess
import sys
import time

import av
import numpy as np
import pandas as pd
import pytest
import supervision as sv

from kit.videos import write_video
from kit.waiting import wait_for
from wildswarm.config import Settings
from wildswarm.errors import PlanChanged
from wildswarm.pipeline import outputs, segments
from wildswarm.pipeline.pose import KeyPoints
from wildswarm.pipeline.run import Frames
from wildswarm.pipeline.track import Tracker
from wildswarm.pipeline.video import probe, read_frames


def test_plan_cuts_whole_batches_and_leaves_short_videos_alone():
    assert segments.plan(50, 5.0, segment_seconds=60, overlap_seconds=2, batch_size=4) is None
    assert segments.plan(500, 5.0, segment_seconds=0, overlap_seconds=2, batch_size=4) is None
    p = segments.plan(1000, 5.0, segment_seconds=60, overlap_seconds=2, batch_size=4)
    assert (p.length, p.overlap, p.count) == (300, 12, 4)  # 10 frames of overlap, rounded up to whole batches
    assert p.owned(0) == (0, 300) and p.reads(0) == (0, 312)
    assert p.owned(3) == (900, None) and p.reads(3) == (900, None)  # the last one reads to the end
    q = segments.plan(100, 5.0, segment_seconds=3, overlap_seconds=1, batch_size=8)
    assert (q.length, q.overlap) == (16, 8)


def test_plan_cuts_a_multiple_of_the_workers_so_the_last_round_is_full():
    one_hour = dict(segment_seconds=60, overlap_seconds=2, batch_size=4)
    assert segments.plan(18000, 5.0, **one_hour, workers=1).count == 60
    eight = segments.plan(18000, 5.0, **one_hour, workers=8)
    assert (eight.count, eight.length, eight.overlap) == (64, 284, 12)    # 8 full rounds instead of 7.5
    assert eight.owned(63) == (63 * 284, None)
    assert segments.plan(18000, 5.0, **one_hour, workers=6).count == 60  # already a multiple: as set
    assert segments.plan(18000, 5.0, **one_hour, workers=None).count == 60
    few = segments.plan(900, 5.0, **one_hour, workers=8)                 # 3 segments for 8 workers:
    assert (few.count, few.length) == (6, 152)                           # halved, never shorter


def test_a_segment_is_decoded_from_the_keyframe_before_it_and_frames_match_a_whole_decode(tmp_path):
    video = write_video(tmp_path / "long.mp4", frames=600, size=(96, 64), fps=25)  # one keyframe every 250
    whole = list(read_frames(video, 5.0))
    stats = {}
    late = list(read_frames(video, 5.0, stats, first=100, stop=110))
    assert [f.index for f in late] == [f.index for f in whole[100:110]]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(late, whole[100:110]))
    assert stats["decoded"] < 200  # it seeked: frames 500.. came from the keyframe at 500, not from 0
    joined = [f for k in range(0, 130, 12) for f in read_frames(video, 5.0, first=k, stop=k + 12)]
    assert [f.index for f in joined] == [f.index for f in whole]
    assert list(read_frames(video, 5.0, first=500)) == []


def test_segments_past_the_end_a_header_promised_are_refused_or_joined_without_them(tmp_path):
    """A Matroska file (named .mp4) whose copy broke off keeps its header's full duration: probe promises
    600 frames, about 290 are there, and the plan's last segment read none. Its labeled video (no frame
    written) was an empty file, and the merge failed on them with PyAV's InvalidDataError after every
    segment had been analysed: retried, then failed, the whole analysis lost. The segment that decodes to
    the cut now refuses the file as truncated; and where a header's estimate overshoots the real end by
    less than that check's margin, an empty last segment is left out of the join."""
    from wildswarm.errors import VideoError
    from wildswarm.pipeline.video import VideoWriter
    data = write_video(tmp_path / "whole.mkv", frames=600, size=(96, 64), fps=10).read_bytes()
    video = tmp_path / "cut.mp4"
    video.write_bytes(data[: len(data) // 2])
    info = probe(video)
    seg_plan = segments.plan(info.sampled(5), 5, segment_seconds=20, overlap_seconds=2, batch_size=4)
    assert seg_plan is not None and seg_plan.count == 3
    assert len(list(read_frames(video, 5, first=seg_plan.reads(0)[0], stop=seg_plan.reads(0)[1]))) > 0
    for k in (1, 2):
        first, stop = seg_plan.reads(k)
        with pytest.raises(VideoError, match=r"cut\.mp4: video is truncated"):
            list(read_frames(video, 5, first=first, stop=stop))
    whole = write_video(tmp_path / "short.mp4", frames=30, size=(96, 64), fps=10)
    parts = [tmp_path / "0.mp4", tmp_path / "1.mp4"]
    with VideoWriter(parts[0], 5, 96, 64) as w:                   # as a segment writes its own frames
        for f in read_frames(whole, 5):
            w.write(f.image)
    with VideoWriter(parts[1], 5, 96, 64):                        # a segment that found no frame
        pass
    assert parts[1].stat().st_size == 0
    assert segments.join_videos(parts, tmp_path / "labeled.mp4") == frames_of(tmp_path / "labeled.mp4") == 15


def test_a_segment_of_a_variable_frame_rate_video_gets_the_frames_a_whole_decode_numbers_so(tmp_path):
    """Phones record at a variable frame rate. A segment's seek turned its first frame into a time at the
    average rate and its landed frame's time back into an index the same way, which holds only at a
    constant rate: a segment after the change got other frames under the whole run's numbers (its
    detections and keypoints on the wrong frames). Each frame here is painted 6 x its own index."""
    import av
    from fractions import Fraction
    tb = Fraction(1, 1000)
    pts = [100 * i for i in range(20)] + [2000 + 500 * i for i in range(20)]   # 10 frames/s, then 2
    path = tmp_path / "vfr.mp4"
    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=10)
        st.width, st.height, st.pix_fmt, st.time_base = 160, 96, "yuv420p", tb
        st.options = {"g": "2", "keyint_min": "2", "sc_threshold": "0", "bf": "0"}
        for i, p in enumerate(pts):
            f = av.VideoFrame.from_ndarray(np.full((96, 160, 3), i * 6, np.uint8), format="rgb24")
            f.pts, f.time_base = p, tb
            for pk in st.encode(f):
                c.mux(pk)
        for pk in st.encode():
            c.mux(pk)
    whole = {f.index: round(f.image.mean() / 6) for f in read_frames(path, 0)}
    assert whole == {i: i for i in range(40)}
    for first in (5, 22, 30, 36):
        seg = {f.index: round(f.image.mean() / 6) for f in read_frames(path, 0, first=first, stop=first + 4)}
        assert seg == {k: k for k in range(first, first + 4)}, first


# --- stitching tracks at the seams, on scripted detections ------------------------------------------

def scripted(n=40):
    """Two animals crossing at frame ~20, a third leaving at 12 and coming back at 16 (under the
    lost-track buffer); a missed frame at 25."""
    out = []
    for i in range(n):
        boxes = [(20 + 14 * i, 100), (580 - 14 * i, 130)]
        if not 12 <= i < 16:
            boxes.append((300, 300 + i))
        if i == 25:
            boxes = []
        xyxy = np.array([[x - 30, y - 20, x + 30, y + 20] for x, y in boxes], np.float32).reshape(-1, 4)
        out.append(sv.Detections(xyxy=xyxy, confidence=np.full(len(boxes), 0.8, np.float32),
                                 class_id=np.zeros(len(boxes), int)))
    return out


def track(dets):
    tracker = Tracker(fps=5, lost_seconds=2)
    return [tracker.update(sv.Detections(xyxy=d.xyxy.copy(), confidence=d.confidence.copy(),
                                         class_id=d.class_id.copy())) for d in dets]


@pytest.mark.parametrize("length,overlap", [(8, 4), (12, 8), (20, 8), (16, 8)])
def test_tracks_keep_their_ids_across_seams(length, overlap):
    dets = scripted()
    whole = [list(d.tracker_id) for d in track(dets)]
    plan = segments.SegmentPlan(total=len(dets), length=length, overlap=overlap)
    parts = []
    for k in range(plan.count):
        first, stop = plan.reads(k)
        part = track(dets[first:stop])
        parts.append(Frames(meta=[(first + r, 0.0) for r in range(len(part))], dets=part,
                            poses=[KeyPoints.empty(1) for _ in part], keypoints=1))
    merged, local = segments.stitch(parts, plan)
    assert [m[0] for m in merged.meta] == list(range(len(dets)))
    # the same animal, the same id, through every seam: ids as the whole-video tracker gives them
    assert [list(d.tracker_id) for d in merged.dets] == whole
    assert len(local) == plan.count and all(set(m.values()) <= {1, 2, 3} for m in local)


def test_tracks_seen_only_in_one_segment_get_new_ids():
    a = [sv.Detections(xyxy=np.array([[0, 0, 40, 40]], np.float32), confidence=np.array([0.9], np.float32),
                       class_id=np.array([0]))] * 8
    b = [sv.Detections(xyxy=np.array([[300, 300, 340, 340]], np.float32), confidence=np.array([0.9], np.float32),
                       class_id=np.array([0]))] * 8
    dets = a + b  # one animal leaves at the seam, another arrives
    plan = segments.SegmentPlan(total=16, length=8, overlap=4)
    parts = [Frames(meta=[(r, 0.0) for r in range(first, min(16, stop or 16))], dets=track(dets[first:stop]),
                    poses=[KeyPoints.empty(1)] * (min(16, stop or 16) - first), keypoints=1)
             for first, stop in (plan.reads(0), plan.reads(1))]
    merged, _ = segments.stitch(parts, plan)
    assert [int(d.tracker_id[0]) for d in merged.dets] == [1] * 8 + [2] * 8


# --- the real pipeline: a segmented run is a whole run ------------------------------------------------

@pytest.fixture(scope="module")
def pipeline(untrained_models_dir, tmp_path_factory):
    from wildswarm.pipeline.run import Pipeline
    return Pipeline(Settings(data=tmp_path_factory.mktemp("data"), models_dir=untrained_models_dir, untrained=True,
                             device="cpu", detection_threshold=0.001, max_animals=2, fps=5, batch_size=4,
                             detector_image_size=320, pose="superanimal_topviewmouse", segment_seconds=0))


def poses_by_frame(folder):
    """Per frame, the sorted keypoints of every posed animal (the columns they sit in may differ)."""
    table = pd.read_hdf(folder / outputs.KEYPOINTS_H5, "df_with_missing")
    out = {}
    for frame, row in table.iterrows():
        animals = []
        for individual in row.index.get_level_values("individuals").unique():
            values = row.xs(individual, level="individuals").to_numpy()
            if not np.isnan(values).all():
                animals.append(tuple(np.round(values, 3)))
        out[frame] = sorted(animals)
    return out


def frames_of(video):
    with av.open(str(video)) as c:
        s = c.streams.video[0]
        assert (s.codec_context.name, s.codec_context.pix_fmt) == ("h264", "yuv420p")
        pts = [f.pts for f in c.decode(s)]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)  # plays straight through
    return len(pts)


def run_both(pipeline, video, out, **segmenting):
    whole_settings = pipeline.settings
    whole = pipeline.analyze(video, out / "whole")
    pipeline.settings = whole_settings.replace(**segmenting)
    try:
        seg_plan = pipeline.plan(probe(video))
        cut = pipeline.analyze(video, out / "segmented")
    finally:
        pipeline.settings = whole_settings
    return whole, cut, seg_plan


@pytest.mark.slow
@pytest.mark.parametrize("which", ["seed-0", "seed-1", "generated-2min"])
def test_a_segmented_run_gives_the_whole_runs_detections_and_keypoints_at_every_frame(
        pipeline, seed_videos, tmp_path, which):
    if which.startswith("seed"):
        video = seed_videos[int(which[-1])]
        segmenting = {"segment_seconds": 0.8, "segment_overlap_seconds": 0.8}    # 4 frames each, seams every 4
    else:
        video = write_video(tmp_path / "two-minutes.mp4", frames=1200, size=(160, 96), fps=10)
        segmenting = {"segment_seconds": 30, "segment_overlap_seconds": 4, "fps": 0.5}  # 60 frames, 4 segments
        pipeline.settings = pipeline.settings.replace(fps=0.5)
    try:
        whole, cut, seg_plan = run_both(pipeline, video, tmp_path, **segmenting)
    finally:
        pipeline.settings = pipeline.settings.replace(fps=5)
    assert seg_plan is not None and seg_plan.count >= 3
    assert cut.summary["segments"]["count"] == seg_plan.count
    assert whole.frames_analysed == cut.frames_analysed and whole.frames_read == cut.frames_read
    [a] = json.loads((whole.output_dir / outputs.DETECTIONS).read_text())["images"]
    [b] = json.loads((cut.output_dir / outputs.DETECTIONS).read_text())["images"]
    assert a["frames_processed"] == b["frames_processed"]
    assert a["detections"] == b["detections"]           # every box, with its frame number, seams too
    assert len(a["detections"]) > 0
    assert poses_by_frame(whole.output_dir) == poses_by_frame(cut.output_dir)
    assert frames_of(whole.output_dir / outputs.LABELED_VIDEO) == frames_of(cut.output_dir / outputs.LABELED_VIDEO) \
        == whole.frames_analysed
    # the same files, the same formats; the segments are gone once merged
    assert sorted(p.name for p in cut.output_dir.iterdir()) == sorted(outputs.ALL_FILES)
    assert cut.summary["poster"] == whole.summary["poster"]     # the same fullest frame, chosen across segments
    assert not (tmp_path / "segmented" / segments.SEGMENTS_DIR / cut.name).exists()
    assert cut.summary["animals"]["distinct"] == len(cut.summary["tracks"]) >= 1


@pytest.mark.slow
@pytest.mark.parametrize("overlap", ["on", "off"])
def test_a_segmented_runs_time_is_its_segments_and_its_merge_not_its_stages_added_up(
        pipeline, seed_videos, tmp_path, overlap):
    """With decode and draw in threads the stages' timings overlap, and the merge's write and join
    were counted twice: the summary's total was more than the run took. Each segment now records its
    own wall time, and the total is theirs plus the merge's."""
    whole_settings = pipeline.settings
    pipeline.settings = whole_settings.replace(segment_seconds=0.8, segment_overlap_seconds=0.8, overlap=overlap)
    overlapped, pipeline.overlap = pipeline.overlap, overlap == "on"
    try:
        started = time.perf_counter()
        cut = pipeline.analyze(seed_videos[0], tmp_path / "segmented")
        wall = time.perf_counter() - started
    finally:
        pipeline.settings, pipeline.overlap = whole_settings, overlapped
    parts = cut.summary["segments"]["parts"]
    assert len(parts) >= 3 and all(p["seconds"] > 0 for p in parts)
    total = cut.summary["timings_s"]["total"]
    assert sum(p["seconds"] for p in parts) <= total <= wall + 0.01


@pytest.mark.slow
def test_a_killed_run_redoes_only_the_segment_it_was_in(untrained_models_dir, seed_videos, tmp_path):
    video = seed_videos[0]
    env = {**os.environ, "WILDSWARM_MODELS_DIR": str(untrained_models_dir), "WILDSWARM_DATA": str(tmp_path),
           "WILDSWARM_SEGMENT_SECONDS": "0.8", "WILDSWARM_SEGMENT_OVERLAP_SECONDS": "0.8",
           "WILDSWARM_DETECTION_THRESHOLD": "0.001", "WILDSWARM_MAX_ANIMALS": "2", "WILDSWARM_BATCH_SIZE": "4",
           "WILDSWARM_DETECTOR_IMAGE_SIZE": "320", "WILDSWARM_POSE": "superanimal_topviewmouse"}
    cmd = [sys.executable, "-m", "wildswarm", "analyze", str(video), "--out", str(tmp_path / "out"),
           "--untrained", "--device", "cpu"]
    parts = tmp_path / "out" / segments.SEGMENTS_DIR / video.stem
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (parts / segments.part_name(1) / segments.PART_FILE).exists() or first.poll() is not None,
                 timeout=240, what="the first two segments finished")
        os.kill(first.pid, signal.SIGKILL)  # in segment 3 (or between 2 and 3)
    finally:
        first.wait()
    assert first.returncode == -signal.SIGKILL
    kept = sorted(p.name for p in parts.iterdir() if not p.name.startswith(".") and p.name != segments.PLAN_FILE)
    assert kept[:2] == [segments.part_name(0), segments.part_name(1)] and not (tmp_path / "out" / video.stem).exists()
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    summary = json.loads((tmp_path / "out" / video.stem / outputs.SUMMARY).read_text())
    made_by = [p["pid"] for p in summary["segments"]["parts"]]
    finished_before = len(kept)
    assert made_by[:finished_before] == [first.pid] * finished_before  # never analysed again
    assert set(made_by[finished_before:]) == {second_pid(summary, first.pid)}
    assert not parts.exists() and summary["frames"]["analysed"] == 18


def second_pid(summary, killed):
    pids = {p["pid"] for p in summary["segments"]["parts"]} - {killed}
    assert len(pids) == 1
    return pids.pop()


def finish_part(where, k, key):
    (where / segments.part_name(k)).mkdir()
    (where / segments.part_name(k) / segments.PART_FILE).write_text(json.dumps({"key": key, "frames": 4}))


def test_finished_segments_count_only_for_the_plan_they_were_made_for(tmp_path):
    plan = segments.SegmentPlan(total=100, length=20, overlap=4)
    view = {"fps": 5, "version": "1.0"}
    where = segments.prepare(tmp_path, "v", "key-1", plan, view)
    finish_part(where, 0, "key-1")
    assert segments.prepare(tmp_path, "v", "key-1", plan) == where and segments.finished(where, 0)  # kept
    assert segments.check(tmp_path, "v", "key-1") == where
    with pytest.raises(PlanChanged, match="planned under other settings") as changed:
        segments.check(tmp_path, "v", "key-2", {"fps": 5, "version": "1.1"})   # never writes into another plan
    assert changed.value.differs == "version '1.0' -> '1.1'"                  # says what differs
    segments.prepare(tmp_path, "v", "key-2", plan)           # another video or settings: started afresh
    assert not segments.finished(where, 0) and segments.check(tmp_path, "v", "key-2") == where
    with pytest.raises(PlanChanged) as changed:
        segments.check(tmp_path, "w", "key-2", view)
    assert changed.value.differs == "no plan on disk"


def test_a_part_made_under_another_plan_does_not_count(tmp_path):
    """A worker of the old version that finishes its segment after the video was planned again under
    the new one drops its part into the new plan's folder: it must not be merged as if it were new."""
    plan = segments.SegmentPlan(total=100, length=20, overlap=4)
    where = segments.prepare(tmp_path, "v", "new", plan)
    finish_part(where, 0, "old")
    finish_part(where, 1, "new")
    (where / segments.part_name(2)).mkdir()
    (where / segments.part_name(2) / segments.PART_FILE).write_text("{}")      # from before parts kept their key
    assert [segments.finished(where, k) for k in range(4)] == [False, True, False, False]


def test_the_fingerprint_follows_the_video_the_settings_and_the_plan(tmp_path):
    a = write_video(tmp_path / "a.mp4", frames=20)
    b = write_video(tmp_path / "b.mp4", frames=21)
    plan = segments.SegmentPlan(total=100, length=20, overlap=4)
    key = segments.fingerprint(a, {"fps": 5}, plan)
    assert key == segments.fingerprint(a, {"fps": 5}, plan)
    assert len({key, segments.fingerprint(b, {"fps": 5}, plan), segments.fingerprint(a, {"fps": 2}, plan),
                segments.fingerprint(a, {"fps": 5}, segments.SegmentPlan(100, 24, 4))}) == 4
