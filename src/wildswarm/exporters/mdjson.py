"""``md-json``: one MegaDetector batch file (format 1.6) for a selection of videos.

Timelapse reads one results file per image set; this merges the videos' own ``detections.json``
(each already one format-1.6 entry) into one, each entry's ``file`` the video's name as it was
dropped in (the folder the videos are kept in is the image set's root), species categories
renumbered by name when the videos ran different classifiers.
"""
from __future__ import annotations

from typing import BinaryIO

from wildswarm.exporters import megadetector as md
from wildswarm.exporters.base import Exporter, ExportOptions, VideoResult


class MegaDetectorJSON(Exporter):
    name = "md-json"
    label = "MegaDetector batch JSON 1.6 (Timelapse, AddaxAI)"
    suffix = ".json"
    mimetype = "application/json"

    def document(self, results: list[VideoResult]) -> dict:
        for r in results:
            r.entry                                  # noqa: B018 -- refuses a result of the old format
        return md.merge([r.detections for r in results], files=[r.video for r in results])

    def write(self, results: list[VideoResult], out: BinaryIO, options: ExportOptions) -> None:
        out.write(md.dumps(self.document(results)).encode())
