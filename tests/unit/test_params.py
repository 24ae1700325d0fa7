"""Parameter declarations and types: what a wrong value tells the operator."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import REPO_NOTEBOOKS

from opslib.core import params
from opslib.core.errors import InputError
from opslib.host.libvirt import virt

CELL = """\
host = "lab"  # host: the host name records are filed under
libvirt_uri = "qemu:///system"  # libvirt-uri: libvirt connection of the host
netns = ""  # netns: network namespace ("" = this one)
vm = ""  # vm?: one VM, or empty for all
count: int = 3  # int: how many
mode = "dry"  # choice[dry|wet]: how to run
apply = False  # bool: make the changes (False shows the plan only)
note = "a # not a comment"  # str: text with a hash inside the value
"""


def test_declarations_read_names_types_defaults_and_help() -> None:
    decls = params.parse_declarations(CELL)
    assert [(p.name, p.type_label, p.default) for p in decls] == [
        ("host", "host", "lab"),
        ("libvirt_uri", "libvirt-uri", "qemu:///system"),
        ("netns", "netns", ""),
        ("vm", "vm?", ""),
        ("count", "int", 3),
        ("mode", "choice[dry|wet]", "dry"),
        ("apply", "bool", False),
        ("note", "str", "a # not a comment"),
    ]
    assert decls[0].help == "the host name records are filed under"
    assert decls[5].choices == ("dry", "wet")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("x = 1\n", "x has no type comment; write `x = ...  # TYPE: help`"),
        ("x = 1  # integer: n\n", "unknown parameter type 'integer'"),
        ('x = "a"  # choice[]: n\n', "choice needs options"),
        ("x = f(1)  # int: n\n", "the default must be a literal"),
    ],
)
def test_bad_declarations_say_how_to_fix_them(source: str, message: str) -> None:
    with pytest.raises(InputError, match=r"^(parameters cell|line)") as err:
        params.parse_declarations(source)
    assert message in str(err.value)


def test_text_values_convert_to_the_declared_type_never_guessed() -> None:
    decls = params.parse_declarations(CELL)
    values = params.validate(decls, {"count": "010", "apply": "yes", "note": "010"})
    assert values["count"] == 10 and values["apply"] is True and values["note"] == "010"


def test_unknown_parameter_suggests_the_close_name() -> None:
    with pytest.raises(InputError, match="no parameter named 'cuont'; did you mean count"):
        params.validate(params.parse_declarations(CELL), {"cuont": "1"})


def test_required_value_missing_names_the_flag() -> None:
    p = params.Param("zone", "str", "")
    with pytest.raises(InputError, match=r"needs a value; give -p zone VALUE"):
        p.convert("")
    assert params.Param("vm", "vm", "", optional=True).convert("") == ""


def conv(type_: str, value: object) -> object:
    return params.Param("x", type_, None).convert(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("yo:ug:ot:fr:om:nr", "the wiki's placeholder"),
        ("52:54:00:12:34", "not a MAC address"),
        ("01:00:5e:00:00:01", "multicast MAC"),
        ("00:00:00:00:00:00", "not a usable MAC"),
    ],
)
def test_mac_rejects_placeholder_malformed_multicast_and_zero(value: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        conv("mac", value)


def test_mac_is_normalised() -> None:
    assert conv("mac", "52-54-00-AB-CD-EF") == "52:54:00:ab:cd:ef"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2001:db8:2::/48", "not a /64"),
        ("2001:db8:2::", "not a /64"),
        ("2001:db8:2::1/64", "host bits set; the prefix is 2001:db8:2::/64"),
        ("fe80::/64", "link-local"),
        ("ff02::/64", "multicast"),
        ("192.0.2.0/24", "not an IPv6 prefix"),
        # ::/64 holds the unspecified address and the loopback (nat-bridge-ipv6 planned ::1)
        ("::/64", "unspecified"),
        ("0:0::/64", "loopback"),
        ("fe80:0:0:1::/64", "link-local"),
        ("fec0::/64", "site-local"),
        ("2001:db8:2::%eth0/64", "zone index %eth0"),
    ],
)
def test_ipv6_prefix64_rejects_what_slaac_cannot_use(value: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        conv("ipv6-prefix64", value)


def test_ipv6_prefix64_accepts_a_routed_64() -> None:
    assert conv("ipv6-prefix64", "2001:DB8:2:0::/64") == "2001:db8:2::/64"


@pytest.mark.parametrize(
    ("type_", "good", "bad"),
    [
        ("libvirt-uri", "qemu:///system?socket=/var/tmp/x/libvirt-sock", "qemu://system"),
        ("libvirt-uri", "test:///default", "not a uri"),
        ("host", "daemon-1.example.org", "bad_host"),
        ("netns", "ob-host", "../etc"),
        ("ipv4", "192.0.2.10", "192.0.2.300"),
        ("ipv6", "2001:db8::1", "2001:db8::g"),
        ("int", "-3", "3.5"),
        ("bool", "off", "maybe"),
        ("vm", "vm-nat1", "a/b"),
    ],
)
def test_types_accept_good_and_reject_bad(type_: str, good: str, bad: str) -> None:
    conv(type_, good)
    with pytest.raises(InputError, match=r"^parameter x \("):
        conv(type_, bad)


def test_secret_takes_a_source_and_never_echoes_a_value() -> None:
    assert conv("secret", "file:/etc/opsbook/token") == "file:/etc/opsbook/token"
    assert conv("secret", "env:CF_API_TOKEN") == "env:CF_API_TOKEN"
    with pytest.raises(InputError) as err:
        conv("secret", "hunter2-the-token")
    assert "hunter2" not in str(err.value) and "file:/path or env:NAME" in str(err.value)


def test_read_runbook_finds_purpose_and_parameters(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    nb = {
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": "# demo\n\nDoes a thing.\n\nMore."},
            {
                "cell_type": "code",
                "metadata": {"tags": ["parameters"]},
                "source": CELL,
                "outputs": [],
                "execution_count": None,
            },
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path = tmp_path / "demo.ipynb"
    path.write_text(json.dumps(nb))
    info = params.read_runbook(path)
    assert (info.name, info.purpose, len(info.params)) == ("demo", "Does a thing.", 8)


def test_vm_names_are_checked_against_libvirt() -> None:
    decls = [params.Param("libvirt_uri", "libvirt-uri", ""), params.Param("vm", "vm", "")]
    virt.check_names(decls, {"libvirt_uri": "test:///default", "vm": "test"})
    with pytest.raises(InputError, match="no VM named 'tset'; did you mean test"):
        virt.check_names(decls, {"libvirt_uri": "test:///default", "vm": "tset"})


def test_an_unreachable_libvirt_is_one_line_from_opslib_virt(tmp_path: Path) -> None:
    # params reads declarations and values; the libvirt connection is opslib.host.libvirt.virt's,
    # which
    # translates libvirt's error once, with what libvirt said (here: the file is missing;
    # libvirtd has nothing to do with the test driver).
    uri = f"test://{tmp_path}/no-such-host.xml"
    decls = [params.Param("libvirt_uri", "libvirt-uri", ""), params.Param("net", "network", "")]
    with pytest.raises(InputError) as caught:
        virt.check_names(decls, {"libvirt_uri": uri, "net": "default"})
    message = str(caught.value)
    assert message == (
        f"parameter net: cannot connect to libvirt at {uri}: the test driver's file "
        f"{tmp_path}/no-such-host.xml does not exist"
    ), message
    assert "libvirtd" not in message


def test_a_libvirtd_that_does_not_answer_its_socket_is_named(tmp_path: Path) -> None:
    uri = f"qemu:///system?socket={tmp_path}/libvirt-sock"
    decls = [params.Param("libvirt_uri", "libvirt-uri", ""), params.Param("net", "network", "")]
    with pytest.raises(InputError) as caught:
        virt.check_names(decls, {"libvirt_uri": uri, "net": "default"})
    message = str(caught.value)
    assert message.startswith(f"parameter net: cannot connect to libvirt at {uri}: "), message
    assert f"Failed to connect socket to '{tmp_path}/libvirt-sock'" in message
    assert message.endswith("(is libvirtd running?)") and "\n" not in message


# -- numeric ranges, interface names, the host default -----------------------------------

RANGED = """\
deadline = 60.0  # float[1..3600]: seconds until the bridge must work
mtu = 1480  # int[1280..1480]: tunnel MTU
retries = 3  # int[0..]?: how often
scale = 1.0  # float[..2.5]: a factor
"""


def test_numeric_ranges_are_declared_in_the_type_and_shown_in_its_label() -> None:
    decls = params.parse_declarations(RANGED)
    assert [p.type_label for p in decls] == [
        "float[1..3600]",
        "int[1280..1480]",
        "int[0..]?",
        "float[..2.5]",
    ]
    assert params.validate(decls, {"deadline": "1", "mtu": "1480", "retries": ""}) == {
        "deadline": 1.0,
        "mtu": 1480,
        "retries": None,
        "scale": 1.0,
    }


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("deadline", "-5", "parameter deadline (float[1..3600]): -5 is out of range; "
         "give a value from 1 to 3600"),
        ("deadline", "nan", "nan is out of range; give a value from 1 to 3600"),
        ("mtu", "1500", "1500 is out of range; give a value from 1280 to 1480"),
        ("retries", "-1", "-1 is out of range; give a value of at least 0"),
        ("scale", "3", "3 is out of range; give a value of at most 2.5"),
    ],
)  # fmt: skip
def test_a_value_outside_its_range_is_refused_in_one_line(
    name: str, value: str, message: str
) -> None:
    with pytest.raises(InputError) as err:
        params.validate(params.parse_declarations(RANGED), {name: value})
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("int[1-3600]", "cannot read the range [1-3600]; write int[MIN..MAX], e.g. int[1..3600]"),
        ("int[..]", "cannot read the range [..]"),
        ("int[0.5..3]", "the range [0.5..3] of an int needs whole numbers"),
        ("float[10..1]", "the range [10..1] is empty"),
        ("str[1..3]", "unknown parameter type 'str[1..3]'"),
    ],
)
def test_bad_ranges_say_how_to_write_one(spec: str, message: str) -> None:
    with pytest.raises(InputError) as err:
        params.parse_declarations(f"x = 1  # {spec}: a number\n")
    assert message in str(err.value)


@pytest.mark.parametrize("bad", ["eth0;reboot", "eth0 reboot", "$(reboot)", "a" * 16, "-x", ".."])
def test_interface_names_are_a_type_refused_before_the_run(bad: str) -> None:
    assert conv("ifname", "eth0") == "eth0" and conv("ifname", "he-ipv6") == "he-ipv6"
    with pytest.raises(InputError, match=r"^parameter x \(ifname\): .* is not an interface name"):
        conv("ifname", bad)


def test_an_empty_host_stands_for_this_machine() -> None:
    import socket

    assert params.Param("host", "host", "").convert("") == ""
    assert params.this_host() == socket.gethostname()
    with pytest.raises(InputError, match="'bad_host' is not a host name"):
        conv("host", "bad_host")


# -- the runbooks in notebooks/ ----------------------------------------------------------

NOTEBOOKS = sorted(REPO_NOTEBOOKS.glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runbooks_declare_ranges_interface_names_and_no_lab_host(path: Path) -> None:
    decls = params.read_runbook(path).params
    for p in decls:
        if p.type in ("int", "float"):
            assert p.low is not None or p.high is not None, f"{p.name}: declare its range"
        if p.name in ("uplink", "bridge", "tunnel"):
            assert p.type == "ifname", f"{p.name}: an interface name is an ifname"
        if p.name == "host":
            # the machine it runs on; "lab" only comes from parameters/lab/
            assert p.default == "", p.default


def test_address_types_name_the_family_they_want() -> None:
    from opslib.core.params import Param

    assert Param("a", "ipv4", "").convert(" 192.0.2.1 ") == "192.0.2.1"
    assert Param("a", "ipv6", "").convert("2001:DB8::1") == "2001:db8::1"
    with pytest.raises(InputError, match=r"'2001:db8::1' is not an IPv4 address"):
        Param("a", "ipv4", "").convert("2001:db8::1")
    with pytest.raises(InputError, match=r"'192.0.2.1' is not an IPv6 address"):
        Param("a", "ipv6", "").convert("192.0.2.1")


# -- bad values through `opsbook run`: exit 2, one line, before any kernel ------------------


def run_refused(store: Path, runbook: str, *given: str) -> str:
    """``opsbook run RUNBOOK -p ...`` that must stop before a kernel: its one stderr line."""
    import os
    import subprocess
    import sys

    argv = [sys.executable, "-m", "opslib.cli.main", "run", runbook, "--records", str(store)]
    for pair in given:
        argv += ["-p", *pair.split("=", 1)]
    env = {**os.environ, "OPSBOOK_NOTEBOOKS": str(REPO_NOTEBOOKS), "OPSBOOK_RECORDS": str(store)}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert not list(store.rglob("*.ipynb")), "a record was filed: the kernel ran"
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    return done.stderr.strip()


def test_a_prefix_that_is_not_routable_is_refused_before_the_kernel(tmp_path: Path) -> None:
    line = run_refused(tmp_path, "nat-bridge-ipv6", "prefix=::/64", "libvirt_uri=test:///default")
    assert "parameter prefix (ipv6-prefix64): '::/64' is the unspecified" in line
    assert "2001:db8:2::/64" in line  # what to write instead
    line = run_refused(tmp_path, "nat-bridge-ipv6", "prefix=2001:db8:2::%eth0/64")
    assert "zone index %eth0" in line and "host bits" not in line


def test_dir_is_a_directory_that_exists(tmp_path: Path) -> None:
    assert conv("dir", str(tmp_path)) == str(tmp_path)
    with pytest.raises(InputError, match=r"^parameter x \(dir\): '/nonexistent' does not exist"):
        conv("dir", "/nonexistent")
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="is a file, not a directory"):
        conv("dir", str(tmp_path / "file"))
    assert params.Param("x", "dir", "", optional=True).convert("") == ""


def test_a_missing_backup_or_records_dir_is_refused_before_the_kernel(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    line = run_refused(store, "forward-bridge", "backup_dir=/nonexistent")
    assert line.startswith("opsbook: forward-bridge: parameter backup_dir (dir?): "), line
    assert "'/nonexistent' does not exist" in line
    # records-review reported an empty store as a success
    line = run_refused(store, "records-review", f"records_dir={tmp_path}/no-store")
    assert f"parameter records_dir (dir?): '{tmp_path}/no-store' does not exist" in line


# -- the declared types that carry the rule (issue 22) ------------------------------------


@pytest.mark.parametrize(
    ("kind", "value", "words"),
    [
        ("ipv4-cidr", "garbage", "not an IPv4 address with prefix; write it like 192.0.2.10/24"),
        ("ipv4-cidr", "192.0.2.10", "needs a prefix length below 31"),
        ("ipv4-cidr", "192.0.2.0/24", "the network's own or broadcast address"),
        ("ipv6", "fe80::1%eth0", "has a zone index (%eth0)"),
        ("ipv6-global", "fe80::1", "link-local; give a global IPv6 address"),
        ("ipv6-global", "fd00::1", "unique-local"),
        ("ipv6-cidr64", "garbage", "not an IPv6 address"),
        ("ipv6-cidr64", "2001:db8:1::2/48", "needs its /64"),
        ("ipv6-prefix64", "fd00:1::/64", "unique-local (fc00::/7)"),
        ("ipv6-prefix48", "2001:db8::/32", "is not a /48; write it like 2001:db8:48::/48"),
        ("ipv6-prefix48", "2001:db8:48::1/48", "has host bits set; the prefix is 2001:db8:48::/48"),
        ("room-hosts", "daemon2 2001:db8:48:2::/64", "is not HOST PREFIX/64 via ADDRESS"),
        ("room-hosts", "d2 2001:db8:48:2::/64 via fe80::2", "not the host's global address"),
        ("ifname", "-eth0", "not an interface name"),
        ("network-name", "a/b", "not a network name"),
        ("network", "-x", "starts with '-'"),
        ("account", "root; rm -rf /", "not an account name"),
        ("account", "root", "root is the superuser"),
        ("group", "Wheel", "not a group name"),
        ("dns-name", "a..example.org", "not a DNS name"),
        ("dns-zone", "org", "not a registered domain"),
        ("https-url", "javascript:alert(1)", "not an https URL"),
        ("https-url", "http://192.0.2.1/v4", "would travel unencrypted"),
        ("path", "etc/network/interfaces", "is relative; give an absolute path"),
        ("file", "/nonexistent", "does not exist; give an existing file"),
        ("file", "/", "is a directory, not a file"),
        ("timespan", "5 fortnights", "not a systemd time span"),
        ("secret", "file:relative/token", "absolute path: file:/path"),
        ("int[1|60..86400]", "30", "30 is out of range; give 1 or 60 to 86400"),
    ],
)
def test_each_type_refuses_in_one_line_with_the_fix(kind: str, value: str, words: str) -> None:
    (p,) = params.parse_declarations(f'x = ""  # {kind}: x\n')
    with pytest.raises(InputError) as err:
        p.convert(value)
    assert str(err.value).startswith(f"parameter x ({kind}): ") and words in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("kind", "value", "typed"),
    [
        ("ipv4-cidr", " 192.0.2.10/24 ", "192.0.2.10/24"),
        ("ipv6-cidr64", "2001:DB8:1::2/64", "2001:db8:1::2/64"),
        ("ipv6-global", "2001:DB8::5", "2001:db8::5"),
        ("dns-name", "VM1.Example.org.", "vm1.example.org"),
        ("dns-name", "*.example.org", "*.example.org"),
        ("https-url", "http://127.0.0.1:8080/v4", "http://127.0.0.1:8080/v4"),
        ("timespan", "1h 30min", "1h 30min"),
        ("int[1|60..86400]", "1", 1),
        ("int[1|60..86400]", "86400", 86400),
    ],
)
def test_each_type_gives_its_value_normalised(kind: str, value: str, typed: object) -> None:
    (p,) = params.parse_declarations(f'x = ""  # {kind}: x\n')
    assert p.convert(value) == typed and p.convert(typed) == typed  # converting twice: same


def test_a_range_with_holes_reads_back_as_declared() -> None:
    (p,) = params.parse_declarations("ttl = 1  # int[1|60..86400]: TTL\n")
    assert p.type_label == "int[1|60..86400]" and (p.low, p.high) == (1, 86400)


RULES = """\
address = ""  # ipv4-cidr? (needs gateway): static address
gateway = ""  # ipv4? (needs address, in address): router
zone = "example.org"  # dns-zone: zone
name = "vm.example.org"  # dns-name (in zone): record
vm = ""  # vm? (or address6): one VM
address6 = "2001:db8::5"  # ipv6?: or its address
prefix = "2001:db8:2::/64"  # ipv6-prefix64 (ula if allow_ula): routed
allow_ula = False  # bool: allow a unique-local prefix
uplink = "eth0"  # ifname (not bridge): the bridge's port
bridge = "br0"  # ifname: the bridge
client = "2001:db8:1::2/64"  # ipv6-cidr64: the tunnel's end
routed = "2001:db8:3::/64"  # ipv6-prefix64 (not in client): routed to us
mode = "print"  # choice[attach|print] (attach needs vm): what to do
ttl = 1  # int[1|60..86400] (1 if proxied): TTL, 1 = automatic
proxied = False  # bool: proxied
"""


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ({"address": "192.0.2.10/24"}, "parameter address: needs gateway too"),
        ({"gateway": "192.0.2.1"}, "parameter gateway: needs address too"),
        ({"address": "192.0.2.10/24", "gateway": "198.51.100.1"}, "not another address in"),
        ({"address": "192.0.2.10/24", "gateway": "192.0.2.10"}, "not another address in"),
        ({"name": "vm.example.net"}, "parameter name: vm.example.net is not in zone example.org"),
        ({"address6": ""}, "parameter vm: give vm or address6"),
        ({"prefix": "fd00:1::/64"}, "set allow_ula to use it anyway"),
        ({"bridge": "eth0"}, "parameter uplink: eth0 is bridge too; give uplink and bridge two"),
        ({"routed": "2001:db8:1::/64"}, "parameter routed: 2001:db8:1::/64 overlaps client's"),
        ({"client": "2001:db8:3::1/64"}, "overlaps client's network 2001:db8:3::/64"),
        ({"mode": "attach"}, "parameter mode: attach needs vm; give vm, or mode print"),
        ({"proxied": "true", "ttl": "300"}, "parameter ttl: 300 cannot go with proxied true"),
    ],
)
def test_rules_between_two_parameters_are_checked_with_the_types(
    given: dict[str, str], words: str
) -> None:
    decls = params.parse_declarations(RULES)
    with pytest.raises(InputError) as err:
        params.validate(decls, given)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_rules_that_hold_pass_and_are_part_of_the_declaration() -> None:
    decls = params.parse_declarations(RULES)
    values = params.validate(
        decls,
        {"address": "192.0.2.10/24", "gateway": "192.0.2.1", "prefix": "fd00:1::/64",
         "allow_ula": "true", "name": "Example.org", "address6": "2001:db8::5",
         "mode": "attach", "vm": "test", "ttl": "300"},
    )  # fmt: skip
    assert values["gateway"] == "192.0.2.1" and values["prefix"] == "fd00:1::/64"
    assert decls[1].declared == "ipv4? (needs address, in address)"
    assert [p.declared for p in decls[-3:]] == [
        "choice[attach|print] (attach needs vm)", "int[1|60..86400] (1 if proxied)", "bool",
    ]  # fmt: skip
    assert params.validate(decls, {"proxied": "true"})["ttl"] == 1
    with pytest.raises(InputError, match="'needs nothing' names no other parameter"):
        params.parse_declarations('x = ""  # str? (needs nothing): x\n')
    with pytest.raises(InputError, match="cannot read the rule 'implies x'"):
        params.parse_declarations('x = ""  # str? (implies x): x\n')


def test_elsewhere_a_directory_or_file_is_checked_as_a_path_only(tmp_path: Path) -> None:
    # the fleet's check runs on the workstation; the directory is on the target host
    decls = params.parse_declarations('d = ""  # dir?: d\nf = ""  # file?: f\n')
    given = {"d": "/srv/on-the-host", "f": "/etc/on-the-host"}
    assert params.validate(decls, given, here=False) == given
    with pytest.raises(InputError, match="does not exist"):
        params.validate(decls, given)
