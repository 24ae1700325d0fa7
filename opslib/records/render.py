"""Plans and results as text and HTML: the one renderer of the notebook's display
(:mod:`opslib.engine.ui`), the terminal (``opsbook run``, ``records show``) and the
records site (:mod:`opslib.records.pages`).

Pure: the JSON of a Plan or Result in (``Plan.to_json``, ``Result.to_json``, or as a
record holds it), text out. The HTML carries its colours inline, because a notebook's
output has no stylesheet of ours, and a class on each coloured element (``add``,
``del``, a status), which the site's stylesheet and script use; a notebook and the site
show a plan or a result by the very same HTML.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from opslib.core.tables import dict_table
from opslib.records.notebook_json import RESULT_MIME

__all__ = [
    "bundle",
    "bundle_output",
    "diff_html",
    "diff_line_kind",
    "esc",
    "plan_html",
    "plan_text",
    "result_html",
    "result_text",
    "table_html",
]

STATUS_COLOR = {
    "changed": "#1a7f37",
    "unchanged": "#57606a",
    "ok": "#1a7f37",
    "rolled back": "#bc4c00",
    "failed": "#cf222e",
    "planned": "#0969da",
    "warn": "#9a6700",
    "fail": "#cf222e",
}
_DIFF_COLOR = {"add": "#1a7f37", "del": "#cf222e", "hunk": "#0969da", "ctx": "#57606a"}
_STEP_COLUMNS = ["name", "ok", "seconds", "detail"]


def esc(value: Any) -> str:
    return escape("" if value is None else str(value))


def _status_class(status: str) -> str:
    return esc(status.replace(" ", "-"))


# -- pieces -----------------------------------------------------------------------------------


def diff_line_kind(line: str) -> str:
    """What a line of a unified diff is: ``add``, ``del``, ``hunk`` or ``ctx``."""
    if line.startswith("+") and not line.startswith("+++"):
        return "add"
    if line.startswith("-") and not line.startswith("---"):
        return "del"
    return "hunk" if line.startswith("@@") else "ctx"


def diff_html(diff: str) -> str:
    lines = []
    for line in diff.splitlines():
        kind = diff_line_kind(line)
        lines.append(f'<span class="{kind}" style="color:{_DIFF_COLOR[kind]}">{esc(line)}</span>')
    return (
        '<pre style="background:#f6f8fa;padding:6px;border-radius:4px;margin:2px 0 8px">'
        + "\n".join(lines)
        + "</pre>"
    )


def _badge(status: str) -> str:
    color = STATUS_COLOR.get(status, "#57606a")
    return (
        f'<span class="badge {_status_class(status)}" style="background:{color};color:white;'
        f'padding:1px 8px;border-radius:8px;font-weight:600">{esc(status)}</span>'
    )


def _cell(key: str, value: Any) -> str:
    if isinstance(value, dict | list):
        return esc(json.dumps(value, sort_keys=True))
    text = esc(value)
    if key == "record" and text.endswith(".ipynb"):  # records-review: open the record
        return f'<a href="{text}" target="_blank">{text}</a>'
    return text


def table_html(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A table of ``rows`` (every key, or ``columns``); a status cell in its colour."""
    if not rows:
        return "<p><i>(none)</i></p>"
    cols = list(columns or dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    body = []
    for r in rows:
        tds = []
        for c in cols:
            v = r.get(c)
            mark = ""
            if c == "status" and isinstance(v, str):
                color = STATUS_COLOR.get(v)
                style = f' style="color:{color}"' if color else ""
                mark = f' class="{_status_class(v)}"{style}'
            tds.append(f"<td{mark}>{_cell(c, v)}</td>")
        body.append(f"<tr>{''.join(tds)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _checks_shown(checks: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Checks as displayed, and their columns: a fix only beside a check that is not ok
    (a fix beside "ok" reads as a problem), and no fix column when nothing needs one."""
    rows = [{**c, "fix": (c.get("fix") or "") if c.get("status") != "ok" else ""} for c in checks]
    columns = ["name", "status", "seen"] + (["fix"] if any(r["fix"] for r in rows) else [])
    return rows, columns


def _steps_shown(steps: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {**s, "ok": "ok" if s.get("ok") else "FAILED", "seconds": f"{s.get('seconds') or 0:.2f}"}
        for s in steps
    ]


def _change_html(c: Mapping[str, Any]) -> str:
    """One change of a plan or result: action, target, summary, and its diff."""
    line = (
        f"<div><b>{esc(c.get('action'))}</b> <code>{esc(c.get('target'))}</code>: "
        f"{esc(c.get('summary'))}</div>"
    )
    return line + (diff_html(c["diff"]) if c.get("diff") else "")


def _count(changes: Sequence[Any]) -> str:
    return f"{len(changes) or 'no'} change{'s' * (len(changes) != 1)}"


# -- HTML -------------------------------------------------------------------------------------


def plan_html(plan: Mapping[str, Any]) -> str:
    """A plan: its changes, each with its diff, and its notes."""
    changes = plan.get("changes") or []
    parts = [
        f"<h4>Plan for {esc(plan.get('runbook'))} on {esc(plan.get('host'))}: "
        f"{_count(changes)}</h4>"
    ]
    parts += [_change_html(c) for c in changes]
    parts += [f"<div><i>note:</i> {esc(n)}</div>" for n in plan.get("notes") or []]
    return "".join(parts)


def result_html(result: Mapping[str, Any]) -> str:
    """A plan (:func:`plan_html`) or a result: its status, changes, checks, steps and tables."""
    if result.get("kind") == "plan":
        return plan_html(result)
    parts = [
        f"<h4>{esc(result.get('runbook'))} on {esc(result.get('host'))}: "
        f"{_badge(str(result.get('status')))}</h4>"
    ]
    if result.get("summary"):
        parts.append(f"<p>{esc(result['summary'])}</p>")
    if result.get("changes"):
        parts += ["<h5>Changes</h5>", *(_change_html(c) for c in result["changes"])]
    if result.get("checks"):
        parts += ["<h5>Checks</h5>", table_html(*_checks_shown(result["checks"]))]
    if result.get("steps"):
        parts += ["<h5>Steps</h5>", table_html(_steps_shown(result["steps"]), _STEP_COLUMNS)]
    columns = result.get("columns") or {}
    for name, rows in (result.get("tables") or {}).items():
        parts += [f"<h5>{esc(name)}</h5>", table_html(rows, columns.get(name))]
    return "".join(parts)


# -- text -------------------------------------------------------------------------------------


def _table_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "  (none)\n"
    return dict_table(rows, columns, indent="  ") + "\n"


def plan_text(plan: Mapping[str, Any]) -> str:
    changes = plan.get("changes") or []
    out = [f"Plan for {plan.get('runbook')} on {plan.get('host')}: {_count(changes)}\n"]
    for c in changes:
        out.append(f"  {c.get('action')} {c.get('target')}: {c.get('summary')}\n")
        out += [f"    {line}\n" for line in (c.get("diff") or "").splitlines()]
    out += [f"  note: {n}\n" for n in plan.get("notes") or []]
    return "".join(out)


def result_text(result: Mapping[str, Any]) -> str:
    if result.get("kind") == "plan":
        return plan_text(result)
    out = [
        f"{result.get('runbook')} on {result.get('host')}: {result.get('status')}"
        + (f": {result['summary']}" if result.get("summary") else "")
        + "\n"
    ]
    if result.get("changes"):
        out.append("Changes:\n")
        for c in result["changes"]:
            out.append(f"  {c.get('action')} {c.get('target')}: {c.get('summary')}\n")
    if result.get("checks"):
        out.append("Checks:\n")
        out.append(_table_text(*_checks_shown(result["checks"])))
    if result.get("steps"):
        out.append("Steps:\n")
        steps = [{**s, "ok": "ok" if s.get("ok") else "FAILED"} for s in result["steps"]]
        out.append(_table_text(steps, _STEP_COLUMNS))
    columns = result.get("columns") or {}
    for name, rows in (result.get("tables") or {}).items():
        out.append(f"{name}:\n")
        out.append(_table_text(rows, columns.get(name)))
    return "".join(out)


# -- a notebook's output ----------------------------------------------------------------------


def bundle(data: Mapping[str, Any]) -> dict[str, Any]:
    """The display bundle of a plan or result: text, HTML, and the JSON a record keeps."""
    return {
        "text/plain": result_text(data),
        "text/html": result_html(data),
        RESULT_MIME: dict(data),
    }


def bundle_output(data: Mapping[str, Any]) -> dict[str, Any]:
    """A notebook output (nbformat 4) holding ``data``'s bundle."""
    return {"output_type": "display_data", "metadata": {}, "data": bundle(data)}
