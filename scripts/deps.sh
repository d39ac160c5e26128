#!/usr/bin/env bash
# Installs what entrowatch's tests and demo need on Debian/Ubuntu:
#   apt: clickhouse-server, clickhouse-client (ClickHouse 18.16 on Debian 12); gcc and libc6-dev
#        when missing (cgo, for the race detector that `make unit` runs); prometheus for
#        promtool (the alert rules' unit tests)
#   npm: @chdb/lib-linux-x64-gnu (libchdb.so, current ClickHouse as a library) into .cache/npm
# Go modules are fetched by the go command itself. Safe to run twice.
# `deps.sh server` installs only the ClickHouse packages (what `make demo` needs).
set -euo pipefail
cd "$(dirname "$0")/.."
only_server=false
if [ "${1:-}" = server ]; then only_server=true; fi

sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi

need_apt=()
command -v clickhouse-server >/dev/null 2>&1 || [ -x /usr/sbin/clickhouse-server ] || need_apt+=(clickhouse-server)
command -v clickhouse-client >/dev/null 2>&1 || need_apt+=(clickhouse-client)
$only_server || command -v gcc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "deps: installing with apt: ${need_apt[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if $only_server; then exit 0; fi
# promtool (Debian's prometheus package) runs the alert rules' unit tests; the
# package also holds a server whose start the install may attempt, so a
# failure here only skips those tests (they say so), it does not stop CI.
if ! command -v promtool >/dev/null 2>&1; then
  echo "deps: installing prometheus (for promtool) with apt"
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } ||
    echo "deps: prometheus could not be installed; the promtool tests of deploy/prometheus/alerts.yml will be skipped" >&2
fi
lib=.cache/npm/node_modules/@chdb/lib-linux-x64-gnu/libchdb.so
if [ ! -f "$lib" ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "deps: installing @chdb/lib-linux-x64-gnu with npm into .cache/npm"
    mkdir -p .cache/npm
    npm install --silent --no-audit --no-fund --prefix .cache/npm @chdb/lib-linux-x64-gnu >/dev/null
  else
    echo "deps: npm not found; chDB compatibility tests will be skipped" >&2
  fi
fi
