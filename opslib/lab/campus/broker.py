"""The lab's 6in4 broker end: the userspace tunnel end (:mod:`opslib.host.sixinfour.userspace`) in
the
lab's ``he`` netns, as Hurricane Electric's side of the daemon host's tunnel.

The lab's kernel has no ``sit``, so both ends of its tunnel are userspace ends: the
host's is made by the ipv6-tunnel runbook (``implementation="userspace"``), the
broker's here, as a lab service (``lab up`` / ``lab down`` / ``lab status``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opslib.host.kernel import netlink
from opslib.host.sixinfour.userspace import EndSpec, running_spec, start, stop
from opslib.lab.config import Lab

# -- the lab's broker end ----------------------------------------------------------


def he_pidfile(lab: Lab) -> Path:
    return lab.root / "sixinfour-he.pid"


HE_TUNNEL_LINK = "tun-host"


def start_he(lab: Lab) -> int:
    """The broker's end in the lab's ``he`` netns, with its tunnel address and the routed
    /64 pointing back through the tunnel to the host (as Hurricane Electric routes it)."""
    spec = EndSpec(netns=lab.he_ns, name=HE_TUNNEL_LINK, local=lab.he_ipv4, remote=lab.host_eth0_ip)
    pid = start(spec, he_pidfile(lab))
    netlink.ensure_address(lab.he_ns, spec.name, f"{lab.tunnel_he_ipv6}/{lab.tunnel_prefixlen}")
    netlink.ensure_route(lab.he_ns, lab.routed_prefix, gateway=lab.tunnel_host_ipv6, dev=spec.name)
    return pid


def stop_he(lab: Lab) -> bool:
    return stop(he_pidfile(lab))


def _service_up(lab: Lab) -> None:
    start_he(lab)


def _service_down(lab: Lab) -> None:
    # Every tunnel end of this lab: the broker's and the host's (made by the ipv6-tunnel
    # runbook with run_dir = the lab root).
    for path in sorted(lab.root.glob("sixinfour-*.pid")):
        stop(path)


def _service_status(lab: Lab) -> list[dict[str, str]]:
    rows = []
    for path in sorted(lab.root.glob("sixinfour-*.pid")):
        spec = running_spec(path)
        rows.append(
            {
                "component": "service",
                "name": f"sixinfour {path.stem.removeprefix('sixinfour-')}",
                "state": "running" if spec else "stopped",
                "detail": f"{spec.netns}/{spec.name} {spec.local} <-> {spec.remote}"
                if spec
                else "",
            }
        )
    return rows


def __getattr__(name: str) -> Any:
    # The lab finds SERVICE by getattr; built lazily so that the daemon itself never
    # imports the lab's services module.
    if name == "SERVICE":
        from opslib.lab.services import LabService

        return LabService("sixinfour", _service_up, _service_down, _service_status)
    raise AttributeError(name)
