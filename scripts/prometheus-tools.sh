#!/usr/bin/env bash
# promtool and node_exporter for the tests (rule tests, the textfile-collector scrape),
# taken from Debian 12's packages `prometheus` and `prometheus-node-exporter` WITHOUT
# installing them: their maintainer scripts would start both daemons, listening on all
# addresses. The .debs are fetched with `apt-get download` and only the two binaries are
# unpacked (`dpkg-deb -x`) into the cache; a second run finds them and does nothing.
#   scripts/prometheus-tools.sh [CACHE]    (default /var/cache/opsbook/prometheus)
# Result: CACHE/bin/promtool and CACHE/bin/node_exporter.
set -euo pipefail
cache=${1:-${OPSBOOK_PROMETHEUS_CACHE:-/var/cache/opsbook/prometheus}}
bin=$cache/bin

if [ -x "$bin/promtool" ] && [ -x "$bin/node_exporter" ] \
  && "$bin/promtool" --version >/dev/null 2>&1 \
  && "$bin/node_exporter" --version >/dev/null 2>&1; then
  echo "promtool and node_exporter present in $bin"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# apt-get download runs as the _apt user where it can: let it write here.
if id _apt >/dev/null 2>&1; then chown _apt "$tmp"; fi
download() { (cd "$tmp" && apt-get download -qq prometheus prometheus-node-exporter); }
if ! download 2>/dev/null; then
  # a clean machine has no package lists yet (or stale ones)
  apt-get update -qq
  download
fi
for deb in "$tmp"/*.deb; do
  dpkg-deb -x "$deb" "$tmp/root"
done
mkdir -p "$bin"
install -m 0755 "$tmp/root/usr/bin/promtool" "$bin/promtool.new"
install -m 0755 "$tmp/root/usr/bin/prometheus-node-exporter" "$bin/node_exporter.new"
mv -f "$bin/promtool.new" "$bin/promtool"
mv -f "$bin/node_exporter.new" "$bin/node_exporter"
"$bin/promtool" --version | head -n 1
"$bin/node_exporter" --version 2>&1 | head -n 1
