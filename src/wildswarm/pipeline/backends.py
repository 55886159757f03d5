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

bf16 (opt-in): OpenVINO's bfloat16 on a CPU node; PyTorch's own (``Autocast``) on a GPU, or where
``torch`` is asked for, if the device has native bf16 kernels. Both pass the same check against
float32 within ``TOLERANCE["bf16"]``, or the model stays in float32.

int8 (opt-in, CPU nodes): the model's INT8 export (``quantize``: calibrated on the lab's own videos
by ``wildswarm models quantize``) through ONNX Runtime or OpenVINO, checked against PyTorch's
float32 within ``TOLERANCE["int8"]``. Without such an export, or if none passes, the model runs in
float32 on the fastest backend that does, saying why.
"""
from __future__ import annotations

import contextlib
import gc
import hashlib
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
PRECISIONS = ("fp32", "bf16", "int8")
# Largest |backend - torch| over the output's largest |torch|, per output. fp32 backends reorder
# sums and fuse layers (seen: 1e-7 to 1e-5); bf16 keeps 8 bits of mantissa (seen: about 1e-2); int8
# rounds every convolution's input to one of 256 steps of its calibrated range (seen, untrained weights:
# 5e-6 detector, 5e-2 pose model; 0.15 classifier, which stays in float32).
TOLERANCE = {"fp32": 1e-3, "bf16": 5e-2, "int8": 1e-1}
EXPORT_FORMAT = 1
INT8_FORMAT = 2                # 2: weights in 7 bits (quantize.py: no saturation without VNNI)


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


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "none"


# --- exports ----------------------------------------------------------------------------------------
def export_path(weights: Weights) -> Path:
    return weights.path.with_name(f"{weights.path.name}.{weights.sha256[:16]}.onnx")


def record_path(onnx: Path) -> Path:
    return onnx.with_name(onnx.name + ".json")


def exported(weights: Weights, folder: Path | None = None) -> Path | None:
    """The ONNX export of ``weights`` in ``folder`` (beside the weights by default), if its record
    names these weights and its bytes are the ones recorded."""
    onnx = export_path(weights) if folder is None else Path(folder) / export_path(weights).name
    return _checked(onnx, weights, EXPORT_FORMAT)


def int8_path(weights: Weights, folder: Path | None = None) -> Path:
    """Where the INT8 export of ``weights`` goes (``quantize``): ``<weights>.<sha256[:16]>.int8.onnx``."""
    name = f"{weights.path.name}.{weights.sha256[:16]}.int8.onnx"
    return (weights.path.parent if folder is None else Path(folder)) / name


def quantized(weights: Weights, folder: Path | None = None) -> Path | None:
    """The INT8 export of ``weights`` in ``folder`` (beside the weights by default), if its record
    names these weights and its bytes are the ones recorded."""
    return _checked(int8_path(weights, folder), weights, INT8_FORMAT)


def export_record(onnx: Path) -> dict:
    """What was recorded beside an export when it was written (weights, exporter, calibration)."""
    return json.loads(record_path(onnx).read_text())


def _checked(onnx: Path, weights: Weights, fmt: int) -> Path | None:
    try:
        record = export_record(onnx)
    except (OSError, ValueError):
        return None
    if record.get("weights_sha256") != weights.sha256 or record.get("format") != fmt:
        return None
    if not onnx.is_file() or sha256_of(onnx) != record.get("onnx_sha256"):
        log.warning("ignoring %s: its bytes are not the ones recorded in %s", onnx, record_path(onnx).name)
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
        publish(out, record, dest)
    return dest


def publish(out: Path, record: dict, dest: Path) -> None:
    """Move the export ``out`` (written in a temporary folder beside ``dest``) to ``dest``, with its
    ``record``: readable by every node's workers, each file renamed whole into place, the ONNX file
    first, so a record never names a missing or half-written file."""
    os.chmod(out, 0o644)
    rec = out.parent / (dest.name + ".json.tmp")
    rec.write_text(json.dumps(record, indent=2) + "\n")
    os.chmod(rec, 0o644)
    os.replace(out, dest)
    os.replace(rec, record_path(dest))


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


# --- PyTorch in bf16 ---------------------------------------------------------------------------------
class Autocast:
    """PyTorch itself in bfloat16: each network's forward runs under ``torch.autocast`` on its
    device, in the channels-last layout, and hands back float32, so the libraries' post-processing
    (non-maximum suppression, heatmap decoding) sees the dtype it was written for. This is the GPU
    node's bf16 path (``bench/gpu.py`` measures the same on bare networks); on a CPU it runs where
    ``backend=torch`` is asked for. ``undo`` puts the networks back as they were."""

    def __init__(self, networks: list):
        import torch
        self.networks = list(networks)
        self.device_type = weights_device(self.networks)
        # Each 4-d weight's layout as it was, to put back exactly: a round trip through
        # ``Module.to(memory_format=...)`` leaves some of ultralytics' fused weights contiguous where
        # they were not, and float32's sums differ in the last bit.
        self._layouts = []
        for net in self.networks:
            for t in [*net.parameters(), *net.buffers()]:
                if t.dim() == 4 and not t.is_contiguous(memory_format=torch.channels_last):
                    self._layouts.append((t, t.stride()))
                    t.data = t.data.contiguous(memory_format=torch.channels_last)
            net.forward = self._wrap(net.forward)

    def _wrap(self, forward):
        import torch

        def cast_forward(*args, **kwargs):
            args = [a.contiguous(memory_format=torch.channels_last)
                    if isinstance(a, torch.Tensor) and a.dim() == 4 else a for a in args]
            with torch.autocast(self.device_type, dtype=torch.bfloat16):
                out = forward(*args, **kwargs)
            return _float32(out)
        cast_forward.autocast = self
        return cast_forward

    def undo(self) -> None:
        import torch
        for net in self.networks:
            if getattr(net.__dict__.get("forward"), "autocast", None) is self:
                del net.forward            # the class's own forward again
        for t, stride in self._layouts:
            t.data = torch.empty_strided(t.shape, stride, dtype=t.dtype, device=t.device).copy_(t.data)
        self._layouts = []


def _float32(out):
    """``out`` (a tensor, or lists, tuples and dicts of them) with its floating tensors in float32
    and the default layout."""
    import torch
    if isinstance(out, torch.Tensor):
        return out.float().contiguous() if out.is_floating_point() else out
    if isinstance(out, dict):
        return {k: _float32(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return type(out)(_float32(v) for v in out)
    return out


def weights_device(networks: list) -> str:
    """The device type the networks' weights are on (autocast for another device does nothing).
    Some wrappers hold no parameters of their own (ultralytics' AutoBackend): the first that does."""
    for net in networks:
        for p in net.parameters():
            return p.device.type
    raise ModelError("no network with weights to run")


def native_bf16(device_type: str) -> bool:
    """Whether PyTorch runs bf16 natively on this device: a GPU of compute capability 8 or more, or
    a CPU whose oneDNN has bf16 kernels. Elsewhere autocast falls back to slow reference kernels
    (measured on this project's AVX2-dispatched EPYC: 7x slower than float32)."""
    import torch
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device_type == "cpu":
        try:
            return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a private probe: gone in some build, not bf16 here
            return False
    return False


def _autocast(model, choice: Choice, frames: list[np.ndarray]) -> None:
    """Run ``model``'s PyTorch networks in bf16 where their device does so natively; otherwise, or
    where that changes their outputs too much, leave them in float32, saying why in ``choice.refused``."""
    device_type = weights_device(model.networks())
    if not native_bf16(device_type):
        choice.refused["torch bf16"] = (f"PyTorch has no native bf16 on this {device_type}"
                                        + ("; OpenVINO runs bf16 on CPU nodes" if device_type == "cpu" else ""))
        log.warning("%s: %s; it runs in float32", choice.model, choice.refused["torch bf16"])
        return
    try_autocast(model, choice, frames)


def try_autocast(model, choice: Choice, frames: list[np.ndarray]) -> None:
    """Switch ``model``'s PyTorch networks to bf16 (``Autocast``) if their raw outputs stay within
    ``TOLERANCE["bf16"]`` of float32's on the probe; otherwise leave them in float32, saying why in
    ``choice.refused``."""
    import torch
    tolerance = TOLERANCE["bf16"]
    x = model.probe(frames)
    with torch.inference_mode():
        reference = model.raw(x)
    cast = Autocast(model.networks())
    try:
        with torch.inference_mode():
            diffs = compare(reference, model.raw(x))
        worst = max(diffs.values(), default=0.0)
        why = None if worst <= tolerance else f"outputs differ from float32's by {worst:.3g} (tolerance {tolerance:g})"
    except Exception as exc:  # an op autocast cannot run on this device
        why = f"{type(exc).__name__}: {exc}"
    if why is not None:
        cast.undo()
        choice.refused["torch bf16"] = why
        log.warning("%s: refusing PyTorch in bf16: %s", choice.model, why)
        return
    choice.precision, choice.tolerance, choice.difference = "bf16", tolerance, diffs


# --- PyTorch with its batch norms folded --------------------------------------------------------------
def fold_batch_norms(model, choice: "Choice", frames: list[np.ndarray]) -> None:
    """Fold each batch norm that takes a convolution's output straight into that convolution
    (``torch.nn.utils.fusion.fuse_conv_bn_eval``), in ``model``'s PyTorch networks, if their raw
    outputs on the probe stay within ``TOLERANCE["fp32"]`` of the unfolded networks'; otherwise put
    the networks back as they were, saying why in ``choice.refused["torch fold"]``.

    In inference a batch norm is a fixed affine map per channel, which the convolution's weights
    and bias absorb: one kernel over the whole activation less per norm. SuperAnimal's HRNet-w32
    runs 305, the classifier's ResNet 20; the detectors come folded from ultralytics and YOLOv5.
    On a GPU each norm is a memory-bound kernel of its own; on this project's 2-core CPU, PyTorch's
    pose forward gains 5-10 % (``bench/fold.py``). The ONNX runtimes fold them as they compile, so this is the PyTorch
    path's: the GPU node's, and a CPU node's where PyTorch is asked for or is the fastest.

    The pairs are found on the probe: a batch norm whose input is the very tensor a convolution
    has just returned, each run once. A convolution output also read elsewhere (a residual taken
    before the norm) would change under the fold: the check refuses it."""
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval
    nets = model.networks()
    if not any(type(m) is torch.nn.BatchNorm2d for net in nets for m in net.modules()):
        return                                # folded already (the detectors): no probe run
    x = model.probe(frames)
    pairs, reference = _conv_norm_pairs(model, nets, x)
    if not pairs:
        return
    places: dict[int, list[tuple]] = {}       # id(module) -> every (parent, name) it sits at
    for net in nets:
        for path, mod in net.named_modules(remove_duplicate=False):
            parent, _, attr = path.rpartition(".")
            if attr:
                places.setdefault(id(mod), []).append((net.get_submodule(parent) if parent else net, attr))
    undo: list[tuple] = []
    try:
        for conv, norm in pairs:
            for new, old in ((fuse_conv_bn_eval(conv, norm), conv), (torch.nn.Identity(), norm)):
                for parent, attr in places.get(id(old), []):
                    undo.append((parent, attr, old))
                    setattr(parent, attr, new)
        with torch.inference_mode():
            diffs = compare(reference, model.raw(x))
        worst = max(diffs.values(), default=0.0)
        why = (None if worst <= TOLERANCE["fp32"] else
               f"outputs differ from the unfolded network's by {worst:.3g} (tolerance {TOLERANCE['fp32']:g})")
    except Exception as exc:  # a convolution fuse_conv_bn_eval cannot fold
        why = f"{type(exc).__name__}: {exc}"
    if why is not None:
        for parent, attr, old in reversed(undo):
            setattr(parent, attr, old)
        choice.refused["torch fold"] = why
        log.warning("%s: not folding its batch norms: %s", choice.model, why)
        return
    choice.folded, choice.difference = len(pairs), diffs


def _conv_norm_pairs(model, nets: list, x: np.ndarray) -> tuple[list[tuple], dict[str, np.ndarray]]:
    """The (convolution, batch norm) pairs a fold may join, seen on one run of the probe ``x``, and
    that run's raw outputs."""
    import torch
    calls: dict[int, int] = {}
    last: list = [None, None]                 # the latest convolution's output, and the convolution
    seen: list[tuple] = []

    def conv_done(mod, inputs, out):
        calls[id(mod)] = calls.get(id(mod), 0) + 1
        last[:] = [out, mod]

    def norm_starts(mod, inputs):
        calls[id(mod)] = calls.get(id(mod), 0) + 1
        if inputs and inputs[0] is last[0]:
            seen.append((last[1], mod))

    hooks = []
    for net in nets:
        for mod in net.modules():
            if isinstance(mod, torch.nn.Conv2d):
                hooks.append(mod.register_forward_hook(conv_done))
            elif type(mod) is torch.nn.BatchNorm2d:   # not a subclass: some add an activation
                hooks.append(mod.register_forward_pre_hook(norm_starts))
    try:
        with torch.inference_mode():
            reference = model.raw(x)
    finally:
        for h in hooks:
            h.remove()
        last[:] = [None, None]
    pairs = [(conv, norm) for conv, norm in seen
             if calls[id(conv)] == calls[id(norm)] == 1 and not conv.training and not norm.training
             and norm.running_mean is not None and norm.running_var is not None]
    return pairs, reference


# --- runtimes ---------------------------------------------------------------------------------------
class Runtime:
    """An ONNX file through ONNX Runtime or OpenVINO on the CPU: ``runtime(x) -> [outputs]``."""

    def __init__(self, path: Path, backend: str, *, threads: int, precision: str = "fp32",
                 compiled_cache: Path | None = None):
        self.path, self.backend, self.precision, self.threads = Path(path), backend, precision, threads
        self.nbytes = self.path.stat().st_size   # the weights it holds, about (the pipeline cache counts them)
        self.from_cache = False
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
            config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                      "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
            blob = self.compiled_blob(compiled_cache, path, threads, precision) if compiled_cache else None
            compiled = self._import(core, blob, config) if blob is not None else None
            self.from_cache = compiled is not None
            if compiled is None:
                compiled = core.compile_model(str(path), "CPU", config)
                if blob is not None:
                    self._keep(compiled, blob)
            self._request = compiled.create_infer_request()
            self._outputs = compiled.outputs
            self._run = lambda x: [np.array(self._request.infer({0: x})[o]) for o in self._outputs]
        else:
            raise ModelError(f"not an ONNX backend: {backend}")

    # OpenVINO's compiled networks, kept so that the next load imports instead of compiling. Not
    # through OpenVINO's own CACHE_DIR: it writes its files in place, and workers starting together
    # on nodes of one kind share the folder (the shared filesystem). One worker then read another's
    # half-written file, or found it gone ("cannot set permissions: No such file or directory").
    # Here each network is written whole to a file of its own and renamed into place (atomic on one
    # filesystem), so a reader finds the whole network or none.
    @staticmethod
    def compiled_blob(folder: Path, onnx: Path, threads: int, precision: str) -> Path:
        """Where the network compiled from ``onnx`` is kept in ``folder`` (a node kind's,
        ``compiled_folder``): named by the ONNX file (name, size, modification time), the precision,
        the threads and OpenVINO's version, so a new export or library is a new file."""
        st = Path(onnx).stat()
        key = f"{Path(onnx).name}|{st.st_size}|{st.st_mtime_ns}|{precision}|{threads}|{_version('openvino')}"
        return Path(folder) / f"{Path(onnx).name}.{hashlib.sha256(key.encode()).hexdigest()[:16]}.blob"

    def _import(self, core, blob: Path, config: dict):
        try:
            data = blob.read_bytes()
        except OSError:             # not kept yet (or a folder that cannot be read: compiled instead)
            return None
        try:
            return core.import_model(data, "CPU", config)
        except RuntimeError as exc:  # damaged, or from another build: compiled again and replaced
            log.warning("%s: the compiled network %s could not be imported (%s); compiling it again",
                        self.path.name, blob, str(exc).strip().splitlines()[-1][-200:])
            return None

    def _keep(self, compiled, blob: Path) -> None:
        tmp = blob.with_name(f".{blob.name}.{os.getpid()}.tmp")
        try:
            blob.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(compiled.export_model().getvalue())
            os.replace(tmp, blob)
        except (OSError, RuntimeError) as exc:   # read-only, full, not a folder: costs the cache only
            log.warning("%s: the cache of compiled networks in %s is out of use (%s); the network was "
                        "compiled and runs", self.path.name, blob.parent, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return self._run(np.ascontiguousarray(x, dtype=np.float32))

    def __repr__(self) -> str:
        return f"Runtime({self.path.name}, {self.backend}, {self.precision})"


# --- equality and choice ----------------------------------------------------------------------------
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
    versions = ",".join(f"{d}={_version(d)}" for d in ("torch", "onnxruntime", "openvino"))
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
            _autocast(model, choice, frames or probe_frames())
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
