#!/bin/sh
# wildswarm's front door: render nginx.conf from the template, check it, run nginx in the foreground.
# `wildswarm-proxy docker-api` runs the read-only Docker API for Prometheus instead (docker-api.conf).
#
#   WEB_UPSTREAM (web:8000)  RABBITMQ_UPSTREAM (rabbitmq:15672)  PROMETHEUS_UPSTREAM (prometheus:9090)
#   HTTPS_PORT (443: the published port plain HTTP redirects to)  MAX_UPLOAD (4g: a video)  APP_TIMEOUT (300 s)
#   TLS_CERT (/run/secrets/tls_cert)  TLS_KEY (/run/secrets/tls_key)
#   LOGIN_RATE (10r/m) LOGIN_BURST (5)  MAX_CONNECTIONS_PER_CLIENT (64)
set -eu
if [ "${1:-}" = docker-api ]; then      # the read-only Docker API for Prometheus (docker-api.conf)
  mkdir -p /var/cache/wildswarm-proxy/body /var/cache/wildswarm-proxy/proxy
  nginx -t -q -c /etc/nginx/docker-api.conf
  exec nginx -c /etc/nginx/docker-api.conf -g 'daemon off;'
fi
# MAX_UPLOAD is the largest video (as nginx writes sizes: bytes, or k/m/g); the body of an upload also
# carries its multipart headers and form fields, for which the web app allows 1 MiB more (FORM_SLACK in
# web/uploads.py): the proxy allows the same, so that the app, not nginx, judges a file near the limit.
bytes_of() {
  v=$(printf %s "$1" | tr KMG kmg)
  case "$v" in
    *k) n=${v%k} m=1024 ;; *m) n=${v%m} m=1048576 ;; *g) n=${v%g} m=1073741824 ;; *) n=$v m=1 ;;
  esac
  case "$n" in ''|*[!0-9]*) echo "MAX_UPLOAD must be a size in bytes, or with k, m or g: got '$1'" >&2; return 2 ;; esac
  echo $((n * m))
}
upload=$(bytes_of "${MAX_UPLOAD:-4g}") || exit 2
if [ "$upload" -eq 0 ]; then max_body=0; else max_body=$((upload + 1048576)); fi   # 0: no limit (nginx's)
conf=/run/wildswarm-proxy/nginx.conf
sed -e "s|@WEB_UPSTREAM@|${WEB_UPSTREAM:-web:8000}|g" \
    -e "s|@RABBITMQ_UPSTREAM@|${RABBITMQ_UPSTREAM:-rabbitmq:15672}|g" \
    -e "s|@PROMETHEUS_UPSTREAM@|${PROMETHEUS_UPSTREAM:-prometheus:9090}|g" \
    -e "s|@HTTPS_PORT@|${HTTPS_PORT:-443}|g" \
    -e "s|@MAX_BODY@|$max_body|g" \
    -e "s|@APP_TIMEOUT@|${APP_TIMEOUT:-300}|g" \
    -e "s|@TLS_CERT@|${TLS_CERT:-/run/secrets/tls_cert}|g" \
    -e "s|@TLS_KEY@|${TLS_KEY:-/run/secrets/tls_key}|g" \
    -e "s|@LOGIN_RATE@|${LOGIN_RATE:-10r/m}|g" \
    -e "s|@LOGIN_BURST@|${LOGIN_BURST:-5}|g" \
    -e "s|@MAX_CONNECTIONS_PER_CLIENT@|${MAX_CONNECTIONS_PER_CLIENT:-64}|g" \
    /etc/nginx/wildswarm.conf.template >"$conf"
mkdir -p /var/cache/wildswarm-proxy/body /var/cache/wildswarm-proxy/proxy
nginx -t -q -c "$conf"
exec nginx -c "$conf" -g 'daemon off;'
