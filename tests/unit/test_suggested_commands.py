"""Every command opsbook suggests (a check's fix) quotes what it inserts: pasted into a
root shell, it runs exactly the command meant, whatever a network or VM is called.

Hostile names are real libvirt objects on the test:/// driver (a node of our own), seen
through the same code paths as on a host.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from opslib.host.libvirt import netxml
from opslib.procedures import host_health
from opslib.procedures import network_inventory as ni
from opslib.records import store as records

HOSTILE = [
    "lab;touch pwned",
    "lab$(touch pwned)",
    "lab`touch pwned`",
    "lab && rm -rf x",
    "lab|tee pwned",
    "lab'quote",
    "lab>pwned",
]

NODE = """<node xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
<network><name>{name}</name><forward mode='nat'/><bridge name='obtestbr9'/>
  <ip address='198.51.100.1' prefix='24'/></network>
<domain type='test'><name>{name}</name><memory>65536</memory><os><type>hvm</type></os>
  <test:runstate>5</test:runstate></domain>
</node>
"""

META = set(";&|<>()$`\n")


def unquoted_metacharacters(line: str) -> str:
    """The shell metacharacters of ``line`` that a shell would act on: those outside
    single quotes (inside double quotes ``$`` and backquote still act), none escaped."""
    out, quote, chars = [], "", iter(line)
    for ch in chars:
        if quote == "'":
            quote = "" if ch == "'" else quote
        elif ch == "\\":
            next(chars, "")
        elif ch in "'\"" and quote in ("", ch):
            quote = "" if quote else ch
        elif ch in META and (not quote or ch in "$`"):
            out.append(ch)
    return "".join(out)


def node(tmp_path: Path, name: str) -> str:
    path = tmp_path / "node.xml"
    path.write_text(NODE.format(name=escape(name)))
    return f"test://{path}"


def published(tmp_path: Path, vm: str) -> str:
    """A record store in which cloudflare-aaaa published an AAAA for ``vm``."""
    store = records.Store(tmp_path / "records")
    header = {
        "runbook": "cloudflare-aaaa", "host": "h1", "start": "2026-01-01T00:00:00Z",
        "end": "2026-01-01T00:00:00Z", "status": "ok", "exit_code": 0, "summary": "",
        "parameters": {"vm": vm, "record_name": "vm.example.org", "zone": "example.org",
                       "token": "file:/t", "apply": True},
    }  # fmt: skip
    store.add(header, {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []})
    return str(tmp_path / "records")


def fixes(tmp_path: Path, name: str) -> dict[str, str]:
    """Every fix host-health and network-inventory suggest for objects called ``name``."""
    uri = node(tmp_path, name)
    checks = ni.checks(libvirt_uri=uri, netns="")
    checks += host_health.libvirt_checks(uri, {name: "nat-bridge-ipv6"})
    blocker = tmp_path / name  # a file where the record store should be: "fix <path>"
    blocker.write_text("")
    checks += host_health.records_checks(str(blocker / "records"))
    checks += host_health.dns_checks(
        host="h1", libvirt_uri=uri, netns="", records_dir=published(tmp_path, name),
        token="", api_base_url="",
    )  # fmt: skip
    checks += host_health.reboot_checks(
        host="h1", libvirt_uri=uri, forward_network="", bridge="",
        records_dir=published(tmp_path, name),
    )  # fmt: skip
    bridge = ni.BridgeView(name, False, "DOWN", (), (), "")
    on = netxml.parse_network(
        NODE_NET.format(name=escape(name, {"'": "&apos;"})), active=True, autostart=True
    )
    net = ni.Observed((on,), {name: bridge}, {})
    checks += ni.problems(net)
    return {c.name: c.fix for c in checks if c.fix}


NODE_NET = "<network><name>x</name><forward mode='nat'/><bridge name='{name}'/></network>"


def test_a_hostile_network_name_gives_exactly_the_intended_argv(tmp_path: Path) -> None:
    name = "lab;touch pwned"
    found = fixes(tmp_path, name)
    assert shlex.split(found[f"network {name} autostart"]) == ["virsh", "net-autostart", name]
    destroy, start = found[f"network {name} bridge"].split(" && ")
    assert shlex.split(destroy) == ["virsh", "net-destroy", name]
    assert shlex.split(start) == ["virsh", "net-start", name]
    assert shlex.split(found[f"network {name}"]) == ["virsh", "net-autostart", name]
    assert shlex.split(found["DNS vm.example.org"]) == ["virsh", "start", name]
    assert shlex.split(found[f"guest {name} comes back after a reboot"]) == [
        "virsh", "autostart", name,
    ]  # fmt: skip
    assert shlex.split(found["network x bridge"]) == ["ip", "link", "set", name, "up"]


def test_the_scan_sees_an_unquoted_metacharacter() -> None:
    assert unquoted_metacharacters("virsh net-start lab;touch pwned") == ";"
    assert unquoted_metacharacters('virsh start "lab$(id)" && x') == "$&&"
    assert unquoted_metacharacters(shlex.join(["virsh", "start", "lab';$(id)`"])) == ""


@pytest.mark.parametrize("name", HOSTILE)
def test_no_fix_holds_an_unquoted_metacharacter(tmp_path: Path, name: str) -> None:
    (tmp_path / "benign").mkdir()
    benign = fixes(tmp_path / "benign", "labnet")
    found = {check.replace(name, "labnet"): fix for check, fix in fixes(tmp_path, name).items()}
    assert found.keys() == benign.keys() and len(found) >= 7, found
    for check, fix in found.items():
        # a hostile name adds no metacharacter the shell would act on to any fix
        want = unquoted_metacharacters(benign[check])
        assert unquoted_metacharacters(fix) == want, (check, fix)


def test_netreg_attachs_virt_install_argument_is_one_quoted_argument() -> None:
    from opslib.procedures import netreg_attach

    name = "lab;touch pwned"
    arg = netreg_attach.virt_install_argument("52:54:00:0b:00:01", name)
    assert shlex.split(f"virt-install {arg}") == [
        "virt-install", "--network", f"network={name},mac=52:54:00:0b:00:01",
    ]  # fmt: skip
    assert netreg_attach.virt_install_argument("52:54:00:0b:00:01", "forward-bridge") == (
        "--network network=forward-bridge,mac=52:54:00:0b:00:01"
    )
