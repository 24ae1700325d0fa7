"""Links, bridges, addresses, neighbours and routes of a network namespace: listed with
lean raw rtnetlink (:mod:`opslib.host.kernel.rtnl`), changed with pyroute2.

Every function takes the namespace by name ("" is the caller's own) and opens
its own rtnetlink socket: pyroute2 sockets are per thread. pyroute2 is imported by the
first function that changes something (or dumps neighbours), not by a run that only
lists (its import is a tenth of a second of CPU); its NetlinkError is translated here,
keeping the kernel's errno.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opslib.core.errors import InputError, NetlinkError
from opslib.host.kernel import rtnl
from opslib.host.kernel.rtnl import (
    FAMILIES,
    IFF_UP,
    NUD_STATES,
    Address,
    Link,
    Neighbour,
    Route,
    netns_exists,
)

if TYPE_CHECKING:
    from pyroute2 import IPRoute

__all__ = [
    "FAMILIES",
    "IFF_UP",
    "NUD_STATES",
    "Address",
    "Link",
    "Neighbour",
    "Route",
    "addresses",
    "bridge_ports",
    "default_route",
    "delete_link",
    "ensure_address",
    "ensure_route",
    "ipr",
    "link_by_name",
    "links",
    "neighbours",
    "netns_exists",
    "routes",
    "set_link",
    "set_master",
    "translated",
]


@contextmanager
def translated(action: str) -> Iterator[None]:
    from pyroute2.netlink.exceptions import NetlinkError as _PyrNetlinkError

    try:
        yield
    except _PyrNetlinkError as exc:
        raise NetlinkError(f"{action}: {os.strerror(exc.code)}", exc.code) from exc


@contextmanager
def ipr(netns: str = "") -> Iterator[IPRoute]:
    """An rtnetlink socket in ``netns`` ("" = this namespace); never creates one."""
    from pyroute2 import IPRoute

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


def links(netns: str = "") -> list[Link]:
    return rtnl.links(netns)


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


def addresses(netns: str = "", *, ifindex: int | None = None) -> list[Address]:
    return rtnl.addresses(netns, ifindex=ifindex)


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
    """The routes of ``family`` in the main table (254)."""
    return rtnl.routes(netns, family=family)


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
