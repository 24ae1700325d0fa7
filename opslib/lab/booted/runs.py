"""``opsbook lab up`` and the demo on the lab's booted daemon host: every runbook run over
SSH, as an operator runs it there (``ssh operator@HOST sudo -i opsbook run RUNBOOK -f
SET``), with the runbooks' real-host defaults.

The sets are ``parameters/lab/RUNBOOK.yaml`` (written for daemon1: only what differs on
the lab), which reach the host the way an operator's sets would, with the installed
package (:data:`INSTALLED_SETS`). ``-p`` carries only what is per-host and computed
(:func:`per_host`). The host's guests and peers come first (:func:`boot`:
:mod:`opslib.lab.booted.guests`, :mod:`opslib.lab.booted.peers`).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from opslib.cli.records import yes_no
from opslib.core.errors import ApplyError, HostError
from opslib.core.tables import table
from opslib.engine import runner
from opslib.lab.booted import daemonhost, fleet, memory, peers, ssh
from opslib.lab.booted import guests as hostguests
from opslib.lab.campus import netreg
from opslib.lab.config import Lab
from opslib.lab.simulated import control
from opslib.lab.simulated.runs import WIKI_ORDER, demo_lab

ORDER = (*WIKI_ORDER, "libvirt-access")
# parameters/lab as the install script puts it on a host (pyproject.toml's shared-data)
INSTALLED_SETS = "/opt/opsbook/share/opsbook/parameters/lab"
RUN_TIMEOUT = 600.0
GUEST_HOSTS = 3  # daemon1 (its guests) and daemon2, daemon3 (vm-nat1 each); the rest none
_DONE = re.compile(r"^([\w-]+) \((changed|no change)\)", re.M)
_RECORD = re.compile(r"^record #\d+: (\S+)\s+\(([\d.]+) s\)", re.M)


@dataclass(frozen=True)
class HostRun:
    runbook: str
    exit_code: int
    status: str
    changed: bool | None
    seconds: float | None
    record: str
    output: str


def sets_dir() -> Path:
    """This checkout's ``parameters/lab`` (the sets the installed package carries)."""
    return Path(__file__).resolve().parents[3] / "parameters" / "lab"


def set_file(runbook: str) -> str:
    """Where ``runbook``'s set is on the host: installed with opsbook."""
    return f"{INSTALLED_SETS}/{runbook}.yaml"


def per_host(host: daemonhost.Host) -> dict[str, dict[str, str]]:
    """Each runbook's ``-p`` values on ``host``: what is per-host and computed where it
    differs from the set (written for daemon1): the host's name, its AAAA record's name,
    and the values numbered by its slot (NetReg MAC, the broker's tunnel page)."""
    tunnel = peers.tunnel_parameters(host)
    cloudflare = peers.cloudflare_url(host)
    health = ("routed_prefix", "client_ipv6", "server_ipv6")
    computed = {
        "netreg-attach": {"mac": hostguests.netreg_guest(host).netreg_mac or ""},
        "nat-bridge-ipv6": {"prefix": tunnel["routed_prefix"]},
        "ipv6-tunnel": tunnel,
        "cloudflare-aaaa": {
            "record_name": f"vm-nat1-{host.name}.example.org",
            "api_base_url": cloudflare,
        },
        "host-health": {**{k: tunnel[k] for k in health}, "api_base_url": cloudflare},
        "libvirt-access": {"account": ssh.USER},
    }
    found = {}
    for runbook in ORDER:
        given = runner.load_param_file(sets_dir() / f"{runbook}.yaml")
        wanted = {"host": host.name, **computed.get(runbook, {})}
        found[runbook] = {k: v for k, v in wanted.items() if given.get(k) != v}
    return found


def command(runbook: str, params: dict[str, str]) -> str:
    words = ["sudo", "-i", "opsbook", "run", runbook, "-f", set_file(runbook)]
    for key, value in params.items():
        words += ["-p", key, value]
    return shlex.join(words)


def run(host: daemonhost.Host, runbook: str, params: dict[str, str]) -> HostRun:
    """One runbook over SSH; its outcome as the run printed it."""
    try:
        proc = ssh.run(
            host.lab, host.name, command(runbook, params), timeout=RUN_TIMEOUT, check=False
        )
        code, out = proc.returncode, proc.stdout + proc.stderr
    except HostError as exc:
        code, out = 255, str(exc)
    done = _DONE.findall(out)
    record = _RECORD.search(out)
    status = done[-1][0] if done else ("ssh failed" if code == 255 else f"exit {code}")
    changed = (done[-1][1] == "changed") if done else None
    return HostRun(
        runbook,
        code,
        status,
        changed,
        float(record.group(2)) if record else None,
        record.group(1) if record else "",
        out,
    )


def boot(
    lab: Lab, name: str = daemonhost.DEFAULT_NAME, *, say: Callable[[str], None] = print
) -> daemonhost.Host:
    """Host ``name`` booted (opsbook installed), its guests and peers up (again: harmless):
    what ``opsbook lab up`` and the demo start from."""
    host, guests = boot_started(lab, name, say=say)
    guests.result()
    return host


def boot_started(
    lab: Lab, name: str = daemonhost.DEFAULT_NAME, *, say: Callable[[str], None] = print
) -> tuple[daemonhost.Host, Future[None]]:
    """:func:`boot`, returning once the host is up and its peers are: its guests boot in
    the background until they hold their NAT leases (the future's result; its error)."""
    # the guests need the host's libvirtd, not opsbook: they boot while it is installed
    host = daemonhost.up(lab, name, install=False, reuse_install=True, progress=say)
    pool = ThreadPoolExecutor(1, thread_name_prefix=f"guests-{name}")
    guests = pool.submit(hostguests.up, host, progress=say)
    pool.shutdown(wait=False)
    try:
        daemonhost.install_opsbook(host, reuse_install=True, progress=say)
        peers.up(host)
    except BaseException:
        with contextlib.suppress(Exception):
            guests.result()
        say(f"host {name} did not come up; taking it down (console: {host.console_log})")
        daemonhost.down(lab, name, progress=say)
        raise
    return host, guests


def changing(runbook: str) -> bool:
    return runner.find_runbook(runbook).param("apply") is not None


def runs(
    host: daemonhost.Host,
    *,
    changing_only: bool = False,
    say: Callable[[str], None] = print,
) -> Iterator[HostRun]:
    """Every runbook in :data:`ORDER` (``changing_only``: those with ``apply``) on
    ``host`` over SSH with its ``parameters/lab`` set, yielding each outcome as it comes."""
    values = per_host(host)
    for runbook in ORDER:
        if changing_only and not changing(runbook):
            continue
        say(f"==> {runbook} on {host.name}: {command(runbook, values[runbook])}")
        if runbook == "netreg-attach":
            mac = hostguests.netreg_guest(host).netreg_mac or ""
            if netreg.netreg_add(host.lab, mac):
                say(f"    NetReg: registered {mac} (lab NetReg)")
        yield run(host, runbook, values[runbook])


def demo(
    lab: Lab, name: str = daemonhost.DEFAULT_NAME, *, say: Callable[[str], None] = print
) -> Iterator[HostRun]:
    """Boot host ``name`` (:func:`boot`); then every runbook in :data:`ORDER` over SSH,
    yielding each outcome as it comes."""
    yield from runs(boot(lab, name, say=say), say=say)


def configure(host: daemonhost.Host, *, say: Callable[[str], None] = print) -> None:
    """``lab up --configured``: the demo's changing runbooks on ``host`` (its end state,
    from any state: each applies only what differs); stops at the first that fails."""
    for outcome in runs(host, changing_only=True, say=say):
        changed = {None: "", True: ", changed", False: ", no change"}[outcome.changed]
        say(f"    {outcome.status}{changed}: {host.name}:~root/{outcome.record}")
        if outcome.exit_code != 0:
            tail = " ".join(outcome.output.strip().splitlines()[-1:])
            raise ApplyError(
                f"lab up --configured: {outcome.runbook} on {host.name} {outcome.status}: {tail}"
            )


def room_router(
    router: daemonhost.Host,
    behind: list[daemonhost.Host],
    *,
    say: Callable[[str], None] = print,
) -> HostRun:
    """``lab up --room-router``: the broker delegates the room's /48 to ``router``'s tunnel
    (:func:`opslib.lab.booted.peers.make_room_router`), and the room-router runbook runs
    there over SSH with ``parameters/lab/room-router.yaml`` and ``behind`` as its hosts (on
    br0 when the router has one: forward-bridge ran there); ApplyError when it fails."""
    peers.make_room_router(router)
    has_br0 = ssh.run(router.lab, router.name, "ip link show br0", check=False).returncode == 0
    values = peers.room_parameters(router, behind, interface="br0" if has_br0 else "eth0")
    given = runner.load_param_file(sets_dir() / "room-router.yaml")
    params = {k: v for k, v in {"host": router.name, **values}.items() if given.get(k) != v}
    say(f"==> room-router on {router.name}: {command('room-router', params)}")
    outcome = run(router, "room-router", params)
    say(f"    {outcome.status}: {router.name}:~root/{outcome.record}")
    if outcome.exit_code != 0:
        tail = " ".join(outcome.output.strip().splitlines()[-3:])
        raise ApplyError(f"lab up --room-router: room-router on {router.name} "
                         f"{outcome.status}: {tail}")  # fmt: skip
    return outcome


def up(
    lab: Lab,
    *,
    count: int = 1,
    configured: bool = False,
    room: bool = False,
    say: Callable[[str], None] = print,
) -> list[daemonhost.Host]:
    """``opsbook lab up``: campus (no simulated host), then daemon1 with its guests and peers
    (:func:`boot`), daemon2 … daemonN with opsbook, the first few (up to
    :data:`GUEST_HOSTS`) with one guest each (``vm-nat1``: a fleet-wide find-vm-ip has
    something to find; one, and on a few hosts only: TCG guests take the two cores a ten-host
    fleet shares), and their Ansible inventory
    (:func:`opslib.lab.booted.fleet.write_inventory`); the time and memory it took; with
    ``configured`` daemon1 configured (:func:`configure`); with ``room`` (at least 3
    hosts) daemon1 the room router with daemon2 behind it and daemon3 on its own tunnel
    (:func:`room_router`)."""
    started, before = time.monotonic(), memory.available()
    control.up(lab, progress=say, simulated_host=False)
    first, *others = fleet.names(max(count, 3 if room else 1))
    host, guests = boot_started(lab, first, say=say)
    booted, waits = [host], [guests]
    with ThreadPoolExecutor(max(len(others), 1), thread_name_prefix="fleet-guests") as pool:
        for n, name in enumerate(others, start=2):
            other = daemonhost.up(lab, name, reuse_install=True, progress=say)
            booted.append(other)
            if n <= GUEST_HOSTS:
                waits.append(pool.submit(hostguests.up, other, progress=say, names=("vm-nat1",)))
        for wait in waits:
            wait.result()
    path = fleet.write_inventory(lab)
    say(f"{len(booted)} host(s) up; inventory {path} (opsbook fleet run RUNBOOK -i {path})")
    say(memory.summary(booted, before, time.monotonic() - started))
    if configured:
        configure(booted[0], say=say)
    if room:
        room_router(booted[0], booted[1:2], say=say)
    return booted


def cmd_demo(args: argparse.Namespace) -> int:
    """``opsbook demo``: the lab up bare, a booted host, every runbook on it over SSH."""
    lab = demo_lab(args.keep, simulated_host=False)
    rows, failed = [], 0
    for outcome in demo(lab, say=print):
        if outcome.exit_code != 0:
            failed += 1
            print("\n".join(outcome.output.strip().splitlines()[-8:]), file=sys.stderr)
        seconds = "-" if outcome.seconds is None else f"{outcome.seconds:.1f}"
        record = f"{daemonhost.DEFAULT_NAME}:~root/{outcome.record}" if outcome.record else "-"
        rows.append((outcome.runbook, outcome.status, yes_no(outcome.changed), seconds, record))
    print()
    print(table(rows, ["runbook", "status", "changed", "seconds", "record"]))
    return 1 if failed else 0
