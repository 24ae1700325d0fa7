"""room-ipv6-move's planning, pure: observed state in, the move's plan out.

Each part of a move is planned here from what observe saw:

- the bridge on the room's segment: ``accept_ra`` (2 takes the room's advertisements on a
  forwarding host) and what the kernel took from them, and the default IPv6 route (via
  the room router, or via the host's own tunnel);
- ``iface BRIDGE inet6 auto`` / ``accept_ra 2`` in the interfaces file (the setting
  persisted, so the bridge takes them again after a reboot), or ``accept_ra 0`` and an
  ``up`` line that drops what it took before (back on the own tunnel, so that libvirt
  starts nat-bridge's IPv6 after a reboot), and the own tunnel's
  ``iface TUNNEL inet6 v4tunnel`` stanza, if it has one;
- nat-bridge renumbered: nat-bridge-ipv6's own plan (``replace_ipv6``), kept whole;
- every Cloudflare AAAA record that points at a guest of this host in the /64 it leaves:
  the guest's EUI-64 address in the /64 it takes (:func:`record_moves`);
- the own tunnel: removed (its systemd unit, or its link), or made (ipv6-tunnel's plan).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from opslib.core.changes import Change, Plan
from opslib.core.shellcmd import command
from opslib.core.slaac import eui64_address
from opslib.host.cloudflare.dns import DnsRecord
from opslib.host.ifupdown import edits
from opslib.host.kernel.ra import Advert, Taken
from opslib.host.sixinfour import tunnel_unit
from opslib.host.sixinfour.tunnels import TunnelState
from opslib.procedures.ipv6_tunnel import TunnelPlan
from opslib.procedures.nat_bridge_ipv6 import NatPlan

RUNBOOK = "room-ipv6-move"
TO_ROOM, TO_TUNNEL = "to-room-router", "to-own-tunnel"
TAKES_RA = 2  # accept_ra on a forwarding host that takes the room's advertisements
NO_RA = 0  # back on its own tunnel: the room's advertisements are ignored


@dataclass(frozen=True)
class Guest:
    """A guest's NIC on the NAT network."""

    domain: str
    mac: str


@dataclass(frozen=True)
class Move:
    """One AAAA record that moves with its guest: ``record`` now, ``address`` after."""

    record: DnsRecord
    guest: str
    address: str

    def change(self, zone: str) -> Change:
        r = self.record
        after = r.spec.text().replace(f" AAAA {r.content} ", f" AAAA {self.address} ", 1)
        return Change(
            f"dns:{zone}/{r.name}", "update",
            f"AAAA {r.name}: {r.content} → {self.address} ({self.guest})", r.text(), after,
        )  # fmt: skip


def record_moves(
    records: Iterable[DnsRecord],
    guests: Iterable[Guest],
    leaving: Iterable[str],
    taking: str,
) -> tuple[list[Move], list[str]]:
    """Each AAAA record whose address is a guest's SLAAC address in one of the /64s the
    host ``leaving``, moved to that guest's address in ``taking``; notes naming the
    records in those /64s that are no guest's (left alone)."""
    target = ipaddress.IPv6Network(taking)
    old = [ipaddress.IPv6Network(p) for p in leaving if p and ipaddress.IPv6Network(p) != target]
    owner = {
        ipaddress.IPv6Address(eui64_address(str(net), g.mac)): g for net in old for g in guests
    }
    moves, notes = [], []
    for record in sorted(records, key=lambda r: (r.name, r.content)):
        if record.type != "AAAA":
            continue
        address = ipaddress.IPv6Address(record.content)
        if not any(address in net for net in old):
            continue
        guest = owner.get(address)
        if guest is None:
            notes.append(
                f"AAAA {record.name} -> {record.content} is in this host's old /64 but no "
                "guest of it has that address: left alone"
            )
            continue
        moves.append(Move(record, guest.domain, eui64_address(str(target), guest.mac)))
    return moves, notes


def bridge_changes(
    *, direction: str, bridge: str, accept_ra: int | None, taken: Taken,
    advert: Advert | None, tunnel: str, tunnel_default: str,
) -> list[Change]:  # fmt: skip
    """The bridge's ``accept_ra``, what it took from advertisements, the default route."""
    target = f"link:{bridge}"
    if accept_ra is None:
        raise_missing(bridge)
    if direction == TO_ROOM:
        assert advert is not None
        changes = []
        has = any(
            ipaddress.IPv6Interface(a).network == ipaddress.IPv6Network(p)
            for a in taken.addresses
            for p in advert.prefixes
        )
        if accept_ra != TAKES_RA or not has or not taken.default_via:
            changes.append(Change(
                target, "accept-ra",
                f"{bridge} takes its address and default route from the room's RAs "
                f"(router {advert.router}, {', '.join(advert.prefixes) or 'no prefix'})",
                f"accept_ra = {accept_ra}\n", f"accept_ra = {TAKES_RA}\n",
            ))  # fmt: skip
        if tunnel_default:
            changes.append(Change(
                "route:default/ipv6", "route",
                f"default IPv6 route via the room router ({advert.router} dev {bridge})",
                f"via {tunnel_default} dev {tunnel}\n", f"via {advert.router} dev {bridge}\n",
            ))  # fmt: skip
        return changes
    if accept_ra == TAKES_RA or taken.addresses or taken.routes:
        seen = "".join(f"{a}\n" for a in (*taken.addresses, *taken.routes))
        return [Change(
            target, "accept-ra",
            f"{bridge} stops taking the room's RAs (accept_ra {accept_ra} -> {NO_RA}); "
            "what it took from them goes",
            f"accept_ra = {accept_ra}\n{seen}", f"accept_ra = {NO_RA}\n",
        )]  # fmt: skip
    return []


def raise_missing(bridge: str) -> None:
    from opslib.core.errors import InputError

    raise InputError(
        f"there is no link {bridge} on this host; give the bridge on the room's segment "
        "(forward-bridge's br0) as bridge"
    )


def forget_line(bridge: str) -> tuple[str, str]:
    """The ``up`` line of the bridge's ``inet6`` stanza on the own tunnel: IPv6 off and on
    again on the bridge, which drops what it took from the room's RAs before ifupdown set
    ``accept_ra`` 0 (at boot the bridge takes RAs from the moment it is up, its ``inet``
    stanza's DHCP included, while nothing forwards yet). Left there, an RA's route makes
    libvirt refuse to start nat-bridge's IPv6 ("kernel autoconfigured IPv6 routes"). Only
    the link-local address comes back; the host's IPv4, and so the tunnel, are untouched."""
    key = f"net.ipv6.conf.{bridge}.disable_ipv6"
    if "." in bridge:  # sysctl reads dots as separators: br0.10's key is written with /
        key = f"net/ipv6/conf/{bridge}/disable_ipv6"
    return "up", command("sysctl", "-q", "-w", f"{key}=1", f"{key}=0")


def interfaces_texts(
    text: str | None, path: str, *, direction: str, bridge: str, tunnel: str
) -> tuple[str | None, str | None]:
    """The interfaces file after the bridge's part, and after the tunnel's (a move to the
    room also drops the tunnel's ``inet6`` stanza, last); None: no file to write.

    The bridge's ``iface BRIDGE inet6 auto`` stanza says what it does with the room's RAs
    at boot: ``accept_ra 2`` takes them (on the room router), ``accept_ra 0`` ignores them
    and :func:`forget_line` drops what it took before (on the own tunnel). A host without
    the file (no ifupdown) gets none on its way back."""
    if text is None:
        if direction == TO_TUNNEL:
            return None, None
        text = ""
    to_room = direction == TO_ROOM
    accept_ra = str(TAKES_RA if to_room else NO_RA)
    bridged = edits.with_iface(text, path, bridge, "inet6", "auto", [("accept_ra", accept_ra)])
    bridged = edits.with_option_line(
        bridged, path, bridge, "inet6", forget_line(bridge), present=not to_room
    )
    if to_room:
        return bridged, edits.without_iface(bridged, path, tunnel, "inet6")
    return bridged, None


@dataclass(frozen=True)
class MovePlan(Plan):
    """room-ipv6-move's plan: each part's changes, and what its steps need."""

    direction: str = TO_ROOM
    prefix: str = ""  # the /64 nat-bridge takes
    router: str = ""  # the room router's link-local (to-room-router)
    bridge_changes: tuple[Change, ...] = ()
    interfaces_after_bridge: str | None = None  # the file's new text (None: untouched)
    interfaces_after_tunnel: str | None = None
    nat: NatPlan | None = None  # nat-bridge-ipv6's plan of the renumbering
    moves: tuple[Move, ...] = ()
    tunnel: TunnelPlan | None = None  # ipv6-tunnel's plan (to-own-tunnel)
    remove_tunnel: str = ""  # "unit", "link" or "" (to-room-router)


def tunnel_removal(state: TunnelState, tunnel: str) -> tuple[str, list[Change]]:
    """How the own tunnel goes: its systemd unit (its daemon takes the link), or the link."""
    if state.unit_text is not None:
        return "unit", [Change(
            f"file:{tunnel_unit.path(tunnel)}", "delete",
            f"stop, disable and remove {tunnel_unit.name(tunnel)}: {tunnel} goes with it",
            state.unit_text, None,
        )]  # fmt: skip
    if state.exists:
        seen = f"{state.kind} {state.local or '?'} -> {state.remote or '?'}"
        return "link", [Change(f"link:{tunnel}", "delete", f"remove {tunnel} ({seen})")]
    return "", []


def file_change(path: str, before: str | None, after: str | None, what: str) -> list[Change]:
    if after is None or after == before:
        return []
    return [Change(f"file:{path}", "update" if before is not None else "create", what,
                   before, after)]  # fmt: skip


def describe_moves(moves: Sequence[Move], zone: str) -> list[Change]:
    return [m.change(zone) for m in moves]


__all__ = [
    "NO_RA",
    "RUNBOOK",
    "TAKES_RA",
    "TO_ROOM",
    "TO_TUNNEL",
    "Guest",
    "Move",
    "MovePlan",
    "bridge_changes",
    "describe_moves",
    "file_change",
    "forget_line",
    "interfaces_texts",
    "record_moves",
    "tunnel_removal",
]
