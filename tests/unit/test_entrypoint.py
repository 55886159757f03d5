"""The images' entrypoint turns `docker run IMAGE <command>` into `wildswarm <command>` for every command of
the CLI, and runs anything else (a shell, python3) as given."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wildswarm.cli import main

ENTRYPOINT = Path(__file__).resolve().parents[2] / "images" / "entrypoint.sh"


def run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(["sh", str(ENTRYPOINT), *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_command_of_the_cli_runs_as_the_images_command(command):
    """Audit: `docker run wildswarm/worker export ...` (or cancel, deployments, download, profiles) ran
    `export` as a program: "exec: export: not found". Only six commands were mapped."""
    r = run(command, "--help")
    assert r.returncode == 0, r.stderr
    assert f"Usage: wildswarm {command}" in r.stdout


def test_anything_else_runs_as_given_and_nothing_runs_the_cli_help():
    assert run("echo", "as given").stdout == "as given\n"
    assert run().stdout.startswith("Usage: wildswarm")
    assert "Usage: wildswarm" in run("--help").stdout
