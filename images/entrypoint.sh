#!/bin/sh
# Entrypoint of the wildswarm images: wiring only. Settings reach wildswarm as
# WILDSWARM_* variables (secrets as WILDSWARM_*_FILE=/run/secrets/...), read by
# wildswarm.config; this script only turns `docker run IMAGE worker` into
# `wildswarm worker` and runs anything else (a shell, python3) as given.
set -e
case "${1:-}" in
  worker|producer|web|analyze|models|submit|status|--*) exec wildswarm "$@" ;;
  "") exec wildswarm --help ;;
  *) exec "$@" ;;
esac
