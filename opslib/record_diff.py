"""``records diff``: what differs between two runs (headers, parameters, results)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["diff_runs"]


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    return {f"{prefix}{k}": json.dumps(v, sort_keys=True) for k, v in d.items()}


# What `records diff` compares of two runs' headers, in this order.
_COMPARED_HEADER = ("runbook", "host", "status", "changed", "summary", "opslib_version", "revision")


def diff_runs(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """A structured diff of two runs (headers + final results); each line starts - + or ~."""
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
    pair(
        "check ",
        {c["name"]: f"{c.get('status')} ({c.get('seen')})" for c in ra.get("checks", [])},
        {c["name"]: f"{c.get('status')} ({c.get('seen')})" for c in rb.get("checks", [])},
    )
    pair(
        "table ",
        {k: f"{len(v)} rows" for k, v in (ra.get("tables") or {}).items()},
        {k: f"{len(v)} rows" for k, v in (rb.get("tables") or {}).items()},
    )
    for name in sorted(set(ra.get("tables") or {}) & set(rb.get("tables") or {})):
        ta = {json.dumps(r, sort_keys=True) for r in ra["tables"][name]}
        tb = {json.dumps(r, sort_keys=True) for r in rb["tables"][name]}
        lines += [f"- {name} row: {r}" for r in sorted(ta - tb)]
        lines += [f"+ {name} row: {r}" for r in sorted(tb - ta)]
    return lines
