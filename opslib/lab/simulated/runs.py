"""The lab's runbook sequence on the simulated host: ``opsbook demo --simulated`` and
``lab up --simulated --configured`` (the booted host's: :mod:`opslib.lab.booted.runs`).

Both run the runbooks in the wiki page's order, headless, with the simulated host's
parameter sets, through the same engine an operator uses (``opsbook run``). The sequence
lives in the lab, not in the engine: the engine never imports the lab.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from opslib.cli.records import shown, store_of, yes_no
from opslib.core.errors import ApplyError, InputError
from opslib.core.tables import table
from opslib.engine import runner
from opslib.lab import notebook as lab_notebook
from opslib.lab.campus import netreg
from opslib.lab.config import Lab
from opslib.lab.simulated import control
from opslib.records import site
from opslib.records.store import Store, default_root

# The wiki page's order: `opsbook demo` runs the runbooks that exist in it.
WIKI_ORDER = (
    "network-inventory",
    "forward-bridge",
    "netreg-attach",
    "find-vm-ip",
    "nat-bridge-ipv6",
    "ipv6-tunnel",
    "cloudflare-aaaa",
    "host-health",
)
# Runbooks the simulated host cannot run: it has no accounts of its own (its /etc/passwd
# is this machine's), and no room router on its campus. They run on the lab's booted
# hosts (tests/lab/test_16_booted_host_ops, test_25_room_router, test_27_room_move).
BOOTED_HOST_ONLY = ("libvirt-access", "libvirt-access-audit", "room-router", "room-ipv6-move")


def lab_runs(
    lab: Lab,
    *,
    store: Store,
    param_dir: Path | None = None,
    changing_only: bool = False,
    say: Callable[[str], None] = print,
    progress: TextIO | None = sys.stderr,
) -> Iterator[tuple[str, runner.RunOutcome | InputError]]:
    """The demo's sequence on ``lab``: each runbook of WIKI_ORDER that exists, run headless
    with its parameter set, yielding (name, RunOutcome) or (name, InputError) as it goes.

    ``param_dir`` defaults to the simulated host's parameter sets, written for the lab
    (:func:`opslib.lab.notebook.lab_defaults`: :mod:`opslib.lab.simulated.sets`).
    ``changing_only`` (``lab up --simulated --configured``) skips the read-only runbooks
    (those without an ``apply`` parameter).
    """
    nb_dir = runner.notebooks_dir()
    if param_dir is None:
        param_dir = lab_notebook.lab_defaults(lab, repo=nb_dir.parent)
    for name in WIKI_ORDER:
        if not (nb_dir / f"{name}.ipynb").is_file():
            continue
        info = runner.find_runbook(name)
        if changing_only and info.param("apply") is None:
            continue
        say(f"==> {name}")
        if name == "netreg-attach":
            # The wiki's manual step before it: a person registers the VM's MAC in NetReg.
            guest = lab.netreg_guest
            if guest.netreg_mac and netreg.netreg_add(lab, guest.netreg_mac):
                say(f"    NetReg: registered {guest.netreg_mac} for {guest.name} (lab NetReg)")
        files = [param_dir / f"{name}.yaml"] if (param_dir / f"{name}.yaml").is_file() else []
        try:
            prepared = runner.prepare(info, [], files)
        except InputError as exc:
            yield name, exc
            continue
        yield name, runner.run(prepared, store=store, progress=progress)


def configure(
    lab: Lab, *, progress: Callable[[str], None] = print, records: Path | None = None
) -> None:
    """Bring the lab to the demo's end state (``up --configured``), from any state.

    Runs the demo's own sequence (:func:`lab_runs`): every changing runbook in the wiki's
    order with the lab's parameter sets, headless, each filed as a record in ``records``
    (default ``$OPSBOOK_RECORDS`` or ``./records``). The runbooks apply only what differs,
    so a configured lab stays as it is. Stops at the first runbook that does not exit 0
    (the later ones build on it).
    """
    store = Store(records or default_root())
    runs = lab_runs(lab, store=store, changing_only=True, say=progress, progress=None)
    for name, outcome in runs:
        if isinstance(outcome, InputError):
            raise InputError(f"lab up --configured: {name}: {outcome}")
        changed = {None: "", True: ", changed", False: ", no change"}[outcome.changed]
        progress(f"    {outcome.status}{changed} ({outcome.seconds:.1f}s): {outcome.record}")
        if outcome.exit_code != 0:
            raise ApplyError(
                f"lab up --configured: {name} {outcome.status}: {outcome.summary}; "
                f"record {outcome.record}"
            )


def up(
    lab: Lab,
    *,
    configured: bool = False,
    progress: Callable[[str], None] = print,
    records: Path | None = None,
) -> None:
    """``lab up --simulated``: build the lab bare, then, with ``configured``,
    :func:`configure` it."""
    control.up(lab, progress=progress)
    if configured:
        configure(lab, progress=progress, records=records)


def demo_lab(keep: bool, *, simulated_host: bool = True) -> Lab:
    """The lab a demo runs on: down and up bare again, or (``keep``) as it is; the
    simulated host only with ``simulated_host`` (the booted-host demo needs campus)."""
    lab = Lab.from_env()
    if not keep:
        # A demo starts from a freshly installed daemon host, whatever an earlier one left.
        print(f"==> lab down ({lab.prefix}), then up bare")
        control.down(lab)
    else:
        print(f"==> lab up ({lab.prefix}, kept as it is)")
    control.up(lab, simulated_host=simulated_host)
    return lab


def cmd_demo(args: argparse.Namespace) -> int:
    lab = demo_lab(args.keep)
    param_dir = Path(args.parameters) if args.parameters else None
    rows, failed = [], 0
    store = store_of(args)
    for name, outcome in lab_runs(lab, store=store, param_dir=param_dir):
        if isinstance(outcome, InputError):
            print(f"    {outcome}", file=sys.stderr)
            rows.append((name, "bad input", "-", "-", "-"))
            failed += 1
            continue
        failed += outcome.exit_code != 0
        rows.append(
            (
                name,
                outcome.status,
                yes_no(outcome.changed),
                f"{outcome.seconds:.1f}",
                shown(outcome.record),
            )
        )
    print()
    print(table(rows, ["runbook", "status", "changed", "seconds", "record"]))
    built = site.build(store)  # what a reviewer opens next
    print(f"\nthe records as a site: {shown(built.index)} (opsbook records html)")
    return 1 if failed else 0
