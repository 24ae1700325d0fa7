"""How a daemon host reaches IPv6, for host-health: on its **own tunnel** (the wiki's
per-host Hurricane Electric tunnel: ipv6-tunnel's checks) or on the **room router** (one
tunnel for the room: the host takes its address and default route from the router's RAs
on its bridge, and the router routes its nat-bridge /64 to it).

:func:`decide` says which from the host itself (``auto``): its tunnel link exists → own
tunnel; a default IPv6 route learned from an RA on the bridge → room router; or the
parameter ``ipv6_mode`` says so. The result names the mode in its first check.
"""

from __future__ import annotations

import ipaddress
import socket

from opslib.core.changes import Check
from opslib.core.ipv6prefix import gateway
from opslib.core.shellcmd import command
from opslib.host.kernel import icmp, netlink, sysctl

RTPROT_RA = 9
MODES = ("auto", "tunnel", "room")


def _ra_default(netns: str, segment: str) -> netlink.Route | None:
    link = netlink.link_by_name(netns, segment)
    default = netlink.default_route(netns, family=socket.AF_INET6)
    if link is None or default is None or default.ifindex != link.index:
        return None
    return default if default.proto == RTPROT_RA else None


def decide(netns: str, wanted: str, tunnel: str, segment: str) -> tuple[str, str]:
    """The mode ("tunnel", "room" or "" for no IPv6 to check) and why."""
    if wanted == "tunnel":
        return "tunnel", "ipv6_mode = tunnel"
    if wanted == "room":
        return "room", "ipv6_mode = room"
    if tunnel and netlink.link_by_name(netns, tunnel) is not None:
        return "tunnel", f"{tunnel} exists"
    if segment and _ra_default(netns, segment) is not None:
        return "room", f"the default IPv6 route comes from an RA on {segment}"
    if tunnel:
        return "tunnel", f"{tunnel} is given (but absent)"
    return "", "no tunnel given and no RA default route"


def mode_check(mode: str, why: str, tunnel: str, segment: str) -> Check:
    seen = {
        "tunnel": f"own tunnel {tunnel}",
        "room": f"the room router, by RAs on {segment}",
        "": "not checked",
    }[mode]
    return Check("IPv6 via", "ok", f"{seen} ({why})")


def room_checks(netns: str, segment: str, routed_prefix: str) -> list[Check]:
    """An RA taken on ``segment``, the default route via the router there, and (with
    ``routed_prefix``, the nat-bridge /64) the router reaching that /64: a ping to the
    router from the /64's address is answered only when the router routes it here."""
    found = []
    link = netlink.link_by_name(netns, segment)
    forwarding = sysctl.live("net.ipv6.conf.all.forwarding", netns)
    accept_ra = sysctl.live(f"net.ipv6.conf.{segment}.accept_ra", netns)
    needed = "2" if forwarding == "1" else "1"
    takes = accept_ra == "2" or (accept_ra == "1" and forwarding != "1")
    found.append(Check.given(
        f"{segment} takes RAs", takes,
        f"accept_ra={accept_ra or '?'}, forwarding={forwarding or '?'}",
        command("sysctl", "-w", f"net.ipv6.conf.{segment}.accept_ra={needed}")
        + " (and persist it in /etc/sysctl.d; a forwarding host needs 2)",
    ))  # fmt: skip
    slaac = [
        f"{a.address}/{a.prefix}"
        for a in (netlink.addresses(netns, ifindex=link.index) if link else [])
        if a.family == "ipv6" and a.scope == "global"
    ]
    default = _ra_default(netns, segment)
    found.append(Check.given(
        f"RA seen on {segment}", default is not None and bool(slaac),
        f"{', '.join(slaac) or 'no global address'}; "
        + ("a default route from an RA" if default else "no default route from an RA"),
        "is the room router's radvd running (room-router)? is this host on its segment?",
    ))  # fmt: skip
    found.append(Check.given(
        f"default IPv6 route via the router on {segment}", default is not None,
        f"via {default.gateway} dev {segment} (RA)" if default else "none from an RA",
        f"set accept_ra on {segment} as above; check the router's radvd",
    ))  # fmt: skip
    if routed_prefix and default is not None:
        source = gateway(ipaddress.IPv6Network(routed_prefix))
        answered = icmp.ping(netns, default.gateway, ifname=segment, source=source,
                             wait=2, tries=3).ok  # fmt: skip
        found.append(Check.given(
            f"{routed_prefix} reachable from the router", answered,
            f"the router answers {source}" if answered else f"no answer to {source}",
            f"route {routed_prefix} on the router via this host (room-router's hosts)",
        ))  # fmt: skip
    return found
