"""Bad schedule files and bad values for them: one line, exit 2, nothing written.

A schedule's values reach systemd unit files (and their file names) that
`schedule install` writes as root: a newline there is a directive of the attacker's,
a `%` a specifier systemd expands, a host like `../x` a path outside the unit directory.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from opslib.cli import main
from opslib.core import systemd_calendar
from opslib.core.errors import InputError
from opslib.schedule import units as schedule

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
    assert main.main(argv) == 2
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
    assert main.main([*notify, *records]) == 0, capsys.readouterr()
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


# -- values that reach a unit file ----------------------------------------------------------

needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed"
)
INJECTED = "ExecStartPre=/bin/sh -c 'id > pwned'"


def _run_with(key: str, value: str) -> str:
    """GOOD with one more key in its run (a YAML double-quoted value)."""
    quoted = value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return GOOD + f'    {key}: "{quoted}"\n'


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (_run_with("timeout", f"30min\n{INJECTED}"), r'timeout: "30min\nExecStartPre=/bin/sh -c'),
        (_run_with("timeout", "30 minutes, then some"), "is not a systemd time span"),
        (
            GOOD.replace("hourly", f'"hourly\\n{INJECTED}"'),
            r'when: "hourly\nExecStartPre=/bin/sh -c',
        ),
        (GOOD.replace("cat > {hook}", "true\\nrm -rf /"), "on_failure: 'true\\nrm -rf /'"),
        (GOOD.replace("runbook: host-health", 'runbook: "host-health\\n"'), "'runbook' must"),
        (GOOD.replace("host-health.yaml", '"a\\nb.yaml"'), "parameters: "),
        (GOOD.replace("host-health.yaml", '"a\\\\x41.yaml"'), "has a backslash"),
        (
            _run_with("metrics_dir", f"/srv/node\n{INJECTED}"),
            r'metrics_dir: "/srv/node\nExecStartPre=',
        ),
        (_run_with("metrics_dir", "/srv/node\u2028x"), "metrics_dir: '/srv/node\\u2028x'"),
        (GOOD + "    timeout: [30min]\n", "timeout: expected text"),
    ],
    ids=[
        "timeout-newline",
        "timeout-span",
        "when",
        "on_failure",
        "runbook",
        "parameters",
        "backslash",
        "metrics_dir",
        "line-separator",
        "timeout-list",
    ],
)
def test_a_value_that_would_break_out_of_its_unit_line_is_refused_before_anything_is_written(
    tmp_path: Path, body: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    params = _params(tmp_path, body)
    for odd in ("a\nb.yaml", "a\\x41.yaml"):  # the parameter sets exist: only their names are bad
        (params / "h1" / odd).write_text("libvirt_uri: test:///default\n")
    with pytest.raises(InputError) as err:
        schedule.load(params, "h1")
    assert says in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert str(err.value).startswith(f"schedule: {params / 'h1' / 'schedule.yaml'}")
    units, work = tmp_path / "units", tmp_path / "work"
    install = ["schedule", "install", "--host", "h1", "--params-dir", str(params),
               "--dir", str(units), "--workdir", str(work)]  # fmt: skip
    _one_line_exit_2(install, capsys)
    assert not units.exists() and not work.exists()
    _one_line_exit_2(["schedule", "crontab", "--host", "h1", "--params-dir", str(params)], capsys)


def _install(params: Path, units: Path, work: Path) -> list[str]:
    return ["schedule", "install", "--host", "h1", "--params-dir", str(params),
            "--dir", str(units), "--workdir", str(work)]  # fmt: skip


@pytest.mark.parametrize("workdir", ["work\nExecStartPre=/bin/true", "work\\x41", "work\r"])
def test_a_workdir_that_cannot_stand_in_a_unit_is_refused_before_it_is_made(
    tmp_path: Path, workdir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    params, units = _params(tmp_path), tmp_path / "units"
    err = _one_line_exit_2(_install(params, units, tmp_path / workdir), capsys)
    assert "--workdir" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parameters"]
    crontab = ["schedule", "crontab", "--host", "h1", "--params-dir", str(params)]
    _one_line_exit_2([*crontab, "--workdir", str(tmp_path / workdir)], capsys)


@needs_systemd
def test_percent_in_the_workdir_and_description_reaches_systemd_as_a_percent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """systemd.unit(5): '%%' is a single percent sign; '%n' would be the unit's name."""
    base = tmp_path / "50%n"
    base.mkdir()
    params, units = _params(base), tmp_path / "units"
    (base / "inv%n.yml").write_text("all:\n  hosts:\n    fl1:\n")
    fleet = "  - runbook: host-health\n    fleet: {inventory: ../../inv%n.yml, limit: 'a%n'}\n"
    path = params / "h1" / "schedule.yaml"
    path.write_text(path.read_text() + fleet + "    when: daily\n")
    assert main.main(_install(params, units, base / "work%i")) == 0, capsys.readouterr()
    service = (units / "opsbook-h1-host-health.service").read_text()
    assert f"WorkingDirectory={tmp_path}/50%%n/work%%i\n" in service
    fleet_service = (units / "opsbook-h1-fleet-host-health.service").read_text()
    assert "Description=opsbook fleet run host-health on a%%n of inv%%n.yml\n" in fleet_service
    assert "verify" not in capsys.readouterr().out  # systemd-analyze verify found them clean


@needs_systemd
@pytest.mark.parametrize(
    "span",
    [
        "30min",
        "1h 30min",
        "1h30min",
        "5",
        "0",
        "infinity",
        " infinity ",
        "5 s",
        ".5s",
        "5.s",
        "1.5h",
        "+5s",
        "-5s",
        "-0",
        "5x",
        "",
        " ",
        "5s5",
        "1y",
        "1M",
        "2w",
        "3d",
        "1 hour",
        "2hours",
        "10msec",
        "10ms",
        "10us",
        "10\u00b5s",
        "10\u03bcs",
        "10ns",
        "5min,",
        "5min 5",
        "1.2.3",
        "1.2 .3",
        "1.2s.3",
        "infinitys",
        "infinity 5",
        "5 infinity",
        "30m",
        "3mo",
        "1e3",
        "0x10",
        "18446744073709551615",
        "9223372036854775807",
        "9223372036854775807us",
        "18446744073709551614us",
        "584542y",
        "584541y",
        "5S",
        "5MIN",
        "5 m i n",
        "5minutes",
        "1d2h",
        "1min.5",
        "1..5s",
        "5_s",
        "%n",
        "00012s",
        "1 2 3",
        "+",
        "5+5",
        "5 +5",
        "+.5",
        "1.999999999s",
        "0.0000001s",
        "  5s  ",
        "5 sec 4 msec",
        "12.34s.56",
        "6months",
        "١٢s",
    ],
)
def test_timeout_is_a_systemd_time_span_exactly_when_systemd_analyze_says_so(span: str) -> None:
    proc = subprocess.run(
        ["systemd-analyze", "timespan", "--", span], capture_output=True, text=True, check=False
    )
    usec = re.search(r"\s\u03bcs: (\d+)\n", proc.stdout) if proc.returncode == 0 else None
    assert (proc.returncode == 0) == (usec is not None), proc.stdout
    assert systemd_calendar.timespan_usec(span) == (int(usec[1]) if usec else None)


def test_timeout_reaches_the_unit_as_a_checked_time_span(tmp_path: Path) -> None:
    sch = schedule.load(_params(tmp_path, _run_with("timeout", "1h 30min")), "h1")
    service = schedule.render_units(sch, opsbook="/x/opsbook", workdir=tmp_path)[
        "opsbook-h1-host-health.service"
    ]
    assert "TimeoutStartSec=1h 30min\n" in service
    with pytest.raises(InputError, match=r"timeout: '90 minuets' is not a systemd time span"):
        schedule.load(_params(tmp_path / "2", _run_with("timeout", "90 minuets")), "h1")


# -- host names that become paths -----------------------------------------------------------


@pytest.mark.parametrize("action", ["list", "install", "crontab", "remove"])
@pytest.mark.parametrize("host", ["../../etc", "../evil", "*", "h1 ", "h1\nx", ""])
def test_a_host_that_is_not_a_host_name_is_refused_before_it_becomes_a_path(
    tmp_path: Path, action: str, host: str, capsys: pytest.CaptureFixture[str]
) -> None:
    params = _params(tmp_path)
    evil = tmp_path / "evil"  # ../evil from parameters/: a schedule outside them
    evil.mkdir()
    (evil / "host-health.yaml").write_text("libvirt_uri: test:///default\n")
    (evil / "schedule.yaml").write_text("runs:\n  - runbook: host-health\n    when: hourly\n")
    units = tmp_path / "units"
    assert main.main(_install(params, units, tmp_path / "work")) == 0
    before = sorted(p.name for p in tmp_path.rglob("*"))
    capsys.readouterr()
    argv = ["schedule", action, "--host", host, "--params-dir", str(params), "--dir", str(units)]
    argv = argv if action in ("install", "remove") else argv[:-2]
    err = _one_line_exit_2(argv, capsys)
    assert f"{host!r} is not a host name" in err, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_load_refuses_a_host_that_is_a_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"'\.\./\.\./etc' is not a host name"):
        schedule.load(_params(tmp_path), "../../etc")
