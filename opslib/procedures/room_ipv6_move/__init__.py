"""room-ipv6-move: move a daemon host from its own tunnel to the room router, and back.

The wiki: "It would probably be better to instead have a single tunnel on some router,
which can run IPv6 stateless autoconfig to give IPv6 address to everything in the room."
The room-router runbook makes that router; this one moves one daemon host onto it, as one
transaction (``direction: to-room-router``), in this order:

1. precondition, checked by the plan: the room router answers a Router Solicitation on
   the bridge (``br0``, on the room's segment) with an advertisement of a SLAAC /64; with
   none the plan is refused (nothing changed);
2. the bridge takes its address and default route from the room's RAs: ``accept_ra`` 2
   (a forwarding host ignores RAs otherwise), the default route via the own tunnel goes;
   persisted as ``iface br0 inet6 auto`` / ``accept_ra 2`` in the interfaces file;
3. nat-bridge renumbered to ``room_prefix`` (nat-bridge-ipv6's replace: the guests take
   new SLAAC addresses);
4. check: the way out from the new /64 is the bridge and ``probe`` answers a ping from
   PREFIX::1, which proves that the router routes the /64 to this host; each guest answers
   at its new address;
5. every Cloudflare AAAA record of a guest of this host (its SLAAC address in the /64 the
   host leaves) updated to the guest's new address, then read back;
6. the own tunnel stopped and removed last (its systemd unit, or its link; its stanza);
7. the check of 4 again, and the tunnel gone.

When any step fails (or its check), every step done is undone, last first: the tunnel
back, the records back, nat-bridge on its old /64, the bridge as found.
``direction: to-own-tunnel`` is the reverse: the bridge stops taking the RAs (persisted as
``accept_ra 0`` in its stanza, whose ``up`` line drops what it took before at boot: libvirt
starts nat-bridge's IPv6 only on a bridge without RA routes), the tunnel is made again
(ipv6-tunnel's own steps and link check), nat-bridge back on ``routed_prefix``, the check
through the tunnel, the records back.
The parameters hold both ends (the tunnel's, as ipv6-tunnel takes them, and the room's
/64): one parameter set per host, only ``direction`` differs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import libvirt

from opslib.contract import inputs
from opslib.contract.inputs import param
from opslib.contract.transaction import Procedure, Transaction
from opslib.core.actions import Action
from opslib.core.changes import Change, Plan
from opslib.core.errors import HostError
from opslib.host.cloudflare.dns import DnsClient, DnsRecord
from opslib.host.ifupdown import file_io
from opslib.host.kernel.ra import Advert, Taken
from opslib.host.libvirt import virt
from opslib.host.sixinfour.tunnels import TunnelState
from opslib.procedures import ipv6_tunnel
from opslib.procedures import nat_bridge_ipv6 as nb
from opslib.procedures.cloudflare_aaaa import load_token
from opslib.procedures.ipv6_tunnel.page import TunnelPage
from opslib.procedures.room_ipv6_move import moves, steps
from opslib.procedures.room_ipv6_move.moves import (
    RUNBOOK,
    TO_ROOM,
    TO_TUNNEL,
    Guest,
    MovePlan,
    record_moves,
)
from opslib.procedures.room_ipv6_move.side import Side

__all__ = ["PROCEDURE", "RUNBOOK", "Inputs", "MovePlan", "Observed", "apply", "make_plan", "plan"]


@dataclass(frozen=True, kw_only=True)
class Inputs(TunnelPage):
    """The own tunnel's page (ipv6-tunnel's: its ``routed_prefix`` is nat-bridge's /64 on
    the tunnel), then the move; ``interfaces_file`` holds br0's accept_ra too."""

    libvirt_uri: str = inputs.libvirt_uri()
    netns: str = inputs.netns("bridges and links")
    direction: str = param(
        f"choice[{TO_ROOM}|{TO_TUNNEL}]",
        "onto the room router's RAs and its /64, or back to the host's own tunnel", TO_ROOM,
    )  # fmt: skip
    bridge: str = param("ifname", "the bridge on the room's segment (the RAs come there)", "br0")
    network: str = param("network-name", "the NAT network whose /64 moves", "nat-bridge")
    room_prefix: str = param(
        "ipv6-prefix64", "the /64 of the room router's /48 that it routes to this host",
        example="2001:db8:3:2::/64", rules=("not in routed_prefix", "not in client_ipv6"),
    )  # fmt: skip
    probe: str = param(
        "ipv6-global", "an address beyond the broker that answers ping (the checks)",
        example="2001:db8:ffff::1",
    )  # fmt: skip
    zone: str = param(
        "dns-zone?", "the Cloudflare zone whose AAAA records follow the guests (empty: none)", "",
        rules=("needs token",),
    )  # fmt: skip
    token: str = param("secret?", "file:/path or env:NAME of the Cloudflare API token", "")
    api_base_url: str = param(
        "https-url?", "Cloudflare API base URL; empty for Cloudflare's own", ""
    )
    timeout: float = 90.0  # seconds for the guests' new SLAAC addresses
    ra_wait: float = 15.0  # seconds for the room router's advertisement

    def tunnel_inputs(self) -> ipv6_tunnel.Inputs:
        """The own tunnel as ipv6-tunnel takes it (its NAT network is checked here)."""
        return ipv6_tunnel.Inputs(
            **self.tunnel_page(), libvirt_uri="", netns=self.netns, nat_network=""
        )

    @property
    def target(self) -> str:
        """The /64 nat-bridge takes."""
        return self.room_prefix if self.direction == TO_ROOM else self.routed_prefix


@dataclass
class Session:
    """What one plan or apply talks through."""

    conn: libvirt.virConnect
    side: Side
    dns: DnsClient | None = None


@dataclass(frozen=True)
class Observed:
    nat: nb.Observed  # the NAT network, its running guests' taps
    guests: tuple[Guest, ...]  # every guest NIC on it, running or not
    accept_ra: int | None  # the bridge's (None: no such link)
    taken: Taken  # what the bridge took from advertisements
    advert: Advert | None  # the room router's answer (to-room-router)
    tunnel: TunnelState  # the own tunnel, as ipv6-tunnel observes it
    interfaces_text: str | None
    zone_id: str = ""
    records: tuple[DnsRecord, ...] = ()  # every AAAA of the zone

    @property
    def prefix(self) -> str:
        """nat-bridge's IPv6 /64 now ("" none)."""
        target = self.nat.target
        ip6 = virt.parse_network(target.xml).ip("ipv6") if target else None
        return str(ip6.network) if ip6 is not None else ""


class RoomIpv6Move(Procedure[Inputs, Observed, Session]):
    name = RUNBOOK
    inputs = Inputs
    observe_step = "observe the host"

    @contextlib.contextmanager
    def session(self, inputs: Inputs) -> Iterator[Session]:
        with virt.connect(inputs.libvirt_uri) as conn:
            if not inputs.zone:
                yield Session(conn, Side(inputs.netns))
                return
            token, _warnings = load_token(inputs.token)
            with DnsClient(token=token, base_url=inputs.api_base_url) as client:
                yield Session(conn, Side(inputs.netns), client)

    def observe(self, inputs: Inputs, session: Session) -> Observed:
        side, conn = session.side, session.conn
        nat = nb.observe(conn, inputs.netns, inputs.network)
        guests = tuple(
            Guest(d.name, nic.mac)
            for d in virt.list_domains(conn)
            for nic in d.interfaces
            if nic.type == "network" and nic.source == inputs.network
        )
        advert = None
        if inputs.direction == TO_ROOM:
            advert = side.solicit(inputs.bridge, inputs.ra_wait)
            if advert is None:
                raise HostError(
                    f"no router advertisement on {inputs.bridge} within {inputs.ra_wait:g} s: "
                    "the room router is not on this segment yet; run room-router on it first "
                    "(nothing was changed)"
                )
        zone_id, records = "", tuple[DnsRecord, ...]()
        if session.dns is not None:
            zone_id = session.dns.zone_id(inputs.zone)
            records = tuple(session.dns.list_records(zone_id, name="", type="AAAA"))
        return Observed(
            nat=nat, guests=guests, accept_ra=side.accept_ra(inputs.bridge),
            taken=side.taken(inputs.bridge), advert=advert,
            tunnel=side.tunnel(inputs.tunnel_inputs()),
            interfaces_text=file_io.read_exact(inputs.interfaces_file),
            zone_id=zone_id, records=records,
        )  # fmt: skip

    def describe(self, observed: Observed) -> str:
        router = f"room router {observed.advert.router}" if observed.advert else "no RA asked"
        return f"nat-bridge on {observed.prefix or 'no /64'}; {router}"

    def plan(self, inputs: Inputs, observed: Observed, host: str) -> Plan:
        return make_plan(inputs, observed, host)

    def steps(self, run: Transaction[Inputs, Observed, Session]) -> list[Action]:
        return steps.steps(run)

    def finish(self, run: Transaction[Inputs, Observed, Session]) -> None:
        super().finish(run)
        plan, result = run.plan, run.result
        if not isinstance(plan, MovePlan):
            return
        result.data["records"] = [
            {"name": m.record.name, "from": m.record.content, "to": m.address, "guest": m.guest}
            for m in plan.moves
        ]
        where = "the room router" if plan.direction == TO_ROOM else f"its own {run.inputs.tunnel}"
        if run.applied.ok:
            failing = [c.name for c in result.checks if not c.ok]
            done = "moved" if plan.changes else "already"
            result.summary = f"{done} on {where}: nat-bridge {plan.prefix}" + (
                f"; failing: {', '.join(failing)}" if failing else "; the guests reach beyond"
            )

    def comparable(self, observed: Observed) -> Any:
        return (
            observed.nat.target, observed.accept_ra, observed.taken, observed.tunnel,
            observed.interfaces_text, sorted(r.text() for r in observed.records),
        )  # fmt: skip

    def observed_parts(self, inputs: Inputs, observed: Observed) -> dict[str, Any]:
        return {
            f"libvirt network {inputs.network}": observed.nat.target,
            f"link {inputs.bridge}": (observed.accept_ra, observed.taken),
            f"the room router's RA on {inputs.bridge}": observed.advert,
            f"tunnel {inputs.tunnel}": observed.tunnel,
            f"interfaces file {inputs.interfaces_file}": observed.interfaces_text,
            f"AAAA records of {inputs.zone or 'no zone'}": sorted(
                r.text() for r in observed.records
            ),
        }


PROCEDURE = RoomIpv6Move()


def make_plan(inputs: Inputs, observed: Observed, host: str) -> Plan:
    """The runbook's planner (pure): observed state in, the move's plan out."""
    i, seen, target = inputs, observed, inputs.target
    to_room = i.direction == TO_ROOM
    if seen.accept_ra is None:
        moves.raise_missing(i.bridge)
    bridge = moves.bridge_changes(
        direction=i.direction, bridge=i.bridge, accept_ra=seen.accept_ra, taken=seen.taken,
        advert=seen.advert, tunnel=i.tunnel, tunnel_default=seen.tunnel.default_gateway,
    )  # fmt: skip
    after_bridge, after_tunnel = moves.interfaces_texts(
        seen.interfaces_text, i.interfaces_file, direction=i.direction, bridge=i.bridge,
        tunnel=i.tunnel,
    )  # fmt: skip
    what = (
        f"{i.bridge} takes the room's RAs at boot (accept_ra {moves.TAKES_RA})"
        if to_room
        else f"{i.bridge} ignores the room's RAs at boot (accept_ra {moves.NO_RA}) and drops "
        "what it took before, so that libvirt starts nat-bridge's IPv6"
    )
    files = moves.file_change(i.interfaces_file, seen.interfaces_text, after_bridge, what)
    nat = nb.ipv6_plan(seen.nat, host=host, network=i.network,
                       prefix=ipaddress.IPv6Network(target), replace_ipv6=True)  # fmt: skip
    leaving = (seen.prefix, i.routed_prefix if to_room else i.room_prefix)
    found, notes = record_moves(seen.records, seen.guests, leaving, target)
    if after_bridge is None:
        notes.append(
            f"no {i.interfaces_file}: {i.bridge}'s accept_ra {moves.NO_RA} is not persisted "
            "(not an ifupdown host): keep it from taking the room's RAs at boot"
        )
    if i.zone and not found:
        notes.append(f"no AAAA record of {i.zone} points at a guest of this host in its old /64")
    tunnel_plan, removal, how = None, list[Change](), ""
    if to_room:
        how, removal = moves.tunnel_removal(seen.tunnel, i.tunnel)
        removal += moves.file_change(
            i.interfaces_file, after_bridge, after_tunnel, f"{i.tunnel}'s stanza gone"
        )
    else:
        # ipv6-tunnel persists a kernel tunnel in the file as the bridge's part leaves it
        state = seen.tunnel
        if after_bridge is not None:
            state = dataclasses.replace(state, interfaces_text=after_bridge)
        made = ipv6_tunnel.make_plan(i.tunnel_inputs(), state, host)
        assert isinstance(made, ipv6_tunnel.TunnelPlan)
        tunnel_plan = made
    first = [*bridge, *files]
    middle = [*nat.changes, *moves.describe_moves(found, i.zone)]
    changes = (
        [*first, *middle, *removal]
        if to_room
        else [*first, *(tunnel_plan.changes if tunnel_plan else ()), *middle]
    )
    return MovePlan(
        RUNBOOK, host, tuple(changes), (*nat.notes, *notes),
        direction=i.direction, prefix=target,
        router=seen.advert.router if seen.advert else "",
        bridge_changes=tuple(bridge), interfaces_after_bridge=after_bridge,
        interfaces_after_tunnel=after_tunnel if to_room else None, nat=nat,
        moves=tuple(found), tunnel=tunnel_plan, remove_tunnel=how,
    )  # fmt: skip


plan, apply = inputs.verbs(PROCEDURE)
