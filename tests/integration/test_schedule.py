"""Scheduled runs become systemd units that systemd itself accepts."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO

from opslib.core.errors import InputError
from opslib.schedule import units as schedule

ROOT = REPO
needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed"
)


def _params(tmp_path: Path, body: str, host: str = "h1") -> Path:
    d = tmp_path / "parameters" / host
    d.mkdir(parents=True)
    (d / "host-health.yaml").write_text("libvirt_uri: test:///default\n")
    (d / "schedule.yaml").write_text(body)
    return tmp_path / "parameters"


GOOD = """host: h1
on_failure: "cat > /dev/null"
runs:
  - runbook: host-health
    parameters: host-health.yaml
    when: hourly
"""


@needs_systemd
def test_installed_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    sch = schedule.load(_params(tmp_path, GOOD), "h1")
    units = tmp_path / "units"
    result = schedule.install(sch, units, opsbook=schedule.opsbook_executable(), workdir=ROOT)
    assert result.status == "changed", result.summary
    names = sorted(p.name for p in units.iterdir())
    assert names == [
        "opsbook-h1-host-health.service",
        "opsbook-h1-host-health.timer",
        "opsbook-onfailure@.service",
    ]
    assert result.steps[-1].detail == "clean"
    service = (units / "opsbook-h1-host-health.service").read_text()
    assert "--host h1" in service and "OnFailure=opsbook-onfailure@%n.service" in service
    assert "OnCalendar=hourly" in (units / "opsbook-h1-host-health.timer").read_text()


@needs_systemd
def test_second_install_changes_nothing_and_remove_cleans_up(tmp_path: Path) -> None:
    sch = schedule.load(_params(tmp_path, GOOD), "h1")
    units = tmp_path / "units"
    kw = {"opsbook": schedule.opsbook_executable(), "workdir": ROOT}
    schedule.install(sch, units, **kw)
    again = schedule.install(sch, units, **kw)
    assert again.status == "unchanged" and again.changes == []
    (units / "unrelated.service").write_text("[Service]\nExecStart=/bin/true\n")
    removed = schedule.remove("h1", units)
    assert {c.target.rsplit("/", 1)[1] for c in removed.changes} == {
        "opsbook-h1-host-health.service",
        "opsbook-h1-host-health.timer",
    }
    assert (units / "unrelated.service").exists()


@needs_systemd
def test_verify_failure_is_reported_not_hidden(tmp_path: Path) -> None:
    sch = schedule.load(_params(tmp_path, GOOD), "h1")
    result = schedule.install(sch, tmp_path / "units", opsbook="/nonexistent/opsbook", workdir=ROOT)
    assert result.status == "failed"
    assert "not executable" in result.summary


@needs_systemd
def test_bad_calendar_expression_is_one_clear_line(tmp_path: Path) -> None:
    params = _params(tmp_path, GOOD.replace("hourly", "every tuesdayish"))
    with pytest.raises(InputError) as err:
        schedule.load(params, "h1")
    assert "not a systemd calendar expression" in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_parameter_set_is_named(tmp_path: Path) -> None:
    params = _params(tmp_path, GOOD.replace("host-health.yaml", "nope.yaml"))
    with pytest.raises(InputError, match=r"parameter set .*nope\.yaml does not exist"):
        schedule.load(params, "h1")


def test_missing_schedule_file_says_what_to_write(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no .*schedule\.yaml; write one"):
        schedule.load(tmp_path, "nowhere")


@pytest.mark.parametrize(
    ("expr", "cron"),
    [
        ("hourly", "0 * * * *"),
        ("daily", "0 0 * * *"),
        ("*:0/15", "*/15 * * * *"),
        ("*-*-* 03:30:00", "30 3 * * *"),
        ("*-*-* *:05:00", "5 * * * *"),
    ],
)
def test_calendar_to_cron(expr: str, cron: str) -> None:
    assert schedule.calendar_to_cron(expr) == cron


def test_calendar_cron_cannot_say_is_refused() -> None:
    with pytest.raises(InputError, match="cannot express"):
        schedule.calendar_to_cron("Mon..Fri *-*-* 08:00")


@needs_systemd
def test_crontab_lines_log_and_notify(tmp_path: Path) -> None:
    sch = schedule.load(_params(tmp_path, GOOD), "h1")
    (line,) = schedule.crontab_lines(sch, opsbook="/x/opsbook", workdir=ROOT)
    assert line.startswith("0 * * * * root (cd ")
    assert "|| /x/opsbook schedule notify opsbook-h1-host-health" in line
    assert line.endswith("2>&1 | logger -t opsbook")


def test_lab_schedule_file_is_valid() -> None:
    sch = schedule.load(ROOT / "parameters", "lab")
    assert [r.runbook for r in sch.runs] == ["host-health"]


@needs_systemd
def test_percent_and_dollar_in_paths_reach_the_command_unexpanded(tmp_path: Path) -> None:
    odd = tmp_path / "50%$HOME"
    odd.mkdir()
    sch = schedule.load(_params(odd, GOOD), "h1")
    units = tmp_path / "units"
    result = schedule.install(sch, units, opsbook=schedule.opsbook_executable(), workdir=ROOT)
    assert result.status == "changed", result.summary
    service = (units / "opsbook-h1-host-health.service").read_text()
    assert "50%%$$HOME" in service
    (line,) = schedule.crontab_lines(sch, opsbook="/x/opsbook", workdir=ROOT)
    assert "50\\%$HOME" in line


def test_scheduled_runs_print_one_summary_line(tmp_path: Path) -> None:
    sch = schedule.load(_params(tmp_path, GOOD), "h1")
    units = schedule.render_units(sch, opsbook="/opt/opsbook", workdir=ROOT)
    service = units["opsbook-h1-host-health.service"]
    assert "--host h1 --summary\n" in service  # not the result tables in the journal
    (cron,) = schedule.crontab_lines(sch, opsbook="/opt/opsbook", workdir=ROOT)
    assert "--host h1 --summary ||" in cron


# -- installing where systemd runs the timers (opsbook schedule install/remove) -----------


def _systemd_here(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> tuple[Path, list[tuple[str, ...]]]:
    """/etc/systemd/system is tmp_path/units and systemd is the init; systemctl is recorded."""
    from opslib.cli import schedule as schedule_cli

    units = tmp_path / "units"
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(schedule_cli, "DEFAULT_UNIT_DIR", units.resolve())
    monkeypatch.setattr(schedule_cli, "_systemd_is_init", lambda: True)
    monkeypatch.setattr(schedule_cli, "_systemctl", lambda *a, check=True: calls.append(a))
    return units, calls


@needs_systemd
def test_install_enables_the_timers_each_time_and_remove_disables_them_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from opslib.cli import main

    units, calls = _systemd_here(monkeypatch, tmp_path)
    params, work = _params(tmp_path, GOOD), tmp_path / "work"
    install = ["schedule", "install", "--host", "h1", "--params-dir", str(params),
               "--dir", str(units), "--workdir", str(work)]  # fmt: skip
    timer = "opsbook-h1-host-health.timer"
    assert main.main(install) == 0
    assert calls == [("daemon-reload",), ("enable", "--now", timer)]
    assert f"WorkingDirectory={work}\n" in (units / "opsbook-h1-host-health.service").read_text()
    assert work.is_dir()
    assert f"enabled {timer}; their runs file records in {work / 'records'}" in (
        capsys.readouterr().out
    )
    calls.clear()
    assert main.main(install) == 0  # unchanged files: the timer is enabled and started again
    assert calls == [("enable", "--now", timer)]
    calls.clear()
    (params / "h1" / "schedule.yaml").write_text(GOOD.replace("hourly", "daily"))
    assert main.main(install) == 0  # a new calendar: the running timer is restarted
    assert calls == [("daemon-reload",), ("enable", "--now", timer), ("restart", timer)]
    calls.clear()
    assert main.main(["schedule", "remove", "--host", "h1", "--dir", str(units)]) == 0
    assert calls[:2] == [("disable", "--now", timer), ("daemon-reload",)]
    assert calls[2][0] == "reset-failed"
    assert sorted(p.name for p in units.iterdir()) == ["opsbook-onfailure@.service"]


@needs_systemd
def test_a_timer_no_longer_scheduled_is_stopped_before_its_file_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opslib.cli import main

    units, calls = _systemd_here(monkeypatch, tmp_path)
    params = _params(tmp_path, GOOD)
    (params / "h1" / "network-inventory.yaml").write_text("libvirt_uri: test:///default\n")
    install = ["schedule", "install", "--host", "h1", "--params-dir", str(params),
               "--dir", str(units), "--workdir", str(tmp_path)]  # fmt: skip
    assert main.main(install) == 0
    (params / "h1" / "schedule.yaml").write_text(GOOD.replace("host-health", "network-inventory"))
    calls.clear()
    assert main.main(install) == 0
    assert calls[0] == ("disable", "--now", "opsbook-h1-host-health.timer")
    assert not (units / "opsbook-h1-host-health.timer").exists()
    assert ("enable", "--now", "opsbook-h1-network-inventory.timer") in calls


def test_an_installed_opsbook_runs_its_schedule_in_var_lib_with_its_packaged_runbooks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opslib.cli import schedule as schedule_cli

    site = tmp_path / "site-packages"  # no checkout around the package
    site.mkdir()
    monkeypatch.setattr(schedule_cli, "ROOT", site)
    monkeypatch.setenv("OPSBOOK_NOTEBOOKS", str(ROOT / "notebooks"))  # PREFIX/share/opsbook
    assert schedule_cli.default_workdir() == Path("/var/lib/opsbook")
    assert schedule_cli.default_params_dir() == Path("parameters")
    args = schedule_cli.argparse.Namespace(params_dir=str(_params(tmp_path, GOOD)), host="h1")
    assert schedule_cli._load(args).runs[0].runbook == "host-health"


# -- a scheduled run is filed under its parameter set's host --------------------------------

NOTEBOOKS = ROOT / "tests" / "notebooks"
DAEMON = """on_failure: "cat > {hook}"
runs:
  - runbook: engine-demo
    parameters: engine-demo.yaml
    when: hourly
    metrics_dir: {prom}
"""


def test_the_lab_schedule_runs_file_under_daemon1_the_host_its_set_names() -> None:
    sch = schedule.load(ROOT / "parameters", "lab")
    units = schedule.render_units(sch, opsbook="/usr/local/bin/opsbook", workdir=ROOT)
    service = units["opsbook-lab-host-health.service"]  # the schedule's name names the units
    (exec_start,) = [ln for ln in service.splitlines() if ln.startswith("ExecStart=")]
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    assert argv[argv.index("--host") + 1] == "daemon1", argv
    assert argv.count("--host") == 1
    assert "Description=opsbook runbook host-health on daemon1\n" in service
    (cron,) = schedule.crontab_lines(sch, opsbook="/usr/local/bin/opsbook", workdir=ROOT)
    assert "--host daemon1 --summary" in cron and "--host lab" not in cron


def test_a_set_with_a_host_that_is_no_host_name_is_refused(tmp_path: Path) -> None:
    params = _params(tmp_path, GOOD)
    (params / "h1" / "host-health.yaml").write_text("host: ../daemon1\n")
    with pytest.raises(InputError, match=r"host-health\.yaml: parameter host \(host\): '\.\./"):
        schedule.load(params, "h1")


def test_a_scheduled_run_files_its_record_and_alert_under_its_sets_host(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """parameters/lab/ on daemon1 says host: daemon1: the timer's run, its record, its
    metrics, `schedule list` and the failure alert all say daemon1, not lab."""
    from opslib.cli import main
    from opslib.records.store import Store

    prom, records = tmp_path / "prom", tmp_path / "records"
    prom.mkdir()
    params = tmp_path / "parameters"
    (params / "lab").mkdir(parents=True)
    (params / "lab" / "engine-demo.yaml").write_text("host: daemon1\ncount: 1\n")
    hook = tmp_path / "hook.txt"
    (params / "lab" / "schedule.yaml").write_text(DAEMON.format(hook=hook, prom=prom))
    sch = schedule.load(params, "lab", notebooks=NOTEBOOKS)
    units = schedule.render_units(sch, opsbook="opsbook", workdir=ROOT)
    (exec_start,) = [
        ln
        for ln in units["opsbook-lab-engine-demo.service"].splitlines()
        if ln.startswith("ExecStart=")
    ]
    argv = shlex.split(exec_start.removeprefix("ExecStart="))[1:]
    monkeypatch.setenv("OPSBOOK_NOTEBOOKS", str(NOTEBOOKS))  # engine-demo: a test runbook
    proc = subprocess.run(
        [sys.executable, "-m", "opslib.cli.main", *argv, "--records", str(records)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    store = Store(records)
    assert [r.host for r in store.list(runbook="engine-demo")] == ["daemon1"]
    assert [p.name for p in prom.iterdir()] == ["opsbook-daemon1@engine-demo.prom"]
    common = ["--params-dir", str(params), "--records", str(records)]
    assert main.main(["schedule", "list", "--host", "lab", *common]) == 0
    listed = capsys.readouterr().out
    assert "opsbook-lab-engine-demo.timer" in listed and "daemon1" in listed, listed
    assert main.main(["schedule", "notify", "opsbook-lab-engine-demo.service", *common]) == 0
    assert hook.read_text().startswith("opsbook: engine-demo on daemon1 ")
    # the run leaves the schedule: its units go, and the metrics file of daemon1's runs too
    units_dir = tmp_path / "units"
    for name, text in units.items():
        units_dir.mkdir(exist_ok=True)
        (units_dir / name).write_text(text)
    schedule.remove("lab", units_dir)
    assert list(prom.iterdir()) == []
