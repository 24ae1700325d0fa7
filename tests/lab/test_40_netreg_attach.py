"""netreg-attach on the lab's NetReg guest: bad MACs change nothing; after apply the
guest takes a lease from campus (NetReg's own lease file and the guest's console say
which) on forward-bridge, and find-vm-ip shows that address; a second apply is a no-op.

Needs br0 and the forward-bridge network: the fixture applies the forward-bridge
runbook (idempotent), as conventions ask of a module that needs an earlier step.
"""

from __future__ import annotations

import time

import pytest

from opslib.core.errors import InputError
from opslib.host.libvirt import virt
from opslib.lab.campus import netreg
from opslib.lab.config import Lab
from opslib.lab.simulated import guestconsole
from opslib.lab.simulated import parameters as lab_parameters
from opslib.procedures import find_vm_ip
from opslib.procedures import netreg_attach as na


@pytest.fixture(scope="module")
def bridged(lab: Lab) -> Lab:
    result = lab_parameters.apply_runbook(lab, "forward-bridge")
    assert result.status in ("changed", "unchanged"), result.summary
    netreg.netreg_add(lab, lab.netreg_guest.netreg_mac or "")
    return lab


def config_xml(lab: Lab, vm: str) -> str:
    import libvirt

    with virt.connect(lab.uri) as conn:
        return str(conn.lookupByName(vm).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))


def params(lab: Lab, **kw: str) -> dict[str, str]:
    g = lab.netreg_guest
    return {"host": "lab", "libvirt_uri": lab.uri, "vm": g.name, "mac": g.netreg_mac or "", **kw}


def test_bad_macs_get_one_line_and_change_nothing(bridged: Lab) -> None:
    vm = bridged.netreg_guest.name
    before = config_xml(bridged, vm)
    other = next(g for g in bridged.guests if g.name != vm)
    for bad in ("yo:ug:ot:fr:om:nr", "00:00:00:00:00:00", "33:33:00:00:00:01", "nonsense",
                other.nat_mac):  # fmt: skip
        with pytest.raises(InputError) as exc:
            na.plan(**params(bridged, mac=bad))
        assert "\n" not in str(exc.value), bad
    assert config_xml(bridged, vm) == before


def test_apply_puts_the_guest_on_campus_and_find_vm_ip_shows_it(bridged: Lab) -> None:
    g = bridged.netreg_guest
    mac = g.netreg_mac or ""
    plan = na.plan(**params(bridged))
    assert f'<mac address="{mac}"/>' in plan.diff
    result = na.apply(plan, libvirt_uri=bridged.uri)
    assert result.status == "changed", result.summary
    assert all(c.ok for c in result.checks)

    # What campus's NetReg dnsmasq leased, and what the guest says it has on that NIC.
    deadline = time.monotonic() + 60
    leased = ""
    while time.monotonic() < deadline and not leased:
        leased = netreg.netreg_leases(bridged).get(mac, "")
        time.sleep(1)
    assert leased, "NetReg never leased the registered MAC"
    report = None
    while time.monotonic() < deadline:
        report = guestconsole.guest_report(bridged, g.name)
        if report and any(a.startswith(leased + "/") for _i, a in report.addresses):
            break
        time.sleep(1)
    assert report and any(a.startswith(leased + "/") for _i, a in report.addresses)

    [vm] = find_vm_ip.find(libvirt_uri=bridged.uri, netns=bridged.host_ns, vm=g.name, probe=True)
    nic = next(n for n in vm.nics if n.mac == mac)
    assert (nic.network, nic.bridge) == ("forward-bridge", "br0")
    assert leased in nic.ips("ipv4", sources=["neighbour"])


def test_a_second_apply_changes_nothing(bridged: Lab) -> None:
    vm = bridged.netreg_guest.name
    before = config_xml(bridged, vm)
    plan = na.plan(**params(bridged))
    assert plan.empty
    assert na.apply(plan, libvirt_uri=bridged.uri).status == "unchanged"
    assert config_xml(bridged, vm) == before


def test_forward_bridge_stays_unchanged_with_a_guest_on_it(bridged: Lab) -> None:
    # libvirt's live network XML now counts a connection: not a reason to redefine.
    result = lab_parameters.apply_runbook(bridged, "forward-bridge")
    assert result.status == "unchanged", [c.summary for c in result.changes]
