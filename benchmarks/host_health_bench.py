"""How long the hourly host-health run takes, beside papermill's own floor.

Run on demand against a configured lab (`opsbook lab up --configured`, prefix from
$OPSBOOK_LAB_PREFIX)::

    .venv/bin/python benchmarks/host_health_bench.py [--runs 3]

Prints, per way of running, the median wall time of N runs: an empty notebook
through `opsbook run` (the floor: interpreter, papermill import, kernel start),
host-health through `opsbook run` (what the timer runs), and host-health's
checks in-process (what opslib itself costs). The target is under 5 s for the
whole headless run on the lab's 3 guests.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opslib.lab.config import Lab  # noqa: E402
from opslib.procedures import host_health  # noqa: E402


def lab_overrides(lab: Lab) -> list[str]:
    return ["-p", "libvirt_uri", lab.uri, "-p", "netns", lab.host_ns]


def timed_run(argv: list[str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return time.perf_counter() - t0, proc.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    lab = Lab.from_env()
    opsbook = str(ROOT / ".venv" / "bin" / "opsbook")
    rows = []
    with tempfile.TemporaryDirectory(prefix="opsbook-bench-") as records:
        cases = {
            "empty notebook (papermill floor)": [
                opsbook, "run", str(ROOT / "benchmarks" / "empty.ipynb"), "-q",
                "--records", records,
            ],
            "host-health via opsbook run": [
                opsbook, "run", "host-health", "-q", "--records", records,
                "-f", str(ROOT / "parameters" / "lab" / "host-health.yaml"), *lab_overrides(lab),
            ],
        }  # fmt: skip
        for name, argv in cases.items():
            times, codes = [], set()
            for _ in range(args.runs):
                seconds, rc = timed_run(argv)
                times.append(seconds)
                codes.add(rc)
            rows.append((name, statistics.median(times), min(times), sorted(codes)))
        times = []
        result = None
        for _ in range(args.runs):
            t0 = time.perf_counter()
            result = host_health.run(
                host="lab",
                libvirt_uri=lab.uri,
                netns=lab.host_ns,
                nat_network=lab.nat_network,
                routed_prefix=lab.routed_prefix,
                tunnel="he-ipv6",
                client_ipv6=f"{lab.tunnel_host_ipv6}/{lab.tunnel_prefixlen}",
                server_ipv6=lab.tunnel_he_ipv6,
                records_dir=records,
            )
            times.append(time.perf_counter() - t0)
        status = [0 if result and not result.failed else 1]
        rows.append(("host-health checks in-process", statistics.median(times), min(times), status))
    print(f"{'WAY':36} {'MEDIAN':>8} {'MIN':>8}  EXIT")
    for name, median, best, codes in rows:
        print(f"{name:36} {median:7.2f}s {best:7.2f}s  {','.join(map(str, codes))}")
    floor, full = rows[0][1], rows[1][1]
    print(f"\nhost-health above the floor: {full - floor:.2f} s; target for the whole run: < 5 s")
    if result is not None:
        print(f"checks: {result.summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
