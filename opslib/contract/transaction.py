"""One apply for every changing runbook: observe, plan, steps, and undo in reverse.

A changing runbook declares a :class:`Procedure` (``docs/runbook-shape.md`` walks
through one):

- **inputs**: a frozen dataclass that checks itself in ``__post_init__`` (InputError,
  one line, before any side effect);
- **observe** (inputs, session) -> observed state: the only side effects of a plan;
- **plan** (inputs, observed, host) -> :class:`~opslib.core.changes.Plan`: pure;
- **steps** (:class:`Transaction`) -> a list of :class:`Action`, each with do / undo / check;
- **finish** (:class:`Transaction`): the result's summary, checks and data once the steps ran.

:func:`apply` is the one apply: it re-observes, refuses a plan the host no longer
matches (:func:`~opslib.core.changes.ensure_unchanged`), runs the actions in order as
timed steps of the Result, and when one fails (raises, or its check fails) undoes
the ones done, last first, each as a step of its own. Like a pyroute2 NDB
transaction: every command knows its rollback, and the engine, not the command,
decides when to run it. Confirm-or-revert is one kind of action
(:func:`opslib.host.ifupdown.confirm.action`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from opslib.contract import fingerprint, plan_gate
from opslib.core.actions import Action, Applied, Detail
from opslib.core.changes import Plan, Result, ensure_fresh, ensure_unchanged
from opslib.core.errors import InputError, OpsError, VerificationFailed

I = TypeVar("I")  # noqa: E741 - the inputs dataclass
O = TypeVar("O")  # noqa: E741 - the observed state
S = TypeVar("S")  # an open session (a libvirt connection, an API client) or None
W = TypeVar("W")  # what the actions of one apply share (Transaction.share)


@dataclass
class Transaction(Generic[I, O, S]):
    """One apply in progress: what ``steps`` and ``finish`` get."""

    inputs: I
    observed: O
    plan: Plan
    session: S
    result: Result
    applied: Applied = field(default_factory=Applied)
    # What the actions share with finish, one typed object per kind (:meth:`share`).
    _shared: dict[type, Any] = field(default_factory=dict, repr=False)

    def share(self, value: W) -> W:
        """Keep ``value`` for the other actions and ``finish`` (:meth:`shared`), by its type:
        a dataclass of the runbook's, so that what they share has typed fields, not keys."""
        self._shared[type(value)] = value
        return value

    def shared(self, kind: type[W], default: W | None = None) -> W:
        """What :meth:`share` kept of ``kind``; ``default`` (kept) when nothing was."""
        if kind not in self._shared:
            if default is None:
                raise LookupError(f"no {kind.__name__} was shared in this apply")
            self._shared[kind] = default
        found: W = self._shared[kind]
        return found


class Procedure(Generic[I, O, S]):
    """A changing runbook, declared. Subclasses set ``name`` and ``inputs`` and define
    ``observe``, ``plan`` and ``steps``; ``session`` and ``finish`` are optional."""

    name: str = ""
    inputs: type[I]
    # When set, apply records its re-observation as a step of this name.
    observe_step: str = ""

    def session(self, inputs: I) -> AbstractContextManager[S]:
        """Connections shared by one observe, or one whole apply (default: none)."""
        return nullcontext()  # type: ignore[return-value]

    def observe(self, inputs: I, session: S) -> O:
        raise NotImplementedError

    def plan(self, inputs: I, observed: O, host: str) -> Plan:
        raise NotImplementedError

    def steps(self, tx: Transaction[I, O, S]) -> list[Action]:
        raise NotImplementedError

    def finish(self, tx: Transaction[I, O, S]) -> None:
        """The result's summary; the default names the failure or the changes."""
        applied, result = tx.applied, tx.result
        if applied.ok:
            result.summary = "; ".join(c.summary for c in result.changes) or "nothing to do"
        else:
            result.summary = failure_summary(applied)

    def check_host(self, inputs: I) -> None:
        """Refuse (HostError, one line) to apply on this host before anything is done,
        e.g. when a root-only change runs without root; the runbook's ``apply`` asks."""
        return None

    def describe(self, observed: O) -> str:
        """The detail of the ``observe_step`` (default: how many changes are needed)."""
        return ""

    def comparable(self, observed: O) -> Any:
        """The observed state as the contract test compares it (ids the API makes
        anew on an undo left out)."""
        return observed

    def observed_parts(self, inputs: I, observed: O) -> dict[str, Any]:
        """What observe saw, by part, for a saved plan's fingerprint: a part's name says
        what moved when an apply finds the host changed ("interfaces file PATH").
        Default: the fields of :meth:`comparable`'s dataclass."""
        return fingerprint.parts_of(self.comparable(observed))


def failure_summary(applied: Applied) -> str:
    """'ERROR; rolled back (UNDONE)' or 'ERROR; rolling back left: PROBLEMS'."""
    error = str(applied.error)
    if applied.problems:
        left = "; ".join(f"{a.undo_step} failed: {exc}" for a, exc in applied.problems)
        return f"{error}; rolling back left: {left}"
    if applied.undone:
        return f"{error}; rolled back ({', '.join(a.name for a in applied.undone)})"
    return error


def inputs_of(plan: Plan, kind: type[I], runbook: str) -> I:
    """The inputs a plan was made from; InputError for a plan of another runbook."""
    if plan.runbook != runbook or not isinstance(plan.inputs, kind):
        raise InputError(f"this is a plan of {plan.runbook}, not of {runbook}")
    return plan.inputs


@contextmanager
def _session(proc: Procedure[I, O, S], inputs: I, given: S | None) -> Iterator[S]:
    if given is not None:
        yield given
        return
    with proc.session(inputs) as opened:
        yield opened


def plan(proc: Procedure[I, O, S], inputs: I, host: str, *, session: S | None = None) -> Plan:
    """Observe, then plan (pure); the plan carries its inputs for apply and the
    fingerprint of what observe saw (a saved plan is applied only while it holds)."""
    with _session(proc, inputs, session) as s:
        observed = proc.observe(inputs, s)
    return _planned(proc, inputs, observed, host)


def _planned(proc: Procedure[I, O, S], inputs: I, observed: O, host: str) -> Plan:
    seen = fingerprint.fingerprint(proc.observed_parts(inputs, observed))
    return dataclasses.replace(proc.plan(inputs, observed, host), inputs=inputs, fingerprint=seen)


def apply(
    proc: Procedure[I, O, S],
    inputs: I,
    host: str,
    *,
    reviewed: Plan | None = None,
    session: S | None = None,
) -> Result:
    """Re-observe, refuse a plan the host no longer matches, run the steps, undo on failure.

    First of all, the host's policy (:mod:`opslib.contract.plan_gate`): where it asks for an
    approval, only a saved plan another person approved is applied, whoever calls."""
    plan_gate.check(
        proc.name,
        host,
        reviewed if reviewed is not None else Plan(proc.name, host),
        policy_only=True,
    )
    result = Result(proc.name, host, "unchanged")
    with _session(proc, inputs, session) as s:
        observing: AbstractContextManager[Detail] = (
            result.step(proc.observe_step) if proc.observe_step else nullcontext([])
        )
        with observing as detail:
            observed = proc.observe(inputs, s)
            fresh = _planned(proc, inputs, observed, host)
            detail.append(proc.describe(observed) or f"{len(fresh.changes)} change(s) needed now")
        if reviewed is not None and reviewed.saved:  # exactly the filed plan, or nothing
            ensure_fresh(reviewed, fresh)
        elif reviewed is not None:
            ensure_unchanged(reviewed, fresh)
        tx: Transaction[I, O, S] = Transaction(inputs, observed, fresh, s, result)
        actions = proc.steps(tx)
        execute(actions, tx)
        applied = tx.applied
        # The plan is what was applied: every step passed, or the last one, past a point
        # of no return, did its work and only its check failed (nothing is undone then).
        made = applied.kept and applied.checked and applied.failed is actions[-1]
        if applied.ok or made:
            result.changes = list(fresh.changes)
        if applied.ok:
            result.status = "changed" if fresh.changes else "unchanged"
        else:
            result.status = applied.status
        proc.finish(tx)
    return result


def execute(actions: list[Action], tx: Transaction[Any, Any, Any]) -> Applied:
    """Run ``actions`` as steps of ``tx.result``; undo the done ones in reverse on failure.

    Errors that are not OpsError (bugs) are undone alike, then raised again.
    """
    applied, result = tx.applied, tx.result
    kept: list[Action] = []  # told to keep their changes
    for action in actions:
        if action.commits:  # the point of no return: what was done before is kept
            _keep(applied.done, kept)
        did = False
        try:
            with result.step(action.name) as detail:
                action.do(detail)
                did = True
                if action.check is not None:
                    checks = action.check()
                    result.checks += checks
                    failing = [] if action.advisory else [c.name for c in checks if not c.ok]
                    if failing:
                        raise VerificationFailed(f"failing: {', '.join(failing)}")
        except Exception as exc:
            applied.error, applied.failed, applied.checked = exc, action, did
            if action.commits or any(a.commits for a in applied.done):
                applied.kept = True
            else:
                undo = [*applied.done, action] if did or action.partial else list(applied.done)
                _undo(undo, tx)
            first = not applied.done
            if isinstance(exc, action.refusals) and first and not applied.problems:
                raise
            if not isinstance(exc, OpsError):
                raise
            break
        applied.done.append(action)
    if applied.ok or applied.kept:
        _keep(applied.done, kept)
    return applied


def _keep(done: list[Action], kept: list[Action]) -> None:
    for action in done:
        if not any(a is action for a in kept) and action.keep is not None:
            action.keep()
        kept.append(action)


def _undo(actions: list[Action], tx: Transaction[Any, Any, Any]) -> None:
    ordered = sorted(reversed(actions), key=lambda a: a.undo_order)  # stable: last first
    for action in ordered:
        if action.undo is None:
            continue
        try:
            with tx.result.step(action.undo_step) as detail:
                action.undo(detail)
        except OpsError as exc:
            tx.applied.problems.append((action, exc))
            continue
        tx.applied.undone.append(action)


__all__ = [
    "Procedure",
    "Transaction",
    "apply",
    "execute",
    "failure_summary",
    "inputs_of",
    "plan",
]
