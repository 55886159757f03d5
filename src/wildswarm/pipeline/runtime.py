"""An ONNX file through ONNX Runtime or OpenVINO on a CPU node, with OpenVINO's compiled networks kept."""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from wildswarm.errors import ModelError
from wildswarm.pipeline.onnx_exports import library_version

log = logging.getLogger(__name__)


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
        key = (f"{Path(onnx).name}|{st.st_size}|{st.st_mtime_ns}|{precision}|{threads}|"
               f"{library_version('openvino')}")
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
