"""nat-bridge-ipv6: give the NAT network the routed /64 of the tunnel broker.

The wiki's "nat-bridge setup": add ``<ip family='ipv6' address='PREFIX::1'
prefix='64'/>`` to the NAT network's XML, so that libvirt's dnsmasq sends router
advertisements and the guests take SLAAC addresses from the prefix. A network
restart leaves running guests' taps detached from the bridge, so apply puts every
one back (netlink), then waits until each guest's EUI-64 address answers ping6.

Renaming the stock ``default`` network to ``nat-bridge`` (``rename_from``) is part
of the plan only when asked. libvirt cannot rename a network, so the rename is:
define the new name with the same config (new UUID), move autostart, stop and
undefine the old one, start the new one on the same bridge, and point every guest
interface at the new name, in the persistent config (else the guest would not start
again) and, for running guests, live (libvirt reconnects the tap). Running guests
are cut off for the moment between stop and reattach, as in any restart. When a step
fails before the new network runs, the old definition is put back (defined, running,
autostart as before); in every case the running guests' taps go back on the bridge.

The plan refuses, in one line and before anything else, a network whose forward mode
takes no ``<ip>`` (bridge, hostdev, passthrough, private, vepa), and a network that has
another IPv6 prefix unless ``replace_ipv6`` asks to replace it (the plan then says so and
drops that prefix's DHCPv6 ranges and hosts, which libvirt would refuse in the new one).
apply has libvirt check the new definition by defining it before anything is stopped (a
running network keeps its running config until restarted): a refusal changes nothing and
its reason is in the result.

Pure parts (``validate_prefix``, ``ipv6_edit``, ``renamed``, ``compute_plan``) take
text and observed state; ``observe`` and ``apply`` talk to libvirt and netlink.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import libvirt
from lxml import etree

from opslib import netlink, rtnl, virt
from opslib.changes import Change, Check, Outcome, Plan, Result, ensure_unchanged
from opslib.errors import ApplyError, InputError, LibvirtError, OpsError, UnknownName
from opslib.ipv6prefix import gateway, validate_prefix
from opslib.slaac import eui64_address

if TYPE_CHECKING:
    from opslib.lab.config import Lab

RUNBOOK = "nat-bridge-ipv6"
# libvirt's network driver refuses an <ip> on networks it does not route for.
NO_IP_MODES = ("bridge", "hostdev", "passthrough", "private", "vepa")
WAIT_ROUND = 0.5  # seconds between rounds of pings to the guests


# -- pure: input, XML --------------------------------------------------------------


def _parse(xml: str) -> etree._Element:
    parser = etree.XMLParser(remove_blank_text=False)
    return etree.fromstring(xml.encode(), parser)


def canonical(xml: str) -> str:
    """The XML as lxml writes it: both sides of a diff go through this."""
    return etree.tostring(_parse(xml), encoding="unicode") + "\n"


def _ipv6_elements(root: etree._Element) -> list[etree._Element]:
    return [ip for ip in root.iterfind("ip") if ip.get("family") == "ipv6"]


def has_ipv6(xml: str, net: ipaddress.IPv6Network) -> bool:
    """True when the network XML carries PREFIX::1/64 for ``net``."""
    for ip in _ipv6_elements(_parse(xml)):
        address, prefix = ip.get("address", ""), ip.get("prefix", "64")
        try:
            if ipaddress.IPv6Address(address) == ipaddress.IPv6Address(gateway(net)):
                return prefix == "64"
        except ValueError:
            continue
    return False


@dataclass(frozen=True)
class IPv6Edit:
    """The network XML with PREFIX::1/64, and what the edit took away to get there."""

    xml: str
    old: str = ""  # the IPv6 address/prefix rewritten in place ("" when added or already there)
    dropped: tuple[str, ...] = ()  # DHCPv6 children of ``old`` outside the new prefix

    def replaces(self, net: ipaddress.IPv6Network) -> ipaddress.IPv6Network | None:
        """The other prefix this edit replaces (None for an add or a fix within ``net``)."""
        if not self.old:
            return None
        try:
            old = ipaddress.IPv6Interface(self.old).network
        except ValueError:
            return ipaddress.IPv6Network("::/128")  # unreadable: a replacement all the same
        return None if old == net else old


def _in(net: ipaddress.IPv6Network, address: str | None) -> bool:
    try:
        return ipaddress.IPv6Address(address or "") in net
    except ValueError:
        return False


def _remove(element: etree._Element) -> None:
    """Remove ``element``, keeping its siblings' indentation."""
    parent = element.getparent()
    assert parent is not None
    previous = element.getprevious()
    if previous is not None:
        previous.tail = element.tail
    else:
        parent.text = element.tail
    parent.remove(element)


def ipv6_edit(xml: str, net: ipaddress.IPv6Network) -> IPv6Edit:
    """Set the network's IPv6 ``<ip>`` to PREFIX::1/64: add one, or rewrite one in place
    (the one within ``net`` if any, else the first), dropping its DHCPv6 ``<range>`` and
    ``<host>`` children that the new prefix does not hold (libvirt refuses those)."""
    if has_ipv6(xml, net):
        return IPv6Edit(canonical(xml))
    root = _parse(xml)
    existing = _ipv6_elements(root)
    if not existing:
        return IPv6Edit(_with_new_ipv6(root, net))
    ip = next(
        (e for e in existing if _in(net, e.get("address")) and e.get("prefix", "64") == "64"),
        existing[0],
    )
    old = f"{ip.get('address', '')}/{ip.get('prefix', '64')}"
    ip.set("address", gateway(net))
    ip.set("prefix", "64")
    if "netmask" in ip.attrib:
        del ip.attrib["netmask"]
    dropped = []
    for dhcp in ip.findall("dhcp"):
        for child in list(dhcp):
            if child.tag == "range" and not (
                _in(net, child.get("start")) and _in(net, child.get("end"))
            ):
                dropped.append(f"range {child.get('start')}-{child.get('end')}")
                _remove(child)
            elif child.tag == "host" and child.get("ip") and not _in(net, child.get("ip")):
                dropped.append(f"host {child.get('ip')}")
                _remove(child)
        if not len(dhcp):
            _remove(dhcp)
    if not len(ip):
        ip.text = None
    return IPv6Edit(etree.tostring(root, encoding="unicode") + "\n", old, tuple(dropped))


def _with_new_ipv6(root: etree._Element, net: ipaddress.IPv6Network) -> str:
    """``root`` with an IPv6 ``<ip>`` PREFIX::1/64 added after its last ``<ip>``."""
    ip = etree.Element("ip", {"family": "ipv6", "address": gateway(net), "prefix": "64"})
    ips = root.findall("ip")
    if ips:
        last = ips[-1]
        previous = last.getprevious()
        indent = (previous.tail if previous is not None else root.text) or "\n  "
        last.addnext(ip)
        ip.tail, last.tail = last.tail, indent
    else:
        children = list(root)
        indent = root.text or "\n  "
        if children:
            children[-1].addnext(ip)
            ip.tail, children[-1].tail = children[-1].tail, indent
        else:
            root.text, ip.tail = indent, "\n"
            root.append(ip)
    return etree.tostring(root, encoding="unicode") + "\n"


def with_ipv6(xml: str, net: ipaddress.IPv6Network) -> str:
    """The network XML with its IPv6 ``<ip>`` set to PREFIX::1/64 (see ``ipv6_edit``)."""
    return ipv6_edit(xml, net).xml


def renamed(xml: str, name: str) -> str:
    """The same network config under another name, without its UUID (libvirt makes one)."""
    root = _parse(xml)
    name_el = root.find("name")
    if name_el is None:
        raise InputError("the network XML has no <name>")
    name_el.text = name
    for uuid in root.findall("uuid"):
        previous = uuid.getprevious()
        if previous is not None:
            previous.tail = uuid.tail
        root.remove(uuid)
    return etree.tostring(root, encoding="unicode") + "\n"


def retarget_interfaces(domain_xml: str, old: str, new: str) -> str:
    """A domain XML with every ``<interface type='network'>`` on ``old`` moved to ``new``."""
    root = _parse(domain_xml)
    for source in root.iterfind("devices/interface[@type='network']/source"):
        if source.get("network") == old:
            source.set("network", new)
    return etree.tostring(root, encoding="unicode") + "\n"


def interface_xml(domain_xml: str, mac: str) -> str | None:
    """The ``<interface>`` element of ``mac`` alone (for updateDeviceFlags)."""
    root = _parse(domain_xml)
    for iface in root.iterfind("devices/interface"):
        mac_el = iface.find("mac")
        if mac_el is not None and mac_el.get("address", "").lower() == mac.lower():
            iface.tail = None
            return etree.tostring(iface, encoding="unicode")
    return None


# -- observed state -------------------------------------------------------------------


@dataclass(frozen=True)
class GuestTap:
    """A running guest's NIC on the network and where its tap is now."""

    domain: str
    mac: str
    tap: str
    master: str  # bridge the tap is a port of now ("" = detached)


@dataclass(frozen=True)
class NetState:
    name: str
    xml: str  # persistent config
    live_xml: str  # running config ("" when inactive)
    active: bool
    autostart: bool
    bridge: str


@dataclass(frozen=True)
class Observed:
    target: NetState | None  # the network called ``network``
    source: NetState | None  # the network called ``rename_from`` (None when not asked)
    taps: tuple[GuestTap, ...]  # running guests' NICs on either
    users: tuple[tuple[str, str], ...]  # (domain, persistent XML) of every domain using source


def _net_state(conn: libvirt.virConnect, name: str) -> NetState | None:
    try:
        net = conn.networkLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
            return None
        raise LibvirtError(f"cannot look up network {name}: {exc.get_error_message()}") from exc
    with virt.translated(f"cannot read network {name}"):
        active = bool(net.isActive())
        live = net.XMLDesc(0)
        try:
            config = net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)
        except libvirt.libvirtError:
            config = live  # drivers without separate configs (test:///)
        return NetState(
            name=name,
            xml=config,
            live_xml=live if active else "",
            active=active,
            autostart=bool(net.autostart()),
            bridge=virt.parse_network(live).bridge,
        )


def _inactive_domain_xml(dom: libvirt.virDomain) -> str:
    with virt.translated(f"cannot read domain {dom.name()}"):
        try:
            return str(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        except libvirt.libvirtError:
            return str(dom.XMLDesc(0))


def observe(conn: libvirt.virConnect, netns: str, network: str, rename_from: str = "") -> Observed:
    target = _net_state(conn, network)
    source = _net_state(conn, rename_from) if rename_from else None
    names = {network, rename_from} - {""}
    link_names = {link.index: link.name for link in netlink.links(netns)}
    masters = {link.name: link_names.get(link.master, "") for link in netlink.links(netns)}
    taps = []
    users = []
    with virt.translated("cannot list domains"):
        doms = conn.listAllDomains()
    for dom in sorted(doms, key=lambda d: d.name()):
        domain = virt.get_domain(conn, dom.name())
        for iface in domain.interfaces:
            if iface.type == "network" and iface.source in names and domain.running:
                taps.append(
                    GuestTap(domain.name, iface.mac, iface.target, masters.get(iface.target, ""))
                )
        if rename_from and any(
            i.type == "network" and i.source == rename_from for i in domain.interfaces
        ):
            users.append((domain.name, _inactive_domain_xml(dom)))
    return Observed(target, source, tuple(taps), tuple(users))


# -- pure: the plan -----------------------------------------------------------------------


def compute_plan(
    observed: Observed,
    *,
    host: str,
    network: str,
    prefix: ipaddress.IPv6Network,
    rename_from: str = "",
    replace_ipv6: bool = False,
    known_networks: Iterable[str] = (),
) -> Plan:
    """What apply would change, from observed state only."""
    target, source = observed.target, observed.source
    notes: list[str] = []
    changes: list[Change] = []
    renaming = False
    if rename_from and rename_from != network:
        if target is not None and source is not None:
            raise InputError(
                f"both {rename_from} and {network} exist; undefine one of them or leave "
                "rename_from empty"
            )
        if target is None and source is None:
            raise UnknownName("network", rename_from, known_networks)
        renaming = source is not None
        if not renaming:
            notes.append(f"{rename_from} is already renamed to {network}")
    elif target is None:
        raise UnknownName("network", network, known_networks)

    base = source if renaming else target
    assert base is not None
    mode = virt.parse_network(base.xml).forward_mode
    if mode in NO_IP_MODES:
        raise InputError(
            f"network {base.name} forwards in mode {mode}, where libvirt allows no <ip> "
            "(no prefix, no router advertisements); choose a NAT or routed network"
        )
    edit = ipv6_edit(base.xml, prefix)
    replaced = edit.replaces(prefix)
    if replaced is not None and not replace_ipv6:
        raise InputError(
            f"network {base.name} already has the IPv6 prefix {replaced} ({edit.old}); "
            f"set replace_ipv6 to replace it with {prefix}"
        )
    new_xml = edit.xml
    if replaced is not None:
        what = f"replace {base.name}'s IPv6 prefix {replaced} with {prefix} ({gateway(prefix)}/64)"
        notes.append(f"guests lose their addresses in {replaced}; they take new ones from {prefix}")
    else:
        was = f" (was {edit.old})" if edit.old else ""
        what = f"set {network}'s IPv6 to {gateway(prefix)}/64{was}"
    if edit.dropped:
        what += f"; drop its DHCPv6 {', '.join(edit.dropped)} (outside {prefix})"
    bridge = base.bridge
    running_taps = [t for t in observed.taps if t.tap]
    cut = ", ".join(sorted({t.domain for t in running_taps})) or "none"
    if renaming:
        assert source is not None
        new_xml = renamed(new_xml, network)
        changes.append(
            Change(
                f"network:{network}",
                "define",
                f"define {network} as {rename_from}'s config; {what}",
                None,
                new_xml,
            )
        )
        if source.autostart:
            changes.append(
                Change(f"network:{network}", "autostart", f"autostart {network}", "off", "on")
            )
        changes.append(
            Change(
                f"network:{rename_from}",
                "undefine",
                f"stop and undefine {rename_from} (its bridge {bridge} moves to {network})",
                canonical(source.xml),
                None,
            )
        )
        for domain, xml in observed.users:
            changes.append(
                Change(
                    f"domain:{domain}",
                    "update",
                    f"{domain}: interfaces on {rename_from} move to {network}",
                    canonical(xml),
                    retarget_interfaces(xml, rename_from, network),
                )
            )
        changes.append(
            Change(
                f"network:{network}",
                "start",
                f"start {network} on {bridge}; reattach the taps of running guests ({cut})",
            )
        )
        notes.append(
            f"running guests ({cut}) lose their network between stopping {rename_from} and "
            f"reattaching their taps to {bridge}; libvirt keeps {network}'s bridge name"
        )
    else:
        assert target is not None
        before = canonical(target.xml)
        if new_xml != before:
            changes.append(
                Change(
                    f"network:{network}",
                    "update",
                    what,
                    before,
                    new_xml,
                )
            )
        if target.active and (new_xml != before or not has_ipv6(target.live_xml, prefix)):
            changes.append(
                Change(
                    f"network:{network}",
                    "restart",
                    f"restart {network}; reattach the taps of running guests ({cut})",
                )
            )
            notes.append(
                f"running guests ({cut}) are cut off from the stop of {network} until their "
                "taps are back on the bridge"
            )
        elif target.active:
            for tap in running_taps:
                if tap.master != bridge:
                    changes.append(
                        Change(
                            f"link:{tap.tap}",
                            "attach",
                            f"reattach {tap.domain}'s tap {tap.tap} to {bridge}",
                            tap.master or "(detached)",
                            bridge,
                        )
                    )
        else:
            notes.append(f"{network} is not running: the prefix takes effect when it starts")
    return Plan(
        runbook=RUNBOOK,
        host=host,
        changes=tuple(changes),
        notes=tuple(notes),
        data={
            "network": network,
            "rename_from": rename_from if renaming else "",
            "prefix": str(prefix),
            "bridge": bridge,
            "xml": new_xml,
            "guests": [asdict(t) for t in running_taps],
        },
    )


# -- side effects ---------------------------------------------------------------------------


def plan(
    *,
    host: str,
    libvirt_uri: str,
    netns: str,
    prefix: str,
    network: str = "nat-bridge",
    rename_from: str = "",
    allow_ula: bool = False,
    replace_ipv6: bool = False,
) -> Plan:
    net = validate_prefix(prefix, allow_ula=allow_ula)
    with virt.connect(libvirt_uri) as conn:
        observed = observe(conn, netns, network, rename_from)
        known = [n.name for n in virt.list_networks(conn)]
    return compute_plan(
        observed,
        host=host,
        network=network,
        prefix=net,
        rename_from=rename_from,
        replace_ipv6=replace_ipv6,
        known_networks=known,
    )


@dataclass
class _Cut:
    domain: str
    tap: str
    mac: str
    address: str
    detached_at: float
    reattached_at: float | None = None
    answered_at: float | None = None


def _reattach(netns: str, bridge: str, cuts: list[_Cut]) -> list[str]:
    """Put every tap back on the bridge (and up); names of taps that could not be."""
    failed = []
    for cut in cuts:
        link = netlink.link_by_name(netns, cut.tap)
        bridge_link = netlink.link_by_name(netns, bridge)
        if link is None or bridge_link is None:
            failed.append(cut.tap)
            continue
        if link.master != bridge_link.index:
            netlink.set_master(netns, cut.tap, bridge)
        if not link.up:
            netlink.set_link(netns, cut.tap, up=True)
        cut.reattached_at = time.monotonic()
    return failed


def _wait_for_guests(netns: str, cuts: list[_Cut], timeout: float) -> None:
    """Ping each guest's SLAAC address until it answers or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = [c for c in cuts if c.answered_at is None]
        if not pending:
            return
        for cut in pending:
            if rtnl.ping(netns, cut.address).ok:
                cut.answered_at = time.monotonic()
        if any(c.answered_at is None for c in cuts):
            # ping fails at once without a route: no back-to-back processes for 90 s.
            time.sleep(min(WAIT_ROUND, max(0.0, deadline - time.monotonic())))


def _restart(conn: libvirt.virConnect, name: str, xml: str | None) -> None:
    """Stop and start ``name``, with ``xml`` (already checked by libvirt) as its config."""
    with virt.translated(f"cannot restart network {name}"):
        net = conn.networkLookupByName(name)
        if net.isActive():
            net.destroy()
        if xml is not None:
            # Again while stopped: some drivers (test:///) drop a config defined while running.
            conn.networkDefineXML(xml)
        net.create()


def _define_checked(
    conn: libvirt.virConnect, name: str, xml: str, detail: list[str], *, running: bool
) -> None:
    """Define ``xml`` as ``name``'s config, or stop apply with libvirt's reason; either way
    the running network is untouched (its running config changes only at a restart)."""
    try:
        virt.define_network_checked(conn, name, xml)
    except LibvirtError as exc:
        detail.append(str(exc))
        kept = f" ({name} kept running; no guest was cut off)" if running else ""
        raise _Stopped(f"{exc}; nothing was changed{kept}") from None
    detail.append("libvirt accepts the new config")


def apply(
    plan: Plan,  # what the operator reviewed: apply re-plans and refuses if it differs
    *,
    host: str,
    libvirt_uri: str,
    netns: str,
    prefix: str,
    network: str = "nat-bridge",
    rename_from: str = "",
    allow_ula: bool = False,
    replace_ipv6: bool = False,
    timeout: float = 90.0,
) -> Result:
    """Make the plan's changes (re-planned from what is there now) and verify the guests."""
    net = validate_prefix(prefix, allow_ula=allow_ula)
    with virt.connect(libvirt_uri) as conn:
        return apply_on(
            conn,
            host=host,
            netns=netns,
            net=net,
            network=network,
            rename_from=rename_from,
            replace_ipv6=replace_ipv6,
            timeout=timeout,
            reviewed=plan,
        )


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
    """apply on an open connection (the tests keep one to the test driver)."""
    result = Result(RUNBOOK, host, "unchanged")
    observed = observe(conn, netns, network, rename_from)
    fresh = compute_plan(
        observed,
        host=host,
        network=network,
        prefix=net,
        rename_from=rename_from,
        replace_ipv6=replace_ipv6,
        known_networks=[n.name for n in virt.list_networks(conn)],
    )
    if reviewed is not None:
        ensure_unchanged(reviewed, fresh)
    bridge = str(fresh.data["bridge"])
    cuts = [
        _Cut(t.domain, t.tap, t.mac, eui64_address(net, t.mac), 0.0) for t in observed.taps if t.tap
    ]
    actions = {c.action for c in fresh.changes}
    try:
        if fresh.data["rename_from"]:
            source = observed.source
            assert source is not None
            with result.step(f"rename {rename_from} to {network}") as detail:
                # Under the new name libvirt would refuse it for the old one's bridge: it is
                # checked as the old network's config, which the rename undefines (or puts
                # back from the observed config when the rename stops).
                checked = with_ipv6(source.xml, net)
                _define_checked(conn, rename_from, checked, detail, running=source.active)
                _rename(conn, netns, observed, fresh, cuts, detail)
        elif "update" in actions or "restart" in actions:
            old_xml = observed.target.xml if observed.target else None
            new_xml = fresh.data["xml"] if "update" in actions else None
            if new_xml is not None:
                running = bool(observed.target and observed.target.active)
                with result.step(f"define {network}'s new config (libvirt checks it)") as detail:
                    _define_checked(conn, network, new_xml, detail, running=running)
            if "restart" in actions:
                try:
                    with result.step(f"restart {network}") as detail:
                        for cut in cuts:
                            cut.detached_at = time.monotonic()
                        try:
                            _restart(conn, network, new_xml)
                        except OpsError as exc:
                            detail.append(str(exc))
                            raise
                except OpsError as exc:
                    _rollback(conn, network, old_xml, netns, bridge, cuts, result, exc)
        if "restart" in actions or "start" in actions or "attach" in actions:
            with result.step(f"reattach guest taps to {bridge}") as detail:
                now = time.monotonic()
                for cut in cuts:
                    cut.detached_at = cut.detached_at or now
                lost = _reattach(netns, bridge, cuts)
                detail.append(f"{len(cuts) - len(lost)} of {len(cuts)} taps on {bridge}")
    except _Stopped as exc:
        result.status = exc.status
        result.summary = str(exc)
        result.data.update(exc.data)
        return result
    if fresh.changes:
        result.status = "changed"
        result.changes = list(fresh.changes)
    with result.step("wait for each guest's SLAAC address") as detail:
        _wait_for_guests(netns, cuts, timeout)
        detail.append(f"{sum(c.answered_at is not None for c in cuts)} of {len(cuts)} answer")
    result.checks = verify(netns, bridge, net, cuts, network=network, conn=conn)
    result.tables["guests"] = [
        {
            "guest": c.domain,
            "tap": c.tap,
            "slaac": c.address,
            "on bridge": c.reattached_at is not None or not fresh.changes,
            "answers": c.answered_at is not None,
            "cut off s": (
                round(c.answered_at - c.detached_at, 1)
                if c.answered_at is not None and c.detached_at
                else None
            ),
        }
        for c in cuts
    ]
    result.data["cut_off"] = [row for row in result.tables["guests"] if row["cut off s"]]
    lost = [c.domain for c in cuts if c.answered_at is None]
    if lost:
        result.status = "failed"
        result.summary = (
            f"{network} has {gateway(net)}/64, but these guests did not come back: "
            f"{', '.join(lost)}"
        )
    elif result.status == "changed":
        briefly = ", ".join(f"{c.domain} {s}s" for c, s in _cut_rows(cuts)) or "no guest"
        result.summary = f"{network} has {gateway(net)}/64; cut off briefly: {briefly}"
    else:
        result.summary = f"{network} already has {gateway(net)}/64; every guest answers"
    return result


def _cut_rows(cuts: list[_Cut]) -> list[tuple[_Cut, float]]:
    return [
        (c, round(c.answered_at - c.detached_at, 1))
        for c in cuts
        if c.answered_at is not None and c.detached_at
    ]


class _Stopped(ApplyError):
    """apply stopped part way; the Result says ``status`` (guests' taps are back)."""

    status: Outcome = "failed"

    def __init__(self, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.data = data or {}


class _RolledBack(_Stopped):
    status: Outcome = "rolled back"


def _rollback(
    conn: libvirt.virConnect,
    network: str,
    old_xml: str | None,
    netns: str,
    bridge: str,
    cuts: list[_Cut],
    result: Result,
    error: OpsError,
) -> NoReturn:
    """The new config did not start: the old one back, running, guests reattached."""
    with result.step(f"roll back {network}") as detail:
        _restart(conn, network, old_xml)
        _reattach(netns, bridge, cuts)
        detail.append("old config running again")
    raise _RolledBack(f"{network} did not start with the new config ({error}); the old one is back")


def _rename(
    conn: libvirt.virConnect,
    netns: str,
    observed: Observed,
    fresh: Plan,
    cuts: list[_Cut],
    detail: list[str],
) -> None:
    source = observed.source
    assert source is not None
    network, old = str(fresh.data["network"]), source.name
    # libvirt refuses a second network on the same bridge name, so the old one goes
    # first; its definition (observed) is kept to put it back if the new one does not run.
    with virt.translated(f"cannot look up network {old}"):
        old_net = conn.networkLookupByName(old)
    try:
        with virt.translated(f"cannot stop network {old}"):
            if old_net.isActive():
                for cut in cuts:
                    cut.detached_at = time.monotonic()
                old_net.destroy()
        with virt.translated(f"cannot undefine network {old}"):
            old_net.undefine()
        with virt.translated(f"cannot define network {network}"):
            new_net = conn.networkDefineXML(fresh.data["xml"])
        with virt.translated(f"cannot start network {network}"):
            new_net.create()
        detail.append(f"{network} defined and running, {old} undefined")
        # The new network carries the guests now: move every guest's config even when
        # one fails (a config left on the old name would not start again), then report.
        failures = []
        try:
            with virt.translated(f"cannot set autostart of {network}"):
                new_net.setAutostart(1 if source.autostart else 0)
        except OpsError as exc:
            failures.append(str(exc))
        for domain, xml in observed.users:
            try:
                with virt.translated(f"cannot update {domain}'s interfaces"):
                    dom = conn.lookupByName(domain)
                    if dom.isPersistent():
                        conn.defineXML(retarget_interfaces(xml, old, network))
                    if dom.isActive():
                        _move_live_interfaces(dom, old, network, detail)
            except OpsError as exc:
                failures.append(str(exc))
        if failures:
            raise ApplyError("; ".join(failures))
    except OpsError as exc:
        _recover_rename(conn, netns, source, network, cuts, detail, exc)


def _recover_rename(
    conn: libvirt.virConnect,
    netns: str,
    source: NetState,
    network: str,
    cuts: list[_Cut],
    detail: list[str],
    error: OpsError,
) -> NoReturn:
    """A rename step failed: the old network back unless the new one runs, the running
    guests' taps on the bridge in every case, and a _Stopped saying what is there now."""
    old, bridge = source.name, source.bridge
    problems = []
    new_state = _net_state_or_none(conn, network)
    rolled_back = new_state is None or not new_state.active
    if rolled_back:
        try:
            with virt.translated(f"cannot roll back to {old}"):
                if new_state is not None:
                    conn.networkLookupByName(network).undefine()
                restored = conn.networkDefineXML(source.xml)
                if not restored.isActive():
                    restored.create()
                restored.setAutostart(1 if source.autostart else 0)
            detail.append(f"rolled back: {old} defined and running again")
        except OpsError as exc:
            problems.append(str(exc))
    taps = ""
    try:
        lost = _reattach(netns, bridge, cuts)
        detail.append(f"{len(cuts) - len(lost)} of {len(cuts)} taps back on {bridge}")
        # A tap that is gone is the guest's (the checks name it); the network is not.
        taps = f"; taps missing: {', '.join(lost)}" if lost else ""
    except OpsError as exc:
        taps = f"; guests' taps: {exc}"
    if rolled_back and not problems:
        raise _RolledBack(f"{network}: {error}; {old} is back and running{taps}") from None
    if rolled_back:
        raise _Stopped(
            f"{network}: {error}; putting {old} back failed too: {'; '.join(problems)}; "
            f"define it again from data.restore_xml (virsh net-define, net-start){taps}",
            {"restore_xml": canonical(source.xml)},
        ) from None
    raise _Stopped(
        f"renaming {old} to {network} stopped: {error}; {network} runs on {bridge} with the "
        f"guests' taps put back{taps}; fix the rest by hand (virsh net-autostart {network}, "
        "virsh edit GUEST)"
    ) from None


def _net_state_or_none(conn: libvirt.virConnect, name: str) -> NetState | None:
    """The network's state, or None when it is absent or cannot be read."""
    try:
        return _net_state(conn, name)
    except OpsError:
        return None


def _move_live_interfaces(dom: libvirt.virDomain, old: str, new: str, detail: list[str]) -> None:
    live = dom.XMLDesc(0)
    for iface in virt.parse_interfaces(live):
        if iface.type != "network" or iface.source != old:
            continue
        element = interface_xml(retarget_interfaces(live, old, new), iface.mac)
        try:
            dom.updateDeviceFlags(element, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as exc:
            # The tap is reattached by netlink anyway; only libvirt's live record keeps
            # the old name until the guest restarts (its persistent config is updated).
            detail.append(f"{dom.name()} {iface.mac}: live source kept ({exc.get_error_message()})")


def verify(
    netns: str,
    bridge: str,
    net: ipaddress.IPv6Network,
    cuts: Iterable[_Cut],
    *,
    network: str,
    conn: libvirt.virConnect,
) -> list[Check]:
    checks = []
    state = _net_state(conn, network)
    live = state.live_xml if state else ""
    checks.append(
        Check(
            f"{network} carries {gateway(net)}/64",
            "ok" if live and has_ipv6(live, net) else "fail",
            "running with the prefix" if live and has_ipv6(live, net) else "not running with it",
            "" if live and has_ipv6(live, net) else f"apply nat-bridge-ipv6 to {network}",
        )
    )
    bridge_link = netlink.link_by_name(netns, bridge)
    for cut in cuts:
        link = netlink.link_by_name(netns, cut.tap)
        on = link is not None and bridge_link is not None and link.master == bridge_link.index
        checks.append(
            Check(
                f"{cut.domain}: tap {cut.tap} on {bridge}",
                "ok" if on else "fail",
                "attached" if on else "detached",
                "" if on else f"ip link set {cut.tap} master {bridge}",
            )
        )
        answered = cut.answered_at is not None
        checks.append(
            Check(
                f"{cut.domain}: SLAAC {cut.address} answers ping6",
                "ok" if answered else "fail",
                "answers" if answered else "no answer",
                "" if answered else f"check the guest's console: does it accept RAs on {bridge}?",
            )
        )
    return checks


def lab_parameters(lab: Lab) -> dict[str, Any]:
    """This runbook's parameters for a lab: its NAT network gets the routed /64."""
    return {
        "host": "lab",
        "libvirt_uri": lab.uri,
        "netns": lab.host_ns,
        "network": lab.nat_network,
        "prefix": lab.routed_prefix,
        "rename_from": "",
        "allow_ula": False,
        "replace_ipv6": False,
    }


def apply_lab(lab: Lab) -> Result:
    values = lab_parameters(lab)
    return apply(plan(**values), **values)
