"""find-vm-ip: every address known for each interface of a VM, with where it was seen.

The wiki greps ``ip neighbour`` for the MACs of ``virsh dumpxml``. This does the
same join properly: MACs from the domain XML; the neighbour table of each bridge
(IPv4 and IPv6, one kernel dump per family and bridge, never one per VM);
libvirt's DHCP leases; the guest agent where one is connected. With ``probe`` it
first pings each interface's predicted EUI-64 SLAAC address and the all-nodes
address on each bridge, so that stale or flushed neighbours answer again, and
lists predicted addresses that stayed silent.

Other procedures (host-health, cloudflare-aaaa) call :func:`find`, which returns
plain frozen data; :func:`run` is the notebook's report.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import libvirt
from lxml import etree

from opslib import netlink, rtnl, slaac, virt
from opslib.changes import Check, Result, Step
from opslib.errors import LibvirtError, NetlinkError

RUNBOOK = "find-vm-ip"
AGENT_CHANNEL = "org.qemu.guest_agent.0"
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
class VmAddresses:
    name: str
    state: str  # running | shut off | paused ...
    nics: tuple[NicAddresses, ...]
    note: str = ""  # "no interfaces" ...

    def ips(self, family: str | None = None) -> list[str]:
        return list(dict.fromkeys(ip for nic in self.nics for ip in nic.ips(family)))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- observed state (plain data, so the join below is pure) -------------------------


@dataclass(frozen=True)
class DomainView:
    name: str
    state: str
    interfaces: tuple[virt.Interface, ...]
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
    networks: Mapping[str, virt.Network]
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


def nic_bridge(iface: virt.Interface, networks: Mapping[str, virt.Network]) -> tuple[str, str]:
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
    iface: virt.Interface, network: str, bridge: str, dom: DomainView, obs: Observed
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
            interfaces=virt.parse_interfaces(xml),
            agent_connected=state == "running" and _agent_connected(xml),
        )
        out.append((dom, view))
    return sorted(out, key=lambda pair: pair[1].name)


def _agent_addresses(dom: libvirt.virDomain) -> list[tuple[str, str, str, str]]:
    try:
        ifaces = dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT, 0)
    except libvirt.libvirtError:
        return []  # the agent went away or does not support it: the other sources remain
    found = []
    for ifname, info in (ifaces or {}).items():
        mac = (info.get("hwaddr") or "").lower()
        for addr in info.get("addrs") or ():
            family = "ipv6" if addr.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV6 else "ipv4"
            if mac and addr.get("addr"):
                found.append((mac, family, addr["addr"], ifname))
    return found


def _leases(conn: libvirt.virConnect, network: str) -> list[virt.Lease]:
    try:
        return virt.dhcp_leases(conn, network)
    except LibvirtError as exc:
        if exc.code == libvirt.VIR_ERR_NO_SUPPORT:
            return []  # a driver without leases (the test driver): the other sources remain
        raise


def _bridge_prefixes(addresses: Iterable[netlink.Address], net: virt.Network | None) -> list[str]:
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


def _sweep(addresses: Iterable[netlink.Address]) -> list[str]:
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
    if not rtnl.all_answered(replies, awaited):
        return False
    if not any(":" not in t for t in replies):
        return True  # no IPv4 request went out: none can answer
    from_macs = {mac_of.get(t) for t, peers in replies.items() if peers and ":" not in t}
    return all(mac in from_macs for mac in ipv4_macs)


@dataclass(frozen=True)
class _ProbeJob:
    bridge: str
    ifindex: int
    prefixes: tuple[str, ...]  # global /64s of the bridge
    sweep: tuple[str, ...]  # IPv4 addresses to ping
    macs: frozenset[str]  # running NICs on the bridge


def _probe(netns: str, job: _ProbeJob, wait: float) -> BridgeProbe:
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
    echo = rtnl.ping(netns, targets, ifname=job.bridge, wait=wait, until=settled)
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


def _probe_all(netns: str, jobs: Sequence[_ProbeJob], wait: float) -> list[BridgeProbe]:
    """Probe every bridge at once: the probe costs the slowest bridge, not their sum."""
    if len(jobs) <= 1:
        return [_probe(netns, job, wait) for job in jobs]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return list(pool.map(lambda job: _probe(netns, job, wait), jobs))


def observe(
    *,
    libvirt_uri: str,
    netns: str,
    vm: str = "",
    probe: bool = False,
    agent: bool = True,
    probe_wait: float = PROBE_WAIT,
) -> Observed:
    with virt.connect(libvirt_uri) as conn:
        domains = _domains(conn, vm)
        networks = {n.name: n for n in virt.list_networks(conn)}
        views = tuple(view for _dom, view in domains)

        bridge_macs: dict[str, set[str]] = {}
        network_of_bridge: dict[str, virt.Network] = {}
        for view in views:
            for iface in view.interfaces:
                network, bridge = nic_bridge(iface, networks)
                if bridge:
                    bridge_macs.setdefault(bridge, set()).add(iface.mac)
                if network in networks and bridge:
                    network_of_bridge[bridge] = networks[network]
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
            jobs = []
            for bridge, idx in ifindex.items():
                addresses = netlink.addresses(netns, ifindex=idx)
                prefixes[bridge] = _bridge_prefixes(addresses, network_of_bridge.get(bridge))
                running = frozenset(
                    i.mac
                    for v in views
                    if v.state == "running"
                    for i in v.interfaces
                    if nic_bridge(i, networks)[1] == bridge
                )
                if running:
                    sweep = tuple(_sweep(addresses))
                    jobs.append(_ProbeJob(bridge, idx, tuple(prefixes[bridge]), sweep, running))
            probe_started = time.time()
            probes = _probe_all(netns, jobs, probe_wait)

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
            view.name: _agent_addresses(dom)
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


def find(
    *,
    libvirt_uri: str,
    netns: str = "",
    vm: str = "",
    probe: bool = False,
    agent: bool = True,
    probe_wait: float = PROBE_WAIT,
) -> list[VmAddresses]:
    """Every VM (or ``vm``) with each NIC's addresses and their sources.

    For other procedures: ``find(libvirt_uri=..., netns=..., vm="web1")[0].nics[0]
    .global_ips("ipv6")``. An unknown ``vm`` raises UnknownName (exit 2) with suggestions.
    """
    return assemble(
        observe(
            libvirt_uri=libvirt_uri,
            netns=netns,
            vm=vm,
            probe=probe,
            agent=agent,
            probe_wait=probe_wait,
        )
    )


def run(*, host: str, libvirt_uri: str, netns: str, vm: str = "", probe: bool = False) -> Result:
    """The notebook's report: one table of addresses, one of predicted-but-silent ones."""
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


__all__ = ["NicAddresses", "SeenAddress", "VmAddresses", "find", "rows", "run"]
