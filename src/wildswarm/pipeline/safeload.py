"""How a checked weight file gets unpickled: a private re-hashed copy, weights-only where possible.

``models.require()`` has matched the file to a published checksum or to its lock entry. What is left:

- the path can be swapped between that check and the library reading it, so libraries get a private
  copy whose hash is checked again while copying (``verified_copy``);
- a file recorded by mistake could still be a hostile pickle, so each family is unpickled with
  torch's restricted (``weights_only``) unpickler where its format allows:

  ============  ====================================  =============================================
  family        file format                           weights-only?
  ============  ====================================  =============================================
  ultralytics   pickled ``DetectionModel``            yes: ultralytics' own restricted loader
  (MDv6)                                              (``ultralytics_weights_only``)
  resnet        ``{"state_dict": tensors}``           yes: ``check_weights_only`` before
  (classifier)                                        PytorchWildlife's own load
  superanimal   ``{"model": state_dict}``             yes: DeepLabCut's ``load_weights_only``
  yolov5        pickled yolov5 ``models.yolo.Model``  NO: yolov5 has no restricted loader and
  (MDv5)                                              PytorchWildlife loads it with torch.hub's
                                                      ``weights_only=False``; the checksum (a
                                                      published MD5, or the lock) is the only guard
  ============  ====================================  =============================================
"""
from __future__ import annotations

import hashlib
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from wildswarm.errors import ModelError
from wildswarm.pipeline.specs import Weights


@contextmanager
def verified_copy(weights: Weights, subdir: str = "") -> Iterator[Path]:
    """A private copy (``<tmp>/<subdir>/<file name>``) of the checked file, removed afterwards.

    The copy is hashed while it is written and must be what ``require()`` checked, or nothing.
    """
    private = Path(tempfile.mkdtemp(prefix="wildswarm-weights-"))  # mode 0700
    try:
        copy = private / subdir / weights.path.name
        copy.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        with open(weights.path, "rb") as src, open(copy, "wb") as dst:
            while block := src.read(1 << 20):
                h.update(block)
                dst.write(block)
        if h.hexdigest() != weights.sha256:
            raise ModelError(f"{weights.path} changed while it was being loaded (sha256 {h.hexdigest()}, checked "
                             f"{weights.sha256}); refusing it. Something is writing into {weights.path.parent}")
        yield copy
    finally:
        shutil.rmtree(private, ignore_errors=True)


def check_weights_only(path: Path) -> None:
    """Refuse ``path`` unless torch's restricted (weights-only) unpickler reads it.

    For libraries that leave ``weights_only`` to torch's default, which ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``
    turns off: bytes this unpickler accepts hold only tensors and plain containers, so the library's
    own load of the same bytes cannot run code either.
    """
    import pickle
    import torch
    try:
        with plain_weights_only():
            torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelError(f"{path.name} is not a plain weights file: torch's weights-only loader refused it "
                         f"({_first_line(exc)}); unpickling it in full could run code, so it is not loaded") from None


_ALLOW_LIST = threading.Lock()


@contextmanager
def plain_weights_only() -> Iterator[None]:
    """Around a weights-only load of a plain state dict (the classifier's, the pose model's): torch's
    own allow-list and numpy's scalars and dtypes (DeepLabCut registers those), nothing else.

    The allow-list is one set for the whole process, and ultralytics' restricted loader adds to it, for
    good, the model classes a MegaDetector v6 checkpoint names; a pipeline loads its detector first. A
    file may call an allowed class, and ultralytics' ``DetectionModel`` built from a config outside
    ultralytics' own load evals the config's activation string: so those are taken out meanwhile.
    """
    import torch.serialization as ts
    with _ALLOW_LIST:
        others = [g for g in ts.get_safe_globals()
                  if not getattr(g[0] if isinstance(g, tuple) else g, "__module__", "").startswith("numpy")]
        kept = [g for g in ts.get_safe_globals() if g not in others]
        ts.clear_safe_globals()
        ts.add_safe_globals(kept)
        try:
            yield
        finally:
            ts.add_safe_globals(others)


@contextmanager
def ultralytics_weights_only() -> Iterator[None]:
    """Make ultralytics load checkpoints with its restricted loader (``ULTRALYTICS_SAFE_LOAD``).

    That loader is ``torch.load(weights_only=True)`` plus an allow-list of ultralytics' and torch's own
    ``nn.Module`` classes. The flag is read from the environment once, when ultralytics is imported,
    so it is switched on here, around the load, whatever was imported first.
    """
    import ultralytics.nn.tasks as tasks
    safe = getattr(tasks, "_SafeLoad", None)
    if safe is None or not safe.SUPPORTED:
        raise ModelError("this ultralytics/torch pair cannot load checkpoints weights-only "
                         "(needs ultralytics with ULTRALYTICS_SAFE_LOAD, as pinned in constraints.txt, and torch>=2.6)")
    previous, tasks.SAFE_LOAD = tasks.SAFE_LOAD, True
    try:
        yield
    finally:
        tasks.SAFE_LOAD = previous


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
