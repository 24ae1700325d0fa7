"""The one apply (opslib.contract.transaction) on a toy runbook: a dict of settings it sets one by
one."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pytest

from opslib.contract import transaction
from opslib.contract.transaction import Procedure, Transaction
from opslib.core.actions import Action, Detail
from opslib.core.changes import Change, Check, Plan, watching_steps
from opslib.core.errors import ApplyError, HostError, OpsError


@dataclass(frozen=True)
class Want:
    settings: tuple[tuple[str, str], ...]


class Toy(Procedure[Want, dict[str, str], dict[str, str]]):
    """Sets each wanted key of the session (the "host") as one action."""

    name = "toy"
    inputs = Want

    def __init__(self, **actions: Any) -> None:
        self.extra = actions  # per-key Action fields (partial, commits, ...)
        self.fail_do: set[str] = set()
        self.fail_undo: set[str] = set()
        self.failing_check: set[str] = set()

    def observe(self, inputs: Want, session: dict[str, str]) -> dict[str, str]:
        return dict(session)

    def plan(self, inputs: Want, observed: dict[str, str], host: str) -> Plan:
        changes = tuple(
            Change(f"key:{k}", "set", f"{k}={v}", observed.get(k), v)
            for k, v in inputs.settings
            if observed.get(k) != v
        )
        return Plan(self.name, host, changes)

    def steps(self, tx: Transaction[Want, dict[str, str], dict[str, str]]) -> list[Action]:
        host = tx.session

        def action(key: str, value: str) -> Action:
            old = host.get(key)

            def do(detail: Detail) -> None:
                if key in self.fail_do:
                    if self.extra.get(key, {}).get("partial"):
                        host[key] = "half"
                    raise ApplyError(f"cannot set {key}")
                host[key] = value
                detail.append(f"{key}={value}")

            def undo(_detail: Detail) -> None:
                if key in self.fail_undo:
                    raise ApplyError(f"cannot put {key} back")
                if old is None:
                    host.pop(key, None)
                else:
                    host[key] = old

            def check() -> list[Check]:
                return [Check(key, "fail" if key in self.failing_check else "ok", host[key])]

            return Action(f"set {key}", do, undo, check=check, **self.extra.get(key, {}))

        return [action(c.target[4:], str(c.after)) for c in tx.plan.changes]


WANT = Want((("a", "1"), ("b", "2"), ("c", "3")))


def apply(toy: Toy, host: dict[str, str], reviewed: Plan | None = None) -> Any:
    return transaction.apply(toy, WANT, "h", reviewed=reviewed, session=host)


def test_apply_makes_the_plan_then_a_second_apply_is_unchanged() -> None:
    toy, host = Toy(), {"a": "0"}
    plan = transaction.plan(toy, WANT, "h", session=host)
    assert plan.inputs is WANT and host == {"a": "0"}  # planning changed nothing
    heard: list[str] = []
    with watching_steps(heard.append):
        result = apply(toy, host, plan)
    assert result.status == "changed" and result.changes == list(plan.changes)
    assert host == {"a": "1", "b": "2", "c": "3"}
    assert heard == ["set a", "set b", "set c"]
    assert [c.status for c in result.checks] == ["ok", "ok", "ok"]
    again = apply(toy, host, transaction.plan(toy, WANT, "h", session=host))
    assert again.status == "unchanged" and again.steps == []


def test_a_failed_step_undoes_the_done_ones_last_first() -> None:
    toy, host = Toy(), {"a": "0"}
    toy.fail_do = {"c"}
    result = apply(toy, host)
    assert result.status == "rolled back" and result.failed and result.changes == []
    assert host == {"a": "0"}
    assert [(s.name, s.ok) for s in result.steps] == [
        ("set a", True),
        ("set b", True),
        ("set c", False),
        ("undo: set b", True),
        ("undo: set a", True),
    ]
    assert result.summary == "cannot set c; rolled back (set b, set a)"


def test_a_failing_check_undoes_its_own_step_too() -> None:
    toy, host = Toy(), {}
    toy.failing_check = {"b"}
    result = apply(toy, host)
    assert result.status == "rolled back" and host == {}
    assert [s.name for s in result.steps][-2:] == ["undo: set b", "undo: set a"]
    assert [c.status for c in result.checks] == ["ok", "fail"]


def test_a_partial_step_is_undone_when_it_fails() -> None:
    toy, host = Toy(b={"partial": True}), {}
    toy.fail_do = {"b"}
    result = apply(toy, host)
    assert host == {} and [s.name for s in result.steps][-2:] == ["undo: set b", "undo: set a"]


def test_a_failed_undo_is_reported_and_the_other_undos_still_run() -> None:
    toy, host = Toy(), {}
    toy.fail_do, toy.fail_undo = {"c"}, {"b"}
    result = apply(toy, host)
    assert result.status == "failed" and host == {"b": "2"}
    assert result.summary == (
        "cannot set c; rolling back left: undo: set b failed: cannot put b back"
    )


def test_nothing_done_before_a_failure_is_failed_not_rolled_back() -> None:
    toy, host = Toy(), {}
    toy.fail_do = {"a"}
    result = apply(toy, host)
    assert result.status == "failed" and result.summary == "cannot set a" and host == {}


def test_past_a_point_of_no_return_nothing_is_undone() -> None:
    toy, host = Toy(b={"commits": True}), {}
    toy.fail_do = {"c"}
    result = apply(toy, host)
    assert result.status == "failed" and host == {"a": "1", "b": "2"}
    assert not any(s.name.startswith("undo") for s in result.steps)


def test_undo_order_runs_a_watchdog_first_and_a_restart_last() -> None:
    toy, host = Toy(a={"undo_order": 1}, b={"undo_order": -1}), {}
    toy.fail_do = {"c"}
    result = apply(toy, host)
    assert [s.name for s in result.steps][-2:] == ["undo: set b", "undo: set a"]
    toy = Toy(a={"undo_order": -1})
    toy.fail_do = {"c"}
    assert [s.name for s in apply(toy, {}).steps][-2:] == ["undo: set a", "undo: set b"]


def test_a_refusal_before_any_change_is_raised() -> None:
    toy, host = Toy(a={"refusals": (HostError,)}), {}

    def refuse(_detail: Detail) -> None:
        raise HostError("the kernel has no such thing")

    steps = toy.steps
    toy.steps = (
        lambda tx: [  # type: ignore[method-assign]
            Action("set a", refuse, refusals=(HostError,)),
            *steps(tx)[1:],
        ]
    )
    with pytest.raises(HostError, match="no such thing"):
        apply(toy, host)


def test_keep_is_called_once_all_passed() -> None:
    kept: list[str] = []
    toy, host = Toy(a={"keep": lambda: kept.append("a")}), {}
    apply(toy, host)
    assert kept == ["a"]
    toy.fail_do = {"c"}
    apply(toy, {})
    assert kept == ["a"]


def test_keep_is_called_as_a_point_of_no_return_starts() -> None:
    heard: list[str] = []
    toy = Toy(a={"keep": lambda: heard.append("kept a")}, c={"commits": True})
    steps = toy.steps

    def noting(tx: Transaction[Want, dict[str, str], dict[str, str]]) -> list[Action]:
        found = steps(tx)
        do = found[2].do
        return [*found[:2], dataclasses.replace(found[2], do=lambda d: (heard.append("c"), do(d)))]

    toy.steps = noting  # type: ignore[method-assign]
    toy.fail_do = {"c"}
    result = apply(toy, {})
    assert heard == ["kept a", "c"] and result.status == "failed"


def test_a_reviewed_plan_the_host_no_longer_matches_is_refused_before_any_step() -> None:
    toy, host = Toy(), {}
    plan = transaction.plan(toy, WANT, "h", session=host)
    host["b"] = "2"  # someone else set b meanwhile: two changes needed, three reviewed
    with pytest.raises(ApplyError, match="plan again"):
        apply(toy, host, plan)
    assert host == {"b": "2"}


def test_a_plan_of_another_runbook_is_refused() -> None:
    with pytest.raises(OpsError, match="this is a plan of other, not of toy"):
        transaction.inputs_of(Plan("other", "h"), Want, "toy")


def test_what_the_actions_share_with_finish_is_one_typed_object_per_kind() -> None:
    from opslib.core.changes import Result

    @dataclass
    class Made:
        names: list[str] = dataclasses.field(default_factory=list)

    tx: Transaction[None, None, None] = Transaction(
        None, None, Plan("x", "h"), None, Result("x", "h", "ok")
    )
    with pytest.raises(LookupError, match="no Made was shared"):
        tx.shared(Made)
    made = tx.share(Made())
    made.names.append("br0")
    assert tx.shared(Made) is made and tx.shared(Made).names == ["br0"]
    fresh = Made(["x"])
    assert tx.shared(Made, fresh) is made  # a default only where nothing was shared


def test_an_advisory_check_that_fails_is_reported_and_undoes_nothing() -> None:
    toy, host = Toy(b={"advisory": True}), {}
    toy.failing_check = {"b"}
    result = apply(toy, host)
    assert result.status == "changed" and result.failed  # by its check
    assert host == {"a": "1", "b": "2", "c": "3"}
    assert [c.status for c in result.checks] == ["ok", "fail", "ok"]


def test_a_failing_check_of_the_last_step_past_a_point_of_no_return_keeps_the_changes() -> None:
    toy, host = Toy(c={"commits": True}), {}
    toy.failing_check = {"c"}
    result = apply(toy, host)
    assert result.status == "failed" and host == {"a": "1", "b": "2", "c": "3"}
    assert [c.target for c in result.changes] == ["key:a", "key:b", "key:c"]
    assert not [s for s in result.steps if s.name.startswith("undo")]
