"""beegfs/ and swarm/ run for real against four containers standing in for fresh servers.

mgmt     BeeGFS management + metadata + storage + client (no Docker)
head     Swarm manager, BeeGFS storage + client
worker1  Swarm worker; a blank data disk (a loop device) to format and mount
worker2  Swarm worker with a GPU label; a data disk that already holds a filesystem

First run: beegfs/site.yml, then swarm/site.yml (which deploys the real stack.yml
through scripts/stack.sh, with stand-in images loaded from an archive). Second run:
both again, and nothing may change; then both with --check, which must run through
and find nothing to change either. What needs BeeGFS's repository, its kernel
module or systemd is switched off (conftest.write_extra_vars); the rest is real.
"""
from __future__ import annotations

import json
import platform
import stat
import time

import pytest

from clusterkit import STACK_IMAGES, Run, ansible_playbook, sh, write_extra_vars

pytestmark = [pytest.mark.docker, pytest.mark.slow]

DATA_DIRS = ["input", "uploads", "input_done", "input_failed", "output", "jobs", "models", "logs", "cache"]
BEEGFS = ("beegfs_storage", "beegfs_clients")


@pytest.fixture(scope="module")
def cluster(make_cluster):
    c = make_cluster()
    shared = c.workdir / "beegfs"
    (shared / "wildswarm" / "output" / "earlier-video").mkdir(parents=True)
    (shared / "wildswarm" / "output" / "earlier-video" / "summary.json").write_text('{"earlier": true}\n')
    c.shared = shared
    blank = c.loop_device()
    used = c.loop_device(fstype="ext4", files={"keep-me": "data from before\n"})
    other = c.loop_device(fstype="ext4", files={"keep-me": "not to be formatted\n"})
    c.devices = {"blank": blank, "used": used, "other": other}
    mount = [f"{shared}:/beegfs"]
    disk = lambda dev: {"disks": [{"device": dev, "fstype": "ext4", "mountpoint": "/data/beegfs/disk1"}],
                        "beegfs_storage_dirs": ["/data/beegfs/disk1/storage"]}
    c.start("mgmt", ("beegfs_mgmt", "beegfs_meta", *BEEGFS), mounts=mount)
    c.start("head", ("swarm_managers", "swarm_nodes", *BEEGFS), dockerd=True, mounts=mount)
    c.start("worker1", ("swarm_workers", "swarm_nodes", *BEEGFS), dockerd=True, mounts=mount,
            devices=[blank, other], **disk(blank))
    c.start("worker2", ("swarm_workers", "swarm_nodes", "gpu_nodes", *BEEGFS), dockerd=True,
            mounts=mount, devices=[used], **disk(used))
    # Data a previous installation left: every run must keep it.
    c.nodes["mgmt"].exec("sh", "-c", "mkdir -p /data/beegfs/meta && echo meta > /data/beegfs/meta/keep-me")
    c.nodes["head"].exec("sh", "-c", "mkdir -p /data/beegfs/storage/chunks && echo chunk > /data/beegfs/storage/chunks/keep-me")

    # The stack's images: one stand-in under a name per service, in a `docker save` archive.
    tag = c.standin_image.split(":")[1]
    images = {f"{k}_IMAGE": f"wildswarm-test/stack-{k.lower().replace('_', '-')}:{tag}" for k in STACK_IMAGES}
    for name in images.values():
        sh("docker", "tag", c.standin_image, name)
        c.tags.append(name)
    archive = c.workdir / "images.tar"
    sh("docker", "save", "-o", str(archive), *images.values())
    c.images = images

    c.inventory = c.write_inventory(c.workdir / "inventory")
    c.extra = write_extra_vars(
        c.workdir / "test-vars.json",
        wildswarm_stack_image_archives=[str(archive)],
        wildswarm_stack_extra_env=images,
        wildswarm_stack_wait_timeout=300,
    )
    c.wait_for_dockerd()
    return c


@pytest.fixture(scope="module")
def runs(cluster) -> dict[str, Run]:
    extra = ["-e", f"@{cluster.extra}"]
    out, started = {}, time.monotonic()
    out["beegfs"] = ansible_playbook(cluster.inventory, "beegfs/site.yml", extra=extra)
    if out["beegfs"].rc == 0:
        out["swarm"] = ansible_playbook(cluster.inventory, "swarm/site.yml", extra=extra)
        if out["swarm"].rc == 0:
            out["again"] = ansible_playbook(cluster.inventory, "beegfs/site.yml", "swarm/site.yml", extra=extra)
            out["dry"] = ansible_playbook(cluster.inventory, "beegfs/site.yml", "swarm/site.yml",
                                          extra=[*extra, "--check", "--diff"])
    out["seconds"] = time.monotonic() - started
    print("playbook runs:", {k: round(v.seconds) for k, v in out.items() if isinstance(v, Run)})
    return out


def ok(run: Run | None, what: str) -> Run:
    assert run is not None, f"{what} did not run (an earlier run failed)"
    assert run.rc == 0, f"{what} failed:\n{run.tail()}"
    return run


def test_first_runs_succeed(runs):
    ok(runs["beegfs"], "beegfs/site.yml")
    ok(runs["swarm"], "swarm/site.yml")
    assert runs["beegfs"].recap and all(r["failed"] == 0 for r in runs["beegfs"].recap.values())


def test_second_run_changes_nothing(runs):
    again = ok(runs.get("again"), "second run")
    assert set(again.recap) >= {"mgmt", "head", "worker1", "worker2"}
    assert again.changed() == {}, f"second run changed {again.changed()}:\n{again.tail(150)}"


def test_dry_run_on_the_built_cluster_changes_nothing(runs):
    dry = ok(runs.get("dry"), "--check run")
    assert set(dry.recap) >= {"mgmt", "head", "worker1", "worker2"}
    assert dry.changed() == {}, f"--check run would change {dry.changed()}:\n{dry.tail(150)}"


def test_auth_file_made_once_and_root_only(cluster, runs):
    ok(runs.get("again"), "second run")
    local = cluster.inventory.parent / "secrets" / "beegfs-conn.auth"
    assert stat.S_IMODE(local.stat().st_mode) == 0o400
    assert stat.S_IMODE(local.parent.stat().st_mode) == 0o700
    secret = local.read_text()
    assert len(secret) >= 64
    for node in cluster.nodes.values():
        assert node.exec("stat", "-c", "%a %U %G", "/etc/beegfs/conn.auth").split() == ["400", "root", "root"]
        assert node.exec("cat", "/etc/beegfs/conn.auth") == secret
    # never shown in any output
    for run in (runs["beegfs"], runs["swarm"], runs["again"]):
        assert secret not in run.output


def test_beegfs_settings(cluster, runs):
    ok(runs["beegfs"], "beegfs/site.yml")
    mgmt_ip = cluster.nodes["mgmt"].address

    def conf(node, name):
        text = cluster.nodes[node].exec("cat", f"/etc/beegfs/{name}")
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))

    def clean(d):
        return {k.strip(): v.strip() for k, v in d.items()}

    mgmtd = clean(conf("mgmt", "beegfs-mgmtd.conf"))
    assert mgmtd["storeMgmtdDirectory"] == "/data/beegfs/mgmtd"
    assert mgmtd["connAuthFile"] == "/etc/beegfs/conn.auth"
    assert mgmtd["connDisableAuthentication"] == "false"
    meta = clean(conf("mgmt", "beegfs-meta.conf"))
    assert meta["sysMgmtdHost"] == mgmt_ip and meta["storeMetaDirectory"] == "/data/beegfs/meta"
    storage = clean(conf("worker1", "beegfs-storage.conf"))
    assert storage["storeStorageDirectory"] == "/data/beegfs/disk1/storage"
    assert storage["sysMgmtdHost"] == mgmt_ip
    for node in cluster.nodes:
        client = clean(conf(node, "beegfs-client.conf"))
        assert client["sysMgmtdHost"] == mgmt_ip and client["connAuthFile"] == "/etc/beegfs/conn.auth"
        assert clean(conf(node, "beegfs-helperd.conf"))["connAuthFile"] == "/etc/beegfs/conn.auth"
        assert cluster.nodes[node].exec("cat", "/etc/beegfs/beegfs-mounts.conf").split() == [
            "/beegfs", "/etc/beegfs/beegfs-client.conf"]
    # the storage service waits for its disk: a failed mount cannot put a new target on /
    dropin = cluster.nodes["worker1"].exec("cat", "/etc/systemd/system/beegfs-storage.service.d/wildswarm.conf")
    assert "RequiresMountsFor=/data/beegfs/disk1/storage" in dropin


def test_disks_formatted_only_when_blank(cluster, runs):
    ok(runs["beegfs"], "beegfs/site.yml")
    w1, w2 = cluster.nodes["worker1"], cluster.nodes["worker2"]
    for node, device in ((w1, cluster.devices["blank"]), (w2, cluster.devices["used"])):
        assert node.exec("blkid", "-p", "-o", "value", "-s", "TYPE", device).strip() == "ext4"
        assert node.exec("findmnt", "-n", "-o", "SOURCE", "--mountpoint", "/data/beegfs/disk1").strip() == device
        uuid = node.exec("blkid", "-p", "-o", "value", "-s", "UUID", device).strip()
        assert f"UUID={uuid} /data/beegfs/disk1 ext4" in node.exec("cat", "/etc/fstab")
        assert node.rc("test", "-d", "/data/beegfs/disk1/storage") == 0
    # the disk that held a filesystem was mounted as it was: its file is still there
    assert w2.exec("cat", "/data/beegfs/disk1/keep-me") == "data from before\n"


def test_existing_data_kept(cluster, runs):
    ok(runs.get("again"), "second run")
    assert cluster.nodes["mgmt"].exec("cat", "/data/beegfs/meta/keep-me") == "meta\n"
    assert cluster.nodes["head"].exec("cat", "/data/beegfs/storage/chunks/keep-me") == "chunk\n"
    assert (cluster.shared / "wildswarm/output/earlier-video/summary.json").read_text() == '{"earlier": true}\n'


def test_wildswarm_layout(cluster, runs):
    ok(runs["beegfs"], "beegfs/site.yml")
    root = cluster.shared / "wildswarm"
    st = root.lstat()         # root's, readable by the group: nobody else may replace a folder
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 10001, 0o2755)
    for name in DATA_DIRS:    # the service's; only input/ is shared (sticky), the rest service-only
        st = (root / name).lstat()
        assert stat.S_ISDIR(st.st_mode), name
        assert (st.st_uid, st.st_gid) == (10001, 10001), name
        assert stat.S_IMODE(st.st_mode) == (0o3775 if name == "input" else 0o2755), name
    for node in cluster.nodes.values():   # one folder seen alike from every node
        assert node.exec("ls", "/beegfs/wildswarm").split() == sorted(DATA_DIRS)
        assert node.exec("getent", "group", "wildswarm").startswith("wildswarm:x:10001:")
    # the cross-node check ran at the end of beegfs/site.yml, and cleaned up after itself
    assert "read back what 3 other node(s) wrote" in runs["beegfs"].output
    assert list((cluster.shared / ".wildswarm-check").iterdir()) == []


def test_swarm_formed_and_labelled(cluster, runs):
    ok(runs["swarm"], "swarm/site.yml")
    head = cluster.nodes["head"]
    nodes = {}
    for node_id in head.exec("docker", "node", "ls", "-q").split():
        info = json.loads(head.exec("docker", "node", "inspect", node_id))[0]
        nodes[info["Description"]["Hostname"]] = info
    assert set(nodes) == {"head", "worker1", "worker2"}      # mgmt is no Swarm node
    assert nodes["head"]["Spec"]["Role"] == "manager"
    assert nodes["worker1"]["Spec"]["Role"] == nodes["worker2"]["Spec"]["Role"] == "worker"
    assert nodes["head"]["Spec"].get("Labels", {}) == {}
    assert nodes["worker1"]["Spec"]["Labels"] == {"wildswarm.worker": "true"}
    assert nodes["worker2"]["Spec"]["Labels"] == {"wildswarm.worker": "true", "wildswarm.gpu": "true"}
    for name in ("head", "worker1", "worker2"):   # advertised on the cluster address
        assert nodes[name]["Status"]["Addr"] == cluster.nodes[name].address


def test_join_tokens_never_shown_or_stored(cluster, runs):
    ok(runs["swarm"], "swarm/site.yml")
    tokens = [cluster.nodes["head"].exec("docker", "swarm", "join-token", "-q", kind).strip()
              for kind in ("worker", "manager")]
    for run in (runs["swarm"], runs["again"]):
        assert "SWMTKN" not in run.output
    for path in cluster.workdir.rglob("*"):
        if path.is_file() and path.stat().st_size < 1_000_000:
            text = path.read_bytes()
            assert not any(t.encode() in text for t in tokens), path
    for node in ("worker1", "worker2"):
        assert cluster.nodes[node].exec("sh", "-c", "grep -rl SWMTKN /etc /var/lib/wildswarm 2>/dev/null || true").strip() == ""


def test_stack_deployed_on_the_shared_root(cluster, runs):
    ok(runs["swarm"], "swarm/site.yml")
    head = cluster.nodes["head"]
    services = head.exec("docker", "stack", "services", "wildswarm", "--format", "{{.Name}} {{.Replicas}}")
    replicas = dict(line.split()[:2] for line in services.splitlines())
    assert set(replicas) == {f"wildswarm_{s}" for s in
                             ("proxy", "rabbitmq", "postgres", "producer", "web", "worker", "prometheus",
                              "docker-api", "node-exporter")}
    assert replicas["wildswarm_worker"] == "2/2"            # one per labelled worker node
    assert all(r.split("/")[0] == r.split("/")[1] for r in replicas.values()), replicas
    spec = json.loads(head.exec("docker", "service", "inspect", "wildswarm_worker"))[0]["Spec"]
    mount, models = spec["TaskTemplate"]["ContainerSpec"]["Mounts"]
    assert mount["Source"] == "/beegfs/wildswarm" and mount["Target"] == "/data"
    assert mount["BindOptions"]["Propagation"] == "rslave"
    assert models["Source"] == "/beegfs/wildswarm/models" and models["Target"] == "/data/models"
    assert models["ReadOnly"] is True and models["BindOptions"]["Propagation"] == "rslave"
    assert spec["TaskTemplate"]["ContainerSpec"]["Image"] == cluster.images["WORKER_IMAGE"]
    tasks = head.exec("docker", "service", "ps", "wildswarm_worker", "--filter", "desired-state=running",
                      "--format", "{{.Node}}").split()
    assert sorted(tasks) == ["worker1", "worker2"]
    # the images came from the archive on the shared filesystem, loaded once per node
    assert (cluster.shared / ".wildswarm-images" / "images.tar").is_file()
    # secrets made on the manager, kept there root-only
    assert head.exec("stat", "-c", "%a", "/opt/wildswarm/.secrets").strip() == "700"
    secrets = head.exec("docker", "secret", "ls", "--format", "{{.Name}}").split()
    assert {"wildswarm_broker_admin_password", "wildswarm_broker_worker_password", "wildswarm_db_password",
            "wildswarm_tls_cert", "wildswarm_tls_key"} <= set(secrets), secrets


def test_disk_holding_another_filesystem_is_never_formatted(cluster, runs):
    ok(runs.get("again"), "second run")
    device = cluster.devices["other"]
    disks = {"disks": [{"device": device, "fstype": "xfs", "mountpoint": "/data/other"}]}
    run = ansible_playbook(cluster.inventory, "beegfs/disks.yml",
                           extra=["-e", f"@{cluster.extra}", "-e", json.dumps(disks), "--limit", "worker1"])
    assert run.rc != 0
    assert "already holds ext4, not xfs. Nothing was changed" in " ".join(run.output.split())
    w1 = cluster.nodes["worker1"]
    assert w1.exec("blkid", "-p", "-o", "value", "-s", "TYPE", device).strip() == "ext4"
    assert w1.exec("debugfs", "-R", "cat /keep-me", device) == "not to be formatted\n"


def test_major_version_change_refused(cluster, runs):
    """A node with BeeGFS 7.3 installed and beegfs_version 8.3: preflight stops, nothing changes."""
    ok(runs.get("again"), "second run")
    w2 = cluster.nodes["worker2"]
    w2.exec("sh", "-c", "mkdir -p /tmp/fake/DEBIAN && printf '%s\\n' 'Package: beegfs-client' 'Version: 7.3.2'"
            " 'Architecture: all' 'Maintainer: test <test@example.org>' 'Description: stand-in'"
            " > /tmp/fake/DEBIAN/control && dpkg-deb --build /tmp/fake /tmp/fake.deb >/dev/null"
            " && dpkg -i /tmp/fake.deb >/dev/null")
    try:
        run = ansible_playbook(cluster.inventory, "beegfs/site.yml", extra=[
            "-e", f"@{cluster.extra}", "-e", "beegfs_use_packages=true", "-e", "beegfs_version=8.3",
            "--limit", "worker2"])
    finally:
        w2.exec("dpkg", "--purge", "beegfs-client")
    assert run.rc != 0
    text = " ".join(run.output.split())
    assert "worker2 has BeeGFS 7.3.2 installed and beegfs_version is 8.3" in text
    assert "first to 7.4.6" in text
    assert run.recap["worker2"]["changed"] == 0
    assert w2.rc("test", "-e", "/etc/apt/sources.list.d/beegfs.list") == 1   # no repository added


@pytest.mark.skipif(tuple(int(x) for x in platform.release().split("-")[0].split(".")[:2]) < (6, 12),
                    reason="needs a kernel 6.12 or later, as this machine's is not")
def test_old_client_refused_on_new_kernel(cluster, runs):
    ok(runs.get("again"), "second run")
    run = ansible_playbook(cluster.inventory, "beegfs/site.yml", extra=[
        "-e", f"@{cluster.extra}", "-e", "beegfs_client_kernel_check=true", "--limit", "worker1"])
    assert run.rc != 0
    text = " ".join(run.output.split())
    assert "BeeGFS clients before 8.3 do not build on kernels 6.12 and later" in text
    assert "changed=0" in text


def test_beegfs_8_settings(cluster, runs):
    """8.x where it differs: mgmtd's TOML and database, TLS for the CLI, no helperd."""
    ok(runs.get("again"), "second run")
    run = ansible_playbook(cluster.inventory, "beegfs/site.yml", extra=[
        "-e", f"@{cluster.extra}", "-e", "beegfs_version=8.3", "--limit", "mgmt,worker1"])
    assert run.rc == 0, run.tail()
    mgmt, w1 = cluster.nodes["mgmt"], cluster.nodes["worker1"]
    toml = mgmt.exec("cat", "/etc/beegfs/beegfs-mgmtd.toml")
    for line in ('db-file = "/var/lib/beegfs/mgmtd.sqlite"', 'auth-file = "/etc/beegfs/conn.auth"',
                 "auth-disable = false", "tls-disable = false", 'tls-key-file = "/etc/beegfs/key.pem"'):
        assert line in toml
    secrets_dir = cluster.inventory.parent / "secrets"
    assert stat.S_IMODE((secrets_dir / "beegfs-tls-key.pem").stat().st_mode) == 0o400
    assert mgmt.exec("stat", "-c", "%a", "/etc/beegfs/key.pem").strip() == "400"
    assert w1.rc("test", "-e", "/etc/beegfs/key.pem") == 1       # the key: mgmtd host only
    cert = sh("openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(secrets_dir / "beegfs-tls-cert.pem"))
    assert f"IP Address:{mgmt.address}" in cert
    assert w1.exec("cat", "/etc/beegfs/cert.pem") == (secrets_dir / "beegfs-tls-cert.pem").read_text()
    assert f"BEEGFS_MGMTD_ADDR={mgmt.address}:8010" in w1.exec("cat", "/etc/profile.d/beegfs-cli.sh")
