"""The pipelines a worker has loaded, one per set of analysis settings, bounded by memory.

Jobs name their analysis profile (:mod:`wildswarm.profiles`); loading a profile's models takes
seconds to minutes, so a worker keeps what it loaded: a job whose profile resolves to settings it
has a pipeline for uses that one. Two profiles that resolve to the same settings share a pipeline.

The cache holds pipelines while the memory of their models (the tensors of every loaded network,
in RAM or on the GPU) stays within ``WILDSWARM_PIPELINE_CACHE_MB``; to make room for another, the
least recently used are dropped first. Before a load the newcomer's size is estimated from its
weight files, afterwards it is measured. The pipeline in use is never dropped, so one larger than
the whole budget still runs, alone.
"""
from __future__ import annotations

import gc
import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from wildswarm import metrics
from wildswarm.config import Settings
from wildswarm.profiles import Profile, ProfileBook

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Loaded:
    """An analyser, and the profile and settings it analyses with."""

    analyzer: object
    profile: str
    settings: dict = field(default_factory=dict)


def memory_bytes(obj: object, depth: int = 8) -> int:
    """Bytes of the tensors of every torch network reachable from ``obj`` in ``depth`` attribute
    steps (each tensor counted once, wherever it lives), and of the weights of every exported
    runtime (``backends.Runtime``: its ONNX file's size). A network may hold another in a plain
    attribute (PytorchWildlife's MegaDetectorV6 keeps the real one four steps down, in ``predictor.model``): those
    are followed too."""
    import torch
    from wildswarm.pipeline.backends import Runtime
    seen_obj, seen_ptr, total = set(), set(), 0

    def walk(o: object, d: int) -> None:
        nonlocal total
        if id(o) in seen_obj:
            return
        seen_obj.add(id(o))
        if isinstance(o, Runtime):   # a model running exported holds its weights there, not in torch
            total += o.nbytes
            return
        children = o.values() if isinstance(o, dict) else o if isinstance(o, (list, tuple)) else \
            getattr(o, "__dict__", {}).values()
        if isinstance(o, torch.nn.Module):
            for t in list(o.parameters()) + list(o.buffers()):
                key = (t.device, t.data_ptr())
                if key not in seen_ptr:
                    seen_ptr.add(key)
                    total += t.numel() * t.element_size()
            children = [v for k, v in vars(o).items() if k not in ("_parameters", "_buffers", "_modules")]
        if d == 0:
            return
        for child in children:
            if not isinstance(child, (str, bytes, int, float, bool, type(None))):
                walk(child, d - 1)

    walk(obj, depth)
    return total


def weights_bytes(settings: Settings) -> int:
    """What the weight files of ``settings``' models hold on disk: the estimate before a load."""
    from wildswarm.pipeline import models as catalogue
    total = 0
    for name in (settings.detector, settings.classifier, settings.pose):
        if not name or name == "none":
            continue
        try:
            total += catalogue.weights_path(settings.models, catalogue.spec(name)).stat().st_size
        except Exception:     # unknown or missing: the load itself says so
            pass
    return total


def _real_pipeline(settings: Settings):
    from wildswarm.pipeline.run import Pipeline
    return Pipeline(settings)


class Fixed:
    """One analyser for every job, whatever its profile (a test aid, or a runner built around one)."""

    def __init__(self, analyzer):
        self.analyzer = analyzer

    def get(self, profile: str | None = None) -> Loaded:
        return Loaded(self.analyzer, profile or "", {})


@dataclass
class _Entry:
    analyzer: object
    size: int
    profiles: set[str]


class PipelineCache:
    """``get(profile)``: a loaded analyser for that profile's settings, loading it only the first time."""

    def __init__(self, settings: Settings, book: ProfileBook | None = None,
                 factory: Callable[[Settings], object] = _real_pipeline, budget_bytes: int | None = None):
        self.settings = settings
        self.book = book or ProfileBook(settings)
        self.factory = factory
        self.budget = budget_bytes if budget_bytes is not None else settings.pipeline_cache_mb * 1024 ** 2
        self.loads: dict[str, int] = {}          # profile -> pipelines loaded for it
        self._entries: OrderedDict[str, _Entry] = OrderedDict()   # settings key, least recently used first
        self._lock = threading.Lock()

    def get(self, profile: str | None = None) -> Loaded:
        p: Profile = self.book.get(profile)
        settings = p.apply(self.settings)
        resolved = p.resolved(self.settings)
        key = json.dumps(resolved, sort_keys=True)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                entry.profiles.add(p.name)
                metrics.PIPELINES.labels("reused").inc()
                return Loaded(entry.analyzer, p.name, resolved)
            self._make_room(weights_bytes(settings))
            started = time.perf_counter()
            analyzer = self.factory(settings)
            seconds = time.perf_counter() - started
            size = self._size(analyzer) or weights_bytes(settings)
            self._entries[key] = _Entry(analyzer, size, {p.name})
            self.loads[p.name] = self.loads.get(p.name, 0) + 1
            metrics.PIPELINES.labels("loaded").inc()
            self._make_room(0)
            metrics.PIPELINE_CACHE_BYTES.set(self.used)
            log.info("profile %s: pipeline loaded in %.1f s (%.0f MB of models; %d in the cache, %.0f of %.0f MB)",
                     p.name, seconds, size / 1024 ** 2, len(self._entries), self.used / 1024 ** 2,
                     self.budget / 1024 ** 2)
            return Loaded(analyzer, p.name, resolved)

    @property
    def used(self) -> int:
        return sum(e.size for e in self._entries.values())

    def profiles_loaded(self) -> list[list[str]]:
        """The profiles of each pipeline held, least recently used first."""
        return [sorted(e.profiles) for e in self._entries.values()]

    def _size(self, analyzer) -> int:
        own = getattr(analyzer, "memory_bytes", None)      # an analyser that knows (a test aid)
        if isinstance(own, int):
            return own
        try:
            return memory_bytes(analyzer)
        except ImportError:      # no torch here: nothing of torch's to count
            return 0

    def _make_room(self, coming: int) -> None:
        """Drop the least recently used pipelines until ``coming`` more bytes fit (the newest stays)."""
        dropped = False
        while len(self._entries) > (0 if coming else 1) and self.used + coming > self.budget:
            key, entry = self._entries.popitem(last=False)
            metrics.PIPELINES.labels("dropped").inc()
            log.info("pipeline of profile(s) %s dropped from the cache (%.0f MB) to make room",
                     ", ".join(sorted(entry.profiles)), entry.size / 1024 ** 2)
            dropped = True
        if dropped:
            gc.collect()
            try:
                import torch
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except ImportError:
                pass
            metrics.PIPELINE_CACHE_BYTES.set(self.used)
