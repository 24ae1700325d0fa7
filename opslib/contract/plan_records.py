"""Saved plans: a plan record's digest, its checks before an apply, its approvals.

``opsbook plan`` files a headless run that stops at its plan (mode ``plan``) and
seals its header with a ``plan`` section (:func:`seal`): who planned it (the login
account; ``SUDO_USER`` under sudo), when it expires, whether its runbook needs an
approval, and the **digest**: the sha256 of everything the plan says (runbook, host,
parameters with secrets by their source, the changes with their diffs, the notes, the
fingerprint of what observe saw, who, when, the expiry; :func:`content`).

Before an approval or an apply (:func:`load`, :func:`check_intact`,
:func:`check_applicable`, :func:`check_approved`): the file's sha256 is the one the
index has, the digest computed again is the one filed, it is not applied, superseded
or expired, and where the policy asks, another person approved this very digest.
Then ``opsbook apply`` runs the notebook with the plan's parameters and ``apply``
true, and hands the kernel the plan record (:data:`PLAN_ENV`): ``rb.plan`` reads the
plan back (:func:`saved_from_env`) and keeps it only while the host is as observed
(:func:`opslib.core.changes.ensure_fresh`, checked again under the host's lock by the
engine), so the apply runs the filed plan or nothing.

Approvals, the apply that applied a plan and the applies refused as stale are added
to the plan's header afterwards (:func:`amend`: outside the digest); the apply's own
header names its plan (``applies_plan``). The index mirrors them (:mod:`opslib.records.plan_index`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from opslib.contract.policy import Policy
from opslib.core.changes import Change, Plan, ensure_fresh
from opslib.core.errors import InputError
from opslib.records import clock, notebook_json, plan_index, run_index
from opslib.records import store as records

__all__ = [
    "PLAN_ENV",
    "Saved",
    "amend",
    "check_applicable",
    "check_approved",
    "check_intact",
    "content",
    "digest_of",
    "load",
    "person",
    "saved_from_env",
    "seal",
]

PLAN_ENV = "OPSBOOK_SAVED_PLAN"  # the plan record an apply applies: "ID DIGEST PATH"
_FMT = "%Y-%m-%dT%H:%M:%SZ"


def person() -> str:
    """Who is doing this: the login account, the one that ran sudo when under sudo."""
    sudo_user = os.environ.get("SUDO_USER", "")
    if os.geteuid() == 0 and sudo_user and sudo_user != "root":
        return sudo_user
    return getpass.getuser()


def plan_json(nb: Mapping[str, Any]) -> dict[str, Any] | None:
    """The plan a plan record's run showed (its last result, of kind plan)."""
    final = notebook_json.final_result(notebook_json.results_of(nb))
    return dict(final) if final is not None and final.get("kind") == "plan" else None


def content(header: Mapping[str, Any], plan: Mapping[str, Any]) -> dict[str, Any]:
    """What a plan record's digest covers (approvals, links and the status are not in it)."""
    section = header.get("plan") or {}
    return {
        **{k: header.get(k) for k in ("runbook", "host", "parameters", "start", "revision")},
        "opslib_version": header.get("opslib_version"),
        "planned_by": section.get("planned_by"),
        "expires": section.get("expires"),
        "needs_approval": bool(section.get("needs_approval")),
        "plan": {k: plan.get(k) for k in ("runbook", "host", "changes", "notes", "fingerprint")},
    }


def digest_of(header: Mapping[str, Any], nb: Mapping[str, Any]) -> str:
    plan = plan_json(nb)
    if plan is None:
        return ""
    text = json.dumps(content(header, plan), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def seal(
    header: dict[str, Any], nb: dict[str, Any], *, policy: Policy, planned_by: str
) -> dict[str, Any]:
    """A plan run's final header: with its ``plan`` section when it ended with a plan."""
    if header.get("status") != "ok" or plan_json(nb) is None:
        return header
    start = datetime.strptime(header["start"], _FMT)
    section = {
        "planned_by": planned_by,
        "expires": (start + timedelta(seconds=policy.expiry)).strftime(_FMT),
        "needs_approval": policy.needs_approval(header["runbook"]),
    }
    sealed = {**header, "plan": section}
    section["digest"] = digest_of(sealed, nb)
    return sealed


@dataclass(frozen=True)
class Saved:
    """A plan record as read for an approval or an apply."""

    row: run_index.Row
    path: Path
    nb: dict[str, Any]
    header: dict[str, Any]
    index: plan_index.PlanRow

    @property
    def id(self) -> int:
        return self.row.id

    @property
    def name(self) -> str:
        return f"plan #{self.row.id}"

    @property
    def digest(self) -> str:
        return str(self.header["plan"]["digest"])

    @property
    def planned_by(self) -> str:
        return str(self.header["plan"].get("planned_by") or "")


def _row_by_ref(store: records.Store, ref: str) -> run_index.Row:
    if ref.isdigit():
        return store.get(ref)
    path = Path(ref)
    if not path.is_file():
        raise InputError(f"{ref}: neither a record id nor a plan record's file")
    rel = store.rel(path)
    with store.db() as con:
        found = con.execute("SELECT id FROM runs WHERE path = ?", (rel,)).fetchone()
    if found is None:
        raise InputError(f"{ref} is not a record of the store {store.root}; give --records")
    return store.get(found["id"])


def load(store: records.Store, ref: str) -> Saved:
    """The plan record ``ref`` (an id or a path); InputError when it is not a saved plan."""
    row = _row_by_ref(store, ref)
    nb = store.notebook(row)
    header = notebook_json.header_of(nb) or {}
    if not isinstance(header.get("plan"), dict) or "digest" not in header["plan"]:
        raise InputError(
            f"record #{row.id} is not a saved plan (a {row.mode or 'headless'} run of "
            f"{row.runbook}); file one with: opsbook plan {row.runbook}"
        )
    with store.db() as con:
        found = plan_index.rows(con, clock.iso(clock.utcnow()), ids=[row.id])
    if not found:
        raise InputError(
            f"plan #{row.id} is not in the index's plans; `opsbook records reindex` adds it"
        )
    return Saved(row, store.abspath(row), nb, dict(header), found[0])


def check_intact(saved: Saved) -> None:
    """Refuse a plan record edited since it was filed (the index's sha256, the digest)."""
    now = records.sha256_of(saved.path)
    if saved.row.sha256 and now != saved.row.sha256:
        raise InputError(
            f"{saved.name}'s file was edited after it was filed (sha256 {now[:12]}, the "
            f"index has {saved.row.sha256[:12]}); plan again"
        )
    digest = digest_of(saved.header, saved.nb)
    if digest != saved.digest or digest != saved.index.digest:
        raise InputError(
            f"{saved.name} was edited: what it says has digest {digest[:12]}, it was filed "
            f"as {saved.index.digest[:12]}; plan again"
        )


def check_applicable(saved: Saved, now: str) -> None:
    """Refuse a plan applied already, superseded by a newer one, or expired."""
    idx = saved.index
    if idx.applied:
        raise InputError(
            f"{saved.name} was applied already (record #{idx.applied.get('id')}); "
            f"plan again for another apply"
        )
    if idx.superseded_by is not None:
        raise InputError(
            f"{saved.name} is superseded by plan #{idx.superseded_by} of {idx.runbook} on "
            f"{idx.host}; review and apply that one: opsbook apply {idx.superseded_by}"
        )
    if idx.expires <= now:
        raise InputError(f"{saved.name} expired at {idx.expires}; plan again")


def check_approved(saved: Saved, policy: Policy) -> None:
    """Where the plan or the policy asks for it: another person approved this digest."""
    idx = saved.index
    if not (idx.needs_approval or policy.needs_approval(idx.runbook)):
        return
    approval = idx.approval
    if approval is None or approval.get("by") == saved.planned_by:
        where = policy.where if policy.needs_approval(idx.runbook) else "its policy when planned"
        raise InputError(
            f"{idx.runbook} on {idx.host} applies only an approved plan ({where}); "
            f"{saved.name} is not approved: another person than {saved.planned_by} "
            f"reviews it and runs: opsbook approve {saved.id}"
        )


@contextlib.contextmanager
def _locked(store: records.Store) -> Iterator[Any]:
    """The index's write lock: one amendment of a plan record at a time."""
    with store.db() as con:
        con.execute("BEGIN IMMEDIATE")
        yield con


def amend(store: records.Store, saved: Saved, update: Mapping[str, Any]) -> dict[str, Any]:
    """Add ``update`` to the plan record's header (outside its digest), file and index it."""
    with _locked(store) as con:
        row = con.execute("SELECT sha256 FROM runs WHERE id = ?", (saved.id,)).fetchone()
        filed = saved.row.sha256
        if row is None or row["sha256"] != filed or records.sha256_of(saved.path) != filed:
            raise InputError(f"{saved.name} changed meanwhile; look at it again")
        nb = json.loads(saved.path.read_bytes())
        header = {**(notebook_json.header_of(nb) or {}), **update}
        data = notebook_json.dump_notebook(notebook_json.with_header(nb, header))
        records.atomic_write(saved.path, data)
        con.execute(
            "UPDATE runs SET sha256 = ? WHERE id = ?",
            (hashlib.sha256(data).hexdigest(), saved.id),
        )
        plan_index.put(con, saved.id, header)
    return header


def approve(store: records.Store, saved: Saved, *, by: str, comment: str, now: str) -> None:
    """Record that ``by`` approved the plan's digest (not its planner)."""
    if by == saved.planned_by:
        raise InputError(
            f"{saved.name} was planned by {by}; another person reviews and approves it"
        )
    if any(a.get("by") == by and a.get("digest") == saved.digest for a in saved.index.approvals):
        raise InputError(f"{saved.name} is approved by {by} already")
    if any(ord(c) < 32 for c in comment):
        raise InputError("--comment: one line, no control characters")
    approval = {"by": by, "at": now, "digest": saved.digest, "comment": comment}
    amend(store, saved, {"approvals": [*saved.index.approvals, approval]})


def after_apply(
    store: records.Store, saved: Saved, apply_id: int, status: str, summary: str
) -> None:
    """Link the plan to its apply: ``applied`` when it went through, ``refused`` (stale)
    when the host had moved; another failure (rolled back) leaves it applicable."""
    at = clock.iso(clock.utcnow())
    if status == "ok":
        amend(store, saved, {"applied": {"id": apply_id, "at": at}})
    elif summary.startswith("stale: "):
        refused = [*saved.index.refused, {"id": apply_id, "at": at, "reason": summary}]
        amend(store, saved, {"refused": refused})


def apply_env(saved: Saved) -> dict[str, str]:
    """What the apply's kernel is told: which plan record, and its digest."""
    return {PLAN_ENV: f"{saved.id} {saved.digest} {saved.path.resolve()}"}


def saved_from_env() -> Plan | None:
    """In the kernel of ``opsbook apply``: the saved plan, read back from its record."""
    told = os.environ.get(PLAN_ENV, "")
    if not told:
        return None
    ident, digest, path = told.split(" ", 2)
    nb = json.loads(Path(path).read_bytes())
    header = notebook_json.header_of(nb) or {}
    if digest_of(header, nb) != digest:
        raise InputError(f"plan #{ident} changed after opsbook apply checked it; plan again")
    plan = plan_json(nb) or {}
    changes = tuple(
        Change(c["target"], c["action"], c["summary"], c.get("before"), c.get("after"))
        for c in plan.get("changes", [])
    )
    return Plan(
        str(plan["runbook"]),
        str(plan["host"]),
        changes,
        tuple(plan.get("notes") or ()),
        fingerprint=dict(plan.get("fingerprint") or {}),
        saved=f"plan #{ident}",
    )


def against(saved: Plan, fresh: Plan) -> Plan:
    """The saved plan, kept only while ``fresh`` (observed now) says the same."""
    ensure_fresh(saved, fresh)
    return dataclasses.replace(saved, inputs=fresh.inputs)
