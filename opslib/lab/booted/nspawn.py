"""systemd-nspawn containers booted on a machine whose PID 1 is not systemd.

No machined here, so every container runs with ``--register=no --keep-unit`` (flags
verified in shared/DESIGN.md) and is driven by pid, never by ``machinectl``:

- :func:`start` launches ``systemd-nspawn -b`` detached (it outlives the process
  that started it), records its pid, and puts it in cgroups of its own first: with
  ``--keep-unit`` two containers in one cgroup would share one systemd tree;
- :func:`run` enters the container's namespaces (``nsenter -t INIT -a``), INIT being
  the nspawn process's child, the container's PID 1;
- :func:`stop` runs ``systemctl poweroff`` inside, then ends the nspawn pid if it is
  still there, then removes the cgroups and what nspawn left in /run/systemd/nspawn.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from opslib.core import procs
from opslib.core.errors import HostError

NSPAWN_RUN = Path("/run/systemd/nspawn")
POWEROFF_TIMEOUT = 60.0


@dataclass(frozen=True)
class Container:
    machine: str  # unique on this machine (lab prefix + host name)
    hostname: str
    root: Path
    netns: str  # booted with --network-namespace-path=/run/netns/NETNS
    pid_file: Path
    log: Path  # the console


def wait(ready: Callable[[], bool], timeout: float, every: float = 0.5) -> bool:
    """Poll ``ready`` until it is true (True) or ``timeout`` seconds passed (False)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


def cgroups(c: Container) -> list[Path]:
    """Its own cgroup in each hierarchy systemd tracks processes in: name=systemd (v1)
    and the unified (v2) one."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _dev, point, fstype, options = line.split()[:4]
        if fstype == "cgroup2" or (fstype == "cgroup" and "name=systemd" in options.split(",")):
            found.append(Path(point) / "opsbook-lab" / c.machine)
    return found


def start(c: Container) -> int:
    argv = [
        "systemd-nspawn", "-q", "-D", str(c.root), "-M", c.machine,
        f"--hostname={c.hostname}", "-b", "--register=no", "--keep-unit",
        f"--network-namespace-path=/run/netns/{c.netns}",
        "--capability=CAP_NET_ADMIN,CAP_NET_RAW", "--bind=/dev/net/tun",
        "--resolv-conf=off", "--link-journal=no", "--timezone=off",
    ]  # fmt: skip
    if Path("/dev/kvm").exists():
        argv.append("--bind=/dev/kvm")
    groups = cgroups(c)
    for directory in groups:
        directory.mkdir(parents=True, exist_ok=True)

    def enter_cgroups() -> None:  # in the child before exec: nspawn starts in them
        for directory in groups:
            (directory / "cgroup.procs").write_text(str(os.getpid()))

    # /proc/sys/net writable: it is the container's own netns, and libvirtd writes there
    # when it starts a network (else "cannot write to .../disable_ipv6: Read-only")
    env = {**os.environ, "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"}
    c.log.parent.mkdir(parents=True, exist_ok=True)
    with c.log.open("ab") as log:
        proc = subprocess.Popen(  # detached: a session of its own, no terminal
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=enter_cgroups, env=env,
        )  # fmt: skip
    c.pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def pid(c: Container) -> int | None:
    """The nspawn process of this container, if it runs (pid file + command line)."""
    return procs.owned_pid(c.pid_file, "systemd-nspawn", c.machine)


def init_pid(nspawn: int) -> int | None:
    """The container's PID 1 as this machine sees it: the nspawn process's child."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path(f"/proc/{nspawn}/task/{nspawn}/children").read_text().split()[0])
    return None


def run(c: Container, argv: list[str], *, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside the container as root (all its namespaces)."""
    nspawn = pid(c)
    init = init_pid(nspawn) if nspawn else None
    if init is None:
        raise HostError(f"container {c.machine} is not running")
    try:
        return subprocess.run(
            ["nsenter", "-t", str(init), "-a", *argv],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise HostError(f"{' '.join(argv)} in {c.machine} timed out after {timeout:.0f}s") from exc


def system_state(c: Container) -> str:
    """``systemctl is-system-running`` inside; ``stopped``, or ``booting`` until it answers."""
    if pid(c) is None:
        return "stopped"
    try:
        proc = run(c, ["systemctl", "is-system-running"], timeout=15)
    except HostError:
        return "booting"
    return proc.stdout.strip() or "booting"


def failed_units(c: Container) -> list[str]:
    out = run(c, ["systemctl", "--failed", "--plain", "--no-legend"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def stop(c: Container, *, progress: Callable[[str], None] = print) -> None:
    """Power the container off from inside, else end it by its pid; then forget it."""
    nspawn = pid(c)
    if nspawn is not None:
        init = init_pid(nspawn)
        try:  # refused while systemd is still starting (no bus yet)
            asked = run(c, ["systemctl", "poweroff", "--no-block"], timeout=15).returncode == 0
        except HostError:
            asked = False
        if not asked or not wait(lambda: procs.gone(nspawn), POWEROFF_TIMEOUT):
            if asked:
                progress(f"{c.machine}: no poweroff in {POWEROFF_TIMEOUT:.0f}s; ending {nspawn}")
            procs.terminate([nspawn], grace=30)  # nspawn turns SIGTERM into a shutdown first
        if init is not None and not procs.gone(init):
            with contextlib.suppress(ProcessLookupError):
                os.kill(init, signal.SIGKILL)  # its pid namespace goes with it
            wait(lambda: procs.gone(init), 10, every=0.1)
    c.pid_file.unlink(missing_ok=True)
    forget(c.machine, cgroups(c))


def forget(machine: str, groups: Sequence[Path] = ()) -> None:
    """Remove what an ended container left: its cgroups (deepest first: a cgroup goes
    once it has no children), its ``/run/systemd/nspawn/propagate/MACHINE``, then
    ``locks``, ``propagate`` and ``/run/systemd/nspawn`` once empty (another container
    may still use them)."""
    for top in groups:
        if top.is_dir():
            # bottom-up; os.walk skips a directory that goes while it walks (a container's
            # systemd still removing its own cgroups), where rglob raised
            for parent, children, _ in os.walk(top, topdown=False):
                for child in children:
                    with contextlib.suppress(OSError):
                        os.rmdir(os.path.join(parent, child))
            with contextlib.suppress(OSError):
                top.rmdir()
                top.parent.rmdir()  # opsbook-lab/, once no container uses it
    shutil.rmtree(NSPAWN_RUN / "propagate" / machine, ignore_errors=True)
    for directory in (NSPAWN_RUN / "locks", NSPAWN_RUN / "propagate", NSPAWN_RUN):
        with contextlib.suppress(OSError):
            directory.rmdir()


# A booted Debian host's systemd and services hold about this many inotify instances, and
# they count against root's fs.inotify.max_user_instances with every other container's
# (all run as root): at the limit, systemd exits at boot ("Too many open files").
INOTIFY_PER_HOST = 12
INOTIFY_LIMIT = Path("/proc/sys/fs/inotify/max_user_instances")


def inotify_room() -> str | None:
    """None when one more host's systemd has its inotify instances; else why not, naming
    the fix (the limit is the machine's, shared by every lab on it)."""
    try:
        limit = int(INOTIFY_LIMIT.read_text())
    except (OSError, ValueError):
        return None
    used = 0
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        with contextlib.suppress(OSError):
            used += sum(os.readlink(fd) == "anon_inode:inotify" for fd in fd_dir.iterdir())
    if used + INOTIFY_PER_HOST <= limit:
        return None
    return (
        f"no inotify instances left for a booted host's systemd: {used} of "
        f"fs.inotify.max_user_instances={limit} in use (every lab's hosts count), about "
        f"{INOTIFY_PER_HOST} needed; raise the limit: sysctl -w fs.inotify.max_user_instances=1024"
    )
