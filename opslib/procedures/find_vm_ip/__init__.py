"""find-vm-ip: every address known for each interface of a VM, with where it was seen.

The wiki greps ``ip neighbour`` for the MACs of ``virsh dumpxml``. This does the
same join properly: MACs from the domain XML; the neighbour table of each bridge
(IPv4 and IPv6, one kernel dump per family and bridge, never one per VM);
libvirt's DHCP leases; the guest agent where one is connected. With ``probe`` it
first pings each interface's predicted EUI-64 SLAAC address and the all-nodes
address on each bridge, so that stale or flushed neighbours answer again, and
lists predicted addresses that stayed silent.

Other procedures (host-health, cloudflare-aaaa) call :func:`find`, which returns
plain frozen data; :func:`run` is the notebook's report. The join is
:mod:`opslib.procedures.find_vm_ip.vm_addresses` (pure), the probe
:mod:`opslib.procedures.find_vm_ip.neighbour_probe`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import libvirt
from lxml import etree

from opslib.contract import inputs
from opslib.contract.inputs import param
from opslib.core.changes import Check, Result, Step
from opslib.core.errors import LibvirtError, NetlinkError
from opslib.host.kernel import netlink, rtnl
from opslib.host.libvirt import netxml, virt, virtxml
from opslib.procedures.find_vm_ip import neighbour_probe
from opslib.procedures.find_vm_ip.neighbour_probe import PROBE_WAIT, ProbeJob
from opslib.procedures.find_vm_ip.vm_addresses import (
    BridgeProbe,
    DomainView,
    Observed,
    VmAddresses,
    assemble,
    nic_bridge,
    rows,
)

RUNBOOK = "find-vm-ip"
AGENT_CHANNEL = "org.qemu.guest_agent.0"

__all__ = [
    "PROBE_WAIT",
    "RUNBOOK",
    "BridgeProbe",
    "DomainView",
    "Inputs",
    "Observed",
    "VmAddresses",
    "assemble",
    "find",
    "nic_bridge",
    "observe",
    "rows",
    "run",
]


# -- observation (side effects) ---------------------------------------------------


def _agent_connected(domain_xml: str) -> bool:
    root = etree.fromstring(domain_xml.encode())
    for target in root.iterfind("devices/channel/target"):
        if target.get("name") == AGENT_CHANNEL:
            # libvirt marks the channel connected only while the agent runs in the guest;
            # asking a disconnected one would block for the agent timeout.
            return target.get("state") == "connected"
    return False


def _domains(conn: libvirt.virConnect, vm: str) -> list[tuple[libvirt.virDomain, DomainView]]:
    if vm:
        dom = virt.lookup_domain(conn, vm)
        with virt.translated(f"cannot read VM {vm}"):
            state = virt.DOMAIN_STATES.get(dom.state()[0], "?") if dom.isActive() else "shut off"
        doms = [(dom, state)]
    else:
        with virt.translated("cannot list VMs"):
            # Two list calls give running vs shut off without one state() RPC per VM.
            active = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
            inactive = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_INACTIVE)
            doms = [(d, virt.DOMAIN_STATES.get(d.state()[0], "?")) for d in active]
            doms += [(d, "shut off") for d in inactive]
    out = []
    for dom, state in doms:
        with virt.translated(f"cannot read VM {dom.name()}"):
            xml = dom.XMLDesc(0)
        view = DomainView(
            name=dom.name(),
            state=state,
            interfaces=virtxml.parse_interfaces(xml),
            agent_connected=state == "running" and _agent_connected(xml),
        )
        out.append((dom, view))
    return sorted(out, key=lambda pair: pair[1].name)


def _leases(conn: libvirt.virConnect, network: str) -> list[virt.Lease]:
    try:
        return virt.dhcp_leases(conn, network)
    except LibvirtError as exc:
        if exc.code == libvirt.VIR_ERR_NO_SUPPORT:
            return []  # a driver without leases (the test driver): the other sources remain
        raise


def observe(
    *,
    libvirt_uri: str,
    netns: str = "",
    vm: str = "",
    probe: bool = False,
    agent: bool = True,
    probe_wait: float = PROBE_WAIT,
) -> Observed:
    with virt.connect(libvirt_uri) as conn:
        domains = _domains(conn, vm)
        networks = {n.name: n for n in virt.list_networks(conn)}
        views = tuple(view for _dom, view in domains)

        bridge_macs, network_of_bridge = _bridges(views, networks)
        ifindex: dict[str, int] = {}
        missing = set()
        for bridge in bridge_macs:
            try:
                ifindex[bridge] = rtnl.ifindex(netns, bridge)
            except NetlinkError:
                missing.add(bridge)

        prefixes: dict[str, list[str]] = {}
        probes: list[BridgeProbe] = []
        probe_started = time.time()
        if probe:
            jobs = _probe_jobs(netns, ifindex, views, networks, network_of_bridge, prefixes)
            probe_started = time.time()
            probes = neighbour_probe.probe_all(netns, jobs, probe_wait)

        # After the probe, so that the replies' neighbour entries are in the dump.
        neighbours = {
            bridge: rtnl.neighbours_on(netns, idx, bridge_macs[bridge])
            for bridge, idx in ifindex.items()
        }
        used_networks = {nic_bridge(i, networks)[0] for v in views for i in v.interfaces}
        leases = {
            name: _leases(conn, name)
            for name in sorted(used_networks)
            if name in networks and networks[name].active and networks[name].ips
        }
        agent_found = {
            view.name: virt.agent_addresses(dom)
            for dom, view in domains
            if agent and view.agent_connected
        }
    return Observed(
        domains=views,
        networks=networks,
        neighbours=neighbours,
        missing_bridges=frozenset(missing),
        leases=leases,
        agent=agent_found,
        prefixes=prefixes,
        probed=frozenset(ifindex) if probe else frozenset(),
        answered=frozenset(a for p in probes for a in p.answered),
        probes=tuple(probes),
        probe_started=probe_started,
        probe_seconds=time.time() - probe_started if probe else 0.0,
    )


def _bridges(
    views: Iterable[DomainView], networks: Mapping[str, netxml.Network]
) -> tuple[dict[str, set[str]], dict[str, netxml.Network]]:
    """The MACs of the VMs' NICs on each bridge, and the libvirt network of each bridge."""
    bridge_macs: dict[str, set[str]] = {}
    network_of_bridge: dict[str, netxml.Network] = {}
    for view in views:
        for iface in view.interfaces:
            network, bridge = nic_bridge(iface, networks)
            if bridge:
                bridge_macs.setdefault(bridge, set()).add(iface.mac)
            if network in networks and bridge:
                network_of_bridge[bridge] = networks[network]
    return bridge_macs, network_of_bridge


def _probe_jobs(
    netns: str,
    ifindex: Mapping[str, int],
    views: Iterable[DomainView],
    networks: Mapping[str, netxml.Network],
    network_of_bridge: Mapping[str, netxml.Network],
    prefixes: dict[str, list[str]],
) -> list[ProbeJob]:
    """One probe per bridge with running VMs on it (its prefixes go into ``prefixes``,
    for every bridge)."""
    jobs = []
    for bridge, idx in ifindex.items():
        addresses = netlink.addresses(netns, ifindex=idx)
        prefixes[bridge] = neighbour_probe.bridge_prefixes(addresses, network_of_bridge.get(bridge))
        running = frozenset(
            i.mac
            for v in views
            if v.state == "running"
            for i in v.interfaces
            if nic_bridge(i, networks)[1] == bridge
        )
        if running:
            sweep = tuple(neighbour_probe.sweep(addresses))
            jobs.append(ProbeJob(bridge, idx, tuple(prefixes[bridge]), sweep, running))
    return jobs


def find(**observing: Any) -> list[VmAddresses]:
    """Every VM (or ``vm``) with each NIC's addresses and their sources; ``observing``
    as :func:`observe` takes it (``libvirt_uri``, ``netns``, ``vm``, ``probe``, ``agent``...).

    For other procedures: ``find(libvirt_uri=..., netns=..., vm="web1")[0].nics[0]
    .global_ips("ipv6")``. An unknown ``vm`` raises UnknownName (exit 2) with suggestions.
    """
    return assemble(observe(**observing))


@dataclass(frozen=True, kw_only=True)
class Inputs(inputs.Declared):
    """The report's parameters, each converted to its declared type (as by ``opsbook run``)."""

    libvirt_uri: str = inputs.libvirt_uri()
    netns: str = inputs.netns()
    vm: str = param("vm?", "one VM, or empty for all", "")
    probe: bool = param(
        "bool", "first ping predicted SLAAC addresses, ff02::1 and the bridge's IPv4 subnet "
        "(/24 or smaller), to refresh neighbours", False,
    )  # fmt: skip


def _run(i: Inputs, host: str) -> Result:
    """The notebook's report: one table of addresses, one of predicted-but-silent ones."""
    libvirt_uri, netns, vm, probe = i.libvirt_uri, i.netns, i.vm, i.probe
    result = Result(RUNBOOK, host, "ok")
    with result.step("find addresses") as detail:
        obs = observe(libvirt_uri=libvirt_uri, netns=netns, vm=vm, probe=probe)
        vms = assemble(obs)
        detail.append(f"{len(vms)} VMs")
    if probe:
        # The probe ran inside the step above; its own time shows what it waited for.
        result.steps.append(
            Step(
                "probe (within find addresses)",
                obs.probe_started,
                round(obs.probe_seconds, 3),
                True,
                "; ".join(p.describe() for p in obs.probes) or "no running NIC on a bridge",
            )
        )
    # An address is the same from run to run whatever its neighbour entry's state (detail:
    # REACHABLE, DELAY, STALE...; for a lease its hostname, for the agent the guest's ifname).
    result.add_table(
        "addresses", rows(vms), key=("vm", "ip", "mac", "family", "source"), volatile=("detail",)
    )
    silent = [
        {"vm": nic.vm, "mac": nic.mac, "bridge": nic.bridge, "predicted": ip}
        for v in vms
        for nic in v.nics
        for ip in nic.silent
    ]
    if probe:
        result.add_table("predicted but silent", silent, key=("vm", "predicted", "mac"))
    result.data["vms"] = [v.to_json() for v in vms]
    nics = [nic for v in vms for nic in v.nics]
    found = sum(1 for nic in nics if nic.addresses)
    for v in vms:
        for nic in v.nics:
            if v.state == "running" and not nic.addresses and not nic.note:
                result.checks.append(
                    Check(
                        f"{v.name} {nic.mac}",
                        "warn",
                        "no address seen on " + (nic.bridge or "any bridge"),
                        "run with probe = True; check that the guest configured its network",
                    )
                )
    result.summary = f"{len(vms)} VM(s), {len(nics)} interface(s), {found} with an address" + (
        f", {len(silent)} predicted address(es) silent" if probe else ""
    )
    return result


run = inputs.reading(Inputs, _run)
