"""One adapter per model family: the only code that knows how a family's library builds, downloads,
loads, exports and runs it.

An adapter is the module here named after ``ModelSpec.family`` (``ultralytics``, ``yolov5``,
``resnet``, ``superanimal``). Each provides:

``KIND``
    ``detector``, ``classifier`` or ``pose``.
``untrained_checkpoint(spec) -> dict``
    The architecture with random weights, as the library itself saves it (``models.build_untrained``).
``download(spec, folder) -> str`` (optional)
    The real file into ``folder`` with the library's own downloader; returns where it came from.
    Without one, ``models.fetch`` downloads ``spec.source``.
``load(weights, *, device, **options) -> model``
    The network through the library's own loader. The model runs its family's inference
    (``detect``/``classify``/``estimate``) and, for the inference backends (``backends``):
    ``probe(frames)``: the network's own input for those frames, preprocessed as ``run`` does;
    ``raw(x, runtime=None)``: the network's outputs before any post-processing (before
    non-maximum suppression; heatmaps), from PyTorch or from an exported ``runtime``;
    ``export_onnx(dest)``: the network as an ONNX file, through the library's own exporter where it
    has one; ``use(runtime)``: run on that runtime from now on (``None``: PyTorch again);
    ``networks()``: its PyTorch modules (``backends.release_torch`` frees their weights).
    A classifier's model also gives ``calibration(frames, detections, max_animals)``: its input
    for the animal boxes of ``detections``, for INT8 calibration (``quantize``); the detector's and
    the pose model's come from their ``probe`` and DeepLabCut's own crops (``PoseEstimator``).

So a new family, or a new backend for every family, is one module.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from wildswarm.errors import ModelError

FAMILIES = ("ultralytics", "yolov5", "resnet", "superanimal")


def adapter(family: str) -> ModuleType:
    if family not in FAMILIES:
        raise ModelError(f"no adapter for model family {family!r} (known: {', '.join(FAMILIES)})")
    return importlib.import_module(f"{__name__}.{family}")
