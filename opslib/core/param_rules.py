"""Rules between two parameters, declared beside them in the parameters cell and checked
once every value has its type, wherever values are checked (opsbook run, the fleet's
check, the form, a runbook's inputs dataclass)::

    address = ""  # ipv4-cidr? (needs gateway): static IPv4 with prefix for the bridge
    gateway = ""  # ipv4? (needs address, in address): default router
    record_name = "vm.example.org"  # dns-name (in zone): the record's name
    prefix = "2001:db8:2::/64"  # ipv6-prefix64 (ula if allow_ula): the routed /64

A rule that needs the host (does the network exist?) is not one of these: it stays in
the runbook's observe.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from opslib.core.errors import InputError
from opslib.core.ipv6prefix import ULA

__all__ = ["RULE_KINDS", "Rule", "check_rules"]


@dataclass(frozen=True)
class Rule:
    """A rule between this parameter and another, declared beside it, checked once every
    value has its type (:func:`check_rules`): ``needs F`` (given, F must be given too),
    ``or F`` (this or F must be given), ``in F`` (an address inside F's network, or a DNS
    name inside the zone F), ``ula if F`` (a unique-local prefix only when F is true)."""

    kind: str
    other: str

    def __str__(self) -> str:
        return f"{self.kind} {self.other}"


RULE_KINDS = ("needs", "or", "in", "ula if")


def _ula(value: object) -> bool:
    net = ipaddress.ip_network(str(value))
    return isinstance(net, ipaddress.IPv6Network) and net.subnet_of(ULA)


def _empty(value: object) -> bool:
    return value is None or value == "" or value is False


def _inside(value: Any, other: Any, within: Any) -> str:
    """Why ``value`` is not inside ``within`` (rule ``in``), or ""."""
    if other.type in ("dns-name", "dns-zone"):
        if value == within or str(value).endswith("." + str(within)):
            return ""
        return f"{value} is not in {other.name} {within}; use NAME.{within}"
    network = ipaddress.ip_interface(str(within))
    address = ipaddress.ip_address(str(value).partition("/")[0])
    if address in network.network and address != network.ip:
        return ""
    return (
        f"{value} is not another address in {network.network} ({other.name} {within}); "
        "give one of that network"
    )


def check_rules(params: Iterable[Any], values: Mapping[str, Any]) -> None:
    """The rules declared between parameters (:class:`Rule`), on typed values."""
    declared = {p.name: p for p in params}
    for p in declared.values():
        value = values.get(p.name)
        for rule in p.rules:
            other = values.get(rule.other)
            why = ""
            if rule.kind == "needs" and not _empty(value) and _empty(other):
                why = f"needs {rule.other} too; give {rule.other}, or leave {p.name} empty"
            elif rule.kind == "or" and _empty(value) and _empty(other):
                why = f"give {p.name} or {rule.other}"
            elif rule.kind == "in" and not _empty(value) and not _empty(other):
                why = _inside(value, declared[rule.other], other)
            elif rule.kind == "ula if" and not _empty(value) and not other and _ula(value):
                why = (
                    f"{value} is unique-local (fc00::/7), not reachable from the internet; "
                    f"set {rule.other} to use it anyway"
                )
            if why:
                raise InputError(f"parameter {p.name}: {why}")
