"""The model catalogue: which weights exist, where they live, how to get and check them.

All weights sit in one folder (``Settings.models``; ``models/`` on the shared
filesystem) under the file names the libraries themselves use, so real files
can be pre-placed by hand where no download is possible.

``build_untrained`` writes an architecture with random weights through the
libraries' own classes, in the real file format, so the real loading and
inference code runs where real weights cannot be had. Each such file gets a
``<file>.untrained.json`` sidecar holding its checksum; outputs made with it
say so, and a pipeline refuses it unless untrained weights were asked for.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from wildswarm.errors import MissingWeightsError, ModelError

_ZENODO = "https://zenodo.org/records"


@dataclass(frozen=True)
class ModelSpec:
    name: str                # catalogue name, used in settings and on the command line
    kind: str                # detector | classifier | pose
    family: str              # ultralytics | yolov5 | resnet | superanimal
    filename: str            # file name in the models folder (the library's own)
    source: str              # download URL, or Hugging Face model name for DeepLabCut
    licence: str
    description: str
    sha256: str | None = None  # published checksum, where known
    arch: str | None = None    # architecture for untrained builds (None: not buildable)
    options: dict = field(default_factory=dict, hash=False, compare=False)


CATALOGUE: dict[str, ModelSpec] = {s.name: s for s in (
    ModelSpec("MDV5a", "detector", "yolov5", "md_v5a.0.0.pt",
              f"{_ZENODO}/13357337/files/md_v5a.0.0.pt?download=1", "AGPL-3.0",
              "MegaDetector v5a (YOLOv5x6, 1280 px); accurate, slow on CPU (~5 s/frame)",
              arch="yolov5x6.yaml", options={"version": "a", "image_size": 1280}),
    ModelSpec("MDV5b", "detector", "yolov5", "MegaDetector_v5b.0.0.pt",
              f"{_ZENODO}/10023414/files/MegaDetector_v5b.0.0.pt?download=1", "AGPL-3.0",
              "MegaDetector v5b (YOLOv5x6, 1280 px)",
              arch="yolov5x6.yaml", options={"version": "b", "image_size": 1280}),
    ModelSpec("MDV6-yolov9-c", "detector", "ultralytics", "MDV6b-yolov9-c.pt",
              f"{_ZENODO}/15398270/files/MDV6-yolov9-c.pt?download=1", "AGPL-3.0",
              "MegaDetector v6 compact (YOLOv9-c); default: ~1 s/frame at 640 px on 2 CPU threads",
              arch="yolov9c.yaml", options={"version": "MDV6-yolov9-c"}),
    ModelSpec("MDV6-yolov9-e", "detector", "ultralytics", "MDV6-yolov9-e-1280.pt",
              f"{_ZENODO}/15398270/files/MDV6-yolov9-e-1280.pt?download=1", "AGPL-3.0",
              "MegaDetector v6 extra-large (YOLOv9-e, 1280 px); for GPU nodes",
              arch="yolov9e.yaml", options={"version": "MDV6-yolov9-e"}),
    ModelSpec("MDV6-yolov10-c", "detector", "ultralytics", "MDV6-yolov10-c.pt",
              f"{_ZENODO}/15398270/files/MDV6-yolov10-c.pt?download=1", "AGPL-3.0",
              "MegaDetector v6 compact (YOLOv10-c)",
              options={"version": "MDV6-yolov10-c"}),
    ModelSpec("MDV6-yolov10-e", "detector", "ultralytics", "MDV6-yolov10-e-1280.pt",
              f"{_ZENODO}/15398270/files/MDV6-yolov10-e-1280.pt?download=1", "AGPL-3.0",
              "MegaDetector v6 extra-large (YOLOv10-e, 1280 px); for GPU nodes",
              options={"version": "MDV6-yolov10-e"}),
    ModelSpec("AI4GAmazonRainforest", "classifier", "resnet", "AI4GAmazonDeforestationv2",
              f"{_ZENODO}/14252214/files/AI4GAmazonDeforestationv2?download=1", "MIT",
              "Amazon rainforest species classifier v2 (ResNet-50, 36 classes)",
              arch="resnet50", options={"module": "AI4GAmazonRainforest", "num_layers": 50, "num_cls": 36}),
    ModelSpec("AI4GSnapshotSerengeti", "classifier", "resnet", "AI4GSnapshotSerengeti.ckpt",
              f"{_ZENODO}/10456813/files/AI4GSnapshotSerengeti.ckpt?download=1", "MIT",
              "Snapshot Serengeti species classifier (ResNet-18, 10 classes)",
              arch="resnet18", options={"module": "AI4GSnapshotSerengeti", "num_layers": 18, "num_cls": 10}),
    ModelSpec("superanimal_quadruped", "pose", "superanimal", "superanimal_quadruped_hrnet_w32.pt",
              "superanimal_quadruped_hrnet_w32", "LGPL-3.0 (DeepLabCut); weights: see model card",
              "DeepLabCut SuperAnimal-Quadruped HRNet-w32, 39 keypoints; camera traps (side view)",
              arch="hrnet_w32", options={"super_animal": "superanimal_quadruped", "model_name": "hrnet_w32"}),
    ModelSpec("superanimal_topviewmouse", "pose", "superanimal", "superanimal_topviewmouse_hrnet_w32.pt",
              "superanimal_topviewmouse_hrnet_w32", "LGPL-3.0 (DeepLabCut); weights: see model card",
              "DeepLabCut SuperAnimal-TopViewMouse HRNet-w32, 27 keypoints; lab videos (top view)",
              arch="hrnet_w32", options={"super_animal": "superanimal_topviewmouse", "model_name": "hrnet_w32"}),
)}

# The detector variant MDV6-rtdetr-c is left out: PytorchWildlife 1.3.0 returns wrong boxes for it.


def spec(name: str, kind: str | None = None) -> ModelSpec:
    try:
        s = CATALOGUE[name]
    except KeyError:
        names = ", ".join(n for n, s in CATALOGUE.items() if kind in (None, s.kind))
        raise ModelError(f"unknown {kind or 'model'} {name!r}; choose one of: {names}") from None
    if kind is not None and s.kind != kind:
        raise ModelError(f"{name} is a {s.kind}, not a {kind}")
    return s


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".untrained.json")


@dataclass(frozen=True)
class Weights:
    spec: ModelSpec
    path: Path
    sha256: str
    untrained: bool

    def describe(self) -> dict:
        return {"name": self.spec.name, "file": self.path.name, "sha256": self.sha256,
                "untrained": self.untrained, "licence": self.spec.licence}


def weights_path(models_dir: Path, s: ModelSpec) -> Path:
    return Path(models_dir) / s.filename


def require(models_dir: Path, s: ModelSpec, *, allow_untrained: bool) -> Weights:
    """The weights of ``s``, checked; a clear error if missing or unfit."""
    path = weights_path(models_dir, s)
    if not path.is_file():
        raise MissingWeightsError(
            f"weights for {s.name} not found: {path.name} is not in {Path(models_dir).resolve()}. "
            f"Run `wildswarm models fetch {s.name}` where the internet is reachable, or copy the file "
            f"{path.name} (from {s.source}) into that folder"
            + ("; for tests only, `wildswarm models untrained` writes random weights." if s.arch else "."))
    digest = sha256_of(path)
    untrained = is_untrained(path, digest)
    if untrained and not allow_untrained:
        raise ModelError(f"{path} holds untrained (random) weights; replace it with the real file, "
                         f"or set WILDSWARM_UNTRAINED=1 to run with it knowingly")
    if not untrained and s.sha256 and digest != s.sha256:
        raise ModelError(f"{path} does not match the published checksum of {s.name} "
                         f"(sha256 {digest[:12]}..., expected {s.sha256[:12]}...); fetch it again")
    return Weights(s, path, digest, untrained)


def is_untrained(path: Path, digest: str | None = None) -> bool:
    side = _sidecar(path)
    if not side.is_file():
        return False
    try:
        recorded = json.loads(side.read_text()).get("sha256")
    except ValueError:
        return False
    return recorded == (digest or sha256_of(path))


def fetch(models_dir: Path, s: ModelSpec) -> Path:
    """Download the real weights of ``s`` with the library's own downloader, atomically."""
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    dest = weights_path(models_dir, s)
    with tempfile.TemporaryDirectory(dir=models_dir, prefix=".fetch-") as tmpdir:
        tmp = Path(tmpdir) / s.filename
        try:
            if s.family == "superanimal":
                from dlclibrary import download_huggingface_model
                download_huggingface_model(s.source, target_dir=tmpdir, rename_mapping=s.filename)
            else:
                import torch.hub
                torch.hub.download_url_to_file(s.source, str(tmp), progress=True)
        except Exception as exc:  # network errors come in many library-specific types
            raise ModelError(f"could not download {s.name} from {s.source}: {exc}. Copy {s.filename} "
                             f"into {models_dir.resolve()} by hand instead") from None
        if not tmp.is_file():
            raise ModelError(f"download of {s.name} produced no {s.filename}")
        if s.sha256 and sha256_of(tmp) != s.sha256:
            raise ModelError(f"downloaded {s.name} does not match its published checksum; nothing written")
        os.replace(tmp, dest)
    _sidecar(dest).unlink(missing_ok=True)
    return dest


def build_untrained(models_dir: Path, s: ModelSpec, seed: int = 0) -> Path:
    """Write ``s``'s architecture with random weights in the real format (see module doc)."""
    if not s.arch:
        raise ModelError(f"{s.name}: its architecture is not published as a config, so no untrained "
                         f"stand-in can be built; use the real weights")
    import torch
    torch.manual_seed(seed)
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    dest = weights_path(models_dir, s)
    fd, tmpname = tempfile.mkstemp(dir=models_dir, prefix=f".{s.filename}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmpname)
    try:
        torch.save(_untrained_checkpoint(s), tmp)
        digest = sha256_of(tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    side = _sidecar(dest)
    side.write_text(json.dumps({"untrained": True, "model": s.name, "seed": seed, "sha256": digest}, indent=2))
    return dest


def _untrained_checkpoint(s: ModelSpec) -> dict:
    if s.family == "ultralytics":
        from ultralytics.nn.tasks import DetectionModel
        model = DetectionModel(s.arch, nc=3, verbose=False)
        model.names = {0: "animal", 1: "person", 2: "vehicle"}
        return {"model": model.half(), "train_args": {}, "epoch": -1, "untrained": True}
    if s.family == "yolov5":
        import sys
        import site
        sys.path.insert(0, os.path.join(site.getsitepackages()[0], "yolov5"))  # as PytorchWildlife does
        import yolov5
        from yolov5.models.yolo import Model
        model = Model(str(Path(yolov5.__file__).parent / "models" / "hub" / s.arch), nc=3)  # not relative to cwd
        model.names = ["animal", "person", "vehicle"]
        return {"model": model.half(), "epoch": -1, "untrained": True}
    if s.family == "resnet":
        from PytorchWildlife.models.classification.resnet_base.base_classifier import PlainResNetClassifier
        net = PlainResNetClassifier(num_cls=s.options["num_cls"], num_layers=s.options["num_layers"])
        return {"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "untrained": True}
    if s.family == "superanimal":
        from deeplabcut.pose_estimation_pytorch.models import PoseModel
        from wildswarm.pipeline.pose import superanimal_config
        model = PoseModel.build(superanimal_config(s, max_individuals=1, device="cpu")["model"])
        return {"model": model.state_dict(), "untrained": True}
    raise ModelError(f"{s.name}: no untrained builder for family {s.family}")
