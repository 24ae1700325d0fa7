"""IPv6 prefix rules shared by nat-bridge-ipv6 and ipv6-tunnel: the routed /64 a tunnel
broker delegates, and the address the host's bridge takes in it (the wiki's PREFIX::1)."""

from __future__ import annotations

import ipaddress

from opslib.errors import InputError

ULA = ipaddress.IPv6Network("fc00::/7")


def validate_prefix(prefix: str, *, allow_ula: bool = False) -> ipaddress.IPv6Network:
    """The routed /64 as a network; InputError (one line) for anything else."""
    text = str(prefix).strip()
    try:
        net = ipaddress.IPv6Network(text, strict=False)
    except ValueError:
        raise InputError(
            f"prefix {text!r} is not an IPv6 prefix; write the routed /64, e.g. 2001:db8:2::/64"
        ) from None
    if "/" not in text or net.prefixlen != 64:
        raise InputError(
            f"prefix {text!r} is not a /64; SLAAC needs exactly a /64 (use one /64 of a "
            "larger delegation)"
        )
    if ipaddress.IPv6Interface(text).ip != net.network_address:
        raise InputError(f"prefix {text!r} has host bits set; the /64 is {net}")
    if net.is_link_local:
        raise InputError(f"prefix {text} is link-local; use the routed /64 of the tunnel broker")
    if net.is_multicast:
        raise InputError(f"prefix {text} is multicast; use the routed /64 of the tunnel broker")
    if net.subnet_of(ULA) and not allow_ula:
        raise InputError(
            f"prefix {text} is unique-local (fc00::/7), not reachable from the internet; "
            "set allow_ula to use it anyway"
        )
    if net.is_loopback or net.is_unspecified or net.network_address.ipv4_mapped:
        raise InputError(f"prefix {text} is not a routable unicast /64")
    return net


def gateway(net: ipaddress.IPv6Network) -> str:
    """The bridge's address in the prefix: PREFIX::1, as the wiki has it."""
    return str(net.network_address + 1)
