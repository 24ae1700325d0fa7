"""Processes this code started: found by pid file and command line, ended by pid;
commands run to the end with their failure as one HostError line.

A pid is signalled only when its command line shows it is the program the pid
file was written for: a recycled pid belongs to someone else.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from opslib.core.errors import HostError


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def owned_pid(pidfile: Path, *markers: str) -> int | None:
    """The pid in ``pidfile`` if that process runs with every marker among its arguments."""
    pid = read_pid(pidfile)
    if pid is None:
        return None
    argv = cmdline(pid)
    return pid if argv and all(m in argv for m in markers) else None


def gone(pid: int) -> bool:
    """Exited, or a zombie that its parent (who ran `lab up`) has not reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def terminate(pids: Iterable[int], *, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL what is still there after ``grace`` seconds."""
    left = [p for p in set(pids) if p != os.getpid()]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while left and time.monotonic() < deadline:
        left = [p for p in left if not gone(p)]
        if left:
            time.sleep(0.05)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def last_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The last line a finished command wrote (its errors first): what a message quotes."""
    return (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]


def run(
    argv: list[str],
    *,
    what: str = "",
    check: bool = True,
    timeout: float = 60,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to the end, text output captured. A missing program, a timeout and
    (with ``check``) a non-zero exit are one :class:`HostError` line naming ``what``
    (default: the command line) and quoting its last line of output."""
    what = what or shlex.join(argv)
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, input=input, check=False
        )
    except FileNotFoundError as exc:
        raise HostError(
            f"{argv[0]} is missing; install it (see scripts/debian-packages.txt)"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise HostError(f"{what} timed out after {timeout:.0f}s") from exc
    if check and proc.returncode != 0:
        raise HostError(f"{what} failed (rc {proc.returncode}): {last_line(proc)}")
    return proc
