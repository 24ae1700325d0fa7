"""host-health's checks, on libvirt's test driver and real files (no lab needed)."""

from __future__ import annotations

import os
from pathlib import Path

from opslib.core.changes import Check
from opslib.procedures import host_health
from opslib.records import store as records


def test_a_failing_check_fails_the_result_and_is_named_in_the_summary() -> None:
    checks = [
        Check("libvirtd reachable", "ok", "x"),
        Check("br0 up", "fail", "down", "ip link set br0 up"),
        Check("DNS", "warn", "no token"),
    ]
    result = host_health.result_of("h1", checks)
    assert result.failed and result.status == "failed"
    assert result.summary == "1 check failed: br0 up"
    assert result.checks[1].fix == "ip link set br0 up"


def test_warnings_alone_pass_but_are_named() -> None:
    result = host_health.result_of("h1", [Check("a", "ok", ""), Check("DNS", "warn", "no token")])
    assert not result.failed
    assert result.summary == "all 2 checks passed (1 warn: DNS)"


def test_networks_on_the_test_driver() -> None:
    checks = host_health.libvirt_checks(
        "test:///default", {"default": "nat-bridge-ipv6", "forward-bridge": "forward-bridge"}
    )
    by_name = {c.name: c for c in checks}
    assert by_name["libvirtd reachable"].status == "ok"
    # The test driver's default network is active but not autostarted.
    assert by_name["network default"].status == "fail"
    assert "no autostart" in by_name["network default"].seen
    assert by_name["network default"].fix == "virsh net-autostart default"
    assert by_name["network forward-bridge"].seen == "not defined"
    assert by_name["network forward-bridge"].fix == "run the forward-bridge runbook"


def test_unreachable_libvirtd_is_a_failure_with_a_fix(tmp_path: Path) -> None:
    uri = f"qemu:///system?socket={tmp_path}/no-such-sock"
    (check,) = host_health.libvirt_checks(uri, {"default": "nat-bridge-ipv6"})
    assert check.name == "libvirtd reachable" and check.status == "fail"
    assert "start libvirtd" in check.fix


def test_a_check_group_that_crashes_is_a_warn_not_a_crash() -> None:
    def broken() -> list[Check]:
        raise RuntimeError("boom")

    checks = host_health.run_groups({"ok": lambda: [Check("fine", "ok", "")], "bad": broken})
    assert [(c.name, c.status) for c in checks] == [("fine", "ok"), ("bad", "warn")]
    assert "RuntimeError: boom" in checks[1].seen


def test_records_store_writable_and_space(tmp_path: Path) -> None:
    ok = host_health.records_checks(str(tmp_path / "records"))
    assert [c.status for c in ok] == ["ok", "ok"]
    blocker = tmp_path / "file"
    blocker.write_text("")
    (bad,) = host_health.records_checks(str(blocker / "records"))
    assert bad.name == "records writable" and bad.status == "fail"


def _file(store: records.Store, status: str, params: dict[str, object], start: str) -> None:
    header = {
        "runbook": "cloudflare-aaaa",
        "host": "h1",
        "start": start,
        "end": start,
        "status": status,
        "exit_code": 0 if status == "ok" else 1,
        "parameters": params,
        "summary": "",
    }
    store.add(header, {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []})


def test_managed_dns_records_come_from_successful_applies_newest_first(tmp_path: Path) -> None:
    store = records.Store(tmp_path)
    base = {"vm": "vm1", "zone": "example.org", "token": "file:/t", "apply": True}
    _file(store, "ok", {**base, "record_name": "a.example.org"}, "2026-01-01T00:00:00Z")
    _file(
        store, "ok", {**base, "record_name": "a.example.org", "vm": "vm2"}, "2026-01-02T00:00:00Z"
    )
    _file(store, "failed", {**base, "record_name": "b.example.org"}, "2026-01-03T00:00:00Z")
    _file(
        store,
        "ok",
        {**base, "record_name": "c.example.org", "apply": False},
        "2026-01-03T00:00:00Z",
    )
    managed = host_health.managed_dns_records(str(tmp_path), "h1")
    assert [(m["record_name"], m["vm"]) for m in managed] == [("a.example.org", "vm2")]


def test_a_tunnel_without_its_addresses_is_bad_input_before_any_check() -> None:
    import pytest

    from opslib.core.errors import InputError

    with pytest.raises(InputError, match="needs client_ipv6"):
        host_health.run(host="h1", libvirt_uri="test:///default", tunnel="he-ipv6")


def _guest_with_ipv4_only(monkeypatch, network: str = "default") -> None:  # type: ignore[no-untyped-def]
    from opslib.procedures import find_vm_ip
    from opslib.procedures.find_vm_ip.vm_addresses import NicAddresses, SeenAddress, VmAddresses

    seen = (SeenAddress("ipv4", "198.51.100.7", "lease"),)
    nic = NicAddresses("vm-nat1", "52:54:00:0b:00:01", network, "virbr0", seen)
    vm = VmAddresses("vm-nat1", "running", (nic,))
    monkeypatch.setattr(find_vm_ip, "find", lambda **_: [vm])


def test_a_guest_without_ipv6_fails_only_where_the_nat_network_routes_a_64(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    _guest_with_ipv4_only(monkeypatch)
    (routed,) = host_health.guest_checks(libvirt_uri="x", netns="", nat_network="default")
    assert routed.status == "fail" and "no global IPv6 on default" in routed.seen
    (bare,) = host_health.guest_checks(libvirt_uri="x", netns="", nat_network="")
    assert (bare.status, bare.seen) == ("ok", "198.51.100.7")


def test_a_bare_host_without_a_routed_prefix_passes_its_ipv4_guest(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _guest_with_ipv4_only(monkeypatch)
    result = host_health.run(
        host="h1", libvirt_uri="test:///default", nat_network="default", forward_network="",
        bridge="", records_dir=str(tmp_path),
    )  # fmt: skip
    guests = [c for c in result.checks if c.name == "guest vm-nat1"]
    assert [c.status for c in guests] == ["ok"], result.checks


# -- guests come back after a reboot (issue 21: after a power cycle the guests stayed off)

NODE = """<node xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
<network><name>forward-bridge</name><forward mode='bridge'/><bridge name='br0'/></network>
{domains}
</node>
"""
DOMAIN = """<domain type='test'><name>{name}</name><memory>65536</memory>
<os><type>hvm</type></os>{state}<devices>{nic}</devices></domain>"""
NICS = {
    "forward": "<interface type='network'><mac address='{mac}'/>"
    "<source network='forward-bridge'/></interface>",
    "br0": "<interface type='bridge'><mac address='{mac}'/><source bridge='br0'/></interface>",
    "nat": "<interface type='network'><mac address='{mac}'/><source network='nat-bridge'/>"
    "</interface>",
}
GUESTS = {  # name: (NIC, running)
    "vm-fwd": ("forward", True),  # NetReg MAC, autostart off
    "vm-br": ("br0", True),  # NetReg MAC on the host bridge itself, autostart off
    "vm-auto": ("forward", True),  # NetReg MAC, autostart on
    "vm-nat1": ("nat", False),  # AAAA published, shut off
    "vm-plain": ("nat", True),  # made reachable by no runbook
}


def node_file(tmp_path: Path) -> Path:
    domains = [
        DOMAIN.format(
            name=name,
            state="" if running else "<test:runstate>5</test:runstate>",
            nic=NICS[nic].format(mac=f"52:54:00:0b:01:{n:02x}"),
        )
        for n, (name, (nic, running)) in enumerate(GUESTS.items())
    ]
    path = tmp_path / "node.xml"
    path.write_text(NODE.format(domains="\n".join(domains)))
    return path


def test_reachable_guests_not_set_to_autostart_warn_before_any_reboot(tmp_path: Path) -> None:
    from opslib.host.libvirt import virt
    from opslib.procedures.host_health import guest_reboot

    # one connection: a test:///FILE node keeps a setAutostart only as long as it lives
    with virt.connect(f"test://{node_file(tmp_path)}") as conn:
        conn.lookupByName("vm-auto").setAutostart(1)
        domains = virt.list_domains(conn)
    published = {"vm-nat1": ["vm-nat1.example.org"]}
    checks = guest_reboot.come_back(
        domains, forward_network="forward-bridge", bridge="br0", published=published
    )
    by_name = {c.name: c for c in checks}
    assert sorted(by_name) == [
        f"guest {vm} comes back after a reboot" for vm in ("vm-br", "vm-fwd", "vm-nat1")
    ]
    assert {c.status for c in checks} == {"warn"}  # before any reboot: nothing is down yet
    fwd = by_name["guest vm-fwd comes back after a reboot"]
    assert fwd.fix == "virsh autostart vm-fwd"
    assert "autostart off" in fwd.seen and "52:54:00:0b:01:00 on forward-bridge" in fwd.seen
    nat = by_name["guest vm-nat1 comes back after a reboot"]
    assert nat.fix == "virsh autostart vm-nat1" and "AAAA vm-nat1.example.org" in nat.seen
    autostarted = [d for d in domains if d.name == "vm-auto"]
    (ok,) = guest_reboot.come_back(
        autostarted, forward_network="forward-bridge", bridge="br0", published={}
    )
    assert (ok.name, ok.status, ok.seen) == (
        "guests come back after a reboot", "ok", "set to autostart: vm-auto",
    )  # fmt: skip


def test_a_shut_off_guest_behind_a_published_aaaa_says_start_it(tmp_path: Path) -> None:
    uri = f"test://{node_file(tmp_path)}"
    store = records.Store(tmp_path / "records")
    p = {"vm": "vm-nat1", "zone": "example.org", "token": "file:/nonexistent", "apply": True}
    _file(store, "ok", {**p, "record_name": "vm-nat1.example.org"}, "2026-01-01T00:00:00Z")
    result = host_health.run(
        host="h1", libvirt_uri=uri, nat_network="", forward_network="forward-bridge",
        bridge="", records_dir=str(tmp_path / "records"),
    )  # fmt: skip
    by_name = {c.name: c for c in result.checks}
    dns = by_name["DNS vm-nat1.example.org"]
    assert (dns.status, dns.fix) == ("fail", "virsh start vm-nat1"), dns
    assert "vm-nat1 is shut off" in dns.seen
    # the same run warns, before any reboot, of the guests that would not come back
    warned = {c.name: c.fix for c in result.checks if c.name.endswith("after a reboot")}
    assert warned == {
        "guest vm-fwd comes back after a reboot": "virsh autostart vm-fwd",
        "guest vm-auto comes back after a reboot": "virsh autostart vm-auto",
        "guest vm-nat1 comes back after a reboot": "virsh autostart vm-nat1",
    }
    assert "DNS vm-nat1.example.org" in result.summary and "reboot" not in result.summary


def test_a_failing_audit_through_opsbook_run_names_its_checks_not_an_exception(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    store = tmp_path / "records"
    env = {**os.environ, "OPSBOOK_RECORDS": str(store)}
    env.pop("OPSBOOK_NOTEBOOKS", None)
    done = subprocess.run(
        [sys.executable, "-m", "opslib.cli.main", "run", "host-health", "--host", "h1",
         "-p", "libvirt_uri", "test:///default", "-p", "nat_network", "default",
         "-p", "forward_network", "", "-p", "bridge", ""],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    # test:///default: its network is not autostarted, its guest has no address
    want = "failed (no change): 2 checks failed: network default, guest test"
    assert done.stderr.splitlines()[-1] == want, done.stderr
    (row,) = records.Store(store).list(runbook="host-health")
    assert (row.status, row.summary) == ("failed", "2 checks failed: network default, guest test")
