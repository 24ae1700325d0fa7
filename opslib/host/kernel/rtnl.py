"""Lean raw rtnetlink: the links, addresses and routes a read-only check lists, the
hot paths of find-vm-ip, and sockets inside a netns.

pyroute2 decodes every attribute of every message into Python objects, and importing
it costs a tenth of a second of CPU (every package it has: ndb, ipdb, conntrack, plan9,
tc...). The reads here (:func:`links`, :func:`addresses`, :func:`routes`: one dump each,
decoding only the fields opslib keeps) are what :mod:`opslib.host.kernel.netlink` lists
with, so that a run that only reads (host-health, find-vm-ip) never imports pyroute2;
its changes (links, addresses, routes set) still go through pyroute2 there.

find-vm-ip needs two fields of the few neighbour entries whose MAC belongs to a VM
(pyroute2: about 1.6 s for a dump of 10,000 neighbours), so :func:`neighbours_on` sends
one RTM_GETNEIGH dump per family with an NDA_IFINDEX filter (the kernel then sends only
the bridge's entries) and looks only at what it uses: the MAC, and the IP of entries
whose MAC is wanted.

opslib's ICMP echo probe is :mod:`opslib.host.kernel.icmp` (its raw sockets come from
:func:`netns_socket`).

Sockets are opened inside a named netns by switching the calling thread there
just for ``socket()``: a socket stays in the namespace it was created in.
"""

from __future__ import annotations

import ctypes
import errno as errno_
import os
import socket
import struct
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

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


_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

_RTM_NEWNEIGH, _RTM_GETNEIGH = 28, 30
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NLM_F_REQUEST_DUMP = 0x301
_NDA_DST, _NDA_LLADDR, _NDA_IFINDEX = 1, 2, 8
_HDR = 16  # struct nlmsghdr
_NDMSG = 12  # struct ndmsg
_ADDR_LEN: dict[int, int] = {int(socket.AF_INET): 4, int(socket.AF_INET6): 16}


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetlinkError(f"cannot enter {what}: {os.strerror(err)}", err)


@contextmanager
def in_netns(netns: str) -> Iterator[None]:
    """Run the body with this thread in ``netns`` ("" = stay); only create sockets there."""
    if not netns:
        yield
        return
    if not netns_exists(netns):
        raise InputError(f"network namespace {netns!r} does not exist; check `ip netns list`")
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            _setns(target, f"netns {netns}")
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own, "the original netns")
    finally:
        os.close(own)


def netns_socket(netns: str, family: int, kind: int, proto: int) -> socket.socket:
    """A socket created inside ``netns`` ("" = this one): it stays there."""
    with in_netns(netns):
        try:
            return socket.socket(family, kind, proto)
        except OSError as exc:
            raise NetlinkError(f"cannot open a socket in netns {netns or '(own)'}: {exc}") from exc


def _dump_chunks(netns: str, ifindex: int, family: int) -> Iterator[bytes]:
    """The raw replies of one RTM_GETNEIGH dump of ``family`` filtered to ``ifindex``."""
    ndmsg = struct.pack("=BBHiHBB", family, 0, 0, 0, 0, 0, 0)
    attr = struct.pack("=HHI", 8, _NDA_IFINDEX, ifindex)  # the kernel filters by link
    return _dump(netns, _RTM_GETNEIGH, ndmsg + attr, "cannot dump the neighbour table")


def _dump(netns: str, kind: int, body: bytes, action: str) -> Iterator[bytes]:
    """The raw replies of one dump request (``kind``, ``body``) in ``netns``, each cut
    before the NLMSG_DONE that ends the dump; NetlinkError ``action: reason`` when the
    kernel refuses it."""
    sock = netns_socket(netns, socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.send(struct.pack("=IHHII", _HDR + len(body), kind, _NLM_F_REQUEST_DUMP, 1, 0) + body)
        while True:
            data = sock.recv(1 << 17)
            # A dump ends with NLMSG_DONE (or an NLMSG_ERROR) as the last message of a reply.
            offset = 0
            while offset < len(data):
                length, msg_type = struct.unpack_from("=IH", data, offset)
                # an error ends it; so does a DONE carrying a negative errno (a dump that
                # failed part way), which would otherwise read as a short list
                if msg_type in (_NLMSG_ERROR, _NLMSG_DONE) and length >= _HDR + 4:
                    (err,) = struct.unpack_from("=i", data, offset + _HDR)
                    if err < 0:
                        raise NetlinkError(f"{action}: {os.strerror(-err)}", -err)
                if msg_type in (_NLMSG_DONE, _NLMSG_ERROR):
                    yield data[:offset]
                    return
                if length < _HDR:
                    raise NetlinkError(f"{action}: bad netlink message")
                offset += (length + 3) & ~3
            yield data


def _decode(data: bytes, offset: int, family: int, ifindex: int) -> Neighbour | None:
    """The neighbour message at ``offset``, by walking its attributes (the general case)."""
    length, kind = struct.unpack_from("=IH", data, offset)
    if kind != _RTM_NEWNEIGH:
        return None
    (state,) = struct.unpack_from("=H", data, offset + _HDR + 8)
    pos, end = offset + _HDR + _NDMSG, offset + length
    dst = lladdr = b""
    while pos + 4 <= end:
        alen, atype = struct.unpack_from("=HH", data, pos)
        if alen < 4:
            break
        if atype == _NDA_DST:
            dst = data[pos + 4 : pos + alen]
        elif atype == _NDA_LLADDR:
            lladdr = data[pos + 4 : pos + alen]
        pos += (alen + 3) & ~3
    if not dst or len(lladdr) != 6:
        return None
    return Neighbour(
        ifindex=ifindex,
        family=FAMILIES[family],
        ip=socket.inet_ntop(family, dst),
        mac=lladdr.hex(":"),
        state=NUD_STATES.get(state, hex(state)),
    )


def neighbours_on(
    netns: str,
    ifindex: int,
    macs: Iterable[str] | None = None,
    *,
    families: Iterable[int] = (socket.AF_INET, socket.AF_INET6),
) -> list[Neighbour]:
    """The neighbour entries of one link with a MAC, only those of ``macs`` when given.

    One kernel dump per family. The kernel puts NDA_DST first and NDA_LLADDR right
    after it in every entry that has a MAC (neigh_fill_info), so a wanted MAC is
    found as the 10-byte attribute "len 10, type NDA_LLADDR, MAC" with bytes.find (C
    speed) and only those entries are decoded; the fixed layout is checked for
    every hit, so a false hit in other bytes is never taken.
    """
    wanted = None if macs is None else {bytes.fromhex(m.replace(":", "")) for m in macs}
    found: list[Neighbour] = []
    if wanted is not None and not wanted:
        return found
    for family in families:
        addr_len = _ADDR_LEN[family]
        dst_attr = struct.pack("=HH", 4 + addr_len, _NDA_DST)
        lladdr_at = _HDR + _NDMSG + ((4 + addr_len + 3) & ~3)  # offset of NDA_LLADDR
        for data in _dump_chunks(netns, ifindex, family):
            if wanted is None or len(wanted) > 64:
                found.extend(_scan(data, family, ifindex, wanted))
                continue
            for mac in wanted:
                needle = struct.pack("=HH", 10, _NDA_LLADDR) + mac
                hit = data.find(needle)
                while hit >= 0:
                    start = hit - lladdr_at
                    if (
                        start >= 0
                        and data[start + _HDR + _NDMSG : start + _HDR + _NDMSG + 4] == dst_attr
                        and struct.unpack_from("=H", data, start + 4)[0] == _RTM_NEWNEIGH
                    ):
                        entry = _decode(data, start, family, ifindex)
                        if entry is not None:
                            found.append(entry)
                    hit = data.find(needle, hit + 1)
    return found


def _scan(data: bytes, family: int, ifindex: int, wanted: set[bytes] | None) -> list[Neighbour]:
    """Every entry of one reply whose MAC is in ``wanted`` (all when None): for many MACs."""
    addr_len = _ADDR_LEN[family]
    lladdr_at = _HDR + _NDMSG + ((4 + addr_len + 3) & ~3) + 4
    unpack = struct.unpack_from
    out = []
    offset, size = 0, len(data)
    while offset < size:
        (length,) = unpack("=I", data, offset)
        if wanted is None or data[offset + lladdr_at : offset + lladdr_at + 6] in wanted:
            entry = _decode(data, offset, family, ifindex)
            if entry is not None and (
                wanted is None or bytes.fromhex(entry.mac.replace(":", "")) in wanted
            ):
                out.append(entry)
        offset += (length + 3) & ~3
    return out


def ifindex(netns: str, ifname: str) -> int:
    """The index of link ``ifname`` in ``netns``; NetlinkError(ENODEV) when there is none."""
    with in_netns(netns):
        try:
            return socket.if_nametoindex(ifname)
        except OSError as exc:
            raise NetlinkError(f"no link {ifname} in netns {netns}", errno_.ENODEV) from exc


_RTM_NEWLINK, _RTM_GETLINK = 16, 18
_RTM_NEWADDR, _RTM_GETADDR = 20, 22
_RTM_NEWROUTE, _RTM_GETROUTE = 24, 26
_IFLA_ADDRESS, _IFLA_IFNAME, _IFLA_MTU, _IFLA_MASTER = 1, 3, 4, 10
_IFLA_OPERSTATE, _IFLA_LINKINFO, _IFLA_INFO_KIND = 16, 18, 1
_IFA_ADDRESS = 1
_RTA_DST, _RTA_OIF, _RTA_GATEWAY, _RTA_TABLE = 1, 4, 5, 15
_RT_TABLE_MAIN = 254
# IF_OPER_* (RFC 2863), as `ip link` and pyroute2 name them
_OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")
_SCOPES = {0: "global", 200: "site", 253: "link", 254: "host"}


def _messages(netns: str, kind: int, body: bytes, action: str) -> Iterator[tuple[int, bytes, int]]:
    """(type, reply, offset) of each message a dump returns."""
    for data in _dump(netns, kind, body, action):
        offset = 0
        while offset < len(data):
            length, msg_type = struct.unpack_from("=IH", data, offset)
            yield msg_type, data[offset : offset + length], _HDR
            offset += (length + 3) & ~3


def _attrs(msg: bytes, pos: int) -> dict[int, bytes]:
    """The attributes of ``msg`` from ``pos`` on, by type (flag bits cleared)."""
    found: dict[int, bytes] = {}
    end = len(msg)
    while pos + 4 <= end:
        alen, atype = struct.unpack_from("=HH", msg, pos)
        if alen < 4:
            break
        found.setdefault(atype & 0x3FFF, msg[pos + 4 : pos + alen])
        pos += (alen + 3) & ~3
    return found


def _text(value: bytes | None) -> str:
    return (value or b"").split(b"\0", 1)[0].decode(errors="replace")


def _u32(value: bytes | None) -> int:
    return struct.unpack("=I", value)[0] if value and len(value) == 4 else 0


def _ip(family: int, value: bytes | None) -> str:
    return socket.inet_ntop(family, value) if value else ""


def links(netns: str = "") -> list[Link]:
    """Every link of ``netns`` ("" = this one), by index: one RTM_GETLINK dump."""
    found = []
    body = struct.pack("=BBHiII", socket.AF_UNSPEC, 0, 0, 0, 0, 0)  # struct ifinfomsg
    for kind, msg, pos in _messages(netns, _RTM_GETLINK, body, "cannot list links"):
        if kind != _RTM_NEWLINK:
            continue
        _family, _type, index, flags = struct.unpack_from("=BxHiI", msg, pos)
        attrs = _attrs(msg, pos + 16)
        info = _attrs(attrs[_IFLA_LINKINFO], 0) if _IFLA_LINKINFO in attrs else {}
        state = attrs.get(_IFLA_OPERSTATE, b"")
        code = state[0] if state else None
        found.append(
            Link(
                index=index,
                name=_text(attrs.get(_IFLA_IFNAME)),
                kind=_text(info.get(_IFLA_INFO_KIND)),
                mac=attrs.get(_IFLA_ADDRESS, b"").hex(":"),
                up=bool(flags & IFF_UP),
                operstate=""
                if code is None
                else (_OPERSTATES[code] if code < len(_OPERSTATES) else str(code)),
                master=_u32(attrs.get(_IFLA_MASTER)),
                mtu=_u32(attrs.get(_IFLA_MTU)),
            )
        )
    return sorted(found, key=lambda link: link.index)


def addresses(netns: str = "", *, ifindex: int | None = None) -> list[Address]:
    """The addresses of ``netns`` (of link ``ifindex`` only, when given): one RTM_GETADDR
    dump of both families, in the kernel's order."""
    found = []
    body = struct.pack("=BBBBI", socket.AF_UNSPEC, 0, 0, 0, 0)  # struct ifaddrmsg
    for kind, msg, pos in _messages(netns, _RTM_GETADDR, body, "cannot list addresses"):
        if kind != _RTM_NEWADDR:
            continue
        family, prefix, _flags, scope, index = struct.unpack_from("=BBBBI", msg, pos)
        if ifindex and index != ifindex:
            continue
        attrs = _attrs(msg, pos + 8)
        found.append(
            Address(
                ifindex=index,
                family=FAMILIES.get(family, str(family)),
                address=_ip(family, attrs.get(_IFA_ADDRESS)),
                prefix=prefix,
                scope=_SCOPES.get(scope, str(scope)),
            )
        )
    return found


def routes(netns: str = "", *, family: int = socket.AF_INET) -> list[Route]:
    """The routes of ``family`` in the main table of ``netns``: one RTM_GETROUTE dump."""
    found = []
    body = struct.pack("=BBBBBBBBI", family, 0, 0, 0, 0, 0, 0, 0, 0)  # struct rtmsg
    for kind, msg, pos in _messages(netns, _RTM_GETROUTE, body, "cannot list routes"):
        if kind != _RTM_NEWROUTE:
            continue
        fam, dst_len, _src, _tos, table, proto = struct.unpack_from("=BBBBBB", msg, pos)
        attrs = _attrs(msg, pos + 12)
        if fam != family or (_u32(attrs[_RTA_TABLE]) if _RTA_TABLE in attrs else table) != (
            _RT_TABLE_MAIN
        ):
            continue
        dst = _ip(family, attrs.get(_RTA_DST))
        found.append(
            Route(
                family=FAMILIES.get(family, str(family)),
                dst=f"{dst}/{dst_len}" if dst else "default",
                gateway=_ip(family, attrs.get(_RTA_GATEWAY)),
                ifindex=_u32(attrs.get(_RTA_OIF)),
                proto=proto,
            )
        )
    return found
