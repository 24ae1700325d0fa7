"""Run metrics for Prometheus, in node_exporter's textfile-collector format.

A headless run given a metrics directory (``opsbook run --metrics-dir DIR``, or a
schedule entry's ``metrics_dir``) leaves one file there per (host, runbook),
``opsbook-HOST@RUNBOOK.prom``, replaced whole after each run (temp file + rename in
the same directory: node_exporter reads only ``*.prom`` files, so it sees the old file
or the new, never half of one). Point node_exporter's
``--collector.textfile.directory`` at that directory. The series::

    opsbook_check_ok{host,runbook,check}                  1 passed (or warned), 0 failed
    opsbook_run_success{host,runbook}                     1 the run's status is ok
    opsbook_run_last_run_timestamp_seconds{host,runbook}  when the latest run ended
    opsbook_run_last_success_timestamp_seconds{...}       when the latest ok run ended,
                                                          kept from the previous file by a
                                                          failed run (0: none recorded)
    opsbook_run_duration_seconds{host,runbook}
    opsbook_run_changed{host,runbook}                     1 the run changed the host
    opsbook_run_period_seconds{host,runbook}              the schedule's period, when given

``monitoring/opsbook-rules.yml`` alerts on them.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opslib.core import files
from opslib.core.errors import HostError, InputError

__all__ = [
    "RunMetrics",
    "check_dir",
    "checks_of",
    "escape_label",
    "metrics_path",
    "parse",
    "render",
    "write",
]

_HELP = {
    "opsbook_check_ok": "1 if the check passed (or only warned) in the latest run, 0 if it failed.",
    "opsbook_run_success": "1 if the latest run's status is ok, 0 otherwise.",
    "opsbook_run_last_run_timestamp_seconds": "Unix time the latest run ended.",
    "opsbook_run_last_success_timestamp_seconds": (
        "Unix time the latest successful run ended (0: no success recorded)."
    ),
    "opsbook_run_duration_seconds": "How long the latest run took.",
    "opsbook_run_changed": "1 if the latest run changed the host, 0 if not.",
    "opsbook_run_period_seconds": (
        "The schedule's period: the longest gap between two of its scheduled runs."
    ),
}
_FILE_PART = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class RunMetrics:
    """What one run reports."""

    host: str
    runbook: str
    success: bool
    ended: float  # Unix time
    seconds: float
    changed: bool | None = None
    checks: tuple[tuple[str, bool], ...] = ()
    period: float | None = None


def escape_label(value: str) -> str:
    """A label value as the exposition format quotes it: backslash, double quote, newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _unescape_label(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _number(value: float) -> str:
    if math.isfinite(value) and value == int(value):
        return str(int(value))
    return repr(float(value))


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    return "{" + ",".join(f'{k}="{escape_label(v)}"' for k, v in pairs) + "}"


def metrics_path(directory: Path, host: str, runbook: str) -> Path:
    """The (host, runbook)'s file: runs of other runbooks never replace it. '@' parts
    them: it is in neither name (host a-b's runbook c is not host a's runbook b-c)."""
    host, runbook = (_FILE_PART.sub("_", part) for part in (host, runbook))
    return Path(directory) / f"opsbook-{host}@{runbook}.prom"


def checks_of(result: Mapping[str, Any] | None) -> tuple[tuple[str, bool], ...]:
    """(name, passed) of a result's checks; a name listed twice passes only if both do."""
    passed: dict[str, bool] = {}
    for check in (result or {}).get("checks") or []:
        name = str(check.get("name", ""))
        if name:
            passed[name] = passed.get(name, True) and check.get("status") != "fail"
    return tuple(passed.items())


def render(m: RunMetrics, last_success: float) -> str:
    """The file's text (pure); ``last_success`` is used when the run did not succeed."""
    run = (("host", m.host), ("runbook", m.runbook))
    values: dict[str, list[tuple[str, float]]] = {
        "opsbook_check_ok": [
            (_labels((*run, ("check", name))), 1.0 if ok else 0.0) for name, ok in m.checks
        ],
        "opsbook_run_success": [(_labels(run), 1.0 if m.success else 0.0)],
        "opsbook_run_last_run_timestamp_seconds": [(_labels(run), m.ended)],
        "opsbook_run_last_success_timestamp_seconds": [
            (_labels(run), m.ended if m.success else last_success)
        ],
        "opsbook_run_duration_seconds": [(_labels(run), m.seconds)],
        "opsbook_run_changed": [(_labels(run), 1.0 if m.changed else 0.0)],
    }
    if m.period is not None:
        values["opsbook_run_period_seconds"] = [(_labels(run), m.period)]
    lines = []
    for name, samples in values.items():
        if not samples:
            continue
        lines += [f"# HELP {name} {_HELP[name]}", f"# TYPE {name} gauge"]
        lines += [f"{name}{labels} {_number(v)}" for labels, v in samples]
    return "\n".join(lines) + "\n"


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')


def parse(text: str) -> list[tuple[str, dict[str, str], float]]:
    """The samples of a text exposition: (name, labels, value); comments skipped."""
    samples = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            continue
        name, body, value = m.groups()
        labels = {k: _unescape_label(v) for k, v in _LABEL.findall(body or "")}
        try:
            samples.append((name, labels, float(value)))
        except ValueError:
            continue
    return samples


def _previous_success(path: Path, host: str, runbook: str) -> float:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return 0.0
    for name, labels, value in parse(text):
        if (
            name == "opsbook_run_last_success_timestamp_seconds"
            and labels.get("host") == host
            and labels.get("runbook") == runbook
        ):
            return value
    return 0.0


def check_dir(directory: str | Path) -> Path:
    """The metrics directory, which must exist and be writable; InputError otherwise.
    Never made here: node_exporter's textfile directory comes with its package, so a
    missing one is a typo, and a run as root would make it where nobody reads it."""
    path = Path(directory)
    if not path.exists():
        raise InputError(
            f"--metrics-dir {path}: no such directory; give node_exporter's textfile "
            "directory (its package makes it)"
        )
    if not path.is_dir():
        raise InputError(
            f"--metrics-dir {path}: not a directory; give node_exporter's textfile directory"
        )
    if not os.access(path, os.W_OK | os.X_OK):
        raise InputError(f"--metrics-dir {path}: not writable by this user; run as its owner")
    return path


def write(directory: Path, m: RunMetrics) -> Path:
    """Replace the (host, runbook)'s file with this run's metrics; returns its path."""
    path = metrics_path(directory, m.host, m.runbook)
    last_success = 0.0 if m.success else _previous_success(path, m.host, m.runbook)
    try:
        files.atomic_write(path, render(m, last_success))
    except OSError as exc:
        raise HostError(f"metrics: cannot write {path}: {exc.strerror or exc}") from exc
    return path
