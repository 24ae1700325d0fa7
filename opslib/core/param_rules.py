"""Rules between two parameters, declared beside them in the parameters cell and checked
once every value has its type, wherever values are checked (opsbook run, the fleet's
check, the form, a runbook's inputs dataclass)::

    address = ""  # ipv4-cidr? (needs gateway): static IPv4 with prefix for the bridge
    gateway = ""  # ipv4? (needs address, in address): default router
    record_name = "vm.example.org"  # dns-name (in zone): the record's name
    prefix = "2001:db8:2::/64"  # ipv6-prefix64 (ula if allow_ula): the routed /64
    uplink = "eth0"  # ifname (not bridge): the NIC that becomes the bridge's port
    routed_prefix = ""  # ipv6-prefix64 (not in client_ipv6): the /64 routed to this host
    mode = "attach"  # choice[attach|virt-install] (attach needs vm): what to do
    ttl = 1  # int[1|60..86400] (1 if proxied): the record's TTL (1 = automatic)

A rule that needs the host (does the network exist?) is not one of these: it stays in
the runbook's observe.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from opslib.core import roomhosts
from opslib.core.errors import InputError
from opslib.core.ipv6prefix import ULA

__all__ = ["RULE_KINDS", "Rule", "check_rules", "parse_rule"]


@dataclass(frozen=True)
class Rule:
    """A rule between this parameter and another, declared beside it, checked once every
    value has its type (:func:`check_rules`): ``needs F`` (given, F must be given too),
    ``V needs F`` (when this is V, F must be given), ``or F`` (this or F must be given),
    ``in F`` (an address inside F's network, or a DNS name inside the zone F; for
    ``room-hosts``, each host's next hop inside F's /64 and its own /64 another), ``not in
    F`` (a prefix outside F's network), ``within F`` (a prefix, or each host's /64 of
    ``room-hosts``, inside the larger prefix F), ``not F`` (another value than F's), ``V if
    F`` (this must be V when the flag F is true), ``ula if F`` (a unique-local prefix only
    when F is true)."""

    kind: str
    other: str
    value: str = ""  # ``V needs F``, ``V if F``: the V

    def __str__(self) -> str:
        return " ".join(w for w in (self.value, self.kind, self.other) if w)


RULE_KINDS = ("needs", "or", "in", "not in", "within", "not", "ula if", "if")
# The kinds that take a value first (``attach needs vm``, ``1 if proxied``); ``needs``
# also goes without one.
VALUED_KINDS = ("needs", "if")


def parse_rule(text: str) -> Rule | None:
    """The rule ``text`` writes (``needs address``, ``attach needs vm``...), or None."""
    words = text.split()
    if len(words) < 2 or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", words[-1]):
        return None
    kind, other = " ".join(words[:-1]), words[-1]
    if kind in RULE_KINDS and kind != "if":
        return Rule(kind, other)
    if len(words) == 3 and words[1] in VALUED_KINDS and words[0] != "ula":
        return Rule(words[1], other, words[0])
    return None


def _ula(value: object) -> bool:
    net = ipaddress.ip_network(str(value))
    return isinstance(net, ipaddress.IPv6Network) and net.subnet_of(ULA)


def _empty(value: object) -> bool:
    return value is None or value == "" or value is False


def _inside(value: Any, p: Any, other: Any, within: Any) -> str:
    """Why ``value`` is not inside ``within`` (rule ``in``), or ""."""
    if p.type == "room-hosts":
        net = ipaddress.IPv6Network(str(within), strict=False)
        for host in roomhosts.parse(str(value)):
            if host.prefix == net:
                return f"{host.name}'s {host.prefix} is {other.name} itself; give it another /64"
            if host.via not in net or host.via == net.network_address:
                return (
                    f"{host.name}'s next hop {host.via} is not in {net} ({other.name}); "
                    "give its address on that /64"
                )
        return ""
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


def _overlaps(value: Any, other: Any, within: Any) -> str:
    """Why the prefix ``value`` is not outside ``within``'s network (rule ``not in``)."""
    network = ipaddress.ip_interface(str(within)).network
    if not ipaddress.ip_network(str(value), strict=False).overlaps(network):
        return ""
    return (
        f"{value} overlaps {other.name}'s network {network}; give a prefix outside it "
        f"(another one than {other.name}'s)"
    )


def _within(value: Any, p: Any, other: Any, within: Any) -> str:
    """Why the prefix(es) of ``value`` are not inside the prefix ``within`` (rule
    ``within``), or ""."""
    outer = ipaddress.IPv6Network(str(within))
    if p.type == "room-hosts":
        named = [(f"{h.name}'s {h.prefix}", h.prefix) for h in roomhosts.parse(str(value))]
    else:
        named = [(str(value), ipaddress.IPv6Network(str(value)))]
    for what, net in named:
        if not net.subnet_of(outer) or net == outer:
            return f"{what} is not a /64 of {outer} ({other.name}); take one from it"
    return ""


def _broken(p: Any, rule: Rule, declared: Mapping[str, Any], values: Mapping[str, Any]) -> str:
    """Why ``p``'s ``rule`` does not hold, or ""."""
    value, other = values.get(p.name), values.get(rule.other)
    kind, given = rule.kind, not _empty(value)
    if kind == "needs" and rule.value and str(value) == rule.value and _empty(other):
        others = " or ".join(c for c in getattr(p, "choices", ()) if c != rule.value)
        return (
            f"{rule.value} needs {rule.other}; give {rule.other}, or {p.name} {others or 'another'}"
        )
    if kind == "needs" and not rule.value and given and _empty(other):
        return f"needs {rule.other} too; give {rule.other}, or leave {p.name} empty"
    if kind == "or" and not given and _empty(other):
        return f"give {p.name} or {rule.other}"
    if kind in ("in", "not in", "within") and given and not _empty(other):
        if kind == "in":
            return _inside(value, p, declared[rule.other], other)
        if kind == "within":
            return _within(value, p, declared[rule.other], other)
        return _overlaps(value, declared[rule.other], other)
    if kind == "not" and given and value == other:
        return f"{value} is {rule.other} too; give {p.name} and {rule.other} two different values"
    if kind == "if" and other is True and str(value) != rule.value:
        return (
            f"{value} cannot go with {rule.other} true ({rule}); give {p.name} {rule.value}, "
            f"or {rule.other} false"
        )
    if kind == "ula if" and given and not other and _ula(value):
        return (
            f"{value} is unique-local (fc00::/7), not reachable from the internet; "
            f"set {rule.other} to use it anyway"
        )
    return ""


def check_rules(params: Iterable[Any], values: Mapping[str, Any]) -> None:
    """The rules declared between parameters (:class:`Rule`), on typed values."""
    declared = {p.name: p for p in params}
    for p in declared.values():
        for rule in p.rules:
            why = _broken(p, rule, declared, values)
            if why:
                raise InputError(f"parameter {p.name}: {why}")
