"""The interfaces file on disk: read exactly (line ends kept), written atomically
(mode and owner kept), backed up beside itself, restored or put back byte for byte."""

from __future__ import annotations

import datetime as _dt
import os

from opslib.core import files
from opslib.core.errors import ApplyError, InputError


def write_atomic(path: str, text: str) -> None:
    """Replace ``path`` with ``text`` atomically, keeping its mode and owner."""
    try:
        files.atomic_write(path, text)
    except OSError as exc:
        raise ApplyError(f"cannot write {path}: {exc.strerror}") from exc


def read_exact(path: str) -> str | None:
    """The file as it is, line ends included (CRLF stays CRLF); None when it is absent."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc


def put_back(path: str, text: str | None) -> str:
    """The file as :func:`read_exact` found it, byte for byte (removed when there was none);
    what it did (:func:`opslib.core.files.restore_as_observed`)."""
    return files.restore_as_observed(path, text, write=lambda old: write_atomic(path, old))


def restore(path: str, copy: str) -> None:
    """Put a backup back, byte for byte (CRLF kept), atomically, keeping mode and owner."""
    with open(copy, encoding="utf-8", newline="") as f:
        write_atomic(path, f.read())


def backup(path: str, directory: str = "", *, now: _dt.datetime | None = None) -> str:
    """Copy ``path`` to ``DIR/NAME.opsbook-YYYYmmddTHHMMSSZ`` (kept); returns the copy's path."""
    stamp = (now or _dt.datetime.now(_dt.UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    target_dir = directory or os.path.dirname(os.path.abspath(path))
    target = os.path.join(target_dir, f"{os.path.basename(path)}.opsbook-{stamp}")
    try:
        os.makedirs(target_dir, exist_ok=True)
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except OSError as exc:
        raise ApplyError(f"cannot back up {path}: {exc.strerror}") from exc
    write_atomic(target, text)
    st = os.stat(path)
    os.chmod(target, st.st_mode & 0o7777)
    return target
