"""DeepLabCut SuperAnimal pose, top-down on MegaDetector's animal boxes.

DeepLabCut 3's own inference runner does the work (crop each box, HRNet, heatmap decoding back to
image coordinates); wildswarm hands it the boxes MegaDetector already found instead of running
DeepLabCut's second detector. An exported runtime replaces only the network inside that runner, so
cropping and decoding are DeepLabCut's code whichever backend runs it.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from wildswarm.pipeline.families import _onnx
from wildswarm.pipeline.safeload import verified_copy
from wildswarm.pipeline.specs import ModelSpec, Weights

KIND = "pose"


def _quiet_deeplabcut() -> None:
    for name in ("deeplabcut", "deeplabcut.core.config", "deeplabcut.pose_estimation_pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)


def superanimal_config(s: ModelSpec, *, max_individuals: int, device: str):
    """DeepLabCut's own top-down inference config for a SuperAnimal model."""
    _quiet_deeplabcut()
    from deeplabcut.pose_estimation_pytorch.config import PoseConfig
    # Naming a detector makes DeepLabCut build the top-down variant; its weights are never loaded.
    return PoseConfig.build_for_superanimal_inference(
        s.options["super_animal"], model_name=s.options["model_name"],
        detector_name="fasterrcnn_resnet50_fpn_v2", max_individuals=max_individuals, device=device)


def untrained_checkpoint(s: ModelSpec) -> dict:
    from deeplabcut.pose_estimation_pytorch.models import PoseModel
    model = PoseModel.build(superanimal_config(s, max_individuals=1, device="cpu")["model"])
    return {"model": model.state_dict(), "untrained": True}


def download(s: ModelSpec, folder: Path) -> str:
    import dlclibrary
    dlclibrary.download_huggingface_model(s.source, target_dir=str(folder), rename_mapping=s.filename)
    return f"dlclibrary {s.source} (Hugging Face)"


def load(weights: Weights, *, device: str, max_animals: int = 5, batch_size: int = 8, **_) -> "PoseModel":
    return PoseModel(weights, device=device, max_animals=max_animals, batch_size=batch_size)


class PoseModel:
    """DeepLabCut's inference runner for one SuperAnimal model, boxes given."""

    def __init__(self, weights: Weights, *, device: str, max_animals: int, batch_size: int):
        from deeplabcut.pose_estimation_pytorch.apis.utils import get_inference_runners
        self.weights = weights
        self.max_animals = max_animals
        cfg = superanimal_config(weights.spec, max_individuals=max_animals, device=device)
        self.bodyparts: list[str] = list(cfg["metadata"]["bodyparts"])
        # Weights-only, whatever DeepLabCut's default (TORCH_LOAD_WEIGHTS_ONLY) says: a snapshot is a
        # plain {"model": state_dict}. The runner loads the private copy as it is built.
        cfg["runner"]["load_weights_only"] = True
        with verified_copy(weights) as path:
            self.runner, _ = get_inference_runners(cfg, snapshot_path=str(path), max_individuals=max_animals,
                                                   batch_size=batch_size, device=device)
        self.net = _Net(self.runner.model)
        self.runner.model = self.net

    def poses(self, contexts: list) -> list[np.ndarray]:
        """(individuals, keypoints, 3) for each ``(frame, {"bboxes": xywh, "bbox_scores": ...})``."""
        return [np.asarray(out["bodyparts"], dtype=np.float32) for out in self.runner.inference(contexts)]

    # --- backends -------------------------------------------------------------------------------
    def probe(self, frames: list[np.ndarray]) -> np.ndarray:
        """The crops DeepLabCut cuts for one box in the middle of each frame."""
        contexts = []
        for f in frames:
            h, w = f.shape[:2]
            box = np.array([[w / 4, h / 4, w / 2, h / 2]], np.float32)
            contexts.append((f, {"bboxes": box, "bbox_scores": np.ones(1, np.float32)}))
        self.net.captured = []
        try:
            self.runner.inference(contexts)
            return torch.cat(self.net.captured).numpy()
        finally:
            self.net.captured = None

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

    def __call__(self, x: torch.Tensor, **kwargs):
        if self.captured is not None:
            self.captured.append(x.detach().cpu())
        if self.runtime is None:
            return self.torch(x, **kwargs)
        out: dict = {}
        for (h, k), v in zip(self.keys, self.runtime(x.cpu().numpy())):
            out.setdefault(h, {})[k] = torch.from_numpy(v).to(x.device)
        return out

    def __getattr__(self, name):
        return getattr(self.torch, name)
