"""Small synthetic videos for tests (the real seed videos come from the ``seed_videos`` fixture)."""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

#: ../shared beside a checkout (and in CI): the seed videos and the field formats' standards.
SHARED = Path(__file__).resolve().parents[3] / "shared"
#: The two real camera-trap videos beside a checkout (and in CI): WILDSWARM_SEED_VIDEOS, or ../shared/...
SEED_VIDEOS = Path(os.environ.get("WILDSWARM_SEED_VIDEOS") or
                   Path(__file__).resolve().parents[3] / "shared" / "data" / "seed-examples")


def write_video(path: Path, frames: int = 12, size: tuple[int, int] = (160, 96), fps: int = 10,
                codec: str = "libx264") -> Path:
    """A small video of a bright blob moving over a textured background."""
    import av
    w, h = size
    rng = np.random.default_rng(0)
    background = (rng.random((h, w, 3)) * 60 + 40).astype(np.uint8)
    with av.open(str(path), mode="w", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            img = background.copy()
            x = int((w - 30) * i / max(frames - 1, 1))
            img[h // 3: h // 3 + 24, x: x + 30] = (200, 150, 90)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
