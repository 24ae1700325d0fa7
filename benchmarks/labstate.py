"""The lab states the benchmarks run on, each checked before anything is timed.

Every benchmark names the state it needs (its ``STATE``) and checks it first with its
``check_state(lab)``: a state that is missing is one line (:class:`StateMissing`) saying
which state and the command that makes it, exit 1, nothing timed and nothing left
behind. The checks only read (namespaces, pid files, libvirt, files): they never
create the lab's directories.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from opslib.core.errors import OpsError
from opslib.host.libvirt import virt
from opslib.lab.booted import daemonhost, nspawn
from opslib.lab.booted import fleet as labfleet
from opslib.lab.config import Lab
from opslib.lab.processes import alive, netns_exists
from opslib.lab.simulated.labvirt import connect


class StateMissing(Exception):
    """The lab is not in the state a benchmark runs on (one line: which, and the fix)."""


def up_command(lab: Lab, *options: str) -> str:
    return shlex.join(["opsbook", "lab", "--prefix", lab.prefix, "up", *options])


SIMULATED_CONFIGURED = ("--simulated", "--configured")
BOOTED_HOSTS = ("--hosts", "3")


@dataclass(frozen=True)
class SimulatedHost:
    """What the configured simulated host's check found: its NAT network's real name
    (``nat-bridge`` once nat-bridge-ipv6 renamed libvirt's ``default``) and bridge."""

    network: str
    bridge: str


def configured_simulated_host(lab: Lab) -> SimulatedHost:
    """The simulated host after ``lab up --simulated --configured``: libvirtd answers, the
    NAT network on the lab's bridge is active and carries IPv6 (nat-bridge-ipv6 ran), and
    the lab's guests run."""
    fix = up_command(lab, *SIMULATED_CONFIGURED)
    if not lab.root.is_dir() or not netns_exists(lab.host_ns):
        raise StateMissing(f"lab {lab.prefix} is not up: run `{fix}`")
    if not alive(lab, lab.libvirtd_pid_file):
        raise StateMissing(
            f"lab {lab.prefix} has no simulated host (its libvirtd is not running; "
            f"a plain `lab up` boots daemon1 only): run `{fix}`"
        )
    try:
        with connect(lab) as conn:
            networks = virt.list_networks(conn)
            domains = {d.name: d for d in virt.list_domains(conn)}
    except OpsError as exc:
        raise StateMissing(f"lab {lab.prefix}: its libvirtd does not answer ({exc})") from exc
    net = next((n for n in networks if n.bridge == lab.nat_bridge and n.active), None)
    if net is None:
        raise StateMissing(
            f"lab {lab.prefix} has no active NAT network on {lab.nat_bridge}: run `{fix}`"
        )
    if net.ip("ipv6") is None:
        raise StateMissing(
            f"lab {lab.prefix} is up bare, not configured: its NAT network {net.name} on "
            f"{lab.nat_bridge} has no IPv6 yet (nat-bridge-ipv6 has not run): run `{fix}`"
        )
    stopped = [g.name for g in lab.guests if not (g.name in domains and domains[g.name].running)]
    if stopped:
        raise StateMissing(
            f"lab {lab.prefix}: guest(s) {', '.join(stopped)} not running: run `{fix}`"
        )
    return SimulatedHost(net.name, lab.nat_bridge)


def booted_hosts(lab: Lab, count: int = 3) -> list[str]:
    """``count`` running booted daemon hosts and their Ansible inventory (``lab up --hosts
    3``); their names."""
    inventory = labfleet.inventory_file(lab)
    running = [h.name for h in daemonhost.hosts(lab) if nspawn.pid(h.container) is not None]
    hosts = running[:count]
    if not inventory.exists() or len(hosts) < count:
        raise StateMissing(
            f"lab {lab.prefix} has {len(hosts)} running booted host(s) and "
            f"{'an' if inventory.exists() else 'no'} inventory: run "
            f"`{up_command(lab, '--hosts', str(count))}`"
        )
    return hosts
