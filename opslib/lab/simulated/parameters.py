"""The simulated host's parameter sets, as the lab's own code and tests give them to the
runbooks.

One source: :mod:`opslib.lab.simulated.sets`, generated from the lab's prefix and paths
(what ``opsbook demo --simulated``, ``lab up --simulated --configured`` and ``lab
notebook`` use too, as files). A set is typed by the runbook's own parameter cell, over
its declared defaults. The runbooks never import the lab: the lab calls them.

What only the lab knows is added here: which guest a test publishes, and that the lab
tests run each runbook on its own, so the NAT network keeps libvirt's stock name
(``lab.nat_network``) instead of the demo's rename.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opslib.core import params
from opslib.core.changes import Result
from opslib.engine import runner
from opslib.lab.config import Lab
from opslib.lab.simulated import sets
from opslib.procedures import forward_bridge, ipv6_tunnel, nat_bridge_ipv6

__all__ = ["apply_runbook", "arguments", "parameter_set", "publish_set", "standalone_set"]

# The changing runbooks the lab tests apply as set-up for later ones.
PROCEDURES = {
    "forward-bridge": forward_bridge,
    "nat-bridge-ipv6": nat_bridge_ipv6,
    "ipv6-tunnel": ipv6_tunnel,
}


def parameter_set(
    lab: Lab, runbook: str, *, repo: Path | None = None, **changes: Any
) -> dict[str, Any]:
    """Every parameter of ``runbook`` for ``lab``, typed: its simulated-host set over the
    notebook's defaults, ``changes`` on top."""
    info = runner.find_runbook(runbook, repo / "notebooks" if repo else None)
    given = sets.sets(lab).get(runbook, {})
    return params.validate(info.params, {**given, **changes}, where=f"{runbook}: ")


def standalone_set(lab: Lab, runbook: str, **changes: Any) -> dict[str, Any]:
    """:func:`parameter_set` for a runbook run on its own: the NAT network keeps its stock
    name (the demo renames it first; the lab tests do not)."""
    stock = {
        "nat-bridge-ipv6": {"network": lab.nat_network, "rename_from": ""},
        "ipv6-tunnel": {"nat_network": lab.nat_network},
    }
    return parameter_set(lab, runbook, **{**stock.get(runbook, {}), **changes})


def publish_set(lab: Lab, vm: str) -> dict[str, Any]:
    """cloudflare-aaaa's set publishing guest ``vm`` (the set names vm-nat1) under its name."""
    values = parameter_set(lab, "cloudflare-aaaa", vm=vm)
    return {**values, "record_name": f"{vm}.{values['zone']}"}


def arguments(fn: Callable[..., Any], values: dict[str, Any]) -> dict[str, Any]:
    """The ``values`` that ``fn``'s signature names, as keyword arguments."""
    names = inspect.signature(fn).parameters
    return {k: v for k, v in values.items() if k in names}


def apply_runbook(lab: Lab, runbook: str, **changes: Any) -> Result:
    """Plan and apply ``runbook`` on ``lab`` with its :func:`standalone_set`."""
    module = PROCEDURES[runbook]
    values = standalone_set(lab, runbook, **changes)
    planned = module.plan(**arguments(module.plan, values))
    return module.apply(planned, **arguments(module.apply, values))
