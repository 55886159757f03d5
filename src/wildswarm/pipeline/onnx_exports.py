"""ONNX exports of a model's weights, for the runtimes of CPU nodes (``runtime.Runtime``).

PyTorch is the reference and the GPU path. On a CPU node, a model also runs from an ONNX export of
the same weights through ONNX Runtime or OpenVINO, when that backend gives the same outputs.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from importlib import metadata
from pathlib import Path

from wildswarm.errors import ModelError
from wildswarm.pipeline.models import sha256_of
from wildswarm.pipeline.specs import Weights

log = logging.getLogger(__name__)

EXPORT_FORMAT = 1
INT8_FORMAT = 2                # 2: weights in 7 bits (quantize.py: no saturation without VNNI)


def library_version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "none"


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
                  "exporter": f"{weights.spec.family} adapter", "torch": library_version("torch"),
                  "onnx": library_version("onnx"), "seconds": round(time.perf_counter() - started, 2),
                  "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
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
