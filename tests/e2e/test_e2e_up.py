"""make up where the real weights cannot be had: it says so and deploys nothing, unless asked for untrained ones."""
from __future__ import annotations

import subprocess

from stackkit import ROOT, fast_settings, free_port, stack_env


def test_make_up_without_weights_explains_both_remedies_and_deploys_nothing(docker_ready, tmp_path):
    data, secrets = tmp_path / "data", tmp_path / "secrets"
    env_file = tmp_path / "wildswarm.env"
    env_file.write_text(fast_settings())
    env = stack_env(data, secrets, env_file, {"https": free_port(), "http": free_port()})
    env.update(STACK="wildswarm-e2e-noweights", SECRET_PREFIX="wildswarm-e2e-noweights", WILDSWARM_UNTRAINED="0")
    result = subprocess.run(["make", "--no-print-directory", "up"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=1800)
    assert result.returncode != 0
    assert "could not be fetched" in result.stderr
    assert "WILDSWARM_UNTRAINED=1 make up" in result.stderr
    assert f"{data}/models" in result.stderr
    stacks = subprocess.run(["docker", "stack", "ls", "--format", "{{.Name}}"], capture_output=True, text=True).stdout
    assert "wildswarm-e2e-noweights" not in stacks.split()
    secrets_left = subprocess.run(["docker", "secret", "ls", "-q", "--filter", "name=wildswarm-e2e-noweights"],
                                  capture_output=True, text=True).stdout
    assert not secrets_left.strip()
