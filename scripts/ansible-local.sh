#!/usr/bin/env bash
# Ansible for the cluster bootstrap (beegfs/, swarm/), without the ML stack.
#
#   scripts/ansible-local.sh     make .venv if missing, then pip install the ansible and
#                                ansible-lint versions named in pyproject.toml's [dev] extra
#
# `make cluster`, `make cluster-check` and `make lint-ansible` call it; `make venv` (all
# extras) installs the same two packages. The `ansible` package brings the collections
# the playbooks use (community.docker, ansible.posix): no Ansible Galaxy needed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
mapfile -t specs < <("$VENV/bin/python" - <<'PY'
import re, tomllib
dev = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["dev"]
print("\n".join(s for s in dev if re.match(r"ansible(-lint)?\b", s)))
PY
)
[ ${#specs[@]} -gt 0 ] || { echo "ansible-local: no ansible in pyproject.toml's [dev] extra" >&2; exit 1; }
# pip does nothing (in seconds) when what is installed already satisfies the specs.
"$VENV/bin/pip" install -q -c constraints.txt "${specs[@]}"
