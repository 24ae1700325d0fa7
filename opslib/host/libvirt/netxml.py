"""libvirt network definitions as a declared model (:class:`NetworkXml`, on
:class:`opslib.host.libvirt.virtxml.Model`): read as a :class:`Network`, edited (a new
name, PREFIX::1/64), or made (:func:`bridge_network`) without f-strings or text splicing.
"""

from __future__ import annotations

import copy
import ipaddress
from contextlib import suppress
from dataclasses import dataclass
from typing import ClassVar

from lxml import etree

from opslib.core.errors import InputError
from opslib.core.ipv6prefix import gateway
from opslib.host.libvirt.virtxml import Model, indent, insert, insert_after, parse_xml, remove

# The namespace of what opsbook keeps in a definition's <metadata>.
OPSBOOK_NS = "urn:opsbook:libvirt:1"


@dataclass(frozen=True)
class NetworkIP:
    family: str  # ipv4 | ipv6
    address: str
    prefix: int
    dhcp_ranges: tuple[tuple[str, str], ...] = ()

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_interface(f"{self.address}/{self.prefix}").network


@dataclass(frozen=True)
class Network:
    """A libvirt network as read from its definition (:func:`parse_network`) and state."""

    name: str
    bridge: str
    forward_mode: str  # nat | bridge | route | open | isolated ("" in the XML)
    ips: tuple[NetworkIP, ...]
    xml: str
    active: bool = False
    autostart: bool = False
    persistent: bool = False
    uuid: str = ""

    def ip(self, family: str) -> NetworkIP | None:
        return next((i for i in self.ips if i.family == family), None)

    def carries(self, address: str, prefix: int) -> bool:
        """Whether one of the network's ``<ip>`` is ``address``/``prefix``."""
        want = ipaddress.ip_address(address)
        for ip in self.ips:
            with suppress(ValueError):
                if ipaddress.ip_address(ip.address) == want:
                    return ip.prefix == prefix
        return False


@dataclass(frozen=True)
class IPv6Edit:
    """The network XML with PREFIX::1/64, and what the edit took away to get there."""

    xml: str
    old: str = ""  # the IPv6 address/prefix rewritten in place ("" when added or already there)
    dropped: tuple[str, ...] = ()  # DHCPv6 children of ``old`` outside the new prefix
    others: tuple[str, ...] = ()  # the network's other IPv6 address/prefix, left as they were

    def replaces(self, net: ipaddress.IPv6Network) -> ipaddress.IPv6Network | None:
        """The other prefix this edit replaces (None for an add or a fix within ``net``)."""
        if not self.old:
            return None
        try:
            old = ipaddress.IPv6Interface(self.old).network
        except ValueError:
            return ipaddress.IPv6Network("::/128")  # unreadable: a replacement all the same
        return None if old == net else old

    def other_prefixes(self) -> tuple[str, ...]:
        """The prefixes of ``others`` (their address/prefix when unreadable)."""
        found = []
        for text in self.others:
            try:
                found.append(str(ipaddress.IPv6Interface(text).network))
            except ValueError:
                found.append(text)
        return tuple(found)


def _in(net: ipaddress.IPv6Network, address: str | None) -> bool:
    try:
        return ipaddress.IPv6Address(address or "") in net
    except ValueError:
        return False


def _is_gateway(net: ipaddress.IPv6Network, address: str | None) -> bool:
    try:
        return ipaddress.IPv6Address(address or "") == ipaddress.IPv6Address(gateway(net))
    except ValueError:
        return False


def _prefix_text(ip: etree._Element) -> str:
    return f"{ip.get('address', '')}/{ip.get('prefix', '64')}"


class NetworkXml(Model):
    """A libvirt network definition (``net-dumpxml``)."""

    PROPERTIES: ClassVar[dict[str, str]] = {
        "name": "name",
        "uuid": "uuid",
        "bridge": "bridge/@name",
        "forward": "forward/@mode",
    }

    def _ipv6(self) -> list[etree._Element]:
        return [ip for ip in self.root.iterfind("ip") if ip.get("family") == "ipv6"]

    def same_config(self, other: str) -> bool:
        """Whether ``other`` configures the same network: UUIDs, whitespace and the live
        XML's count of attached guests (``connections``) aside."""

        def key(root: etree._Element) -> bytes:
            root = copy.deepcopy(root)
            for uuid in root.findall("uuid"):
                root.remove(uuid)
            root.attrib.pop("connections", None)
            for node in root.iter():
                node.tail = node.tail.strip() if node.tail else None
                if len(node):
                    node.text = node.text.strip() if node.text else None
            return bytes(etree.tostring(root, method="c14n"))

        return key(self.root) == key(parse_xml(other))

    def has_ipv6(self, net: ipaddress.IPv6Network) -> bool:
        """True when the network carries PREFIX::1/64 for ``net``."""
        for ip in self._ipv6():
            if _is_gateway(net, ip.get("address")):
                return ip.get("prefix", "64") == "64"
        return False

    def renamed(self, name: str) -> NetworkXml:
        """The same network under another name: its UUID kept (defined once the old name
        is undefined, libvirt takes it), and marked in its ``<metadata>`` with the name it
        had (:meth:`renamed_from`)."""
        old = self.get("name")
        if old is None:
            raise InputError("the network XML has no <name>")
        new = self.set(name=name)
        metadata = new.root.find("metadata")
        if metadata is None:
            metadata = etree.Element("metadata")
            after = new.root.find("uuid")
            after = after if after is not None else new.root.find("name")
            assert after is not None
            after.addnext(metadata)
            metadata.tail, metadata.text = after.tail, after.tail
        for mark in metadata.findall(f"{{{OPSBOOK_NS}}}renamed"):
            remove(mark)
        inner = (metadata.text or "\n") + "  "
        mark = etree.SubElement(metadata, f"{{{OPSBOOK_NS}}}renamed", nsmap={"opsbook": OPSBOOK_NS})
        mark.set("from", old)
        previous = mark.getprevious()
        mark.tail = (previous.tail if previous is not None else metadata.text) or "\n"
        if previous is not None:
            previous.tail = inner
        else:
            metadata.text = inner
        return new

    def renamed_from(self) -> str | None:
        """The name the network had before opsbook renamed it (None: not renamed by it).

        libvirt keeps a network's ``<metadata>`` as given (9.0 and later), so a second
        run can tell "already renamed" from a ``rename_from`` naming no network at all."""
        mark = self.root.find(f"metadata/{{{OPSBOOK_NS}}}renamed")
        return None if mark is None else mark.get("from")

    def with_ipv6(self, net: ipaddress.IPv6Network) -> IPv6Edit:
        """Set the network's IPv6 ``<ip>`` to PREFIX::1/64: add one, or rewrite one in place
        (the one within ``net`` if any, else the first), dropping its DHCPv6 ``<range>`` and
        ``<host>`` children that the new prefix does not hold (libvirt refuses those). The
        network's other IPv6 ``<ip>`` are left alone and named in ``others``."""
        new = self.set()
        existing = new._ipv6()
        if not existing:
            return IPv6Edit(new._added_ipv6(net))
        done = self.has_ipv6(net)
        ip = next(
            (
                e
                for e in existing
                if (_is_gateway(net, e.get("address")) if done else _in(net, e.get("address")))
                and e.get("prefix", "64") == "64"
            ),
            existing[0],
        )
        others = tuple(_prefix_text(e) for e in existing if e is not ip)
        if done:
            return IPv6Edit(self.text, others=others)
        old = _prefix_text(ip)
        ip.set("address", gateway(net))
        ip.set("prefix", "64")
        ip.attrib.pop("netmask", None)
        dropped = []
        for dhcp in ip.findall("dhcp"):
            for child in list(dhcp):
                if child.tag == "range" and not (
                    _in(net, child.get("start")) and _in(net, child.get("end"))
                ):
                    dropped.append(f"range {child.get('start')}-{child.get('end')}")
                    remove(child)
                elif child.tag == "host" and child.get("ip") and not _in(net, child.get("ip")):
                    dropped.append(f"host {child.get('ip')}")
                    remove(child)
            if not len(dhcp):
                remove(dhcp)
        if not len(ip):
            ip.text = None
        return IPv6Edit(new.text, old, tuple(dropped), others)

    def without_other_ipv6(self, net: ipaddress.IPv6Network) -> NetworkXml:
        """A copy whose only IPv6 ``<ip>`` is PREFIX::1 of ``net`` (the others removed)."""
        new = self.set()
        for ip in new._ipv6():
            if not _is_gateway(net, ip.get("address")):
                remove(ip)
        return new

    def _added_ipv6(self, net: ipaddress.IPv6Network) -> str:
        """The text with an IPv6 ``<ip>`` PREFIX::1/64 added after the last ``<ip>``."""
        ip = etree.Element("ip", {"family": "ipv6", "address": gateway(net), "prefix": "64"})
        ips = self.root.findall("ip")
        if ips:
            insert_after(ips[-1], ip)
        else:
            insert(self.root, ip)
        return self.text

    def ips(self) -> tuple[NetworkIP, ...]:
        """Every ``<ip>``: family, address, prefix (from ``netmask`` too), DHCP ranges."""
        found = []
        for ip in self.root.iterfind("ip"):
            family = ip.get("family", "ipv4")
            if ip.get("prefix"):
                prefix = int(ip.get("prefix", "0"))
            elif ip.get("netmask"):
                prefix = ipaddress.IPv4Network(f"0.0.0.0/{ip.get('netmask')}").prefixlen
            else:
                prefix = 64 if family == "ipv6" else 24
            ranges = tuple(
                (r.get("start", ""), r.get("end", "")) for r in ip.iterfind("dhcp/range")
            )
            found.append(NetworkIP(family, ip.get("address", ""), prefix, ranges))
        return tuple(found)

    def network(self, xml: str, **state: bool) -> Network:
        """The definition as a :class:`Network`; ``state`` adds active/autostart/persistent."""
        forward = self.root.find("forward")
        return Network(
            name=self.get("name") or "",
            bridge=self.get("bridge") or "",
            forward_mode="isolated" if forward is None else forward.get("mode", "nat"),
            ips=self.ips(),
            xml=xml,
            uuid=(self.get("uuid") or "").strip(),
            **state,
        )


def parse_network(xml: str, **state: bool) -> Network:
    """A network XML (``net-dumpxml``) as a :class:`Network`; ``state`` adds active/autostart."""
    return NetworkXml(xml).network(xml, **state)


def bridge_network(name: str, bridge: str, uuid: str = "") -> str:
    """A network in forward mode bridge on ``bridge`` (libvirt's own layout)."""
    root = etree.Element("network")
    etree.SubElement(root, "name").text = name
    if uuid:
        etree.SubElement(root, "uuid").text = uuid
    etree.SubElement(root, "forward", {"mode": "bridge"})
    etree.SubElement(root, "bridge", {"name": bridge})
    indent(root, "\n")
    return Model(root).text
