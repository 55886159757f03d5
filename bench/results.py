"""Where the benchmarks keep their runs: one JSON file per run, named by benchmark and time."""
from __future__ import annotations

import json
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def save(doc: dict, name: str, folder: Path | None = None, **dump) -> Path:
    """Write ``doc`` to ``<folder>/<name>-<YYYYmmdd-HHMMSS>.json`` (default bench/results/) and return
    its path; ``dump`` goes to ``json.dumps`` (``default=str``, for instance)."""
    folder = Path(folder) if folder is not None else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(doc, indent=2, **dump))
    return path
