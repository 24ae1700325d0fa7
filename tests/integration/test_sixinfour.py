"""The lab's userspace 6in4: a TUN device + raw protocol-41 socket per end.

The root tests build two namespaces of their own joined by a veth pair (IPv4
only), start one tunnel end in each and ping across the tunnel.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import eventually

from opslib.core.errors import ApplyError, InputError
from opslib.host.kernel import netlink
from opslib.host.sixinfour import userspace

root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, TUN, raw sockets)")


def ipv4_header(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    return (
        struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(payload),
            0,
            0,
            64,
            proto,
            0,
            socket.inet_aton(src),
            socket.inet_aton(dst),
        )
        + payload
    )


IPV6_PACKET = bytes([0x60]) + bytes(39)


def test_decapsulate_returns_the_ipv6_packet_from_the_remote_endpoint() -> None:
    datagram = ipv4_header("203.0.113.1", "192.0.2.10", 41, IPV6_PACKET)
    assert userspace.decapsulate(datagram, "203.0.113.1", "192.0.2.10") == IPV6_PACKET


@pytest.mark.parametrize(
    ("src", "dst", "proto", "payload"),
    [
        ("203.0.113.9", "192.0.2.10", 41, IPV6_PACKET),  # someone else's tunnel
        ("203.0.113.1", "192.0.2.11", 41, IPV6_PACKET),  # not to our endpoint
        ("203.0.113.1", "192.0.2.10", 4, IPV6_PACKET),  # IPIP, not 6in4
        ("203.0.113.1", "192.0.2.10", 41, bytes([0x45]) + bytes(39)),  # IPv4 inside
    ],
)
def test_decapsulate_drops_what_is_not_this_tunnel(
    src: str, dst: str, proto: int, payload: bytes
) -> None:
    datagram = ipv4_header(src, dst, proto, payload)
    assert userspace.decapsulate(datagram, "203.0.113.1", "192.0.2.10") is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"local": "192.0.2.300"}, "local endpoint"),
        ({"remote": "2001:db8::1"}, "remote endpoint"),
        ({"name": "a-name-longer-than-15"}, "link name"),
        ({"mtu": 1500}, "MTU 1500"),
    ],
)
def test_bad_end_spec_is_one_clear_line(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {
        "netns": "x",
        "name": "he-ipv6",
        "local": "192.0.2.10",
        "remote": "203.0.113.1",
    }
    with pytest.raises(InputError, match=message) as exc:
        userspace.EndSpec(**{**base, **kwargs})  # type: ignore[arg-type]
    assert "\n" not in str(exc.value)


# -- two namespaces of our own -------------------------------------------------------


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def ping6(netns: str, address: str, size: int = 56) -> bool:
    cmd = ["ip", "netns", "exec", netns, "ping", "-6", "-n", "-c1", "-W2", "-s", str(size)]
    return subprocess.run([*cmd, "-M", "do", address], capture_output=True).returncode == 0


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    tag = f"sx{os.getpid() % 100000}"
    a, b = f"{tag}-a", f"{tag}-b"
    sh("ip", "netns", "add", a)
    sh("ip", "netns", "add", b)
    try:
        sh(
            "ip",
            "link",
            "add",
            f"{tag}a",
            "netns",
            a,
            "type",
            "veth",
            "peer",
            f"{tag}b",
            "netns",
            b,
        )
        for ns, dev, addr in ((a, f"{tag}a", "203.0.113.1/24"), (b, f"{tag}b", "192.0.2.10/16")):
            sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        # Different subnets on purpose: the ends reach each other by a route, as on campus.
        sh("ip", "-n", a, "route", "add", "192.0.2.0/24", "dev", f"{tag}a")
        sh("ip", "-n", b, "route", "add", "203.0.113.0/24", "dev", f"{tag}b")
        yield a, b, tmp_path
    finally:
        for pid in tmp_path.glob("*.pid"):
            userspace.stop(pid)
        subprocess.run(["ip", "netns", "del", a], capture_output=True)
        subprocess.run(["ip", "netns", "del", b], capture_output=True)


def start_both(a: str, b: str, run: Path) -> tuple[userspace.EndSpec, userspace.EndSpec]:
    he = userspace.EndSpec(netns=a, name="tun-host", local="203.0.113.1", remote="192.0.2.10")
    host = userspace.EndSpec(netns=b, name="he-ipv6", local="192.0.2.10", remote="203.0.113.1")
    userspace.start(he, run / "he.pid")
    userspace.start(host, run / "host.pid")
    netlink.ensure_address(a, "tun-host", "2001:db8:1::1/64")
    netlink.ensure_address(b, "he-ipv6", "2001:db8:1::2/64")
    return he, host


@root
def test_pings_cross_the_tunnel_including_1400_bytes_and_need_both_ends(
    pair: tuple[str, str, Path],
) -> None:
    a, b, run = pair
    start_both(a, b, run)
    assert ping6(b, "2001:db8:1::1")
    assert ping6(b, "2001:db8:1::1", size=1400)
    # A packet bigger than the tunnel MTU (1480) is refused, not silently fragmented.
    assert not ping6(b, "2001:db8:1::1", size=1440)
    # The IPv6 path really is the userspace tunnel: without the he end, nothing answers.
    assert userspace.stop(run / "he.pid")
    assert not ping6(b, "2001:db8:1::1")
    assert netlink.link_by_name(a, "tun-host") is None


@root
def test_routed_prefix_behind_the_far_end_is_reachable(pair: tuple[str, str, Path]) -> None:
    a, b, run = pair
    start_both(a, b, run)
    # he: "the internet" on lo and the routed /64 back through the tunnel, as start_he does.
    sh("ip", "-n", a, "addr", "add", "2001:db8:ffff::1/128", "dev", "lo")
    assert netlink.ensure_route(a, "2001:db8:2::/64", gateway="2001:db8:1::2", dev="tun-host")
    assert not netlink.ensure_route(a, "2001:db8:2::/64", gateway="2001:db8:1::2", dev="tun-host")
    sh("ip", "-n", b, "addr", "add", "2001:db8:2::5/128", "dev", "lo")
    assert netlink.ensure_route(b, "default", gateway="2001:db8:1::1", dev="he-ipv6")
    ping = ["ip", "netns", "exec", b, "ping", "-6", "-n", "-c1", "-W2", "-I", "2001:db8:2::5"]
    last: list[str] = []

    def answered() -> bool:
        done = subprocess.run([*ping, "2001:db8:ffff::1"], capture_output=True, text=True)
        last[:] = [f"rc {done.returncode}: {(done.stdout + done.stderr).strip()[-300:]}"]
        return done.returncode == 0

    # a few tries: in ci13 (a loaded machine) the first ping from the address just put on
    # lo ended with rc 2 (an error, not a lost reply); the route is what is checked here
    try:
        eventually(answered, timeout=20, every=0.5, what="a ping from the routed prefix")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the last ping: {last[0]}") from None


@root
def test_start_is_idempotent_and_stop_leaves_nothing(pair: tuple[str, str, Path]) -> None:
    a, _b, run = pair
    spec = userspace.EndSpec(netns=a, name="tun-host", local="203.0.113.1", remote="192.0.2.10")
    pid = userspace.start(spec, run / "he.pid")
    assert userspace.start(spec, run / "he.pid") == pid
    assert userspace.running_spec(run / "he.pid") == spec
    link = netlink.link_by_name(a, "tun-host")
    assert link is not None and link.kind == "tun" and link.mtu == 1480 and link.up
    assert userspace.stop(run / "he.pid")
    assert userspace.running(run / "he.pid") is None
    assert not (run / "he.pid").exists()
    assert not userspace.stop(run / "he.pid")


@root
def test_start_in_a_missing_netns_fails_in_one_line(tmp_path: Path) -> None:
    spec = userspace.EndSpec(
        netns="sx-no-such-ns", name="t6", local="203.0.113.1", remote="192.0.2.10"
    )
    with pytest.raises(ApplyError, match="does not exist") as exc:
        userspace.start(spec, tmp_path / "x.pid")
    assert "\n" not in str(exc.value)
