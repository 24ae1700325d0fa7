"""One way to replace a file: a reader sees the old content or the new, never half.

Temp file in the same directory, fsync, rename, fsync of the directory (so that the
rename survives a crash). An existing file keeps its mode and, as root, its owner;
a new one gets ``mode``. Errors are the OSError of the step that failed; callers
that change a host translate it (``interfaces.write_atomic``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def atomic_write(path: str | Path, data: str | bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8, line endings as given)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        old: os.stat_result | None = path.stat()
    except FileNotFoundError:
        old = None
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        if old is not None:
            os.chmod(tmp, old.st_mode & 0o7777)
            if os.geteuid() == 0:
                os.chown(tmp, old.st_uid, old.st_gid)
        else:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def free_mib(path: str | Path) -> tuple[Path, int]:
    """Free space (MiB) where ``path`` is or will be: its nearest existing parent, and that."""
    probe = Path(path)
    while not probe.exists():
        probe = probe.parent
    return probe, shutil.disk_usage(probe).free // 2**20
