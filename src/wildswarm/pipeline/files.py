"""The result files of one video: their names, what the pages call them, their MIME types.

Defined once, here, for the pipeline that writes them and the web app that
lists and serves them (this module imports nothing heavy, so the web image can
use it without the ML stack).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResultFile:
    name: str
    label: str
    mimetype: str
    always: bool = True  # False: written only when a setting asks for it


LABELED_VIDEO = "labeled.mp4"
TRAJECTORY = "trajectory.png"
SUMMARY = "summary.json"
DETECTIONS = "detections.json"
TRACKS = "tracks.csv"
KEYPOINTS_H5 = "keypoints.h5"
KEYPOINTS_CSV = "keypoints.csv"
FILTERED_H5 = "keypoints_filtered.h5"
FILTERED_CSV = "keypoints_filtered.csv"
POSTER = "poster.jpg"

#: In the order the pages list them.
RESULT_FILES = (
    ResultFile(LABELED_VIDEO, "Annotated video, each animal with its id (H.264 MP4)", "video/mp4"),
    ResultFile(TRAJECTORY, "Trajectory plot, one path per animal (PNG)", "image/png"),
    ResultFile(POSTER, "Poster: the annotated frame with the most animals (JPEG)", "image/jpeg"),
    ResultFile(SUMMARY, "Summary (JSON)", "application/json"),
    ResultFile(DETECTIONS, "Detections (MegaDetector batch JSON)", "application/json"),
    ResultFile(TRACKS, "Animal tracks (MOTChallenge CSV)", "text/csv"),
    ResultFile(KEYPOINTS_H5, "Keypoints per animal (DeepLabCut HDF5)", "application/x-hdf5"),
    ResultFile(KEYPOINTS_CSV, "Keypoints per animal (DeepLabCut CSV)", "text/csv"),
    ResultFile(FILTERED_H5, "Smoothed keypoints (DeepLabCut HDF5)", "application/x-hdf5", always=False),
    ResultFile(FILTERED_CSV, "Smoothed keypoints (DeepLabCut CSV)", "text/csv", always=False),
)
BY_NAME = {f.name: f for f in RESULT_FILES}


def expected(smoothing: bool) -> tuple[str, ...]:
    """The names a finished result folder holds."""
    return tuple(f.name for f in RESULT_FILES if f.always or smoothing)
