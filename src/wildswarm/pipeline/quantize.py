"""INT8 exports for CPU nodes (opt-in: ``WILDSWARM_PRECISION=int8``, or a profile's ``precision``).

A CPU with VNNI (AVX-512 VNNI, AVX-VNNI or AMX) multiplies 8-bit integers several times faster than
floats, and many cluster CPUs that have it have no bf16 (Cascade Lake, Ice Lake). An INT8 network
needs the range of every activation, taken from real input: ``wildswarm models quantize --videos
...`` samples frames of the lab's own videos, runs the float32 detector on them for the animals'
boxes, and feeds each model the inputs it gets in the pipeline (the letterboxed frames; the crops of
those boxes for the classifier and the pose model). ONNX Runtime's static quantizer then writes the
model's ONNX export with quantize/dequantize pairs around each convolution and matrix product
(``<weights>.<sha256[:16]>.int8.onnx`` beside the weights, with a record naming the weights, the
float32 export it came from and the calibration frames). ONNX Runtime and OpenVINO both run it in
INT8 kernels, and the backends' choice times and checks it as any other export, against PyTorch's
float32 outputs within ``TOLERANCE["int8"]``.

That check proves the arithmetic, not the accuracy: whether the detections and keypoints of real
weights stay as good in INT8 needs labelled videos, so INT8 is never the default."""
from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np

from wildswarm.errors import ModelError
from wildswarm.pipeline import backends
from wildswarm.pipeline.models import sha256_of
from wildswarm.pipeline.specs import Weights

#: What is quantized: the convolutions and matrix products, where the time goes. Their inputs go to
#: 8 bits (activations unsigned, per tensor; weights signed, per output channel); every other op
#: (activations, concatenations, the detector's box decoding) stays in float32.
OPS = ("Conv", "MatMul", "Gemm")


def quantize(weights: Weights, fp32_onnx: Path, inputs: list[np.ndarray], *, folder: Path | None = None,
             calibration: dict | None = None) -> Path:
    """Write the INT8 export of ``weights`` from their float32 export ``fp32_onnx``, with activation ranges
    from ``inputs`` (network inputs, one batch each), atomically, with its record. ``calibration``:
    what the inputs came from, kept in the record."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process
    import onnx

    if not inputs:
        raise ModelError(f"{weights.spec.name}: no calibration input to quantize with")
    dest = backends.int8_path(weights, folder)
    dest.parent.mkdir(parents=True, exist_ok=True)
    name = onnx.load(str(fp32_onnx), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._left = iter(inputs)

        def get_next(self):
            x = next(self._left, None)
            return None if x is None else {name: np.ascontiguousarray(x, dtype=np.float32)}

    digest = hashlib.sha256()
    for x in inputs:
        digest.update(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".int8-") as tmp:
        prepared, out = Path(tmp) / "prepared.onnx", Path(tmp) / dest.name
        try:
            # constant folding and shape inference first, as ONNX Runtime advises before quantizing
            quant_pre_process(str(fp32_onnx), str(prepared), skip_symbolic_shape=True)
            quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(OPS), per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            # weights in 7 bits: CPUs without VNNI (AVX2, AVX-512 before Cascade Lake)
                            # multiply u8 by s8 into 16-bit sums that saturate with 8-bit weights;
                            # both runtimes then drift far from float32 (seen: 0.26 on the detector
                            # here, 5e-6 on a VNNI CPU). One export serves every node of a cluster.
                            reduce_range=True,
                            # each activation's smallest and largest value over every input: ONNX
                            # Runtime adds a ReduceMin and ReduceMax per tensor, so calibration keeps
                            # two numbers a tensor and input, never the activations themselves
                            calibrate_method=CalibrationMethod.MinMax)
        except Exception as exc:  # the quantizer failing on a graph
            raise ModelError(f"could not quantize {weights.spec.name} to INT8: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
        from onnxruntime import __version__ as ort_version
        rec = {"format": backends.INT8_FORMAT, "model": weights.spec.name, "weights": weights.path.name,
               "weights_sha256": weights.sha256, "onnx_sha256": sha256_of(out), "untrained": weights.untrained,
               "from": fp32_onnx.name, "from_sha256": sha256_of(fp32_onnx), "quantizer": f"onnxruntime {ort_version}",
               "ops": list(OPS), "weight_bits": 7, "calibration": {**(calibration or {}), "batches": len(inputs),
                                                 "inputs": int(sum(len(x) for x in inputs)),
                                                 "sha256": digest.hexdigest()},
               "seconds": round(time.perf_counter() - started, 2),
               "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        backends.publish(out, rec, dest)
    return dest


# --- calibration from videos -------------------------------------------------------------------------
def calibration_frames(videos: list[Path], count: int) -> tuple[list[np.ndarray], dict]:
    """About ``count`` frames (RGB) spread evenly over ``videos``, each reached by a seek (an hour-long
    video is not decoded through), and where they came from."""
    from wildswarm.pipeline.video import probe, read_frames
    if not videos:
        raise ModelError("no videos to calibrate with")
    per = max(1, -(-count // len(videos)))
    frames, used = [], {}
    for video in videos:
        total = probe(video).frames
        picks = sorted({int(k) for k in np.linspace(0, max(total - 1, 0), per)})
        got = [f.image for k in picks for f in read_frames(video, 0.0, first=k, stop=k + 1)]
        frames += got
        used[Path(video).name] = len(got)
    if not frames:
        raise ModelError(f"no frame could be read from {', '.join(str(v) for v in videos)}")
    return frames, {"videos": used, "frames": len(frames)}


def calibration_inputs(stage, frames: list[np.ndarray], detections: list, max_animals: int,
                       batch: int = 4) -> list[np.ndarray]:
    """The network inputs a pipeline stage (``Detector``, ``Classifier``, ``PoseEstimator``) gives its model
    for ``frames`` and the float32 detector's ``detections`` of them, in batches of ``batch``: the
    letterboxed frames for the detector, the crops of the animals' boxes (``max_animals`` a frame at
    most, as the pipeline; the middle of a frame without one) for the classifier and the pose model.
    Videos of other frame sizes letterbox to other shapes: each shape is batched on its own."""
    by_shape: dict[tuple, list[np.ndarray]] = {}
    for i in range(0, len(frames), batch):
        x = stage.calibration(frames[i:i + batch], detections[i:i + batch], max_animals)
        by_shape.setdefault(x.shape[1:], []).append(x)
    out = []
    for parts in by_shape.values():
        flat = np.concatenate(parts)
        out += [flat[i:i + batch] for i in range(0, len(flat), batch)]
    return out


def quantize_pipeline(settings, frames: list[np.ndarray], calibration: dict,
                      skip: set[str] = frozenset()) -> dict[str, Path | ModelError]:
    """The INT8 export of each model of the pipeline ``settings`` describe (a profile applied), but
    those named in ``skip``, from ``frames`` (``calibration_frames``): the float32 pipeline, on the CPU
    in PyTorch, finds the animals and cuts each model's inputs. Per model name: the export's path, or
    why it failed."""
    from wildswarm.pipeline.detections import animals
    from wildswarm.pipeline.run import Pipeline
    pipeline = Pipeline(settings.replace(backend="torch", precision="fp32", device="cpu"))
    detections = [d for i in range(0, len(frames), 4) for d in pipeline.detector.detect(frames[i:i + 4])]
    about = {**calibration, "animal_boxes": sum(min(len(animals(d)), settings.max_animals) for d in detections)}
    done: dict[str, Path | ModelError] = {}
    for stage in (pipeline.detector, pipeline.classifier, pipeline.pose):
        if stage is None or stage.weights.spec.name in skip:
            continue
        try:
            fp32 = backends.export_weights(stage.weights)
            inputs = calibration_inputs(stage, frames, detections, settings.max_animals)
            done[stage.weights.spec.name] = quantize(stage.weights, fp32, inputs, calibration=about)
        except ModelError as exc:
            done[stage.weights.spec.name] = exc
    return done
