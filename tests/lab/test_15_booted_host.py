"""A booted Debian 12 daemon host on the session lab's campus, operated over SSH.

The host (its own netns, overlay, NetReg entry and machine name) sits beside the
session lab's simulated host; it reuses the lab's campus and NetReg because that is where
a daemon host lives. It is the session's (conftest's ``booted_host``, shared with
test_16); "down leaves nothing" takes it down after the last test that uses it, so the
modules after those never see it. Every assertion reads what the host's own tools report.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from opslib.core.errors import HostError
from opslib.lab.booted import daemonhost, nspawn
from opslib.lab.booted import ssh as hostssh
from opslib.lab.campus import netreg
from opslib.lab.config import Lab


def _progress(line: str) -> None:
    print(f"host: {line}", file=sys.stderr, flush=True)


@pytest.fixture
def host(booted_host: daemonhost.Host) -> daemonhost.Host:
    return booted_host


def ssh(host: daemonhost.Host, command: str, timeout: float = 120) -> tuple[int, str]:
    proc = hostssh.run(host.lab, host.name, command, timeout=timeout, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def test_systemd_runs_networking_libvirt_and_sshd(lab: Lab, host: daemonhost.Host) -> None:
    rc, out = ssh(host, "systemctl is-active networking libvirtd.socket ssh")
    assert (rc, out.split()) == (0, ["active", "active", "active"]), out
    rc, out = ssh(host, "systemctl is-system-running")
    assert out.strip() in ("running", "degraded"), out


def test_eth0_holds_the_netreg_lease(lab: Lab, host: daemonhost.Host) -> None:
    rc, out = ssh(host, "ip -4 addr show eth0")
    assert rc == 0 and f"inet {host.address}/24 " in out, out
    assert netreg.netreg_leases(lab).get(host.mac) == host.address
    assert host.mac in netreg.netreg_registered(lab)


def test_the_operator_runs_a_runbook_with_the_real_host_defaults(
    lab: Lab, host: daemonhost.Host
) -> None:
    rc, out = ssh(host, "opsbook run network-inventory", timeout=300)
    assert rc == 0, out
    assert re.search(r"^\s+default\s+True\s+True\s+True\s+nat\s+virbr0\s", out, re.M), out
    record = re.search(r"^record #\d+: (\S+\.ipynb)", out, re.M)
    assert record, out
    # the record is on the host, with the defaults a daemon host runs with
    rc, header = ssh(
        host,
        "python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))"
        f'["metadata"]["opsbook"]["parameters"])\' {record.group(1)}',
    )
    assert rc == 0, header
    assert "'libvirt_uri': 'qemu:///system'" in header and "'netns': ''" in header


def test_the_operator_is_a_sudoer_and_the_host_key_is_checked(
    lab: Lab, host: daemonhost.Host
) -> None:
    assert ssh(host, "sudo -n id -u") == (0, "0\n")
    known = hostssh.known_hosts_file(lab).read_text()
    assert f"{host.name} ssh-ed25519 " in known
    assert "StrictHostKeyChecking yes" in hostssh.config_file(lab).read_text()


def test_a_host_not_booted_in_time_is_taken_down_and_names_its_log(
    lab: Lab, host: daemonhost.Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    # no deadline at all: systemd has not reached "running" when it is first asked
    monkeypatch.setattr(daemonhost, "BOOT_TIMEOUT", 0.0)
    late = daemonhost.Host(lab, "dhlate", 0)
    with pytest.raises(HostError, match=f"did not boot within 0s .*; see {late.console_log}$"):
        daemonhost.up(lab, late.name, progress=_progress)
    assert late.console_log.exists()
    assert late.name not in [h.name for h in daemonhost.hosts(lab)]
    assert not Path("/run/netns", late.netns).exists()
    assert not late.dir.exists()
    assert not (nspawn.NSPAWN_RUN / "propagate" / late.machine).exists()
    assert not [p for p in Path("/proc").glob("[0-9]*") if late.machine in _cmdline(p)]
    assert ssh(host, "true")[0] == 0  # the session's host is untouched


@pytest.mark.takes_booted_host_down  # after every other test of the booted host
def test_down_leaves_nothing(lab: Lab, host: daemonhost.Host) -> None:
    nspawn_pid = nspawn.pid(host.container)
    assert nspawn_pid is not None
    init = nspawn.init_pid(nspawn_pid)
    root = os.stat(host.root)
    lock = f"inode-{root.st_dev}:{root.st_ino}"  # nspawn's lock on the root it booted
    daemonhost.down(lab, host.name, progress=_progress)
    for pid in (nspawn_pid, init):
        assert pid is None or not Path(f"/proc/{pid}").exists() or _zombie(pid)
    assert not Path("/run/netns", host.netns).exists()
    assert not host.dir.exists()
    assert str(host.root) not in Path("/proc/self/mountinfo").read_text()
    assert not (nspawn.NSPAWN_RUN / "propagate" / host.machine).exists()
    locks = nspawn.NSPAWN_RUN / "locks"
    assert not locks.exists() or not any(lock in p.name for p in locks.iterdir())
    assert not any(c.exists() for c in nspawn.cgroups(host.container))
    assert host.mac not in netreg.netreg_registered(lab)
    assert host.name not in hostssh.known_hosts_file(lab).read_text().split()
    assert not [p for p in Path("/proc").glob("[0-9]*") if host.machine in _cmdline(p)]


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
