"""libvirt: connect by URI (the one way opsbook connects, the lab's too), networks and
domains as the host has them.

Side effects (the connection) and parsing are separate: the definitions are read and
edited by the declared models of :mod:`opslib.host.libvirt.virtxml` (domains) and
:mod:`opslib.host.libvirt.netxml` (networks), pure and tested on XML strings; this module
takes an open connection. libvirtError is translated to opslib.core.errors here, nowhere else.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import libvirt

from opslib.core.errors import InputError, LibvirtError, OpsError, UnknownName
from opslib.core.params import Param
from opslib.host.libvirt.netxml import Network, parse_network
from opslib.host.libvirt.virtxml import Interface, parse_interfaces

# libvirt prints every error to stderr by default; we raise them instead.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

DOMAIN_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "no state",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting down",
    libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}


@contextmanager
def translated(action: str) -> Iterator[None]:
    """Turn a libvirtError raised inside into LibvirtError('ACTION: message')."""
    try:
        yield
    except libvirt.libvirtError as exc:
        raise LibvirtError(f"{action}: {exc.get_error_message()}", exc.get_error_code()) from exc


def _open(uri: str, readonly: bool) -> libvirt.virConnect:
    """libvirt.open, its error in one line: what libvirt said, and the libvirtd hint only
    where it applies (no daemon answers the socket)."""
    parts = urlsplit(uri)
    # The test driver reads a file: a missing one is "failed to parse xml document", and
    # libxml2 prints its own warning to stderr first. Say it is missing instead.
    local_file = parts.scheme == "test" and not parts.netloc
    if local_file and parts.path not in ("", "/default") and not os.path.isfile(parts.path):
        raise LibvirtError(
            f"cannot connect to libvirt at {uri}: the test driver's file {parts.path} "
            "does not exist"
        )
    try:
        return libvirt.openReadOnly(uri) if readonly else libvirt.open(uri)
    except libvirt.libvirtError as exc:
        message = exc.get_error_message()
        hint = ""
        if exc.get_error_domain() == libvirt.VIR_FROM_RPC and "connect socket" in message:
            hint = " (is libvirtd running?)"
        raise LibvirtError(
            f"cannot connect to libvirt at {uri}: {message}{hint}", exc.get_error_code()
        ) from exc


@contextmanager
def connect(uri: str, *, readonly: bool = False) -> Iterator[libvirt.virConnect]:
    """An open libvirt connection to ``uri``, closed afterwards."""
    conn = _open(uri, readonly)
    try:
        yield conn
    finally:
        with suppress(libvirt.libvirtError):
            conn.close()


class LibvirtSession:
    """Mixed into a runbook's Procedure (opslib.contract.transaction) whose plan or apply talks
    through one connection to its inputs' ``libvirt_uri``."""

    def session(self, inputs: Any) -> AbstractContextManager[libvirt.virConnect]:
        return connect(inputs.libvirt_uri)


@dataclass(frozen=True)
class Domain:
    name: str
    uuid: str
    state: str
    interfaces: tuple[Interface, ...]
    persistent: bool = True
    autostart: bool = False  # libvirtd starts it when the host boots

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def macs(self) -> tuple[str, ...]:
        return tuple(i.mac for i in self.interfaces)


# -- reading a host ------------------------------------------------------------


def _network(net: libvirt.virNetwork) -> Network:
    with translated(f"cannot read network {net.name()}"):
        return parse_network(
            net.XMLDesc(0),
            active=bool(net.isActive()),
            autostart=bool(net.autostart()),
            persistent=bool(net.isPersistent()),
        )


def list_networks(conn: libvirt.virConnect) -> list[Network]:
    with translated("cannot list networks"):
        nets = conn.listAllNetworks()
    return sorted((_network(n) for n in nets), key=lambda n: n.name)


def get_network(conn: libvirt.virConnect, name: str) -> Network:
    try:
        net = conn.networkLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
            with translated("cannot list networks"):
                names = conn.listNetworks() + conn.listDefinedNetworks()
            raise UnknownName("network", name, names) from exc
        raise LibvirtError(f"cannot look up network {name}: {exc.get_error_message()}") from exc
    return _network(net)


def _domain(dom: libvirt.virDomain) -> Domain:
    with translated(f"cannot read domain {dom.name()}"):
        state, _reason = dom.state()
        return Domain(
            name=dom.name(),
            uuid=dom.UUIDString(),
            state=DOMAIN_STATES.get(state, str(state)),
            interfaces=parse_interfaces(dom.XMLDesc(0)),
            persistent=bool(dom.isPersistent()),
            autostart=bool(dom.autostart()),
        )


def list_domains(conn: libvirt.virConnect) -> list[Domain]:
    with translated("cannot list domains"):
        doms = conn.listAllDomains()
    return sorted((_domain(d) for d in doms), key=lambda d: d.name)


def domain_names(conn: libvirt.virConnect) -> list[str]:
    with translated("cannot list domains"):
        return sorted(d.name() for d in conn.listAllDomains())


def known_names(uri: str, kind: str) -> list[str]:
    """Names of the VMs (kind "vm") or networks (kind "network") of the libvirt at ``uri``,
    read-only: the form's live choices and what a run's parameters are checked against."""
    with connect(uri, readonly=True) as conn:
        if kind == "vm":
            return domain_names(conn)
        with translated("cannot list networks"):
            return sorted(n.name() for n in conn.listAllNetworks())


def check_names(decls: Iterable[Param], values: Mapping[str, Any]) -> None:
    """VM and network parameters name objects that exist (when a libvirt_uri is given).

    The names come from this module, which owns the libvirt connection and says in one
    line why it could not be reached; opslib.core.params reads declarations without libvirt."""
    uri = values.get("libvirt_uri")
    named = [p for p in decls if p.type in ("vm", "network") and values.get(p.name)]
    if not uri or not named:
        return
    for p in named:
        try:
            known = known_names(str(uri), p.type)
        except OpsError as exc:
            raise InputError(f"parameter {p.name}: {exc}") from None
        if values[p.name] not in known:
            err = UnknownName("VM" if p.type == "vm" else "network", values[p.name], known)
            raise InputError(f"parameter {p.name}: {err}") from None


def lookup_domain(conn: libvirt.virConnect, name: str) -> libvirt.virDomain:
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise UnknownName("VM", name, domain_names(conn)) from exc
        raise LibvirtError(f"cannot look up VM {name}: {exc.get_error_message()}") from exc


def get_domain(conn: libvirt.virConnect, name: str) -> Domain:
    return _domain(lookup_domain(conn, name))


@dataclass(frozen=True)
class Definition:
    """A domain's definitions: persistent and running (``live_xml`` "" when shut off)."""

    name: str
    running: bool
    config_xml: str  # VIR_DOMAIN_XML_INACTIVE
    live_xml: str


def _definitions(obj: Any, inactive_flag: int) -> tuple[bool, str, str]:
    """(active, running XML, persistent XML) of a domain or network; the persistent one
    is the running one where there is no other (a transient domain; test:/// networks)."""
    active, live = bool(obj.isActive()), obj.XMLDesc(0)
    try:
        return active, live, obj.XMLDesc(inactive_flag)
    except libvirt.libvirtError:
        return active, live, live


def definition(conn: libvirt.virConnect, name: str) -> Definition:
    dom = lookup_domain(conn, name)
    with translated(f"cannot read domain {name}"):
        running, live, config = _definitions(dom, libvirt.VIR_DOMAIN_XML_INACTIVE)
        return Definition(name, running, config, live if running else "")


def macs_in_use(conn: libvirt.virConnect) -> dict[str, list[str]]:
    """Every MAC of every domain (running and persistent definitions): MAC -> domains."""
    used: dict[str, list[str]] = {}
    with translated("cannot list domains"):
        doms = conn.listAllDomains()
    for dom in doms:
        with translated(f"cannot read domain {dom.name()}"):
            xmls = [dom.XMLDesc(0)]
            if dom.isActive() and dom.isPersistent():
                xmls.append(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        for xml in xmls:
            for iface in parse_interfaces(xml):
                names = used.setdefault(iface.mac, [])
                if dom.name() not in names:
                    names.append(dom.name())
    return used


def _device_flags(config: bool, live: bool) -> int:
    return (libvirt.VIR_DOMAIN_AFFECT_CONFIG if config else 0) | (
        libvirt.VIR_DOMAIN_AFFECT_LIVE if live else 0
    )


def attach_device(conn: libvirt.virConnect, vm: str, xml: str, *, config: bool, live: bool) -> None:
    """Add a device to the persistent definition (``config``) and/or the running guest."""
    dom = lookup_domain(conn, vm)
    with translated(f"cannot attach a device to {vm}"):
        dom.attachDeviceFlags(xml, _device_flags(config, live))


def detach_device(conn: libvirt.virConnect, vm: str, xml: str, *, config: bool, live: bool) -> None:
    dom = lookup_domain(conn, vm)
    with translated(f"cannot detach a device from {vm}"):
        dom.detachDeviceFlags(xml, _device_flags(config, live))


def agent_addresses(dom: libvirt.virDomain) -> list[tuple[str, str, str, str]]:
    """(mac, family, address, guest ifname) as the guest agent reports them; none when
    the agent is not there, went away or cannot say."""
    try:
        ifaces = dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT, 0)
    except libvirt.libvirtError:
        return []  # the agent went away or does not support it: the other sources remain
    found = []
    for ifname, info in (ifaces or {}).items():
        mac = (info.get("hwaddr") or "").lower()
        for addr in info.get("addrs") or ():
            family = "ipv6" if addr.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV6 else "ipv4"
            if mac and addr.get("addr"):
                found.append((mac, family, addr["addr"], ifname))
    return found


@dataclass(frozen=True)
class Lease:
    mac: str
    ip: str
    prefix: int
    hostname: str
    expiry: int


def dhcp_leases(conn: libvirt.virConnect, network: str) -> list[Lease]:
    """libvirt's DHCP leases of an active network (empty for an inactive one)."""
    with translated(f"cannot read DHCP leases of {network}"):
        net = conn.networkLookupByName(network)
        if not net.isActive():
            return []
        leases = net.DHCPLeases()
    return [
        Lease(
            mac=(lease.get("mac") or "").lower(),
            ip=lease.get("ipaddr", ""),
            prefix=int(lease.get("prefix") or 0),
            hostname=lease.get("hostname") or "",
            expiry=int(lease.get("expirytime") or 0),
        )
        for lease in leases
    ]


# -- changing networks (appended for forward-bridge; others may use them) -------------


def define_network(conn: libvirt.virConnect, xml: str) -> None:
    """Define (or redefine, when the XML carries the existing UUID) a persistent network."""
    with translated("cannot define network"):
        conn.networkDefineXML(xml)


def start_network(conn: libvirt.virConnect, name: str) -> None:
    with translated(f"cannot start network {name}"):
        net = conn.networkLookupByName(name)
        if not net.isActive():
            net.create()


def restart_network(conn: libvirt.virConnect, name: str, xml: str | None = None) -> None:
    """Destroy and start: an active network takes a redefined XML only this way. ``xml``
    (already checked by libvirt) is defined again while it is stopped: some drivers
    (test:///) drop a config defined while the network runs."""
    with translated(f"cannot restart network {name}"):
        net = conn.networkLookupByName(name)
        if net.isActive():
            net.destroy()
        if xml is not None:
            conn.networkDefineXML(xml)
        net.create()


def stop_network(conn: libvirt.virConnect, name: str) -> None:
    with translated(f"cannot stop network {name}"):
        net = conn.networkLookupByName(name)
        if net.isActive():
            net.destroy()


def undefine_network(conn: libvirt.virConnect, name: str) -> None:
    with translated(f"cannot undefine network {name}"):
        conn.networkLookupByName(name).undefine()


def set_network_autostart(conn: libvirt.virConnect, name: str, on: bool = True) -> None:
    with translated(f"cannot set autostart of {name}"):
        conn.networkLookupByName(name).setAutostart(1 if on else 0)


@dataclass(frozen=True)
class NetworkState:
    """A network's definitions and state, as a change to it needs them."""

    name: str
    xml: str  # persistent config
    live_xml: str  # running config ("" when inactive)
    active: bool
    autostart: bool
    bridge: str


def network_state(conn: libvirt.virConnect, name: str) -> NetworkState | None:
    """The network called ``name``, None when there is none."""
    try:
        net = conn.networkLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
            return None
        raise LibvirtError(f"cannot look up network {name}: {exc.get_error_message()}") from exc
    with translated(f"cannot read network {name}"):
        active, live, config = _definitions(net, libvirt.VIR_NETWORK_XML_INACTIVE)
        return NetworkState(
            name, config, live if active else "", active, bool(net.autostart()),
            parse_network(live).bridge,
        )  # fmt: skip


def define_domain(conn: libvirt.virConnect, xml: str) -> None:
    """(Re)define a domain's persistent config."""
    with translated("cannot define domain"):
        conn.defineXML(xml)


def update_live_device(conn: libvirt.virConnect, vm: str, xml: str) -> None:
    """Change a device of the running guest (its persistent config is left alone); a
    refusal is libvirt's message alone: the caller says what it was doing."""
    dom = lookup_domain(conn, vm)
    try:
        dom.updateDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    except libvirt.libvirtError as exc:
        raise LibvirtError(str(exc.get_error_message()), exc.get_error_code()) from exc


def define_network_checked(conn: libvirt.virConnect, name: str, xml: str) -> None:
    """(Re)define network ``name``'s persistent config as ``xml``, with all of libvirt's checks.

    libvirt checks a network definition only when it is defined: the schema (with
    VIR_NETWORK_DEFINE_VALIDATE; the parser alone ignores unknown attributes), the parser
    (e.g. a DHCP range outside its prefix) and the network driver (e.g. no ``<ip>`` on a
    bridge-mode network: the test driver lacks those). A running network keeps its running
    config until it is restarted, so this is the check before anything is stopped: when
    libvirt refuses, nothing has changed and the LibvirtError carries libvirt's reason.
    """
    try:
        conn.networkDefineXMLFlags(xml, libvirt.VIR_NETWORK_DEFINE_VALIDATE)
    except libvirt.libvirtError as exc:
        # Schema errors come as several lines: one line for the record's summary.
        lines = str(exc.get_error_message()).splitlines()
        reason = "; ".join(line.strip() for line in lines if line.strip())
        raise LibvirtError(
            f"libvirt refuses the new definition of {name}: {reason}", exc.get_error_code()
        ) from exc
