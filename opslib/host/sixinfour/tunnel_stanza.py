"""The 6in4 tunnel persisted for ifupdown: the broker's ``iface NAME inet6 v4tunnel``
stanza (``auto NAME`` too) in the interfaces file, as Hurricane Electric's example has it.
Pure; the userspace end on a systemd host is persisted as a unit instead
(:mod:`opslib.host.sixinfour.tunnel_unit`)."""

from __future__ import annotations

from opslib.host.ifupdown import edits
from opslib.host.sixinfour.tunnels import TunnelSpec

__all__ = ["stanza_options", "with_stanza"]


def stanza_options(spec: TunnelSpec) -> list[tuple[str, str]]:
    """The broker's example stanza, in its order."""
    return [
        ("address", str(spec.client.ip)),
        ("netmask", str(spec.client.network.prefixlen)),
        ("endpoint", spec.server_ipv4),
        ("local", spec.local_ipv4),
        ("ttl", str(spec.ttl)),
        ("gateway", spec.server_ipv6),
        ("mtu", str(spec.mtu)),
    ]


def with_stanza(text: str, path: str, spec: TunnelSpec) -> str:
    """The interfaces file with ``auto NAME`` and ``iface NAME inet6 v4tunnel`` set."""
    return edits.with_iface(text, path, spec.name, "inet6", "v4tunnel", stanza_options(spec))
