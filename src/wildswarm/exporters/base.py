"""What every exporter shares: a finished video's result as exporters read it, and their interface.

An exporter is one module with one class: a ``name`` (``md-json``), a ``label``, the ``suffix`` and
``mimetype`` of the one file it writes, and ``write(results, out, options)`` that writes that file
to a binary stream. It reads only the canonical result the pipeline wrote (``output/<name>/``) and
the job's record; it never runs a model. The next format is one more module.
"""
from __future__ import annotations

import csv
import io
import json
import zipfile
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import BinaryIO, ClassVar, Iterable

from wildswarm.errors import ExportError
from wildswarm.pipeline import files


# NWB's Subject fields an export may be given, as text (pynwb.file.Subject)
SUBJECT_FIELDS = ("species", "sex", "age", "description", "genotype", "strain", "weight", "subject_id")


@dataclass(frozen=True)
class ExportOptions:
    title: str | None = None
    # Camtrap DP: what the package must say and no video does
    contributors: tuple[dict, ...] = ()      # {"title": name, "email": ..., "role": ...}
    sampling_design: str | None = None       # simpleRandom, systematicRandom, ... opportunistic
    capture_method: str | None = None        # activityDetection | timeLapse
    project_title: str | None = None
    media_observations: bool = False         # a media-level row (with its box) per animal as well
    # NWB: species (Latin or an NCBI taxon IRI), sex, age (ISO 8601 duration); SUBJECT_FIELDS
    subject: dict | None = None

    def __post_init__(self):
        """A subject of NWB's own text fields only: pynwb's Subject refuses any other (mid-export)."""
        if self.subject is None:
            return
        if not isinstance(self.subject, dict):
            raise ExportError(f"subject must be an object of {', '.join(SUBJECT_FIELDS)}")
        unknown = sorted(set(self.subject) - set(SUBJECT_FIELDS))
        if unknown:
            raise ExportError(f"unknown subject field(s): {', '.join(map(str, unknown))}; "
                              f"NWB's are {', '.join(SUBJECT_FIELDS)}")
        for key, value in self.subject.items():
            if value is not None and not isinstance(value, str):
                raise ExportError(f"subject {key} must be text (e.g. age P90D, weight 0.02 kg), "
                                  f"not {type(value).__name__}")


def contributor(text: str) -> dict:
    """``Name <email>`` (the email optional) as a Data Package contributor."""
    name, _, rest = text.partition("<")
    out = {"title": name.strip() or text.strip()}
    if rest.strip().rstrip(">").strip():
        out["email"] = rest.strip().rstrip(">").strip()
    return out


@dataclass(frozen=True)
class VideoResult:
    """One finished job's result: its record and its output folder; where its video is now."""

    job_id: str
    video: str                           # the input's file name
    folder: Path                         # output/<name>/
    source: Path | None = None           # the video itself (input_done/), where it is still kept
    created_at: datetime | None = None
    finished_at: datetime | None = None
    deployment: dict | None = None
    media: dict = field(default_factory=dict)   # the video's own metadata (creation time, camera)

    @property
    def name(self) -> str:
        return self.folder.name

    @cached_property
    def summary(self) -> dict:
        return self._json(files.SUMMARY)

    @cached_property
    def detections(self) -> dict:
        return self._json(files.DETECTIONS)

    @cached_property
    def _frame_times(self) -> dict[int, float]:
        return {int(k): float(v) for k, v in (self.summary.get("frame_times_s") or {}).items()}

    def time_of(self, frame: int, fps: float) -> float:
        """When source frame ``frame`` is shown, in seconds from the first: its own time where the video's
        frame rate varies (``frame_times_s`` of the summary), else frame / rate, as the tracks count."""
        t = self._frame_times.get(int(frame))
        return t if t is not None else (frame / fps if fps else 0.0)

    @property
    def entry(self) -> dict:
        """The video's entry of its MegaDetector JSON."""
        images = self.detections.get("images") or []
        if len(images) != 1:
            raise ExportError(f"{self.name}: {files.DETECTIONS} is not one video's result (format 1.6 keeps a "
                              "video as one entry); analyse the video again to export it")
        return images[0]

    def tracks(self) -> list[dict]:
        """The MOTChallenge rows of ``tracks.csv`` (frame 1-based, boxes in pixels)."""
        path = self.folder / files.TRACKS
        if not path.is_file():
            return []
        keys = ("frame", "id", "left", "top", "width", "height", "conf")
        with open(path, newline="") as f:
            return [{k: (int(v) if k in ("frame", "id") else float(v)) for k, v in zip(keys, row)}
                    for row in csv.reader(f) if row]

    def keypoints(self):
        """The DeepLabCut-style table (pandas), or None when the video has none."""
        import pandas as pd
        path = self.folder / files.KEYPOINTS_H5
        if not path.is_file():
            return None
        try:
            return pd.read_hdf(path, "df_with_missing")
        except Exception as exc:   # tables' HDF5 errors, a missing key, a truncated file
            raise ExportError(f"cannot export {self.name}:", [f"{files.KEYPOINTS_H5} cannot be read: "
                                                             f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"])

    def _json(self, name: str) -> dict:
        path = self.folder / name
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise ExportError(f"{self.name}: its result has no {name}") from None
        except ValueError as exc:
            raise ExportError(f"{self.name}: {name} is not valid JSON ({exc})") from None


class Exporter:
    name: ClassVar[str]
    label: ClassVar[str]
    suffix: ClassVar[str]
    mimetype: ClassVar[str]

    def write(self, results: list[VideoResult], out: BinaryIO, options: ExportOptions) -> None:
        raise NotImplementedError

    def filename(self, results: list[VideoResult]) -> str:
        stem = results[0].name if len(results) == 1 else f"wildswarm-{len(results)}-videos"
        return f"{stem}-{self.name}{self.suffix}"


def csv_text(header: list[str], rows: Iterable[Iterable]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def zip_writer(out: BinaryIO) -> zipfile.ZipFile:
    """A zip written straight to ``out`` (a response stream need not be seekable)."""
    return zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6)


def select(store, layout, job_ids: Iterable[str]) -> list[VideoResult]:
    """The results of finished jobs, in the order asked; an unknown or unfinished job is an error
    naming each one (an export never silently leaves a video out)."""
    from wildswarm.jobs import JobStatus
    from wildswarm.jobs.deployments import Deployments
    known = Deployments(store.db)
    results, problems = [], []
    for job_id in dict.fromkeys(job_ids):
        job = store.find(job_id)
        if job is None or job.is_segment:
            problems.append(f"{job_id}: no such job")
        elif job.status is not JobStatus.DONE or not job.output:
            problems.append(f"{job_id} ({job.input_name}): {job.status.value}, not done")
        elif not layout.output_dir(job.output).is_dir():
            problems.append(f"{job_id} ({job.input_name}): its result folder output/{job.output} is gone")
        else:
            source = layout.input_done / job.input_name
            deployment = known.get(job.deployment_id) if job.deployment_id else None
            results.append(VideoResult(job.id, job.input_name, layout.output_dir(job.output),
                                       source if source.is_file() else None, job.created_at, job.finished_at,
                                       deployment.to_dict() if deployment else None, dict(job.media)))
    if problems:
        raise ExportError("cannot export these jobs:", problems)
    if not results:
        raise ExportError("no jobs to export")
    return results


def export(fmt: str, results: list[VideoResult], out: BinaryIO, options: ExportOptions | None = None) -> None:
    from wildswarm.exporters import get
    get(fmt).write(results, out, options or ExportOptions())
