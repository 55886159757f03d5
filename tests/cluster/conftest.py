"""Fixtures of tests/cluster: the test images, and clusters of containers (clusterkit)."""
from __future__ import annotations

import secrets

import pytest

from clusterkit import IMAGE_DIR, LABEL, Cluster, need_ansible, need_docker, remove_stale, sh


@pytest.fixture(scope="session")
def test_images() -> tuple[str, str]:
    need_ansible()
    need_docker()
    out = sh("bash", str(IMAGE_DIR / "build.sh"), timeout=900).split()
    return out[0], out[1]


@pytest.fixture(scope="module")
def make_cluster(test_images, tmp_path_factory):
    """Start containers on a fresh network; everything is removed at the end."""
    remove_stale()
    made: list[Cluster] = []

    def make() -> Cluster:
        prefix = f"wst{secrets.token_hex(3)}"
        cluster = Cluster(prefix, tmp_path_factory.mktemp(prefix), *test_images)
        cluster.network = prefix
        sh("docker", "network", "create", "--label", LABEL, prefix)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.remove()
