"""``nwb``: each video's pose in Neurodata Without Borders with the ndx-pose extension, as DeepLabCut's
and SLEAP's NWB exports write it: a zip of one ``<name>.nwb`` per video, with the videos it refers to.

Per video:
- the source video (where it is still kept) and the labeled video as external-file ``ImageSeries``
  in ``acquisition``, by paths relative to the NWB file: the zip holds them beside it;
- a ``Skeletons`` container with the pose model's skeleton (body parts and edges);
- in the ``behavior`` processing module, one ``PoseEstimation`` per tracked animal (``animal1`` ...),
  each with a ``PoseEstimationSeries`` per body part: x, y in pixels of the source frame and the
  model's likelihood as confidence, at the timestamps of the sampled frames of the animal's span
  (a frame where a point was not seen is NaN);
- the session's start is the recording time given with the video, else the video's own creation
  time where its container records one, otherwise the time the job was submitted, and the
  description says which;
- the subject is what the export is given (species, sex, age), otherwise only what is known: an
  animal (NCBI taxon Metazoa), sex unknown, any age.
"""
from __future__ import annotations

import tempfile
import uuid
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

import numpy as np

from wildswarm import __version__
from wildswarm.errors import ExportError
from wildswarm.exporters.base import Exporter, ExportOptions, VideoResult, zip_writer
from wildswarm.jobs.deployments import parse_time
from wildswarm.pipeline import files

REFERENCE_FRAME = "(0,0) is the top left corner of the source video frame; x to the right, y down, in pixels"
CONFIDENCE = "likelihood of the keypoint given by the DeepLabCut SuperAnimal model (0 to 1)"


class NWB(Exporter):
    name = "nwb"
    label = "NWB 2 with ndx-pose, the videos beside (pynwb, DANDI)"
    suffix = ".zip"
    mimetype = "application/zip"

    def write(self, results: list[VideoResult], out: BinaryIO, options: ExportOptions) -> None:
        """A zip of ``<name>.nwb`` per video with the videos it refers to beside it (NWB keeps a video
        as an external file, by a path relative to the NWB file): ``<name>.labeled.mp4`` and the
        source video, where it is still kept."""
        gone = [f"{r.name}: its result has no {files.LABELED_VIDEO}" for r in results
                if not (r.folder / files.LABELED_VIDEO).is_file()]
        if gone:                  # known before the first byte: refused whole, not a download cut short
            raise ExportError("cannot export these results as NWB:", gone)
        with tempfile.TemporaryDirectory(prefix="wildswarm-nwb-") as tmp, zip_writer(out) as z:
            for r in results:
                path = Path(tmp) / f"{r.name}.nwb"
                write_file(r, path, options)
                z.write(path, path.name)
                path.unlink()
                # Deflated at the fastest level, not stored: streamed to a client, each entry's sizes
                # follow it (a data descriptor), which some readers accept only for deflated entries.
                z.write(r.folder / files.LABELED_VIDEO, labeled_name(r), compress_type=zipfile.ZIP_DEFLATED,
                        compresslevel=1)
                if r.source is not None:
                    z.write(r.source, r.video, compress_type=zipfile.ZIP_DEFLATED, compresslevel=1)


def labeled_name(r: VideoResult) -> str:
    return f"{r.name}.labeled.mp4"


def session_start(r: VideoResult) -> tuple[datetime, str]:
    """(start, how it is known): the recording time given with the video, else the video's own
    creation time (as the Camtrap DP export reads them), else when it was submitted or written."""
    given, created = (r.media or {}).get("given_time"), (r.media or {}).get("creation_time")
    if given:
        return parse_time(given), "the recording time given with the video"
    if created:
        return parse_time(created), "the video's own creation time"
    if r.created_at is not None:
        return parse_time(r.created_at), "the time the video was submitted (the video records no creation time)"
    t = datetime.fromtimestamp(r.folder.stat().st_mtime, timezone.utc)
    return t, "the time the result was written (the video records no creation time)"


def write_file(r: VideoResult, path: Path, options: ExportOptions | None = None) -> None:
    from ndx_pose import PoseEstimation, PoseEstimationSeries, Skeleton, Skeletons
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.file import Subject
    from pynwb.image import ImageSeries

    s, entry = r.summary, r.entry
    start, basis = session_start(r)
    i = s.get("input", {})
    fps = float(entry.get("frame_rate") or i.get("fps") or 0) or 1.0
    models = s.get("models", {})
    pose_name = models.get("pose", {}).get("name", "pose model")
    nwb = NWBFile(
        session_description=f"wildswarm analysis of {r.video}: animals found by "
                            f"{models.get('detector', {}).get('name', 'MegaDetector')}, their pose by {pose_name}, "
                            f"tracked by ByteTrack. Session start: {basis}."
                            + (" Made with UNTRAINED weights: the keypoints are meaningless."
                               if s.get("untrained_weights") else ""),
        identifier=str(uuid.uuid5(uuid.NAMESPACE_URL, f"wildswarm:{r.job_id or r.name}:{r.video}")),
        session_start_time=start,
        source_script=f"wildswarm {__version__}",
        source_script_file_name="wildswarm export --format nwb",
        subject=Subject(**subject(r, (options or ExportOptions()).subject)),
    )
    camera = nwb.create_device(name="camera", description=_camera(r))
    width, height = int(i.get("width") or 0), int(i.get("height") or 0)
    source = None
    if r.source is not None:
        # at a variable frame rate each frame at its own time, read from the video's packets (the average
        # rate would misplace them by seconds, as the labeled video's below)
        shown = _frame_times(r.source) if s.get("frame_times_s") else None
        frames = len(shown) if shown else int(i.get("frames") or s.get("frames", {}).get("read") or 0)
        source = ImageSeries(name="source_video", description=f"the video analysed, {r.video}",
                             external_file=[r.video], format="external", starting_frame=[0],
                             **({"timestamps": shown} if shown else {"rate": fps}),
                             dimension=[width, height], unit="n.a.", device=camera, num_samples=frames)
        nwb.add_acquisition(source)
    labeled_rate = float(s.get("frames", {}).get("output_fps") or fps)
    # at a variable frame rate (a phone's) each labeled frame is shown at its own time, as the poses are
    # timed: a rate (the average) would put them seconds apart
    timing = ({"timestamps": [r.time_of(f, fps) for f in entry.get("frames_processed", [])]}
              if s.get("frame_times_s") else {"rate": labeled_rate})
    labeled = ImageSeries(name="labeled_video", description="the video with each animal's box, id and keypoints "
                          "drawn, one frame per analysed frame",
                          external_file=[labeled_name(r)], format="external", starting_frame=[0],
                          dimension=[width, height], unit="n.a.", device=camera, **timing,
                          num_samples=int(s.get("frames", {}).get("analysed") or len(entry.get("frames_processed", []))))
    nwb.add_acquisition(labeled)

    bodyparts = list(s.get("bodyparts") or [])
    edges = np.array(s.get("skeleton") or [], dtype="uint8").reshape(-1, 2)
    skeleton = Skeleton(name=_safe(pose_name), nodes=bodyparts, edges=edges)
    behavior = nwb.create_processing_module(name="behavior", description="pose of each tracked animal")
    behavior.add(Skeletons(skeletons=[skeleton]))

    table = r.keypoints()
    tracks = {t["name"]: t for t in s.get("tracks", [])}
    if table is not None and len(table) and bodyparts:
        frames = np.asarray(table.index, dtype=np.int64)
        for individual in dict.fromkeys(table.columns.get_level_values("individuals")):
            part = table.xs(individual, level="individuals", axis=1)
            xy = part.to_numpy().reshape(len(table), len(bodyparts), 3)
            seen = np.flatnonzero(~np.all(np.isnan(xy[:, :, 0]), axis=1))
            if not len(seen):
                continue
            rows = slice(seen[0], seen[-1] + 1)                 # the animal's span, gaps inside as NaN
            times = np.array([r.time_of(f, fps) for f in frames[rows]])
            series = [PoseEstimationSeries(
                name=bp, description=f"{bp} of {individual}", data=xy[rows, k, :2], unit="pixels",
                reference_frame=REFERENCE_FRAME, timestamps=times, confidence=xy[rows, k, 2],
                confidence_definition=CONFIDENCE) for k, bp in enumerate(bodyparts)]
            track = tracks.get(individual)
            what = (f"tracked animal {individual} (first seen at frame {track['first_frame']}, last at "
                    f"{track['last_frame']})" if track else f"poses the tracker gave no identity ({individual})")
            if track and track.get("species"):
                what += f", classified as {track['species']}"
            behavior.add(PoseEstimation(
                name=individual, pose_estimation_series=series, description=f"Pose of {what}.",
                scorer=str(table.columns.get_level_values("scorer")[0]), source_software="DeepLabCut",
                source_software_version=s.get("software", {}).get("deeplabcut"), skeleton=skeleton, device=camera,
                source_video=source, labeled_video=labeled))
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)


#: What is true of any animal in any video: NWB asks for a subject, and what is not known is not made up.
UNKNOWN_SUBJECT = {"species": "http://purl.obolibrary.org/obo/NCBITaxon_33208",   # Metazoa: an animal
                   "sex": "U", "age": "P0D/"}                                        # unknown; any age


def subject(r: VideoResult, given: dict | None) -> dict:
    """NWB's subject: what the export was given (a profile's or a lab's species, sex, age), else
    only what is known: an animal, of unknown sex and age."""
    tracks = r.summary.get("tracks", [])
    out = {"subject_id": r.name, **UNKNOWN_SUBJECT,
           "description": f"the animals seen in {r.video}: {len(tracks)} tracked, each a PoseEstimation in "
                          "processing/behavior" + ("" if given else "; their species, sex and age were not given "
                                                   "to the export, so they are recorded as unknown")}
    out.update({k: v for k, v in (given or {}).items() if v})
    return out


def _frame_times(video: Path) -> list[float] | None:
    """Each frame's own time in ``video``; None where it cannot be read (then the rate stands)."""
    from wildswarm.errors import VideoError
    from wildswarm.pipeline.video import frame_times      # PyAV: the web image has it
    try:
        return frame_times(video) or None
    except (VideoError, OSError):
        return None


def _camera(r: VideoResult) -> str:
    m = r.media or {}
    what = " ".join(str(m[k]) for k in ("make", "model") if m.get(k))
    if m.get("serial"):
        what += f" (serial {m['serial']})"
    return what or "the camera that recorded the video (its make and model are not in the video's metadata)"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "skeleton"
