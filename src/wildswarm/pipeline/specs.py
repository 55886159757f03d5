"""The model catalogue: what each model is, which family of code runs it, where its weights come from.

Data only: ``models`` checks and records the weight files, ``families`` holds the code that builds,
loads, exports and runs each family, and both import this, never each other's callers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from wildswarm.errors import ModelError

_ZENODO = "https://zenodo.org/records"


@dataclass(frozen=True)
class Checksum:
    """A checksum that upstream publishes for a weight file, and where it does."""

    algorithm: str  # sha256 | md5
    digest: str
    source: str

    def describe(self) -> str:
        return f"published {self.algorithm} {self.digest} ({self.source})"


# The only checksums upstream publishes for any file here (PytorchWildlife 1.3.0 and dlclibrary 0.0.12
# carry none): MegaDetector's own package lists the MD5 of its v5.0 release files md_v5a.0.0.pt and
# md_v5b.0.0.pt. PytorchWildlife fetches v5a.0.0 and v5b.0.0 from Zenodo (v5b renamed); that those
# are the same bytes is assumed, not checked (no network here): if not, fetch refuses them naming
# this pin. MD5 is broken for collisions, but matching a digest fixed in advance needs a second
# preimage, still out of reach; the lock records the SHA-256 besides.
_MD_TABLE = ("megadetector 10.0.28 on PyPI (MegaDetector's own package), "
             "megadetector/detection/run_detector.py, known_models['{}']['md5']")


@dataclass(frozen=True)
class ModelSpec:
    name: str                # catalogue name, used in settings and on the command line
    kind: str                # detector | classifier | pose
    family: str              # ultralytics | yolov5 | resnet | superanimal
    filename: str            # file name in the models folder (the library's own)
    source: str              # download URL, or Hugging Face model name for DeepLabCut
    licence: str
    description: str
    published: Checksum | None = None  # the checksum upstream publishes for this file, where it does
    arch: str | None = None    # architecture for untrained builds (None: not buildable)
    options: dict = field(default_factory=dict, hash=False, compare=False)


CATALOGUE: dict[str, ModelSpec] = {s.name: s for s in (
    ModelSpec("MDV5a", "detector", "yolov5", "md_v5a.0.0.pt",
              f"{_ZENODO}/13357337/files/md_v5a.0.0.pt?download=1", "AGPL-3.0",
              "MegaDetector v5a (YOLOv5x6, 1280 px); accurate, slow on CPU (~5 s/frame)",
              published=Checksum("md5", "ec1d7603ec8cf642d6e0cd008ba2be8c", _MD_TABLE.format("v5a.0.0")),
              arch="yolov5x6.yaml", options={"version": "a", "image_size": 1280}),
    ModelSpec("MDV5b", "detector", "yolov5", "MegaDetector_v5b.0.0.pt",
              f"{_ZENODO}/10023414/files/MegaDetector_v5b.0.0.pt?download=1", "AGPL-3.0",
              "MegaDetector v5b (YOLOv5x6, 1280 px)",
              published=Checksum("md5", "bc235e73f53c5c95e66ea0d1b2cbf542", _MD_TABLE.format("v5b.0.0")),
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


@dataclass(frozen=True)
class Weights:
    spec: ModelSpec
    path: Path
    sha256: str
    untrained: bool
    basis: str  # why the file is trusted

    def describe(self) -> dict:
        return {"name": self.spec.name, "file": self.path.name, "sha256": self.sha256,
                "untrained": self.untrained, "verified": self.basis, "licence": self.spec.licence}
