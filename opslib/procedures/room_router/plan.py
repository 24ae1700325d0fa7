"""room-router's plan (pure): the observed router in, the changes with their diffs out."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from opslib.core.changes import Change, Plan
from opslib.core.roomhosts import RoomHost
from opslib.host.kernel import sysctl
from opslib.host.router import radvd, routes
from opslib.host.router.routes import RoomRoutes, RoutesState
from opslib.host.sixinfour.tunnels import TunnelState
from opslib.procedures.ipv6_tunnel import TunnelPlan

RUNBOOK = "room-router"
FORWARDING = "net.ipv6.conf.all.forwarding"


@dataclass(frozen=True)
class RouterState:
    """What observe saw on the router."""

    tunnel: TunnelState
    radvd: radvd.Service
    radvd_installed: bool
    sysctl_text: str | None  # the sysctl.d file (None: none)
    forwarding: str  # its live value
    routes_text: str | None  # the interfaces.d file (None: none)
    routes: RoutesState
    sources_routes_dir: bool  # the interfaces file sources the routes file's directory
    ra_sent: int | None = field(default=None, compare=False)  # changes on its own


@dataclass(frozen=True)
class RouterPlan(Plan):
    """room-router's plan: the tunnel's own plan and the texts the steps write."""

    tunnel: TunnelPlan | None = None
    sysctl: str = ""
    radvd_conf: str = ""
    routes_file: str = ""


def sysctl_text() -> str:
    why = (
        "opsbook room-router: this host routes the room's /48 (written whole by "
        "`opsbook run room-router`)"
    )
    return sysctl.render({FORWARDING: "1"}, why)


def room_routes(
    interface: str, room_prefix: str, delegated: str, hosts: tuple[RoomHost, ...]
) -> RoomRoutes:
    """The router's address (the room /64's ::1) and the routes of the /48."""
    net = ipaddress.IPv6Network(room_prefix)
    address = ipaddress.IPv6Interface(f"{net.network_address + 1}/64")
    return RoomRoutes(interface, address, ipaddress.IPv6Network(delegated), hosts)


def _file(path: str, before: str | None, after: str, what: str) -> list[Change]:
    if before == after:
        return []
    action = "update" if before is not None else "create"
    return [Change(f"file:{path}", action, what, before, after)]


def live_route_changes(now: RoutesState, spec: RoomRoutes) -> list[Change]:
    """The room's address and each route of the /48 as the kernel should have them now: a
    route made or changed (before → after), a dropped host's removed (after ``none``)."""
    changes = []
    if now.interface_exists and not now.address:
        changes.append(
            Change(f"link:{spec.interface}", "address", f"add {spec.address} to {spec.interface}")
        )
    for dst, how in spec.wanted().items():
        was = now.routes.get(dst, "")
        if was != how and now.interface_exists:
            changes.append(
                Change(f"route:{dst}", "route", f"route {dst} {how}", was or "none", how)
            )
    for dst, how in now.dropped.items():
        changes.append(
            Change(
                f"route:{dst}", "delete", f"remove route {dst} {how}: no host of hosts has it",
                how, "none",
            )
        )  # fmt: skip
    return changes


def router_plan(
    state: RouterState,
    tunnel: TunnelPlan,
    spec: RoomRoutes,
    *,
    host: str,
    paths: dict[str, str],
    max_interval: int,
) -> RouterPlan:
    """Every change room-router would make, the tunnel's first. ``paths``: the sysctl
    file, radvd.conf and the routes file."""
    changes = list(tunnel.changes)
    notes = list(tunnel.notes)
    if not state.routes.interface_exists:
        notes.append(
            f"{spec.interface} does not exist (yet): its address and routes "
            "are made when it comes up"
        )
    sysctl_new = sysctl_text()
    changes += _file(
        paths["sysctl"],
        state.sysctl_text,
        sysctl_new,
        "IPv6 forwarding, persisted for systemd-sysctl",
    )
    if state.forwarding != "1":
        changes.append(
            Change(
                f"sysctl:{FORWARDING}", "set", f"{FORWARDING} = 1 now", state.forwarding or "?", "1"
            )
        )
    routes_new = routes.stanza(spec, paths["sysctl"])
    changes += _file(
        paths["routes"],
        state.routes_text,
        routes_new,
        f"the room's /64 on {spec.interface} and the /48's routes, persisted for ifupdown",
    )
    changes += live_route_changes(state.routes, spec)
    conf = radvd.render(
        interface=spec.interface, prefix=str(spec.address.network), max_interval=max_interval
    )
    changes += _file(
        paths["radvd"],
        state.radvd.text,
        conf,
        f"radvd advertises {spec.address.network} on {spec.interface}",
    )
    if not (state.radvd.enabled and state.radvd.active) or state.radvd.text != conf:
        changes.append(Change("unit:radvd.service", "restart", "radvd enabled and (re)started"))
    if not state.radvd_installed:
        notes.append("radvd is not installed: apt-get install radvd (apply stops there)")
    if not state.sources_routes_dir:
        notes.append(
            f"the interfaces file does not source {paths['routes']}'s directory: "
            "add `source /etc/network/interfaces.d/*`, or the routes are not back "
            "after a reboot"
        )
    return RouterPlan(
        RUNBOOK,
        host,
        tuple(changes),
        tuple(notes),
        tunnel=tunnel,
        sysctl=sysctl_new,
        radvd_conf=conf,
        routes_file=routes_new,
    )
