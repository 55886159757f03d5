"""Video IO at the edge of the pipeline: probe, sampled decode, H.264 encode (PyAV).

Frames are RGB ``uint8`` arrays of shape ``(H, W, 3)``. Each video is decoded
once; :func:`read_frames` keeps only the frames that fall on the sampling grid.
The annotated video is written as H.264 in ``yuv420p`` with the ``moov`` atom
first (``+faststart``), which every browser plays while it downloads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from wildswarm.errors import VideoError


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    width: int
    height: int
    fps: float
    frames: int          # frames in the file (from the header, else estimated)
    duration: float      # seconds
    codec: str

    def sampled(self, fps: float) -> int:
        """How many frames :func:`read_frames` yields at ``fps`` (an estimate for odd files)."""
        step = sample_step(self.fps, fps)
        return int(math.ceil(self.frames / step - 1e-9)) if self.frames else 0


@dataclass(frozen=True)
class Frame:
    index: int        # index in the source video
    time: float       # seconds from the start
    image: np.ndarray  # RGB uint8 (H, W, 3)


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
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise VideoError(f"{path.name}: not a readable video ({_reason(exc)})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path.name}: contains no video stream")
    return container


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def probe(path: Path) -> VideoInfo:
    """Read the header of ``path``; :class:`VideoError` if it is not a usable video."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        frames = int(stream.frames or 0) or int(round(duration * fps))
        if not ctx.width or not ctx.height:
            raise VideoError(f"{Path(path).name}: not a readable video (its stream has no frame size)")
        if frames <= 0:
            raise VideoError(f"{Path(path).name}: video has no frames")
        return VideoInfo(Path(path), ctx.width, ctx.height, fps, frames, duration, ctx.name)
    finally:
        container.close()


def read_frames(path: Path, fps: float = 0.0, stats: dict | None = None) -> Iterator[Frame]:
    """Decode ``path`` once, yielding the frames on a grid of ``fps`` per second.

    ``fps`` of 0 (or at least the source rate) keeps every frame. A stream that
    breaks off mid-way raises :class:`VideoError` naming the last good frame.
    ``stats["decoded"]`` (if given) counts every frame decoded, kept or not.
    """
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        src_fps = float(stream.average_rate or stream.guessed_rate or 0) or 0.0
        step = sample_step(src_fps, fps)
        next_pick = 0.0
        index = -1
        try:
            for frame in container.decode(stream):
                index += 1
                if stats is not None:
                    stats["decoded"] = index + 1
                if index + 1e-6 < next_pick:
                    continue
                next_pick += step
                t = float(frame.time) if frame.time is not None else (index / src_fps if src_fps else 0.0)
                yield Frame(index, t, frame.to_ndarray(format="rgb24"))
        except av.error.FFmpegError as exc:
            raise VideoError(f"{Path(path).name}: video is corrupt or truncated after frame {index} "
                             f"({_reason(exc)})") from None
        if index < 0:
            raise VideoError(f"{Path(path).name}: no frame could be decoded")
    finally:
        container.close()


class VideoWriter:
    """Write RGB frames as a browser-playable H.264 MP4."""

    def __init__(self, path: Path, fps: float, width: int, height: int, crf: int = 23):
        self.path = Path(path)
        self._container = av.open(str(self.path), mode="w", options={"movflags": "+faststart"})
        rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._container.add_stream("libx264", rate=rate)
        # yuv420p needs even dimensions
        self._stream.width = width - width % 2
        self._stream.height = height - height % 2
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(crf), "preset": "veryfast"}
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        h, w = self._stream.height, self._stream.width
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:h, :w]), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._container is None:
            return
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
