"""What ``opsbook lab status`` shows of the lab's booted hosts, and their lab service.

Each host's row is its systemd's state (``systemctl is-system-running``); a booted one
adds ``ssh`` and ``libvirtd`` as its own systemctl reports them and its guests as its own
virsh lists them. ``SERVICE`` hooks the booted hosts into ``lab status`` and
``lab down`` (:func:`opslib.lab.services.services` finds it by module name).
"""

from __future__ import annotations

from opslib.core.errors import HostError
from opslib.lab import services
from opslib.lab.booted import daemonhost, nspawn
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
        if pid and state not in ("stopped", "booting"):
            rows += _inside_rows(host)
    return rows


def _inside_rows(host: daemonhost.Host) -> list[dict[str, str]]:
    def row(component: str, name: str, state: str, detail: str = "") -> dict[str, str]:
        return {"component": component, "name": f"{host.name}/{name}", "state": state,
                "detail": detail}  # fmt: skip

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
