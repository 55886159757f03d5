"""The labeled video's drawing: what each frame shows, and that it is supervision's and OpenCV's own."""
import numpy as np
import pytest
import supervision as sv

from wildswarm.pipeline.pose import KeyPoints
from wildswarm.pipeline.render import FrameRenderer, labels

W, H = 320, 180
SKELETON = [(0, 1), (1, 2), (2, 3), (1, 4)]
THRESHOLD = 0.5


def _scene(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (H, W, 3), np.uint8)


def _animals() -> tuple[sv.Detections, KeyPoints]:
    det = sv.Detections(xyxy=np.array([[20, 30, 120, 140], [150, 20, 300, 170]], np.float32),
                        confidence=np.array([0.91, 0.62], np.float32), class_id=np.array([0, 0]))
    det.tracker_id = np.array([1, 2])
    xy = np.array([[[30.7, 40.2], [60.5, 50.9], [90.1, 80.4], [100.9, 120.5], [40.2, 130.8]],
                   [[160.4, 30.6], [200.8, 60.2], [250.3, 90.7], [280.6, 150.1], [170.5, 160.9]]], np.float32)
    conf = np.array([[0.9, 0.8, 0.2, 0.7, 0.95],     # point 2 hidden: edges (1,2) and (2,3) are not drawn
                     [0.6, 0.9, 0.9, 0.9, 0.1]], np.float32)
    return det, KeyPoints(xy=xy, confidence=conf)


def _reference(image, det, pose, *, untrained: bool) -> np.ndarray:
    """The frame as supervision's own annotators draw it, in OpenCV's BGR order, keypoints below the
    threshold neither drawn nor joined."""
    scale = max(W, H) / 640
    thickness = max(1, round(2 * scale))
    frame = np.ascontiguousarray(image[..., ::-1])
    frame = sv.BoxAnnotator(thickness=thickness).annotate(frame, det)
    frame = sv.LabelAnnotator(text_scale=0.45 * scale, text_thickness=max(1, round(scale)),
                              text_padding=max(2, round(4 * scale))).annotate(frame, det, labels=labels(det))
    xy = pose.xy.copy()
    xy[pose.confidence < THRESHOLD] = 0
    frame = sv.EdgeAnnotator(color=sv.Color.from_hex("#00e5ff"), thickness=thickness,
                             edges=[(a + 1, b + 1) for a, b in SKELETON]).annotate(
        frame, sv.KeyPoints(xy=xy, confidence=pose.confidence))
    vertices = sv.VertexAnnotator(color=sv.Color.from_hex("#ff2d95"), radius=max(2, round(3 * scale)))
    for animal, conf in zip(pose.xy, pose.confidence):
        shown = animal[conf >= THRESHOLD]
        frame = vertices.annotate(frame, sv.KeyPoints(xy=shown[None], confidence=np.ones((1, len(shown)))))
    if untrained:
        banner = sv.LabelAnnotator(text_scale=0.5 * scale, text_position=sv.Position.TOP_LEFT, color=sv.Color.RED)
        frame = banner.annotate(frame, sv.Detections(xyxy=np.array([[0, 0, W, 1]], np.float32),
                                                     class_id=np.array([0])), labels=["UNTRAINED WEIGHTS"])
    return frame[..., ::-1]


@pytest.mark.parametrize("untrained", [False, True])
def test_a_drawn_frame_is_supervisions_drawing_pixel_for_pixel(untrained, monkeypatch):
    """The renderer draws straight into the RGB frame (no flips to BGR and back) and joins the
    skeleton with OpenCV in one call: the same pixels as supervision's annotators give."""
    monkeypatch.setattr("wildswarm.pipeline.render.UNTRAINED_BANNER", "UNTRAINED WEIGHTS")
    image = _scene()
    det, pose = _animals()
    renderer = FrameRenderer(W, H, SKELETON, pose_threshold=THRESHOLD, untrained=untrained)
    drawn = renderer.render(image, det, pose)
    want = _reference(image, det, pose, untrained=untrained)
    assert drawn.shape == want.shape and drawn.dtype == np.uint8
    assert np.array_equal(drawn, want), f"{int((drawn != want).any(axis=-1).sum())} pixels differ"


def test_drawing_leaves_the_decoded_frame_alone():
    image = _scene(1)
    before = image.copy()
    det, pose = _animals()
    drawn = FrameRenderer(W, H, SKELETON, pose_threshold=THRESHOLD, untrained=True).render(image, det, pose)
    assert np.array_equal(image, before)
    assert not np.array_equal(drawn, before)


def test_a_hidden_keypoint_leaves_no_mark_in_the_corner():
    """Keypoints below the threshold are not drawn: supervision's vertex annotator drew each of them
    as a dot at (0, 0), where they had been moved to keep the skeleton's edges off them."""
    image = np.zeros((H, W, 3), np.uint8)
    det = sv.Detections.empty()
    xy = np.array([[[100.0, 100.0], [150.0, 120.0], [200.0, 90.0]]], np.float32)
    pose = KeyPoints(xy=xy, confidence=np.array([[0.9, 0.1, 0.9]], np.float32))
    drawn = FrameRenderer(W, H, [(0, 1), (1, 2)], pose_threshold=THRESHOLD, untrained=False).render(image, det, pose)
    assert not drawn[:20, :20].any(), "a hidden keypoint was drawn in the top-left corner"
    assert drawn[100, 100].any() and drawn[90, 200].any()      # the visible ones are drawn
    assert not drawn[110, 125].any()                            # and nothing joins them through the hidden one


def test_keypoints_that_are_not_numbers_are_not_drawn():
    """A NaN keypoint above the threshold (a pose model's degenerate output) is skipped, not a crash."""
    image = np.zeros((H, W, 3), np.uint8)
    xy = np.array([[[np.nan, 50.0], [150.0, 120.0], [200.0, 90.0]]], np.float32)
    pose = KeyPoints(xy=xy, confidence=np.array([[0.9, 0.9, 0.9]], np.float32))
    drawn = FrameRenderer(W, H, [(0, 1), (1, 2)], pose_threshold=THRESHOLD, untrained=False).render(
        image, sv.Detections.empty(), pose)
    assert drawn[120, 150].any() and drawn[90, 200].any()
