#!/usr/bin/env bash
# Debian servers the server tests (test_ui, deploy/test_scale_out) start on 127.0.0.1 themselves: Redis (Celery broker),
# PostgreSQL (Dagster run/event storage) and headless Chromium (the UI test). Installed with
# apt-get when missing and this runs as root; otherwise it says what to install.
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
{ command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "d3ke setup: installing ${missing[*]} with apt-get (servers for the server tests)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
  # Debian starts the services it installs; the tests start their own on free ports
  for svc in redis-server postgresql; do service "$svc" stop >/dev/null 2>&1 || true; done
else
  echo "d3ke setup: the server tests need ${missing[*]}: install them (apt-get install ${missing[*]}) and rerun" >&2
  exit 1
fi
