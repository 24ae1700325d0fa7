"""forward-bridge in the lab on a static host whose eth0 has a hook: br0 keeps eth0's
address (campus refuses the host any DHCP lease meanwhile), and eth0's hook still runs
after the restart (it sets eth0's MTU, which the kernel reports).

Runs after test_30 (host converted, br0 on DHCP) and puts that file and state back at
the end, for test_40 onwards.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opslib.host.ifupdown.network_restart import restart_argv
from opslib.host.kernel import netlink
from opslib.lab.campus import netreg
from opslib.lab.config import Lab
from opslib.lab.simulated import parameters as lab_parameters
from opslib.procedures import forward_bridge as fb

pytestmark = pytest.mark.lab

HOOK_MTU = 1400


def lab_plan(lab: Lab) -> dict[str, Any]:
    """The lab's forward-bridge set, as plan() takes it."""
    return lab_parameters.arguments(fb.plan, lab_parameters.standalone_set(lab, "forward-bridge"))


def lab_restart(lab: Lab) -> str:
    """The lab host's "restart networking" (ifupdown in its netns and mounts)."""
    return str(lab_parameters.standalone_set(lab, "forward-bridge")["restart_command"])


def static_with_hook(lab) -> str:
    sourced = f"{Path(lab.interfaces_file).parent}/interfaces.d"
    return (
        f"source {sourced}/*\n\nauto lo\niface lo inet loopback\n\n"
        f"auto eth0\niface eth0 inet static\n\taddress {lab.host_eth0_ip}/24\n"
        f"\tgateway {lab.campus_gateway}\n\tpost-up ip link set dev eth0 mtu {HOOK_MTU}\n"
    )


def switch_to(lab, text: str) -> None:
    """Put ``text`` in the host's file and restart its networking with the lab's command."""
    current = Path(lab.interfaces_file).read_text()
    sourced = f"source {Path(lab.interfaces_file).parent}/interfaces.d/*\n"
    with tempfile.NamedTemporaryFile("w", suffix=".old", delete=False) as old:
        old.write(current.replace(sourced, ""))
    try:
        Path(lab.interfaces_file).write_text(text)
        argv = restart_argv(
            lab_restart(lab), lab.host_ns,
            old=old.name, new=str(lab.interfaces_file), ifaces="eth0 br0",
        )  # fmt: skip
        subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)
    finally:
        os.unlink(old.name)


def set_mtu(lab, name: str, mtu: int) -> None:
    subprocess.run(["ip", "-n", lab.host_ns, "link", "set", "dev", name, "mtu", str(mtu)],
                   check=True)  # fmt: skip


def ipv4(lab, name: str) -> list[str]:
    link = netlink.link_by_name(lab.host_ns, name)
    if link is None:
        return []
    return sorted(
        f"{a.address}/{a.prefix}"
        for a in netlink.addresses(lab.host_ns, ifindex=link.index)
        if a.family == "ipv4"
    )


@pytest.fixture(scope="module")
def static_host(lab) -> Iterator:
    saved = Path(lab.interfaces_file).read_text()
    netreg.set_campus_refuses_host(lab, True)  # no lease: br0's address can only be static
    try:
        switch_to(lab, static_with_hook(lab))
        assert ipv4(lab, "eth0") == [f"{lab.host_eth0_ip}/24"]
        set_mtu(lab, "eth0", 1500)  # so that only the conversion's restart can set it again
        yield lab
    finally:
        netreg.set_campus_refuses_host(lab, False)
        set_mtu(lab, "eth0", 1500)
        switch_to(lab, saved)
    holder = "br0" if "iface br0" in saved else "eth0"  # test_30 ran before, or not
    assert ipv4(lab, holder) == [f"{lab.host_eth0_ip}/24"], f"{holder} got no lease back"


def test_static_eth0_with_a_hook_becomes_static_br0_and_the_hook_still_runs(static_host):
    lab = static_host
    plan = fb.plan(**lab_plan(lab))
    new = plan.new_files[str(lab.interfaces_file)]
    assert "auto eth0\niface eth0 inet manual\n\tpost-up ip link set dev eth0 mtu" in new
    assert f"iface br0 inet static\n\taddress {lab.host_eth0_ip}/24\n" in new
    assert any(n.startswith("br0 takes over eth0's addressing") for n in plan.notes)

    result = fb.apply(plan, restart_command=lab_restart(lab), deadline=60)

    assert result.status == "changed", result.summary
    assert all(c.ok for c in result.checks), [(c.name, c.seen) for c in result.checks]
    # the address stayed the host's without DHCP (campus refuses the host's MAC)
    assert ipv4(lab, "br0") == [f"{lab.host_eth0_ip}/24"] and ipv4(lab, "eth0") == []
    # eth0's post-up hook ran in the restart: ifup brought eth0 up, bridge-utils enslaved it
    eth0 = netlink.link_by_name(lab.host_ns, "eth0")
    br0 = netlink.link_by_name(lab.host_ns, "br0")
    assert eth0 is not None and br0 is not None and eth0.master == br0.index
    assert eth0.mtu == HOOK_MTU
