"""The Makefile's benchmark targets start the scripts they name: each recipe's Python command, as
``make -n`` prints it, runs with ``--help`` (a bench/pipeline.py that became a package left
``make bench-pipeline`` pointing at a file that was gone)."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGETS = re.findall(r"^(bench-[\w-]+):", (ROOT / "Makefile").read_text(), re.M)


def test_every_benchmark_is_a_target_of_make_bench():
    line = re.search(r"^bench:([^#\n]*)", (ROOT / "Makefile").read_text(), re.M).group(1).split()
    assert TARGETS and sorted(line) == sorted(TARGETS)


@pytest.mark.parametrize("target", TARGETS)
def test_each_benchmark_target_runs_its_script(target):
    # Prerequisites (venv, broker, db) are not run: -n prints every recipe, and only the target's
    # own Python command is taken, with the venv's interpreter swapped for this one.
    out = subprocess.run(["make", "-n", target, f"BIN={Path(sys.executable).parent}"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    commands = [c for c in out.splitlines() if re.match(rf"{re.escape(str(Path(sys.executable).parent))}/python ", c)]
    assert commands, out
    argv = shlex.split(commands[-1])
    argv = [sys.executable, *argv[1:]] + ["--help"]
    run = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"{target}: {' '.join(argv)}\n{run.stderr[-2000:]}"
    assert "usage" in run.stdout.lower()
