"""beegfs/roles/wildswarm_layout against links planted in the data root, on a container.

The layout the role made before was group-writable all the way down (2775, without
the sticky bit): any member of the drop group, or any container, could replace
input/ with a link, and the next run re-owned and re-moded the link's target. Here a
group member's links stand in place of layout folders and in every folder one may
write; the role must refuse them, change nothing, and after the admin removed them
make the new layout: a root-owned top, a shared sticky input/, service-only folders.

The links are relative (../../etc), so that they reach /etc inside the node, where the
role runs, but lead nowhere on this machine, whose folder the node mounts at /beegfs.
"""
from __future__ import annotations

import pytest

from clusterkit import REPO, ansible_playbook, write_extra_vars

pytestmark = pytest.mark.docker

ROOT = "/beegfs/wildswarm"
LAYOUT = ["input", "uploads", "input_done", "input_failed", "output", "jobs", "models", "logs", "cache"]
OLD = ["input", "input_done", "input_failed", "output", "jobs", "models", "logs"]   # the old role's
MEMBER = "1234:10001"          # someone in the drop group
VICTIMS = ["/etc", "/root", "/etc/shadow", "/etc/passwd"]
# Planted in place of layout folders (relative to the data root) ...
IN_PLACE = {"input": "../../etc", "logs": "../../root"}
# ... and inside every folder a member could write (relative to that folder).
INSIDE = {"link-to-file": "../../../etc/shadow", "link-to-dir": "../../../root", "clip.mp4": "../../../etc/passwd"}


@pytest.fixture(scope="module")
def node(make_cluster):
    c = make_cluster()
    shared = c.workdir / "shared"
    shared.mkdir()
    n = c.start("node", ("beegfs_clients",), mounts=[f"{shared}:/beegfs"])
    n.extra = write_extra_vars(c.workdir / "test-vars.json")
    n.inventory = c.write_inventory(c.workdir / "inventory")
    n.playbook = c.workdir / "layout.yml"
    n.playbook.write_text(
        "- name: Wildswarm's folders on the shared filesystem\n"
        "  hosts: beegfs_clients\n  gather_facts: false\n  become: true\n"
        f"  roles:\n    - role: {REPO / 'beegfs' / 'roles' / 'wildswarm_layout'}\n")
    # The data root as the old role left it.
    n.exec("sh", "-ec", f"mkdir -p {' '.join(f'{ROOT}/{d}' for d in OLD)}"
                        f" && chown -R 10001:10001 {ROOT} && chmod 2775 {ROOT} {ROOT}/*")
    return n


def stats(node, paths, follow=False) -> dict[str, str]:
    out = node.exec("stat", *(["-L"] if follow else []), "-c", "%n %u %g %a", *paths)
    return {line.split()[0]: " ".join(line.split()[1:]) for line in out.splitlines()}


def layout(node, run):
    return ansible_playbook(node.inventory, str(node.playbook), extra=["-e", f"@{node.extra}", *run])


@pytest.fixture(scope="module")
def planted(node) -> dict:
    """The member's links: in place of input/ and logs/, and in every folder they may write."""
    victims = stats(node, VICTIMS)
    in_place, inside = [], []
    for name, target in IN_PLACE.items():
        node.exec("rm", "-rf", f"{ROOT}/{name}")
        node.exec("ln", "-s", target, f"{ROOT}/{name}")
        in_place.append(f"{ROOT}/{name}")
    for folder in [ROOT] + [f"{ROOT}/{d}" for d in OLD if d not in IN_PLACE]:
        for name, target in INSIDE.items():
            node.exec("ln", "-s", target if folder != ROOT else target[3:], f"{folder}/{name}")
            inside.append(f"{folder}/{name}")
    node.exec("chown", "-h", MEMBER, *in_place, *inside)
    assert node.exec("readlink", "-f", f"{ROOT}/input").strip() == "/etc"     # it is the attack
    return {"victims": victims, "in_place": in_place, "inside": inside}


def test_links_in_place_of_folders_stop_the_run_and_change_nothing(node, planted):
    paths = [ROOT, *[f"{ROOT}/{d}" for d in OLD], *planted["inside"]]
    before = stats(node, paths)

    run = layout(node, [])

    assert stats(node, VICTIMS) == planted["victims"], f"a link's target changed owner or mode:\n{run.tail()}"
    assert run.rc != 0, f"the role accepted a link in place of input/:\n{run.tail()}"
    assert stats(node, paths) == before, "the run changed something"
    text = " ".join(run.output.split())
    assert f"{ROOT}/input is a symbolic link (to ../../etc)" in text
    assert f"{ROOT}/logs is a symbolic link (to ../../root)" in text
    assert "Nothing was changed" in text
    assert run.recap["node"]["changed"] == 0


def test_after_the_admin_removed_them_the_layout_is_made_and_links_inside_are_left(node, planted):
    node.exec("rm", "-f", *planted["in_place"])           # what the message says to do
    links = stats(node, planted["inside"])

    run = layout(node, [])

    assert stats(node, VICTIMS) == planted["victims"], f"a link's target changed owner or mode:\n{run.tail()}"
    assert run.rc == 0, run.tail()
    assert stats(node, planted["inside"]) == links, "a link inside a folder was touched"
    want = {ROOT: "0 10001 2755", f"{ROOT}/input": "10001 10001 3775"}
    want.update({f"{ROOT}/{d}": "10001 10001 2755" for d in LAYOUT if d != "input"})
    assert stats(node, list(want)) == want

    again = layout(node, [])
    assert again.rc == 0 and again.changed() == {}, again.tail()


def test_a_data_root_that_is_a_link_is_refused(node):
    victims = stats(node, VICTIMS)
    node.exec("sh", "-ec", f"mv {ROOT} {ROOT}.real && ln -s ../etc {ROOT}")    # /etc in the node
    try:
        run = layout(node, [])
    finally:
        node.exec("sh", "-ec", f"rm {ROOT} && mv {ROOT}.real {ROOT}")
    assert stats(node, VICTIMS) == victims, f"a link's target changed owner or mode:\n{run.tail()}"
    assert run.rc != 0
    assert f"{ROOT} is a symbolic link (to ../etc)" in " ".join(run.output.split())
