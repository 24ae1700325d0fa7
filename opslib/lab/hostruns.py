"""The demo on a booted daemon host: every runbook run over SSH, as an operator runs it
there (``ssh operator@HOST sudo -i opsbook run RUNBOOK -p …``), with the runbooks'
real-host defaults.

Only what a real host's operator would read elsewhere is passed with ``-p``: the
broker's tunnel values (:func:`opslib.lab.hostpeers.tunnel_parameters`), the Cloudflare
URL, the NetReg MAC of the host's guest, and the account for libvirt-access. The
host's guests and peers come first (:mod:`opslib.lab.hostguests`,
:mod:`opslib.lab.hostpeers`).
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from opslib.engine_cli import yes_no
from opslib.errors import HostError
from opslib.lab import control, daemonhost, hostguests, hostpeers, hostssh
from opslib.lab.config import Lab
from opslib.lab.runs import WIKI_ORDER, demo_lab
from opslib.tables import table

ORDER = (*WIKI_ORDER, "libvirt-access")
RUN_TIMEOUT = 600.0
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


def parameters(host: daemonhost.Host) -> dict[str, dict[str, str]]:
    """Each runbook's ``-p`` values on ``host``; everything else is its default."""
    tunnel = hostpeers.tunnel_parameters(host)
    guest = hostguests.netreg_guest(host)
    cloudflare = hostpeers.cloudflare_url(host)
    return {
        "network-inventory": {},
        "forward-bridge": {"apply": "true"},
        "netreg-attach": {"vm": guest.name, "mac": guest.netreg_mac or "", "apply": "true"},
        "find-vm-ip": {"probe": "true"},
        "nat-bridge-ipv6": {
            "rename_from": "default",
            "prefix": tunnel["routed_prefix"],
            "apply": "true",
        },
        "ipv6-tunnel": {**tunnel, "implementation": "userspace", "apply": "true"},
        "cloudflare-aaaa": {
            "vm": "vm-nat1",
            "record_name": f"vm-nat1-{host.name}.example.org",
            "api_base_url": cloudflare,
            "apply": "true",
        },
        "host-health": {
            "routed_prefix": tunnel["routed_prefix"],
            "tunnel": "he-ipv6",
            "client_ipv6": tunnel["client_ipv6"],
            "server_ipv6": tunnel["server_ipv6"],
            "token": f"file:{hostpeers.TOKEN_PATH}",
            "api_base_url": cloudflare,
        },
        "libvirt-access": {"account": hostssh.USER, "apply": "true"},
    }


def command(runbook: str, params: dict[str, str]) -> str:
    words = ["sudo", "-i", "opsbook", "run", runbook]
    for key, value in params.items():
        words += ["-p", key, value]
    return shlex.join(words)


def run(host: daemonhost.Host, runbook: str, params: dict[str, str]) -> HostRun:
    """One runbook over SSH; its outcome as the run printed it."""
    try:
        proc = hostssh.run(
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


def demo(
    lab: Lab, name: str = daemonhost.DEFAULT_NAME, *, say: Callable[[str], None] = print
) -> Iterator[HostRun]:
    """Boot host ``name`` (opsbook installed), its guests and peers; then every runbook
    in :data:`ORDER` over SSH, yielding each outcome as it comes."""
    host = daemonhost.up(lab, name, progress=say)
    hostguests.up(host, progress=say)
    hostpeers.up(host)
    for runbook, params in ((r, parameters(host)[r]) for r in ORDER):
        say(f"==> {runbook} on {name}: {command(runbook, params)}")
        if runbook == "netreg-attach" and control.netreg_add(lab, params["mac"]):
            say(f"    NetReg: registered {params['mac']} for {params['vm']} (lab NetReg)")
        yield run(host, runbook, params)


def cmd_demo(args: argparse.Namespace) -> int:
    """``opsbook demo``: the lab up bare, a booted host, every runbook on it over SSH."""
    lab = demo_lab(args.keep)
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
