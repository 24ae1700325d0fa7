"""Running guests' taps on a bridge: what a network restart cuts off, put back on the
bridge, and each guest's SLAAC address awaited and checked (nat-bridge-ipv6's apply).

A network restart makes its bridge anew and leaves the running guests' taps detached;
libvirt does not put them back. Each :class:`Cut` follows one guest through it.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable
from dataclasses import dataclass

from opslib.core.changes import Check
from opslib.core.ipv6prefix import gateway
from opslib.core.shellcmd import command
from opslib.host.kernel import icmp, netlink
from opslib.host.libvirt.netxml import NetworkXml

WAIT_ROUND = 0.5  # seconds between rounds of pings to the guests


@dataclass
class Cut:
    domain: str
    tap: str
    mac: str
    address: str
    detached_at: float
    reattached_at: float | None = None
    answered_at: float | None = None


def reattach(netns: str, bridge: str, cuts: list[Cut]) -> list[str]:
    """Put every tap back on the bridge (and up); names of taps that could not be."""
    failed = []
    for cut in cuts:
        link = netlink.link_by_name(netns, cut.tap)
        bridge_link = netlink.link_by_name(netns, bridge)
        if link is None or bridge_link is None:
            failed.append(cut.tap)
            continue
        if link.master != bridge_link.index:
            netlink.set_master(netns, cut.tap, bridge)
        if not link.up:
            netlink.set_link(netns, cut.tap, up=True)
        cut.reattached_at = time.monotonic()
    return failed


def wait_for_guests(netns: str, cuts: list[Cut], timeout: float) -> None:
    """Ping each guest's SLAAC address until it answers or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = [c for c in cuts if c.answered_at is None]
        if not pending:
            return
        for cut in pending:
            if icmp.ping(netns, cut.address).ok:
                cut.answered_at = time.monotonic()
        if any(c.answered_at is None for c in cuts):
            # ping fails at once without a route: no back-to-back processes for 90 s.
            time.sleep(min(WAIT_ROUND, max(0.0, deadline - time.monotonic())))


def cut_rows(cuts: list[Cut]) -> list[tuple[Cut, float]]:
    return [
        (c, round(c.answered_at - c.detached_at, 1))
        for c in cuts
        if c.answered_at is not None and c.detached_at
    ]


def table(cuts: Iterable[Cut], *, changed: bool) -> list[dict[str, object]]:
    """One row per guest: its tap, SLAAC address, and how long it was cut off."""
    return [
        {
            "guest": c.domain,
            "tap": c.tap,
            "slaac": c.address,
            "on bridge": c.reattached_at is not None or not changed,
            "answers": c.answered_at is not None,
            "cut off s": (
                round(c.answered_at - c.detached_at, 1)
                if c.answered_at is not None and c.detached_at
                else None
            ),
        }
        for c in cuts
    ]


def checks(
    netns: str,
    bridge: str,
    net: ipaddress.IPv6Network,
    cuts: Iterable[Cut],
    *,
    network: str,
    live: str,
) -> list[Check]:
    """The network runs with the prefix (``live``: its running config), and each guest's
    tap is on the bridge and its SLAAC address answers."""
    checks = []
    checks.append(
        Check(
            f"{network} carries {gateway(net)}/64",
            "ok" if live and NetworkXml(live).has_ipv6(net) else "fail",
            "running with the prefix"
            if live and NetworkXml(live).has_ipv6(net)
            else "not running with it",
            ""
            if live and NetworkXml(live).has_ipv6(net)
            else f"apply nat-bridge-ipv6 to {network}",
        )
    )
    bridge_link = netlink.link_by_name(netns, bridge)
    for cut in cuts:
        link = netlink.link_by_name(netns, cut.tap)
        on = link is not None and bridge_link is not None and link.master == bridge_link.index
        checks.append(
            Check.given(
                f"{cut.domain}: tap {cut.tap} on {bridge}",
                on,
                "attached" if on else "detached",
                command("ip", "link", "set", cut.tap, "master", bridge),
            )
        )
        answered = cut.answered_at is not None
        checks.append(
            Check.given(
                f"{cut.domain}: SLAAC {cut.address} answers ping6",
                answered,
                "answers" if answered else "no answer",
                f"check the guest's console: does it accept RAs on {bridge}?",
            )
        )
    return checks
