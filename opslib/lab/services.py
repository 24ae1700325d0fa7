"""Extra lab components that ``lab up`` starts and ``lab down`` stops (extension points)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from opslib.lab.config import Lab

Row = dict[str, str]


@dataclass(frozen=True)
class LabService:
    """An extra lab component started by ``up`` and stopped by ``down``.

    A module named in ``SERVICE_MODULES`` exposes ``SERVICE = LabService(...)``.
    ``up`` runs after the namespaces, NetReg, the host's eth0 and libvirtd are up
    and before the guests boot; ``down`` runs first in ``down`` and must work after
    a crash or a half-built ``up`` (idempotent, no error when nothing is there).
    """

    name: str
    up: Callable[[Lab], None]
    down: Callable[[Lab], None]
    status: Callable[[Lab], list[Row]] | None = None


SERVICE_MODULES = (
    "opslib.lab.campus.broker",
    "opslib.lab.cloudflare.service",
    "opslib.lab.booted.status",
)


def services() -> list[LabService]:
    found: list[LabService] = []
    for name in SERVICE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # not written yet
            raise
        service = getattr(module, "SERVICE", None)
        if isinstance(service, LabService):
            found.append(service)
    return found
