"""Pose crops cut on the model's device (families/superanimal.py ``DeviceCrops``) against DeepLabCut's
own runner: the same crops to within a grey level, the same decoding, the same keypoints in the
frame, refusal when they differ, and the setting that keeps the runner (real models, untrained
weights)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from wildswarm.errors import PipelineError
from wildswarm.pipeline import models as cat
from wildswarm.pipeline.families import superanimal
from wildswarm.pipeline.pose import PoseEstimator

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def weights(untrained_models_dir):
    return cat.require(untrained_models_dir, cat.spec("superanimal_quadruped"), allow_untrained=True)


@pytest.fixture(scope="module")
def pose(weights) -> PoseEstimator:
    return PoseEstimator(weights, device="cpu", max_animals=4, batch_size=3, crops="device")


def contexts(frames, boxes) -> list:
    return [(f, {"bboxes": np.asarray(boxes, np.float32), "bbox_scores": np.ones(len(boxes), np.float32)})
            for f in frames]


def hard_boxes(frame) -> list:
    """Inside and larger than the crop, smaller than it (an upscale), across the left and top edges,
    across the right and bottom ones, tall and narrow, on half pixels."""
    h, w = frame.shape[:2]
    return [[w * .1, h * .2, w * .4, h * .7], [w * .6 + .5, h * .5 + .5, 37.25, 21.75], [-25.3, -10.5, 110.2, 95.7],
            [w - 60.4, h - 70.6, 90.1, 85.2], [w * .3, 5, 14, h - 10]]


def test_the_crops_check_passed_at_load_and_is_recorded(pose):
    assert pose.model.device_crops is not None
    assert pose.model.crops == {"by": "wildswarm", "device": "cpu",
                                "max_difference_levels": pose.model.crops["max_difference_levels"]}
    assert pose.model.crops["max_difference_levels"] <= superanimal.CROP_TOLERANCE


def test_crops_on_the_device_are_deeplabcuts_to_within_a_grey_level(pose, seed_frames):
    ctx = contexts(seed_frames, hard_boxes(seed_frames[0]))
    dc = pose.model.device_crops
    with torch.inference_mode():
        ours, offset, scale = dc.crops(dc.upload(ctx))
    theirs = pose.model.runner_crops(ctx)
    assert ours.shape == theirs.shape == (len(seed_frames) * 5, 3, 256, 256)
    levels = np.abs(ours.numpy() - theirs) * np.asarray(dc.std, np.float32)[:, None, None]
    print(f"crops: max {levels.max():.3g}, mean {levels.mean():.3g} grey levels")
    assert levels.max() <= superanimal.CROP_TOLERANCE
    assert levels.mean() < 0.1      # OpenCV's fixed-point rounding, now and then, not a shifted crop
    # the geometry is DeepLabCut's: its RescaleAndOffset maps crop pixel p to p * scale + offset
    from deeplabcut.pose_estimation_pytorch.data.image import top_down_crop
    for k, box in enumerate(hard_boxes(seed_frames[0])):
        _, (ox, oy), (sx, sy) = top_down_crop(seed_frames[0], np.asarray(box, np.float32), (256, 256))
        assert offset[k].tolist() == [ox, oy]
        assert scale[k].tolist() == pytest.approx([sx, sy], rel=1e-6)


def test_given_the_same_crops_the_keypoints_are_the_runners(pose, seed_frames, monkeypatch):
    """Decoding (DeepLabCut's predictor), batching across frames and the map back to each frame."""
    ctx = contexts(seed_frames[:3], hard_boxes(seed_frames[0])[:3]) + contexts(seed_frames[3:4], [])
    reference = pose.model.runner_poses(ctx)
    dc = pose.model.device_crops
    own = dc.crops
    monkeypatch.setattr(dc, "crops", lambda up: (torch.from_numpy(pose.model.runner_crops(ctx)), *own(up)[1:]))
    got = pose.model.poses(ctx)
    assert [len(g) for g in got] == [3, 3, 3, 0]
    for g, r in zip(got, reference):
        np.testing.assert_allclose(g, r[:len(g)], atol=1e-3)


def test_a_marker_is_found_at_the_same_place_in_the_frame_both_ways(pose):
    """A network that points every keypoint at the brightest spot of its crop: the whole chain, crop
    to frame coordinates, finds a white dot where it was drawn, through either way."""
    frame = np.zeros((360, 640, 3), np.uint8)
    dots = [(200, 150), (12, 8), (630, 350)]
    for x, y in dots:
        frame[y - 1:y + 2, x - 1:x + 2] = 255
    boxes = [[120, 90, 160, 120], [-20, -15, 60, 50], [600, 320, 45, 45]]    # inside, and across the edges

    def brightest(x: np.ndarray) -> list[np.ndarray]:
        heat = torch.nn.functional.avg_pool2d(torch.from_numpy(x[:, :1]), 4)          # stride 4, as HRNet's
        return [heat.expand(-1, len(pose.bodyparts), -1, -1).contiguous().numpy()]

    ctx = contexts([frame], boxes)
    pose.model.use(brightest)
    try:
        ours = pose.model.poses(ctx)[0]
        theirs = pose.model.runner_poses(ctx)[0][:len(boxes)]
    finally:
        pose.model.use(None)
    np.testing.assert_allclose(ours[..., :2], theirs[..., :2], atol=1e-3)
    # the score is this network's crop value, normalised: a grey level is 1 / 58.4 of it
    np.testing.assert_allclose(ours[..., 2], theirs[..., 2], atol=1.001 / (0.224 * 255))
    for (x, y), kp, box in zip(dots, ours, boxes):
        cell = 4 * max(box[2:]) / 256          # one heatmap cell, in frame pixels
        assert np.abs(kp[:, :2] - (x + 0.5, y + 0.5)).max() <= cell, (x, y, kp[0])


def test_crops_that_differ_are_refused_and_the_runner_cuts_them(weights, monkeypatch, seed_frames):
    own = superanimal.DeviceCrops.crops

    def shifted(self, uploaded):
        x, offset, scale = own(self, uploaded)
        return x + 5 / torch.tensor(self.std)[:, None, None], offset, scale      # five grey levels off

    monkeypatch.setattr(superanimal.DeviceCrops, "crops", shifted)
    refused = PoseEstimator(weights, device="cpu", max_animals=2, batch_size=2, crops="device")
    assert refused.model.device_crops is None and refused.model.crops["by"] == "deeplabcut"
    assert re.search(r"differ from DeepLabCut's by [56] grey levels", refused.model.crops["refused"])
    boxes = hard_boxes(seed_frames[0])[:2]
    got = refused.model.poses(contexts(seed_frames[:1], boxes))
    assert got[0].shape == (2, 39, 3)      # the runner's, padded to max_animals


def test_the_setting_keeps_deeplabcuts_runner_and_rejects_unknown_values(weights):
    """``deeplabcut`` everywhere; ``auto`` on a CPU, where OpenCV's crops cost less CPU (bench/crops.py)."""
    for setting in ("deeplabcut", "auto"):
        kept = PoseEstimator(weights, device="cpu", max_animals=2, batch_size=2, crops=setting)
        assert kept.model.device_crops is None and kept.model.crops == {"by": "deeplabcut"}
    with pytest.raises(PipelineError, match="unknown pose_crops 'gpu'"):
        PoseEstimator(weights, device="cpu", crops="gpu")


def test_the_pipeline_runs_with_device_crops_and_says_so(untrained_settings, seed_videos, tmp_path):
    """A seed video end to end with the crops cut on the device: the same detections and as many
    poses as DeepLabCut's runner gives, and summary.json records who cut them."""
    import dataclasses
    import json

    from wildswarm.pipeline import outputs
    from wildswarm.pipeline.run import Pipeline
    results = {}
    for setting in ("device", "deeplabcut"):
        p = Pipeline(dataclasses.replace(untrained_settings, pose_crops=setting))
        result = p.analyze(seed_videos[0], tmp_path / setting)
        results[setting] = json.loads((result.output_dir / outputs.SUMMARY).read_text())
    device, runner = results["device"], results["deeplabcut"]
    assert device["models"]["pose"]["crops"]["by"] == "wildswarm"
    assert device["models"]["pose"]["crops"]["max_difference_levels"] <= superanimal.CROP_TOLERANCE
    assert runner["models"]["pose"]["crops"] == {"by": "deeplabcut"}
    assert device["settings"]["pose_crops"] == "device"
    assert device["animals"]["poses"] == runner["animals"]["poses"] > 0
    assert device["animals"]["detections"] == runner["animals"]["detections"]


def test_only_the_part_of_a_frame_its_crops_read_goes_to_the_device(pose, seed_frames):
    """A 1920x1080 frame with two small animals: the rectangle around their windows goes up, not
    the frame, and the crops are still DeepLabCut's."""
    import cv2
    big = cv2.resize(seed_frames[0], (1920, 1080))
    ctx = contexts([big], [[900.4, 500.2, 60.5, 40.1], [1010, 530.5, 30.2, 70.7]])
    dc = pose.model.device_crops
    items = dc.upload(ctx)
    windows = superanimal.crop_windows(ctx[0][1]["bboxes"], dc.size)
    (part,) = {id(item[0]): item[0] for item in items}.values()     # one part for the frame's two crops
    assert part.shape == (windows[:, 3].max() - windows[:, 1].min(), windows[:, 2].max() - windows[:, 0].min(), 3)
    assert part.numel() < big.size / 50
    with torch.inference_mode():
        ours = dc.crops(items)[0].numpy()
    levels = np.abs(ours - pose.model.runner_crops(ctx)) * np.asarray(dc.std, np.float32)[:, None, None]
    assert levels.max() <= superanimal.CROP_TOLERANCE


def test_capturing_the_runners_crops_does_not_run_the_network(pose, seed_frames):
    """The backends' probe and the crops check want the crops only: the network (HRNet-w32, about
    21 GFLOP a crop) ran on them for nothing at every load."""
    calls = []
    hook = pose.model.net.torch.register_forward_hook(lambda *_: calls.append(1))
    try:
        crops = pose.model.probe(seed_frames[:2])
        ctx = contexts(seed_frames[:2], hard_boxes(seed_frames[0])[:3])
        again = pose.model.runner_crops(ctx)
        poses = pose.model.runner_poses(ctx)           # an ordinary call still runs it
    finally:
        hook.remove()
    assert crops.shape == (2, 3, 256, 256) and again.shape == (6, 3, 256, 256)
    assert len(calls) == 2                             # the two batches of runner_poses, and no more
    assert poses[0].shape[1:] == (len(pose.bodyparts), 3)
