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

``metrics_dir`` (per run, or once at the top for every run) is node_exporter's textfile
directory: each run writes its metrics there (:mod:`opslib.metrics`) with the schedule's
period (the longest gap between two runs of ``when``) as ``opsbook_run_period_seconds``.

Rendering is pure (schedule in, unit texts out); installing writes only units
that differ, so a second install changes nothing.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from opslib import files, metrics
from opslib.changes import Change, Result
from opslib.errors import InputError

MARKER = "# Managed by opsbook schedule; edit parameters/HOST/schedule.yaml instead."
FAILURE_TEMPLATE = "opsbook-onfailure@.service"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class ScheduledRun:
    runbook: str
    parameters: Path
    when: str
    timeout: str = "30min"
    metrics_dir: Path | None = None
    period: int | None = None  # seconds, exported with the metrics


@dataclass(frozen=True)
class Schedule:
    host: str
    runs: tuple[ScheduledRun, ...]
    on_failure: str = ""
    source: Path | None = None


def schedule_file(params_dir: Path, host: str) -> Path:
    return params_dir / host / "schedule.yaml"


def check_calendar(expr: str) -> str:
    """Validate a systemd calendar expression; returns its next elapse ("" if unknown)."""
    if shutil.which("systemd-analyze") is None:
        return ""
    proc = subprocess.run(
        ["systemd-analyze", "calendar", "--iterations=1", expr],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise InputError(
            f"schedule: {expr!r} is not a systemd calendar expression "
            "(try 'hourly', 'daily' or '*-*-* *:00/15:00'; see `systemd-analyze calendar`)"
        )
    match = re.search(r"Next elapse: (.+)", proc.stdout)
    return match.group(1).strip() if match else ""


_SHORTHAND_PERIODS = {"minutely": 60, "hourly": 3600, "daily": 86400, "weekly": 604800}
_ELAPSE = re.compile(r"(?:Next elapse|Iter\. #\d+): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC")


def calendar_period(expr: str, iterations: int = 12) -> int | None:
    """The longest gap in seconds between two of the next elapses of ``expr`` (a
    weekday-only schedule's is its weekend), or None where systemd-analyze is missing."""
    if shutil.which("systemd-analyze") is None:
        return _SHORTHAND_PERIODS.get(expr)
    proc = subprocess.run(
        ["systemd-analyze", "calendar", f"--iterations={iterations}", expr],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "TZ": "UTC", "LC_ALL": "C"},
    )
    times = [
        datetime.strptime(t, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        for t in _ELAPSE.findall(proc.stdout)
    ]
    gaps = [int((b - a).total_seconds()) for a, b in itertools.pairwise(times)]
    return max(gaps) if gaps else _SHORTHAND_PERIODS.get(expr)


def _metrics_dir(value: object, where: str) -> Path | None:
    if value in (None, ""):
        return None
    path = Path(str(value))
    if not path.is_absolute():
        raise InputError(
            f"{where}: metrics_dir {str(value)!r} must be an absolute path "
            "(node_exporter's --collector.textfile.directory)"
        )
    return path


def load(params_dir: Path, host: str, *, notebooks: Path | None = None) -> Schedule:
    """Read and validate a host's schedule file; InputError names the first problem."""
    path = schedule_file(params_dir, host)
    if not path.is_file():
        raise InputError(f"schedule: no {path}; write one (see parameters/lab/schedule.yaml)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"schedule: {path} is not valid YAML: {exc}".splitlines()[0]) from exc
    if raw.get("host", host) != host:
        raise InputError(f"schedule: {path} says host {raw['host']!r}, expected {host!r}")
    runs = []
    default_metrics = _metrics_dir(raw.get("metrics_dir"), f"schedule: {path}")
    for i, item in enumerate(raw.get("runs") or []):
        where = f"schedule: {path} run {i + 1}"
        runbook = str(item.get("runbook", ""))
        if not _NAME.match(runbook):
            raise InputError(f"{where}: 'runbook' must name a notebook, got {runbook!r}")
        if notebooks is not None and not (notebooks / f"{runbook}.ipynb").is_file():
            raise InputError(f"{where}: no runbook {runbook!r} in {notebooks}")
        params = path.parent / str(item.get("parameters", f"{runbook}.yaml"))
        if not params.is_file():
            raise InputError(f"{where}: parameter set {params} does not exist")
        when = str(item.get("when", ""))
        if not when:
            raise InputError(f"{where}: 'when' is missing (systemd calendar, e.g. hourly)")
        check_calendar(when)
        metrics_dir = _metrics_dir(item.get("metrics_dir"), where) or default_metrics
        runs.append(
            ScheduledRun(
                runbook,
                params.resolve(),
                when,
                str(item.get("timeout", "30min")),
                metrics_dir,
                calendar_period(when) if metrics_dir else None,
            )
        )
    if not runs:
        raise InputError(f"schedule: {path} has no runs")
    return Schedule(host, tuple(runs), str(raw.get("on_failure", "")), path.resolve())


def _unit_command(argv: list[str]) -> str:
    """A command line for ExecStart=: systemd expands % specifiers and $VARS itself."""
    return shlex.join(argv).replace("%", "%%").replace("$", "$$")


def _run_argv(opsbook: str, run: ScheduledRun, host: str) -> list[str]:
    # --summary: one line per run in the journal (or cron's log), not the result tables.
    argv = [opsbook, "run", run.runbook, "-f", str(run.parameters), "--host", host, "--summary"]
    if run.metrics_dir is not None:
        argv += ["--metrics-dir", str(run.metrics_dir)]
        if run.period is not None:
            argv += ["--period", str(run.period)]
    return argv


def unit_stem(host: str, runbook: str) -> str:
    return f"opsbook-{host}-{runbook}"


def render_units(schedule: Schedule, *, opsbook: str, workdir: Path) -> dict[str, str]:
    """Every unit file's name and text; pure."""
    units: dict[str, str] = {}
    hook = schedule.on_failure.strip()
    for run in schedule.runs:
        stem = unit_stem(schedule.host, run.runbook)
        argv = _run_argv(opsbook, run, schedule.host)
        on_failure = f"OnFailure={FAILURE_TEMPLATE.replace('@', '@%n')}\n" if hook else ""
        units[f"{stem}.service"] = (
            f"{MARKER}\n[Unit]\n"
            f"Description=opsbook runbook {run.runbook} on {schedule.host}\n"
            f"{on_failure}"
            "\n[Service]\nType=oneshot\n"
            f"WorkingDirectory={workdir}\n"
            f"ExecStart={_unit_command(argv)}\n"
            f"TimeoutStartSec={run.timeout}\n"
            "SyslogIdentifier=opsbook\n"
        )
        units[f"{stem}.timer"] = (
            f"{MARKER}\n[Unit]\n"
            f"Description=Schedule of opsbook runbook {run.runbook} on {schedule.host}\n"
            "\n[Timer]\n"
            f"OnCalendar={run.when}\n"
            "Persistent=true\n"
            "RandomizedDelaySec=30\n"
            "\n[Install]\nWantedBy=timers.target\n"
        )
    if hook:
        argv = [opsbook, "schedule", "notify"]
        if schedule.source is not None:
            argv += ["--params-dir", str(schedule.source.parent.parent)]
        units[FAILURE_TEMPLATE] = (
            f"{MARKER}\n[Unit]\n"
            "Description=opsbook: report the failed scheduled run %i\n"
            "\n[Service]\nType=oneshot\n"
            f"WorkingDirectory={workdir}\n"
            f"ExecStart={_unit_command(argv)} %i\n"
            "SyslogIdentifier=opsbook\n"
        )
    return units


def crontab_lines(schedule: Schedule, *, opsbook: str, workdir: Path) -> list[str]:
    """Equivalent crontab lines, for hosts without systemd timers."""
    lines = []
    for run in schedule.runs:
        cron = calendar_to_cron(run.when)
        argv = _run_argv(opsbook, run, schedule.host)
        cmd = f"cd {shlex.quote(str(workdir))} && {shlex.join(argv)}"
        if schedule.on_failure:
            notify = [opsbook, "schedule", "notify", unit_stem(schedule.host, run.runbook)]
            cmd += f" || {shlex.join(notify)}"
        # cron reads an unescaped % as a newline
        lines.append(f"{cron} root ({cmd}) 2>&1 | logger -t opsbook".replace("%", "\\%"))
    return lines


_SHORTHANDS = {
    "minutely": "* * * * *",
    "hourly": "0 * * * *",
    "daily": "0 0 * * *",
    "weekly": "0 0 * * 1",
    "monthly": "0 0 1 * *",
}


def calendar_to_cron(expr: str) -> str:
    """The cron form of the calendar expressions cron can say; InputError otherwise."""
    if expr in _SHORTHANDS:
        return _SHORTHANDS[expr]
    # *-*-* HH:MM[:00] with '*', numbers, lists and /steps in hour and minute.
    m = re.fullmatch(r"(?:\*-\*-\*\s+)?([0-9*,/]+):([0-9*,/]+)(?::0?0)?", expr.strip())
    if m:
        hour, minute = (_cron_field(f) for f in m.groups())
        return f"{minute} {hour} * * *"
    raise InputError(
        f"schedule: cannot express {expr!r} in crontab; use the systemd timers, "
        "or a simpler expression (hourly, daily, '*:00/15')"
    )


def _cron_field(field: str) -> str:
    # systemd writes steps as start/step ("00/15"); cron as start-max/step or */step.
    if "/" in field:
        start, step = field.split("/", 1)
        return f"*/{int(step)}" if start in ("*", "0", "00") else f"{int(start)}-59/{int(step)}"
    return ",".join(str(int(p)) if p != "*" else "*" for p in field.split(","))


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
