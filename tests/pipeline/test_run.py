"""The real pipeline (PytorchWildlife + DeepLabCut code paths) on untrained weights."""
import json
import os
import time

import av
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from wildswarm.config import Settings
from wildswarm.errors import ModelError, VideoError
from kit.validators import megadetector_problems
from wildswarm.pipeline import outputs, stages
from wildswarm.pipeline.run import Pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def settings(untrained_models_dir, tmp_path_factory) -> Settings:
    return Settings(data=tmp_path_factory.mktemp("data"), models_dir=untrained_models_dir, untrained=True,
                    device="cpu", detection_threshold=0.001, max_animals=2, fps=5, batch_size=4)


@pytest.fixture(scope="module")
def pipeline(settings) -> Pipeline:
    return Pipeline(settings)


def check_outputs(folder, video_frames: int, expected_analysed: int, bodyparts: int, smoothing: bool = False):
    assert sorted(p.name for p in folder.iterdir()) == sorted(outputs.expected(smoothing))
    summary = json.loads((folder / outputs.SUMMARY).read_text())
    assert summary["untrained_weights"] is True and "UNTRAINED" in summary["warning"]
    assert summary["frames"]["analysed"] == expected_analysed
    assert summary["frames"]["read"] == video_frames
    for stage in ("decode", "detect", "pose", "render", "write", "total"):
        assert stage in summary["timings_s"]
    for kind in ("detector", "pose"):
        assert len(summary["models"][kind]["sha256"]) == 64
    assert summary["models"]["pose"]["crops"] == {"by": "deeplabcut"}     # pose_crops auto, on a CPU
    # the labeled video: H.264, yuv420p, one frame per analysed frame
    with av.open(str(folder / outputs.LABELED_VIDEO)) as c:
        s = c.streams.video[0]
        assert (s.codec_context.name, s.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert sum(1 for _ in c.decode(s)) == expected_analysed
    assert megadetector_problems(folder / outputs.DETECTIONS) == ([], [])   # MegaDetector's own validator
    dets = json.loads((folder / outputs.DETECTIONS).read_text())
    [entry] = dets["images"]
    assert len(entry["frames_processed"]) == expected_analysed and entry["file"] == summary["video"]
    assert entry["frame_rate"] == pytest.approx(summary["input"]["fps"])
    assert dets["info"]["untrained_weights"] is True and dets["info"]["format_version"] == "1.6"
    for d in entry["detections"]:
        assert d["category"] in dets["detection_categories"] and d["frame_number"] in entry["frames_processed"]
        assert all(0 <= v <= 1.0001 for v in d["bbox"])
    table = pd.read_hdf(folder / outputs.KEYPOINTS_H5)
    assert len(table) == expected_analysed
    assert table.columns.get_level_values("bodyparts").nunique() == bodyparts
    assert set(table.columns.get_level_values("coords")) == {"x", "y", "likelihood"}
    csv = pd.read_csv(folder / outputs.KEYPOINTS_CSV, header=[0, 1, 2, 3], index_col=0)
    assert csv.shape == table.shape
    with Image.open(folder / outputs.TRAJECTORY) as im:
        assert im.format == "PNG" and im.size[0] > 300
    # the poster: the annotated frame with the most animals (the first such), at the video's size
    with Image.open(folder / outputs.POSTER) as im:
        w, h = summary["input"]["width"], summary["input"]["height"]
        assert im.format == "JPEG" and im.size == ((w, h) if max(w, h) <= 1280 else im.size)
    best = max((n, -f) for f, n in _animals_per_frame(folder))
    assert (summary["poster"]["animals"], -summary["poster"]["frame"]) == best
    # one identity per animal: the MOT rows, the table's individuals and the summary name the same tracks
    tracks = {t["id"]: t for t in summary["tracks"]}
    assert summary["animals"]["distinct"] == len(tracks)
    mot = [line.split(",") for line in (folder / outputs.TRACKS).read_text().splitlines()]
    assert all(len(row) == 10 and row[7:] == ["-1", "-1", "-1"] for row in mot)
    assert {int(row[1]) for row in mot} == set(tracks)
    for tid, t in tracks.items():
        frames = [int(row[0]) - 1 for row in mot if int(row[1]) == tid]
        assert (min(frames), max(frames), len(frames)) == (t["first_frame"], t["last_frame"], t["frames"])
    # the posed animals (up to max_animals a frame, the most confident) under their tracks' names
    named = {n for n in table.columns.get_level_values("individuals") if not n.startswith("untracked")}
    assert named <= ({f"animal{t}" for t in tracks} or {"animal1"})
    return summary, table


def _animals_per_frame(folder) -> list[tuple[int, int]]:
    """(source frame, animal boxes) of every analysed frame, from detections.json."""
    [entry] = json.loads((folder / outputs.DETECTIONS).read_text())["images"]
    count = {f: 0 for f in entry["frames_processed"]}
    for d in entry["detections"]:
        count[d["frame_number"]] += d["category"] == "1"
    return sorted(count.items())


def test_seed_videos_end_to_end(pipeline, seed_videos, tmp_path):
    for video in seed_videos:
        seen = []
        result = pipeline.analyze(video, tmp_path, progress=lambda d, t: seen.append((d, t)))
        with av.open(str(video)) as c:
            total = c.streams.video[0].frames
        expected = len(range(0, total, 1)) and int(np.ceil(total / (24 / 5)))
        summary, table = check_outputs(result.output_dir, total, expected, 39)
        assert result.frames_analysed == expected and result.untrained
        assert seen[0][0] == 0 and seen[-1] == (expected, expected)
        assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))
        # pose ran on the boxes the detector found: keypoints present for up to max_animals animals
        assert summary["animals"]["poses"] > 0
        assert not table.xs("x", level="coords", axis=1).isna().all().all()
        assert summary["animals"]["distinct"] >= 1
    assert not list(tmp_path.glob(".tmp-*"))


def test_no_animals_gives_an_empty_but_valid_result(settings, make_video, tmp_path):
    strict = Pipeline(settings.replace(detection_threshold=0.99, pose="superanimal_topviewmouse"))
    result = strict.analyze(make_video(frames=10, fps=10), tmp_path)
    summary, table = check_outputs(result.output_dir, 10, 5, 27)
    assert summary["animals"]["detections"] == 0 and summary["animals"]["poses"] == 0
    assert table.isna().all().all()


def test_smoothing_writes_the_filtered_table_beside_the_raw_one(settings, make_video, tmp_path):
    p = Pipeline(settings.replace(smooth="median", smooth_window=3, pose="superanimal_topviewmouse"))
    result = p.analyze(make_video(frames=20, fps=10), tmp_path, name="smoothed")
    summary, table = check_outputs(result.output_dir, 20, 10, 27, smoothing=True)
    filtered = pd.read_hdf(result.output_dir / outputs.FILTERED_H5, "df_with_missing")
    assert filtered.shape == table.shape and (filtered.index == table.index).all()
    assert summary["settings"]["smooth"] == "median" and outputs.FILTERED_CSV in summary["files"]
    pd.testing.assert_frame_equal(filtered.xs("likelihood", level="coords", axis=1),
                                  table.xs("likelihood", level="coords", axis=1))


def test_classifier_labels_each_animal(settings, make_video, tmp_path):
    p = Pipeline(settings.replace(classifier="AI4GSnapshotSerengeti", detector_image_size=320))
    result = p.analyze(make_video(frames=5, fps=5), tmp_path, name="classified")
    assert megadetector_problems(result.output_dir / outputs.DETECTIONS) == ([], [])
    dets = json.loads((result.output_dir / outputs.DETECTIONS).read_text())
    assert len(dets["classification_categories"]) == 10
    assert dets["info"]["classifier"] == "AI4GSnapshotSerengeti"
    [entry] = dets["images"]
    animal_dets = [d for d in entry["detections"] if d["category"] == "1"]
    per_frame = [[d for d in animal_dets if d["frame_number"] == i] for i in entry["frames_processed"]]
    # the first max_animals (2) animal boxes of each frame carry a species, the rest do not
    for boxes in per_frame:
        assert [("classifications" in d) for d in boxes] == [True] * min(2, len(boxes)) + [False] * (len(boxes) - 2)
    assert animal_dets
    assert result.summary["models"]["classifier"]["name"] == "AI4GSnapshotSerengeti"


@pytest.mark.parametrize("content,match", [
    (None, "no such file"),
    (b"", "empty"),
    (b"GIF89a not a video at all" * 100, "not a readable video"),
])
def test_bad_input_raises_video_error_and_writes_nothing(pipeline, tmp_path, content, match):
    video = tmp_path / "in" / "bad.mp4"
    video.parent.mkdir()
    if content is not None:
        video.write_bytes(content)
    out = tmp_path / "out"
    with pytest.raises(VideoError, match=match):
        pipeline.analyze(video, out)
    assert not out.exists() or list(out.iterdir()) == []


def test_truncated_video_leaves_no_partial_folder(pipeline, make_video, tmp_path):
    data = make_video(frames=30, size=(320, 192)).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    out = tmp_path / "out"
    with pytest.raises(VideoError, match="truncated"):     # not analysed in part and called done
        pipeline.analyze(cut, out)
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize("device", ["gpu", "", "cuda:x", "cpu0"])
def test_an_unknown_device_is_refused_with_the_choices(device):
    """WILDSWARM_DEVICE=gpu (or empty) used to reach the libraries, which each guessed or failed in
    their own words (ultralytics takes "" for any device)."""
    from wildswarm.errors import PipelineError
    from wildswarm.pipeline.run import resolve_device
    with pytest.raises(PipelineError, match="use cpu, cuda, cuda:N or auto"):
        resolve_device(device)
    assert resolve_device(" CPU ") == "cpu"


def test_untrained_weights_are_refused_unless_asked_for(settings):
    with pytest.raises(ModelError, match="untrained"):
        Pipeline(settings.replace(untrained=False))


def test_a_pipeline_removes_what_a_killed_export_left_in_the_cache(settings):
    """`wildswarm analyze` killed during an ONNX export leaves its temporary folder in the cache;
    the next pipeline to load (a worker's, or the next analyze) removes it once it is hours old."""
    left = settings.cache / "exports" / ".export-k1ll3d"
    left.mkdir(parents=True)
    (left / "md_v5a.onnx").write_bytes(b"half")
    t = time.time() - 7 * 3600
    for p in (left / "md_v5a.onnx", left):
        os.utime(p, (t, t))
    Pipeline(settings.replace(backend="torch"))
    assert not left.exists()


def test_torch_keeps_one_thread_where_every_model_runs_on_an_exported_runtime(settings):
    """With every model on OpenVINO or ONNX Runtime, torch only runs the libraries' pre- and
    post-processing: small ops whose OpenMP fork and join, beside the runtime's own threads and the
    decode and draw threads, cost more than they save, so torch keeps one thread. The runtimes keep
    every inference thread, and models on PyTorch keep them all for torch."""
    import torch
    # asked for, not left to the timings: on a CPU without AVX-512 PyTorch may time fastest for a
    # model and keep it (a CI machine did), which is the other case, tested below
    exported = Pipeline(settings.replace(backend="onnxruntime"))
    assert all(r is not None for r in exported.runtimes.values()), exported.backends
    assert exported.torch_threads == torch.get_num_threads() == 1
    assert exported.threads == stages.usable_cpus()
    assert all(r.threads == exported.threads for r in exported.runtimes.values())
    on_torch = Pipeline(settings.replace(backend="torch"))
    assert all(r is None for r in on_torch.runtimes.values())
    assert on_torch.torch_threads == torch.get_num_threads() == on_torch.threads == stages.usable_cpus()


# --- overlapped stages (pipeline/stages.py) ------------------------------------------------------------
def test_overlapped_stages_give_the_same_results_as_in_turn(pipeline, make_video, tmp_path):
    video = make_video(frames=24, size=(320, 192))
    results = {}
    for overlap in (False, True):
        pipeline.overlap = overlap
        try:
            results[overlap] = pipeline.analyze(video, tmp_path / str(overlap))
        finally:
            pipeline.overlap = False
    off, on = results[False].output_dir, results[True].output_dir
    assert json.loads((on / outputs.DETECTIONS).read_text())["images"] == \
        json.loads((off / outputs.DETECTIONS).read_text())["images"]
    pd.testing.assert_frame_equal(pd.read_hdf(on / outputs.KEYPOINTS_H5), pd.read_hdf(off / outputs.KEYPOINTS_H5))
    with av.open(str(on / outputs.LABELED_VIDEO)) as a, av.open(str(off / outputs.LABELED_VIDEO)) as b:
        assert sum(1 for _ in a.decode(video=0)) == sum(1 for _ in b.decode(video=0)) == results[True].frames_analysed
    assert (on / outputs.POSTER).read_bytes() == (off / outputs.POSTER).read_bytes()


@pytest.mark.parametrize("overlap", [False, True])
def test_a_full_disk_under_the_draw_thread_fails_the_video_and_leaves_nothing(pipeline, make_video, tmpfs, overlap):
    """The labeled video is written from the draw thread: ENOSPC there must surface, not hang."""
    video = make_video(frames=60, size=(320, 192))
    out = tmpfs.path / "out"
    out.mkdir()
    tmpfs.fill()
    pipeline.overlap = overlap
    try:
        with pytest.raises(Exception) as err:
            pipeline.analyze(video, out)
    finally:
        pipeline.overlap = False
        tmpfs.unfill()
    assert "No space left" in str(err.value) or "ENOSPC" in repr(err.value) or isinstance(err.value, OSError), err.value
    assert list(out.iterdir()) == []
    import threading
    assert not [t for t in threading.enumerate() if t.name.startswith("wildswarm-")]


def test_the_labeled_video_is_finished_while_the_results_are_written(pipeline, make_video, tmp_path, monkeypatch):
    """Overlapped, the draw thread flushes the encoder and closes the labeled video while the main
    thread writes the tables and the plot (the flush of a short clip took ~60 ms that the other
    core spent idle); the result waits for both."""
    import threading
    import time
    from wildswarm.pipeline import render, video as video_io
    events = []
    close, plot = video_io.VideoWriter.close, render.trajectory_plot

    def slow_close(self):
        if self._container is not None:
            events.append(("close starts", threading.current_thread().name))
            time.sleep(0.5)
            events.append(("close ends", threading.current_thread().name))
        return close(self)

    def timed_plot(*args, **kwargs):
        events.append(("plot", threading.current_thread().name))
        return plot(*args, **kwargs)
    monkeypatch.setattr(video_io.VideoWriter, "close", slow_close)
    monkeypatch.setattr(render, "trajectory_plot", timed_plot)
    clip = make_video(frames=24, size=(320, 192))
    pipeline.overlap = True
    try:
        result = pipeline.analyze(clip, tmp_path / "out")
    finally:
        pipeline.overlap = False
    names = [e for e, _ in events]
    assert names.index("plot") < names.index("close ends"), events      # nobody waited for the flush
    assert dict(events)["close starts"] == "wildswarm-draw"
    with av.open(str(result.output_dir / outputs.LABELED_VIDEO)) as c:
        assert sum(1 for _ in c.decode(video=0)) == result.frames_analysed
    assert (result.output_dir / outputs.POSTER).is_file()
    assert not [t for t in threading.enumerate() if t.name.startswith("wildswarm-")]


def test_on_a_cpu_node_the_codecs_run_in_one_thread_each(pipeline, make_video, tmp_path, monkeypatch):
    """Decode and encode beside CPU inference in one thread each (stages.codec_threads): the codecs'
    own frame threads cost CPU time the models need."""
    from wildswarm.pipeline import video as video_io
    opened, writers = [], []
    real_open, real_init = video_io._open, video_io.VideoWriter.__init__

    def spying_open(path):
        container = real_open(path)
        opened.append(container.streams.video[0].codec_context)
        return container

    def spying_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        writers.append(self._stream.codec_context.thread_count)
    monkeypatch.setattr(video_io, "_open", spying_open)
    monkeypatch.setattr(video_io.VideoWriter, "__init__", spying_init)
    result = pipeline.analyze(make_video(frames=12, size=(160, 96)), tmp_path / "out")
    assert result.frames_analysed > 0
    assert writers == [1]
    decoders = [c.thread_count for c in opened if c.is_open]   # probe's (one frame: its rotation), the run's
    assert decoders == [1, 1], [c.thread_count for c in opened]


def test_a_failure_while_writing_results_stops_the_labeled_video_and_leaves_nothing(pipeline, make_video, tmp_path,
                                                                                     monkeypatch):
    import threading
    from wildswarm.pipeline import render

    def broken_plot(*args, **kwargs):
        raise RuntimeError("matplotlib fell over")
    monkeypatch.setattr(render, "trajectory_plot", broken_plot)
    out = tmp_path / "out"
    pipeline.overlap = True
    try:
        with pytest.raises(RuntimeError, match="fell over"):
            pipeline.analyze(make_video(frames=24, size=(320, 192)), out)
    finally:
        pipeline.overlap = False
    assert not out.exists() or list(out.iterdir()) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("wildswarm-")]


def test_a_variable_frame_rate_video_gives_one_time_per_frame_in_every_table_and_export(pipeline, tmp_path):
    """10 frames at 10 frames/s, then 10 at 2 frames/s (a phone). Tracks took each frame's own time while
    detections.csv, NWB and Camtrap DP's events counted frame / average rate: one export's times disagreed
    by a second and more. The summary now keeps each analysed frame's time where the rate varies, and
    every export reads it."""
    import csv
    import io
    import zipfile
    from wildswarm import exporters
    from wildswarm.exporters.base import ExportOptions, VideoResult
    video = vfr_video(tmp_path / "vfr.mp4")
    result = pipeline.analyze(video, tmp_path / "out")
    summary = result.summary
    times = {int(k): v for k, v in summary["frame_times_s"].items()}
    assert times[19] == pytest.approx(5.5) and times[4] == pytest.approx(0.4)
    r = VideoResult("j", video.name, result.output_dir)
    buf = io.BytesIO()
    exporters.get("csv").write([r], buf, ExportOptions())
    tables = {n: list(csv.DictReader(io.StringIO(z))) for n, z in
              ((n, zipfile.ZipFile(io.BytesIO(buf.getvalue())).read(n).decode()) for n in
               zipfile.ZipFile(io.BytesIO(buf.getvalue())).namelist())}
    assert tables["detections.csv"], "the untrained detector at threshold 0.001 finds boxes"
    for d in tables["detections.csv"]:
        assert float(d["time_s"]) == pytest.approx(times[int(d["frame"])], abs=1e-3)
    for t in summary["tracks"]:
        assert t["first_s"] == pytest.approx(times[t["first_frame"]], abs=1e-3)


def vfr_video(path):
    """10 frames at 10 frames/s, then 10 at 2 frames/s (a phone's variable rate): frame 19 is shown at 5.5 s,
    not at 19 / the average rate; a box moves right frame by frame."""
    from fractions import Fraction
    tb = Fraction(1, 1000)
    pts = [100 * i for i in range(10)] + [1000 + 500 * i for i in range(10)]
    rng = np.random.default_rng(0)
    background = (rng.random((96, 160, 3)) * 60 + 40).astype(np.uint8)
    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=10)
        st.width, st.height, st.pix_fmt, st.time_base = 160, 96, "yuv420p", tb
        for i, p in enumerate(pts):
            img = background.copy()
            img[32:56, 6 * i: 6 * i + 30] = (200, 150, 90)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = p, tb
            for pk in st.encode(f):
                c.mux(pk)
        for pk in st.encode():
            c.mux(pk)
    return path


def test_the_labeled_video_shows_each_frame_when_the_source_shows_it(pipeline, tmp_path):
    """A variable frame rate (a phone's): every table and export gives each analysed frame its own time
    (frame_times_s), but the labeled video played its frames one 1 / average rate apart. An animal first
    seen at 5.5 s by the tracks and detections.csv came on screen at 2.5 s of labeled.mp4 beside the source."""
    result = pipeline.analyze(vfr_video(tmp_path / "vfr.mp4"), tmp_path / "out")
    times = result.summary["frame_times_s"]
    [entry] = json.loads((result.output_dir / outputs.DETECTIONS).read_text())["images"]
    with av.open(str(result.output_dir / outputs.LABELED_VIDEO)) as c:
        shown = [float(f.time) for f in c.decode(c.streams.video[0])]
    assert shown == pytest.approx([times[str(i)] for i in entry["frames_processed"]], abs=1e-3)


def test_the_labeled_video_keeps_the_shape_of_a_video_of_wide_pixels(pipeline, tmp_path):
    """Cameras that record anamorphic video (DV's 720x480, HDV's 1440x1080) store frames narrower than
    they are shown and a sample aspect ratio that widens them. labeled.mp4 dropped it: the source played
    at 320x96 and its labeled video beside it at 160x96, every animal squeezed to half its width."""
    from fractions import Fraction
    video = tmp_path / "wide-pixels.mp4"
    with av.open(str(video), "w") as c:
        st = c.add_stream("libx264", rate=10)
        st.width, st.height, st.pix_fmt = 160, 96, "yuv420p"
        st.codec_context.sample_aspect_ratio = Fraction(2, 1)
        for i in range(4):
            for pk in st.encode(av.VideoFrame.from_ndarray(np.full((96, 160, 3), 40 * i, np.uint8), format="rgb24")):
                c.mux(pk)
        for pk in st.encode():
            c.mux(pk)
    result = pipeline.analyze(video, tmp_path / "out")
    with av.open(str(video)) as source, av.open(str(result.output_dir / outputs.LABELED_VIDEO)) as labeled:
        shown = source.streams.video[0].display_aspect_ratio
        assert shown == Fraction(10, 3)
        assert labeled.streams.video[0].display_aspect_ratio == shown


def test_the_nwb_export_of_a_variable_frame_rate_video_times_its_labeled_video_as_its_poses(pipeline, tmp_path):
    """NWB keeps the labeled video as an ImageSeries beside the PoseEstimationSeries that refer to it. At a
    variable frame rate the poses had each frame's own time but the labeled video only a rate (the average):
    a reader (DANDI, ndx-pose's viewers) put labeled frame 19 at 4.6 s, its pose at 5.5 s. The source video had
    only the average rate too, and now has every frame's own time, read from its packets."""
    import io
    import zipfile
    from pynwb import NWBHDF5IO
    from kit.validators import nwb_problems
    from wildswarm import exporters
    from wildswarm.exporters.base import ExportOptions, VideoResult
    result = pipeline.analyze(vfr_video(tmp_path / "vfr.mp4"), tmp_path / "out")
    r = VideoResult("j", "vfr.mp4", result.output_dir, source=tmp_path / "vfr.mp4")
    buf = io.BytesIO()
    exporters.get("nwb").write([r], buf, ExportOptions())
    zipfile.ZipFile(io.BytesIO(buf.getvalue())).extractall(tmp_path / "nwb")
    path = tmp_path / "nwb" / f"{r.name}.nwb"
    assert nwb_problems(path) == []
    times = result.summary["frame_times_s"]
    with NWBHDF5IO(str(path), "r") as io_:
        acquired = io_.read().acquisition
        labeled = acquired["labeled_video"]
        assert labeled.timestamps is not None and labeled.rate is None
        assert list(labeled.timestamps[:]) == pytest.approx([times[str(i)] for i in r.entry["frames_processed"]])
        source = acquired["source_video"]
        assert source.rate is None and list(source.timestamps[:]) == pytest.approx(
            [0.1 * i for i in range(10)] + [1.0 + 0.5 * i for i in range(10)])
