"""The lab's parameter sets (opslib.lab.simulated.parameters): parameters/lab/ retargeted to a lab,
typed by each runbook's parameter cell, with what only the lab knows added.

No root needed: the lab is only named here (paths, namespaces, ports), never built.
The lab tests (tests/lab/) apply these sets for real.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from support import REPO

from opslib.engine import runner
from opslib.lab import processes
from opslib.lab.cloudflare import service
from opslib.lab.config import Lab
from opslib.lab.simulated import parameters as lab_parameters
from opslib.procedures import cloudflare_aaaa, ipv6_tunnel, nat_bridge_ipv6


@pytest.fixture(params=["ob", "obQ"])
def lab(request: pytest.FixtureRequest, tmp_path: Path) -> Lab:
    # "ob" reads the shipped sets as they are; another prefix gets them retargeted
    return Lab.from_env("ob") if request.param == "ob" else Lab(prefix="obQ", base=tmp_path)


def test_forward_bridge_set_is_the_lab_hosts_files_and_its_ifupdown(lab: Lab) -> None:
    values = lab_parameters.parameter_set(lab, "forward-bridge")
    assert (values["host"], values["libvirt_uri"], values["netns"]) == ("lab", lab.uri, lab.host_ns)
    assert values["interfaces_file"] == str(lab.interfaces_file)
    assert values["deadline"] == 60.0 and values["apply"] is True
    # "restart networking" runs as a process of this lab's host (its netns and mounts) ...
    argv = shlex.split(values["restart_command"])
    assert argv[:-1] == processes.host_command(lab, ["sh", "-c", "the script"])[:-1]
    # ... and ifupdown there keeps its state in the lab's directory
    state = f"--state-dir {shlex.quote(str(lab.ifupdown_state_dir))}"
    assert argv[-1].count(state) == 4 and argv[-1].startswith("ifdown --force -i {old}")


def test_cloudflare_set_publishes_through_this_labs_stand_in(lab: Lab) -> None:
    values = lab_parameters.parameter_set(lab, "cloudflare-aaaa")
    assert values["token"] == f"file:{service.lab_token_file(lab)}"
    assert values["api_base_url"] == service.lab_url(lab)
    assert values["zone"] == service.LAB_ZONES[0]
    assert (values["vm"], values["record_name"]) == ("vm-nat1", f"vm-nat1.{values['zone']}")
    assert (values["libvirt_uri"], values["netns"]) == (lab.uri, lab.host_ns)
    other = lab_parameters.publish_set(lab, "vm-nat2")
    assert (other["vm"], other["record_name"]) == ("vm-nat2", f"vm-nat2.{values['zone']}")
    assert {**other, "vm": "vm-nat1", "record_name": values["record_name"]} == values
    assert set(lab_parameters.arguments(cloudflare_aaaa.plan, other)) == {
        "host", "libvirt_uri", "netns", "vm", "record_name", "zone", "token", "api_base_url",
        "proxied", "ttl", "address", "replace",
    }  # fmt: skip


def test_a_runbook_run_alone_keeps_the_stock_nat_network(lab: Lab) -> None:
    # the demo renames libvirt's `default` to nat-bridge; the lab tests run each alone
    demo = lab_parameters.parameter_set(lab, "nat-bridge-ipv6")
    assert (demo["network"], demo["rename_from"]) == ("nat-bridge", "default")
    alone = lab_parameters.standalone_set(lab, "nat-bridge-ipv6")
    assert lab_parameters.arguments(nat_bridge_ipv6.plan, alone) == {
        "host": "lab",
        "libvirt_uri": lab.uri,
        "netns": lab.host_ns,
        "network": lab.nat_network,
        "prefix": lab.routed_prefix,
        "rename_from": "",
        "allow_ula": False,
        "replace_ipv6": False,
    }
    tunnel = lab_parameters.standalone_set(lab, "ipv6-tunnel", mtu=1400)
    assert lab_parameters.arguments(ipv6_tunnel.apply, tunnel) == {
        "host": "lab",
        "netns": lab.host_ns,
        "tunnel": "he-ipv6",
        "local_ipv4": lab.host_eth0_ip,
        "server_ipv4": lab.he_ipv4,
        "client_ipv6": f"{lab.tunnel_host_ipv6}/{lab.tunnel_prefixlen}",
        "server_ipv6": lab.tunnel_he_ipv6,
        "routed_prefix": lab.routed_prefix,
        "mtu": 1400,
        "implementation": "userspace",
        "interfaces_file": str(lab.interfaces_file),
        "run_dir": str(lab.root),
        "libvirt_uri": lab.uri,
        "nat_network": lab.nat_network,
    }


def test_a_change_the_runbook_refuses_is_one_line_naming_the_runbook(lab: Lab) -> None:
    from opslib.core.errors import InputError

    with pytest.raises(InputError, match=r"^ipv6-tunnel: .*mtu") as err:
        lab_parameters.parameter_set(lab, "ipv6-tunnel", mtu=9000)
    assert "\n" not in str(err.value)


# -- parameters/lab/: the booted lab host's sets ---------------------------------------------
BOOTED_SETS = REPO / "parameters" / "lab"


@pytest.mark.parametrize("path", sorted(BOOTED_SETS.glob("*.yaml")), ids=lambda p: p.stem)
def test_booted_lab_host_sets_carry_no_simulated_host_value(path: Path) -> None:
    text = path.read_text()
    values = runner.load_param_file(path) if path.stem != "schedule" else {}
    for key in ("libvirt_uri", "netns", "restart_command", "interfaces_file", "run_dir"):
        assert key not in values, f"{path.name}: {key} is a simulated-host value"
    for word in ("socket=", "ob-host", "/var/tmp/opsbook-lab", "unshare", "host: lab\n"):
        assert word not in text, f"{path.name}: {word!r}"
    if path.stem not in ("records-review", "schedule"):  # schedule: the directory names it
        assert re.search(r"^host: daemon1$", text, re.M), path.name


def test_booted_lab_host_sets_are_valid_and_daemon1s_values() -> None:
    from opslib.core import params
    from opslib.lab.booted import daemonhost, guests, peers, runs

    daemon1 = daemonhost.Host(Lab(), daemonhost.DEFAULT_NAME, 1)  # the first host booted
    for runbook in runs.ORDER:  # each validates against its notebook's parameter cell
        info = runner.find_runbook(runbook)
        params.validate(info.params, runner.load_param_file(BOOTED_SETS / f"{runbook}.yaml"))
    # daemon1's values as the lab computes them: nothing to add with -p on daemon1 but its
    # defaults; another host gets its own name and slot's values
    assert runs.per_host(daemon1) == {runbook: {} for runbook in runs.ORDER}
    tunnel = runner.load_param_file(BOOTED_SETS / "ipv6-tunnel.yaml")
    assert {k: tunnel[k] for k in peers.tunnel_parameters(daemon1)} == (
        peers.tunnel_parameters(daemon1)
    )
    netreg = runner.load_param_file(BOOTED_SETS / "netreg-attach.yaml")
    assert netreg["mac"] == guests.netreg_guest(daemon1).netreg_mac
    other = runs.per_host(daemonhost.Host(Lab(), "dh2", 2))
    assert other["network-inventory"] == {"host": "dh2"}
    assert other["netreg-attach"] == {"host": "dh2", "mac": "52:54:00:0b:12:03"}
    assert other["cloudflare-aaaa"] == {"host": "dh2", "record_name": "vm-nat1-dh2.example.org"}
    assert runs.command("find-vm-ip", other["find-vm-ip"]) == (
        "sudo -i opsbook run find-vm-ip -f "
        "/opt/opsbook/share/opsbook/parameters/lab/find-vm-ip.yaml -p host dh2"
    )


def test_the_room_router_set_is_daemon1_routing_daemon2() -> None:
    """parameters/lab/room-router.yaml is what the lab computes for daemon1 with daemon2
    behind it (lab up --room-router passes no -p on daemon1 as booted), every address
    from the lab's address plan (opslib/lab/config.py)."""
    from opslib.core import params
    from opslib.lab.booted import daemonhost, peers

    lab = Lab()
    given = runner.load_param_file(BOOTED_SETS / "room-router.yaml")
    params.validate(runner.find_runbook("room-router").params, given)
    daemon1, daemon2 = (daemonhost.Host(lab, f"daemon{n}", n) for n in (1, 2))
    computed = peers.room_parameters(daemon1, [daemon2])
    assert {k: given[k] for k in computed} == computed
    assert computed["hosts"] == "daemon2 2001:db8:48:2::/64 via 2001:db8:48:0:b:1ff:fe00:2"
    assert (computed["routed_prefix"], computed["room_prefix"]) == (
        lab.room_delegated,
        lab.room_prefix,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--simulated", "--hosts", "2"], "lab up: --simulated boots no hosts; drop --hosts"),
        (["--simulated", "--room-router"], "lab up: --simulated boots no hosts"),
        (["--hosts", "-1"], "lab up --hosts -1: give a number of hosts, 1 or more"),
        (["--records", "r"], "lab up: --records is for --simulated --configured"),
    ],
)
def test_lab_up_refuses_bad_flags_in_one_line_before_making_anything(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from opslib.cli import main

    lab = Lab(prefix="obQz")  # a prefix no lab uses: nothing of it may appear
    assert main.main(["lab", "--prefix", lab.prefix, "up", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"opsbook: {message}") and err.count("\n") == 1, err
    assert not lab.root.exists() and not Path("/run/netns", lab.host_ns).exists()
