#!/usr/bin/env bash
# Headless Chromium and its WebDriver for wildswarm's browser tests (tests/browser/), and
# Chart.js, which the web app serves on its cluster page (the web image installs it the same way).
#
#   scripts/browser-local.sh     install Debian's chromium + chromium-driver + libjs-chart.js if missing (apt)
#
# Idempotent: when /usr/bin/chromium, /usr/bin/chromedriver and Chart.js are there it
# does nothing. Needs root for apt. Nothing is downloaded at test time: the
# tests drive /usr/bin/chromium through /usr/bin/chromedriver with Selenium.
set -euo pipefail

log() { printf 'browser-local: %s\n' "$*" >&2; }

CHARTJS=/usr/share/javascript/chart.js/chart.min.js
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] && [ -f "$CHARTJS" ]; then
  log "chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}') and chromedriver present"
  exit 0
fi
[ "$(id -u)" = 0 ] || { log "error: run as root to install chromium and chromium-driver (apt)"; exit 1; }
export DEBIAN_FRONTEND=noninteractive
log "installing chromium, chromium-driver and libjs-chart.js (apt)"
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core libjs-chart.js >/dev/null
[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] || { log "error: chromium did not install"; exit 1; }
[ -f "$CHARTJS" ] || { log "error: libjs-chart.js did not install"; exit 1; }
log "installed: $(/usr/bin/chromium --version 2>/dev/null)"
