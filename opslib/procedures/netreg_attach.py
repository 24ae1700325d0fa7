"""netreg-attach: put a VM on forward-bridge with the MAC NetReg registered for it.

The wiki says: make a NetReg entry, then pass
``--network network=forward-bridge,mac=yo:ug:ot:fr:om:nr`` to ``virt-install``.
This validates the MAC (format, unicast, not all-zero, not that placeholder, not
used by another domain), checks that forward-bridge exists and is active, then
either attaches a virtio NIC with that MAC to an existing domain (persistent, and
live when it runs) or, with ``mode = "virt-install"``, gives the exact argument
for a new VM.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import libvirt

from opslib import virt
from opslib.changes import Change, Check, Plan, Result
from opslib.errors import InputError, UnknownName
from opslib.params import Param

RUNBOOK = "netreg-attach"
MODES = ("attach", "virt-install")
_MAC_PARAM = Param("mac", "mac", "")  # the MAC rules live in opslib.params, used as-is


def check_mac(mac: str) -> str:
    """The MAC normalised, or InputError (format, unicast, all-zero, wiki placeholder)."""
    return str(_MAC_PARAM.convert(mac))


@dataclass(frozen=True)
class DomainState:
    name: str
    running: bool
    config_xml: str  # persistent definition (VIR_DOMAIN_XML_INACTIVE)
    live_xml: str  # running definition ("" when shut off)


@dataclass(frozen=True)
class Observed:
    network: virt.Network | None
    macs_in_use: dict[str, list[str]]  # mac -> domains using it (config or live)
    domain: DomainState | None  # None in virt-install mode


def interface_xml(mac: str, network: str) -> str:
    return (
        f"<interface type='network'>\n"
        f"  <mac address='{mac}'/>\n"
        f"  <source network='{network}'/>\n"
        f"  <model type='virtio'/>\n"
        f"</interface>\n"
    )


def virt_install_argument(mac: str, network: str) -> str:
    return f"--network network={network},mac={mac}"


def _has_nic(xml: str, mac: str, network: str) -> bool:
    return any(i.mac == mac and i.source == network for i in virt.parse_interfaces(xml))


def _with_nic(xml: str, mac: str, network: str) -> str:
    """The domain XML text with the NIC after its last interface: the diff shows only it."""
    end = xml.rfind("</interface>")
    if end >= 0:
        line_start = xml.rfind("\n", 0, end) + 1
        indent = xml[line_start:end]
        at = xml.find("\n", end) + 1 or len(xml)
    else:
        end = xml.rfind("</devices>")
        if end < 0:
            raise InputError("the domain XML has no <devices>; cannot add a NIC to it")
        line_start = xml.rfind("\n", 0, end) + 1
        indent = xml[line_start:end] + "  "
        at = line_start
    nic = "".join(indent + line + "\n" for line in interface_xml(mac, network).splitlines())
    return xml[:at] + nic + xml[at:]


def make_plan(obs: Observed, *, host: str, vm: str, mac: str, network: str, mode: str) -> Plan:
    """Pure: observed state in, plan out; InputError for anything that must stop here."""
    if obs.network is None:
        raise InputError(
            f"network {network!r} does not exist on {host}; run the forward-bridge runbook first"
        )
    if not obs.network.active:
        raise InputError(
            f"network {network} is not active; start it (virsh net-start {network}) "
            "or run the forward-bridge runbook"
        )
    others = sorted(set(obs.macs_in_use.get(mac, ())) - ({vm} if mode == "attach" else set()))
    if others:
        raise InputError(
            f"MAC {mac} is already used by {', '.join(others)}; NetReg gives each VM its own MAC"
        )
    data: dict[str, Any] = {"vm": vm, "mac": mac, "network": network, "mode": mode}
    if mode == "virt-install":
        arg = virt_install_argument(mac, network)
        return Plan(RUNBOOK, host, (), (f"virt-install ... {arg}",), {**data, "argument": arg})

    dom = obs.domain
    assert dom is not None
    for iface in virt.parse_interfaces(dom.config_xml):
        if iface.mac == mac and iface.source != network:
            raise InputError(
                f"{vm} already has MAC {mac} on {iface.source or iface.type}; "
                f"detach it there first (virsh detach-interface {vm} {iface.type} --mac {mac})"
            )
    changes = []
    in_config = _has_nic(dom.config_xml, mac, network)
    in_live = dom.running and _has_nic(dom.live_xml, mac, network)
    if not in_config:
        changes.append(
            Change(
                f"domain:{vm}",
                "attach",
                f"add a virtio NIC {mac} on {network} to {vm}'s definition",
                before=dom.config_xml,
                after=_with_nic(dom.config_xml, mac, network),
            )
        )
    if dom.running and not in_live:
        changes.append(
            Change(
                f"domain:{vm}:live",
                "attach",
                f"hot-plug the NIC {mac} on {network} into running {vm}",
            )
        )
    notes = () if changes else (f"{vm} already has {mac} on {network}",)
    return Plan(RUNBOOK, host, tuple(changes), notes, data)


# -- observation ------------------------------------------------------------------------


def _macs_in_use(conn: libvirt.virConnect) -> dict[str, list[str]]:
    used: dict[str, list[str]] = {}
    with virt.translated("cannot list domains"):
        doms = conn.listAllDomains()
    for dom in doms:
        with virt.translated(f"cannot read domain {dom.name()}"):
            xmls = [dom.XMLDesc(0)]
            if dom.isActive() and dom.isPersistent():
                xmls.append(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        for xml in xmls:
            for iface in virt.parse_interfaces(xml):
                names = used.setdefault(iface.mac, [])
                if dom.name() not in names:
                    names.append(dom.name())
    return used


def _domain_state(conn: libvirt.virConnect, vm: str) -> DomainState:
    dom = virt.lookup_domain(conn, vm)
    with virt.translated(f"cannot read domain {vm}"):
        running = bool(dom.isActive())
        return DomainState(
            name=vm,
            running=running,
            config_xml=dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE),
            live_xml=dom.XMLDesc(0) if running else "",
        )


def observe(*, libvirt_uri: str, vm: str, network: str, mode: str) -> Observed:
    with virt.connect(libvirt_uri) as conn:
        try:
            net: virt.Network | None = virt.get_network(conn, network)
        except UnknownName:
            net = None
        domain = _domain_state(conn, vm) if mode == "attach" else None
        return Observed(net, _macs_in_use(conn), domain)


def _check_inputs(vm: str, mac: str, network: str, mode: str) -> str:
    if mode not in MODES:
        raise InputError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if mode == "attach" and not vm:
        raise InputError("vm is empty; name the VM to attach the NIC to (or use mode virt-install)")
    if not network:
        raise InputError("network is empty; the wiki's network is forward-bridge")
    return check_mac(mac)


def plan(
    *,
    host: str,
    libvirt_uri: str,
    vm: str,
    mac: str,
    network: str = "forward-bridge",
    mode: str = "attach",
) -> Plan:
    mac = _check_inputs(vm, mac, network, mode)
    obs = observe(libvirt_uri=libvirt_uri, vm=vm, network=network, mode=mode)
    return make_plan(obs, host=host, vm=vm, mac=mac, network=network, mode=mode)


def apply(the_plan: Plan, *, libvirt_uri: str) -> Result:
    """Attach what the plan says is missing; re-observes first, verifies after."""
    d = the_plan.data
    vm, mac, network, mode = d["vm"], d["mac"], d["network"], d["mode"]
    result = Result(RUNBOOK, the_plan.host, "unchanged")
    if mode == "virt-install":
        result.status = "ok"
        result.summary = f"virt-install ... {d['argument']}"
        result.data["argument"] = d["argument"]
        return result
    # Re-plan against what is there now: a NIC attached since planning is not added twice.
    fresh = plan(
        host=the_plan.host, libvirt_uri=libvirt_uri, vm=vm, mac=mac, network=network, mode=mode
    )
    if fresh.empty:
        result.summary = f"{vm} already has {mac} on {network}"
        result.checks = verify(libvirt_uri=libvirt_uri, vm=vm, mac=mac, network=network)
        return result
    flags = 0
    actions = {c.target for c in fresh.changes}
    if f"domain:{vm}" in actions:
        flags |= libvirt.VIR_DOMAIN_AFFECT_CONFIG
    if f"domain:{vm}:live" in actions:
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    with virt.connect(libvirt_uri) as conn:
        dom = virt.lookup_domain(conn, vm)
        with result.step(f"attach {mac} on {network} to {vm}") as detail:
            with virt.translated(f"cannot attach a NIC to {vm}"):
                dom.attachDeviceFlags(interface_xml(mac, network), flags)
            detail.append("config" if flags & libvirt.VIR_DOMAIN_AFFECT_CONFIG else "")
            detail.append("live" if flags & libvirt.VIR_DOMAIN_AFFECT_LIVE else "")
    result.changes = list(fresh.changes)
    result.checks = verify(libvirt_uri=libvirt_uri, vm=vm, mac=mac, network=network)
    failing = {c.name for c in result.checks if not c.ok}
    if not failing:
        result.status = "changed"
        result.summary = f"{vm} has a NIC {mac} on {network}"
    elif failing == {f"{vm} running has {mac}"}:
        # Only the hot-plug is missing: keep the NIC in the definition, as the check's
        # fix says (a restart of the guest picks it up); nothing to roll back.
        result.status = "changed"
        result.checks = [c if c.ok else Check(c.name, "warn", c.seen, c.fix) for c in result.checks]
        result.summary = f"{vm} has {mac} on {network} in its definition; restart it to use it"
    else:
        _rollback(libvirt_uri, vm, mac, network, flags)
        gone = not any(
            c.status == "ok" and "has" in c.name
            for c in verify(libvirt_uri=libvirt_uri, vm=vm, mac=mac, network=network)
        )
        result.status = "rolled back" if gone else "failed"
        result.summary = f"attaching {mac} to {vm} did not verify; " + (
            "detached it again" if gone else "detaching it again did not complete: check the VM"
        )
    return result


def verify(*, libvirt_uri: str, vm: str, mac: str, network: str) -> list[Check]:
    with virt.connect(libvirt_uri) as conn:
        state = _domain_state(conn, vm)
    checks = [
        Check(
            f"{vm} definition has {mac}",
            "ok" if _has_nic(state.config_xml, mac, network) else "fail",
            f"NIC {mac} on {network} in the persistent definition",
            "see libvirtd's log",
        )
    ]
    if state.running:
        checks.append(
            Check(
                f"{vm} running has {mac}",
                "ok" if _has_nic(state.live_xml, mac, network) else "fail",
                f"NIC {mac} on {network} in the running guest",
                "the guest may not support hot-plug: restart it to pick up the NIC",
            )
        )
    return checks


def _rollback(libvirt_uri: str, vm: str, mac: str, network: str, flags: int) -> None:
    with virt.connect(libvirt_uri) as conn:
        dom = virt.lookup_domain(conn, vm)
        # Nothing left to detach is fine: the result already says it failed.
        with contextlib.suppress(libvirt.libvirtError):
            dom.detachDeviceFlags(interface_xml(mac, network), flags)
