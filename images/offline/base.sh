#!/usr/bin/env bash
# The offline base image: Debian bookworm (minbase) + Python 3.11 + CA certificates,
# made with debootstrap from Debian's packages alone and loaded with `docker import`.
#
#   images/offline/base.sh NAME:TAG INPUTS_HASH
#
# Called by images/build.sh, which skips it when an image with the same inputs exists.
# It stands in for python:3.11-slim where no container registry answers: the app
# Dockerfiles only need `python3 -m venv` and apt, which both images have.
#
# This machine's CA bundle is copied in (and PIP_CERT points at it) so that pip inside
# builds trusts whatever TLS the site's way to PyPI presents.
set -euo pipefail

NAME=${1:?image name}
HASH=${2:?inputs hash}
SUITE=${WILDSWARM_DEBIAN_SUITE:-bookworm}
MIRROR=${WILDSWARM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CA_BUNDLE=${WILDSWARM_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

log() { printf 'base: %s\n' "$*" >&2; }

if ! command -v debootstrap >/dev/null 2>&1; then
  log "installing debootstrap (apt)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

ROOT=$(mktemp -d /var/tmp/wildswarm-base.XXXXXX)
trap 'rm -rf "$ROOT"' EXIT
log "debootstrap --variant=minbase $SUITE (about a minute)"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  "$SUITE" "$ROOT" "$MIRROR" >"$ROOT.log" 2>&1 || { tail -n 30 "$ROOT.log" >&2; rm -f "$ROOT.log"; exit 1; }
rm -f "$ROOT.log"

cat >"$ROOT/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
EOF
# Like the official slim images: no recommends, no docs, no apt caches in layers.
cat >"$ROOT/etc/apt/apt.conf.d/90wildswarm" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
EOF
cat >"$ROOT/etc/dpkg/dpkg.cfg.d/90wildswarm-nodoc" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
install -m 644 "$CA_BUNDLE" "$ROOT/etc/ssl/certs/wildswarm-build-ca.crt"
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb \
       "$ROOT"/usr/share/doc/*/changelog* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* \
       "$ROOT"/var/log/*.log "$ROOT"/tmp/* "$ROOT"/dev/*

tar --numeric-owner -C "$ROOT" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/wildswarm-build-ca.crt' \
  --change "LABEL org.wildswarm.inputs=$HASH org.wildswarm.image=base org.opencontainers.image.description=\"Debian $SUITE minbase + python3 (wildswarm offline base)\"" \
  --change 'CMD ["python3"]' \
  - "$NAME" >/dev/null
log "imported $NAME ($(docker image inspect "$NAME" --format '{{.Size}}' | numfmt --to=iec))"
