"""The benchmarks fail loudly: when what they time fails, exit 1 with the reason and no figure;
each names the lab state it runs on and checks it first, in one line. (That the check passes
on the state it names is tests/lab/test_92_configured.py's, on the configured lab.)"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
from support import REPO

from opslib.lab.config import Lab

BENCHMARKS = REPO / "benchmarks"
# every benchmark and the `opsbook lab up` options of the state it runs on ("": no lab)
STATES = {
    "find_vm_ip_bench": "up --simulated --configured",
    "host_health_bench": "up --simulated --configured",
    "fleet_bench": "up --hosts 3",
    "records_bench": "",
    "run_bench": "up --simulated --configured",
}


def bench(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as `python benchmarks/NAME.py` has it (dataclasses need it)
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
    monkeypatch.setattr(hh, "Lab", SimpleNamespace(from_env=lambda prefix=None: lab))
    monkeypatch.setattr(hh, "check_state", lambda _lab: None)  # as if the lab were up
    monkeypatch.setattr(hh, "lab_defaults", lambda _lab: tmp_path)
    assert hh.main(["--runs", "1"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "FAILED, no figures: host-health via opsbook run:" in err
    assert "exited 2: opsbook:" in err and "nat_netwrok" in err


def test_run_bench_prints_no_figure_when_a_run_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rb = bench("run_bench")
    lab = Lab(prefix="obbench", base=tmp_path)
    lab.root.mkdir(parents=True)
    (tmp_path / "host-health.yaml").write_text("nat_netwrok: nat-bridge\n")  # exit 2
    monkeypatch.setattr(rb, "Lab", SimpleNamespace(from_env=lambda prefix=None: lab))
    monkeypatch.setattr(rb, "check_state", lambda _lab: None)  # as if the lab were up
    monkeypatch.setattr(rb, "lab_defaults", lambda _lab: tmp_path)
    assert rb.main(["--runs", "1"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "FAILED, no figures: stock: `opsbook run host-health -q" in err
    assert "exited 2: opsbook:" in err and "nat_netwrok" in err


def test_every_benchmark_is_listed_with_its_state() -> None:
    found = {p.stem for p in BENCHMARKS.glob("*.py") if p.stem != "labstate"}
    assert found == set(STATES)


@pytest.mark.parametrize("name", sorted(STATES))
def test_each_benchmarks_setup_check_names_the_missing_state_in_one_line(
    name: str, tmp_path: Path
) -> None:
    mod = bench(name)
    assert mod.STATE  # what it runs on, named (its docstring says it in full)
    lab = Lab(prefix="obbench", base=tmp_path)
    if not STATES[name]:
        mod.check_state(lab)  # the records benchmark makes its own store: no lab needed
        return
    with pytest.raises(mod.labstate.StateMissing) as info:
        mod.check_state(lab)
    message = str(info.value)
    assert "\n" not in message and message.startswith("lab obbench ")
    assert f"run `opsbook lab --prefix obbench {STATES[name]}`" in message
    assert not lab.root.exists()  # a check only reads


@pytest.mark.parametrize("name", [n for n in sorted(STATES) if STATES[n]])
def test_a_benchmark_started_without_its_lab_state_says_which_in_one_line(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    mod = bench(name)
    lab = Lab(prefix="obbench", base=tmp_path)
    seen: list[str | None] = []
    monkeypatch.setattr(
        mod, "Lab", SimpleNamespace(from_env=lambda prefix=None: seen.append(prefix) or lab)
    )
    assert mod.main(["--prefix", "obbench"]) == 1
    out, err = capsys.readouterr()
    assert seen == ["obbench"]  # --prefix picks the lab ($OPSBOOK_LAB_PREFIX otherwise)
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert "lab obbench " in err and f"`opsbook lab --prefix obbench {STATES[name]}`" in err
    assert not lab.root.exists()


def test_records_bench_command_that_fails_says_why(tmp_path: Path) -> None:
    rb = bench("records_bench")
    with pytest.raises(rb.BenchFailed, match=r"`opsbook records show 424242 --records .*` exited"):
        rb.command(tmp_path, "records", "show", "424242")()


def test_records_bench_prints_no_figure_when_the_search_finds_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rb = bench("records_bench")
    from opslib.records import search

    monkeypatch.setattr(search, "search", lambda store, text, **kw: [])
    monkeypatch.setattr(sys, "argv", ["records_bench.py", "--records", "60", "--no-browser"])
    assert rb.main() == 1
    out, err = capsys.readouterr()
    assert "opsbook (s)" not in out and " s a record" not in out
    assert "FAILED, no figures: records search 52:54:00:" in err


def test_fleet_bench_run_that_fails_says_why() -> None:
    fb = bench("fleet_bench")
    with pytest.raises(fb.BenchFailed, match=r"one: `false` exited 1: no output"):
        fb.timed("one", [["true"], ["false"]])


def _fake_bench(fvb: ModuleType, ours_finds: bool, pipeline_finds: bool) -> type:
    """find_vm_ip_bench's Bench with the lab's parts replaced: ``ours`` finds each VM's
    entry or (as when opsbook finds no bridge for the network) nothing; so does the pipeline."""

    class Fake(fvb.Bench):  # type: ignore[name-defined,misc]
        def __init__(self, lab: Lab, host: object) -> None:
            self.lab, self.network, self.bridge = lab, "nat-bridge", "virbr0"
            self.domains, self.neighbours, self.stale = 0, 0, set()

        def set_domains(self, n: int) -> None:
            self.domains = max(self.domains, n)

        def set_neighbours(self, n: int) -> None:
            self.neighbours = n

        def cleanup(self) -> None:
            pass

        def table_size(self) -> int:
            return self.neighbours

        def ours(self, vm: str = "") -> list[SimpleNamespace]:
            names = [vm] if vm else [fvb.bench_name(i) for i in range(self.domains)]
            return [
                SimpleNamespace(
                    name=n,
                    nics=[SimpleNamespace(ips=lambda sources, n=n: sorted(self.expected(n)))]
                    if ours_finds
                    else [],
                )
                for n in names
            ]

        def pipeline(self, vms: list[str]) -> dict[str, set[str]]:
            return {v: self.expected(v) if pipeline_finds else set() for v in vms}

    return Fake


@pytest.mark.parametrize(
    ("ours_finds", "pipeline_finds"), [(False, True), (True, False), (False, False)]
)
def test_find_vm_ip_bench_prints_no_ratio_whose_sides_disagree(
    ours_finds: bool,
    pipeline_finds: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 21: with the VMs on a network opsbook found no bridge for, every row printed a
    ratio beside `agree NO`. Agreeing on nothing is no agreement either: both sides must
    find the entry each VM was given."""
    fvb = bench("find_vm_ip_bench")
    lab = Lab(prefix="obbench", base=tmp_path)
    monkeypatch.setattr(fvb, "Lab", SimpleNamespace(from_env=lambda prefix=None: lab))
    monkeypatch.setattr(fvb, "check_state", lambda _lab: fvb.labstate.SimulatedHost("n", "b"))
    monkeypatch.setattr(fvb, "Bench", _fake_bench(fvb, ours_finds, pipeline_finds))
    assert fvb.main(["--vms", "10", "--neighbours", "1000"]) == 1
    out, err = capsys.readouterr()
    assert out == ""  # no figure at all, no ratio
    (line,) = [x for x in err.splitlines() if not x.startswith("timing ")]
    assert line.startswith("find_vm_ip_bench: benchmark failed, no figure: the two sides disagree")
    assert "bench-00000: opsbook " in line and "given ['2001:db8:be::']" in line


def test_find_vm_ip_bench_prints_its_rows_when_both_sides_find_what_they_were_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fvb = bench("find_vm_ip_bench")
    lab = Lab(prefix="obbench", base=tmp_path)
    monkeypatch.setattr(fvb, "Lab", SimpleNamespace(from_env=lambda prefix=None: lab))
    monkeypatch.setattr(fvb, "check_state", lambda _lab: fvb.labstate.SimulatedHost("n", "b"))
    monkeypatch.setattr(fvb, "Bench", _fake_bench(fvb, True, True))
    monkeypatch.setattr(fvb, "probe_line", lambda _lab: "probe: not timed here")
    assert fvb.main(["--vms", "10,20", "--neighbours", "1000"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.rstrip().endswith("x")]
    assert [r.split()[:2] for r in rows] == [["10", "1000"], ["20", "1000"]]
    assert "one VM (bench-00002)" in out


def _node(tmp_path: Path, ipv6: bool, guests: tuple[str, ...]) -> str:
    """A libvirt test-driver node: the NAT network on virbr0 (renamed nat-bridge and
    carrying IPv6 as after `--configured`, or libvirt's bare `default`) and ``guests``."""
    name = "nat-bridge" if ipv6 else "default"
    six = "<ip family='ipv6' address='2001:db8:2::1' prefix='64'/>" if ipv6 else ""
    domains = "".join(
        f"<domain type='test'><name>{g}</name><memory>8192</memory>"
        "<os><type>hvm</type></os></domain>"
        for g in guests
    )
    (tmp_path / "node.xml").write_text(
        f"<node><network><name>{name}</name><bridge name='virbr0'/><forward mode='nat'/>"
        f"<ip address='198.51.100.1' netmask='255.255.255.0'/>{six}</network>{domains}</node>"
    )
    return f"test://{tmp_path / 'node.xml'}"


@pytest.mark.parametrize(
    ("ipv6", "guests", "message"),
    [
        (False, ("vm-nat1", "vm-nat2", "vm-netreg"),
         "lab obbench is up bare, not configured: its NAT network default on virbr0 has no "
         "IPv6 yet (nat-bridge-ipv6 has not run): run "
         "`opsbook lab --prefix obbench up --simulated --configured`"),
        (True, ("vm-nat1",),
         "lab obbench: guest(s) vm-nat2, vm-netreg not running: run "
         "`opsbook lab --prefix obbench up --simulated --configured`"),
        (True, ("vm-nat1", "vm-nat2", "vm-netreg"), ""),
    ],
)  # fmt: skip
def test_the_simulated_hosts_check_reads_libvirt(
    ipv6: bool, guests: tuple[str, ...], message: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A bare `lab up --simulated` (libvirt's `default`, no IPv6 on virbr0: the bench died
    adding IPv6 neighbours) is named as such; a configured one gives the network's name."""
    import libvirt

    fvb = bench("find_vm_ip_bench")
    labstate = fvb.labstate
    lab = Lab(prefix="obbench", base=tmp_path / "labs")
    lab.root.mkdir(parents=True)
    uri = _node(tmp_path, ipv6, guests)
    monkeypatch.setattr(labstate, "netns_exists", lambda ns: ns == lab.host_ns)
    monkeypatch.setattr(labstate, "alive", lambda _lab, pidfile: 4242)
    monkeypatch.setattr(labstate, "connect", lambda _lab: libvirt.open(uri))
    if message:
        with pytest.raises(labstate.StateMissing) as info:
            fvb.check_state(lab)
        assert str(info.value) == message
        return
    found = fvb.check_state(lab)
    assert (found.network, found.bridge) == ("nat-bridge", "virbr0")
