"""forward-bridge in the lab: eth0 becomes br0 with a campus lease, and a real rollback.

Runs in the wiki page's order and leaves the host converted (br0 over eth0, network
forward-bridge active + autostarted): test_40_netreg_attach builds on it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from opslib.host.ifupdown.network_restart import restart_argv
from opslib.host.kernel import netlink
from opslib.host.libvirt import virt
from opslib.lab.campus import netreg
from opslib.lab.config import Lab
from opslib.lab.simulated import parameters as lab_parameters
from opslib.procedures import forward_bridge as fb

pytestmark = pytest.mark.lab


def bare_file(lab) -> str:
    """The host's file as freshly installed (what `lab up` writes)."""
    return (
        "# The lab daemon host's /etc/network/interfaces, as freshly installed.\n"
        f"source {sourced(lab)}/*\n\n"
        "auto lo\niface lo inet loopback\n\n"
        "auto eth0\niface eth0 inet dhcp\n"
    )


def sourced(lab) -> str:
    """The lab's own interfaces.d (never this machine's /etc/network/interfaces.d)."""
    return f"{Path(lab.interfaces_file).parent}/interfaces.d"


def static_file(lab) -> str:
    return bare_file(lab).replace(
        "iface eth0 inet dhcp\n",
        f"iface eth0 inet static\n\taddress {lab.host_eth0_ip}/24\n"
        f"\tgateway {lab.campus_gateway}\n",
    )


def lab_plan(lab: Lab) -> dict[str, Any]:
    """The lab's forward-bridge set, as plan() takes it."""
    return lab_parameters.arguments(fb.plan, lab_parameters.standalone_set(lab, "forward-bridge"))


def lab_restart(lab: Lab) -> str:
    """The lab host's "restart networking" (ifupdown in its netns and mounts)."""
    return str(lab_parameters.standalone_set(lab, "forward-bridge")["restart_command"])


def switch_to(lab, text: str) -> None:
    """Put ``text`` in the host's file and restart its networking with the lab's command."""
    current = Path(lab.interfaces_file).read_text()
    if current == text and netlink.link_by_name(lab.host_ns, "eth0"):
        return
    with tempfile.NamedTemporaryFile("w", suffix=".old", delete=False) as old:
        old.write(current.replace(f"source {sourced(lab)}/*\n", ""))
    try:
        Path(lab.interfaces_file).write_text(text)
        argv = restart_argv(
            lab_restart(lab), lab.host_ns,
            old=old.name, new=str(lab.interfaces_file), ifaces="eth0 br0",
        )  # fmt: skip
        subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)
    finally:
        os.unlink(old.name)


def drop_network(lab) -> None:
    with virt.connect(lab.uri) as conn:
        try:
            net = conn.networkLookupByName("forward-bridge")
        except libvirt.libvirtError:
            return
        if net.isActive():
            net.destroy()
        if net.isPersistent():
            net.undefine()


def ipv4(lab, name: str) -> list[str]:
    link = netlink.link_by_name(lab.host_ns, name)
    if link is None:
        return []
    return sorted(
        f"{a.address}/{a.prefix}"
        for a in netlink.addresses(lab.host_ns, ifindex=link.index)
        if a.family == "ipv4"
    )


def acks(lab) -> list[str]:
    """NetReg dnsmasq's DHCPACK log lines for the host's MAC."""
    log = Path(lab.netreg_log)
    lines = log.read_text().splitlines() if log.exists() else []
    return [line for line in lines if "DHCPACK" in line and lab.host_eth0_mac in line]


def backups(lab) -> list[Path]:
    kept = Path(lab.interfaces_file).parent / ".opsbook-backups"
    return sorted(kept.glob("interfaces.opsbook-*"))


@pytest.fixture(scope="module")
def host(lab) -> Iterator:
    """The lab host bare: eth0 on DHCP, no br0, no forward-bridge network."""
    netreg.set_campus_refuses_host(lab, False)
    switch_to(lab, bare_file(lab))
    drop_network(lab)
    assert ipv4(lab, "eth0") == [f"{lab.host_eth0_ip}/24"], "the bare lab host has no lease"
    yield lab
    netreg.set_campus_refuses_host(lab, False)


def test_plan_on_the_bare_host_shows_the_diff_and_changes_nothing(host) -> None:
    before = Path(host.interfaces_file).read_bytes()
    plan = fb.plan(**lab_plan(host))
    assert [c.action for c in plan.changes] == ["update", "restart", "define", "start", "autostart"]
    for line in ("-auto eth0", "-iface eth0 inet dhcp", "+iface eth0 inet manual", "+auto br0",
                 "+iface br0 inet dhcp", "+\tbridge_ports eth0", "+\tbridge_stp off"):  # fmt: skip
        assert line + "\n" in plan.diff
    assert Path(host.interfaces_file).read_bytes() == before
    assert netlink.link_by_name(host.host_ns, "br0") is None
    assert json.dumps(plan.to_json())


def test_apply_rolls_back_when_the_bridges_gateway_does_not_answer(host) -> None:
    """Previous state: eth0 static; br0 is given its address with a gateway nobody holds.

    (br0 takes over eth0's address by default, so a static eth0 no longer leads to a
    DHCP br0 that campus could refuse: the parameters make the conversion fail instead.)
    """
    previous = static_file(host)
    switch_to(host, previous)
    assert ipv4(host, "eth0") == [f"{host.host_eth0_ip}/24"]
    nobody = str(ipaddress.ip_network(host.campus_network)[-2])
    plan = fb.plan(**{**lab_plan(host), "address": f"{host.host_eth0_ip}/24", "gateway": nobody})
    # nobody answers: the apply waits out its whole deadline, so a short one
    result = fb.apply(plan, restart_command=lab_restart(host), deadline=15)

    assert result.status == "rolled back", result.summary
    assert f"gateway answers: ping {nobody}: no reply" in result.summary
    # the file: byte for byte the previous one, and the backup kept
    assert Path(host.interfaces_file).read_text() == previous
    backup = Path(result.data["backups"][str(host.interfaces_file)])
    assert backup.read_text() == previous
    # the kernel: eth0 has its address back, no bridge, default route via eth0
    assert ipv4(host, "eth0") == [f"{host.host_eth0_ip}/24"]
    assert netlink.link_by_name(host.host_ns, "br0") is None
    eth0 = netlink.link_by_name(host.host_ns, "eth0")
    assert eth0 is not None and eth0.master == 0
    route = netlink.default_route(host.host_ns)
    assert route is not None and (route.gateway, route.ifindex) == (host.campus_gateway, eth0.index)
    steps = [s.name for s in result.steps]
    assert steps[-3:] == [
        "restore backup",
        "restart networking (rollback)",
        "verify previous state",
    ]
    assert all(s.seconds >= 0 for s in result.steps)
    assert any(c.name == "previous state back" and c.ok for c in result.checks)
    # nothing of libvirt was touched after the failed verification
    with virt.connect(host.uri) as conn:
        assert "forward-bridge" not in [n.name for n in virt.list_networks(conn)]
    switch_to(host, bare_file(host))
    assert ipv4(host, "eth0") == [f"{host.host_eth0_ip}/24"]


def test_apply_converts_eth0_to_br0_which_takes_a_campus_lease(host) -> None:
    assert Path(host.interfaces_file).read_text() == bare_file(host)
    acks_before = acks(host)
    plan = fb.plan(**lab_plan(host))
    result = fb.apply(plan, restart_command=lab_restart(host), deadline=60)

    assert result.status == "changed", result.summary
    assert Path(host.interfaces_file).read_text() == plan.new_files[str(host.interfaces_file)]
    # the kernel: br0 is a bridge with eth0 as its port and the campus address
    br0 = netlink.link_by_name(host.host_ns, "br0")
    assert br0 is not None and br0.kind == "bridge" and br0.up
    assert netlink.bridge_ports(host.host_ns)["br0"] == ["eth0"]
    assert ipv4(host, "br0") == [f"{host.host_eth0_ip}/24"] and ipv4(host, "eth0") == []
    # campus: NetReg's dnsmasq acknowledged a lease for the host's MAC during the apply
    assert len(acks(host)) > len(acks_before)
    assert netreg.netreg_leases(host).get(host.host_eth0_mac) == host.host_eth0_ip
    # libvirt: forward-bridge in bridge mode on br0, active and autostarted
    with virt.connect(host.uri) as conn:
        net = virt.get_network(conn, "forward-bridge")
    assert (net.forward_mode, net.bridge, net.active, net.autostart) == (
        "bridge",
        "br0",
        True,
        True,
    )
    # the record: diff, backup, verification, timed steps
    record = json.loads(json.dumps(result.to_json()))
    assert "+iface br0 inet dhcp" in record["data"]["diff"]
    backup = Path(record["data"]["backups"][str(host.interfaces_file)])
    assert backup.read_text() == bare_file(host)
    assert backup.parent.name == ".opsbook-backups"
    assert {c["name"]: c["status"] for c in record["checks"]} == {
        "br0 up": "ok", "eth0 is its port": "ok", "br0 has an address": "ok",
        "eth0 has no address": "ok", "default route": "ok", "gateway answers": "ok",
    }  # fmt: skip
    names = [s["name"] for s in record["steps"]]
    assert names == ["observe", "back up", "write", "validate (ifup --no-act)",
                     "arm the revert watchdog", "restart networking", "verify",
                     "libvirt network forward-bridge"]  # fmt: skip
    # the watchdog was told: it exited without touching anything
    pid = int(record["steps"][4]["detail"].split()[1].rstrip(","))
    assert (
        not Path(f"/proc/{pid}").exists()
        or "opslib.host.ifupdown.confirm" not in Path(f"/proc/{pid}/cmdline").read_text()
    )
    assert all(s["ok"] and s["seconds"] >= 0 for s in record["steps"])


def test_a_second_apply_reports_no_change(host) -> None:
    text = Path(host.interfaces_file).read_bytes()
    kept = backups(host)
    plan = fb.plan(**lab_plan(host))
    assert plan.empty, [c.summary for c in plan.changes]
    result = fb.apply(plan, restart_command=lab_restart(host), deadline=60)
    assert result.status == "unchanged"
    assert all(c.ok for c in result.checks)
    assert Path(host.interfaces_file).read_bytes() == text
    assert backups(host) == kept
    assert ipv4(host, "br0") == [f"{host.host_eth0_ip}/24"]
