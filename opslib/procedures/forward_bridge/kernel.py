"""The bridge as the kernel reports it (forward-bridge): the links of a namespace, whether
an uplink can become a bridge port, the state a restart changes, and the checks of a
converted host."""

from __future__ import annotations

from dataclasses import dataclass

from opslib.core.changes import Check
from opslib.core.errors import InputError
from opslib.host.kernel import icmp, netlink
from opslib.procedures.forward_bridge.stanzas import BridgeParams

# Link kinds that can be the host's way out; "" is a physical NIC.
UPLINK_KINDS = frozenset({"", "veth", "bond", "team", "vlan"})


@dataclass(frozen=True)
class LinkFacts:
    name: str
    kind: str  # netlink's kind: "" for a physical NIC, veth, bridge, tun ...
    master: str  # name of the bridge it is a port of, "" when none
    up: bool = True


def observe_links(netns: str) -> dict[str, LinkFacts]:
    found = netlink.links(netns)
    names = {link.index: link.name for link in found}
    kinds = {}
    for link in found:
        kind = link.kind
        if link.name == "lo" or (not kind and link.mac in ("", "00:00:00:00:00:00")):
            kind = "loopback"
        kinds[link.name] = LinkFacts(link.name, kind, names.get(link.master, ""), link.up)
    return kinds


def check_links(links: dict[str, LinkFacts], p: BridgeParams, netns: str) -> bool:
    """Refuse a missing or unsuitable uplink; True when the kernel is converted already."""
    where = f"netns {netns}" if netns else "this host"
    up = links.get(p.uplink)
    if up is None:
        raise InputError(
            f"there is no link {p.uplink} in {where}; set uplink to the host's NIC (ip link)"
        )
    if up.kind not in UPLINK_KINDS:
        raise InputError(
            f"{p.uplink} is a {up.kind} device, not an uplink; set uplink to the host's NIC"
        )
    if up.master and up.master != p.bridge:
        raise InputError(
            f"{p.uplink} is already a port of {up.master}; free it or set bridge={up.master}"
        )
    br = links.get(p.bridge)
    if br is not None:
        if br.kind != "bridge":
            raise InputError(f"{p.bridge} exists and is a {br.kind or 'NIC'}, not a bridge")
        # Guests' taps (kind tun) on the bridge are expected once VMs use it.
        others = [
            link.name
            for link in links.values()
            if link.master == p.bridge and link.name != p.uplink and link.kind != "tun"
        ]
        if others:
            raise InputError(
                f"{p.bridge} already bridges {' '.join(sorted(others))}; choose another bridge"
            )
    return up.master == p.bridge and br is not None and br.up


@dataclass(frozen=True)
class KernelState:
    """What the restart changes, for comparing before and after a rollback."""

    uplink_master: str
    bridge_exists: bool
    ipv4: dict[str, tuple[str, ...]]  # link -> sorted global IPv4 CIDRs
    default_route: tuple[str, str]  # (gateway, device)

    def describe(self) -> str:
        addrs = "; ".join(f"{k} {' '.join(v) or '-'}" for k, v in sorted(self.ipv4.items()))
        gw, dev = self.default_route
        route = f"default via {gw} dev {dev}" if dev else "no default route"
        master = f"port of {self.uplink_master}" if self.uplink_master else "no bridge"
        return f"{addrs}; uplink {master}; {route}"


def kernel_state(netns: str, uplink: str, bridge: str) -> KernelState:
    links = {link.name: link for link in netlink.links(netns)}
    names = {link.index: link.name for link in links.values()}
    addrs: dict[str, list[str]] = {uplink: [], bridge: []}
    for a in netlink.addresses(netns):
        name = names.get(a.ifindex, "")
        if name in addrs and a.family == "ipv4" and a.scope == "global":
            addrs[name].append(f"{a.address}/{a.prefix}")
    route = netlink.default_route(netns)
    up = links.get(uplink)
    return KernelState(
        uplink_master=names.get(up.master, "") if up else "",
        bridge_exists=bridge in links,
        ipv4={k: tuple(sorted(v)) for k, v in addrs.items()},
        default_route=(route.gateway, names.get(route.ifindex, "")) if route else ("", ""),
    )


def verify_bridge(p: BridgeParams, netns: str) -> list[Check]:
    """The conversion as the kernel reports it, one Check per property."""
    state = kernel_state(netns, p.uplink, p.bridge)
    links = observe_links(netns)
    br = links.get(p.bridge)
    seen = "missing" if br is None else f"{br.kind or 'nic'} {'up' if br.up else 'down'}"
    checks = [
        Check(
            f"{p.bridge} up",
            "ok" if br and br.kind == "bridge" and br.up else "fail",
            f"{p.bridge}: {seen}",
            "see the restart step's output",
        ),
        Check(
            f"{p.uplink} is its port",
            "ok" if state.uplink_master == p.bridge else "fail",
            f"{p.uplink} master: {state.uplink_master or 'none'}",
        ),
    ]
    got = state.ipv4.get(p.bridge, ())
    ok = p.address in got if p.address else bool(got)
    checks.append(
        Check(
            f"{p.bridge} has an address",
            "ok" if ok else "fail",
            " ".join(got) or "no IPv4 address",
            "is the host's MAC registered for DHCP (NetReg)?" if not p.address else "",
        )
    )
    leftover = state.ipv4.get(p.uplink, ())
    checks.append(
        Check(
            f"{p.uplink} has no address",
            "fail" if leftover else "ok",
            " ".join(leftover) or "none",
            "an old DHCP client still runs on the port; let the restart take it down "
            "with the old file ({old})"
            if leftover
            else "",
        )
    )
    gw, dev = state.default_route
    route_ok = dev == p.bridge and (not p.gateway or gw == p.gateway)
    checks.append(
        Check(
            "default route",
            "ok" if route_ok else "fail",
            f"via {gw} dev {dev}" if dev else "none",
        )
    )
    answered = bool(gw) and route_ok and icmp.ping(netns, gw).ok
    checks.append(
        Check("gateway answers", "ok" if answered else "fail", f"ping {gw or '-'}: "
              + ("reply" if answered else "no reply"))
    )  # fmt: skip
    return checks
