"""On the session's booted daemon host, as the operator over SSH: the wiki's "properly
configured user account" (libvirt-access and its audit for a new account, alice).

The host is conftest's ``booted_host`` (test_15 boots it, or this module when it runs
alone). Root's runs go through ``sudo -i`` (a login as root, whose records stay in
root's own ./records, not in the operator's). Every assertion reads what the host's
own tools report: virsh as the account, id, the login file, the run's exit status.
"""

from __future__ import annotations

import re

import pytest

from opslib.lab import daemonhost, hostssh

ACCOUNT = "alice"


def ssh(host: daemonhost.Host, command: str, timeout: float = 120) -> tuple[int, str]:
    proc = hostssh.run(host.lab, host.name, command, timeout=timeout, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def as_alice(host: daemonhost.Host, command: str) -> tuple[int, str]:
    """``command`` in alice's login environment, as she would run it after logging in."""
    return ssh(host, f"sudo runuser -l {ACCOUNT} -c '{command}'")


@pytest.fixture(scope="module")
def alice(booted_host: daemonhost.Host) -> str:
    rc, out = ssh(booted_host, f"sudo useradd --create-home --shell /bin/bash {ACCOUNT}")
    assert rc == 0, out
    return ACCOUNT


def test_a_new_account_cannot_see_the_hosts_networks(
    booted_host: daemonhost.Host, alice: str
) -> None:
    # her virsh talks to her own session libvirt: none of the host's networks there
    rc, out = as_alice(booted_host, "virsh uri; virsh net-list --all")
    assert "qemu:///session" in out and not re.search(r"^\s*default\s", out, re.M), out
    # and the system libvirt turns her away (polkit: not in group libvirt)
    rc, out = as_alice(booted_host, "virsh -c qemu:///system net-list --all")
    assert rc != 0 and "authentication unavailable" in out, out


def test_libvirt_access_makes_her_virsh_list_the_hosts_networks(
    booted_host: daemonhost.Host, alice: str
) -> None:
    command = f"sudo -i opsbook run libvirt-access -p account {alice} -p apply true"
    rc, out = ssh(booted_host, command, timeout=300)
    assert rc == 0, out
    assert re.search(r"^ok \(changed\): alice manages qemu:///system: .* lists default", out, re.M)
    rc, out = as_alice(booted_host, "virsh net-list --all")
    assert rc == 0 and re.search(r"^\s*default\s+active\s+yes\s+yes", out, re.M), out
    assert "libvirt" in ssh(booted_host, f"id -nG {alice}")[1].split()
    rc, profile = ssh(booted_host, f"sudo tail -n 1 ~{alice}/.profile")
    assert profile == "export LIBVIRT_DEFAULT_URI=qemu:///system\n"
    rc, owner = ssh(booted_host, f"stat -c '%U %a' ~{alice}/.profile")
    assert owner == "alice 644\n"  # still her own file, as useradd's skeleton made it


def test_a_second_run_reports_no_change(booted_host: daemonhost.Host, alice: str) -> None:
    command = f"sudo -i opsbook run libvirt-access -p account {alice} -p apply true"
    rc, out = ssh(booted_host, command, timeout=300)
    assert rc == 0, out
    assert re.search(r"^ok \(no change\): alice manages .*\(nothing to change\)$", out, re.M), out


def test_root_and_system_accounts_are_refused_in_one_line(booted_host: daemonhost.Host) -> None:
    rc, out = ssh(booted_host, "sudo -i opsbook run libvirt-access -p account libvirt-qemu")
    assert rc == 2, out
    assert "bad-input: libvirt-qemu is a system account (uid 64055" in out, out


def test_the_audit_names_who_cannot_with_the_fix(booted_host: daemonhost.Host, alice: str) -> None:
    # the group's members: the operator is in libvirt (the image made it so) but its login
    # environment has no LIBVIRT_DEFAULT_URI, so its virsh lists nothing of the host's
    rc, out = ssh(booted_host, "sudo -i opsbook run libvirt-access-audit -p members_of libvirt")
    assert rc == 1, out
    assert (
        "1 of 2 accounts (the members of libvirt) cannot manage qemu:///system: "
        "operator (LIBVIRT_DEFAULT_URI is not set)" in out
    ), out
    rows = {
        m.group(1): m.group(0) for m in re.finditer(r"^\s+(alice|operator)\s+yes\s.*$", out, re.M)
    }
    assert re.search(r"lists default\s+yes\s*$", rows["alice"]), out
    assert rows["operator"].endswith(
        "no          sudo opsbook run libvirt-access -p account operator -p apply true"
    ), out
