"""Bad schedule files and bad values for them: one line, exit 2, nothing written.

A schedule's values reach systemd unit files (and their file names) that
`schedule install` writes as root: a newline there is a directive of the attacker's,
a `%` a specifier systemd expands, a host like `../x` a path outside the unit directory.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from opslib import cli, schedule
from opslib.errors import InputError

GOOD = """host: h1
on_failure: "cat > {hook}"
runs:
  - runbook: host-health
    parameters: host-health.yaml
    when: hourly
"""


def _params(tmp_path: Path, body: str = GOOD, host: str = "h1") -> Path:
    d = tmp_path / "parameters" / host
    d.mkdir(parents=True)
    (d / "host-health.yaml").write_text("libvirt_uri: test:///default\n")
    (d / "schedule.yaml").write_text(body.format(hook=tmp_path / "hook.txt"))
    return tmp_path / "parameters"


def _one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("opsbook: "), out + err
    return err


# -- a schedule file that is not a mapping --------------------------------------------------


@pytest.mark.parametrize(
    ("body", "got"),
    [
        ("- runbook: host-health\n  when: hourly\n", "a list"),
        ("hourly host-health\n", "a str"),
        ("42\n", "an int"),
    ],
)
def test_a_schedule_file_that_is_not_a_mapping_is_one_line_naming_the_file(
    tmp_path: Path, body: str, got: str, capsys: pytest.CaptureFixture[str]
) -> None:
    params = _params(tmp_path, body)
    path = params / "h1" / "schedule.yaml"
    with pytest.raises(InputError) as err:
        schedule.load(params, "h1")
    assert str(err.value) == (
        f"schedule: {path} must be a mapping (host, on_failure, metrics_dir, runs), got {got}"
    )
    units = tmp_path / "units"
    argv = ["schedule", "install", "--host", "h1", "--params-dir", str(params)]
    err_line = _one_line_exit_2([*argv, "--dir", str(units), "--workdir", str(tmp_path)], capsys)
    assert str(path) in err_line and not units.exists()


def test_runs_that_are_not_a_list_are_one_line(tmp_path: Path) -> None:
    params = _params(tmp_path, "host: h1\nruns:\n  runbook: host-health\n  when: hourly\n")
    with pytest.raises(InputError, match=r"'runs' must be a list of runs \(runbook, "):
        schedule.load(params, "h1")


def test_a_schedule_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    params = _params(tmp_path)
    (params / "h1" / "schedule.yaml").write_bytes(b"host: h1\xff\n")
    with pytest.raises(InputError, match=r"schedule\.yaml is not UTF-8 text"):
        schedule.load(params, "h1")


# -- schedule notify reads the failed unit's schedule only ----------------------------------


@pytest.mark.parametrize(
    "broken",
    [
        "- not a mapping\n",
        "host: h0\nruns:\n  - runbook: host-health\n    when: every tuesdayish\n",
        "host: somewhere-else\nruns: []\n",
    ],
)
def test_notify_for_one_host_is_not_stopped_by_another_hosts_broken_schedule(
    tmp_path: Path, broken: str, capsys: pytest.CaptureFixture[str]
) -> None:
    params = _params(tmp_path)
    for other in ("h0", "h2"):  # sorted before and after h1
        (params / other).mkdir()
        (params / other / "schedule.yaml").write_text(broken)
    (params / "not a host").mkdir()
    records = ["--records", str(tmp_path / "records")]
    notify = ["schedule", "notify", "opsbook-h1-host-health.service", "--params-dir", str(params)]
    assert cli.main([*notify, *records]) == 0, capsys.readouterr()
    assert (tmp_path / "hook.txt").read_text() == (
        "opsbook: host-health on h1 failed before leaving a record\n"
    )


def test_notify_for_a_unit_of_a_broken_schedule_names_that_schedules_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = _params(tmp_path)
    (params / "h2").mkdir()
    (params / "h2" / "schedule.yaml").write_text("- not a mapping\n")
    notify = ["schedule", "notify", "opsbook-h2-host-health", "--params-dir", str(params)]
    err = _one_line_exit_2(notify, capsys)
    assert f"{params / 'h2' / 'schedule.yaml'} must be a mapping" in err
    notify[2] = "opsbook-h3-host-health"
    err = _one_line_exit_2(notify, capsys)
    assert "no scheduled run is unit 'opsbook-h3-host-health'" in err
