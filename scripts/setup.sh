#!/usr/bin/env bash
# Idempotent set-up on Debian 12 as root: Debian packages, .venv with opslib
# (editable, with test extras), a Jupyter kernelspec pointing at that venv.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

step() { printf '==> %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "setup: run as root (it installs Debian packages): sudo $0" >&2
  exit 2
fi

mapfile -t pkgs < <(grep -Ev '^\s*(#|$)' scripts/debian-packages.txt)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  step "Debian packages present"
fi

# Every booted lab host's systemd holds about a dozen inotify instances, all counted against
# root's limit (Debian's default 128): the test suite's lab sessions boot about ten hosts
# side by side, beside what the machine runs itself.
want=1024
have=$(cat /proc/sys/fs/inotify/max_user_instances)
if [ "$have" -lt "$want" ]; then
  step "sysctl fs.inotify.max_user_instances $have -> $want (booted lab hosts)"
  sysctl -qw fs.inotify.max_user_instances=$want
fi

py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  step "virtualenv .venv ($($py --version))"
  "$py" -m venv .venv
fi
stamp=.venv/.opsbook-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  step "pip install -e .[test,fleet]"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test,fleet]"
  touch "$stamp"
else
  step "virtualenv up to date"
fi

step "Jupyter kernelspec opsbook -> .venv"
.venv/bin/python -m ipykernel install --prefix "$root/.venv" --name opsbook \
  --display-name "opsbook (.venv)" >/dev/null

# opslib is installed editable: every run, kernel and test imports it from this checkout.
# Compiled once here, it is not compiled again by each of those processes (with
# PYTHONDONTWRITEBYTECODE set, Python reads .pyc files but never writes them).
step "bytecode of opslib"
.venv/bin/python -m compileall -q opslib tests ansible benchmarks

step "guest kernel and initramfs"
.venv/bin/opsbook lab image

step "promtool and node_exporter (unpacked from their Debian packages, not installed: /var/cache/opsbook/prometheus)"
./scripts/prometheus-tools.sh

step "daemon host image (Debian 12 root file system, cached under /var/cache/opsbook/rootfs)"
.venv/bin/opsbook lab host image
