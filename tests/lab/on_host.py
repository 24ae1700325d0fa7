"""Helpers of the tests that drive a booted host over SSH (test_17, test_19, test_97)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from opslib.lab.booted import daemonhost
from opslib.lab.booted import ssh as hostssh

# Put a host back as booted after forward-bridge (run by the lab's console, "$1" the booted
# interfaces file): the bridge down, the file back, no forward-bridge network, networking
# restarted. Not the code under test.
RESET = (
    "ifdown --force br0 eth0 2>/dev/null; ip link del br0 2>/dev/null; "
    'printf %s "$1" > /etc/network/interfaces; '
    "virsh -q net-destroy forward-bridge 2>/dev/null; "
    "virsh -q net-undefine forward-bridge 2>/dev/null; "
    "systemctl restart networking"
)


def ssh(host: daemonhost.Host, command: str, timeout: float = 120) -> tuple[int, str]:
    """``command`` as the operator over SSH: its exit code and its output (both streams)."""
    proc = hostssh.run(host.lab, host.name, command, timeout=timeout, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def wait_for(
    probe: Callable[[], str], ready: Callable[[str], bool], timeout: float, what: str
) -> str:
    """Probe until ``ready`` says yes (a condition, not a fixed sleep); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    seen = probe()
    while not ready(seen):
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout:.0f}s; last: {seen[-600:]}")
        time.sleep(0.5)
        seen = probe()
    return seen
