#!/usr/bin/env bash
# The wildswarm stack on Docker Swarm: what `make up|down|scale-workers|ps|logs` run.
#
#   scripts/stack.sh up            Docker + one-node Swarm where missing (scripts/docker-local.sh),
#                                  secrets, images, model check, deploy, wait until healthy, URLs
#   scripts/stack.sh deploy        secrets, deploy and wait only (a cluster: after swarm/ bootstrap
#                                  and with images in the site's registry)
#   scripts/stack.sh down          remove the stack; keeps secrets, volumes and the data
#                                  (PURGE=1: also its secrets, volumes and .secrets/ copies)
#   scripts/stack.sh scale N       N worker tasks
#   scripts/stack.sh prepare-data  only make (and, as root, hand over) the data root's folders
#   scripts/stack.sh backup        pg_dump of the job store into BACKUP_DIR (./backups)
#   scripts/stack.sh restore FILE  the job store from such a dump (producer, web, workers paused)
#   scripts/stack.sh ps | logs S | urls | wait | secrets
#
# Settings (environment; the Makefile passes its variables through):
#   STACK (wildswarm)  WILDSWARM_DATA (./data)  WILDSWARM_UNTRAINED (0)  WILDSWARM_ENV_FILE
#   SECRET_PREFIX (=STACK)  SECRETS_DIR (./.secrets)  WORKERS (1)  WORKERS_PER_NODE (1)
#   HTTPS_PORT (8443)  HTTP_PORT (8080: redirects to HTTPS)  GPU (0)
#   TLS_CERT, TLS_KEY (a real certificate and its key; default: a self-signed one made here)
#   OVERLAY_ENCRYPTED (auto: encrypt the overlay networks where this kernel can; 1; 0)
#   SKIP_BUILD (0)  WAIT_TIMEOUT (900 s)  RESOLVE_IMAGE (never)  *_IMAGE (see images/build.sh)
#   DATA_ROOT_OWNER (service: as root, give WILDSWARM_DATA itself, not what is in it, to
#     WILDSWARM_UID, as the web app's health check writes there; keep: leave it as it is,
#     as on a cluster, where beegfs/roles/wildswarm_layout makes it root's)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

export STACK=${STACK:-wildswarm}
export SECRET_PREFIX=${SECRET_PREFIX:-$STACK}
export WILDSWARM_DATA=${WILDSWARM_DATA:-$ROOT/data}
export WILDSWARM_UNTRAINED=${WILDSWARM_UNTRAINED:-0}
export WILDSWARM_ENV_FILE=${WILDSWARM_ENV_FILE:-$ROOT/config/wildswarm.env}
export HTTPS_PORT=${HTTPS_PORT:-8443} HTTP_PORT=${HTTP_PORT:-8080}
SECRETS_DIR=${SECRETS_DIR:-$ROOT/.secrets}
WAIT_TIMEOUT=${WAIT_TIMEOUT:-900}
# One RabbitMQ user per role (its password a secret of its own) and an administrator for the console.
BROKER_ROLES=(admin worker producer web)
SECRETS=(broker_admin_password broker_worker_password broker_producer_password broker_web_password
         db_password web_secret_key web_password web_token)

log() { printf 'stack: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- the shared filesystem ------------------------------------------------------------
# The folders the stack owns under the data root, each with the mode it is made with:
# input/ is the drop zone people share (setgid + sticky: each may remove only their own
# files; the service owns it and may move anything out of it); only the service writes
# the others. jobs/ holds legacy job records (read once, for import); cache/ the workers'
# backend timings, exports and compiled networks (WILDSWARM_BACKEND_CACHE's default), made
# here as the services cannot make it in a root that stays root's (a cluster's). On a cluster
# beegfs/roles/wildswarm_layout makes the same folders; docs/cluster.md says who may
# write where, and why.
DATA_LAYOUT=(input=3775 uploads=2755 input_done=2755 input_failed=2755 output=2755 jobs=2755 models=2755 logs=2755
             cache=2755)

data_root() {  # WILDSWARM_DATA as an absolute path; changes nothing
  case $WILDSWARM_DATA in /*) ;; *) WILDSWARM_DATA=$ROOT/$WILDSWARM_DATA ;; esac
  export WILDSWARM_DATA
}

prepare_data() {
  data_root
  # The containers run as an ordinary user: the invoking user, or 10001 when that is root.
  if [ -z "${WILDSWARM_UID:-}" ]; then
    if [ "$(id -u)" = 0 ]; then WILDSWARM_UID=10001 WILDSWARM_GID=10001; else WILDSWARM_UID=$(id -u) WILDSWARM_GID=$(id -g); fi
  fi
  export WILDSWARM_UID WILDSWARM_GID=${WILDSWARM_GID:-$WILDSWARM_UID}
  local owner=
  if [ "$(id -u)" = 0 ]; then owner=$WILDSWARM_UID:$WILDSWARM_GID; fi
  case ${DATA_ROOT_OWNER:=service} in service|keep) ;; *) die "DATA_ROOT_OWNER must be service or keep";; esac
  layout_folders "$WILDSWARM_DATA" "$owner" "$DATA_ROOT_OWNER" "${DATA_LAYOUT[@]}" \
    || die "the data folder $WILDSWARM_DATA is not ready (see above)"
}

# layout_folders ROOT [UID:GID] service|keep NAME=MODE...: make the layout folders under
# ROOT and, as root, give them to UID:GID. It never follows a link it did not make: a
# layout folder that is a link (or no folder) is refused before anything changes, and
# owners and modes are set through a descriptor opened with O_NOFOLLOW, so a folder
# swapped for a link meanwhile is refused too. It never recurses: what people put into the
# folders keeps its owner. Modes are set only on folders it makes. ROOT itself (which may
# be a link the admin made: ./data -> a bigger disk) goes to UID:GID when made here or
# with `service`; with `keep` an existing ROOT keeps its owner.
layout_folders() {
  python3 - "$@" <<'EOF'
import os, stat, sys

root, owner, root_owner, *layout = sys.argv[1:]
root = os.path.normpath(root)
uid, gid = (int(x) for x in owner.split(":")) if owner else (-1, -1)
layout = [(name, int(mode, 8)) for name, mode in (item.split("=") for item in layout)]


def say(message):
    print(f"stack: {message}", file=sys.stderr)


def settle(fd, path, mode):
    """Owner (when asked for) and mode (when given) of the folder open as fd."""
    st = os.fstat(fd)
    if uid >= 0 and (st.st_uid, st.st_gid) != (uid, gid):
        try:
            os.fchown(fd, uid, gid)
        except OSError as e:
            say(f"warning: cannot give {path} to {uid}:{gid} ({e.strerror}): the services may not write there")
    if mode is not None:
        os.fchmod(fd, mode)


os.makedirs(os.path.dirname(root), exist_ok=True)
try:
    os.mkdir(root, 0o700)
    made_root = True
except FileExistsError:
    made_root = False
try:
    rfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | (os.O_NOFOLLOW if made_root else 0))
except OSError as e:
    say(f"error: {root} is not a folder ({e.strerror})")
    sys.exit(1)
if made_root or root_owner == "service":
    settle(rfd, root, 0o2755 if made_root else None)

problems = []
for name, _ in layout:
    try:
        st = os.stat(name, dir_fd=rfd, follow_symlinks=False)
    except FileNotFoundError:
        continue
    if stat.S_ISLNK(st.st_mode):
        problems.append(f"{root}/{name} is a symbolic link (to {os.readlink(name, dir_fd=rfd)}), not a folder")
    elif not stat.S_ISDIR(st.st_mode):
        problems.append(f"{root}/{name} is not a folder")
if problems:
    for problem in problems:
        say(f"error: {problem}")
    say("error: it stands where one of the stack's folders belongs, so someone who may write in "
        f"{root} put it there. Nothing was changed. Look at it, remove it (rm, never rm -r) "
        "and run again: the folder is made anew.")
    sys.exit(1)

for name, mode in layout:
    path = f"{root}/{name}"
    try:
        os.mkdir(name, 0o700, dir_fd=rfd)
        made = True
    except FileExistsError:
        made = False
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=rfd)
    except OSError as e:    # swapped for a link or a file since the check
        say(f"error: {path} is no folder any more ({e.strerror}); stopped there")
        sys.exit(1)
    try:
        settle(fd, path, mode if made else None)
    finally:
        os.close(fd)
EOF
}

# --- secrets ---------------------------------------------------------------------------
secret_exists() { docker secret inspect "$1" >/dev/null 2>&1; }

random_value() { head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32; }

queue_name() {  # the job queue, as the services' settings name it
  local q
  q=$(sed -n 's/^WILDSWARM_QUEUE=//p' "$WILDSWARM_ENV_FILE" 2>/dev/null | tail -n 1)
  echo "${q:-wildswarm.jobs}"
}

definitions() {  # the role passwords in SECRETS_DIR -> RabbitMQ's users and permissions (JSON) on stdout
  python3 - "$SECRETS_DIR/$SECRET_PREFIX" "$(queue_name)" <<'PY'
import json, re, sys
prefix, queue = sys.argv[1], re.escape(sys.argv[2])
pw = {role: open(f"{prefix}-broker_{role}_password").read().strip() for role in ("admin", "worker", "producer", "web")}
delay = rf"{queue}\.delay\.\d+s"
# Only what each role does (see broker.py): the producer declares the topology and reads the
# dead letters; workers consume the job queue and publish to it (retries) and to the dead-letter
# exchange; the web app only publishes. amq.default is the default exchange.
roles = {
    "worker": ("^$", rf"^(amq\.default|{queue}\.dlx)$", rf"^{queue}$"),
    "producer": (rf"^({queue}|{queue}\.dead|{queue}\.dlx|{delay})$", rf"^(amq\.default|{queue}\.dlx|{queue}\.dead)$",
                 rf"^({queue}|{queue}\.dead|{queue}\.dlx|{delay})$"),
    "web": ("^$", r"^amq\.default$", "^$"),
}
print(json.dumps({
    "users": [{"name": "admin", "password": pw["admin"], "tags": "administrator"}]
             + [{"name": role, "password": pw[role], "tags": ""} for role in roles],
    "vhosts": [{"name": "/"}],
    "permissions": [{"user": "admin", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}]
                   + [{"user": role, "vhost": "/", "configure": c, "write": w, "read": r}
                      for role, (c, w, r) in roles.items()],
}))
PY
}

ensure_tls() {  # the proxy's certificate: TLS_CERT/TLS_KEY, or a self-signed one made here
  local cert=$SECRETS_DIR/$SECRET_PREFIX-tls_cert key=$SECRETS_DIR/$SECRET_PREFIX-tls_key name
  if [ -n "${TLS_CERT:-}" ]; then
    [ -s "$TLS_CERT" ] && [ -s "${TLS_KEY:-}" ] || die "TLS_CERT and TLS_KEY must name a certificate (chain) and its key"
    openssl x509 -noout -in "$TLS_CERT" 2>/dev/null || die "$TLS_CERT is not a PEM certificate"
    if ! cmp -s "$TLS_CERT" "$cert" || ! cmp -s "$TLS_KEY" "$key"; then
      docker secret rm "${SECRET_PREFIX}_tls_cert" "${SECRET_PREFIX}_tls_key" >/dev/null 2>&1 || true
      (umask 077; cp "$TLS_CERT" "$cert"; cp "$TLS_KEY" "$key")
      log "using the certificate $TLS_CERT"
    fi
  elif ! secret_exists "${SECRET_PREFIX}_tls_cert" && { [ ! -s "$cert" ] || [ ! -s "$key" ]; }; then
    command -v openssl >/dev/null 2>&1 || die "openssl is needed to make a certificate (apt-get install openssl)"
    local host; host=$(hostname -f 2>/dev/null || hostname)
    (umask 077; openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=$host/O=wildswarm" \
       -addext "subjectAltName=DNS:$host,DNS:localhost,IP:127.0.0.1" -keyout "$key" -out "$cert" 2>/dev/null) \
       || die "openssl could not make a certificate"
    log "made a self-signed certificate for $host (browsers warn; for a real one: TLS_CERT=... TLS_KEY=... make up)"
  fi
  for name in tls_cert tls_key; do
    secret_exists "${SECRET_PREFIX}_$name" && continue
    docker secret create --label "org.wildswarm.stack=$STACK" "${SECRET_PREFIX}_$name" \
      "$SECRETS_DIR/$SECRET_PREFIX-$name" >/dev/null
    log "created secret ${SECRET_PREFIX}_$name"
  done
}

ensure_secrets() {
  (umask 077; mkdir -p "$SECRETS_DIR")
  local name file full
  for name in "${SECRETS[@]}"; do
    full=${SECRET_PREFIX}_$name file=$SECRETS_DIR/$SECRET_PREFIX-$name
    if secret_exists "$full"; then continue; fi
    if [ ! -s "$file" ]; then (umask 077; random_value >"$file"); fi
    docker secret create --label "org.wildswarm.stack=$STACK" "$full" "$file" >/dev/null
    log "created secret $full (a copy for you: $file)"
    case $name in broker_*) docker secret rm "${SECRET_PREFIX}_rabbitmq_definitions" >/dev/null 2>&1 || true ;; esac
  done
  full=${SECRET_PREFIX}_rabbitmq_definitions
  if ! secret_exists "$full"; then
    for name in "${BROKER_ROLES[@]}"; do
      file=$SECRETS_DIR/$SECRET_PREFIX-broker_${name}_password
      [ -s "$file" ] || die "secret $full is missing and so is $file: remove secret ${SECRET_PREFIX}_broker_${name}_password to make a new one"
    done
    definitions | docker secret create --label "org.wildswarm.stack=$STACK" "$full" - >/dev/null
    log "created secret $full (RabbitMQ's users: admin, worker, producer, web)"
  fi
  ensure_tls
}

prune_broker_users() {  # users an earlier version made (loading definitions only adds): removed
  local c users u
  c=$(docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_rabbitmq" | head -n 1)
  [ -n "$c" ] || return 0
  users=$(docker exec "$c" rabbitmqctl -q list_users 2>/dev/null | awk '{print $1}') || return 0
  for u in $users; do
    case " ${BROKER_ROLES[*]} user " in *" $u "*) continue ;; esac
    if docker exec "$c" rabbitmqctl -q delete_user "$u" >/dev/null 2>&1; then
      log "removed RabbitMQ user $u (not one of the stack's)"
    fi
  done
  return 0
}

remove_secrets() {
  local name
  for name in "${SECRETS[@]}" rabbitmq_definitions tls_cert tls_key; do
    docker secret rm "${SECRET_PREFIX}_$name" >/dev/null 2>&1 && log "removed secret ${SECRET_PREFIX}_$name" || true
    rm -f "$SECRETS_DIR/$SECRET_PREFIX-$name"
  done
  rmdir "$SECRETS_DIR" 2>/dev/null || true
}

# --- model weights ---------------------------------------------------------------------
check_weights() {
  local worker=${WORKER_IMAGE:-wildswarm/worker:latest}
  local run=(docker run --rm --network none -u "$WILDSWARM_UID:$WILDSWARM_GID" -v "$WILDSWARM_DATA:/data"
             --env-file "$WILDSWARM_ENV_FILE" "$worker")
  if [ "$WILDSWARM_UNTRAINED" = 1 ]; then
    # Built here, before the deploy: workers mount models/ read-only.
    log "WILDSWARM_UNTRAINED=1: building untrained stand-ins where weights are missing; results are meaningless and say so"
    "${run[@]}" models untrained >&2 || die "could not build the untrained stand-ins in $WILDSWARM_DATA/models"
    return 0
  fi
  # The ONNX exports the CPU backends run sit beside the weights (made once per weights' checksum).
  export_models() { "${run[@]}" models export >&2 || log "WARNING: some models could not be exported to ONNX: workers run those on PyTorch"; }
  if "${run[@]}" models verify >/dev/null 2>&1; then
    log "model weights present and verified in $WILDSWARM_DATA/models"
    export_models
    return 0
  fi
  log "model weights missing or unverified in $WILDSWARM_DATA/models: fetching them"
  docker run --rm -u "$WILDSWARM_UID:$WILDSWARM_GID" -v "$WILDSWARM_DATA:/data" --env-file "$WILDSWARM_ENV_FILE" \
    "$worker" models fetch >&2 || true
  if "${run[@]}" models verify >/dev/null 2>&1; then export_models; return 0; fi
  # Workers start on the default profile's models; another profile's jobs fail (saying why) until its are there.
  if "${run[@]}" models verify --profile '' >/dev/null 2>&1; then
    export_models
    "${run[@]}" models verify >&2 || true
    log "WARNING: the default profile's models are ready, but not every profile's (listed above): jobs of those"
    log "profiles fail, naming the missing file, until it is fetched or copied in and trusted (docs/profiles.md)"
    return 0
  fi
  "${run[@]}" models verify >&2 || true
  cat >&2 <<EOF

stack: the real model weights could not be fetched (no route to GitHub/Zenodo/Hugging Face?).
stack: Either copy the files named above into $WILDSWARM_DATA/models/, record them (workers load
stack: only recorded files; they run code from them, so copy only files from the named sources):
stack:   ${run[*]} models trust --all
stack: and run make up again (docs/models.md), or run with untrained stand-ins, for trying the
stack: system out only (results are meaningless and marked so):   WILDSWARM_UNTRAINED=1 make up
EOF
  exit 3
}

# --- the job store: backup and restore ---------------------------------------------------
postgres_container() {  # the job store's container on this node, or a clear error
  local c
  c=$(docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_postgres" | head -n 1)
  [ -n "$c" ] || die "no running ${STACK}_postgres container on this node: run this on the manager where it runs (make ps)"
  echo "$c"
}

backup() {  # pg_dump (custom format) of the job store into BACKUP_DIR
  local dir=${BACKUP_DIR:-$ROOT/backups} c file
  c=$(postgres_container)
  (umask 077; mkdir -p "$dir")
  file=$dir/$STACK-jobs-$(date -u +%Y%m%dT%H%M%SZ).dump
  if ! (umask 077; docker exec "$c" pg_dump -U postgres -d wildswarm -Fc >"$file.part"); then
    rm -f "$file.part"; die "pg_dump failed; no backup written"
  fi
  mv "$file.part" "$file"
  log "job store backed up to $file ($(du -h "$file" | cut -f1)); restore with: make restore FILE=$file"
  echo "$file"
}

tasks_running() {  # SERVICE...: the stack's tasks of these services whose containers run, on any node
  local svc
  for svc in "$@"; do
    docker service ps "${STACK}_$svc" --format '{{.Name}} {{.CurrentState}}' 2>/dev/null \
      | awk '$2 == "Running" || $2 == "Starting" {printf "%s ", $1}' || true
  done
}

# The replica counts restore paused, by service: started again however it ends (EXIT trap),
# as an interrupted restore (Ctrl-C, a dropped ssh session) left the stack at 0, and running it
# again then recorded those 0s and "started" nothing.
declare -A PAUSED=()

resume_paused() {
  local svc
  for svc in "${!PAUSED[@]}"; do
    docker service scale --detach "${STACK}_$svc=${PAUSED[$svc]}" >/dev/null \
      || log "error: could not start ${STACK}_$svc again: docker service scale ${STACK}_$svc=${PAUSED[$svc]}"
    unset "PAUSED[$svc]"
  done
}

restore() {  # the job store from a pg_dump file; the wildswarm services are stopped meanwhile
  local file=${1:?usage: make restore FILE=backups/<stack>-jobs-<time>.dump} c svc n
  [ -s "$file" ] || die "$file: no such backup"
  c=$(postgres_container)
  trap resume_paused EXIT
  for svc in producer web worker; do
    n=$(docker service inspect "${STACK}_$svc" --format '{{.Spec.Mode.Replicated.Replicas}}' 2>/dev/null) || continue
    PAUSED[$svc]=$n
    docker service scale --detach "${STACK}_$svc=0" >/dev/null
  done
  # Wait for their tasks on every node (the Swarm's view; this node's containers are only some of
  # them): a worker still stopping would write into the tables while pg_restore drops and refills them.
  local deadline=$((SECONDS + 120)) running
  while running=$(tasks_running producer web worker); [ -n "$running" ]; do
    [ $SECONDS -lt $deadline ] \
      || die "still running after 120 s: $running(make ps); nothing was restored, services started again"
    sleep 2
  done
  log "stopped producer, web and workers; restoring $file"
  local ok=0
  docker exec -i "$c" pg_restore -U postgres -d wildswarm --clean --if-exists --single-transaction <"$file" || ok=$?
  resume_paused
  [ $ok = 0 ] || die "pg_restore failed (exit $ok): the job store is as it was before; services restarted"
  log "job store restored from $file; producer, web and workers started again"
}

# --- deploy, wait, urls ----------------------------------------------------------------
stack_running() { docker stack ls --format '{{.Name}}' 2>/dev/null | grep -qx "$STACK"; }

check_ports() {  # published ports must be free on this node (unless this stack holds them)
  stack_running && return 0
  local var port
  for var in HTTPS_PORT HTTP_PORT; do
    port=${!var}
    if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
      die "port $port is taken on this machine (by: $(ss -Hltnp "sport = :$port" | grep -o 'users:(("[^"]*' | head -1 | cut -d'"' -f2)); choose another: $var=<port> make up"
    fi
  done
}

hash_of() { cat "$@" | sha256sum | cut -c1-10; }

deploy() {
  # Swarm configs cannot change: a changed file gets a new name (and restarts only its users).
  export RABBITMQ_CONFIG_VERSION=$(hash_of config/rabbitmq.conf config/enabled_plugins)
  export PROMETHEUS_CONFIG_VERSION=$(hash_of monitoring/prometheus.yml monitoring/alerts.yml)
  local files=(-c stack.yml)
  [ "${GPU:-0}" = 1 ] && files+=(-c stack.gpu.yml)
  if overlay_encryption; then files+=(-c stack.encrypted.yml); fi
  log "deploying stack $STACK (data: $WILDSWARM_DATA, workers: ${WORKERS:-1}, at most ${WORKERS_PER_NODE:-1} per node)"
  docker stack deploy "${files[@]}" --prune --resolve-image "${RESOLVE_IMAGE:-never}" \
    ${WITH_REGISTRY_AUTH:+--with-registry-auth} "$STACK" >/dev/null
  prune_configs
}

overlay_encryption() {  # whether to encrypt the overlay networks (OVERLAY_ENCRYPTED: auto|1|0)
  case ${OVERLAY_ENCRYPTED:-auto} in
    1|true|yes) return 0 ;;
    0|false|no) log "overlay networks not encrypted (OVERLAY_ENCRYPTED=0)"; return 1 ;;
  esac
  # Docker encrypts with IPsec ESP and AES-GCM: try to make such a security association in a
  # throwaway network namespace (nothing of the host's changes).
  local ns=wildswarm-xfrm-probe-$$ ok=1
  if ip netns add "$ns" 2>/dev/null; then
    ip netns exec "$ns" ip xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x101 mode transport \
      aead 'rfc4106(gcm(aes))' 0x000102030405060708090a0b0c0d0e0f10111213 128 >/dev/null 2>&1 && ok=0
    ip netns del "$ns" 2>/dev/null || true
  fi
  if [ $ok = 0 ]; then log "overlay networks encrypted between nodes (IPsec, AES-GCM)"; return 0; fi
  log "warning: this kernel cannot do IPsec with AES-GCM, so the overlay networks are NOT encrypted between nodes; keep the nodes on a private network (README: security)"
  return 1
}

prune_configs() {  # configs of earlier versions of this stack that no service uses any more
  local c
  for c in $(docker config ls -q --filter "label=com.docker.stack.namespace=$STACK"); do
    docker config inspect "$c" --format '{{.Spec.Name}}' \
      | grep -qE "_(${RABBITMQ_CONFIG_VERSION}|${PROMETHEUS_CONFIG_VERSION})\$" && continue
    docker config rm "$c" >/dev/null 2>&1 || true   # refused while a task still uses it
  done
}

services_state() {  # one line per service: name running desired
  docker service ls --filter "label=com.docker.stack.namespace=$STACK" --format '{{.Name}} {{.Replicas}}' \
    | sed -E 's#([0-9]+)/([0-9]+).*#\1 \2#'
}

wait_healthy() {  # every service has all its tasks running (Swarm counts a task running once healthy)
  local deadline=$((SECONDS + WAIT_TIMEOUT)) pending last=
  log "waiting until every service is up and healthy (at most ${WAIT_TIMEOUT} s)"
  while :; do
    pending=$(services_state | awk '$2 != $3 || $3 == 0 {printf "%s(%s/%s) ", $1, $2, $3}')
    if [ -z "$pending" ] && [ -n "$(services_state)" ]; then log "all services healthy"; return 0; fi
    [ "$pending" != "$last" ] && log "waiting for: $pending" && last=$pending
    if [ $SECONDS -ge $deadline ]; then
      docker stack ps --no-trunc "$STACK" --format '{{.Name}} {{.CurrentState}} {{.Error}}' | head -n 30 >&2
      die "not healthy after ${WAIT_TIMEOUT} s: $pending(make ps, make logs S=<service>)"
    fi
    sleep 5
  done
}

urls() {
  local pw=$SECRETS_DIR/$SECRET_PREFIX base="https://127.0.0.1:$HTTPS_PORT"
  cat <<EOF

  web app            $base/     (user wildswarm, password in $pw-web_password;
                     scripts: Authorization: Bearer <token in $pw-web_token>)
  RabbitMQ console   $base/rabbitmq/    (after the web login: user admin, password in $pw-broker_admin_password)
  Prometheus         $base/prometheus/classic/targets    (after the web login)
  certificate        $pw-tls_cert   (self-signed unless TLS_CERT was given: trust it, or curl --cacert it)
  shared folder      $WILDSWARM_DATA   (drop videos into input/, results appear in output/)

EOF
}

down() {
  if stack_running; then
    docker stack rm "$STACK" >/dev/null
    log "removing stack $STACK"
  fi
  # stack rm returns at once: wait until its tasks and network are really gone.
  local deadline=$((SECONDS + 180))
  while [ -n "$(docker ps -aq --filter "label=com.docker.stack.namespace=$STACK")" ] \
        || [ -n "$(docker network ls -q --filter "label=com.docker.stack.namespace=$STACK")" ]; do
    [ $SECONDS -lt $deadline ] || die "containers or networks of $STACK still there after 180 s"
    sleep 2
  done
  if [ "${PURGE:-0}" = 1 ]; then
    local v
    for v in $(docker volume ls -q --filter "label=com.docker.stack.namespace=$STACK"); do
      docker volume rm "$v" >/dev/null && log "removed volume $v"
    done
    remove_secrets
  else
    log "kept: secrets ${SECRET_PREFIX}_*, volumes ${STACK}_*, $WILDSWARM_DATA (PURGE=1 removes the first two)"
  fi
}

scale() {
  local n=${1:?number of workers} svc=${STACK}_worker
  [[ $n =~ ^[0-9]+$ ]] || die "N must be a number: make scale-workers N=4"
  # Say at once when N cannot fit: at most MaxReplicas workers on each labelled, ready node.
  local per nodes
  per=$(docker service inspect "$svc" --format '{{.Spec.TaskTemplate.Placement.MaxReplicas}}' 2>/dev/null) \
    || die "no service $svc: deploy the stack first (make up)"
  nodes=$(docker node ls --filter node.label=wildswarm.worker=true --format '{{.Status}} {{.Availability}}' \
          | grep -c '^Ready Active$' || true)
  if [ "${per:-0}" -gt 0 ] && [ "$n" -gt $((per * nodes)) ]; then
    die "$svc: $n workers cannot run: at most $per per node (WORKERS_PER_NODE) on $nodes ready node(s) labelled wildswarm.worker=true, so $((per * nodes)) at most. Label more nodes (docs/cluster.md), or deploy with a higher WORKERS_PER_NODE"
  fi
  docker service scale --detach "$svc=$n" >/dev/null
  log "scaling $svc to $n (a later make up resets it to WORKERS=${WORKERS:-1})"
  local deadline=$((SECONDS + WAIT_TIMEOUT)) running
  while :; do
    running=$(docker service ls --filter "name=$svc" --format '{{.Replicas}}' | cut -d/ -f1)
    [ "$running" = "$n" ] && { log "$svc: $n running"; return 0; }
    if docker service ps --no-trunc "$svc" --filter desired-state=running --format '{{.Error}} {{.CurrentState}}' \
         | grep -q 'max replicas per node'; then
      die "$svc: only $running of $n can run: at most WORKERS_PER_NODE=${WORKERS_PER_NODE:-1} per node on the nodes labelled wildswarm.worker=true (label more nodes, or deploy with a higher WORKERS_PER_NODE)"
    fi
    [ $SECONDS -lt $deadline ] || die "$svc: $running of $n running after ${WAIT_TIMEOUT} s (make ps)"
    sleep 3
  done
}

case "${1:-}" in
  up)
    bash scripts/docker-local.sh
    prepare_data
    check_ports
    if [ "${SKIP_BUILD:-0}" != 1 ]; then bash images/build.sh "${IMAGES_MODE:-auto}"; fi
    check_weights
    ensure_secrets
    deploy
    wait_healthy
    prune_broker_users
    urls ;;
  deploy)
    prepare_data; check_ports; ensure_secrets; deploy; wait_healthy; prune_broker_users; urls ;;
  down) down ;;
  scale) scale "${2:-}" ;;
  ps) docker stack services "$STACK"; echo; docker stack ps "$STACK" --format 'table {{.Name}}\t{{.Node}}\t{{.CurrentState}}\t{{.Error}}' ;;
  logs)
    [ -n "${2:-}" ] || die "which service? make logs S=worker (proxy, web, producer, worker, rabbitmq, postgres, prometheus, docker-api, node-exporter)"
    docker service logs --timestamps --tail "${TAIL:-200}" $([ -t 1 ] && echo --follow) "${STACK}_$2" ;;
  urls) data_root; urls ;;
  wait) wait_healthy ;;
  secrets) ensure_secrets ;;
  prepare-data) prepare_data ;;
  backup) backup ;;
  restore) restore "${2:-}" ;;
  *) sed -n '2,/^set /{/^#/p}' "$0"; exit 2 ;;
esac
