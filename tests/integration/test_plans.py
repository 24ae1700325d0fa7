"""Saved plans end to end: `opsbook plan | approve | apply` on real kernels (no root).

The fixture runbook tests/plan_notebooks/file-demo writes a text into a file through
the transaction engine, so its plans carry a fingerprint of the file as observed. Who
plans and who approves is the login account (LOGNAME here; SUDO_USER under sudo).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import PLAN_NOTEBOOKS, eventually

from opslib.contract import policy
from opslib.core.changes import Change, Plan, ensure_fresh
from opslib.core.errors import InputError, StalePlan

NOTEBOOKS = PLAN_NOTEBOOKS


@dataclass
class Done:
    rc: int
    out: str
    err: str


@dataclass
class Site:
    """A record store, a parameters directory and the file the fixture writes."""

    root: Path

    @property
    def store(self) -> Path:
        return self.root / "records"

    @property
    def file(self) -> Path:
        return self.root / "f.txt"

    def policy(self, text: str) -> None:
        (self.root / "parameters" / "testhost").mkdir(parents=True, exist_ok=True)
        (self.root / "parameters" / "testhost" / "policy.yaml").write_text(text)

    def opsbook(self, *args: str, who: str = "alice") -> Done:
        env = {
            **os.environ,
            "OPSBOOK_NOTEBOOKS": str(NOTEBOOKS),
            "OPSBOOK_RECORDS": str(self.store),
            "LOGNAME": who,
            "USER": who,
        }
        env.pop("SUDO_USER", None)
        proc = subprocess.run(
            [sys.executable, "-m", "opslib.cli.main", *args],
            env=env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=600,
        )
        return Done(proc.returncode, proc.stdout, proc.stderr)

    def plan(self, text: str = "new\n", who: str = "alice") -> Done:
        done = self.opsbook("plan", "file-demo", "-q", "-p", "path", str(self.file),
                            "-p", "text", text, who=who)  # fmt: skip
        assert done.rc == 0, done.err
        return done

    def header(self, run_id: int) -> dict:
        from opslib.records.store import Store

        store = Store(self.store)
        return store.notebook(store.get(run_id))["metadata"]["opsbook"]

    def page(self, run_id: int) -> Path:
        from opslib.records.store import Store

        store = Store(self.store)
        return store.abspath(store.get(run_id)).with_suffix(".html")

    def runs(self) -> int:
        from opslib.records.store import Store

        return Store(self.store).count()


@pytest.fixture
def site(tmp_path: Path) -> Site:
    s = Site(tmp_path)
    s.file.write_text("old\n")
    return s


def test_a_plan_is_filed_then_applied_exactly_and_the_two_records_link_both_ways(
    site: Site,
) -> None:
    done = site.plan()
    assert "plan #1 filed by alice: 1 change, digest " in done.out
    assert "apply exactly this plan: opsbook apply 1" in done.out
    assert site.file.read_text() == "old\n"  # planning changed nothing
    listing = site.opsbook("records").out
    assert "plan pending" in listing
    header = site.header(1)
    assert header["mode"] == "plan" and header["plan"]["planned_by"] == "alice"
    assert len(header["plan"]["digest"]) == 64 and header["plan"]["expires"] > header["start"]

    applied = site.opsbook("apply", "1", "-q")
    assert applied.rc == 0, applied.err
    assert "ok (changed): write" in applied.out
    assert site.file.read_text() == "new\n"
    assert site.header(2)["applies_plan"]["id"] == 1 and site.header(2)["mode"] == "apply"
    assert site.header(1)["applied"]["id"] == 2
    plans = site.opsbook("records", "--plans").out
    assert "applied" in plans and "#2" in plans, plans
    assert "plan #1: write" in site.opsbook("records").out  # the apply names its plan

    again = site.opsbook("apply", "1")
    assert again.rc == 2 and site.runs() == 2, again.err
    assert again.err.strip() == (
        "opsbook: plan #1 was applied already (record #2); plan again for another apply"
    )
    assert site.opsbook("records", "html").rc == 0
    plans_page = (site.store / "plans.html").read_text()
    plan_page, apply_page = (site.page(n) for n in (1, 2))
    assert re.search(r'<td><a href="[^"]*">#1</a></td>.*applied by <a href="testhost/'
                     r'[^"]*' + re.escape(apply_page.name), plans_page), plans_page  # fmt: skip
    plan_html = plan_page.read_text()
    assert '<h2 id="saved-plan">Saved plan</h2>' in plan_html and "alice" in plan_html
    assert "This run applied plan <a" in apply_page.read_text()
    assert 'href="plans.html">Saved plans</a>' in (site.store / "index.html").read_text()
    diff = site.opsbook("records", "diff", "1", "2")
    assert "~ parameter apply: false -> true" in diff.out, diff.out
    assert "= #2 applied plan #1: exactly the 1 planned change(s)" in diff.out, diff.out
    assert "~ change " not in diff.out and "+ change " not in diff.out


def test_a_host_changed_by_hand_since_the_plan_is_refused_as_stale_and_nothing_changes(
    site: Site,
) -> None:
    site.plan()
    site.file.write_text("edited by hand\n")
    done = site.opsbook("apply", "1", "-q")
    assert done.rc == 1, done.out + done.err
    line = done.err.strip().splitlines()[-1]
    assert line.startswith(f"failed: stale: file-demo's file {site.file} changed since plan #1 ")
    assert line.endswith("; plan again") and "sha256 " in line
    assert site.file.read_text() == "edited by hand\n"
    assert site.header(2)["status"] == "failed" and site.header(2)["changed"] is not True
    assert site.header(1)["refused"][0]["id"] == 2
    assert "plan stale" in site.opsbook("records").out


def test_an_edited_plan_record_is_refused_also_after_a_reindex(site: Site) -> None:
    site.plan()
    record = next(site.store.rglob("*-file-demo.ipynb"))
    nb = json.loads(record.read_text())
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            plan = out.get("data", {}).get("application/vnd.opsbook.result+json")
            if plan:
                plan["changes"][0]["after"] = "something else\n"
    record.write_text(json.dumps(nb))
    done = site.opsbook("apply", "1")
    assert done.rc == 2 and site.runs() == 1
    assert "plan #1's file was edited after it was filed (sha256 " in done.err
    assert site.opsbook("records", "reindex").rc == 0  # the index now has the file's sha256
    done = site.opsbook("apply", "1")
    assert done.rc == 2 and "plan #1 was edited: what it says has digest " in done.err
    assert site.file.read_text() == "old\n"


def test_an_expired_plan_is_refused(site: Site) -> None:
    site.policy("plan_expiry: 1s\n")
    site.plan()
    expires = site.header(1)["plan"]["expires"]
    eventually(
        lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) > expires,
        every=0.2,
        what=f"the plan's expiry {expires} to pass",
    )
    done = site.opsbook("apply", "1")
    assert done.rc == 2 and done.err.strip() == f"opsbook: plan #1 expired at {expires}; plan again"
    assert "plan expired" in site.opsbook("records").out
    assert site.file.read_text() == "old\n" and site.runs() == 1


def test_a_policy_asks_another_persons_approval_and_refuses_a_bypass(site: Site) -> None:
    site.policy("approval: [file-demo]\n")
    bypass = site.opsbook("run", "file-demo", "-p", "path", str(site.file), "-p", "apply", "true")
    assert bypass.rc == 2 and site.runs() == 0, bypass.err
    assert "file-demo on testhost applies only an approved plan (parameters/testhost" in bypass.err
    assert "`opsbook plan file-demo --host testhost`" in bypass.err
    assert "another person reviews and approves it: opsbook approve 1" in site.plan().out
    site.plan()
    # the second plan supersedes the first: the first can no longer be approved
    stale = site.opsbook("approve", "1", who="bob")
    assert stale.rc == 2 and "plan #1 is superseded by plan #2" in stale.err
    unapproved = site.opsbook("apply", "2")
    assert unapproved.rc == 2 and "plan #2 is not approved" in unapproved.err
    assert "opsbook approve 2" in unapproved.err
    self_approval = site.opsbook("approve", "2")
    assert self_approval.rc == 2
    assert "plan #2 was planned by alice; another person" in self_approval.err
    ok = site.opsbook("approve", "2", "--comment", "diff looks right", who="bob")
    assert ok.rc == 0 and "approved by bob" in ok.out, ok.err
    approval = site.header(2)["approvals"][0]
    assert approval["by"] == "bob" and approval["comment"] == "diff looks right"
    assert approval["digest"] == site.header(2)["plan"]["digest"]
    assert " approved " in site.opsbook("records", "--plans", "approved").out
    applied = site.opsbook("apply", "2", "-q")
    assert applied.rc == 0, applied.err
    assert site.file.read_text() == "new\n"


def test_plan_takes_no_apply_parameter(site: Site) -> None:
    done = site.opsbook("plan", "file-demo", "-p", "apply", "true")
    assert done.rc == 2 and site.runs() == 0
    assert "opsbook plan makes no change: drop -p apply" in done.err


def test_a_record_that_is_no_plan_is_refused(site: Site) -> None:
    done = site.opsbook("run", "file-demo", "-q", "-p", "path", str(site.file))
    assert done.rc == 0, done.err
    refused = site.opsbook("apply", "1")
    assert refused.rc == 2
    assert "record #1 is not a saved plan (a headless run of file-demo)" in refused.err


# -- no kernel ---------------------------------------------------------------------------


def test_policy_files_merge_and_refuse_what_they_cannot_mean(tmp_path: Path) -> None:
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "policy.yaml").write_text("approval: [forward-bridge]\nplan_expiry: 12h\n")
    beside = tmp_path / "sets" / "forward-bridge.yaml"
    beside.parent.mkdir()
    (beside.parent / "policy.yaml").write_text("approval: nat-bridge-ipv6\nplan_expiry: 90m\n")
    found = policy.find("h", tmp_path, [beside])
    assert found.approval == {"forward-bridge", "nat-bridge-ipv6"} and found.expiry == 5400
    assert policy.find("other", tmp_path) == policy.Policy()  # no file: as before
    for text, problem in (
        ("approve: [x]\n", "unknown key 'approve'"),
        ("plan_expiry: soon\n", "plan_expiry 'soon': give a time span"),
        ("approval: {a: b}\n", "approval is a list of runbook names"),
    ):
        (tmp_path / "h" / "policy.yaml").write_text(text)
        with pytest.raises(InputError, match=problem):
            policy.find("h", tmp_path)


def test_a_saved_plan_names_the_part_of_the_host_that_moved() -> None:
    change = Change("file:/etc/x", "update", "write", "a", "b")
    saved = Plan("r", "h", (change,), fingerprint={"file /etc/x": "1" * 64}, saved="plan #3")
    fresh = Plan("r", "h", (change,), fingerprint={"file /etc/x": "2" * 64})
    with pytest.raises(StalePlan) as exc:
        ensure_fresh(saved, fresh)
    assert str(exc.value) == (
        "stale: r's file /etc/x changed since plan #3 "
        "(sha256 111111111111 then, 222222222222 now); plan again"
    )
    other = Plan("r", "h", (Change("file:/etc/x", "update", "write", "a", "c"),),
                 fingerprint=dict(saved.fingerprint))  # fmt: skip
    with pytest.raises(StalePlan, match=r"would now make other changes than plan #3"):
        ensure_fresh(saved, other)
    ensure_fresh(saved, Plan("r", "h", (change,), fingerprint=dict(saved.fingerprint)))
