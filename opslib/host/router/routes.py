"""The routes of the room's /48 on the room router: the room's /64 on its segment (the
router's address in it), each daemon host's /64 via that host's address on the room's
/64, and the rest of the /48 unreachable (the broker routes the whole /48 here, and the
router's default route points back at the broker: without it, a packet to an unused part
of the /48 would bounce between the two until its hop limit ran out).

Persisted as one ifupdown file written whole, ``/etc/network/interfaces.d/NAME`` (Debian's
interfaces file sources that directory): an ``iface IFACE inet6 static`` stanza with the
address and an ``up`` line per route, so they come back whenever ifupdown brings the
room's interface up, at boot included. Applied now through rtnetlink (no restart of
networking: the interface stays up), and put back as observed. A host dropped from the
hosts loses its live route too (``RoutesState.dropped``: a /64 of the /48 via a next hop
on the room's interface that no host has), not only its line in the file.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any

from opslib.core.errors import ApplyError
from opslib.core.roomhosts import RoomHost
from opslib.core.shellcmd import command
from opslib.host.kernel import netlink

RTN_UNREACHABLE = 7
RTPROT_RA = 9
MARKER = "# opsbook room-router: the room's /48 on this router"


@dataclass(frozen=True)
class RoomRoutes:
    interface: str
    address: ipaddress.IPv6Interface  # the router's, in the room's /64
    delegated: ipaddress.IPv6Network  # the routed /48
    hosts: tuple[RoomHost, ...] = ()

    def wanted(self) -> dict[str, str]:
        """Destination → route, as :func:`observe` describes routes."""
        found = {str(self.delegated): "unreachable"}
        for host in self.hosts:
            found[str(host.prefix)] = f"via {host.via} dev {self.interface}"
        return found


@dataclass(frozen=True)
class RoutesState:
    address: bool  # the router's address is on the interface
    routes: dict[str, str] = field(
        default_factory=dict
    )  # dst → "via GW dev IF" | "unreachable" | ""
    interface_exists: bool = True
    # a host's route that ``hosts`` no longer has: dst → "via GW dev IF" (deleted by apply)
    dropped: dict[str, str] = field(default_factory=dict)


def stanza(spec: RoomRoutes, sysctl_file: str, runbook: str = "room-router") -> str:
    """The interfaces.d file, whole. Its ``pre-up`` applies the forwarding file too: the
    routes need it, and where systemd-sysctl does not run at boot (a container, whose
    /proc/sys is read-only but for net/) nothing else would."""
    ip = command("ip", "-6", "route", "replace")
    lines = [
        f"{MARKER}; written whole by `opsbook run {runbook}`",
        f"iface {spec.interface} inet6 static",
        f"\taddress {spec.address}",
        f"\tpre-up {command('sysctl', '-q', '-p', sysctl_file)}",
        f"\tup {ip} unreachable {spec.delegated}",
    ]
    for host in spec.hosts:
        lines.append(f"\tup {ip} {host.prefix} via {host.via} dev {spec.interface}  # {host.name}")
    return "\n".join(lines) + "\n"


def _describe(msg: Any, names: dict[int, str]) -> str:
    if msg["type"] == RTN_UNREACHABLE:
        return "unreachable"
    gateway = msg.get_attr("RTA_GATEWAY") or ""
    dev = names.get(msg.get_attr("RTA_OIF") or 0, "?")
    return f"via {gateway} dev {dev}" if gateway else f"dev {dev}"


def _dropped(msg: Any, dst: str, spec: RoomRoutes, index: int) -> bool:
    """Whether ``msg`` is a host's route as :func:`stanza` makes one (a /64 of the /48 via a
    next hop on the room's interface) that no host of ``spec`` has: the route of a host
    dropped from ``hosts``. What the kernel made itself (an address's prefix, an RA's
    route) has no gateway, or protocol ra."""
    net = ipaddress.IPv6Network(dst)
    return (
        dst not in spec.wanted()
        and net.prefixlen > spec.delegated.prefixlen
        and net.subnet_of(spec.delegated)
        and bool(msg.get_attr("RTA_GATEWAY"))
        and msg.get_attr("RTA_OIF") == index
        and msg["proto"] != RTPROT_RA
    )


def observe(netns: str, spec: RoomRoutes) -> RoutesState:
    """The address, each wanted route as it is now, and the routes of hosts no longer in
    ``spec`` (:func:`_dropped`)."""
    link = netlink.link_by_name(netns, spec.interface)
    if link is None:
        return RoutesState(False, {dst: "" for dst in spec.wanted()}, interface_exists=False)
    has = any(
        a.family == "ipv6" and a.address == str(spec.address.ip) and a.prefix == 64
        for a in netlink.addresses(netns, ifindex=link.index)
    )
    names = {lk.index: lk.name for lk in netlink.links(netns)}
    seen: dict[str, str] = {}
    dropped: dict[str, str] = {}
    with netlink.ipr(netns) as ip, netlink.translated("cannot read the IPv6 routes"):
        for msg in ip.get_routes(family=socket.AF_INET6, table=254):
            dst = msg.get_attr("RTA_DST")
            if dst:
                key = f"{dst}/{msg['dst_len']}"
                seen.setdefault(key, _describe(msg, names))
                if _dropped(msg, key, spec, link.index):
                    dropped.setdefault(key, _describe(msg, names))
    wanted = {dst: seen.get(dst, "") for dst in spec.wanted()}
    return RoutesState(has, wanted, dropped=dict(sorted(dropped.items())))


def _route(ip: Any, verb: str, dst: str, how: str, names: dict[str, int]) -> None:
    kwargs: dict[str, Any] = {"dst": dst, "family": socket.AF_INET6, "table": 254}
    if how == "unreachable":
        kwargs["type"] = "unreachable"
    elif verb != "del":
        words = how.split()  # via GW dev IF | dev IF
        if "via" in words:
            kwargs["gateway"] = words[words.index("via") + 1]
        if "dev" in words:
            kwargs["oif"] = names[words[words.index("dev") + 1]]
    ip.route(verb, **kwargs)


def apply_live(netns: str, spec: RoomRoutes, state: RoutesState) -> list[str]:
    """The address and every route now, the dropped hosts' routes deleted; what was done."""
    done = []
    if not state.address and netlink.ensure_address(netns, spec.interface, str(spec.address)):
        done.append(f"{spec.address} on {spec.interface}")
    names = {lk.name: lk.index for lk in netlink.links(netns)}
    with netlink.ipr(netns) as ip, netlink.translated("cannot route the room's /48"):
        for dst, how in spec.wanted().items():
            if state.routes.get(dst) != how:
                _route(ip, "replace", dst, how, names)
                done.append(f"{dst} {how}")
        for dst, how in state.dropped.items():
            _route(ip, "del", dst, how, names)
            done.append(f"{dst} {how} removed")
    return done


def put_back(netns: str, spec: RoomRoutes, state: RoutesState) -> str:
    """Routes and address as observed: a route that was none is deleted, one that
    differed replaced by the old one, a dropped host's route made again."""
    names = {lk.name: lk.index for lk in netlink.links(netns)}
    undone = []
    with netlink.ipr(netns) as ip, netlink.translated("cannot put the routes back"):
        for dst, how in spec.wanted().items():
            old = state.routes.get(dst, "")
            if old == how:
                continue
            try:
                if old and old.startswith(("via", "dev", "unreachable")) and "?" not in old:
                    _route(ip, "replace", dst, old, names)
                else:
                    _route(ip, "del", dst, how, names)
            except (KeyError, ApplyError):
                continue  # its interface is gone: the route went with it
            undone.append(dst)
        for dst, how in state.dropped.items():
            try:
                _route(ip, "replace", dst, how, names)
            except (KeyError, ApplyError):
                continue  # its interface is gone: the route went with it
            undone.append(dst)
        link = names.get(spec.interface)
        if not state.address and link is not None:
            for a in netlink.addresses(netns, ifindex=link):
                if a.family == "ipv6" and a.address == str(spec.address.ip):
                    ip.addr(
                        "del",
                        index=link,
                        address=a.address,
                        prefixlen=a.prefix,
                        family=socket.AF_INET6,
                    )
                    undone.append(str(spec.address))
    return f"put back: {', '.join(undone)}" if undone else ""
