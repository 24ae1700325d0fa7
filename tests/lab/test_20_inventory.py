"""network-inventory on the lab: the NAT network joined with its real bridge, and
the problems of a bridge-mode network whose bridge has no uplink."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pyroute2 import IPRoute

from opslib.host.libvirt import virt
from opslib.lab.config import Lab
from opslib.procedures import network_inventory as ni

TEST_NET, TEST_BRIDGE = "inv-test", "invtest0"


def test_the_nat_network_row_matches_libvirt_and_the_kernel(lab: Lab) -> None:
    result = ni.run(host="lab", libvirt_uri=lab.uri, netns=lab.host_ns)
    row = next(r for r in result.tables["networks"] if r["network"] == lab.nat_network)
    assert row["bridge"] == lab.nat_bridge
    assert row["ipv4"] == f"{lab.nat_ipv4}/{lab.nat_prefixlen}"
    assert row["dhcp"] == "-".join(lab.nat_dhcp_range)
    assert row["bridge_exists"] and row["bridge_up"]
    assert f"{lab.nat_ipv4}/{lab.nat_prefixlen}" in row["bridge_addresses"]
    # The ports are the taps libvirt gave the running guests.
    with virt.connect(lab.uri) as conn:
        taps = {i.target for d in virt.list_domains(conn) if d.running for i in d.interfaces}
    assert set(row["ports"].split(", ")) == taps


@pytest.fixture
def portless_bridge_network(lab: Lab) -> Iterator[None]:
    with IPRoute(netns=lab.host_ns, flags=0) as ip:
        ip.link("add", ifname=TEST_BRIDGE, kind="bridge")
        ip.link("set", index=ip.link_lookup(ifname=TEST_BRIDGE)[0], state="up")
    xml = (
        f"<network><name>{TEST_NET}</name><forward mode='bridge'/>"
        f"<bridge name='{TEST_BRIDGE}'/></network>"
    )
    with virt.connect(lab.uri) as conn:
        conn.networkDefineXML(xml).create()
    try:
        yield
    finally:
        with virt.connect(lab.uri) as conn:
            net = conn.networkLookupByName(TEST_NET)
            net.destroy()
            net.undefine()
        with IPRoute(netns=lab.host_ns, flags=0) as ip:
            ip.link("del", index=ip.link_lookup(ifname=TEST_BRIDGE)[0])


def test_a_bridge_without_uplink_and_autostart_off_are_problems(
    lab: Lab, portless_bridge_network: None
) -> None:
    checks = {c.name: c for c in ni.checks(libvirt_uri=lab.uri, netns=lab.host_ns)}
    assert checks[f"network {TEST_NET} uplink"].status == "fail"
    assert checks[f"network {TEST_NET} autostart"].status == "warn"
    row = next(
        r
        for r in ni.run(host="lab", libvirt_uri=lab.uri, netns=lab.host_ns).tables["networks"]
        if r["network"] == TEST_NET
    )
    assert (row["forward"], row["bridge_exists"], row["ports"]) == ("bridge", True, "")


ISOLATED_NET, ISOLATED_BRIDGE = "inv-iso", "invIso0"


def test_an_active_network_that_lost_its_bridge_gets_the_fix_that_works(lab: Lab) -> None:
    xml = f"<network><name>{ISOLATED_NET}</name><bridge name='{ISOLATED_BRIDGE}'/></network>"
    with virt.connect(lab.uri) as conn:
        conn.networkDefineXML(xml).create()
    try:
        with IPRoute(netns=lab.host_ns, flags=0) as ip:
            ip.link("del", index=ip.link_lookup(ifname=ISOLATED_BRIDGE)[0])
        checks = {c.name: c for c in ni.checks(libvirt_uri=lab.uri, netns=lab.host_ns)}
        fix = checks[f"network {ISOLATED_NET} bridge"].fix
        assert fix == f"virsh net-destroy {ISOLATED_NET} && virsh net-start {ISOLATED_NET}"
        with virt.connect(lab.uri) as conn:  # what the fix says, through the same libvirtd
            net = conn.networkLookupByName(ISOLATED_NET)
            net.destroy()
            net.create()
        checks = {c.name: c for c in ni.checks(libvirt_uri=lab.uri, netns=lab.host_ns)}
        assert f"network {ISOLATED_NET} bridge" not in checks
    finally:
        with virt.connect(lab.uri) as conn:
            net = conn.networkLookupByName(ISOLATED_NET)
            if net.isActive():
                net.destroy()
            net.undefine()
