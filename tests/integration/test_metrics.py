"""Prometheus metrics of runs (opslib.engine.metrics) and the alerting rules that read them.

promtool comes from Debian's `prometheus` package, unpacked (never installed) into
/var/cache/opsbook/prometheus by scripts/setup.sh (scripts/prometheus-tools.sh).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import NOTEBOOKS as FIXTURE_NOTEBOOKS
from support import REPO

from opslib.core.errors import InputError
from opslib.engine import metrics
from opslib.schedule import units as schedule

ROOT = REPO
MONITORING = ROOT / "monitoring"
NOTEBOOKS = FIXTURE_NOTEBOOKS
CACHE = Path(os.environ.get("OPSBOOK_PROMETHEUS_CACHE", "/var/cache/opsbook/prometheus"))


@pytest.fixture(scope="module")
def promtool() -> str:
    path = CACHE / "bin" / "promtool"
    if not os.access(path, os.X_OK):
        message = f"no {path}: run scripts/setup.sh (scripts/prometheus-tools.sh)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return str(path)


def check_metrics(promtool: str, text: str) -> None:
    """promtool parses the exposition and lints it (names, units, HELP): silent when clean."""
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (name, tuple(sorted(labels.items()))): value
        for name, labels, value in metrics.parse(path.read_text())
    }


def value(path: Path, name: str, **labels: str) -> float:
    return samples(path)[(name, tuple(sorted(labels.items())))]


def run_metrics(**kw: object) -> metrics.RunMetrics:
    base: dict[str, object] = {
        "host": "lab",
        "runbook": "host-health",
        "success": True,
        "ended": 1_700_000_000.0,
        "seconds": 4.25,
        "changed": False,
        "checks": (("br0 up", True), ("network forward-bridge", False)),
        "period": 3600,
    }
    return metrics.RunMetrics(**{**base, **kw})  # type: ignore[arg-type]


def test_alerting_rules_pass_their_promtool_unit_tests(promtool: str) -> None:
    rules = subprocess.run(
        [promtool, "check", "rules", "opsbook-rules.yml"],
        cwd=MONITORING, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "3 rules found" in rules.stdout
    proc = subprocess.run(
        [promtool, "test", "rules", "opsbook-rules.test.yml"],
        cwd=MONITORING, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_written_file_is_a_clean_exposition_with_every_series(
    promtool: str, tmp_path: Path
) -> None:
    path = metrics.write(tmp_path, run_metrics())
    assert path == tmp_path / "opsbook-lab@host-health.prom"
    text = path.read_text()
    check_metrics(promtool, text)
    assert "# TYPE opsbook_check_ok gauge" in text
    assert "# HELP opsbook_run_last_success_timestamp_seconds " in text
    run = {"host": "lab", "runbook": "host-health"}
    assert value(path, "opsbook_check_ok", **run, check="br0 up") == 1
    assert value(path, "opsbook_check_ok", **run, check="network forward-bridge") == 0
    assert value(path, "opsbook_run_success", **run) == 1
    assert value(path, "opsbook_run_last_run_timestamp_seconds", **run) == 1_700_000_000
    assert value(path, "opsbook_run_last_success_timestamp_seconds", **run) == 1_700_000_000
    assert value(path, "opsbook_run_duration_seconds", **run) == 4.25
    assert value(path, "opsbook_run_changed", **run) == 0
    assert value(path, "opsbook_run_period_seconds", **run) == 3600


def test_label_values_are_escaped_as_the_exposition_format_says(
    promtool: str, tmp_path: Path
) -> None:
    awkward = 'DNS "vm1" C:\\dir\nsecond line'
    path = metrics.write(tmp_path, run_metrics(checks=((awkward, True),), period=None))
    text = path.read_text()
    assert 'check="DNS \\"vm1\\" C:\\\\dir\\nsecond line"' in text
    check_metrics(promtool, text)
    got = [labels["check"] for name, labels, _ in metrics.parse(text) if name == "opsbook_check_ok"]
    assert got == [awkward]
    assert "opsbook_run_period_seconds" not in text  # no schedule, no period


def test_a_failed_run_keeps_the_last_success_time_and_a_later_success_moves_it(
    tmp_path: Path,
) -> None:
    run = {"host": "lab", "runbook": "host-health"}
    metrics.write(tmp_path, run_metrics(ended=1000.0))
    path = metrics.write(tmp_path, run_metrics(success=False, ended=2000.0))
    assert value(path, "opsbook_run_success", **run) == 0
    assert value(path, "opsbook_run_last_run_timestamp_seconds", **run) == 2000
    assert value(path, "opsbook_run_last_success_timestamp_seconds", **run) == 1000
    metrics.write(tmp_path, run_metrics(success=False, ended=3000.0))
    assert value(path, "opsbook_run_last_success_timestamp_seconds", **run) == 1000
    metrics.write(tmp_path, run_metrics(ended=4000.0))
    assert value(path, "opsbook_run_last_success_timestamp_seconds", **run) == 4000
    # A runbook that never succeeded says 0 (the rules then alert at once).
    other = metrics.write(tmp_path, run_metrics(runbook="find-vm-ip", success=False))
    assert value(other, "opsbook_run_last_success_timestamp_seconds", host="lab",
                 runbook="find-vm-ip") == 0  # fmt: skip


def test_the_file_is_replaced_whole_and_other_runbooks_files_are_left_alone(
    tmp_path: Path,
) -> None:
    other = metrics.write(tmp_path, run_metrics(runbook="find-vm-ip"))
    other_text = other.read_text()
    path = metrics.write(tmp_path, run_metrics(ended=1000.0))
    old_text = path.read_text()
    with path.open() as reader:  # a scrape that opened the file before the next run
        path_inode = os.fstat(reader.fileno()).st_ino
        metrics.write(tmp_path, run_metrics(ended=2000.0, success=False))
        assert reader.read() == old_text  # still the whole old file
    assert os.stat(path).st_ino != path_inode  # a new file renamed over the old one
    assert "opsbook_run_last_run_timestamp_seconds" in path.read_text()
    assert value(path, "opsbook_run_success", host="lab", runbook="host-health") == 0
    assert other.read_text() == other_text
    # nothing else left in the directory (no temp files node_exporter could trip on)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "opsbook-lab@find-vm-ip.prom",
        "opsbook-lab@host-health.prom",
    ]


def test_a_metrics_dir_that_is_a_file_is_refused_in_one_line(tmp_path: Path) -> None:
    not_dir = tmp_path / "file"
    not_dir.write_text("")
    with pytest.raises(InputError, match="not a directory"):
        metrics.check_dir(not_dir)
    assert metrics.check_dir(tmp_path) == tmp_path


def test_a_metrics_dir_that_does_not_exist_is_refused_not_made(tmp_path: Path) -> None:
    # node_exporter's textfile directory is made by its package: a missing one is a typo
    missing = tmp_path / "absent" / "dir"
    env = {**os.environ, "OPSBOOK_NOTEBOOKS": str(NOTEBOOKS)}
    proc = subprocess.run(
        [sys.executable, "-m", "opslib.cli.main", "run", "engine-demo", "--metrics-dir",
        str(missing),
         "--records", str(tmp_path / "records")],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.splitlines() == [
        f"opsbook: --metrics-dir {missing}: no such directory; give node_exporter's "
        "textfile directory (its package makes it)"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither made nor a record


def test_opsbook_run_writes_metrics_of_a_passing_then_a_failing_run(
    promtool: str, tmp_path: Path
) -> None:
    env = {**os.environ, "OPSBOOK_NOTEBOOKS": str(NOTEBOOKS)}
    out = tmp_path / "textfile"
    out.mkdir()  # as node_exporter's package makes it
    base = [sys.executable, "-m", "opslib.cli.main", "run", "engine-demo", "--host", "h1", "-q",
            "--records", str(tmp_path / "records"), "--metrics-dir", str(out), "--period", "900",
            "-p", "apply", "true"]  # fmt: skip
    ok = subprocess.run(base, env=env, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    path = out / "opsbook-h1@engine-demo.prom"
    run = {"host": "h1", "runbook": "engine-demo"}
    check_metrics(promtool, path.read_text())
    assert value(path, "opsbook_check_ok", **run, check="fixture") == 1
    assert value(path, "opsbook_run_success", **run) == 1
    assert value(path, "opsbook_run_changed", **run) == 1
    assert value(path, "opsbook_run_period_seconds", **run) == 900
    first_success = value(path, "opsbook_run_last_success_timestamp_seconds", **run)
    assert first_success == value(path, "opsbook_run_last_run_timestamp_seconds", **run)

    bad = subprocess.run([*base, "-p", "mode", "badcheck"], env=env, capture_output=True,
                         text=True, check=False)  # fmt: skip
    assert bad.returncode == 1, bad.stderr
    check_metrics(promtool, path.read_text())
    assert value(path, "opsbook_check_ok", **run, check="fixture") == 0
    assert value(path, "opsbook_run_success", **run) == 0
    assert value(path, "opsbook_run_last_success_timestamp_seconds", **run) == first_success
    assert value(path, "opsbook_run_last_run_timestamp_seconds", **run) >= first_success


def test_opsbook_run_refuses_a_period_without_a_metrics_dir(tmp_path: Path) -> None:
    env = {**os.environ, "OPSBOOK_NOTEBOOKS": str(NOTEBOOKS)}
    proc = subprocess.run(
        [sys.executable, "-m", "opslib.cli.main", "run", "engine-demo", "--period", "60",
         "--records", str(tmp_path / "records")],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "opsbook: --period: only with --metrics-dir (it is exported as a metric)"
    ]
    assert not (tmp_path / "records").exists()


def _schedule(tmp_path: Path, body: str) -> Path:
    d = tmp_path / "parameters" / "h1"
    d.mkdir(parents=True)
    (d / "host-health.yaml").write_text("libvirt_uri: test:///default\n")
    (d / "find-vm-ip.yaml").write_text("libvirt_uri: test:///default\n")
    (d / "schedule.yaml").write_text(body)
    return tmp_path / "parameters"


def test_a_schedules_metrics_dir_and_period_reach_the_units_it_renders(tmp_path: Path) -> None:
    params = _schedule(
        tmp_path,
        "host: h1\nmetrics_dir: /var/lib/prometheus/node-exporter\nruns:\n"
        "  - runbook: host-health\n    when: hourly\n"
        "  - runbook: find-vm-ip\n    when: '*:00/15'\n    metrics_dir: /srv/textfile\n",
    )
    sch = schedule.load(params, "h1")
    units = schedule.render_units(sch, opsbook="/usr/bin/opsbook", workdir=ROOT)
    health = units["opsbook-h1-host-health.service"]
    assert "--metrics-dir /var/lib/prometheus/node-exporter --period 3600" in health
    find = units["opsbook-h1-find-vm-ip.service"]
    assert "--metrics-dir /srv/textfile --period 900" in find
    cron = schedule.crontab_lines(sch, opsbook="/usr/bin/opsbook", workdir=ROOT)
    assert "--metrics-dir /var/lib/prometheus/node-exporter --period 3600" in cron[0]


def test_weekday_schedules_period_is_their_longest_gap_and_relative_dirs_are_refused(
    tmp_path: Path,
) -> None:
    if schedule.calendar_period("Mon..Fri 09:00") is None:
        pytest.skip("systemd-analyze not installed")
    assert schedule.calendar_period("Mon..Fri 09:00") == 3 * 86400  # Friday to Monday
    params = _schedule(
        tmp_path,
        "host: h1\nruns:\n  - runbook: host-health\n    when: hourly\n    metrics_dir: prom\n",
    )
    with pytest.raises(InputError, match="metrics_dir 'prom' must be an absolute path"):
        schedule.load(params, "h1")


def test_removing_a_scheduled_run_removes_its_metrics_file(tmp_path: Path) -> None:
    """Else its last run time would age into OpsbookScheduledRunStopped for ever."""
    textfile = tmp_path / "textfile"
    params = _schedule(
        tmp_path,
        f"host: h1\nmetrics_dir: {textfile}\nruns:\n  - runbook: host-health\n    when: hourly\n"
        "  - runbook: find-vm-ip\n    when: daily\n",
    )
    units = tmp_path / "units"
    kw = {"opsbook": schedule.opsbook_executable(), "workdir": ROOT}
    schedule.install(schedule.load(params, "h1"), units, **kw)  # type: ignore[arg-type]
    health = metrics.write(textfile, run_metrics(host="h1"))
    find = metrics.write(textfile, run_metrics(host="h1", runbook="find-vm-ip"))
    unrelated = metrics.write(textfile, run_metrics(host="h2"))
    # find-vm-ip leaves the schedule: its units and its metrics file go
    (params / "h1" / "schedule.yaml").write_text(
        f"host: h1\nmetrics_dir: {textfile}\nruns:\n  - runbook: host-health\n    when: hourly\n"
    )
    result = schedule.install(schedule.load(params, "h1"), units, **kw)  # type: ignore[arg-type]
    assert not find.exists() and health.exists()
    assert f"file:{find}" in {c.target for c in result.changes}
    assert result.summary.startswith("2 unit file(s) changed")
    assert "1 metrics file(s) of unscheduled runs removed" in result.summary
    # the whole schedule removed: host-health's file goes too; another host's stays
    result = schedule.remove("h1", units)
    assert not health.exists() and unrelated.exists()
    assert not list(units.iterdir())


def test_hyphens_in_host_and_runbook_names_cannot_make_two_runs_share_a_file(
    tmp_path: Path,
) -> None:
    a = metrics.write(tmp_path, run_metrics(host="a-b", runbook="c"))
    b = metrics.write(tmp_path, run_metrics(host="a", runbook="b-c"))
    assert a != b and a.exists() and b.exists()
