"""Booted daemon hosts: Debian 12 with systemd as PID 1, on the lab's campus network.

``up(lab, name)`` boots host NAME beside the lab's simulated host:

- its own copy of the cached image (:mod:`opslib.lab.booted.rootfs`): an overlay whose
  upper dir ``LAB/hosts/NAME/upper`` takes every write, so the cache stays pristine
  and the host keeps its state across boots until ``down``;
- first-boot files: host name, machine id, SSH host keys (recorded in the lab's
  known_hosts before the host ever answers), the operator's authorized key, libvirt's
  stock ``default`` network on the lab's documentation range;
- netns ``PREFIX-NAME`` with ``eth0``, a veth whose campus end ``dh-NAME`` is a port
  of the campus bridge; its MAC is registered in NetReg with a fixed address, and the
  host's own ``networking.service`` (ifupdown, ``auto eth0``) takes it by DHCP;
- ``systemd-nspawn -b`` started detached (it outlives the CLI that started it; pid
  in ``LAB/hosts/NAME/nspawn.pid``, console in ``LAB/log/host-NAME.log``), in a
  cgroup of its own so that two hosts' systemds never share one;
- then waits until ``systemctl is-system-running`` says running (or degraded: the
  failed units are reported) and the operator reaches it over SSH.

``down(lab, name)`` powers it off from inside (``systemctl poweroff``), then ends the
nspawn pid if it is still there, and removes the overlay, the netns, the NetReg entry,
the cgroups and nspawn's ``/run/systemd/nspawn`` leftovers.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from opslib.core import procs
from opslib.core.errors import HostError, InputError
from opslib.lab.booted import nspawn, rootfs, ssh
from opslib.lab.campus import netreg
from opslib.lab.config import DEFAULT_HOST, Lab
from opslib.lab.simulated import guestxml

Progress = Callable[[str], None]
DEFAULT_NAME = DEFAULT_HOST
BOOT_TIMEOUT = 180.0  # generous: the machine is shared by several workers
FIRST_HOST = 20  # campus .20-.99: the booted hosts' fixed NetReg leases
SLOTS = 80
_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")
_RESERVED = ("host", "campus", "he", "probe")
MIN_FREE_MIB = 512


@dataclass(frozen=True)
class Host:
    """A booted host of a lab; ``slot`` fixes its MAC and campus address."""

    lab: Lab
    name: str
    slot: int

    @property
    def machine(self) -> str:
        return f"{self.lab.prefix}-{self.name}"

    @property
    def netns(self) -> str:
        return f"{self.lab.prefix}-{self.name}"

    @property
    def campus_port(self) -> str:
        return f"dh-{self.name}"

    @property
    def mac(self) -> str:
        return f"02:0b:01:00:00:{self.slot:02x}"

    @property
    def address(self) -> str:
        net = ipaddress.ip_network(self.lab.campus_network)
        return str(net.network_address + FIRST_HOST + self.slot - 1)

    @property
    def dir(self) -> Path:
        return hosts_dir(self.lab) / self.name

    @property
    def root(self) -> Path:
        return self.dir / "root"

    @property
    def pid_file(self) -> Path:
        return self.dir / "nspawn.pid"

    @property
    def console_log(self) -> Path:
        return self.lab.log_dir / f"host-{self.name}.log"

    def peer_pidfile(self, what: str) -> Path:
        """Pid file of a process the lab runs outside the host for it (its tunnel broker
        end, its Cloudflare listener: :mod:`opslib.lab.booted.peers`); ``down`` stops it."""
        return self.dir / f"peer-{what}.pid"

    @property
    def container(self) -> nspawn.Container:
        return nspawn.Container(
            self.machine, self.name, self.root, self.netns, self.pid_file, self.console_log
        )


def hosts_dir(lab: Lab) -> Path:
    return lab.root / "hosts"


def check_name(name: str) -> str:
    if not _NAME_RE.match(name) or name in _RESERVED:
        raise InputError(
            f"host name {name!r} is not usable; use 1-8 lowercase letters/digits starting "
            f"with a letter, not {', '.join(_RESERVED)} (e.g. {DEFAULT_NAME})"
        )
    return name


def hosts(lab: Lab) -> list[Host]:
    """The lab's booted hosts (running or not) that ``down`` has not removed, in the order
    of their slots (daemon2 before daemon10)."""
    found = []
    for slot_file in hosts_dir(lab).glob("*/slot"):
        with contextlib.suppress(ValueError, OSError):
            found.append(Host(lab, slot_file.parent.name, int(slot_file.read_text())))
    return sorted(found, key=lambda h: (h.slot, h.name))


def _host(lab: Lab, name: str, *, allocate: bool = False) -> Host | None:
    check_name(name)
    known = {h.name: h for h in hosts(lab)}
    if name in known or not allocate:
        return known.get(name)
    used = {h.slot for h in known.values()}
    slot = next((s for s in range(1, SLOTS + 1) if s not in used), None)
    if slot is None:
        raise InputError(f"lab {lab.prefix} has {SLOTS} booted hosts already; take one down")
    host = Host(lab, name, slot)
    host.dir.mkdir(parents=True, exist_ok=True)
    (host.dir / "slot").write_text(f"{slot}\n")
    return host


def _run(argv: list[str], *, check: bool = True, timeout: float = 60) -> str:
    return procs.run(argv, check=check, timeout=timeout).stdout


# --- preflight -------------------------------------------------------------------
def preflight(lab: Lab) -> None:
    """Root, the tools, a lab to attach to, space: one line naming the fix, nothing made yet."""
    if os.geteuid() != 0:
        raise HostError("booting a lab host needs root (namespaces, mounts): run it with sudo")
    tools = {
        "systemd-nspawn": "systemd-container",
        "nsenter": "util-linux",
        **dict.fromkeys(("ssh", "scp", "ssh-keygen"), "openssh-client"),
    }
    missing = sorted({pkg for tool, pkg in tools.items() if not shutil.which(tool)})
    if missing:
        raise HostError(f"a booted lab host needs: apt-get install {' '.join(missing)}")
    if "overlay" not in Path("/proc/filesystems").read_text():
        raise HostError(
            "a booted lab host needs the kernel's overlay file system: modprobe overlay"
        )
    if not Path("/run/netns", lab.campus_ns).exists() or not netreg.netreg_registered(lab):
        raise InputError(
            f"lab {lab.prefix} is not up (no campus and NetReg); "
            f"run opsbook lab --prefix {lab.prefix} up first"
        )
    short = nspawn.inotify_room()
    if short:
        raise HostError(short)
    free = shutil.disk_usage(lab.base).free // 2**20
    if free < MIN_FREE_MIB:
        raise HostError(
            f"no room for a booted host: {free} MiB free under {lab.base}, "
            f"{MIN_FREE_MIB} MiB needed; free some space there"
        )


# --- the host's files ----------------------------------------------------------------
def _mounted(path: Path) -> bool:
    return any(
        line.split()[4] == str(path)
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
    )


def _lower(host: Host, image: Path, reuse_install: bool, say: Progress) -> str:
    """The overlay's lower dirs: the image, under a kept install when one is reused; fixed
    at the host's first boot (``LAB/hosts/NAME/lower``), as its disk is."""
    chosen = host.dir / "lower"
    if chosen.exists():
        return chosen.read_text().strip()
    lower = str(image)
    if reuse_install:
        from opslib.lab.booted import install as hostinstall

        layer = hostinstall.cached_layer(host.lab, image)
        if layer is not None:
            lower = f"{layer}:{image}"
            say(f"host {host.name}: opsbook as installed before, kept in {layer}")
    chosen.write_text(lower + "\n")
    return lower


def _overlay(host: Host, lower: str) -> None:
    if _mounted(host.root):
        return
    upper, work = host.dir / "upper", host.dir / "work"
    for directory in (upper, work, host.root):
        directory.mkdir(parents=True, exist_ok=True)
    _run(["mount", "-t", "overlay", "overlay", "-o",
          f"lowerdir={lower},upperdir={upper},workdir={work}", str(host.root)])  # fmt: skip


def _first_boot_files(host: Host, operator_key: str) -> None:
    """What tells one host from another; written once, before its first boot."""
    root, lab = host.root, host.lab
    if (host.dir / "host_key.pub").exists():
        return  # booted before: the host keeps its own state
    (root / "etc" / "hostname").write_text(f"{host.name}\n")
    (root / "etc" / "hosts").write_text(
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{host.name}\n::1\tlocalhost ip6-localhost\n"
    )
    (root / "etc" / "machine-id").write_text(uuid.uuid4().hex + "\n")
    _run(["ssh-keygen", "-A", "-f", str(root)])
    ssh_dir = root / "home" / ssh.USER / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(operator_key + "\n")
    uid, gid = _ids(root, ssh.USER)
    for path in (ssh_dir, ssh_dir / "authorized_keys"):
        os.chown(path, uid, gid)
    (ssh_dir / "authorized_keys").chmod(0o600)
    # libvirt's stock NAT network, on the lab's documentation range instead of 192.168.122.0/24
    networks = root / "etc" / "libvirt" / "qemu" / "networks"
    (networks / "default.xml").write_text(
        "<!-- opsbook lab: libvirt's stock network on a documentation range -->\n"
        + guestxml.nat_network_xml(lab)
    )
    autostart = networks / "autostart" / "default.xml"  # as on a stock Debian host
    if not autostart.is_symlink():
        autostart.symlink_to("../default.xml")
    key = (root / "etc" / "ssh" / "ssh_host_ed25519_key.pub").read_text()
    (host.dir / "host_key.pub").write_text(key)


def _ids(root: Path, user: str) -> tuple[int, int]:
    for line in (root / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise HostError(f"the host image has no account {user}; rebuild it (opsbook lab host image)")


def _ssh_files(lab: Lab) -> None:
    known = [
        ssh.Known(h.name, h.address, (h.dir / "host_key.pub").read_text())
        for h in hosts(lab)
        if (h.dir / "host_key.pub").exists()
    ]
    ssh.write_files(lab, known)


# --- network -------------------------------------------------------------------------
def _network(host: Host) -> None:
    lab = host.lab
    if not Path("/run/netns", host.netns).exists():
        _run(["ip", "netns", "add", host.netns])
    if _run(["ip", "-n", lab.campus_ns, "link", "show", host.campus_port], check=False) == "":
        _run(["ip", "-n", lab.campus_ns, "link", "add", host.campus_port, "type", "veth",
              "peer", "name", "eth0", "address", host.mac, "netns", host.netns])  # fmt: skip
    _run(["ip", "-n", lab.campus_ns, "link", "set", host.campus_port,
          "master", lab.campus_bridge, "up"])  # fmt: skip
    netreg.netreg_add(lab, host.mac, host.address)


# --- up / down / status ----------------------------------------------------------------
def up(
    lab: Lab,
    name: str = DEFAULT_NAME,
    *,
    install: bool = True,
    reuse_install: bool = False,
    progress: Progress = print,
) -> Host:
    """Boot host ``name`` on the lab's campus (again: harmless), install opsbook on it.

    ``reuse_install`` (``lab up``, the demo): a new host's root gets the install kept
    from an earlier host of the same image and wheelhouse as a layer
    (:func:`opslib.lab.booted.install.cached_layer`), and a fresh install is kept so."""
    check_name(name)
    preflight(lab)
    started = time.monotonic()

    def say(what: str) -> None:
        progress(f"[{time.monotonic() - started:5.1f}s] {what}")

    image = rootfs.build(progress=progress)
    built = f" (first build: {image.built_seconds:.0f} s)" if image.built_seconds else " (cached)"
    say(f"host image {image.path.name}{built}")
    host = _host(lab, name, allocate=True)
    assert host is not None
    try:
        if nspawn.pid(host.container) is None:
            key = ssh.ensure_key(lab)
            _overlay(host, _lower(host, image.path, reuse_install, say))
            _first_boot_files(host, key)
            _ssh_files(lab)
            _network(host)
            pid = nspawn.start(host.container)
            say(f"host {name}: systemd-nspawn pid {pid}, netns {host.netns}, {host.mac}")
        _boot_wait(host, say)
        if install:
            install_opsbook(host, reuse_install=reuse_install, progress=say)
    except BaseException:
        progress(f"host {name} did not come up; taking it down (console: {host.console_log})")
        down(lab, name, progress=progress)
        raise
    say(f"host {name} is up: ssh -F {ssh.config_file(lab)} {name} ({host.address})")
    return host


def install_opsbook(host: Host, *, reuse_install: bool = False, progress: Progress = print) -> None:
    """opsbook on the running host, as docs/operating.md says (:mod:`opslib.lab.booted.install`);
    ``reuse_install``: a fresh install is kept as a layer for the next host."""
    from opslib.lab.booted import install as hostinstall

    hostinstall.install(host.lab, host.name, progress=progress)
    if reuse_install:
        image = Path((host.dir / "lower").read_text().strip().split(":")[-1])
        hostinstall.save_layer(host.lab, host.root, image, progress=progress)


def reboot(lab: Lab, name: str = DEFAULT_NAME, *, progress: Progress = print) -> Host:
    """Shut host ``name`` down and boot it again on the same root (its disk kept), as a
    reboot does. A ``reboot`` inside ends the container (nspawn exits with systemd), so
    the lab powers it off (``systemctl poweroff``) and boots it again.

    Its network namespace is made afresh, as a power cycle leaves a machine no links,
    addresses, routes or firewall rules; the processes the lab runs for it there
    (``peer-*.pid``: :mod:`opslib.lab.booted.peers`) are stopped, start them again."""
    host = _host(lab, name)
    if host is None:
        raise InputError(f"lab {lab.prefix} has no booted host {name}; boot it first")
    nspawn.stop(host.container, progress=progress)
    _stop_peers(host)
    if Path("/run/netns", lab.campus_ns).exists():
        _run(["ip", "-n", lab.campus_ns, "link", "del", host.campus_port], check=False)
    if Path("/run/netns", host.netns).exists():
        _run(["ip", "netns", "del", host.netns])
    return up(lab, name, install=False, progress=progress)


def _boot_wait(host: Host, say: Progress) -> None:
    states: list[str] = []

    def booted() -> bool:
        if nspawn.pid(host.container) is None:
            raise HostError(f"host {host.name} stopped while booting; see {host.console_log}")
        states.append(nspawn.system_state(host.container))
        return states[-1] in ("running", "degraded")

    if not nspawn.wait(booted, BOOT_TIMEOUT):
        raise HostError(
            f"host {host.name} did not boot within {BOOT_TIMEOUT:.0f}s "
            f"(systemd: {states[-1] if states else 'no answer'}); see {host.console_log}"
        )
    detail = ""
    if states[-1] == "degraded":
        detail = f": failed units {', '.join(nspawn.failed_units(host.container))}"
    say(f"host {host.name}: systemd {states[-1]}{detail}")

    def answers() -> bool:
        return ssh.run(host.lab, host.name, "true", timeout=20, check=False).returncode == 0

    if not nspawn.wait(answers, 60, every=1.0):
        last = ssh.run(host.lab, host.name, "true", timeout=20, check=False)
        raise HostError(
            f"host {host.name} booted but SSH does not answer at {host.address}: "
            f"{last.stderr.strip()[-160:]}; see {host.console_log}"
        )
    say(f"host {host.name}: ssh operator@{host.address} answers")


def down(lab: Lab, name: str = DEFAULT_NAME, *, progress: Progress = print) -> None:
    """Power host ``name`` off and remove everything it had; nothing there is no error."""
    host = _host(lab, name) or Host(lab, check_name(name), 0)
    started = time.monotonic()
    running = nspawn.pid(host.container) is not None
    nspawn.stop(host.container, progress=progress)  # also what a crashed one left
    if running:
        progress(f"host {name}: powered off ({time.monotonic() - started:.1f}s)")
    _stop_peers(host)
    if _mounted(host.root):
        _run(["umount", str(host.root)])
    if host.slot and lab.netreg_hosts_file.exists():
        netreg.netreg_remove(lab, host.mac)
    if Path("/run/netns", lab.campus_ns).exists():
        _run(["ip", "-n", lab.campus_ns, "link", "del", host.campus_port], check=False)
    if Path("/run/netns", host.netns).exists():
        _run(["ip", "netns", "del", host.netns])
    if host.dir.exists():
        rootfs.remove_tree(host.dir)
    with contextlib.suppress(OSError):
        hosts_dir(lab).rmdir()  # once the last host is gone
    if ssh.ssh_dir(lab).exists():
        _ssh_files(lab)
    progress(f"host {name} is down ({time.monotonic() - started:.1f}s)")


def _stop_peers(host: Host) -> None:
    """Every process behind a ``peer-*.pid`` of the host (each names its pid file in its
    arguments, so a recycled pid is never ended)."""
    for pidfile in sorted(host.dir.glob("peer-*.pid")):
        pid = procs.owned_pid(pidfile, str(pidfile))
        if pid is not None:
            procs.terminate([pid])
        pidfile.unlink(missing_ok=True)


def down_all(lab: Lab) -> None:
    """Every booted host of the lab (``opsbook lab down`` calls this first)."""
    for host in hosts(lab):
        down(lab, host.name, progress=lambda _line: None)
