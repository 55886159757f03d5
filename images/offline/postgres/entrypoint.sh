#!/bin/sh
# The job store's PostgreSQL: make the cluster on first start, then run the server as PID 1.
#
#   POSTGRES_USER (wildswarm)  POSTGRES_DB (= POSTGRES_USER)
#   POSTGRES_PASSWORD_FILE (a Docker secret) or POSTGRES_PASSWORD: that role's password
#
# A data folder that already holds a cluster is used as it is: the password is set only
# when the cluster is made (change it later with ALTER ROLE, as with the official image).
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
USER_NAME=${POSTGRES_USER:-wildswarm}
DB_NAME=${POSTGRES_DB:-$USER_NAME}

say() { printf 'wildswarm-postgres: %s\n' "$*" >&2; }

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
    PASSWORD=$(cat "$POSTGRES_PASSWORD_FILE")
  else
    PASSWORD=${POSTGRES_PASSWORD:-}
  fi
  [ -n "$PASSWORD" ] || { say "no password: set POSTGRES_PASSWORD_FILE (a Docker secret) or POSTGRES_PASSWORD"; exit 1; }
  say "making a new cluster in $PGDATA (role $USER_NAME, database $DB_NAME)"
  initdb -D "$PGDATA" -U postgres -E UTF8 --locale=C.UTF-8 --auth-local=peer --auth-host=reject >/dev/null
  cat >> "$PGDATA/postgresql.conf" <<CONF
listen_addresses = '*'
password_encryption = 'scram-sha-256'
log_destination = 'stderr'
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
log_min_duration_statement = 2000
# Sized for the stack's 1 GiB limit; the job store's working set is its indexes.
shared_buffers = 256MB
effective_cache_size = 512MB
work_mem = 8MB
random_page_cost = 1.1
max_connections = 200
CONF
  # Only the application's role, with its password, from the network; the superuser only locally.
  cat > "$PGDATA/pg_hba.conf" <<HBA
local all postgres peer
local all all      scram-sha-256
host  all postgres all reject
host  all all      all scram-sha-256
HBA
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  psql -v ON_ERROR_STOP=1 -q -U postgres -d postgres -v user="$USER_NAME" -v db="$DB_NAME" -v pw="$PASSWORD" <<'SQL'
CREATE ROLE :"user" LOGIN PASSWORD :'pw';
CREATE DATABASE :"db" OWNER :"user";
\c :"db"
ALTER SCHEMA public OWNER TO :"user";
SQL
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  unset PASSWORD
  say "cluster ready"
fi
exec postgres -D "$PGDATA" "$@"
