"""What one headless `opsbook run host-health` costs in wall and CPU seconds (opsbook
itself and its kernel), with the kernel started as opsbook starts it beside the stock way.

Runs on a configured simulated host (``STATE``)::

    .venv/bin/opsbook lab --prefix ob up --simulated --configured
    .venv/bin/python benchmarks/run_bench.py --prefix ob [--runs 7] [--base DIR]

(prefix: ``--prefix``, else $OPSBOOK_LAB_PREFIX, else ``ob``). It checks that state first
(host_health_bench's check: libvirtd, the NAT network carrying IPv6, the guests running)
and names what is missing in one line, exit 1.

The ways, run in turn (one unmeasured run of each first), each `opsbook run host-health
-q` with the simulated host's parameter set in a child process:

- ``stock``: the kernel as it was started before: the kernelspec's argv as it is
  (``ipykernel_launcher``, which imports the debugger) and started by nbclient once
  papermill is loaded (the child replaces ``run_cells.headless_argv`` and
  ``run_cells.started_kernel_manager`` with those stock steps);
- ``now``: `opsbook run` as it is;
- ``base`` (with ``--base DIR``): the opslib of another checkout, e.g. ``git worktree add
  /tmp/base main``, run with this venv (PYTHONPATH=DIR, its notebooks).

Per way, the median of N runs: the wall seconds from starting the child to its exit; the
CPU seconds of the child and everything it waited for (its rusage), split into the
kernel's (the child's own children at its exit: the kernel and the commands the kernel
ran) and opsbook's (the rest, its exit included). Any run that fails (an exit code other
than 0, no CPU line) ends the benchmark with exit 1, the reason and no figures.
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import labstate  # noqa: E402

from opslib.core import procs  # noqa: E402
from opslib.core.errors import OpsError  # noqa: E402
from opslib.lab.config import Lab  # noqa: E402
from opslib.lab.notebook import lab_defaults  # noqa: E402

STATE = "a configured simulated host: opsbook lab up --simulated --configured"
MARK = "run_bench-cpu"

# The child: `opsbook ARGS` (argv[2:]) as the console script runs it; in the stock way
# with the kernel started the stock way; at exit, its children's CPU seconds (the kernel,
# reaped by then) on stderr. Kept short: the child compiles it on every run.
CHILD = f"""
import atexit, os, resource, sys
way, sys.argv = sys.argv[1], ["opsbook", *sys.argv[2:]]
if way == "stock":
    from opslib.engine import run_cells
    run_cells.headless_argv = list
    run_cells.started_kernel_manager = lambda name, log: run_cells.quiet_kernel_manager(log)
def cpu():
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    os.write(2, b"\\n{MARK} %f\\n" % (c.ru_utime + c.ru_stime))
atexit.register(cpu)
from opslib.cli.main import main
sys.exit(main())
"""


def check_state(lab: Lab) -> labstate.SimulatedHost:
    """The simulated host configured (StateMissing otherwise)."""
    return labstate.configured_simulated_host(lab)


class BenchFailed(Exception):
    """What the benchmark timed did not succeed: no figure is worth printing."""


@dataclass(frozen=True)
class Sample:
    wall: float
    parent: float  # opsbook's CPU seconds, its exit included
    kernel: float  # the kernel's, and the commands it ran


def cpu_of_children() -> float:
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return c.ru_utime + c.ru_stime


def timed_run(way: str, args: list[str], env: dict[str, str], cwd: str) -> Sample:
    """One run in a child started in ``cwd``: not a checkout, whose opslib would come
    first on the child's path (``-c``), before PYTHONPATH's (``--base``)."""
    argv = [sys.executable, "-c", CHILD, way, *args]
    before, t0 = cpu_of_children(), time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    wall, total = time.perf_counter() - t0, cpu_of_children() - before
    lines = proc.stderr.splitlines()
    marks = [ln for ln in lines if ln.startswith(MARK + " ")]
    if proc.returncode != 0:
        proc.stderr = "\n".join(ln for ln in lines if ln not in marks)
        why = procs.last_line(proc)
        raise BenchFailed(f"{way}: `opsbook {shlex.join(args)}` exited {proc.returncode}: {why}")
    if not marks:
        raise BenchFailed(f"{way}: the child printed no CPU line ({MARK})")
    kernel = float(marks[-1].split()[1])
    return Sample(wall, total - kernel, kernel)


def ways(base: Path | None) -> dict[str, dict[str, str]]:
    """Each way and its child's environment."""
    env = dict(os.environ)
    out = {"stock": env, "now": env}
    if base is not None:
        out["base"] = {
            **env,
            "PYTHONPATH": os.pathsep.join([str(base), env.get("PYTHONPATH", "")]).rstrip(":"),
            "OPSBOOK_NOTEBOOKS": str(base / "notebooks"),
        }
    return out


def measure(args: list[str], runs: int, base: Path | None, cwd: str) -> dict[str, list[Sample]]:
    envs = ways(base)
    for way, env in envs.items():  # warm-up: caches, and a lab that is not as configured
        timed_run(way if way == "stock" else "now", args, env, cwd)
    samples: dict[str, list[Sample]] = {way: [] for way in envs}
    for _ in range(runs):
        for way, env in envs.items():
            samples[way].append(timed_run(way if way == "stock" else "now", args, env, cwd))
    return samples


def report(samples: dict[str, list[Sample]], runs: int) -> None:
    print(f"opsbook run host-health, median of {runs} runs per way (taken in turn)")
    print(f"{'WAY':6} {'WALL':>7} {'CPU':>7} {'OPSBOOK':>8} {'KERNEL':>7}")
    medians = {}
    for way, got in samples.items():
        wall = statistics.median(s.wall for s in got)
        parent = statistics.median(s.parent for s in got)
        kernel = statistics.median(s.kernel for s in got)
        cpu = statistics.median(s.parent + s.kernel for s in got)
        medians[way] = (wall, cpu)
        print(f"{way:6} {wall:6.2f}s {cpu:6.2f}s {parent:7.2f}s {kernel:6.2f}s")
    print("(CPU = OPSBOOK + KERNEL: opsbook's process and its kernel with what the kernel ran)")
    now_wall, now_cpu = medians["now"]
    for way in [w for w in medians if w != "now"]:
        wall, cpu = medians[way]
        print(
            f"now vs {way}: wall {now_wall - wall:+.2f} s ({(now_wall / wall - 1) * 100:+.0f}%), "
            f"CPU {now_cpu - cpu:+.2f} s ({(now_cpu / cpu - 1) * 100:+.0f}%)"
        )
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print(
            "note: PYTHONDONTWRITEBYTECODE is set: opslib has no bytecode cache here and is "
            "compiled on every run (an installed opsbook has one)"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prefix", default=None, help="lab prefix (default $OPSBOOK_LAB_PREFIX)")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--base", type=Path, default=None, help="a checkout to time beside (base)")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be 1 or more")
    if args.base is not None and not (args.base / "opslib" / "engine" / "runner.py").is_file():
        ap.error(f"--base {args.base}: not an opsbook checkout (no opslib/engine/runner.py)")
    try:
        lab = Lab.from_env(args.prefix)
        check_state(lab)
    except (labstate.StateMissing, OpsError) as exc:
        print(f"run_bench: {exc}", file=sys.stderr)
        return 1
    params = lab_defaults(lab) / "host-health.yaml"  # opslib.lab.simulated.sets
    with tempfile.TemporaryDirectory(prefix="opsbook-bench-") as records:
        run_args = ["run", "host-health", "-q", "--records", records, "-f", str(params)]
        try:
            samples = measure(run_args, args.runs, args.base, records)
        except BenchFailed as exc:
            print(f"run_bench: FAILED, no figures: {exc}", file=sys.stderr)
            return 1
    report(samples, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
