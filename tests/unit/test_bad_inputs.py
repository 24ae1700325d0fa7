"""Every runbook's declared inputs, each fed bad values through the three ways a value
arrives from outside: ``opsbook run -p``, ``opsbook run -f FILE`` and ``opsbook fleet run``'s
check. Each is refused with exit 2 and one line naming the parameter, before a kernel
starts (``runner.run``, the only place one starts, is a tripwire here) and before
anything is filed (issue 22: one contract, enforced).

The walk takes its parameters from the notebooks as the CLI reads them, so a parameter
added to any runbook is walked too; a type with no bad value below fails the walk.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import REPO_NOTEBOOKS

from opslib.cli import main
from opslib.contract import inputs
from opslib.core import params
from opslib.engine import runner
from opslib.fleet import playbooks
from opslib.procedures.ipv6_tunnel.page import TunnelPage

NOTEBOOKS = REPO_NOTEBOOKS
# The runbooks of opslib/procedures (records-review is the record store's, no host's).
RUNBOOKS = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb") if p.stem != "records-review")
TOKEN_ENV = "OPSBOOK_TEST_BAD_INPUTS_TOKEN"

# Values the walk gives a runbook's other parameters, so that only the one under test is
# wrong: the required ones without a usable default, and a secret that can be read.
# libvirt's test driver, whose VM is "test" and network "default": a value let through
# by mistake meets it (opsbook run checks VM and network names there), never a real one.
GOOD: dict[str, dict[str, str]] = {
    runbook: {"libvirt_uri": "test:///default"} for runbook in RUNBOOKS
}
GOOD["cloudflare-aaaa"].update(token=f"env:{TOKEN_ENV}", vm="test")
GOOD["libvirt-access"].update(account="alice")
GOOD["room-router"] = {}  # a router's runbook: no libvirt
GOOD["netreg-attach"].update(mac="52:54:00:12:34:56", vm="test", network="default")

# Bad values of each type. "/nonexistent..." for dir and file is bad on this machine only:
# the fleet's check is for other machines and checks their syntax (ON_THIS_MACHINE).
ON_THIS_MACHINE = "/nonexistent/opsbook-bad-inputs"
BAD: dict[str, tuple[str, ...]] = {
    "str": (),  # any text is a str
    "bool": ("maybe",),
    "int": ("x",),
    "float": ("x",),
    "host": ("bad_host",),
    "libvirt-uri": ("qemu:///nowhere",),
    "netns": ("a/b",),
    "vm": ("a/b", "-vm"),
    "network": ("a/b",),
    "network-name": ("a/b", "-net"),
    "ifname": ("-eth0", "eth 0", "a-very-long-interface-name"),
    "mac": ("yo:ug:ot:fr:om:nr", "33:33:00:00:00:01"),
    "ipv4": ("garbage", "2001:db8::1"),
    "ipv4-cidr": ("garbage", "192.0.2.10"),
    "ipv6": ("garbage", "fe80::1%eth0"),
    "ipv6-global": ("fe80::1", "fd00::1"),
    "ipv6-cidr64": ("garbage", "2001:db8:1::2/48"),
    "ipv6-prefix64": ("fd00:1::/64", "2001:db8::/48", "fe80::/64"),
    "ipv6-prefix48": ("2001:db8::/32", "fd00:48::/48", "2001:db8:48::1/48"),
    "room-hosts": (
        "daemon2 2001:db8:48:2::/64",  # no next hop
        "daemon2 2001:db8:48:2::/48 via 2001:db8:48::2",  # not a /64
        "daemon2 2001:db8:48:2::/64 via fe80::2",  # link-local next hop
        "d2 2001:db8:48:2::/64 via 2001:db8:48::2, d2 2001:db8:48:3::/64 via 2001:db8:48::3",
    ),
    "account": ("root; rm -rf /", "root"),
    "group": ("Wheel",),
    "dns-name": ("a..example.org",),
    "dns-zone": ("org",),
    "https-url": ("javascript:alert(1)", "http://192.0.2.1/"),
    "path": ("relative/file",),
    "dir": (ON_THIS_MACHINE, "a\0b"),
    "file": (ON_THIS_MACHINE, "a\0b"),
    "timespan": ("5 fortnights",),
    "secret": ("file:relative/token", "hunter2"),
    "choice": ("nope",),
}


def out_of_range(p: params.Param) -> list[str]:
    """Numbers just outside the declared ranges (and in a range's hole)."""
    step = 1 if p.type == "int" else 0.5
    found = [] if p.low is None else [p.low - step]
    found += [] if p.high is None else [p.high + step]
    for (_, high), (low, _) in zip(p.ranges, p.ranges[1:], strict=False):
        if high is not None and low is not None and low - high > 1:
            found.append(math.floor((high + low) / 2))  # ttl 30: between 1 and 60
    return [str(int(v)) if p.type == "int" else str(v) for v in found]


def walk() -> Iterator[tuple[str, str, str]]:
    for runbook in RUNBOOKS:
        for p in params.read_runbook(NOTEBOOKS / f"{runbook}.ipynb").params:
            assert p.type in BAD, f"{runbook} {p.name}: add bad values of {p.type} to BAD"
            for value in (*BAD[p.type], *out_of_range(p)):
                yield runbook, p.name, value


# What a user met (issue 22, "What a user meets today"): each refused before the kernel.
EXAMPLES: list[tuple[str, dict[str, str], str]] = [
    ("forward-bridge", {"address": "garbage"}, "address"),
    ("forward-bridge", {"network_name": "a/b"}, "network_name"),
    ("forward-bridge", {"gateway": "192.0.2.1"}, "gateway"),  # a gateway without address
    ("forward-bridge", {"address": "192.0.2.10/24"}, "address"),  # an address without gateway
    ("forward-bridge", {"address": "192.0.2.10/24", "gateway": "198.51.100.1"}, "gateway"),
    ("forward-bridge", {"uplink": "-eth0"}, "uplink"),
    ("ipv6-tunnel", {"client_ipv6": "garbage"}, "client_ipv6"),
    ("ipv6-tunnel", {"server_ipv6": "2001:db8:9::1"}, "server_ipv6"),  # not in client's /64
    ("libvirt-access", {"account": "root; rm -rf /"}, "account"),
    ("cloudflare-aaaa", {"address": "fe80::1"}, "address"),
    ("cloudflare-aaaa", {"record_name": "vm1.example.net"}, "record_name"),
    ("cloudflare-aaaa", {"ttl": "30"}, "ttl"),
    ("cloudflare-aaaa", {"api_base_url": "javascript:alert(1)"}, "api_base_url"),
    ("cloudflare-aaaa", {"token": "file:relative/token"}, "token"),
    ("cloudflare-aaaa", {"vm": "", "address": ""}, "vm"),  # neither the VM nor its address
    ("nat-bridge-ipv6", {"prefix": "fd00:1::/64"}, "prefix"),  # ULA without allow_ula
    ("host-health", {"tunnel": "he-ipv6"}, "tunnel"),  # a tunnel check without its addresses
    # The rules between two fields that the runbooks' __post_init__ checked in the kernel:
    ("cloudflare-aaaa", {"proxied": "true", "ttl": "300"}, "ttl"),  # a proxied record is auto
    ("netreg-attach", {"mode": "attach", "vm": ""}, "mode"),  # attach needs a VM
    ("forward-bridge", {"uplink": "br0", "bridge": "br0"}, "uplink"),  # two different links
    ("ipv6-tunnel", {"routed_prefix": "2001:db8:1::/64"}, "routed_prefix"),  # not the tunnel's
    ("room-router", {"room_prefix": "2001:db8:49::/64"}, "room_prefix"),  # not in the /48
    # a host's /64 outside the /48, its next hop off the room's /64, its /64 the room's own
    ("room-router", {"hosts": "d2 2001:db8:49:2::/64 via 2001:db8:48::2"}, "hosts"),
    ("room-router", {"hosts": "d2 2001:db8:48:2::/64 via 2001:db8:49::2"}, "hosts"),
    ("room-router", {"hosts": "d2 2001:db8:48::/64 via 2001:db8:48::2"}, "hosts"),
    (
        "room-router",
        {"client_ipv6": "2001:db8:48:ff::2/64", "server_ipv6": "2001:db8:48:ff::1"},
        "routed_prefix",
    ),  # the tunnel's /64 inside the /48
    ("room-ipv6-move", {"direction": "sideways"}, "direction"),
    ("room-ipv6-move", {"room_prefix": "2001:db8:3::/48"}, "room_prefix"),  # the /48, not a /64
    ("room-ipv6-move", {"zone": "example.org"}, "zone"),  # records to move, but no token
    ("room-ipv6-move", {"probe": "fe80::1"}, "probe"),
    # the room's /64 is neither the own tunnel's routed /64 nor its client /64
    ("room-ipv6-move", {"room_prefix": "2001:db8:2::/64"}, "room_prefix"),
    ("room-ipv6-move", {"room_prefix": "2001:db8:1::/64"}, "room_prefix"),
]


# The three runbooks that take the broker's tunnel page, declared once (TunnelPage), but for
# room-router's routed_prefix: the page's Routed /48, where the others take its Routed /64.
TUNNEL_RUNBOOKS = ("ipv6-tunnel", "room-router", "room-ipv6-move")
TUNNEL_FIELDS = [
    p for p in inputs.declarations(TunnelPage, changing=False) if p.name != "host"
]  # fmt: skip


def tunnel_cases() -> Iterator[tuple[str, str]]:
    for p in TUNNEL_FIELDS:
        for value in (*BAD[p.type], *out_of_range(p)):
            yield p.name, value
    yield "server_ipv6", "2001:db8:9::1"  # not in client_ipv6's /64
    yield "routed_prefix", "2001:db8:1::/64"  # the tunnel's own /64


def test_the_three_notebooks_show_the_tunnel_page_alike() -> None:
    """Each tunnel field's line of the parameters cell (type, rules, help, default) is the
    same in ipv6-tunnel, room-router and room-ipv6-move."""
    for p in TUNNEL_FIELDS:
        shown = {}
        for runbook in TUNNEL_RUNBOOKS:
            cell = params.read_runbook(NOTEBOOKS / f"{runbook}.ipynb").params
            shown[runbook] = next(repr(q) for q in cell if q.name == p.name)
        if p.name == "routed_prefix":
            del shown["room-router"]  # its Routed /48
        assert len(set(shown.values())) == 1, (p.name, shown)


@pytest.mark.parametrize(("name", "value"), list(tunnel_cases()))
def test_a_bad_tunnel_value_is_one_and_the_same_line_in_all_three(
    capsys: pytest.CaptureFixture[str],
    world: tuple[Path, Path, pytest.MonkeyPatch],
    name: str,
    value: str,
) -> None:
    said = {}
    for runbook in TUNNEL_RUNBOOKS:
        if runbook == "room-router" and name == "routed_prefix":
            continue  # its Routed /48: refused by that type (the walk above)
        argv = ["run", runbook, *pairs({**GOOD[runbook], name: value})]
        said[runbook] = refused(capsys, argv, name).removeprefix(f"opsbook: {runbook}: ")
    assert len(set(said.values())) == 1, said


class KernelStarted(Exception):
    """runner.run was called: a kernel would have started for bad input."""


class Reached(Exception):
    """fleet run got past its checks to Ansible."""


@pytest.fixture
def world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Path, Path, pytest.MonkeyPatch]]:
    def kernel(*_args: Any, **_kw: Any) -> None:
        raise KernelStarted

    class Gated:  # playbooks.Started: Ansible up, waiting for its hosts
        def open(self, hosts: list[str]) -> None:
            raise Reached

        def abort(self) -> None:
            pass

    def ansible(*_args: Any, **_kw: Any) -> Gated:
        return Gated()

    monkeypatch.setattr(runner, "run", kernel)
    monkeypatch.setattr(playbooks, "start", ansible)
    monkeypatch.setenv(TOKEN_ENV, "a-token-for-the-bad-inputs-test")
    monkeypatch.setenv("OPSBOOK_NOTEBOOKS", str(NOTEBOOKS))
    store = tmp_path / "records"
    monkeypatch.setenv("OPSBOOK_RECORDS", str(store))
    sets = tmp_path / "parameters"
    (sets / "alpha").mkdir(parents=True)
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        f"daemon_hosts:\n  hosts:\n    alpha:\n  vars:\n    opsbook_parameter_sets: {sets}\n"
    )
    yield store, inventory, monkeypatch
    assert not store.exists() or not any(store.rglob("*")), "something was filed"


def refused(capsys: pytest.CaptureFixture[str], argv: list[str], name: str) -> str:
    rc = main.main(argv)
    out, err = capsys.readouterr()
    assert rc == 2, (argv, out, err)
    assert out == "" and err.count("\n") == 1, (argv, err)
    assert f"parameter {name}" in err or f"-p {name}:" in err, (argv, err)
    return err


def pairs(given: dict[str, str]) -> list[str]:
    """``-p NAME VALUE`` each, ``-p NAME=VALUE`` for a value starting with '-' (argparse
    would read it as an option)."""
    found = []
    for name, value in given.items():
        found += ["-p", f"{name}={value}"] if value.startswith("-") else ["-p", name, value]
    return found


def three_ways(
    capsys: pytest.CaptureFixture[str],
    world: tuple[Path, Path, pytest.MonkeyPatch],
    runbook: str,
    given: dict[str, str],
    name: str,
    *,
    elsewhere_too: bool = True,
) -> None:
    store, inventory, _ = world
    values = {**GOOD[runbook], **given}
    refused(capsys, ["run", runbook, *pairs(values)], name)
    set_file = store.parent / f"{runbook}.yaml"
    set_file.write_text(yaml.safe_dump(values))
    refused(capsys, ["run", runbook, "-f", str(set_file)], name)
    fleet = ["fleet", "run", runbook, "-i", str(inventory), "--records", str(store)]
    if any(v.startswith("-") for v in given.values()):  # the host's set holds it too
        (store.parent / "parameters" / "alpha" / set_file.name).write_text(set_file.read_text())
        refused(capsys, fleet, name)
        (store.parent / "parameters" / "alpha" / set_file.name).unlink()
    if elsewhere_too:
        refused(capsys, [*fleet, *pairs(values)], name)
    else:  # a path that does not exist here may exist on the host: its opsbook run checks
        with pytest.raises(Reached):
            main.main([*fleet, *pairs(values)])
        capsys.readouterr()


@pytest.mark.parametrize(("runbook", "name", "value"), list(walk()))
def test_every_declared_input_refuses_bad_values_before_the_kernel(
    capsys: pytest.CaptureFixture[str],
    world: tuple[Path, Path, pytest.MonkeyPatch],
    runbook: str,
    name: str,
    value: str,
) -> None:
    three_ways(capsys, world, runbook, {name: value}, name, elsewhere_too=value != ON_THIS_MACHINE)


@pytest.mark.parametrize(
    ("runbook", "given", "name"), EXAMPLES, ids=[f"{r}-{n}" for r, _, n in EXAMPLES]
)
def test_what_a_user_met_is_refused_before_the_kernel(
    capsys: pytest.CaptureFixture[str],
    world: tuple[Path, Path, pytest.MonkeyPatch],
    runbook: str,
    given: dict[str, str],
    name: str,
) -> None:
    three_ways(capsys, world, runbook, given, name)


def test_the_good_values_pass_every_check(
    capsys: pytest.CaptureFixture[str], world: tuple[Path, Path, pytest.MonkeyPatch]
) -> None:
    """The walk's premise: with GOOD, only the value under test is wrong: the fleet's
    check passes and reaches Ansible, opsbook run reaches the kernel (the tripwire)."""
    _, inventory, _ = world
    for runbook in RUNBOOKS:
        with pytest.raises(Reached):
            main.main(["fleet", "run", runbook, "-i", str(inventory), *pairs(GOOD[runbook])])
        with pytest.raises(KernelStarted):
            main.main(["run", runbook, *pairs(GOOD[runbook])])
    capsys.readouterr()


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["-p", "mac", "-x"], "-p mac: no value; give -p mac VALUE (a value starting with '-'"),
        (["-p", "-x"], "-p needs a parameter's name and value: -p NAME VALUE"),
        (["-p"], "-p needs a parameter's name and value"),
        (["-p", "mac", "x", "y"], "-p mac x y: -p takes a name and one value"),
    ],
)
@pytest.mark.parametrize("command", [["run"], ["plan"], ["fleet", "run"], ["fleet", "plan"]])
def test_a_p_without_its_value_is_one_line_not_the_usage(
    capsys: pytest.CaptureFixture[str],
    world: tuple[Path, Path, pytest.MonkeyPatch],
    command: list[str],
    argv: list[str],
    words: str,
) -> None:
    """A value starting with '-' after -p is read by argparse as an option: the line
    says how to give it (-p NAME=-VALUE), instead of the usage and "expected 2 arguments"."""
    _, inventory, _ = world
    fleet = ["-i", str(inventory)] if command[0] == "fleet" else []
    rc = main.main([*command, "netreg-attach", *fleet, *argv])
    out, err = capsys.readouterr()
    assert rc == 2 and out == "" and err.startswith("opsbook: -p") and err.count("\n") == 1, err
    assert words in err and "usage:" not in err, err


def test_a_value_starting_with_a_dash_is_given_as_name_equals_value(
    capsys: pytest.CaptureFixture[str], world: tuple[Path, Path, pytest.MonkeyPatch]
) -> None:
    """-p mac=-x reaches the parameter's type (and is refused there), -p vm=test with the
    rest passes every check: NAME=VALUE is a parameter like NAME VALUE."""
    err = refused(capsys, ["run", "netreg-attach", "-p", "mac=-x", "-p", "vm", "test"], "mac")
    assert "'-x' is not a MAC address" in err
    given = ["-p", "libvirt_uri=test:///default", "-p", "mac=52:54:00:12:34:56", "-p", "vm=test"]
    with pytest.raises(KernelStarted):
        main.main(["run", "netreg-attach", *given, "-p", "network", "default"])
