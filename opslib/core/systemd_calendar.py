"""Systemd's value syntaxes: calendar expressions (checked and measured by ``systemd-analyze
calendar``, said as crontab fields where cron can say them), time spans (systemd's own rules,
no systemd needed) and text that can stand in a unit file line.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import unicodedata
from datetime import UTC, datetime
from pathlib import Path

from opslib.core.errors import InputError


def check_calendar(expr: str) -> str:
    """Validate a systemd calendar expression; returns its next elapse ("" if unknown)."""
    unit_line(expr, "schedule: when")
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


# -- text in a unit file -------------------------------------------------------------------

# Unicode's line and paragraph separators are no newline to systemd, but are to Python's
# splitlines (which reads the units back): refused with the control characters.
_NOT_IN_A_LINE = ("Cc", "Zl", "Zp")


def kind_of(value: object) -> str:
    """'a list', 'an int': what a YAML value was, for a message."""
    name = type(value).__name__
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def unit_line(value: object, what: str, *, backslash: bool = True) -> str:
    """``value`` as text that stays on its line of a unit file or crontab: InputError (naming
    ``what``) for a newline or other control character, and with ``backslash=False`` for a
    backslash (systemd reads C escapes in ExecStart= and a line continuation at a line's end)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InputError(f"{what}: expected text, got {kind_of(value)}")
    text = str(value)
    bad = next((c for c in text if unicodedata.category(c) in _NOT_IN_A_LINE), None)
    if bad is not None:
        raise InputError(
            f"{what}: {text!r} has a control character ({bad!r}); give one line of plain text"
        )
    if not backslash and "\\" in text:
        raise InputError(
            f"{what}: {text!r} has a backslash, which systemd would read as an escape; "
            "rename it without one"
        )
    return text


def unit_path(path: Path | str, what: str) -> Path:
    """A path that a unit file or crontab line names (ExecStart=, WorkingDirectory=)."""
    return Path(unit_line(str(path), what, backslash=False))


def specifiers_escaped(text: str) -> str:
    """``text`` as a unit file setting that systemd expands specifiers in (systemd.unit(5):
    "%%" is a single percent sign)."""
    return text.replace("%", "%%")


# -- time spans ----------------------------------------------------------------------------

_USEC_INFINITY = 2**64 - 1
_LLONG_MAX = 2**63 - 1
_SEC, _MIN, _HOUR, _DAY = 10**6, 60 * 10**6, 3600 * 10**6, 86400 * 10**6
# systemd's table, in its order: the first suffix that starts the text wins ("ms" before "m").
_MULTIPLIERS = (
    ("seconds", _SEC), ("second", _SEC), ("sec", _SEC), ("s", _SEC),
    ("minutes", _MIN), ("minute", _MIN), ("min", _MIN),
    ("months", 2629800 * _SEC), ("month", 2629800 * _SEC), ("M", 2629800 * _SEC),
    ("msec", 1000), ("ms", 1000), ("m", _MIN),
    ("hours", _HOUR), ("hour", _HOUR), ("hr", _HOUR), ("h", _HOUR),
    ("days", _DAY), ("day", _DAY), ("d", _DAY),
    ("weeks", 7 * _DAY), ("week", 7 * _DAY), ("w", 7 * _DAY),
    ("years", 31557600 * _SEC), ("year", 31557600 * _SEC), ("y", 31557600 * _SEC),
    ("usec", 1), ("us", 1), ("\u00b5s", 1), ("\u03bcs", 1),
)  # fmt: skip
_WS = " \t\n\r"
_STRTOLL = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")


def _multiplier(text: str) -> tuple[int, str] | None:
    for suffix, usec in _MULTIPLIERS:
        if text.startswith(suffix):
            return usec, text[len(suffix) :]
    return None


def timespan_usec(text: str) -> int | None:
    """A systemd time span (``TimeoutStartSec=30min``, ``1h 30min``, ``infinity``) in
    microseconds, or None where systemd refuses it. systemd's parse_time (time-util.c,
    systemd 252) with seconds as the default unit, rule for rule, so that a timeout is
    refused here, with its schedule named, rather than ignored by systemd at load time."""
    p = text.lstrip(_WS)
    if p.startswith("infinity"):
        return _USEC_INFINITY if not p[len("infinity") :].lstrip(_WS) else None
    usec, something = 0, False
    while True:
        p = p.lstrip(_WS)
        if not p:
            return usec if something else None
        if p[0] == "-":  # not even "-0"
            return None
        number = _STRTOLL.match(p)  # strtoll(p, &e, 10)
        whole = int(number[1]) if number else 0
        if not -_LLONG_MAX - 1 <= whole <= _LLONG_MAX or whole < 0:
            return None
        e = number.end() if number else 0
        fraction = None
        if p[e : e + 1] == ".":
            rest = p[e + 1 :].lstrip("0123456789")
            fraction = p[e + 1 : len(p) - len(rest)]
        elif number is None:
            return None
        else:
            rest = p[e:]
        skipped = rest.lstrip(_WS)
        unit = _multiplier(skipped)
        multiplier, after = unit if unit else (_SEC, skipped)
        if unit is None and skipped == rest and rest:  # "12.34.56", "5x", "5+5"
            return None
        if whole >= _USEC_INFINITY // multiplier:
            return None
        usec += whole * multiplier
        if usec >= _USEC_INFINITY:
            return None
        something = True
        if fraction is not None:
            if not fraction:  # "3.", "3.s"
                return None
            m = multiplier // 10
            for digit in fraction:
                if int(digit) * m >= _USEC_INFINITY - usec:
                    return None
                usec += int(digit) * m
                m //= 10
        p = after


def check_timespan(value: object, what: str) -> str:
    """A time span for a unit file (e.g. ``TimeoutStartSec=``); InputError otherwise."""
    text = unit_line(value, what).strip(" ")
    if timespan_usec(text) is None:
        raise InputError(
            f"{what}: {text!r} is not a systemd time span (e.g. 30min, 1h 30min, 90s, "
            "infinity; see `systemd-analyze timespan`)"
        )
    return text
