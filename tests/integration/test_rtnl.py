"""The links, addresses and routes opslib lists (opslib.host.kernel.netlink, read with
lean raw rtnetlink: opslib.host.kernel.rtnl), in a throwaway network namespace with a
bridge and its port, addresses of both families and routes in more than one table: what
they say, and the same as pyroute2 decodes from the same kernel. Needs root (a netns).
A 6in4 (sit) link is not among them: this kind of machine has no sit module."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator

import pytest
from support import throwaway_netns

from opslib.core.errors import InputError
from opslib.host.kernel import netlink, rtnl
from opslib.host.kernel.rtnl import Address, Link, Route

root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespace)")


def ip(netns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "-n", netns, *args], capture_output=True, text=True, check=check)


@pytest.fixture
def netns() -> Iterator[str]:
    with throwaway_netns(
        "rt",
        "link set lo up",
        "link add br9 type bridge",
        "link add v0 type veth peer name v1",
        "link set v0 master br9",
        "link set v0 up",
        "link set br9 up",
        "link set v1 mtu 1400",  # v1 stays down
        "addr add 192.0.2.1/24 dev br9",
        "addr add 2001:db8:9::1/64 dev br9 nodad",
        "addr add 198.51.100.1 peer 198.51.100.2/32 dev v1",
        "route add default via 192.0.2.254",
        "-6 route add default via 2001:db8:9::fe dev br9 proto ra",
        "-6 route add 2001:db8:77::/48 via 2001:db8:9::fd table 100",
    ) as name:
        yield name


def pyroute2_view(netns: str) -> tuple[list[Link], list[Address], list[Route]]:
    """What opslib made of pyroute2's decoding of the same dumps, before it read them raw."""
    families = rtnl.FAMILIES
    scopes = {0: "global", 200: "site", 253: "link", 254: "host"}
    with netlink.ipr(netns) as sock:
        links = []
        for m in sock.get_links():
            info = m.get_attr("IFLA_LINKINFO")
            links.append(
                Link(
                    index=m["index"],
                    name=m.get_attr("IFLA_IFNAME"),
                    kind=(info.get_attr("IFLA_INFO_KIND") or "") if info is not None else "",
                    mac=(m.get_attr("IFLA_ADDRESS") or "").lower(),
                    up=bool(m["flags"] & netlink.IFF_UP),
                    operstate=m.get_attr("IFLA_OPERSTATE") or "",
                    master=m.get_attr("IFLA_MASTER") or 0,
                    mtu=m.get_attr("IFLA_MTU") or 0,
                )
            )
        addrs = [
            Address(
                ifindex=m["index"],
                family=families.get(m["family"], str(m["family"])),
                address=m.get_attr("IFA_ADDRESS"),
                prefix=m["prefixlen"],
                scope=scopes.get(m["scope"], str(m["scope"])),
            )
            for m in sock.get_addr()
        ]
        routes = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for m in sock.get_routes(family=family, table=254):
                dst = m.get_attr("RTA_DST")
                routes.append(
                    Route(
                        family=families[family],
                        dst=f"{dst}/{m['dst_len']}" if dst else "default",
                        gateway=m.get_attr("RTA_GATEWAY") or "",
                        ifindex=m.get_attr("RTA_OIF") or 0,
                        proto=int(m["proto"] or 0),
                    )
                )
    return sorted(links, key=lambda link: link.index), addrs, routes


@root
def test_links_addresses_and_routes_as_the_kernel_has_them(netns: str) -> None:
    by_name = {link.name: link for link in netlink.links(netns)}
    br9, v0, v1 = by_name["br9"], by_name["v0"], by_name["v1"]
    assert (br9.kind, br9.up, v0.kind, v0.master, v0.up) == (
        "bridge",
        True,
        "veth",
        br9.index,
        True,
    )
    assert (v1.up, v1.operstate, v1.mtu, len(v1.mac)) == (False, "DOWN", 1400, 17)
    assert by_name["lo"].operstate == "UNKNOWN" and by_name["lo"].kind == ""
    assert netlink.bridge_ports(netns) == {"br9": ["v0"]}
    on_br9 = {
        (a.family, a.address, a.prefix, a.scope)
        for a in netlink.addresses(netns, ifindex=br9.index)
    }
    assert {("ipv4", "192.0.2.1", 24, "global"), ("ipv6", "2001:db8:9::1", 64, "global")} <= on_br9
    assert [(a.address, a.prefix) for a in netlink.addresses(netns, ifindex=v1.index)] == [
        ("198.51.100.2", 32)  # IFA_ADDRESS of a point-to-point address: the peer
    ]
    v6 = netlink.default_route(netns, family=socket.AF_INET6)
    assert v6 == Route("ipv6", "default", "2001:db8:9::fe", br9.index, proto=9)  # RTPROT_RA
    v4 = netlink.default_route(netns)  # `ip route add` makes RTPROT_BOOT (3) routes
    assert v4 == Route("ipv4", "default", "192.0.2.254", br9.index, proto=3)
    in_main = [r.dst for r in netlink.routes(netns, family=socket.AF_INET6)]
    assert "2001:db8:9::/64" in in_main and "2001:db8:77::/48" not in in_main  # table 100


@root
def test_every_read_is_what_pyroute2_decodes(netns: str) -> None:
    assert pyroute2_view(netns) == (
        netlink.links(netns),
        netlink.addresses(netns),
        netlink.routes(netns) + netlink.routes(netns, family=socket.AF_INET6),
    )


def test_a_namespace_that_does_not_exist_is_one_line() -> None:
    with pytest.raises(InputError, match="network namespace 'obrt-none' does not exist"):
        netlink.links("obrt-none")
