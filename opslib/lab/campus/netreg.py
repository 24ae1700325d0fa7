"""NetReg: campus DHCP (dnsmasq in the campus netns) that answers only registered MACs."""

from __future__ import annotations

import fcntl
import os
import re
import signal
from collections.abc import Callable

from opslib.core import procs
from opslib.core.errors import InputError
from opslib.lab.config import Lab
from opslib.lab.processes import alive, netns_exists, ns_exec, wait_until, write_if_changed


def start(lab: Lab) -> None:
    """NetReg's dnsmasq in the campus netns, unless it runs already."""
    if alive(lab, lab.netreg_pid_file):
        return
    lab.netreg_pid_file.unlink(missing_ok=True)
    ns_exec(lab.campus_ns, ["dnsmasq", f"--conf-file={lab.netreg_conf}"])
    wait_until(lambda: alive(lab, lab.netreg_pid_file) is not None, 10, "NetReg dnsmasq to start")


_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def _mac(mac: str) -> str:
    norm = mac.strip().lower().replace("-", ":")
    if not _MAC_RE.match(norm):
        raise InputError(f"{mac!r} is not a MAC address; write it as 52:54:00:12:34:56")
    if int(norm[:2], 16) & 1:
        raise InputError(f"{mac} is a multicast MAC; NetReg registers unicast MACs only")
    return norm


def netreg_registered(lab: Lab) -> list[str]:
    """The MACs NetReg answers, in registry order."""
    try:
        lines = lab.netreg_hosts_file.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [
        line.split(",")[0].strip().lower()
        for line in lines
        if line.strip() and not line.startswith("#")
    ]


def _netreg_edit(lab: Lab, edit: Callable[[list[str]], list[str]]) -> bool:
    if not lab.netreg_hosts_file.parent.exists():
        raise InputError(
            f"lab {lab.prefix} is not up (no {lab.netreg_hosts_file}); run opsbook lab up"
        )
    with (lab.netreg_hosts_file.parent / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            before = lab.netreg_hosts_file.read_text().splitlines()
        except FileNotFoundError:
            before = []
        after = edit(before)
        if after == before:
            return False
        write_if_changed(lab.netreg_hosts_file, "".join(f"{line}\n" for line in after))
    pid = alive(lab, lab.netreg_pid_file)
    if pid:
        os.kill(pid, signal.SIGHUP)  # dnsmasq re-reads its dhcp-hostsfile
    return True


def netreg_add(lab: Lab, mac: str, ip: str | None = None) -> bool:
    """Register ``mac`` (optionally with a fixed ``ip``) with campus DHCP. True if changed."""
    mac = _mac(mac)
    entry = f"{mac},{ip}" if ip else mac
    return _netreg_edit(
        lab,
        lambda lines: (
            lines if any(line.lower().startswith(mac) for line in lines) else [*lines, entry]
        ),
    )


def netreg_remove(lab: Lab, mac: str) -> bool:
    """Unregister ``mac``; campus DHCP ignores it from now on. True if changed."""
    mac = _mac(mac)
    return _netreg_edit(
        lab, lambda lines: [line for line in lines if not line.lower().startswith(mac)]
    )


def set_campus_refuses_host(lab: Lab, refuse: bool) -> bool:
    """Make campus DHCP refuse (or answer again) the host's eth0 MAC: for rollback tests."""
    if refuse:
        return netreg_remove(lab, lab.host_eth0_mac)
    return netreg_add(lab, lab.host_eth0_mac, lab.host_eth0_ip)


def netreg_leases(lab: Lab) -> dict[str, str]:
    """MAC -> IPv4 of NetReg's current leases."""
    try:
        lines = lab.netreg_lease_file.read_text().splitlines()
    except FileNotFoundError:
        return {}
    return {f[1].lower(): f[2] for f in (line.split() for line in lines) if len(f) >= 3}


def dhcp_probe(lab: Lab, mac: str, *, timeout: float = 6.0) -> str | None:
    """Ask campus DHCP for an address as ``mac`` would; the leased IPv4, or None.

    A throwaway netns with a veth on the campus bridge and a one-shot udhcpc that
    configures nothing (``-s /bin/true``) and releases what it got.
    """
    mac = _mac(mac)
    port = f"pr{os.getpid() % 100000}"
    ns = lab.probe_ns
    try:
        if not netns_exists(ns):
            procs.run(["ip", "netns", "add", ns])
        procs.run([
            "ip", "-n", lab.campus_ns, "link", "add", port, "type", "veth",
            "peer", "name", "eth0", "address", mac, "netns", ns,
        ])  # fmt: skip
        procs.run(
            ["ip", "-n", lab.campus_ns, "link", "set", port, "master", lab.campus_bridge, "up"]
        )
        procs.run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        tries = max(1, int(timeout / 2))
        proc = ns_exec(
            ns,
            [
                "udhcpc",
                "-f",
                "-q",
                "-n",
                "-R",
                "-t",
                str(tries),
                "-T",
                "2",
                "-i",
                "eth0",
                "-s",
                "/bin/true",
            ],
            check=False,
            timeout=timeout + 10,
        )
        found = re.search(r"lease of (\S+) obtained", proc.stdout + proc.stderr)
        return found.group(1) if found else None
    finally:
        if netns_exists(ns):
            procs.run(["ip", "netns", "del", ns], check=False)
        procs.run(["ip", "-n", lab.campus_ns, "link", "del", port], check=False)
