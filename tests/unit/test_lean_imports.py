"""lean_import: one module of a library without its packages' __init__, which run when asked for a name."""
import subprocess
import sys
import textwrap
import uuid

import pytest

from wildswarm.pipeline.families._lean import is_hollow, lean_import


@pytest.fixture
def library(tmp_path, monkeypatch):
    """A library shaped like PytorchWildlife: a package whose __init__ imports a heavy sibling of
    the module wanted, a leaf that imports from a sibling package, and a star-importing parent."""
    name = f"lib_{uuid.uuid4().hex[:8]}"
    files = {
        "__init__.py": f"from .models import *\nfrom .data import *\n__version__ = '1.2'\n",
        "data/__init__.py": "from .transforms import *\nfrom .heavy import *\n",
        "data/transforms.py": "def resize(x):\n    return x\n",
        "data/heavy.py": "import sys\nsys.modules[__name__.rpartition('.')[0]].HEAVY_LOADED = True\nHeavy = object\n",
        "models/__init__.py": "from .detection import *\n",
        "models/detection/__init__.py": "from .v5 import *\nfrom .v6 import *\n",
        "models/detection/v5.py": "from ...data import heavy\nclass V5:\n    pass\n",
        "models/detection/v6.py": "from ...data import transforms\n__all__ = ['V6']\nclass V6:\n    resize = staticmethod(transforms.resize)\n",
        "models/classify/__init__.py": "from .resnet import *\n",
        "models/classify/resnet.py": "class ResNet:\n    pass\n",
    }
    for rel, text in files.items():
        path = tmp_path / name / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[mod]


def test_only_the_module_asked_for_and_its_own_imports_load(library):
    v6 = lean_import(f"{library}.models.detection.v6")
    assert v6.V6.resize(3) == 3
    assert f"{library}.data.transforms" in sys.modules
    assert f"{library}.data.heavy" not in sys.modules            # data's __init__ has not run
    assert f"{library}.models.detection.v5" not in sys.modules   # nor detection's
    for pkg in (library, f"{library}.models", f"{library}.models.detection", f"{library}.data"):
        assert is_hollow(sys.modules[pkg]), pkg


def test_a_package_asked_for_runs_its_own_init(library):
    cls = lean_import(f"{library}.models.classify")
    assert cls.ResNet.__name__ == "ResNet"
    assert not is_hollow(cls)
    assert is_hollow(sys.modules[f"{library}.models"])


def test_the_whole_library_is_there_when_imported_the_usual_way_later(library):
    v6 = lean_import(f"{library}.models.detection.v6")
    import importlib
    lib = importlib.import_module(library)
    assert lib.__version__ == "1.2"                               # the root's __init__ ran on demand
    assert lib.V6 is v6.V6 and lib.V5.__name__ == "V5"            # same classes; the rest loaded now
    assert lib.HEAVY_LOADED
    detection = importlib.import_module(f"{library}.models.detection")
    assert detection.V5 is lib.V5
    assert lib.models.detection.v6.V6 is v6.V6                    # attribute paths work too
    assert lib.data.transforms.resize(1) == 1
    assert not any(is_hollow(m) for n, m in sys.modules.items() if n.startswith(library))


def test_from_package_import_name_fills_a_hollow_package(library):
    lean_import(f"{library}.models.detection.v6")
    ns: dict = {}
    exec(f"from {library}.models.detection import V5, V6", ns)
    assert ns["V5"].__name__ == "V5"
    assert not is_hollow(sys.modules[f"{library}.models.detection"])
    with pytest.raises(ImportError, match="Missing"):
        exec(f"from {library}.models import Missing", ns)


def test_probing_a_hollow_package_does_not_fill_it(library):
    lean_import(f"{library}.models.detection.v6")
    import inspect
    pkg = sys.modules[f"{library}.data"]
    assert not hasattr(pkg, "__file__") or pkg.__file__
    inspect.getmodule(inspect)            # walks sys.modules reading __file__
    assert is_hollow(pkg)


def test_pytorchwildlife_megadetector_v6_and_resnets_without_the_rest():
    """The real library: MegaDetector v6's module and the ResNet classifiers leave PytorchWildlife's
    other families (YOLOv5, the bioacoustic stack) unloaded, and the usual import afterwards gives
    the same classes. Fails where PytorchWildlife's package imports are used directly."""
    code = textwrap.dedent("""
        import os, sys
        os.environ["YOLO_OFFLINE"] = "1"
        from wildswarm.pipeline.families._lean import lean_import
        v6 = lean_import("PytorchWildlife.models.detection.ultralytics_based.megadetectorv6")
        rn = lean_import("PytorchWildlife.models.classification.resnet_base")
        heavy = sorted({"yolov5", "librosa", "torchaudio", "lightning", "pytorch_lightning", "sklearn",
                        "statsmodels", "seaborn"} & {m.split(".")[0] for m in sys.modules})
        assert not heavy, heavy
        from PytorchWildlife.models.detection import MegaDetectorV6, MegaDetectorV5
        import PytorchWildlife.models.classification as pw_cls
        import PytorchWildlife
        assert MegaDetectorV6 is v6.MegaDetectorV6 and pw_cls.AI4GSnapshotSerengeti is rn.AI4GSnapshotSerengeti
        assert PytorchWildlife.__version__ and "yolov5" in sys.modules
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr
