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
