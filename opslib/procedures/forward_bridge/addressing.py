"""The bridge's IPv4 addressing in forward-bridge's conversion (pure): by default the
uplink's method and addressing options, taken over by the bridge; the given address and
gateway when set; DHCP (the wiki's stanza) when the uplink has none."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from opslib.core.errors import InputError
from opslib.host.ifupdown import interfaces as ifs
from opslib.host.ifupdown import source_tree
from opslib.procedures.forward_bridge.refusals import where

# Options that give an interface an address; they move from eth0 to the bridge.
ADDRESSING = frozenset(
    {"address", "netmask", "broadcast", "network", "gateway", "metric", "pointopoint",
     "scope", "hostname", "leasehours", "leasetime", "vendor", "client", "media",
     "bootfile", "server", "hwaddr",
     "dns_nameservers", "dns_search", "dns_domain", "dns_sortlist", "dns_options",
     "request_prefix", "accept_ra", "autoconf", "privext", "dhcp", "preferred_lifetime"}
)  # fmt: skip


# inet methods whose addressing the bridge takes over from the uplink.
TAKE_OVER = frozenset({"static", "dhcp", "bootp", "ipv4ll"})


def same_address(stanza: ifs.Stanza, cidr: str) -> bool:
    current = stanza.option("address") or ""
    netmask = stanza.option("netmask")
    try:
        if "/" not in current and netmask:
            current = f"{current}/{netmask}"
        return ipaddress.IPv4Interface(current) == ipaddress.IPv4Interface(cidr)
    except ValueError:
        return False


@dataclass(frozen=True)
class Addressing:
    """How the bridge gets its IPv4 address: an inet method and its option lines."""

    method: str
    options: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        options = ", ".join(f"{k} {v}" for k, v in self.options)
        return f"inet {self.method}" + (f" ({options})" if options else "")


def addressing_of(f: source_tree.Iface) -> Addressing:
    return Addressing(
        f.method, tuple((k, v) for k, v in f.options if ifs.option_key(k) in ADDRESSING)
    )


def same_addressing(a: Addressing, b: Addressing) -> bool:
    def norm(x: Addressing) -> tuple[str, list[tuple[str, str]]]:
        return x.method, [(ifs.option_key(k), v) for k, v in x.options]

    return norm(a) == norm(b)


def bridge_addressing(
    up: source_tree.Iface | None,
    br: source_tree.Iface | None,
    *,
    uplink: str,
    bridge: str,
    address: str,
    gateway: str,
) -> tuple[Addressing | None, str]:
    """What the bridge's inet stanza should say (None: keep the bridge's own), and a note.

    By default the bridge takes over the uplink's method and addressing options, so
    converting changes how the host is reached by nothing; ``address``/``gateway``
    override that. An uplink without addressing leaves a configured bridge as it is,
    else the bridge asks DHCP (the wiki's stanza).
    """
    if address:
        dns = [
            (k, v) for k, v in (up.options if up else []) if ifs.option_key(k).startswith("dns_")
        ]
        wanted = Addressing("static", (("address", address), ("gateway", gateway), *dns))
        return wanted, f"{bridge} gets the given address: {wanted.describe()}"
    if up is not None and up.method in TAKE_OVER:
        wanted = addressing_of(up)
        if (
            br is not None
            and br.method != "manual"
            and not same_addressing(addressing_of(br), wanted)
        ):
            raise InputError(
                f"both {uplink} ({where(up.path, up.stanza)}) and {bridge} "
                f"({where(br.path, br.stanza)}) configure an IPv4 address; remove "
                f"{bridge}'s or give address and gateway"
            )
        at = where(up.path, up.stanza)
        return (
            wanted,
            f"{bridge} takes over {uplink}'s addressing ({at}): {wanted.describe()}",
        )
    if up is not None and up.method != "manual":
        raise InputError(
            f"{uplink} is configured 'inet {up.method}' ({where(up.path, up.stanza)}); "
            "forward-bridge converts an uplink that is static, dhcp, bootp, ipv4ll or manual"
        )
    if br is not None and br.method != "manual":
        return None, ""
    return Addressing("dhcp"), (
        f"{uplink} has no IPv4 addressing of its own; {bridge} asks DHCP (the wiki's "
        "stanza; give address and gateway for a static one)"
    )
