"""Whether a backend gives PyTorch's outputs, and the record of which backend runs a model.

Exports sit beside the weights, keyed by their checksum: ``<weights file>.<sha256[:16]>.onnx``, with
``<that>.json`` naming the weights' full SHA-256, the ONNX file's own and the exporter. They are made
when weights are fetched, trusted or built (``wildswarm models export`` makes the missing ones), so
a worker, which mounts the models read-only, finds them ready; an export whose weights or bytes do
not match its record is never used.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

# Largest |backend - torch| over the output's largest |torch|, per output. fp32 backends reorder
# sums and fuse layers (seen: 1e-7 to 1e-5); bf16 keeps 8 bits of mantissa (seen: about 1e-2); int8
# rounds every convolution's input to one of 256 steps of its calibrated range (seen, untrained weights:
# 5e-6 detector, 5e-2 pose model; 0.15 classifier, which stays in float32).
TOLERANCE = {"fp32": 1e-3, "bf16": 5e-2, "int8": 1e-1}


def compare(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict[str, float]:
    """Per output: max |other - reference| / max |reference| (shapes must agree; NaN anywhere: inf)."""
    diffs = {}
    for name, ref in reference.items():
        got = other.get(name)
        if got is None or got.shape != ref.shape:
            diffs[name] = float("inf")
            continue
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        diff = float(np.abs(got.astype(np.float64) - ref).max()) if ref.size else 0.0
        rel = diff / scale if scale > 0 else diff
        diffs[name] = float("inf") if np.isnan(rel) else rel   # NaN exceeds no tolerance: never equal
    return diffs


@dataclass
class Choice:
    """Which backend runs a model, and why."""

    model: str
    backend: str
    precision: str = "fp32"
    tolerance: float = TOLERANCE["fp32"]
    difference: dict[str, float] = field(default_factory=dict)   # the chosen backend's, per output
    seconds: dict[str, float] = field(default_factory=dict)      # probe forward time of each candidate
    refused: dict[str, str] = field(default_factory=dict)        # backend -> why not
    folded: int = 0                                               # batch norms folded (PyTorch)
    measured: str = "now"                                         # "now", or the ranking's cache file

    def describe(self) -> dict:
        d = asdict(self)
        d["difference"] = {k: float(f"{v:.3g}") for k, v in self.difference.items()}
        d["max_difference"] = max(self.difference.values(), default=0.0)
        return d


def probe_frames(n: int = 2, width: int = 640, height: int = 360) -> list[np.ndarray]:
    """Deterministic RGB frames for a node's equality check and timing at load: smooth shapes over
    noise, so every layer sees a spread of values."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    frames = []
    for k in range(n):
        base = np.stack([(xx * (k + 1)) % 256, (yy * 2 + 40 * k) % 256, ((xx + yy) // 3) % 256], axis=-1)
        frames.append(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))
    return frames
