"""``opsbook schedule install|remove|list|crontab|notify``.

Where systemd is the init and the units go to ``/etc/systemd/system``, install enables
and starts the timers (``systemctl enable --now``, each time: a timer disabled by hand is
back) and restarts those whose file changed; remove disables and stops them before their
files go. Scheduled runs start in a working directory and file their records in its
``records/``: the checkout when opsbook runs from one, else (installed on a daemon host
by ``install-daemon-host.sh``) ``/var/lib/opsbook``, a system service's state.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from opslib.core.errors import InputError
from opslib.core.shellcmd import command
from opslib.host.systemctl import systemctl

if TYPE_CHECKING:  # imported in the commands: `opsbook` itself must start fast
    from opslib.records.store import Store
    from opslib.schedule import units

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_UNIT_DIR = Path("/etc/systemd/system")
INSTALLED_WORKDIR = Path("/var/lib/opsbook")


def _checkout() -> bool:
    """opsbook runs from a checkout: notebooks/ and parameters/ beside opslib/."""
    return (ROOT / "notebooks").is_dir() and (ROOT / "parameters").is_dir()


def default_params_dir() -> Path:
    return ROOT / "parameters" if _checkout() else Path("parameters")


def default_workdir() -> Path:
    return ROOT if _checkout() else INSTALLED_WORKDIR


def _load(args: argparse.Namespace) -> units.Schedule:
    from opslib.engine import runner
    from opslib.schedule import units

    return units.load(Path(args.params_dir), args.host, notebooks=runner.notebooks_dir())


def _systemd_is_init() -> bool:
    return Path("/run/systemd/system").is_dir()


def _systemd_manages(unit_dir: Path) -> bool:
    return unit_dir.resolve() == DEFAULT_UNIT_DIR and _systemd_is_init()


def _systemctl(*args: str, check: bool = True) -> None:
    # the host adapters' systemctl: a hung unit command times out instead of hanging here
    systemctl(*args, missing=" (systemd runs the timers where it is the init)", check=check)


def _timers(paths: list[Path]) -> list[str]:
    return [p.name for p in paths if p.suffix == ".timer"]


def cmd_install(args: argparse.Namespace) -> int:
    from opslib.schedule import units

    sch = _load(args)
    unit_dir, workdir = Path(args.dir), Path(args.workdir).resolve()
    opsbook = units.opsbook_executable()
    units.check_paths(opsbook, workdir)  # before a timer is stopped or the workdir made
    timers = [f"{units.run_stem(sch.host, r)}.timer" for r in sch.runs]
    systemd = _systemd_manages(unit_dir)
    stale = [t for t in _timers(units.managed(unit_dir, sch.host)) if t not in timers]
    if systemd and stale:  # stopped while their files are still there
        _systemctl("disable", "--now", *stale)
        print(f"disabled {' '.join(stale)}")
    workdir.mkdir(parents=True, exist_ok=True)
    result = units.install(sch, unit_dir, opsbook=opsbook, workdir=workdir)
    for change in result.changes:
        print(f"{change.action:7} {change.target.removeprefix('file:')}")
        if args.diff:
            sys.stdout.write(change.diff)
    print(result.summary)
    if result.status == "failed":
        return 1
    if systemd:
        if result.changes:
            _systemctl("daemon-reload")
        _systemctl("enable", "--now", *timers)
        updated = {c.target for c in result.changes if c.action == "update"}
        changed = [t for t in timers if f"file:{unit_dir / t}" in updated]
        if changed:  # a running timer keeps its old calendar until it is restarted
            _systemctl("restart", *changed)
        print(f"enabled {' '.join(timers)}; their runs file records in {workdir / 'records'}")
    elif result.changes:
        print("systemd is not managing this directory here: `systemctl daemon-reload` and "
              "`systemctl enable --now` the timers where the units are installed")  # fmt: skip
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from opslib.schedule import units

    unit_dir = Path(args.dir)
    systemd = _systemd_manages(unit_dir)
    timers = _timers(units.managed(unit_dir, args.host))
    if systemd and timers:
        _systemctl("disable", "--now", *timers)
        print(f"disabled {' '.join(timers)}")
    result = units.remove(args.host, unit_dir)
    for change in result.changes:
        print(f"removed {change.target.removeprefix('file:')}")
    print(result.summary)
    if systemd and result.changes:
        _systemctl("daemon-reload")
        # a failed last run would stay listed (systemctl --failed) with its unit gone
        _systemctl("reset-failed", f"opsbook-{args.host}-*",
                   f"opsbook-onfailure@opsbook-{args.host}-*", check=False)  # fmt: skip
    return 0


def cmd_crontab(args: argparse.Namespace) -> int:
    from opslib.schedule import units

    sch = _load(args)
    workdir = Path(args.workdir).resolve()
    for line in units.crontab_lines(sch, opsbook=units.opsbook_executable(), workdir=workdir):
        print(line)
    return 0


def _store(args: argparse.Namespace, *, notify: bool = False) -> Store:
    from opslib.records.store import Store, default_root

    if args.records:
        return Store(Path(args.records))
    if os.environ.get("OPSBOOK_RECORDS") or notify:
        return Store(default_root())  # notify runs in the scheduled runs' working directory
    return Store(default_workdir() / "records")  # where the scheduled runs file them


def cmd_list(args: argparse.Namespace) -> int:
    from opslib.core.tables import table
    from opslib.schedule import units

    sch = _load(args)
    store = _store(args)
    rows = []
    for run in sch.runs:
        if run.fleet is not None:
            last_fleet = _last_fleet_run(store, run)
            start, status, where = last_fleet or ("-", "-", "-")
        else:
            last = store.list(runbook=run.runbook, host=run.host, limit=1)
            start, status, where = (
                (last[0].start, last[0].status, last[0].path) if last else ("-", "-", "-")
            )
        rows.append(
            (
                units.run_stem(sch.host, run) + ".timer",
                run.when,
                units.check_calendar(run.when) or "-",
                start,
                status,
                where,
            )
        )
    print(table(rows, ("unit", "when", "next", "last", "status", "record")))
    return 0


def cmd_notify(args: argparse.Namespace) -> int:
    """The OnFailure hook: the failed run's record summary to the operator's command."""
    from opslib.schedule import units

    unit = args.unit.removesuffix(".service")
    params_dir = Path(args.params_dir)
    if not params_dir.is_dir():
        raise InputError(f"schedule notify: --params-dir {params_dir} is not a directory")
    # Only the schedules that can own the unit (opsbook-HOST-…) are read, each on its own:
    # another host's broken schedule must not stop this host's alert.
    problems: list[InputError] = []
    for host_dir in sorted(p for p in params_dir.iterdir() if p.is_dir()):
        host = host_dir.name
        if not unit.startswith(units.unit_stem(host, "")):
            continue
        if not units.schedule_file(params_dir, host).is_file():
            continue
        try:
            sch = units.load(params_dir, host)
        except InputError as exc:
            problems.append(exc)
            continue
        for run in sch.runs:
            if units.run_stem(sch.host, run) == unit:
                return _notify(args, sch, run)
    if problems:  # the unit's own schedule is broken: say what is wrong with it
        raise problems[0]
    raise InputError(f"schedule notify: no scheduled run is unit {unit!r} in {params_dir}")


def _last_fleet_run(store: Store, run: units.ScheduledRun) -> tuple[str, str, str] | None:
    """The newest fleet run of a scheduled fleet entry: its id, its status ("ok" when every
    host was, else "failed: HOSTS not ok") and how to list its records; None before the first."""
    from opslib.fleet import outcome

    assert run.fleet is not None
    manifest = outcome.latest_manifest(store.root, run.runbook, run.fleet.inventory)
    if manifest is None:
        return None
    bad = [h for h, r in manifest["hosts"].items() if r.get("status") not in ("ok", "changed")]
    run_id = str(manifest["id"])
    return run_id, f"failed: {' '.join(bad)}" if bad else "ok", f"--fleet-run {run_id}"


def _notify_fleet(store: Store, sch: units.Schedule, run: units.ScheduledRun) -> tuple[str, str]:
    """The failed fleet run's summary (one line naming the hosts not ok, then one line per
    such host with its record) and those hosts."""
    from opslib.fleet import outcome
    from opslib.schedule import units

    assert run.fleet is not None
    what = f"opsbook: fleet run of {run.runbook} from {sch.host}"
    see = "see " + command("journalctl", "-u", f"{units.run_stem(sch.host, run)}.service")
    manifest = outcome.latest_manifest(store.root, run.runbook, run.fleet.inventory)
    if manifest is None:
        return f"{what} failed before leaving a fleet run manifest in {store.root}; {see}\n", ""
    hosts = manifest["hosts"]
    bad = [h for h, r in hosts.items() if r.get("status") not in ("ok", "changed")]
    if not bad:  # the failed run left no manifest (bad input, or it stopped before the hosts)
        newest = f"the newest fleet run, {manifest['id']}, had every host ok"
        return f"{what} failed before any host ran ({newest}); {see}\n", ""
    lines = [
        f"{what}: {outcome.summary_line(run.runbook, hosts.values())}",
        f"fleet run {manifest['id']}: opsbook records --fleet-run {manifest['id']}",
    ]
    for host in bad:
        row = hosts[host]
        record = row.get("record") or "no record"
        lines.append(f"  {host}: {row.get('status')}: {row.get('summary')} ({record})")
    return "\n".join(lines) + "\n", " ".join(bad)


def _notify(args: argparse.Namespace, sch: units.Schedule, run: units.ScheduledRun) -> int:
    store = _store(args, notify=True)
    # the host the run was for: its set's (a fleet run's: the schedule's, the workstation)
    env = {**os.environ, "OPSBOOK_HOST": run.host or sch.host, "OPSBOOK_RUNBOOK": run.runbook}
    if run.fleet is not None:
        summary, env["OPSBOOK_FAILED_HOSTS"] = _notify_fleet(store, sch, run)
        return _hand_over(sch, summary, env)
    last = store.list(runbook=run.runbook, host=run.host, limit=1)
    if last:
        row = last[0]
        summary = (
            f"opsbook: {run.runbook} on {run.host} {row.status} (exit {row.exit_code}) "
            f"at {row.start}: {row.summary}\nrecord: {row.path}\n"
        )
    else:
        summary = f"opsbook: {run.runbook} on {run.host} failed before leaving a record\n"
    return _hand_over(sch, summary, env)


def _hand_over(sch: units.Schedule, summary: str, env: dict[str, str]) -> int:
    """The summary to the journal (its first line) and on stdin to ``on_failure``."""
    print(summary.splitlines()[0])
    if not sch.on_failure:
        return 0
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
            "--params-dir", default=str(default_params_dir()), help="parameter sets (parameters/)"
        )
        q.add_argument(
            "--records", default="", help=f"records directory ({default_workdir() / 'records'})"
        )

    def workdir(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--workdir",
            default=str(default_workdir()),
            help="where the scheduled runs start; they file records in its records/ "
            f"({default_workdir()})",
        )

    q = ssub.add_parser("install", help="write (or update) the host's timer and service units")
    common(q)
    q.add_argument("--dir", default=str(DEFAULT_UNIT_DIR), help="unit directory")
    q.add_argument("--diff", action="store_true", help="show each unit's diff")
    workdir(q)
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
    workdir(q)
    q.set_defaults(func=cmd_crontab)
    q = ssub.add_parser("notify", help="(OnFailure hook) report a failed scheduled run")
    q.add_argument("unit", help="the failed unit, e.g. opsbook-lab-host-health.service")
    common(q, host=False)
    q.set_defaults(func=cmd_notify)
