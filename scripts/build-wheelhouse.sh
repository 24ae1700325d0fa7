#!/bin/sh
# On the workstation: opsbook and every dependency as wheels in DIR, for a daemon host
# that has no network (docs/operating.md: "Installing on a daemon host").
#   scripts/build-wheelhouse.sh DIR
#   scripts/build-wheelhouse.sh --sources DIR   (only the sources opsbook's wheel is built
#                                                from, its revision baked in; for tests)
# The wheels are chosen for, and built by, $PYTHON (default /usr/bin/python3): the
# Debian 12 python3 that the daemon host has too (a package may need a newer 3.11.x
# than Debian's). Dependency wheels are kept in $OPSBOOK_WHEEL_CACHE (default
# /var/cache/opsbook/wheels): once they are all there, no package index is needed.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)

# A clean copy of the sources in $1: a build in the checkout would leave build/ behind
# there. An installed opsbook has no git checkout: the revision it was built from goes
# into the wheel (opslib/_revision.txt, read by record_header.repo_revision for the
# records it files), as a checkout names its own: HEAD's 12 digits, "-dirty" when
# tracked files differ from it.
sources() {
  cp -r "$here/pyproject.toml" "$here/README.md" "$here/opslib" "$here/notebooks" \
    "$here/parameters" "$1/"
  find "$1" -name __pycache__ -prune -exec rm -rf {} +
  rm -f "$1/opslib/_revision.txt"
  if rev=$(git -C "$here" rev-parse --short=12 HEAD 2>/dev/null); then
    [ -z "$(git -C "$here" status --porcelain --untracked-files=no)" ] || rev=$rev-dirty
    echo "$rev" >"$1/opslib/_revision.txt"
  else
    echo "build-wheelhouse: no git revision of $here: the wheel's revision is unknown" >&2
  fi
}
if [ "${1:-}" = --sources ]; then
  mkdir -p "${2:?usage: build-wheelhouse.sh --sources DIR}"
  sources "$2"
  exit 0
fi

out=${1:?usage: build-wheelhouse.sh DIR}
cache=${OPSBOOK_WHEEL_CACHE:-/var/cache/opsbook/wheels}
target=${PYTHON:-/usr/bin/python3}
mkdir -p "$out" "$cache"
rm -f "$out"/*.whl

src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
sources "$src"

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
