"""Where the runbooks are and which one a name means: what a command checks first.

Only :mod:`opslib.core.params` is needed to read a runbook's declarations, so a command
that checks its input before anything else (``opsbook fleet run`` before it starts
Ansible) does not import the engine that runs notebooks (:mod:`opslib.engine.runner`,
which re-exports these).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from opslib.core import params
from opslib.core.errors import InputError, UnknownName
from opslib.core.params import RunbookInfo

__all__ = ["find_runbook", "list_runbooks", "notebooks_dir"]


def notebooks_dir() -> Path:
    """$OPSBOOK_NOTEBOOKS, else the checkout's notebooks/, else those installed with the
    package (PREFIX/share/opsbook/notebooks: pyproject's data-files), else ./notebooks."""
    env = os.environ.get("OPSBOOK_NOTEBOOKS")
    if env:
        return Path(env)
    for candidate in (
        Path(__file__).resolve().parents[2] / "notebooks",
        Path(sys.prefix) / "share" / "opsbook" / "notebooks",
    ):
        if candidate.is_dir():
            return candidate
    return Path("notebooks")


def list_runbooks(directory: Path | None = None) -> list[RunbookInfo]:
    directory = directory or notebooks_dir()
    return [params.read_runbook(p) for p in sorted(directory.glob("*.ipynb"))]


def find_runbook(name: str, directory: Path | None = None) -> RunbookInfo:
    """A runbook by name (``forward-bridge``) or by notebook path."""
    if name.endswith(".ipynb"):
        path = Path(name)
        if not path.is_file():
            raise InputError(f"{name}: no such notebook")
        return params.read_runbook(path)
    directory = directory or notebooks_dir()
    path = directory / f"{name}.ipynb"
    if not path.is_file():
        known = [p.stem for p in directory.glob("*.ipynb")]
        raise UnknownName("runbook", name, known)
    return params.read_runbook(path)
