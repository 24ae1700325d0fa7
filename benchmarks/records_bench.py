"""Benchmark the record store and its site with 10,000 generated records.

    .venv/bin/python benchmarks/records_bench.py [--records N] [--keep DIR] [--no-browser]

Fills a temporary store with small executed-notebook records (a plan and a
result output each, a header in metadata; find-vm-ip's with an addresses table),
builds the index with ``records reindex`` and the site with ``records html``, then
times ``opsbook records --status failed``, ``records show``, ``records reindex``,
``records html`` with nothing new, ``records search MAC`` as commands (wall time of a
fresh process, best of 5) and as calls in this process, beside the time to open one
record with nbformat; then ``records html`` after 100 new runs (per record), and, with
chromium, the index page's load and a search's filtering measured in the browser.
Limits: listing, showing and searching under 0.2 s, ``records html`` with nothing new
under 2 s, the index loading and filtering under 1 s each. A command that fails ends
the benchmark with exit 1, the reason and no figures.

It runs on no lab (``STATE``): it makes its own store; :func:`check_state` asks nothing.
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

from opslib.records.notebook_json import RESULT_MIME, dump_notebook
from opslib.records.store import Store

RUNBOOKS = ("network-inventory", "forward-bridge", "netreg-attach", "find-vm-ip", "host-health")
HOSTS = ("lab", "daemon-1", "daemon-2", "daemon-3")
LIMIT = 0.2
HTML_LIMIT = 2.0
BROWSER_LIMIT = 1.0
NEW = 100  # runs added before timing the rendering of new pages
CHROMIUM = "/usr/bin/chromium"


STATE = "no lab: a temporary store of generated records"


def check_state(lab: object = None) -> None:
    """Nothing to check: the benchmark builds its own store (chromium is optional)."""
    del lab


def mac_of(i: int) -> str:
    return "52:54:00:" + ":".join(f"{b:02x}" for b in i.to_bytes(3, "big"))


class BenchFailed(Exception):
    """A timed command did not succeed: no figure is worth printing."""


def record(i: int, rnd: random.Random, start: datetime) -> tuple[Path, dict[str, object]]:
    """Record ``i``: its path under the store's root and its notebook."""
    t = start + timedelta(minutes=17 * i, seconds=rnd.randrange(60))
    runbook, host = rnd.choice(RUNBOOKS), rnd.choice(HOSTS)
    status = rnd.choices(("ok", "failed", "killed"), weights=(90, 9, 1))[0]
    addresses = [
        {
            "vm": f"vm-{i}-{n}",
            "mac": mac_of(2 * i + n),
            "family": "ipv4",
            "ip": f"198.51.100.{(2 * i + n) % 250 + 1}",
            "source": "lease",
        }
        for n in range(2)
    ]
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
        "tables": {"addresses": addresses} if runbook == "find-vm-ip" else {},
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
    rel = Path(host) / t.strftime("%Y/%m/%d") / f"{t.strftime('%H%M%S')}Z-{runbook}.ipynb"
    return rel, nb


def generate(root: Path, count: int) -> None:
    rnd = random.Random(42)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    for i in range(count):
        rel, nb = record(i, rnd, start)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(dump_notebook(nb))


def add_new(store: Store, first: int, count: int) -> None:
    """``count`` runs filed as a run files them (index row, search text), after the rest."""
    rnd = random.Random(first)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    for i in range(first, first + count):
        _, nb = record(i, rnd, start)
        header = dict(nb["metadata"]["opsbook"])  # type: ignore[index]
        header.pop("id")
        store.add(header, nb)


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
            "import argparse, sys; from opslib.cli import runbooks; "
            "p = argparse.ArgumentParser(); runbooks.add_parsers(p.add_subparsers()); "
            "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))"
        )
        full = [sys.executable, "-c", code, *argv]
    else:
        full = [sys.executable, "-m", "opslib.cli.main", *argv]

    def run() -> object:
        proc = subprocess.run(full, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            why = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
            raise BenchFailed(f"`opsbook {' '.join(argv)}` exited {proc.returncode}: {why}")
        return proc

    return run


def in_browser(index: Path, mac: str) -> tuple[float, float]:
    """Seconds for chromium (up, the page opened once) to load the index page again (to
    its load event), and to filter it down to the runs of one MAC (the search's input
    handler and the next frame)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
        )
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(index.as_uri(), wait_until="load", timeout=60_000)
            page.reload(wait_until="load", timeout=60_000)  # timed: a browser already up
            load_ms = page.evaluate(
                "() => performance.getEntriesByType('navigation')[0].loadEventEnd"
            )
            filter_ms = page.evaluate(
                """async (mac) => {
                  const t0 = performance.now(), box = document.getElementById("search");
                  box.value = mac;
                  box.dispatchEvent(new Event("input"));
                  await new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)));
                  return performance.now() - t0;
                }""",
                mac,
            )
            shown = page.locator("#runs tbody tr:not([hidden])").count()
        finally:
            browser.close()
    if errors or shown != 1:
        raise BenchFailed(f"the index in chromium: {shown} run(s) shown for {mac}; {errors}")
    return load_ms / 1000, filter_ms / 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=10_000, help="how many records (10000)")
    ap.add_argument("--keep", metavar="DIR", help="build the store here and keep it")
    ap.add_argument("--no-browser", action="store_true", help="skip the measures in chromium")
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

        from opslib.records import search, site

        def both(*args: str, repeat: int = 5) -> tuple[float, float]:
            return (
                best(command(root, *args), repeat),
                best(command(root, *args, engine_only=True), repeat),
            )

        first_build = best(command(root, "records", "html"), repeat=1)
        if site.build(store).rendered:
            raise BenchFailed("a second `records html` rendered record pages again")
        fvi = store.list(runbook="find-vm-ip", limit=1)
        if not fvi:
            raise BenchFailed("no find-vm-ip run among the generated records")
        mac = mac_of(2 * (fvi[0].id - 1))  # generated record i has id i + 1
        if [h.id for h in search.search(store, mac)] != [fvi[0].id]:
            raise BenchFailed(f"records search {mac} does not find run #{fvi[0].id}")
        Limit = float | None
        rows: list[tuple[str, float, float, float, Limit]] = [
            (
                "records --status failed",
                *both("records", "--status", "failed"),
                best(lambda: store.list(status="failed", limit=50)),
                LIMIT,
            ),
            (
                "records show ID",
                *both("records", "show", str(some.id)),
                best(lambda: (store.get(some.id), store.notebook(some))),
                LIMIT,
            ),
            ("records reindex", *both("records", "reindex", repeat=1), reindex_s, None),
            (
                "records search MAC",
                *both("records", "search", mac),
                best(lambda: search.search(store, mac)),
                LIMIT,
            ),
            (
                "records html, none new",
                *both("records", "html", repeat=3),
                best(lambda: site.build(store), repeat=3),
                HTML_LIMIT,
            ),
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
                None,
            ),
        ]
        none_new = rows[4][1]
        add_new(store, args.records, NEW)
        html_new = command(root, "records", "html")
        t0 = time.perf_counter()
        out = html_new()
        with_new = time.perf_counter() - t0
        if f" {NEW} record pages rendered" not in getattr(out, "stdout", ""):
            raise BenchFailed(f"`records html` after {NEW} new runs: {out}")
        browser = None
        if not args.no_browser and Path(CHROMIUM).exists():
            browser = in_browser(root / "index.html", mac)
        python = best(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True))

        print(f"\n{'operation':<26} {'opsbook (s)':>12} {'engine only':>12} {'in-process':>11}")
        bad = 0
        for name, wall, engine, inproc, limit in rows:
            verdict = ""
            if limit is not None:
                ok = engine < limit
                bad += not ok
                verdict = f"  < {limit} s: {'ok' if ok else 'EXCEEDED'}"
            print(f"{name:<26} {wall:>12.3f} {engine:>12.3f} {inproc:>11.4f}{verdict}")
        print(f"{'python -c pass':<26} {python:>12.3f}")
        print(f"\nrecords html, first build of {args.records} pages: {first_build:.1f} s")
        per = (with_new - none_new) / NEW
        print(f"records html after {NEW} new runs: {with_new:.2f} s, {per * 1000:.1f} ms a record")
        if browser is not None:
            for what, secs in (("loads", browser[0]), ("filters by a MAC", browser[1])):
                ok = secs < BROWSER_LIMIT
                bad += not ok
                print(
                    f"index.html in chromium {what}: {secs:.3f} s  "
                    f"< {BROWSER_LIMIT} s: {'ok' if ok else 'EXCEEDED'}"
                )
        size = sum(p.stat().st_size for p in root.rglob("*.ipynb")) / 1e6
        print(
            f"\n{args.records} records, {size:.0f} MB of notebooks, "
            f"index {os.path.getsize(store.index_path) / 1e6:.1f} MB, "
            f"index.html {os.path.getsize(root / 'index.html') / 1e6:.1f} MB, "
            f"site.js {os.path.getsize(root / 'site.js') / 1e6:.1f} MB; "
            f"load {os.getloadavg()[0]:.1f}"
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
