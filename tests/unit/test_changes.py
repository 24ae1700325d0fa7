"""The change contract: diffs, outcomes, steps, and results that survive a record."""

from __future__ import annotations

import json

import pytest

from opslib.core.changes import Change, Check, Plan, Result
from opslib.records import render


def test_change_diff_is_a_unified_diff_of_the_file() -> None:
    change = Change("file:/etc/network/interfaces", "update", "br0", "a\nb\n", "a\nc\n")
    assert change.diff.splitlines() == [
        "--- a/etc/network/interfaces",
        "+++ b/etc/network/interfaces",
        "@@ -1,2 +1,2 @@",
        " a",
        "-b",
        "+c",
    ]
    created = Change("file:/x", "create", "new", None, "x\n")
    assert created.diff.startswith("--- /dev/null\n+++ b/x\n")


def test_empty_plan_means_nothing_to_do() -> None:
    assert Plan("r", "h").empty
    assert not Plan("r", "h", (Change("network:x", "start", "start x"),)).empty


def test_a_failing_check_fails_an_otherwise_ok_result() -> None:
    result = Result("r", "h", "ok", checks=[Check("a", "warn", ""), Check("b", "fail", "")])
    assert result.failed and not result.changed
    assert not Result("r", "h", "changed", checks=[Check("a", "warn", "")]).failed
    assert Result("r", "h", "rolled back").failed


def test_a_step_that_raises_is_recorded_as_failed_with_its_time() -> None:
    result = Result("r", "h", "ok")
    with result.step("write file") as detail:
        detail.append("wrote 3 lines")
    with pytest.raises(RuntimeError), result.step("restart"):
        raise RuntimeError("boom")
    assert [(s.name, s.ok, s.detail) for s in result.steps] == [
        ("write file", True, "wrote 3 lines"),
        ("restart", False, ""),
    ]
    assert all(s.seconds >= 0 for s in result.steps)


def test_table_columns_keep_their_order_through_a_record() -> None:
    result = Result("find-vm-ip", "h", "ok")
    result.tables["addresses"] = [{"vm": "vm1", "mac": "52:54:00:00:00:01", "ip": "192.0.2.5"}]
    # Notebooks are written with sorted keys, as nbformat does.
    stored = json.loads(json.dumps(result.to_json(), sort_keys=True))
    header = render.result_text(stored).splitlines()[-2].split()
    assert header == ["VM", "MAC", "IP"]


def test_step_listeners_hear_each_step_start_while_watching() -> None:
    from opslib.core.changes import watching_steps

    heard: list[str] = []
    result = Result("r", "h", "ok")
    with watching_steps(heard.append):
        with result.step("back up"):
            pass
        with result.step("restart networking"):
            pass
    with result.step("after"):
        pass
    assert heard == ["back up", "restart networking"]


def test_apply_refuses_a_fresh_plan_that_differs_from_the_reviewed_one() -> None:
    from opslib.core.changes import ensure_unchanged
    from opslib.core.errors import ApplyError

    shown = Plan("r", "h", (Change("file:/x", "update", "x", "a\n", "b\n"),))
    same = Plan("r", "h", (Change("file:/x", "update", "x", "a\n", "b\n"),))
    moved = Plan("r", "h", (Change("file:/x", "update", "x", "a\n", "c\n"),))
    ensure_unchanged(shown, same)
    ensure_unchanged(shown, Plan("r", "h"))  # already done by someone else: nothing to do
    with pytest.raises(ApplyError, match="plan again"):
        ensure_unchanged(shown, moved)


def test_a_given_check_shows_its_fix_only_when_it_fails() -> None:
    from opslib.core.changes import Check

    assert Check.given("br0 up", True, "up", "ip link set br0 up") == Check("br0 up", "ok", "up")
    failed = Check.given("br0 up", False, "down", "ip link set br0 up")
    assert failed == Check("br0 up", "fail", "down", "ip link set br0 up") and not failed.ok
