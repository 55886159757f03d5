#!/usr/bin/env bash
# Docker Engine and a one-node Swarm on this machine, for `make up` and the e2e tests.
#
#   scripts/docker-local.sh    install docker.io (apt) if missing, start dockerd if it is not
#                              running, wait for `docker info`, `docker swarm init` if this
#                              node is in no Swarm, label it wildswarm.worker=true (when
#                              the Swarm is this one node); install docker-compose (apt,
#                              Debian's v1.29) if missing: the tests bring their RabbitMQ
#                              and PostgreSQL up with it (pytest-docker)
#
# Idempotent: a running daemon, an existing Swarm and the label are left as they are.
# Needs root only for what it has to change (apt, starting dockerd).
# On a cluster use swarm/ (Ansible) instead: it joins many nodes and labels the workers.
set -euo pipefail

ADVERTISE_ADDR=${WILDSWARM_SWARM_ADVERTISE_ADDR:-127.0.0.1}
DOCKERD_LOG=${WILDSWARM_DOCKERD_LOG:-/var/log/dockerd.log}

log() { printf 'docker-local: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
answers() { timeout 20 docker info >/dev/null 2>&1; }

install_engine() {
  command -v dockerd >/dev/null 2>&1 && command -v docker >/dev/null 2>&1 && return 0
  [ "$(id -u)" = 0 ] || die "Docker Engine is missing; run as root to install docker.io (apt)"
  log "installing Docker Engine (apt: docker.io)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io iptables >/dev/null
  command -v dockerd >/dev/null 2>&1 || die "docker.io did not install dockerd"
}

install_compose() {
  command -v docker-compose >/dev/null 2>&1 && return 0
  [ "$(id -u)" = 0 ] || die "docker-compose is missing; run as root to install it (apt)"
  log "installing docker-compose (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends docker-compose >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends docker-compose >/dev/null; }
  command -v docker-compose >/dev/null 2>&1 || die "docker-compose did not install"
}

start_daemon() {
  if answers; then return 0; fi
  if ! pgrep -x dockerd >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || die "dockerd is not running; run as root to start it"
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
      log "starting docker.service"
      systemctl start docker || true
    fi
    if ! pgrep -x dockerd >/dev/null 2>&1; then
      log "starting dockerd (log: $DOCKERD_LOG)"
      mkdir -p "$(dirname "$DOCKERD_LOG")"
      # setsid: the daemon outlives this script and the shell that ran it.
      setsid dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
    fi
  fi
  local deadline=$((SECONDS + 120))
  until answers; do
    [ $SECONDS -lt $deadline ] || { tail -n 30 "$DOCKERD_LOG" >&2 2>/dev/null || true; die "no answer from dockerd after 120 s"; }
    sleep 1
  done
  log "dockerd answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
}

init_swarm() {
  local state
  state=$(docker info --format '{{.Swarm.LocalNodeState}}')
  case "$state" in
    active) ;;
    inactive)
      log "initialising a one-node Swarm (advertise address $ADVERTISE_ADDR)"
      docker swarm init --advertise-addr "$ADVERTISE_ADDR" >/dev/null ;;
    *) die "this node's Swarm state is '$state'; fix it (docker swarm leave --force) and run again" ;;
  esac
  [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = true ] \
    || die "this node is in a Swarm but is no manager: run make up on a manager node"
}

label_node() {
  # Only a one-node Swarm (this machine) is labelled here; a cluster's workers are
  # labelled by its bootstrap (swarm/), and a manager there may not be meant to work.
  local node
  [ "$(docker info --format '{{.Swarm.Nodes}}')" = 1 ] || { log "a Swarm of several nodes: labels left to the bootstrap"; return 0; }
  node=$(docker info --format '{{.Swarm.NodeID}}')
  if [ "$(docker node inspect "$node" --format '{{index .Spec.Labels "wildswarm.worker"}}')" != true ]; then
    docker node update --label-add wildswarm.worker=true "$node" >/dev/null
    log "labelled node $(docker node inspect "$node" --format '{{.Description.Hostname}}') wildswarm.worker=true"
  fi
}

install_engine
install_compose
start_daemon
init_swarm
label_node
log "ready: $(docker info --format '{{.Swarm.Nodes}}') node(s) in the Swarm, this one a manager labelled for workers"
