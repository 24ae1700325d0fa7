"""Processes of the lab: the host's mount namespace, pid files, progress and waits.

Every process of the simulated host runs in a private mount namespace (:func:`host_command`)
where the lab's directories replace ``/etc/libvirt``, ``/run``, ``/run/libvirt``,
``/var/lib``, ``/var/log``, ``/var/cache``, ``/etc/resolv.conf`` and
``/etc/network/interfaces``: the lab host has its own daemons, state and pid files
and never sees (or is seen by) a system libvirtd. ``/var/lib`` etc. are replaced
whole because this machine has no ``/var/lib/libvirt`` to mount over, and creating
one would leave a file outside the lab behind.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from opslib.core import files, procs
from opslib.core.errors import HostError
from opslib.lab.config import Lab

Progress = Callable[[str], None]

# processes down() may end by command line (they also must name the lab root)
LAB_PROGRAMS = ("libvirtd", "virtlogd", "dnsmasq", "qemu-system-x86_64", "udhcpc")


class Clock:
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


def alive(lab: Lab, pidfile: Path) -> int | None:
    pid = procs.read_pid(pidfile)
    return pid if pid and _ours(lab, pid) else None


def netns_exists(ns: str) -> bool:
    return Path("/run/netns", ns).exists()


def netns_pids(ns: str) -> list[int]:
    if not netns_exists(ns):
        return []
    proc = procs.run(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def stray_pids(lab: Lab) -> list[int]:
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


def write_if_changed(path: Path, text: str, mode: int = 0o644) -> bool:
    """Atomically write ``text`` unless the file already holds it."""
    if path.exists() and path.read_text() == text:
        return False
    files.atomic_write(path, text, mode=mode)
    return True


def wait_until(ready: Callable[[], bool], timeout: float, what: str, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise HostError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)
