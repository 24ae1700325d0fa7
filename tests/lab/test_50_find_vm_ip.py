"""find-vm-ip on the lab: every guest's IPv4 as libvirt's dnsmasq leased it and its
IPv6 SLAAC address as the guest reports it on its console, each with its source; the
probe brings back a guest whose neighbour entries were flushed just before.

Needs IPv6 on the NAT network: the fixture applies nat-bridge-ipv6 (idempotent).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from opslib.core.errors import UnknownName
from opslib.host.libvirt import virt
from opslib.lab.config import Lab
from opslib.lab.simulated import guestconsole
from opslib.lab.simulated import parameters as lab_parameters
from opslib.procedures import find_vm_ip
from opslib.records import notebook_json
from opslib.records import store as records

REPO = Path(__file__).resolve().parents[2]
OPSBOOK = str(REPO / ".venv" / "bin" / "opsbook")


def guest_slaac(lab: Lab, name: str, timeout: float = 60) -> str:
    """The global IPv6 on eth0 that the guest itself reports (its console)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = guestconsole.guest_report(lab, name)
        for iface, cidr in report.addresses if report else ():
            if iface == "eth0" and cidr.startswith(lab.routed_prefix.split("::")[0] + ":"):
                return cidr.split("/")[0]
        time.sleep(1)
    raise AssertionError(f"{name} reports no address in {lab.routed_prefix}")


def leased_ipv4(lab: Lab) -> dict[str, str]:
    """MAC -> IPv4 from libvirt's dnsmasq status file (what dnsmasq handed out)."""
    entries = json.loads(lab.nat_status_file.read_text() or "[]")
    return {e["mac-address"]: e["ip-address"] for e in entries}


@pytest.fixture(scope="module")
def ipv6(lab: Lab) -> Lab:
    result = lab_parameters.apply_runbook(lab, "nat-bridge-ipv6")
    assert result.status in ("changed", "unchanged"), result.summary
    return lab


def test_every_guest_has_its_leased_ipv4_and_its_slaac_ipv6_with_sources(ipv6: Lab) -> None:
    slaac = {g.name: guest_slaac(ipv6, g.name) for g in ipv6.guests}
    leases = leased_ipv4(ipv6)
    by_name = {
        v.name: v for v in find_vm_ip.find(libvirt_uri=ipv6.uri, netns=ipv6.host_ns, probe=True)
    }
    for g in ipv6.guests:
        nic = next(n for n in by_name[g.name].nics if n.mac == g.nat_mac)
        assert nic.bridge == ipv6.nat_bridge
        assert leases[g.nat_mac] in nic.ips("ipv4", sources=["lease"])
        assert leases[g.nat_mac] in nic.ips("ipv4", sources=["neighbour"])
        assert slaac[g.name] in nic.ips("ipv6", sources=["neighbour"])
        assert slaac[g.name] in nic.predicted and not nic.silent


def test_the_probe_finds_a_guest_whose_neighbours_were_flushed(ipv6: Lab) -> None:
    guest = ipv6.guests[1]
    address = guest_slaac(ipv6, guest.name)
    with IPRoute(netns=ipv6.host_ns, flags=0) as ip:
        bridge = ip.link_lookup(ifname=ipv6.nat_bridge)[0]
        for family in (2, 10):
            for entry in ip.get_neighbours(family=family, ifindex=bridge):
                if (entry.get_attr("NDA_LLADDR") or "").lower() == guest.nat_mac:
                    ip.neigh("del", dst=entry.get_attr("NDA_DST"), ifindex=bridge,
                             family=family)  # fmt: skip
    [vm] = find_vm_ip.find(libvirt_uri=ipv6.uri, netns=ipv6.host_ns, vm=guest.name, probe=True)
    nic = next(n for n in vm.nics if n.mac == guest.nat_mac)
    assert address in nic.ips("ipv6", sources=["neighbour"])


def test_the_probe_ends_when_the_guest_answered_not_at_its_deadline(ipv6: Lab) -> None:
    guest = ipv6.guests[0]
    address = guest_slaac(ipv6, guest.name)
    obs = find_vm_ip.observe(libvirt_uri=ipv6.uri, netns=ipv6.host_ns, vm=guest.name,
                             probe=True, probe_wait=60)  # fmt: skip
    [probe] = obs.probes
    # Awaited: the global and link-local EUI-64 addresses, and an IPv4 reply of the NIC.
    assert probe.awaited == 3 and probe.silent == () and address in probe.answered
    assert obs.probe_seconds < 30  # the 60 s deadline was not waited out
    report = find_vm_ip.run(host="lab", libvirt_uri=ipv6.uri, netns=ipv6.host_ns,
                            vm=guest.name, probe=True)  # fmt: skip
    step = next(s for s in report.steps if s.name.startswith("probe"))
    assert step.detail.startswith(f"{ipv6.nat_bridge}: all 3 awaited answered in ")


def test_an_unknown_vm_is_exit_2_with_the_names_it_could_mean(ipv6: Lab) -> None:
    with pytest.raises(UnknownName) as exc:
        find_vm_ip.run(host="lab", libvirt_uri=ipv6.uri, netns=ipv6.host_ns, vm="vm-nat")
    assert exc.value.exit_code == 2
    assert "vm-nat1" in str(exc.value)


@pytest.fixture
def odd_domains(lab: Lab) -> Iterator[None]:
    off = (
        "<domain type='qemu'><name>fv-off</name><memory unit='MiB'>32</memory>"
        "<os><type arch='x86_64'>hvm</type></os><devices><interface type='network'>"
        f"<mac address='52:54:00:0f:00:01'/><source network='{lab.nat_network}'/>"
        "</interface></devices></domain>"
    )
    bare = (
        "<domain type='qemu'><name>fv-bare</name><memory unit='MiB'>32</memory>"
        "<os><type arch='x86_64'>hvm</type></os></domain>"
    )
    with virt.connect(lab.uri) as conn:
        for xml in (off, bare):
            conn.defineXML(xml)
    try:
        yield
    finally:
        with virt.connect(lab.uri) as conn:
            for name in ("fv-off", "fv-bare"):
                conn.lookupByName(name).undefine()


def test_shut_off_and_interfaceless_vms_are_rows_not_errors(lab: Lab, odd_domains: None) -> None:
    result = find_vm_ip.run(host="lab", libvirt_uri=lab.uri, netns=lab.host_ns)
    rows = {r["vm"]: r for r in result.tables["addresses"]}
    assert rows["fv-off"]["state"] == "shut off" and "shut off" in rows["fv-off"]["note"]
    assert rows["fv-bare"]["note"] == "no interfaces"


def opsbook(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OPSBOOK, *args], capture_output=True, text=True, check=False, timeout=300
    )


def test_records_diff_of_two_runs_of_an_unchanged_lab_is_no_change(
    ipv6: Lab, tmp_path: Path
) -> None:
    """Two `opsbook run find-vm-ip` of the same lab, one neighbour entry in another state in
    between (one the probe leaves alone: PERMANENT): `records diff` says no change, and
    shows the state change only with --volatile."""
    values = lab_parameters.standalone_set(ipv6, "find-vm-ip")
    flags = [
        x
        for k, v in values.items()
        for x in ("-p", k, str(v).lower() if v is True or v is False else str(v))
    ]
    store = str(tmp_path)
    first = opsbook("run", "find-vm-ip", "-q", "--records", store, *flags)
    assert first.returncode == 0, first.stdout + first.stderr
    guest = ipv6.guests[0]
    ip4 = leased_ipv4(ipv6)[guest.nat_mac]
    pinned = ["ip", "-n", ipv6.host_ns, "neigh", "replace", ip4, "lladdr", guest.nat_mac,
              "nud", "permanent", "dev", ipv6.nat_bridge]  # fmt: skip
    subprocess.run(pinned, check=True)
    try:
        second = opsbook("run", "find-vm-ip", "-q", "--records", store, *flags)
    finally:
        unpin = ["ip", "-n", ipv6.host_ns, "neigh", "del", ip4, "dev", ipv6.nat_bridge]
        subprocess.run(unpin, check=True)
    assert second.returncode == 0, second.stdout + second.stderr
    newer, older = records.Store(tmp_path).list(runbook="find-vm-ip", limit=2)
    # The declaration travels in the record: the diff needs no runbook code.
    nb = json.loads(records.Store(tmp_path).abspath(newer).read_text())
    final = notebook_json.final_result(notebook_json.results_of(nb))
    assert final is not None and final["keys"]["addresses"] == [
        "vm",
        "ip",
        "mac",
        "family",
        "source",
    ]
    assert any(r["ip"] == ip4 and r["detail"] == "PERMANENT" for r in final["tables"]["addresses"])

    diff = opsbook("records", "diff", str(older.id), str(newer.id), "--records", store)
    assert diff.returncode == 0, diff.stderr
    lines = diff.stdout.splitlines()
    assert lines[:2] == [f"--- #{older.id}", f"+++ #{newer.id}"]
    # The checkout's revision may move between the runs when a commit lands (a shared
    # work tree): a change of code, not of the lab.
    changes = [x for x in lines[2:] if x[:1] in "~+-" and not x.startswith("~ revision:")]
    assert changes == []
    assert "--volatile shows them" in lines[-1]
    shown = opsbook(
        "records", "diff", str(older.id), str(newer.id), "--records", store, "--volatile"
    )
    who = f"{guest.name} {ip4} (mac {guest.nat_mac}, family ipv4, source neighbour)"
    assert f"~ addresses: {who}: detail " in shown.stdout
    assert "→ PERMANENT (volatile)" in shown.stdout
