"""What Ansible costs a fleet run: host-health on 1 and 3 hosts, beside plain ssh.

Runs on three booted hosts and their inventory (``STATE``), as root::

    .venv/bin/opsbook lab --prefix ob up --hosts 3
    .venv/bin/python benchmarks/fleet_bench.py --prefix ob [--runs 3]

(prefix: ``--prefix``, else $OPSBOOK_LAB_PREFIX, else ``ob``). It checks that state first
(:func:`check_state`) and names what is missing in one line, exit 1.

Times, median of N runs each:

- ``opsbook fleet run host-health`` on the first host (forks 1) and on three hosts (forks 3);
- the same runbook by hand over plain ssh (``ssh HOST sudo opsbook run host-health …``, the
  host's parameter set as ``-p``), one host, then three hosts one after the other.

Prints Ansible's overhead over one ``ssh … opsbook run`` (fleet on 1 host minus ssh on 1
host), the ratio of 3 hosts to 1 (target ≤ 1.5×), and a projection for 50 hosts at forks 10
with the figures it rests on. Any run that fails ends the benchmark with exit 1, the reason
and no figures.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import labstate  # noqa: E402

from opslib.core import procs  # noqa: E402
from opslib.core.errors import OpsError  # noqa: E402
from opslib.lab.booted import fleet as labfleet  # noqa: E402
from opslib.lab.booted import ssh  # noqa: E402
from opslib.lab.config import Lab  # noqa: E402

STATE = "three booted hosts and their inventory: opsbook lab up --hosts 3"
RUNBOOK = "host-health"
OPSBOOK = str(ROOT / ".venv" / "bin" / "opsbook")


class BenchFailed(Exception):
    """What the benchmark timed did not succeed: no figure is worth printing."""


def timed(name: str, argvs: list[list[str]], env: dict[str, str] | None = None) -> float:
    """Seconds for ``argvs`` run one after the other; BenchFailed when one fails."""
    t0 = time.perf_counter()
    for argv in argvs:
        proc = subprocess.run(
            argv, capture_output=True, text=True, check=False, env={**os.environ, **(env or {})}
        )
        if proc.returncode != 0:
            why = procs.last_line(proc)
            raise BenchFailed(f"{name}: `{shlex.join(argv)}` exited {proc.returncode}: {why}")
    return time.perf_counter() - t0


def by_ssh(lab: Lab, host: str) -> list[str]:
    """``opsbook run`` on ``host`` over the lab's ssh, its parameter set given as -p."""
    argv = ["sudo", "opsbook", "run", RUNBOOK, "--summary"]
    sets = labfleet.parameter_sets(lab) / host / f"{RUNBOOK}.yaml"
    for name, value in (yaml.safe_load(sets.read_text()) or {}).items() if sets.exists() else []:
        argv += ["-p", str(name), "" if value is None else str(value)]
    return ssh.ssh_argv(lab, host, shlex.join(argv))


def check_state(lab: Lab) -> list[str]:
    """Three running booted hosts and the inventory (StateMissing otherwise): their names."""
    return labstate.booted_hosts(lab, 3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prefix", default=None, help="lab prefix (default $OPSBOOK_LAB_PREFIX)")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be 1 or more")
    try:
        lab = Lab.from_env(args.prefix)
        hosts = check_state(lab)
    except (labstate.StateMissing, OpsError) as exc:
        print(f"fleet_bench: {exc}", file=sys.stderr)
        return 1
    inventory = labfleet.inventory_file(lab)
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="opsbook-fleet-bench-") as records:
        env = {"OPSBOOK_RECORDS": records}

        def fleet(n: int) -> list[list[str]]:
            limit = ":".join(hosts[:n])
            return [[OPSBOOK, "fleet", "run", RUNBOOK, "-i", str(inventory),
                     "--limit", limit, "--forks", str(n)]]  # fmt: skip

        cases = {
            "fleet run, 1 host (forks 1)": fleet(1),
            "fleet run, 3 hosts (forks 3)": fleet(3),
            "ssh opsbook run, 1 host": [by_ssh(lab, hosts[0])],
            "ssh opsbook run, 3 hosts in turn": [by_ssh(lab, h) for h in hosts],
        }
        try:
            for name, argvs in cases.items():
                times = [timed(name, argvs, env) for _ in range(args.runs)]
                figures[name] = statistics.median(times)
        except BenchFailed as exc:
            print(f"fleet_bench: FAILED, no figures: {exc}", file=sys.stderr)
            return 1
    print(f"{'WAY (' + RUNBOOK + ', median of ' + str(args.runs) + ')':40} {'SECONDS':>8}")
    for name, seconds in figures.items():
        print(f"{name:40} {seconds:8.2f}")
    f1, f3 = figures["fleet run, 1 host (forks 1)"], figures["fleet run, 3 hosts (forks 3)"]
    s1, s3 = figures["ssh opsbook run, 1 host"], figures["ssh opsbook run, 3 hosts in turn"]
    overhead = f1 - s1
    per_extra = max(0.0, (f3 - f1) / 2)
    rounds = math.ceil(50 / 10)
    print(
        f"\nAnsible's overhead over one ssh … opsbook run: {overhead:.2f} s ({f1:.2f} − {s1:.2f})"
    )
    print(f"3 hosts / 1 host: {f3 / f1:.2f}× with fleet (target ≤ 1.5×), {s3 / s1:.2f}× by ssh")
    print(
        f"50 hosts at forks 10: {rounds} rounds of 10. With each host on its own machine, "
        f"≈ {overhead:.2f} + {rounds} × {s1:.2f} = {overhead + rounds * s1:.1f} s (overhead "
        f"once, one host's run per round); with this lab's cost per extra parallel host "
        f"({per_extra:.2f} s, all hosts sharing its cores) ≈ {f1:.2f} + 49 × {per_extra:.2f} "
        f"= {f1 + 49 * per_extra:.1f} s; by ssh in turn ≈ 50 × {s1:.2f} = {50 * s1:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
