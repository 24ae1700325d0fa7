"""Plan, Change, Check, Step, Result: the changed / diff / check-mode contract.

A changing procedure observes, then computes a :class:`Plan` with pure code
(observed state in, plan out). ``apply`` makes the plan's changes, verifies
them and returns a :class:`Result`. Everything here is plain data that
serialises to JSON, so that a record can be read without a kernel.
"""

from __future__ import annotations

import dataclasses
import difflib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

from opslib.core.errors import ApplyError, StalePlan

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Status = Literal["ok", "warn", "fail"]
ResultStatus = Literal["changed", "unchanged", "rolled back", "failed", "ok", "planned"]


# Who wants to know when a step starts (the interactive form's progress line).
_step_listeners: list[Callable[[str], None]] = []


@contextmanager
def watching_steps(listener: Callable[[str], None]) -> Iterator[None]:
    """Call ``listener(step_name)`` whenever a :meth:`Result.step` starts, inside."""
    _step_listeners.append(listener)
    try:
        yield
    finally:
        _step_listeners.remove(listener)


def unified_diff(before: str | None, after: str | None, name: str) -> str:
    """A unified diff of two texts; ``None`` stands for a missing file."""
    a = (before or "").splitlines(keepends=True)
    b = (after or "").splitlines(keepends=True)
    lines = difflib.unified_diff(
        a,
        b,
        fromfile=f"a/{name}" if before is not None else "/dev/null",
        tofile=f"b/{name}" if after is not None else "/dev/null",
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


class JsonData:
    """Mixin for a dataclass whose JSON form is its fields, as they are."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(cast("DataclassInstance", self))


@dataclass(frozen=True)
class Change(JsonData):
    """One change to one thing: a file, a libvirt object, a link, a DNS record."""

    target: str  # what is changed, e.g. "file:/etc/network/interfaces", "network:nat-bridge"
    action: str  # create | update | delete | start | autostart | attach | restart ...
    summary: str  # one line for people
    before: str | None = None
    after: str | None = None

    @property
    def diff(self) -> str:
        if self.before is None and self.after is None:
            return ""
        return unified_diff(self.before, self.after, self.target.split(":", 1)[-1].lstrip("/"))

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "diff": self.diff}


@dataclass(frozen=True)
class Check(JsonData):
    """A verification or health check: what was seen, and what to do if it failed."""

    name: str
    status: Status
    seen: str
    fix: str = ""

    @classmethod
    def given(cls, name: str, ok: bool, seen: str, fix: str = "") -> Check:
        """A check that passes when ``ok``; ``fix`` is shown only when it fails."""
        return cls(name, "ok" if ok else "fail", seen, "" if ok else fix)

    @property
    def ok(self) -> bool:
        return self.status != "fail"


@dataclass(frozen=True)
class Step(JsonData):
    """A timed step of an apply, shown in the record."""

    name: str
    started: float
    seconds: float
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class Plan:
    """What apply would do. Empty ``changes`` means nothing to do."""

    runbook: str
    host: str
    changes: tuple[Change, ...] = ()
    notes: tuple[str, ...] = ()
    # Observed state or computed values apply needs; JSON-serialisable.
    data: dict[str, Any] = field(default_factory=dict)
    # The runbook's inputs (its frozen dataclass) the plan was made from: what apply
    # applies with (opslib.contract.transaction). Not in records: the parameters are.
    inputs: Any = field(default=None, repr=False, compare=False)
    # What observe saw, part by part: {part: sha256} (opslib.contract.fingerprint). A saved plan
    # is applied only while the host still matches it (:func:`ensure_fresh`).
    fingerprint: dict[str, str] = field(default_factory=dict, compare=False)
    # A saved plan (read back from its plan record): "plan #12"; "" for a plan made here.
    saved: str = field(default="", compare=False)

    @property
    def empty(self) -> bool:
        return not self.changes

    @property
    def diff(self) -> str:
        return "".join(c.diff for c in self.changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "plan",
            "runbook": self.runbook,
            "host": self.host,
            "changes": [c.to_json() for c in self.changes],
            "notes": list(self.notes),
            **({"fingerprint": dict(self.fingerprint)} if self.fingerprint else {}),
        }


@dataclass
class Result:
    """The outcome of a run: apply, a check, or a read-only report."""

    runbook: str
    host: str
    status: ResultStatus
    summary: str = ""
    changes: list[Change] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    # Per table: the columns that identify a row across runs, and those that change from
    # run to run on their own (neighbour state, timings). They travel in the record, so
    # that ``records diff`` reads them without the runbook (opslib.records.row_diff).
    keys: dict[str, list[str]] = field(default_factory=dict)
    volatile: dict[str, list[str]] = field(default_factory=dict)
    # Per table: columns that still say which row is which when the key changed (a network
    # renamed: its UUID, its bridge), tried in order.
    identity: dict[str, list[str]] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return self.status == "changed"

    @property
    def failed(self) -> bool:
        return self.status in ("failed", "rolled back") or any(
            c.status == "fail" for c in self.checks
        )

    @contextmanager
    def step(self, name: str) -> Iterator[list[str]]:
        """Time a step; append details to the yielded list. Exceptions mark it failed."""
        detail: list[str] = []
        for listener in list(_step_listeners):
            listener(name)
        t0 = time.time()
        ok = False
        try:
            yield detail
            ok = True
        finally:
            self.steps.append(Step(name, t0, round(time.time() - t0, 3), ok, "; ".join(detail)))

    def add_table(
        self,
        name: str,
        rows: Sequence[Mapping[str, Any]],
        *,
        key: Sequence[str],
        volatile: Sequence[str] = (),
        identity: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        """Add a result table whose rows ``key`` identifies; ``volatile`` columns change
        on their own between runs (``records diff`` shows them only on request);
        ``identity`` columns match a row whose key changed (a rename) to its old self."""
        if not key:
            raise AssertionError(f"table {name!r}: declare at least one key column")
        if set(key) & set(volatile):
            raise AssertionError(f"table {name!r}: a key column cannot be volatile")
        for row in rows:
            missing = [k for k in key if k not in row]
            if missing:
                raise AssertionError(f"table {name!r}: a row lacks key column(s) {missing}")
        self.tables[name] = [dict(r) for r in rows]
        self.keys[name] = list(key)
        self.volatile[name] = list(volatile)
        if identity:
            self.identity[name] = list(identity)
        return self.tables[name]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "result",
            "runbook": self.runbook,
            "host": self.host,
            "status": self.status,
            "changed": self.changed,
            "failed": self.failed,
            "summary": self.summary,
            "changes": [c.to_json() for c in self.changes],
            "checks": [c.to_json() for c in self.checks],
            "steps": [s.to_json() for s in self.steps],
            "tables": self.tables,
            # Records are written with sorted keys; keep each table's column order here.
            "columns": {
                name: list(dict.fromkeys(k for row in rows for k in row))
                for name, rows in self.tables.items()
            },
            "keys": {n: list(k) for n, k in self.keys.items() if n in self.tables},
            "volatile": {n: list(v) for n, v in self.volatile.items() if n in self.tables},
            "identity": {n: list(i) for n, i in self.identity.items() if n in self.tables},
            "data": self.data,
        }


def ensure_unchanged(reviewed: Plan, fresh: Plan) -> None:
    """Apply makes the changes the operator reviewed, or none at all.

    ``fresh`` is the plan re-computed at apply time. Nothing left to do is fine
    (someone else applied it); anything else that differs from what was shown
    raises ApplyError before any change.
    """

    def key(plan: Plan) -> list[tuple[str, str, str | None]]:
        return [(c.target, c.action, c.after) for c in plan.changes]

    if fresh.changes and key(reviewed) != key(fresh):
        raise ApplyError(
            f"{fresh.runbook} on {fresh.host}: the host changed since the plan was made "
            f"({len(reviewed.changes)} change(s) reviewed, {len(fresh.changes)} needed now); "
            "plan again and review the new diff"
        )


def ensure_fresh(saved: Plan, fresh: Plan) -> None:
    """A saved plan is applied exactly as filed, or not at all.

    ``fresh`` is the plan computed from what the host has now. Refuses (StalePlan, before
    any change) when a part of what observe saw moved since the plan was filed, naming
    it, or when the fresh plan's changes differ from the saved ones in any way (diffs
    included): the apply runs the saved plan's steps, nothing re-planned."""
    moved = [
        part
        for part in dict.fromkeys([*saved.fingerprint, *fresh.fingerprint])
        if saved.fingerprint.get(part) != fresh.fingerprint.get(part)
    ]
    which = saved.saved or "the saved plan"
    if moved:
        part = moved[0]
        was, now = saved.fingerprint.get(part, "none"), fresh.fingerprint.get(part, "none")
        more = f" (and {len(moved) - 1} more)" if len(moved) > 1 else ""
        raise StalePlan(
            f"stale: {fresh.runbook}'s {part} changed since {which} "
            f"(sha256 {was[:12]} then, {now[:12]} now){more}; plan again"
        )
    if [c.to_json() for c in saved.changes] != [c.to_json() for c in fresh.changes]:
        raise StalePlan(
            f"stale: {fresh.runbook} on {fresh.host} would now make other changes than "
            f"{which} ({len(saved.changes)} filed, {len(fresh.changes)} needed now); plan again"
        )
