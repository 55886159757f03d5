"""The web app and the producer run in small images without the ML stack: importing them loads no torch."""
import subprocess
import sys


def test_web_producer_and_intake_load_no_torch():
    code = ("import sys, wildswarm.web, wildswarm.producer, wildswarm.intake, wildswarm.reconciler, "
            "wildswarm.cli.jobs, wildswarm.cli.web; "
            "heavy = sorted(m for m in ('torch', 'ultralytics', 'deeplabcut', 'PytorchWildlife', 'cv2') "
            "if m in sys.modules); print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the pipeline package: no import circle, one adapter per model family -------------------------
import ast  # noqa: E402
from pathlib import Path  # noqa: E402

PIPELINE = Path(__file__).resolve().parents[2] / "src" / "wildswarm" / "pipeline"


def _module(path: Path) -> str:
    rel = path.relative_to(PIPELINE.parent.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _pipeline_imports(path: Path, modules: set[str]) -> set[str]:
    """The pipeline modules ``path`` imports, at the top or inside functions alike."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found.update(n for n in names if n in modules)
    return found


def test_the_pipeline_package_has_no_import_circle():
    files = {_module(p): p for p in PIPELINE.rglob("*.py")}
    graph = {m: _pipeline_imports(p, set(files)) - {m} for m, p in files.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = path[path.index(n):] + [n]
                raise AssertionError("import circle: " + " -> ".join(c.rsplit(".", 1)[-1] for c in cycle))
            if n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_every_catalogued_family_is_one_adapter_module():
    from wildswarm.pipeline import families
    from wildswarm.pipeline.specs import CATALOGUE
    for s in CATALOGUE.values():
        family = families.adapter(s.family)
        assert family.KIND == s.kind, s.name
        assert callable(family.load) and callable(family.untrained_checkpoint), s.name
    # Nothing outside the adapters branches on a family's name.
    for name in ("models.py", "detect.py", "pose.py", "run.py"):
        text = (PIPELINE / name).read_text()
        for family in families.FAMILIES:
            assert f'"{family}"' not in text, f"{name} branches on family {family}"
