"""The bare lab, asserted on what its real components report.

libvirt's own DHCP leases, the host netns's neighbour table (netlink), NetReg's
lease file, the guests' own console reports, a throwaway DHCP client on campus,
and a second lab brought up and down to prove ``down`` leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from pyroute2 import IPRoute

from opslib.cli import main
from opslib.core.errors import HostError
from opslib.lab import labstatus, processes
from opslib.lab.campus import netreg
from opslib.lab.config import Lab
from opslib.lab.simulated import control, guestconsole, labvirt

T = TypeVar("T")


def eventually(probe: Callable[[], T], timeout: float, what: str, every: float = 0.5) -> T:
    """``probe()`` once it is truthy; fails with ``what`` and the last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            assert value, f"{what} (last seen: {value!r})"
            return value
        time.sleep(every)


def neighbours(lab: Lab, ifname: str) -> dict[str, tuple[str, int]]:
    """MAC -> (IPv4, NUD state) of the host netns's neighbour table on ``ifname``."""
    with IPRoute(netns=lab.host_ns, flags=0) as ipr:
        (index,) = ipr.link_lookup(ifname=ifname)
        found = {}
        for entry in ipr.get_neighbours(family=socket.AF_INET, ifindex=index):
            mac, ip = entry.get("NDA_LLADDR"), entry.get("NDA_DST")
            if mac and ip and not ipaddress.ip_address(ip).is_multicast:
                found[mac] = (ip, entry["state"])
        return found


def holds(lab: Lab, guest: str, cidr: str) -> guestconsole.GuestReport | None:
    """The guest's last console report, if it lists ``cidr`` among its addresses."""
    report = guestconsole.guest_report(lab, guest)
    return report if report and cidr in {addr for _, addr in report.addresses} else None


NUD_USABLE = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80  # REACHABLE STALE DELAY PROBE NOARP PERMANENT


def test_every_guest_holds_a_nat_lease_it_reports_itself(lab: Lab) -> None:
    leases = labvirt.nat_leases(lab)
    nat = ipaddress.ip_network(f"{lab.nat_ipv4}/{lab.nat_prefixlen}", strict=False)
    for guest in lab.guests:
        assert guest.nat_mac in leases, f"{guest.name} has no lease on {lab.nat_network}"
        leased = leases[guest.nat_mac]
        assert ipaddress.ip_address(leased) in nat
        # the guest itself holds that address (its console report, from `ip -o addr`)
        report = eventually(
            lambda g=guest, ip=leased: holds(lab, g.name, f"{ip}/{lab.nat_prefixlen}"),
            30,
            f"{guest.name} reports {leased} on its console",
        )
        assert report.tick >= 1


def test_every_guest_shows_in_the_host_neighbour_table_with_its_mac(lab: Lab) -> None:
    leases = labvirt.nat_leases(lab)
    want = {g.nat_mac: leases[g.nat_mac] for g in lab.guests}

    def seen() -> dict[str, tuple[str, int]] | None:
        table = neighbours(lab, lab.nat_bridge)
        ok = all(
            mac in table and table[mac][0] == ip and table[mac][1] & NUD_USABLE
            for mac, ip in want.items()
        )
        return table if ok else None

    table = eventually(seen, 30, f"every guest MAC in the {lab.host_ns} neighbour table")
    assert {mac: table[mac][0] for mac in want} == want


def test_host_eth0_holds_its_campus_lease_and_reaches_he(lab: Lab) -> None:
    with IPRoute(netns=lab.host_ns, flags=0) as ipr:
        (eth0,) = ipr.link_lookup(ifname="eth0")
        link = ipr.get_links(eth0)[0]
        addrs = {(a.get("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=eth0)}
        routes = ipr.get_default_routes(family=socket.AF_INET)
    assert link.get("IFLA_ADDRESS") == lab.host_eth0_mac
    assert (lab.host_eth0_ip, 24) in addrs
    assert [r.get("RTA_GATEWAY") for r in routes] == [lab.campus_gateway]
    # NetReg (campus dnsmasq) handed it out: its lease file says so
    assert netreg.netreg_leases(lab).get(lab.host_eth0_mac) == lab.host_eth0_ip
    # the broker's IPv4 endpoint is reachable from the host through campus
    ping = processes.ns_exec(lab.host_ns, ["ping", "-c", "1", "-W", "2", lab.he_ipv4], check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_netreg_guest_gets_no_campus_address_until_registered(lab: Lab) -> None:
    mac = lab.netreg_guest.netreg_mac
    assert mac is not None
    assert mac not in netreg.netreg_registered(lab)
    assert netreg.dhcp_probe(lab, mac, timeout=4) is None
    try:
        assert netreg.netreg_add(lab, mac) is True
        assert netreg.netreg_add(lab, mac) is False  # already there: no change
        leased = netreg.dhcp_probe(lab, mac)
        assert leased is not None
        assert ipaddress.ip_address(leased) in ipaddress.ip_network(lab.campus_network)
        assert netreg.netreg_leases(lab).get(mac) == leased
    finally:
        netreg.netreg_remove(lab, mac)
    # unregistered again: campus ignores it, even though it still holds a lease
    assert netreg.dhcp_probe(lab, mac, timeout=4) is None


def test_netreg_rejects_a_bad_mac_before_touching_the_registry(lab: Lab) -> None:
    before = lab.netreg_hosts_file.read_text()
    from opslib.core.errors import InputError

    with pytest.raises(InputError, match="not a MAC"):
        netreg.netreg_add(lab, "52:54:00:zz:00:01")
    with pytest.raises(InputError, match="multicast"):
        netreg.netreg_add(lab, "01:00:5e:00:00:01")
    assert lab.netreg_hosts_file.read_text() == before


def test_guest_shell_runs_a_command_in_the_guest(lab: Lab) -> None:
    guest = lab.guests[0]
    rc, out = guestconsole.guest_shell(lab, guest.name, "cat /sys/class/net/eth0/address; hostname")
    assert rc == 0
    assert out.split() == [guest.nat_mac, guest.name]
    rc, _ = guestconsole.guest_shell(lab, guest.name, "false")
    assert rc == 1


def test_status_lists_what_is_up(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    rows = labstatus.status(lab)
    state = {(r["component"], r["name"]): r for r in rows}
    for ns in lab.namespaces:
        assert state[("netns", ns)]["state"] == "present"
    assert state[("daemon", "libvirtd")]["state"] == "running"
    assert state[("daemon", "virtlogd")]["state"] == "running"
    assert state[("netreg", "dnsmasq")]["state"] == "running"
    eth0 = state[("link", f"{lab.host_ns}/eth0")]
    assert (eth0["state"], eth0["detail"]) == ("up", f"{lab.host_eth0_ip}/24")
    net = state[("network", lab.nat_network)]
    assert (
        net["state"] == "active"
        and lab.nat_bridge in net["detail"]
        and "autostart" in net["detail"]
    )
    leases = labvirt.nat_leases(lab)
    for guest in lab.guests:
        row = state[("guest", guest.name)]
        assert row["state"] == "running"
        assert f"{guest.nat_mac} {leases[guest.nat_mac]}" in row["detail"]
    # the command prints the same as a table and exits 0 while the lab is up
    assert main.main(["lab", "--prefix", lab.prefix, "status"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["COMPONENT", "NAME", "STATE", "DETAIL"]
    for guest in lab.guests:
        assert re.search(rf"^guest\s+{guest.name}\s+running\s", table, re.M)


def test_up_again_is_harmless(lab: Lab) -> None:
    # the daemons and every guest's qemu (libvirt's pid files under the lab's run dir)
    qemu = [lab.root / "run" / "qemu" / f"{g.name}.pid" for g in lab.guests]
    pids = {f: Path(f).read_text() for f in (lab.libvirtd_pid_file, lab.netreg_pid_file, *qemu)}
    leases = labvirt.nat_leases(lab)
    lines: list[str] = []
    control.up(lab, progress=lines.append)
    assert {f: Path(f).read_text() for f in pids} == pids  # same daemons, no guest rebooted
    assert labvirt.nat_leases(lab) == leases
    assert all(re.match(r"^\[\s*\d+\.\ds\] .+ \(\d+\.\ds\)$", line) for line in lines[:-1]), lines


def test_preflight_names_the_missing_package_and_the_space_to_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lab = Lab.from_env("obpre")  # never brought up: preflight comes before any side effect
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda b: None if b == "dnsmasq" else real_which(b))
    with pytest.raises(HostError, match=r"apt-get install dnsmasq-base$"):
        control.up(lab, progress=lambda _line: None)
    monkeypatch.setattr(shutil, "which", real_which)
    usage = shutil.disk_usage("/")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage._replace(free=10 * 2**20))
    with pytest.raises(HostError, match=r"no free space for the lab: 10 MiB free"):
        control.up(lab, progress=lambda _line: None)
    assert not lab.root.exists()
    assert not Path("/run/netns", lab.host_ns).exists()


# --- a second, throwaway lab: down leaves nothing behind ---------------------------
WATCHED = (
    "/run", "/etc/libvirt", "/etc/netns", "/etc/network", "/var/lib/libvirt",
    "/var/log/libvirt", "/var/cache/libvirt", "/var/lib/dhcp", "/var/run",
)  # fmt: skip


# Other labs' namespaces and booted hosts (another session's, beside this one) come and
# go while this test runs: ours are checked by name (netns here, the booted hosts' nspawn
# leftovers in test_15), and the throwaway lab below boots no host.
OTHERS = ("/run/netns", "/run/systemd/nspawn")
# Not a lab's: systemd's unit-load stamp (mount(8) compares /etc/fstab with it). It appeared
# on a fresh machine while this test ran beside the booted-host sessions (ci1, 2026-12-07).
MACHINE = ("/run/systemd/systemd-units-load",)


def outside_files() -> set[str]:
    found: set[str] = set()
    for top in WATCHED:
        for dirpath, dirnames, filenames in os.walk(top):
            if os.path.realpath(dirpath) in OTHERS:
                dirnames.clear()  # not this lab's: other labs' come and go meanwhile
                continue
            paths = (os.path.join(dirpath, n) for n in dirnames + filenames)
            found.update(p for p in paths if os.path.realpath(p) not in OTHERS + MACHINE)
    return found


def root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def lab_processes(root: Path) -> list[str]:
    marker = f"{root}/"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            mounts = (entry / "mountinfo").read_text()
        except OSError:
            continue
        if marker in cmdline or marker in mounts:
            found.append(f"{entry.name}: {cmdline[:120]}")
    return found


def test_down_leaves_nothing_behind(lab: Lab) -> None:
    # one guest keeps this quick
    other = dataclasses.replace(Lab.from_env(f"{lab.prefix[:7]}x"), guests=lab.guests[:1])
    control.down(other, progress=lambda _line: None)
    files, links = outside_files(), root_links()
    lines: list[str] = []
    control.up(other, progress=lines.append)
    try:
        # up while the session lab runs: both have their own virbr0, libvirtd, guests
        assert labvirt.nat_leases(other).keys() == {lab.guests[0].nat_mac}
        assert lab_processes(other.root)
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert all(ns in netns for ns in other.namespaces)
    finally:
        control.down(other, progress=lines.append)

    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [ns for ns in other.namespaces if re.search(rf"^{ns}\b", netns, re.M)]
    assert lab_processes(other.root) == []
    mounts = Path("/proc/self/mountinfo").read_text() + Path("/proc/1/mountinfo").read_text()
    assert str(other.root) not in mounts and f"/{other.prefix}-" not in mounts
    lab_links = {"virbr0", "campus0", "host0", "he0"}
    assert not {n for n in root_links() - links if n in lab_links or n.startswith("vnet")}
    assert outside_files() - files == set()
    assert [p.name for p in other.root.iterdir()] == ["log"]
    # and the session lab was not disturbed
    assert {r["name"]: r["state"] for r in labstatus.status(lab)}["libvirtd"] == "running"
    assert labvirt.nat_leases(lab).keys() >= {g.nat_mac for g in lab.guests}
