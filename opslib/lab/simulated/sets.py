"""The simulated host's parameter sets, generated from a :class:`~opslib.lab.config.Lab`.

The simulated host (:mod:`opslib.lab.simulated.control`: libvirtd in the lab's ``host`` netns and a
private mount namespace) is not a host an operator has: its runbooks need lab-only values
(the ``qemu:///system?socket=…`` URI, ``netns``, its private interfaces file, an ifupdown
restart command run as a process of that host, a run dir). They live here, made from the
lab's prefix and paths, not in ``parameters/lab/`` (that directory is the booted lab
host's: real-host defaults, only what really differs on the lab).

:func:`sets` gives them as values; :func:`write` writes them as ``RUNBOOK.yaml`` files
under ``LAB/parameters`` for what takes a directory of sets (``opsbook demo --simulated``,
``lab up --simulated --configured``, ``lab notebook``'s ``OPSBOOK_DEFAULTS``).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml

from opslib.lab import processes
from opslib.lab.cloudflare import service
from opslib.lab.config import Lab

HOST = "lab"  # the simulated host's records are filed under this name


def restart_command(lab: Lab) -> str:
    """forward-bridge's restart: ifupdown as a process of the simulated host (its netns and
    mounts), its state in the lab's directory."""
    state = f"--state-dir {shlex.quote(str(lab.ifupdown_state_dir))}"
    script = (
        f"ifdown --force -i {{old}} {state} {{ifaces}}; "
        f"ifdown --force -i {{new}} {state} {{ifaces}} 2>/dev/null; "
        f"ifup -a -i {{new}} {state} && ifup -a --allow=hotplug -i {{new}} {state}"
    )
    return shlex.join(processes.host_command(lab, ["sh", "-c", script]))


def sets(lab: Lab) -> dict[str, dict[str, Any]]:
    """Each runbook's set for the simulated host of ``lab``, keyed by runbook name."""
    host = {"host": HOST, "libvirt_uri": lab.uri, "netns": lab.host_ns}
    tunnel = {
        "tunnel": "he-ipv6",
        "client_ipv6": f"{lab.tunnel_host_ipv6}/{lab.tunnel_prefixlen}",
        "server_ipv6": lab.tunnel_he_ipv6,
        "routed_prefix": lab.routed_prefix,
    }
    netreg = lab.netreg_guest
    return {
        "network-inventory": host,
        "forward-bridge": {
            **host,
            "interfaces_file": str(lab.interfaces_file),
            "restart_command": restart_command(lab),
            "deadline": "60",
            "apply": "true",
        },
        "netreg-attach": {
            "host": HOST,
            "libvirt_uri": lab.uri,
            "vm": netreg.name,
            "mac": netreg.netreg_mac,
            "network": "forward-bridge",
            "mode": "attach",
            "apply": "true",
        },
        "find-vm-ip": {**host, "vm": "", "probe": "true"},
        # as on the wiki page, libvirt's stock `default` becomes nat-bridge
        "nat-bridge-ipv6": {
            **host,
            "network": "nat-bridge",
            "rename_from": "default",
            "prefix": lab.routed_prefix,
            "apply": True,
        },
        # the lab kernel has no sit: the userspace 6in4 to the broker end in PREFIX-he
        "ipv6-tunnel": _tunnel_set(lab, host, tunnel),
        "cloudflare-aaaa": _cloudflare_set(lab, host),
        "host-health": {
            **host,
            "nat_network": "nat-bridge",
            "forward_network": "forward-bridge",
            "bridge": "br0",
            "uplink": "eth0",
            **{k: tunnel[k] for k in ("routed_prefix", "tunnel", "client_ipv6", "server_ipv6")},
        },
        "records-review": {"host_filter": HOST, "since": "30d"},
        "schedule": {
            "host": HOST,
            "on_failure": "logger -t opsbook-alert",
            "runs": [
                {"runbook": "host-health", "parameters": "host-health.yaml", "when": "hourly"}
            ],
        },
    }


def _tunnel_set(lab: Lab, host: dict[str, Any], tunnel: dict[str, Any]) -> dict[str, Any]:
    """ipv6-tunnel's set: the userspace 6in4 (the lab kernel has no sit) to PREFIX-he."""
    return {
        **host,
        **tunnel,
        "local_ipv4": lab.host_eth0_ip,
        "server_ipv4": lab.he_ipv4,
        "nat_network": "nat-bridge",
        "mtu": "1480",
        "implementation": "userspace",
        "interfaces_file": str(lab.interfaces_file),
        "run_dir": str(lab.root),
        "apply": True,
    }


def _cloudflare_set(lab: Lab, host: dict[str, Any]) -> dict[str, Any]:
    """cloudflare-aaaa's set: vm-nat1's AAAA in the lab's first zone, on its stand-in API."""
    return {
        **host,
        "vm": "vm-nat1",
        "record_name": f"vm-nat1.{service.LAB_ZONES[0]}",
        "zone": service.LAB_ZONES[0],
        "token": f"file:{service.lab_token_file(lab)}",
        "api_base_url": service.lab_url(lab),
        "proxied": True,
        "ttl": 1,
        "apply": True,
    }


def directory(lab: Lab) -> Path:
    return lab.root / "parameters"


def write(lab: Lab) -> Path:
    """The sets as ``LAB/parameters/RUNBOOK.yaml`` (written again each time: they follow
    the code); returns the directory."""
    target = directory(lab)
    target.mkdir(parents=True, exist_ok=True)
    for runbook, values in sets(lab).items():
        header = (
            f"# the simulated host of lab {lab.prefix} (written by opslib.lab.simulated.sets;\n"
            "# edits are overwritten: the booted lab host's sets are parameters/lab/)\n"
        )
        path = target / f"{runbook}.yaml"
        tmp = path.with_name(f".{path.name}.new")
        tmp.write_text(header + yaml.safe_dump(values, sort_keys=False, width=10_000))
        tmp.replace(path)
    return target
