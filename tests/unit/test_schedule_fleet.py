"""A fleet run on a schedule (the workstation's timer): its units run `opsbook fleet run …
--summary`, a bad fleet entry is one line, and the OnFailure hook hands the operator's
command a summary naming the hosts that failed or were unreachable. No hosts: Ansible's run
is replaced by the events it would send (the fold, records and manifest code is the real one).
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
from support import REPO

from opslib.cli import main
from opslib.core.errors import InputError
from opslib.engine import metrics
from opslib.fleet import outcome, playbooks
from opslib.schedule import units as schedule

ROOT = REPO
UNIT = "opsbook-ws-fleet-host-health"

INVENTORY = """\
daemon_hosts:
  hosts:
    fl1:
    fl2:
    fl3:
  vars:
    opsbook_parameter_sets: "{sets}"
"""

FLEET = """host: ws
on_failure: "cat > {hook}"
runs:
  - runbook: host-health
    fleet: {{inventory: ../../inventory.yml, limit: daemon_hosts, forks: 3}}
    when: hourly
"""


@pytest.fixture
def params(tmp_path: Path) -> Path:
    """tmp_path/parameters/ws/schedule.yaml with one fleet run on tmp_path/inventory.yml."""
    sets = tmp_path / "parameters"
    (sets / "ws").mkdir(parents=True)
    (tmp_path / "inventory.yml").write_text(INVENTORY.format(sets=sets))
    (sets / "ws" / "schedule.yaml").write_text(FLEET.format(hook=tmp_path / "hook.txt"))
    return sets


def _exec_start(unit: str) -> list[str]:
    (line,) = [ln for ln in unit.splitlines() if ln.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def test_a_fleet_entry_renders_a_timer_that_runs_fleet_run_with_summary(
    params: Path, tmp_path: Path
) -> None:
    sch = schedule.load(params, "ws", notebooks=ROOT / "notebooks")
    units = schedule.render_units(sch, opsbook="/opt/opsbook", workdir=ROOT)
    assert sorted(units) == ["opsbook-onfailure@.service", f"{UNIT}.service", f"{UNIT}.timer"]
    service = units[f"{UNIT}.service"]
    assert _exec_start(service) == [
        "/opt/opsbook", "fleet", "run", "host-health", "-i", str(tmp_path / "inventory.yml"),
        "--limit", "daemon_hosts", "--forks", "3", "--summary",
    ]  # fmt: skip
    assert "OnFailure=opsbook-onfailure@%n.service" in service
    assert "Description=opsbook fleet run host-health on daemon_hosts of inventory.yml" in service
    assert "OnCalendar=hourly" in units[f"{UNIT}.timer"]
    (cron,) = schedule.crontab_lines(sch, opsbook="/opt/opsbook", workdir=ROOT)
    assert f"--summary || /opt/opsbook schedule notify {UNIT}" in cron


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_fleet_units_pass_systemd_analyze_verify_beside_a_single_host_run(
    params: Path, tmp_path: Path
) -> None:
    (params / "ws" / "host-health.yaml").write_text("libvirt_uri: test:///default\n")
    body = (params / "ws" / "schedule.yaml").read_text()
    body += "  - runbook: host-health\n    parameters: host-health.yaml\n    when: daily\n"
    (params / "ws" / "schedule.yaml").write_text(body)
    sch = schedule.load(params, "ws")
    units = tmp_path / "units"
    result = schedule.install(sch, units, opsbook=schedule.opsbook_executable(), workdir=ROOT)
    assert result.status == "changed" and result.steps[-1].detail == "clean", result.summary
    assert {p.name for p in units.iterdir()} >= {
        f"{UNIT}.timer", "opsbook-ws-host-health.timer",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("fleet", "says"),
    [
        ("inventory.yml", "'fleet' must be a mapping, e.g. fleet: {inventory: PATH"),
        ("{limit: all}", "fleet needs 'inventory'"),
        ("{inventory: ../../nope.yml}", "nope.yml does not exist (relative to the schedule"),
        ("{inventory: ../../inventory.yml, hosts: all}", "fleet has no 'hosts'; its keys:"),
        ("{inventory: ../../inventory.yml, forks: 0}", "fleet forks must be a whole number"),
        ("{inventory: ../../inventory.yml, forks: ten}", "got 'ten'"),
        ("{inventory: ../../inventory.yml, limit: [a, b]}", "fleet limit must be an Ansible"),
    ],
)
def test_a_bad_fleet_entry_is_one_line(params: Path, fleet: str, says: str) -> None:
    path = params / "ws" / "schedule.yaml"
    body = path.read_text().replace(
        "{inventory: ../../inventory.yml, limit: daemon_hosts, forks: 3}", fleet
    )
    path.write_text(body)
    with pytest.raises(InputError) as err:
        schedule.load(params, "ws")
    assert says in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert str(err.value).startswith(f"schedule: {path} run 1: ")


def test_a_fleet_entry_with_a_parameter_set_or_twice_the_same_is_refused(params: Path) -> None:
    path = params / "ws" / "schedule.yaml"
    good = path.read_text()
    path.write_text(good + "    parameters: host-health.yaml\n")
    with pytest.raises(
        InputError, match=r"a fleet run has no 'parameters'.*opsbook_parameter_sets"
    ):
        schedule.load(params, "ws")
    second = good.split("runs:\n")[1].replace("hourly", "daily")
    path.write_text(good + second)
    with pytest.raises(
        InputError, match=f"run 2: host-health is scheduled twice \\(unit {UNIT}\\)"
    ):
        schedule.load(params, "ws")


def test_the_summary_names_the_hosts_not_ok_from_a_manifest(tmp_path: Path) -> None:
    manifest = {
        "id": "20261129T030000Z-ab12",
        "runbook": "host-health",
        "inventory": str(tmp_path / "inventory.yml"),
        "hosts": {
            "fl1": {"host": "fl1", "status": "ok", "summary": "all checks passed"},
            "fl2": {"host": "fl2", "status": "unreachable", "summary": "bring it back…"},
            "fl3": {"host": "fl3", "status": "failed", "summary": "1 failed: network br0 down"},
        },
    }
    folder = tmp_path / "records" / outcome.MANIFESTS
    folder.mkdir(parents=True)
    (folder / "20261129T030000Z-ab12.json").write_text(json.dumps(manifest))
    found = outcome.latest_manifest(tmp_path / "records", "host-health", tmp_path / "inventory.yml")
    assert found is not None
    assert outcome.summary_line("host-health", found["hosts"].values()) == (
        "host-health on 3 hosts: 1 ok, 1 failed (fl3: 1 failed: network br0 down), "
        "1 unreachable (fl2)"
    )
    assert outcome.latest_manifest(tmp_path / "records", "network-inventory", tmp_path) is None


def _event(kind: str, host: str, task: str, **res: object) -> dict[str, object]:
    return {"event": kind, "event_data": {"host": host, "task": task, "res": res}}


@pytest.fixture
def ansible_says(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ansible's run replaced by its events: fl1 ok, fl2 unreachable, fl3's runbook failed."""

    events = [
        _event("runner_on_ok", "fl1", outcome.T_RUN, rc=0, stdout="ok: all checks passed"),
        _event("runner_on_unreachable", "fl2", "Gathering", msg="ssh: connect: timed out"),
        _event("runner_on_ok", "fl3", outcome.T_RUN, rc=1, stderr="failed: br0 is down"),
    ]

    class Started:  # playbooks.Started: the play runs once its gate opens
        def __init__(self, on_event: Any) -> None:
            self.on_event = on_event

        def open(self, hosts: list[str]) -> None:
            for event in events:
                self.on_event(event)

        def wait(self) -> playbooks.RunResult:
            return playbooks.RunResult(2, "failed", events, None)

    def start(book: Path, inventory: Path, **kw: Any) -> Started:
        return Started(kw["on_event"])

    monkeypatch.setattr(playbooks, "start", start)


def test_a_failed_scheduled_fleet_run_hands_the_failing_hosts_to_on_failure(
    params: Path,
    tmp_path: Path,
    ansible_says: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sch = schedule.load(params, "ws")
    units = schedule.render_units(sch, opsbook="opsbook", workdir=ROOT)
    argv = _exec_start(units[f"{UNIT}.service"])[1:]  # what the timer runs
    records = ["--records", str(tmp_path / "records")]
    assert main.main([*argv, *records]) == 1  # not 0: systemd starts the OnFailure unit
    out, err = capsys.readouterr()
    assert err == "" and out.count("\n") == 1, out + err  # one line in the journal
    assert out.startswith(
        "host-health on 3 hosts: 1 ok, 1 failed (fl3: failed: br0 is down), 1 unreachable (fl2); "
        "fleet run "
    ), out

    notify = ["schedule", "notify", f"{UNIT}.service", "--params-dir", str(params), *records]
    assert main.main(notify) == 0
    hook = (tmp_path / "hook.txt").read_text().splitlines()
    assert hook[0] == (
        "opsbook: fleet run of host-health from ws: host-health on 3 hosts: 1 ok, "
        "1 failed (fl3: failed: br0 is down), 1 unreachable (fl2)"
    )
    assert hook[1].startswith("fleet run ") and "opsbook records --fleet-run " in hook[1]
    assert hook[2].startswith("  fl2: unreachable: bring it back") and hook[2].endswith(
        "(no record)"
    )
    assert hook[3] == "  fl3: failed: failed: br0 is down (no record)"
    assert capsys.readouterr().out == hook[0] + "\n"

    listing = ["schedule", "list", "--host", "ws", "--params-dir", str(params), *records]
    assert main.main(listing) == 0
    assert f"{UNIT}.timer" in (out := capsys.readouterr().out) and "failed: fl2 fl3" in out, out


def test_on_failure_before_any_fleet_run_says_so(params: Path, tmp_path: Path) -> None:
    records = ["--records", str(tmp_path / "records")]
    notify = ["schedule", "notify", UNIT, "--params-dir", str(params), *records]
    assert main.main(notify) == 0
    assert (tmp_path / "hook.txt").read_text() == (
        "opsbook: fleet run of host-health from ws failed before leaving a fleet run manifest "
        f"in {tmp_path / 'records'}; see journalctl -u {UNIT}.service\n"
    )


def test_on_failure_after_a_run_that_left_no_manifest_does_not_report_an_old_one(
    params: Path, tmp_path: Path
) -> None:
    """A scheduled fleet run that failed on bad input (exit 2) writes no manifest: the hook
    must not hand on the last one, whose hosts were all ok, as if it were this failure."""
    ok = {"fl1": {"host": "fl1", "status": "ok", "summary": "all checks passed"}}
    inventory = str(tmp_path / "inventory.yml")
    old: dict[str, object] = {"id": "20261129T020000Z-0001", "runbook": "host-health"}
    old["inventory"] = inventory
    old["hosts"] = ok
    folder = tmp_path / "records" / outcome.MANIFESTS
    folder.mkdir(parents=True)
    (folder / f"{old['id']}.json").write_text(json.dumps(old))
    notify = ["schedule", "notify", UNIT, "--params-dir", str(params)]
    assert main.main([*notify, "--records", str(tmp_path / "records")]) == 0
    assert (tmp_path / "hook.txt").read_text() == (
        "opsbook: fleet run of host-health from ws failed before any host ran (the newest "
        f"fleet run, {old['id']}, had every host ok); see journalctl -u {UNIT}.service\n"
    )


def test_a_scheduled_fleet_run_writes_each_hosts_metrics(
    params: Path, tmp_path: Path, ansible_says: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """The fleet timer's run leaves one textfile per host, with the series and labels
    (host, runbook) a single host's scheduled run writes, so monitoring/opsbook-rules.yml's
    alerts (a failed check, no recent success, no recent run) apply to each host."""
    prom = tmp_path / "node-exporter"
    prom.mkdir()  # as node_exporter's package makes it
    path = params / "ws" / "schedule.yaml"
    path.write_text(path.read_text() + f"    metrics_dir: {prom}\n")
    sch = schedule.load(params, "ws")
    units = schedule.render_units(sch, opsbook="opsbook", workdir=ROOT)
    argv = _exec_start(units[f"{UNIT}.service"])[1:]
    assert argv[-4:] == ["--metrics-dir", str(prom), "--period", "3600"], argv
    assert main.main([*argv, "--records", str(tmp_path / "records")]) == 1
    capsys.readouterr()
    assert sorted(p.name for p in prom.iterdir()) == [
        f"opsbook-{h}@host-health.prom" for h in ("fl1", "fl2", "fl3")
    ]
    for host, success in (("fl1", 1.0), ("fl2", 0.0), ("fl3", 0.0)):
        found = {
            name: value
            for name, labels, value in metrics.parse(
                (prom / f"opsbook-{host}@host-health.prom").read_text()
            )
            if labels == {"host": host, "runbook": "host-health"}
        }
        assert found["opsbook_run_success"] == success, (host, found)
        assert found["opsbook_run_period_seconds"] == 3600
        assert found["opsbook_run_last_run_timestamp_seconds"] > 0
        assert (found["opsbook_run_last_success_timestamp_seconds"] > 0) == bool(success)
