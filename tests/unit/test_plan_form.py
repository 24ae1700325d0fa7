"""Saved plans in the kernel: the JupyterLab form (Save plan, Apply under a policy) and
the policy enforced by the apply itself, whoever calls it (no browser, no root).

The procedure writes a text into a file through the transaction engine, like the
fixture runbook of tests/integration/test_plans.py, so its plans carry a fingerprint of the file.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from opslib.contract import inputs, plan_records, transaction
from opslib.core.changes import Change, Plan
from opslib.core.errors import InputError
from opslib.engine import runbook
from opslib.records import clock, notebook_json, plan_index
from opslib.records import store as records

CELL = """host = "lab"  # host: host
path = "/nonexistent"  # str: the file it writes
text = "new"  # str: what it writes there
"""


@dataclass(frozen=True, kw_only=True)
class Inputs:
    path: str = inputs.param("str", "the file it writes", "/nonexistent")
    text: str = inputs.param("str", "what it writes there", "new")


@dataclass(frozen=True)
class Observed:
    file: str | None


class FileDemo(transaction.Procedure[Inputs, Observed, None]):
    name = "file-demo"
    inputs = Inputs

    def observe(self, i: Inputs, session: None) -> Observed:
        p = Path(i.path)
        return Observed(p.read_text() if p.exists() else None)

    def observed_parts(self, i: Inputs, observed: Observed) -> dict[str, Any]:
        return {f"file {i.path}": observed.file}

    def plan(self, i: Inputs, observed: Observed, host: str) -> Plan:
        if observed.file == i.text:
            return Plan(self.name, host)
        return Plan(
            self.name, host, (Change(f"file:{i.path}", "update", "write", observed.file, i.text),)
        )

    def steps(
        self, tx: transaction.Transaction[Inputs, Observed, None]
    ) -> list[transaction.Action]:
        p = Path(tx.inputs.path)
        return [transaction.Action(f"write {p}", lambda d: p.write_text(tx.inputs.text))]


plan_fn, apply_fn = inputs.verbs(FileDemo())


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("OPSBOOK_HEADLESS", raising=False)
    for name in ("OPSBOOK_NOTEBOOK", "OPSBOOK_DEFAULTS", "SUDO_USER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPSBOOK_RECORDS", str(tmp_path / "records"))
    monkeypatch.setenv("OPSBOOK_PARAMS_DIR", str(tmp_path / "parameters"))
    monkeypatch.setenv("OPSBOOK_RUNBOOK", "file-demo")
    (tmp_path / "f.txt").write_text("old\n")
    return tmp_path


def policy(site: Path, text: str) -> None:
    (site / "parameters" / "lab").mkdir(parents=True, exist_ok=True)
    (site / "parameters" / "lab" / "policy.yaml").write_text(text)


def form(site: Path) -> runbook.Runbook:
    ns: dict[str, Any] = {"In": [CELL], "path": str(site / "f.txt")}
    rb = runbook.start(ns)
    ns["plan"] = rb.plan(plan_fn)  # the cell `plan = rb.plan(plan_fn)`
    rb.apply(apply_fn, ns["plan"])  # the cell `rb.apply(apply_fn, plan)`
    return rb


def plans(site: Path) -> list[plan_index.PlanRow]:
    return records.saved_plans(records.Store(site / "records"))


def test_under_a_policy_the_form_applies_only_a_saved_plan_another_person_approved(
    site: Path,
) -> None:
    policy(site, "approval: [file-demo]\n")
    rb = form(site)
    apply, save = rb.apply_button, rb.save_plan_button
    assert apply.disabled and save.description == "Save plan" and not save.disabled
    assert "file-demo on lab applies only a saved plan another person approved" in apply.tooltip
    assert "Save plan" in apply.tooltip and "opsbook approve ID" in apply.tooltip
    apply.click()  # disabled: a click (or a stale page) does nothing
    assert (site / "f.txt").read_text() == "old\n" and not plans(site)

    save.click()  # files the plan record; the notebook's plan is now that plan
    assert rb.ns["plan"].saved == "plan #1" and save.description == "Check approval"
    (row,) = plans(site)
    assert (row.id, row.state, row.needs_approval) == (1, "pending", True)
    assert apply.disabled and "plan #1 is not approved" in apply.tooltip
    assert "opsbook approve 1" in apply.tooltip

    store = records.Store(site / "records")
    saved = plan_records.load(store, "1")
    now = clock.iso(clock.utcnow())
    plan_records.approve(store, saved, by="bob-the-reviewer", comment="", now=now)
    save.click()  # Check approval
    assert not apply.disabled, apply.tooltip
    apply.click()
    assert (site / "f.txt").read_text() == "new"
    (row,) = plans(site)
    assert row.state == "applied" and row.applied is not None
    apply_row = store.get(row.applied["id"])
    assert (apply_row.mode, apply_row.status) == ("interactive", "ok")
    header = notebook_json.header_of(store.notebook(apply_row)) or {}
    assert header["applies_plan"]["id"] == 1 and rb.ns["plan"] is None


def test_a_saved_plan_from_the_form_is_refused_as_stale_when_the_file_moved(site: Path) -> None:
    rb = form(site)  # no policy: Apply works unsaved, and a saved plan applies exactly
    assert not rb.apply_button.disabled
    rb.save_plan_button.click()
    assert rb.ns["plan"].saved == "plan #1" and not rb.apply_button.disabled
    (site / "f.txt").write_text("moved by hand\n")
    rb.apply_button.click()
    assert (site / "f.txt").read_text() == "moved by hand\n"
    (row,) = plans(site)
    assert row.state == "stale" and "stale: file-demo's file " in row.refused[0]["reason"]


def test_the_apply_itself_refuses_what_the_policy_does_not_allow(site: Path) -> None:
    """A hand-edited notebook calls the procedure's apply directly: same refusals."""
    policy(site, "approval: [file-demo]\n")
    f = str(site / "f.txt")
    plan = plan_fn(host="lab", path=f, text="new")
    with pytest.raises(InputError, match="applies only a saved plan another person approved"):
        apply_fn(plan)
    # A plan that claims to be a saved one: its record must exist and say the same.
    with pytest.raises(InputError, match="no record with id 7"):
        apply_fn(replace(plan, saved="plan #7"))
    rb = form(site)
    rb.save_plan_button.click()
    approved = plan_records.load(records.Store(site / "records"), "1")
    now = clock.iso(clock.utcnow())
    plan_records.approve(records.Store(site / "records"), approved, by="bob", comment="", now=now)
    other = replace(plan_fn(host="lab", path=f, text="other"), saved="plan #1")
    with pytest.raises(InputError, match="the plan in hand is not what plan #1 says"):
        apply_fn(other)
    assert (site / "f.txt").read_text() == "old\n"
    result = apply_fn(rb.ns["plan"])  # the approved plan itself: applied
    assert result.status == "changed" and (site / "f.txt").read_text() == "new"


def test_the_policy_beside_the_sessions_parameter_sets_counts_too(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    defaults = site / "lab-parameters"
    defaults.mkdir()
    (defaults / "policy.yaml").write_text("approval: [file-demo]\n")
    monkeypatch.setenv("OPSBOOK_DEFAULTS", str(defaults))
    rb = form(site)
    assert rb.apply_button.disabled and str(defaults / "policy.yaml") in rb.apply_button.tooltip
