"""The addresses of a host's VMs, joined from what the host saw (pure).

find-vm-ip observes (libvirt's domains, networks and leases, the bridges' neighbour
tables, the guest agent, :mod:`opslib.procedures.find_vm_ip.neighbour_probe`) into an
:class:`Observed`;
:func:`assemble` joins it by MAC into one :class:`VmAddresses` per VM, each NIC with
every address seen and where. host-health reads the same data.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opslib.core import slaac
from opslib.core.changes import JsonData
from opslib.host.kernel import netlink
from opslib.host.libvirt import netxml, virt, virtxml

SOURCES = ("neighbour", "lease", "agent")


@dataclass(frozen=True)
class SeenAddress:
    """One address of one interface, and the source that reported it."""

    family: str  # ipv4 | ipv6
    ip: str
    source: str  # neighbour | lease | agent
    detail: str = ""  # neighbour state (REACHABLE, STALE...), lease hostname, agent's ifname


@dataclass(frozen=True)
class NicAddresses:
    """One interface of a VM and every address seen for its MAC."""

    vm: str
    mac: str
    network: str  # libvirt network name ("" for type bridge/direct/user)
    bridge: str  # host bridge the NIC is on ("" when none)
    addresses: tuple[SeenAddress, ...] = ()
    predicted: tuple[str, ...] = ()  # EUI-64 SLAAC addresses from the /64s of the link
    silent: tuple[str, ...] = ()  # predicted, probed, and nothing answered
    note: str = ""  # why addresses may be missing: shut off, no bridge, bridge absent...

    def ips(self, family: str | None = None, *, sources: Iterable[str] = SOURCES) -> list[str]:
        """Distinct addresses (global and link-local), optionally of one family/sources."""
        wanted = set(sources)
        seen = (a.ip for a in self.addresses if a.source in wanted)
        return [
            ip for ip in dict.fromkeys(seen) if family is None or (":" in ip) == (family == "ipv6")
        ]

    def global_ips(self, family: str | None = None) -> list[str]:
        return [ip for ip in self.ips(family) if not ipaddress.ip_address(ip).is_link_local]


@dataclass(frozen=True)
class VmAddresses(JsonData):
    name: str
    state: str  # running | shut off | paused ...
    nics: tuple[NicAddresses, ...]
    note: str = ""  # "no interfaces" ...

    def ips(self, family: str | None = None) -> list[str]:
        return list(dict.fromkeys(ip for nic in self.nics for ip in nic.ips(family)))


@dataclass(frozen=True)
class DomainView:
    name: str
    state: str
    interfaces: tuple[virtxml.Interface, ...]
    agent_connected: bool = False


@dataclass(frozen=True)
class BridgeProbe:
    """What the probe of one bridge waited for, and what stayed silent."""

    bridge: str
    awaited: int  # predicted IPv6 addresses sent, plus NICs expected to answer in IPv4
    silent: tuple[str, ...]  # awaited and silent: addresses, "IPv4 of MAC" for a NIC
    seconds: float  # the probe's own time: short when everything answered
    answered: frozenset[str] = frozenset()  # the targets that replied

    def describe(self) -> str:
        took = f"{self.seconds * 1000:.0f} ms"
        if not self.silent:
            return f"{self.bridge}: all {self.awaited} awaited answered in {took}"
        shown = ", ".join(self.silent[:4]) + (" ..." if len(self.silent) > 4 else "")
        return (
            f"{self.bridge}: {len(self.silent)} of {self.awaited} awaited silent ({shown}), "
            f"waited {took}"
        )


@dataclass(frozen=True)
class Observed:
    domains: tuple[DomainView, ...]
    networks: Mapping[str, netxml.Network]
    neighbours: Mapping[str, Sequence[netlink.Neighbour]]  # by bridge
    missing_bridges: frozenset[str] = frozenset()
    leases: Mapping[str, Sequence[virt.Lease]] = dataclasses.field(default_factory=dict)
    agent: Mapping[str, Sequence[tuple[str, str, str, str]]] = dataclasses.field(
        default_factory=dict
    )  # vm -> (mac, family, ip, guest ifname)
    prefixes: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)  # bridge ->
    probed: frozenset[str] = frozenset()  # bridges that were probed
    answered: frozenset[str] = frozenset()  # addresses that answered the probe
    probes: tuple[BridgeProbe, ...] = ()  # what each bridge's probe waited for, and how long
    probe_started: float = 0.0  # epoch seconds
    probe_seconds: float = 0.0  # the whole probe (bridges are probed at once)


def nic_bridge(iface: virtxml.Interface, networks: Mapping[str, netxml.Network]) -> tuple[str, str]:
    """(network, bridge) of a NIC; bridge "" when it has none."""
    # A running NIC on a bridge-mode network shows as type bridge with source network=NAME,
    # one on a macvtap network as type direct with source network=NAME.
    if iface.type == "network" or (iface.type == "bridge" and iface.source in networks):
        net = networks.get(iface.source)
        return iface.source, (net.bridge if net else "")
    if iface.type == "bridge":
        return "", iface.source
    if iface.type in ("direct", "hostdev") and iface.source in networks:
        return iface.source, ""
    return "", ""


# Forward modes of a libvirt network without a bridge: its NICs are macvtap devices on
# the host's NIC, or (hostdev) SR-IOV functions handed to the guest.
BYPASS_MODES = ("bridge", "private", "vepa", "passthrough", "hostdev")
BYPASS = (
    "its traffic bypasses the host's network stack, so the host never sees its "
    "neighbours; the guest agent (qemu-guest-agent in the guest) or the leases of "
    "the LAN's DHCP server (e.g. NetReg) know its addresses"
)


def _nic_note(
    iface: virtxml.Interface, network: str, bridge: str, dom: DomainView, obs: Observed
) -> str:
    notes = []
    if dom.state != "running":
        notes.append(f"VM {dom.state}: only stale entries can show")
    net = obs.networks.get(network)
    if iface.type == "direct":
        on = f"network {network}" if network else (iface.source or "?")
        notes.append(f"macvtap NIC (type direct on {on}): {BYPASS}")
    elif iface.type == "hostdev":
        notes.append(f"passed-through NIC (type hostdev): {BYPASS}")
    elif iface.type not in ("network", "bridge"):
        notes.append(f"type {iface.type or '?'} NIC: no host bridge to look on")
    elif iface.type == "network" and net is None:
        notes.append(f"network {network} does not exist")
    elif not bridge and net is not None and net.forward_mode in BYPASS_MODES:
        kind = "passed-through" if net.forward_mode == "hostdev" else "macvtap"
        notes.append(f"{kind} NIC (network {network}, forward {net.forward_mode}): {BYPASS}")
    elif not bridge:
        mode = net.forward_mode if net else "?"
        notes.append(f"network {network} (forward {mode}) has no bridge")
    elif bridge in obs.missing_bridges:
        notes.append(f"bridge {bridge} not found in the host's netns")
    return "; ".join(notes)


def assemble(obs: Observed) -> list[VmAddresses]:
    """Join MACs with every source. Pure: observed state in, addresses out."""
    neighbours_by_mac: dict[tuple[str, str], list[netlink.Neighbour]] = {}
    for bridge, entries in obs.neighbours.items():
        for n in entries:
            neighbours_by_mac.setdefault((bridge, n.mac), []).append(n)
    leases_by_mac: dict[tuple[str, str], list[virt.Lease]] = {}
    for network, leases in obs.leases.items():
        for lease in leases:
            leases_by_mac.setdefault((network, lease.mac), []).append(lease)

    result = []
    for dom in obs.domains:
        agent_by_mac: dict[str, list[tuple[str, str, str, str]]] = {}
        for entry in obs.agent.get(dom.name, ()):
            agent_by_mac.setdefault(entry[0], []).append(entry)
        nics = []
        for iface in dom.interfaces:
            network, bridge = nic_bridge(iface, obs.networks)
            seen: list[SeenAddress] = []
            for n in sorted(
                neighbours_by_mac.get((bridge, iface.mac), ()), key=lambda n: (n.family, n.ip)
            ):
                seen.append(SeenAddress(n.family, n.ip, "neighbour", n.state))
            for lease in leases_by_mac.get((network, iface.mac), ()):
                family = "ipv6" if ":" in lease.ip else "ipv4"
                seen.append(SeenAddress(family, lease.ip, "lease", lease.hostname))
            for _mac, family, ip, ifname in agent_by_mac.get(iface.mac, ()):
                seen.append(SeenAddress(family, ip, "agent", ifname))
            predicted: tuple[str, ...] = ()
            if bridge and dom.state == "running":
                predicted = tuple(
                    slaac.eui64_address(p, iface.mac) for p in obs.prefixes.get(bridge, ())
                )
            known = {a.ip for a in seen if a.source == "neighbour"}
            silent = tuple(
                p
                for p in predicted
                if bridge in obs.probed and p not in obs.answered and p not in known
            )
            nics.append(
                NicAddresses(
                    vm=dom.name,
                    mac=iface.mac,
                    network=network,
                    bridge=bridge,
                    addresses=tuple(seen),
                    predicted=predicted,
                    silent=silent,
                    note=_nic_note(iface, network, bridge, dom, obs),
                )
            )
        result.append(
            VmAddresses(
                name=dom.name,
                state=dom.state,
                nics=tuple(nics),
                note="" if nics else "no interfaces",
            )
        )
    return result


def rows(vms: Sequence[VmAddresses]) -> list[dict[str, Any]]:
    """One row per (VM, interface, address, source); a row also for NICs/VMs with none."""
    out: list[dict[str, Any]] = []
    for vm in vms:
        base = {"vm": vm.name, "state": vm.state}
        if not vm.nics:
            out.append(
                {
                    **base,
                    "mac": "",
                    "network": "",
                    "bridge": "",
                    "family": "",
                    "ip": "",
                    "source": "",
                    "detail": "",
                    "note": vm.note,
                }
            )
        for nic in vm.nics:
            nic_base = {**base, "mac": nic.mac, "network": nic.network, "bridge": nic.bridge}
            if not nic.addresses:
                note = nic.note or "no address seen (try probe = True)"
                out.append(
                    {**nic_base, "family": "", "ip": "", "source": "", "detail": "", "note": note}
                )
            for a in nic.addresses:
                out.append(
                    {
                        **nic_base,
                        "family": a.family,
                        "ip": a.ip,
                        "source": a.source,
                        "detail": a.detail,
                        "note": nic.note,
                    }
                )
    return out
