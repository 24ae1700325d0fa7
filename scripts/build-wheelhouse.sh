#!/bin/sh
# On the workstation: opsbook and every dependency as wheels in DIR, for a daemon host
# that has no network (README: "Installing on a daemon host").
#   scripts/build-wheelhouse.sh DIR
# The wheels are chosen for, and built by, $PYTHON (default /usr/bin/python3): the
# Debian 12 python3 that the daemon host has too (a package may need a newer 3.11.x
# than Debian's). Dependency wheels are kept in $OPSBOOK_WHEEL_CACHE (default
# /var/cache/opsbook/wheels): once they are all there, no package index is needed.
set -eu
out=${1:?usage: build-wheelhouse.sh DIR}
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${OPSBOOK_WHEEL_CACHE:-/var/cache/opsbook/wheels}
target=${PYTHON:-/usr/bin/python3}
mkdir -p "$out" "$cache"
rm -f "$out"/*.whl

# A clean copy of the sources: a build in the checkout would leave build/ behind there.
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
cp -r "$here/pyproject.toml" "$here/README.md" "$here/opslib" "$here/notebooks" \
  "$here/parameters" "$src/"
find "$src" -name __pycache__ -prune -exec rm -rf {} +

exec 9>"$cache/.lock"
flock 9  # two labs building at once share the cache
# pip for the target python: a venv of it beside the cache, made once
version=$("$target" -c 'import platform; print(platform.python_version())')
python=$cache/.venv-$version/bin/python
[ -x "$python" ] || "$target" -m venv "$cache/.venv-$version"
wheel() { "$python" -m pip wheel -q --disable-pip-version-check --find-links "$cache" "$@"; }
# opsbook itself; its build backend comes from the cache too
ls "$cache"/setuptools-*.whl >/dev/null 2>&1 || wheel --wheel-dir "$cache" "setuptools>=68"
wheel --no-index --no-deps --wheel-dir "$out" "$src"
# what it needs: from the cache (offline) when all is there, else the package index fills it
if ! wheel --no-index --wheel-dir "$out" "$out"/opslib-*.whl 2>/dev/null; then
  wheel --wheel-dir "$cache" "$out"/opslib-*.whl
  rm -f "$cache"/opslib-*.whl
  wheel --no-index --wheel-dir "$out" "$out"/opslib-*.whl
fi
# what install-daemon-host.sh records as installed: one digest of every wheel
(cd "$out" && sha256sum ./*.whl) | sha256sum | cut -d' ' -f1 >"$out/wheelhouse.id"
echo "wheelhouse $out: $(ls "$out" | grep -c '\.whl$') wheels for Python $version"
