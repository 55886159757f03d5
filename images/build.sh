#!/usr/bin/env bash
# Build every image the stack uses, skipping those whose inputs have not changed.
#
#   images/build.sh [auto|online|offline] [IMAGE...]     IMAGE: base rabbitmq prometheus
#                                                        node-exporter postgres proxy producer web worker
#   auto (default): online if the official base image is here or can be pulled, else offline
#   online:  app images FROM python:3.11-slim, infra images FROM debian:bookworm-slim
#   offline: every image from Debian's packages and PyPI alone: a debootstrapped base
#            (images/offline/base.sh) under everything; no container registry needed
#
# Each image carries the label org.wildswarm.inputs, a hash of what went into it (its
# Dockerfile and build files, the source for app images, its base image's id). When the
# image with that name already carries the same hash, its build is skipped, so a second
# `make images` costs seconds. Image names come from the same variables as stack.yml:
# WORKER_IMAGE, WEB_IMAGE, PRODUCER_IMAGE, RABBITMQ_IMAGE, PROMETHEUS_IMAGE,
# NODE_EXPORTER_IMAGE, POSTGRES_IMAGE, PROXY_IMAGE, and BASE_IMAGE_OFFLINE for the debootstrapped base.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-auto}
case "$MODE" in auto|online|offline) shift || true ;; *) MODE=auto ;; esac
WANTED=("$@")

: "${WORKER_IMAGE:=wildswarm/worker:latest}"
: "${WEB_IMAGE:=wildswarm/web:latest}"
: "${PRODUCER_IMAGE:=wildswarm/producer:latest}"
: "${RABBITMQ_IMAGE:=wildswarm/rabbitmq:3.10}"
: "${PROMETHEUS_IMAGE:=wildswarm/prometheus:2.42}"
: "${NODE_EXPORTER_IMAGE:=wildswarm/node-exporter:1.5}"
: "${POSTGRES_IMAGE:=wildswarm/postgres:15}"
: "${PROXY_IMAGE:=wildswarm/proxy:latest}"
: "${BASE_IMAGE_OFFLINE:=wildswarm/base:bookworm}"
PYTHON_BASE=${PYTHON_BASE_IMAGE:-python:3.11-slim}
DEBIAN_BASE=${DEBIAN_BASE_IMAGE:-debian:bookworm-slim}

log() { printf 'images: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

wanted() { [ ${#WANTED[@]} -eq 0 ] && return 0; local w; for w in "${WANTED[@]}"; do [ "$w" = "$1" ] && return 0; done; return 1; }

have_or_pull() {  # image: present locally, or pulled now
  docker image inspect "$1" >/dev/null 2>&1 && return 0
  timeout 120 docker pull -q "$1" >/dev/null 2>&1
}

if [ "$MODE" = auto ]; then
  if [ "${WILDSWARM_OFFLINE:-0}" = 1 ]; then MODE=offline
  elif have_or_pull "$PYTHON_BASE" && have_or_pull "$DEBIAN_BASE"; then MODE=online
  else MODE=offline; log "no container registry answers: building everything from Debian packages and PyPI"; fi
fi
log "mode: $MODE"

hash_files() {  # paths...: one hash of the names and contents of every file under them
  find "$@" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' ! -path '*.egg-info/*' -print0 \
    | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16
}

current_hash() { docker image inspect "$1" --format '{{index .Config.Labels "org.wildswarm.inputs"}}' 2>/dev/null || true; }

fresh() {  # image hash: true when the image exists with these inputs
  [ "$(current_hash "$1")" = "$2" ]
}

build_base() {
  local hash
  hash=$( { hash_files images/offline/base.sh; sha256sum < "${WILDSWARM_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"; } | sha256sum | cut -c1-16)
  if fresh "$BASE_IMAGE_OFFLINE" "$hash"; then log "$BASE_IMAGE_OFFLINE: up to date"; return; fi
  local t=$SECONDS
  bash images/offline/base.sh "$BASE_IMAGE_OFFLINE" "$hash"
  docker image prune -f --filter "label=org.wildswarm.image=base" >/dev/null 2>&1 || true
  log "$BASE_IMAGE_OFFLINE: built in $((SECONDS - t)) s"
}

build() {  # name image dockerfile base-image inputs...
  local name=$1 image=$2 dockerfile=$3 base=$4; shift 4
  local base_id hash t=$SECONDS
  base_id=$(docker image inspect "$base" --format '{{.Id}}' 2>/dev/null) || die "$name: base image $base is missing"
  hash=$( { echo "$base_id"; hash_files "$dockerfile" "$@"; } | sha256sum | cut -c1-16)
  if fresh "$image" "$hash"; then log "$image: up to date"; return; fi
  log "$image: building from $base"
  mkdir -p build/images
  if ! docker build -f "$dockerfile" --build-arg "BASE_IMAGE=$base" \
      --label "org.wildswarm.inputs=$hash" --label "org.wildswarm.image=$name" -t "$image" . \
      >"build/images/$name.log" 2>&1; then
    tail -n 40 "build/images/$name.log" >&2
    die "$name: docker build failed (log: build/images/$name.log)"
  fi
  # Images this one replaced are now dangling: ours to remove (nothing else is touched;
  # one still used by a container stays until a later build finds it free).
  docker image prune -f --filter "label=org.wildswarm.image=$name" >/dev/null 2>&1 || true
  log "$image: built in $((SECONDS - t)) s ($(docker image inspect "$image" --format '{{.Size}}' | numfmt --to=iec))"
}

if [ "$MODE" = offline ]; then
  build_base
  APP_BASE=$BASE_IMAGE_OFFLINE INFRA_BASE=$BASE_IMAGE_OFFLINE
else
  APP_BASE=$PYTHON_BASE INFRA_BASE=$DEBIAN_BASE
fi

APP_INPUTS=(images/entrypoint.sh pyproject.toml constraints.txt README.md src)
wanted rabbitmq      && build rabbitmq      "$RABBITMQ_IMAGE"      images/offline/rabbitmq/Dockerfile      "$INFRA_BASE" images/offline/rabbitmq
wanted prometheus    && build prometheus    "$PROMETHEUS_IMAGE"    images/offline/prometheus/Dockerfile    "$INFRA_BASE" images/offline/prometheus
wanted node-exporter && build node-exporter "$NODE_EXPORTER_IMAGE" images/offline/node-exporter/Dockerfile "$INFRA_BASE" images/offline/node-exporter
wanted postgres      && build postgres      "$POSTGRES_IMAGE"      images/offline/postgres/Dockerfile      "$INFRA_BASE" images/offline/postgres
wanted proxy         && build proxy         "$PROXY_IMAGE"         images/offline/proxy/Dockerfile         "$INFRA_BASE" images/offline/proxy
wanted producer      && build producer      "$PRODUCER_IMAGE"      images/producer/Dockerfile              "$APP_BASE" "${APP_INPUTS[@]}"
wanted web           && build web           "$WEB_IMAGE"           images/web/Dockerfile                   "$APP_BASE" "${APP_INPUTS[@]}"
wanted worker        && build worker        "$WORKER_IMAGE"        images/worker/Dockerfile                "$APP_BASE" "${APP_INPUTS[@]}"
log "done"
