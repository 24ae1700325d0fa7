"""Every remaining runbook on the session's booted Debian 12 host, over SSH, with the
runbooks' real-host defaults and the lab's parameter sets (``parameters/lab/``, installed
with opsbook), as an operator runs them there:
``ssh operator@HOST sudo -i opsbook run RUNBOOK -f SET -p …`` (SET:
``/opt/opsbook/share/opsbook/parameters/lab/RUNBOOK.yaml``).

The host (conftest's ``booted_host``) gets its guests from its own libvirtd at
qemu:///system (:mod:`opslib.lab.booted.guests`: vm-nat1 and vm-netreg on the NAT network,
vm-netreg also on forward-bridge once netreg-attach gives it its NIC), and reaches a
tunnel broker end and the Cloudflare stand-in of its own (:mod:`opslib.lab.booted.peers`).
The sets carry only what the operator would read from the broker's tunnel page,
Cloudflare's URL and NetReg's MAC; everything else is the runbook's default. ``-p`` gives
what is per-host (:func:`opslib.lab.booted.runs.per_host`: the session's host is dh1, the sets
are written for daemon1) and what a test changes on purpose.

The cases run in the wiki page's order and build on each other (forward-bridge's br0
for netreg-attach, nat-bridge for the tunnel's /64 and the AAAA record). Each changing
runbook exits 0, files a record on the host, and reports no change when run again.
Assertions read what the host's own tools report: virsh as the operator, ip and ping
inside the host, systemctl, the host's record index.
"""

from __future__ import annotations

import json
import re

import pytest
from on_host import ssh, wait_for

from opslib.lab.booted import daemonhost, guests, peers, runs
from opslib.lab.campus import netreg
from opslib.lab.cloudflare import service
from opslib.lab.config import Lab

VIRSH = "virsh -c qemu:///system"  # as the operator (group libvirt)
TUNNEL_UNIT = "opsbook-6in4-he-ipv6.service"


def on_host(host: daemonhost.Host, command: str) -> str:
    """``command``'s output over SSH; it must exit 0."""
    rc, out = ssh(host, command)
    assert rc == 0, out
    return out


def run_book(host: daemonhost.Host, runbook: str, **params: str) -> str:
    """``sudo -i opsbook run RUNBOOK -f SET -p K V …`` over SSH, with the runbook's
    parameters/lab set as installed on the host, the host's own values and ``params`` on
    top; exit 0 and a record filed on the host (found in its index), else the test fails
    with the output."""
    command = runs.command(runbook, {**runs.per_host(host)[runbook], **params})
    assert "/opt/opsbook/share/opsbook/parameters/lab/" in command
    rc, out = ssh(host, command, timeout=300)
    assert rc == 0, out
    record = re.search(r"^record #(\d+): (\S+\.ipynb)", out, re.M)
    assert record, out
    index = on_host(host, f"sudo -i opsbook records --runbook {runbook} -n 1")
    assert re.search(rf"^{record.group(1)}\s.*\s{runbook}\s+{host.name}\s", index, re.M), index
    return out


def changed(out: str) -> bool:
    if re.search(r"^ok \(no change\)", out, re.M):
        return False
    assert re.search(r"^ok \(changed\)", out, re.M), out
    return True


@pytest.fixture(scope="module")
def host(booted_host: daemonhost.Host) -> daemonhost.Host:
    guests.up(booted_host, progress=lambda line: print(line, flush=True))
    peers.up(booted_host)
    return booted_host


def test_guests_run_in_the_hosts_own_libvirt(host: daemonhost.Host) -> None:
    out = on_host(host, f"{VIRSH} list --name")
    assert set(out.split()) == {"vm-nat1", "vm-netreg"}, out
    leases = on_host(host, f"{VIRSH} net-dhcp-leases default")
    for guest in guests.guests(host):
        assert re.search(rf"{guest.nat_mac}\s+ipv4\s+198\.51\.100\.\d+/24", leases), leases


def test_lab_status_shows_the_booted_host_its_services_and_guests(
    lab: Lab, host: daemonhost.Host, capsys: pytest.CaptureFixture[str]
) -> None:
    from opslib.cli import main

    main.main(["lab", "--prefix", lab.prefix, "status", "--json"])
    rows = {(r["component"], r["name"]): r for r in json.loads(capsys.readouterr().out)}
    assert rows[("booted host", host.name)]["state"] in ("running", "degraded"), rows
    assert host.address in rows[("booted host", host.name)]["detail"]
    for unit in ("ssh", "libvirtd"):  # as the host's own systemctl reports them
        assert rows[("host service", f"{host.name}/{unit}")]["state"] == "active", rows
    for guest in guests.guests(host):  # as its own virsh does
        assert rows[("host guest", f"{host.name}/{guest.name}")]["state"] == "running", rows
    assert rows[("netns", lab.campus_ns)]["state"] == "present"  # besides the lab's pieces
    main.main(["lab", "--prefix", lab.prefix, "status"])
    table = capsys.readouterr().out
    assert re.search(rf"^host service\s+{host.name}/libvirtd\s+active", table, re.M), table


def test_forward_bridge_puts_eth0_in_br0(host: daemonhost.Host) -> None:
    out = run_book(host, "forward-bridge", deadline="20")
    assert "FAIL" not in out, out
    info = on_host(host, f"{VIRSH} net-info forward-bridge")
    assert re.search(r"^Bridge:\s+br0$", info, re.M), info


def test_netreg_attach_puts_vm_netreg_on_campus(lab: Lab, host: daemonhost.Host) -> None:
    guest = guests.netreg_guest(host)
    assert guest.netreg_mac
    netreg.netreg_add(lab, guest.netreg_mac)  # the wiki's manual step: NetReg registers it
    assert changed(run_book(host, "netreg-attach"))  # vm-netreg and its MAC: the set
    nics = on_host(host, f"{VIRSH} domiflist {guest.name}")
    assert re.search(rf"\sforward-bridge\s+virtio\s+{guest.netreg_mac}$", nics, re.M), nics
    wait_for(
        lambda: str(netreg.netreg_leases(lab).get(guest.netreg_mac, "")),
        lambda ip: ip.startswith("192.0.2."),
        120,
        f"{guest.name}'s new NIC leasing from NetReg over br0",
    )
    assert not changed(run_book(host, "netreg-attach"))


def test_find_vm_ip_reports_both_guests(lab: Lab, host: daemonhost.Host) -> None:
    out = run_book(host, "find-vm-ip")  # the set probes
    campus_ip = netreg.netreg_leases(lab)[guests.netreg_guest(host).netreg_mac or ""]
    assert re.search(rf"^\s*vm-netreg\s.*\b{re.escape(campus_ip)}\b", out, re.M), out
    assert re.search(r"^\s*vm-nat1\s.*\b198\.51\.100\.\d+\b", out, re.M), out


def test_nat_bridge_ipv6_renames_default_and_adds_the_routed_64(host: daemonhost.Host) -> None:
    routed = peers.tunnel_parameters(host)["routed_prefix"]
    assert changed(run_book(host, "nat-bridge-ipv6"))  # rename_from default, the routed /64
    nets = on_host(host, f"{VIRSH} net-list --all --name")
    assert set(nets.split()) == {"nat-bridge", "forward-bridge"}, nets
    addr = on_host(host, "ip -6 -o addr show dev virbr0 scope global")
    assert routed.replace("::/64", "::1/64") in addr, addr
    assert not changed(run_book(host, "nat-bridge-ipv6"))


def tunnel_works(lab: Lab, host: daemonhost.Host, what: str) -> None:
    """New sessions until the host reaches the internet through he-ipv6 (its unit's)."""
    wait_for(
        lambda: ssh(
            host,
            f"systemctl is-active {TUNNEL_UNIT}; ip -6 route show default; "
            f"ping -6 -c 1 -W 2 {lab.internet_ipv6} >/dev/null && echo internet answers",
            timeout=30,
        )[1],
        lambda out: out.startswith("active\n") and "dev he-ipv6" in out and "answers" in out,
        120,
        what,
    )


def test_ipv6_tunnel_runs_as_a_systemd_unit_and_reaches_the_internet(
    lab: Lab, host: daemonhost.Host
) -> None:
    # the set: the broker's tunnel page for the host; the kernel has no sit: userspace
    planned = run_book(host, "ipv6-tunnel", apply="false")
    assert f"persist he-ipv6 as systemd unit {TUNNEL_UNIT}, enabled: back at boot" in planned
    assert "+ExecStart=/opt/opsbook/bin/python" in planned, planned
    assert changed(run_book(host, "ipv6-tunnel"))
    assert on_host(host, f"systemctl is-enabled {TUNNEL_UNIT}") == "enabled\n"
    route = on_host(host, "ip -6 route show default")
    assert "dev he-ipv6" in route, route
    on_host(host, f"ping -6 -c 1 -W 3 {lab.internet_ipv6}")  # the internet, through he
    assert not changed(run_book(host, "ipv6-tunnel"))


def test_the_tunnel_comes_back_when_its_unit_restarts(lab: Lab, host: daemonhost.Host) -> None:
    before = on_host(host, f"systemctl show -p MainPID --value {TUNNEL_UNIT}")
    on_host(host, f"sudo systemctl restart {TUNNEL_UNIT}")
    assert on_host(host, f"systemctl show -p MainPID --value {TUNNEL_UNIT}") != before
    tunnel_works(lab, host, "the tunnel back after its unit's restart")


def test_cloudflare_aaaa_publishes_vm_nat1(lab: Lab, host: daemonhost.Host) -> None:
    routed = peers.tunnel_parameters(host)["routed_prefix"].split("::")[0]
    name = f"vm-nat1-{host.name}.example.org"
    assert runs.per_host(host)["cloudflare-aaaa"]["record_name"] == name
    store = service.lab_store(lab)
    store.delete_records("example.org", name=name, type="AAAA")  # a kept lab's earlier run
    assert changed(run_book(host, "cloudflare-aaaa"))
    records = store.records("example.org", name=name, type="AAAA")
    assert len(records) == 1 and records[0]["content"].startswith(routed + ":"), records
    assert not changed(run_book(host, "cloudflare-aaaa"))


def test_host_health_passes_every_check(host: daemonhost.Host) -> None:
    out = run_book(host, "host-health")  # the tunnel's values, the stand-in and its token
    assert "FAIL" not in out and not re.search(r"\sfail\s", out), out


def test_network_inventory_lists_both_networks(host: daemonhost.Host) -> None:
    out = run_book(host, "network-inventory")
    assert re.search(r"^\s+nat-bridge\s+True\s+True\s+True\s+nat\s+virbr0\s", out, re.M), out
    assert re.search(r"^\s+forward-bridge\s+True\s+True\s+True\s+bridge\s+br0\s", out, re.M), out


def test_after_a_reboot_the_tunnel_bridge_and_networks_are_back(
    lab: Lab, host: daemonhost.Host
) -> None:
    # Last: the guests are not autostarted, so they do not come back. The host is shut
    # down and booted again on its own root (a `reboot` inside would end the container).
    daemonhost.reboot(lab, host.name, progress=lambda line: print(line, flush=True))
    peers.up(host)  # the lab's side of its links, again on its new network namespace
    tunnel_works(lab, host, "the tunnel back after the host booted again")
    assert on_host(host, "systemctl is-active networking libvirtd") == "active\nactive\n"
    assert f"inet {host.address}/24" in on_host(host, "ip -4 -o addr show br0")
    nets = on_host(host, f"{VIRSH} net-list --name")
    assert set(nets.split()) == {"nat-bridge", "forward-bridge"}, nets
