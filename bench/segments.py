#!/usr/bin/env python3
"""Benchmark: one long video in segments over 1, 2, 4 and 8 worker processes; merge cost; a kill at 90 %.

    python bench/segments.py [--minutes 60] [--fps 5] [--per-frame-ms 10] [--workers 1,2,4,8] [--out DIR]
    make bench-segments

What is real and what stands in
-------------------------------
Everything of the segment scheme is wildswarm's own code, run for real: the video (generated once,
``--minutes`` long at ``--fps`` frames/s, 160x96 H.264) is probed and planned by
``Pipeline.plan``; each segment is decoded with its seek, tracked (ByteTrack), drawn and encoded
into its labeled video, and written atomically by ``Pipeline.analyze_segment``; the merge
(``Pipeline.merge``: loading the parts, stitching tracks, joining the videos without re-encoding,
every result file) runs as it does in a worker. Only the models stand in: a detector that spends
``--per-frame-ms`` per frame (sleeping, so that 8 workers can be measured on a 2-core machine) and
finds one box moving across the frame, and a pose model that puts 4 keypoints in it.

Workers are processes that take the next unfinished segment from a shared counter, as workers of
the stack take segment tasks from the queue (the broker's share is measured by bench/dispatch.py).
For N workers the video is cut as a worker of the stack cuts it when N workers consume the queue:
into a multiple of N segments, so that the last round is full.

It prints, in one run: wall time and speedup against 1 worker for each worker count (target:
>= 0.85 x N); the merge's time as a share of the 1-worker time (target: < 3 %); and the frames
analysed again after a run is SIGKILLed at 90 % and started again (target: <= one segment). JSON
goes to bench/results/segments-<timestamp>.json (``--out`` another folder).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from bench.results import save  # noqa: E402
from wildswarm.config import Settings  # noqa: E402
from wildswarm.pipeline import segments, stages  # noqa: E402
from wildswarm.pipeline.pose import KeyPoints  # noqa: E402
from wildswarm.pipeline.run import Pipeline  # noqa: E402
from wildswarm.pipeline.video import probe  # noqa: E402

W, H = 160, 96


class StandInDetector:
    def __init__(self, per_frame: float):
        self.per_frame = per_frame

    def detect(self, images):
        import supervision as sv
        time.sleep(self.per_frame * len(images))
        out = []
        for img in images:
            x = float(img[0, 0, 0]) / 255 * (W - 40)  # the frame carries its box position in a pixel
            out.append(sv.Detections(xyxy=np.array([[x, 30, x + 40, 60]], np.float32),
                                     confidence=np.array([0.9], np.float32), class_id=np.array([0])))
        return out


class StandInPose:
    bodyparts = ["nose", "neck", "back", "tail_base"]
    skeleton = [(0, 1), (1, 2), (2, 3)]

    def estimate(self, images, dets):
        out = []
        for d in dets:
            if len(d):
                x1, y1, x2, y2 = d.xyxy[0]
                xy = np.array([[[x1 + (x2 - x1) * t, (y1 + y2) / 2] for t in (0.1, 0.4, 0.7, 0.9)]], np.float32)
                out.append(KeyPoints(xy, np.full((1, 4), 0.9, np.float32)))
            else:
                out.append(KeyPoints.empty(4))
        return out


class Weight:
    """Stands in for a weight file in the summary and in the fingerprint of finished segments."""

    sha256 = "stand-in"

    class spec:  # noqa: N801
        kind = "stand-in"

    @staticmethod
    def describe() -> dict:
        return {"name": "stand-in models (bench/segments.py)"}


def stand_in_pipeline(settings: Settings, per_frame: float) -> Pipeline:
    p = Pipeline.__new__(Pipeline)
    p.settings, p.device, p.untrained, p.load_seconds = settings, "cpu", False, 0.0
    p.weights, p.classifier = [Weight()], None
    p.detector, p.pose = StandInDetector(per_frame), StandInPose()
    # what Pipeline.__init__ sets besides the models: no exported runtimes; stages as a CPU node runs them
    p.backends, p.runtimes, p.backend_seconds = {}, {}, 0.0
    p.threads = p.torch_threads = 1
    p.overlap = stages.overlap_wanted(settings.overlap, "cpu")
    return p


def make_video(path: Path, minutes: float, fps: int) -> Path:
    import av
    n = int(minutes * 60 * fps)
    with av.open(str(path), mode="w") as c:
        s = c.add_stream("libx264", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.options = {"preset": "ultrafast", "g": str(fps * 10)}  # a keyframe every 10 s, as cameras do
        base = np.full((H, W, 3), 60, np.uint8)
        for i in range(n):
            img = base.copy()
            pos = (i % 200) / 199
            img[0:4, 0:4] = int(pos * 255)
            x = int(pos * (W - 40))
            img[30:60, x:x + 40] = (200, 150, 90)
            for packet in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return path


def worker(settings, per_frame, video, out, name, plan, counter, lock, done_frames):
    p = stand_in_pipeline(settings, per_frame)
    while True:
        with lock:
            k = counter.value
            counter.value += 1
        if k >= plan.count:
            return

        def report(n, last=[0]):  # noqa: B006 -- per-segment running count
            with done_frames.get_lock():
                done_frames.value += n - last[0]
            last[0] = n
        p.analyze_segment(video, out, name, k, plan, report=report)


def run(settings, per_frame, video, out, name, plan, n_workers, *, kill_at: float | None = None):
    """Analyse every segment with n worker processes; returns (seconds for the segments, processes'
    frames). With ``kill_at``, the workers are SIGKILLed once that share of frames is done."""
    ctx = mp.get_context("fork")
    counter, lock, done = ctx.Value("i", 0), ctx.Lock(), ctx.Value("q", 0)
    procs = [ctx.Process(target=worker, args=(settings, per_frame, video, out, name, plan, counter, lock, done))
             for _ in range(n_workers)]
    started = time.perf_counter()
    for proc in procs:
        proc.start()
    if kill_at is not None:
        while done.value < kill_at * plan.total and any(p.is_alive() for p in procs):
            time.sleep(0.05)
        for proc in procs:
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGKILL)
    for proc in procs:
        proc.join()
    return time.perf_counter() - started, done.value


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--fps", type=int, default=5)
    ap.add_argument("--per-frame-ms", type=float, default=10.0)
    ap.add_argument("--segment-seconds", type=float, default=60.0)
    ap.add_argument("--workers", default="1,2,4,8")
    ap.add_argument("--out", type=Path, default=None, help="folder for the JSON (default bench/results)")
    args = ap.parse_args(argv)
    counts = [int(n) for n in args.workers.split(",")]
    per_frame = args.per_frame_ms / 1000
    work = Path(tempfile.mkdtemp(prefix="wildswarm-bench-segments-"))
    try:
        t = time.perf_counter()
        video = make_video(work / "one-hour.mp4", args.minutes, args.fps)
        print(f"video: {args.minutes:g} min at {args.fps} fps, {W}x{H}, made in {time.perf_counter() - t:.1f} s")
        settings = Settings(data=work, fps=args.fps, batch_size=4, segment_seconds=args.segment_seconds,
                            segment_overlap_seconds=2.0, detection_threshold=0.2)
        p = stand_in_pipeline(settings, per_frame)
        info = probe(video)
        plan = p.plan(info)
        # A worker has these loaded after its first job: the merge is timed without their import.
        import matplotlib.pyplot  # noqa: F401
        import pandas  # noqa: F401
        import tables  # noqa: F401
        print(f"plan: {plan.count} segments of {plan.length} frames, overlap {plan.overlap}; "
              f"{plan.total} frames; stand-in models {args.per_frame_ms:g} ms/frame")
        rows = []
        for n in counts:
            out = work / f"out-{n}"
            cut = p.plan(info, workers=n)      # as a worker cuts it for the n consumers of the queue
            p.prepare_segments(video, out, "v", cut)
            seconds, frames = run(settings, per_frame, video, out, "v", cut, n)
            t = time.perf_counter()
            result = p.merge(video, out, "v", cut)
            merge = time.perf_counter() - t
            rows.append({"workers": n, "segments": cut.count, "length": cut.length, "segments_s": seconds,
                         "merge_s": merge, "total_s": seconds + merge, "frames": result.frames_analysed,
                         "frames_processed": frames})
            shutil.rmtree(out)
        base = rows[0]["total_s"]
        print(f"\n{'workers':>7} {'segments':>9} {'total s':>9} {'segments s':>11} {'merge s':>8} {'speedup':>8} "
              f"{'x N':>6}")
        for r in rows:
            r["speedup"] = base / r["total_s"]
            r["efficiency"] = r["speedup"] / r["workers"] * rows[0]["workers"]
            print(f"{r['workers']:>7} {r['segments']:>4} x{r['length']:>4} {r['total_s']:>9.1f} "
                  f"{r['segments_s']:>11.1f} {r['merge_s']:>8.2f} {r['speedup']:>8.2f} {r['efficiency']:>6.2f}")
        merge_share = rows[0]["merge_s"] / rows[0]["total_s"]
        print(f"\nmerge: {rows[0]['merge_s']:.2f} s = {100 * merge_share:.2f} % of the {rows[0]['workers']}-worker "
              f"time (target < 3 %)")

        out = work / "out-kill"
        p.prepare_segments(video, out, "v", plan)
        _, before = run(settings, per_frame, video, out, "v", plan, 1, kill_at=0.9)
        finished = sum(segments.finished(segments.folder(out, "v"), k) for k in range(plan.count))
        kept = sum(json.loads((segments.folder(out, "v") / segments.part_name(k) / segments.PART_FILE).read_text())
                   ["frames"] for k in range(plan.count) if segments.finished(segments.folder(out, "v"), k))
        _, after = run(settings, per_frame, video, out, "v", plan, 1)
        p.merge(video, out, "v", plan)
        lost = before - kept                      # frames analysed before the kill and not kept
        print(f"kill at 90 %: {before} frames analysed, {finished} of {plan.count} segments kept; the restart "
              f"analysed {after}; work redone: {lost} frames = {lost / (plan.length + plan.overlap):.2f} "
              f"segment (target <= 1)")
        verdict = {"speedup_ok": all(r["efficiency"] >= 0.85 for r in rows), "merge_ok": merge_share < 0.03,
                   "redone_ok": lost <= plan.length + plan.overlap}
        print("targets:", ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in verdict.items()))
        path = save({"args": vars(args), "plan": {"total": plan.total, "length": plan.length, "overlap": plan.overlap},
                     "rows": rows, "merge_share": merge_share,
                     "kill": {"before": before, "kept": kept, "after": after, "redone": lost},
                     "verdict": verdict}, "segments", args.out, default=str)
        print(f"wrote {path}")
        return {"rows": rows, "merge_share": merge_share, "redone": lost, "verdict": verdict, "path": path}
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
