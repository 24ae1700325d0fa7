"""nat-bridge-ipv6: give the NAT network the routed /64 of the tunnel broker.

The wiki's "nat-bridge setup": add ``<ip family='ipv6' address='PREFIX::1'
prefix='64'/>`` to the NAT network's XML, so that libvirt's dnsmasq sends router
advertisements and the guests take SLAAC addresses from the prefix. A network
restart leaves running guests' taps detached from the bridge, so apply puts every
one back (netlink), then waits until each guest's EUI-64 address answers ping6.

Renaming the stock ``default`` network to ``nat-bridge`` (``rename_from``) is part
of the plan only when asked; libvirt cannot rename a network, so it is a sequence of
steps (:mod:`opslib.host.libvirt.network_change`). When one fails before the new network runs, the
old definition is put back (defined, running, autostart as before); in every case the
running guests' taps go back on the bridge. The new network's ``<metadata>`` says what it
was renamed from: a second run is no change, while a ``rename_from`` that names no
network and was not renamed to ``network`` is refused (a typo is not "already renamed").

The plan refuses, in one line and before anything else, a network whose forward mode
takes no ``<ip>`` (bridge, hostdev, passthrough, private, vepa), and a network that has
other IPv6 prefixes unless ``replace_ipv6`` asks to replace them: then every one goes (a
prefix left beside the routed /64 keeps the guests' addresses in it), and the plan names
each and the DHCPv6 ranges and hosts dropped with them (libvirt would refuse them in the
new one). A network with the routed /64 and another prefix beside it is kept as it is,
with a note naming that prefix, unless ``replace_ipv6`` drops it.
apply has libvirt check the new definition by defining it before anything is stopped (a
running network keeps its running config until restarted): a refusal changes nothing and
its reason is in the result.

The shape of every changing runbook (opslib.contract.transaction): :class:`Inputs`,
``observe`` (:mod:`.observed`), the pure ``make_plan`` (:mod:`.planning`), and
steps, each with its undo; the XML edits are :mod:`opslib.host.libvirt.netxml` models,
the prefix rules :mod:`opslib.core.ipv6prefix`.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from typing import Any

import libvirt

from opslib.contract import inputs, transaction
from opslib.contract.inputs import param
from opslib.contract.transaction import Procedure, Transaction
from opslib.core.actions import Action, Detail
from opslib.core.changes import Check, Plan
from opslib.core.ipv6prefix import gateway
from opslib.core.slaac import eui64_address
from opslib.host.libvirt import guest_taps, network_change, virt
from opslib.host.libvirt.guest_taps import Cut as _Cut
from opslib.host.libvirt.guest_taps import reattach as _reattach
from opslib.host.libvirt.guest_taps import wait_for_guests as _wait_for_guests
from opslib.procedures.nat_bridge_ipv6.observed import Observed, observe
from opslib.procedures.nat_bridge_ipv6.planning import RUNBOOK, NatPlan, ipv6_plan, with_ipv6

# -- inputs ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Inputs(inputs.Declared):
    libvirt_uri: str = inputs.libvirt_uri()
    netns: str = inputs.netns()
    # network-name, not network: with rename_from it does not exist yet (observe says
    # what is missing, from the host)
    network: str = param("network-name", "the NAT network that gets the routed /64", "nat-bridge")
    prefix: str = param(
        "ipv6-prefix64", "the routed /64 from the tunnel broker", example="2001:db8:2::/64",
        rules=("ula if allow_ula",),
    )  # fmt: skip
    rename_from: str = param(
        "network-name?", "rename this network (e.g. default) to `network` first; empty for none",
        "",
    )  # fmt: skip
    allow_ula: bool = param("bool", "accept a unique-local (fc00::/7) prefix", False)
    replace_ipv6: bool = param(
        "bool",
        "replace every other IPv6 prefix the network has (drops their DHCPv6 ranges)", False,
    )  # fmt: skip
    timeout: float = 90.0  # seconds to wait for the guests' SLAAC addresses
    net: ipaddress.IPv6Network = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "net", ipaddress.IPv6Network(self.prefix))


# -- the steps ---------------------------------------------------------------------------------


@dataclass
class Cutting:
    """The guests' taps an apply cuts off and reattaches, shared with finish."""

    cuts: list[_Cut] = field(default_factory=list)
    waiting: Action | None = None  # the wait for the guests, known by identity in finish


class NatBridgeIpv6(virt.LibvirtSession, Procedure[Inputs, Observed, libvirt.virConnect]):
    name = RUNBOOK
    inputs = Inputs

    def observe(self, inputs: Inputs, session: libvirt.virConnect) -> Observed:
        return observe(session, inputs.netns, inputs.network, inputs.rename_from)

    def plan(self, inputs: Inputs, observed: Observed, host: str) -> Plan:
        return make_plan(inputs, observed, host)

    def steps(self, tx: Transaction[Inputs, Observed, libvirt.virConnect]) -> list[Action]:
        """The new config (checked, restarted) or the rename, then the taps back."""
        conn, i, observed, plan = tx.session, tx.inputs, tx.observed, tx.plan
        if not isinstance(plan, NatPlan):  # the engine passes what make_plan made
            raise TypeError(f"nat-bridge-ipv6's steps need a NatPlan, not {type(plan)}")
        bridge, netns = plan.bridge, i.netns
        shared = tx.share(Cutting())
        cuts = shared.cuts = [
            _Cut(t.domain, t.tap, t.mac, eui64_address(i.net, t.mac), 0.0)
            for t in observed.taps
            if t.tap
        ]
        actions = {c.action for c in tx.plan.changes}

        def stopping() -> None:
            for cut in cuts:
                cut.detached_at = time.monotonic()

        def reattach(detail: Detail) -> None:
            now = time.monotonic()
            for cut in cuts:
                cut.detached_at = cut.detached_at or now
            lost = _reattach(netns, bridge, cuts)
            detail.append(f"{len(cuts) - len(lost)} of {len(cuts)} taps on {bridge}")

        if plan.rename_from:
            assert observed.source is not None
            checked = with_ipv6(observed.source.xml, i.net)
            steps = network_change.rename_steps(
                conn, observed.source, observed.users, i.network, plan.xml, checked,
                stopping=stopping,
            )  # fmt: skip
        elif observed.target is not None:
            steps = network_change.update_steps(
                conn, observed.target, plan.xml if "update" in actions else None,
                restart="restart" in actions, stopping=stopping,
                reattach=lambda: _reattach(netns, bridge, cuts),
            )  # fmt: skip
        if actions & {"restart", "start", "attach"}:
            steps.append(Action(f"reattach guest taps to {bridge}", reattach))
        shared.waiting = _waiting(tx, bridge, cuts)
        return [*steps, shared.waiting]

    def finish(self, tx: Transaction[Inputs, Observed, libvirt.virConnect]) -> None:
        applied, result, network = tx.applied, tx.result, tx.inputs.network
        source, shared = tx.observed.source, tx.shared(Cutting)
        cuts = shared.cuts
        if applied.ok or applied.failed is shared.waiting:
            _summarise(tx)
        elif isinstance(tx.plan, NatPlan) and tx.plan.rename_from and source is not None:
            cut_off = any(c.detached_at for c in cuts) or bool(applied.undone)
            reattach = (
                (lambda: _reattach(tx.inputs.netns, source.bridge, cuts)) if cut_off else None
            )
            network_change.rename_failed(applied, result, source, network, reattach, len(cuts))
        elif applied.undone and applied.failed is not None and applied.failed.partial:
            result.summary = (
                f"{network} did not start with the new config ({applied.error}); "
                "the old one is back"
            )
        else:
            result.summary = transaction.failure_summary(applied)

    def comparable(self, observed: Observed) -> Any:
        return observed.target, observed.source, observed.users

    def observed_parts(self, inputs: Inputs, observed: Observed) -> dict[str, Any]:
        """The network, the one it is renamed from and the guests that use that one."""
        parts: dict[str, Any] = {f"libvirt network {inputs.network}": observed.target}
        if inputs.rename_from:
            parts[f"libvirt network {inputs.rename_from}"] = observed.source
            parts[f"guests on {inputs.rename_from}"] = observed.users
        return parts


PROCEDURE = NatBridgeIpv6()


def make_plan(inputs: Inputs, observed: Observed, host: str) -> Plan:
    """The runbook's planner (pure): observed state in, plan out."""
    return ipv6_plan(
        observed, host=host, network=inputs.network, prefix=inputs.net,
        rename_from=inputs.rename_from, replace_ipv6=inputs.replace_ipv6,
    )  # fmt: skip


def _waiting(
    tx: Transaction[Inputs, Observed, libvirt.virConnect], bridge: str, cuts: list[_Cut]
) -> Action:
    """The wait for each guest's SLAAC address, and its checks, as the last step.

    A failing check undoes nothing, by choice: the step is a point of no return
    (``commits``). The network already runs with the prefix and carries the guests that
    came back; undoing would cut every guest off a second time, for a guest that may only
    be slow or configured without SLAAC. The result is failed and names them (finish)."""
    i, conn = tx.inputs, tx.session

    def wait(detail: Detail) -> None:
        _wait_for_guests(i.netns, cuts, i.timeout)
        detail.append(f"{sum(c.answered_at is not None for c in cuts)} of {len(cuts)} answer")

    def checked() -> list[Check]:
        state = virt.network_state(conn, i.network)
        live = state.live_xml if state else ""
        return guest_taps.checks(i.netns, bridge, i.net, cuts, network=i.network, live=live)

    return Action("wait for each guest's SLAAC address", wait, check=checked, commits=True)


def _summarise(tx: Transaction[Inputs, Observed, libvirt.virConnect]) -> None:
    """Once the guests were waited for (the step passed or failed): how long each guest
    was cut off, which did not come back. The summary only: the status is the engine's."""
    result, network, net = tx.result, tx.inputs.network, tx.inputs.net
    cuts, changed = tx.shared(Cutting).cuts, bool(tx.plan.changes)
    result.add_table(
        "guests", guest_taps.table(cuts, changed=changed), key=("guest",), volatile=("cut off s",)
    )
    result.data["cut_off"] = [row for row in result.tables["guests"] if row["cut off s"]]
    lost = [c.domain for c in cuts if c.answered_at is None]
    failing = [c.name for c in result.checks if not c.ok]
    if lost:
        result.summary = (
            f"{network} has {gateway(net)}/64, but these guests did not come back: "
            f"{', '.join(lost)}"
        )
    elif failing:
        result.summary = f"{network} was changed, but failing: {', '.join(failing)}"
    elif result.status == "changed":
        rows = guest_taps.cut_rows(cuts)
        briefly = ", ".join(f"{c.domain} {s}s" for c, s in rows) or "no guest"
        result.summary = f"{network} has {gateway(net)}/64; cut off briefly: {briefly}"
    else:
        result.summary = f"{network} already has {gateway(net)}/64; every guest answers"


# -- the runbook's verbs ----------------------------------------------------------------

plan, apply = inputs.verbs(PROCEDURE)
