"""icmp.ping, opslib's one ICMP probe (find-vm-ip's neighbour refresh, ipv6-tunnel's
health), in a throwaway network namespace: needs root (a netns, raw sockets)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
from support import throwaway_netns

from opslib.host.kernel import icmp

root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespace, raw sockets)")


@pytest.fixture
def netns() -> Iterator[str]:
    """A throwaway netns: loopback answers; 192.0.2.2 on a veth with no one behind never does."""
    with throwaway_netns(
        "fv",
        "link set lo up",
        "link add v0 type veth peer name v1",
        "addr add 192.0.2.1/24 dev v0",
        "link set v0 up",
        "link set v1 up",
    ) as name:
        yield name


@root
def test_ping_returns_as_soon_as_every_target_answered(netns: str) -> None:
    echo = icmp.ping(netns, ["127.0.0.1", "::1"], wait=60)
    assert echo.ok and echo.answered() == {"127.0.0.1", "::1"}
    assert echo.seconds < 30  # a wait of 60 s was not waited out


@root
def test_ping_waits_for_a_silent_target_unless_told_what_is_enough(netns: str) -> None:
    echo = icmp.ping(netns, ["127.0.0.1", "192.0.2.2"], wait=0.2)
    assert echo.answered() == {"127.0.0.1"} and not echo.ok and not echo.unsent
    enough = icmp.ping(netns, ["127.0.0.1", "192.0.2.2"], wait=60,
                       until=lambda replies: bool(replies["127.0.0.1"]))  # fmt: skip
    assert enough.answered() == {"127.0.0.1"} and enough.seconds < 30


@root
def test_ping_never_fragments_a_request_above_the_mtu(netns: str) -> None:
    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "mtu", "1500"], check=True)
    assert icmp.ping(netns, "::1", size=1452).ok  # 1452 + 8 + 40 = 1500
    too_big = icmp.ping(netns, "::1", size=1453, wait=60)
    assert not too_big.ok and too_big.unsent == {"::1"} and too_big.seconds < 30
    assert icmp.ping(netns, "127.0.0.1", size=1472).ok  # 1472 + 8 + 20 = 1500
    assert not icmp.ping(netns, "127.0.0.1", size=1473).ok
