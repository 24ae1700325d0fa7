"""Benchmark the record store with 10,000 generated records.

    .venv/bin/python benchmarks/records_bench.py [--records N] [--keep DIR]

Fills a temporary store with small executed-notebook records (a plan and a
result output each, a header in metadata), builds the index with ``records
reindex``, then times ``opsbook records --status failed``, ``records show`` and
``records reindex`` as commands (wall time of a fresh process, best of 5) and as
calls in this process, beside the time to open one record with nbformat.
Listing and showing should stay under 0.2 s. A command that fails ends the
benchmark with exit 1, the reason and no figures.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from opslib.records import RESULT_MIME, Store, dump_notebook

RUNBOOKS = ("network-inventory", "forward-bridge", "netreg-attach", "find-vm-ip", "host-health")
HOSTS = ("lab", "daemon-1", "daemon-2", "daemon-3")
LIMIT = 0.2


class BenchFailed(Exception):
    """A timed command did not succeed: no figure is worth printing."""


def generate(root: Path, count: int) -> None:
    rnd = random.Random(42)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    for i in range(count):
        t = start + timedelta(minutes=17 * i, seconds=rnd.randrange(60))
        runbook, host = rnd.choice(RUNBOOKS), rnd.choice(HOSTS)
        status = rnd.choices(("ok", "failed", "killed"), weights=(90, 9, 1))[0]
        result = {
            "kind": "result",
            "runbook": runbook,
            "host": host,
            "status": "changed" if i % 3 == 0 else "unchanged",
            "changed": i % 3 == 0,
            "failed": status != "ok",
            "summary": f"run {i}",
            "changes": [],
            "checks": [{"name": "bridge up", "status": "ok", "seen": "br0 UP", "fix": ""}],
            "steps": [],
            "tables": {},
            "data": {},
        }
        header = {
            "id": i + 1,
            "runbook": runbook,
            "host": host,
            "parameters": {"host": host, "apply": i % 3 == 0},
            "user": "ops",
            "start": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end": (t + timedelta(seconds=4)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "status": status,
            "exit_code": 0 if status == "ok" else 1,
            "changed": i % 3 == 0,
            "summary": f"run {i}",
            "opslib_version": "0.1.0",
            "revision": "bench",
            "mode": "headless",
            "pid": 0,
        }
        nb = {
            "nbformat": 4,
            "nbformat_minor": 5,
            "metadata": {"opsbook": header, "kernelspec": {"name": "python3"}},
            "cells": [
                {"cell_type": "markdown", "id": "a", "metadata": {}, "source": f"# {runbook}"},
                {
                    "cell_type": "code",
                    "id": "b",
                    "metadata": {"tags": ["parameters"]},
                    "execution_count": 1,
                    "outputs": [],
                    "source": f'host = "{host}"  # host: the host',
                },
                {
                    "cell_type": "code",
                    "id": "c",
                    "metadata": {},
                    "execution_count": 2,
                    "source": "rb.report(x.run)",
                    "outputs": [
                        {
                            "output_type": "display_data",
                            "metadata": {},
                            "data": {"text/plain": f"run {i}", RESULT_MIME: result},
                        }
                    ],
                },
            ],
        }
        path = root / host / t.strftime("%Y/%m/%d") / f"{t.strftime('%H%M%S')}Z-{runbook}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(dump_notebook(nb))


def best(fn: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def command(root: Path, *args: str, engine_only: bool = False) -> Callable[[], object]:
    """A fresh ``opsbook`` process; ``engine_only`` builds just the engine's subcommands,
    to tell the engine's cost from the import cost of the other areas' subcommands."""
    argv = [*args, "--records", str(root)]
    if engine_only:
        code = (
            "import argparse, sys; from opslib import engine_cli; "
            "p = argparse.ArgumentParser(); engine_cli.add_parsers(p.add_subparsers()); "
            "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))"
        )
        full = [sys.executable, "-c", code, *argv]
    else:
        full = [sys.executable, "-m", "opslib.cli", *argv]

    def run() -> object:
        proc = subprocess.run(full, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            why = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
            raise BenchFailed(f"`opsbook {' '.join(argv)}` exited {proc.returncode}: {why}")
        return proc

    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=10_000, help="how many records (10000)")
    ap.add_argument("--keep", metavar="DIR", help="build the store here and keep it")
    args = ap.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="opsbook-bench-"))
    try:
        t0 = time.perf_counter()
        generate(root, args.records)
        print(f"generated {args.records} records in {time.perf_counter() - t0:.1f} s: {root}")
        store = Store(root)
        reindex_s = best(store.reindex, repeat=1)
        failed = store.list(status="failed", limit=50)
        if not failed:
            raise BenchFailed(f"the index lists no failed run of {args.records} generated")
        some = failed[0]
        one = store.abspath(some)
        import nbformat

        def both(*args: str, repeat: int = 5) -> tuple[float, float]:
            return (
                best(command(root, *args), repeat),
                best(command(root, *args, engine_only=True), repeat),
            )

        rows = [
            (
                "records --status failed",
                *both("records", "--status", "failed"),
                best(lambda: store.list(status="failed", limit=50)),
                True,
            ),
            (
                "records show ID",
                *both("records", "show", str(some.id)),
                best(lambda: (store.get(some.id), store.notebook(some))),
                True,
            ),
            ("records reindex", *both("records", "reindex", repeat=1), reindex_s, False),
            (
                "nbformat.read one record",
                best(
                    lambda: subprocess.run(
                        [sys.executable, "-c", f"import nbformat; nbformat.read({str(one)!r}, 4)"],
                        check=True,
                    )
                ),
                float("nan"),
                best(lambda: nbformat.read(str(one), as_version=4)),
                False,
            ),
        ]
        python = best(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True))
        print(f"\n{'operation':<26} {'opsbook (s)':>12} {'engine only':>12} {'in-process':>11}")
        bad = 0
        for name, wall, engine, inproc, limited in rows:
            verdict = ""
            if limited:
                ok = engine < LIMIT
                bad += not ok
                verdict = f"  < {LIMIT} s: {'ok' if ok else 'EXCEEDED'}"
            print(f"{name:<26} {wall:>12.3f} {engine:>12.3f} {inproc:>11.4f}{verdict}")
        print(f"{'python -c pass':<26} {python:>12.3f}")
        size = sum(p.stat().st_size for p in root.rglob("*.ipynb")) / 1e6
        print(
            f"\n{args.records} records, {size:.0f} MB of notebooks, "
            f"index {os.path.getsize(store.index_path) / 1e6:.1f} MB; load {os.getloadavg()[0]:.1f}"
        )
        return 1 if bad else 0
    except BenchFailed as exc:
        print(f"records_bench: FAILED, no figures: {exc}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
