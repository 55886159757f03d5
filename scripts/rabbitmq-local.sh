#!/usr/bin/env bash
# A local RabbitMQ for wildswarm's integration tests and benchmarks.
#
#   scripts/rabbitmq-local.sh          install (apt, if missing), configure, start, create the user
#   scripts/rabbitmq-local.sh --stop   stop the node this script manages
#   scripts/rabbitmq-local.sh --env    print the WILDSWARM_BROKER_* variables that point at it
#
# Idempotent: run it as often as you like; a running node is left running and
# only the user, its permissions and the plugins are (re)checked.
#
# Needs root (apt, and the Debian wrapper switches to the rabbitmq user) and
# no systemd: the node is started in the background with `rabbitmq-server`.
#
# The node listens on 127.0.0.1 only: AMQP 5672, management 15672, Prometheus
# 15692, Erlang distribution 25672 and epmd 4369. consumer_timeout is raised
# for long videos (RabbitMQ's default of 30 minutes would close a worker's
# channel under a long analysis; for quorum queues in 3.10 the setting is
# server-wide -- per queue (x-consumer-timeout) only from 3.11.15).
#
# The password of user `wildswarm` is read from $WILDSWARM_TEST_BROKER_PASSWORD_FILE
# (default /var/lib/wildswarm-test/broker-password), generated if absent. It is
# never printed and never passed on a command line.
set -euo pipefail

PASSWORD_FILE=${WILDSWARM_TEST_BROKER_PASSWORD_FILE:-/var/lib/wildswarm-test/broker-password}
CONSUMER_TIMEOUT_MS=${WILDSWARM_TEST_CONSUMER_TIMEOUT_MS:-21600000}   # 6 hours
BROKER_USER=wildswarm
NODENAME=rabbit@localhost
STATE_DIR=/var/lib/wildswarm-test
START_LOG=/var/log/rabbitmq/wildswarm-local-startup.log
MARKER="# managed by wildswarm scripts/rabbitmq-local.sh"

log() { printf 'rabbitmq-local: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (apt, and rabbitmq's wrapper switches to the rabbitmq user)"

# rabbitmqctl and friends read the node name from the env file written below;
# export it too so the calls here work before that file exists.
export RABBITMQ_NODENAME=$NODENAME
ctl() { timeout 60 rabbitmqctl -q "$@"; }
running() { timeout 30 rabbitmq-diagnostics -q ping >/dev/null 2>&1; }

case "${1:-}" in
  --env)
    echo "WILDSWARM_BROKER_HOST=127.0.0.1"
    echo "WILDSWARM_BROKER_PORT=5672"
    echo "WILDSWARM_BROKER_VHOST=/"
    echo "WILDSWARM_BROKER_USER=$BROKER_USER"
    echo "WILDSWARM_BROKER_PASSWORD_FILE=$PASSWORD_FILE"
    exit 0 ;;
  --stop)
    if running; then ctl stop && log "stopped $NODENAME"; else log "$NODENAME is not running"; fi
    exit 0 ;;
  "") ;;
  *) die "unknown option $1 (use --env or --stop)" ;;
esac

install_server() {
  command -v rabbitmq-server >/dev/null 2>&1 && return 0
  log "installing rabbitmq-server (apt)"
  # Keep the package's postinst from starting a node with the default
  # (all-interfaces) configuration before ours is written.
  local policy=/usr/sbin/policy-rc.d added=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null
  [ -n "$added" ] && rm -f "$policy"
  command -v rabbitmq-server >/dev/null 2>&1 || die "rabbitmq-server did not install"
}

write_if_changed() {  # path content: write when different, keep a backup of a foreign file
  local path=$1 content=$2
  if [ -f "$path" ] && [ "$(cat "$path")" = "$content" ]; then return 0; fi
  if [ -f "$path" ] && ! grep -qF "$MARKER" "$path"; then cp -p "$path" "$path.wildswarm-backup"; fi
  printf '%s\n' "$content" >"$path"
  chown rabbitmq:rabbitmq "$path" 2>/dev/null || true
  chmod 644 "$path"
  CONFIG_CHANGED=1
}

configure() {
  mkdir -p /etc/rabbitmq
  CONFIG_CHANGED=
  write_if_changed /etc/rabbitmq/rabbitmq-env.conf "$MARKER
NODENAME=$NODENAME
NODE_IP_ADDRESS=127.0.0.1
NODE_PORT=5672
ERL_EPMD_ADDRESS=127.0.0.1
SERVER_ADDITIONAL_ERL_ARGS=\"-kernel inet_dist_use_interface {127,0,0,1}\""
  write_if_changed /etc/rabbitmq/rabbitmq.conf "$MARKER
listeners.tcp.default = 127.0.0.1:5672
management.tcp.ip = 127.0.0.1
management.tcp.port = 15672
prometheus.tcp.ip = 127.0.0.1
prometheus.tcp.port = 15692
loopback_users.guest = true
# Long videos: a delivery may stay unacknowledged this long (ms) before the
# broker closes the worker's channel. Server-wide for quorum queues in 3.10.
consumer_timeout = $CONSUMER_TIMEOUT_MS"
}

start_server() {
  if running; then
    [ -n "$CONFIG_CHANGED" ] && log "configuration changed; it applies after a restart (--stop, then run again)"
    log "$NODENAME already running"
    return 0
  fi
  rabbitmq-plugins --offline -q enable rabbitmq_management rabbitmq_prometheus >/dev/null
  mkdir -p "$STATE_DIR" "$(dirname "$START_LOG")"
  log "starting $NODENAME (log: $START_LOG)"
  # setsid: the node outlives this script and the shell that ran it.
  setsid rabbitmq-server >>"$START_LOG" 2>&1 </dev/null &
  echo $! >"$STATE_DIR/rabbitmq-server.pid"
  local deadline=$((SECONDS + 180)) pid=$!
  until running; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$START_LOG" >&2 || true
      die "rabbitmq-server exited during startup"
    fi
    [ $SECONDS -lt $deadline ] || die "no answer from $NODENAME after 180 s (see $START_LOG)"
    sleep 1
  done
  ctl await_startup --timeout 120 || die "$NODENAME did not finish booting"
  log "$NODENAME is up"
}

ensure_password() {
  if [ ! -s "$PASSWORD_FILE" ]; then
    mkdir -p "$(dirname "$PASSWORD_FILE")"
    chmod 700 "$(dirname "$PASSWORD_FILE")" 2>/dev/null || true
    (umask 077; head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32 >"$PASSWORD_FILE")
    log "generated a password in $PASSWORD_FILE"
  fi
  chmod 600 "$PASSWORD_FILE"
}

ensure_user() {
  # The password goes through stdin, never the command line (visible in ps).
  if ctl list_users --no-table-headers | awk '{print $1}' | grep -qx "$BROKER_USER"; then
    ctl change_password "$BROKER_USER" <"$PASSWORD_FILE" >/dev/null
  else
    ctl add_user "$BROKER_USER" <"$PASSWORD_FILE" >/dev/null
  fi
  # administrator, as the tests' own broker gives its user (tests/kit/services.py): the tests read
  # /api/nodes (monitoring) and set policies; this broker listens on 127.0.0.1 only.
  ctl set_user_tags "$BROKER_USER" administrator >/dev/null
  ctl set_permissions -p / "$BROKER_USER" '.*' '.*' '.*' >/dev/null
  rabbitmq-plugins -q enable rabbitmq_management rabbitmq_prometheus >/dev/null
}

install_server
configure
start_server
ensure_password
ensure_user
log "ready: amqp://$BROKER_USER@127.0.0.1:5672/ (password in $PASSWORD_FILE; management http://127.0.0.1:15672, metrics http://127.0.0.1:15692/metrics)"
