"""``opsbook schedule install|remove|list|crontab|notify``."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from opslib.errors import InputError

if TYPE_CHECKING:  # imported in the commands: `opsbook` itself must start fast
    from opslib import schedule
    from opslib.records import Store

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_UNIT_DIR = Path("/etc/systemd/system")


def _load(args: argparse.Namespace) -> schedule.Schedule:
    from opslib import schedule

    return schedule.load(Path(args.params_dir), args.host, notebooks=ROOT / "notebooks")


def _systemd_is_init() -> bool:
    return Path("/run/systemd/system").is_dir()


def cmd_install(args: argparse.Namespace) -> int:
    from opslib import schedule

    sch = _load(args)
    unit_dir = Path(args.dir)
    result = schedule.install(sch, unit_dir, opsbook=schedule.opsbook_executable(), workdir=ROOT)
    for change in result.changes:
        print(f"{change.action:7} {change.target.removeprefix('file:')}")
        if args.diff:
            sys.stdout.write(change.diff)
    print(result.summary)
    if result.status == "failed":
        return 1
    if result.changes and unit_dir == DEFAULT_UNIT_DIR and _systemd_is_init():
        timers = [f"{schedule.unit_stem(sch.host, r.runbook)}.timer" for r in sch.runs]
        subprocess.run(["systemctl", "daemon-reload"], check=True)
        subprocess.run(["systemctl", "enable", "--now", *timers], check=True)
        print(f"enabled {' '.join(timers)}")
    elif result.changes:
        print("systemd is not managing this directory here: `systemctl daemon-reload` and "
              "`systemctl enable --now` the timers where the units are installed")  # fmt: skip
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from opslib import schedule

    result = schedule.remove(args.host, Path(args.dir))
    for change in result.changes:
        print(f"removed {change.target.removeprefix('file:')}")
    print(result.summary)
    return 0


def cmd_crontab(args: argparse.Namespace) -> int:
    from opslib import schedule

    sch = _load(args)
    for line in schedule.crontab_lines(sch, opsbook=schedule.opsbook_executable(), workdir=ROOT):
        print(line)
    return 0


def _store(args: argparse.Namespace) -> Store:
    from opslib.records import Store, default_root

    return Store(Path(args.records) if args.records else default_root())


def cmd_list(args: argparse.Namespace) -> int:
    from opslib import schedule
    from opslib.tables import table

    sch = _load(args)
    store = _store(args)
    rows = []
    for run in sch.runs:
        last = store.list(runbook=run.runbook, host=sch.host, limit=1)
        rows.append(
            (
                schedule.unit_stem(sch.host, run.runbook) + ".timer",
                run.when,
                schedule.check_calendar(run.when) or "-",
                last[0].start if last else "-",
                last[0].status if last else "-",
                last[0].path if last else "-",
            )
        )
    print(table(rows, ("unit", "when", "next", "last", "status", "record")))
    return 0


def cmd_notify(args: argparse.Namespace) -> int:
    """The OnFailure hook: the failed run's record summary to the operator's command."""
    from opslib import schedule

    unit = args.unit.removesuffix(".service")
    params_dir = Path(args.params_dir)
    for host_dir in sorted(p for p in params_dir.iterdir() if p.is_dir()):
        if not schedule.schedule_file(params_dir, host_dir.name).is_file():
            continue
        sch = schedule.load(params_dir, host_dir.name)
        for run in sch.runs:
            if schedule.unit_stem(sch.host, run.runbook) == unit:
                return _notify(args, sch, run)
    raise InputError(f"schedule notify: no scheduled run is unit {unit!r} in {params_dir}")


def _notify(args: argparse.Namespace, sch: schedule.Schedule, run: schedule.ScheduledRun) -> int:
    last = _store(args).list(runbook=run.runbook, host=sch.host, limit=1)
    if last:
        row = last[0]
        summary = (
            f"opsbook: {run.runbook} on {sch.host} {row.status} (exit {row.exit_code}) "
            f"at {row.start}: {row.summary}\nrecord: {row.path}\n"
        )
    else:
        summary = f"opsbook: {run.runbook} on {sch.host} failed before leaving a record\n"
    print(summary.splitlines()[0])
    if not sch.on_failure:
        return 0
    env = {**os.environ, "OPSBOOK_HOST": sch.host, "OPSBOOK_RUNBOOK": run.runbook}
    proc = subprocess.run(
        ["sh", "-c", sch.on_failure], input=summary, text=True, env=env, check=False
    )
    return 0 if proc.returncode == 0 else 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "schedule",
        help="scheduled runs as systemd timers",
        description="Turn parameters/HOST/schedule.yaml into systemd timer and service units.",
    )
    ssub = p.add_subparsers(dest="schedule_command", metavar="ACTION", required=True)

    def common(q: argparse.ArgumentParser, *, host: bool = True) -> None:
        if host:
            q.add_argument("--host", default="lab", help="host whose schedule to use (lab)")
        q.add_argument(
            "--params-dir", default=str(ROOT / "parameters"), help="parameter sets (parameters/)"
        )
        q.add_argument("--records", default="", help="records directory (records/)")

    q = ssub.add_parser("install", help="write (or update) the host's timer and service units")
    common(q)
    q.add_argument("--dir", default=str(DEFAULT_UNIT_DIR), help="unit directory")
    q.add_argument("--diff", action="store_true", help="show each unit's diff")
    q.set_defaults(func=cmd_install)
    q = ssub.add_parser("remove", help="remove the host's units")
    common(q)
    q.add_argument("--dir", default=str(DEFAULT_UNIT_DIR), help="unit directory")
    q.set_defaults(func=cmd_remove)
    q = ssub.add_parser("list", help="scheduled runs with next and last run")
    common(q)
    q.set_defaults(func=cmd_list)
    q = ssub.add_parser("crontab", help="print equivalent crontab lines")
    common(q)
    q.set_defaults(func=cmd_crontab)
    q = ssub.add_parser("notify", help="(OnFailure hook) report a failed scheduled run")
    q.add_argument("unit", help="the failed unit, e.g. opsbook-lab-host-health.service")
    common(q, host=False)
    q.set_defaults(func=cmd_notify)
