"""One step of an apply, and what running the steps came to.

An :class:`Action` says what a step does, how to undo it and how to check it; the
transaction engine (:mod:`opslib.contract.transaction`) runs a runbook's actions and
undoes them. The adapters that build actions (a libvirt network change, a networking
restart with its watchdog) need only this, not the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from opslib.core.changes import Check, ResultStatus
from opslib.core.errors import OpsError

Detail = list[str]  # what a step appends for the record


@dataclass(frozen=True)
class Action:
    """One step of an apply: what it does, how to undo it, how to check it.

    ``do`` and ``undo`` append one-line details for the record. ``check`` runs right
    after ``do`` (in the same step): its checks go into the result, and a failing one
    fails the step, so that it is undone with the others.
    """

    name: str
    do: Callable[[Detail], None]
    undo: Callable[[Detail], None] | None = None
    check: Callable[[], list[Check]] | None = None
    undo_name: str = ""  # the undo's step name; default "undo: NAME"
    # ``do`` can fail half way (a replace that deleted the old link): undo it too.
    partial: bool = False
    # A point of no return: the actions before it are kept (their ``keep`` is called as it
    # starts), and when it or a later one fails nothing is undone (the new network already
    # carries the guests); the result says what is left.
    commits: bool = False
    # Undos run last first; a lower ``undo_order`` runs before a higher one: -1 for a
    # watchdog that would revert the same changes, 1 for a restart that must read the
    # files the other undos put back.
    undo_order: int = 0
    # Called once the actions are kept (all passed, or a point of no return was passed):
    # a watchdog is told to keep the change.
    keep: Callable[[], None] | None = None
    # These errors, when nothing was done before this action, are raised (after its
    # undo, if partial) instead of becoming a result: the host refused before any change.
    refusals: tuple[type[OpsError], ...] = ()
    # The ``check``'s failing checks are reported (the result fails by them) but do not
    # fail the step: nothing is undone for them (what is checked is beyond this host).
    advisory: bool = False

    @property
    def undo_step(self) -> str:
        return self.undo_name or f"undo: {self.name}"


@dataclass
class Applied:
    """What running the actions came to (see :attr:`status`)."""

    done: list[Action] = field(default_factory=list)  # actions whose do (and check) passed
    error: BaseException | None = None  # what stopped the apply
    failed: Action | None = None  # the action that raised or whose check failed
    undone: list[Action] = field(default_factory=list)  # undone without error, in that order
    problems: list[tuple[Action, OpsError]] = field(default_factory=list)  # undos that failed
    kept: bool = False  # a point of no return was passed: nothing was undone
    checked: bool = False  # the failed action did its work; its check failed

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def status(self) -> ResultStatus:
        """A failed apply's status: rolled back when every undo ran and one did something."""
        return "rolled back" if self.undone and not self.problems else "failed"


__all__ = ["Action", "Applied", "Detail"]
