"""Identity tracking on scripted detections: who is who when animals cross, vanish, come back."""
import numpy as np
import pandas as pd
import pytest
import supervision as sv

from wildswarm.pipeline import outputs, smooth
from wildswarm.pipeline.pose import KeyPoints
from wildswarm.pipeline.render import track_paths, trajectory_plot
from wildswarm.pipeline.track import Tracker, track_summary

W, H = 640, 360


def frame(*boxes, conf=0.9, classes=None) -> sv.Detections:
    """Detections of one frame from (x, y) centres of 60x40 boxes."""
    if not boxes:
        return sv.Detections.empty()
    xyxy = np.array([[x - 30, y - 20, x + 30, y + 20] for x, y in boxes], np.float32)
    return sv.Detections(xyxy=xyxy, confidence=np.full(len(boxes), conf, np.float32),
                         class_id=np.array(classes if classes is not None else [0] * len(boxes)))


def run(frames, fps=5.0, lost_seconds=2.0) -> list[list[int]]:
    tracker = Tracker(fps=fps, lost_seconds=lost_seconds)
    return [list(tracker.update(f).tracker_id) for f in frames]


def test_two_animals_crossing_keep_their_ids():
    # A walks left to right, B right to left, 30 px apart vertically; their boxes overlap mid-way.
    frames = [frame((50 + 25 * i, 150), (550 - 25 * i, 180)) for i in range(21)]
    ids = run(frames)
    assert ids[0] == [1, 2]
    assert all(f == [1, 2] for f in ids), ids  # box 0 is always A, box 1 always B


def test_boxes_listed_in_a_different_order_keep_their_animal():
    frames = [frame((100 + 10 * i, 100), (400 - 10 * i, 250)) if i % 2 == 0
              else frame((400 - 10 * i, 250), (100 + 10 * i, 100)) for i in range(10)]
    ids = run(frames)
    assert all(f == ([1, 2] if i % 2 == 0 else [2, 1]) for i, f in enumerate(ids)), ids


def test_a_missed_frame_and_a_short_absence_keep_the_id_a_long_one_does_not():
    path = [(100 + 8 * i, 200) for i in range(40)]
    seen = [frame(p) for p in path]
    seen[5] = frame()                           # the detector missed one frame
    for i in range(12, 17):                     # hidden for 5 frames = 1 s (< 2 s)
        seen[i] = frame()
    for i in range(24, 36):                     # gone for 12 frames = 2.4 s (> 2 s)
        seen[i] = frame()
    ids = run(seen, fps=5.0, lost_seconds=2.0)
    assert ids[5] == [] and ids[12:17] == [[]] * 5
    assert {i[0] for i in ids[:24] if i} == {1}
    assert {i[0] for i in ids[36:]} == {2}      # came back after the buffer: a new animal


def test_a_new_animal_is_named_in_its_first_frame_and_others_are_not_tracked():
    frames = [frame((100, 100)), frame((104, 100)),
              frame((108, 100), (400, 300), (600, 50), classes=[0, 0, 1]),  # a person is not an animal
              frame((112, 100), (404, 300))]
    ids = run(frames)
    assert ids == [[1], [1], [1, 2, 0], [1, 2]]


@pytest.mark.parametrize("conf", [0.004, 0.25, 0.9])
def test_a_box_the_detector_kept_is_tracked_whatever_its_confidence(conf):
    # Real animals often score 0.2-0.5, untrained weights ~0.004: one animal, one id, all the same.
    frames = [frame((100 + 12 * i, 100), conf=conf) for i in range(8)]
    assert run(frames) == [[1]] * 8


def test_ids_do_not_depend_on_other_trackers_in_the_process():
    frames = [frame((100 + 5 * i, 100), (300, 200)) for i in range(4)]
    first = Tracker(fps=5)
    other = Tracker(fps=5)
    out = []
    for f in frames:
        other.update(frame((500, 300)))
        out.append(list(first.update(f).tracker_id))
    assert out == [[1, 2]] * 4


def test_track_summary_gives_each_animal_its_span_and_the_species_most_of_its_boxes_got():
    tracker = Tracker(fps=5.0, lost_seconds=2.0)
    dets, meta = [], []
    for i in range(6):
        d = frame((100 + 10 * i, 100), (500, 250), conf=0.5 + 0.05 * i)
        d.data["species"] = np.array(["zebra" if i != 2 else "wildebeest", "lion" if i < 3 else ""], dtype=object)
        d.data["species_confidence"] = np.array([0.8, 0.6], np.float32)
        dets.append(tracker.update(d))
        meta.append((10 * i, 2.0 * i))
    a, b = track_summary(meta, dets)
    assert (a["id"], a["first_frame"], a["last_frame"], a["first_s"], a["last_s"], a["frames"]) == (1, 0, 50, 0, 10, 6)
    assert a["species"] == "zebra" and a["species_confidence"] == pytest.approx(0.8) and a["max_conf"] == 0.75
    assert b["species"] == "lion" and b["frames"] == 6
    plain = Tracker(fps=5.0, lost_seconds=2.0)
    [only] = track_summary(meta, [plain.update(frame((100, 100))) for _ in meta])    # no classifier ran
    assert "species" not in only and only["frames"] == 6


def pose_of(*xy, conf=0.9):
    xy = np.asarray(xy, np.float32).reshape(len(xy), 1, 2).repeat(2, axis=1)
    return KeyPoints(xy, np.full(xy.shape[:2], conf, np.float32))


def test_keypoint_table_has_one_column_set_per_track(tmp_path):
    frames_meta = [(0, 0.0), (5, 0.2), (10, 0.4)]
    poses = [pose_of((10, 10), (50, 50)), pose_of((55, 55)), pose_of((60, 60), (15, 15), (90, 90))]
    ids = [np.array([1, 2]), np.array([2]), np.array([2, 1, 0])]
    table = outputs.keypoint_table(frames_meta, poses, ids, ["nose", "tail"], "s")
    assert list(table.columns.get_level_values("individuals").unique()) == ["animal1", "animal2", "untracked1"]
    assert table.loc[5, ("s", "animal2", "nose", "x")] == 55 and np.isnan(table.loc[5, ("s", "animal1")]).all()
    assert table.loc[10, ("s", "animal1", "tail", "y")] == 15
    assert table.loc[10, ("s", "untracked1", "nose", "x")] == 90
    outputs.write_keypoints(tmp_path, table)
    pd.testing.assert_frame_equal(pd.read_hdf(tmp_path / outputs.KEYPOINTS_H5, "df_with_missing"), table)


def test_a_table_with_many_tracks_is_still_written(tmp_path):
    # pandas' "table" format keeps the column index in one 64 KiB HDF5 attribute: 60 tracks of 39
    # body parts outgrow it, and the writer falls back to the "fixed" format.
    parts = [f"bodypart_{k}" for k in range(39)]
    poses = [KeyPoints(np.full((1, 39, 2), t, np.float32), np.ones((1, 39), np.float32)) for t in range(60)]
    ids = [np.array([t + 1]) for t in range(60)]
    table = outputs.keypoint_table([(t, t / 5) for t in range(60)], poses, ids, parts, "s")
    outputs.write_keypoints(tmp_path, table)
    back = pd.read_hdf(tmp_path / outputs.KEYPOINTS_H5, "df_with_missing")
    pd.testing.assert_frame_equal(back, table)
    assert back.columns.get_level_values("individuals").nunique() == 60


def test_mot_challenge_csv(tmp_path):
    a = frame((100, 100), (300, 200), (50, 50), classes=[0, 0, 1])
    a.tracker_id = np.array([1, 2, 0])
    b = frame((110, 100))
    b.tracker_id = np.array([1])
    n = outputs.write_tracks(tmp_path / "tracks.csv", [(0, 0.0), (5, 0.2)], [a, b])
    lines = (tmp_path / "tracks.csv").read_text().splitlines()
    assert n == 3 and lines == ["1,1,70.00,80.00,60.00,40.00,0.9000,-1,-1,-1",
                                "1,2,270.00,180.00,60.00,40.00,0.9000,-1,-1,-1",
                                "6,1,80.00,80.00,60.00,40.00,0.9000,-1,-1,-1"]


def test_trajectory_plot_draws_one_path_per_animal(tmp_path):
    poses = [pose_of((10 + i, 10), (200, 20 + i)) for i in range(5)] + [pose_of((300, 300), conf=0.01)]
    ids = [np.array([1, 2])] * 5 + [np.array([1])]
    paths = track_paths(poses, ids, pose_threshold=0.1)
    assert sorted(paths) == [1, 2]
    assert paths[1][4].tolist() == [14, 10] and np.isnan(paths[1][5]).all()  # doubtful points are not drawn
    assert trajectory_plot(tmp_path / "t.png", poses, ids, width=W, height=H, pose_threshold=0.1,
                           title="t", untrained=False) == 10
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"


def test_the_trajectory_plot_is_drawn_once(tmp_path, monkeypatch):
    """After tight_layout, matplotlib left a placeholder layout engine on the figure, and savefig
    drew the whole figure once more before drawing it for real: ~12 % of the plot's time, which a
    worker spends after every video with the other core idle. The file is the same."""
    from matplotlib.figure import Figure
    poses = [pose_of((10 + i, 10), (200, 20 + i)) for i in range(5)]
    ids = [np.array([1, 2])] * 5
    draws = []
    draw = Figure.draw
    monkeypatch.setattr(Figure, "draw", lambda self, renderer: (draws.append(1), draw(self, renderer))[1])
    trajectory_plot(tmp_path / "t.png", poses, ids, width=W, height=H, pose_threshold=0.1, title="t", untrained=False)
    assert len(draws) == 1


@pytest.mark.parametrize("method,left", [("median", 5), ("savgol", 25)])
def test_smoothing_filters_each_track_over_time_and_not_across_gaps(method, left):
    rng = np.random.default_rng(1)
    n = 30
    x = np.linspace(0, 100, n) + rng.normal(0, 1, n)
    x[10] += 40                                  # a one-frame jump
    like = np.full(n, 0.9)
    like[20] = 0.01                              # a doubtful point splits the run
    x[25:] = np.nan                              # the animal left
    cols = pd.MultiIndex.from_product([["s"], ["animal1"], ["nose"], ["x", "y", "likelihood"]],
                                      names=["scorer", "individuals", "bodyparts", "coords"])
    table = pd.DataFrame(np.column_stack([x, np.full(n, 5.0), like]), columns=cols,
                         index=pd.Index(range(0, 5 * n, 5), name="frame"))
    out = smooth.smooth_table(table, method=method, window=5, pose_threshold=0.1)
    fx = out[("s", "animal1", "nose", "x")].to_numpy()
    assert out.shape == table.shape and (out.index == table.index).all()
    # the 40 px jump: the median removes it, Savitzky-Golay spreads it out
    assert abs(fx[10] - np.linspace(0, 100, n)[10]) < left < abs(x[10] - np.linspace(0, 100, n)[10])
    assert np.abs(fx[:8] - np.linspace(0, 100, n)[:8]).max() < 3  # far from the jump: on the line
    assert fx[20] == x[20]                       # doubtful: raw
    assert np.isnan(fx[25:]).all()               # gaps are not filled
    pd.testing.assert_series_equal(out[("s", "animal1", "nose", "likelihood")],
                                   table[("s", "animal1", "nose", "likelihood")])
    assert smooth.smooth_table(table, method="none", window=5, pose_threshold=0.1).equals(table)


@pytest.mark.parametrize("method,window", [("gaussian", 5), ("median", 4), ("savgol", 1)])
def test_bad_smoothing_settings_are_refused(method, window):
    from wildswarm.errors import ConfigError
    with pytest.raises(ConfigError):
        smooth.check(method, window)


def test_the_labeled_video_names_each_animal_by_its_id():
    from wildswarm.pipeline.render import labels
    det = frame((100, 100), (300, 200), (50, 50), classes=[0, 0, 1])
    det.tracker_id = np.array([3, 0, 0])
    assert labels(det) == ["animal 3 0.90", "animal 0.90", "person 0.90"]
