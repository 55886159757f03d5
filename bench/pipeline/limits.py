"""The physical limit: each model's FLOPs per frame against the node's peak FLOP/s.

Peak = cores x clock x fp32 lanes of the widest vector FMA x 2 FMA units x 2 (a fused multiply-add
is two operations). The clock is the one /proc/cpuinfo reports (a virtual machine shows its nominal
clock, not a boost one), the two FMA pipes are an assumption stated in the output (AMD Zen 4/5 and
Intel's server cores since Skylake-SP have two). FLOPs are counted by PyTorch's own FlopCounterMode
on the networks at the pipeline's input shapes (multiply-adds count as two).
"""
from __future__ import annotations

from pathlib import Path


def cpu_peak(threads: int) -> dict:
    flags, mhz, model = set(), 0.0, "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "flags" and not flags:
                flags = set(value.split())
            elif key == "cpu MHz" and not mhz:
                mhz = float(value)
            elif key == "model name" and model == "unknown CPU":
                model = value.strip()
    except (OSError, ValueError):
        pass
    lanes, isa = (16, "AVX-512") if "avx512f" in flags else (8, "AVX2") if "avx2" in flags else (4, "SSE")
    fma_units = 2
    peak = threads * mhz * 1e6 * lanes * fma_units * 2
    return {"cpu": model, "cores": threads, "ghz": round(mhz / 1000, 3), "isa": isa, "fp32_lanes": lanes,
            "fma_units": fma_units, "peak_gflops": round(peak / 1e9, 1),
            "bf16": "avx512_bf16" in flags or "amx_bf16" in flags, "vnni": "avx512_vnni" in flags or "avx_vnni" in flags}


def flops(module, x) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        module(torch.as_tensor(x))
    return float(counter.get_total_flops())


def model_flops(pipeline, frame) -> dict[str, float]:
    """FLOPs of one frame through the detector, and of one box through the classifier and pose model."""
    out = {}
    det = pipeline.detector.model
    out["detector per frame"] = flops(det.predictor.model, det.probe([frame]))
    if pipeline.classifier is not None:
        c = pipeline.classifier.model
        out["classifier per box"] = flops(c.model, c.probe([frame]))
    p = pipeline.pose.model
    out["pose per box"] = flops(p.net.torch, p.probe([frame]))
    return out
