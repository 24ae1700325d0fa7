"""libvirt definitions as declared models: the XML side of :mod:`opslib.host.libvirt.virt`.

A model parses a definition once. Each property is declared as one path (an element's
text, ``name``, or an attribute, ``bridge/@name``); edits return a new model; ``text``
is what libvirt is given, in lxml's form, so that a diff of two definitions (both
through a model) shows the edit only. Procedures edit definitions through these
models, not with f-strings or etree surgery of their own, and show the diff before
anything is defined.
"""

from __future__ import annotations

import copy
import ipaddress
from dataclasses import dataclass
from typing import ClassVar, Self

from lxml import etree

from opslib.core.errors import InputError
from opslib.core.ipv6prefix import gateway

# The namespace of what opsbook keeps in a definition's <metadata>.
OPSBOOK_NS = "urn:opsbook:libvirt:1"


def _parse(xml: str) -> etree._Element:
    return etree.fromstring(xml.encode(), etree.XMLParser(remove_blank_text=False))


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


class Model:
    """A definition with declared properties: ``PROPERTIES`` maps a name to its path."""

    PROPERTIES: ClassVar[dict[str, str]] = {}

    def __init__(self, xml: str | etree._Element) -> None:
        self.root = _parse(xml) if isinstance(xml, str) else xml

    def get(self, prop: str) -> str | None:
        path, _, attr = self.PROPERTIES[prop].partition("/@")
        node = self.root.find(path)
        if node is None:
            return None
        return node.get(attr) if attr else (node.text or "")

    def set(self, **values: str | None) -> Self:
        """A copy with the properties set; None removes the element (or attribute)."""
        new = type(self)(copy.deepcopy(self.root))
        for prop, value in values.items():
            path, _, attr = self.PROPERTIES[prop].partition("/@")
            nodes = new.root.findall(path)
            if value is None:
                for node in nodes:
                    if attr:
                        node.attrib.pop(attr, None)
                    else:
                        _remove(node)
            elif not nodes:
                raise InputError(f"the definition has no <{path}> to set {prop} in")
            elif attr:
                nodes[0].set(attr, value)
            else:
                nodes[0].text = value
        return new

    @property
    def text(self) -> str:
        return etree.tostring(self.root, encoding="unicode") + "\n"


def canonical(xml: str) -> str:
    """The XML as lxml writes it: both sides of a diff go through this."""
    return Model(xml).text


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

        return key(self.root) == key(_parse(other))

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
            _remove(mark)
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
                    _remove(child)
                elif child.tag == "host" and child.get("ip") and not _in(net, child.get("ip")):
                    dropped.append(f"host {child.get('ip')}")
                    _remove(child)
            if not len(dhcp):
                _remove(dhcp)
        if not len(ip):
            ip.text = None
        return IPv6Edit(new.text, old, tuple(dropped), others)

    def without_other_ipv6(self, net: ipaddress.IPv6Network) -> NetworkXml:
        """A copy whose only IPv6 ``<ip>`` is PREFIX::1 of ``net`` (the others removed)."""
        new = self.set()
        for ip in new._ipv6():
            if not _is_gateway(net, ip.get("address")):
                _remove(ip)
        return new

    def _added_ipv6(self, net: ipaddress.IPv6Network) -> str:
        """The text with an IPv6 ``<ip>`` PREFIX::1/64 added after the last ``<ip>``."""
        root = self.root
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
        return self.text


def bridge_network(name: str, bridge: str, uuid: str = "") -> str:
    """A network in forward mode bridge on ``bridge`` (libvirt's own layout)."""
    uuid_line = f"  <uuid>{uuid}</uuid>\n" if uuid else ""
    return (
        f"<network>\n  <name>{name}</name>\n{uuid_line}  <forward mode='bridge'/>\n"
        f"  <bridge name='{bridge}'/>\n</network>\n"
    )


class DomainXml(Model):
    """A libvirt domain definition (``dumpxml``)."""

    PROPERTIES: ClassVar[dict[str, str]] = {"name": "name"}

    def retargeted(self, old: str, new: str) -> DomainXml:
        """Every ``<interface type='network'>`` on network ``old`` moved to ``new``."""
        moved = self.set()
        for source in moved.root.iterfind("devices/interface[@type='network']/source"):
            if source.get("network") == old:
                source.set("network", new)
        return moved

    def interface(self, mac: str) -> str | None:
        """The ``<interface>`` element of ``mac`` alone (what updateDeviceFlags takes)."""
        for iface in self.root.iterfind("devices/interface"):
            mac_el = iface.find("mac")
            if mac_el is not None and mac_el.get("address", "").lower() == mac.lower():
                alone = copy.deepcopy(iface)
                alone.tail = None
                return etree.tostring(alone, encoding="unicode")
        return None
