"""Long videos in segments: the plan, each segment's partial result on disk, and the merge.

A video longer than ``segment_seconds`` is analysed as K segments of
``length`` analysed frames each. Segment k owns the analysed frames
``[k*length, (k+1)*length)`` and reads ``overlap`` frames past its end (decoding
from the keyframe before its first frame, a PyAV seek). Lengths and overlaps
are whole batches, so every frame goes through the models in the same batch as
in a run of the whole video: the per-frame detections and keypoints are the
same, at every frame, seams included.

Each segment's result is written atomically (temporary folder, then rename)
under ``<out_root>/.segments/<name>/<k>/``: its labeled video (its own frames
only), and ``frames.npz`` + ``part.json`` (boxes, tracks, keypoints; plain
arrays and JSON, never a pickle). A finished segment is never analysed again
while the plan and the settings are unchanged: ``plan.json`` holds the plan's
key (the video, the settings that change results, wildswarm's version and the
weights' hashes) and those settings in words, and each ``part.json`` the key it
was made under. A worker whose key differs (a rolling update left workers of
two versions or settings) does not write into the plan: :func:`check` raises
:class:`PlanChanged`, saying what differs, and the worker plans the video again.

The merge joins the labeled videos without re-encoding, stitches each
segment's tracks to the next one's by the boxes they share in the overlap
(the same box, the same frame: an optimal assignment on those counts), names
the tracks of the whole video by first appearance, and hands the frames to the
same writers as a whole-video run.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from wildswarm.errors import PipelineError, PlanChanged
from wildswarm.layout import SEGMENTS_DIR  # noqa: F401  (output/.segments: named once, beside the layout)

PLAN_FILE = "plan.json"
PART_FILE = "part.json"
FRAMES_FILE = "frames.npz"


@dataclass(frozen=True)
class SegmentPlan:
    total: int     # analysed frames the header promises (the last segment reads to the end regardless)
    length: int    # analysed frames each segment owns
    overlap: int   # analysed frames each segment reads past its end, to stitch its tracks to the next

    @property
    def count(self) -> int:
        return max(1, math.ceil(self.total / self.length))

    def owned(self, k: int) -> tuple[int, int | None]:
        """Analysed frames ``[first, stop)`` segment k contributes (the last: to the end of the video)."""
        return k * self.length, (None if k == self.count - 1 else (k + 1) * self.length)

    def reads(self, k: int) -> tuple[int, int | None]:
        first, stop = self.owned(k)
        return first, (None if stop is None else stop + self.overlap)


def plan(total: int, out_fps: float, *, segment_seconds: float, overlap_seconds: float,
         batch_size: int, workers: int | None = None) -> SegmentPlan | None:
    """The segments of a video of ``total`` analysed frames, or None when it is one segment long.

    Segments are whole batches of at most ``segment_seconds``. Given the ``workers`` that take
    segments off the queue, their number is rounded up to a multiple of the workers, so that the
    last round keeps every worker busy instead of one finishing the tail alone (60 segments on 8
    workers: 7.5 rounds, the last half idle; 64 slightly shorter ones: 8 full rounds). Segments are
    never made shorter than half the setting, so few-segment videos keep their overlap overhead small.
    """
    if segment_seconds <= 0 or total <= 0:
        return None
    whole = lambda seconds: max(batch_size, math.ceil(seconds * out_fps / batch_size) * batch_size)  # noqa: E731
    batches = lambda frames: max(batch_size, math.ceil(frames / batch_size) * batch_size)  # noqa: E731
    length = whole(segment_seconds)
    if total <= length:
        return None
    count = math.ceil(total / length)
    if workers and workers > 1 and count % workers:
        rounds = math.ceil(count / workers)
        length = max(batches(total / (rounds * workers)), batches(length / 2))
    return SegmentPlan(total=total, length=length, overlap=whole(overlap_seconds))


def folder(out_root: Path, name: str) -> Path:
    return Path(out_root) / SEGMENTS_DIR / name


def part_name(k: int) -> str:
    return f"{k:05d}"


def fingerprint(video: Path, settings_view: dict, seg_plan: SegmentPlan) -> str:
    """What must be unchanged for a finished segment to count: the video (size, and the SHA-256 of
    its first and last MiB), the settings that change results, and the plan."""
    h = hashlib.sha256()
    size = video.stat().st_size
    with open(video, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read(1 << 20))
    h.update(json.dumps({"size": size, "settings": settings_view, "plan": asdict(seg_plan)}, sort_keys=True).encode())
    return h.hexdigest()


def planned(where: Path) -> dict:
    """The plan file of a segments folder ({} if there is none, or it cannot be read)."""
    try:
        plan = json.loads((where / PLAN_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return plan if isinstance(plan, dict) else {}


def planned_key(where: Path) -> str | None:
    return planned(where).get("key")


def differences(planned_view: dict | None, view: dict | None) -> str:
    """What differs between the settings a plan was made under and ``view``, in words."""
    if planned_view is None:
        return "no plan on disk"
    if not planned_view or not view:
        return "another video, plan or settings"
    changed = [f"{k} {planned_view.get(k)!r} -> {view.get(k)!r}" for k in sorted(set(planned_view) | set(view))
               if planned_view.get(k) != view.get(k)]
    return ", ".join(changed) or "another video or plan"


def prepare(out_root: Path, name: str, key: str, seg_plan: SegmentPlan, view: dict | None = None) -> Path:
    """The segments folder for this plan: kept if it was made for the same video, settings and plan,
    else emptied. Returns it. Called once per video by whoever plans it, before any segment runs
    (segments themselves only check the plan: :func:`check`). ``view``: the settings behind ``key``,
    kept in words so that a worker under other settings can say what differs."""
    where = folder(out_root, name)
    if planned_key(where) != key:
        shutil.rmtree(where, ignore_errors=True)
        where.mkdir(parents=True, exist_ok=True)
        tmp = where / f".{PLAN_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps({"key": key, "plan": asdict(seg_plan), "settings": view or {}}))
        os.replace(tmp, where / PLAN_FILE)
    return where


def check(out_root: Path, name: str, key: str, view: dict | None = None) -> Path:
    """The segments folder, if it was prepared for this video, these settings and this plan; else
    :class:`PlanChanged` (``view``: the settings behind ``key``, to say what differs)."""
    where = folder(out_root, name)
    plan = planned(where)
    if plan.get("key") != key:
        raise PlanChanged(name, differences(plan.get("settings") if plan else None, view))
    return where


def finished(where: Path, k: int) -> bool:
    """Segment ``k``'s result is on disk and was made under the folder's plan (a worker of another
    version that finished it after the video was planned again does not count)."""
    try:
        part = json.loads((where / part_name(k) / PART_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(part, dict) and part.get("key") is not None and part.get("key") == planned_key(where)


def remove(out_root: Path, name: str) -> None:
    """The segments of ``name`` (merged), and the segments folder once no other video has any there."""
    where = folder(out_root, name)
    shutil.rmtree(where, ignore_errors=True)
    try:
        where.parent.rmdir()
    except OSError:
        pass


# --- a segment's frames on disk ---------------------------------------------------------------

def save_frames(path: Path, frames) -> dict:
    """``frames`` (a :class:`~wildswarm.pipeline.frames.Frames`) as flat arrays in ``frames.npz``;
    returns what goes into ``part.json`` (the strings)."""
    det_frame, xyxy, conf, cls, track, sp_conf, species = [], [], [], [], [], [], []
    pose_frame, pose_xy, pose_conf = [], [], []
    has_species = any("species" in d.data for d in frames.dets)
    for r, (d, p) in enumerate(zip(frames.dets, frames.poses)):
        n = len(d)
        det_frame.extend([r] * n)
        if n:
            xyxy.append(d.xyxy)
            conf.append(d.confidence)
            cls.append(d.class_id)
            track.append(d.tracker_id if d.tracker_id is not None else np.zeros(n, int))
            if has_species:
                species.extend(str(v) for v in d.data.get("species", [""] * n))
                sp_conf.append(np.asarray(d.data.get("species_confidence", np.zeros(n)), np.float32))
        pose_frame.extend([r] * len(p))
        if len(p):
            pose_xy.append(p.xy)
            pose_conf.append(p.confidence)
    k = frames.keypoints
    np.savez(path, meta=np.asarray(frames.meta, np.float64).reshape(-1, 2),
             det_frame=np.asarray(det_frame, np.int64),
             xyxy=np.concatenate(xyxy).astype(np.float32) if xyxy else np.zeros((0, 4), np.float32),
             conf=np.concatenate(conf).astype(np.float32) if conf else np.zeros(0, np.float32),
             cls=np.concatenate(cls).astype(np.int64) if cls else np.zeros(0, np.int64),
             track=np.concatenate(track).astype(np.int64) if track else np.zeros(0, np.int64),
             species_conf=np.concatenate(sp_conf) if sp_conf else np.zeros(0, np.float32),
             pose_frame=np.asarray(pose_frame, np.int64),
             pose_xy=np.concatenate(pose_xy).astype(np.float32) if pose_xy else np.zeros((0, k, 2), np.float32),
             pose_conf=np.concatenate(pose_conf).astype(np.float32) if pose_conf else np.zeros((0, k), np.float32))
    return {"species": species if has_species else None}


def load_frames(path: Path, part: dict, keypoints: int):
    import supervision as sv

    from wildswarm.pipeline.pose import KeyPoints
    from wildswarm.pipeline.frames import Frames
    with np.load(path, allow_pickle=False) as z:
        a = {key: z[key] for key in z.files}
    meta = [(int(i), float(t)) for i, t in a["meta"]]
    species = part.get("species")
    dets, poses = [], []
    det_rows = np.searchsorted(a["det_frame"], np.arange(len(meta) + 1))
    pose_rows = np.searchsorted(a["pose_frame"], np.arange(len(meta) + 1))
    for r in range(len(meta)):
        lo, hi = det_rows[r], det_rows[r + 1]
        if hi > lo:
            d = sv.Detections(xyxy=a["xyxy"][lo:hi], confidence=a["conf"][lo:hi], class_id=a["cls"][lo:hi],
                              tracker_id=a["track"][lo:hi])
            if species is not None:
                d.data["species"] = np.array(species[lo:hi], dtype=object)
                d.data["species_confidence"] = a["species_conf"][lo:hi]
        else:
            d = sv.Detections.empty()
            d.tracker_id = np.zeros(0, int)
        dets.append(d)
        lo, hi = pose_rows[r], pose_rows[r + 1]
        poses.append(KeyPoints(a["pose_xy"][lo:hi], a["pose_conf"][lo:hi]) if hi > lo else KeyPoints.empty(keypoints))
    return Frames(meta=meta, dets=dets, poses=poses, keypoints=keypoints, decoded=int(part.get("decoded", 0)),
                  read=int(part.get("read", 0)))


# --- the merge --------------------------------------------------------------------------------

def stitch(parts: list, seg_plan: SegmentPlan) -> tuple[list, list[dict[int, int]]]:
    """The frames of the whole video from each segment's (read) frames, with tracks named across the
    seams; also, per segment, its local track id -> the whole video's id."""
    from scipy.optimize import linear_sum_assignment
    union: dict[tuple[int, int], tuple[int, int]] = {}  # (segment, local id) -> (segment, local id) it continues

    def root(key):
        while key in union:
            key = union[key]
        return key

    for k in range(len(parts) - 1):
        a, b = parts[k], parts[k + 1]
        own = seg_plan.length
        shared = min(len(a.dets) - own, len(b.dets))  # the overlap, as far as both read it
        pairs: dict[tuple[int, int], int] = {}
        for r in range(max(0, shared)):
            da, db = a.dets[own + r], b.dets[r]
            if len(da) != len(db):
                continue
            for ta, tb in zip(da.tracker_id, db.tracker_id):
                if ta > 0 and tb > 0:
                    pairs[(int(ta), int(tb))] = pairs.get((int(ta), int(tb)), 0) + 1
        if not pairs:
            continue
        left = sorted({p[0] for p in pairs})
        right = sorted({p[1] for p in pairs})
        counts = np.zeros((len(left), len(right)))
        for (ta, tb), n in pairs.items():
            counts[left.index(ta), right.index(tb)] = n
        rows, cols = linear_sum_assignment(-counts)
        for i, j in zip(rows, cols):
            if counts[i, j] > 0:
                union[(k + 1, right[j])] = (k, left[i])

    from wildswarm.pipeline.frames import Frames
    merged = Frames(meta=[], dets=[], poses=[], keypoints=parts[0].keypoints if parts else 0, decoded=0)
    names: dict[tuple[int, int], int] = {}
    local_maps: list[dict[int, int]] = [{} for _ in parts]
    for k, part in enumerate(parts):
        first, stop = seg_plan.owned(k)
        n = len(part.dets) if stop is None else min(len(part.dets), stop - first)
        merged.decoded += part.decoded
        merged.read = max(merged.read, part.read)
        for r in range(n):
            d = part.dets[r]
            ids = np.zeros(len(d), int)
            for j, t in enumerate(d.tracker_id if d.tracker_id is not None else []):
                if t > 0:
                    key = root((k, int(t)))
                    ids[j] = names.setdefault(key, len(names) + 1)
                    local_maps[k][int(t)] = int(ids[j])
            d.tracker_id = ids
            merged.meta.append(part.meta[r])
            merged.dets.append(d)
            merged.poses.append(part.poses[r])
    return merged, local_maps


def join_videos(videos: list[Path], target: Path) -> int:
    """Concatenate H.264 MP4s made by the same encoder settings into one, packets copied (no
    re-encoding), time stamps shifted to follow on; returns the frames written."""
    import av
    # a segment past the video's real end (a header that promised more frames: a cut-off Matroska or
    # fragmented MP4) drew no frame: the writer left an empty file, which FFmpeg cannot open
    videos = [v for v in videos if v.is_file() and v.stat().st_size > 0]
    if not videos:
        raise PipelineError("no segment video to join")
    from fractions import Fraction
    with av.open(str(videos[0])) as first:
        template = first.streams.video[0]
        out = av.open(str(target), mode="w", options={"movflags": "+faststart"})
        try:
            stream = out.add_stream_from_template(template)
            frames = 0
            offset = Fraction(0)  # seconds: where the next segment starts
            for path in videos:
                with av.open(str(path)) as src:
                    s = src.streams.video[0]
                    tb = Fraction(s.time_base)
                    shift = int(round(offset / tb))
                    end = offset
                    for packet in src.demux(s):
                        if packet.dts is None and packet.pts is None:
                            continue  # the demuxer's flush packet
                        if packet.pts is not None:
                            packet.pts += shift
                        if packet.dts is not None:
                            packet.dts += shift
                        last = (packet.pts if packet.pts is not None else packet.dts) + (packet.duration or 0)
                        end = max(end, last * tb)
                        packet.stream = stream  # PyAV rebases the time stamps to the output's time base
                        out.mux(packet)
                        frames += 1
                    offset = end
        finally:
            out.close()
    return frames
