"""``opsbook records``: list, show, compare, reindex, render and search run records.

:func:`store_of` and :func:`records_option` serve every command that files or reads
records (``run``, ``fleet``, ``lab``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from opslib.core.errors import InputError
from opslib.core.tables import table

__all__ = ["add_parser", "limit_option", "records_option", "shown", "store_of", "yes_no"]


def shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def store_of(args: argparse.Namespace) -> Any:
    from opslib.records.store import Store, default_root

    root = getattr(args, "records", None)
    store = Store(Path(root) if root else default_root())
    store.check_root()
    return store


def warn_not_records(store: Any) -> None:
    """One line on stderr naming the files of the store that are not records."""
    from opslib.records import strays

    line = strays.warning(strays.not_records(store))
    if line:
        print(f"opsbook: warning: {line}", file=sys.stderr)


# -- records -------------------------------------------------------------------------------


def yes_no(v: bool | None) -> str:
    return "-" if v is None else ("yes" if v else "no")


def cmd_records(args: argparse.Namespace) -> int:
    from opslib.records.clock import parse_since

    since = parse_since(args.since) if args.since else None
    if args.status:
        from opslib.records.store import STATUSES

        if args.status not in STATUSES:
            raise InputError(f"--status {args.status!r}: one of {', '.join(STATUSES)}")
    store = store_of(args)
    store.mark_stale()  # a run whose runner died shows as killed, not running
    fleet_run = getattr(args, "fleet_run", None)
    rows = store.list(
        runbook=args.runbook,
        host=args.host,
        status=args.status,
        since=since,
        limit=None if fleet_run else args.limit or None,
    )
    if fleet_run:  # the records one fleet run brought home (opslib.fleet)
        from opslib.fleet.outcome import load_manifest

        run = load_manifest(store.root, fleet_run)
        hosts = run["hosts"].values()
        states = ", ".join(f"{h['host']} {h['status']}" for h in hosts)
        print(f"fleet run {run['id']}: {run['runbook']} on {states}")
        rows = [r for r in rows if r.id in {h["record_id"] for h in hosts}]
    if args.plans:
        return _list_plans(store, args, rows)
    if not rows:
        print(
            "no records"
            + (
                " match"
                if any([args.runbook, args.host, args.status, since])
                else f" in {store.root}"
            )
        )
        return 0
    plan_states, applies = _plan_links(store, rows)
    out = [
        (
            r.id,
            r.start.replace("T", " "),
            r.runbook,
            r.host,
            plan_states.get(r.id, r.status),
            yes_no(r.changed),
            "-" if r.seconds is None else f"{r.seconds:.0f}s",
            applies.get(r.id, "") + r.summary,
        )
        for r in rows
    ]
    print(
        table(
            out,
            ["id", "start (utc)", "runbook", "host", "status", "changed", "took", "summary"],
            max_width={7: 60},
        )
    )
    if args.limit and len(rows) == args.limit:
        print(f"\n{len(rows)} newest shown; -n 0 for all.")
    return 0


def _plan_links(store: Any, rows: list[Any]) -> tuple[dict[int, str], dict[int, str]]:
    """Of the rows listed: a plan's status ("plan pending"...), an apply's summary prefix
    naming its plan ("plan #12: ")."""

    from opslib.records.store import saved_plans

    ids = [r.id for r in rows if r.mode == "plan"]
    applies = [r.id for r in rows if r.mode == "apply"]
    if not ids and not applies:
        return {}, {}
    plans = saved_plans(store, ids=None if applies else ids)
    states = {p.id: f"plan {p.state}" for p in plans}
    linked: dict[int, str] = {}
    for p in plans:
        for run in [p.applied, *p.refused]:
            if run:
                linked[int(run["id"])] = f"plan #{p.id}: "
    return states, linked


def _list_plans(store: Any, args: argparse.Namespace, rows: list[Any]) -> int:
    """``records --plans [STATE]``: the saved plans, their state, approval and apply."""
    from opslib.records.plan_index import STATES
    from opslib.records.store import saved_plans

    state = "" if args.plans == "any" else args.plans
    if state and state not in STATES:
        raise InputError(f"--plans {state!r}: one of {', '.join(STATES)} (or no value: all)")
    by_id = {r.id: r for r in rows}
    plans = [p for p in saved_plans(store, state=state) if p.id in by_id]
    if not plans:
        print(f"no {state or 'saved'} plans" + (" match" if len(by_id) else f" in {store.root}"))
        return 0
    out = []
    for p in plans:
        approval = p.approval
        approved = f"{approval['by']} {approval['at']}" if approval else "-"
        applied = f"#{p.applied['id']}" if p.applied else "-"
        out.append(
            (p.id, p.start.replace("T", " "), p.runbook, p.host, p.planned_by, p.state,
             approved, applied, p.expires.replace("T", " "), by_id[p.id].summary)
        )  # fmt: skip
    cols = ["id", "planned (utc)", "runbook", "host", "by", "state", "approved", "apply"]
    print(table(out, [*cols, "expires", "summary"], max_width={9: 40}))
    return 0


def cmd_records_show(args: argparse.Namespace) -> int:
    from opslib.records import notebook_json, render
    from opslib.records import store as records

    store = store_of(args)
    row = store.get(args.id)
    path = store.abspath(row)
    if args.html:
        from opslib.records import site

        # RECORD.html is the record's page in the site (records html)
        out = Path(args.output) if args.output else path.with_suffix(".nbconvert.html")
        site.check_target(out, "-o")
        records.atomic_write(out, site.notebook_html(path).encode())
        print(shown(out))
        return 0
    nb = store.notebook(row)
    final = notebook_json.final_result(notebook_json.results_of(nb))
    changed = yes_no(row.changed)
    if final is not None and final.get("status") == "rolled back":
        changed += " (changed, then rolled back: see its steps)"
    fields = [
        ("record", f"#{row.id} {shown(path)}"),
        ("runbook", row.runbook),
        ("host", row.host),
        ("status", f"{row.status} (exit {row.exit_code})"),
        ("changed", changed),
        ("start", row.start),
        ("end", row.end or "-"),
        ("user", row.user or "-"),
        ("summary", row.summary or "-"),
        ("opslib", f"{row.opslib_version} ({row.revision})"),
        ("sha256", row.sha256 or "-"),
    ]
    header = nb.get("metadata", {}).get(notebook_json.META_KEY) or {}
    fields += [("note", note) for note in header.get("notes") or []]
    width = max(len(k) for k, _ in fields)
    for k, v in fields:
        print(f"{k + ':':<{width + 1}} {v}")
    if row.parameters:
        print("parameters:")
        pw = max(len(k) for k in row.parameters)
        for k, v in row.parameters.items():
            print(f"  {k:<{pw}}  {json.dumps(v)}")
    err = notebook_json.cell_error(nb)
    if err:
        print(f"error:   {err.splitlines()[0]}")
    for result in notebook_json.results_of(nb):
        print()
        print(render.result_text(result).rstrip())
    return 0


def cmd_records_diff(args: argparse.Namespace) -> int:
    from opslib.records import notebook_json
    from opslib.records.diff import diff_runs

    store = store_of(args)
    runs = []
    for run_id in (args.a, args.b):
        row = store.get(run_id)
        nb = store.notebook(row)
        runs.append(
            {
                "header": nb.get("metadata", {}).get(notebook_json.META_KEY, {}),
                "result": notebook_json.final_result(notebook_json.results_of(nb)),
            }
        )
    lines = diff_runs(runs[0], runs[1], volatile=args.volatile)
    print(f"--- #{args.a}\n+++ #{args.b}")
    link = _plan_and_apply(runs[0], runs[1], lines)
    if link:
        print(link)
    print("\n".join(lines) if lines else "(no difference in parameters or results)")
    hidden = 0 if args.volatile else len(diff_runs(runs[0], runs[1], volatile=True)) - len(lines)
    if hidden:
        print(f"({hidden} line(s) of volatile fields alone not shown: --volatile shows them)")
    return 0


def _plan_and_apply(a: dict[str, Any], b: dict[str, Any], lines: list[str]) -> str:
    """A saved plan and the apply of it, in either order: whether the apply made exactly
    the changes planned (the diff's ``change`` lines say which differ)."""
    for plan, apply in ((a, b), (b, a)):
        link = apply["header"].get("applies_plan") or {}
        if "plan" in plan["header"] and link.get("id") == plan["header"].get("id"):
            other = any(line[2:].startswith("change ") for line in lines)
            planned = len((plan["result"] or {}).get("changes") or [])
            made = len((apply["result"] or {}).get("changes") or [])
            what = (
                f"changes other than planned ({made} made, {planned} planned)"
                if other or made not in (0, planned)
                else f"exactly the {planned} planned change(s)"
                if made
                else "no change (refused or undone: see its status)"
            )
            return f"= #{apply['header'].get('id')} applied plan #{link['id']}: {what}"
    return ""


def cmd_records_reindex(args: argparse.Namespace) -> int:
    store = store_of(args)
    t0 = time.monotonic()
    n = store.reindex()
    print(
        f"indexed {n} record{'s' * (n != 1)} in {time.monotonic() - t0:.1f} s: "
        f"{shown(store.index_path)}"
    )
    warn_not_records(store)
    return 0


def cmd_records_html(args: argparse.Namespace) -> int:
    from opslib.records import site

    store = store_of(args)
    out = Path(args.output) if args.output else None
    site.check_index_target(store, out)  # before any page is written
    store.mark_stale()
    t0 = time.monotonic()
    built = site.build(store, out, progress=lambda s: print(s))
    print(
        f"{built.runs} runs: {built.rendered} record page{'s' * (built.rendered != 1)} "
        f"rendered, {built.hosts} host page{'s' * (built.hosts != 1)} "
        f"({time.monotonic() - t0:.1f} s): {shown(built.index)}"
    )
    warn_not_records(store)
    return 0


def cmd_records_search(args: argparse.Namespace) -> int:
    from opslib.records import search

    text = " ".join(args.text)
    if not search.query_words(text):
        raise InputError("records search: give the text to look for (a VM, MAC, address...)")
    store = store_of(args)
    hits = search.search(store, text, limit=args.limit)
    warn_not_records(store)
    if not hits:
        print(f"no record matches {text!r}")
        return 0
    rows = [(h.id, h.start.replace("T", " "), h.runbook, h.host, h.status, h.snippet) for h in hits]
    print(table(rows, ["id", "start (utc)", "runbook", "host", "status", "match"]))
    if args.limit and len(hits) == args.limit:
        print(f"\n{len(hits)} newest shown; -n 0 for all.")
    return 0


def records_option(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: a subcommand's unset option must not hide the one given before it.
    p.add_argument(
        "--records",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="record store (default: $OPSBOOK_RECORDS or ./records)",
    )


def runs_count(text: str) -> int:
    """``-n``: a number of runs (argparse calls it; its InputError is one line, exit 2)."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise InputError(f"-n {text}: give a number of runs, 0 or more (0: all)")
    return n


def limit_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-n", "--limit", type=runs_count, default=50, help="newest N (default 50, 0 = all)"
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "records",
        help="list, show, compare and reindex run records",
        description="List run records, newest first.",
    )
    p.add_argument("--runbook", metavar="R")
    p.add_argument("--host", metavar="H")
    p.add_argument("--status", metavar="S", help="ok, failed, killed, timeout, locked, ...")
    p.add_argument("--fleet-run", metavar="ID", help="the records of one fleet run")
    p.add_argument(
        "--plans",
        nargs="?",
        const="any",
        metavar="STATE",
        help="saved plans only (opsbook plan), or those in STATE: pending, approved, "
        "applied, superseded, expired, stale",
    )
    p.add_argument("--since", metavar="D", help="2024-05-01, 2024-05-01T10:00, 3d, 12h, 90m")
    limit_option(p)
    records_option(p)
    p.set_defaults(func=cmd_records)
    rsub = p.add_subparsers(dest="records_command", metavar="COMMAND")
    q = rsub.add_parser("show", help="summary of one record (or --html)")
    q.set_defaults(func=cmd_records_show)
    q.add_argument("id")
    q.add_argument("--html", action="store_true", help="write the notebook as HTML (nbconvert)")
    q.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="HTML file (default: RECORD.nbconvert.html beside it)",
    )
    q = rsub.add_parser(
        "diff",
        help="compare two runs: parameters, and result rows matched by identity",
        description="Compare two runs' headers, parameters, changes, checks and result "
        "tables. Rows are matched by the key columns each table declares: added, removed "
        "and renamed rows, and of the others only the fields that changed.",
    )
    q.set_defaults(func=cmd_records_diff)
    q.add_argument("a", metavar="ID")
    q.add_argument("b", metavar="ID")
    q.add_argument(
        "--volatile",
        action="store_true",
        help="also changes of volatile fields alone (neighbour state, timings, what a check saw)",
    )
    q = rsub.add_parser("reindex", help="rebuild index.sqlite from the record notebooks")
    q.set_defaults(func=cmd_records_reindex)
    q = rsub.add_parser(
        "html",
        help="render the records as a static site (new or stale pages only)",
        description="Render each record's page beside it (only those missing or older than "
        "their record or the renderer), a page per host, and index.html with a search.",
    )
    q.set_defaults(func=cmd_records_html)
    q.add_argument("-o", "--output", metavar="FILE", help="the index (default: RECORDS/index.html)")
    q = rsub.add_parser(
        "search",
        help="find runs by host, VM, MAC, address, check or any text",
        description="Runs whose record holds every word given (substrings, any case), "
        "newest first, from the index's full-text table.",
    )
    q.set_defaults(func=cmd_records_search)
    q.add_argument("text", nargs="+", metavar="TEXT")
    limit_option(q)

    for q in rsub.choices.values():
        records_option(q)  # every records command reads the store
