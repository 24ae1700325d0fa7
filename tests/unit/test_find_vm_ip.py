"""find-vm-ip without root: the join of MACs with each source, and unknown names.
The ICMP probe it uses, in a throwaway network namespace: tests/integration/test_icmp.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from opslib.core.errors import UnknownName
from opslib.core.slaac import eui64_address, link_local
from opslib.host.kernel.netlink import Neighbour
from opslib.host.libvirt import netxml, virt, virtxml
from opslib.procedures import find_vm_ip as f
from opslib.procedures.find_vm_ip import neighbour_probe

NAT = netxml.parse_network(
    "<network><name>default</name><forward mode='nat'/><bridge name='virbr0'/>"
    "<ip address='198.51.100.1' prefix='24'/><ip family='ipv6' address='2001:db8:2::1'"
    " prefix='64'/></network>",
    active=True,
)
FWD = netxml.parse_network(
    "<network><name>forward-bridge</name><forward mode='bridge'/><bridge name='br0'/></network>",
    active=True,
)
NOBR = netxml.parse_network(
    "<network><name>macvtap</name><forward mode='passthrough'/></network>", active=True
)
NETWORKS = {n.name: n for n in (NAT, FWD, NOBR)}


def nic(mac: str, type_: str = "network", source: str = "default") -> virtxml.Interface:
    return virtxml.Interface(mac=mac, type=type_, source=source)


def test_eui64_matches_rfc4291_examples() -> None:
    # RFC 4291 A: 00:00:5e:... style flip of the U/L bit, ff:fe in the middle.
    assert eui64_address("2001:db8:2::/64", "52:54:00:0b:00:01") == "2001:db8:2:0:5054:ff:fe0b:1"
    assert link_local("02:00:00:00:00:01") == "fe80::ff:fe00:1"


def test_each_address_keeps_its_source_and_neighbour_state() -> None:
    obs = f.Observed(
        domains=(f.DomainView("web", "running", (nic("52:54:00:00:00:01"),)),),
        networks=NETWORKS,
        neighbours={
            "virbr0": [
                Neighbour(1, "ipv4", "198.51.100.7", "52:54:00:00:00:01", "STALE"),
                Neighbour(
                    1, "ipv6", "2001:db8:2::5054:ff:fe00:1", "52:54:00:00:00:01", "REACHABLE"
                ),
                Neighbour(1, "ipv4", "198.51.100.9", "52:54:00:00:00:99", "REACHABLE"),
            ]
        },
        leases={"default": [virt.Lease("52:54:00:00:00:01", "198.51.100.7", 24, "web", 0)]},
        agent={"web": [("52:54:00:00:00:01", "ipv4", "198.51.100.7", "eth0")]},
    )
    [vm] = f.assemble(obs)
    got = {(a.ip, a.source, a.detail) for a in vm.nics[0].addresses}
    assert got == {
        ("198.51.100.7", "neighbour", "STALE"),
        ("2001:db8:2::5054:ff:fe00:1", "neighbour", "REACHABLE"),
        ("198.51.100.7", "lease", "web"),
        ("198.51.100.7", "agent", "eth0"),
    }
    assert vm.nics[0].ips("ipv6") == ["2001:db8:2::5054:ff:fe00:1"]
    assert vm.ips("ipv4") == ["198.51.100.7"]  # one address, however many sources


def test_a_neighbour_on_another_bridge_is_not_this_nic() -> None:
    obs = f.Observed(
        domains=(f.DomainView("a", "running", (nic("52:54:00:00:00:01"),)),),
        networks=NETWORKS,
        neighbours={"br0": [Neighbour(2, "ipv4", "192.0.2.5", "52:54:00:00:00:01", "STALE")]},
    )
    assert f.assemble(obs)[0].nics[0].addresses == ()


def test_shut_off_no_interfaces_and_no_bridge_are_shown_not_raised() -> None:
    obs = f.Observed(
        domains=(
            f.DomainView("off", "shut off", (nic("52:54:00:00:00:02"),)),
            f.DomainView("bare", "running", ()),
            f.DomainView("tap", "running", (nic("52:54:00:00:00:03", "network", "macvtap"),)),
            f.DomainView("slirp", "running", (nic("52:54:00:00:00:04", "user", ""),)),
            f.DomainView("gone", "running", (nic("52:54:00:00:00:05", "network", "nope"),)),
        ),
        networks=NETWORKS,
        neighbours={},
        missing_bridges=frozenset(),
    )
    rows = {r["vm"]: r for r in f.rows(f.assemble(obs))}
    assert "shut off" in rows["off"]["note"]
    assert rows["bare"]["note"] == "no interfaces"
    assert "macvtap NIC (network macvtap, forward passthrough)" in rows["tap"]["note"]
    assert "type user" in rows["slirp"]["note"]
    assert "does not exist" in rows["gone"]["note"]


def test_a_macvtap_nic_says_why_the_host_cannot_see_it_and_what_can() -> None:
    obs = f.Observed(
        domains=(
            # type direct: on a host NIC, or (running) on a macvtap network
            f.DomainView("dev", "running", (nic("52:54:00:00:00:06", "direct", "eth0"),)),
            f.DomainView("net", "running", (nic("52:54:00:00:00:07", "direct", "macvtap"),)),
        ),
        networks=NETWORKS,
        neighbours={},
        agent={"dev": [("52:54:00:00:00:06", "ipv4", "192.0.2.66", "eth0")]},
    )
    result = {v.name: v.nics[0] for v in f.assemble(obs)}
    for name, on in (("dev", "eth0"), ("net", "network macvtap")):
        note = result[name].note
        assert note.startswith(f"macvtap NIC (type direct on {on}): its traffic bypasses")
        assert "guest agent" in note and "DHCP server" in note
    assert result["net"].network == "macvtap"
    assert result["dev"].ips() == ["192.0.2.66"]  # what the agent saw is still there


def test_probe_lists_predicted_addresses_that_stayed_silent() -> None:
    macs = ("52:54:00:00:00:01", "52:54:00:00:00:02")
    answered = eui64_address("2001:db8:2::/64", macs[0])
    obs = f.Observed(
        domains=(f.DomainView("a", "running", tuple(nic(m) for m in macs)),),
        networks=NETWORKS,
        neighbours={"virbr0": [Neighbour(1, "ipv6", answered, macs[0], "REACHABLE")]},
        prefixes={"virbr0": ["2001:db8:2::/64"]},
        probed=frozenset({"virbr0"}),
        answered=frozenset({answered}),
    )
    first, second = f.assemble(obs)[0].nics
    assert first.silent == ()
    assert second.silent == (eui64_address("2001:db8:2::/64", macs[1]),)


def test_a_running_nic_on_a_bridge_mode_network_is_on_that_networks_bridge() -> None:
    # Live XML says <interface type='bridge'><source network='forward-bridge' bridge='br0'/>
    assert f.nic_bridge(nic("52:54:00:00:00:01", "bridge", "forward-bridge"), NETWORKS) == (
        "forward-bridge",
        "br0",
    )


def test_unknown_vm_is_exit_2_with_suggestions() -> None:
    with pytest.raises(UnknownName) as exc:
        f.find(libvirt_uri="test:///default", vm="tset")
    assert exc.value.exit_code == 2
    assert "did you mean test" in str(exc.value)


def test_an_unknown_vm_unlike_any_lists_only_the_first_names(tmp_path: Path) -> None:
    domains = "".join(
        f"<domain type='test'><name>web{i:03d}</name><memory>8192</memory>"
        "<os><type>hvm</type></os></domain>"
        for i in range(40)
    )
    node = tmp_path / "node.xml"
    node.write_text(f"<node>{domains}</node>")
    with pytest.raises(UnknownName) as exc:
        f.find(libvirt_uri=f"test://{node}", vm="database")
    assert str(exc.value) == (
        "no VM named 'database'; known: "
        + ", ".join(f"web{i:03d}" for i in range(10))
        + " and 30 more"
    )


def test_test_driver_domain_is_reported_without_a_host_bridge() -> None:
    # test:///default's network claims virbr0; in a netns without it, the row says so.
    result = f.run(host="t", libvirt_uri="test:///default", netns="", vm="test")
    [row] = result.tables["addresses"]
    assert row["mac"] == "aa:bb:cc:dd:ee:ff"
    assert row["network"] == "default"


# -- the probe's early end ---------------------------------------------------------

V6 = eui64_address("2001:db8:2::/64", "52:54:00:00:00:01")
LL = link_local("52:54:00:00:00:01")


def test_the_probe_ends_once_every_predicted_address_and_every_nic_answered() -> None:
    macs = ["52:54:00:00:00:01"]
    replies = {V6: {V6}, LL: {LL}, "198.51.100.7": {"198.51.100.7"}, "198.51.100.8": set()}
    mac_of = {"198.51.100.7": macs[0]}
    assert neighbour_probe.probe_settled(replies, [V6, LL], macs, mac_of)
    # Still waiting: a predicted address is silent, or the NIC has no IPv4 reply yet.
    assert not neighbour_probe.probe_settled({**replies, LL: set()}, [V6, LL], macs, mac_of)
    assert not neighbour_probe.probe_settled(replies, [V6, LL], macs, {"198.51.100.7": ""})
    assert not neighbour_probe.probe_settled(
        replies, [V6, LL], [*macs, "52:54:00:00:00:02"], mac_of
    )


def test_addresses_that_could_not_be_sent_do_not_hold_the_probe_up() -> None:
    # virbr0 without IPv6: no ICMPv6 request goes out, so none is awaited.
    replies = {"198.51.100.7": {"198.51.100.7"}}
    assert neighbour_probe.probe_settled(replies, [V6, LL], ["52:54:00:00:00:01"],
                           {"198.51.100.7": "52:54:00:00:00:01"})  # fmt: skip
    # A bridge without an IPv4 sweep: the NICs' IPv4 is not awaited.
    assert neighbour_probe.probe_settled({V6: {V6}}, [V6], ["52:54:00:00:00:01"], {})


def test_the_probe_step_says_what_answered_and_what_stayed_silent() -> None:
    done = f.BridgeProbe("virbr0", 3, (), 0.012)
    assert done.describe() == "virbr0: all 3 awaited answered in 12 ms"
    waited = f.BridgeProbe("br0", 2, ("IPv4 of 52:54:00:00:00:01",), 1.0)
    assert waited.describe() == (
        "br0: 1 of 2 awaited silent (IPv4 of 52:54:00:00:00:01), waited 1000 ms"
    )
