"""IPv6 prefix rules shared by nat-bridge-ipv6 and ipv6-tunnel: the routed /64 a tunnel
broker delegates, and the address the host's bridge takes in it (the wiki's PREFIX::1).

One rule for the ``ipv6-prefix64`` parameter type (opslib.core.param_types), which the CLI, the
form and the runbooks' inputs all check through; whether a unique-local prefix may be
used is the type's (refused) or a rule's (``ula if allow_ula``: nat-bridge-ipv6)."""

from __future__ import annotations

import ipaddress

ULA = ipaddress.IPv6Network("fc00::/7")
_USE = "use the routed /64 the tunnel broker assigned, e.g. 2001:db8:2::/64"
# Ranges a routed /64 cannot come from: (range, what it is). ::/64 holds the unspecified
# address, the loopback ::1 and the IPv4-mapped ::ffff:0:0/96 (the bridge would get ::1).
_UNUSABLE = (
    (ipaddress.IPv6Network("::/64"), "the unspecified and loopback range (::, ::1)"),
    (ipaddress.IPv6Network("fe80::/10"), "link-local"),
    (ipaddress.IPv6Network("fec0::/10"), "site-local (deprecated by RFC 3879)"),
    (ipaddress.IPv6Network("ff00::/8"), "multicast"),
)


class BadPrefix(ValueError):
    """Why a text is not a usable routed /64: completes "'TEXT' ..."."""


def parse_prefix64(text: str) -> ipaddress.IPv6Network:
    """The routed /64 ``text`` names, or BadPrefix saying what is wrong and what to write."""
    if "%" in text:
        # ipaddress reads "2001:db8:2::%eth0/64" as an address with a scope, then its host
        # part differs from the network's: say what it is, not "host bits set".
        zone = text.partition("%")[2].partition("/")[0]
        raise BadPrefix(f"has a zone index %{zone}, which only a link-local address takes; {_USE}")
    try:
        net = ipaddress.IPv6Network(text, strict=False)
    except ValueError:
        raise BadPrefix(f"is not an IPv6 prefix; {_USE}") from None
    if "/" not in text or net.prefixlen != 64:
        raise BadPrefix(
            "is not a /64; SLAAC needs exactly a /64 (use one /64 of a larger delegation, "
            "e.g. 2001:db8:2::/64)"
        )
    if ipaddress.IPv6Interface(text).ip != net.network_address:
        raise BadPrefix(f"has host bits set; the prefix is {net}")
    for unusable, what in _UNUSABLE:
        if net.subnet_of(unusable):
            raise BadPrefix(f"is {what}, not a routed prefix; {_USE}")
    return net


def parse_prefix48(text: str) -> ipaddress.IPv6Network:
    """The routed /48 ``text`` names (the room router's delegation), or BadPrefix."""
    example = "write it like 2001:db8:48::/48"
    if "%" in text:
        raise BadPrefix(f"has a zone index, which no routed prefix has; {example}")
    try:
        net = ipaddress.IPv6Network(text, strict=False)
    except ValueError:
        raise BadPrefix(f"is not an IPv6 prefix; {example}") from None
    if "/" in text and ipaddress.IPv6Interface(text).ip != net.network_address:
        raise BadPrefix(f"has host bits set; the prefix is {net}")
    if "/" not in text or net.prefixlen != 48:
        raise BadPrefix(f"is not a /48; {example} (the broker's Routed /48)")
    if net.subnet_of(ULA) or net.is_link_local or net.is_multicast or net.is_site_local:
        raise BadPrefix(f"is not a globally routed prefix; {example}")
    return net


def gateway(net: ipaddress.IPv6Network) -> str:
    """The bridge's address in the prefix: PREFIX::1, as the wiki has it."""
    return str(net.network_address + 1)
