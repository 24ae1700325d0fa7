"""Before ``lab up`` builds anything: the preflight, then the files under the lab root."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from opslib.core import files
from opslib.core.errors import HostError
from opslib.lab.config import Lab
from opslib.lab.processes import netns_exists, write_if_changed
from opslib.lab.simulated import image as guest_image

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


def write_files(lab: Lab, built: guest_image.GuestImage) -> None:
    if not any(netns_exists(ns) for ns in lab.namespaces) and lab.log_dir.exists():
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
    write_if_changed(
        lab.libvirt_etc_dir / "libvirtd.conf",
        "# opsbook lab: only root on the unix socket, no TCP/TLS\n"
        'unix_sock_group = "root"\nunix_sock_ro_perms = "0700"\nunix_sock_rw_perms = "0700"\n'
        'auth_unix_ro = "none"\nauth_unix_rw = "none"\n'
        'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n',
    )
    write_if_changed(
        lab.libvirt_etc_dir / "virtlogd.conf",
        'log_outputs = "3:file:/var/log/libvirt/virtlogd.log"\n',
    )
    # no libvirt-qemu user here; qemu runs as root without cgroups or a private /dev
    write_if_changed(
        lab.libvirt_etc_dir / "qemu.conf",
        'user = "root"\ngroup = "root"\ndynamic_ownership = 0\nremember_owner = 0\n'
        'security_driver = "none"\nnamespaces = [ ]\ncgroup_controllers = [ ]\n',
    )
    write_if_changed(lab.libvirt_etc_dir / "libvirt.conf", "")
    # The lab's own interfaces.d: the planner (root mount namespace) and ifup (the
    # host's) must never read, let alone edit, this machine's /etc/network/interfaces.d.
    sourced = lab.interfaces_file.parent / "interfaces.d"
    sourced.mkdir(parents=True, exist_ok=True)
    if not lab.interfaces_file.exists():  # a runbook may have changed it: never overwrite
        write_if_changed(
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
        write_if_changed(lab.etc_dir / table, current)
    if not lab.resolv_conf.exists():
        write_if_changed(lab.resolv_conf, "# the lab host's resolv.conf (udhcpc rewrites it)\n")
    start, end = lab.campus_dhcp_range
    write_if_changed(
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
        write_if_changed(lab.netreg_hosts_file, f"{lab.host_eth0_mac},{lab.host_eth0_ip}\n")
    for source in (built.kernel, built.initrd):
        # a private copy: a later `lab image` must not change a running lab's guests
        target = lab.guest_dir / source.name
        if not target.exists() or target.stat().st_size != source.stat().st_size:
            shutil.copy2(source, target)
