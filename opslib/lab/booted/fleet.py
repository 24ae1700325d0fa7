"""The lab's fleet: several booted daemon hosts and the Ansible inventory that names them.

``opsbook lab up --hosts N`` (:func:`opslib.lab.booted.runs.up`) boots hosts ``daemon1`` …
``daemonN``; :func:`write_inventory` writes ``LAB/fleet/inventory.yml`` for every booted
host of the lab, the format of ``ansible/inventory.example.yml``:

- Ansible reaches the hosts the way the operator does, with the lab's ssh_config
  (``ansible_ssh_common_args: -F LAB/ssh/ssh_config``: the lab's key, strict host keys from
  the lab's known_hosts). The workstation's end of campus is the campus netns, so the ssh
  executable is ``LAB/fleet/campus-ssh`` (``ip netns exec PREFIX-campus ssh "$@"``) and
  files go over that same ssh (``ssh_transfer_method: piped``), not sftp/scp.
- per-host parameter sets: ``LAB/fleet/parameters/HOST/RUNBOOK.yaml`` (host-health's is
  written for each host: a bare lab host has libvirt's ``default`` network and no br0);
- the wheelhouse ``ansible/install.yml`` installs from: ``LAB/wheelhouse``.
"""

from __future__ import annotations

import json
from pathlib import Path

from opslib.lab.booted import daemonhost, install, ssh
from opslib.lab.config import Lab

GROUP = "daemon_hosts"
# host-health's parameter set for a booted lab host as the lab makes it (written once per
# host; edit it like any parameter set)
HOST_HEALTH = """\
# {name}: a booted lab host as the lab makes it: libvirt's stock NAT network, no br0 yet
nat_network: default
forward_network: ""
bridge: ""
"""


def fleet_dir(lab: Lab) -> Path:
    return lab.root / "fleet"


def inventory_file(lab: Lab) -> Path:
    return fleet_dir(lab) / "inventory.yml"


def parameter_sets(lab: Lab) -> Path:
    return fleet_dir(lab) / "parameters"


def ssh_executable(lab: Lab) -> Path:
    return fleet_dir(lab) / "campus-ssh"


def names(count: int) -> list[str]:
    return [f"daemon{n}" for n in range(1, count + 1)]


def render_inventory(lab: Lab, hosts: list[str]) -> str:
    """YAML (written as JSON, which YAML reads) in the format of inventory.example.yml."""
    inventory = {
        GROUP: {
            "hosts": {name: {} for name in hosts},  # in slot order
            "vars": {
                "ansible_python_interpreter": "/usr/bin/python3",
                "ansible_ssh_executable": str(ssh_executable(lab)),
                "ansible_ssh_common_args": f"-F {ssh.config_file(lab)}",
                "ansible_ssh_transfer_method": "piped",
                "opsbook_parameter_sets": str(parameter_sets(lab)),
                "opsbook_wheelhouse": str(install.wheelhouse(lab)),
                "opsbook_records": "/var/lib/opsbook/records",
            },
        }
    }
    header = (
        f"# opsbook lab {lab.prefix}: its booted daemon hosts (written by opsbook lab up --hosts;\n"
        "# the format of ansible/inventory.example.yml). opsbook fleet run RUNBOOK -i THIS\n"
    )
    return header + json.dumps(inventory, indent=2) + "\n"


def write_inventory(lab: Lab, names: list[str] | None = None) -> Path:
    """The inventory of the lab's booted hosts (``names``, default all), and the campus
    ssh wrapper it uses."""
    fleet_dir(lab).mkdir(parents=True, exist_ok=True)
    parameter_sets(lab).mkdir(exist_ok=True)
    wrapper = ssh_executable(lab)
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {lab.campus_ns} ssh "$@"\n')
    wrapper.chmod(0o755)
    path = inventory_file(lab)
    tmp = path.with_name(f".{path.name}.new")
    chosen = [h.name for h in daemonhost.hosts(lab) if names is None or h.name in names]
    for name in chosen:
        health = parameter_sets(lab) / name / "host-health.yaml"
        if not health.exists():
            health.parent.mkdir(exist_ok=True)
            health.write_text(HOST_HEALTH.format(name=name))
    tmp.write_text(render_inventory(lab, chosen))
    tmp.replace(path)
    return path
