"""forward-bridge: br0 over eth0 in the interfaces file, a confirm-or-revert restart
of networking, and the libvirt network ``forward-bridge`` (``<forward mode='bridge'/>``).

The wiki page says: add ``iface eth0 inet manual`` / ``auto br0`` / ``iface br0 inet
dhcp`` with ``bridge_ports eth0`` and ``bridge_stp off``, then ``systemctl restart
networking``. Over SSH that restart is how an operator locks themselves out, so
:func:`apply` keeps a backup, checks the new file with ``ifup --no-act``, restarts,
and verifies br0 within a deadline; if that fails it restores the backup, restarts
again and checks the old state is back.

The shape of every changing runbook (opslib.contract.transaction): :class:`Inputs` (the inputs),
:func:`observe` (files, netlink, libvirt), the pure :func:`make_plan`, and steps. The
stanzas are planned in :mod:`opslib.procedures.forward_bridge.stanzas`, the kernel's view is
:mod:`opslib.procedures.forward_bridge.kernel`, the confirm-or-revert restart
:mod:`opslib.host.ifupdown.network_restart`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opslib.contract import inputs, transaction
from opslib.contract.inputs import param
from opslib.contract.transaction import Procedure, Transaction
from opslib.core.actions import Action
from opslib.core.changes import Change, Plan
from opslib.core.errors import ApplyError, HostError, InputError, UnknownName
from opslib.host.ifupdown import network_restart, source_tree
from opslib.host.ifupdown.network_restart import DEFAULT_RESTART, Restart, restart_argv
from opslib.host.kernel import netlink
from opslib.host.libvirt import netxml, virt
from opslib.host.libvirt.netxml import NetworkXml, bridge_network
from opslib.host.libvirt.virtxml import canonical
from opslib.procedures.forward_bridge.kernel import (
    KernelState,
    LinkFacts,
    check_links,
    kernel_state,
    observe_links,
    verify_bridge,
)
from opslib.procedures.forward_bridge.stanzas import bridge_summary, plan_files

RUNBOOK = "forward-bridge"


# -- parameters ------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Inputs(inputs.Declared):
    """The runbook's inputs, each converted to its declared type (the same check as
    ``opsbook run``'s); the plan carries them to apply (``Plan.inputs``). The last three
    are how apply restarts networking (:meth:`restart`)."""

    libvirt_uri: str = inputs.libvirt_uri()
    netns: str = inputs.netns()
    interfaces_file: str = param(
        "path", "the host's ifupdown interfaces file", "/etc/network/interfaces"
    )
    uplink: str = param(
        "ifname", "the NIC that becomes the bridge's port", "eth0", rules=("not bridge",)
    )
    bridge: str = param("ifname", "the bridge that forward-bridge VMs attach to", "br0")
    # static CIDR on the bridge; "" = the uplink's addressing (or DHCP, which brings the
    # gateway: so a static address needs one, and a gateway needs a static address)
    address: str = param(
        "ipv4-cidr?", "static IPv4 with prefix for the bridge, e.g. 192.0.2.10/24 (empty = "
        "keep the uplink's addressing)", "", rules=("needs gateway",),
    )  # fmt: skip
    gateway: str = param(
        "ipv4?", "default router, only with a static address", "",
        rules=("needs address", "in address"),
    )  # fmt: skip
    network_name: str = param(
        "network-name", "the libvirt network on the bridge (created when missing)", RUNBOOK
    )
    restart_command: str = param(
        "str", "restarts networking; may use {old} {new} {ifaces}", DEFAULT_RESTART
    )
    deadline: float = param(
        "float[1..3600]",
        "seconds from the restart until the bridge must work, else revert", 60.0,
    )  # fmt: skip
    backup_dir: str = param(
        "dir?", "an existing directory for the backups (empty = next to the interfaces file)", ""
    )

    def restart(self) -> Restart:
        return Restart(self.restart_command, self.deadline, self.backup_dir)

    def __post_init__(self) -> None:
        # What the declared types and rules do not say: the template with this netns.
        restart_argv(self.restart_command, self.netns, old="x", new="x", ifaces="x")


# -- observation ---------------------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    tree: source_tree.Tree
    links: dict[str, LinkFacts]
    network: netxml.Network | None


def observe_network(libvirt_uri: str, name: str) -> netxml.Network | None:
    with virt.connect(libvirt_uri) as conn:
        try:
            return virt.get_network(conn, name)
        except UnknownName:
            return None


def observe(p: Inputs) -> Observed:
    """Read the interfaces files, the links of the netns and the libvirt network."""
    if p.netns and not netlink.netns_exists(p.netns):
        raise InputError(f"network namespace {p.netns!r} does not exist; check `ip netns list`")
    return Observed(
        source_tree.load_tree(p.interfaces_file),
        observe_links(p.netns),
        observe_network(p.libvirt_uri, p.network_name),
    )


# -- planning: the kernel and libvirt (pure) ---------------------------------------------


def plan_network(net: netxml.Network | None, name: str, bridge: str) -> list[Change]:
    target = f"network:{name}"
    if net is None:
        return [
            Change(target, "define", f"define {name} (forward mode bridge on {bridge})", None,
                   bridge_network(name, bridge)),
            Change(target, "start", f"start {name}"),
            Change(target, "autostart", f"autostart {name}"),
        ]  # fmt: skip
    changes: list[Change] = []
    wanted = bridge_network(name, bridge, NetworkXml(net.xml).get("uuid") or "")
    if not NetworkXml(net.xml).same_config(wanted):
        summary = f"update {name}: forward mode bridge on {bridge}"
        if net.active:
            summary += " (restarted: guests on it stay on the bridge)"
        changes.append(Change(target, "update", summary, canonical(net.xml), wanted))
    elif not net.persistent:
        changes.append(Change(target, "define", f"make {name} persistent", None, wanted))
    if not net.active:
        changes.append(Change(target, "start", f"start {name} (inactive)"))
    if not net.autostart:
        changes.append(Change(target, "autostart", f"autostart {name} (off)"))
    return changes


@dataclass(frozen=True)
class BridgePlan(Plan):
    """forward-bridge's plan: with the interfaces files its steps write."""

    new_files: dict[str, str] = field(default_factory=dict)  # path -> the new text


def make_plan(p: Inputs, observed: Observed, host: str) -> BridgePlan:
    """The whole plan from observed state (pure)."""
    netns = p.netns
    kernel_converted = check_links(observed.links, p, netns)
    files, notes = plan_files(observed.tree, p)
    how = bridge_summary(observed.tree, files, p) if files else ""
    changes = [
        Change(
            f"file:{path}",
            "update",
            f"{p.uplink} -> inet manual, {p.bridge} over {p.uplink} ({how})",
            observed.tree.files[path].render(),
            text,
        )
        for path, text in files.items()
    ]
    if files or not kernel_converted:
        why = "the file changes" if files else f"the file is converted but {p.uplink} is not a "
        why += "" if files else f"port of an up {p.bridge} yet"
        changes.append(
            Change(
                f"service:networking{'@' + netns if netns else ''}",
                "restart",
                f"restart networking ({why}); confirm {p.bridge} works or revert",
            )
        )
    changes += plan_network(observed.network, p.network_name, p.bridge)
    return BridgePlan(RUNBOOK, host, tuple(changes), tuple(notes), inputs=p, new_files=files)


# -- apply -------------------------------------------------------------------------------


class ForwardBridge(Procedure[Inputs, Observed, Restart]):
    """The conversion: files written with confirm-or-revert, then the libvirt network.

    The session is the restart's settings (:meth:`Inputs.restart`)."""

    name = RUNBOOK
    inputs = Inputs
    observe_step = "observe"

    @contextmanager
    def session(self, inputs: Inputs) -> Iterator[Restart]:
        yield inputs.restart()

    def check_host(self, inputs: Inputs) -> None:
        if os.geteuid() != 0:
            raise HostError(
                f"apply must run as root: it writes {inputs.interfaces_file} and restarts "
                "networking; run it with sudo (plan works without)"
            )

    def observe(self, inputs: Inputs, session: Restart) -> Observed:
        return observe(inputs)

    def plan(self, inputs: Inputs, observed: Observed, host: str) -> Plan:
        return make_plan(inputs, observed, host)

    def steps(self, tx: Transaction[Inputs, Observed, Restart]) -> list[Action]:
        p, plan = tx.inputs, tx.plan
        if not isinstance(plan, BridgePlan):  # the engine passes what make_plan made
            raise TypeError(f"forward-bridge's steps need a BridgePlan, not {type(plan)}")
        work = tx.share(network_restart.Restarting(
            tx.session or Restart(), p.netns, p.interfaces_file, f"{p.uplink} {p.bridge}",
            made_links(p, tx.observed),
        ))  # fmt: skip
        tx.result.data["diff"] = "".join(c.diff for c in plan.changes if c.target[:5] == "file:")
        steps = []
        if any(c.action == "restart" for c in plan.changes):
            steps += network_restart.steps(
                work, tx.result, old_config=source_tree.flatten(tx.observed.tree),
                new_files=plan.new_files, iface=p.bridge,
                state=lambda: kernel_state(p.netns, p.uplink, p.bridge),
                verify=lambda: verify_bridge(p, p.netns),
            )  # fmt: skip
        net_changes = [c for c in plan.changes if c.target.startswith("network:")]
        if net_changes:
            steps.append(Action(
                f"libvirt network {p.network_name}",
                lambda detail: _apply_network(p, net_changes, detail),
                commits=True,  # the bridge works and is kept; the network is made on it
            ))  # fmt: skip
        return steps

    def finish(self, tx: Transaction[Inputs, Observed, Restart]) -> None:
        applied, result, p = tx.applied, tx.result, tx.inputs
        work = tx.shared(network_restart.Restarting)

        def state() -> KernelState:
            return kernel_state(p.netns, p.uplink, p.bridge)

        try:
            if applied.ok and result.changes:
                result.summary = "; ".join(c.summary for c in result.changes)
            elif applied.ok:
                result.summary = "nothing to do: the bridge and the network are as planned"
                with result.step("verify") as detail:
                    result.checks = verify_bridge(tx.inputs, tx.inputs.netns)
                    detail.append(", ".join(f"{c.name}: {c.status}" for c in result.checks))
            elif not network_restart.failed(work, applied, result, state):
                result.summary = transaction.failure_summary(applied)
        finally:
            work.clean_up()

    def comparable(self, observed: Observed) -> Any:
        files = {path: model.render() for path, model in observed.tree.files.items()}
        return files, observed.links, observed.network

    def observed_parts(self, inputs: Inputs, observed: Observed) -> dict[str, Any]:
        """Each interfaces file, the uplink, the bridge and its ports (guests' taps come
        and go with the VMs: left out), the libvirt network."""
        p, links = inputs, observed.links
        parts: dict[str, Any] = {
            f"interfaces file {path}": model.render() for path, model in observed.tree.files.items()
        }
        ports = sorted(
            n for n, link in links.items() if link.master == p.bridge and link.kind != "tun"
        )
        parts[f"link {p.uplink}"] = links.get(p.uplink)
        parts[f"link {p.bridge}"] = (links.get(p.bridge), ports)
        parts[f"libvirt network {p.network_name}"] = observed.network
        return parts


def made_links(p: Inputs, observed: Observed) -> tuple[str, ...]:
    """The bridge, when the apply creates it and the files a rollback restores do not
    declare it: what a rollback deletes if ifdown left it. One those files declare (file
    converted, kernel not yet) comes back with them and must stay."""
    if p.bridge in observed.links or observed.tree.ifaces(p.bridge):
        return ()
    return (p.bridge,)


PROCEDURE = ForwardBridge()
# apply (the restart_command, deadline and backup_dir given to apply count) runs
# restart_command with ``sh -c`` (inside ``netns`` when set); it may use ``{old}`` (a single
# file holding the configuration being left: ifdown must read that one, or it leaves the
# old DHCP client behind), ``{new}`` (the interfaces file) and ``{ifaces}`` (the uplink
# and the bridge). ``deadline`` is the number of seconds from the restart until the
# bridge must work. The default first takes the uplink and bridge down with the old file
# (stopping eth0's DHCP client), then with the new one (``inet manual`` flushes eth0's
# address: udhcpc's release on ifdown races its kill and can leave the address on what
# becomes a bridge port, as seen in the lab), then restarts networking.
plan, apply = inputs.verbs(PROCEDURE)


def default_backup_dir(p: Inputs) -> str:
    return network_restart.default_backup_dir(p.interfaces_file)


def _apply_network(p: Inputs, changes: list[Change], detail: list[str]) -> None:
    with virt.connect(p.libvirt_uri) as conn:
        for change in changes:
            if change.action in ("define", "update"):
                assert change.after is not None
                virt.define_network(conn, change.after)
                if change.action == "update" and virt.get_network(conn, p.network_name).active:
                    virt.restart_network(conn, p.network_name)
            elif change.action == "start":
                virt.start_network(conn, p.network_name)
            elif change.action == "autostart":
                virt.set_network_autostart(conn, p.network_name, True)
            detail.append(change.summary)
        net = virt.get_network(conn, p.network_name)
        if not (net.active and net.autostart and net.forward_mode == "bridge"):
            raise ApplyError(
                f"{p.network_name} is not active+autostarted in bridge mode after the changes"
            )
        detail.append(f"{p.network_name}: active, autostart, bridge {net.bridge}")
