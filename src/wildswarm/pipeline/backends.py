"""Inference backends: each model's network through PyTorch, ONNX Runtime or OpenVINO.

PyTorch is the reference and the GPU path. On a CPU node, a model also runs from an ONNX export of
the same weights through ONNX Runtime or OpenVINO, when that backend gives the same outputs.

The parts, one module each: ``onnx_exports`` (the exports, beside the weights, keyed by their
checksum), ``runtime`` (an export through ONNX Runtime or OpenVINO), ``equality`` (``compare``
against PyTorch's outputs, within ``TOLERANCE[precision]``) and ``torch_path`` (PyTorch's own
bf16 and folded batch norms). This module chooses among them, and names what they hold, so callers
need only ``backends``.

Choice (``choose``), per model and node: the fastest backend that passes. ``auto`` times each
candidate on the probe once per node kind (CPU model, threads, library versions, weights) and keeps
the ranking in a small JSON file; every load checks the chosen backend's equality again.

bf16 (opt-in): OpenVINO's bfloat16 on a CPU node; PyTorch's own (``Autocast``) on a GPU, or where
``torch`` is asked for, if the device has native bf16 kernels. Both pass the same check against
float32 within ``TOLERANCE["bf16"]``, or the model stays in float32.

int8 (opt-in, CPU nodes): the model's INT8 export (``quantize``: calibrated on the lab's own videos
by ``wildswarm models quantize``) through ONNX Runtime or OpenVINO, checked against PyTorch's
float32 within ``TOLERANCE["int8"]``. Without such an export, or if none passes, the model runs in
float32 on the fastest backend that does, saying why.
"""
from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from wildswarm.errors import ModelError
from wildswarm.pipeline.equality import TOLERANCE, Choice, compare, probe_frames
from wildswarm.pipeline.onnx_exports import (EXPORT_FORMAT, INT8_FORMAT, export, export_path, export_record,
                                             export_weights, exported, int8_path, library_version, publish,
                                             quantized, record_path, remove_exports)
from wildswarm.pipeline.runtime import Runtime
from wildswarm.pipeline.specs import Weights
from wildswarm.pipeline.torch_path import (Autocast, autocast_where_native, fold_batch_norms, native_bf16,
                                           release_torch, try_autocast, weights_device)

__all__ = ["BACKENDS", "CHOICES", "EXPORT_FORMAT", "INT8_FORMAT", "PRECISIONS", "TOLERANCE", "Autocast", "Choice",
           "Ranking", "Runtime", "check_choice", "choose", "compare", "compiled_folder", "export", "export_path",
           "export_record", "export_weights", "exported", "fold_batch_norms", "installed", "int8_path",
           "native_bf16", "node_kind", "probe_frames", "publish", "quantized", "record_path", "release_torch",
           "remove_exports", "try_autocast", "weights_device"]

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "openvino")
CHOICES = ("auto",) + BACKENDS
PRECISIONS = ("fp32", "bf16", "int8")


def check_choice(backend: str, precision: str) -> None:
    if backend not in CHOICES:
        raise ModelError(f"unknown backend {backend!r}; choose one of: {', '.join(CHOICES)}")
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if precision == "bf16" and backend == "onnxruntime":
        raise ModelError("precision bf16 runs on OpenVINO or PyTorch (backend auto, openvino or torch), "
                         "not onnxruntime")
    if precision == "int8" and backend == "torch":
        raise ModelError("precision int8 runs on ONNX Runtime or OpenVINO (backend auto, onnxruntime or "
                         "openvino), not torch")


def installed() -> list[str]:
    """The backends this node can run (their library imports)."""
    found = ["torch"]
    for name in BACKENDS[1:]:
        try:
            __import__(name)
        except ImportError:
            continue
        found.append(name)
    return found


# The CPU features the runtimes pick their kernels by: two nodes that differ in these run different
# code at different speeds, even where they report the same model name (virtual machines often say
# only "AMD EPYC", with or without AVX-512).
ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
             "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2", "bf16", "i8mm")


def node_kind(threads: int, cpuinfo: str | None = None) -> str:
    """What makes timings (and compiled networks) on one node hold on another: the CPU's model and
    vector features, threads and library versions. ``cpuinfo``: /proc/cpuinfo's text (read here)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():       # the first processor's lines: every core says the same
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    cpu = fields.get("model name") or platform.processor() or platform.machine()
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    isa = ",".join(f for f in ISA_FLAGS if f in flags)
    versions = ",".join(f"{d}={library_version(d)}" for d in ("torch", "onnxruntime", "openvino"))
    return f"{cpu}|isa={isa}|threads={threads}|{versions}"


def compiled_folder(root: Path, threads: int) -> Path:
    """Where OpenVINO keeps the networks it compiled on this kind of node: one folder per node kind,
    since a compiled network is laid out for the CPU features and threads it was compiled for, and
    workers of several kinds of node may share the cache folder on the shared filesystem."""
    return Path(root) / hashlib.sha256(node_kind(threads).encode()).hexdigest()[:16]


def _best_of(fn, repeat: int) -> float:
    fn()  # warm-up: first calls allocate and pick kernels
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


class Ranking:
    """Measured probe times per (node kind, weights, precision), kept in one JSON file."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path else None

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text()) if self.path else {}
        except (OSError, ValueError):
            return {}

    def get(self, key: str) -> dict[str, float] | None:
        return self._read().get(key)

    def put(self, key: str, seconds: dict[str, float]) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            data = self._read()
            data[key] = seconds
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".backends-")
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError as exc:  # a read-only or full disk costs a measurement next time, nothing more
            log.warning("could not keep the backend timings in %s: %s", self.path, exc)


def choose(model, weights: Weights, *, wanted: str = "auto", precision: str = "fp32", device: str = "cpu",
           threads: int | None = None, frames: list[np.ndarray] | None = None, ranking: Ranking | None = None,
           export_folder: Path | None = None, compiled_cache: Path | None = None) -> tuple[Choice, Runtime | None]:
    """The backend ``model`` (a family adapter's model, loaded from ``weights``) runs on, and its
    runtime (None: PyTorch). ``model`` is switched to it. ``compiled_cache``: a folder for OpenVINO's
    compiled networks, kept per node kind (``compiled_folder``). A reduced precision that no runtime
    passes on a CPU node falls back to the float32 choice (``_choose_reduced``)."""
    import torch
    check_choice(wanted, precision)
    where = dict(wanted=wanted, device=device, threads=threads or torch.get_num_threads(), frames=frames,
                 ranking=ranking, export_folder=export_folder, compiled_cache=compiled_cache)
    if precision == "int8" or (precision == "bf16" and wanted != "torch" and device.startswith("cpu")):
        return _choose_reduced(model, weights, precision=precision, **where)
    return _choose_at(model, weights, precision=precision, **where)


def _choose_at(model, weights: Weights, *, precision: str, wanted: str, device: str, threads: int, frames, ranking,
               export_folder: Path | None, compiled_cache: Path | None,
               int8: Path | None = None) -> tuple[Choice, Runtime | None]:
    """``choose`` in ``precision``, without falling back: the fastest backend within its tolerance,
    else PyTorch. ``int8``: the INT8 export to run (``_choose_reduced`` finds it)."""
    import torch
    name = weights.spec.name
    tolerance = TOLERANCE[precision]
    choice = Choice(name, "torch", "fp32", tolerance)
    if wanted == "torch" or not device.startswith("cpu"):
        if wanted not in ("torch", "auto"):
            choice.refused[wanted] = f"the {device} device runs PyTorch"
        model.use(None)
        fold_batch_norms(model, choice, frames or probe_frames())
        if precision == "bf16":
            autocast_where_native(model, choice, frames or probe_frames())
        return choice, None
    have = installed()
    candidates = [b for b in BACKENDS[1:] if wanted in ("auto", b)]
    if precision == "bf16":
        for b in [c for c in candidates if c != "openvino"]:
            candidates.remove(b)
    onnx = None
    for b in [c for c in candidates if c not in have]:
        choice.refused[b] = f"{b} is not installed"
        candidates.remove(b)
    if candidates and int8 is not None:
        onnx = int8
    elif candidates:
        onnx = exported(weights) or (exported(weights, export_folder) if export_folder else None)
        if onnx is None and export_folder is not None:
            # Beside the weights where this process may write there; a worker, which mounts them
            # read-only, exports into its cache folder instead (once: the next load finds it).
            folder = weights.path.parent if os.access(weights.path.parent, os.W_OK) else export_folder
            try:
                onnx = export(model, weights, folder)
            except (ModelError, OSError) as exc:
                log.warning("%s: %s", name, exc)
        if onnx is None:
            why = (f"no ONNX export of {weights.path.name} (sha256 {weights.sha256[:16]}) beside it; "
                   f"run `wildswarm models export {name}`")
            choice.refused.update({b: why for b in candidates})
            candidates = []
    x = model.probe(frames or probe_frames())
    with torch.inference_mode():
        reference = model.raw(x)
    if not candidates:
        model.use(None)
        if precision == "fp32":           # a reduced precision falls back to the float32 choice
            fold_batch_norms(model, choice, frames or probe_frames())
        return choice, None
    ranking = ranking or Ranking(None)
    key = f"{node_kind(threads)}|{weights.sha256[:16]}|{precision}|{x.shape}"
    known = ranking.get(key) if wanted == "auto" else None
    if known is not None and set(candidates) <= set(known):
        # Measured on this node kind before: try the backends fastest first, and stop at the first
        # that passes (one runtime built, not all of them).
        candidates = sorted(candidates, key=lambda b: known[b])
        candidates = [b for b in candidates if known[b] < known.get("torch", float("inf"))]
        choice.measured, choice.seconds = str(ranking.path), known
    timing = wanted == "auto" and known is None
    seconds = {"torch": round(_best_of(lambda: model.raw(x), 2), 4)} if timing else {}
    best: tuple[str, Runtime | None, dict[str, float]] = ("torch", None, {})
    for b in candidates:
        try:
            runtime = Runtime(onnx, b, threads=threads, precision=precision,
                              compiled_cache=compiled_folder(compiled_cache, threads) if compiled_cache else None)
            diffs = compare(reference, model.raw(x, runtime))
        except Exception as exc:  # a runtime that cannot load or run the graph
            choice.refused[b] = f"{type(exc).__name__}: {exc}"
            continue
        worst = max(diffs.values(), default=0.0)
        if worst > tolerance:
            choice.refused[b] = f"outputs differ from PyTorch's by {worst:.3g} (tolerance {tolerance:g})"
            log.warning("%s: refusing %s: %s", name, b, choice.refused[b])
            continue
        if not timing:
            best = (b, runtime, diffs)    # as asked, or the fastest known: done
            break
        with torch.inference_mode():
            seconds[b] = round(_best_of(lambda r=runtime: model.raw(x, r), 2), 4)
        if seconds[b] < seconds[best[0]]:
            best = (b, runtime, diffs)    # only the fastest so far stays alive
        del runtime
        gc.collect()                      # a runtime refers to itself (its _run): free it now
    if timing:
        ranking.put(key, seconds)
        choice.seconds = seconds
    best, runtime, diffs = best
    choice.backend, choice.difference = best, diffs
    choice.precision = precision if best != "torch" else "fp32"
    model.use(runtime)
    if runtime is None and precision == "fp32":
        fold_batch_norms(model, choice, frames or probe_frames())
    return choice, runtime


def _choose_reduced(model, weights: Weights, *, precision: str, **where) -> tuple[Choice, Runtime | None]:
    """``choose`` in a reduced precision on a CPU node (bf16 on OpenVINO, int8 on either runtime): the
    fastest backend that runs the model in it within its tolerance; else the float32 choice (the fastest
    float32 backend, not PyTorch by default), with the reason under ``refused[precision]``. ``where``:
    ``_choose_at``'s other arguments."""
    device, export_folder = where["device"], where["export_folder"]
    why, int8 = None, None
    if precision == "int8":
        if not device.startswith("cpu"):
            why = f"INT8 runs on CPU nodes; the {device} device runs PyTorch"
        else:
            int8 = quantized(weights) or (quantized(weights, export_folder) if export_folder else None)
            if int8 is None:
                why = (f"no INT8 export of {weights.path.name} (sha256 {weights.sha256[:16]}); "
                       f"`wildswarm models quantize --videos ...` makes one from your own videos")
    if why is None:
        choice, runtime = _choose_at(model, weights, precision=precision, int8=int8, **where)
        if runtime is not None:
            return choice, runtime
        why = "; ".join(f"{b}: {r}" for b, r in choice.refused.items()) or f"no {precision} backend passed"
    log.warning("%s: not in %s (%s); it runs in float32", weights.spec.name, precision, why)
    choice, runtime = _choose_at(model, weights, precision="fp32", **where)
    choice.refused[precision] = why
    return choice, runtime
