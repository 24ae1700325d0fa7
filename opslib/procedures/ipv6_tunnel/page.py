"""The broker's tunnel page as a runbook's inputs, declared once: ipv6-tunnel, room-router
and room-ipv6-move take the Hurricane Electric tunnel with these fields (subclasses of
:class:`TunnelPage`), so one bad value is refused with one line in all three."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from opslib.contract import inputs
from opslib.contract.inputs import param
from opslib.host.sixinfour.tunnels import TunnelSpec, spec_of

__all__ = ["TunnelPage"]


@dataclass(frozen=True, kw_only=True)
class TunnelPage(inputs.Declared):
    """The broker's tunnel page (Hurricane Electric's "Tunnel Details") and how this host
    makes the tunnel: declared here once for every runbook that makes or keeps one
    (ipv6-tunnel; room-router, whose ``routed_prefix`` is the Routed /48; room-ipv6-move's
    own tunnel), so that each takes these parameters with the same types, rules, help and
    defaults, and refuses a bad value with the same line. Its fields come first in each
    runbook's parameters cell."""

    tunnel: str = param("ifname", "the tunnel's link name", "he-ipv6")
    local_ipv4: str = param(
        "ipv4", "this host's IPv4 address, the tunnel's local end", example="192.0.2.10"
    )
    server_ipv4: str = param("ipv4", "the broker's Server IPv4 Address", example="203.0.113.1")
    client_ipv6: str = param(
        "ipv6-cidr64", "the broker's Client IPv6 Address, with /64", example="2001:db8:1::2/64"
    )
    server_ipv6: str = param(
        "ipv6", "the broker's Server IPv6 Address", example="2001:db8:1::1",
        rules=("in client_ipv6",),
    )  # fmt: skip
    routed_prefix: str = param(
        "ipv6-prefix64", "the broker's Routed /64", example="2001:db8:2::/64",
        rules=("not in client_ipv6",),
    )  # fmt: skip
    mtu: int = param("int[1280..1480]", "tunnel MTU (1480 = 1500 minus the IPv4 header)", 1480)
    implementation: str = param(
        "choice[kernel|userspace]", "sit, or the lab's userspace 6in4", "kernel"
    )
    interfaces_file: str = param(
        "path", "the interfaces file this runbook persists its stanzas in "
        "(a kernel tunnel's)", "/etc/network/interfaces",
    )  # fmt: skip
    run_dir: str = param("path", "pid file directory of the userspace 6in4", "/run/opsbook")

    @property
    def spec(self) -> TunnelSpec:
        """The tunnel of these values (their types and rules already checked)."""
        return spec_of(
            tunnel=self.tunnel, local_ipv4=self.local_ipv4, server_ipv4=self.server_ipv4,
            client_ipv6=self.client_ipv6, server_ipv6=self.server_ipv6,
            routed_prefix=self.routed_prefix, mtu=self.mtu, implementation=self.implementation,
        )  # fmt: skip

    def tunnel_page(self) -> dict[str, Any]:
        """These fields' values, as another runbook hands them to ipv6-tunnel's inputs."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(TunnelPage)}
