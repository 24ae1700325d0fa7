"""Lean raw rtnetlink for the hot paths of find-vm-ip, and sockets inside a netns.

pyroute2 decodes every attribute of every message into Python objects: about
1.6 s for a dump of 10,000 neighbours. find-vm-ip needs two fields of the few
entries whose MAC belongs to a VM, so this module sends one RTM_GETNEIGH dump per
family with an NDA_IFINDEX filter (the kernel then sends only the bridge's
entries) and looks only at what it uses: the MAC, and the IP of entries whose MAC
is wanted. Everything else in opslib talks netlink through :mod:`opslib.host.kernel.netlink`.

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

from opslib.core.errors import InputError, NetlinkError
from opslib.host.kernel.netlink import FAMILIES, NUD_STATES, Neighbour, netns_exists

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
    sock = netns_socket(netns, socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        ndmsg = struct.pack("=BBHiHBB", family, 0, 0, 0, 0, 0, 0)
        attr = struct.pack("=HHI", 8, _NDA_IFINDEX, ifindex)  # the kernel filters by link
        body = ndmsg + attr
        sock.send(
            struct.pack("=IHHII", _HDR + len(body), _RTM_GETNEIGH, _NLM_F_REQUEST_DUMP, 1, 0) + body
        )
        while True:
            data = sock.recv(1 << 17)
            # A dump ends with NLMSG_DONE (or an NLMSG_ERROR) as the last message of a reply.
            offset = 0
            while offset < len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if kind == _NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", data, offset + _HDR)
                    if err:
                        raise NetlinkError(
                            f"cannot dump the neighbour table: {os.strerror(-err)}", -err
                        )
                if kind in (_NLMSG_DONE, _NLMSG_ERROR):
                    yield data[:offset]
                    return
                if length < _HDR:
                    raise NetlinkError("cannot dump the neighbour table: bad netlink message")
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
