"""One way to replace a file: a reader sees the old content or the new, never half.

Temp file in the same directory, fsync, rename, fsync of the directory (so that the
rename survives a crash). An existing file keeps its mode and, as root, its owner;
a new one gets ``mode``. Errors are the OSError of the step that failed; callers
that change a host translate it (``file_io.write_atomic``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from opslib.core.errors import ApplyError


def atomic_write(
    path: str | Path,
    data: str | bytes,
    *,
    mode: int = 0o644,
    owner: tuple[int, int] | None = None,
    parents: bool = True,
) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8, line endings as given).

    ``owner`` (uid, gid): the file gets exactly ``mode`` and this owner, whatever the old
    one had (a file in someone's home). ``parents=False``: a missing directory is an
    error, not made (as root, it would be root's)."""
    path = Path(path)
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    old: os.stat_result | None = None
    if owner is None:
        with contextlib.suppress(FileNotFoundError):
            old = path.stat()
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
            if owner is not None and owner != (os.geteuid(), os.getegid()):
                os.chown(tmp, *owner)
            os.chmod(tmp, mode)  # after chown, which drops setuid/setgid bits
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


def restore_as_observed(
    path: str | Path,
    text: str | None,
    *,
    write: Callable[[str], None],
    remove: Callable[[], bool] | None = None,
    what: str = "",
) -> str:
    """Put a file, or a unit that is one, back as observe found it (``text``; None: there
    was none): the one undo of every runbook that changed one, like a rollback to a pyroute2
    NDB snapshot. ``write(text)`` puts the old content back (with its mode and owner, or
    restarting the unit); ``remove()`` takes away what apply made, True if there was
    something (default: unlink ``path``). Returns what it did for the step's detail:
    'WHAT restored', 'WHAT removed', or '' when there was nothing then and is nothing now.
    ``what`` names it (default: the path)."""
    what = what or str(path)
    if text is not None:
        write(text)
        return f"{what} restored"
    if remove is None:
        remove = lambda: _unlink(path)  # noqa: E731
    return f"{what} removed" if remove() else ""


def _unlink(path: str | Path) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ApplyError(f"cannot remove {path}: {exc.strerror}") from exc
    return True
