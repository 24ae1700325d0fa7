"""ICMP echo: the one probe of opslib.

:func:`ping` is the probe every caller uses: one request to each of many targets
(IPv4 and IPv6) at once on raw sockets (opened in the caller's netns by
:func:`opslib.host.kernel.rtnl.netns_socket`), ended as soon as the awaited targets
answered.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import select
import socket
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from opslib.core.errors import InputError, NetlinkError
from opslib.host.kernel.rtnl import ifindex, netns_socket

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


def _echo_socket(netns: str, family: int, ifname: str, source: str = "") -> socket.socket:
    proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
    sock = netns_socket(netns, family, socket.SOCK_RAW, proto)
    try:
        if ifname:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        if source and (":" in source) == (family == socket.AF_INET6):
            sock.bind((source, 0, 0, 0) if family == socket.AF_INET6 else (source, 0))
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
    source: str = "",
) -> Echo:
    """One echo request to every target at once, from ``netns`` ("" = this one).

    The one ICMP probe of opslib: IPv4 and IPv6 targets mix; ``ifname`` sends out of
    that link instead of by the routes (needed for link-local and multicast targets).
    ``size`` is the payload, like ping -s; requests are never fragmented (ping -M do),
    so one above the path MTU fails instead of passing in pieces.

    It ends once ``until(replies)`` holds (default: every unicast target sent to
    answered), waiting ``wait`` s at most; ``tries`` > 1 sends to the silent ones again.
    A multicast target (ff02::1) is answered by every node on the link: collected, never
    awaited. ``source``: from that address of this host (ping -I ADDRESS). Raw sockets:
    needs CAP_NET_RAW."""
    wanted, family_of, multicast = _targets(targets)
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
            family: stack.enter_context(_echo_socket(netns, family, ifname, source))
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
                for seq, peer in _replies(sock, ident, cookie):
                    target = by_seq.get(seq, "")
                    if target in replies:
                        replies[target].add(peer)
    return Echo(
        replies={t: frozenset(peers) for t, peers in replies.items()},
        unsent=frozenset(t for t in wanted if t not in replies),
        seconds=time.monotonic() - started,
    )


def _targets(targets: str | Iterable[str]) -> tuple[list[str], dict[str, int], set[str]]:
    """The targets once each, in order; each one's address family; the multicast ones.
    InputError for one that is not an IP address, or more than one probe can number."""
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
    return wanted, family_of, multicast


def _replies(sock: socket.socket, ident: int, cookie: bytes) -> Iterator[tuple[int, str]]:
    """(seq, replying address) of every echo reply of this probe waiting on ``sock``."""
    while True:
        try:
            data, peer = sock.recvfrom(65535, socket.MSG_DONTWAIT)
        except OSError:  # drained (EAGAIN), or an error report: nothing to read
            return
        got = _reply(sock.family, data)
        if got is not None and got[0] == ident and got[2][:_COOKIE] == cookie:
            yield got[1], peer[0].split("%")[0]
