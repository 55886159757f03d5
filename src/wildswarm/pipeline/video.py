"""Video IO at the edge of the pipeline: probe, sampled decode (PyAV); the encoder is ``video_writer``, the tags
that say when and with which camera a video was recorded ``media_tags``.

Frames are RGB ``uint8`` arrays of shape ``(H, W, 3)``. Each video is decoded
once; :func:`read_frames` keeps only the frames that fall on the sampling grid.
The annotated video is written by :class:`~wildswarm.pipeline.video_writer.VideoWriter`
(named here too, for the callers that import it from this module).
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from wildswarm.errors import VideoError
from wildswarm.pipeline.video_writer import WRITER_TIME_BASE, VideoWriter  # noqa: F401  (named here too)


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    width: int
    height: int
    fps: float
    frames: int          # frames in the file (from the header, else estimated)
    duration: float      # seconds
    codec: str
    # a pixel's width over its height as shown (anamorphic DV, HDV: not 1): the labeled video keeps it
    pixel_aspect: Fraction = Fraction(1)

    def sampled(self, fps: float) -> int:
        """How many frames :func:`read_frames` yields at ``fps`` (an estimate for odd files)."""
        step = sample_step(self.fps, fps)
        return int(math.ceil(self.frames / step - 1e-9)) if self.frames else 0


@dataclass(frozen=True)
class Frame:
    index: int        # index in the source video
    time: float       # seconds from the start
    image: np.ndarray  # RGB uint8 (H, W, 3)


#: The smallest frame side analysed: no camera records less, and a frame a pixel wide cannot be encoded.
MIN_SIDE = 16


def sample_step(source_fps: float, fps: float) -> float:
    """Source frames per analysed frame: 1 keeps every frame."""
    if not fps or fps <= 0 or not source_fps or fps >= source_fps:
        return 1.0
    return source_fps / fps


def _open(path: Path):
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if not path.is_file():
        raise VideoError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: file is empty")
    try:
        # a tag in another encoding than UTF-8 (older cameras write Latin-1) must not refuse a playable video
        container = av.open(str(path), mode="r", metadata_errors="replace")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise VideoError(f"{path.name}: not a readable video ({_reason(exc)})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path.name}: contains no video stream")
    return container


def _check_whole(stream, path: Path) -> bool:
    """Refuse a file cut short (power lost mid-recording, a copy broken off) whose index survived (an MP4
    whose index comes first): FFmpeg would just stop early, or its threaded decoder drop the broken
    packet, and the video be analysed in part and reported done. Only where the container indexes every
    frame with its place in the file (MP4, MOV, fragmented MP4); 75 ms for an hour of video at 30 frames/s.
    True when the index showed the file whole; False when there was none to check (see :func:`_check_ended`)."""
    entries = stream.index_entries
    # a fragmented MP4 counts no frames in its header (its fragments come after it): its index does (an MP4's
    # indexes every frame; Matroska's cues only keyframes, so they prove nothing: see _check_ended)
    frames = int(stream.frames or 0) or (len(entries) if "mp4" in stream.container.format.name else 0)
    if frames <= 0 or len(entries) != frames:
        return False
    size, whole = Path(path).stat().st_size, 0
    for e in entries:
        if e.pos < 0:          # a place not known: nothing to check against
            return False
        whole += e.pos + e.size <= size
    if whole < frames:
        raise VideoError(f"{Path(path).name}: video is truncated: the file holds {whole} of {frames} frames "
                         "(the rest was cut off; copy or export it again)")
    return True


def _header_seconds(container, stream) -> float:
    """How long the header says the video is (0 when it does not say)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0


def _track_seconds(stream) -> float:
    """A Matroska track's own duration (its DURATION tag, "HH:MM:SS.nnnnnnnnn"), else 0."""
    h, _, rest = (stream.metadata.get("DURATION") or "").partition(":")
    m, _, sec = rest.partition(":")
    try:
        return int(h) * 3600 + int(m) * 60 + float(sec)
    except ValueError:
        return 0.0


def _check_ended(container, stream, ended: float | None, path: Path) -> None:
    """Refuse a file without an index to check (:func:`_check_whole`) whose frames, decoded to their end,
    stop well short of the duration its header gives: a Matroska or AVI copy broken off keeps its header
    (its index, written last, is gone). ``ended``: when the last frame decoded ends, from the stream's
    start. The margin (2 s, or 5 %) allows for audio that outlasts the video and for rounding."""
    rate = float(stream.average_rate or stream.guessed_rate or 0)
    # AVI's header counts its frames (FFmpeg's duration of a cut AVI is only what it found); a Matroska's
    # video track keeps its own DURATION tag, where the container's is the longest track's (audio's, say)
    promised = _track_seconds(stream) or _header_seconds(container, stream)
    promised = max(promised, int(stream.frames or 0) / rate if rate else 0.0)
    if ended is not None and promised > 0 and ended < promised - max(2.0, 0.05 * promised):
        raise VideoError(f"{Path(path).name}: video is truncated: its frames end at {ended:.1f} s of the "
                         f"{promised:.1f} s its header gives (the rest was cut off; copy or export it again)")


def _turns(frame) -> int:
    """Quarter turns (counterclockwise, as ``np.rot90`` counts) that show ``frame`` as a player does: phones
    store a portrait clip as landscape frames and a display matrix that turns them."""
    return round((frame.rotation or 0) / 90) % 4


def _upright(frame) -> np.ndarray:
    image = frame.to_ndarray(format="rgb24")
    turns = _turns(frame)
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def _turns_shown(container, stream) -> int:
    """The first frame's :func:`_turns` (0 where it cannot be decoded: reading the video says why), decoded
    in one thread: one frame needs no more."""
    try:
        stream.codec_context.thread_count = 1
        for frame in container.decode(stream):
            return _turns(frame)
    except (av.error.FFmpegError, ValueError):
        pass
    return 0


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def probe(path: Path) -> VideoInfo:
    """Read the header of ``path``; :class:`VideoError` if it is not a usable video."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 0.0
        duration = _header_seconds(container, stream)
        frames = int(stream.frames or 0) or int(round(duration * fps))
        if not ctx.width or not ctx.height:
            raise VideoError(f"{Path(path).name}: not a readable video (its stream has no frame size)")
        if frames <= 0:
            raise VideoError(f"{Path(path).name}: video has no frames")
        if min(ctx.width, ctx.height) < MIN_SIDE:    # the annotated video's encoder needs even sizes of 2 or more
            raise VideoError(f"{Path(path).name}: frames of {ctx.width}x{ctx.height} pixels are too small to "
                             f"analyse (at least {MIN_SIDE}x{MIN_SIDE})")
        _check_whole(stream, path)
        aspect = Fraction(stream.sample_aspect_ratio or ctx.sample_aspect_ratio or 1)
        aspect = aspect if aspect > 0 else Fraction(1)           # 0:1 is FFmpeg's "unknown"
        if _turns_shown(container, stream) % 2:                  # turned upright: a pixel's sides swap too
            width, height, aspect = ctx.height, ctx.width, 1 / aspect
        else:
            width, height = ctx.width, ctx.height
        return VideoInfo(Path(path), width, height, fps, frames, duration, ctx.name, aspect)
    finally:
        container.close()


def pick(m: int, step: float) -> int:
    """The source frame index of the ``m``-th analysed frame at ``step`` source frames per analysed one."""
    return max(0, math.ceil(m * step - 1e-6))


def read_frames(path: Path, fps: float = 0.0, stats: dict | None = None, *, first: int = 0,
                stop: int | None = None, threads: int = 0) -> Iterator[Frame]:
    """Decode ``path``, yielding the frames on a grid of ``fps`` per second.

    ``fps`` of 0 (or at least the source rate) keeps every frame. ``first`` and
    ``stop`` choose the analysed frames ``first <= m < stop`` (a segment of a
    long video): decoding starts at the keyframe before frame ``first`` (a
    seek), not at the start. A stream that breaks off mid-way raises
    :class:`VideoError` naming the last good frame. ``stats["decoded"]`` (if
    given) counts every frame decoded, kept or not, ``stats["last"]`` is the
    index of the last one. ``threads``: the decoder's, 0 for FFmpeg's own choice
    (stages.codec_threads).
    """
    container = _open(path)
    try:
        stream = container.streams.video[0]
        indexed = _check_whole(stream, path)
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
        src_fps = float(stream.average_rate or stream.guessed_rate or 0) or 0.0
        step = sample_step(src_fps, fps)
        start = _start_seconds(stream)
        m = first
        target = pick(m, step)
        index, times, ended = -1, None, None
        if target > 0 and src_fps:
            if not _constant_rate(stream):       # a phone's variable rate: time is no measure of the index
                times = _presentation_times(path, target)
                if len(times) <= target:         # the video ends before this frame
                    return
            index = _seek(container, stream, target, src_fps, times)
        decoded = 0
        try:
            for frame in container.decode(stream):
                if index < 0 or decoded:
                    index += 1
                else:  # the first frame after a seek: its index from its time stamp
                    index = _index_of(frame, stream, src_fps, times)
                    if index > target or index < 0:  # landed past the frame asked for: decode from the start
                        raise _SeekMissed()
                decoded += 1
                if frame.time is not None:       # when this frame ends: the last one's is checked at the end
                    ended = float(frame.time) - start + (1 / src_fps if src_fps else 0.0)
                if stats is not None:
                    stats["decoded"] = decoded
                    stats["last"] = index
                if index < target:
                    continue
                # from the stream's first frame, as frame numbers count: a stream stamped from 10 s starts at 0
                t = float(frame.time) - start if frame.time is not None else (index / src_fps if src_fps else 0.0)
                yield Frame(index, t, _upright(frame))
                m += 1
                target = pick(m, step)
                if stop is not None and m >= stop:
                    return
            if index == 0 and not decoded:   # sought, and nothing shown after (no keyframe followed): from the start
                raise _SeekMissed()
        except _SeekMissed:
            container.close()
            yield from _decode_from_start(path, fps, stats, first, stop, threads)
            return
        except av.error.FFmpegError as exc:
            raise VideoError(f"{Path(path).name}: video is corrupt or truncated after frame {index} "
                             f"({_reason(exc)})") from None
        if decoded == 0 and first == 0:
            raise VideoError(f"{Path(path).name}: no frame could be decoded")
        if not indexed:                          # decoded to the end: was it the end the header gives?
            _check_ended(container, stream, ended, path)
    finally:
        container.close()


class _SeekMissed(Exception):
    pass


def _decode_from_start(path, fps, stats, first, stop, threads):
    """The slow way for files whose seek lands past the frame asked for: decode and skip."""
    counted = {"decoded": 0}
    for m, frame in enumerate(read_frames(path, fps, counted, stop=stop, threads=threads)):
        if stats is not None:
            stats.update(counted)
        if m >= first:
            yield frame


def _index_of(frame, stream, src_fps: float, times: list[int] | None = None) -> int:
    if times is not None:            # its rank among every frame's presentation time (-1: not among them)
        k = bisect.bisect_left(times, frame.pts) if frame.pts is not None else len(times)
        return k if k < len(times) and times[k] == frame.pts else -1
    t = float(frame.pts * stream.time_base) if frame.pts is not None else float(frame.time or 0.0)
    return int(round((t - _start_seconds(stream)) * src_fps))


def _start_seconds(stream) -> float:
    """When the stream's first frame is stamped, in seconds (frame times and indices count from it)."""
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def _seek(container, stream, target: int, src_fps: float, times: list[int] | None = None) -> int:
    """Seek to the keyframe at or before source frame ``target``; returns -1 (the index comes from
    the first decoded frame's time stamp). ``times``: every frame's presentation time in order (a
    variable frame rate), else the frame's time is ``target`` / the rate."""
    start = stream.start_time or 0
    offset = times[target] if times is not None else int(target / src_fps / stream.time_base) + start
    container.seek(offset, stream=stream, backward=True, any_frame=False)
    return 0


#: Frames demuxed past the one asked for, so that every frame shown before it has been seen: H.264 and
#: HEVC reorder at most 16 frames between decoding and showing.
_REORDER = 16


def _constant_rate(stream) -> bool:
    """Whether frame ``n`` is shown at ``n`` / the average rate: every frame the same time apart in the
    container's index (MP4 indexes every frame), or else the stream's own rate agreeing with its average."""
    entries = stream.index_entries
    n = len(entries)
    if n > 1 and n == int(stream.frames or 0):
        first, step = entries[0].timestamp, entries[1].timestamp - entries[0].timestamp
        return step > 0 and all(entries[i].timestamp == first + i * step for i in range(2, n))
    base, average = stream.base_rate, stream.average_rate
    return bool(base and average) and abs(float(base) / float(average) - 1) < 1e-3


def frame_times(path: Path) -> list[float]:
    """When each frame of the video is shown, in seconds from the first (as ``frame_times_s`` and the
    tables count), read from its packets alone: a variable frame rate's own times, for exports that
    place the source video's frames (an hour of video in about a second)."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        tb, start = stream.time_base, _start_seconds(stream)
    finally:
        container.close()
    return [float(pts * tb) - start for pts in _presentation_times(path)]


def _presentation_times(path: Path, target: int | None = None) -> list[int]:
    """The presentation time stamps of frames 0..``target`` (and a few more; None: of every frame), in the
    order they are shown: read from the packets alone, nothing decoded. Frames an edit list drops are not
    counted, as the decoder does not show them."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        seen = []
        for packet in container.demux(stream):
            if packet.size and packet.pts is not None and not packet.is_discard:
                seen.append(packet.pts)
                if target is not None and len(seen) > target + _REORDER:
                    break
        return sorted(seen)
    except av.error.FFmpegError as exc:
        raise VideoError(f"{Path(path).name}: video is corrupt or truncated ({_reason(exc)})") from None
    finally:
        container.close()
