"""A scheduled fleet run's entry in ``schedule.yaml``: ``fleet: {inventory: PATH, limit:
PATTERN, forks: N}``, checked as the unit that runs ``opsbook fleet run`` will name it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from opslib.core.errors import InputError
from opslib.core.systemd_calendar import unit_line, unit_path


@dataclass(frozen=True)
class FleetTarget:
    """The hosts of a scheduled fleet run: ``opsbook fleet run -i INVENTORY --limit …``."""

    inventory: Path
    limit: str = ""
    forks: int | None = None


_FLEET_KEYS = ("inventory", "limit", "forks")


def parse(value: object, base: Path, where: str) -> FleetTarget:
    """A run's ``fleet: {inventory: PATH, limit: PATTERN, forks: N}``."""
    shape = "fleet: {inventory: PATH, limit: PATTERN, forks: N}"
    if not isinstance(value, dict):
        raise InputError(f"{where}: 'fleet' must be a mapping, e.g. {shape}")
    unknown = sorted(str(k) for k in value if k not in _FLEET_KEYS)
    if unknown:
        raise InputError(
            f"{where}: fleet has no {unknown[0]!r}; its keys: {', '.join(_FLEET_KEYS)}"
        )
    if not value.get("inventory"):
        raise InputError(f"{where}: fleet needs 'inventory' (an Ansible inventory), e.g. {shape}")
    given = unit_line(value["inventory"], f"{where}: fleet inventory")
    inventory = unit_path((base / given).resolve(), f"{where}: fleet inventory")
    if not inventory.is_file():
        raise InputError(
            f"{where}: fleet inventory {inventory} does not exist "
            "(relative to the schedule file; `opsbook lab up --hosts N` writes one)"
        )
    limit = value.get("limit", "")
    if not isinstance(limit, str) or (limit and not limit.strip()):
        raise InputError(f"{where}: fleet limit must be an Ansible host pattern, got {limit!r}")
    unit_line(limit, f"{where}: fleet limit", backslash=False)
    forks = value.get("forks")
    if forks is not None and (isinstance(forks, bool) or not isinstance(forks, int) or forks < 1):
        raise InputError(
            f"{where}: fleet forks must be a whole number of hosts >= 1, got {forks!r}"
        )
    return FleetTarget(inventory, limit.strip(), forks)
