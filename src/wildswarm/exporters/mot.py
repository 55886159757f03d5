"""``mot``: each video's animal tracks in MOTChallenge's result format, one ``<video>.txt`` per video
(``frame,id,bb_left,bb_top,bb_width,bb_height,conf,-1,-1,-1``, frames 1-based, boxes in pixels), as
TrackEval and py-motmetrics read them, with a ``seqinfo.ini`` each for the frame rate and size."""
from __future__ import annotations

from typing import BinaryIO

from wildswarm.exporters.base import Exporter, ExportOptions, VideoResult, zip_writer
from wildswarm.pipeline import files


class MOTChallenge(Exporter):
    name = "mot"
    label = "Animal tracks, MOTChallenge (TrackEval, py-motmetrics)"
    suffix = ".zip"
    mimetype = "application/zip"

    def write(self, results: list[VideoResult], out: BinaryIO, options: ExportOptions) -> None:
        with zip_writer(out) as z:
            for r in results:
                tracks = r.folder / files.TRACKS
                z.writestr(f"{r.name}.txt", tracks.read_bytes() if tracks.is_file() else b"")
                i = r.summary.get("input", {})
                z.writestr(f"{r.name}/seqinfo.ini",
                           f"[Sequence]\nname={r.name}\nimDir=img1\nframeRate={i.get('fps', 0)}\n"
                           f"seqLength={i.get('frames', 0)}\nimWidth={i.get('width', 0)}\n"
                           f"imHeight={i.get('height', 0)}\nimExt=.jpg\n")
