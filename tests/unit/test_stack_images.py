"""Every image stack.yml runs is named where the docs tell an operator how to get images onto a
cluster's nodes: the image variables (for a site's registry) and the `docker save` archive (for a
site without one). An image left out of either is missing on the nodes, and its services never
start (the deploy's wait ends after 15 minutes naming them)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
IMAGE = re.compile(r"\$\{(\w+_IMAGE):-([^}]+)\}")


def stack_images() -> dict[str, str]:
    """Each image variable of stack.yml and its default name."""
    services = yaml.safe_load((ROOT / "stack.yml").read_text())["services"]
    found = dict(IMAGE.fullmatch(spec["image"]).groups() for spec in services.values())
    assert len(found) >= 8, found
    return found


def docker_save_command() -> str:
    text = (ROOT / "docs" / "cluster.md").read_text()
    save = re.search(r"docker save (.*?)\|", text, re.S)
    assert save, "docs/cluster.md no longer shows the docker save command"
    return save.group(1)


@pytest.mark.parametrize("variable,image", sorted(stack_images().items()))
def test_the_cluster_guide_saves_every_image_the_stack_runs(variable, image):
    assert image in docker_save_command().split(), f"docs/cluster.md's docker save leaves out {image} ({variable})"


@pytest.mark.parametrize("doc", ["README.md", "docs/cluster.md"])
def test_every_image_variable_is_listed_for_a_sites_registry(doc):
    listed = set(re.findall(r"`(\w+_IMAGE)`", (ROOT / doc).read_text()))
    assert set(stack_images()) <= listed, f"{doc} does not list {sorted(set(stack_images()) - listed)}"
