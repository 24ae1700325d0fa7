"""pyroute2: links, bridges, addresses, neighbours and routes of a network namespace.

Every function takes the namespace by name ("" is the caller's own) and opens
its own rtnetlink socket: pyroute2 sockets are per thread. pyroute2's
NetlinkError is translated here, keeping the kernel's errno.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError as _PyrNetlinkError

from opslib.core.errors import InputError, NetlinkError

IFF_UP = 0x1
NUD_STATES = {
    0x01: "INCOMPLETE",
    0x02: "REACHABLE",
    0x04: "STALE",
    0x08: "DELAY",
    0x10: "PROBE",
    0x20: "FAILED",
    0x40: "NOARP",
    0x80: "PERMANENT",
    0x00: "NONE",
}
FAMILIES: dict[int, str] = {int(socket.AF_INET): "ipv4", int(socket.AF_INET6): "ipv6"}


def netns_exists(netns: str) -> bool:
    return not netns or os.path.exists(f"/run/netns/{netns}")


@contextmanager
def translated(action: str) -> Iterator[None]:
    try:
        yield
    except _PyrNetlinkError as exc:
        raise NetlinkError(f"{action}: {os.strerror(exc.code)}", exc.code) from exc


@contextmanager
def ipr(netns: str = "") -> Iterator[IPRoute]:
    """An rtnetlink socket in ``netns`` ("" = this namespace); never creates one."""
    if not netns_exists(netns):
        raise InputError(f"network namespace {netns!r} does not exist; check `ip netns list`")
    # pyroute2's sync API drives its own asyncio loop and fails inside a running one (a
    # Jupyter kernel's): hide the kernel's loop while the socket lives; cells are synchronous.
    outer = asyncio._get_running_loop()
    asyncio._set_running_loop(None)
    try:
        with translated(f"cannot open rtnetlink in netns {netns or '(own)'}"):
            sock = IPRoute(netns=netns, flags=0) if netns else IPRoute()
        try:
            yield sock
        finally:
            sock.close()
    finally:
        asyncio._set_running_loop(outer)


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    kind: str  # veth, bridge, tun, ... ("" for a physical device or loopback)
    mac: str
    up: bool  # administratively up
    operstate: str  # UP, DOWN, UNKNOWN, LOWERLAYERDOWN ...
    master: int  # index of the bridge it is a port of, 0 when none
    mtu: int


@dataclass(frozen=True)
class Address:
    ifindex: int
    family: str
    address: str
    prefix: int
    scope: str  # global | link | host


@dataclass(frozen=True)
class Neighbour:
    ifindex: int
    family: str
    ip: str
    mac: str
    state: str


@dataclass(frozen=True)
class Route:
    family: str
    dst: str  # "default" or CIDR
    gateway: str
    ifindex: int
    proto: int = 0  # who made it: RTPROT_RA (9) for one learned from a router advertisement


def _link(msg: Any) -> Link:
    kind = ""
    info = msg.get_attr("IFLA_LINKINFO")
    if info is not None:
        kind = info.get_attr("IFLA_INFO_KIND") or ""
    return Link(
        index=msg["index"],
        name=msg.get_attr("IFLA_IFNAME"),
        kind=kind,
        mac=(msg.get_attr("IFLA_ADDRESS") or "").lower(),
        up=bool(msg["flags"] & IFF_UP),
        operstate=msg.get_attr("IFLA_OPERSTATE") or "",
        master=msg.get_attr("IFLA_MASTER") or 0,
        mtu=msg.get_attr("IFLA_MTU") or 0,
    )


def links(netns: str = "") -> list[Link]:
    with ipr(netns) as ip, translated("cannot list links"):
        return sorted((_link(m) for m in ip.get_links()), key=lambda link: link.index)


def link_by_name(netns: str, name: str) -> Link | None:
    return next((link for link in links(netns) if link.name == name), None)


def bridge_ports(netns: str = "") -> dict[str, list[str]]:
    """Every bridge of the namespace with the names of its ports."""
    all_links = links(netns)
    names = {link.index: link.name for link in all_links}
    ports: dict[str, list[str]] = {link.name: [] for link in all_links if link.kind == "bridge"}
    for link in all_links:
        if link.master and names.get(link.master) in ports:
            ports[names[link.master]].append(link.name)
    return ports


_SCOPES = {0: "global", 200: "site", 253: "link", 254: "host"}


def addresses(netns: str = "", *, ifindex: int | None = None) -> list[Address]:
    kwargs = {"index": ifindex} if ifindex else {}
    with ipr(netns) as ip, translated("cannot list addresses"):
        msgs = ip.get_addr(**kwargs)
        return [
            Address(
                ifindex=m["index"],
                family=FAMILIES.get(m["family"], str(m["family"])),
                address=m.get_attr("IFA_ADDRESS"),
                prefix=m["prefixlen"],
                scope=_SCOPES.get(m["scope"], str(m["scope"])),
            )
            for m in msgs
        ]


def neighbours(
    netns: str = "", *, ifindex: int | None = None, family: int | None = None
) -> list[Neighbour]:
    """The neighbour table, one dump per family; ``ifindex`` limits it to one link."""
    families = [family] if family else [socket.AF_INET, socket.AF_INET6]
    found: list[Neighbour] = []
    with ipr(netns) as ip, translated("cannot dump the neighbour table"):
        for fam in families:
            kwargs: dict[str, Any] = {"family": fam}
            if ifindex:
                kwargs["ifindex"] = ifindex
            for m in ip.get_neighbours(**kwargs):
                mac = m.get_attr("NDA_LLADDR")
                if not mac:
                    continue  # INCOMPLETE / FAILED entries carry no MAC
                found.append(
                    Neighbour(
                        ifindex=m["ifindex"],
                        family=FAMILIES[fam],
                        ip=m.get_attr("NDA_DST"),
                        mac=mac.lower(),
                        state=NUD_STATES.get(m["state"], hex(m["state"])),
                    )
                )
    return found


def routes(netns: str = "", *, family: int = socket.AF_INET) -> list[Route]:
    with ipr(netns) as ip, translated("cannot list routes"):
        found = []
        for m in ip.get_routes(family=family, table=254):
            dst = m.get_attr("RTA_DST")
            found.append(
                Route(
                    family=FAMILIES.get(family, str(family)),
                    dst=f"{dst}/{m['dst_len']}" if dst else "default",
                    gateway=m.get_attr("RTA_GATEWAY") or "",
                    ifindex=m.get_attr("RTA_OIF") or 0,
                    proto=_proto(m),
                )
            )
        return found


def _proto(msg: Any) -> int:
    try:
        return int(msg["proto"] or 0)
    except (KeyError, TypeError):  # a message without the field
        return 0


def default_route(netns: str = "", *, family: int = socket.AF_INET) -> Route | None:
    return next((r for r in routes(netns, family=family) if r.dst == "default"), None)


def set_master(netns: str, port: str, bridge: str) -> None:
    """Make ``port`` a port of ``bridge`` (reattaches a guest's tap after a network restart)."""
    with ipr(netns) as ip, translated(f"cannot attach {port} to {bridge}"):
        port_idx = ip.link_lookup(ifname=port)
        bridge_idx = ip.link_lookup(ifname=bridge)
        if not port_idx or not bridge_idx:
            missing = port if not port_idx else bridge
            raise NetlinkError(f"cannot attach {port} to {bridge}: no link {missing}", errno.ENODEV)
        ip.link("set", index=port_idx[0], master=bridge_idx[0])


def _index(ip: IPRoute, name: str, action: str) -> int:
    found = ip.link_lookup(ifname=name)
    if not found:
        raise NetlinkError(f"{action}: no link {name}", errno.ENODEV)
    return int(found[0])


def ensure_address(netns: str, ifname: str, cidr: str) -> bool:
    """Put ``cidr`` (e.g. "2001:db8:1::2/64") on ``ifname`` unless there; True if added."""
    import ipaddress

    iface = ipaddress.ip_interface(cidr)
    with ipr(netns) as ip, translated(f"cannot add {cidr} to {ifname}"):
        index = _index(ip, ifname, f"cannot add {cidr} to {ifname}")
        for m in ip.get_addr(index=index):
            if (
                m["prefixlen"] == iface.network.prefixlen
                and ipaddress.ip_address(m.get_attr("IFA_ADDRESS")) == iface.ip
            ):
                return False
        ip.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
        return True


def ensure_route(netns: str, dst: str, *, gateway: str = "", dev: str = "") -> bool:
    """Route ``dst`` ("default" or a CIDR; family from the addresses) via ``gateway`` and/or
    ``dev``, replacing a different route to the same destination; True if changed."""
    import ipaddress

    family = socket.AF_INET6 if ":" in (gateway or dst) else socket.AF_INET
    wanted_dst = (
        "default" if dst in ("default", "::/0", "0.0.0.0/0") else str(ipaddress.ip_network(dst))
    )
    with ipr(netns) as ip, translated(f"cannot route {dst} via {gateway or dev}"):
        oif = _index(ip, dev, f"cannot route {dst}") if dev else 0
        for m in ip.get_routes(family=family, table=254):
            rdst = m.get_attr("RTA_DST")
            seen = f"{rdst}/{m['dst_len']}" if rdst else "default"
            if seen != wanted_dst:
                continue
            same_gw = (m.get_attr("RTA_GATEWAY") or "") == gateway
            if same_gw and (not oif or m.get_attr("RTA_OIF") == oif):
                return False
        kwargs: dict[str, Any] = {"family": family, "table": 254}
        kwargs["dst"] = (
            ("::/0" if family == socket.AF_INET6 else "0.0.0.0/0")
            if (wanted_dst == "default")
            else wanted_dst
        )
        if gateway:
            kwargs["gateway"] = gateway
        if oif:
            kwargs["oif"] = oif
        ip.route("replace", **kwargs)
        return True


def set_link(netns: str, name: str, *, mtu: int | None = None, up: bool | None = None) -> None:
    """Set a link's MTU and/or administrative state."""
    with ipr(netns) as ip, translated(f"cannot set link {name}"):
        kwargs: dict[str, Any] = {"index": _index(ip, name, f"cannot set link {name}")}
        if mtu is not None:
            kwargs["mtu"] = mtu
        if up is not None:
            kwargs["state"] = "up" if up else "down"
        ip.link("set", **kwargs)


def delete_link(netns: str, name: str) -> bool:
    """Delete a link if it exists; True if it did."""
    with ipr(netns) as ip, translated(f"cannot delete link {name}"):
        found = ip.link_lookup(ifname=name)
        if not found:
            return False
        ip.link("del", index=found[0])
        return True
