"""The daemon hosts behind a room router, as one parameter value (type ``room-hosts``).

The room-router runbook routes each daemon host's nat-bridge /64 (taken from the room's
routed /48) via that host's address on the room's /64. A parameter is one scalar (a
parameter set holds no lists), so the hosts are one line, an entry per host in the
words of ``ip -6 route``::

    daemon2 2001:db8:48:2::/64 via 2001:db8:48::b:1ff:fe00:2, daemon3 2001:db8:48:3::/64 via ...

Entries are separated by ``,``, ``;`` or new lines. :func:`parse` reads it (ValueError
with what to write), :func:`render` writes it back in that canonical form, so a fleet
inventory (a host → prefix, address mapping) can fill it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

EXAMPLE = "daemon2 2001:db8:48:2::/64 via 2001:db8:48::b:1ff:fe00:2"
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_SEPARATORS = re.compile(r"[,;\n]")


@dataclass(frozen=True)
class RoomHost:
    """One daemon host behind the router: its nat-bridge /64 and its next hop."""

    name: str
    prefix: ipaddress.IPv6Network
    via: ipaddress.IPv6Address

    def __str__(self) -> str:
        return f"{self.name} {self.prefix} via {self.via}"


def _entry(text: str) -> RoomHost:
    words = text.split()
    if len(words) != 4 or words[2] != "via":
        raise ValueError(f"{text!r} is not HOST PREFIX/64 via ADDRESS; write e.g. {EXAMPLE}")
    name, prefix, _via, address = words
    if not _HOST.fullmatch(name):
        raise ValueError(f"{name!r} is not a host name (letters, digits and '-')")
    try:
        net = ipaddress.IPv6Network(prefix)
    except ValueError:
        raise ValueError(
            f"{name}: {prefix!r} is not an IPv6 prefix without host bits; write e.g. "
            "2001:db8:48:2::/64"
        ) from None
    if net.prefixlen != 64:
        raise ValueError(f"{name}: {net} is not a /64; a nat-bridge network takes exactly a /64")
    try:
        via = ipaddress.IPv6Address(address)
    except ValueError:
        raise ValueError(
            f"{name}: {address!r} is not an IPv6 address (no zone, no prefix)"
        ) from None
    if via.is_link_local or via.is_multicast or via.is_unspecified or via.is_loopback:
        raise ValueError(f"{name}: {via} is not the host's global address on the room's /64")
    return RoomHost(name, net, via)


def parse(text: str) -> tuple[RoomHost, ...]:
    """The entries of ``text`` (none for empty text); ValueError naming the first bad one.
    Host names, prefixes and next hops are each given once."""
    hosts = tuple(_entry(part) for part in _SEPARATORS.split(text) if part.strip())
    for what, values in (
        ("host", [h.name for h in hosts]),
        ("prefix", [str(h.prefix) for h in hosts]),
        ("address", [str(h.via) for h in hosts]),
    ):
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise ValueError(f"{what} {twice[0]} is given twice; one entry per host")
    # two different /64s never overlap: distinct prefixes are enough
    return hosts


def render(hosts: Iterable[RoomHost | tuple[str, str, str]]) -> str:
    """The canonical text of ``hosts`` (RoomHost, or (name, prefix, via) as an inventory
    has them), checked as :func:`parse` checks it."""
    parts = [
        str(h) if isinstance(h, RoomHost) else " ".join((h[0], h[1], "via", h[2])) for h in hosts
    ]
    return ", ".join(str(h) for h in parse(", ".join(parts)))
