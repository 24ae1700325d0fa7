"""Scheduled runs: ``parameters/HOST/schedule.yaml`` → systemd timer + service units.

A schedule file names, per host, the runbooks to run, their parameter sets and
when (systemd calendar syntax), plus an optional failure hook command::

    host: lab
    on_failure: "mail -s 'opsbook: run failed' root"   # gets the summary on stdin
    runs:
      - runbook: host-health
        parameters: host-health.yaml      # relative to the schedule file
        when: hourly
        metrics_dir: /var/lib/prometheus/node-exporter   # optional: Prometheus metrics
      - runbook: host-health              # a fleet run, from the workstation:
        fleet: {inventory: inventory.yml, limit: daemon_hosts, forks: 10}
        when: hourly                      # `opsbook fleet run host-health -i … --summary`

A run is filed under its parameter set's ``host`` (the units say ``--host`` with it), and
under the schedule's HOST only where the set names none; HOST names the units either way.

A ``fleet`` run (:mod:`opslib.cli.fleet`) takes each host's parameter set from its
inventory (``inventory`` is relative to the schedule file; ``limit`` and ``forks`` are
optional); its failure hook gets the fleet run's summary, naming the failing hosts.

``metrics_dir`` (per run, or once at the top for every run) is node_exporter's textfile
directory: each run writes its metrics there (:mod:`opslib.engine.metrics`) with the schedule's
period (the longest gap between two runs of ``when``) as ``opsbook_run_period_seconds``.

Rendering is pure (schedule in, unit texts out); installing writes only units
that differ, so a second install changes nothing.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from opslib.core import files, params
from opslib.core.changes import Change, Result
from opslib.core.errors import InputError
from opslib.core.paramsets import load_param_file
from opslib.core.systemd_calendar import (
    calendar_period,
    calendar_to_cron,
    check_calendar,
    check_timespan,
    kind_of,
    specifiers_escaped,
    unit_line,
    unit_path,
)
from opslib.engine import metrics
from opslib.schedule.fleet_entry import FleetTarget
from opslib.schedule.fleet_entry import parse as parse_fleet

MARKER = "# Managed by opsbook schedule; edit parameters/HOST/schedule.yaml instead."
FAILURE_TEMPLATE = "opsbook-onfailure@.service"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class ScheduledRun:
    runbook: str
    parameters: Path | None  # None: a fleet run (each host's set from the inventory)
    when: str
    timeout: str = "30min"
    metrics_dir: Path | None = None
    period: int | None = None  # seconds, exported with the metrics
    fleet: FleetTarget | None = None
    # The host its records are filed under: its set's `host`, else the schedule's ("" for a
    # fleet run: each host's own set names it).
    host: str = ""


@dataclass(frozen=True)
class Schedule:
    host: str
    runs: tuple[ScheduledRun, ...]
    on_failure: str = ""
    source: Path | None = None


_HOST = params.Param("host", "host", "")


def check_host(host: object) -> str:
    """A schedule's host: a host name, for it becomes a path (parameters/HOST/) and the
    units' file names (opsbook-HOST-…); InputError otherwise."""
    text = host if isinstance(host, str) else ""
    try:
        if text and text == text.strip() and _HOST.convert(text) == text:
            return text
    except InputError:
        pass
    raise InputError(
        f"schedule: {host!r} is not a host name (letters, digits, '-' and '.'); "
        "it names parameters/HOST/schedule.yaml and the units"
    )


def schedule_file(params_dir: Path, host: str) -> Path:
    return params_dir / check_host(host) / "schedule.yaml"


def _metrics_dir(value: object, where: str) -> Path | None:
    if value in (None, ""):
        return None
    path = unit_path(str(value), f"{where}: metrics_dir")
    if not path.is_absolute():
        raise InputError(
            f"{where}: metrics_dir {str(value)!r} must be an absolute path "
            "(node_exporter's --collector.textfile.directory)"
        )
    return path


def _read(path: Path) -> dict[str, object]:
    """The schedule file's mapping; InputError (one line, naming the file) otherwise."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"schedule: {path} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise InputError(f"schedule: {path} is not valid YAML: {exc}".splitlines()[0]) from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InputError(
            f"schedule: {path} must be a mapping (host, on_failure, metrics_dir, runs), "
            f"got {kind_of(raw)}"
        )
    return raw


def load(params_dir: Path, host: str, *, notebooks: Path | None = None) -> Schedule:
    """Read and validate a host's schedule file; InputError names the first problem."""
    path = schedule_file(params_dir, host)
    if not path.is_file():
        raise InputError(f"schedule: no {path}; write one (see parameters/lab/schedule.yaml)")
    raw = _read(path)
    if raw.get("host", host) != host:
        raise InputError(f"schedule: {path} says host {raw['host']!r}, expected {host!r}")
    runs: list[ScheduledRun] = []
    default_metrics = _metrics_dir(raw.get("metrics_dir"), f"schedule: {path}")
    items = raw.get("runs") or []
    if not isinstance(items, list):
        raise InputError(
            f"schedule: {path}: 'runs' must be a list of runs (runbook, parameters, when), "
            f"got {kind_of(items)}"
        )
    for i, item in enumerate(items):
        where = f"schedule: {path} run {i + 1}"
        if not isinstance(item, dict):
            raise InputError(f"{where}: must be a mapping (runbook, parameters, when)")
        run = _run(item, path.parent, where, default_metrics, notebooks)
        if run.fleet is None and not run.host:
            run = dataclasses.replace(run, host=host)
        if any(run_stem(host, r) == run_stem(host, run) for r in runs):
            raise InputError(
                f"{where}: {run.runbook} is scheduled twice (unit {run_stem(host, run)}); "
                "one entry per runbook (and one per fleet run of it)"
            )
        runs.append(run)
    if not runs:
        raise InputError(f"schedule: {path} has no runs")
    on_failure = unit_line(raw.get("on_failure", ""), f"schedule: {path}: on_failure")
    return Schedule(host, tuple(runs), on_failure, path.resolve())


def _run(
    item: dict[str, object],
    base: Path,
    where: str,
    default_metrics: Path | None,
    notebooks: Path | None,
) -> ScheduledRun:
    runbook = str(item.get("runbook", ""))
    if not _NAME.fullmatch(runbook):
        raise InputError(f"{where}: 'runbook' must name a notebook, got {runbook!r}")
    if notebooks is not None and not (notebooks / f"{runbook}.ipynb").is_file():
        raise InputError(f"{where}: no runbook {runbook!r} in {notebooks}")
    fleet = parse_fleet(item["fleet"], base, where) if "fleet" in item else None
    set_path: Path | None = None
    set_host = ""
    if fleet is not None:
        if "parameters" in item:
            raise InputError(
                f"{where}: a fleet run has no 'parameters' (each host's parameter set comes "
                "from the inventory's opsbook_parameter_sets); drop it"
            )
    else:
        given = unit_line(item.get("parameters", f"{runbook}.yaml"), f"{where}: parameters")
        set_path = unit_path((base / given).resolve(), f"{where}: parameters")
        if not set_path.is_file():
            raise InputError(f"{where}: parameter set {set_path} does not exist")
        set_host = _set_host(set_path, where)
    when = unit_line(item.get("when", ""), f"{where}: when").strip()
    if not when:
        raise InputError(f"{where}: 'when' is missing (systemd calendar, e.g. hourly)")
    check_calendar(when)
    metrics_dir = _metrics_dir(item.get("metrics_dir"), where) or default_metrics
    return ScheduledRun(
        runbook,
        set_path,
        when,
        check_timespan(item.get("timeout", "30min"), f"{where}: timeout"),
        metrics_dir,
        calendar_period(when) if metrics_dir else None,
        fleet,
        set_host,
    )


def _set_host(path: Path, where: str) -> str:
    """The ``host`` a parameter set names ("" if none): its runs are filed under it, as
    `opsbook run -f SET` files them, not under the schedule's directory name."""
    value = load_param_file(path).get("host", "")
    try:
        return str(_HOST.convert(value))
    except InputError as exc:
        raise InputError(f"{where}: {path}: {exc}") from None


def _unit_command(argv: list[str]) -> str:
    """A command line for ExecStart=: systemd expands % specifiers and $VARS itself."""
    return shlex.join(argv).replace("%", "%%").replace("$", "$$")


def _run_argv(opsbook: str, run: ScheduledRun) -> list[str]:
    # --summary: one line per run in the journal (or cron's log), not the result tables.
    if run.fleet is not None:
        fleet = run.fleet
        argv = [opsbook, "fleet", "run", run.runbook, "-i", str(fleet.inventory)]
        argv += ["--limit", fleet.limit] if fleet.limit else []
        argv += ["--forks", str(fleet.forks)] if fleet.forks else []
        argv += ["--summary"]
    else:
        # --host: the set's own host (so it wins), else the schedule's name, as before
        argv = [opsbook, "run", run.runbook, "-f", str(run.parameters), "--host", run.host]
        argv += ["--summary"]
    if run.metrics_dir is not None:
        argv += ["--metrics-dir", str(run.metrics_dir)]
        if run.period is not None:
            argv += ["--period", str(run.period)]
    return argv


def unit_stem(host: str, runbook: str) -> str:
    return f"opsbook-{host}-{runbook}"


def run_stem(host: str, run: ScheduledRun) -> str:
    """The units' name without suffix: a fleet run's has ``fleet-`` before the runbook."""
    return unit_stem(host, f"fleet-{run.runbook}" if run.fleet else run.runbook)


def _what(run: ScheduledRun) -> str:
    if run.fleet is None:
        return f"runbook {run.runbook} on {run.host}"
    hosts = run.fleet.limit or "every host"
    return f"fleet run {run.runbook} on {hosts} of {run.fleet.inventory.name}"


def check_paths(opsbook: str, workdir: Path) -> None:
    """The command-line paths a unit or crontab line names: checked like the schedule's."""
    unit_path(opsbook, "schedule: the opsbook executable")
    unit_path(workdir, "schedule: --workdir")


def render_units(schedule: Schedule, *, opsbook: str, workdir: Path) -> dict[str, str]:
    """Every unit file's name and text; pure. Every value was typed when the schedule was
    loaded (one line, no backslash); here each is escaped for the setting it stands in."""
    check_paths(opsbook, workdir)
    units: dict[str, str] = {}
    hook = schedule.on_failure.strip()
    directory = specifiers_escaped(str(workdir))
    for run in schedule.runs:
        stem = run_stem(schedule.host, run)
        argv = _run_argv(opsbook, run)
        on_failure = f"OnFailure={FAILURE_TEMPLATE.replace('@', '@%n')}\n" if hook else ""
        what = specifiers_escaped(_what(run))
        units[f"{stem}.service"] = (
            f"{MARKER}\n[Unit]\n"
            f"Description=opsbook {what}\n"
            f"{on_failure}"
            "\n[Service]\nType=oneshot\n"
            f"WorkingDirectory={directory}\n"
            f"ExecStart={_unit_command(argv)}\n"
            f"TimeoutStartSec={run.timeout}\n"
            "SyslogIdentifier=opsbook\n"
        )
        units[f"{stem}.timer"] = (
            f"{MARKER}\n[Unit]\n"
            f"Description=Schedule of opsbook {what}\n"
            "\n[Timer]\n"
            f"OnCalendar={specifiers_escaped(run.when)}\n"
            "Persistent=true\n"
            "RandomizedDelaySec=30\n"
            "\n[Install]\nWantedBy=timers.target\n"
        )
    if hook:
        argv = [opsbook, "schedule", "notify"]
        if schedule.source is not None:
            params_dir = unit_path(schedule.source.parent.parent, "schedule: --params-dir")
            argv += ["--params-dir", str(params_dir)]
        units[FAILURE_TEMPLATE] = (
            f"{MARKER}\n[Unit]\n"
            "Description=opsbook: report the failed scheduled run %i\n"
            "\n[Service]\nType=oneshot\n"
            f"WorkingDirectory={directory}\n"
            f"ExecStart={_unit_command(argv)} %i\n"
            "SyslogIdentifier=opsbook\n"
        )
    return units


def crontab_lines(schedule: Schedule, *, opsbook: str, workdir: Path) -> list[str]:
    """Equivalent crontab lines, for hosts without systemd timers."""
    check_paths(opsbook, workdir)
    lines = []
    for run in schedule.runs:
        cron = calendar_to_cron(run.when)
        argv = _run_argv(opsbook, run)
        cmd = f"cd {shlex.quote(str(workdir))} && {shlex.join(argv)}"
        if schedule.on_failure:
            notify = [opsbook, "schedule", "notify", run_stem(schedule.host, run)]
            cmd += f" || {shlex.join(notify)}"
        # cron reads an unescaped % as a newline
        lines.append(f"{cron} root ({cmd}) 2>&1 | logger -t opsbook".replace("%", "\\%"))
    return lines


def verify_units(paths: list[Path]) -> str:
    """``systemd-analyze verify`` on unit files; returns its complaints ("" when clean)."""
    if shutil.which("systemd-analyze") is None or not paths:
        return ""
    proc = subprocess.run(
        ["systemd-analyze", "verify", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
    )
    return (proc.stdout + proc.stderr).strip() if proc.returncode != 0 else ""


def _write(path: Path, text: str) -> None:
    files.atomic_write(path, text)


def install(schedule: Schedule, unit_dir: Path, *, opsbook: str, workdir: Path) -> Result:
    """Write the units that differ, verify them, and remove stale ones of this host."""
    result = Result("schedule", schedule.host, "unchanged")
    units = render_units(schedule, opsbook=opsbook, workdir=workdir)
    unit_dir.mkdir(parents=True, exist_ok=True)
    for name, text in units.items():
        path = unit_dir / name
        before = path.read_text() if path.exists() else None
        if before == text:
            continue
        _write(path, text)
        result.changes.append(
            Change(f"file:{path}", "create" if before is None else "update", name, before, text)
        )
    for stale in managed(unit_dir, schedule.host):
        if stale.name not in units:
            _remove_unit(stale, result)
    with result.step("systemd-analyze verify") as detail:
        complaints = verify_units([unit_dir / n for n in units if not n.endswith("@.service")])
        detail.append(complaints or "clean")
    if complaints:
        result.status = "failed"
        result.summary = f"systemd-analyze verify: {complaints.splitlines()[0]}"
        return result
    result.status = "changed" if result.changes else "unchanged"
    result.summary = f"{_units(result)} unit file(s) changed in {unit_dir}{_proms(result)}"
    return result


def managed(unit_dir: Path, host: str) -> list[Path]:
    """The host's unit files opsbook wrote (their first line is the marker)."""
    check_host(host)  # a pattern ('*') would take other hosts' units
    if not unit_dir.is_dir():
        return []
    return sorted(
        p
        for p in unit_dir.glob(f"opsbook-{host}-*")
        if p.suffix in (".service", ".timer") and p.read_text().startswith(MARKER)
    )


def metrics_file_of(unit_text: str) -> Path | None:
    """The metrics file a service unit's runs write (its ExecStart's --metrics-dir), if any."""
    for line in unit_text.splitlines():
        if line.startswith("ExecStart="):
            argv = shlex.split(
                line.removeprefix("ExecStart=").replace("%%", "%").replace("$$", "$")
            )
            if "--metrics-dir" in argv and "--host" in argv and len(argv) > 2:
                directory = argv[argv.index("--metrics-dir") + 1]
                return metrics.metrics_path(
                    Path(directory), argv[argv.index("--host") + 1], argv[2]
                )
    return None


def _remove_unit(path: Path, result: Result) -> None:
    """Remove a unit file and, for a service, the metrics file of its runs: a run that is
    no longer scheduled must not go on looking like a schedule that stopped running."""
    text = path.read_text()
    result.changes.append(Change(f"file:{path}", "delete", path.name, text, None))
    path.unlink()
    prom = metrics_file_of(text) if path.suffix == ".service" else None
    if prom is not None and prom.is_file():
        result.changes.append(Change(f"file:{prom}", "delete", prom.name, prom.read_text(), None))
        prom.unlink()


def _units(result: Result) -> int:
    return sum(1 for c in result.changes if not c.target.endswith(".prom"))


def _proms(result: Result) -> str:
    n = len(result.changes) - _units(result)
    return f", {n} metrics file(s) of unscheduled runs removed" if n else ""


def remove(host: str, unit_dir: Path) -> Result:
    result = Result("schedule", host, "unchanged")
    for path in managed(unit_dir, host):
        _remove_unit(path, result)
    result.status = "changed" if result.changes else "unchanged"
    result.summary = f"{_units(result)} unit file(s) removed from {unit_dir}{_proms(result)}"
    return result


def opsbook_executable() -> str:
    """The absolute path of the `opsbook` beside this interpreter (the venv's)."""
    candidate = Path(sys.executable).with_name("opsbook")
    return str(candidate) if candidate.exists() else shutil.which("opsbook") or "opsbook"
