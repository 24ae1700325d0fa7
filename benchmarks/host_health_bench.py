"""How long the hourly host-health run takes, beside papermill's own floor.

Runs on a configured simulated host (``STATE``)::

    .venv/bin/opsbook lab --prefix ob up --simulated --configured
    .venv/bin/python benchmarks/host_health_bench.py --prefix ob [--runs 3]

(prefix: ``--prefix``, else $OPSBOOK_LAB_PREFIX, else ``ob``). It checks that state
first (:func:`check_state`: the simulated host's libvirtd, its NAT network carrying IPv6,
the guests running) and names what is missing in one line, exit 1.

Uses the simulated host's parameter set (opslib.lab.simulated.sets, written for the
prefix). Prints, per way of running, the median wall time of N runs: an empty notebook
through `opsbook run` (the floor: interpreter, papermill import, kernel start),
host-health through `opsbook run` (what the timer runs), and host-health's
checks in-process (what opslib itself costs). The target is under 5 s for the
whole headless run on the lab's 3 guests. Any run that fails (an exit code other than
0, a failing check) ends the benchmark with exit 1, the reason and no figures.
"""

from __future__ import annotations

import argparse
import inspect
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import labstate  # noqa: E402

from opslib.core import procs  # noqa: E402
from opslib.core.errors import OpsError  # noqa: E402
from opslib.engine import runner  # noqa: E402
from opslib.lab.config import Lab  # noqa: E402
from opslib.lab.notebook import lab_defaults  # noqa: E402
from opslib.procedures import host_health  # noqa: E402

STATE = "a configured simulated host: opsbook lab up --simulated --configured"


def check_state(lab: Lab) -> labstate.SimulatedHost:
    """The simulated host configured (StateMissing otherwise)."""
    return labstate.configured_simulated_host(lab)


class BenchFailed(Exception):
    """What the benchmark timed did not succeed: no figure is worth printing."""


def timed_run(name: str, argv: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        why = procs.last_line(proc)
        raise BenchFailed(f"{name}: `{shlex.join(argv)}` exited {proc.returncode}: {why}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prefix", default=None, help="lab prefix (default $OPSBOOK_LAB_PREFIX)")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be 1 or more")
    try:
        lab = Lab.from_env(args.prefix)
        check_state(lab)
    except (labstate.StateMissing, OpsError) as exc:
        print(f"host_health_bench: {exc}", file=sys.stderr)
        return 1
    # the simulated host's set, written for this lab (opslib.lab.simulated.sets)
    params = lab_defaults(lab) / "host-health.yaml"
    opsbook = str(ROOT / ".venv" / "bin" / "opsbook")
    rows = []
    with tempfile.TemporaryDirectory(prefix="opsbook-bench-") as records:
        cases = {
            "empty notebook (papermill floor)": [
                opsbook, "run", str(ROOT / "benchmarks" / "empty.ipynb"), "-q",
                "--records", records,
            ],
            "host-health via opsbook run": [
                opsbook, "run", "host-health", "-q", "--records", records, "-f", str(params),
            ],
        }  # fmt: skip
        # host-health first: a lab that is not as configured fails before any timing
        order = ["host-health via opsbook run", "empty notebook (papermill floor)"]
        try:
            for name in order:
                times = [timed_run(name, cases[name]) for _ in range(args.runs)]
                rows.append((name, statistics.median(times), min(times)))
            # the same values `opsbook run` gets, in this process
            values = runner.prepare(runner.find_runbook("host-health"), [], [params]).values
            accepted = inspect.signature(host_health.run).parameters
            kwargs = {k: v for k, v in values.items() if k in accepted}
            kwargs["records_dir"] = records
            times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                result = host_health.run(**kwargs)
                times.append(time.perf_counter() - t0)
                if result.failed:
                    raise BenchFailed(f"host-health checks in-process: {result.summary}")
            rows.append(("host-health checks in-process", statistics.median(times), min(times)))
        except BenchFailed as exc:
            print(f"host_health_bench: FAILED, no figures: {exc}", file=sys.stderr)
            return 1
    print(f"{'WAY':36} {'MEDIAN':>8} {'MIN':>8}")
    for name, median, best in rows:
        print(f"{name:36} {median:7.2f}s {best:7.2f}s")
    full, floor = rows[0][1], rows[1][1]
    print(f"\nhost-health above the floor: {full - floor:.2f} s; target for the whole run: < 5 s")
    print(f"checks: {result.summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
