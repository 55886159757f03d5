"""``torch.onnx`` export for the families whose library has no ONNX exporter of its own."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

OPSET = 18


class _Outputs(torch.nn.Module):
    """``net`` with its outputs as a flat tuple (ONNX graphs return tensors, not dicts)."""

    def __init__(self, net: torch.nn.Module, pick):
        super().__init__()
        self.net = net
        self.pick = pick

    def forward(self, x):
        return tuple(self.pick(self.net(x)))


def export(net: torch.nn.Module, example: torch.Tensor, dest: Path, *, outputs: list[str], pick,
           dynamic_hw: bool = False) -> None:
    """Write ``net`` (outputs chosen and ordered by ``pick``) to ``dest``, batch size free (and the
    image size too, with ``dynamic_hw``). TorchScript-based exporter: these networks are plain
    convolutional graphs, which it exports without the extra dependencies of the dynamo one."""
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Outputs(net, pick).eval(), (example,), str(dest), input_names=["images"],
                          output_names=outputs, dynamic_axes={"images": axes, **{o: {0: "batch"} for o in outputs}},
                          opset_version=OPSET, dynamo=False)
