"""Guests across a reboot of their host, for host-health.

After a power cycle libvirtd starts only the guests set to autostart: a guest a runbook
made reachable (its MAC registered with NetReg on the forward-bridge, an AAAA published
for it) stays off otherwise, and a DNS record then points at nothing. These checks say
so before any reboot, and name the fix (start the VM, not publish the record again).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from opslib.core.changes import Check
from opslib.core.shellcmd import command
from opslib.host.libvirt import virt, virtxml

COME_BACK = "guests come back after a reboot"


def _on_campus(nic: virtxml.Interface, forward_network: str, bridge: str) -> bool:
    """A NIC on the forward-bridge (network or host bridge): NetReg knows its MAC."""
    if nic.type == "network":
        return bool(forward_network) and nic.source == forward_network
    return nic.type == "bridge" and bool(bridge) and nic.source == bridge


def come_back(
    domains: Sequence[virt.Domain], *, forward_network: str, bridge: str,
    published: Mapping[str, Sequence[str]],
) -> list[Check]:  # fmt: skip
    """Every guest a runbook made reachable (its MAC registered with NetReg, an AAAA
    published for it) is set to autostart: else a power cycle leaves it off, and what
    points at it dark. A warn before any reboot, with the fix. Pure."""
    out, reachable = [], []
    for dom in domains:
        why = [f"{n.mac} on {n.source} (NetReg)" for n in dom.interfaces
               if _on_campus(n, forward_network, bridge)]  # fmt: skip
        why += [f"AAAA {name}" for name in published.get(dom.name, ())]
        if not why:
            continue
        reachable.append(dom.name)
        if dom.autostart:
            continue
        autostart = command("virsh", "autostart", dom.name)
        if dom.persistent:
            seen, fix = "autostart off: after a reboot it stays off", autostart
        else:  # a transient guest cannot be autostarted: it is gone after a reboot
            seen = "transient: a reboot removes it"
            fix = f"define it from its XML (virsh dumpxml, virsh define), then {autostart}"
        name = f"guest {dom.name} comes back after a reboot"
        out.append(Check(name, "warn", f"{seen}, and with it {', '.join(why)}", fix))
    if out:
        return out
    seen = f"set to autostart: {', '.join(reachable)}" if reachable else "no guest made reachable"
    return [Check(COME_BACK, "ok", seen)]


def down(vm: virt.Domain | None, record_name: str) -> Check | None:
    """A record whose VM is not running: what it needs is the VM started (after a power
    cycle, guests not set to autostart stay off), not the record published again."""
    if vm is None or vm.state not in ("shut off", "crashed", "paused"):
        return None
    verb = "resume" if vm.state == "paused" else "start"
    seen = f"VM {vm.name} is {vm.state}: {record_name} points at a guest that is down"
    return Check(f"DNS {record_name}", "fail", seen, command("virsh", verb, vm.name))
