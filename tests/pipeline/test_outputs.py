import json

import numpy as np
import pandas as pd
import pytest
import supervision as sv

from kit.validators import megadetector_problems
from wildswarm.exporters import megadetector as md
from wildswarm.pipeline import outputs
from wildswarm.pipeline.pose import KeyPoints


def test_output_folder_is_all_or_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with outputs.OutputFolder(tmp_path, "v") as tmp:
            (tmp / "half.txt").write_text("x")
            raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []
    with outputs.OutputFolder(tmp_path, "v") as tmp:
        (tmp / "a.txt").write_text("1")
    with outputs.OutputFolder(tmp_path, "v") as tmp:  # a re-run replaces the whole folder
        (tmp / "b.txt").write_text("2")
    assert [p.name for p in tmp_path.iterdir()] == ["v"]
    assert [p.name for p in (tmp_path / "v").iterdir()] == ["b.txt"]


def test_megadetector_json_is_format_1_6_with_the_video_as_one_entry(tmp_path):
    det = sv.Detections(xyxy=np.array([[10, 20, 110, 70], [0, 0, 5, 5]], np.float32),
                        confidence=np.array([0.9, 0.3], np.float32), class_id=np.array([0, 1]))
    det.data["species"] = np.array(["zebra", ""], dtype=object)
    det.data["species_confidence"] = np.array([0.7, 0.0], np.float32)
    path = tmp_path / "d.json"
    info = md.info(detector="MDV6-yolov9-c", image_size=640, threshold=0.2, untrained=False,
                   classifier="AI4GSnapshotSerengeti")
    outputs.write_detections(path, "v.mp4", [(0, 0.0), (6, 0.2)], [det, sv.Detections.empty()], (200, 100),
                             frame_rate=30.0, classifier={0: "lion", 1: "zebra"}, info=info)
    doc = json.loads(path.read_text())
    assert megadetector_problems(path) == ([], [])
    assert doc["info"]["format_version"] == "1.6" and doc["info"]["classifier"] == "AI4GSnapshotSerengeti"
    assert doc["info"]["detector_metadata"]["typical_detection_threshold"] == 0.2
    assert doc["detection_categories"] == {"1": "animal", "2": "person", "3": "vehicle"}
    assert doc["classification_categories"] == {"0": "lion", "1": "zebra"}
    [video] = doc["images"]
    assert video["file"] == "v.mp4" and video["frame_rate"] == 30.0 and video["frames_processed"] == [0, 6]
    assert video["detections"][0] == {"category": "1", "conf": 0.9, "bbox": [0.05, 0.2, 0.5, 0.5],
                                      "frame_number": 0, "classifications": [["1", 0.7]]}
    assert video["detections"][1]["category"] == "2" and "classifications" not in video["detections"][1]
    assert len(video["detections"]) == 2                                  # frame 6 had none


def test_the_merged_batch_file_renumbers_species_by_name_and_validates(tmp_path):
    def one(name, classifier, species):
        det = sv.Detections(xyxy=np.array([[10, 20, 110, 70]], np.float32), confidence=np.array([0.8], np.float32),
                            class_id=np.array([0]))
        det.data["species"] = np.array([species], dtype=object)
        det.data["species_confidence"] = np.array([0.6], np.float32)
        path = tmp_path / f"{name}.json"
        outputs.write_detections(path, name, [(3, 0.1)], [det], (200, 100), frame_rate=25.0, classifier=classifier,
                                 info=md.info(detector="MDV5a", image_size=1280, threshold=0.1, untrained=False,
                                              classifier="c"))
        return json.loads(path.read_text())

    a = one("a.mp4", {0: "lion", 1: "zebra"}, "zebra")
    b = one("b.mp4", {0: "zebra", 1: "impala"}, "impala")
    merged = md.merge([a, b], files=["site1/a.mp4", "site2/b.mp4"])
    assert megadetector_problems(merged) == ([], [])
    names = merged["classification_categories"]
    assert [v["file"] for v in merged["images"]] == ["site1/a.mp4", "site2/b.mp4"]
    assert [names[v["detections"][0]["classifications"][0][0]] for v in merged["images"]] == ["zebra", "impala"]
    assert sorted(names.values()) == ["impala", "lion", "zebra"]


def test_keypoint_table_is_deeplabcut_shaped(tmp_path):
    parts = ["nose", "tail_base"]
    poses = [KeyPoints(np.array([[[1, 2], [3, 4]]], np.float32), np.array([[0.9, 0.1]], np.float32)),
             KeyPoints.empty(2),
             KeyPoints(np.ones((2, 2, 2), np.float32), np.ones((2, 2), np.float32))]
    ids = [np.array([1]), np.zeros(0, int), np.array([1, 2])]
    table = outputs.keypoint_table([(0, 0), (4, .4), (8, .8)], poses, ids, parts, "scorer")
    assert table.columns.names == ["scorer", "individuals", "bodyparts", "coords"]
    assert table.shape == (3, 2 * 2 * 3)
    assert table.loc[0, ("scorer", "animal1", "nose", "likelihood")] == pytest.approx(0.9)
    assert np.isnan(table.loc[4]).all() and np.isnan(table.loc[0, ("scorer", "animal2")]).all()
    outputs.write_keypoints(tmp_path, table)
    back = pd.read_hdf(tmp_path / outputs.KEYPOINTS_H5, "df_with_missing")
    pd.testing.assert_frame_equal(back, table)
    csv = pd.read_csv(tmp_path / outputs.KEYPOINTS_CSV, header=[0, 1, 2, 3], index_col=0)
    assert csv.shape == table.shape


def test_clean_partial_only_touches_that_name(tmp_path):
    for name in (".tmp-a-abcd1234", ".old-a-77", ".tmp-a-b-abcd1234", "a", ".tmp-ab-abcd1234"):
        (tmp_path / name).mkdir()
    outputs.clean_partial(tmp_path, "a")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-a-b-abcd1234", ".tmp-ab-abcd1234", "a"]


def test_clean_partial_matches_what_output_folder_leaves(tmp_path, monkeypatch):
    folder = outputs.OutputFolder(tmp_path, "v")
    tmp = folder.__enter__()  # a writer that dies before __exit__
    (tmp / "half").write_text("x")
    outputs.clean_partial(tmp_path, "v")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("shape", ["sparse", "dense", "empty", "all-missing"])
def test_the_keypoint_csv_is_what_pandas_writes(tmp_path, shape):
    import pandas as pd
    rng = np.random.default_rng(1)
    columns = pd.MultiIndex.from_product([["scorer"], [f"animal{i}" for i in range(6)], ["nose", "tail"],
                                          ["x", "y", "likelihood"]],
                                         names=["scorer", "individuals", "bodyparts", "coords"])
    rows = {"sparse": 50, "dense": 20, "empty": 0, "all-missing": 5}[shape]
    data = np.full((rows, len(columns)), np.nan)
    if shape == "sparse":
        for r in range(0, rows, 2):                     # one animal at a time, every other row empty
            c = (r // 10) * 6
            data[r, c:c + 6] = rng.normal(0, 300, 6)
        data[0, -1], data[2, 0], data[4, 1], data[6, 2] = 3.0, 1e-7, 123456789.125, -0.0
    elif shape == "dense":
        data = rng.random((rows, len(columns))) * 640
    table = pd.DataFrame(data, columns=columns, index=pd.Index(range(0, 5 * rows, 5), name="frame"))
    outputs.write_csv(table, tmp_path / "fast.csv")
    table.to_csv(tmp_path / "pandas.csv")
    assert (tmp_path / "fast.csv").read_bytes() == (tmp_path / "pandas.csv").read_bytes()
