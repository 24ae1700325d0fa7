"""nat-bridge-ipv6 in the lab, from bare: the NAT network gets the routed /64, every
running guest is back on the bridge with a SLAAC address from it, a second apply is a
no-op, and a bad prefix changes nothing. It runs before find-vm-ip (test_50), whose
fixtures need the /64 and would otherwise apply it first."""

from __future__ import annotations

import ipaddress
import time

import pytest

from opslib.core.changes import Result
from opslib.core.errors import InputError
from opslib.core.slaac import eui64_address
from opslib.host.kernel import icmp, netlink
from opslib.host.libvirt import netxml, virt, virtxml
from opslib.host.libvirt.netxml import IPv6Edit
from opslib.lab.config import Lab
from opslib.lab.simulated import guestconsole, labvirt
from opslib.lab.simulated import parameters as lab_parameters
from opslib.procedures import nat_bridge_ipv6 as nb
from opslib.procedures.nat_bridge_ipv6 import planning


def lab_values(lab: Lab) -> dict[str, object]:
    """The lab's nat-bridge-ipv6 set as plan() takes it (the NAT network keeps its name)."""
    return lab_parameters.arguments(nb.plan, lab_parameters.standalone_set(lab, "nat-bridge-ipv6"))


@pytest.fixture(scope="module")
def applied(lab: Lab) -> Result:
    values = lab_values(lab)
    return nb.apply(nb.plan(**values), **values)


def test_bad_prefixes_are_refused_before_any_change(lab: Lab) -> None:
    values = lab_values(lab)
    with virt.connect(lab.uri) as conn:
        before = virt.get_network(conn, lab.nat_network).xml
    for bad in ("2001:db8::/48", "fe80::/64", "2001:db8::1/64", "garbage"):
        with pytest.raises(InputError) as exc:
            nb.plan(**{**values, "prefix": bad})
        assert "\n" not in str(exc.value)
    with virt.connect(lab.uri) as conn:
        assert virt.get_network(conn, lab.nat_network).xml == before


def test_apply_gives_the_nat_network_the_routed_prefix(lab: Lab, applied: Result) -> None:
    assert applied.status == "changed", applied.summary
    with virt.connect(lab.uri) as conn:
        net = virt.get_network(conn, lab.nat_network)
    assert net.active
    assert net.ip("ipv6") == netxml.NetworkIP("ipv6", "2001:db8:2::1", 64)
    bridge = netlink.link_by_name(lab.host_ns, lab.nat_bridge)
    assert bridge is not None
    assert any(
        a.address == "2001:db8:2::1" and a.prefix == 64
        for a in netlink.addresses(lab.host_ns, ifindex=bridge.index)
    )


def test_every_running_guest_is_back_with_a_slaac_address(lab: Lab, applied: Result) -> None:
    assert not [c for c in applied.checks if c.status == "fail"], applied.checks
    ports = netlink.bridge_ports(lab.host_ns)[lab.nat_bridge]
    with virt.connect(lab.uri) as conn:
        running = [d for d in virt.list_domains(conn) if d.running]
    assert {d.name for d in running} == {g.name for g in lab.nat_guests}
    rows = {row["guest"]: row for row in applied.tables["guests"]}
    for dom in running:
        (iface,) = [i for i in dom.interfaces if i.source == lab.nat_network]
        assert iface.target in ports
        slaac = eui64_address(lab.routed_prefix, iface.mac)
        assert icmp.ping(lab.host_ns, slaac, wait=2).ok
        # Checked from inside the guest too: its shell lists the address.
        rc, out = guestconsole.guest_shell(lab, dom.name, "ip -6 addr show dev eth0")
        assert rc == 0 and slaac in out
        assert rows[dom.name]["answers"] and rows[dom.name]["cut off s"] is not None
    assert len(applied.data["cut_off"]) == len(running)


def test_second_apply_changes_nothing(lab: Lab, applied: Result) -> None:
    values = lab_values(lab)
    plan = nb.plan(**values)
    assert plan.empty, plan.changes
    again = nb.apply(plan, **values)
    assert again.status == "unchanged" and not again.changes
    assert ipaddress.IPv6Network(values["prefix"]) == ipaddress.IPv6Network(lab.routed_prefix)


def test_a_detached_tap_is_planned_and_reattached(lab: Lab, applied: Result) -> None:
    values = lab_values(lab)
    guest = lab.nat_guests[0]
    with virt.connect(lab.uri) as conn:
        tap = next(
            i.target
            for i in virt.get_domain(conn, guest.name).interfaces
            if i.source == lab.nat_network
        )
    with netlink.ipr(lab.host_ns) as ip:
        ip.link("set", index=ip.link_lookup(ifname=tap)[0], master=0)
    plan = nb.plan(**values)
    assert [(c.target, c.action) for c in plan.changes] == [(f"link:{tap}", "attach")]
    result = nb.apply(plan, **values)
    assert result.status == "changed"
    assert tap in netlink.bridge_ports(lab.host_ns)[lab.nat_bridge]
    assert nb.plan(**values).empty


def test_a_definition_libvirtd_refuses_leaves_the_running_network_alone(
    lab: Lab, applied: Result, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new prefix (replace_ipv6) whose definition libvirtd refuses: here a DHCPv6 range
    outside it is slipped into the edit, as the in-place edit once carried over. apply
    stops before the network is stopped: same bridge, every tap still on it, both XMLs
    unchanged, and libvirtd's reason in the result."""
    real_edit = planning.ipv6_edit

    def edit(xml: str, net: ipaddress.IPv6Network) -> IPv6Edit:
        done = real_edit(xml, net)
        bad = "><dhcp><range start='2001:db8:9::10' end='2001:db8:9::20'/></dhcp></ip>"
        end = f'"{nb.gateway(net)}" prefix="64"'
        assert f"{end}/>" in done.xml
        return IPv6Edit(done.xml.replace(f"{end}/>", f"{end}{bad}"))

    monkeypatch.setattr(planning, "ipv6_edit", edit)

    def state() -> tuple[str, str, int, dict[str, tuple[int, int]]]:
        import libvirt

        with virt.connect(lab.uri) as conn:
            net = conn.networkLookupByName(lab.nat_network)
            live, config = net.XMLDesc(0), net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)
            taps = [
                i.target
                for d in virt.list_domains(conn)
                if d.running
                for i in d.interfaces
                if i.source == lab.nat_network
            ]
        links = {link.name: link for link in netlink.links(lab.host_ns)}
        return (
            live,
            config,
            links[lab.nat_bridge].index,
            {t: (links[t].index, links[t].master) for t in taps},
        )

    before = state()
    _live, _config, bridge, taps = before
    assert taps and all(master == bridge for _, master in taps.values())
    values = {**lab_values(lab), "prefix": "2001:db8:3::/64", "replace_ipv6": True}
    plan = nb.plan(**values)
    assert [c.action for c in plan.changes] == ["update", "restart"]
    result = nb.apply(plan, **values)
    assert result.status == "failed", result.summary
    why = "range 2001:db8:9::10 - 2001:db8:9::20 is not entirely within network"
    assert why in result.summary and "nothing was changed" in result.summary
    assert any(why in step.detail for step in result.steps)
    # Never stopped: a restart makes a new bridge and leaves the taps detached.
    assert state() == before
    monkeypatch.undo()
    assert nb.plan(**lab_values(lab)).empty


def _on(lab: Lab, network: str) -> dict[str, tuple[str, str]]:
    """Each running guest's NAT NIC: (network in the live XML, in the persistent XML)."""
    import libvirt

    found = {}
    with virt.connect(lab.uri) as conn:
        for name in (g.name for g in lab.nat_guests):
            dom = conn.lookupByName(name)
            live = virtxml.parse_interfaces(dom.XMLDesc(0))
            saved = virtxml.parse_interfaces(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            mac = next(g.nat_mac for g in lab.nat_guests if g.name == name)
            found[name] = (
                next(i.source for i in live if i.mac == mac),
                next(i.source for i in saved if i.mac == mac),
            )
    return found


def test_rename_to_nat_bridge_moves_running_guests_and_back(lab: Lab, applied: Result) -> None:
    """The wiki's name, asked for: `default` becomes `nat-bridge` with the guests on it
    (live and persistent) and their SLAAC addresses answering; then back, for later tests."""
    for old, new in ((lab.nat_network, "nat-bridge"), ("nat-bridge", lab.nat_network)):
        values = {**lab_values(lab), "network": new, "rename_from": old}
        result = nb.apply(nb.plan(**values), **values)
        assert result.status == "changed" and not result.failed, result.summary
        with virt.connect(lab.uri) as conn:
            names = {n.name: n for n in virt.list_networks(conn)}
        assert old not in names and names[new].active and names[new].autostart
        assert names[new].ip("ipv6") == netxml.NetworkIP("ipv6", "2001:db8:2::1", 64)
        assert set(_on(lab, new).values()) == {(new, new)}
        for guest in lab.nat_guests:
            assert icmp.ping(lab.host_ns, eui64_address(lab.routed_prefix, guest.nat_mac)).ok
    # libvirt drops the DHCP leases of an undefined network: have the guests renew now
    # (instead of at their next renewal) so that later modules see their leases again.
    for guest in lab.nat_guests:
        guestconsole.guest_shell(lab, guest.name, guestconsole.RENEW_LEASE)
    deadline = time.monotonic() + 60
    while set(labvirt.nat_leases(lab)) < {g.nat_mac for g in lab.nat_guests}:
        assert time.monotonic() < deadline, f"leases after renewal: {labvirt.nat_leases(lab)}"
        time.sleep(0.5)
