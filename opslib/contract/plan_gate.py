"""The host's apply policy, enforced where the apply happens: in the kernel.

``opsbook run | apply`` check the policy (:mod:`opslib.contract.policy`) before a kernel starts;
the apply checks it again itself (``rb.apply`` for every runbook, and
:func:`opslib.contract.transaction.apply` for every procedure), so that neither the JupyterLab
form nor a hand-edited notebook applies, under a policy asking for approval, anything
but a saved plan another person approved. A saved plan (``Plan.saved``, "plan #12") is
applied only while its record holds: intact, not applied, superseded or expired,
approved where asked, and saying the very changes and fingerprint of the plan in hand.

The kernel finds the policy as the CLI does: ``$OPSBOOK_PARAMS_DIR/HOST/policy.yaml``
(``opsbook run | apply | notebook`` set it from ``--params-dir``; else ``./parameters``)
and beside the session's parameter sets (``$OPSBOOK_DEFAULTS/policy.yaml``); the saved
plan in the record store of the run (``$OPSBOOK_RECORDS``, else ``./records``; a form
tells :func:`records_at` its own).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from pathlib import Path

from opslib.contract import plan_records, policy
from opslib.core import shellcmd
from opslib.core.changes import Plan
from opslib.core.errors import InputError
from opslib.records import clock
from opslib.records import store as records

__all__ = [
    "PARAMS_DIR_ENV",
    "blocked",
    "check",
    "host_policy",
    "records_at",
    "saved_or_none",
    "saved_record",
]

PARAMS_DIR_ENV = "OPSBOOK_PARAMS_DIR"
_DEFAULTS_ENV = (
    "OPSBOOK_DEFAULTS"  # opslib.engine.notebook_params.DEFAULTS_ENV (no import: engine uses us)
)
_store_root: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "opsbook_store_root", default=None
)


def host_policy(host: str) -> policy.Policy:
    """The policy of ``host`` as the kernel sees it (see the module)."""
    root = Path(os.environ.get(PARAMS_DIR_ENV) or "parameters")
    defaults = os.environ.get(_DEFAULTS_ENV)
    beside = [Path(defaults) / policy.FILE] if defaults else []
    return policy.find(host, root, beside)


@contextlib.contextmanager
def records_at(root: Path) -> Iterator[None]:
    """Within: saved plans are looked up in the store at ``root`` (the form's store)."""
    token = _store_root.set(root)
    try:
        yield
    finally:
        _store_root.reset(token)


def _store() -> records.Store:
    root = _store_root.get() or Path(os.environ.get("OPSBOOK_RECORDS") or "records")
    return records.Store(root)


def saved_record(plan: Plan, store: records.Store | None = None) -> plan_records.Saved:
    """The plan record of a saved plan ("plan #12"); InputError when there is none."""
    ident = plan.saved.removeprefix("plan #")
    if not ident.isdigit():
        raise InputError(f"{plan.saved!r} names no saved plan; save the plan again")
    return plan_records.load(store or _store(), ident)


def saved_or_none(plan: Plan, store: records.Store) -> plan_records.Saved | None:
    """The record of a saved plan, to link its apply to; None for a plan never saved
    or one whose record is not there (the apply refuses it and says why)."""
    if not plan.saved:
        return None
    try:
        return saved_record(plan, store)
    except InputError:
        return None


def _matches(saved: plan_records.Saved, plan: Plan) -> None:
    filed = plan_records.plan_json(saved.nb) or {}
    same = (
        filed.get("runbook") == plan.runbook
        and filed.get("host") == plan.host
        and filed.get("changes", []) == [c.to_json() for c in plan.changes]
        and (filed.get("fingerprint") or {}) == dict(plan.fingerprint)
    )
    if not same:
        raise InputError(
            f"the plan in hand is not what {saved.name} says (another runbook, host, "
            f"changes or observation); apply the filed plan: opsbook apply {saved.id}"
        )


def blocked(runbook: str, host: str, plan: Plan, store: records.Store | None = None) -> str:
    """Why ``plan`` must not be applied on ``host`` now ('' when it may), one line."""
    found = host_policy(host)
    if not plan.saved:
        if not found.needs_approval(runbook):
            return ""
        command = shellcmd.command("opsbook", "plan", runbook, "--host", host)
        return (
            f"{runbook} on {host} applies only a saved plan another person approved "
            f"({found.where}): save this plan (Save plan, or `{command}`), have it "
            "approved (`opsbook approve ID`), then apply it"
        )
    try:
        saved = saved_record(plan, store)
        plan_records.check_intact(saved)
        plan_records.check_applicable(saved, clock.iso(clock.utcnow()))
        plan_records.check_approved(saved, found)
        _matches(saved, plan)
    except InputError as exc:
        return str(exc)
    return ""


def check(runbook: str, host: str, plan: Plan, *, policy_only: bool = False) -> None:
    """Refuse (InputError, before any change) what :func:`blocked` refuses; with
    ``policy_only`` (the engine), only where the host's policy asks for an approval:
    without one, a saved plan's record is checked by whoever applies it (``rb.apply``,
    ``opsbook apply``), and the engine still applies it only while it is fresh."""
    if policy_only and not host_policy(host).needs_approval(runbook):
        return
    reason = blocked(runbook, host, plan)
    if reason:
        raise InputError(reason)
