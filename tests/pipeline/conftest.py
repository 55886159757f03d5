"""Fixtures for the pipeline tests: hostile checkpoints, private copies of the models folder, and
frames of the seed videos."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


class Payload:
    """Unpickling this calls ``os.mkdir(path)``: the marker folder proves code from a weight file ran."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


@pytest.fixture
def hostile(tmp_path):
    """``hostile(path, key)`` writes a real torch checkpoint whose ``key`` entry runs code when unpickled.

    ``hostile.marker`` is the folder that appears if it ever is.
    """
    marker = tmp_path / "PAYLOAD-RAN"

    def write(path: Path, key: str = "model") -> Path:
        import torch
        torch.save({key: Payload(marker)}, path)
        return path

    write.marker = marker
    return write


@pytest.fixture
def models_copy(untrained_models_dir, tmp_path):
    """A private models folder holding copies of the session's untrained stand-ins and their lock."""
    def copy(*filenames: str) -> Path:
        folder = tmp_path / "models"
        folder.mkdir(exist_ok=True)
        for name in (*filenames, "weights.lock.json"):
            shutil.copy2(untrained_models_dir / name, folder / name)
        for name in filenames:  # their ONNX exports, where the session made them
            for export in untrained_models_dir.glob(f"{name}.*.onnx*"):
                shutil.copy2(export, folder / export.name)
        return folder
    return copy


@pytest.fixture(scope="session")
def seed_frames(seed_videos) -> list:
    """Two frames of each seed video, as the pipeline decodes them."""
    from wildswarm.pipeline.video import read_frames
    frames = []
    for video in seed_videos:
        for k, f in enumerate(read_frames(video, 1.0)):
            if k in (0, 3):
                frames.append(f.image)
            if k >= 3:
                break
    return frames
