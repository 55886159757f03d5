#!/bin/sh
# wildswarm's front door: render nginx.conf from the template, check it, run nginx in the foreground.
# `wildswarm-proxy docker-api` runs the read-only Docker API for Prometheus instead (docker-api.conf).
#
#   WEB_UPSTREAM (web:8000)  RABBITMQ_UPSTREAM (rabbitmq:15672)  PROMETHEUS_UPSTREAM (prometheus:9090)
#   HTTPS_PORT (443: the published port plain HTTP redirects to)  MAX_UPLOAD (4g)  APP_TIMEOUT (300 s)
#   TLS_CERT (/run/secrets/tls_cert)  TLS_KEY (/run/secrets/tls_key)
#   LOGIN_RATE (10r/m) LOGIN_BURST (5)  MAX_CONNECTIONS_PER_CLIENT (64)
set -eu
if [ "${1:-}" = docker-api ]; then      # the read-only Docker API for Prometheus (docker-api.conf)
  mkdir -p /var/cache/wildswarm-proxy/body /var/cache/wildswarm-proxy/proxy
  nginx -t -q -c /etc/nginx/docker-api.conf
  exec nginx -c /etc/nginx/docker-api.conf -g 'daemon off;'
fi
conf=/run/wildswarm-proxy/nginx.conf
sed -e "s|@WEB_UPSTREAM@|${WEB_UPSTREAM:-web:8000}|g" \
    -e "s|@RABBITMQ_UPSTREAM@|${RABBITMQ_UPSTREAM:-rabbitmq:15672}|g" \
    -e "s|@PROMETHEUS_UPSTREAM@|${PROMETHEUS_UPSTREAM:-prometheus:9090}|g" \
    -e "s|@HTTPS_PORT@|${HTTPS_PORT:-443}|g" \
    -e "s|@MAX_UPLOAD@|${MAX_UPLOAD:-4g}|g" \
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
