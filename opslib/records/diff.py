"""``records diff``: what differs between two runs (headers, parameters, results)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from opslib.records import row_diff

__all__ = ["diff_runs"]


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    return {f"{prefix}{k}": json.dumps(v, sort_keys=True) for k, v in d.items()}


# What `records diff` compares of two runs' headers, in this order.
_COMPARED_HEADER = ("runbook", "host", "status", "changed", "summary", "opslib_version", "revision")


def _check_lines(ra: Mapping[str, Any], rb: Mapping[str, Any], volatile: bool) -> list[str]:
    """Checks keyed by name: which started failing, which are new or gone. What a check
    saw changes from run to run (free space, addresses): shown alone only with ``volatile``."""

    def rows(r: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [
            {k: c.get(k, "") for k in ("name", "status", "seen", "fix")}
            for c in r.get("checks") or []
        ]

    lines = []
    for c in row_diff.compare(rows(ra), rows(rb), ["name"], volatile=("seen", "fix")):
        name, row = c.row["name"], c.row
        seen = f" ({row['seen']})" if row["seen"] else ""
        if c.kind == "added":
            lines.append(f"+ check `{name}`: {row['status']}{seen}")
        elif c.kind == "removed":
            lines.append(f"- check `{name}`: {row['status']}{seen}")
        elif c.kind == "renamed":
            lines.append(f"~ check `{c.before['name']}` renamed to `{name}`")
        elif c.firm:
            lines.append(f"~ check `{name}`: {c.before['status']} → {row['status']}{seen}")
        elif volatile:
            changed = "; ".join(
                f"{f.column} {row_diff.text(f.old)} → {row_diff.text(f.new)}" for f in c.fields
            )
            lines.append(f"~ check `{name}`: {changed} (volatile)")
    return lines


def _table_lines(
    name: str, ra: Mapping[str, Any], rb: Mapping[str, Any], volatile: bool
) -> list[str]:
    rows_a, rows_b = ra["tables"][name] or [], rb["tables"][name] or []
    lines = []
    if rows_a and rows_b:
        cols_a = dict.fromkeys(k for r in rows_a for k in r)
        cols_b = dict.fromkeys(k for r in rows_b for k in r)
        lines += [f"- table {name}: column {c}" for c in cols_a if c not in cols_b]
        lines += [f"+ table {name}: column {c}" for c in cols_b if c not in cols_a]
    key, vol = row_diff.shape(ra, rb, name)
    changes = row_diff.compare(rows_a, rows_b, key, vol, row_diff.identity(ra, rb, name))
    return lines + row_diff.render(name, changes, key, volatile=volatile)


def diff_runs(a: Mapping[str, Any], b: Mapping[str, Any], *, volatile: bool = False) -> list[str]:
    """A structured diff of two runs (headers + final results); each line starts - + or ~.

    Result tables and checks are compared row by row, matched by identity (the key columns
    a table declares, see :mod:`opslib.records.row_diff`): added, removed, renamed rows, and of a
    row present in both only the fields that changed. Changes of volatile fields alone
    (neighbour state, timings, what a check saw) are left out unless ``volatile``.
    """
    lines: list[str] = []

    def pair(label: str, x: Mapping[str, str], y: Mapping[str, str]) -> None:
        for k in sorted(set(x) | set(y)):
            if k not in y:
                lines.append(f"- {label}{k}: {x[k]}")
            elif k not in x:
                lines.append(f"+ {label}{k}: {y[k]}")
            elif x[k] != y[k]:
                lines.append(f"~ {label}{k}: {x[k]} -> {y[k]}")

    ha, hb = a["header"], b["header"]
    pair(
        "",
        {k: json.dumps(ha.get(k)) for k in _COMPARED_HEADER},
        {k: json.dumps(hb.get(k)) for k in _COMPARED_HEADER},
    )
    pair("parameter ", _flatten(ha.get("parameters") or {}), _flatten(hb.get("parameters") or {}))
    ra, rb = a["result"] or {}, b["result"] or {}

    def changes(r: Mapping[str, Any]) -> dict[str, str]:
        return {
            f"{c.get('action')} {c.get('target')}": c.get("summary", "")
            for c in r.get("changes", [])
        }

    pair("change ", changes(ra), changes(rb))
    lines += _check_lines(ra, rb, volatile)
    pair(
        "table ",
        {k: f"{len(v)} rows" for k, v in (ra.get("tables") or {}).items()},
        {k: f"{len(v)} rows" for k, v in (rb.get("tables") or {}).items()},
    )
    for name in sorted(set(ra.get("tables") or {}) & set(rb.get("tables") or {})):
        lines += _table_lines(name, ra, rb, volatile)
    return lines
