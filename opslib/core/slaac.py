"""SLAAC: the EUI-64 address a guest gives itself from a router advertisement.

A guest on an IPv6 /64 that autoconfigures with EUI-64 (RFC 4291 appendix A) takes
prefix + MAC with the universal/local bit flipped and ff:fe in the middle. Knowing
it lets find-vm-ip ping the address a guest should have, so that its neighbour
entry appears even when the guest never talked to the host.
"""

from __future__ import annotations

import ipaddress

from opslib.core.errors import InputError


def interface_id(mac: str) -> bytes:
    """The 8-byte modified EUI-64 interface identifier of ``mac``."""
    try:
        octets = bytearray(bytes.fromhex(mac.replace(":", "").replace("-", "")))
    except ValueError:
        octets = bytearray()
    if len(octets) != 6:
        raise InputError(
            f"{mac!r} is not a MAC address; write six hex pairs, e.g. 52:54:00:12:34:56"
        )
    octets[0] ^= 0x02  # the universal/local bit is inverted in modified EUI-64
    return bytes(octets[:3]) + b"\xff\xfe" + bytes(octets[3:])


def eui64_address(prefix: str | ipaddress.IPv6Network, mac: str) -> str:
    """The SLAAC address of ``mac`` in the /64 ``prefix`` (e.g. "2001:db8:2::/64")."""
    try:
        network = ipaddress.IPv6Network(prefix, strict=False)
    except ValueError as exc:
        raise InputError(f"{prefix!r} is not an IPv6 prefix; write e.g. 2001:db8:2::/64") from exc
    if network.prefixlen != 64:
        raise InputError(f"{prefix} is not a /64; SLAAC needs a /64 prefix")
    packed = network.network_address.packed[:8] + interface_id(mac)
    return str(ipaddress.IPv6Address(packed))


def link_local(mac: str) -> str:
    """The fe80::/64 EUI-64 address of ``mac`` (what a guest uses before any RA)."""
    return eui64_address("fe80::/64", mac)
