"""network-inventory without root: the table and the problems, from observed state."""

from __future__ import annotations

from opslib.host.libvirt import netxml, virt
from opslib.procedures import network_inventory as ni


def net(xml: str, **state: bool) -> netxml.Network:
    return netxml.parse_network(xml, **{"active": True, "autostart": True, **state})


NAT = "<network><name>default</name><forward mode='nat'/><bridge name='virbr0'/><ip address='198.51.100.1' prefix='24'><dhcp><range start='198.51.100.100' end='198.51.100.199'/></dhcp></ip></network>"  # noqa: E501
FWD = "<network><name>forward-bridge</name><forward mode='bridge'/><bridge name='br0'/></network>"


def br(name: str, *ports: str, up: bool = True) -> ni.BridgeView:
    return ni.BridgeView(name, up, "UP" if up else "DOWN", ports, ("198.51.100.1/24",), "on")


def test_table_joins_libvirt_and_kernel() -> None:
    obs = ni.Observed((net(NAT),), {"virbr0": br("virbr0", "vnet0")}, {"vnet0": "tun"})
    [row] = ni.table(obs)
    assert row["ipv4"] == "198.51.100.1/24"
    assert row["dhcp"] == "198.51.100.100-198.51.100.199"
    assert (row["bridge_exists"], row["bridge_up"], row["ports"]) == (True, True, "vnet0")


def test_problems_name_the_fix() -> None:
    obs = ni.Observed(
        (
            net(NAT, autostart=False),
            net(FWD),
        ),
        {"virbr0": br("virbr0", up=False), "br0": br("br0", "vnet3")},
        {"vnet3": "tun"},
    )
    by_name = {c.name: c for c in ni.problems(obs)}
    assert by_name["network default autostart"].status == "warn"
    assert by_name["network default bridge"].status == "fail"
    assert "down" in by_name["network default bridge"].seen
    assert by_name["network default ipv6"].status == "warn"
    assert by_name["network forward-bridge uplink"].status == "fail"
    assert "bridge_ports eth0" in by_name["network forward-bridge uplink"].fix


def test_a_forward_bridge_with_its_uplink_and_a_missing_bridge() -> None:
    obs = ni.Observed((net(FWD),), {"br0": br("br0", "eth0", "vnet0")}, {"eth0": "veth"})
    assert ni.problems(obs) == []
    obs = ni.Observed((net(FWD, active=False),), {}, {})
    names = {c.name: c for c in ni.problems(obs)}
    assert names["network forward-bridge bridge"].fix == "run the forward-bridge runbook"
    assert names["network forward-bridge active"].status == "fail"


def test_run_on_the_test_driver_reports_its_network() -> None:
    result = ni.run(host="t", libvirt_uri="test:///default", netns="")
    assert [r["network"] for r in result.tables["networks"]] == ["default"]


def test_a_missing_bridge_is_fixed_by_net_start_only_when_the_network_is_inactive() -> None:
    active = ni.problems(ni.Observed((net(NAT),), {}, {}))
    (bridge,) = [c for c in active if c.name == "network default bridge"]
    assert "although the network is active" in bridge.seen
    # `virsh net-start` refuses an active network ("network is already active")
    assert bridge.fix == "virsh net-destroy default && virsh net-start default"
    inactive = {c.name: c for c in ni.problems(ni.Observed((net(NAT, active=False),), {}, {}))}
    assert inactive["network default active"].fix == "virsh net-start default"
    assert "network default bridge" not in inactive  # net-start makes it: one fix, said once


def test_a_failing_inventory_names_its_failing_checks_in_the_summary(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # the test driver's own network, with a bridge this host does not have
    node = tmp_path / "node.xml"
    node.write_text(
        "<node><network><name>default</name><forward mode='nat'/><bridge name='obtestbr8'/>"
        "<ip address='198.51.100.1' prefix='24'/></network></node>"
    )
    result = ni.run(host="t", libvirt_uri=f"test://{node}", netns="")
    assert result.failed
    assert result.summary == (
        "1 network(s); 1 check(s) failed: network default bridge; 2 warning(s)"
    )


def test_each_row_has_the_network_uuid_and_declares_what_identifies_it_besides_its_name() -> None:
    # records diff matches a renamed network by its UUID, else its bridge (test_record_diff)
    result = ni.run(host="t", libvirt_uri="test:///default", netns="")
    [row] = result.tables["networks"]
    with virt.connect("test:///default") as conn:
        assert row["uuid"] == conn.networkLookupByName("default").UUIDString()
    assert result.to_json()["identity"] == {"networks": ["uuid", "bridge"]}
