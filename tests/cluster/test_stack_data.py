"""scripts/stack.sh prepare-data: the data root's folders, and never what a link points at.

`make up` and the cluster's deploy run the preparation as root. Members of the group
that drops videos (and the containers) can write into the data folders, so they can
plant symbolic links there; the preparation must change the owner of the stack's own
folders only, refuse a folder that is a link, and never follow or recurse into what
people dropped.
"""
from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LAYOUT = ["input", "uploads", "input_done", "input_failed", "output", "jobs", "models", "logs", "cache"]
SERVICE = (10001, 10001)          # the uid/gid the containers run as when root deploys
MEMBER = (1234, 10001)            # someone in the group that may drop videos
MODES = {name: 0o3775 if name == "input" else 0o2755 for name in LAYOUT}

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: only root's preparation changes owners")


def prepare(root: Path, **settings: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WILDSWARM_") and k != "DATA_ROOT_OWNER"}
    env.update(settings, WILDSWARM_DATA=str(root))
    return subprocess.run(["bash", str(REPO / "scripts" / "stack.sh"), "prepare-data"],
                          capture_output=True, text=True, env=env, timeout=60)


def owner_mode(path: Path, follow: bool = True) -> tuple[int, int, int]:
    st = path.stat() if follow else path.lstat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


@pytest.fixture
def victims(tmp_path) -> dict[Path, tuple[int, int, int]]:
    """Root-only things outside the data root, and their owner and mode now."""
    outside = tmp_path / "outside"
    (outside / "secret-dir").mkdir(parents=True)
    (outside / "secret").write_text("root only\n")
    (outside / "secret-dir" / "inner").write_text("root only\n")
    for path, mode in ((outside / "secret", 0o600), (outside / "secret-dir", 0o700),
                       (outside / "secret-dir" / "inner", 0o600)):
        os.chown(path, 0, 0)
        path.chmod(mode)
    return {p: owner_mode(p) for p in (outside / "secret", outside / "secret-dir", outside / "secret-dir" / "inner")}


@pytest.fixture
def planted(tmp_path, victims) -> Path:
    """A data root as an earlier deploy left it, with links planted by a group member in
    every folder one may write (the root and each layout folder), and a video dropped by root."""
    root = tmp_path / "data"
    root.mkdir()
    os.chown(root, *SERVICE)
    secret, secret_dir = (tmp_path / "outside" / "secret", tmp_path / "outside" / "secret-dir")
    for folder in [root] + [root / name for name in LAYOUT]:
        folder.mkdir(exist_ok=True)
        os.chown(folder, *SERVICE)
        folder.chmod(0o2775)
        for name, target in (("link-to-file", secret), ("link-to-dir", secret_dir),
                             ("link-to-file.mp4", secret)):
            (folder / name).symlink_to(target)
            os.lchown(folder / name, *MEMBER)
    dropped = root / "input" / "dropped.mp4"
    dropped.write_bytes(b"\0" * 16)
    os.chown(dropped, 0, 0)
    dropped.chmod(0o640)
    return root


def assert_untouched(victims, result):
    changed = {str(p): (before, owner_mode(p)) for p, before in victims.items() if owner_mode(p) != before}
    assert changed == {}, f"a link's target changed (before, after):\n{changed}\n{result.stdout}{result.stderr}"


def test_links_in_the_folders_are_never_followed(planted, victims):
    before = {p: owner_mode(p, follow=False) for p in planted.rglob("*")}
    result = prepare(planted)
    assert result.returncode == 0, result.stderr
    assert_untouched(victims, result)
    for name in LAYOUT:                       # the stack's own folders are the service's
        assert owner_mode(planted / name)[:2] == SERVICE, name
    # nothing else changes: the links, the dropped video (never recursed into), the
    # folders' modes (set only when the preparation makes a folder)
    after = {p: owner_mode(p, follow=False) for p in before}
    assert {str(p): (before[p], after[p]) for p in before if before[p] != after[p]} == {}
    assert owner_mode(planted / "input" / "dropped.mp4") == (0, 0, 0o640)


@pytest.mark.parametrize("name", LAYOUT)
def test_a_layout_folder_that_is_a_link_is_refused(planted, victims, tmp_path, name):
    folder = planted / name
    if folder.exists():
        for child in folder.iterdir():
            child.unlink()
        folder.rmdir()
    folder.symlink_to(tmp_path / "outside" / "secret-dir")
    result = prepare(planted)
    assert result.returncode != 0, f"a link in place of {name}/ was accepted:\n{result.stderr}"
    assert f"{folder} is a symbolic link" in result.stderr
    assert_untouched(victims, result)
    assert folder.is_symlink()                # left for the admin to look at, not removed


def test_a_fresh_root_gets_the_layout(tmp_path):
    root = tmp_path / "new" / "data"
    result = prepare(root)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in root.iterdir()) == sorted(LAYOUT)
    for name in LAYOUT:
        assert owner_mode(root / name) == (*SERVICE, MODES[name]), name
    first = {p: owner_mode(p) for p in [root, *root.iterdir()]}
    assert prepare(root).returncode == 0
    assert {p: owner_mode(p) for p in first} == first      # a second run changes nothing


def test_an_existing_root_goes_to_the_service_alone(tmp_path):
    """`make up` on a data/ made beforehand: the root (the web app's health check writes
    there), not what is in it."""
    root = tmp_path / "data"
    (root / "mine").mkdir(parents=True)
    (root / "mine").chmod(0o755)
    root.chmod(0o750)
    result = prepare(root)
    assert result.returncode == 0, result.stderr
    assert owner_mode(root) == (*SERVICE, 0o750)
    assert owner_mode(root / "mine") == (0, 0, 0o755)


def test_a_root_kept_as_it_is_on_a_cluster(tmp_path):
    """The cluster's root is made root-owned by the layout role; the deploy keeps it so."""
    root = tmp_path / "data"
    root.mkdir()
    root.chmod(0o2755)
    result = prepare(root, DATA_ROOT_OWNER="keep")
    assert result.returncode == 0, result.stderr
    assert owner_mode(root) == (0, 0, 0o2755)
    assert all(owner_mode(root / name)[:2] == SERVICE for name in LAYOUT)


def test_every_folder_the_services_make_at_the_root_is_made_on_a_cluster(tmp_path):
    """On a cluster the root stays root's: the services (uid 10001) cannot make a folder in it, so each
    one they write at the root by default must be in the layout. The backends' cache (<data>/cache:
    timings, exports, OpenVINO's compiled networks) was not: every worker start on a cluster measured
    the backends and compiled the networks again, each time warning that the cache was out of use."""
    from wildswarm.config import Settings
    from wildswarm.layout import Layout

    root = tmp_path / "data"
    root.mkdir()
    root.chmod(0o2755)
    result = prepare(root, DATA_ROOT_OWNER="keep")
    assert result.returncode == 0, result.stderr
    settings, layout = Settings(data=root), Layout(root)
    written = {settings.cache, settings.models, layout.input, layout.input_done, layout.input_failed,
               layout.output, layout.uploads, layout.logs}
    assert {p.name for p in written if p.parent == root} <= set(LAYOUT)
    for folder in written:
        assert folder.is_dir() and owner_mode(folder)[:2] == SERVICE, folder


def test_the_cluster_role_makes_the_same_folders():
    """beegfs/roles/wildswarm_layout makes on the cluster what `scripts/stack.sh prepare-data` makes."""
    role = yaml.safe_load((REPO / "beegfs/roles/wildswarm_layout/defaults/main.yml").read_text())
    script = re.search(r"^DATA_LAYOUT=\(([^)]*)\)", (REPO / "scripts/stack.sh").read_text(), re.M).group(1)
    assert sorted(role["wildswarm_data_dirs"]) == sorted(item.split("=")[0] for item in script.split())
