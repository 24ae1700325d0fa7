"""Systemd calendar expressions: checked and measured by ``systemd-analyze calendar``, and
said as crontab fields where cron can say them."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime

from opslib.errors import InputError


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
