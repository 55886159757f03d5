#!/bin/sh
# PID 1 of a test node: there is no systemd in a container, so start dockerd
# here when the node is meant to be a Swarm node (START_DOCKERD=1), then idle.
set -e
# As on a host booted by systemd, mounts are shared: the stack binds /beegfs/wildswarm
# with rslave propagation, which Docker refuses on a private mount.
mount --make-rshared / 2>/dev/null || true
if [ "${START_DOCKERD:-0}" = 1 ]; then
    # vfs: /var/lib/docker sits on the outer overlay (the stand-in images are tiny).
    # CGROUP_PARENT: where this node's containers go in the host's cgroup tree (the
    # test binds /sys/fs/cgroup), so the test can find and remove them afterwards.
    dockerd --storage-driver=vfs --log-level=warn ${CGROUP_PARENT:+--cgroup-parent="$CGROUP_PARENT"} \
        >/var/log/dockerd.log 2>&1 &
fi
exec sleep infinity
