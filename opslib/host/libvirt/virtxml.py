"""libvirt definitions as declared models: the XML side of :mod:`opslib.host.libvirt.virt`.

A model parses a definition once. Each property is declared as one path (an element's
text, ``name``, or an attribute, ``bridge/@name``); edits return a new model; ``text``
is what libvirt is given, in lxml's form, so that a diff of two definitions (both
through a model) shows the edit only. Procedures read and edit definitions through
these models (domains here, networks in :mod:`opslib.host.libvirt.netxml`:
:func:`parse_interfaces`, :class:`Interface`, :meth:`DomainXml.with_interface`,
:func:`~opslib.host.libvirt.netxml.parse_network`...), not with f-strings, text splicing or etree
surgery of their own, and show the diff before anything is defined.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar, Self

from lxml import etree

from opslib.core.errors import InputError


def parse_xml(xml: str) -> etree._Element:
    return etree.fromstring(xml.encode(), etree.XMLParser(remove_blank_text=False))


def remove(element: etree._Element) -> None:
    """Remove ``element``, keeping its siblings' indentation."""
    parent = element.getparent()
    assert parent is not None
    previous = element.getprevious()
    if previous is not None:
        previous.tail = element.tail
    else:
        parent.text = element.tail
    parent.remove(element)


def indent(element: etree._Element, at: str, step: str = "  ") -> None:
    """Indent ``element``'s children one ``step`` deeper than ``at`` (the element's own
    line's whitespace, newline included), as libvirt lays a definition out."""
    children = list(element)
    if not children:
        return
    element.text = at + step
    for child in children:
        indent(child, at + step, step)
        child.tail = at + step
    children[-1].tail = at


def line_indent(element: etree._Element) -> str:
    """The whitespace before ``element`` (its line's indentation, newline included)."""
    previous, parent = element.getprevious(), element.getparent()
    if previous is not None:
        return previous.tail or "\n"
    return (parent.text if parent is not None else None) or "\n"


def insert_after(anchor: etree._Element, element: etree._Element) -> None:
    """Add ``element`` right after ``anchor``, indented as it."""
    at = line_indent(anchor)
    anchor.addnext(element)
    element.tail, anchor.tail = anchor.tail, at
    indent(element, at)


def insert(parent: etree._Element, element: etree._Element) -> None:
    """Add ``element`` as ``parent``'s last child, indented as its siblings (one step
    deeper than ``parent`` when it has none)."""
    children = list(parent)
    if children:
        insert_after(children[-1], element)
        return
    outer = line_indent(parent)
    parent.text, element.tail = outer + "  ", outer
    parent.append(element)
    indent(element, outer + "  ")


def _attr(parent: etree._Element, child: str, name: str) -> str:
    node = parent.find(child)
    return node.get(name, "") if node is not None else ""


@dataclass(frozen=True)
class Interface:
    """A guest NIC as the domain XML declares it: :meth:`DomainXml.interfaces` reads it,
    :meth:`element` writes it."""

    mac: str
    type: str  # network | bridge | direct | user ...
    source: str  # network name or bridge name ("" when none)
    target: str = ""  # the host-side tap device while running
    model: str = ""

    def element(self) -> etree._Element:
        iface = etree.Element("interface", {"type": self.type})
        etree.SubElement(iface, "mac", {"address": self.mac})
        if self.source:
            kind = {"network": "network", "bridge": "bridge"}.get(self.type, "dev")
            etree.SubElement(iface, "source", {kind: self.source})
        if self.target:
            etree.SubElement(iface, "target", {"dev": self.target})
        if self.model:
            etree.SubElement(iface, "model", {"type": self.model})
        indent(iface, "\n")
        return iface

    def xml(self) -> str:
        """The ``<interface>`` alone: what attachDeviceFlags / detachDeviceFlags take."""
        return etree.tostring(self.element(), encoding="unicode") + "\n"


class Model:
    """A definition with declared properties: ``PROPERTIES`` maps a name to its path."""

    PROPERTIES: ClassVar[dict[str, str]] = {}

    def __init__(self, xml: str | etree._Element) -> None:
        self.root = parse_xml(xml) if isinstance(xml, str) else xml

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
                        remove(node)
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

    def interfaces(self) -> tuple[Interface, ...]:
        """Every ``<interface>`` of the domain, MACs lower-cased."""
        found = []
        for iface in self.root.iterfind("devices/interface"):
            source = iface.find("source")
            src = ""
            if source is not None:
                src = source.get("network") or source.get("bridge") or source.get("dev") or ""
            found.append(
                Interface(
                    mac=_attr(iface, "mac", "address").lower(),
                    type=iface.get("type", ""),
                    source=src,
                    target=_attr(iface, "target", "dev"),
                    model=_attr(iface, "model", "type"),
                )
            )
        return tuple(found)

    def with_interface(self, nic: Interface) -> DomainXml:
        """A copy with ``nic`` added after the last ``<interface>`` (or at the end of
        ``<devices>``), indented as its neighbours."""
        new = self.set()
        devices = new.root.find("devices")
        if devices is None:
            raise InputError("the domain XML has no <devices>; cannot add a device to it")
        ifaces = devices.findall("interface")
        if ifaces:
            insert_after(ifaces[-1], nic.element())
        else:
            insert(devices, nic.element())
        return new

    def interface(self, mac: str) -> str | None:
        """The ``<interface>`` element of ``mac`` alone (what updateDeviceFlags takes)."""
        for iface in self.root.iterfind("devices/interface"):
            mac_el = iface.find("mac")
            if mac_el is not None and mac_el.get("address", "").lower() == mac.lower():
                alone = copy.deepcopy(iface)
                alone.tail = None
                return etree.tostring(alone, encoding="unicode")
        return None


def parse_interfaces(domain_xml: str) -> tuple[Interface, ...]:
    """Every ``<interface>`` of a domain XML, MACs lower-cased."""
    return DomainXml(domain_xml).interfaces()
