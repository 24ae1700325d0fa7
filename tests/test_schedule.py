"""Scheduled runs become systemd units that systemd itself accepts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from opslib import schedule
from opslib.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
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
