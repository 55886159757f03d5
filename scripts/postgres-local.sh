#!/usr/bin/env bash
# A local PostgreSQL for wildswarm's benchmarks and for quick local test runs.
#
#   scripts/postgres-local.sh          install (apt, if missing), start, create role and database
#   scripts/postgres-local.sh --stop   stop the cluster this script manages
#   scripts/postgres-local.sh --env    print the WILDSWARM_DB_* variables that point at it
#
# The tests themselves (make test, CI) use the project's own PostgreSQL image, brought up by
# pytest-docker; this host-installed one is for `make bench-jobstore` / `make bench-dispatch`,
# and for `WILDSWARM_TEST_SERVICES=host pytest ...` when you want to skip the containers.
#
# Idempotent. Needs root (apt; the server runs as the postgres user). Debian's cluster 15/main
# listens on 127.0.0.1:5432 only. The password of role `wildswarm` (owner of database
# `wildswarm`) is read from $WILDSWARM_TEST_DB_PASSWORD_FILE (default
# /var/lib/wildswarm-test/db-password), generated if absent; never printed.
set -euo pipefail

PASSWORD_FILE=${WILDSWARM_TEST_DB_PASSWORD_FILE:-/var/lib/wildswarm-test/db-password}
VERSION=15
CLUSTER=main

log() { printf 'postgres-local: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

case "${1:-}" in
  --env)
    echo "WILDSWARM_DB_HOST=127.0.0.1"
    echo "WILDSWARM_DB_PORT=5432"
    echo "WILDSWARM_DB_NAME=wildswarm"
    echo "WILDSWARM_DB_USER=wildswarm"
    echo "WILDSWARM_DB_PASSWORD_FILE=$PASSWORD_FILE"
    exit 0 ;;
  --stop) pg_ctlcluster "$VERSION" "$CLUSTER" stop 2>/dev/null && log "stopped" || log "not running"; exit 0 ;;
  "") ;;
  *) die "unknown option $1 (use --env or --stop)" ;;
esac

[ "$(id -u)" = 0 ] || die "run as root (apt; the server runs as the postgres user)"

if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ ! -x /usr/lib/postgresql/$VERSION/bin/postgres ]; then
  log "installing postgresql-$VERSION (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends postgresql-$VERSION >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql-$VERSION >/dev/null; }
fi
pg_lsclusters -h | awk '{print $1"/"$2}' | grep -qx "$VERSION/$CLUSTER" || pg_createcluster "$VERSION" "$CLUSTER" >/dev/null
# Loopback only, and the same memory settings as the stack's image (images/offline/postgres), so
# benchmarks compare. Debian's postgresql.conf reads conf.d/ last: these win.
for key in listen_addresses shared_buffers effective_cache_size work_mem random_page_cost; do
  pg_conftool "$VERSION" "$CLUSTER" remove "$key" >/dev/null 2>&1 || true
done
cat >"/etc/postgresql/$VERSION/$CLUSTER/conf.d/wildswarm.conf" <<'CONF'
# managed by wildswarm scripts/postgres-local.sh
listen_addresses = '127.0.0.1'
shared_buffers = 256MB
effective_cache_size = 512MB
work_mem = 8MB
random_page_cost = 1.1
CONF
if pg_ctlcluster "$VERSION" "$CLUSTER" status >/dev/null 2>&1; then
  pg_ctlcluster "$VERSION" "$CLUSTER" reload
  [ "$(su postgres -c "psql -Atc 'SHOW shared_buffers'")" = 256MB ] || pg_ctlcluster "$VERSION" "$CLUSTER" restart
else
  pg_ctlcluster "$VERSION" "$CLUSTER" start
fi

if [ ! -s "$PASSWORD_FILE" ]; then
  mkdir -p "$(dirname "$PASSWORD_FILE")"
  (umask 077; head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32 >"$PASSWORD_FILE")
  log "generated a password in $PASSWORD_FILE"
fi
# The password reaches psql on its standard input (never a command line); it is [A-Za-z0-9] only.
{ printf "\\set pw '%s'\n" "$(tr -dc 'A-Za-z0-9' <"$PASSWORD_FILE")"; cat <<'SQL'; } | su postgres -c "psql -q -v ON_ERROR_STOP=1" >/dev/null
SELECT format('CREATE ROLE wildswarm LOGIN PASSWORD %L', :'pw') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'wildswarm')
\gexec
SELECT format('ALTER ROLE wildswarm PASSWORD %L', :'pw')
\gexec
SELECT 'CREATE DATABASE wildswarm OWNER wildswarm' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'wildswarm')
\gexec
SQL
log "ready: postgresql://wildswarm@127.0.0.1:5432/wildswarm (password in $PASSWORD_FILE)"
