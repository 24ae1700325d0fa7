"""The header of a run's record, built here and nowhere else.

Every record carries it in ``metadata.opsbook`` and the index keeps it as a row
(:mod:`opslib.records.store`). Headless runs (:mod:`opslib.engine.runner`) and interactive
applies and reports (:mod:`opslib.engine.runbook`) file the same fields: runbook, host,
parameters (a secret named by its source only), user, start and end, status, exit
code, changed, summary, opslib version and repository revision, mode and pid.
"""

from __future__ import annotations

import getpass
import os
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from opslib import __version__
from opslib.core import secrets
from opslib.core.params import Param

__all__ = ["EXIT_CODES", "finished", "header", "redact_parameters", "repo_revision"]

# A run's exit code by its final status; every other status (failed, timeout, locked,
# leaked-secret...) is 1.
EXIT_CODES = {"ok": 0, "bad-input": 2, "killed": 130}


def header(
    *,
    runbook: str,
    host: str,
    decls: Iterable[Param],
    values: Mapping[str, Any],
    mode: str,
    start: str,
) -> dict[str, Any]:
    """The header of a run that has started (status ``running``, no end yet)."""
    return {
        "runbook": runbook,
        "host": host,
        "parameters": redact_parameters(decls, values),
        "user": getpass.getuser(),
        "start": start,
        "end": None,
        "status": "running",
        "exit_code": None,
        "changed": None,
        "summary": "",
        "opslib_version": __version__,
        "revision": repo_revision(),
        "mode": mode,
        "pid": os.getpid(),
    }


def finished(
    started: Mapping[str, Any], *, status: str, changed: bool | None, summary: str, end: str
) -> dict[str, Any]:
    """``started`` with the run's outcome; the exit code follows from the status."""
    return {
        **started,
        "status": status,
        "exit_code": EXIT_CODES.get(status, 1),
        "changed": changed,
        "summary": summary,
        "end": end,
    }


def redact_parameters(decls: Iterable[Param], values: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters for the index. A secret parameter holds a source (file:/path, env:NAME),
    never a value; anything else in it is replaced, in case a caller bypassed validation."""
    kinds = {p.name: p.type for p in decls}
    return {
        k: (v if kinds.get(k) != "secret" or not v or _is_source(v) else secrets.REDACTED)
        for k, v in values.items()
    }


def _is_source(value: object) -> bool:
    return isinstance(value, str) and (value.startswith("file:/") or value.startswith("env:"))


# Written into the wheel by scripts/build-wheelhouse.sh: an installed opslib has no checkout.
BUILT_FROM = Path(__file__).resolve().parents[1] / "_revision.txt"
UNKNOWN = "unknown"


def repo_revision(where: Path | None = None) -> str:
    """The revision opslib's code is: in a git checkout, ``git rev-parse --short=12 HEAD``
    (+ '-dirty' when tracked files differ); installed from a wheel, the one the wheel was
    built from (:data:`BUILT_FROM`); else ``unknown``, never an empty string."""
    root = where or Path(__file__).resolve().parents[2]
    if where is None and not (root / ".git").exists():  # site-packages, not a checkout
        try:
            return BUILT_FROM.read_text().strip() or UNKNOWN
        except OSError:
            return UNKNOWN
    return _git_revision(root) or UNKNOWN


def _git_revision(root: Path) -> str | None:
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{rev}-dirty" if dirty else rev
