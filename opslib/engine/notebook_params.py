"""Where a runbook notebook's parameters come from, before :func:`opslib.engine.runbook.start`
validates them: the notebook file's ``parameters`` cell (or, without a file, the latest
console cell that reads as declarations), and an interactive session's preset values
(``$OPSBOOK_DEFAULTS/NAME.yaml``)."""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from opslib.core import params
from opslib.core.errors import InputError
from opslib.core.paramsets import load_param_file

DEFAULTS_ENV = "OPSBOOK_DEFAULTS"


def notebook_path(ns: MutableMapping[str, Any]) -> Path | None:
    """The notebook file the kernel runs, where one of the usual places names it."""
    for candidate in (
        os.environ.get("OPSBOOK_NOTEBOOK"),
        ns.get("__session__"),  # ipykernel under jupyter-server: the notebook's path
        ns.get("__vsc_ipynb_file__"),
        os.environ.get("JPY_SESSION_NAME"),
    ):
        if candidate and str(candidate).endswith(".ipynb") and Path(candidate).is_file():
            return Path(candidate)
    return None


def declarations_from_history(ns: MutableMapping[str, Any]) -> list[params.Param]:
    # Without a notebook file (a console, an unsaved notebook), the parameters
    # cell is the latest executed cell that reads as declarations.
    for source in reversed(list(ns.get("In", []) or [])):
        try:
            found = params.parse_declarations(source)
        except InputError:
            continue
        if found:
            return found
    return []


def preset_values(name: str, decls: list[params.Param], raw: dict[str, Any]) -> dict[str, Any]:
    """An interactive session's parameter set: ``$OPSBOOK_DEFAULTS/NAME.yaml``.

    The notebooks' defaults describe a real daemon host (``qemu:///system``); a session
    for another host (the lab: ``opsbook lab notebook``, or ``parameters/HOST/``) sets
    ``OPSBOOK_DEFAULTS`` and the form starts from that host's values. A value the
    operator already changed in the parameters cell is kept. Headless runs take their
    values from papermill only and ignore this.
    """
    directory = os.environ.get(DEFAULTS_ENV)
    path = Path(directory) / f"{name}.yaml" if directory else None
    if path is None or not path.is_file():
        return {}
    found = load_param_file(path)
    presets: dict[str, Any] = {}
    for p in decls:
        if p.name not in found or raw.get(p.name) != p.default:
            continue
        try:
            presets[p.name] = p.convert(found[p.name])
        except InputError:
            presets[p.name] = found[p.name]  # the form shows why it is wrong
    return presets
