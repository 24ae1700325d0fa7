"""ipv6-tunnel: the Hurricane Electric 6in4 tunnel of a daemon host, and its health.

The wiki's "IPv6 connectivity": each daemon host has its own 6in4 tunnel to the
broker, which routes a /64 to it (put on nat-bridge by the nat-bridge-ipv6 runbook).
This runbook makes the tunnel link (``sit`` through pyroute2), its client address,
the default IPv6 route via the broker and the MTU, and persists them as the broker's
own ``iface NAME inet6 v4tunnel`` stanza in the interfaces file so that the tunnel
survives a reboot.

``implementation="userspace"`` is for the lab, whose kernel has no ``sit``: the link
is a TUN device served by :mod:`opslib.host.sixinfour.userspace` (same wire format); it is not
persisted (it runs as long as its process). On a kernel without sit, the kernel
implementation stops with one line before it changes anything.

Three steps (opslib.contract.transaction): create the link, configure it, persist it. When one
fails, apply puts back what it found: a replaced link is made again (the old userspace
end restarted, or a sit link to the old endpoints) with its MTU, state and addresses,
an address it added to an existing link is removed, the default IPv6 route it replaced
is restored, and the interfaces file is written back byte for byte. The link itself
(spec, observation, netlink requests) is :mod:`opslib.host.sixinfour.tunnels`.

:func:`checks` is the read-only health the host-health runbook also runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from opslib.contract import inputs
from opslib.contract.inputs import param
from opslib.contract.transaction import Procedure, Transaction
from opslib.core.actions import Action, Detail
from opslib.core.changes import Change, Plan, Result
from opslib.core.errors import ApplyError, OpsError, Unsupported
from opslib.host.ifupdown import file_io
from opslib.host.kernel import netlink
from opslib.host.sixinfour import tunnel_unit, tunnels
from opslib.host.sixinfour.tunnel_stanza import with_stanza
from opslib.host.sixinfour.tunnels import (
    TunnelSpec,
    TunnelState,
    config_requests,
    observe,
    sit_supported,
)
from opslib.procedures.ipv6_tunnel.page import TunnelPage

RUNBOOK = "ipv6-tunnel"


# -- the plan (pure) --------------------------------------------------------------------------


@dataclass(frozen=True)
class TunnelPlan(Plan):
    """ipv6-tunnel's plan: with the texts its steps write."""

    interfaces: str | None = None  # the interfaces file's new text (kernel tunnels)
    unit: str | None = None  # the systemd unit the userspace end runs as, None for none


def tunnel_plan(
    state: TunnelState,
    spec: TunnelSpec,
    *,
    host: str,
    interfaces_file: str,
    sit_available: bool | None = None,
    unit: str | None = None,
) -> TunnelPlan:
    """What apply would change, from the observed state alone. ``unit``: the systemd
    unit the userspace end should run as (:mod:`opslib.host.sixinfour.tunnel_unit`), None for
    none."""
    if sit_available is None:
        sit_available = state.sit_available
    changes: list[Change] = []
    notes: list[str] = []
    kind = "sit" if spec.implementation == "kernel" else "tun"
    wanted_ends = (spec.local_ipv4, spec.server_ipv4)
    link_target = f"link:{spec.name}"
    recreate = state.exists and (state.kind != kind or (state.local, state.remote) != wanted_ends)
    if (not state.exists or recreate) and kind == "sit" and not sit_available:
        raise Unsupported(
            f"this kernel has no sit (6in4) support, so {spec.name} cannot be made; "
            "load the sit module or build a kernel with CONFIG_IPV6_SIT (nothing was changed)"
        )
    describe = f"{kind} {spec.local_ipv4} -> {spec.server_ipv4} mtu {spec.mtu} ttl {spec.ttl}"
    if not state.exists:
        changes.append(Change(link_target, "create", f"create {spec.name}: {describe}"))
    elif recreate:
        seen = f"{state.kind} {state.local or '?'} -> {state.remote or '?'}"
        changes.append(
            Change(link_target, "replace", f"replace {spec.name} ({seen}) by {describe}")
        )
    fresh = not state.exists or recreate
    if not fresh and state.mtu != spec.mtu:
        changes.append(Change(link_target, "mtu", f"MTU {state.mtu} -> {spec.mtu}"))
    if fresh or not state.up:
        changes.append(Change(link_target, "up", f"bring {spec.name} up"))
    client = str(spec.client)
    if fresh or client not in state.addresses:
        changes.append(Change(link_target, "address", f"add {client} to {spec.name}"))
    if fresh or state.default_gateway != spec.server_ipv6:
        was = state.default_elsewhere or (
            f"via {state.default_gateway}" if state.default_gateway else "none"
        )
        via = f"via {spec.server_ipv6} dev {spec.name}"
        changes.append(Change("route:default/ipv6", "route", f"default IPv6 route {via}", was, via))
    for extra in state.addresses:
        if not fresh and extra != client:
            notes.append(f"{spec.name} also has {extra}; left alone")
    new_text = None
    if spec.implementation == "kernel":
        before = state.interfaces_text
        new_text = with_stanza(before or "", interfaces_file, spec)
        if new_text != before:
            action = "update" if before is not None else "create"
            persist = f"persist {spec.name} as `iface {spec.name} inet6 v4tunnel`"
            changes.append(Change(f"file:{interfaces_file}", action, persist, before, new_text))
    elif unit is not None:
        if unit != state.unit_text:
            action = "update" if state.unit_text is not None else "create"
            changes.append(Change(
                f"file:{tunnel_unit.path(spec.name)}", action,
                f"persist {spec.name} as systemd unit {tunnel_unit.name(spec.name)}, "
                "enabled: back at boot", state.unit_text, unit,
            ))  # fmt: skip
    else:
        notes.append(
            f"userspace 6in4 (lab): {spec.name} lives as long as its process; "
            "it is not written to the interfaces file"
        )
    return TunnelPlan(RUNBOOK, host, tuple(changes), tuple(notes), interfaces=new_text, unit=unit)


# -- the steps -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Inputs(TunnelPage):
    """ipv6-tunnel's parameters: the tunnel page, then where the health checks look."""

    # libvirt_uri and nat_network: only for the health checks after apply
    libvirt_uri: str = param(
        "libvirt-uri?", "libvirt of the NAT network checked after apply (empty = not checked)",
        "qemu:///system",
    )  # fmt: skip
    netns: str = inputs.netns("links")
    nat_network: str = param(
        "network-name?",
        "the NAT network that should carry the routed /64 (empty = not checked)",
        "nat-bridge",
    )

    def health(self) -> dict[str, str]:
        """The health checks' arguments (:func:`checks`)."""
        names = ("netns", "tunnel", "client_ipv6", "server_ipv6", "routed_prefix",
                 "libvirt_uri", "nat_network")  # fmt: skip
        return {name: getattr(self, name) for name in names}


def verification(i: Inputs) -> list[Action]:
    """The health checks as steps of the apply (as pyroute2 NDB puts a PingAddress in the
    transaction). What they undo, by choice:

    - ``verify TUNNEL`` checks what this apply makes on the host (the link up, its
      address, the default IPv6 route through it): a failing one undoes the whole apply,
      last first, so the host routes IPv6 as it did before;
    - ``health beyond this host`` checks what this host cannot make so (the broker
      answers, a 1400-byte ping passes, IPv6 forwarding, the routed /64 on the NAT
      network): a failing one undoes nothing. The tunnel is kept (the broker's side may
      not be set up yet; nat-bridge-ipv6 turns forwarding on) and the result fails by its
      checks, with status changed, naming them.
    """
    given = i.health()
    link = {k: given[k] for k in ("netns", "tunnel", "client_ipv6", "server_ipv6")}
    path = {k: v for k, v in given.items() if k != "client_ipv6"}
    return [
        Action(f"verify {i.tunnel}", _nothing, check=lambda: tunnels.link_health(**link)),
        Action("health beyond this host", _nothing, check=lambda: tunnels.path_health(**path),
               advisory=True),
    ]  # fmt: skip


def _nothing(_detail: Detail) -> None:
    return None


def _attempts(detail: Detail, *parts: tuple[str, Callable[[], str | None]]) -> None:
    """Run each undo part (a failed one does not stop the others): its outcome (or its
    name) into ``detail``; ApplyError naming what could not be undone."""
    problems = []
    for doing, fn in parts:
        try:
            said = fn()
        except OpsError as exc:
            problems.append(f"{doing} failed: {exc}")
            continue
        if said != "":
            detail.append(said or doing)
    if problems:
        raise ApplyError("; ".join(problems))


def undo_file(interfaces_file: str, state: TunnelState, detail: Detail) -> None:
    """The interfaces file back byte for byte as observed (removed when there was none)."""
    _attempts(
        detail,
        (
            f"{interfaces_file} back",
            lambda: file_io.put_back(interfaces_file, state.interfaces_text),
        ),
    )


@dataclass
class PutBack:
    """What the undos of one apply put back (their details), for finish's summary."""

    details: list[str] = field(default_factory=list)


class Steps:
    """One apply's steps and their undos, over what was observed before it.

    A replaced link is made again as it was (its userspace end started again, or a
    sit link to its old endpoints), with its MTU, state and addresses; an existing
    link loses the address apply added; the default IPv6 route goes back to the one
    found, after the link is back (a route dies with its link).
    """

    def __init__(self, tx: Transaction[Inputs, TunnelState, None], plan: TunnelPlan) -> None:
        self.i, self.spec, self.state, self.plan = tx.inputs, tx.inputs.spec, tx.observed, plan
        self.netns, self.name, self.run_dir = tx.inputs.netns, self.spec.name, tx.inputs.run_dir
        self.changes = {c.action for c in plan.changes}
        self.replacing = "replace" in self.changes and self.state.exists
        self.put_back = tx.share(PutBack()).details
        self.unit_changes = plan.unit is not None and plan.unit != self.state.unit_text

    def undoing(self, *parts: tuple[str, Callable[[], str | None]]) -> Callable[[Detail], None]:
        def undo(detail: Detail) -> None:
            try:
                _attempts(detail, *parts, ("default IPv6 route back", self.route_back))
            finally:
                self.put_back.extend(detail)

        return undo

    def route_back(self) -> str:
        return tunnels.restore_default_route(self.netns, self.spec, self.state)

    def create(self, detail: Detail) -> None:
        name, unit = self.name, self.plan.unit
        if unit is None:
            tunnels.create_link(self.netns, self.spec, self.run_dir, replace=self.replacing)
        else:  # the unit's daemon makes the link, with its address and route
            if self.replacing:
                tunnels.remove_link(self.netns, self.spec, self.run_dir)
            tunnel_unit.install(name, unit)
            detail.append(f"{tunnel_unit.name(name)} enabled and started")
        detail.append(f"{name} exists")

    def hand_over(self, detail: Detail) -> None:
        # the same link, served from now on by the unit's daemon (a brief gap)
        tunnels.remove_link(self.netns, self.spec, self.run_dir)
        tunnel_unit.install(self.name, self.plan.unit or "")
        detail.append(f"{tunnel_unit.name(self.name)} enabled and started")

    def unit_back(self) -> str:
        return tunnel_unit.put_back(self.name, self.state.unit_text)

    def configure(self, detail: Detail) -> None:
        netns, name, spec = self.netns, self.name, self.spec
        link = netlink.link_by_name(netns, name)
        if link is None:
            raise ApplyError(f"{name} vanished while configuring it")
        todo = self.changes & {"mtu", "up", "address", "route"}
        have = {f"{a.address}/{a.prefix}" for a in netlink.addresses(netns, ifindex=link.index)}
        if str(spec.client) in have:  # a unit's daemon put it there already
            todo.discard("address")
        with netlink.ipr(netns) as ip, netlink.translated(f"cannot configure {name}"):
            config_requests(ip, spec, link.index, todo)
        detail.append(", ".join(sorted(todo)))

    def persist(self, detail: Detail) -> None:
        if self.state.interfaces_text is not None:
            detail.append(f"backup {file_io.backup(self.i.interfaces_file)}")
        file_io.write_atomic(self.i.interfaces_file, self.plan.interfaces or "")

    def unpersist(self, detail: Detail) -> None:
        undo_file(self.i.interfaces_file, self.state, detail)
        self.put_back.extend(detail)

    def actions(self) -> list[Action]:
        """The steps the plan's changes need, then the verification."""
        netns, spec, state, name, run_dir = (
            self.netns, self.spec, self.state, self.name, self.run_dir
        )  # fmt: skip
        old_back = [
            (f"old {name} ({state.kind} {state.local} -> {state.remote}) made again",
             lambda: tunnels.recreate_old_link(netns, spec, state, run_dir)),
            ("its MTU, state and addresses back",
             lambda: tunnels.restore_link_config(netns, spec, state)),
        ]  # fmt: skip
        config_back = (f"{name}'s MTU, state and addresses back",
                       lambda: tunnels.restore_link_config(netns, spec, state))  # fmt: skip
        remove_new = (f"new {name} removed", lambda: tunnels.remove_link(netns, spec, run_dir))
        unit_parts = (
            [(f"{tunnel_unit.name(name)} as found", self.unit_back)] if self.unit_changes else []
        )
        steps = []
        if self.changes & {"create", "replace"}:
            steps.append(Action(
                f"create {name} ({spec.implementation})", self.create,
                self.undoing(*unit_parts, remove_new, *(old_back if state.exists else [])),
                partial=True, refusals=() if self.replacing else (Unsupported,),  # 1st change
            ))  # fmt: skip
        elif self.unit_changes:
            steps.append(Action(
                f"run {name} as {tunnel_unit.name(name)}", self.hand_over,
                self.undoing(*unit_parts, *old_back), partial=True,
            ))  # fmt: skip
        if self.changes & {"mtu", "up", "address", "route"}:
            fresh_link = "create" in self.changes or self.replacing  # its undo puts it back
            steps.append(Action(
                f"configure {name}", self.configure,
                self.undoing(*([] if fresh_link else [config_back])), partial=True, undo_order=1,
            ))  # fmt: skip
        new_text = self.plan.interfaces
        if new_text is not None and new_text != state.interfaces_text:
            steps.append(Action(
                f"persist in {self.i.interfaces_file}", self.persist, self.unpersist, partial=True
            ))  # fmt: skip
        return [*steps, *verification(self.i)]


class Ipv6Tunnel(Procedure[Inputs, TunnelState, None]):
    name = RUNBOOK
    inputs = Inputs

    def observe(self, inputs: Inputs, session: None) -> TunnelState:
        state = observe(
            inputs.netns, inputs.tunnel, interfaces_file=inputs.interfaces_file,
            run_dir=inputs.run_dir,
        )  # fmt: skip
        sit = inputs.implementation != "kernel" or sit_supported()
        units = inputs.implementation == "userspace" and tunnel_unit.applies(inputs.netns)
        unit_text = tunnel_unit.read(inputs.tunnel) if units else None
        return dataclasses.replace(state, sit_available=sit, unit_host=units, unit_text=unit_text)

    def plan(self, inputs: Inputs, observed: TunnelState, host: str) -> Plan:
        return make_plan(inputs, observed, host)

    def steps(self, tx: Transaction[Inputs, TunnelState, None]) -> list[Action]:
        """Link, configuration, file; each undone back to what was found (:class:`Steps`)."""
        if not isinstance(tx.plan, TunnelPlan):  # the engine passes what make_plan made
            raise TypeError(f"ipv6-tunnel's steps need a TunnelPlan, not {type(tx.plan)}")
        return Steps(tx, tx.plan).actions()

    def finish(self, tx: Transaction[Inputs, TunnelState, None]) -> None:
        i, result, applied = tx.inputs, tx.result, tx.applied
        if applied.problems:
            left = "; ".join(str(exc) for _action, exc in applied.problems)
            result.summary = f"{applied.error}; rolling back left: {left}"
        elif not applied.ok:
            put_back = ", ".join(tx.shared(PutBack).details) or "nothing had changed"
            result.summary = f"{applied.error}; rolled back ({put_back})"
        if not applied.ok:
            return
        failing = [c.name for c in result.checks if not c.ok]
        done = "made" if tx.plan.changes else "already there"
        result.summary = f"{i.spec.name} {done}" + (
            f"; failing: {', '.join(failing)}" if failing else "; every check passes"
        )


PROCEDURE = Ipv6Tunnel()


def make_plan(inputs: Inputs, observed: TunnelState, host: str) -> Plan:
    """The runbook's planner (pure): observed state in, plan out."""
    spec = inputs.spec
    unit = None
    if observed.unit_host:
        unit = tunnel_unit.render(
            tunnel=spec.name, local=spec.local_ipv4, remote=spec.server_ipv4,
            mtu=spec.mtu, ttl=spec.ttl, address=str(spec.client), via=spec.server_ipv6,
            pidfile=tunnels.pidfile(inputs.run_dir, spec.name),
        )  # fmt: skip
    return tunnel_plan(observed, spec, host=host, interfaces_file=inputs.interfaces_file, unit=unit)


plan, apply = inputs.verbs(PROCEDURE)


# -- health (read-only) ------------------------------------------------------------------------

checks = tunnels.health  # host-health runs it too


def _run(i: Inputs, host: str) -> Result:
    """The health checks alone, as a read-only result."""
    found = checks(**i.health())
    failing = [c.name for c in found if not c.ok]
    return Result(
        RUNBOOK,
        host,
        "ok" if not failing else "failed",
        summary="healthy" if not failing else f"failing: {', '.join(failing)}",
        checks=found,
    )


run = inputs.reading(Inputs, _run)
