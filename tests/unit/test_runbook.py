"""The notebook API in-process: parameters into procedures, plan-only, failing results."""

from __future__ import annotations

from pathlib import Path

import pytest

from opslib.core.changes import Change, Check, Plan, Result
from opslib.core.errors import ApplyError, InputError, LockHeld
from opslib.core.locks import host_lock
from opslib.engine import runbook

CELL = """host = "lab"  # host: host
count = 2  # int: how many
apply = False  # bool: make the changes
"""


@pytest.fixture
def rb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> runbook.Runbook:
    monkeypatch.setenv("OPSBOOK_HEADLESS", "1")
    monkeypatch.setenv("OPSBOOK_RECORDS", str(tmp_path))
    monkeypatch.delenv("OPSBOOK_NOTEBOOK", raising=False)
    ns = {"In": ["", CELL, "rb = runbook.start(globals())"], "count": "3", "apply": True}
    return runbook.start(ns)


def plan_fn(*, host: str, count: int) -> Plan:
    return Plan("t", host, tuple(Change(f"x:{i}", "create", f"x{i}") for i in range(count)))


def test_start_reads_declarations_from_history_and_types_values(rb: runbook.Runbook) -> None:
    assert rb.values == {"host": "lab", "count": 3, "apply": True}


def test_start_headless_rejects_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSBOOK_HEADLESS", "1")
    monkeypatch.delenv("OPSBOOK_NOTEBOOK", raising=False)
    with pytest.raises(InputError, match="parameter count \\(int\\): 'many' is not an integer"):
        runbook.start({"In": [CELL], "count": "many"})


def test_plan_gets_only_the_parameters_its_signature_names(rb: runbook.Runbook) -> None:
    plan = rb.plan(plan_fn)
    assert plan is not None and len(plan.changes) == 3 and plan.host == "lab"


def test_procedure_needing_an_undeclared_parameter_says_what_to_add(rb: runbook.Runbook) -> None:
    def needs_vm(*, vm: str) -> Plan:
        raise AssertionError("not called")

    with pytest.raises(InputError, match="needs 'vm', which this notebook does not declare"):
        rb.plan(needs_vm)


def test_apply_passes_plan_and_kwargs_and_raises_when_failed(rb: runbook.Runbook) -> None:
    plan = rb.plan(plan_fn)
    assert plan is not None

    def good(plan: Plan, *, host: str) -> Result:
        return Result("t", host, "changed", changes=list(plan.changes))

    assert rb.apply(good, plan).changed  # type: ignore[union-attr]

    def rolled_back(plan: Plan, *, host: str) -> Result:
        return Result("t", host, "rolled back", summary="ping failed; restored")

    with pytest.raises(ApplyError, match=r"^notebook: rolled back: ping failed; restored$"):
        rb.apply(rolled_back, plan)


def test_plan_only_when_apply_is_false(rb: runbook.Runbook, capsys) -> None:  # type: ignore[no-untyped-def]
    rb.values["apply"] = False
    plan = rb.plan(plan_fn)

    def never(plan: Plan) -> Result:
        raise AssertionError("applied without apply = True")

    assert rb.apply(never, plan) is None
    assert "Plan only: apply is false" in capsys.readouterr().out


def test_a_failing_report_is_shown_and_raises_nothing(
    rb: runbook.Runbook, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(*, host: str) -> Result:
        return Result("t", host, "ok", checks=[Check("route", "fail", "no default route")])

    # nothing was applied: the runner files the failed result (exit 1), no ApplyError
    result = rb.report(run)
    assert result is not None and result.failed
    assert "no default route" in capsys.readouterr().out


def test_apply_waits_for_the_host_lock_then_names_the_holder(
    rb: runbook.Runbook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPSBOOK_LOCK_WAIT", "0.3")
    plan = rb.plan(plan_fn)
    assert plan is not None
    held = r"host lab: apply lock held by pid \d+ \(other-runbook"
    with host_lock(rb.records, "lab", "other-runbook"), pytest.raises(LockHeld, match=held):
        rb.apply(lambda plan, **kw: Result("t", "lab", "changed"), plan)


def test_interactive_form_validates_beside_fields_and_apply_files_a_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPSBOOK_HEADLESS", raising=False)
    monkeypatch.delenv("OPSBOOK_NOTEBOOK", raising=False)
    monkeypatch.setenv("OPSBOOK_RECORDS", str(tmp_path))
    ns: dict = {"In": [CELL]}
    rb = runbook.start(ns)
    form = rb.form
    count_field = form.box.children[2].children[0]
    count_field.value = "lots"
    assert "is not an integer" in form.messages["count"].value
    ns["plan"] = rb.plan(plan_fn)  # the cell `plan = rb.plan(plan_fn)`
    assert ns["plan"] is None  # no plan while a field is wrong

    applied: list[Plan] = []

    def apply_fn(plan: Plan, *, host: str) -> Result:
        applied.append(plan)
        return Result("t", host, "changed", summary="done", changes=list(plan.changes))

    rb.apply(apply_fn, ns["plan"])
    count_field.value = "4"
    assert ns["count"] == 4 and form.messages["count"].value.count("✗") == 0
    button = rb.apply_button
    assert button.disabled  # nothing planned for these values yet
    rb.plan_button.click()  # Plan binds the notebook's `plan` to the plan it shows
    plan = ns["plan"]
    assert len(plan.changes) == 4
    from opslib.records.store import Store

    # Apply is the apply cell's button; clicking it applies the shown plan and files it.
    assert not button.disabled
    button.click()
    assert applied == [plan] and button.disabled  # plan again before the next apply
    assert ns["plan"] is None
    (row,) = Store(tmp_path).list()
    assert (row.status, row.changed, row.mode) == ("ok", True, "interactive")


def test_apply_applies_the_notebooks_plan_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPSBOOK_HEADLESS", raising=False)
    monkeypatch.delenv("OPSBOOK_NOTEBOOK", raising=False)
    monkeypatch.setenv("OPSBOOK_RECORDS", str(tmp_path))
    ns: dict = {"In": [CELL]}
    rb = runbook.start(ns)
    ns["plan"] = rb.plan(plan_fn)  # the plan cell
    applied: list[Plan] = []

    def apply_fn(plan: Plan, *, host: str) -> Result:
        applied.append(plan)
        return Result("t", host, "changed", changes=list(plan.changes))

    rb.apply(apply_fn, ns["plan"])  # the apply cell
    # The operator makes the plan of their choice in a cell of their own: Apply applies it.
    ns["plan"] = mine = plan_fn(host="lab", count=1)
    rb.apply_button.click()
    assert applied == [mine]
    # A plan other than the notebook's `plan` would be ignored by Apply: refused, one line.
    with pytest.raises(InputError, match=r"applies the notebook's `plan` variable"):
        rb.apply(apply_fn, plan_fn(host="lab", count=2))


def test_the_form_has_no_apply_field_and_a_headless_run_still_takes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Interactively the Apply button applies; a ticked box would apply at "Run All Cells".
    monkeypatch.delenv("OPSBOOK_HEADLESS", raising=False)
    monkeypatch.delenv("OPSBOOK_NOTEBOOK", raising=False)
    monkeypatch.setenv("OPSBOOK_RECORDS", str(tmp_path))
    rb = runbook.start({"In": [CELL]})
    assert list(rb.form.messages) == ["host", "count"]
    monkeypatch.setenv("OPSBOOK_HEADLESS", "1")
    headless = runbook.start({"In": [CELL], "apply": "true"})
    assert headless.values["apply"] is True


def test_the_apply_panel_applies_what_it_is_given_and_nothing_else() -> None:
    from opslib.engine import ui

    shown = {"plan": plan_fn(host="lab", count=1)}
    calls: list[Plan] = []

    def apply(plan: Plan) -> tuple[Path, Exception | None]:
        calls.append(plan)
        shown["plan"] = None  # the host changed
        return Path("records/x.ipynb"), None

    button, _, _ = ui.apply_panel(lambda: shown["plan"], apply)
    assert not button.disabled
    planned = shown["plan"]
    button.click()
    assert calls == [planned] and button.disabled
    button.click()  # a click on a stale button applies nothing
    assert calls == [planned]


# -- interactive records: every apply filed, apply = True, no secret written -------------

DNS_CELL = """host = "lab"  # host: host
record_name = "vm1.example.org"  # str: the AAAA record
apply = False  # bool: make the changes
"""


def interactive_rb(
    monkeypatch: pytest.MonkeyPatch, store: Path, cell: str = CELL, name: str = ""
) -> runbook.Runbook:
    monkeypatch.delenv("OPSBOOK_HEADLESS", raising=False)
    monkeypatch.delenv("OPSBOOK_NOTEBOOK", raising=False)
    monkeypatch.delenv("OPSBOOK_DEFAULTS", raising=False)
    monkeypatch.setenv("OPSBOOK_RECORDS", str(store))
    if name:
        monkeypatch.setenv("OPSBOOK_RUNBOOK", name)
    else:
        monkeypatch.delenv("OPSBOOK_RUNBOOK", raising=False)
    return runbook.start({"In": [cell]})


@pytest.mark.parametrize(
    ("error", "summary"),
    [
        (InputError("vm 'vm9' is not defined; give one of: vm1, vm2"), None),
        (LockHeld("host lab: apply lock held by pid 1 (other)"), None),
        (KeyError("mac"), "KeyError: 'mac'"),  # a bug: its class says what happened
    ],
)
def test_interactive_apply_that_raises_files_a_failed_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception, summary: str | None
) -> None:
    from opslib.records.store import Store

    rb = interactive_rb(monkeypatch, tmp_path)
    rb.ns["plan"] = rb.plan(plan_fn)

    def apply_fn(plan: Plan, *, host: str) -> Result:
        raise error

    rb.apply(apply_fn, rb.ns["plan"])
    assert rb.ns["plan"] is not None and not rb.apply_button.disabled
    rb.apply_button.click()
    (row,) = Store(tmp_path).list()
    assert (row.status, row.exit_code, row.changed, row.mode) == ("failed", 1, False, "interactive")
    assert row.summary == (summary or str(error))
    assert row.parameters["apply"] is True
    results = [
        o["data"]["application/vnd.opsbook.result+json"]
        for c in Store(tmp_path).notebook(row)["cells"]
        for o in c["outputs"]
    ]
    assert [r["kind"] for r in results] == ["plan", "result"]
    assert (results[1]["status"], results[1]["summary"]) == ("failed", row.summary)
    assert rb.apply_button.disabled  # plan again before the next apply
    assert rb.ns["plan"] is None


def test_interactive_apply_is_filed_with_apply_true_and_host_health_sees_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opslib.procedures import host_health
    from opslib.records.store import Store

    rb = interactive_rb(monkeypatch, tmp_path, DNS_CELL, "cloudflare-aaaa")

    def dns_plan(*, host: str, record_name: str) -> Plan:
        return Plan("cloudflare-aaaa", host, (Change(f"dns:{record_name}", "create", "AAAA"),))

    def dns_apply(plan: Plan, *, host: str) -> Result:
        return Result("cloudflare-aaaa", host, "changed", changes=list(plan.changes))

    rb.ns["plan"] = rb.plan(dns_plan)
    rb.apply(dns_apply, rb.ns["plan"])
    assert rb.values["apply"] is False  # no apply field: the Apply button applies
    rb.apply_button.click()
    (row,) = Store(tmp_path).list()
    assert row.status == "ok" and row.parameters["apply"] is True
    nb = Store(tmp_path).notebook(row)
    assert "apply = True\n" in "".join(nb["cells"][0]["source"])  # the assignments cell
    managed = host_health.managed_dns_records(str(tmp_path), "lab")
    assert [p["record_name"] for p in managed] == ["vm1.example.org"]

    # A read-only run's "Save record" files the form's values as they are.
    rb.report(lambda *, host: Result("cloudflare-aaaa", host, "ok", summary="looked"))
    rb.save_button.click()
    report = Store(tmp_path).list()[0]
    assert report.summary == "looked" and report.parameters["apply"] is False


def test_secret_in_an_interactive_result_reaches_neither_the_record_nor_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opslib.core import secrets
    from opslib.records import notebook_json
    from opslib.records import store as records
    from opslib.records.store import Store

    secret = "s3cr3t-T0KEN-for-interactive-records"
    monkeypatch.setattr(secrets, "_loaded", set())  # this test's secrets only
    source = tmp_path / "token"
    source.write_text(secret + "\n")
    source.chmod(0o600)
    assert secrets.load(f"file:{source}") == secret
    store = tmp_path / "records"
    rb = interactive_rb(monkeypatch, store)
    plan = plan_fn(host="lab", count=1)
    result = Result("t", "lab", "changed", summary=f"token {secret} accepted")
    path = rb.save_interactive_record(plan, result, started="2024-01-01T00:00:00Z", ended="x")

    files = [p for p in store.rglob("*") if p.is_file()]
    assert path in files and store / "index.sqlite" in files
    for f in files:  # the record, the sqlite index (free pages too), anything else
        assert secret.encode() not in f.read_bytes(), f
    assert secrets.REDACTED.encode() in path.read_bytes()
    (row,) = Store(store).list()
    assert (row.status, row.exit_code) == ("leaked-secret", 1)
    assert row.summary == notebook_json.LEAKED_SUMMARY
    header = Store(store).notebook(row)["metadata"]["opsbook"]
    assert (header["status"], header["summary"]) == ("leaked-secret", notebook_json.LEAKED_SUMMARY)
    assert row.sha256 == records.sha256_of(path)


T0 = "2024-05-01T10:00:00Z"
HERE_CELL = """host = ""  # host: the host name records are filed under ("" = this machine's name)
deadline = 60.0  # float[1..3600]: seconds until the bridge must work
uplink = "eth0"  # ifname: the bridge's port
"""


def test_the_form_checks_ranges_and_interface_names_and_files_under_this_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    from opslib.records.store import Store

    rb = interactive_rb(monkeypatch, tmp_path, HERE_CELL)
    deadline, uplink = (rb.form.box.children[i].children[0] for i in (2, 3))
    assert "float[1..3600]" in deadline.tooltip
    deadline.value = "-5"
    assert "-5 is out of range; give a value from 1 to 3600" in rb.form.messages["deadline"].value
    uplink.value = "eth0;reboot"
    assert "is not an interface name" in rb.form.messages["uplink"].value
    assert not rb.valid
    deadline.value, uplink.value = "90", "eno1"
    assert rb.valid and rb.values["deadline"] == 90.0
    assert rb.host == socket.gethostname()  # not "lab", not "local"
    rb.save_interactive_record(None, Result("t", rb.host, "ok"), started=T0, ended=T0)
    (row,) = Store(tmp_path).list()
    assert row.host == socket.gethostname() == row.parameters["host"]


def test_checks_show_a_fix_only_where_a_check_is_not_ok() -> None:
    from opslib.records import render

    registered = "is the host's MAC registered for DHCP (NetReg)?"
    result = Result(
        "t",
        "h",
        "ok",
        checks=[
            Check(registered, "ok", "52:54:00:0b:01:03 leased", "register the MAC in NetReg"),
            Check("autostart", "warn", "off", "virsh net-autostart nat-bridge"),
        ],
    ).to_json()
    lines = render.result_text(result).splitlines()
    assert lines[2].split() == ["NAME", "STATUS", "SEEN", "FIX"]
    assert lines[3].rstrip().endswith("ok      52:54:00:0b:01:03 leased")  # no fix beside ok
    assert lines[4].endswith("virsh net-autostart nat-bridge")
    assert "register the MAC" not in render.result_html(result)
    assert "virsh net-autostart nat-bridge" in render.result_html(result)
    only_ok = {**result, "checks": result["checks"][:1]}
    assert render.result_text(only_ok).splitlines()[2].split() == ["NAME", "STATUS", "SEEN"]
