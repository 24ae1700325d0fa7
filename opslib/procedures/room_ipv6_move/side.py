"""What room-ipv6-move asks of the host's kernel and systemd, in one place (the contract
test hands the procedure a fake of it): the bridge's advertisements, the own tunnel, and
the probes of its checks. Each method is one adapter call of :mod:`opslib.host`.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from opslib.core.errors import OpsError
from opslib.host.kernel import icmp, netlink, ra
from opslib.host.sixinfour import tunnel_unit, tunnels
from opslib.host.sixinfour.tunnels import TunnelSpec, TunnelState
from opslib.procedures import ipv6_tunnel


@dataclass(frozen=True)
class Side:
    """The host in the network namespace ``netns`` ("" = this one)."""

    netns: str = ""

    # -- the bridge on the room's segment ------------------------------------------------
    def accept_ra(self, bridge: str) -> int | None:
        return ra.sysctl(self.netns, bridge, "accept_ra")

    def set_accept_ra(self, bridge: str, value: int) -> None:
        ra.set_sysctl(self.netns, bridge, "accept_ra", value)
        if value:
            ra.set_sysctl(self.netns, bridge, "autoconf", 1)

    def taken(self, bridge: str) -> ra.Taken:
        return ra.taken(self.netns, bridge)

    def forget(self, bridge: str) -> int:
        return ra.forget(self.netns, bridge)

    def solicit(self, bridge: str, timeout: float) -> ra.Advert | None:
        return ra.solicit(self.netns, bridge, timeout=timeout)

    def wait_for_ra(self, bridge: str, prefixes: tuple[str, ...], timeout: float) -> ra.Taken:
        """Solicit until the bridge has a SLAAC address in one of ``prefixes`` and a default
        route from an advertisement, or ``timeout`` seconds passed (the state as it is)."""
        deadline = time.monotonic() + timeout
        while True:
            now = self.taken(bridge)
            if now.default_via and any(_in(a, prefixes) for a in now.addresses):
                return now
            if time.monotonic() > deadline:
                return now
            ra.solicit(self.netns, bridge, timeout=min(3.0, max(0.5, deadline - time.monotonic())))
            time.sleep(0.3)  # the kernel configures the address after the RA it answered

    # -- the own tunnel -------------------------------------------------------------------
    def tunnel(self, inputs: ipv6_tunnel.Inputs) -> TunnelState:
        return ipv6_tunnel.PROCEDURE.observe(inputs, None)

    def drop_tunnel_default(self, tunnel: str) -> None:
        link = netlink.link_by_name(self.netns, tunnel)
        if link is None:
            return
        with netlink.ipr(self.netns) as ip, netlink.translated("cannot remove a default route"):
            for m in ip.get_routes(family=socket.AF_INET6, table=254):
                if m.get_attr("RTA_DST") is None and m.get_attr("RTA_OIF") == link.index:
                    ip.route("del", dst="::/0", oif=link.index, family=socket.AF_INET6,
                             table=254)  # fmt: skip

    def restore_default(self, spec: TunnelSpec, state: TunnelState) -> str:
        return tunnels.restore_default_route(self.netns, spec, state)

    def remove_tunnel(self, how: str, spec: TunnelSpec, run_dir: str) -> None:
        if how == "unit":
            tunnel_unit.remove(spec.name)
        elif how == "link":
            tunnels.remove_link(self.netns, spec, run_dir)

    def put_tunnel_back(self, how: str, spec: TunnelSpec, state: TunnelState, run_dir: str) -> None:
        if how == "unit":
            tunnel_unit.put_back(spec.name, state.unit_text)
        elif how == "link":
            tunnels.recreate_old_link(self.netns, spec, state, run_dir)
            tunnels.restore_link_config(self.netns, spec, state)
        tunnels.restore_default_route(self.netns, spec, state)

    def tunnel_gone(self, tunnel: str) -> bool:
        return netlink.link_by_name(self.netns, tunnel) is None and tunnel_unit.read(tunnel) is None

    # -- the checks' probes -----------------------------------------------------------------
    def route_dev(self, dst: str, source: str) -> str:
        return ra.route_dev(self.netns, dst, source=source)

    def answers(self, target: str, *, source: str = "", timeout: float = 20.0) -> bool:
        """Whether ``target`` answers ping6 (from ``source``) within ``timeout`` seconds: a
        route just made may need a neighbour discovery or two on the way."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if icmp.ping(self.netns, target, source=source, wait=1.0).ok:
                    return True
            except OpsError:  # the source address is not usable yet (DAD)
                pass
            if time.monotonic() > deadline:
                return False


def _in(cidr: str, prefixes: tuple[str, ...]) -> bool:
    import ipaddress

    address = ipaddress.IPv6Interface(cidr).ip
    return any(address in ipaddress.IPv6Network(p) for p in prefixes)


__all__ = ["Side"]
