"""netreg-attach: put a VM on forward-bridge with the MAC NetReg registered for it.

The wiki says: make a NetReg entry, then pass
``--network network=forward-bridge,mac=yo:ug:ot:fr:om:nr`` to ``virt-install``.
This validates the MAC (format, unicast, not all-zero, not that placeholder, not
used by another domain), checks that forward-bridge exists and is active, then
either attaches a virtio NIC with that MAC to an existing domain (persistent, and
live when it runs) or, with ``mode = "virt-install"``, gives the exact argument
for a new VM.

The shape of every changing runbook (opslib.contract.transaction): :class:`Inputs`, ``observe``,
a pure ``plan``, and one step, the attach, checked by reading both definitions back
and undone (detached) when that fails.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import libvirt

from opslib.contract import inputs
from opslib.contract.inputs import param
from opslib.contract.transaction import Procedure, Transaction
from opslib.core.actions import Action, Detail
from opslib.core.changes import Change, Check, Plan
from opslib.core.errors import ApplyError, InputError, OpsError, UnknownName, VerificationFailed
from opslib.core.shellcmd import command
from opslib.host.libvirt import netxml, virt, virtxml

RUNBOOK = "netreg-attach"


@dataclass(frozen=True, kw_only=True)
class Inputs(inputs.Declared):
    """Each field converted to its declared type (the MAC: format, unicast, not all-zero,
    not the wiki's placeholder), the same check as ``opsbook run``'s."""

    libvirt_uri: str = inputs.libvirt_uri()
    vm: str = param("vm?", "the VM to attach the NIC to (empty with mode virt-install)", "")
    mac: str = param("mac", "the MAC NetReg registered for the VM")
    network: str = param("network", "the libvirt network on the campus bridge", "forward-bridge")
    mode: str = param(
        "choice[attach|virt-install]",
        "attach to a VM, or print the virt-install argument", "attach",
        rules=("attach needs vm",),
    )  # fmt: skip

    @property
    def nic(self) -> virtxml.Interface:
        return virtxml.Interface(self.mac, "network", self.network, model="virtio")


@dataclass(frozen=True)
class Observed:
    network: netxml.Network | None
    macs_in_use: dict[str, list[str]]  # mac -> domains using it (config or live)
    domain: virt.Definition | None  # None in virt-install mode


def virt_install_argument(mac: str, network: str) -> str:
    return command("--network", f"network={network},mac={mac}")


def _has_nic(xml: str, mac: str, network: str) -> bool:
    return any(i.mac == mac and i.source == network for i in virtxml.parse_interfaces(xml))


def make_plan(inputs: Inputs, obs: Observed, host: str) -> Plan:
    """Pure: observed state in, plan out; InputError for anything that must stop here."""
    vm, mac, network, mode = inputs.vm, inputs.mac, inputs.network, inputs.mode
    if obs.network is None:
        raise InputError(
            f"network {network!r} does not exist on {host}; run the forward-bridge runbook first"
        )
    if not obs.network.active:
        raise InputError(
            f"network {network} is not active; start it ({command('virsh', 'net-start', network)}) "
            "or run the forward-bridge runbook"
        )
    others = sorted(set(obs.macs_in_use.get(mac, ())) - ({vm} if mode == "attach" else set()))
    if others:
        raise InputError(
            f"MAC {mac} is already used by {', '.join(others)}; NetReg gives each VM its own MAC"
        )
    if mode == "virt-install":
        arg = virt_install_argument(mac, network)
        return Plan(RUNBOOK, host, (), (f"virt-install ... {arg}",))

    dom = obs.domain
    assert dom is not None
    for iface in virtxml.parse_interfaces(dom.config_xml):
        if iface.mac == mac and iface.source != network:
            raise InputError(
                f"{vm} already has MAC {mac} on {iface.source or iface.type}; "
                "detach it there first "
                f"({command('virsh', 'detach-interface', vm, iface.type, '--mac', mac)})"
            )
    changes = []
    if not _has_nic(dom.config_xml, mac, network):
        changes.append(
            Change(
                f"domain:{vm}",
                "attach",
                f"add a virtio NIC {mac} on {network} to {vm}'s definition",
                before=virtxml.canonical(dom.config_xml),
                after=virtxml.DomainXml(dom.config_xml).with_interface(inputs.nic).text,
            )
        )
    if dom.running and not _has_nic(dom.live_xml, mac, network):
        changes.append(
            Change(
                f"domain:{vm}:live",
                "attach",
                f"hot-plug the NIC {mac} on {network} into running {vm}",
            )
        )
    notes = () if changes else (f"{vm} already has {mac} on {network}",)
    return Plan(RUNBOOK, host, tuple(changes), notes)


def verify(*, conn: libvirt.virConnect, vm: str, mac: str, network: str) -> list[Check]:
    state = virt.definition(conn, vm)
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


class NetregAttach(virt.LibvirtSession, Procedure[Inputs, Observed, libvirt.virConnect]):
    name = RUNBOOK
    inputs = Inputs

    def observe(self, inputs: Inputs, session: libvirt.virConnect) -> Observed:
        try:
            net: netxml.Network | None = virt.get_network(session, inputs.network)
        except UnknownName:
            net = None
        domain = virt.definition(session, inputs.vm) if inputs.mode == "attach" else None
        return Observed(net, virt.macs_in_use(session), domain)

    def plan(self, inputs: Inputs, observed: Observed, host: str) -> Plan:
        return make_plan(inputs, observed, host)

    def steps(self, tx: Transaction[Inputs, Observed, libvirt.virConnect]) -> list[Action]:
        i, conn, targets = tx.inputs, tx.session, {c.target for c in tx.plan.changes}
        if not targets:
            return []
        config, live = f"domain:{i.vm}" in targets, f"domain:{i.vm}:live" in targets
        nic = i.nic.xml()

        def attach(detail: Detail) -> None:
            virt.attach_device(conn, i.vm, nic, config=config, live=live)
            detail += ["config" if config else "", "live" if live else ""]

        def detach(detail: Detail) -> None:
            # Nothing left to detach is fine; what counts is that the NIC is gone after.
            with contextlib.suppress(OpsError):
                virt.detach_device(conn, i.vm, nic, config=config, live=live)
            if any(c.ok and "has" in c.name for c in self._verify(tx)):
                raise ApplyError("detaching it again did not complete: check the VM")
            detail.append("detached it again")

        def check() -> list[Check]:
            found = self._verify(tx)
            if {c.name for c in found if not c.ok} == {f"{i.vm} running has {i.mac}"}:
                # Only the hot-plug is missing: keep the NIC in the definition, as the
                # check's fix says (a restart of the guest picks it up).
                return [c if c.ok else Check(c.name, "warn", c.seen, c.fix) for c in found]
            return found

        return [Action(f"attach {i.mac} on {i.network} to {i.vm}", attach, detach, check)]

    def _verify(self, tx: Transaction[Inputs, Observed, libvirt.virConnect]) -> list[Check]:
        i = tx.inputs
        return verify(conn=tx.session, vm=i.vm, mac=i.mac, network=i.network)

    def finish(self, tx: Transaction[Inputs, Observed, libvirt.virConnect]) -> None:
        i, result, applied = tx.inputs, tx.result, tx.applied
        if i.mode == "virt-install":
            result.status = "ok"
            result.data["argument"] = virt_install_argument(i.mac, i.network)
            result.summary = f"virt-install ... {result.data['argument']}"
        elif not isinstance(applied.error, VerificationFailed | None):
            result.summary = str(applied.error)
        elif not applied.ok:
            how = "detached it again" if applied.undone else (
                "detaching it again did not complete: check the VM"
            )  # fmt: skip
            result.summary = f"attaching {i.mac} to {i.vm} did not verify; {how}"
        elif tx.plan.empty:
            result.summary = f"{i.vm} already has {i.mac} on {i.network}"
            result.checks = self._verify(tx)
        elif any(c.status == "warn" for c in result.checks):
            result.summary = (
                f"{i.vm} has {i.mac} on {i.network} in its definition; restart it to use it"
            )
        else:
            result.summary = f"{i.vm} has a NIC {i.mac} on {i.network}"


PROCEDURE = NetregAttach()
plan, apply = inputs.verbs(PROCEDURE)
