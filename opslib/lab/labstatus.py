"""``lab status``: one row per part of the lab (namespaces, links, NetReg, daemons,
networks, guests, services), as a table or JSON."""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

from opslib.core import procs
from opslib.core.errors import LibvirtError, OpsError
from opslib.lab.campus import netreg
from opslib.lab.config import Lab
from opslib.lab.processes import alive, netns_exists, netns_pids
from opslib.lab.services import Row, services
from opslib.lab.simulated.labvirt import connect


def _row(component: str, name: str, state: str, detail: str = "") -> Row:
    return {"component": component, "name": name, "state": state, "detail": detail}


def status(lab: Lab) -> list[Row]:
    """What is up: namespaces, links, NetReg, daemons, networks, guests, services."""
    rows = []
    for ns in lab.namespaces:
        present = netns_exists(ns)
        rows.append(_row("netns", ns, "present" if present else "absent",
                         f"{len(netns_pids(ns))} processes" if present else ""))  # fmt: skip
    if netns_exists(lab.host_ns):
        rows += _host_link_rows(lab)
    pid = alive(lab, lab.netreg_pid_file)
    detail = f"pid {pid}, {len(netreg.netreg_registered(lab))} registered MACs" if pid else ""
    rows.append(_row("netreg", "dnsmasq", "running" if pid else "stopped", detail))
    for name, pidfile in (("virtlogd", lab.virtlogd_pid_file), ("libvirtd", lab.libvirtd_pid_file)):
        pid = alive(lab, pidfile)
        rows.append(_row("daemon", name, "running" if pid else "stopped",
                         f"pid {pid}" if pid else ""))  # fmt: skip
    if alive(lab, lab.libvirtd_pid_file):
        rows += _libvirt_rows(lab)
    for service in services():
        if service.status is not None:
            try:
                rows += service.status(lab)
            except OpsError as exc:
                rows.append(_row("service", service.name, "error", str(exc)))
    return rows


def _host_link_rows(lab: Lab) -> list[Row]:
    """The host's campus side: eth0, and br0 once forward-bridge made it a port."""
    rows = []
    for dev in ("eth0", "br0"):
        link = procs.run(["ip", "-n", lab.host_ns, "-o", "link", "show", "dev", dev], check=False)
        if link.returncode != 0:
            continue
        addr = procs.run(
            ["ip", "-n", lab.host_ns, "-o", "-4", "addr", "show", "dev", dev], check=False
        )
        addrs = re.findall(r"inet (\S+)", addr.stdout)
        master = re.search(r" master (\S+)", link.stdout)
        state = "up" if ",UP" in link.stdout or "<UP" in link.stdout else "down"
        detail = " ".join(addrs) or (f"port of {master.group(1)}" if master else "no address")
        rows.append(_row("link", f"{lab.host_ns}/{dev}", state, detail))
    return rows


def _libvirt_rows(lab: Lab) -> list[Row]:
    with contextlib.ExitStack() as stack:
        try:
            conn = stack.enter_context(connect(lab))
        except LibvirtError as exc:
            return [_row("libvirt", lab.uri, "unreachable", str(exc))]
        return _libvirt_objects(lab, conn)


def _libvirt_objects(lab: Lab, conn: Any) -> list[Row]:
    """A row per network and guest (its MACs with their NAT leases)."""
    import libvirt

    from opslib.host.libvirt.virtxml import parse_interfaces

    rows = []
    try:
        leases: dict[str, str] = {}
        for net in conn.listAllNetworks():
            active = net.isActive()
            detail = f"bridge {net.bridgeName()}" if active else ""
            detail += ", autostart" if net.autostart() else ""
            rows.append(_row("network", net.name(), "active" if active else "inactive", detail))
            if active:
                with contextlib.suppress(libvirt.libvirtError):
                    for lease in net.DHCPLeases():
                        leases[lease["mac"]] = lease["ipaddr"]
        for dom in conn.listAllDomains():
            state = "running" if dom.isActive() else "shut off"
            macs = [nic.mac for nic in parse_interfaces(dom.XMLDesc())]
            detail = ", ".join(f"{mac} {leases.get(mac, 'no lease')}" for mac in macs)
            rows.append(_row("guest", dom.name(), state, detail))
    except libvirt.libvirtError as exc:
        rows.append(_row("libvirt", lab.uri, "error", str(exc)))
    return rows


def format_table(rows: list[Row]) -> str:
    from opslib.core.tables import dict_table

    return dict_table(rows, ("component", "name", "state", "detail"))


def status_json(lab: Lab) -> str:
    return json.dumps(status(lab), indent=2)
