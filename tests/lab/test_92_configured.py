"""``opsbook lab up --configured`` reaches the demo's end state from any starting state.

From a half-configured lab (the tunnel made on whatever the earlier modules left: a bare
lab when this module runs alone), from a bare one (``lab down``, then ``lab up
--configured`` on nothing) and again from the configured one (no change then); after it
every runbook exits 0 with its ``parameters/lab/`` set, retargeted to the session's
prefix as ``opsbook demo`` and ``opsbook lab notebook`` do. The state is read from the
real components (libvirt's networks and domain XML, the host netns's links, NetReg's
registry, the Cloudflare stand-in's records) and compared with the parameter sets.

test_95 rebuilds the lab bare again for itself.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from opslib.cli import main
from opslib.core import slaac
from opslib.engine import runner
from opslib.host.libvirt.virtxml import parse_interfaces
from opslib.lab import notebook as lab_notebook
from opslib.lab.campus import netreg
from opslib.lab.cloudflare import service
from opslib.lab.config import Lab
from opslib.lab.simulated import control, labvirt
from opslib.lab.simulated import parameters as lab_parameters
from opslib.lab.simulated import runs as lab_runs
from opslib.records.run_index import Row
from opslib.records.store import Store

# a lab of its own, configured as the wiki says, beside the simulated session (test.sh)
pytestmark = pytest.mark.lab_session("configured")

# what --configured runs: the runbooks that change the host, in the wiki's order
CHANGING = ("forward-bridge", "netreg-attach", "nat-bridge-ipv6", "ipv6-tunnel", "cloudflare-aaaa")


def _progress(line: str) -> None:
    print(f"lab: {line}", file=sys.stderr, flush=True)


def _ip(lab: Lab, *args: str) -> str:
    argv = ["ip", "-n", lab.host_ns, "-o", *args]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def snapshot(lab: Lab) -> dict[str, Any]:
    """What the runbooks configure, as the real components report it."""
    with labvirt.connect(lab) as conn:
        networks = {n.name(): bool(n.isActive()) for n in conn.listAllNetworks()}
        # Any type: live, a NIC on a bridge-mode network is type "bridge", its source
        # still names the network.
        nics = {
            (dom.name(), nic.mac, nic.source)
            for dom in conn.listAllDomains()
            for nic in parse_interfaces(dom.XMLDesc())
        }
    links = _ip(lab, "link")
    nat_addrs = _ip(lab, "-6", "addr", "show", "dev", lab.nat_bridge)
    eth0 = re.search(r"^\d+: eth0@\S+ .*", links, re.M)
    master = re.search(r" master (\S+)", eth0[0]) if eth0 else None
    zone = service.LAB_ZONES[0]
    return {
        "networks": networks,
        "nics": nics,
        "eth0 master": master.group(1) if master else "",
        "tunnel": bool(re.search(r"^\d+: he-ipv6[:@]", links, re.M)),
        "routed": re.findall(r"inet6 (\S+) scope global", nat_addrs),
        "aaaa": {
            (r["name"], r["content"]) for r in service.lab_store(lab).records(zone, type="AAAA")
        },
        "netreg": set(netreg.netreg_registered(lab)),
    }


def assert_demo_state(lab: Lab, state: dict[str, Any], param_dir: Path) -> None:
    """``state`` is what the lab's parameter sets describe after the demo."""
    load = runner.load_param_file
    nat = load(param_dir / "nat-bridge-ipv6.yaml")
    attach = load(param_dir / "netreg-attach.yaml")
    cloudflare = load(param_dir / "cloudflare-aaaa.yaml")
    health = load(param_dir / "host-health.yaml")
    tunnel = load(param_dir / "ipv6-tunnel.yaml")
    # the sets agree with each other on the names of the end state
    assert health["nat_network"] == tunnel["nat_network"] == nat["network"]
    assert health["forward_network"] == attach["network"]
    assert health["tunnel"] == tunnel["tunnel"]
    # ... and the lab is that state: the stock NAT network renamed, as the demo does
    assert state["networks"].get(nat["network"]) is True
    assert state["networks"].get(attach["network"]) is True
    assert nat["rename_from"] not in state["networks"]
    guest = lab.guest(str(attach["vm"]))
    assert {(g.name, g.nat_mac, nat["network"]) for g in lab.guests} <= state["nics"]
    assert (guest.name, attach["mac"], attach["network"]) in state["nics"]
    assert attach["mac"] in state["netreg"]
    assert state["eth0 master"] == health["bridge"]
    assert state["tunnel"]
    assert state["routed"] == [f"{nat['prefix'].split('/')[0]}1/64"]
    published = lab.guest(str(cloudflare["vm"]))
    address = slaac.eui64_address(str(nat["prefix"]), published.nat_mac)
    assert (cloudflare["record_name"], address) in state["aaaa"]


def configure_runs(store: Store, before: set[int]) -> list[Row]:
    return sorted((r for r in store.list() if r.id not in before), key=lambda r: r.id)


@pytest.fixture(scope="module")
def param_dir(lab: Lab) -> Path:
    """The lab's parameter sets for this prefix (the shipped ones are written for `ob`)."""
    return lab_notebook.lab_defaults(lab)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("records"))


def test_configured_from_half_configured(lab: Lab, store: Store, param_dir: Path) -> None:
    # The tunnel made, on the stock NAT network; its checks of the routed /64 fail until
    # nat-bridge-ipv6 has run, which is what makes it half-configured.
    lab_parameters.apply_runbook(lab, "ipv6-tunnel")
    half = snapshot(lab)
    assert half["tunnel"] and lab.nat_network in half["networks"]
    lab_runs.up(lab, configured=True, progress=_progress, records=store.root)
    assert_demo_state(lab, snapshot(lab), param_dir)


@pytest.fixture(scope="module")
def configured(lab: Lab, store: Store, param_dir: Path) -> dict[str, Any]:
    """`lab up --configured` on a lab that is down: the end state."""
    control.down(lab, progress=_progress)
    before = {r.id for r in store.list()}
    lab_runs.up(lab, configured=True, progress=_progress, records=store.root)
    runs = configure_runs(store, before)
    assert [(r.runbook, r.status) for r in runs] == [(name, "ok") for name in CHANGING]
    return snapshot(lab)


def test_configured_from_bare(lab: Lab, configured: dict[str, Any], param_dir: Path) -> None:
    assert_demo_state(lab, configured, param_dir)
    # from nothing, nothing else: the NAT network and forward-bridge, one AAAA record
    assert len(configured["networks"]) == 2
    assert len(configured["aaaa"]) == 1


@pytest.fixture(scope="module")
def again(lab: Lab, configured: dict[str, Any], store: Store) -> list[Row]:
    """`lab up --configured` once more, as a user types it: the runs it filed."""
    before = {r.id for r in store.list()}
    argv = ["lab", "--prefix", lab.prefix, "up", "--simulated", "--configured"]
    argv += ["--records", str(store.root)]
    assert main.main(argv) == 0
    return configure_runs(store, before)


def test_configured_again_changes_nothing(
    lab: Lab, configured: dict[str, Any], again: list[Row]
) -> None:
    assert [(r.runbook, r.status, r.changed) for r in again] == [
        (name, "ok", False) for name in CHANGING
    ]
    assert snapshot(lab) == configured


def test_every_runbook_exits_0_with_its_lab_parameter_set(
    lab: Lab, configured: dict[str, Any], again: list[Row], store: Store, param_dir: Path
) -> None:
    # The changing runbooks just ran with their sets (what `opsbook run -f` does:
    # runner.prepare + runner.run); the others run here through the command.
    ran = {r.runbook: (r.exit_code, r.parameters) for r in again}
    failed = []
    for info in runner.list_runbooks():
        params = param_dir / f"{info.name}.yaml"
        if info.name in lab_runs.BOOTED_HOST_ONLY:
            continue  # no accounts on the simulated host; test_16 runs them on a booted one
        if info.name in ran:
            assert ran[info.name][0] == 0
            assert ran[info.name][1]["libvirt_uri"] == lab.uri
            continue
        argv = [sys.executable, "-m", "opslib.cli.main", "run", info.name, "-q"]
        argv += ["-f", str(params), "--records", str(store.root)]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            failed.append(f"{info.name}: exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
    assert failed == []
    assert set(ran) == set(CHANGING)
    assert snapshot(lab) == configured  # and the read-only ones changed nothing


@pytest.mark.parametrize("name", ["find_vm_ip_bench", "host_health_bench"])
def test_the_benchmarks_find_the_state_they_name_on_the_configured_lab(
    lab: Lab, configured: dict[str, Any], name: str
) -> None:
    # benchmarks/ is not a package: load the script as `python benchmarks/NAME.py` would
    path = Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    sys.modules[name] = bench  # its dataclasses look their module up there
    spec.loader.exec_module(bench)
    found = bench.check_state(lab)
    assert found.network == "nat-bridge"  # the name nat-bridge-ipv6 gave libvirt's default
    assert found.bridge == lab.nat_bridge
