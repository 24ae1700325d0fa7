"""``opsbook fleet plan | apply``: saved plans across the fleet, each host its own.

::

    opsbook fleet plan forward-bridge -i INVENTORY        # fleet plan 20261207T151100Z-3f2a
    opsbook records --fleet-run 20261207T151100Z-3f2a     # review each host's plan
    opsbook fleet apply 20261207T151100Z-3f2a --serial 1  # each host applies its own plan

``fleet plan`` runs ``opsbook plan`` on every selected host (ansible/run.yml, verb
``plan``): each host files its plan record in its own store and the record comes home;
the **fleet plan** (``records/.fleet/ID.json``, kind ``plan``) lists each host's plan id
(in the host's store) and digest. ``fleet apply FLEETPLAN`` runs ``opsbook apply ID`` on
each host that has a plan there (verb ``apply``): a host whose state moved since is
refused as stale (its row says what moved), one whose plan needs an approval it lacks is
refused before it runs (its row names the command), and the other hosts go on, within
``--serial`` and ``--max-fail-percentage``. Exit 0 every host applied, 1 any host
refused, failed or not run, 2 bad input (before any host is touched).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from opslib.core.errors import InputError
from opslib.core.tables import table

__all__ = ["add_parsers"]


def _host_plan(store: Any, row: Any) -> dict[str, Any] | None:
    """The plan a host filed, as its record came home: its id there and its digest."""
    from opslib.records import notebook_json

    if row.record_id is None:
        return None
    header = notebook_json.header_of(store.notebook(store.get(row.record_id))) or {}
    plan = header.get("plan") or {}
    origin = header.get("fleet_origin") or {}
    if not plan.get("digest") or not isinstance(origin.get("record_id"), int):
        return None
    return {"plan": origin["record_id"], "digest": plan["digest"], "record": row.record_id}


def cmd_plan(args: argparse.Namespace) -> int:
    from opslib.cli import fleet
    from opslib.cli.records import store_of
    from opslib.engine import catalog
    from opslib.fleet import outcome, playbooks

    fleet._check_numbers(args)
    info = catalog.find_runbook(args.runbook)
    if info.param("apply") is None:
        raise InputError(f"{info.name} changes nothing, so it has no plan to save")
    given = fleet._given(info, args)
    if "apply" in given:
        raise InputError("opsbook fleet plan makes no change: drop -p apply")
    store = store_of(args)
    playbooks.playbook("run.yml")  # there, before the inventory runs its templates
    inventory = playbooks.load_inventory(Path(args.inventory), args.limit)
    fleet._host_params(info, given, inventory)
    run_id = outcome.new_run_id()
    started = time.monotonic()
    say = fleet._say(started)
    say(f"fleet plan {run_id}: {info.name} on {len(inventory.hosts)} host(s)")
    extravars = {"opsbook_runbook": info.name, "opsbook_params": given, "opsbook_verb": "plan"}
    rows, result = fleet.play(args, inventory, store, run_id, say, extravars)
    plans = {
        r.host: p for r in rows if r.status in ("ok", "changed") and (p := _host_plan(store, r))
    }
    run = {
        "id": run_id,
        "kind": "plan",
        "runbook": info.name,
        "inventory": str(inventory.path),
        "params": given,
        "plans": plans,
        "ansible_rc": result.rc,
    }
    outcome.write_manifest(store.root, run, rows)
    print(
        table(
            [
                (r.host, f"plan #{plans[r.host]['plan']}" if r.host in plans else r.status,
                 r.summary, r.record or "-")
                for r in rows
            ],
            ["host", "plan (on the host)", "summary", "record"],
            max_width={2: 90},
        )
    )  # fmt: skip
    missing = [r.host for r in rows if r.host not in plans]
    print(
        f"fleet plan {run_id}: {len(plans)} of {len(rows)} host(s) planned; review: "
        f"opsbook records --fleet-run {run_id}; apply: opsbook fleet apply {run_id} "
        f"-i {args.inventory}"
    )
    if missing:
        print(f"no plan: {', '.join(missing)}", file=sys.stderr)
    return 1 if missing else 0


def cmd_apply(args: argparse.Namespace) -> int:
    from opslib.cli import fleet
    from opslib.cli.records import store_of
    from opslib.fleet import outcome, playbooks

    fleet._check_numbers(args)
    store = store_of(args)
    fleet_plan = outcome.load_manifest(store.root, args.fleetplan)
    if fleet_plan.get("kind") != "plan":
        raise InputError(
            f"fleet run {args.fleetplan} is no fleet plan; make one: "
            f"opsbook fleet plan RUNBOOK -i {args.inventory}"
        )
    plans: dict[str, Any] = fleet_plan.get("plans") or {}
    if not plans:
        raise InputError(f"fleet plan {args.fleetplan} has no host with a plan; plan again")
    limit = ":".join(sorted(plans)) + (f":&{args.limit}" if args.limit else "")
    inventory = playbooks.load_inventory(Path(args.inventory), limit)
    run_id = outcome.new_run_id()
    started = time.monotonic()
    say = fleet._say(started)
    say(f"fleet apply {run_id} of fleet plan {args.fleetplan}: {len(inventory.hosts)} host(s)")
    extravars = {
        "opsbook_runbook": fleet_plan["runbook"],
        "opsbook_verb": "apply",
        "opsbook_plans": {h: int(plans[h]["plan"]) for h in inventory.hosts},
    }
    rows, result = fleet.play(args, inventory, store, run_id, say, extravars)
    run = {
        "id": run_id,
        "kind": "apply",
        "runbook": fleet_plan["runbook"],
        "inventory": str(inventory.path),
        "fleet_plan": args.fleetplan,
        "ansible_rc": result.rc,
    }
    outcome.write_manifest(store.root, run, rows)
    print(
        table(
            [(r.host, f"plan #{plans[r.host]['plan']}", r.status, r.summary, r.record or "-")
             for r in rows],
            ["host", "plan", "status", "summary", "record"],
            max_width={3: 90},
        )
    )  # fmt: skip
    bad = [r.host for r in rows if r.status not in ("ok", "changed")]
    print(
        f"fleet apply {run_id}: {len(rows) - len(bad)} of {len(rows)} host(s) applied "
        f"({time.monotonic() - started:.1f} s); opsbook records --fleet-run {run_id}"
    )
    if bad:
        print(f"not applied: {', '.join(bad)}; plan those again", file=sys.stderr)
    return 1 if bad else 0


def add_parsers(fsub: argparse._SubParsersAction) -> None:
    from opslib.cli import fleet
    from opslib.cli.records import records_option
    from opslib.cli.runbooks import param_option

    q = fsub.add_parser(
        "plan",
        help="file a saved plan on every selected host, and a fleet plan listing them",
        description="Each host runs `opsbook plan RUNBOOK` (its parameter set, -p over "
        "it) and keeps the plan record; the records come home. Exit 0 every host planned.",
    )
    q.add_argument("runbook", help="a changing runbook (see `opsbook runbooks`)")
    fleet._common(q)
    param_option(q, "set a parameter on every host (not apply)")
    records_option(q)
    q.set_defaults(func=cmd_plan, max_fail_percentage=None, serial=None, lock_wait=None)

    q = fsub.add_parser(
        "apply",
        help="apply each host's own plan of a fleet plan; stale hosts refused, others go on",
        description="Exit 0 every host applied its plan, 1 any host refused (stale, not "
        "approved), failed or not run, 2 bad input (before any host is touched).",
    )
    q.add_argument("fleetplan", metavar="FLEETPLAN", help="the fleet plan's id")
    fleet._common(q)
    fleet.rollout_options(q)
    q.add_argument(
        "--lock-wait", type=float, metavar="SECONDS", help="wait for each host's apply lock"
    )
    records_option(q)
    q.set_defaults(func=cmd_apply)
