"""Every export of real pipeline results (the seed videos), checked by each format's own validator."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from kit.validators import megadetector_problems, nwb_problems, nwb_suggestions
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
    assert names[r0.video].compress_type == zipfile.ZIP_STORED                       # video: stored as is
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
