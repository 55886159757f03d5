"""The labeled video: RGB frames encoded as H.264 in ``yuv420p`` (PyAV), the ``moov`` atom first
(``+faststart``), which every browser plays while it downloads."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


#: The labeled video's clock (MPEG's 90 kHz): fine enough to show each frame at its source frame's own time.
WRITER_TIME_BASE = Fraction(1, 90000)


class VideoWriter:
    """Write RGB frames as a browser-playable H.264 MP4."""

    def __init__(self, path: Path, fps: float, width: int, height: int, crf: int = 23, threads: int = 0,
                 pixel_aspect: Fraction = Fraction(1)):
        """``threads``: the encoder's threads, 0 for x264's own choice (stages.codec_threads);
        ``pixel_aspect``: the source's (VideoInfo), so the video is shown as wide as the source is."""
        self.path = Path(path)
        # Through a Python file: a failed write (a full disk) raises OSError, where FFmpeg's own file
        # I/O left a broken context that crashed the process when the container was closed.
        self._file = open(self.path, "w+b")
        self._container = av.open(self._file, mode="w", format="mp4", options={"movflags": "+faststart"})
        rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._container.add_stream("libx264", rate=rate)
        # yuv420p needs even dimensions
        self._stream.width = width - width % 2
        self._stream.height = height - height % 2
        self._stream.pix_fmt = "yuv420p"
        if pixel_aspect != 1:     # frames of anamorphic video are stored narrower than they are shown
            self._stream.codec_context.sample_aspect_ratio = Fraction(pixel_aspect).limit_denominator(65535)
        self._stream.options = {"crf": str(crf), "preset": "veryfast"}
        self._stream.codec_context.thread_count = threads
        # frames are stamped in this clock, not counted 1 / rate apart: a phone's variable frame rate
        self._stream.codec_context.time_base = WRITER_TIME_BASE
        self._rate = rate
        self._pts = -1
        self.frames = 0

    def write(self, image: np.ndarray, time: float | None = None) -> None:
        """Add ``image``, shown ``time`` seconds after the first frame (None: 1 / rate after the last one).
        A variable-rate source's frames are not evenly spaced: where its times are given, each frame is
        shown when the source shows it, as the tables and exports time it (summary's frame_times_s)."""
        h, w = self._stream.height, self._stream.width
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:h, :w]), format="rgb24")
        seconds = time if time is not None else self.frames / self._rate
        self._pts = max(round(seconds / WRITER_TIME_BASE), self._pts + 1)    # H.264 refuses two frames at one time
        frame.pts, frame.time_base = self._pts, WRITER_TIME_BASE
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
            try:
                self._container.close()
            finally:
                self._container = None
                self._file.close()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
