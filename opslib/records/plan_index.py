"""The index's table of saved plans (``opsbook plan``), kept beside ``runs``.

A plan record's header holds a ``plan`` section (digest, expiry, who planned it,
whether its runbook needs approval, the fingerprint) and, added later, ``approvals``,
``applied`` (the apply's record) and ``refused`` (applies refused as stale). The
index keeps them per plan so that listing plans and their state reads no notebook;
like the rest of the index it is rebuilt from the records (``records reindex``).

A plan's state, first that holds: ``applied``, ``stale`` (an apply found the host
changed), ``superseded`` (a newer plan of the same runbook on the same host),
``expired``, ``approved`` (an approval of its very digest), ``pending``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["SCHEMA", "STATES", "PlanRow", "put", "rows"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS plans (
    id INTEGER PRIMARY KEY,
    runbook TEXT NOT NULL,
    host TEXT NOT NULL,
    start TEXT NOT NULL,
    digest TEXT NOT NULL,
    planned_by TEXT,
    expires TEXT NOT NULL,
    needs_approval INTEGER NOT NULL DEFAULT 0,
    approvals TEXT,
    applied TEXT,
    refused TEXT
);
CREATE INDEX IF NOT EXISTS plans_runbook_host ON plans(runbook, host, id);
"""
STATES = ("pending", "approved", "applied", "superseded", "expired", "stale")


@dataclass(frozen=True)
class PlanRow:
    """One saved plan in the index, with its state at the time it was read."""

    id: int
    runbook: str
    host: str
    start: str
    digest: str
    planned_by: str
    expires: str
    needs_approval: bool
    approvals: list[dict[str, Any]]
    applied: dict[str, Any] | None
    refused: list[dict[str, Any]]
    superseded_by: int | None
    state: str

    @property
    def approval(self) -> dict[str, Any] | None:
        """The approval of this very digest, if any (an older digest's does not count)."""
        return next((a for a in self.approvals if a.get("digest") == self.digest), None)


def put(con: sqlite3.Connection, run_id: int, header: Mapping[str, Any]) -> None:
    """Index the plan section of a record's header (no-op for a record that is no plan)."""
    plan = header.get("plan")
    if not isinstance(plan, Mapping) or "digest" not in plan:
        return
    con.execute(
        "INSERT OR REPLACE INTO plans (id, runbook, host, start, digest, planned_by, expires, "
        "needs_approval, approvals, applied, refused) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            run_id,
            header["runbook"],
            header["host"],
            header["start"],
            plan["digest"],
            plan.get("planned_by"),
            plan["expires"],
            int(bool(plan.get("needs_approval"))),
            json.dumps(header.get("approvals") or []),
            json.dumps(header.get("applied")) if header.get("applied") else None,
            json.dumps(header.get("refused") or []),
        ),
    )


def _state(r: Mapping[str, Any], now: str) -> str:
    if r["applied"]:
        return "applied"
    if r["refused"]:
        return "stale"
    if r["superseded_by"] is not None:
        return "superseded"
    if r["expires"] <= now:
        return "expired"
    if any(a.get("digest") == r["digest"] for a in r["approvals"]):
        return "approved"
    return "pending"


def rows(
    con: sqlite3.Connection, now: str, *, ids: list[int] | None = None, state: str = ""
) -> list[PlanRow]:
    """Plans, newest first, with their state at ``now`` (ISO UTC); only ``ids`` if given."""
    sql = (
        "SELECT p.*, (SELECT min(q.id) FROM plans q WHERE q.runbook = p.runbook "
        "AND q.host = p.host AND q.id > p.id) AS superseded_by FROM plans p"
    )
    args: list[Any] = []
    if ids is not None:
        sql += f" WHERE p.id IN ({', '.join('?' * len(ids))})"
        args += ids
    found = []
    for r in con.execute(sql + " ORDER BY p.id DESC", args):
        d = dict(r)
        d["approvals"] = json.loads(d["approvals"] or "[]")
        d["applied"] = json.loads(d["applied"]) if d["applied"] else None
        d["refused"] = json.loads(d["refused"] or "[]")
        d["needs_approval"] = bool(d["needs_approval"])
        d["planned_by"] = d["planned_by"] or ""
        row = PlanRow(**d, state=_state(d, now))
        if not state or row.state == state:
            found.append(row)
    return found
