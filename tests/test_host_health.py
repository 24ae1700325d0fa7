"""host-health's checks, on libvirt's test driver and real files (no lab needed)."""

from __future__ import annotations

from pathlib import Path

from opslib import records
from opslib.changes import Check
from opslib.procedures import host_health


def test_a_failing_check_fails_the_result_and_is_named_in_the_summary() -> None:
    checks = [
        Check("libvirtd reachable", "ok", "x"),
        Check("br0 up", "fail", "down", "ip link set br0 up"),
        Check("DNS", "warn", "no token"),
    ]
    result = host_health.result_of("h1", checks)
    assert result.failed and result.status == "failed"
    assert result.summary == "1 failed: br0 up"
    assert result.checks[1].fix == "ip link set br0 up"


def test_warnings_alone_pass_but_are_named() -> None:
    result = host_health.result_of("h1", [Check("a", "ok", ""), Check("DNS", "warn", "no token")])
    assert not result.failed
    assert result.summary == "all 2 checks passed (1 warn: DNS)"


def test_networks_on_the_test_driver() -> None:
    checks = host_health.libvirt_checks("test:///default", ["default", "forward-bridge"])
    by_name = {c.name: c for c in checks}
    assert by_name["libvirtd reachable"].status == "ok"
    # The test driver's default network is active but not autostarted.
    assert by_name["network default"].status == "fail"
    assert "no autostart" in by_name["network default"].seen
    assert "virsh net-autostart default" in by_name["network default"].fix
    assert by_name["network forward-bridge"].seen == "not defined"


def test_unreachable_libvirtd_is_a_failure_with_a_fix(tmp_path: Path) -> None:
    uri = f"qemu:///system?socket={tmp_path}/no-such-sock"
    (check,) = host_health.libvirt_checks(uri, ["default"])
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

    from opslib.errors import InputError

    with pytest.raises(InputError, match="needs client_ipv6"):
        host_health.run(host="h1", libvirt_uri="test:///default", tunnel="he-ipv6")


def _guest_with_ipv4_only(monkeypatch, network: str = "default") -> None:  # type: ignore[no-untyped-def]
    from opslib.procedures import find_vm_ip
    from opslib.vm_addresses import NicAddresses, SeenAddress, VmAddresses

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
