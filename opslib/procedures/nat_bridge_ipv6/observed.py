"""What nat-bridge-ipv6 observes: the network (and the one it is renamed from), the
running guests' taps on them and where each is now, the domains that use the old name."""

from __future__ import annotations

from dataclasses import dataclass

import libvirt

from opslib.host.kernel import netlink
from opslib.host.libvirt import virt


@dataclass(frozen=True)
class GuestTap:
    """A running guest's NIC on the network and where its tap is now."""

    domain: str
    mac: str
    tap: str
    master: str  # bridge the tap is a port of now ("" = detached)


@dataclass(frozen=True)
class Observed:
    target: virt.NetworkState | None  # the network called ``network``
    source: virt.NetworkState | None  # the network called ``rename_from`` (None when not asked)
    taps: tuple[GuestTap, ...]  # running guests' NICs on either
    users: tuple[tuple[str, str], ...]  # (domain, persistent XML) of every domain using source
    known: tuple[str, ...] = ()  # every network's name (to suggest one)


def observe(conn: libvirt.virConnect, netns: str, network: str, rename_from: str = "") -> Observed:
    target = virt.network_state(conn, network)
    source = virt.network_state(conn, rename_from) if rename_from else None
    names = {network, rename_from} - {""}
    link_names = {link.index: link.name for link in netlink.links(netns)}
    masters = {link.name: link_names.get(link.master, "") for link in netlink.links(netns)}
    taps, users = [], []
    for domain in virt.list_domains(conn):
        for iface in domain.interfaces:
            if iface.type == "network" and iface.source in names and domain.running:
                taps.append(
                    GuestTap(domain.name, iface.mac, iface.target, masters.get(iface.target, ""))
                )
        if rename_from and any(
            i.type == "network" and i.source == rename_from for i in domain.interfaces
        ):
            users.append((domain.name, virt.definition(conn, domain.name).config_xml))
    known = tuple(n.name for n in virt.list_networks(conn))
    return Observed(target, source, tuple(taps), tuple(users), known)
