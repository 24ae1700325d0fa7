"""Bring a lab up and down, report it, and the helpers that tests and runbooks use.

``up(lab)`` builds, in order (each step idempotent, so ``up`` twice is harmless):
preflight (root, packages, space) → guest image → files under the lab root →
namespaces ``PREFIX-host|campus|he`` → links (campus bridge ``campus0`` with the
host's ``eth0`` veth as a port; a routed campus<->he link) → NetReg dnsmasq in
campus → ``ifup eth0`` in the host (DHCP from NetReg) → the host's virtlogd +
libvirtd → NAT network ``default`` → extra lab services (hooks) → guests, booted
and waited for in parallel (``lab up --configured`` then runs the runbooks:
:mod:`opslib.lab.runs`).

Every process of the host runs in a private mount namespace (:func:`host_command`)
where the lab's directories replace ``/etc/libvirt``, ``/run``, ``/run/libvirt``,
``/var/lib``, ``/var/log``, ``/var/cache``, ``/etc/resolv.conf`` and
``/etc/network/interfaces``: the lab host has its own daemons, state and pid files
and never sees (or is seen by) a system libvirtd. ``/var/lib`` etc. are replaced
whole because this machine has no ``/var/lib/libvirt`` to mount over, and creating
one would leave a file outside the lab behind.

``down(lab)`` works from whatever is left (pid files, namespaces, processes whose
command line names the lab root) and removes all but ``LAB/log``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import importlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opslib import files, procs
from opslib.errors import HostError, InputError, LibvirtError, OpsError
from opslib.lab import image as guest_image
from opslib.lab.config import Guest, Lab

Progress = Callable[[str], None]
Row = dict[str, str]

# binary -> Debian package that ships it (named in the one-line error)
REQUIRED_BINARIES = {
    "ip": "iproute2",
    "unshare": "util-linux",
    "libvirtd": "libvirt-daemon",
    "virtlogd": "libvirt-daemon",
    "dnsmasq": "dnsmasq-base",
    "qemu-system-x86_64": "qemu-system-x86",
    "iptables": "iptables",
    "ifup": "ifupdown",
    "udhcpc": "udhcpc",
    "brctl": "bridge-utils",
    "cpio": "cpio",
    "gzip": "gzip",
    "sysctl": "procps",
}
REQUIRED_FILES = {
    "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so": (
        "libvirt-daemon-driver-qemu"
    ),
    "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_network.so": (
        "libvirt-daemon-driver-network"
    ),
    "/bin/busybox": "busybox-static",
}
MIN_FREE_MIB = 300
# kernel arguments that cut a TCG boot by about a quarter (no i8042 probing, no
# timer checks, no Spectre mitigations in a throwaway guest)
FAST_BOOT = (
    "mitigations=off nokaslr tsc=reliable no_timer_check i8042.noaux i8042.nokbd i8042.nopnp"
)
LEASE_TIMEOUT = 75.0
# processes down() may end by command line (they also must name the lab root)
LAB_PROGRAMS = ("libvirtd", "virtlogd", "dnsmasq", "qemu-system-x86_64", "udhcpc")


# --- extension points ----------------------------------------------------------
@dataclass(frozen=True)
class LabService:
    """An extra lab component started by ``up`` and stopped by ``down``.

    A module named in ``SERVICE_MODULES`` exposes ``SERVICE = LabService(...)``.
    ``up`` runs after the namespaces, NetReg, the host's eth0 and libvirtd are up
    and before the guests boot; ``down`` runs first in ``down`` and must work after
    a crash or a half-built ``up`` (idempotent, no error when nothing is there).
    """

    name: str
    up: Callable[[Lab], None]
    down: Callable[[Lab], None]
    status: Callable[[Lab], list[Row]] | None = None


SERVICE_MODULES = ("opslib.lab.sixinfour", "opslib.lab.cloudflare_api", "opslib.lab.hoststatus")


def services() -> list[LabService]:
    found: list[LabService] = []
    for name in SERVICE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # not written yet
            raise
        service = getattr(module, "SERVICE", None)
        if isinstance(service, LabService):
            found.append(service)
    return found


# --- small process helpers -------------------------------------------------------
class _Clock:
    """One progress line a step: elapsed since start, the step, its own time."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.start = time.monotonic()

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        yield
        now = time.monotonic()
        self.progress(f"[{now - self.start:5.1f}s] {name} ({now - started:.1f}s)")


def ns_exec(
    ns: str, argv: list[str], *, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in network namespace ``ns`` (plain ``ip netns exec``)."""
    return procs.run(["ip", "netns", "exec", ns, *argv], check=check, timeout=timeout)


def _host_mounts(lab: Lab) -> list[tuple[Path, str]]:
    # order matters: resolv.conf before /run (it may be a symlink into /run)
    return [
        (lab.resolv_conf, "/etc/resolv.conf"),
        (lab.interfaces_file, "/etc/network/interfaces"),
        (lab.etc_dir / "passwd", "/etc/passwd"),
        (lab.etc_dir / "group", "/etc/group"),
        (lab.libvirt_etc_dir, "/etc/libvirt"),
        (lab.host_run_dir, "/run"),
        (lab.run_dir, "/run/libvirt"),
        (lab.var_dir / "lib", "/var/lib"),
        (lab.log_dir, "/var/log"),
        (lab.var_dir / "cache", "/var/cache"),
    ]


def host_command(lab: Lab, argv: list[str]) -> list[str]:
    """The argv that runs ``argv`` as a process of the lab host.

    In the host netns and a private mount namespace where the lab's files stand in
    for the host's own (see the module docstring). ``ifup eth0`` there uses the
    lab's interfaces file and state, ``virsh`` reaches the lab's libvirtd.
    """
    binds = " && ".join(
        f"mount --bind {shlex.quote(str(src))} {dst}" for src, dst in _host_mounts(lab)
    )
    script = f'set -e; {binds}; exec "$@"'
    return [
        "ip", "netns", "exec", lab.host_ns,
        "unshare", "--mount", "--propagation", "private",
        "sh", "-c", script, "opsbook-lab-host", *argv,
    ]  # fmt: skip


def host_exec(
    lab: Lab,
    argv: list[str],
    *,
    check: bool = True,
    timeout: float = 120,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as a process of the lab host (:func:`host_command`); text output."""
    return procs.run(host_command(lab, argv), check=check, timeout=timeout, input=input)


def _ours(lab: Lab, pid: int) -> bool:
    """Whether ``pid`` runs a lab program whose command line names this lab's root."""
    argv = procs.cmdline(pid)
    root = str(lab.root) + "/"
    return bool(argv) and any(
        a.startswith(root) or f"={root}" in a or f",{root}" in a for a in argv
    )


def _alive(lab: Lab, pidfile: Path) -> int | None:
    pid = procs.read_pid(pidfile)
    return pid if pid and _ours(lab, pid) else None


def _netns_exists(ns: str) -> bool:
    return Path("/run/netns", ns).exists()


def _netns_pids(ns: str) -> list[int]:
    if not _netns_exists(ns):
        return []
    proc = procs.run(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def _stray_pids(lab: Lab) -> list[int]:
    """Processes of this lab wherever they run (also after a crash or a lost netns).

    Those of the host carry the lab's bind mounts (:func:`host_command`), so their
    mountinfo names the lab root; the others are lab programs that name it on their
    command line (NetReg's dnsmasq, qemu).
    """
    me = {os.getpid(), os.getppid()}
    root = f" {lab.root}/"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in me:
            continue
        pid = int(entry.name)
        try:
            mounts = (entry / "mountinfo").read_text()
        except OSError:
            continue
        argv = procs.cmdline(pid)
        if root in mounts or (argv and Path(argv[0]).name in LAB_PROGRAMS and _ours(lab, pid)):
            found.append(pid)
    return found


def _write(path: Path, text: str, mode: int = 0o644) -> bool:
    """Atomically write ``text`` unless the file already holds it."""
    if path.exists() and path.read_text() == text:
        return False
    files.atomic_write(path, text, mode=mode)
    return True


# --- preflight -----------------------------------------------------------------
def preflight(lab: Lab) -> None:
    """Root, the programs, free space: one clear line naming the fix, or nothing."""
    if os.geteuid() != 0:
        raise HostError("the lab needs root (namespaces, libvirtd, qemu): run it with sudo")
    missing = sorted({pkg for binary, pkg in REQUIRED_BINARIES.items() if not shutil.which(binary)})
    missing += sorted({pkg for path, pkg in REQUIRED_FILES.items() if not Path(path).exists()})
    if missing:
        raise HostError(
            f"the lab needs Debian packages that are missing: apt-get install {' '.join(missing)}"
        )
    for where in (lab.base, lab.image_dir):
        probe, free = files.free_mib(where)
        if free < MIN_FREE_MIB:
            raise HostError(
                f"no free space for the lab: {free} MiB free under {probe}, "
                f"{MIN_FREE_MIB} MiB needed; free some space there"
            )


# --- files -----------------------------------------------------------------------
def nat_network_xml(lab: Lab) -> str:
    """libvirt's stock NAT network, IPv4 only, on a documentation range."""
    start, end = lab.nat_dhcp_range
    return f"""<network>
  <name>{lab.nat_network}</name>
  <forward mode='nat'/>
  <bridge name='{lab.nat_bridge}' stp='on' delay='0'/>
  <mac address='{lab.nat_bridge_mac}'/>
  <ip address='{lab.nat_ipv4}' prefix='{lab.nat_prefixlen}'>
    <dhcp>
      <range start='{start}' end='{end}'/>
    </dhcp>
  </ip>
</network>
"""


def guest_xml(
    lab: Lab,
    guest: Guest,
    domain_type: str,
    *,
    guest_dir: Path | None = None,
    console: Path | None = None,
    shell: Path | None = None,
) -> str:
    """A tiny VM: direct kernel boot, one NIC on the NAT network, two serial ports.

    ACPI stays on: NICs are hot-plugged later (netreg-attach) through ACPI PCI hotplug.
    ``guest_dir`` (kernel + initrd), ``console`` and ``shell`` default to the simulated
    host's paths; a booted host names paths of its own (:mod:`opslib.lab.hostguests`).
    """
    guest_dir = guest_dir or lab.guest_dir
    console = console or lab.console_log(guest.name)
    shell = shell or lab.shell_socket(guest.name)
    cmdline = (
        f"console=ttyS0 panic=-1 quiet {FAST_BOOT} opsbook.name={guest.name} "
        f"opsbook.internet={lab.internet_ipv6}"
    )
    return f"""<domain type='{domain_type}'>
  <name>{guest.name}</name>
  <memory unit='MiB'>{lab.guest_memory_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{guest_dir}/vmlinuz</kernel>
    <initrd>{guest_dir}/initrd.gz</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <interface type='network'>
      <source network='{lab.nat_network}'/>
      <mac address='{guest.nat_mac}'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='{console}'/>
      <target port='0'/>
    </serial>
    <serial type='unix'>
      <source mode='bind' path='{shell}'/>
      <target port='1'/>
    </serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def _files(lab: Lab, built: guest_image.GuestImage) -> None:
    if not any(_netns_exists(ns) for ns in lab.namespaces) and lab.log_dir.exists():
        shutil.rmtree(lab.log_dir)  # a fresh lab starts with fresh logs
    for directory in (
        lab.libvirt_etc_dir,
        lab.lib_dir,
        lab.var_dir / "cache" / "libvirt",
        lab.run_dir,
        lab.host_run_dir / "libvirt",
        lab.ifupdown_state_dir,
        lab.log_dir / "libvirt",
        lab.guest_dir,
        lab.netreg_hosts_file.parent,
    ):
        directory.mkdir(parents=True, exist_ok=True)
    _write(
        lab.libvirt_etc_dir / "libvirtd.conf",
        "# opsbook lab: only root on the unix socket, no TCP/TLS\n"
        'unix_sock_group = "root"\nunix_sock_ro_perms = "0700"\nunix_sock_rw_perms = "0700"\n'
        'auth_unix_ro = "none"\nauth_unix_rw = "none"\n'
        'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n',
    )
    _write(
        lab.libvirt_etc_dir / "virtlogd.conf",
        'log_outputs = "3:file:/var/log/libvirt/virtlogd.log"\n',
    )
    # no libvirt-qemu user here; qemu runs as root without cgroups or a private /dev
    _write(
        lab.libvirt_etc_dir / "qemu.conf",
        'user = "root"\ngroup = "root"\ndynamic_ownership = 0\nremember_owner = 0\n'
        'security_driver = "none"\nnamespaces = [ ]\ncgroup_controllers = [ ]\n',
    )
    _write(lab.libvirt_etc_dir / "libvirt.conf", "")
    # The lab's own interfaces.d: the planner (root mount namespace) and ifup (the
    # host's) must never read, let alone edit, this machine's /etc/network/interfaces.d.
    sourced = lab.interfaces_file.parent / "interfaces.d"
    sourced.mkdir(parents=True, exist_ok=True)
    if not lab.interfaces_file.exists():  # a runbook may have changed it: never overwrite
        _write(
            lab.interfaces_file,
            "# The lab daemon host's /etc/network/interfaces, as freshly installed.\n"
            f"source {sourced}/*\n\n"
            "auto lo\niface lo inet loopback\n\n"
            "auto eth0\niface eth0 inet dhcp\n",
        )
    # libvirtd resolves its compiled-in qemu user before reading qemu.conf; this
    # machine has no libvirt-qemu account, so the host sees one in private copies
    for table, entry in (("passwd", "libvirt-qemu:x:64055:64055::/nonexistent:/usr/sbin/nologin"),
                         ("group", "libvirt-qemu:x:64055:")):  # fmt: skip
        current = Path("/etc", table).read_text()
        if not re.search(r"^libvirt-qemu:", current, re.M):
            current += ("" if current.endswith("\n") else "\n") + entry + "\n"
        _write(lab.etc_dir / table, current)
    if not lab.resolv_conf.exists():
        _write(lab.resolv_conf, "# the lab host's resolv.conf (udhcpc rewrites it)\n")
    start, end = lab.campus_dhcp_range
    _write(
        lab.netreg_conf,
        "# NetReg: campus DHCP answers only registered MACs (dhcp-hostsfile)\n"
        f"port=0\ninterface={lab.campus_bridge}\nbind-interfaces\nexcept-interface=lo\n"
        f"dhcp-range={start},{end},255.255.255.0,10m\n"
        f"dhcp-hostsfile={lab.netreg_hosts_file}\ndhcp-ignore=tag:!known\n"
        f"dhcp-option=option:router,{lab.campus_gateway}\ndhcp-authoritative\n"
        f"dhcp-leasefile={lab.netreg_lease_file}\npid-file={lab.netreg_pid_file}\n"
        f"log-facility={lab.netreg_log}\nlog-dhcp\nuser=root\ngroup=root\n",
    )
    if not lab.netreg_hosts_file.exists():
        _write(lab.netreg_hosts_file, f"{lab.host_eth0_mac},{lab.host_eth0_ip}\n")
    for source in (built.kernel, built.initrd):
        # a private copy: a later `lab image` must not change a running lab's guests
        target = lab.guest_dir / source.name
        if not target.exists() or target.stat().st_size != source.stat().st_size:
            shutil.copy2(source, target)


# --- namespaces and links --------------------------------------------------------
def _link_exists(ns: str, name: str) -> bool:
    return procs.run(["ip", "-n", ns, "link", "show", name], check=False).returncode == 0


def _ensure_addr(ns: str, dev: str, cidr: str) -> None:
    procs.run(["ip", "-n", ns, "addr", "replace", cidr, "dev", dev])


def _namespaces(lab: Lab) -> None:
    for ns in lab.namespaces:
        if not _netns_exists(ns):
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


def _netreg(lab: Lab) -> None:
    if _alive(lab, lab.netreg_pid_file):
        return
    lab.netreg_pid_file.unlink(missing_ok=True)
    ns_exec(lab.campus_ns, ["dnsmasq", f"--conf-file={lab.netreg_conf}"])
    _wait(lambda: _alive(lab, lab.netreg_pid_file) is not None, 10, "NetReg dnsmasq to start")


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


def _wait(ready: Callable[[], bool], timeout: float, what: str, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise HostError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


# --- libvirt ---------------------------------------------------------------------
def connect(lab: Lab) -> Any:
    """A libvirt connection to the lab's own libvirtd."""
    import libvirt

    # libvirt prints every error to stderr by default; we raise ours instead
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        return libvirt.open(lab.uri)
    except libvirt.libvirtError as exc:
        raise LibvirtError(
            f"cannot reach the lab's libvirtd at {lab.uri}: {exc}; is the lab up (opsbook lab up)?",
            exc.get_error_code(),
        ) from exc


def _daemons(lab: Lab) -> None:
    if not _alive(lab, lab.virtlogd_pid_file):
        lab.virtlogd_pid_file.unlink(missing_ok=True)
        host_exec(lab, ["virtlogd", "-d", "-p", str(lab.virtlogd_pid_file)])
    if not _alive(lab, lab.libvirtd_pid_file):
        lab.libvirtd_pid_file.unlink(missing_ok=True)
        host_exec(lab, ["libvirtd", "-d", "-p", str(lab.libvirtd_pid_file)])
    socket_path = lab.run_dir / "libvirt-sock"

    def answers() -> bool:
        if not socket_path.exists():
            return False
        with socket.socket(socket.AF_UNIX) as sock:
            try:
                sock.connect(str(socket_path))
            except OSError:
                return False
        return True

    _wait(
        answers, 20, f"the lab's libvirtd ({socket_path}); see {lab.log_dir}/libvirt/libvirtd.log"
    )


# busybox udhcpc renews its lease on SIGUSR1
RENEW_LEASE = "kill -USR1 $(pidof udhcpc)"


def _nat_net(conn: Any, lab: Lab) -> Any:
    """The lab's NAT network: by its name, or by its bridge once a runbook renamed it
    (nat-bridge-ipv6 turns the stock `default` into `nat-bridge`, as the wiki has it)."""
    import libvirt

    try:
        return conn.networkLookupByName(lab.nat_network)
    except libvirt.libvirtError:
        for net in conn.listAllNetworks():
            with contextlib.suppress(libvirt.libvirtError):
                if net.bridgeName() == lab.nat_bridge:
                    return net
        raise


def _nat_network(lab: Lab) -> None:
    import libvirt

    conn = connect(lab)
    try:
        try:
            net = _nat_net(conn, lab)
        except libvirt.libvirtError:
            net = conn.networkDefineXML(nat_network_xml(lab))
        if not net.autostart():
            net.setAutostart(True)
        if not net.isActive():
            net.create()
    except libvirt.libvirtError as exc:
        raise LibvirtError(f"NAT network {lab.nat_network}: {exc}", exc.get_error_code()) from exc
    finally:
        conn.close()


def domain_type(lab: Lab) -> str:
    """``kvm`` when a KVM guest boots here, else ``qemu`` (TCG); $OPSBOOK_LAB_DOMAIN_TYPE wins."""
    forced = os.environ.get("OPSBOOK_LAB_DOMAIN_TYPE", "")
    if forced in ("kvm", "qemu"):
        return forced
    return "kvm" if guest_image.kvm_works(lab.image_dir) else "qemu"


def _guests(lab: Lab, dtype: str, clock: _Clock) -> set[str]:
    """Define and start the guests; the NAT MACs of those that were running already."""
    import libvirt

    conn = connect(lab)
    try:
        with clock.step(f"guests defined and started ({dtype})"):
            domains = []
            for guest in lab.guests:
                try:
                    dom = conn.lookupByName(guest.name)
                except libvirt.libvirtError:
                    dom = conn.defineXML(guest_xml(lab, guest, dtype))
                domains.append(dom)

            # guests already running renew only at their lease's T1 (see leased())
            running = {g.nat_mac for g, d in zip(lab.guests, domains, strict=True) if d.isActive()}

            def start(dom: Any) -> None:
                if not dom.isActive():
                    dom.create()

            with concurrent.futures.ThreadPoolExecutor(len(domains)) as pool:
                for future in [pool.submit(start, d) for d in domains]:
                    future.result()
    except libvirt.libvirtError as exc:
        raise LibvirtError(f"lab guests: {exc}", exc.get_error_code()) from exc
    finally:
        conn.close()
    return running


def _wait_leases(lab: Lab, running: set[str], clock: _Clock) -> None:
    """Until every guest holds a lease on the NAT network (``running``: the guests that
    ran before this ``up``, asked to renew at once)."""
    import libvirt

    conn = connect(lab)
    try:
        with clock.step("every guest holds a NAT lease"):
            wanted = {g.nat_mac for g in lab.guests}
            net = _nat_net(conn, lab)
            since, nudged = time.monotonic(), False

            def leased() -> bool:
                nonlocal nudged
                have = {lease["mac"] for lease in net.DHCPLeases()}
                missing = wanted - have
                if missing and not nudged and (missing <= running or time.monotonic() - since > 20):
                    # A renamed or restarted network forgets its leases; a running
                    # guest would only renew at its next T1: ask it to renew now (at
                    # once when it was running before this `up`, else after its boot).
                    nudged = True
                    for guest in lab.guests:
                        if guest.nat_mac not in have:
                            with contextlib.suppress(OpsError):
                                guest_shell(lab, guest.name, RENEW_LEASE, timeout=5)
                return wanted <= have

            _wait(
                leased, LEASE_TIMEOUT, f"guest leases on {lab.nat_network}; see {lab.log_dir}", 0.5
            )
    except libvirt.libvirtError as exc:
        raise LibvirtError(f"lab guests: {exc}", exc.get_error_code()) from exc
    finally:
        conn.close()


# --- up / down / status ------------------------------------------------------------
def up(
    lab: Lab, *, progress: Progress = print, wait: bool = True, simulated_host: bool = True
) -> Callable[[], None]:
    """Build the lab (bare: a freshly installed daemon host). Running it again is harmless.

    Returns when every guest holds its NAT lease; ``wait=False``: once they are started,
    returning what waits for the leases. ``lab up --simulated --configured`` then runs the
    runbooks on it: :func:`opslib.lab.runs.configure`.

    ``simulated_host=False`` (``lab up`` and the demo, which boot real hosts on campus:
    :mod:`opslib.lab.hostruns`): campus, NetReg and HE only; the simulated host's eth0
    lease, libvirtd, NAT network, services and guests are not started (its two TCG
    guests would only take CPU from the booted host's)."""
    clock = _Clock(progress)
    with clock.step("preflight: root, packages, free space"):
        preflight(lab)
    with clock.step("guest image"):
        built = guest_image.build_image(lab.image_dir, progress=progress)
    with clock.step(f"files under {lab.root}"):
        _files(lab, built)
    with clock.step(f"namespaces {', '.join(lab.namespaces)}"):
        _namespaces(lab)
    with clock.step("links: campus bridge, host eth0, campus<->he"):
        _links(lab)
    with clock.step("NetReg dnsmasq in campus"):
        _netreg(lab)
    if not simulated_host:
        progress(f"[{time.monotonic() - clock.start:5.1f}s] lab {lab.prefix}: campus is up")
        return lambda: None
    with clock.step(f"host eth0 up by ifupdown (DHCP {lab.host_eth0_ip})"):
        _host_eth0(lab)
    with clock.step("host virtlogd + libvirtd"):
        _daemons(lab)
    with clock.step(f"NAT network {lab.nat_network} ({lab.nat_bridge} {lab.nat_ipv4})"):
        _nat_network(lab)
    for service in services():
        with clock.step(f"service {service.name}"):
            service.up(lab)
    with clock.step("KVM or TCG"):
        dtype = domain_type(lab)
    running = _guests(lab, dtype, clock)

    def leases() -> None:
        _wait_leases(lab, running, clock)
        progress(f"[{time.monotonic() - clock.start:5.1f}s] lab {lab.prefix} is up: {lab.uri}")

    if not wait:
        return leases
    leases()
    return lambda: None


def down(lab: Lab, *, progress: Progress = print) -> None:
    """Remove everything the lab made, from whatever is left; keeps ``LAB/log``."""
    if os.geteuid() != 0:
        raise HostError("the lab needs root (namespaces, libvirtd, qemu): run it with sudo")
    clock = _Clock(progress)
    for service in reversed(services()):
        with clock.step(f"service {service.name} stopped"):
            try:
                service.down(lab)
            except OpsError as exc:
                progress(f"  service {service.name}: {exc}")
    with clock.step("guests and networks destroyed"):
        if _alive(lab, lab.libvirtd_pid_file):
            _destroy_all(lab)
    with clock.step("lab processes ended"):
        pids = [p for f in (lab.libvirtd_pid_file, lab.virtlogd_pid_file, lab.netreg_pid_file)
                if (p := _alive(lab, f))]  # fmt: skip
        for ns in (*lab.namespaces, lab.probe_ns):
            pids += _netns_pids(ns)
        pids += _stray_pids(lab)
        procs.terminate(pids)
    with clock.step("namespaces deleted"):
        for ns in (*lab.namespaces, lab.probe_ns):
            if _netns_exists(ns):
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


def _destroy_all(lab: Lab) -> None:
    """Destroy the guests (in parallel: each takes a second or two) and the networks."""
    import libvirt

    try:
        conn = connect(lab)
    except LibvirtError:
        return  # ending the processes comes next anyway
    try:
        domains = [d for d in conn.listAllDomains() if d.isActive()]
        if domains:
            with concurrent.futures.ThreadPoolExecutor(len(domains)) as pool:
                for future in [pool.submit(d.destroy) for d in domains]:
                    with contextlib.suppress(libvirt.libvirtError):
                        future.result()
        for net in conn.listAllNetworks():
            if net.isActive():
                with contextlib.suppress(libvirt.libvirtError):
                    net.destroy()
    except libvirt.libvirtError:
        pass  # best effort, see above
    finally:
        conn.close()


def _row(component: str, name: str, state: str, detail: str = "") -> Row:
    return {"component": component, "name": name, "state": state, "detail": detail}


def status(lab: Lab) -> list[Row]:
    """What is up: namespaces, links, NetReg, daemons, networks, guests, services."""
    rows = []
    for ns in lab.namespaces:
        present = _netns_exists(ns)
        rows.append(_row("netns", ns, "present" if present else "absent",
                         f"{len(_netns_pids(ns))} processes" if present else ""))  # fmt: skip
    if _netns_exists(lab.host_ns):
        rows += _host_link_rows(lab)
    pid = _alive(lab, lab.netreg_pid_file)
    detail = f"pid {pid}, {len(netreg_registered(lab))} registered MACs" if pid else ""
    rows.append(_row("netreg", "dnsmasq", "running" if pid else "stopped", detail))
    for name, pidfile in (("virtlogd", lab.virtlogd_pid_file), ("libvirtd", lab.libvirtd_pid_file)):
        pid = _alive(lab, pidfile)
        rows.append(_row("daemon", name, "running" if pid else "stopped",
                         f"pid {pid}" if pid else ""))  # fmt: skip
    if _alive(lab, lab.libvirtd_pid_file):
        rows += _libvirt_rows(lab)
    for service in services():
        if service.status is not None:
            try:
                rows += service.status(lab)
            except OpsError as exc:
                rows.append(_row("service", service.name, "error", str(exc)))
    return rows


def _host_link_rows(lab: Lab) -> list[Row]:
    """The host's campus side: eth0, and br0 once forward-bridge made it a port."""
    rows = []
    for dev in ("eth0", "br0"):
        link = procs.run(["ip", "-n", lab.host_ns, "-o", "link", "show", "dev", dev], check=False)
        if link.returncode != 0:
            continue
        addr = procs.run(
            ["ip", "-n", lab.host_ns, "-o", "-4", "addr", "show", "dev", dev], check=False
        )
        addrs = re.findall(r"inet (\S+)", addr.stdout)
        master = re.search(r" master (\S+)", link.stdout)
        state = "up" if ",UP" in link.stdout or "<UP" in link.stdout else "down"
        detail = " ".join(addrs) or (f"port of {master.group(1)}" if master else "no address")
        rows.append(_row("link", f"{lab.host_ns}/{dev}", state, detail))
    return rows


def _libvirt_rows(lab: Lab) -> list[Row]:
    import libvirt

    rows = []
    try:
        conn = connect(lab)
    except LibvirtError as exc:
        return [_row("libvirt", lab.uri, "unreachable", str(exc))]
    try:
        leases: dict[str, str] = {}
        for net in conn.listAllNetworks():
            active = net.isActive()
            detail = f"bridge {net.bridgeName()}" if active else ""
            detail += ", autostart" if net.autostart() else ""
            rows.append(_row("network", net.name(), "active" if active else "inactive", detail))
            if active:
                with contextlib.suppress(libvirt.libvirtError):
                    for lease in net.DHCPLeases():
                        leases[lease["mac"]] = lease["ipaddr"]
        for dom in conn.listAllDomains():
            state = "running" if dom.isActive() else "shut off"
            macs = re.findall(r"<mac address='([0-9a-f:]+)'", dom.XMLDesc())
            detail = ", ".join(f"{mac} {leases.get(mac, 'no lease')}" for mac in macs)
            rows.append(_row("guest", dom.name(), state, detail))
    except libvirt.libvirtError as exc:
        rows.append(_row("libvirt", lab.uri, "error", str(exc)))
    finally:
        conn.close()
    return rows


def format_table(rows: list[Row]) -> str:
    from opslib.tables import dict_table

    return dict_table(rows, ("component", "name", "state", "detail"))


# --- NetReg ------------------------------------------------------------------------
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
        _write(lab.netreg_hosts_file, "".join(f"{line}\n" for line in after))
    pid = _alive(lab, lab.netreg_pid_file)
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
        if not _netns_exists(ns):
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
        if _netns_exists(ns):
            procs.run(["ip", "netns", "del", ns], check=False)
        procs.run(["ip", "-n", lab.campus_ns, "link", "del", port], check=False)


# --- guests ----------------------------------------------------------------------
@dataclass(frozen=True)
class GuestReport:
    """What a guest last printed about itself on its console."""

    tick: int
    addresses: tuple[tuple[str, str], ...]  # (interface, address/prefix), IPv4 and IPv6
    internet: bool | None  # ping6 to lab.internet_ipv6 answered


def guest_console(lab: Lab, name: str) -> str:
    """The guest's serial console so far."""
    lab.guest(name)
    try:
        return lab.console_log(name).read_text(errors="replace")
    except FileNotFoundError:
        return ""


def guest_report(lab: Lab, name: str) -> GuestReport | None:
    """The last complete ``OPSBOOK`` report block of the guest, or None before the first."""
    return parse_guest_report(guest_console(lab, name))


def parse_guest_report(console: str) -> GuestReport | None:
    """The last complete ``OPSBOOK`` report block of a guest's console text."""
    lines = [line for line in console.splitlines() if line.startswith("OPSBOOK ")]
    ticks = [i for i, line in enumerate(lines) if line.startswith("OPSBOOK tick ")]
    if not ticks:
        return None
    end = ticks[-1]
    start = ticks[-2] + 1 if len(ticks) > 1 else 0
    addresses, internet = [], None
    for line in lines[start:end]:
        parts = line.split()
        if parts[1] == "addr" and len(parts) >= 6:
            addresses.append((parts[3], parts[5]))
        elif parts[1] == "ping6":
            internet = parts[-1] == "ok"
    return GuestReport(int(lines[end].split()[2]), tuple(addresses), internet)


def guest_shell(lab: Lab, name: str, command: str, *, timeout: float = 10.0) -> tuple[int, str]:
    """Run a one-line shell command in the guest (its ttyS1 shell): (exit status, output)."""
    lab.guest(name)
    if "\n" in command:
        raise InputError("guest_shell runs one line; join commands with ';'")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(lab.shell_socket(name)))
            sock.sendall(command.encode() + b"\n")
            data = b""
            deadline = time.monotonic() + timeout
            while (found := re.search(rb"OPSBOOK-END (\d+)\r?\n", data)) is None:
                if time.monotonic() > deadline:
                    raise TimeoutError
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError("closed")
                data += chunk
        except (OSError, TimeoutError) as exc:
            raise HostError(f"no answer from the shell of guest {name}: {exc!r}") from exc
    return int(found.group(1)), data[: found.start()].decode(errors="replace")


def nat_leases(lab: Lab) -> dict[str, str]:
    """MAC -> IPv4 of the NAT network's DHCP leases, as libvirt reports them."""
    import libvirt

    conn = connect(lab)
    try:
        net = _nat_net(conn, lab)
        return {lease["mac"]: lease["ipaddr"] for lease in net.DHCPLeases()}
    except libvirt.libvirtError as exc:
        raise LibvirtError(f"leases of {lab.nat_network}: {exc}", exc.get_error_code()) from exc
    finally:
        conn.close()


def status_json(lab: Lab) -> str:
    return json.dumps(status(lab), indent=2)
