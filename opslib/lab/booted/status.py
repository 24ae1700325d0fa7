"""What ``opsbook lab status`` shows of the lab's booted hosts, and their lab service.

Each host's row is its systemd's state (``systemctl is-system-running``); a booted one
adds ``ssh`` and ``libvirtd`` as its own systemctl reports them and its guests as its own
virsh lists them. ``SERVICE`` hooks the booted hosts into ``lab status`` and
``lab down`` (:func:`opslib.lab.services.services` finds it by module name).
"""

from __future__ import annotations

import socket

from opslib.core.errors import HostError
from opslib.host.kernel import netlink
from opslib.lab import services
from opslib.lab.booted import daemonhost, nspawn, peers
from opslib.lab.config import Lab


def status(lab: Lab) -> list[dict[str, str]]:
    """Each booted host (its systemd's state), and for a running one what it serves:
    sshd and libvirtd as its systemctl reports them, its guests as its virsh does."""
    rows = []
    for host in daemonhost.hosts(lab):
        pid = nspawn.pid(host.container)
        state = nspawn.system_state(host.container) if pid else "stopped"
        detail = f"pid {pid}, " if pid else ""
        detail += f"{host.address} {host.mac}, netns {host.netns}"
        row = {"component": "booted host", "name": host.name, "state": state, "detail": detail}
        rows.append(row)
        if peers.is_room_router(host):
            rows.append(_room_row(host))
        if pid and state not in ("stopped", "booting"):
            rows += _inside_rows(host)
    return rows


def _room_row(host: daemonhost.Host) -> dict[str, str]:
    """The room router: whether the broker routes the room's /48 through its tunnel."""
    lab = host.lab
    gateway = peers.tunnel_parameters(host)["client_ipv6"].split("/")[0]
    routes = (
        [
            r
            for r in netlink.routes(lab.he_ns, family=socket.AF_INET6)
            if r.dst == lab.room_delegated
        ]
        if netlink.netns_exists(lab.he_ns)
        else []
    )
    state = "delegated" if any(r.gateway == gateway for r in routes) else "not routed"
    detail = (
        f"broker: {lab.room_delegated} via {gateway} ({peers.broker_link(host)}); "
        f"radvd: {lab.room_prefix} on campus, router {lab.room_address_router}"
    )
    return {"component": "room router", "name": host.name, "state": state, "detail": detail}


def _inside_rows(host: daemonhost.Host) -> list[dict[str, str]]:
    def row(component: str, name: str, state: str, detail: str = "") -> dict[str, str]:
        return {
            "component": component,
            "name": f"{host.name}/{name}",
            "state": state,
            "detail": detail,
        }

    rows = []
    try:
        for unit in ("ssh", "libvirtd"):
            done = nspawn.run(host.container, ["systemctl", "is-active", f"{unit}.service"])
            rows.append(row("host service", unit, done.stdout.strip() or "unknown"))
        done = nspawn.run(
            host.container, ["virsh", "-q", "-c", "qemu:///system", "list", "--all"], timeout=30
        )
    except HostError as exc:
        return [*rows, row("host service", "status", "error", str(exc))]
    for line in done.stdout.splitlines():
        words = line.split(None, 2)  # Id Name State
        if len(words) == 3:
            rows.append(row("host guest", words[1], words[2].strip(), "qemu:///system"))
    return rows


SERVICE = services.LabService(
    "booted hosts", up=lambda _lab: None, down=daemonhost.down_all, status=status
)
