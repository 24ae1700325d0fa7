"""``opsbook plan | approve | apply``: a saved plan, reviewed, approved, applied exactly.

::

    opsbook plan forward-bridge -f parameters/HOST/forward-bridge.yaml   # plan #12 filed
    opsbook records show 12                                                 # review it
    opsbook approve 12 --comment "looked at the diff"                      # another person
    opsbook apply 12                                                        # that plan or nothing

Exit codes: 0 done; 2 refused before anything ran (bad input, a plan edited, expired,
applied, superseded or not approved: one line, no record filed); 1 the apply ran and
failed, stale plans included (the host no longer matches what the plan observed: found
by observing, in the run, which is filed; the plan is marked stale).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from opslib.cli.records import records_option, store_of
from opslib.cli.runbooks import kernel_env, param_option, params_dir_option, print_outcome, seconds
from opslib.core import shellcmd
from opslib.core.errors import InputError

__all__ = ["add_parsers"]


def _planning_params(args: argparse.Namespace) -> list[tuple[str, Any]]:
    given = [tuple(p) for p in args.param or []]
    if any(name == "apply" for name, _ in given):
        raise InputError(
            "opsbook plan makes no change: drop -p apply; the plan it files is applied "
            "with opsbook apply ID"
        )
    return [*given, ("apply", False)]  # a parameter set's `apply: true` does not count here


def cmd_plan(args: argparse.Namespace) -> int:
    from opslib.contract import plan_records, policy
    from opslib.engine import runner

    info = runner.find_runbook(args.runbook)
    if info.param("apply") is None:
        raise InputError(
            f"{info.name} changes nothing, so it has no plan to save; "
            f"run it: {shellcmd.command('opsbook', 'run', info.name)}"
        )
    files = [Path(f) for f in args.file or []]
    prepared = runner.prepare(info, _planning_params(args), files, args.host)
    found = policy.find(prepared.host, Path(args.params_dir), files)
    store = store_of(args)
    planned_by = plan_records.person()
    if not args.quiet:
        print(f"{info.name} on {prepared.host}: plan", file=sys.stderr)
    outcome = runner.run(
        prepared,
        store=store,
        progress=None if args.quiet else sys.stderr,
        mode="plan",
        seal=lambda header, nb: plan_records.seal(header, nb, policy=found, planned_by=planned_by),
    )
    code = print_outcome(outcome)
    if outcome.status != "ok":
        return code
    saved = plan_records.load(store, str(outcome.run_id))
    n = len((plan_records.plan_json(saved.nb) or {}).get("changes") or [])
    print(
        f"plan #{saved.id} filed by {saved.planned_by}: {n} change{'s' * (n != 1)}, "
        f"digest {saved.digest[:12]}, expires {saved.index.expires}"
    )
    if saved.index.needs_approval:
        print(f"next: another person reviews and approves it: opsbook approve {saved.id}")
    print(f"apply exactly this plan: opsbook apply {saved.id}")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    from opslib.contract import plan_records
    from opslib.records import clock

    store = store_of(args)
    saved = plan_records.load(store, args.plan)
    now = clock.iso(clock.utcnow())
    plan_records.check_intact(saved)
    plan_records.check_applicable(saved, now)
    by = plan_records.person()
    plan_records.approve(store, saved, by=by, comment=args.comment or "", now=now)
    print(
        f"{saved.name} ({saved.index.runbook} on {saved.index.host}, digest "
        f"{saved.digest[:12]}) approved by {by}; apply it: opsbook apply {saved.id}"
    )
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    from opslib.contract import plan_records, policy
    from opslib.engine import runner
    from opslib.records import clock

    store = store_of(args)
    saved = plan_records.load(store, args.plan)
    plan_records.check_intact(saved)
    plan_records.check_applicable(saved, clock.iso(clock.utcnow()))
    found = policy.find(saved.index.host, Path(args.params_dir))
    plan_records.check_approved(saved, found)
    info = runner.find_runbook(saved.index.runbook)
    given = [(k, v) for k, v in (saved.header.get("parameters") or {}).items() if k != "host"]
    prepared = runner.prepare(info, [*given, ("apply", True)], [], saved.index.host)
    if not args.quiet:
        print(f"{info.name} on {prepared.host}: apply {saved.name}", file=sys.stderr)
    link = {"id": saved.id, "digest": saved.digest, "record": saved.row.path}
    outcome = runner.run(
        prepared,
        store=store,
        lock_wait=args.lock_wait,
        progress=None if args.quiet else sys.stderr,
        mode="apply",
        extra_env={**plan_records.apply_env(saved), **kernel_env(args)},
        seal=lambda header, nb: {**header, "applies_plan": link},
    )
    plan_records.after_apply(store, saved, outcome.run_id, outcome.status, outcome.summary)
    return print_outcome(outcome)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="file a plan record to review, approve and apply as it is",
        description="Run a changing runbook up to its plan and file it as a plan record: "
        "the changes with their diffs, the parameters, a fingerprint of what was observed, "
        "who planned it and when, a digest of all of it, an expiry (the host's policy). "
        "Apply it with `opsbook apply ID`.",
    )
    p.add_argument("runbook", help="a changing runbook (see `opsbook runbooks`)")
    param_option(p, "set a parameter (not apply)")
    p.add_argument("-f", "--file", action="append", metavar="PARAMS.yaml", help="parameter set")
    p.add_argument("--host", help="host the plan is for (sets a `host` parameter)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    params_dir_option(p)
    records_option(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser(
        "approve",
        help="approve a saved plan (another person than its planner)",
        description="Record that you approve a saved plan's digest: you, when, a comment.",
    )
    p.add_argument("plan", metavar="PLAN", help="the plan record's id (or its file)")
    p.add_argument("--comment", metavar="TEXT", help="one line for the record")
    records_option(p)
    p.set_defaults(func=cmd_approve)

    p = sub.add_parser(
        "apply",
        help="apply a saved plan exactly, or refuse",
        description="Observe the host again and apply exactly the saved plan: refused "
        "when the host moved since (stale, exit 1, the run filed), or (exit 2, nothing "
        "run) when the plan was edited, applied, superseded, expired or lacks an approval "
        "the host's policy asks for.",
    )
    p.add_argument("plan", metavar="PLAN", help="the plan record's id (or its file)")
    p.add_argument(
        "--lock-wait",
        type=seconds("--lock-wait", zero=True),
        metavar="SECONDS",
        help="how long to wait for the host's apply lock (default 30)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    params_dir_option(p)
    records_option(p)
    p.set_defaults(func=cmd_apply)
