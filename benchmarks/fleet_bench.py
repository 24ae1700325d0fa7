"""What Ansible costs a fleet run: host-health on 1, 3 and N hosts, beside plain ssh.

Runs on booted hosts and their inventory (``STATE``), as root::

    .venv/bin/opsbook lab --prefix ob up --hosts 3      # or --hosts 10 for --hosts 10
    .venv/bin/python benchmarks/fleet_bench.py --prefix ob [--hosts 10] [--runs 3]

(``--hosts 1``: the 1-host rows only, on a lab up with ``--hosts 1``.)

(prefix: ``--prefix``, else $OPSBOOK_LAB_PREFIX, else ``ob``). It checks that state first
(:func:`check_state`) and names what is missing in one line, exit 1.

Times, median of N rounds (each round runs every case once, in turn, so that a machine
shared with others loads every case alike):

- ``opsbook fleet run host-health`` on the first host (forks 1), on 3 hosts (forks 3) and,
  with ``--hosts N``, on N hosts (forks N);
- the same runbook by hand over plain ssh (``ssh HOST sudo opsbook run host-health …``, the
  host's parameter set as ``-p``), on 1, 3 and N hosts one after the other.

Prints the table, fleet on 1 host over ssh on 1 host (target ≤ 1.5×), 3 hosts / 1 host
(≤ 1.5×), N hosts / 1 host (≤ 2× at 10), what one more host costs, and where the time of
each fleet run goes: the workstation's CPU (the fleet command, Ansible and its ssh), the
hosts' CPU (their containers' cgroups: opsbook, sshd, sudo), the opsbook run's own seconds
on each host, and how busy both together kept the machine's cores. Any run that fails ends
the benchmark with exit 1, the reason and no figures.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import labstate  # noqa: E402

from opslib.core import procs  # noqa: E402
from opslib.core.errors import OpsError  # noqa: E402
from opslib.lab.booted import daemonhost, nspawn, ssh  # noqa: E402
from opslib.lab.booted import fleet as labfleet  # noqa: E402
from opslib.lab.config import Lab  # noqa: E402

STATE = "booted hosts and their inventory: opsbook lab up --hosts 3 (--hosts N for --hosts N)"
RUNBOOK = "host-health"
OPSBOOK = str(ROOT / ".venv" / "bin" / "opsbook")
CORES = os.cpu_count() or 1
# what a host's opsbook says of its run: "record #12: daemon1/…-host-health.ipynb, 2.1 s)"
OWN_SECONDS = re.compile(r"record #\d+: \S+, ([\d.]+) s\)")


class BenchFailed(Exception):
    """What the benchmark timed did not succeed: no figure is worth printing."""


@dataclass
class Sample:
    """One timed run of a case: wall seconds, CPU seconds of the workstation's processes
    (this benchmark's children: the fleet command, Ansible, ssh) and of the hosts (their
    cgroups), and each host's opsbook run as it timed itself."""

    seconds: float
    workstation_cpu: float = 0.0
    hosts_cpu: float = 0.0
    own: list[float] = field(default_factory=list)


def timed(
    name: str,
    argvs: list[list[str]],
    env: dict[str, str] | None = None,
    output: list[str] | None = None,
) -> float:
    """Seconds for ``argvs`` run one after the other; BenchFailed when one fails. Each
    run's output is appended to ``output`` when given."""
    t0 = time.perf_counter()
    for argv in argvs:
        proc = subprocess.run(
            argv, capture_output=True, text=True, check=False, env={**os.environ, **(env or {})}
        )
        if proc.returncode != 0:
            why = procs.last_line(proc)
            raise BenchFailed(f"{name}: `{shlex.join(argv)}` exited {proc.returncode}: {why}")
        if output is not None:
            output.append(proc.stdout + proc.stderr)
    return time.perf_counter() - t0


def hosts_cpu(lab: Lab) -> float:
    """CPU seconds used so far by every booted host of the lab (its cgroup v2 cpu.stat:
    systemd, sshd, sudo, opsbook, libvirtd and its guests)."""
    total = 0
    for host in daemonhost.hosts(lab):
        for group in nspawn.cgroups(host.container):
            stat = group / "cpu.stat"
            if stat.is_file():
                for line in stat.read_text().splitlines():
                    if line.startswith("usage_usec "):
                        total += int(line.split()[1])
    return total / 1e6


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def sample(lab: Lab, name: str, argvs: list[list[str]], env: dict[str, str]) -> Sample:
    out: list[str] = []
    cpu0, hosts0 = children_cpu(), hosts_cpu(lab)
    seconds = timed(name, argvs, env, out)
    own = [float(s) for text in out for s in OWN_SECONDS.findall(text)]
    return Sample(seconds, children_cpu() - cpu0, hosts_cpu(lab) - hosts0, own)


def by_ssh(lab: Lab, host: str) -> list[str]:
    """``opsbook run`` on ``host`` over the lab's ssh, its parameter set given as -p."""
    argv = ["sudo", "opsbook", "run", RUNBOOK, "--summary"]
    sets = labfleet.parameter_sets(lab) / host / f"{RUNBOOK}.yaml"
    for name, value in (yaml.safe_load(sets.read_text()) or {}).items() if sets.exists() else []:
        argv += ["-p", str(name), "" if value is None else str(value)]
    return ssh.ssh_argv(lab, host, shlex.join(argv))


def check_state(lab: Lab, count: int = 3) -> list[str]:
    """``count`` running booted hosts and the inventory (StateMissing otherwise): their
    names, daemon1 first."""
    return labstate.booted_hosts(lab, count)


def median(samples: list[Sample], what: str) -> float:
    return statistics.median(getattr(s, what) for s in samples)


def idle_rate(lab: Lab, seconds: float = 5.0) -> float:
    """The hosts' CPU seconds per second while nothing runs on them (their daemons, the
    guests of the first hosts): what a run's wall time costs them anyway."""
    before = hosts_cpu(lab)
    time.sleep(seconds)
    return (hosts_cpu(lab) - before) / seconds


def report(sizes: list[int], runs: int, found: dict[str, list[Sample]], idle: float = 0.0) -> None:
    def fleet(n: int) -> list[Sample]:
        return found[f"fleet run, {n} host{'s' if n > 1 else ''} (forks {n})"]

    def by_hand(n: int) -> list[Sample]:
        return found[f"ssh opsbook run, {n} host{'s in turn' if n > 1 else ''}"]

    print(f"{'WAY (' + RUNBOOK + ', median of ' + str(runs) + ')':40} {'SECONDS':>8}")
    for name, samples in found.items():
        print(f"{name:40} {median(samples, 'seconds'):8.2f}")
    f1, s1 = median(fleet(1), "seconds"), median(by_hand(1), "seconds")
    print(f"\nfleet on 1 host / ssh on 1 host: {f1 / s1:.2f}× (target ≤ 1.5×); "
          f"Ansible adds {f1 - s1:.2f} s")  # fmt: skip
    for n in sizes[1:]:
        fn, sn = median(fleet(n), "seconds"), median(by_hand(n), "seconds")
        target = " (target ≤ 1.5×)" if n == 3 else " (target ≤ 2× at 10)" if n == 10 else ""
        print(
            f"{n} hosts / 1 host: {fn / f1:.2f}× with fleet{target}, {sn / s1:.2f}× by ssh in "
            f"turn; one more host costs the fleet {(fn - f1) / (n - 1):.2f} s "
            f"(by ssh {(sn - s1) / (n - 1):.2f} s)"
        )
    print(
        f"\nwhere a fleet run's time goes ({CORES} cores; CPU seconds, medians):\n"
        f"{'HOSTS':>5} {'WALL':>6} {'WORKSTATION':>11} {'HOSTS CPU':>9} {'OF IT IDLE':>10} "
        f"{'BUSY':>5} {'OPSBOOK/HOST':>12}"
    )
    for n in sizes:
        samples = fleet(n)
        wall = median(samples, "seconds")
        mine, theirs = median(samples, "workstation_cpu"), median(samples, "hosts_cpu")
        own = statistics.median(x for s in samples for x in s.own) if samples[0].own else 0.0
        busy = (mine + theirs) / (CORES * wall)
        print(f"{n:5} {wall:6.2f} {mine:11.2f} {theirs:9.2f} {idle * wall:10.2f} {busy:5.0%} "
              f"{own:12.2f}")  # fmt: skip
    print(
        "WORKSTATION: the fleet command, ansible-playbook and its ssh; HOSTS CPU: the hosts' "
        "cgroups (opsbook, sshd, sudo; guests too); OF IT IDLE: what the hosts use in that "
        f"time with nothing run ({idle:.2f} CPU-s/s: daemons, the first hosts' guests); "
        "BUSY: both over all cores for the wall time (100%: the machine is the limit); "
        "OPSBOOK/HOST: each host's run as it timed itself"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prefix", default=None, help="lab prefix (default $OPSBOOK_LAB_PREFIX)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--hosts", type=int, default=3, help="largest fleet timed: 3 or more, or 1 (that row only)"
    )
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be 1 or more")
    if args.hosts == 2 or args.hosts < 1:
        ap.error("--hosts must be 1, or 3 or more")
    try:
        lab = Lab.from_env(args.prefix)
        hosts = check_state(lab, args.hosts)
    except (labstate.StateMissing, OpsError) as exc:
        print(f"fleet_bench: {exc}", file=sys.stderr)
        return 1
    inventory = labfleet.inventory_file(lab)
    sizes = [1] if args.hosts == 1 else sorted({1, 3, args.hosts})
    cases: dict[str, list[list[str]]] = {}
    for n in sizes:
        cases[f"fleet run, {n} host{'s' if n > 1 else ''} (forks {n})"] = [
            [OPSBOOK, "fleet", "run", RUNBOOK, "-i", str(inventory),
             "--limit", ":".join(hosts[:n]), "--forks", str(n)]
        ]  # fmt: skip
    for n in sizes:
        name = f"ssh opsbook run, {n} host{'s in turn' if n > 1 else ''}"
        cases[name] = [by_ssh(lab, h) for h in hosts[:n]]
    found: dict[str, list[Sample]] = {name: [] for name in cases}
    idle = idle_rate(lab)
    with tempfile.TemporaryDirectory(prefix="opsbook-fleet-bench-") as records:
        env = {"OPSBOOK_RECORDS": records}
        try:
            for _round in range(args.runs):  # in turn: each round meets the same load
                for name, argvs in cases.items():
                    found[name].append(sample(lab, name, argvs, env))
        except BenchFailed as exc:
            print(f"fleet_bench: FAILED, no figures: {exc}", file=sys.stderr)
            return 1
    report(sizes, args.runs, found, idle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
