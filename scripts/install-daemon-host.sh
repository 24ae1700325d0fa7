#!/bin/sh
# On the daemon host, as root: install opsbook from a wheelhouse, no network needed
# (docs/operating.md: "Installing on a daemon host"). Again with a newer wheelhouse upgrades it.
#   sudo sh install-daemon-host.sh WHEELHOUSE [PREFIX]     (PREFIX default /opt/opsbook)
set -eu
wheelhouse=${1:?usage: install-daemon-host.sh WHEELHOUSE [PREFIX]}
prefix=${2:-/opt/opsbook}
if [ "$(id -u)" != 0 ]; then
  echo "install-daemon-host: run it as root: sudo sh $0 $*" >&2
  exit 2
fi
set -- "$wheelhouse"/opslib-*.whl
if [ ! -f "$1" ]; then
  echo "install-daemon-host: no opslib wheel in $wheelhouse; build it with scripts/build-wheelhouse.sh" >&2
  exit 2
fi
command -v python3 >/dev/null && python3 -c 'import ensurepip' 2>/dev/null || {
  echo "install-daemon-host: needs python3 with venv: apt-get install python3-venv" >&2
  exit 2
}

# Until this install is done, no wheelhouse is claimed: an install cut short is not taken
# for a finished one (ansible/install.yml compares `opsbook --version` with the wheelhouse).
rm -f "$prefix/share/opsbook/wheelhouse.id"
[ -x "$prefix/bin/python" ] || python3 -m venv "$prefix"
pip() { "$prefix/bin/python" -m pip -q --disable-pip-version-check "$@"; }
# what opslib needs, then opslib itself again (same version, newer code)
pip install --no-index --find-links "$wheelhouse" opslib
pip install --no-index --no-deps --force-reinstall "$1"
# the kernel papermill and JupyterLab start for the runbooks: this venv's python
"$prefix/bin/python" -m ipykernel install --prefix "$prefix" --name opsbook \
  --display-name "opsbook ($prefix)" >/dev/null
ln -sfn "$prefix/bin/opsbook" /usr/local/bin/opsbook
# the runbooks come with the package ($prefix/share/opsbook/notebooks)
/usr/local/bin/opsbook runbooks >/dev/null
# which wheelhouse this is (build-wheelhouse.sh writes the digest of its wheels)
if [ -f "$wheelhouse/wheelhouse.id" ]; then
  cp "$wheelhouse/wheelhouse.id" "$prefix/share/opsbook/wheelhouse.id"
fi
echo "opsbook $("$prefix/bin/opsbook" --version | cut -d' ' -f2) installed in $prefix; /usr/local/bin/opsbook"
