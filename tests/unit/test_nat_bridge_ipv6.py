"""nat-bridge-ipv6 without root: prefix validation, the XML edit, the plan, the rename.

libvirt logic runs against the ``test:///`` driver with a node of our own (a running
NAT network ``default`` with a running and a shut-off guest on it).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from lxml import etree

from opslib.contract import transaction
from opslib.core.changes import Plan, Result
from opslib.core.errors import InputError, UnknownName
from opslib.core.ipv6prefix import ULA
from opslib.host.kernel import icmp
from opslib.host.libvirt import guest_taps, netxml, virt, virtxml
from opslib.host.libvirt.netxml import NetworkXml
from opslib.host.libvirt.virtxml import DomainXml, canonical
from opslib.procedures import nat_bridge_ipv6 as nb

PREFIX = "2001:db8:2::/64"
NET = ipaddress.IPv6Network(PREFIX)


def apply_on(
    conn: libvirt.virConnect,
    *,
    host: str,
    netns: str,
    net: ipaddress.IPv6Network,
    network: str,
    rename_from: str = "",
    replace_ipv6: bool = False,
    timeout: float = 90.0,
    reviewed: Plan | None = None,
) -> Result:
    """The runbook's apply on this test's open connection to the test driver."""
    given = nb.Inputs(
        prefix=str(net), network=network, rename_from=rename_from,
        allow_ula=net.subnet_of(ULA), replace_ipv6=replace_ipv6, netns=netns, timeout=timeout,
    )  # fmt: skip
    return transaction.apply(nb.PROCEDURE, given, host, reviewed=reviewed, session=conn)


STOCK = """<network>
  <name>default</name>
  <uuid>dd8fe884-6c02-601e-7551-cca97df1c5df</uuid>
  <forward mode='nat'/>
  <bridge name='virbr0' stp='on' delay='0'/>
  <mac address='52:54:00:0b:ff:01'/>
  <ip address='198.51.100.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='198.51.100.100' end='198.51.100.199'/>
    </dhcp>
  </ip>
</network>
"""


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("2001:db8::/48", "not a /64"),
        ("2001:db8:2::", "not a /64"),
        ("fe80::/64", "link-local"),
        ("2001:db8::1/64", "host bits"),
        ("ff02::/64", "multicast"),
        ("fd00:1::/64", "unique-local"),
        ("::/64", "unspecified"),
        ("2001:db8:2::%eth0/64", "zone index %eth0"),
        ("not-a-prefix", "not an IPv6 prefix"),
        ("198.51.100.0/24", "not an IPv6 prefix"),
        ("", "needs a value"),
    ],
)
def test_bad_prefix_is_one_clear_line(prefix: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as exc:
        nb.Inputs(prefix=prefix)
    assert "\n" not in str(exc.value)


def test_ula_prefix_is_accepted_only_when_allowed() -> None:
    assert nb.Inputs(prefix="fd00:1::/64", allow_ula=True).net == ipaddress.IPv6Network(
        "fd00:1::/64"
    )
    assert nb.Inputs(prefix=PREFIX).net == NET
    with pytest.raises(InputError, match="set allow_ula to use it anyway"):
        nb.Inputs(prefix="fd00:1::/64")


def test_bad_prefix_fails_before_libvirt_is_touched() -> None:
    # The URI would fail to connect; the prefix error must come first.
    with pytest.raises(InputError, match="host bits"):
        nb.plan(host="h", libvirt_uri="qemu:///system?socket=/nowhere", netns="",
                prefix="2001:db8::1/64")  # fmt: skip


def diff_lines(before: str, after: str) -> list[str]:
    from opslib.core.changes import unified_diff

    return [
        line
        for line in unified_diff(before, after, "x").splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def test_adding_ipv6_adds_one_element_and_leaves_the_rest_alone() -> None:
    after = nb.with_ipv6(STOCK, NET)
    assert diff_lines(canonical(STOCK), after) == [
        '+  <ip family="ipv6" address="2001:db8:2::1" prefix="64"/>'
    ]
    parsed = netxml.parse_network(after)
    assert parsed.ip("ipv6") == netxml.NetworkIP("ipv6", "2001:db8:2::1", 64)
    assert parsed.ip("ipv4") == netxml.NetworkIP(
        "ipv4", "198.51.100.1", 24, (("198.51.100.100", "198.51.100.199"),)
    )
    assert nb.with_ipv6(after, NET) == after  # idempotent


def test_a_wrong_ipv6_address_is_corrected_in_place() -> None:
    old = STOCK.replace(
        "</network>", "  <ip family='ipv6' address='2001:db8:9::1' prefix='48'/>\n</network>"
    )
    after = nb.with_ipv6(old, NET)
    assert diff_lines(canonical(old), after) == [
        '-  <ip family="ipv6" address="2001:db8:9::1" prefix="48"/>',
        '+  <ip family="ipv6" address="2001:db8:2::1" prefix="64"/>',
    ]


def test_a_network_without_any_ip_gets_the_ipv6_element() -> None:
    bare = "<network>\n  <name>n</name>\n  <bridge name='br9'/>\n</network>\n"
    after = nb.with_ipv6(bare, NET)
    assert netxml.parse_network(after).ip("ipv6") is not None
    assert after.endswith('<ip family="ipv6" address="2001:db8:2::1" prefix="64"/>\n</network>\n')


def test_renamed_config_keeps_everything_but_the_name() -> None:
    new = etree.fromstring(NetworkXml(STOCK).renamed("nat-bridge").text.encode())
    assert new.findtext("name") == "nat-bridge"
    # The same network under another name: records diff and libvirt tools know it by it.
    assert new.findtext("uuid") == "dd8fe884-6c02-601e-7551-cca97df1c5df"
    assert new.find("bridge").get("name") == "virbr0"  # type: ignore[union-attr]
    assert new.find("mac").get("address") == "52:54:00:0b:ff:01"  # type: ignore[union-attr]


def test_retarget_moves_only_interfaces_on_the_old_network() -> None:
    dom = """<domain><devices>
<interface type='network'><mac address='52:54:00:00:00:01'/><source network='default'/></interface>
<interface type='network'><mac address='52:54:00:00:00:02'/><source network='other'/></interface>
<interface type='bridge'><mac address='52:54:00:00:00:03'/><source bridge='default'/></interface>
</devices></domain>"""
    ifaces = virtxml.parse_interfaces(DomainXml(dom).retargeted("default", "nat-bridge").text)
    assert [i.source for i in ifaces] == ["nat-bridge", "other", "default"]


# -- plans against the test driver -----------------------------------------------------------

NODE = """<node>
{network}
<domain type='test'>
  <name>vm-run</name><memory>65536</memory><os><type>hvm</type></os>
  <devices>
    <interface type='network'><mac address='52:54:00:0b:00:01'/><source network='default'/>
      <target dev='obtestvnet0'/></interface>
  </devices>
</domain>
<domain type='test'>
  <name>vm-off</name><memory>65536</memory><os><type>hvm</type></os>
  <devices>
    <interface type='network'><mac address='52:54:00:0b:00:02'/><source network='default'/>
    </interface>
  </devices>
</domain>
</node>
"""


@pytest.fixture
def node(tmp_path: Path) -> Iterator[libvirt.virConnect]:
    """One connection for the whole test: a test:///FILE node lives as long as it."""
    path = tmp_path / "node.xml"
    path.write_text(NODE.format(network=STOCK))
    with virt.connect(f"test://{path}") as conn:
        conn.lookupByName("vm-off").destroy()
        conn.networkLookupByName("default").setAutostart(1)
        yield conn


def observe(conn: libvirt.virConnect, network: str, rename_from: str = "") -> nb.Observed:
    return nb.observe(conn, "", network, rename_from)


def test_plan_adds_the_prefix_and_restarts_naming_the_guests_cut_off(
    node: libvirt.virConnect,
) -> None:
    plan = nb.ipv6_plan(observe(node, "default"), host="h", network="default", prefix=NET)
    assert [(c.target, c.action) for c in plan.changes] == [
        ("network:default", "update"),
        ("network:default", "restart"),
    ]
    assert '+  <ip family="ipv6" address="2001:db8:2::1" prefix="64"/>' in plan.diff
    assert "vm-run" in plan.changes[1].summary and "vm-off" not in plan.changes[1].summary
    assert [dataclasses.asdict(g) for g in plan.guests] == [
        {"domain": "vm-run", "mac": "52:54:00:0b:00:01", "tap": "obtestvnet0", "master": ""}
    ]


def test_plan_for_a_missing_network_names_the_ones_there(node: libvirt.virConnect) -> None:
    with pytest.raises(UnknownName, match=r"nat-bridge.*default"):
        nb.ipv6_plan(
            observe(node, "nat-bridge"),
            host="h",
            network="nat-bridge",
            prefix=NET,
            known_networks=["default"],
        )


def test_rename_is_planned_only_when_asked(node: libvirt.virConnect) -> None:
    plan = nb.ipv6_plan(
        observe(node, "nat-bridge", "default"),
        host="h",
        network="nat-bridge",
        prefix=NET,
        rename_from="default",
    )
    assert [(c.target, c.action) for c in plan.changes] == [
        ("network:nat-bridge", "define"),
        ("network:nat-bridge", "autostart"),
        ("network:default", "undefine"),
        ("domain:vm-off", "update"),
        ("domain:vm-run", "update"),
        ("network:nat-bridge", "start"),
    ]
    moved = plan.changes[3]
    assert '-      <source network="default"/>' in moved.diff.replace("'", '"') or (
        "source network" in moved.diff
    )
    assert netxml.parse_network(plan.xml).name == "nat-bridge"


def test_rename_apply_moves_network_autostart_and_guest_configs(node: libvirt.virConnect) -> None:
    # timeout=0: the test driver's guests have no real taps to ping.
    result = apply_on(
        node, host="h", netns="", net=NET, network="nat-bridge", rename_from="default", timeout=0
    )
    names = [n.name for n in virt.list_networks(node)]
    new = virt.get_network(node, "nat-bridge")
    off = virtxml.parse_interfaces(node.lookupByName("vm-off").XMLDesc(0))
    run_dom = node.lookupByName("vm-run")
    run_cfg = virtxml.parse_interfaces(run_dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    assert names == ["nat-bridge"]
    assert new.active and new.autostart and new.bridge == "virbr0"
    assert new.ip("ipv6") == netxml.NetworkIP("ipv6", "2001:db8:2::1", 64)
    assert [i.source for i in off] == ["nat-bridge"]
    assert [i.source for i in run_cfg] == ["nat-bridge"]
    # The test driver cannot change a live interface: the record says so.
    moved = step(result, "move autostart and guests to nat-bridge")
    assert "vm-run 52:54:00:0b:00:01: live source kept" in moved.detail
    # The running guest's tap does not exist here: it is named as not come back.
    assert result.status == "failed" and "vm-run" in result.summary
    # Second plan: the rename is done, nothing left but the (absent) tap.
    again = nb.ipv6_plan(
        observe(node, "nat-bridge", "default"),
        host="h",
        network="nat-bridge",
        prefix=NET,
        rename_from="default",
    )
    assert [c.action for c in again.changes] == ["attach"]
    assert "default is already renamed to nat-bridge" in again.notes


def test_a_rename_from_a_network_that_never_existed_is_refused(node: libvirt.virConnect) -> None:
    # nat-bridge exists but was not renamed from nosuchnet: nothing says it is "already
    # renamed", the parameter names a network that is not there.
    node.networkDefineXML(other_nat_bridge())
    with pytest.raises(InputError) as caught:
        plan_rename(node, "nosuchnet")
    message = str(caught.value)
    assert message.startswith("rename_from: there is no network nosuchnet to rename"), message
    assert "leave rename_from empty" in message and "\n" not in message


def test_after_a_rename_only_its_own_source_reads_as_already_renamed(
    node: libvirt.virConnect,
) -> None:
    apply_on(
        node, host="h", netns="", net=NET, network="nat-bridge", rename_from="default", timeout=0
    )
    # The same network (its UUID) under the new name ...
    assert node.networkLookupByName("nat-bridge").UUIDString() == (
        "dd8fe884-6c02-601e-7551-cca97df1c5df"
    )
    # ... says what it was renamed from (libvirt keeps <metadata>) ...
    renamed = virt.network_state(node, "nat-bridge")
    assert renamed is not None and NetworkXml(renamed.xml).renamed_from() == "default"
    assert "default is already renamed to nat-bridge" in plan_rename(node, "default").notes
    # ... so a typo, or another network's name, is not taken for that rename.
    with pytest.raises(InputError, match="there is no network defualt to rename; nat-bridge "
                       "was renamed from default"):  # fmt: skip
        plan_rename(node, "defualt")


def other_nat_bridge() -> str:
    """A network nat-bridge beside default (its own UUID and bridge), not renamed from it."""
    return NetworkXml(STOCK).set(name="nat-bridge", uuid=None).text.replace("virbr0", "virbr9")


def plan_rename(conn: libvirt.virConnect, rename_from: str) -> Any:
    return nb.ipv6_plan(
        observe(conn, "nat-bridge", rename_from),
        host="h",
        network="nat-bridge",
        prefix=NET,
        rename_from=rename_from,
    )


def test_rename_refuses_when_both_networks_exist(node: libvirt.virConnect) -> None:
    node.networkDefineXML(other_nat_bridge())
    with pytest.raises(InputError, match="both default and nat-bridge exist"):
        nb.ipv6_plan(
            observe(node, "nat-bridge", "default"),
            host="h",
            network="nat-bridge",
            prefix=NET,
            rename_from="default",
        )


def test_redefine_apply_then_second_plan_is_empty(node: libvirt.virConnect) -> None:
    result = apply_on(node, host="h", netns="", net=NET, network="default", timeout=0)
    assert [c.action for c in result.changes] == ["update", "restart"]
    assert virt.get_network(node, "default").ip("ipv6") is not None
    assert node.networkLookupByName("default").isActive()
    plan = nb.ipv6_plan(observe(node, "default"), host="h", network="default", prefix=NET)
    assert [c.action for c in plan.changes] == ["attach"]  # only the test driver's fake tap


def test_libvirt_errors_are_translated(tmp_path: Path) -> None:
    from opslib.core.errors import LibvirtError

    with pytest.raises(LibvirtError, match="cannot connect"):
        nb.plan(host="h", libvirt_uri=f"test://{tmp_path}/missing.xml", netns="", prefix=PREFIX)
    assert libvirt  # the module is the real binding, not a stub


# -- a rename step that fails: the old network back, or the new one running; never a raw error


def refusing(conn: libvirt.virConnect, real: Any, refuse: Callable[..., bool]) -> Any:
    """``real`` unless ``refuse(*args)``: then a genuine libvirtError (a failed lookup)."""

    def call(*args: Any) -> Any:
        if refuse(*args):
            conn.networkLookupByName("refused-by-the-test")
        return real(*args)

    return call


def network_method_refused(
    monkeypatch: pytest.MonkeyPatch, conn: libvirt.virConnect, method: str, name: str
) -> None:
    real = getattr(libvirt.virNetwork, method)

    def call(self: libvirt.virNetwork, *args: Any) -> Any:
        if self.name() == name:
            conn.networkLookupByName("refused-by-the-test")
        return real(self, *args)

    monkeypatch.setattr(libvirt.virNetwork, method, call)


def rename(conn: libvirt.virConnect) -> Any:
    return apply_on(
        conn, host="h", netns="", net=NET, network="nat-bridge", rename_from="default", timeout=0
    )


def step(result: Any, name: str) -> Any:
    """The result's step called ``name``."""
    [found] = [s for s in result.steps if s.name == name]
    return found


def sources(conn: libvirt.virConnect, domain: str) -> list[str]:
    xml = conn.lookupByName(domain).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    return [i.source for i in virtxml.parse_interfaces(xml)]


def assert_default_is_back(conn: libvirt.virConnect, result: Any) -> None:
    assert result.status == "rolled back", result.summary
    assert "default is back and running" in result.summary
    assert "refused-by-the-test" in result.summary
    assert [n.name for n in virt.list_networks(conn)] == ["default"]
    back = virt.get_network(conn, "default")
    assert back.active and back.autostart and back.bridge == "virbr0"
    assert back.ip("ipv6") is None  # the old definition, not the new one
    assert sources(conn, "vm-run") == sources(conn, "vm-off") == ["default"]
    # The running guest's tap was put back (here: named as missing, the test driver has none).
    assert (
        "rolled back: default defined and running again"
        in step(result, "roll back to default").detail
    )
    assert len([s for s in result.steps if not s.ok]) == 1  # the rename step that failed


@pytest.mark.parametrize(
    ("method", "name"),
    [
        ("destroy", "default"),  # the old network does not stop
        ("undefine", "default"),  # stopped but not undefined
        ("create", "nat-bridge"),  # the new one does not start
    ],
)
def test_rename_step_failing_before_the_new_network_runs_puts_the_old_one_back(
    node: libvirt.virConnect, monkeypatch: pytest.MonkeyPatch, method: str, name: str
) -> None:
    network_method_refused(monkeypatch, node, method, name)
    assert_default_is_back(node, rename(node))


def test_rename_with_the_new_definition_refused_puts_the_old_one_back(
    node: libvirt.virConnect, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = node.networkDefineXML
    monkeypatch.setattr(
        node,
        "networkDefineXML",
        refusing(node, real, lambda xml: "<name>nat-bridge</name>" in xml),
    )
    assert_default_is_back(node, rename(node))


def test_rename_failing_after_the_new_network_runs_keeps_it_and_moves_every_guest(
    node: libvirt.virConnect, monkeypatch: pytest.MonkeyPatch
) -> None:
    network_method_refused(monkeypatch, node, "setAutostart", "nat-bridge")
    real = node.defineXML
    monkeypatch.setattr(
        node, "defineXML", refusing(node, real, lambda xml: "<name>vm-off</name>" in xml)
    )
    result = rename(node)
    assert result.status == "failed"
    assert "renaming default to nat-bridge stopped" in result.summary
    assert "cannot set autostart of nat-bridge" in result.summary
    assert "cannot update vm-off's interfaces" in result.summary
    assert [n.name for n in virt.list_networks(node)] == ["nat-bridge"]
    assert virt.get_network(node, "nat-bridge").active
    # One guest's config failing does not leave the others on the old name.
    assert sources(node, "vm-run") == ["nat-bridge"]
    assert sources(node, "vm-off") == ["default"]
    assert "taps back on virbr0" in step(result, "reattach guest taps to virbr0").detail


def test_rename_whose_rollback_fails_too_says_so_and_keeps_the_old_definition(
    node: libvirt.virConnect, monkeypatch: pytest.MonkeyPatch
) -> None:
    network_method_refused(monkeypatch, node, "create", "nat-bridge")
    real = node.networkDefineXML
    monkeypatch.setattr(
        node, "networkDefineXML", refusing(node, real, lambda xml: "<name>default</name>" in xml)
    )
    result = rename(node)
    assert result.status == "failed"
    assert "putting default back failed too" in result.summary
    assert netxml.parse_network(result.data["restore_xml"]).name == "default"
    assert [n.name for n in virt.list_networks(node)] == []


def test_waiting_for_guests_pauses_between_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    pings: list[str] = []

    def ping(netns: str, address: str, **kwargs: Any) -> icmp.Echo:
        pings.append(address)
        return icmp.Echo({}, frozenset({address}), 0.0)  # no route: fails at once

    # A clock of the test's own: only the waits the procedure asks for move it, so the
    # machine's load cannot change what is counted.
    now = [1000.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(guest_taps.icmp, "ping", ping)
    monkeypatch.setattr(guest_taps.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(guest_taps.time, "sleep", sleep)
    cut = guest_taps.Cut("vm", "vnet0", "52:54:00:0b:00:01", "2001:db8:2::1", 0.0)
    guest_taps.wait_for_guests("", [cut], timeout=1.2)
    assert now[0] == pytest.approx(1001.2)  # it waited out the timeout, no longer
    assert slept == pytest.approx([guest_taps.WAIT_ROUND, guest_taps.WAIT_ROUND, 0.2])
    assert len(pings) == 3  # one per WAIT_ROUND, not back to back
    assert cut.answered_at is None


def test_apply_refuses_a_plan_the_host_no_longer_matches(node: libvirt.virConnect) -> None:
    from opslib.core.errors import ApplyError

    reviewed = nb.ipv6_plan(observe(node, "default"), host="h", network="default", prefix=NET)
    before = node.networkLookupByName("default").XMLDesc(0)
    other = ipaddress.IPv6Network("2001:db8:9::/64")
    with pytest.raises(ApplyError, match="changed since the plan was made"):
        apply_on(
            node, host="h", netns="", net=other, network="default", timeout=0, reviewed=reviewed
        )
    assert node.networkLookupByName("default").XMLDesc(0) == before


# -- a network that already has an IPv6 prefix: replaced only when asked, children that fit

OLD_V6 = """  <ip family='ipv6' address='2001:db8:9::1' prefix='64'>
    <dhcp>
      <range start='2001:db8:9::100' end='2001:db8:9::1ff'/>
      <host name='vm-fixed' ip='2001:db8:9::5'/>
    </dhcp>
  </ip>
</network>"""


def node_with(tmp_path: Path, network_xml: str) -> libvirt.virConnect:
    path = tmp_path / "node-v6.xml"
    path.write_text(NODE.format(network=network_xml))
    return libvirt.open(f"test://{path}")


def test_an_other_ipv6_prefix_is_refused_unless_its_replacement_is_asked(tmp_path: Path) -> None:
    conn = node_with(tmp_path, STOCK.replace("</network>", OLD_V6))
    with pytest.raises(InputError) as exc:
        nb.ipv6_plan(observe(conn, "default"), host="h", network="default", prefix=NET)
    message = str(exc.value)
    assert "default already has the IPv6 prefix 2001:db8:9::/64" in message
    assert "replace_ipv6" in message and "\n" not in message
    assert conn.networkLookupByName("default").XMLDesc(0).count("2001:db8:9::") == 4


def test_replacing_a_prefix_says_so_and_drops_the_dhcpv6_children_of_the_old_one(
    tmp_path: Path,
) -> None:
    conn = node_with(tmp_path, STOCK.replace("</network>", OLD_V6))
    plan = nb.ipv6_plan(
        observe(conn, "default"), host="h", network="default", prefix=NET, replace_ipv6=True
    )
    update = plan.changes[0]
    assert update.action == "update"
    assert "replace default's IPv6 prefix 2001:db8:9::/64 with 2001:db8:2::/64" in update.summary
    assert "range 2001:db8:9::100-2001:db8:9::1ff" in update.summary
    assert "host 2001:db8:9::5" in update.summary
    assert "2001:db8:9::" not in plan.xml
    want = netxml.NetworkIP("ipv6", "2001:db8:2::1", 64)
    assert netxml.parse_network(plan.xml).ip("ipv6") == want
    # libvirt takes it (its parser refuses a range outside the prefix), and apply does it.
    result = apply_on(
        conn, host="h", netns="", net=NET, network="default", replace_ipv6=True, timeout=0
    )
    assert [c.action for c in result.changes] == ["update", "restart"], result.summary
    after = virt.get_network(conn, "default")
    assert after.ip("ipv6") == netxml.NetworkIP("ipv6", "2001:db8:2::1", 64)
    assert "2001:db8:9::" not in after.xml


SECOND_V6 = "  <ip family='ipv6' address='fd00:9::1' prefix='64'/>\n"


def ipv6_prefixes(xml: str) -> list[str]:
    ips = netxml.parse_network(xml).ips
    return [f"{ip.address}/{ip.prefix}" for ip in ips if ip.family == "ipv6"]


def test_two_other_ipv6_prefixes_are_both_named_and_both_replaced(tmp_path: Path) -> None:
    # replace_ipv6 replaced the first and silently kept the second: guests kept addresses
    # in a prefix the host no longer meant to route. Both go, and the plan says so.
    conn = node_with(tmp_path, STOCK.replace("</network>", SECOND_V6 + OLD_V6))
    with pytest.raises(InputError) as exc:
        nb.ipv6_plan(observe(conn, "default"), host="h", network="default", prefix=NET)
    assert "IPv6 prefixes fd00:9::/64, 2001:db8:9::/64; set replace_ipv6" in str(exc.value)
    plan = nb.ipv6_plan(
        observe(conn, "default"), host="h", network="default", prefix=NET, replace_ipv6=True
    )
    assert "replace default's IPv6 prefixes fd00:9::/64, 2001:db8:9::/64 with 2001:db8:2::/64" in (
        plan.changes[0].summary
    )
    assert (
        "guests lose their addresses in fd00:9::/64, 2001:db8:9::/64; they take new ones from "
        "2001:db8:2::/64" in plan.notes
    )
    assert ipv6_prefixes(plan.xml) == ["2001:db8:2::1/64"]
    result = apply_on(
        conn, host="h", netns="", net=NET, network="default", replace_ipv6=True, timeout=0
    )
    assert [c.action for c in result.changes] == ["update", "restart"], result.summary
    assert ipv6_prefixes(virt.get_network(conn, "default").xml) == ["2001:db8:2::1/64"]


def test_another_prefix_beside_the_routed_one_is_named_and_dropped_only_when_asked(
    tmp_path: Path,
) -> None:
    ours = "  <ip family='ipv6' address='2001:db8:2::1' prefix='64'/>\n"
    conn = node_with(tmp_path, STOCK.replace("</network>", ours + SECOND_V6 + "</network>"))
    kept = nb.ipv6_plan(observe(conn, "default"), host="h", network="default", prefix=NET)
    # No update: only the test driver's fake taps, which are never on a bridge.
    assert {c.action for c in kept.changes} == {"attach"}
    assert (
        "default also has the IPv6 prefix fd00:9::/64: guests keep their addresses there; "
        "set replace_ipv6 to drop it" in kept.notes
    )
    dropped = nb.ipv6_plan(
        observe(conn, "default"), host="h", network="default", prefix=NET, replace_ipv6=True
    )
    assert dropped.changes[0].summary.startswith(
        "replace default's IPv6 prefix fd00:9::/64 with 2001:db8:2::/64"
    )
    assert ipv6_prefixes(dropped.xml) == ["2001:db8:2::1/64"]


def test_another_address_in_the_same_prefix_is_corrected_keeping_the_children_that_fit(
    tmp_path: Path,
) -> None:
    same = OLD_V6.replace("2001:db8:9::", "2001:db8:2::").replace(
        "2001:db8:2::1'", "2001:db8:2::7'"
    )
    conn = node_with(tmp_path, STOCK.replace("</network>", same))
    plan = nb.ipv6_plan(observe(conn, "default"), host="h", network="default", prefix=NET)
    assert (
        "set default's IPv6 to 2001:db8:2::1/64 (was 2001:db8:2::7/64)" in plan.changes[0].summary
    )
    assert netxml.parse_network(plan.xml).ip("ipv6") == netxml.NetworkIP(
        "ipv6", "2001:db8:2::1", 64, (("2001:db8:2::100", "2001:db8:2::1ff"),)
    )
    assert "2001:db8:2::5" in plan.xml


# -- forward modes on which libvirt allows no <ip>


@pytest.mark.parametrize("mode", ["bridge", "hostdev", "passthrough", "private", "vepa"])
@pytest.mark.parametrize("rename_from", ["", "fwd"])
def test_a_network_that_cannot_carry_an_ip_is_refused_in_one_line(
    mode: str, rename_from: str
) -> None:
    xml = f"<network>\n  <name>fwd</name>\n  <forward mode='{mode}'/>\n</network>\n"
    state = virt.NetworkState("fwd", xml, xml, True, True, "")
    observed = nb.Observed(None if rename_from else state, state if rename_from else None, (), ())
    network = "nat-bridge" if rename_from else "fwd"
    with pytest.raises(InputError) as exc:
        nb.ipv6_plan(observed, host="h", network=network, prefix=NET, rename_from=rename_from)
    assert f"network fwd forwards in mode {mode}" in str(exc.value)
    assert "\n" not in str(exc.value)


# -- libvirt refuses the new definition: checked before the network is stopped


def refused_definitions(monkeypatch: pytest.MonkeyPatch, conn: libvirt.virConnect) -> list[str]:
    """Every network (re)definition carrying the new prefix is refused by libvirt's parser
    (a DHCPv6 range outside it is slipped in); returns the log of stops and starts."""
    events: list[str] = []
    for method in ("destroy", "create"):
        real = getattr(libvirt.virNetwork, method)

        def call(self: libvirt.virNetwork, *args: Any, _real: Any = real, _m: str = method) -> Any:
            events.append(f"{_m} {self.name()}")
            return _real(self, *args)

        monkeypatch.setattr(libvirt.virNetwork, method, call)
    bad = "<dhcp><range start='2001:db8:9::10' end='2001:db8:9::20'/></dhcp></ip>"
    for name in ("networkDefineXML", "networkDefineXMLFlags"):
        real_define = getattr(conn, name)

        def define(xml: str, *args: Any, _real: Any = real_define) -> Any:
            if "2001:db8:2::1" in xml:
                xml = xml.replace('prefix="64"/>', f'prefix="64">{bad}')
            return _real(xml, *args)

        monkeypatch.setattr(conn, name, define)
    return events


def test_a_refused_definition_changes_nothing_and_says_why(
    node: libvirt.virConnect, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = node.networkLookupByName("default").XMLDesc(0)
    events = refused_definitions(monkeypatch, node)
    result = apply_on(node, host="h", netns="", net=NET, network="default", timeout=0)
    assert result.status == "failed"
    assert events == []  # never stopped: no guest was cut off
    assert node.networkLookupByName("default").XMLDesc(0) == before
    why = "range 2001:db8:9::10 - 2001:db8:9::20 is not entirely within network"
    assert "libvirt refuses the new definition of default" in result.summary
    assert why in result.summary and "nothing was changed" in result.summary
    assert why in result.steps[-1].detail and result.steps[-1].ok is False
    assert why in str(result.to_json())


def test_a_rename_whose_definition_is_refused_changes_nothing(
    node: libvirt.virConnect, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = node.networkLookupByName("default").XMLDesc(0)
    events = refused_definitions(monkeypatch, node)
    result = rename(node)
    assert result.status == "failed", result.summary
    assert events == []
    assert [n.name for n in virt.list_networks(node)] == ["default"]
    assert node.networkLookupByName("default").XMLDesc(0) == before
    assert sources(node, "vm-run") == sources(node, "vm-off") == ["default"]
    assert "is not entirely within network" in result.summary


def test_a_network_that_does_not_start_again_is_rolled_back_with_libvirts_message(
    node: libvirt.virConnect, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = libvirt.virNetwork.create
    calls = []

    def create(self: libvirt.virNetwork) -> Any:
        calls.append(self.name())
        if len(calls) == 1:  # the new config does not start; the old one does
            node.networkLookupByName("refused-by-the-test")
        return real(self)

    monkeypatch.setattr(libvirt.virNetwork, "create", create)
    result = apply_on(node, host="h", netns="", net=NET, network="default", timeout=0)
    assert result.status == "rolled back"
    assert "refused-by-the-test" in result.summary and "the old one is back" in result.summary
    assert "refused-by-the-test" in step(result, "restart default").detail
    back = virt.get_network(node, "default")
    assert back.active and back.ip("ipv6") is None
