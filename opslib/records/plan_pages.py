"""The records site's saved plans (``opsbook plan``): the plans page and a plan's section.

``plans.html`` (beside the index, rewritten on every build: a plan's state moves with
time and with other records) lists every saved plan with its state, who planned and
who approved it, its expiry and the apply that applied it or was refused, each linked
to its page. A plan record's page gets a "Saved plan" section (state, digest, expiry,
approvals, apply), an apply's page the plan it applied. Pure: data in, HTML out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opslib.records.pages import page, status_cell
from opslib.records.plan_index import PlanRow
from opslib.records.render import esc

__all__ = ["PLANS_PAGE", "apply_section", "plan_section", "plans_page"]

PLANS_PAGE = "plans.html"


def _link(run_id: Any, href: str | None) -> str:
    return f'<a href="{esc(href)}">#{esc(run_id)}</a>' if href else f"#{esc(run_id)}"


def _approvals(p: PlanRow) -> str:
    if not p.approvals:
        return "none" + (" (its runbook needs one)" if p.needs_approval else "")
    items = []
    for a in p.approvals:
        mark = "" if a.get("digest") == p.digest else " (of another digest: void)"
        comment = f": {esc(a.get('comment'))}" if a.get("comment") else ""
        items.append(f"<li>{esc(a.get('by'))}, {esc(a.get('at'))}{comment}{mark}</li>")
    return f"<ul>{''.join(items)}</ul>"


def _applies(p: PlanRow, href: Callable[[int], str | None]) -> str:
    parts = []
    if p.applied:
        parts.append(f"applied by {_link(p.applied['id'], href(int(p.applied['id'])))}")
    for r in p.refused:
        parts.append(
            f"refused {_link(r['id'], href(int(r['id'])))} at {esc(r.get('at'))}: "
            f"{esc(r.get('reason'))}"
        )
    return "<br>".join(parts) or "not yet"


def plan_section(p: PlanRow, href: Callable[[int], str | None]) -> str:
    """A plan record's page: what the plan is as a saved plan, now."""
    fields = [
        ("state", status_cell(p.state)),
        ("planned by", esc(p.planned_by)),
        ("digest", f"<code>{esc(p.digest)}</code>"),
        ("expires", esc(p.expires)),
        ("approval", _approvals(p)),
        ("apply", _applies(p, href)),
    ]
    if p.state == "superseded" and p.superseded_by is not None:
        fields.append(("superseded by", _link(p.superseded_by, href(p.superseded_by))))
    rows = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in fields)
    return f'<h2 id="saved-plan">Saved plan</h2><dl class="header">{rows}</dl>'


def apply_section(link: Mapping[str, Any], href: str | None) -> str:
    """An apply's page: the plan it applied."""
    return (
        f'<h2 id="saved-plan">Saved plan</h2><p>This run applied plan '
        f"{_link(link.get('id'), href)} (digest <code>{esc(link.get('digest'))}</code>).</p>"
    )


def plans_page(plans: Sequence[PlanRow], href: Callable[[int], str | None], index: str) -> str:
    """Every saved plan, newest first, with its state and links."""
    head = (
        "<tr><th>plan</th><th>planned (UTC)</th><th>runbook</th><th>host</th><th>by</th>"
        "<th>state</th><th>approved</th><th>apply</th><th>expires</th></tr>"
    )
    rows = []
    for p in plans:
        approval = p.approval
        approved = f"{esc(approval['by'])} {esc(approval['at'])}" if approval else "-"
        rows.append(
            f'<tr data-state="{esc(p.state)}"><td>{_link(p.id, href(p.id))}</td>'
            f"<td>{esc(p.start)}</td><td>{esc(p.runbook)}</td><td>{esc(p.host)}</td>"
            f"<td>{esc(p.planned_by)}</td><td>{status_cell(p.state)}</td><td>{approved}</td>"
            f"<td>{_applies(p, href)}</td><td>{esc(p.expires)}</td></tr>"
        )
    counts = {
        s: sum(1 for p in plans if p.state == s) for s in dict.fromkeys(p.state for p in plans)
    }
    said = ", ".join(f"{n} {s}" for s, n in counts.items()) or "none"
    body = (
        f"<h1>Saved plans</h1><p>{len(plans)} plans: {esc(said)}. A plan is applied with "
        "<code>opsbook apply ID</code>; where the host's policy asks, after "
        "<code>opsbook approve ID</code> by another person.</p>"
        f'<table id="plans"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'
    )
    return page("opsbook saved plans", body, nav=[("all records", index)])
