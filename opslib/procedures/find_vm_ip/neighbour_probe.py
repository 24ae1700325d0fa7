"""Refresh a bridge's neighbours before reading them: ping what the guests should answer.

For each bridge with running guests: each NIC's predicted EUI-64 SLAAC addresses (the
bridge's global /64s and link-local), the all-nodes address, and a sweep of the bridge's
own IPv4 subnet (a /24 or smaller). The probe ends as soon as every awaited address (and
every NIC, in IPv4) answered, else at its deadline; bridges are probed at once.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from opslib.core import slaac
from opslib.host.kernel import icmp, netlink, rtnl
from opslib.host.libvirt import netxml
from opslib.procedures.find_vm_ip.vm_addresses import BridgeProbe


def bridge_prefixes(addresses: Iterable[netlink.Address], net: netxml.Network | None) -> list[str]:
    """The global /64s of a bridge: from the network XML and from the bridge itself."""
    prefixes = []
    if net is not None:
        prefixes += [str(ip.network) for ip in net.ips if ip.family == "ipv6" and ip.prefix == 64]
    for a in addresses:
        if a.family == "ipv6" and a.prefix == 64 and a.scope == "global":
            prefixes.append(str(ipaddress.IPv6Interface(f"{a.address}/64").network))
    return list(dict.fromkeys(prefixes))


# A sweep of the bridge's IPv4 subnet makes the kernel ARP every address: fine on a /24,
# not on a campus /16. Larger subnets are not swept.
MAX_SWEEP_PREFIX = 24
PROBE_WAIT = 1.0  # seconds the probe waits for a silent address; answering ones end it


def sweep(addresses: Iterable[netlink.Address]) -> list[str]:
    """The other addresses of the bridge's own IPv4 subnets (none larger than a /24)."""
    sweep: list[str] = []
    for a in addresses:
        if a.family == "ipv4" and MAX_SWEEP_PREFIX <= a.prefix < 31:
            net = ipaddress.IPv4Interface(f"{a.address}/{a.prefix}").network
            sweep += [str(h) for h in net.hosts() if str(h) != a.address]
    return sweep


def probe_settled(
    replies: Mapping[str, AbstractSet[str]],
    awaited: Iterable[str],
    ipv4_macs: Iterable[str],
    mac_of: Mapping[str, str],
) -> bool:
    """Whether the probe of a bridge can end before its deadline. Pure.

    ``replies`` maps every target that went out to the addresses that replied;
    ``awaited`` are the predicted IPv6 addresses (one that could not be sent cannot
    answer and does not count); each MAC of ``ipv4_macs`` must have answered from
    some IPv4 address of the sweep, ``mac_of`` telling which MAC an address has.
    """
    if not icmp.all_answered(replies, awaited):
        return False
    if not any(":" not in t for t in replies):
        return True  # no IPv4 request went out: none can answer
    from_macs = {mac_of.get(t) for t, peers in replies.items() if peers and ":" not in t}
    return all(mac in from_macs for mac in ipv4_macs)


@dataclass(frozen=True)
class ProbeJob:
    bridge: str
    ifindex: int
    prefixes: tuple[str, ...]  # global /64s of the bridge
    sweep: tuple[str, ...]  # IPv4 addresses to ping
    macs: frozenset[str]  # running NICs on the bridge


def probe(netns: str, job: ProbeJob, wait: float) -> BridgeProbe:
    """Ping what the guests on a bridge should answer on, until they did or ``wait``.

    Each NIC's predicted EUI-64 addresses (global and link-local) are awaited; the
    IPv4 sweep until every NIC answered from some address (which one is not known
    before: a neighbour dump of the NICs' MACs tells, after a reply). The all-nodes
    address refreshes whatever else is there; it is never awaited.
    """
    macs = sorted(job.macs)
    awaited = [slaac.eui64_address(p, m) for p in [*job.prefixes, "fe80::/64"] for m in macs]
    ipv4_macs = macs if job.sweep else []
    mac_of: dict[str, str] = {}

    def settled(replies: Mapping[str, AbstractSet[str]]) -> bool:
        fresh = [t for t, p in replies.items() if p and ":" not in t and t not in mac_of]
        if fresh and not probe_settled(replies, (), ipv4_macs, mac_of):
            # The echo reply came after the ARP reply: the neighbour entry is there.
            found = rtnl.neighbours_on(netns, job.ifindex, macs, families=(socket.AF_INET,))
            mac_of.update({n.ip: n.mac for n in found})
            mac_of.update({t: "" for t in fresh if t not in mac_of})  # not a VM's
        return probe_settled(replies, awaited, ipv4_macs, mac_of)

    targets = [*awaited, "ff02::1", *job.sweep]
    echo = icmp.ping(netns, targets, ifname=job.bridge, wait=wait, until=settled)
    answered = echo.answered() - {"ff02::1"}
    ipv4_from = {mac_of.get(t) for t in answered if ":" not in t}
    silent = [t for t in awaited if t in echo.replies and t not in answered]
    silent += [f"IPv4 of {m}" for m in ipv4_macs if m not in ipv4_from]
    return BridgeProbe(
        bridge=job.bridge,
        awaited=sum(1 for t in awaited if t in echo.replies) + len(ipv4_macs),
        silent=tuple(silent),
        seconds=echo.seconds,
        answered=frozenset(answered),
    )


def probe_all(netns: str, jobs: Sequence[ProbeJob], wait: float) -> list[BridgeProbe]:
    """Probe every bridge at once: the probe costs the slowest bridge, not their sum."""
    if len(jobs) <= 1:
        return [probe(netns, job, wait) for job in jobs]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return list(pool.map(lambda job: probe(netns, job, wait), jobs))
