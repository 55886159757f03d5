"""PyTorch's own path, made faster where its outputs stay the same: bf16 and folded batch norms.

Choice (``choose``), per model and node: the fastest backend that passes. ``auto`` times each
candidate on the probe once per node kind (CPU model, threads, library versions, weights) and keeps
the ranking in a small JSON file; every load checks the chosen backend's equality again.

Each change is checked on the probe against the networks as they were (``equality.compare``) and
undone, saying why in the model's ``Choice.refused``, when it changes their outputs too much.
``release_torch`` frees the PyTorch weights of a model that now runs on an exported runtime.
"""
from __future__ import annotations

import logging

import numpy as np

from wildswarm.errors import ModelError
from wildswarm.pipeline.equality import TOLERANCE, Choice, compare

log = logging.getLogger(__name__)


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


def autocast_where_native(model, choice: Choice, frames: list[np.ndarray]) -> None:
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
def fold_batch_norms(model, choice: Choice, frames: list[np.ndarray]) -> None:
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
