"""beegfs/check.yml against a folder shared between containers, and against ones that are not.

Nodes that bind one folder of this machine at /beegfs pass: each reads back what the
others wrote. Nodes with folders of their own, or with nothing mounted, fail with a
message that names the problem.
"""
from __future__ import annotations

import pytest

from clusterkit import ansible_playbook, write_extra_vars

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def nodes(make_cluster):
    c = make_cluster()
    shared, own1, own2 = (c.workdir / name for name in ("shared", "own1", "own2"))
    for folder in (shared, own1, own2):
        folder.mkdir()
    clients = ("beegfs_clients",)
    c.start("shared1", clients, mounts=[f"{shared}:/beegfs"])
    c.start("shared2", clients, mounts=[f"{shared}:/beegfs"])
    c.start("shared3", clients, mounts=[f"{shared}:/beegfs"])
    c.start("alone1", clients, mounts=[f"{own1}:/beegfs"])
    c.start("alone2", clients, mounts=[f"{own2}:/beegfs"])
    c.start("unmounted", clients)
    c.extra = write_extra_vars(c.workdir / "test-vars.json")
    c.shared = shared
    return c


def check(c, names):
    inventory = c.write_inventory(c.workdir / "-".join(names), names)
    return ansible_playbook(inventory, "beegfs/check.yml", extra=["-e", f"@{c.extra}"])


def test_shared_folder_passes_and_leaves_nothing(nodes):
    run = check(nodes, ["shared1", "shared2", "shared3"])
    assert run.rc == 0, run.tail()
    assert run.changed() == {}
    for name in ("shared1", "shared2", "shared3"):
        assert f"{name} read back what 2 other node(s) wrote" in run.output
    assert list((nodes.shared / ".wildswarm-check").iterdir()) == []


def test_folders_that_are_not_shared_fail(nodes):
    run = check(nodes, ["alone1", "alone2", "unmounted"])
    assert run.rc != 0
    text = " ".join(run.output.split())
    assert "unmounted: /beegfs is not mounted" in text
    assert "alone1 cannot read back what alone2 wrote" in text
    assert "alone2 cannot read back what alone1 wrote" in text
    assert run.recap["alone1"]["failed"] == run.recap["alone2"]["failed"] == run.recap["unmounted"]["failed"] == 1


def test_wrong_filesystem_type_fails(nodes):
    inventory = nodes.write_inventory(nodes.workdir / "fstype", ["shared1", "shared2"])
    run = ansible_playbook(inventory, "beegfs/check.yml",
                           extra=["-e", f"@{nodes.extra}", "-e", "shared_fs_check_fstype=beegfs"])
    assert run.rc != 0
    assert "/beegfs is a" in run.output and "mount, not beegfs" in " ".join(run.output.split())
