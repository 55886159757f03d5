"""Fixtures shared by every test: synthetic videos, the seed videos, untrained models."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from wildswarm.config import Settings

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"

# Every test in these folders needs the real services its markers name.
FOLDER_MARKERS = {"integration": ("broker",), "browser": ("browser", "broker"), "e2e": ("docker",)}


def pytest_collection_modifyitems(items):
    for item in items:
        parts = Path(item.path).resolve().relative_to(TESTS).parts
        for marker in FOLDER_MARKERS.get(parts[0], ()) if len(parts) > 1 else ():
            item.add_marker(getattr(pytest.mark, marker))


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


@pytest.fixture
def make_video(tmp_path):
    def make(name: str = "clip.mp4", **kwargs) -> Path:
        return write_video(tmp_path / name, **kwargs)
    return make


@pytest.fixture(scope="session")
def seed_videos() -> list[Path]:
    """The two real camera-trap videos beside the checkout (WILDSWARM_SEED_VIDEOS)."""
    folder = Settings.from_env().seed_videos
    videos = sorted(folder.glob("*.mp4")) if folder.is_dir() else []
    if not videos:
        pytest.skip(f"seed videos not found in {folder} (set WILDSWARM_SEED_VIDEOS to their folder)")
    return videos


@pytest.fixture(scope="session")
def untrained_models_dir(tmp_path_factory) -> Path:
    """A models folder with untrained stand-ins of the default detector and both pose models."""
    from wildswarm.pipeline import models as cat
    folder = tmp_path_factory.mktemp("models")
    for name in ("MDV6-yolov9-c", "superanimal_quadruped", "superanimal_topviewmouse", "AI4GSnapshotSerengeti"):
        cat.build_untrained(folder, cat.spec(name))
    return folder


@pytest.fixture
def untrained_settings(untrained_models_dir, tmp_path) -> Settings:
    """A small, fast pipeline configuration on untrained weights.

    Random detector weights score every box near 0.004, so the threshold is
    lowered to let boxes reach the pose model: the real code runs end to end.
    """
    return Settings(data=tmp_path / "data", models_dir=untrained_models_dir, untrained=True, device="cpu",
                    detection_threshold=0.001, max_animals=2, detector_image_size=320, fps=5, batch_size=4)
