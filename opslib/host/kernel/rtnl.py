"""Lean raw rtnetlink for the hot paths of find-vm-ip, and opslib's one ICMP probe.

pyroute2 decodes every attribute of every message into Python objects: about
1.6 s for a dump of 10,000 neighbours. find-vm-ip needs two fields of the few
entries whose MAC belongs to a VM, so this module sends one RTM_GETNEIGH dump per
family with an NDA_IFINDEX filter (the kernel then sends only the bridge's
entries) and looks only at what it uses: the MAC, and the IP of entries whose MAC
is wanted. Everything else in opslib talks netlink through :mod:`opslib.host.kernel.netlink`.

:func:`ping` is the ICMP echo probe every caller uses: one request to each of many
targets (IPv4 and IPv6) at once on raw sockets, ended as soon as the awaited
targets answered.

Sockets are opened inside a named netns by switching the calling thread there
just for ``socket()``: a socket stays in the namespace it was created in.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno as errno_
import ipaddress
import os
import select
import socket
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass

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


def _socket(netns: str, family: int, kind: int, proto: int) -> socket.socket:
    with in_netns(netns):
        try:
            return socket.socket(family, kind, proto)
        except OSError as exc:
            raise NetlinkError(f"cannot open a socket in netns {netns or '(own)'}: {exc}") from exc


def _dump_chunks(netns: str, ifindex: int, family: int) -> Iterator[bytes]:
    """The raw replies of one RTM_GETNEIGH dump of ``family`` filtered to ``ifindex``."""
    sock = _socket(netns, socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
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


# -- ICMP echo: the one probe of opslib ---------------------------------------------

# Linux socket options that the socket module does not name.
_IP_MTU_DISCOVER, _IP_PMTUDISC_DO = 10, 2
_IPV6_MTU_DISCOVER, _IPV6_PMTUDISC_DO, _IPV6_DONTFRAG = 23, 2, 62
_SOL_RAW, _ICMP_FILTER, _ICMP6_FILTER = 255, 1, 1
_ECHO_REQUEST: dict[int, int] = {int(socket.AF_INET): 8, int(socket.AF_INET6): 128}
_ECHO_REPLY: dict[int, int] = {int(socket.AF_INET): 0, int(socket.AF_INET6): 129}
_COOKIE = 8  # random payload bytes a reply must echo back


@dataclass(frozen=True)
class Echo:
    """What one :func:`ping` saw."""

    replies: Mapping[str, frozenset[str]]  # each target sent: the addresses that replied
    unsent: frozenset[str]  # targets the kernel refused: no route, above the MTU, no IPv6
    seconds: float  # the probe's own time, from the first request until it returned

    def answered(self) -> set[str]:
        return {target for target, peers in self.replies.items() if peers}

    @property
    def ok(self) -> bool:
        """Every target answered (what a single-address check asks)."""
        return not self.unsent and all(self.replies.values())


def all_answered(replies: Mapping[str, AbstractSet[str]], awaited: Iterable[str]) -> bool:
    """Whether every awaited target that went out has a reply, so the probe can end.

    A target that could not be sent is not in ``replies``: it cannot answer, so it
    does not hold the probe up.
    """
    return all(replies[t] for t in awaited if t in replies)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _request(family: int, ident: int, seq: int, payload: bytes) -> bytes:
    header = struct.pack("!BBHHH", _ECHO_REQUEST[family], 0, 0, ident, seq)
    if family == socket.AF_INET6:
        return header + payload  # the kernel fills in the checksum of raw ICMPv6 sockets
    return header[:2] + struct.pack("!H", _checksum(header + payload)) + header[4:] + payload


def _reply(family: int, data: bytes) -> tuple[int, int, bytes] | None:
    """(ident, seq, payload) of an echo reply, None for anything else."""
    start = (data[0] & 0x0F) * 4 if family == socket.AF_INET and data else 0  # IPv4 header
    if len(data) < start + 8:
        return None
    kind, _code, _sum, ident, seq = struct.unpack_from("!BBHHH", data, start)
    if kind != _ECHO_REPLY[family]:
        return None
    return ident, seq, data[start + 8 :]


def _echo_socket(netns: str, family: int, ifname: str) -> socket.socket:
    proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
    sock = _socket(netns, family, socket.SOCK_RAW, proto)
    try:
        if ifname:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        # Never fragment (ping -M do): a request above the path MTU fails at sendto.
        # The filters pass only echo replies: a raw socket gets every ICMP of the netns.
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, _IP_PMTUDISC_DO)
            blocked = ~(1 << _ECHO_REPLY[family]) & 0xFFFFFFFF
            sock.setsockopt(_SOL_RAW, _ICMP_FILTER, struct.pack("=I", blocked))
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_MTU_DISCOVER, _IPV6_PMTUDISC_DO)
            sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_DONTFRAG, 1)
            filt = [0xFFFFFFFF] * 8
            kind = _ECHO_REPLY[family]
            filt[kind >> 5] &= ~(1 << (kind & 31))
            sock.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, struct.pack("=8I", *filt))
    except OSError as exc:
        sock.close()
        raise NetlinkError(
            f"cannot probe on {ifname or 'the routed links'}: {exc}", exc.errno
        ) from exc
    return sock


def ping(
    netns: str,
    targets: str | Iterable[str],
    *,
    ifname: str = "",
    size: int = 56,
    wait: float = 1.0,
    tries: int = 1,
    until: Callable[[Mapping[str, AbstractSet[str]]], bool] | None = None,
) -> Echo:
    """One echo request to every target at once, from ``netns`` ("" = this one).

    The one ICMP probe of opslib: IPv4 and IPv6 targets mix; ``ifname`` sends out of
    that link instead of by the routes (needed for link-local and multicast targets).
    ``size`` is the payload, like ping -s; requests are never fragmented (ping -M do),
    so one above the path MTU fails instead of passing in pieces.

    The probe ends as soon as ``until(replies)`` holds (default: every unicast target
    that went out answered) and waits ``wait`` seconds at most for the silent ones;
    ``tries`` > 1 sends to those again after each ``wait``. A multicast target
    (ff02::1) is answered by every node on the link: its replies are collected, never
    awaited. Raw sockets: needs CAP_NET_RAW.
    """
    wanted = [targets] if isinstance(targets, str) else list(dict.fromkeys(targets))
    family_of: dict[str, int] = {}
    multicast = set()
    for target in wanted:
        try:
            address = ipaddress.ip_address(target)
        except ValueError as exc:
            raise InputError(
                f"{target!r} is not an IP address; write e.g. 192.0.2.1 or 2001:db8::1"
            ) from exc
        family_of[target] = int(socket.AF_INET6 if address.version == 6 else socket.AF_INET)
        if address.is_multicast:
            multicast.add(target)
    if len(wanted) > 0xFFFF:
        raise InputError(f"{len(wanted)} targets are more than one probe can number; split them")
    awaited = [t for t in wanted if t not in multicast]
    seq_of = {target: seq for seq, target in enumerate(wanted, start=1)}
    by_seq = {seq: target for target, seq in seq_of.items()}
    # Concurrent probes (host-health runs its checks in threads) see each other's
    # replies; a random ident and payload per call keep them apart.
    ident = int.from_bytes(os.urandom(2), "big")
    cookie = os.urandom(_COOKIE)
    payload = (cookie * (size // _COOKIE + 1))[: max(size, _COOKIE)]
    replies: dict[str, set[str]] = {}
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        socks = {
            family: stack.enter_context(_echo_socket(netns, family, ifname))
            for family in dict.fromkeys(family_of.values())
        }
        scope = ifindex(netns, ifname) if ifname and socket.AF_INET6 in socks else 0

        def send(batch: Iterable[str]) -> None:
            for target in batch:
                family = family_of[target]
                dest = (target, 0, 0, scope) if family == socket.AF_INET6 else (target, 0)
                with contextlib.suppress(OSError):  # no route, EMSGSIZE: stays unsent
                    socks[family].sendto(_request(family, ident, seq_of[target], payload), dest)
                    replies.setdefault(target, set())

        def done() -> bool:
            if not replies:
                return True  # nothing went out, so nothing can answer
            if until is not None:
                return until(replies)
            sent = [t for t in awaited if t in replies]
            return bool(sent) and all_answered(replies, sent)

        send(wanted)
        round_end, rounds = started + wait, max(1, tries)
        while not done():
            left = round_end - time.monotonic()
            if left <= 0:
                rounds -= 1
                if not rounds:
                    break
                send(t for t in awaited if not replies.get(t))
                round_end += wait
                continue
            ready, _, _ = select.select(list(socks.values()), [], [], left)
            for sock in ready:
                while True:
                    try:
                        data, peer = sock.recvfrom(65535, socket.MSG_DONTWAIT)
                    except OSError:  # drained (EAGAIN), or an error report: nothing to read
                        break
                    got = _reply(sock.family, data)
                    if got is None or got[0] != ident or got[2][:_COOKIE] != cookie:
                        continue
                    target = by_seq.get(got[1], "")
                    if target in replies:
                        replies[target].add(peer[0].split("%")[0])
    return Echo(
        replies={t: frozenset(peers) for t, peers in replies.items()},
        unsent=frozenset(t for t in wanted if t not in replies),
        seconds=time.monotonic() - started,
    )
