"""room-router on a real kernel (root): a host dropped from ``hosts`` loses its live route.

The router is a network namespace of our own, entered for the runbook (``pushns``: the
runbook acts on its own namespace); its room link ``eth0`` is a veth to a second
namespace that holds the daemon hosts' addresses on the room's /64, so their next hops
answer. Forwarding, the room's address and the routes of the /48 are the kernel's, the
files real ones in a temporary directory. Stood in for: radvd (a systemd unit:
tests/radvd_stand_in.py; radvd itself in test_room_router and the room lab), and the
tunnel's observation
(ipv6-tunnel's tests make real ones): the tunnel is found as made, its link a veth
``he-ipv6`` holding the client address and the default route, which its verify checks.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2.netns import popns, pushns
from radvd_stand_in import RadvdStandIn

from opslib.contract import transaction
from opslib.host.ifupdown import file_io
from opslib.host.sixinfour.tunnels import TunnelState
from opslib.procedures import ipv6_tunnel
from opslib.procedures import room_router as rr

root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

DAEMON2 = "daemon2 2001:db8:48:2::/64 via 2001:db8:48::2"
DAEMON3 = "daemon3 2001:db8:48:3::/64 via 2001:db8:48::3"
DROPPED = "2001:db8:48:3::/64"


def ip(ns: str, *args: str) -> str:
    done = subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True, check=True)
    return done.stdout


@pytest.fixture
def room(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(the router's namespace, the hosts'): eth0 ↔ the hosts' link, he-ipv6 ↔ the broker's."""
    tag = f"rr{os.getpid() % 100000}"
    router, hosts = f"{tag}-router", f"{tag}-hosts"
    for ns in (router, hosts):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        ip(router, "link", "add", "eth0", "type", "veth", "peer", f"{tag}h", "netns", hosts)
        ip(router, "link", "add", "he-ipv6", "type", "veth", "peer", f"{tag}b", "netns", hosts)
        for ns, link in ((router, "eth0"), (router, "he-ipv6"), (hosts, f"{tag}h"),
                         (hosts, f"{tag}b"), (router, "lo"), (hosts, "lo")):  # fmt: skip
            ip(ns, "link", "set", link, "up")
        for address in ("2001:db8:48::2/64", "2001:db8:48::3/64"):
            ip(hosts, "-6", "addr", "add", address, "dev", f"{tag}h", "nodad")
        ip(router, "-6", "addr", "add", "2001:db8:1:1::2/64", "dev", "he-ipv6", "nodad")
        ip(router, "-6", "route", "add", "default", "via", "2001:db8:1:1::1", "dev", "he-ipv6")
        yield router, hosts
    finally:
        for ns in (router, hosts):
            subprocess.run(["ip", "netns", "del", ns], check=False)


def inputs(tmp_path: Path, hosts: str) -> rr.Inputs:
    iface_file = tmp_path / "interfaces"
    if not iface_file.exists():
        iface_file.write_text("source /etc/network/interfaces.d/*\n")
    return rr.Inputs(
        local_ipv4="192.0.2.20", server_ipv4="203.0.113.1", client_ipv6="2001:db8:1:1::2/64",
        server_ipv6="2001:db8:1:1::1", routed_prefix="2001:db8:48::/48",
        implementation="userspace", room_interface="eth0", room_prefix="2001:db8:48::/64",
        hosts=hosts, interfaces_file=str(iface_file),
        routes_file=str(tmp_path / "interfaces.d" / "opsbook-room-router"),
        sysctl_file=str(tmp_path / "60-opsbook-room-router.conf"),
        radvd_conf=str(tmp_path / "radvd.conf"), run_dir=str(tmp_path), ra_interval=4,
    )  # fmt: skip


@pytest.fixture
def inside(room: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[RadvdStandIn]:
    """In the router's namespace, radvd and the tunnel's observation stood in for."""
    service = RadvdStandIn().patch(monkeypatch)

    def tunnel(i: ipv6_tunnel.Inputs, _session: None) -> TunnelState:
        return TunnelState(
            True, kind="tun", up=True, mtu=1480, local=i.local_ipv4, remote=i.server_ipv4,
            addresses=(i.client_ipv6,), default_gateway=i.server_ipv6,
            interfaces_text=file_io.read_exact(i.interfaces_file),
        )  # fmt: skip

    monkeypatch.setattr(ipv6_tunnel.PROCEDURE, "observe", tunnel)
    pushns(room[0])
    try:
        yield service
    finally:
        popns()


def routes(router: str) -> str:
    return ip(router, "-6", "route", "show", "root", "2001:db8:48::/48")


@root
def test_a_host_dropped_from_hosts_loses_its_route_and_a_second_run_changes_nothing(
    room: tuple[str, str], inside: RadvdStandIn, tmp_path: Path
) -> None:
    router = room[0]
    both = inputs(tmp_path, f"{DAEMON2}, {DAEMON3}")
    first = transaction.apply(rr.PROCEDURE, both, "router")
    assert first.status == "changed" and not first.failed, first.summary
    assert f"{DROPPED} via 2001:db8:48::3 dev eth0" in routes(router)

    one = inputs(tmp_path, DAEMON2)
    plan = transaction.plan(rr.PROCEDURE, one, "router")
    removal = [c for c in plan.changes if c.target == f"route:{DROPPED}"]
    assert [(c.action, c.summary) for c in removal] == [
        ("delete", f"remove route {DROPPED} via 2001:db8:48::3 dev eth0: no host of hosts has it")
    ]
    assert "\n-via 2001:db8:48::3 dev eth0\n+none\n" in removal[0].diff
    routes_file = next(c for c in plan.changes if c.target == f"file:{one.routes_file}")
    assert f"-\tup ip -6 route replace {DROPPED} via 2001:db8:48::3 dev eth0" in routes_file.diff

    done = transaction.apply(rr.PROCEDURE, one, "router", reviewed=plan)
    assert done.status == "changed" and not done.failed, done.summary
    now = routes(router)
    assert DROPPED not in now, now
    assert "2001:db8:48:2::/64 via 2001:db8:48::2 dev eth0" in now, now
    assert "unreachable 2001:db8:48::/48" in now, now

    again = transaction.plan(rr.PROCEDURE, one, "router")
    assert again.empty, [c.summary for c in again.changes]
    assert transaction.apply(rr.PROCEDURE, one, "router").status == "unchanged"


@root
def test_a_failed_apply_puts_the_dropped_hosts_route_back(
    room: tuple[str, str], inside: RadvdStandIn, tmp_path: Path
) -> None:
    """radvd fails after the routes step: its undo makes the dropped host's route again."""
    router = room[0]
    first = transaction.apply(rr.PROCEDURE, inputs(tmp_path, f"{DAEMON2}, {DAEMON3}"), "r")
    assert first.status == "changed" and not first.failed, first.summary
    before = routes(router)
    inside.fail = True
    one = inputs(tmp_path, DAEMON2)
    Path(one.radvd_conf).write_text("# another radvd.conf: the apply rewrites it\n")
    result = transaction.apply(rr.PROCEDURE, one, "r")
    assert result.status == "rolled back", result.summary
    [routed] = [s for s in result.steps if s.name == "route the /48 on eth0"]
    assert f"{DROPPED} via 2001:db8:48::3 dev eth0 removed" in routed.detail, result.steps
    assert routes(router) == before
    assert f"{DROPPED} via 2001:db8:48::3 dev eth0" in before
