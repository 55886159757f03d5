"""Every export of real pipeline results (the seed videos), checked by each format's own validator."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import zipfile
from datetime import datetime, timedelta

import numpy as np
import pytest

from kit.validators import camtrap_problems, megadetector_problems, nwb_problems, nwb_suggestions
from wildswarm import exporters
from wildswarm.errors import ExportError
from wildswarm.exporters.base import ExportOptions, VideoResult
from wildswarm.pipeline import files

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results(seed_results, seed_videos) -> list[VideoResult]:
    return [VideoResult(job_id=f"job{i}", video=video.name, folder=folder, source=video)
            for i, (folder, video) in enumerate(zip(seed_results, seed_videos))]


def export(fmt, results, options=None) -> bytes:
    buf = io.BytesIO()
    exporters.get(fmt).write(results, buf, options or ExportOptions())
    return buf.getvalue()


def test_the_md_json_batch_file_has_each_video_as_one_entry_and_validates(results, tmp_path):
    path = tmp_path / "batch.json"
    path.write_bytes(export("md-json", results))
    assert megadetector_problems(path) == ([], [])
    doc = json.loads(path.read_text())
    assert doc["info"]["format_version"] == "1.6" and doc["info"]["untrained_weights"] is True
    assert [e["file"] for e in doc["images"]] == [r.video for r in results]
    for entry, r in zip(doc["images"], results):
        assert entry["detections"] == r.entry["detections"] and entry["frames_processed"] == r.entry["frames_processed"]
    assert doc["classification_categories"]                        # the classifier ran


def test_csv_tables_hold_every_box_track_and_keypoint(results):
    with zipfile.ZipFile(io.BytesIO(export("csv", results))) as z:
        tables = {n: list(csv.DictReader(io.StringIO(z.read(n).decode()))) for n in z.namelist()}
    assert sorted(tables) == ["animals.csv", "detections.csv", "keypoints.csv", "videos.csv"]
    assert [row["video"] for row in tables["videos.csv"]] == [r.video for r in results]
    assert len(tables["detections.csv"]) == sum(len(r.entry["detections"]) for r in results) > 0
    assert len(tables["animals.csv"]) == sum(len(r.summary["tracks"]) for r in results) > 0
    seen = sum(int(np.sum(~np.isnan(r.keypoints().xs("x", level="coords", axis=1).to_numpy()))) for r in results)
    assert len(tables["keypoints.csv"]) == seen > 0
    first = tables["detections.csv"][0]
    box = results[0].entry["detections"][0]
    assert float(first["x"]) == pytest.approx(box["bbox"][0] * results[0].summary["input"]["width"], abs=0.1)


def test_mot_tracks_are_each_videos_tracks_csv(results):
    with zipfile.ZipFile(io.BytesIO(export("mot", results))) as z:
        for r in results:
            assert z.read(f"{r.name}.txt") == (r.folder / files.TRACKS).read_bytes()
            assert f"frameRate={r.summary['input']['fps']}" in z.read(f"{r.name}/seqinfo.ini").decode()


def nwb_files(data: bytes, where) -> dict:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        z.extractall(where)
        return {n: z.getinfo(n) for n in z.namelist()}


def test_nwb_has_one_pose_estimation_per_animal_and_passes_nwbinspector(results, tmp_path):
    from pynwb import NWBHDF5IO
    r = results[0]
    names = nwb_files(export("nwb", [r]), tmp_path)
    assert sorted(names) == sorted([f"{r.name}.nwb", f"{r.name}.labeled.mp4", r.video])   # the videos beside it
    path = tmp_path / f"{r.name}.nwb"
    assert nwb_problems(path) == []
    print("nwbinspector suggestions:", nwb_suggestions(path))
    table = r.keypoints()
    with NWBHDF5IO(str(path), "r") as io_:
        nwb = io_.read()
        behavior = nwb.processing["behavior"]
        poses = {name for name, obj in behavior.data_interfaces.items() if type(obj).__name__ == "PoseEstimation"}
        with_pose = {c[1] for c in table.columns if c[3] == "x" and table[c].notna().any()}
        assert poses == with_pose and poses <= {t["name"] for t in r.summary["tracks"]}   # animals with a pose
        track = next(t for t in r.summary["tracks"] if t["name"] in poses)
        pe = behavior[track["name"]]
        assert list(pe.skeleton.nodes[:]) == r.summary["bodyparts"] and len(pe.skeleton.edges) > 0
        assert pe.source_video.external_file[0] == r.video
        assert pe.labeled_video.external_file[0] == f"{r.name}.labeled.mp4"
        bp = r.summary["bodyparts"][0]
        series = pe.pose_estimation_series[bp]
        fps = r.entry["frame_rate"]
        assert series.timestamps[0] == pytest.approx(track["first_frame"] / fps)
        assert series.timestamps[-1] == pytest.approx(track["last_frame"] / fps)
        expected = table[(table.columns[0][0], track["name"], bp, "x")].loc[track["first_frame"]:track["last_frame"]]
        np.testing.assert_allclose(series.data[:, 0], expected.to_numpy())
        assert "UNTRAINED" in nwb.session_description
        assert (nwb.subject.sex, nwb.subject.age) == ("U", "P0D/") and "not given" in nwb.subject.description


def test_nwb_of_several_videos_refers_to_what_each_holds_and_takes_a_given_subject(results, tmp_path):
    r0 = results[0]
    gone = VideoResult(results[1].job_id, results[1].video, results[1].folder)       # its video not kept
    names = nwb_files(export("nwb", [r0, gone], ExportOptions(subject={"species": "Mus musculus", "sex": "F"})),
                      tmp_path)
    assert sorted(names) == sorted([f"{r0.name}.nwb", f"{r0.name}.labeled.mp4", r0.video,
                                    f"{gone.name}.nwb", f"{gone.name}.labeled.mp4"])
    # video: deflated at the fastest level (streamed, its sizes follow it: more readers take that deflated)
    assert names[r0.video].compress_type == zipfile.ZIP_DEFLATED
    assert names[r0.video].file_size == r0.source.stat().st_size
    from pynwb import NWBHDF5IO
    for r in (r0, gone):
        assert nwb_problems(tmp_path / f"{r.name}.nwb") == []
        with NWBHDF5IO(str(tmp_path / f"{r.name}.nwb"), "r") as io_:
            nwb = io_.read()
            assert (nwb.subject.species, nwb.subject.sex) == ("Mus musculus", "F")
            assert ("source_video" in nwb.acquisition) == (r is r0)


def test_an_unknown_format_and_an_old_result_are_refused(results, tmp_path):
    with pytest.raises(ExportError, match="no export format 'xls'"):
        exporters.get("xls")
    old = tmp_path / "old"
    old.mkdir()
    for name in (files.SUMMARY,):
        (old / name).write_bytes((results[0].folder / name).read_bytes())
    (old / files.DETECTIONS).write_text(json.dumps({"info": {"format_version": "1.4"}, "images": [
        {"file": "v.mp4/frame000000.jpg", "detections": []}, {"file": "v.mp4/frame000005.jpg", "detections": []}]}))
    with pytest.raises(ExportError, match="not one video's result"):
        export("md-json", [VideoResult("j", "v.mp4", old)])


def test_the_cli_exports_result_folders(seed_results, tmp_path):
    out = tmp_path / "batch.json"
    run = subprocess.run([sys.executable, "-m", "wildswarm", "--data", str(tmp_path / "data"), "export",
                          "--format", "md-json", "-o", str(out), *map(str, seed_results)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert f"{out}: 2 videos" in run.stdout
    assert megadetector_problems(out) == ([], [])
    bad = subprocess.run([sys.executable, "-m", "wildswarm", "--data", str(tmp_path / "data"), "export",
                          "--format", "md-json"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "nothing to export" in bad.stderr
    assert not list(tmp_path.glob(".*.part"))


CAM = {"id": "cam42-2026-07", "location_name": "Mara river", "latitude": -1.4061, "longitude": 35.0112,
       "coordinate_uncertainty": 30, "deployment_start": "2026-07-01T06:00:00+03:00",
       "deployment_end": "2026-07-21T18:00:00+03:00", "camera_model": "Reconyx-HF2X"}
PACKAGE = ExportOptions(contributors=({"title": "A. Ranger", "email": "ranger@example.org"},),
                        sampling_design="targeted", capture_method="activityDetection", title="Seed videos")


def placed(results, deployment=CAM, times=("2026-07-03T05:12:00+03:00", "2026-07-04T21:05:09+00:00")):
    from dataclasses import replace
    return [replace(r, deployment=dict(deployment), media={"given_time": t}) for r, t in zip(results, times)]


def test_camtrap_dp_passes_frictionless_against_the_official_profile_and_schemas(results, tmp_path):
    data = export("camtrap-dp", placed(results), replace_options(media_observations=True))
    assert camtrap_problems(data, tmp_path) == []
    pkg = json.loads((tmp_path / "datapackage.json").read_text())
    assert pkg["profile"] == "https://raw.githubusercontent.com/tdwg/camtrap-dp/1.0.2/camtrap-dp-profile.json"
    assert pkg["spatial"] == {"type": "Point", "coordinates": [35.0112, -1.4061]}
    assert pkg["temporal"] == {"start": "2026-07-01", "end": "2026-07-21"}
    media = list(csv.DictReader(open(tmp_path / "media.csv")))
    assert [m["filePath"] for m in media] == [r.video for r in results]
    assert media[0]["timestamp"] == "2026-07-03T05:12:00+03:00" and media[0]["fileMediatype"] == "video/mp4"
    obs = list(csv.DictReader(open(tmp_path / "observations.csv")))
    events = [o for o in obs if o["observationLevel"] == "event" and o["observationType"] == "animal"]
    assert len(events) == sum(len(r.summary["tracks"]) for r in results) > 0
    assert all(o["classificationMethod"] == "machine" and o["count"] == "1" for o in events)
    first = results[0].summary["tracks"][0]
    row = next(o for o in events if o["observationID"] == f"job0-{first['name']}")
    start = datetime.fromisoformat("2026-07-03T05:12:00+03:00")
    offset = datetime.fromisoformat(row["eventStart"]) - start           # whole seconds, as the schema writes them
    assert timedelta(0) <= timedelta(seconds=first["first_s"]) - offset < timedelta(seconds=1)
    named = [o["scientificName"] for o in events if o["scientificName"]]
    assert {n["scientificName"] for n in pkg["taxonomic"]} == set(named)
    boxes = [o for o in obs if o["observationLevel"] == "media"]
    assert len(boxes) == len(events) and all(0 <= float(o["bboxX"]) <= 1 for o in boxes)


def test_camtrap_dp_file_paths_pass_its_pattern_whatever_the_video_is_called(results, tmp_path):
    """Camtrap DP's filePath may not start with '.', '/' or '~' nor hold '..'; names intake keeps (fox..night.mp4)
    made a package GBIF refuses. Such a path is written as a relative URL (the dot escaped): it still names
    the file; a name that passes stays as it is."""
    from dataclasses import replace
    from urllib.parse import unquote
    names = ["fox..night.mp4", "~cam07.mp4"]
    data = export("camtrap-dp", [replace(r, video=n) for r, n in zip(placed(results), names)], PACKAGE)
    assert camtrap_problems(data, tmp_path) == []
    media = list(csv.DictReader(open(tmp_path / "media.csv")))
    assert [m["fileName"] for m in media] == names and [unquote(m["filePath"]) for m in media] == names


def test_camtrap_dp_flags_a_video_recorded_outside_its_deployment(results, tmp_path):
    """Audit: a video recorded after its deployment ended (a camera's clock off by a day, a deployment's end typed
    wrong) was exported as if nothing were amiss: observations outside the period the camera is said to have
    watched, which occupancy and activity analyses count as effort, and a package temporal coverage that ended
    before its last observation. Nothing is invented or dropped: the deployment says its timestamps have issues
    (Camtrap DP's timestampIssues), the video's media row says what is wrong, and the coverage spans both."""
    data = export("camtrap-dp", placed(results, times=("2026-07-03T05:12:00+03:00", "2026-07-22T09:30:00+03:00")),
                  PACKAGE)
    assert camtrap_problems(data, tmp_path) == []
    (dep,) = csv.DictReader(open(tmp_path / "deployments.csv"))
    assert dep["timestampIssues"] == "true"
    inside, outside = csv.DictReader(open(tmp_path / "media.csv"))
    assert "outside its deployment" not in inside["mediaComments"]
    assert "recorded 2026-07-22T09:30:00+03:00 to 2026-07-22T09:30:" in outside["mediaComments"]
    assert "outside its deployment cam42-2026-07 (2026-07-01T06:00:00+03:00 to 2026-07-21T18:00:00+03:00)" \
        in outside["mediaComments"]
    pkg = json.loads((tmp_path / "datapackage.json").read_text())
    assert pkg["temporal"] == {"start": "2026-07-01", "end": "2026-07-22"}
    fine = export("camtrap-dp", placed(results), PACKAGE)
    assert camtrap_problems(fine, tmp_path / "fine") == []
    (dep,) = csv.DictReader(open(tmp_path / "fine" / "deployments.csv"))
    assert dep["timestampIssues"] == "false"


def replace_options(**changes) -> ExportOptions:
    from dataclasses import replace
    return replace(PACKAGE, **changes)


def test_camtrap_dp_asks_for_what_is_missing_and_invents_nothing(results):
    no_time = [VideoResult(r.job_id, r.video, r.folder, deployment=dict(CAM)) for r in results]
    with pytest.raises(ExportError) as caught:
        export("camtrap-dp", no_time, ExportOptions())
    text = str(caught.value)
    assert "contributors" in text and "sampling design" in text and "capture-method" in text
    assert all(f"{r.video}: when it was recorded" in text for r in results)
    bare = placed(results, deployment={"id": "cam1", "latitude": None, "longitude": None,
                                       "deployment_start": None, "deployment_end": None})
    with pytest.raises(ExportError, match="deployment cam1: latitude, longitude, deployment_start, deployment_end"):
        export("camtrap-dp", bare, PACKAGE)
    with pytest.raises(ExportError, match="its deployment"):
        export("camtrap-dp", [VideoResult("j", "v.mp4", results[0].folder, media={"given_time": "2026-01-01"})],
               PACKAGE)


def test_a_classifier_label_maps_to_a_scientific_name_or_none():
    from wildswarm.exporters.taxa import scientific_name
    assert scientific_name("zebra") == "Equus quagga" and scientific_name("Dasyprocta") == "Dasyprocta"
    assert scientific_name("other") is None and scientific_name("Human") is None and scientific_name("") is None


def test_the_cli_exports_a_deployment_as_a_camtrap_package(db_settings, store, seed_results, seed_videos, tmp_path):
    import shutil

    from click.testing import CliRunner

    from kit.procs import settings_env
    from wildswarm.cli import main
    from wildswarm.jobs.deployments import Deployment, Deployments
    from wildswarm.layout import Layout

    layout = Layout(db_settings.data).ensure()
    Deployments(store.db).save(Deployment.parse(CAM))
    for n, (folder, video) in enumerate(zip(seed_results, seed_videos)):
        shutil.copytree(folder, layout.output / folder.name)
        job_id = f"5eed{n:012x}"
        store.submit(job_id, video.name, 1, deployment_id=CAM["id"], media={"given_time": "2026-07-05T10:00:00Z"})
        store.claim(job_id, "w/x", "w")
        store.finish(job_id, "w/x", output=folder.name, outputs=[], frames=1, untrained=True, timings={})
    env = {k: v for k, v in settings_env(db_settings).items() if k.startswith("WILDSWARM_")}
    out = tmp_path / "package.zip"
    args = ["export", "--format", "camtrap-dp", "--deployment", CAM["id"], "-o", str(out)]
    asked = CliRunner().invoke(main, args, env=env)
    assert asked.exit_code == 2 and "sampling design" in asked.output and not out.exists()
    done = CliRunner().invoke(main, [*args, "--contributor", "A. Ranger <ranger@example.org>", "--sampling-design",
                                     "targeted", "--capture-method", "activityDetection"], env=env)
    assert done.exit_code == 0, done.output
    assert camtrap_problems(out.read_bytes(), tmp_path / "check") == []
    assert len(list(csv.DictReader(open(tmp_path / "check" / "media.csv")))) == 2


def test_the_nwb_session_starts_when_the_video_was_recorded_as_given_first(tmp_path):
    """As the Camtrap DP export does: a recording time given on upload wins over the video's own
    (a camera's clock is often wrong), which wins over the time it was submitted."""
    from wildswarm.exporters.nwb import session_start
    both = {"given_time": "2026-05-03T05:40:00+02:00", "creation_time": "2026-01-01T00:00:00+00:00"}
    start, basis = session_start(VideoResult("j", "v.mp4", tmp_path, media=both))
    assert start == datetime.fromisoformat("2026-05-03T05:40:00+02:00") and "given" in basis
    start, basis = session_start(VideoResult("j", "v.mp4", tmp_path, media={"creation_time": both["creation_time"]}))
    assert start == datetime.fromisoformat(both["creation_time"]) and "creation time" in basis


def test_camtrap_dp_never_writes_a_contributor_its_profile_refuses(results, tmp_path):
    """Audit: a contributor's role or email was written as given. Data Package's own role "author", or an
    address mistyped on the command line (--contributor "A. Ranger <ranger at example.org>"), made a package
    that fails the Camtrap DP profile (GBIF refuses it), though the export said nothing."""
    from wildswarm.exporters.base import contributor
    for n, people in enumerate([({"title": "A. Ranger", "role": "author"},),
                                (contributor("A. Ranger <ranger at example.org>"),)]):
        try:
            data = export("camtrap-dp", placed(results), replace_options(contributors=people))
        except ExportError as exc:                  # refused, saying which contributor
            assert "A. Ranger" in " ".join([str(exc), *exc.problems])
        else:
            assert camtrap_problems(data, tmp_path / str(n)) == [], people


def test_an_nwb_export_of_a_result_whose_labeled_video_is_gone_is_refused_before_its_first_byte(results, tmp_path):
    """Audit: a result folder whose labeled.mp4 was deleted (the largest file, the first to go when disk is
    short) crashed the NWB export with FileNotFoundError: a 500 from the web app (or a download cut short,
    for any video but the first) and a traceback from the command line, never the 409 naming the file."""
    import shutil
    folder = tmp_path / results[1].folder.name
    shutil.copytree(results[1].folder, folder)
    (folder / files.LABELED_VIDEO).unlink()
    buf = io.BytesIO()
    with pytest.raises(ExportError) as caught:
        exporters.get("nwb").write([results[0], VideoResult("job1", results[1].video, folder)], buf, ExportOptions())
    assert files.LABELED_VIDEO in " ".join([str(caught.value), *caught.value.problems])
    assert buf.getvalue() == b""                    # refused whole: the web app answers 409
