"""Bring the lab up and down: namespaces, links, the simulated host and its guests.

``up(lab)`` builds, in order (each step idempotent, so ``up`` twice is harmless):
preflight (root, packages, space) → guest image → files under the lab root →
namespaces ``PREFIX-host|campus|he`` → links (campus bridge ``campus0`` with the
host's ``eth0`` veth as a port; a routed campus<->he link) → NetReg dnsmasq in
campus → ``ifup eth0`` in the host (DHCP from NetReg) → the host's virtlogd +
libvirtd → NAT network ``default`` → extra lab services (hooks) → guests, booted
and waited for in parallel (``lab up --configured`` then runs the runbooks:
:mod:`opslib.lab.simulated.runs`).

Every process of the host runs in a private mount namespace
(:func:`opslib.lab.processes.host_command`). The parts: :mod:`opslib.lab.labfiles`
(preflight, files), :mod:`opslib.lab.campus.netreg` (campus DHCP),
:mod:`opslib.lab.simulated.labvirt`
(libvirtd, NAT network, guests), :mod:`opslib.lab.services` (extra components),
:mod:`opslib.lab.labstatus` (``lab status``).

``down(lab)`` works from whatever is left (pid files, namespaces, processes whose
command line names the lab root) and removes all but ``LAB/log``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable

from opslib.core import procs
from opslib.core.errors import HostError, OpsError
from opslib.lab.campus import netreg
from opslib.lab.config import Lab
from opslib.lab.labfiles import preflight, write_files
from opslib.lab.processes import (
    Clock,
    Progress,
    alive,
    host_exec,
    netns_exists,
    netns_pids,
    ns_exec,
    stray_pids,
)
from opslib.lab.services import services
from opslib.lab.simulated import image as guest_image
from opslib.lab.simulated.labvirt import (
    destroy_all,
    domain_type,
    ensure_nat_network,
    start_daemons,
    start_guests,
    wait_leases,
)


# --- namespaces and links --------------------------------------------------------
def _link_exists(ns: str, name: str) -> bool:
    return procs.run(["ip", "-n", ns, "link", "show", name], check=False).returncode == 0


def _ensure_addr(ns: str, dev: str, cidr: str) -> None:
    procs.run(["ip", "-n", ns, "addr", "replace", cidr, "dev", dev])


def _namespaces(lab: Lab) -> None:
    for ns in lab.namespaces:
        if not netns_exists(ns):
            procs.run(["ip", "netns", "add", ns])
        procs.run(["ip", "-n", ns, "link", "set", "lo", "up"])


def _links(lab: Lab) -> None:
    campus, host, he = lab.campus_ns, lab.host_ns, lab.he_ns
    if not _link_exists(campus, lab.campus_bridge):
        procs.run(
            [
                "ip",
                "-n",
                campus,
                "link",
                "add",
                lab.campus_bridge,
                "type",
                "bridge",
                "stp_state",
                "0",
            ]
        )
    _ensure_addr(campus, lab.campus_bridge, f"{lab.campus_gateway}/24")
    procs.run(["ip", "-n", campus, "link", "set", lab.campus_bridge, "up"])
    if not _link_exists(campus, lab.campus_host_port):
        procs.run([
            "ip", "-n", campus, "link", "add", lab.campus_host_port, "type", "veth",
            "peer", "name", "eth0", "address", lab.host_eth0_mac, "netns", host,
        ])  # fmt: skip
    procs.run(
        ["ip", "-n", campus, "link", "set", lab.campus_host_port, "master", lab.campus_bridge, "up"]
    )
    if not _link_exists(campus, lab.campus_he_port):
        procs.run([
            "ip", "-n", campus, "link", "add", lab.campus_he_port, "type", "veth",
            "peer", "name", "eth0", "netns", he,
        ])  # fmt: skip
    _ensure_addr(campus, lab.campus_he_port, f"{lab.he_link_campus_ipv4}/{lab.he_link_prefixlen}")
    procs.run(["ip", "-n", campus, "link", "set", lab.campus_he_port, "up"])
    ns_exec(campus, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    _ensure_addr(he, "eth0", f"{lab.he_ipv4}/{lab.he_link_prefixlen}")
    procs.run(["ip", "-n", he, "link", "set", "eth0", "up"])
    procs.run(["ip", "-n", he, "route", "replace", "default", "via", lab.he_link_campus_ipv4])
    _ensure_addr(he, "lo", f"{lab.internet_ipv6}/128")


def _host_eth0(lab: Lab) -> None:
    # already up, perhaps as a port of br0 (forward-bridge): ifupdown's state says so
    if _has_ipv4(lab.host_ns, "eth0", lab.host_eth0_ip) or _ifupdown_configured(lab):
        return
    ifup = ["ifup", "-i", str(lab.interfaces_file), "--state-dir", str(lab.ifupdown_state_dir)]
    proc = host_exec(lab, [*ifup, "eth0"], check=False, timeout=60)
    if not _has_ipv4(lab.host_ns, "eth0", lab.host_eth0_ip):
        raise HostError(
            f"the lab host's eth0 got no campus lease ({lab.host_eth0_ip}): "
            f"{(proc.stderr or proc.stdout).strip()[-200:]}; see {lab.netreg_log}"
        )


def _ifupdown_configured(lab: Lab) -> bool:
    """Whether ifupdown has any interface of the host configured (its state files)."""
    state = lab.ifupdown_state_dir
    return any(f.read_text().strip() for f in state.glob("ifstate.*")) if state.is_dir() else False


def _has_ipv4(ns: str, dev: str, address: str) -> bool:
    proc = procs.run(["ip", "-n", ns, "-4", "-o", "addr", "show", "dev", dev], check=False)
    return f" {address}/" in proc.stdout


# --- up / down / status ------------------------------------------------------------
def up(
    lab: Lab, *, progress: Progress = print, wait: bool = True, simulated_host: bool = True
) -> Callable[[], None]:
    """Build the lab (bare: a freshly installed daemon host). Running it again is harmless.

    Returns when every guest holds its NAT lease; ``wait=False``: once they are started,
    returning what waits for the leases. ``lab up --simulated --configured`` then runs the
    runbooks on it: :func:`opslib.lab.simulated.runs.configure`.

    ``simulated_host=False`` (``lab up`` and the demo, which boot real hosts on campus:
    :mod:`opslib.lab.booted.runs`): campus, NetReg and HE only; the simulated host's eth0
    lease, libvirtd, NAT network, services and guests are not started (its two TCG
    guests would only take CPU from the booted host's)."""
    clock = Clock(progress)
    with clock.step("preflight: root, packages, free space"):
        preflight(lab)
    with clock.step("guest image"):
        built = guest_image.build_image(lab.image_dir, progress=progress)
    with clock.step(f"files under {lab.root}"):
        write_files(lab, built)
    with clock.step(f"namespaces {', '.join(lab.namespaces)}"):
        _namespaces(lab)
    with clock.step("links: campus bridge, host eth0, campus<->he"):
        _links(lab)
    with clock.step("NetReg dnsmasq in campus"):
        netreg.start(lab)
    if not simulated_host:
        progress(f"[{time.monotonic() - clock.start:5.1f}s] lab {lab.prefix}: campus is up")
        return lambda: None
    with clock.step(f"host eth0 up by ifupdown (DHCP {lab.host_eth0_ip})"):
        _host_eth0(lab)
    with clock.step("host virtlogd + libvirtd"):
        start_daemons(lab)
    with clock.step(f"NAT network {lab.nat_network} ({lab.nat_bridge} {lab.nat_ipv4})"):
        ensure_nat_network(lab)
    for service in services():
        with clock.step(f"service {service.name}"):
            service.up(lab)
    with clock.step("KVM or TCG"):
        dtype = domain_type(lab)
    running = start_guests(lab, dtype, clock)

    def leases() -> None:
        wait_leases(lab, running, clock)
        progress(f"[{time.monotonic() - clock.start:5.1f}s] lab {lab.prefix} is up: {lab.uri}")

    if not wait:
        return leases
    leases()
    return lambda: None


def down(lab: Lab, *, progress: Progress = print) -> None:
    """Remove everything the lab made, from whatever is left; keeps ``LAB/log``."""
    if os.geteuid() != 0:
        raise HostError("the lab needs root (namespaces, libvirtd, qemu): run it with sudo")
    clock = Clock(progress)
    for service in reversed(services()):
        with clock.step(f"service {service.name} stopped"):
            try:
                service.down(lab)
            except OpsError as exc:
                progress(f"  service {service.name}: {exc}")
    with clock.step("guests and networks destroyed"):
        if alive(lab, lab.libvirtd_pid_file):
            destroy_all(lab)
    with clock.step("lab processes ended"):
        pids = [p for f in (lab.libvirtd_pid_file, lab.virtlogd_pid_file, lab.netreg_pid_file)
                if (p := alive(lab, f))]  # fmt: skip
        for ns in (*lab.namespaces, lab.probe_ns):
            pids += netns_pids(ns)
        pids += stray_pids(lab)
        procs.terminate(pids)
    with clock.step("namespaces deleted"):
        for ns in (*lab.namespaces, lab.probe_ns):
            if netns_exists(ns):
                procs.run(["ip", "netns", "del", ns])
    with clock.step(f"files removed (kept {lab.log_dir})"):
        if lab.root.exists():
            for entry in lab.root.iterdir():
                if entry == lab.log_dir:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
    progress(f"[{time.monotonic() - clock.start:5.1f}s] lab {lab.prefix} is down")
