"""The benchmarks fail loudly: when what they time fails, exit 1 with the reason and no figure."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from opslib.lab.config import Lab

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def bench(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_host_health_bench_prints_no_figure_when_the_run_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hh = bench("host_health_bench")
    lab = Lab(prefix="obbench", base=tmp_path)
    lab.root.mkdir(parents=True)
    # a parameter set `opsbook run` refuses (exit 2): quicker than a lab that is down
    (tmp_path / "host-health.yaml").write_text("nat_netwrok: nat-bridge\n")
    monkeypatch.setattr(hh, "Lab", SimpleNamespace(from_env=lambda: lab))
    monkeypatch.setattr(hh, "lab_defaults", lambda _lab: tmp_path)
    monkeypatch.setattr(sys, "argv", ["host_health_bench.py", "--runs", "1"])
    assert hh.main() == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "FAILED, no figures: host-health via opsbook run:" in err
    assert "exited 2: opsbook:" in err and "nat_netwrok" in err


def test_host_health_bench_names_a_lab_that_is_not_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hh = bench("host_health_bench")
    lab = Lab(prefix="obbench", base=tmp_path)
    monkeypatch.setattr(hh, "Lab", SimpleNamespace(from_env=lambda: lab))
    monkeypatch.setattr(sys, "argv", ["host_health_bench.py"])
    assert hh.main() == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "lab obbench is not up: run `opsbook lab up --simulated --configured`" in err
    assert not lab.root.exists()


def test_records_bench_command_that_fails_says_why(tmp_path: Path) -> None:
    rb = bench("records_bench")
    with pytest.raises(rb.BenchFailed, match=r"`opsbook records show 424242 --records .*` exited"):
        rb.command(tmp_path, "records", "show", "424242")()


def test_records_bench_prints_no_figure_when_the_search_finds_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rb = bench("records_bench")
    from opslib import record_search

    monkeypatch.setattr(record_search, "search", lambda store, text, **kw: [])
    monkeypatch.setattr(sys, "argv", ["records_bench.py", "--records", "60", "--no-browser"])
    assert rb.main() == 1
    out, err = capsys.readouterr()
    assert "opsbook (s)" not in out and " s a record" not in out
    assert "FAILED, no figures: records search 52:54:00:" in err


def test_fleet_bench_names_a_lab_without_booted_hosts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fb = bench("fleet_bench")
    lab = Lab(prefix="obbench", base=tmp_path)
    monkeypatch.setattr(fb, "Lab", SimpleNamespace(from_env=lambda: lab))
    monkeypatch.setattr(sys, "argv", ["fleet_bench.py"])
    assert fb.main() == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert (
        "lab obbench has 0 booted host(s) and no inventory: run `opsbook lab up --hosts 3`" in err
    )


def test_fleet_bench_run_that_fails_says_why() -> None:
    fb = bench("fleet_bench")
    with pytest.raises(fb.BenchFailed, match=r"one: `false` exited 1: no output"):
        fb.timed("one", [["true"], ["false"]])
