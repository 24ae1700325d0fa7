"""What the lab's booted hosts take of the machine's memory: ``lab up --hosts N`` prints it.

A host's share is the proportional set size (PSS: shared pages split between their users)
of every process in its cgroups (:func:`opslib.lab.booted.nspawn.cgroups`): nspawn, the
host's systemd and services, its guests' qemu. The machine's side is MemAvailable from
/proc/meminfo before and after (other labs on the machine move it too).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

from opslib.lab.booted import nspawn
from opslib.lab.booted.daemonhost import Host

MIB = 1024  # /proc reports kB


def available() -> int:
    """The machine's MemAvailable, kB (0 when /proc/meminfo does not say)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def _pss(pid: str) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0  # gone meanwhile, or a kernel thread


def host_pss(host: Host) -> int:
    """kB of memory the host's processes use (PSS), from its cgroup tree."""
    pids: set[str] = set()
    for group in nspawn.cgroups(host.container):
        for procs in group.rglob("cgroup.procs") if group.is_dir() else ():
            with contextlib.suppress(OSError):
                pids.update(procs.read_text().split())
    return sum(_pss(pid) for pid in pids)


def summary(hosts: Sequence[Host], before: int, seconds: float) -> str:
    """One line: the hosts' memory (the largest and the median host), the machine's
    MemAvailable before and after, the time taken."""
    used = sorted(((host_pss(h), h.name) for h in hosts), reverse=True)
    total = sum(kb for kb, _name in used)
    middle = used[len(used) // 2][0] if used else 0
    after = available()
    return (
        f"{len(hosts)} host(s) in {seconds:.0f} s; memory: {total / MIB:.0f} MiB in all (PSS; "
        f"largest {used[0][1]} {used[0][0] / MIB:.0f} MiB, median host {middle / MIB:.0f} MiB); "
        f"machine MemAvailable {before / MIB / MIB:.1f} → {after / MIB / MIB:.1f} GiB"
        if used
        else f"no host up ({seconds:.0f} s)"
    )
