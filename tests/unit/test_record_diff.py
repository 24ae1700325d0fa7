"""`records diff` compares result rows by identity: what a reviewer asks (which VM gained
which address, which check started failing) in one line each, and nothing for a neighbour
entry that went from REACHABLE to DELAY. The results are made by the runbooks' own
reports (find-vm-ip, network-inventory) from hand-made observed state, then stored the
way a record stores them (JSON with sorted keys), so the declarations travel as in a record.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from opslib.core.changes import Check, Result
from opslib.host.kernel.netlink import Neighbour
from opslib.host.libvirt import netxml, virt, virtxml
from opslib.procedures import find_vm_ip, network_inventory
from opslib.records import diff

MACS = {
    "vm-nat1": "52:54:00:0b:00:01",
    "vm-nat2": "52:54:00:0b:00:02",
    "vm-nat3": "52:54:00:0b:00:03",
}
V4 = {"vm-nat1": "198.51.100.11", "vm-nat2": "198.51.100.12", "vm-nat3": "198.51.100.13"}
V6 = {
    "vm-nat1": "2001:db8:2:0:5054:ff:fe0b:1",
    "vm-nat2": "2001:db8:2:0:5054:ff:fe0b:2",
    "vm-nat3": "2001:db8:2:0:5054:ff:fe0b:3",
}


def nat(name: str = "nat-bridge") -> netxml.Network:
    return netxml.parse_network(
        f"<network><name>{name}</name><forward mode='nat'/><bridge name='virbr1'/>"
        "<ip address='198.51.100.1' prefix='24'/><ip family='ipv6' address='2001:db8:2::1'"
        " prefix='64'/></network>",
        active=True,
        autostart=True,
    )


def record(result: Result, **parameters: Any) -> dict[str, Any]:
    """A run as `records diff` reads it back from a record: header and stored result."""
    stored = json.loads(json.dumps(result.to_json(), sort_keys=True))
    header = {"runbook": result.runbook, "host": "lab", "status": "ok", "summary": result.summary}
    return {"header": {**header, "parameters": parameters}, "result": stored}


def find_vm_ip_run(
    monkeypatch: pytest.MonkeyPatch,
    *,
    state: Mapping[str, str] | None = None,
    ipv6: tuple[str, ...] = ("vm-nat1", "vm-nat3"),
    vm_state: Mapping[str, str] | None = None,
    network: str = "nat-bridge",
) -> dict[str, Any]:
    """find-vm-ip's report on three VMs: IPv4 seen as a neighbour and leased, IPv6 as a
    neighbour for the VMs in ``ipv6``; ``state``: an address's neighbour state."""
    state, vm_state = state or {}, vm_state or {}
    neighbours = []
    for vm, mac in MACS.items():
        neighbours.append(Neighbour(5, "ipv4", V4[vm], mac, state.get(V4[vm], "REACHABLE")))
        if vm in ipv6:
            neighbours.append(Neighbour(5, "ipv6", V6[vm], mac, state.get(V6[vm], "REACHABLE")))
    obs = find_vm_ip.Observed(
        domains=tuple(
            find_vm_ip.DomainView(
                vm,
                vm_state.get(vm, "running"),
                (virtxml.Interface(mac=mac, type="network", source=network),),
            )
            for vm, mac in MACS.items()
        ),
        networks={network: nat(network)},
        neighbours={"virbr1": neighbours},
        leases={network: [virt.Lease(MACS[vm], V4[vm], 24, vm, 0) for vm in MACS]},
    )
    monkeypatch.setattr(find_vm_ip, "observe", lambda **_: obs)
    return record(find_vm_ip.run(host="lab", libvirt_uri="test:///default", netns=""))


def test_unchanged_addresses_with_other_neighbour_states_are_no_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = find_vm_ip_run(monkeypatch)
    b = find_vm_ip_run(monkeypatch, state={V6["vm-nat1"]: "DELAY", V4["vm-nat3"]: "DELAY"})
    assert len(a["result"]["tables"]["addresses"]) == 8
    assert diff.diff_runs(a, b) == []
    shown = diff.diff_runs(a, b, volatile=True)
    # One line per address, even where the same state change happened to several.
    assert shown == [
        f"~ addresses: vm-nat1 {V6['vm-nat1']} (mac {MACS['vm-nat1']}, family ipv6, "
        "source neighbour): detail REACHABLE → DELAY (volatile)",
        f"~ addresses: vm-nat3 {V4['vm-nat3']} (mac {MACS['vm-nat3']}, family ipv4, "
        "source neighbour): detail REACHABLE → DELAY (volatile)",
    ]


def test_the_whole_row_comparison_of_old_showed_a_state_change_as_two_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Records written before tables declared keys: one REACHABLE -> DELAY is one changed
    field of one row, not a row removed and a row added (what `records diff` printed)."""
    a = find_vm_ip_run(monkeypatch)
    b = find_vm_ip_run(monkeypatch, state={V6["vm-nat1"]: "DELAY"})
    for run in (a, b):
        del run["result"]["keys"], run["result"]["volatile"]
    lines = diff.diff_runs(a, b)
    assert not [line for line in lines if line.startswith(("- addresses", "+ addresses"))]
    # Keyed by the leading columns that tell the rows apart: vm … source.
    assert lines == [
        f"~ addresses: vm-nat1 running (mac {MACS['vm-nat1']}, network nat-bridge, "
        f"bridge virbr1, family ipv6, ip {V6['vm-nat1']}, source neighbour): "
        "detail REACHABLE → DELAY"
    ]


def test_a_vm_that_gained_an_address_and_one_that_lost_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = find_vm_ip_run(monkeypatch, ipv6=("vm-nat1", "vm-nat3"))
    b = find_vm_ip_run(monkeypatch, ipv6=("vm-nat1", "vm-nat2"), state={V6["vm-nat1"]: "DELAY"})
    assert diff.diff_runs(a, b) == [
        f"+ addresses: vm-nat2 gained {V6['vm-nat2']} (mac {MACS['vm-nat2']}, family ipv6, "
        "source neighbour)",
        f"- addresses: vm-nat3 lost {V6['vm-nat3']} (mac {MACS['vm-nat3']}, family ipv6, "
        "source neighbour)",
    ]


def test_only_the_fields_that_changed_and_one_line_for_the_same_change_in_many_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = find_vm_ip_run(monkeypatch)
    b = find_vm_ip_run(monkeypatch, vm_state={"vm-nat2": "paused"})
    assert diff.diff_runs(a, b) == [
        '~ addresses: note "" → "VM paused: only stale entries can show"; state running → paused'
        " in 2 rows (vm-nat2)"
    ]


def test_a_renamed_network_is_one_line_per_table(monkeypatch: pytest.MonkeyPatch) -> None:
    a = find_vm_ip_run(monkeypatch)
    b = find_vm_ip_run(monkeypatch, network="nat0")
    assert diff.diff_runs(a, b) == [
        "~ addresses: network nat-bridge → nat0 in 8 rows (vm-nat1, vm-nat2, vm-nat3)"
    ]
    # What changed in many rows comes first, then row by row.
    c = find_vm_ip_run(monkeypatch, network="nat0", ipv6=("vm-nat1",))
    assert diff.diff_runs(a, c) == [
        "~ table addresses: 8 rows -> 7 rows",
        "~ addresses: network nat-bridge → nat0 in 7 rows (vm-nat1, vm-nat2, vm-nat3)",
        f"- addresses: vm-nat3 lost {V6['vm-nat3']} (mac {MACS['vm-nat3']}, family ipv6, "
        "source neighbour)",
    ]


def inventory(monkeypatch: pytest.MonkeyPatch, network: netxml.Network) -> dict[str, Any]:
    """network-inventory's report of one network on a bridge that is up."""
    bridge = network_inventory.BridgeView("virbr1", True, "UP", ("vnet0",), (), "on")
    obs = network_inventory.Observed((network,), {"virbr1": bridge}, {"vnet0": "tun"})
    monkeypatch.setattr(network_inventory, "observe", lambda **_: obs)
    return record(network_inventory.run(host="lab", libvirt_uri="test:///default", netns=""))


def test_a_network_renamed_with_all_else_equal_is_one_rename(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = inventory(monkeypatch, nat("nat-bridge")), inventory(monkeypatch, nat("nat0"))
    assert a["result"]["keys"] == {"networks": ["network"]}
    assert diff.diff_runs(a, b) == ["~ networks: nat-bridge renamed to nat0"]
    # Another network on another bridge is not a rename: the one went and another came.
    other = netxml.parse_network(
        "<network><name>nat0</name><forward mode='nat'/><bridge name='virbr7'/></network>",
        active=True,
        autostart=True,
    )
    lines = diff.diff_runs(a, inventory(monkeypatch, other))
    assert [line for line in lines if " networks: " in line] == [
        "- networks: nat-bridge removed",
        "+ networks: nat0 added",
    ]


ROOM = """<network>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <forward mode='nat'/>
  <bridge name='{bridge}'/>
  <ip address='198.51.100.1' prefix='24'>
    <dhcp><range start='198.51.100.100' end='198.51.100.199'/></dhcp>
  </ip>
</network>"""
UUID_A = "dd8fe884-6c02-601e-7551-cca97df1c5df"
UUID_B = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


def inventory_of(tmp_path: Any, name: str, uuid: str, bridge: str = "virbr0") -> dict[str, Any]:
    """network-inventory of a test:/// host (a real node file) holding one network."""
    path = tmp_path / f"{name}-{uuid[:8]}-{bridge}.xml"
    network = ROOM.format(name=name, uuid=uuid, bridge=bridge)
    path.write_text(f"<node>\n{network}\n</node>\n")
    return record(network_inventory.run(host="lab", libvirt_uri=f"test://{path}", netns=""))


def test_a_network_renamed_by_hand_is_matched_by_its_bridge(tmp_path: Any) -> None:
    # `virsh net-define` under the new name, `net-undefine` the old: libvirt gives the new
    # definition another UUID, so the name and the UUID changed; the bridge says which it is.
    a = inventory_of(tmp_path, "default", UUID_A)
    b = inventory_of(tmp_path, "roomnet", UUID_B)
    [row] = a["result"]["tables"]["networks"]
    assert row["uuid"] == UUID_A
    assert networks_lines(a, b) == [
        f"~ networks: default renamed to roomnet: uuid {UUID_A} → {UUID_B}"
    ]
    # The UUID comes first: kept across a rename, it matches whatever else changed.
    c = inventory_of(tmp_path, "roomnet", UUID_A, bridge="virbr5")
    renamed = "~ networks: default renamed to roomnet: bridge virbr0 → virbr5"
    assert networks_lines(a, c) == [renamed]


def networks_lines(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The diff's lines about the networks table (the summary and checks name it too)."""
    return [line for line in diff.diff_runs(a, b) if " networks: " in line]


def test_a_renamed_network_that_lost_its_guests_is_one_rename_with_what_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Renaming a NAT network by hand detaches its guests: the ports and the bridge state
    # change with the name. That read as "- networks: default removed / + roomnet added".
    up = network_inventory.BridgeView("virbr1", True, "UP", ("vnet0", "vnet1"), (), "on")
    down = network_inventory.BridgeView("virbr1", True, "DOWN", (), (), "on")

    def run(name: str, bridge: network_inventory.BridgeView) -> dict[str, Any]:
        obs = network_inventory.Observed((nat(name),), {"virbr1": bridge}, {})
        monkeypatch.setattr(network_inventory, "observe", lambda **_: obs)
        return record(network_inventory.run(host="lab", libvirt_uri="test:///default", netns=""))

    assert networks_lines(run("default", up), run("roomnet", down)) == [
        '~ networks: default renamed to roomnet: bridge_state UP → DOWN; ports "vnet0, vnet1" → ""'
    ]


def checks_run(*checks: Check) -> dict[str, Any]:
    return record(Result("host-health", "lab", "ok", checks=list(checks)))


def test_a_check_that_started_failing_is_one_line_what_it_saw_alone_is_volatile() -> None:
    a = checks_run(
        Check("nat-bridge IPv6", "ok", "running with the prefix"),
        Check("records space", "ok", "812 MiB free"),
        Check("libvirtd reachable", "ok", "qemu:///system"),
    )
    b = checks_run(
        Check("nat-bridge IPv6", "fail", "not running with it", "apply nat-bridge-ipv6"),
        Check("records space", "ok", "790 MiB free"),
        Check("br0 up", "ok", "up"),
    )
    assert diff.diff_runs(a, b) == [
        "~ check `nat-bridge IPv6`: ok → fail (not running with it)",
        "- check `libvirtd reachable`: ok (qemu:///system)",
        "+ check `br0 up`: ok (up)",
    ]
    assert '~ check `records space`: seen "812 MiB free" → "790 MiB free" (volatile)' in (
        diff.diff_runs(a, b, volatile=True)
    )


def test_headers_and_parameters_are_compared_as_before() -> None:
    a = checks_run(Check("x", "ok", "fine"))
    b = checks_run(Check("x", "ok", "fine"))
    b["header"] = {**b["header"], "status": "failed", "parameters": {"vm": "vm-nat1"}}
    assert diff.diff_runs(a, b) == [
        '~ status: "ok" -> "failed"',
        '+ parameter vm: "vm-nat1"',
    ]


def test_a_key_that_does_not_tell_rows_apart_compares_those_rows_whole() -> None:
    result = Result("r", "lab", "ok")
    result.add_table("t", [{"k": "a", "v": 1}, {"k": "a", "v": 2}], key=("k",))
    changed = Result("r", "lab", "ok")
    changed.add_table("t", [{"k": "a", "v": 1}, {"k": "a", "v": 3}], key=("k",))
    lines = diff.diff_runs(record(result), record(changed))
    assert lines == ["- t: a removed (v 2)", "+ t: a added (v 3)"]


def test_a_table_declaration_names_columns_its_rows_have() -> None:
    result = Result("r", "lab", "ok")
    with pytest.raises(AssertionError, match="lacks key column"):
        result.add_table("t", [{"name": "x"}], key=("network",))
    with pytest.raises(AssertionError, match="cannot be volatile"):
        result.add_table("t", [{"name": "x"}], key=("name",), volatile=("name",))
