"""6in4 tunnel links of a host: the tunnel's parameters, the link as the kernel reports it,
and the netlink requests that make it, configure it, and put back what was found.

``implementation="kernel"`` is a ``sit`` link; ``"userspace"`` a TUN device served by
:mod:`opslib.host.sixinfour.userspace` (same wire format) for kernels without sit. The
ipv6-tunnel runbook plans and applies with these.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opslib.core.changes import Check
from opslib.core.errors import ApplyError, NetlinkError, OpsError, Unsupported
from opslib.core.ipv6prefix import gateway
from opslib.core.shellcmd import command
from opslib.host.ifupdown import file_io
from opslib.host.kernel import icmp, netlink
from opslib.host.libvirt import netxml, virt
from opslib.host.sixinfour import userspace

IMPLEMENTATIONS = ("kernel", "userspace")
EOPNOTSUPP = 95
PING_SIZE = 1400  # the MTU check: 1400 bytes of payload must cross unfragmented


@dataclass(frozen=True)
class TunnelSpec:
    name: str
    local_ipv4: str
    server_ipv4: str
    client: ipaddress.IPv6Interface
    server_ipv6: str
    routed_prefix: ipaddress.IPv6Network
    mtu: int = 1480
    ttl: int = 255
    implementation: str = "kernel"


def spec_of(
    *,
    tunnel: str,
    local_ipv4: str,
    server_ipv4: str,
    client_ipv6: str,
    server_ipv6: str,
    routed_prefix: str,
    mtu: int = 1480,
    implementation: str = "kernel",
) -> TunnelSpec:
    """The tunnel of values already in their declared types and rules (the ipv6-tunnel
    runbook's inputs: ifname, ipv4, ipv6-cidr64, ipv6 in client_ipv6, ipv6-prefix64 not in
    client_ipv6...)."""
    client = ipaddress.IPv6Interface(client_ipv6)
    routed = ipaddress.IPv6Network(routed_prefix)
    return TunnelSpec(
        tunnel, local_ipv4, server_ipv4, client, server_ipv6, routed, mtu, 255, implementation
    )


# -- observed state -------------------------------------------------------------------------


@dataclass(frozen=True)
class TunnelState:
    exists: bool
    kind: str = ""  # sit | tun
    up: bool = False
    mtu: int = 0
    local: str = ""
    remote: str = ""
    addresses: tuple[str, ...] = ()  # global IPv6 CIDRs on it
    default_gateway: str = ""  # of the default IPv6 route when it leaves through the tunnel
    default_elsewhere: str = ""  # "via GW dev N" of a default IPv6 route not via the tunnel
    interfaces_text: str | None = None  # None: the file does not exist (read byte-exact)
    # The default IPv6 route as found, to put back: (gateway, ifindex, via the tunnel).
    previous_default: tuple[str, int, bool] | None = None
    sit_available: bool = True  # the kernel can make sit links (kernel implementation)
    old_end: userspace.EndSpec | None = None  # the userspace end serving the link now
    # The userspace end as a systemd unit (opslib.host.sixinfour.tunnel_unit): whether this host
    # takes
    # one, and its file as found (None: none).
    unit_host: bool = False
    unit_text: str | None = None


def pidfile(run_dir: str, name: str) -> Path:
    return Path(run_dir) / f"sixinfour-{name}.pid"


def _sit_endpoints(netns: str, index: int) -> tuple[str, str]:
    with netlink.ipr(netns) as ip, netlink.translated("cannot read the tunnel"):
        msg = ip.get_links(index)[0]
    info = msg.get_attr("IFLA_LINKINFO")
    data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
    if data is None:
        return "", ""
    return data.get_attr("IFLA_SIT_LOCAL") or "", data.get_attr("IFLA_SIT_REMOTE") or ""


def observe(netns: str, name: str, *, interfaces_file: str, run_dir: str) -> TunnelState:
    text = file_io.read_exact(interfaces_file)
    link = netlink.link_by_name(netns, name)
    default = netlink.default_route(netns, family=socket.AF_INET6)
    if link is None:
        elsewhere = f"via {default.gateway} dev {default.ifindex}" if default else ""
        return TunnelState(
            False,
            default_elsewhere=elsewhere,
            interfaces_text=text,
            previous_default=(default.gateway, default.ifindex, False) if default else None,
        )
    local = remote = ""
    running = None
    if link.kind == "sit":
        local, remote = _sit_endpoints(netns, link.index)
    elif link.kind == "tun":
        running = userspace.running_spec(pidfile(run_dir, name))
        if running is not None:
            local, remote = running.local, running.remote
    addrs = tuple(
        f"{a.address}/{a.prefix}"
        for a in netlink.addresses(netns, ifindex=link.index)
        if a.family == "ipv6" and a.scope == "global"
    )
    via_tunnel = default is not None and default.ifindex == link.index
    return TunnelState(
        True,
        kind=link.kind,
        up=link.up,
        mtu=link.mtu,
        local=local,
        remote=remote,
        addresses=addrs,
        default_gateway=default.gateway if default and via_tunnel else "",
        default_elsewhere=(
            f"via {default.gateway} dev {default.ifindex}" if default and not via_tunnel else ""
        ),
        interfaces_text=text,
        previous_default=(default.gateway, default.ifindex, via_tunnel) if default else None,
        old_end=running,
    )


def sit_supported() -> bool:
    """Whether this kernel can make sit links (loaded, built in, or a module to load)."""
    if Path("/sys/module/sit").exists():
        return True
    release = os.uname().release
    for listing in ("modules.dep", "modules.builtin"):
        try:
            text = Path(f"/lib/modules/{release}/{listing}").read_text()
        except OSError:
            continue
        if "/sit.ko" in text:
            return True
    return False


# -- netlink requests (shared by the live path and the message tests) -----------------------


def sit_request(ip: Any, spec: TunnelSpec) -> None:
    """Create the sit link: what ``ip tunnel add NAME mode sit remote R local L ttl 255`` does."""
    ip.link(
        "add",
        ifname=spec.name,
        kind="sit",
        sit_local=spec.local_ipv4,
        sit_remote=spec.server_ipv4,
        sit_ttl=spec.ttl,
        mtu=spec.mtu,
    )


def config_requests(ip: Any, spec: TunnelSpec, index: int, actions: set[str]) -> None:
    """MTU + up, client address, default route (the plan's actions) for the link at ``index``."""
    if actions & {"mtu", "up"}:
        ip.link("set", index=index, mtu=spec.mtu, state="up")
    if "address" in actions:
        ip.addr(
            "add",
            index=index,
            address=str(spec.client.ip),
            prefixlen=spec.client.network.prefixlen,
            family=socket.AF_INET6,
        )
    if "route" in actions:
        ip.route(
            "replace",
            dst="::/0",
            gateway=spec.server_ipv6,
            oif=index,
            family=socket.AF_INET6,
            table=254,
        )


# -- changing the link (apply and its undo) ---------------------------------------------


def create_link(netns: str, spec: TunnelSpec, run_dir: str, replace: bool) -> None:
    if spec.implementation == "userspace":
        end = userspace.EndSpec(netns, spec.name, spec.local_ipv4, spec.server_ipv4, spec.mtu)
        if replace:
            userspace.stop(pidfile(run_dir, spec.name))
            netlink.delete_link(netns, spec.name)
        userspace.start(end, pidfile(run_dir, spec.name))
        return
    if replace:
        netlink.delete_link(netns, spec.name)
    try:
        with netlink.ipr(netns) as ip, netlink.translated(f"cannot create sit link {spec.name}"):
            sit_request(ip, spec)
    except NetlinkError as exc:
        if exc.errno == EOPNOTSUPP:
            raise Unsupported(
                f"this kernel has no sit (6in4) support, so {spec.name} cannot be made; "
                "load the sit module or build a kernel with CONFIG_IPV6_SIT"
            ) from exc
        raise


def remove_link(netns: str, spec: TunnelSpec, run_dir: str) -> None:
    if spec.implementation == "userspace":
        userspace.stop(pidfile(run_dir, spec.name))
    netlink.delete_link(netns, spec.name)


def recreate_old_link(netns: str, spec: TunnelSpec, state: TunnelState, run_dir: str) -> None:
    """The link a replace deleted, as observed: its userspace end, or a sit link."""
    if state.kind == "tun":
        if state.old_end is None:
            raise ApplyError(f"the old {spec.name} had no userspace 6in4 process to start again")
        userspace.stop(pidfile(run_dir, spec.name))
        userspace.start(state.old_end, pidfile(run_dir, spec.name))
    elif state.kind == "sit":
        old = dataclasses.replace(
            spec, local_ipv4=state.local, server_ipv4=state.remote, mtu=state.mtu
        )
        with netlink.ipr(netns) as ip, netlink.translated(f"cannot recreate {spec.name}"):
            sit_request(ip, old)
    else:
        raise ApplyError(f"cannot recreate a {state.kind or 'plain'} link {spec.name}")


def restore_link_config(netns: str, spec: TunnelSpec, state: TunnelState) -> None:
    """MTU, up/down and global addresses of the link as observed (none the plan added)."""
    link = netlink.link_by_name(netns, spec.name)
    if link is None:
        raise ApplyError(f"{spec.name} is gone")
    present = {
        f"{a.address}/{a.prefix}"
        for a in netlink.addresses(netns, ifindex=link.index)
        if a.family == "ipv6"
    }
    with netlink.ipr(netns) as ip, netlink.translated(f"cannot restore {spec.name}"):
        ip.link("set", index=link.index, mtu=state.mtu, state="up" if state.up else "down")
        for cidr in set(state.addresses) - present:
            iface = ipaddress.IPv6Interface(cidr)
            ip.addr("add", index=link.index, address=str(iface.ip),
                    prefixlen=iface.network.prefixlen, family=socket.AF_INET6)  # fmt: skip
        client = spec.client
        if str(client) in present and str(client) not in state.addresses:
            ip.addr("del", index=link.index, address=str(client.ip),
                    prefixlen=client.network.prefixlen, family=socket.AF_INET6)  # fmt: skip


def restore_default_route(netns: str, spec: TunnelSpec, state: TunnelState) -> str:
    """The default IPv6 route as observed; what was done ("" when nothing to do)."""
    now = netlink.default_route(netns, family=socket.AF_INET6)
    link = netlink.link_by_name(netns, spec.name)
    with netlink.ipr(netns) as ip, netlink.translated("cannot restore the default IPv6 route"):
        if state.previous_default is None:
            if now is not None and link is not None and now.ifindex == link.index:
                ip.route("del", dst="::/0", oif=link.index, family=socket.AF_INET6, table=254)
                return "default IPv6 route via the tunnel removed"
            return ""
        gateway, ifindex, via_tunnel = state.previous_default
        if via_tunnel:
            if link is None:
                raise ApplyError(f"{spec.name} is gone, so its default route via {gateway} too")
            ifindex = link.index
        if now is not None and (now.gateway, now.ifindex) == (gateway, ifindex):
            return ""
        kwargs: dict[str, Any] = {"gateway": gateway} if gateway else {}
        ip.route("replace", dst="::/0", oif=ifindex, family=socket.AF_INET6, table=254, **kwargs)
        return f"default IPv6 route via {gateway or '-'} dev index {ifindex} back"


# -- health (read-only: the ipv6-tunnel runbook and host-health run it) -------------------


def _forwarding(netns: str) -> str:
    cmd = ["sysctl", "-n", "net.ipv6.conf.all.forwarding"]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def health(
    *,
    netns: str,
    tunnel: str,
    client_ipv6: str,
    server_ipv6: str,
    routed_prefix: str,
    libvirt_uri: str = "",
    nat_network: str = "",
) -> list[Check]:
    """Tunnel up, address, default route, broker answers, 1400-byte ping, /64 on nat-bridge."""
    return [
        *link_health(netns=netns, tunnel=tunnel, client_ipv6=client_ipv6,
                     server_ipv6=server_ipv6),
        *path_health(netns=netns, tunnel=tunnel, server_ipv6=server_ipv6,
                     routed_prefix=routed_prefix, libvirt_uri=libvirt_uri,
                     nat_network=nat_network),
    ]  # fmt: skip


def link_health(*, netns: str, tunnel: str, client_ipv6: str, server_ipv6: str) -> list[Check]:
    """What ipv6-tunnel's apply makes on this host: the link up, its address, the default
    IPv6 route through it."""
    client = ipaddress.IPv6Interface(client_ipv6)
    found: list[Check] = []
    link = netlink.link_by_name(netns, tunnel)
    found.append(
        Check.given(
            f"{tunnel} up",
            link is not None and link.up,
            "absent" if link is None else ("up" if link.up else "down"),
            f"apply the ipv6-tunnel runbook for {tunnel}",
        )
    )
    addrs = (
        [
            f"{a.address}/{a.prefix}"
            for a in netlink.addresses(netns, ifindex=link.index)
            if a.family == "ipv6"
        ]
        if link
        else []
    )
    found.append(
        Check.given(
            f"{client} on {tunnel}",
            str(client) in addrs,
            ", ".join(addrs) or "no IPv6 address",
            command("ip", "-6", "addr", "add", client, "dev", tunnel),
        )
    )
    default = netlink.default_route(netns, family=socket.AF_INET6)
    via = bool(link and default and default.ifindex == link.index)
    found.append(
        Check.given(
            f"default IPv6 route via {tunnel}",
            via,
            f"via {default.gateway or '-'} dev index {default.ifindex}" if default else "none",
            command("ip", "-6", "route", "replace", "default", "via", server_ipv6, "dev", tunnel),
        )
    )
    return found


def path_health(
    *,
    netns: str,
    tunnel: str,
    server_ipv6: str,
    routed_prefix: str,
    libvirt_uri: str = "",
    nat_network: str = "",
) -> list[Check]:
    """What lies beyond this host or other runbooks: the broker answers, a 1400-byte ping
    passes, IPv6 forwarding is on, the routed /64 is on the NAT network."""
    found: list[Check] = []
    link = netlink.link_by_name(netns, tunnel)
    # Three tries, like ping -c3: one echo lost on a busy path is no broken tunnel.
    answers = bool(link) and icmp.ping(netns, server_ipv6, wait=2, tries=3).ok
    found.append(
        Check.given(
            f"broker {server_ipv6} answers ping6",
            answers,
            "answers" if answers else "no answer",
            "check the broker's IPv4 endpoint is reachable and allows protocol 41",
        )
    )
    big = answers and icmp.ping(netns, server_ipv6, size=PING_SIZE, wait=2, tries=3).ok
    found.append(
        Check.given(
            f"{PING_SIZE}-byte ping6 to {server_ipv6} (MTU)",
            big,
            "passes" if big else "fails",
            f"set the tunnel MTU to 1480 (or the broker's) on {tunnel}",
        )
    )
    forwarding = _forwarding(netns)
    found.append(
        Check.given(
            "IPv6 forwarding on",
            forwarding == "1",
            f"net.ipv6.conf.all.forwarding={forwarding or '?'}",
            "libvirt turns it on for a network with IPv6: apply nat-bridge-ipv6",
        )
    )
    if libvirt_uri and nat_network:
        found.append(_routed_check(netns, libvirt_uri, nat_network, routed_prefix))
    return found


def _routed_check(netns: str, libvirt_uri: str, nat_network: str, routed_prefix: str) -> Check:
    def has_ipv6(network: netxml.Network, net: ipaddress.IPv6Network) -> bool:
        return network.carries(gateway(net), 64)

    net = ipaddress.IPv6Network(routed_prefix)
    name = f"routed {net} on {nat_network}"
    try:
        with virt.connect(libvirt_uri) as conn:
            network = virt.get_network(conn, nat_network)
    except OpsError as exc:
        return Check(name, "fail", str(exc), "check libvirt_uri and nat_network")
    on_bridge = any(
        a.family == "ipv6" and a.address == gateway(net) and a.prefix == 64
        for a in netlink.addresses(netns)
        if (link := netlink.link_by_name(netns, network.bridge)) and a.ifindex == link.index
    )
    ok = network.active and has_ipv6(network, net) and on_bridge
    seen = (
        f"{gateway(net)}/64 on {network.bridge}"
        if ok
        else f"{nat_network}: {'running' if network.active else 'stopped'}, "
        f"{'has' if has_ipv6(network, net) else 'lacks'} {gateway(net)}/64 in its XML"
    )
    return Check.given(name, ok, seen, f"apply nat-bridge-ipv6 with prefix {net}")
