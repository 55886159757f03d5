"""Inference backends: each model's network through PyTorch, ONNX Runtime or OpenVINO.

PyTorch is the reference and the GPU path. On a CPU node, a model also runs from an ONNX export of
the same weights through ONNX Runtime or OpenVINO, when that backend gives the same outputs.

Exports sit beside the weights, keyed by their checksum: ``<weights file>.<sha256[:16]>.onnx``, with
``<that>.json`` naming the weights' full SHA-256, the ONNX file's own and the exporter. They are made
when weights are fetched, trusted or built (``wildswarm models export`` makes the missing ones), so
a worker, which mounts the models read-only, finds them ready; an export whose weights or bytes do
not match its record is never used.

Equality (``compare``): the network's outputs before any post-processing (the detector's boxes and
scores of every anchor before non-maximum suppression, the classifier's probabilities, the pose
model's heatmaps for given boxes), from PyTorch and from the backend on the same input. The
difference is the largest absolute difference of each output over that output's largest absolute
value; a backend is refused when any exceeds ``TOLERANCE[precision]``.

Choice (``choose``), per model and node: the fastest backend that passes. ``auto`` times each
candidate on the probe once per node kind (CPU model, threads, library versions, weights) and keeps
the ranking in a small JSON file; every load checks the chosen backend's equality again.
"""
from __future__ import annotations

import gc
import json
import logging
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from wildswarm.errors import ModelError
from wildswarm.pipeline.models import sha256_of
from wildswarm.pipeline.specs import Weights

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "openvino")
CHOICES = ("auto",) + BACKENDS
PRECISIONS = ("fp32", "bf16")
# Largest |backend - torch| over the output's largest |torch|, per output. fp32 backends reorder
# sums and fuse layers (seen: 1e-7 to 1e-5); bf16 keeps 8 bits of mantissa (seen: about 1e-2).
TOLERANCE = {"fp32": 1e-3, "bf16": 5e-2}
EXPORT_FORMAT = 1


def check_choice(backend: str, precision: str) -> None:
    if backend not in CHOICES:
        raise ModelError(f"unknown backend {backend!r}; choose one of: {', '.join(CHOICES)}")
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if precision == "bf16" and backend in ("torch", "onnxruntime"):
        raise ModelError(f"precision bf16 runs on OpenVINO only (backend auto or openvino), not {backend}")


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


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "none"


# --- exports ----------------------------------------------------------------------------------------
def export_path(weights: Weights) -> Path:
    return weights.path.with_name(f"{weights.path.name}.{weights.sha256[:16]}.onnx")


def _record_path(onnx: Path) -> Path:
    return onnx.with_name(onnx.name + ".json")


def exported(weights: Weights, folder: Path | None = None) -> Path | None:
    """The ONNX export of ``weights`` in ``folder`` (beside the weights by default), if its record
    names these weights and its bytes are the ones recorded."""
    onnx = export_path(weights) if folder is None else Path(folder) / export_path(weights).name
    try:
        record = json.loads(_record_path(onnx).read_text())
    except (OSError, ValueError):
        return None
    if record.get("weights_sha256") != weights.sha256 or record.get("format") != EXPORT_FORMAT:
        return None
    if not onnx.is_file() or sha256_of(onnx) != record.get("onnx_sha256"):
        log.warning("ignoring %s: its bytes are not the ones recorded in %s", onnx, _record_path(onnx).name)
        return None
    return onnx


def export(model, weights: Weights, folder: Path | None = None) -> Path:
    """Export ``model`` (loaded from ``weights``) to ONNX in ``folder`` (beside the weights by
    default), atomically, with its record; an export already there for these weights is kept."""
    folder = weights.path.parent if folder is None else Path(folder)
    if (done := exported(weights, folder)) is not None:
        return done
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / export_path(weights).name
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=folder, prefix=".export-") as tmp:
        out = Path(tmp) / dest.name
        try:
            model.export_onnx(out)
        except ModelError:
            raise
        except Exception as exc:  # an exporter failing on a graph
            raise ModelError(f"could not export {weights.spec.name} to ONNX: {type(exc).__name__}: {exc}") from exc
        record = {"format": EXPORT_FORMAT, "model": weights.spec.name, "weights": weights.path.name,
                  "weights_sha256": weights.sha256, "onnx_sha256": sha256_of(out), "untrained": weights.untrained,
                  "exporter": f"{weights.spec.family} adapter", "torch": _version("torch"), "onnx": _version("onnx"),
                  "seconds": round(time.perf_counter() - started, 2), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                            time.gmtime())}
        os.chmod(out, 0o644)
        rec = Path(tmp) / (dest.name + ".json")
        rec.write_text(json.dumps(record, indent=2) + "\n")
        os.chmod(rec, 0o644)
        os.replace(out, dest)             # the ONNX file first: a record never names a missing file
        os.replace(rec, _record_path(dest))
    return dest


def export_weights(weights: Weights) -> Path:
    """Load ``weights`` on the CPU through their family's adapter and export them beside themselves."""
    if (done := exported(weights)) is not None:
        return done
    from wildswarm.pipeline import families
    options = dict(weights.spec.options)
    try:
        model = families.adapter(weights.spec.family).load(
            weights, device="cpu", image_size=options.get("image_size", 640), threshold=0.2, max_animals=1,
            batch_size=1)
    except ModelError:
        raise
    except Exception as exc:  # a library failing to load the file it was given
        raise ModelError(f"could not load {weights.spec.name} to export it: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    return export(model, weights)


def remove_exports(weights_file: Path) -> None:
    """Every export of an older version of ``weights_file`` (other checksums)."""
    for old in weights_file.parent.glob(f"{weights_file.name}.*.onnx*"):
        old.unlink(missing_ok=True)


def release_torch(model) -> int:
    """Free the PyTorch weights of ``model``, which now runs on an exported runtime: the worker
    keeps one copy of each network, not two. Its PyTorch path cannot run after this (a call fails
    on empty tensors, loudly). Returns the bytes freed."""
    import torch
    freed = 0
    with torch.no_grad():
        for net in model.networks():
            for t in list(net.parameters()) + list(net.buffers()):
                freed += t.numel() * t.element_size()
                t.data = torch.empty(0, dtype=t.dtype, device=t.device)
    return freed


# --- runtimes ---------------------------------------------------------------------------------------
class Runtime:
    """An ONNX file through ONNX Runtime or OpenVINO on the CPU: ``runtime(x) -> [outputs]``."""

    def __init__(self, path: Path, backend: str, *, threads: int, precision: str = "fp32"):
        self.path, self.backend, self.precision, self.threads = Path(path), backend, precision, threads
        self.nbytes = self.path.stat().st_size   # the weights it holds, about (the pipeline cache counts them)
        if backend == "onnxruntime":
            import onnxruntime as ort
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self._session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            self._input = self._session.get_inputs()[0].name
            self._run = lambda x: self._session.run(None, {self._input: x})
        elif backend == "openvino":
            import openvino as ov
            core = ov.Core()
            # Precision is set, never left to the plugin, which picks bf16 by itself on some CPUs.
            compiled = core.compile_model(core.read_model(str(path)), "CPU", {
                "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"})
            self._request = compiled.create_infer_request()
            self._outputs = compiled.outputs
            self._run = lambda x: [np.array(self._request.infer({0: x})[o]) for o in self._outputs]
        else:
            raise ModelError(f"not an ONNX backend: {backend}")

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return self._run(np.ascontiguousarray(x, dtype=np.float32))

    def __repr__(self) -> str:
        return f"Runtime({self.path.name}, {self.backend}, {self.precision})"


# --- equality and choice ----------------------------------------------------------------------------
def compare(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict[str, float]:
    """Per output: max |other - reference| / max |reference| (shapes must agree)."""
    diffs = {}
    for name, ref in reference.items():
        got = other.get(name)
        if got is None or got.shape != ref.shape:
            diffs[name] = float("inf")
            continue
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        diff = float(np.abs(got.astype(np.float64) - ref).max()) if ref.size else 0.0
        diffs[name] = diff / scale if scale > 0 else diff
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


def node_kind(threads: int) -> str:
    """What makes timings on one node hold on another: CPU, threads and library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = ",".join(f"{d}={_version(d)}" for d in ("torch", "onnxruntime", "openvino"))
    return f"{cpu}|threads={threads}|{versions}"


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
           export_folder: Path | None = None) -> tuple[Choice, Runtime | None]:
    """The backend ``model`` (a family adapter's model, loaded from ``weights``) runs on, and its
    runtime (None: PyTorch). ``model`` is switched to it."""
    import torch
    check_choice(wanted, precision)
    name = weights.spec.name
    threads = threads or torch.get_num_threads()
    tolerance = TOLERANCE[precision]
    choice = Choice(name, "torch", "fp32", tolerance)
    if wanted == "torch" or not device.startswith("cpu"):
        if wanted not in ("torch", "auto"):
            choice.refused[wanted] = f"the {device} device runs PyTorch"
        model.use(None)
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
    if candidates:
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
            runtime = Runtime(onnx, b, threads=threads, precision=precision)
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
    return choice, runtime
