#!/bin/sh
# Entrypoint of the wildswarm images: wiring only. Settings reach wildswarm as
# WILDSWARM_* variables (secrets as WILDSWARM_*_FILE=/run/secrets/...), read by
# wildswarm.config; this script only turns `docker run IMAGE worker` into
# `wildswarm worker` and runs anything else (a shell, python3) as given.
set -e
case "${1:-}" in
  # every command of the CLI (tests/unit/test_entrypoint.py checks this list against it)
  analyze|cancel|deployments|download|export|models|producer|profiles|status|submit|web|worker|-h|--*)
    exec wildswarm "$@" ;;
  "") exec wildswarm --help ;;
  *) exec "$@" ;;
esac
