#!/usr/bin/env bash
# Build the images tests/cluster uses, offline from Debian packages, and print their tags:
#   line 1: the node image (a fresh Debian 12 server standing in for a cluster host)
#   line 2: the stand-in service image (standin.Dockerfile)
# debootstrap a minbase bookworm, `docker import` it, `docker build` on top. Cached: an
# image whose inputs have not changed is not built again (its tag carries their hash).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
base=wildswarm-test/bookworm-minbase:1
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
hash="$(cat "$here/Dockerfile" "$here/entrypoint.sh" "$here/build.sh" | sha256sum | cut -c1-12)"
node="wildswarm-test/cluster-node:$hash"
standin="wildswarm-test/standin:$(cat "$here/standin.Dockerfile" <(echo "$node") | sha256sum | cut -c1-12)"

have() { docker image inspect "$1" >/dev/null 2>&1; }
drop_others() {  # older builds of repository $1, superseded by tag $2
    docker images --format '{{.Repository}}:{{.Tag}}' "$1" | grep -vx "$2" | xargs -r docker rmi >/dev/null 2>&1 || true
}

if ! have "$node"; then
    if ! have "$base"; then
        command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; } >&2
        root="$(mktemp -d)"
        trap 'rm -rf "$root"' EXIT
        debootstrap --variant=minbase bookworm "$root" "$mirror" >/dev/null
        tar -C "$root" -c . | docker import - "$base" >/dev/null
    fi
    docker build -q --build-arg "BASE=$base" -t "$node" "$here" >/dev/null
    drop_others wildswarm-test/cluster-node "$node"
fi
if ! have "$standin"; then
    docker build -q --build-arg "NODE_IMAGE=$node" -t "$standin" -f "$here/standin.Dockerfile" "$here" >/dev/null
    drop_others wildswarm-test/standin "$standin"
fi
# Superseded builds leave untagged layers behind: remove those of this script only.
docker image prune -f --filter label=org.wildswarm.test=cluster >/dev/null 2>&1 || true
echo "$node"
echo "$standin"
