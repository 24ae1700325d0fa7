"""Router advertisements as a daemon host takes them on its bridge to the room.

A daemon host with nat-bridge forwards IPv6, and a forwarding host ignores router
advertisements unless ``accept_ra`` is 2 on the link (``../shared/DESIGN.md``: verified
with radvd across namespaces). This module:

- asks a link for an advertisement (:func:`solicit`: a Router Solicitation to ff02::2 on a
  raw ICMPv6 socket, the answers read whatever ``accept_ra`` says, as ``rdisc6`` does);
- reads and sets ``accept_ra`` / ``autoconf`` of a link (:func:`sysctl`, :func:`set_sysctl`,
  ``/proc/sys`` of the namespace);
- reads what the kernel took from advertisements on a link (:func:`taken`: the SLAAC
  addresses, which are not permanent, and the routes of protocol ``ra``) and forgets them
  (:func:`forget`), since turning ``accept_ra`` off leaves them until they expire;
- asks the kernel which link a packet from a source would leave by (:func:`route_dev`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import select
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opslib.core.errors import HostError, NetlinkError
from opslib.host.kernel import netlink
from opslib.host.kernel.rtnl import in_netns

_RS, _RA = 133, 134
_PREFIX_INFO = 3
_ICMP6_FILTER = 1
_IFA_F_PERMANENT = 0x80
RTPROT_KERNEL, RTPROT_RA = 2, 9


@dataclass(frozen=True)
class Advert:
    """One router advertisement, as far as a host moving onto the room's router needs it."""

    router: str  # its source: the router's link-local address
    lifetime: int  # router lifetime in seconds (0: not a default router)
    prefixes: tuple[str, ...]  # the autonomous (SLAAC) prefixes it advertises


def parse_advert(source: str, data: bytes) -> Advert | None:
    """An ICMPv6 router advertisement (``data`` from its type on), None for anything else."""
    if len(data) < 16 or data[0] != _RA or data[1] != 0:
        return None
    lifetime = struct.unpack_from("!H", data, 6)[0]
    prefixes, at = [], 16
    while at + 2 <= len(data):
        kind, length = data[at], data[at + 1] * 8
        if length == 0 or at + length > len(data):
            break
        if kind == _PREFIX_INFO and length >= 32:
            bits, flags = data[at + 2], data[at + 3]
            net = ipaddress.IPv6Network((data[at + 16 : at + 32], bits), strict=False)
            if flags & 0x40:  # A: autonomous, addresses by SLAAC
                prefixes.append(str(net))
        at += length
    return Advert(source.split("%")[0], lifetime, tuple(prefixes))


def solicit(netns: str, ifname: str, *, timeout: float = 10.0, every: float = 3.0) -> Advert | None:
    """The first router advertisement on ``ifname`` within ``timeout`` seconds (a Router
    Solicitation every ``every`` seconds until one comes), None when none does."""
    link = netlink.link_by_name(netns, ifname)
    if link is None:
        raise HostError(f"there is no link {ifname} to ask for router advertisements")
    with in_netns(netns):
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        except OSError as exc:
            raise NetlinkError(f"cannot open an ICMPv6 socket: {exc}", exc.errno) from exc
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        filt = [0xFFFFFFFF] * 8
        filt[_RA >> 5] &= ~(1 << (_RA & 31))
        sock.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, struct.pack("=8I", *filt))
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)  # RFC 4861
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, link.index)
        deadline = time.monotonic() + timeout
        sent = 0.0
        while time.monotonic() < deadline:
            if time.monotonic() - sent >= every:
                with contextlib.suppress(OSError):  # no link-local address yet (DAD): again
                    sock.sendto(struct.pack("!BBHI", _RS, 0, 0, 0), ("ff02::2", 0, 0, link.index))
                sent = time.monotonic()
            ready, _, _ = select.select([sock], [], [], min(0.5, deadline - time.monotonic()))
            if ready:
                data, peer = sock.recvfrom(2048)
                found = parse_advert(str(peer[0]), data)
                if found is not None:
                    return found
    return None


def _proc(ifname: str, key: str) -> Path:
    return Path("/proc/sys/net/ipv6/conf") / ifname / key


def sysctl(netns: str, ifname: str, key: str) -> int | None:
    """``net.ipv6.conf.IFNAME.KEY`` in ``netns``; None when the link has no such setting."""
    with in_netns(netns):
        try:
            return int(_proc(ifname, key).read_text().strip())
        except FileNotFoundError:
            return None


def set_sysctl(netns: str, ifname: str, key: str, value: int) -> None:
    with in_netns(netns):
        try:
            _proc(ifname, key).write_text(f"{value}\n")
        except OSError as exc:
            raise HostError(f"cannot set net.ipv6.conf.{ifname}.{key}: {exc.strerror}") from exc


@dataclass(frozen=True)
class Taken:
    """What the kernel took from advertisements on a link."""

    addresses: tuple[str, ...] = ()  # global, not permanent (SLAAC): "ADDR/LEN"
    default_via: str = ""  # the gateway of the default route of protocol ra ("" none)
    routes: tuple[str, ...] = ()  # every route of protocol ra on it: "DST via GW"


def _ra_routes(ip: Any, index: int) -> list[Any]:
    """The routes an advertisement made on the link: its default route (protocol ``ra``)
    and the on-link route of each prefix it advertised (protocol kernel, but with an
    expiry: an address's own prefix route has none). Left behind, the latter makes
    libvirt refuse to enable IPv6 forwarding ("interface br0 has kernel autoconfigured
    IPv6 routes"): nat-bridge would not start again."""
    return [
        m
        for m in ip.get_routes(family=socket.AF_INET6, table=254)
        if m.get_attr("RTA_OIF") == index
        and (m["proto"] == RTPROT_RA or (m["proto"] == RTPROT_KERNEL and _expires(m)))
    ]


def _expires(m: Any) -> bool:
    info = m.get_attr("RTA_CACHEINFO")
    return bool(info is not None and info.get("rta_expires"))


def _slaac(ip: Any, index: int) -> list[Any]:
    return [
        m
        for m in ip.get_addr(index=index, family=socket.AF_INET6)
        if m["scope"] == 0 and not (m.get_attr("IFA_FLAGS") or m["flags"]) & _IFA_F_PERMANENT
    ]


def _dst(m: Any) -> str:
    dst = m.get_attr("RTA_DST")
    return f"{dst}/{m['dst_len']}" if dst else "default"


def taken(netns: str, ifname: str) -> Taken:
    link = netlink.link_by_name(netns, ifname)
    if link is None:
        return Taken()
    with netlink.ipr(netns) as ip, netlink.translated(f"cannot read {ifname}'s addresses"):
        addrs = tuple(
            sorted(f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}" for m in _slaac(ip, link.index))
        )
        routes = _ra_routes(ip, link.index)
    via = next((m.get_attr("RTA_GATEWAY") or "" for m in routes if _dst(m) == "default"), "")
    shown = tuple(sorted(f"{_dst(m)} via {m.get_attr('RTA_GATEWAY') or '-'}" for m in routes))
    return Taken(addrs, via, shown)


def forget(netns: str, ifname: str) -> int:
    """Delete what the kernel took from advertisements on ``ifname``; how many."""
    link = netlink.link_by_name(netns, ifname)
    if link is None:
        return 0
    done = 0
    with netlink.ipr(netns) as ip, netlink.translated(f"cannot clear {ifname}'s RA state"):
        for m in _ra_routes(ip, link.index):
            ip.route("del", **_route_key(m))
            done += 1
        for m in _slaac(ip, link.index):
            ip.addr("del", index=link.index, address=m.get_attr("IFA_ADDRESS"),
                    prefixlen=m["prefixlen"], family=socket.AF_INET6)  # fmt: skip
            done += 1
    return done


def _route_key(m: Any) -> dict[str, Any]:
    key: dict[str, Any] = {"family": socket.AF_INET6, "table": 254, "oif": m.get_attr("RTA_OIF")}
    key["dst"] = "::/0" if _dst(m) == "default" else _dst(m)
    if m.get_attr("RTA_GATEWAY"):
        key["gateway"] = m.get_attr("RTA_GATEWAY")
    if m.get_attr("RTA_PRIORITY") is not None:
        key["priority"] = m.get_attr("RTA_PRIORITY")
    return key


def route_dev(netns: str, dst: str, *, source: str = "") -> str:
    """The link the kernel sends a packet to ``dst`` (from ``source``) out of; "" none."""
    kwargs: dict[str, Any] = {"dst": dst, "family": socket.AF_INET6}
    if source:
        kwargs["src"] = source
    with netlink.ipr(netns) as ip:
        try:
            found = ip.route("get", **kwargs)
        except Exception:  # unreachable: pyroute2 raises its NetlinkError
            return ""
        oif = found[0].get_attr("RTA_OIF") if found else None
    names = {link.index: link.name for link in netlink.links(netns)}
    return names.get(oif or 0, "")


__all__ = [
    "Advert",
    "Taken",
    "forget",
    "parse_advert",
    "route_dev",
    "set_sysctl",
    "solicit",
    "sysctl",
    "taken",
]
