"""room-ipv6-move's view of the room router's advertisements, on a real kernel and a real
radvd (Debian's, as a plain process: ``../shared/DESIGN.md``): two namespaces of this
session's prefix joined by a veth, radvd on one end advertising the room's /64 with a
slow period (so only an answer to a solicitation arrives in time), the runbook's ``Side``
on the other end, a forwarding host as a daemon host with nat-bridge is.

What the move relies on: the plan's Router Solicitation is answered (the precondition), a
forwarding host takes nothing from the RAs until ``accept_ra`` is 2, then a SLAAC address
and a default route via the router's link-local, and forgetting them leaves nothing.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import lab_prefix

from opslib.host.kernel import ra
from opslib.procedures.room_ipv6_move.side import Side

pytestmark = pytest.mark.lab_session("room")

ROOM = "2001:db8:48::/64"
RADVD = """interface {link} {{
  AdvSendAdvert on; MinRtrAdvInterval 30; MaxRtrAdvInterval 60;
  prefix {prefix} {{ AdvOnLink on; AdvAutonomous on; }};
}};
"""


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@pytest.fixture
def segment(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(the host's netns, its link) with radvd on the router's end; all removed after."""
    router, host = f"{lab_prefix()}-rr", f"{lab_prefix()}-rh"
    link, peer = f"{lab_prefix()}-ra", f"{lab_prefix()}-rb"
    pidfile = tmp_path / "radvd.pid"
    for ns in (router, host):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        sh("ip", "netns", "add", ns)
    try:
        sh("ip", "link", "add", link, "netns", router, "type", "veth", "peer", "name", peer,
           "netns", host)  # fmt: skip
        for ns, name in ((router, link), (host, peer)):
            sh("ip", "-n", ns, "link", "set", name, "up")
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        sh("ip", "-n", router, "addr", "add", "2001:db8:48::1/64", "dev", link)
        conf = tmp_path / "radvd.conf"
        conf.write_text(RADVD.format(link=link, prefix=ROOM))
        sh("ip", "netns", "exec", router, "radvd", "-C", str(conf), "-p", str(pidfile),
           "-m", "logfile", "-l", str(tmp_path / "radvd.log"))  # fmt: skip
        yield host, peer
    finally:
        if pidfile.exists():
            subprocess.run(["kill", pidfile.read_text().strip()], check=False)
        for ns in (router, host):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def test_the_room_routers_advert_is_taken_with_accept_ra_2_and_forgotten(
    segment: tuple[str, str],
) -> None:
    netns, link = segment
    side = Side(netns)
    advert = side.solicit(link, 20.0)  # radvd answers a solicitation at once
    assert advert is not None and advert.prefixes == (ROOM,) and advert.lifetime > 0
    assert advert.router.startswith("fe80::")
    assert side.accept_ra(link) == 1 and side.taken(link) == ra.Taken()  # forwarding: ignored
    side.set_accept_ra(link, 2)
    taken = side.wait_for_ra(link, advert.prefixes, 30.0)
    assert taken.default_via == advert.router, taken
    assert [a for a in taken.addresses if a.startswith("2001:db8:48:0:")], taken
    assert side.route_dev("2001:db8:ffff::1", "") == link
    assert side.answers("2001:db8:48::1", timeout=10.0)
    side.set_accept_ra(link, 0)
    assert side.forget(link) == 3  # the address, the default route, the prefix's on-link route
    assert side.taken(link) == ra.Taken()
