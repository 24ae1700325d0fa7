"""network-inventory: the wiki's ``virsh net-list``, joined with the kernel's view of each bridge.

One row per libvirt network: its libvirt state and XML facts, and what the kernel
of the host's netns says of the bridge (exists, up, ports, addresses, STP). The
problems it sees come back as checks: a bridge missing or down, autostart off,
a forward-bridge whose bridge has no uplink port, a NAT network without IPv6.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opslib.contract import inputs
from opslib.core.changes import Check, Result
from opslib.core.shellcmd import command, then
from opslib.host.kernel import netlink
from opslib.host.libvirt import netxml, virt

RUNBOOK = "network-inventory"


@dataclass(frozen=True)
class BridgeView:
    """The kernel's view of one bridge."""

    name: str
    up: bool
    operstate: str
    ports: tuple[str, ...]
    addresses: tuple[str, ...]  # CIDR, both families, link-local included
    stp: str  # "on" | "off" | "" when unknown


@dataclass(frozen=True)
class Observed:
    networks: tuple[netxml.Network, ...]
    bridges: Mapping[str, BridgeView]  # by name; absent when the kernel has no such bridge
    port_kinds: Mapping[str, str]  # link name -> kind (veth, tun, "" for physical)


def _ips(net: netxml.Network, family: str) -> str:
    return ", ".join(f"{ip.address}/{ip.prefix}" for ip in net.ips if ip.family == family)


def _dhcp(net: netxml.Network) -> str:
    return ", ".join(f"{a}-{b}" for ip in net.ips for a, b in ip.dhcp_ranges)


def _is_guest_port(name: str, kind: str) -> bool:
    # libvirt names guest taps vnetN (kind tun); everything else on a bridge is an uplink.
    return kind == "tun" or name.startswith("vnet")


def table(obs: Observed) -> list[dict[str, Any]]:
    """The inventory: one row per network. Pure."""
    out = []
    for net in obs.networks:
        br = obs.bridges.get(net.bridge) if net.bridge else None
        out.append(
            {
                "network": net.name,
                "active": net.active,
                "autostart": net.autostart,
                "persistent": net.persistent,
                "forward": net.forward_mode,
                "bridge": net.bridge,
                "ipv4": _ips(net, "ipv4"),
                "ipv6": _ips(net, "ipv6"),
                "dhcp": _dhcp(net),
                "bridge_exists": br is not None,
                "bridge_up": bool(br and br.up),
                "bridge_state": br.operstate if br else "",
                "stp": br.stp if br else "",
                "ports": ", ".join(br.ports) if br else "",
                "bridge_addresses": ", ".join(br.addresses) if br else "",
                "uuid": net.uuid,
            }
        )
    return out


def problems(obs: Observed) -> list[Check]:
    """What an operator should look at. Pure."""
    checks = []
    for net in obs.networks:
        name = f"network {net.name}"
        br = obs.bridges.get(net.bridge) if net.bridge else None
        if not net.active:
            checks.append(
                Check(f"{name} active", "fail", "inactive", command("virsh", "net-start", net.name))
            )
        if not net.autostart:
            checks.append(
                Check(
                    f"{name} autostart",
                    "warn",
                    "autostart off: it stays down after a reboot",
                    command("virsh", "net-autostart", net.name),
                )
            )
        if net.bridge and br is None and net.forward_mode == "bridge":
            checks.append(
                Check(
                    f"{name} bridge",
                    "fail",
                    f"bridge {net.bridge} does not exist",
                    "run the forward-bridge runbook",
                )
            )
        elif net.bridge and br is None and net.active:
            # libvirt made this bridge at net-start and something removed it since; net-start
            # refuses an active network, a restart makes the bridge again (guests lose their
            # taps: reattach them, as nat-bridge-ipv6 does).
            checks.append(
                Check(
                    f"{name} bridge",
                    "fail",
                    f"bridge {net.bridge} does not exist although the network is active",
                    then(
                        command("virsh", "net-destroy", net.name),
                        command("virsh", "net-start", net.name),
                    ),
                )
            )
        elif br is not None and not br.up:
            checks.append(
                Check(
                    f"{name} bridge",
                    "fail",
                    f"bridge {br.name} is down",
                    command("ip", "link", "set", br.name, "up"),
                )
            )
        if net.forward_mode == "bridge" and br is not None:
            uplinks = [p for p in br.ports if not _is_guest_port(p, obs.port_kinds.get(p, ""))]
            if not uplinks:
                checks.append(
                    Check(
                        f"{name} uplink",
                        "fail",
                        f"bridge {br.name} has no uplink port "
                        f"(ports: {', '.join(br.ports) or 'none'})",
                        "add bridge_ports eth0 to its stanza (forward-bridge runbook)",
                    )
                )
        if net.forward_mode == "nat" and net.ip("ipv6") is None:
            checks.append(
                Check(
                    f"{name} ipv6",
                    "warn",
                    "NAT network without IPv6: guests get no public address",
                    "run the nat-bridge-ipv6 runbook",
                )
            )
    return checks


# -- observation ---------------------------------------------------------------------


def _stp_in_netns(netns: str, bridges: Sequence[str]) -> dict[str, str]:
    """STP state of bridges via IFLA_BR_STP_STATE (works in any netns, no sysfs needed)."""
    out: dict[str, str] = {}
    with netlink.ipr(netns) as ip, netlink.translated("cannot read bridge settings"):
        for msg in ip.get_links():
            name = msg.get_attr("IFLA_IFNAME")
            if name not in bridges:
                continue
            info = msg.get_attr("IFLA_LINKINFO")
            data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
            state = data.get_attr("IFLA_BR_STP_STATE") if data is not None else None
            out[name] = "" if state is None else ("on" if state else "off")
    return out


def observe(*, libvirt_uri: str, netns: str) -> Observed:
    with virt.connect(libvirt_uri, readonly=True) as conn:
        networks = tuple(virt.list_networks(conn))
    links = netlink.links(netns)
    addrs: dict[int, list[str]] = {}
    for a in netlink.addresses(netns):
        addrs.setdefault(a.ifindex, []).append(f"{a.address}/{a.prefix}")
    bridge_links = [link for link in links if link.kind == "bridge"]
    stp = _stp_in_netns(netns, [b.name for b in bridge_links])
    bridges = {
        b.name: BridgeView(
            name=b.name,
            up=b.up,
            operstate=b.operstate,
            ports=tuple(sorted(link.name for link in links if link.master == b.index)),
            addresses=tuple(addrs.get(b.index, ())),
            stp=stp.get(b.name, ""),
        )
        for b in bridge_links
    }
    return Observed(networks, bridges, {link.name: link.kind for link in links})


def checks(*, libvirt_uri: str, netns: str) -> list[Check]:
    """For host-health: the inventory's problems."""
    return problems(observe(libvirt_uri=libvirt_uri, netns=netns))


@dataclass(frozen=True, kw_only=True)
class Inputs(inputs.Declared):
    """The report's parameters, each converted to its declared type (as by ``opsbook run``)."""

    libvirt_uri: str = inputs.libvirt_uri()
    netns: str = inputs.netns()


def _run(i: Inputs, host: str) -> Result:
    """The inventory and its problems; read-only."""
    result = Result(RUNBOOK, host, "ok")
    with result.step("observe networks and bridges") as detail:
        obs = observe(libvirt_uri=i.libvirt_uri, netns=i.netns)
        detail.append(f"{len(obs.networks)} networks, {len(obs.bridges)} bridges")
    # A network renamed by hand (defined anew, the old one undefined) has another UUID but
    # the same bridge: records diff matches it by either and shows what changed with it.
    result.add_table("networks", table(obs), key=("network",), identity=("uuid", "bridge"))
    result.checks = problems(obs)
    failing = [c.name for c in result.checks if c.status == "fail"]
    warns = len(result.checks) - len(failing)
    # a failing run ends on this line (`failed (no change): ...`): name what failed
    failed = f"{len(failing)} check(s) failed: {', '.join(failing)}" if failing else ""
    result.summary = (
        f"{len(obs.networks)} network(s); "
        + (failed or "no failing check")
        + (f"; {warns} warning(s)" if warns else "")
    )
    return result


run = inputs.reading(Inputs, _run)
