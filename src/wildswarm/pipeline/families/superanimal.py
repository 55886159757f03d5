"""DeepLabCut SuperAnimal pose, top-down on MegaDetector's animal boxes.

wildswarm hands DeepLabCut 3 the boxes MegaDetector already found instead of running DeepLabCut's
second detector. Two ways run the same steps (crop each box, HRNet, heatmap decoding back to image
coordinates):

* DeepLabCut's own inference runner: each crop cut and normalised one at a time on the CPU with
  OpenCV and albumentations, copied to the device in batches, and each crop's result copied back
  on its own;
* ``DeviceCrops``: the part of each frame that its crops read goes to the model's device once, as
  uint8; every crop of the batch is cut there, in DeepLabCut's geometry (``top_down_crop``: the box
  widened to the crop's aspect ratio, rounded to whole pixels, zero padding outside the frame, a
  bilinear resize with OpenCV's pixel centres), normalised there, run through the network, decoded
  by DeepLabCut's own predictor and mapped back to the frame there, and the keypoints of the whole
  batch come back in one copy. That is the batched design a GPU node needs: the host's work per crop
  becomes a few kernel launches instead of OpenCV and albumentations calls and a copy each way.

``pose_crops``: ``auto`` (the default) uses ``DeviceCrops`` on a GPU and the runner on a CPU, where
the crops' work is the same cores' either way and OpenCV's uint8 resize costs less CPU than
PyTorch's float one (``bench/crops.py``, a stand-in network, 1920x1080 frames: 1.7-2.1 against
3.3-5.0 ms of CPU a crop on 2 cores); ``device`` uses ``DeviceCrops`` wherever the model runs;
``deeplabcut`` always the runner. Before ``DeviceCrops`` is used it is checked against the runner on
probe frames, with boxes inside, across and beyond the frame's edge and smaller than the crop: the
crops must agree to within ``CROP_TOLERANCE`` grey levels (OpenCV rounds its resize in fixed point;
PyTorch does not), or the runner is used and ``crops["refused"]`` says why. An exported runtime
replaces only the network, in either way; decoding is always DeepLabCut's predictor.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from wildswarm.pipeline.families import _onnx
from wildswarm.pipeline.families._lean import lean_import
from wildswarm.pipeline.safeload import plain_weights_only, verified_copy
from wildswarm.pipeline.specs import ModelSpec, Weights

KIND = "pose"
# DeepLabCut's PyTorch engine, imported module by module (families/_lean.py): its package imports
# train, evaluate and every other engine
DLC = "deeplabcut.pose_estimation_pytorch"
CROP_TOLERANCE = 1.0 + 1e-3      # grey levels: OpenCV's fixed-point resize rounds to the nearest level


def _quiet_deeplabcut() -> None:
    for name in ("deeplabcut", "deeplabcut.core.config", "deeplabcut.pose_estimation_pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)


def superanimal_config(s: ModelSpec, *, max_individuals: int, device: str):
    """DeepLabCut's own top-down inference config for a SuperAnimal model."""
    _quiet_deeplabcut()
    PoseConfig = lean_import(f"{DLC}.config").PoseConfig
    # Naming a detector makes DeepLabCut build the top-down variant; its weights are never loaded.
    return PoseConfig.build_for_superanimal_inference(
        s.options["super_animal"], model_name=s.options["model_name"],
        detector_name="fasterrcnn_resnet50_fpn_v2", max_individuals=max_individuals, device=device)


def untrained_checkpoint(s: ModelSpec) -> dict:
    PoseModel = lean_import(f"{DLC}.models").PoseModel
    model = PoseModel.build(superanimal_config(s, max_individuals=1, device="cpu")["model"])
    return {"model": model.state_dict(), "untrained": True}


def download(s: ModelSpec, folder: Path) -> str:
    import dlclibrary
    dlclibrary.download_huggingface_model(s.source, target_dir=str(folder), rename_mapping=s.filename)
    return f"dlclibrary {s.source} (Hugging Face)"


def load(weights: Weights, *, device: str, max_animals: int = 5, batch_size: int = 8, crops: str = "auto",
         **_) -> "PoseModel":
    return PoseModel(weights, device=device, max_animals=max_animals, batch_size=batch_size, crops=crops)


class PoseModel:
    """One SuperAnimal model, boxes given: DeepLabCut's inference runner, or ``DeviceCrops`` around
    the same network and predictor (``crops``: module doc)."""

    def __init__(self, weights: Weights, *, device: str, max_animals: int, batch_size: int, crops: str = "auto"):
        get_inference_runners = lean_import(f"{DLC}.apis.utils").get_inference_runners
        self.weights = weights
        self.max_animals = max_animals
        self.batch_size = batch_size
        cfg = superanimal_config(weights.spec, max_individuals=max_animals, device=device)
        self.bodyparts: list[str] = list(cfg["metadata"]["bodyparts"])
        # Weights-only, whatever DeepLabCut's default (TORCH_LOAD_WEIGHTS_ONLY) says: a snapshot is a
        # plain {"model": state_dict}. The runner loads the private copy as it is built.
        cfg["runner"]["load_weights_only"] = True
        with verified_copy(weights) as path, plain_weights_only():
            self.runner, _ = get_inference_runners(cfg, snapshot_path=str(path), max_individuals=max_animals,
                                                   batch_size=batch_size, device=device)
        self.net = _Net(self.runner.model)
        self.runner.model = self.net
        self.device_crops: DeviceCrops | None = None
        self.crops = {"by": "deeplabcut"}     # summary.json's record of who cuts the crops, and why
        if crops == "device" or (crops == "auto" and self.net.device.type != "cpu"):
            self.crops = self.try_device_crops()

    def poses(self, contexts: list) -> list[np.ndarray]:
        """(boxes, keypoints, 3) for each ``(frame, {"bboxes": xywh, "bbox_scores": ...})``."""
        if self.device_crops is not None:
            return self.device_crops.poses(contexts)
        return self.runner_poses(contexts)

    def runner_poses(self, contexts: list) -> list[np.ndarray]:
        """DeepLabCut's runner (padded to ``max_animals`` with -1: callers keep one pose per box)."""
        return [np.asarray(out["bodyparts"], dtype=np.float32) for out in self.runner.inference(contexts)]

    def runner_crops(self, contexts: list) -> np.ndarray:
        """The normalised crops DeepLabCut's runner gives the network for ``contexts`` (the network
        itself is not run: ``_Net``)."""
        self.net.captured = []
        try:
            self.runner.inference(contexts)
            return torch.cat(self.net.captured).numpy()
        finally:
            self.net.captured = None

    def try_device_crops(self) -> dict:
        """Use ``DeviceCrops`` if its crops of probe frames agree with DeepLabCut's runner's."""
        contexts = crop_probe()
        try:
            candidate = DeviceCrops(self)     # refuses a DeepLabCut config whose crops it does not cut
            with torch.inference_mode():
                ours = candidate.crops(candidate.upload(contexts))[0].cpu().numpy()
            std = np.asarray(candidate.std, np.float32)[:, None, None]    # back to grey levels, per channel
            levels = float((np.abs(ours - self.runner_crops(contexts)) * std).max())
        except Exception as exc:  # a config it does not cut, an op this device lacks: the runner stays
            return {"by": "deeplabcut", "refused": f"wildswarm's crops failed: {type(exc).__name__}: {exc}"}
        if not levels <= CROP_TOLERANCE:
            why = (f"wildswarm's crops differ from DeepLabCut's by {levels:.3g} grey levels "
                   f"(tolerance {CROP_TOLERANCE:.3g})")
            logging.getLogger(__name__).warning("%s: %s; DeepLabCut's runner cuts them", self.weights.spec.name, why)
            return {"by": "deeplabcut", "refused": why}
        self.device_crops = candidate
        return {"by": "wildswarm", "device": str(self.net.device), "max_difference_levels": round(levels, 4)}

    # --- backends -------------------------------------------------------------------------------
    def probe(self, frames: list[np.ndarray]) -> np.ndarray:
        """The crops DeepLabCut cuts for one box in the middle of each frame."""
        contexts = []
        for f in frames:
            h, w = f.shape[:2]
            box = np.array([[w / 4, h / 4, w / 2, h / 2]], np.float32)
            contexts.append((f, {"bboxes": box, "bbox_scores": np.ones(1, np.float32)}))
        return self.runner_crops(contexts)

    def raw(self, x: np.ndarray, runtime=None) -> dict[str, np.ndarray]:
        """The network's heatmaps (and location refinement fields) for the crops ``x``."""
        if runtime is None:
            with torch.inference_mode():
                out = self.net.torch(torch.from_numpy(x).to(self.net.device))
            return {f"{h}.{k}": v.float().cpu().numpy() for h, d in out.items() for k, v in d.items()}
        return dict(zip(self.net.outputs, runtime(x)))

    def export_onnx(self, dest: Path) -> None:
        keys = self.net.keys
        crop = self.probe([np.zeros((480, 640, 3), np.uint8)])  # DeepLabCut's crop size for this model
        _onnx.export(self.net.torch.eval(), torch.from_numpy(crop), dest, outputs=self.net.outputs,
                     pick=lambda out: [out[h][k] for h, k in keys])

    def networks(self) -> list:
        return [self.net.torch]

    def use(self, runtime) -> None:
        self.net.runtime = runtime


class _Net:
    """What DeepLabCut's runner calls as its model: the PoseModel, or an exported runtime of it.

    Decoding (``get_predictions``) stays the PoseModel's own code either way."""

    def __init__(self, model):
        self.torch = model
        self.runtime = None
        self.captured: list[torch.Tensor] | None = None
        self.device = next(model.parameters()).device
        with torch.inference_mode():
            out = model(torch.zeros(1, 3, 64, 64, device=self.device))
        self.keys = [(h, k) for h, d in out.items() for k in d]
        self.outputs = [f"{h}.{k}" for h, k in self.keys]
        # each output's channels and stride, for the blank outputs of a capture
        self._shapes = {(h, k): (v.shape[1], 64 // v.shape[2]) for h, d in out.items() for k, v in d.items()}

    def __call__(self, x: torch.Tensor, **kwargs):
        if self.captured is not None:
            # Only the crops are wanted (the backends' probe, the device crops' check): the network
            # is not run on them, its outputs are blanks of their shapes for the runner to decode.
            self.captured.append(x.detach().cpu())
            n, _, height, width = x.shape
            out: dict = {}
            for (h, k), (channels, stride) in self._shapes.items():
                out.setdefault(h, {})[k] = torch.zeros(n, channels, -(-height // stride), -(-width // stride),
                                                       device=x.device)
            return out
        if self.runtime is None:
            return self.torch(x, **kwargs)
        out: dict = {}
        for (h, k), v in zip(self.keys, self.runtime(x.cpu().numpy())):
            out.setdefault(h, {})[k] = torch.from_numpy(v).to(x.device)
        return out

    def __getattr__(self, name):
        return getattr(self.torch, name)


def crop_windows(xywh: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """DeepLabCut's ``top_down_crop`` geometry (no margin, context kept) for many boxes at once: each
    box's window ``(x1, y1, x2, y2)`` in whole frame pixels, the box widened around its centre to the
    crop's aspect ratio ``size`` (width, height). A window may reach beyond the frame, where the crop
    is zero. The arithmetic is DeepLabCut's, in the boxes' own dtype, so the rounding is too."""
    out_w, out_h = size
    x, y, w, h = np.asarray(xywh).reshape(-1, 4).T
    cx, cy = x + w / 2, y + h / 2
    ratio = out_w / out_h
    wide = w / h > ratio
    h, w = np.where(wide, w / ratio, h), np.where(w / h < ratio, h * ratio, w)
    return np.stack([np.round(cx - w / 2), np.round(cy - h / 2), np.round(cx + w / 2), np.round(cy + h / 2)],
                    axis=1).astype(np.int64)


def crop_probe() -> list:
    """Contexts for the crops' check at load: two probe frames, boxes inside the frame (larger than
    the crop), smaller than it, across each edge, narrow and wide, on half pixels."""
    from wildswarm.pipeline.backends import probe_frames
    boxes = np.array([[160, 90, 320, 180], [300.5, 200.5, 41.25, 23.75], [-30.2, -12.6, 120.4, 90.3],
                      [590.7, 300.2, 80.1, 95.5], [20, 40, 12, 250], [5, 170.5, 630, 30]], np.float32)
    return [(f, {"bboxes": boxes, "bbox_scores": np.ones(len(boxes), np.float32)}) for f in probe_frames()]


class DeviceCrops:
    """DeepLabCut's top-down steps for a whole batch of frames on the model's device (module doc).

    ``upload`` copies the part of each frame its crops read to the device once (uint8, pinned memory
    on a GPU); ``crops`` cuts and normalises every crop there; ``poses`` runs the network on them in
    chunks of ``batch_size`` crops (DeepLabCut's runner batches the same way), decodes the heatmaps
    with DeepLabCut's own predictor, maps the keypoints back to the frames and copies them back once."""

    def __init__(self, model: PoseModel):
        preprocessor = lean_import(f"{DLC}.data.preprocessor")
        AugmentImage, TopDownCrop = preprocessor.AugmentImage, preprocessor.TopDownCrop
        self.model = model
        self.device = model.net.device
        steps = model.runner.preprocessor.components
        crop = next(c for c in steps if isinstance(c, TopDownCrop))
        if crop.margin != 0 or not crop.with_context:
            raise ValueError(f"DeepLabCut's crop has margin {crop.margin}, context {crop.with_context}: not the "
                             "geometry wildswarm cuts")
        self.size = tuple(crop.output_size)                      # (width, height)
        normalize = [t for c in steps if isinstance(c, AugmentImage) for t in c.transform.transforms
                     if type(t).__name__ == "Normalize"]
        if len(normalize) != 1:
            raise ValueError("DeepLabCut's crops are not normalised by one Normalize step")
        n = normalize[0]
        self.mean = tuple(float(v) * n.max_pixel_value for v in n.mean)
        self.std = tuple(float(v) * n.max_pixel_value for v in n.std)
        self._mean = torch.tensor(self.mean, device=self.device)[:, None, None]    # made once, not per batch
        self._std = torch.tensor(self.std, device=self.device)[:, None, None]

    def upload(self, contexts: list) -> list[tuple]:
        """Each crop as ``(the part of its frame the frame's crops read, on the device; that part's
        origin and the frame's size; the crop's window)``. The part is the rectangle around the
        frame's windows, inside the frame (a large frame with small animals sends a fraction of its
        pixels), sent once for all of the frame's crops."""
        items = []
        pin = self.device.type == "cuda"
        for image, ctx in contexts:
            boxes = np.asarray(ctx["bboxes"])
            if not len(boxes):
                continue
            fh, fw = image.shape[:2]
            windows = crop_windows(boxes, self.size)
            rx1, ry1 = max(int(windows[:, 0].min()), 0), max(int(windows[:, 1].min()), 0)
            rx2, ry2 = min(int(windows[:, 2].max()), fw), min(int(windows[:, 3].max()), fh)
            t = torch.from_numpy(np.ascontiguousarray(image[ry1:max(ry2, ry1), rx1:max(rx2, rx1)]))
            part = (t.pin_memory() if pin else t).to(self.device, non_blocking=True)
            items.extend((part, (rx1, ry1, fw, fh), window) for window in windows)
        return items

    def crops(self, uploaded: list[tuple]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised crops (N, 3, height, width), and each crop's offset and scale (N, 2): a crop
        pixel ``p`` is at ``p * scale + offset`` in its frame, as DeepLabCut's ``RescaleAndOffset``."""
        import torch.nn.functional as F
        out_w, out_h = self.size
        crops, geometry = [], []
        for part, (rx, ry, fw, fh), (x1, y1, x2, y2) in uploaded:
            cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, fw), min(y2, fh)    # inside the frame
            if cx2 <= cx1 or cy2 <= cy1:    # a window wholly off the frame: a black crop
                crops.append(torch.zeros(1, 3, out_h, out_w, device=self.device))
            else:
                window = part[cy1 - ry:cy2 - ry, cx1 - rx:cx2 - rx].permute(2, 0, 1)[None].float()
                window = F.pad(window, (cx1 - x1, x2 - cx2, cy1 - y1, y2 - cy2))
                crops.append(F.interpolate(window, size=(out_h, out_w), mode="bilinear", align_corners=False))
            geometry.append((x1, y1, (x2 - x1) / out_w, (y2 - y1) / out_h))
        if not crops:
            empty = torch.zeros(0, 2, device=self.device)
            return torch.zeros(0, 3, out_h, out_w, device=self.device), empty, empty
        x = torch.cat(crops).round_().clamp_(0, 255)    # the uint8 crop OpenCV gives DeepLabCut
        g = torch.tensor(geometry, dtype=torch.float32).to(self.device, non_blocking=True)
        return (x - self._mean) / self._std, g[:, :2], g[:, 2:]

    def poses(self, contexts: list) -> list[np.ndarray]:
        """(boxes, keypoints, 3) for each context, as ``PoseModel.poses``."""
        with torch.inference_mode():
            x, offset, scale = self.crops(self.upload(contexts))
            found = []
            net = self.model.net
            for start in range(0, len(x), self.model.batch_size):
                out = net.get_predictions(net(x[start:start + self.model.batch_size]))
                found.append(out["bodypart"]["poses"][:, 0].float())        # one animal a crop
            k = len(self.model.bodyparts)
            poses = torch.cat(found) if found else torch.zeros(0, k, 3, device=self.device)
            xy = poses[..., :2] * scale[:, None] + offset[:, None]
            poses = torch.cat([xy, poses[..., 2:]], -1).cpu().numpy()       # one copy back for the batch
        result, at = [], 0
        for _, ctx in contexts:
            n = len(ctx["bboxes"])
            result.append(poses[at:at + n] if n else np.zeros((0, k, 3), np.float32))
            at += n
        return result
