"""nat-bridge-ipv6's plan (pure): the network's new definition with the routed /64,
the prefixes it replaces or refuses, the rename, the restart and the guests' taps.

From :class:`~opslib.procedures.nat_bridge_ipv6.observed.Observed` alone; the XML edits
are :mod:`opslib.host.libvirt.netxml` models, the rename's changes
:mod:`opslib.host.libvirt.network_change`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from opslib.core.changes import Change, Plan
from opslib.core.errors import InputError, UnknownName
from opslib.core.ipv6prefix import gateway
from opslib.host.libvirt import network_change, netxml, virt
from opslib.host.libvirt.netxml import IPv6Edit, NetworkXml
from opslib.host.libvirt.virtxml import canonical
from opslib.procedures.nat_bridge_ipv6.observed import GuestTap, Observed

RUNBOOK = "nat-bridge-ipv6"
# libvirt's network driver refuses an <ip> on networks it does not route for.
NO_IP_MODES = ("bridge", "hostdev", "passthrough", "private", "vepa")


def ipv6_edit(xml: str, net: ipaddress.IPv6Network) -> IPv6Edit:
    """The network XML with PREFIX::1/64 (see :meth:`NetworkXml.with_ipv6`)."""
    return NetworkXml(xml).with_ipv6(net)


def with_ipv6(xml: str, net: ipaddress.IPv6Network) -> str:
    return ipv6_edit(xml, net).xml


@dataclass(frozen=True)
class NatPlan(Plan):
    """nat-bridge-ipv6's plan: with what its steps need."""

    rename_from: str = ""  # the network renamed to ``network``, "" when none is
    bridge: str = ""  # the bridge the guests' taps go back on
    xml: str = ""  # the network's new definition
    guests: tuple[GuestTap, ...] = ()  # the running guests' NICs on it


def ipv6_plan(
    observed: Observed,
    *,
    host: str,
    network: str,
    prefix: ipaddress.IPv6Network,
    rename_from: str = "",
    replace_ipv6: bool = False,
    known_networks: Iterable[str] | None = None,
) -> NatPlan:
    """What apply would change, from observed state only."""
    target, source = observed.target, observed.source
    known_networks = observed.known if known_networks is None else known_networks
    notes: list[str] = []
    renaming = _renaming(observed, network, rename_from, known_networks, notes)
    base = source if renaming else target
    assert base is not None
    mode = netxml.parse_network(base.xml).forward_mode
    if mode in NO_IP_MODES:
        raise InputError(
            f"network {base.name} forwards in mode {mode}, where libvirt allows no <ip> "
            "(no prefix, no router advertisements); choose a NAT or routed network"
        )
    new_xml, what = _ipv6_change(base, network, prefix, replace_ipv6, notes)
    bridge = base.bridge
    running_taps = [t for t in observed.taps if t.tap]
    cut = ", ".join(sorted({t.domain for t in running_taps})) or "none"
    if renaming:
        assert source is not None
        new_xml, renames, rename_notes = network_change.rename_changes(
            source, observed.users, network, new_xml, what, cut
        )
        changes = list(renames)
        notes += rename_notes
    else:
        assert target is not None
        changes = _in_place(target, network, new_xml, what, prefix, running_taps, cut, notes)
    return NatPlan(
        RUNBOOK, host, tuple(changes), tuple(notes), rename_from=rename_from if renaming else "",
        bridge=bridge, xml=new_xml, guests=tuple(running_taps),
    )  # fmt: skip


def _renaming(
    observed: Observed,
    network: str,
    rename_from: str,
    known_networks: Iterable[str],
    notes: list[str],
) -> bool:
    """Whether the plan renames ``rename_from`` to ``network``; InputError when both or
    neither exist, a note when the rename was done before."""
    target, source = observed.target, observed.source
    if rename_from and rename_from != network:
        if target is not None and source is not None:
            raise InputError(
                f"both {rename_from} and {network} exist; undefine one of them or leave "
                "rename_from empty"
            )
        if target is None and source is None:
            raise UnknownName("network", rename_from, known_networks)
        if source is None:
            assert target is not None
            notes.append(_already_renamed(target, rename_from))
        return source is not None
    if target is None:
        raise UnknownName("network", network, known_networks)
    return False


def _in_place(
    target: virt.NetworkState,
    network: str,
    new_xml: str,
    what: str,
    prefix: ipaddress.IPv6Network,
    running_taps: list[GuestTap],
    cut: str,
    notes: list[str],
) -> list[Change]:
    """The changes to the network itself: its new definition, a restart when the running
    network lacks the prefix, or the running guests' detached taps back on its bridge."""
    bridge = target.bridge
    changes: list[Change] = []
    before = canonical(target.xml)
    if new_xml != before:
        changes.append(Change(f"network:{network}", "update", what, before, new_xml))
    if target.active and (new_xml != before or not NetworkXml(target.live_xml).has_ipv6(prefix)):
        changes.append(
            Change(
                f"network:{network}",
                "restart",
                f"restart {network}; reattach the taps of running guests ({cut})",
            )
        )
        notes.append(
            f"running guests ({cut}) are cut off from the stop of {network} until their "
            "taps are back on the bridge"
        )
    elif target.active:
        changes += [
            Change(f"link:{t.tap}", "attach", f"reattach {t.domain}'s tap {t.tap} to {bridge}",
                   t.master or "(detached)", bridge)
            for t in running_taps
            if t.master != bridge
        ]  # fmt: skip
    else:
        notes.append(f"{network} is not running: the prefix takes effect when it starts")
    return changes


def _ipv6_change(
    base: virt.NetworkState,
    network: str,
    prefix: ipaddress.IPv6Network,
    replace: bool,
    notes: list[str],
) -> tuple[str, str]:
    """The new config and what it changes. Every other IPv6 prefix of the network is
    replaced when ``replace`` (guests would keep addresses in one left behind), refused
    when the network lacks ``prefix``, and named in a note when it has it."""
    edit = ipv6_edit(base.xml, prefix)
    replaced = edit.replaces(prefix)
    gone = ([str(replaced)] if replaced is not None else []) + list(edit.other_prefixes())
    listed = f"prefix{'es' * (len(gone) > 1)} {', '.join(gone)}"
    them = "them" if len(gone) > 1 else "it"
    if gone and replace:
        new_xml = NetworkXml(edit.xml).without_other_ipv6(prefix).text
        what = f"replace {base.name}'s IPv6 {listed} with {prefix} ({gateway(prefix)}/64)"
        notes.append(
            f"guests lose their addresses in {', '.join(gone)}; they take new ones from {prefix}"
        )
    elif replaced is not None:
        old = f" ({edit.old})" if len(gone) == 1 else ""
        raise InputError(
            f"network {base.name} already has the IPv6 {listed}{old}; set replace_ipv6 to "
            f"replace {them} with {prefix}"
        )
    else:
        if gone:
            notes.append(
                f"{base.name} also has the IPv6 {listed}: guests keep their addresses there; "
                f"set replace_ipv6 to drop {them}"
            )
        new_xml = edit.xml
        was = f" (was {edit.old})" if edit.old else ""
        what = f"set {network}'s IPv6 to {gateway(prefix)}/64{was}"
    if edit.dropped:
        what += f"; drop its DHCPv6 {', '.join(edit.dropped)} (outside {prefix})"
    return new_xml, what


def _already_renamed(target: virt.NetworkState, rename_from: str) -> str:
    """The note for a rename done before, or InputError when ``target`` was not renamed
    from ``rename_from`` (a typo, or a network that never existed): a second run after
    the rename is no change, any other missing ``rename_from`` is bad input."""
    was = NetworkXml(target.xml).renamed_from()
    if was == rename_from:
        return f"{rename_from} is already renamed to {target.name}"
    how = f"was renamed from {was}" if was else "was not renamed from it"
    raise InputError(
        f"rename_from: there is no network {rename_from} to rename; {target.name} {how}: "
        f"leave rename_from empty to give {target.name} the prefix"
    )
