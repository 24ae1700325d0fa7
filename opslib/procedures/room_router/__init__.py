"""room-router: one Hurricane Electric tunnel for the room, IPv6 for everything on the
room's segment by SLAAC.

The wiki page's "better design": a single tunnel on a router, which runs stateless
autoconfiguration for everything in the room. On the router host:

1. the 6in4 tunnel with the routed /48 the broker delegates: ipv6-tunnel's own steps
   (its unit or interfaces stanza, its undo), so that a router that ran ipv6-tunnel with
   the same values finds its tunnel unchanged;
2. IPv6 forwarding, persisted in ``/etc/sysctl.d`` (:mod:`opslib.host.kernel.sysctl`);
3. the room's /64 on the room's interface (the router is its ``::1``), a route per daemon
   host's nat-bridge /64 via that host's address on the room's /64, the rest of the /48
   unreachable; applied now and persisted as an ``interfaces.d`` file
   (:mod:`opslib.host.router.routes`);
4. radvd advertising the room's /64 on that interface for SLAAC, ``/etc/radvd.conf``
   written whole, the unit enabled (:mod:`opslib.host.router.radvd`).

Each step is undone, last first, when a later one fails; verification is the last steps'
checks: forwarding on, routes and address in place, radvd active and RAs leaving the
room's interface (a failure undoes the apply); each host's next hop answering
(advisory: a host that has not moved to the room yet fails it, nothing is undone).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from opslib.contract import inputs
from opslib.contract.inputs import param
from opslib.contract.transaction import Procedure, Transaction
from opslib.core import roomhosts
from opslib.core.actions import Action, Detail
from opslib.core.changes import Check, Plan
from opslib.host.ifupdown import file_io
from opslib.host.kernel import icmp, sysctl
from opslib.host.router import radvd, routes
from opslib.host.router.routes import RoomRoutes
from opslib.procedures import ipv6_tunnel
from opslib.procedures.ipv6_tunnel.page import TunnelPage
from opslib.procedures.room_router.plan import (
    FORWARDING,
    RUNBOOK,
    RouterPlan,
    RouterState,
    room_routes,
    router_plan,
)

__all__ = ["PROCEDURE", "RUNBOOK", "Inputs", "apply", "make_plan", "plan"]


@dataclass(frozen=True, kw_only=True)
class Inputs(TunnelPage):
    """The router's parameters: the broker's tunnel page (ipv6-tunnel's, but with its Routed
    /48), then the room."""

    routed_prefix: str = param(
        "ipv6-prefix48", "the broker's Routed /48", example="2001:db8:48::/48",
        rules=("not in client_ipv6",),
    )  # fmt: skip
    room_interface: str = param(
        "ifname",
        "the router's link on the room's segment (br0 on a daemon host with "
        "forward-bridge, else its uplink)",
        "br0",
    )
    room_prefix: str = param(
        "ipv6-prefix64 (within routed_prefix)",
        "the /64 of the /48 advertised on the room's segment for SLAAC",
        example="2001:db8:48::/64",
    )
    hosts: str = param(
        "room-hosts? (within routed_prefix, in room_prefix)",
        "each daemon host's nat-bridge /64 and its address on the room's /64: "
        "HOST PREFIX via ADDRESS, comma-separated (empty = none yet)",
        "",
    )
    ra_interval: int = param("int[4..1800]", "radvd's MaxRtrAdvInterval, seconds", 30)
    routes_file: str = param(
        "path",
        "where the room's address and routes are persisted",
        "/etc/network/interfaces.d/opsbook-room-router",
    )
    sysctl_file: str = param(
        "path", "where IPv6 forwarding is persisted", "/etc/sysctl.d/60-opsbook-room-router.conf"
    )
    radvd_conf: str = param("path", "radvd's configuration, written whole", "/etc/radvd.conf")
    tunnel_inputs: ipv6_tunnel.Inputs = field(init=False, repr=False, compare=False)
    room: RoomRoutes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # the tunnel as ipv6-tunnel makes it; its routed /64 is the room's (no NAT network
        # of the router is checked)
        page = {**self.tunnel_page(), "routed_prefix": self.room_prefix}
        tunnel = ipv6_tunnel.Inputs(**page, libvirt_uri="", netns="", nat_network="")
        object.__setattr__(self, "tunnel_inputs", tunnel)
        hosts = roomhosts.parse(self.hosts)
        room = room_routes(self.room_interface, self.room_prefix, self.routed_prefix, hosts)
        object.__setattr__(self, "room", room)

    def paths(self) -> dict[str, str]:
        return {"sysctl": self.sysctl_file, "radvd": self.radvd_conf, "routes": self.routes_file}


def _sources(interfaces_file: str, routes_file: str) -> bool:
    text = file_io.read_exact(interfaces_file) or ""
    directory = str(Path(routes_file).parent)
    return any(
        line.split()[:1] in (["source"], ["source-directory"]) and directory in line
        for line in text.splitlines()
    )


class RoomRouter(Procedure[Inputs, RouterState, None]):
    name = RUNBOOK
    inputs = Inputs

    def observe(self, inputs: Inputs, session: None) -> RouterState:
        tunnel = ipv6_tunnel.PROCEDURE.observe(inputs.tunnel_inputs, None)
        return RouterState(
            tunnel=tunnel,
            radvd=radvd.observe(Path(inputs.radvd_conf)),
            radvd_installed=radvd.installed(),
            sysctl_text=sysctl.read(Path(inputs.sysctl_file)),
            forwarding=sysctl.live(FORWARDING),
            routes_text=file_io.read_exact(inputs.routes_file),
            routes=routes.observe("", inputs.room),
            sources_routes_dir=_sources(inputs.interfaces_file, inputs.routes_file),
            ra_sent=radvd.sent(inputs.room_interface),
        )

    def comparable(self, observed: RouterState) -> RouterState:
        return dataclasses.replace(observed, ra_sent=None)

    def plan(self, inputs: Inputs, observed: RouterState, host: str) -> Plan:
        return make_plan(inputs, observed, host)

    def steps(self, tx: Transaction[Inputs, RouterState, None]) -> list[Action]:
        i, state, plan = tx.inputs, tx.observed, tx.plan
        if not isinstance(plan, RouterPlan) or plan.tunnel is None:
            raise TypeError(f"room-router's steps need a RouterPlan, not {type(plan)}")
        tunnel_tx = Transaction(i.tunnel_inputs, state.tunnel, plan.tunnel, None, tx.result)
        steps = [a for a in ipv6_tunnel.PROCEDURE.steps(tunnel_tx) if not a.advisory]
        targets = {c.target for c in plan.changes}
        spec, sysctl_path = i.room, Path(i.sysctl_file)

        if f"file:{i.sysctl_file}" in targets or f"sysctl:{FORWARDING}" in targets:

            def forward(detail: Detail) -> None:
                sysctl.install(sysctl_path, plan.sysctl, {FORWARDING: "1"})
                detail.append(f"{FORWARDING} = 1, in {sysctl_path}")

            def unforward(detail: Detail) -> None:
                before = {FORWARDING: state.forwarding}
                detail.append(sysctl.put_back(sysctl_path, state.sysctl_text, before))

            steps.append(Action("IPv6 forwarding", forward, unforward, partial=True))

        if f"file:{i.routes_file}" in targets or any(
            t.startswith(("route:", "link:")) and t != f"link:{i.tunnel}" for t in targets
        ):

            def route(detail: Detail) -> None:
                file_io.write_atomic(i.routes_file, plan.routes_file)
                detail.append(f"{i.routes_file} written")
                if state.routes.interface_exists:
                    detail.extend(routes.apply_live("", spec, state.routes))

            def unroute(detail: Detail) -> None:
                detail.append(file_io.put_back(i.routes_file, state.routes_text))
                detail.append(routes.put_back("", spec, state.routes))

            steps.append(
                Action(f"route the /48 on {i.room_interface}", route, unroute, partial=True)
            )

        if any(t in targets for t in (f"file:{i.radvd_conf}", "unit:radvd.service")):

            def advertise(detail: Detail) -> None:
                radvd.install(plan.radvd_conf, Path(i.radvd_conf))
                detail.append(f"radvd enabled and started on {i.room_interface}")

            def unadvertise(detail: Detail) -> None:
                detail.append(radvd.put_back(state.radvd, Path(i.radvd_conf)))

            steps.append(Action("radvd", advertise, unadvertise, partial=True))
        restarted = "unit:radvd.service" in targets
        steps.append(
            Action("verify the room router", _nothing, check=lambda: verify(i, state, restarted))
        )
        if spec.hosts:
            steps.append(
                Action(
                    "the hosts behind the router",
                    _nothing,
                    check=lambda: host_checks(i),
                    advisory=True,
                )
            )
        return steps

    def finish(self, tx: Transaction[Inputs, RouterState, None]) -> None:
        super().finish(tx)
        if not tx.applied.ok:
            return
        i, result = tx.inputs, tx.result
        failing = [c.name for c in result.checks if not c.ok]
        done = "made" if tx.plan.changes else "already there"
        result.summary = (
            f"room router {done}: {i.room.address.network} on {i.room_interface}, "
            f"{len(i.room.hosts)} host route(s), tunnel {i.tunnel}"
            + (f"; failing: {', '.join(failing)}" if failing else "; every check passes")
        )
        result.data["room"] = {
            "prefix": str(i.room.address.network),
            "router": str(i.room.address.ip),
            "hosts": [str(h) for h in i.room.hosts],
        }


def _nothing(_detail: Detail) -> None:
    return None


def verify(i: Inputs, before: RouterState, restarted: bool) -> list[Check]:
    """What this apply makes on the router: forwarding, the address and routes, radvd
    active and RAs leaving the room's interface."""
    spec = i.room
    now = routes.observe("", spec)
    forwarding = sysctl.live(FORWARDING)
    found = [
        Check.given(
            "IPv6 forwarding on",
            forwarding == "1",
            f"{FORWARDING}={forwarding}",
            f"sysctl -p {i.sysctl_file}",
        )
    ]
    found.append(
        Check.given(
            f"{spec.address} on {i.room_interface}",
            now.address,
            "present" if now.address else "absent",
            f"ifup {i.room_interface}",
        )
    )
    wrong = [
        f"{dst}: {now.routes.get(dst) or 'none'}"
        for dst, how in spec.wanted().items()
        if now.routes.get(dst) != how
    ] + [f"{dst}: still {how}" for dst, how in now.dropped.items()]
    found.append(
        Check.given(
            "routes of the /48",
            not wrong,
            "; ".join(wrong) or f"{len(spec.wanted())} in place",
            f"ifup {i.room_interface}",
        )
    )
    service = radvd.observe(Path(i.radvd_conf))
    found.append(
        Check.given(
            "radvd active and enabled",
            service.active and service.enabled,
            f"{'active' if service.active else 'inactive'}, "
            f"{'enabled' if service.enabled else 'disabled'}",
            "journalctl -u radvd",
        )
    )
    # A restart sends its first RAs at once; an unchanged radvd within its interval.
    since = before.ra_sent if restarted else 0
    why = radvd.wait_sent(i.room_interface, since, timeout=3.0 * i.ra_interval + 10)
    found.append(
        Check.given(
            f"RA sent on {i.room_interface}",
            not why,
            why or f"advertising {spec.address.network}",
            "journalctl -u radvd",
        )
    )
    return found


def host_checks(i: Inputs) -> list[Check]:
    """Each host's next hop answers on the room's /64 (a host still on its own tunnel
    may not have an address there yet)."""
    hosts = i.room.hosts
    answered = icmp.ping("", [str(h.via) for h in hosts], wait=2, tries=3).answered()
    return [
        Check.given(
            f"{h.name} answers at {h.via}",
            str(h.via) in answered,
            "answers" if str(h.via) in answered else "no answer",
            f"move {h.name} to the room (room-ipv6-move), or check its address",
        )
        for h in hosts
    ]


PROCEDURE = RoomRouter()


def make_plan(inputs: Inputs, observed: RouterState, host: str) -> Plan:
    """The runbook's planner (pure): observed state in, plan out."""
    tunnel = ipv6_tunnel.make_plan(inputs.tunnel_inputs, observed.tunnel, host)
    if not isinstance(tunnel, ipv6_tunnel.TunnelPlan):
        raise TypeError("ipv6-tunnel's make_plan made no TunnelPlan")
    return router_plan(
        observed,
        tunnel,
        inputs.room,
        host=host,
        paths=inputs.paths(),
        max_interval=inputs.ra_interval,
    )


plan, apply = inputs.verbs(PROCEDURE)
