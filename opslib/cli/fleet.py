"""``opsbook fleet run | install``: one runbook on many daemon hosts, through Ansible.

``fleet run RUNBOOK -i INVENTORY`` checks everything it can on the workstation first (the
runbook, every ``-p``, the rollout options, then each selected host's parameter set): bad
input is one line and exit 2 before any host is touched, and the runbook and ``-p`` before
the inventory is even loaded (loading it runs its Jinja templates, whose lookups can run
commands). Then ``ansible/run.yml`` runs
(``ansible-playbook``), one progress line per host event, and the run ends with one table (host,
status, summary, record). Exit 0 every host ok, 1 any host failed, was unreachable or not
run.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from opslib.core.errors import InputError
from opslib.core.tables import table

DEFAULT_FORKS = 10


def _serial(text: str) -> str:
    if not re.fullmatch(r"[1-9][0-9]*%?", text) or (text.endswith("%") and int(text[:-1]) > 100):
        raise InputError(f"--serial {text!r}: a number of hosts (1) or a percentage (25%)")
    return text


def _check_numbers(args: argparse.Namespace) -> None:
    if args.forks < 1:
        raise InputError(f"--forks {args.forks}: at least 1")
    pct = args.max_fail_percentage
    if pct is not None and not 0 <= pct <= 100:
        raise InputError(f"--max-fail-percentage {pct}: 0 to 100")
    if getattr(args, "serial", None):
        _serial(args.serial)
    wait = getattr(args, "lock_wait", None)
    if wait is not None and not wait >= 0:
        raise InputError(f"--lock-wait {wait:g}: seconds, 0 or more")


def _say(started: float, quiet: bool = False) -> Any:
    def say(line: str) -> None:
        if not quiet:
            print(f"[{time.monotonic() - started:5.1f}s] {line}", file=sys.stderr, flush=True)

    return say


def _metrics_dir(args: argparse.Namespace) -> Path | None:
    if args.period is not None and not args.metrics_dir:
        raise InputError("--period: only with --metrics-dir (it is exported as a metric)")
    if args.period is not None and not args.period > 0:
        raise InputError(f"--period {args.period:g}: must be a positive number of seconds")
    if not args.metrics_dir:
        return None
    from opslib.engine import metrics

    return metrics.check_dir(args.metrics_dir)


def _given(info: Any, args: argparse.Namespace) -> dict[str, str]:
    """Every -p, each checked on its own (known name, value of its type), before the
    inventory is loaded: loading it runs its Jinja templates (lookups run commands). The
    rules between parameters wait for each host's set (:func:`_host_params`)."""
    from opslib.core.errors import UnknownName

    given = {name: value for name, value in args.param or []}
    for name, value in given.items():
        param = info.param(name)
        try:
            if param is None:
                raise UnknownName("parameter", name, [p.name for p in info.params])
            param.convert(value, here=False)
        except InputError as exc:
            raise InputError(f"{info.name} -p {name}: {exc}") from None
    return given


def _host_params(info: Any, given: dict[str, str], inventory: Any) -> None:
    """Every selected host's parameter set, with -p over it, valid for the runbook."""
    from opslib.core import params
    from opslib.core.paramsets import load_param_file

    for host in inventory.hosts:
        merged: dict[str, object] = {}
        sets = inventory.vars.get(host, {}).get("opsbook_parameter_sets")
        path = Path(str(sets)) / host / f"{info.name}.yaml" if sets else None
        if path is not None and path.is_file():
            loaded = load_param_file(path)
            for name in loaded:
                if info.param(name) is None:
                    from opslib.core.errors import UnknownName

                    known = [p.name for p in info.params]
                    raise InputError(f"{path}: {UnknownName('parameter', name, known)}")
            merged.update(loaded)
        merged.update(given)
        # here=False: a directory or file parameter names one on that host, not on this
        # workstation; its syntax is checked here, its existence by the host's opsbook run
        params.validate(info.params, merged, where=f"{info.name} on {host}: ", here=False)


def _limit(args: argparse.Namespace, store: Any) -> tuple[list[str] | None, str | None]:
    """With --retry-failed, the hosts the last run left not ok (said here when there are
    none) and --limit narrowed to them; else (None, --limit)."""
    from opslib.fleet import outcome

    limit: str | None = args.limit
    if not args.retry_failed:
        return None, limit
    last = outcome.load_manifest(store.root)
    again = [h for h, r in last["hosts"].items() if r["status"] in outcome.NOT_DONE]
    if not again:
        print(f"fleet run {last['id']}: every host was ok; nothing to retry")
    elif limit:
        limit = f"{':'.join(again)}:&{limit}"
    else:
        limit = ":".join(again)
    return again, limit


def cmd_run(args: argparse.Namespace) -> int:
    from opslib.cli.records import store_of
    from opslib.engine import catalog
    from opslib.fleet import outcome, playbooks, questions

    _check_numbers(args)
    info = catalog.find_runbook(args.runbook)
    given = _given(info, args)
    metrics_dir = _metrics_dir(args)
    if args.check:
        if info.param("apply") is None:
            print(f"{info.name} changes nothing: --check runs it as it is", file=sys.stderr)
        else:
            given["apply"] = "false"
    store = store_of(args)
    retry, limit = _limit(args, store)
    if retry == []:
        return 0
    playbooks.playbook("run.yml")  # there, before the inventory runs its templates
    playbooks.check_inventory_file(Path(args.inventory))
    run_id = outcome.new_run_id()
    started = time.monotonic()
    say = _say(started, quiet=args.summary)
    applies = given.get("apply", "").lower() in ("true", "yes", "on", "1")
    mode = "plan only (--check)" if args.check else "apply" if applies else "run"

    def load() -> Any:
        """The selected hosts, each one's parameter set checked (Ansible starts meanwhile)."""
        inventory = playbooks.load_inventory(Path(args.inventory), limit)  # runs its templates
        _host_params(info, given, inventory)
        say(
            f"fleet run {run_id}: {info.name} on {len(inventory.hosts)} host(s) "
            f"({', '.join(inventory.hosts)}), {mode}"
        )
        return inventory

    extravars: dict[str, Any] = {"opsbook_runbook": info.name, "opsbook_params": given}
    inventory, rows, result = play_gated(
        args, load, Path(args.inventory), store, run_id, say, extravars
    )
    where = questions.answer(info.name, given, rows, store)
    if metrics_dir is not None:
        outcome.write_metrics(
            metrics_dir, info.name, rows, store,
            seconds=time.monotonic() - started, period=args.period,
        )  # fmt: skip
    run = {
        "id": run_id,
        "runbook": info.name,
        "inventory": str(inventory.path),
        "params": given,
        "check": args.check,
        "ansible_rc": result.rc,
    }
    outcome.write_manifest(store.root, run, rows)
    bad = [r.host for r in rows if r.status not in ("ok", "changed")]
    if args.summary:  # scheduled fleet runs: one line in the journal
        line = outcome.summary_line(info.name, [asdict(r) for r in rows])
        print(f"{line}; fleet run {run_id}: opsbook records --fleet-run {run_id}")
        if where:
            print(where)
        return 1 if bad else 0
    if args.check:
        _show_plans(rows, store)
    print(
        table(
            [(r.host, r.status, r.summary, r.record or "-") for r in rows],
            ["host", "status", "summary", "record"],
            max_width={2: 90},
        )
    )
    if where:
        print(where)
    print(
        f"fleet run {run_id}: {len(rows) - len(bad)} of {len(rows)} host(s) ok "
        f"({time.monotonic() - started:.1f} s); opsbook records --fleet-run {run_id}"
    )
    if bad:
        print(f"not ok: {', '.join(bad)}; again for those only: --retry-failed", file=sys.stderr)
    return 1 if bad else 0


def play(
    args: argparse.Namespace,
    inventory: Any,
    store: Any,
    run_id: str,
    say: Any,
    extravars: dict[str, Any],
) -> tuple[list[Any], Any]:
    """ansible/run.yml on the inventory's selected hosts with ``extravars`` (and the
    rollout options of ``args``): one row per host, each record home in ``store``."""
    _inventory, rows, result = play_gated(
        args, lambda: inventory, inventory.path, store, run_id, say, extravars
    )
    return rows, result


def play_gated(
    args: argparse.Namespace,
    load: Callable[[], Any],
    inventory_path: Path,
    store: Any,
    run_id: str,
    say: Any,
    extravars: dict[str, Any],
) -> tuple[Any, list[Any], Any]:
    """:func:`play`, Ansible started first and waiting at its gate while ``load()`` loads
    and checks the inventory (its error aborts the run: no host touched); then the play
    runs on the hosts ``load`` selected."""
    from opslib import __version__
    from opslib.fleet import outcome, playbooks

    with tempfile.TemporaryDirectory(prefix="opsbook-fleet-records-") as fetched:
        # each record comes home inline, in the run task's own output (no fetch task)
        extravars = {**extravars, "opsbook_record_inline": True, "opsbook_version": __version__}
        if getattr(args, "serial", None):
            extravars["opsbook_serial"] = args.serial
        if getattr(args, "max_fail_percentage", None) is not None:
            extravars["opsbook_max_fail_percentage"] = args.max_fail_percentage
        if getattr(args, "lock_wait", None) is not None:
            extravars["opsbook_lock_wait"] = args.lock_wait
        keep = getattr(args, "keep_artifacts", None)
        folds: list[Any] = []  # the fold, once the hosts are known (events come from a thread)

        def on_event(event: dict[str, Any]) -> None:
            if folds:
                folds[0](event)

        running = playbooks.start(
            playbooks.playbook("run.yml"),
            inventory_path,
            extravars=extravars,
            forks=args.forks,
            on_event=on_event,
            keep_artifacts=Path(keep) if keep else None,
            gated=True,
        )
        try:
            inventory = load()
        except BaseException:
            running.abort()
            raise
        folds.append(outcome.Fold(inventory.hosts, say, Path(fetched)))
        running.open(inventory.hosts)
        result = running.wait()
        stopped = bool(getattr(args, "serial", None)) or (
            getattr(args, "max_fail_percentage", None) is not None
        )
        rows = folds[0].finish(stopped_early=stopped)
        outcome.import_records(rows, Path(fetched), store, run_id)
    return inventory, rows, result


def _show_plans(rows: list[Any], store: Any) -> None:
    """Each host's plan and diff, as its record has them."""
    from opslib.records import notebook_json, render

    for row in rows:
        if row.record_id is None:
            continue
        nb = store.notebook(store.get(row.record_id))
        print(f"== {row.host} ==")
        for result in notebook_json.results_of(nb):
            print(render.result_text(result).rstrip() + "\n")


def cmd_install(args: argparse.Namespace) -> int:
    from opslib.fleet import playbooks

    _check_numbers(args)
    inventory = playbooks.load_inventory(Path(args.inventory), args.limit)
    extravars: dict[str, Any] = {}
    if args.wheelhouse:
        wheelhouse = Path(args.wheelhouse).resolve()
        if not (wheelhouse / "wheelhouse.id").is_file():
            raise InputError(
                f"--wheelhouse {wheelhouse}: no wheelhouse.id; "
                f"build it: scripts/build-wheelhouse.sh {wheelhouse}"
            )
        extravars["opsbook_wheelhouse"] = str(wheelhouse)
    started = time.monotonic()
    say = _say(started)
    say(f"install.yml on {len(inventory.hosts)} host(s): {', '.join(inventory.hosts)}")

    def progress(event: dict[str, Any]) -> None:
        data = event.get("event_data") or {}
        if event.get("event") in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable"):
            res = data.get("res") or {}
            changed = " (changed)" if res.get("changed") else ""
            why = f": {str(res.get('msg', '')).strip()[-300:]}" if "msg" in res else ""
            say(f"{data.get('host')}: {data.get('task')}: {event['event'][10:]}{changed}{why}")

    result = playbooks.run(
        playbooks.playbook("install.yml"),
        inventory.path,
        extravars=extravars,
        limit=inventory.hosts,
        forks=args.forks,
        on_event=progress,
    )
    stats: dict[str, dict[str, int]] = {}
    for event in result.events:
        if event.get("event") == "playbook_on_stats":
            for key in ("ok", "changed", "failures", "dark"):
                for host, n in (event["event_data"].get(key) or {}).items():
                    stats.setdefault(host, {})[key] = n
    rows, bad = [], 0
    for host in inventory.hosts:
        s = stats.get(host, {})
        status = (
            "unreachable"
            if s.get("dark")
            else "failed"
            if s.get("failures")
            else ("changed" if s.get("changed") else "ok")
        )
        bad += status in ("unreachable", "failed")
        rows.append((host, status, s.get("ok", 0), s.get("changed", 0), s.get("failures", 0)))
    print(table(rows, ["host", "status", "ok", "changed", "failed"]))
    total = sum(r[3] for r in rows)
    print(f"changed={total} on {len(rows)} host(s) ({time.monotonic() - started:.1f} s)")
    return 1 if bad or result.rc else 0


def rollout_options(q: argparse.ArgumentParser) -> None:
    """--serial and --max-fail-percentage: Ansible's play keywords for a canary rollout."""
    q.add_argument("--serial", metavar="N|PCT", help="hosts per batch, e.g. 1 (canary) or 25%%")
    q.add_argument(
        "--max-fail-percentage",
        type=int,
        metavar="PCT",
        help="stop the rollout when more than PCT%% of a batch failed (0: at the first)",
    )


def add_parser(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    from opslib.cli.records import records_option
    from opslib.cli.runbooks import param_option

    p = sub.add_parser(
        "fleet",
        help="one runbook on many daemon hosts (Ansible)",
        description="Run a runbook on the hosts of an Ansible inventory and bring the "
        "records home (ansible/run.yml), or install opsbook there (ansible/install.yml).",
    )
    fsub = p.add_subparsers(dest="fleet_command", metavar="ACTION", required=True)
    q = fsub.add_parser(
        "run",
        help="run a runbook on the selected hosts; one table at the end",
        description="Exit 0 every host ok, 1 any host failed, unreachable or not run, "
        "2 bad input (before any host is touched).",
    )
    q.add_argument("runbook", help="runbook name (see `opsbook runbooks`)")
    _common(q)
    param_option(q, "set a parameter on every host (over its parameter set)")
    q.add_argument(
        "--check",
        action="store_true",
        help="plan only on every host (apply false); shows each host's plan",
    )
    rollout_options(q)
    q.add_argument(
        "--retry-failed",
        action="store_true",
        help="only the hosts that failed or were unreachable in the last fleet run",
    )
    q.add_argument(
        "--keep-artifacts",
        metavar="DIR",
        help="keep Ansible's artefacts (command, output, events) in DIR (default: deleted)",
    )
    q.add_argument(
        "--summary",
        action="store_true",
        help="print one line naming the hosts not ok, instead of progress and the table "
        "(what a scheduled fleet run logs)",
    )
    q.add_argument(
        "--lock-wait",
        type=float,
        metavar="SECONDS",
        help="how long a host's apply waits for that host's apply lock, held by another "
        "run (default 30; 0: refuse at once, naming the holder)",
    )
    q.add_argument(
        "--metrics-dir",
        metavar="DIR",
        help="write each host's Prometheus metrics to DIR/opsbook-HOST@RUNBOOK.prom "
        "(node_exporter's textfile directory; what a scheduled fleet run gives)",
    )
    q.add_argument(
        "--period",
        type=float,
        metavar="SECONDS",
        help="the schedule's period, exported with the metrics (with --metrics-dir)",
    )
    records_option(q)
    q.set_defaults(func=cmd_run)
    q = fsub.add_parser("install", help="install or update opsbook on the hosts (idempotent)")
    _common(q)
    q.add_argument(
        "--wheelhouse", metavar="DIR", help="default: the inventory's opsbook_wheelhouse"
    )
    q.set_defaults(func=cmd_install, max_fail_percentage=None)
    return fsub  # fleet plan | apply join them (opslib.cli.fleet_plan)


def _common(q: argparse.ArgumentParser) -> None:
    q.add_argument(
        "-i", "--inventory", required=True, metavar="INVENTORY", help="Ansible inventory"
    )
    q.add_argument("-l", "--limit", metavar="PATTERN", help="Ansible host pattern")
    q.add_argument(
        "--forks", type=int, default=DEFAULT_FORKS, help=f"hosts at once (default {DEFAULT_FORKS})"
    )
