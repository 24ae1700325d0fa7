"""opsbook on a booted lab host, installed as docs/operating.md says (Installing on a daemon host).

The host has no route to any package index, so, as an operator would:

1. on the workstation, ``scripts/build-wheelhouse.sh DIR``: opsbook and every
   dependency as wheels (``LAB/wheelhouse``);
2. ``scp`` the wheelhouse and ``scripts/install-daemon-host.sh`` to the host as the
   operator, over the lab's SSH;
3. ``sudo sh install-daemon-host.sh WHEELHOUSE`` there: a venv in /opt/opsbook, the
   Jupyter kernelspec ``opsbook``, ``/usr/local/bin/opsbook``; the runbooks come with
   the package (/opt/opsbook/share/opsbook/notebooks).

Each wheelhouse is kept under :data:`WHEELHOUSES`, named for the sources it was built
from: a lab brought up again from the same sources copies it instead of building it, so
its wheelhouse id stays the same. ``opsbook lab up`` and the demo keep what that install
made (``/opt/opsbook`` and the ``/usr/local/bin/opsbook`` link, nothing else) as an
overlay layer under :data:`LAYERS`, named for the host image and the wheelhouse id; a
later host booted from the same image with the same wheelhouse gets it as a lower layer
of its root (:func:`cached_layer`), so the install step finds that wheelhouse installed. A run of
``scripts/test.sh`` installs once: its first booted host installs, the others boot on
that install as a layer kept for that run only (tests/lab/conftest.py).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from opslib.core import procs
from opslib.core.errors import HostError
from opslib.lab.booted import ssh
from opslib.lab.config import Lab

SCRIPTS = Path(__file__).resolve().parents[3] / "scripts"
BUILD = SCRIPTS / "build-wheelhouse.sh"
INSTALL = SCRIPTS / "install-daemon-host.sh"
STAGING = "/tmp/opsbook-install"  # on the host, as the operator
INSTALLED_ID = "/opt/opsbook/share/opsbook/wheelhouse.id"  # written by the install script


LAYERS = Path(os.environ.get("OPSBOOK_INSTALL_CACHE", "/var/cache/opsbook/installs"))
KEEP_LAYERS = 2  # the newest; a layer a host's root is mounted on is never removed
WHEELHOUSES = LAYERS.parent / "wheelhouses"  # per source digest: the same wheels again


def wheelhouse(lab: Lab) -> Path:
    return lab.root / "wheelhouse"


def source_digest(checkout: Path = SCRIPTS.parent) -> str:
    """What the wheelhouse is built from: opslib, notebooks, parameter sets, packaging."""
    digest = hashlib.sha256()
    parts = [checkout / "pyproject.toml", checkout / "README.md", BUILD]
    for top in ("opslib", "notebooks", "parameters"):
        parts += [p for p in (checkout / top).rglob("*") if "__pycache__" not in p.parts]
    for path in sorted(p for p in parts if p.is_file()):
        digest.update(str(path.relative_to(checkout)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def build_wheelhouse(lab: Lab, *, timeout: float = 900) -> Path:
    """The wheels of this checkout's opsbook and its dependencies, in ``LAB/wheelhouse``;
    built again only when the sources changed."""
    if not BUILD.exists():
        raise HostError(f"no {BUILD}: the lab installs opsbook from a checkout of it")
    out, source = wheelhouse(lab), source_digest()
    stamp = out / ".source"
    if stamp.exists() and stamp.read_text() == source and (out / "wheelhouse.id").exists():
        return out
    stamp.unlink(missing_ok=True)
    kept = WHEELHOUSES / source[:32]
    if (kept / "wheelhouse.id").is_file():  # built from these sources before, by any lab
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(kept, out)
    else:
        _local([str(BUILD), str(out)], "building the wheelhouse", timeout)
        _keep(out, kept)
    stamp.write_text(source)
    return out


def _keep(out: Path, kept: Path) -> None:
    """A copy of a fresh wheelhouse, so that a lab brought up again (``lab down`` removes
    its own) gets the same wheels, and so the same wheelhouse id, without a build."""
    tmp = kept.with_name(f".{kept.name}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(out, tmp, ignore=shutil.ignore_patterns(".source"))
    try:
        tmp.rename(kept)
    except OSError:  # another lab kept the same sources meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    by_age = sorted(
        (p for p in WHEELHOUSES.iterdir() if not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in by_age[KEEP_LAYERS:]:
        shutil.rmtree(old, ignore_errors=True)


def install(lab: Lab, name: str, *, progress: Callable[[str], None] = print) -> None:
    """Build the wheelhouse, copy it in over SSH, run the install script with sudo there."""
    started = time.monotonic()
    out = build_wheelhouse(lab)
    progress(f"wheelhouse {out} ({len(list(out.glob('*.whl')))} wheels, "
             f"{time.monotonic() - started:.1f}s)")  # fmt: skip
    wanted = (out / "wheelhouse.id").read_text().strip()
    have = ssh.run(lab, name, f"cat {INSTALLED_ID}", check=False).stdout.strip()
    if have == wanted:
        progress(f"host {name}: opsbook already installed from this wheelhouse")
        return
    started = time.monotonic()
    ssh.run(lab, name, f"rm -rf {STAGING} && mkdir -m 700 {STAGING}")
    _local(ssh.scp_argv(lab, name, [out, INSTALL], STAGING), f"scp to {name}", 300)
    progress(f"host {name}: wheelhouse copied over SSH ({time.monotonic() - started:.1f}s)")
    started = time.monotonic()
    script = f"{STAGING}/{INSTALL.name}"
    done = ssh.run(
        lab, name, f"sudo sh {script} {STAGING}/{out.name} && rm -rf {STAGING}", timeout=900
    )
    line = done.stdout.strip().splitlines()[-1:] or ["installed"]
    progress(f"host {name}: {line[0]} ({time.monotonic() - started:.1f}s)")


def _local(argv: list[str], what: str, timeout: float) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise HostError(f"{what} timed out after {timeout:.0f}s") from exc
    if proc.returncode != 0:
        tail = procs.last_line(proc)
        raise HostError(f"{what} failed (rc {proc.returncode}): {tail}")


# -- the install, kept as an overlay layer ------------------------------------------------
def _layer(lab: Lab, image: Path) -> Path:
    wanted = (build_wheelhouse(lab) / "wheelhouse.id").read_text().strip()
    return LAYERS / f"{image.name}-{wanted[:16]}"


def cached_layer(lab: Lab, image: Path) -> Path | None:
    """The kept install for ``image`` and this checkout's wheelhouse, if there is one
    (builds the wheelhouse when the sources changed)."""
    layer = _layer(lab, image)
    return layer if (layer / INSTALLED_ID.lstrip("/")).is_file() else None


def save_layer(lab: Lab, root: Path, image: Path, *, progress: Callable[[str], None]) -> None:
    """Keep what the install made on the host whose root is ``root`` (again: harmless)."""
    layer = _layer(lab, image)
    if (layer / INSTALLED_ID.lstrip("/")).is_file():
        return
    started = time.monotonic()
    tmp = layer.with_name(f".{layer.name}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "opt").mkdir(parents=True)
        _local(["cp", "-a", str(root / "opt" / "opsbook"), str(tmp / "opt")], "keeping", 300)
        (tmp / "usr" / "local" / "bin").mkdir(parents=True)
        (tmp / "usr" / "local" / "bin" / "opsbook").symlink_to("/opt/opsbook/bin/opsbook")
        tmp.rename(layer)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress(f"install kept as {layer} ({time.monotonic() - started:.1f}s)")
    _prune()


def _prune() -> None:
    mounts = Path("/proc/self/mountinfo").read_text()
    layers = sorted(
        (p for p in LAYERS.iterdir() if not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in layers[KEEP_LAYERS:]:
        if str(old) not in mounts:
            shutil.rmtree(old, ignore_errors=True)
