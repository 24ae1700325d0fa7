"""Kernel settings persisted as a file of ``/etc/sysctl.d`` (read by systemd-sysctl at
boot) and applied now with ``sysctl -p FILE``; their live values, and putting both back.

A file is written whole (:func:`render`): its settings, one ``KEY = VALUE`` a line, under
a comment naming the runbook that wrote it. The room router's IPv6 forwarding is one;
a daemon host's ``accept_ra`` (it forwards, so it takes RAs only with 2) another.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

from opslib.core import files, procs
from opslib.core.errors import ApplyError, HostError

SYSCTL_DIR = Path("/etc/sysctl.d")


def render(settings: Mapping[str, str], why: str) -> str:
    """The file: a comment saying why, then each setting in the given order."""
    lines = [f"# {line}" for line in why.splitlines()]
    lines += [f"{key} = {value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def _argv(netns: str, *args: str) -> list[str]:
    argv = ["sysctl", *args]
    return ["ip", "netns", "exec", netns, *argv] if netns else argv


def _run(netns: str, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            _argv(netns, *args), capture_output=True, text=True, timeout=30, check=False
        )
    except FileNotFoundError as exc:
        raise HostError("sysctl is missing: apt-get install procps") from exc


def live(key: str, netns: str = "") -> str:
    """The kernel's value now ("" when the key does not exist here)."""
    done = _run(netns, "-n", key)
    return done.stdout.strip() if done.returncode == 0 else ""


def set_live(settings: Mapping[str, str], netns: str = "") -> None:
    """Each setting now (``sysctl -w``), in order."""
    for key, value in settings.items():
        done = _run(netns, "-q", "-w", f"{key}={value}")
        if done.returncode != 0:
            raise ApplyError(f"sysctl -w {key}={value} failed: {procs.last_line(done)}")


def install(path: Path, text: str, settings: Mapping[str, str], netns: str = "") -> None:
    """Write the file, then apply its settings now (what systemd-sysctl does at boot)."""
    try:
        files.atomic_write(path, text)
    except OSError as exc:
        raise ApplyError(f"cannot write {path}: {exc.strerror}") from exc
    set_live(settings, netns)


def read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def put_back(path: Path, text: str | None, before: Mapping[str, str], netns: str = "") -> str:
    """The file as observed (removed when there was none) and the live values as observed."""
    done = files.restore_as_observed(path, text, write=lambda old: files.atomic_write(path, old))
    set_live({k: v for k, v in before.items() if v != ""}, netns)
    return f"{done}; {', '.join(f'{k}={v}' for k, v in before.items())} again"
