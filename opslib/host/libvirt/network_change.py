"""Changing a libvirt network as steps with their undo (opslib.contract.transaction): a new config,
checked by libvirt before the network stops, then a restart; or a rename, which libvirt
does not have (nat-bridge-ipv6 plans and applies with these).

A rename defines the same config under the new name, moves autostart, stops and
undefines the old network (its bridge name is needed), starts the new one on the same
bridge, and points every guest interface at the new name, in the persistent config
(else the guest would not start again) and, for running guests, live. Until the new
network runs each step is undone when a later one fails; moving the guests is a point
of no return (the new network carries them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import libvirt

from opslib.core.actions import Action, Applied, Detail
from opslib.core.changes import Change, Result
from opslib.core.errors import ApplyError, LibvirtError, OpsError
from opslib.core.shellcmd import command
from opslib.host.libvirt import virt, virtxml
from opslib.host.libvirt.netxml import NetworkXml
from opslib.host.libvirt.virtxml import DomainXml, canonical


def define_checked(
    conn: libvirt.virConnect, name: str, xml: str, detail: Detail, *, running: bool
) -> None:
    """Define ``xml`` as ``name``'s config, or stop with libvirt's reason; either way the
    running network is untouched (its running config changes only at a restart)."""
    try:
        virt.define_network_checked(conn, name, xml)
    except LibvirtError as exc:
        detail.append(str(exc))
        kept = f" ({name} kept running; no guest was cut off)" if running else ""
        raise ApplyError(f"{exc}; nothing was changed{kept}") from None
    detail.append("libvirt accepts the new config")


def update_steps(
    conn: libvirt.virConnect,
    target: virt.NetworkState,
    new_xml: str | None,
    *,
    restart: bool,
    stopping: Callable[[], None],
    reattach: Callable[[], object],
) -> list[Action]:
    """Define ``new_xml`` (checked) and restart: undone by the old config, running again.
    ``stopping`` is called as the network stops; ``reattach`` puts the guests' taps back."""
    network = target.name

    def define(detail: Detail) -> None:
        assert new_xml is not None
        define_checked(conn, network, new_xml, detail, running=target.active)

    def define_back(detail: Detail) -> None:
        virt.define_network(conn, target.xml)
        detail.append("the old config defined again")

    def do_restart(detail: Detail) -> None:
        stopping()
        try:
            virt.restart_network(conn, network, new_xml)
        except OpsError as exc:
            detail.append(str(exc))
            raise

    def restart_back(detail: Detail) -> None:
        virt.restart_network(conn, network, target.xml)
        reattach()
        detail.append("old config running again")

    steps = []
    if new_xml is not None:
        steps.append(
            Action(f"define {network}'s new config (libvirt checks it)", define, define_back)
        )
    if restart:
        steps.append(
            Action(
                f"restart {network}",
                do_restart,
                restart_back,
                undo_name=f"roll back {network}",
                partial=True,
            )
        )
    return steps


def rename_changes(
    source: virt.NetworkState,
    users: Sequence[tuple[str, str]],
    network: str,
    new_xml: str,
    what: str,
    cut: str,
) -> tuple[str, list[Change], list[str]]:
    """The renamed config, the plan's changes and notes for renaming ``source`` (pure):
    ``what`` says what the new config changes, ``cut`` which guests are cut off."""
    old, bridge = source.name, source.bridge
    renamed = NetworkXml(new_xml).renamed(network).text
    changes = [Change(f"network:{network}", "define",
                      f"define {network} as {old}'s config; {what}", None, renamed)]  # fmt: skip
    if source.autostart:
        changes.append(
            Change(f"network:{network}", "autostart", f"autostart {network}", "off", "on")
        )
    changes.append(
        Change(
            f"network:{old}",
            "undefine",
            f"stop and undefine {old} (its bridge {bridge} moves to {network})",
            canonical(source.xml),
            None,
        )
    )
    for domain, xml in users:
        changes.append(
            Change(
                f"domain:{domain}",
                "update",
                f"{domain}: interfaces on {old} move to {network}",
                canonical(xml),
                DomainXml(xml).retargeted(old, network).text,
            )
        )
    changes.append(
        Change(
            f"network:{network}",
            "start",
            f"start {network} on {bridge}; reattach the taps of running guests ({cut})",
        )
    )
    notes = [
        f"running guests ({cut}) lose their network between stopping {old} and "
        f"reattaching their taps to {bridge}; libvirt keeps {network}'s bridge name"
    ]
    return renamed, changes, notes


def rename_steps(
    conn: libvirt.virConnect,
    source: virt.NetworkState,
    users: Sequence[tuple[str, str]],
    network: str,
    new_xml: str,
    checked_xml: str,
    *,
    stopping: Callable[[], None],
) -> list[Action]:
    """Rename ``source`` to ``network`` with ``new_xml`` (see the module's docstring).

    ``checked_xml`` is the new config under the old name: libvirt checks it as the old
    network's (under the new name it would refuse the bridge the old one holds)."""
    old = source.name

    def check(detail: Detail) -> None:
        define_checked(conn, old, checked_xml, detail, running=source.active)

    def old_back(detail: Detail) -> None:
        virt.define_network(conn, source.xml)
        if source.active:
            virt.start_network(conn, old)
        virt.set_network_autostart(conn, old, source.autostart)
        detail.append(f"rolled back: {old} defined and running again")

    def stop(_detail: Detail) -> None:
        stopping()
        virt.stop_network(conn, old)

    def start_old(_detail: Detail) -> None:
        if source.active:
            virt.start_network(conn, old)

    def start_new(detail: Detail) -> None:
        virt.start_network(conn, network)
        detail.append(f"{network} defined and running, {old} undefined")

    def move(detail: Detail) -> None:
        # Every guest moves even when one fails (a config left on the old name would not
        # start again); then what failed is reported.
        failures = []
        try:
            virt.set_network_autostart(conn, network, source.autostart)
        except OpsError as exc:
            failures.append(str(exc))
        for domain, xml in users:
            try:
                _move_guest(conn, domain, xml, old, network, detail)
            except OpsError as exc:
                failures.append(f"cannot update {domain}'s interfaces: {exc}")
        if failures:
            raise ApplyError("; ".join(failures))

    return [
        Action(f"define {old}'s new config (libvirt checks it)", check, old_back,
               undo_name=f"roll back to {old}"),
        Action(f"stop {old}", stop, start_old),
        Action(f"undefine {old}", lambda _d: virt.undefine_network(conn, old),
               lambda _d: virt.define_network(conn, source.xml)),
        Action(f"define {network}", lambda _d: virt.define_network(conn, new_xml),
               lambda _d: virt.undefine_network(conn, network)),
        Action(f"start {network}", start_new, lambda _d: virt.stop_network(conn, network)),
        Action(f"move autostart and guests to {network}", move, commits=True),
    ]  # fmt: skip


def _move_guest(
    conn: libvirt.virConnect, domain: str, xml: str, old: str, new: str, detail: Detail
) -> None:
    """A guest's interfaces on ``old`` moved to ``new``: persistent config, and live."""
    state = virt.definition(conn, domain)
    virt.define_domain(conn, DomainXml(xml).retargeted(old, new).text)
    if not state.running:
        return
    live = DomainXml(state.live_xml).retargeted(old, new)
    for iface in virtxml.parse_interfaces(state.live_xml):
        if iface.type != "network" or iface.source != old:
            continue
        element = live.interface(iface.mac)
        assert element is not None
        try:
            virt.update_live_device(conn, domain, element)
        except LibvirtError as exc:
            # The tap is reattached by netlink anyway; only libvirt's live record keeps
            # the old name until the guest restarts (its persistent config is updated).
            detail.append(f"{domain} {iface.mac}: live source kept ({exc})")


def rename_failed(
    applied: Applied,
    result: Result,
    source: virt.NetworkState,
    network: str,
    reattach: Callable[[], list[str]] | None,
    taps: int = 0,
) -> None:
    """The summary of a rename that stopped: the old network back unless the new one ran,
    the running guests' taps put back in every case (``reattach``, of ``taps`` taps: None
    when no guest was cut off yet)."""
    old, bridge, error = source.name, source.bridge, applied.error
    if reattach is None:
        result.summary = str(error)  # the new config was refused: nothing changed
        return
    count, taps_left = taps, ""
    try:
        with result.step(f"reattach guest taps to {bridge}") as detail:
            lost = reattach()
            detail.append(f"{count - len(lost)} of {count} taps back on {bridge}")
        # A tap that is gone is the guest's (the checks name it); the network is not.
        taps_left = f"; taps missing: {', '.join(lost)}" if lost else ""
    except OpsError as exc:
        taps_left = f"; guests' taps: {exc}"
    taps_text = taps_left
    if applied.kept:
        result.summary = (
            f"renaming {old} to {network} stopped: {error}; {network} runs on {bridge} with "
            f"the guests' taps put back{taps_text}; fix the rest by hand "
            f"({command('virsh', 'net-autostart', network)}, virsh edit GUEST)"
        )
    elif applied.problems:
        problems = "; ".join(str(exc) for _action, exc in applied.problems)
        result.summary = (
            f"{network}: {error}; putting {old} back failed too: {problems}; define it again "
            f"from data.restore_xml (virsh net-define, net-start){taps_text}"
        )
        result.data["restore_xml"] = canonical(source.xml)
    else:
        result.summary = f"{network}: {error}; {old} is back and running{taps_text}"
