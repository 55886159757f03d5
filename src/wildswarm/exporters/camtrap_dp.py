"""``camtrap-dp``: a Camera Trap Data Package 1.0.2 (TDWG), as GBIF and camtraptor read it: a zip of
``datapackage.json``, ``deployments.csv``, ``media.csv`` (one row per video) and ``observations.csv``.

Observations are event-level, one event per video: a row per tracked animal (count 1, its species
and the classifier's probability where a classifier ran, its first and last sighting as the event's
start and end), a row per other category MegaDetector saw (humans, vehicles: the most in one frame
as the count), and a ``blank`` row for a video with nothing in it. With ``media_observations``,
each animal also gets a media-level row with its best box, relative to the frame.

What the standard requires and a video does not say is asked for, never invented: each video's
deployment with its coordinates and start and end, each video's recording time (its own metadata,
or the time given with the upload), the package's contributors, sampling design and capture
method. A missing one stops the export with the list of what is missing, video by video. A video
recorded outside its deployment's period is exported, flagged: its deployment's ``timestampIssues``,
its media row's comment, and the package's temporal coverage spanning it.
"""
from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import BinaryIO

from wildswarm import __version__
from wildswarm.errors import ExportError
from wildswarm.exporters import taxa
from wildswarm.exporters.base import Exporter, ExportOptions, VideoResult, csv_text, zip_writer
from wildswarm.jobs.deployments import parse_time

VERSION = "1.0.2"
BASE = f"https://raw.githubusercontent.com/tdwg/camtrap-dp/{VERSION}"
PROFILE = f"{BASE}/camtrap-dp-profile.json"
SAMPLING_DESIGNS = ("simpleRandom", "systematicRandom", "clusteredRandom", "experimental", "targeted",
                    "opportunistic")
CAPTURE_METHODS = ("activityDetection", "timeLapse")
ROLES = ("contact", "principalInvestigator", "rightsHolder", "publisher", "contributor")   # the profile's
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")

DEPLOYMENTS = ["deploymentID", "locationID", "locationName", "latitude", "longitude", "coordinateUncertainty",
               "deploymentStart", "deploymentEnd", "setupBy", "cameraID", "cameraModel", "cameraDelay",
               "cameraHeight", "cameraDepth", "cameraTilt", "cameraHeading", "detectionDistance", "timestampIssues",
               "baitUse", "featureType", "habitat", "deploymentGroups", "deploymentTags", "deploymentComments"]
MEDIA = ["mediaID", "deploymentID", "captureMethod", "timestamp", "filePath", "filePublic", "fileName",
         "fileMediatype", "exifData", "favorite", "mediaComments"]
OBSERVATIONS = ["observationID", "deploymentID", "mediaID", "eventID", "eventStart", "eventEnd", "observationLevel",
                "observationType", "cameraSetupType", "scientificName", "count", "lifeStage", "sex", "behavior",
                "individualID", "individualPositionRadius", "individualPositionAngle", "individualSpeed", "bboxX",
                "bboxY", "bboxWidth", "bboxHeight", "classificationMethod", "classifiedBy",
                "classificationTimestamp", "classificationProbability", "observationTags", "observationComments"]


class CamtrapDP(Exporter):
    name = "camtrap-dp"
    label = "Camera Trap Data Package 1.0.2 (GBIF, camtraptor)"
    suffix = ".zip"
    mimetype = "application/zip"

    def write(self, results: list[VideoResult], out: BinaryIO, options: ExportOptions) -> None:
        problems = missing(results, options)
        if problems:
            raise ExportError("a Camera Trap Data Package needs what is missing here:", problems)
        deployments = {r.deployment["id"]: r.deployment for r in results}
        media, observations, spans, flagged = [], [], [], set()
        for r in results:
            start = recorded(r)
            span = (start, start + timedelta(seconds=float(r.summary.get("input", {}).get("duration_s") or 0)))
            outside = _outside(r.deployment, *span)
            if outside:
                flagged.add(r.deployment["id"])
            spans.append(span)
            media.append(self._media(r, start, options, outside))
            observations.extend(self._observations(r, start, options))
        names = sorted({row["scientificName"] for row in observations if row.get("scientificName")})
        package = self._package(results, deployments, names, options, spans)
        with zip_writer(out) as z:
            z.writestr("datapackage.json", json.dumps(package, indent=2))
            z.writestr("deployments.csv", _table(DEPLOYMENTS, [_deployment(d, d["id"] in flagged)
                                                               for d in deployments.values()]))
            z.writestr("media.csv", _table(MEDIA, media))
            z.writestr("observations.csv", _table(OBSERVATIONS, observations))

    def _media(self, r: VideoResult, start: datetime, options: ExportOptions, outside: str | None) -> dict:
        return {"mediaID": media_id(r), "deploymentID": r.deployment["id"], "captureMethod": options.capture_method,
                "timestamp": _time(start), "filePath": file_path(r.video), "filePublic": "false", "fileName": r.video,
                "fileMediatype": "video/mp4",
                "mediaComments": "analysed by wildswarm" + (" with UNTRAINED weights: the observations are "
                                                           "meaningless" if r.summary.get("untrained_weights") else "")
                                 + (f"; {outside}" if outside else "")}

    def _observations(self, r: VideoResult, start: datetime, options: ExportOptions) -> list[dict]:
        s, entry = r.summary, r.entry
        info = r.detections.get("info", {})
        by = " + ".join(x for x in (info.get("detector"), info.get("classifier")) if x) or "wildswarm"
        when = _time(r.finished_at) if r.finished_at else ""
        base = {"deploymentID": r.deployment["id"], "eventID": media_id(r), "classificationMethod": "machine",
                "classifiedBy": by, "classificationTimestamp": when}
        rows = []
        best = _best_boxes(r) if options.media_observations else {}
        for t in s.get("tracks", []):
            label = t.get("species")
            row = {**base, "observationID": f"{media_id(r)}-{t['name']}", "observationLevel": "event",
                   "eventStart": _time(start + timedelta(seconds=t.get("first_s", 0))),
                   "eventEnd": _time(start + timedelta(seconds=t.get("last_s", 0))),
                   "observationType": "human" if taxa.is_human(label) else "animal",
                   "scientificName": taxa.scientific_name(label) or "", "count": 1,
                   "classificationProbability": t.get("species_confidence", t.get("max_conf", "")),
                   "observationComments": f"{t['name']} of the video, seen in {t['frames']} analysed frames"
                                          + (f"; classified as {label}" if label else "")}
            rows.append(row)
            if options.media_observations:
                rows.append(self._media_level(r, row, best.get(t["id"])))
        fps = float(entry.get("frame_rate") or 0) or 1.0
        for category, kind in (("2", "human"), ("3", "vehicle")):
            frames = [d["frame_number"] for d in entry.get("detections", []) if d["category"] == category]
            if frames:
                most = max(frames.count(f) for f in set(frames))
                best = max(d["conf"] for d in entry["detections"] if d["category"] == category)
                rows.append({**base, "observationID": f"{media_id(r)}-{kind}", "observationLevel": "event",
                             "eventStart": _time(start + timedelta(seconds=r.time_of(min(frames), fps))),
                             "eventEnd": _time(start + timedelta(seconds=r.time_of(max(frames), fps))),
                             "observationType": kind, "count": most, "classificationProbability": best,
                             "classifiedBy": info.get("detector") or by})
        if not rows:
            duration = float(s.get("input", {}).get("duration_s") or 0)
            rows.append({**base, "observationID": f"{media_id(r)}-blank", "observationLevel": "event",
                         "eventStart": _time(start), "eventEnd": _time(start + timedelta(seconds=duration)),
                         "observationType": "blank", "classifiedBy": info.get("detector") or by})
        return rows

    def _media_level(self, r: VideoResult, event: dict, box: dict | None) -> dict:
        i = r.summary.get("input", {})
        w, h = float(i.get("width") or 1), float(i.get("height") or 1)
        row = {**event, "observationID": f"{event['observationID']}-media", "mediaID": media_id(r),
               "observationLevel": "media"}
        if box is not None:
            x, y = min(max(box["left"] / w, 0.0), 1.0), min(max(box["top"] / h, 0.0), 1.0)
            row.update(bboxX=round(x, 4), bboxY=round(y, 4),
                       bboxWidth=round(max(min(box["width"] / w, 1.0 - x), 1e-4), 4),
                       bboxHeight=round(max(min(box["height"] / h, 1.0 - y), 1e-4), 4))
        return row

    def _package(self, results, deployments: dict, names: list[str], options: ExportOptions, spans: list) -> dict:
        points = [(d["longitude"], d["latitude"]) for d in deployments.values()]
        lons, lats = [p[0] for p in points], [p[1] for p in points]
        if len(set(points)) == 1:
            spatial = {"type": "Point", "coordinates": [lons[0], lats[0]]}
        else:
            spatial = {"type": "Polygon", "coordinates": [[[min(lons), min(lats)], [max(lons), min(lats)],
                                                           [max(lons), max(lats)], [min(lons), max(lats)],
                                                           [min(lons), min(lats)]]]}
        # the deployments' periods, and the videos' where one lies outside its deployment's: all it covers
        starts = [parse_time(d["deployment_start"]) for d in deployments.values()] + [a for a, _ in spans]
        ends = [parse_time(d["deployment_end"]) for d in deployments.values()] + [b for _, b in spans]
        title = options.title or f"wildswarm export of {len(results)} video{'s' if len(results) != 1 else ''}"
        key = ",".join(sorted(r.job_id or r.name for r in results))
        observation_level = ["event", "media"] if options.media_observations else ["event"]
        return {
            "profile": PROFILE,
            "name": "wildswarm-export",
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"wildswarm:camtrap-dp:{key}")),
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "title": title,
            "contributors": list(options.contributors),
            "version": "1.0",
            "sources": [{"title": "wildswarm", "version": __version__}],
            "project": {"title": options.project_title or title, "samplingDesign": options.sampling_design,
                        "captureMethod": [options.capture_method], "individualAnimals": False,
                        "observationLevel": observation_level,
                        "description": "Animals found by MegaDetector, followed by ByteTrack, classified by the "
                                       "species classifier where one ran (wildswarm)."},
            "spatial": spatial,
            "temporal": {"start": min(starts).date().isoformat(), "end": max(ends).date().isoformat()},
            "taxonomic": [{"scientificName": n} for n in names],
            "resources": [{"name": name, "path": f"{name}.csv", "profile": "tabular-data-resource", "format": "csv",
                           "mediatype": "text/csv", "encoding": "utf-8",
                           "schema": f"{BASE}/{name}-table-schema.json"}
                          for name in ("deployments", "media", "observations")],
        }


def missing(results: list[VideoResult], options: ExportOptions) -> list[str]:
    """Everything the package needs and was not given, one line each."""
    out = []
    if not options.contributors:
        out.append("the package's contributors (at least one name: --contributor \"Name <email>\")")
    for person in options.contributors:
        who = person.get("title")
        if person.get("role") is not None and person["role"] not in ROLES:
            out.append(f"contributor {who}: role {person['role']!r} is not one of {', '.join(ROLES)}")
        if person.get("email") is not None and not EMAIL.match(str(person["email"])):
            out.append(f"contributor {who}: {person['email']!r} is not an email address")
    if options.sampling_design not in SAMPLING_DESIGNS:
        out.append(f"the project's sampling design (--sampling-design, one of: {', '.join(SAMPLING_DESIGNS)})")
    if options.capture_method not in CAPTURE_METHODS:
        out.append(f"how the cameras captured (--capture-method, one of: {', '.join(CAPTURE_METHODS)})")
    seen = set()
    for r in results:
        d = r.deployment
        if not d:
            out.append(f"{r.video}: its deployment (choose one on upload, or `wildswarm submit --deployment`)")
            continue
        if d["id"] not in seen:
            seen.add(d["id"])
            lacks = [f for f in ("latitude", "longitude", "deployment_start", "deployment_end") if d.get(f) is None]
            if lacks:
                out.append(f"deployment {d['id']}: {', '.join(lacks)}")
        if recorded(r) is None:
            out.append(f"{r.video}: when it was recorded (the video's metadata does not say; give it on upload)")
    return out


def recorded(r: VideoResult) -> datetime | None:
    text = (r.media or {}).get("given_time") or (r.media or {}).get("creation_time")
    return parse_time(text) if text else None


def _best_boxes(r: VideoResult) -> dict[int, dict]:
    """Each track's most confident box of ``tracks.csv`` (read once per video)."""
    best: dict[int, dict] = {}
    for b in r.tracks():
        if b["id"] not in best or b["conf"] > best[b["id"]]["conf"]:
            best[b["id"]] = b
    return best


def media_id(r: VideoResult) -> str:
    return r.job_id or r.name


def _outside(d: dict, start: datetime, end: datetime) -> str | None:
    """What is wrong with a video recorded from ``start`` to ``end`` in deployment ``d``, if that lies outside
    the period its camera is said to have watched (None if it does not)."""
    first, last = parse_time(d["deployment_start"]), parse_time(d["deployment_end"])
    if first <= start and end <= last:
        return None
    return (f"recorded {_time(start)} to {_time(end)}, outside its deployment {d['id']} ({_time(first)} to "
            f"{_time(last)}): the camera's clock, the deployment's dates or the recording time given is wrong")


def _deployment(d: dict, timestamp_issues: bool) -> dict:
    """A deployments.csv row; ``timestamp_issues``: a video of it was recorded outside its period."""
    return {"deploymentID": d["id"], "locationID": d.get("location_id"), "locationName": d.get("location_name"),
            "timestampIssues": timestamp_issues,
            "latitude": d["latitude"], "longitude": d["longitude"],
            "coordinateUncertainty": d.get("coordinate_uncertainty"),
            "deploymentStart": _time(parse_time(d["deployment_start"])),
            "deploymentEnd": _time(parse_time(d["deployment_end"])), "cameraID": d.get("camera_id"),
            "cameraModel": d.get("camera_model"), "cameraHeight": d.get("camera_height"),
            "habitat": d.get("habitat"), "deploymentComments": d.get("comments")}


def _time(t: datetime) -> str:
    return parse_time(t).isoformat(timespec="seconds")


def file_path(name: str) -> str:
    """The media's ``filePath``: its name, or where Camtrap DP's pattern refuses that (a leading '.', '/' or
    '~', or '..' anywhere), the name as a relative URL with those characters percent-encoded: it still
    names the same file."""
    path = re.sub(r"\.(?=\.)", "%2E", name)
    if path[:1] in (".", "/", "~"):
        path = {".": "%2E", "/": "%2F", "~": "%7E"}[path[0]] + path[1:]
    return path


def _table(header: list[str], rows: list[dict]) -> str:
    return csv_text(header, ([_cell(row.get(h)) for h in header] for row in rows))


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)

