"""Guests inside a booted daemon host: defined in the host's own libvirtd at
``qemu:///system`` and booted by it, as an operator's VMs are on a real host.

Two guests, the lab's image (:mod:`opslib.lab.simulated.image`) and the simulated host's domain
XML (:func:`opslib.lab.simulated.guestxml.guest_xml`) with paths inside the host:

- ``vm-nat1`` on libvirt's NAT network (``default``, later ``nat-bridge``);
- ``vm-netreg`` on the NAT network too, and on forward-bridge (``br0``, campus) once
  the netreg-attach runbook gives it the NIC with its NetReg MAC. That MAC is the
  host's own (slot-numbered), so two hosts' guests, or the simulated host's, never
  share one on campus.

Kernel and initrd are copied to ``/var/lib/libvirt/boot/opsbook-guest`` in the host;
each guest's console (the ``OPSBOOK`` report lines) is a file in the host's
``/var/log/libvirt/qemu``, which the lab reads from outside through the host's root.
The domains stop and go with the host (``daemonhost.down``).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

from opslib.core import procs
from opslib.core.errors import HostError
from opslib.lab.booted import nspawn
from opslib.lab.booted.daemonhost import Host
from opslib.lab.config import Guest
from opslib.lab.simulated import guestconsole, guestxml, labvirt

BOOT_DIR = PurePosixPath("/var/lib/libvirt/boot/opsbook-guest")
XML_DIR = PurePosixPath("/var/lib/libvirt/opsbook-guests")
CONSOLE_DIR = PurePosixPath("/var/log/libvirt/qemu")
SHELL_DIR = PurePosixPath("/var/lib/libvirt/qemu")
LEASE_TIMEOUT = 120.0  # TCG guests on a shared 2-core machine
URI = "qemu:///system"
LIBVIRT_GUESTS = PurePosixPath("/etc/default/libvirt-guests")


def guests(host: Host) -> tuple[Guest, ...]:
    """The host's guests: the NAT MACs of the simulated host's (their networks are the
    host's own), a NetReg MAC numbered by the host's slot."""
    nat1, netreg = host.lab.guest("vm-nat1"), host.lab.netreg_guest
    return (
        Guest(nat1.name, nat1.nat_mac),
        Guest(netreg.name, netreg.nat_mac, netreg_mac=f"52:54:00:0b:{0x10 + host.slot:02x}:03"),
    )


def guest(host: Host, name: str) -> Guest:
    for g in guests(host):
        if g.name == name:
            return g
    from opslib.core.errors import UnknownName

    raise UnknownName("guest of the booted host", name, [g.name for g in guests(host)])


def netreg_guest(host: Host) -> Guest:
    return next(g for g in guests(host) if g.netreg_mac)


def console_path(name: str) -> PurePosixPath:
    """The guest's console file as the host sees it."""
    return CONSOLE_DIR / f"console-{name}.log"


def outside(host: Host, path: PurePosixPath) -> Path:
    """A path of the host as this machine sees it (the host's root, its overlay)."""
    return host.root / str(path).lstrip("/")


def console(host: Host, name: str) -> str:
    try:
        return outside(host, console_path(name)).read_text(errors="replace")
    except FileNotFoundError:
        return ""


def report(host: Host, name: str) -> guestconsole.GuestReport | None:
    """What the guest last printed about itself (addresses, the internet ping)."""
    return guestconsole.parse_guest_report(console(host, name))


def _virsh(host: Host, *args: str, check: bool = True, timeout: float = 60) -> str:
    done = nspawn.run(host.container, ["virsh", "-q", "-c", URI, *args], timeout=timeout)
    if check and done.returncode != 0:
        tail = procs.last_line(done)
        raise HostError(f"virsh {' '.join(args)} on host {host.name} failed: {tail}")
    return done.stdout


def defined(host: Host) -> set[str]:
    return set(_virsh(host, "list", "--all", "--name").split())


def running(host: Host) -> set[str]:
    return set(_virsh(host, "list", "--name").split())


def up(
    host: Host,
    *,
    progress: Callable[[str], None] = print,
    names: Sequence[str] | None = None,
) -> None:
    """Define the host's guests (``names``: only those, e.g. one small guest to save CPU)
    in its libvirtd and boot them (again: harmless); wait until each holds an IPv4 lease
    on the NAT network."""
    lab = host.lab
    for name in names or ():
        guest(host, name)  # an unknown name: UnknownName, naming the guests there are
    chosen = tuple(g for g in guests(host) if names is None or g.name in names)
    boot = outside(host, BOOT_DIR)
    boot.mkdir(parents=True, exist_ok=True)
    for source in (lab.guest_dir / "vmlinuz", lab.guest_dir / "initrd.gz"):
        if not source.exists():
            raise HostError(f"the lab's guest image is missing ({source}); run opsbook lab up")
        target = boot / source.name
        if not target.exists() or target.stat().st_size != source.stat().st_size:
            shutil.copy2(source, target)
    outside(host, XML_DIR).mkdir(parents=True, exist_ok=True)
    # The lab's busybox guests ignore ACPI shutdown: libvirt-guests would wait minutes for
    # them at the host's poweroff. Lab only: a real host keeps Debian's default (shutdown).
    outside(host, LIBVIRT_GUESTS).write_text(
        "# opsbook lab: the lab's guests ignore ACPI shutdown; a real host keeps the default\n"
        "ON_BOOT=ignore\nON_SHUTDOWN=destroy\n"
    )
    dtype = labvirt.domain_type(lab)
    have = defined(host)
    for g in chosen:
        if g.name in have:
            continue
        xml = guestxml.guest_xml(
            lab, g, dtype, guest_dir=Path(str(BOOT_DIR)), console=Path(str(console_path(g.name))),
            shell=Path(str(SHELL_DIR / f"opsbook-{g.name}.sock")),
        )  # fmt: skip
        path = XML_DIR / f"{g.name}.xml"
        outside(host, path).write_text(xml)
        _virsh(host, "define", str(path))
    up_now = running(host)
    for g in chosen:
        if g.name not in up_now:
            _virsh(host, "start", g.name, timeout=120)
    progress(f"host {host.name}: guests {', '.join(g.name for g in chosen)} ({dtype})")
    deadline = time.monotonic() + LEASE_TIMEOUT
    waiting = [g.name for g in chosen]
    while waiting:
        waiting = [n for n in waiting if not _has_ipv4(report(host, n), lab.nat_ipv4)]
        if not waiting:
            break
        if time.monotonic() > deadline:
            raise HostError(
                f"guests {', '.join(waiting)} of host {host.name} hold no NAT lease after "
                f"{LEASE_TIMEOUT:.0f}s; see {outside(host, CONSOLE_DIR)}"
            )
        time.sleep(1.0)
    progress(f"host {host.name}: every guest holds a NAT lease")


def _has_ipv4(seen: guestconsole.GuestReport | None, gateway: str) -> bool:
    """A lease in the NAT network's /24 (the gateway's first three octets)."""
    net = gateway.rsplit(".", 1)[0] + "."
    return seen is not None and any(a.startswith(net) for _i, a in seen.addresses)
