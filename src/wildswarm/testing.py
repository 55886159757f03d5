"""TEST AND BENCHMARK AIDS -- not the real pipeline.

:class:`SleepAnalyzer` stands in for :class:`wildswarm.pipeline.run.Pipeline`
where a test or benchmark is about the job system (dispatch, heartbeats,
crashes, broker restarts) rather than about video analysis. It has the same
``analyze`` signature, but it reads a tiny JSON "clip script" instead of a
video, sleeps for the time the script asks, reports progress per fake frame,
and writes a small output folder atomically (temporary folder + rename, the
pipeline's own convention), so what the job system does around it is real.

A worker uses it only when told to::

    WILDSWARM_ANALYZER=wildswarm.testing:SleepAnalyzer wildswarm worker

Everything it writes says ``"test_aid": true``. A file that is not a clip
script (e.g. a real or a corrupt MP4) is a :class:`VideoError`, like a video
the pipeline cannot read.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from wildswarm.config import Settings
from wildswarm.errors import PipelineError, VideoError
from wildswarm.layout import stem_of

MAGIC = "wildswarm-test-clip"
FILES = ("summary.json", "frames.csv")


@dataclass(frozen=True)
class TestResult:
    """The fields of the pipeline's ``Result`` that the worker reads."""

    __test__ = False  # not a pytest test class

    name: str
    output_dir: Path
    files: tuple[str, ...]
    frames_read: int
    frames_analysed: int
    animals: int = 0
    untrained: bool = True
    timings: dict[str, float] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)


def write_clip(path: Path, *, seconds: float = 0.0, frames: int = 10, fail: str | None = None,
               salt: str | None = None) -> Path:
    """Write a clip script to ``path``: analysing it takes ``seconds`` over ``frames`` fake frames.

    ``fail``: None, ``"video"`` (VideoError: a permanent failure) or ``"pipeline"``
    (PipelineError on every attempt). ``salt`` makes the content -- and so the
    job id -- unique; by default it is random.
    """
    script = {"magic": MAGIC, "seconds": seconds, "frames": frames, "fail": fail,
              "salt": salt if salt is not None else uuid.uuid4().hex}
    path.write_text(json.dumps(script, sort_keys=True), encoding="utf-8")
    return path


def read_clip(path: Path) -> dict:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise VideoError(f"{Path(path).name}: cannot read: {exc.strerror}") from None
    try:
        script = json.loads(raw[:4096].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        script = None
    if not isinstance(script, dict) or script.get("magic") != MAGIC:
        raise VideoError(f"{Path(path).name}: not a readable video (test analyser: not a clip script)")
    return script


class SleepAnalyzer:
    """TEST AID: a stand-in for the real Pipeline that sleeps instead of analysing."""

    untrained = True

    def __init__(self, settings: Settings | None = None):
        self.settings = settings

    def analyze(self, video: Path, out_root: Path, *, name: str | None = None,
                progress: Callable[[int, int], None] | None = None) -> TestResult:
        started = time.perf_counter()
        script = read_clip(video)
        name = name or stem_of(Path(video).name)
        frames = max(1, int(script.get("frames") or 1))
        pause = float(script.get("seconds") or 0) / frames
        if script.get("fail") == "video":
            raise VideoError(f"{Path(video).name}: corrupt (test clip asked for a video error)")
        if progress:
            progress(0, frames)
        out_root = Path(out_root)
        out_root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out_root, prefix=f".tmp-{name}-"))
        try:
            rows = ["frame,seconds"]
            for i in range(frames):
                if pause:
                    time.sleep(pause)
                rows.append(f"{i},{time.perf_counter() - started:.4f}")
                if progress:
                    progress(i + 1, frames)
            if script.get("fail") == "pipeline":
                raise PipelineError(f"{Path(video).name}: analysis failed (test clip asked for a pipeline error)")
            summary = {"test_aid": True, "analyser": "wildswarm.testing.SleepAnalyzer (not the real pipeline)",
                       "video": Path(video).name, "frames": frames, "seconds": script.get("seconds")}
            (tmp / "frames.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
            (tmp / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
            _commit(tmp, out_root / name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        elapsed = time.perf_counter() - started
        return TestResult(name=name, output_dir=out_root / name, files=FILES, frames_read=frames,
                          frames_analysed=frames, timings={"total": elapsed}, summary=summary)


def _commit(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``, replacing an earlier folder as a whole."""
    os.chmod(tmp, 0o755)
    old = None
    if final.exists():
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
