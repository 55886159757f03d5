"""Import one module of a library without the rest of it: its packages' ``__init__`` run only when
something asks them for a name.

PytorchWildlife's packages import every model family they hold: ``import PytorchWildlife.models.
detection`` loads YOLOv5, RT-DETR, Deepfaune and, through ``PytorchWildlife.data``, the bioacoustic
stack (librosa, torchaudio, PyTorch Lightning, pandas, scikit-learn, statsmodels, seaborn). A worker
running MegaDetector v6 and a ResNet classifier needs two modules of it. Measured on 2 cores (the
module imported after torch, OpenCV, PyAV and wildswarm's pipeline): the whole package costs 3.8 s
and 353 MB of resident memory, MegaDetector v6's and the ResNet classifiers' modules alone 1.2 s and
163 MB. A worker pays that at every start, and keeps the memory. DeepLabCut's package likewise
imports its training, evaluation and COCO tools (polars, pycocotools, statsmodels); the SuperAnimal
adapter takes the four modules of its PyTorch engine that it uses.

``lean_import(name)`` imports ``name`` and what it imports itself as usual, but every package of the
same library above or beside it that gets imported on the way is created *hollow*: a real package
module (its ``__path__`` is set, so its submodules load as usual) whose ``__init__`` has not run yet.
It runs, in that same module object, the first time anything asks the package for a name it does not
have: ``from PytorchWildlife.models.detection import MegaDetectorV5``, ``PytorchWildlife.__version__``
or ``from .detection import *`` inside the library itself. So code importing the library the usual
way, later, sees the whole library, with the same class objects (the modules already loaded are
reused), and pays for it then.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
from types import ModuleType

_lock = threading.RLock()
# Names importlib and introspection probe on any module, which must not run a hollow package's
# __init__; every other name does (``__all__`` for ``import *``, ``__version__``).
_PROBED = frozenset({"__file__", "__cached__", "__loader__", "__builtins__", "__warningregistry__",
                     "__wrapped__", "__annotations__", "__getstate__", "__reduce__", "__reduce_ex__",
                     "__class_getitem__", "__origin__", "__test__", "__bases__", "__mro_entries__",
                     "__qualname__", "__signature__", "__self__", "__func__", "__code__"})


class _Hollow(importlib.abc.Loader):
    """Creates the package as the import system would, and leaves its ``__init__`` for later."""

    def __init__(self, real: importlib.machinery.ModuleSpec):
        self.real = real

    def create_module(self, spec):
        return None          # the default module object

    def exec_module(self, module: ModuleType) -> None:
        real = self.real

        def __getattr__(name: str):
            if name in _PROBED:
                raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")
            if importlib.machinery.PathFinder.find_spec(name, module.__path__) is not None:
                # a submodule: ``from package import submodule`` asks for it before importing it
                return importlib.import_module(f"{module.__name__}.{name}")
            fill(module, real)
            try:
                return module.__dict__[name]
            except KeyError:
                raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}") from None

        module.__getattr__ = __getattr__


def fill(module: ModuleType, real: importlib.machinery.ModuleSpec) -> None:
    """Run a hollow package's own ``__init__`` in it (once)."""
    with _lock:
        if "__getattr__" not in module.__dict__ or not is_hollow(module):
            return
        del module.__getattr__
        module.__spec__, module.__loader__ = real, real.loader
        if real.has_location:
            module.__file__ = real.origin
            if real.cached:
                module.__cached__ = real.cached
        real.loader.exec_module(module)


def is_hollow(module: ModuleType) -> bool:
    spec = getattr(module, "__spec__", None)
    return isinstance(getattr(spec, "loader", None), _Hollow)


class _Finder(importlib.abc.MetaPathFinder):
    """Under ``root``: packages hollow, except ``keep`` and everything under it."""

    def __init__(self, root: str, keep: str):
        self.root, self.keep = root, keep

    def find_spec(self, name, path, target=None):
        if not (name == self.root or name.startswith(self.root + ".")):
            return None
        if name == self.keep or name.startswith(self.keep + "."):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.submodule_search_locations is None:
            return spec      # a module, not a package: loaded as usual
        hollow = importlib.machinery.ModuleSpec(name, _Hollow(spec), origin=spec.origin, is_package=True)
        hollow.submodule_search_locations = list(spec.submodule_search_locations)
        return hollow


def lean_import(name: str) -> ModuleType:
    """``importlib.import_module(name)``, with the packages of ``name``'s library that it does not
    itself need left hollow (module doc)."""
    if name in sys.modules:
        return sys.modules[name]
    finder = _Finder(name.partition(".")[0], name)
    with _lock:
        sys.meta_path.insert(0, finder)
        try:
            return importlib.import_module(name)
        finally:
            sys.meta_path.remove(finder)
