"""The per-host apply lock: one changing run per host at a time.

A lock file per host under ``RECORDS/locks/`` held with ``fcntl.flock``: the
kernel drops it when the holder dies, so a killed run never leaves a stale lock.
The holder writes who it is into the file, for the message of the run that waits.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from opslib.core.errors import LockHeld

__all__ = ["DEFAULT_WAIT", "host_lock", "lock_wait"]

DEFAULT_WAIT = 30.0


def lock_wait() -> float:
    """Seconds to wait for the lock: $OPSBOOK_LOCK_WAIT or DEFAULT_WAIT."""
    try:
        return float(os.environ.get("OPSBOOK_LOCK_WAIT", DEFAULT_WAIT))
    except ValueError:
        return DEFAULT_WAIT


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return "another run"
    if not info:
        return "another run"
    return (
        f"pid {info.get('pid')} ({info.get('runbook')}, user {info.get('user')}, "
        f"since {info.get('start')})"
    )


@contextlib.contextmanager
def host_lock(
    records: Path, host: str, runbook: str, *, wait: float | None = None
) -> Iterator[None]:
    """Hold ``host``'s apply lock; LockHeld after ``wait`` seconds (default lock_wait())."""
    wait = lock_wait() if wait is None else wait
    lock_dir = Path(records) / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / f"{host}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockHeld(
                        f"host {host}: apply lock held by {_holder(fd)}; waited {wait:g} s, "
                        "try again when it has finished"
                    ) from None
                time.sleep(0.1)
        me = {
            # Headless, name the `opsbook run` process (what an operator looks for),
            # not the kernel it started.
            "pid": int(os.environ.get("OPSBOOK_RUNNER_PID") or os.getpid()),
            "runbook": runbook,
            "user": getpass.getuser(),
            "start": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
