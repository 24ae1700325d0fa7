"""On the session's booted daemon host, as the operator over SSH: the wiki's "properly
configured user account" (libvirt-access and its audit for a new account, alice), and
scheduled runs that the host's systemd fires by itself (timers, OnFailure, the journal).

The host is conftest's ``booted_host`` (test_15 boots it, or this module when it runs
alone). Root's runs go through ``sudo -i`` (a login as root, whose records stay in
root's own ./records, not in the operator's). Every assertion reads what the host's
own tools report: virsh as the account, id, the login file, the run's exit status,
systemctl, journalctl, the record index.
"""

from __future__ import annotations

import re

import pytest

from opslib.lab.booted import daemonhost, nspawn
from opslib.lab.booted import ssh as hostssh

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


# -- scheduled runs: the host's systemd fires them ----------------------------------------

PARAMS = "/home/operator/schedules"  # the operator's parameter sets, PARAMS/HOST/*.yaml
HOOK_OUTPUT = "/var/tmp/opsbook-on-failure.txt"  # what the schedule's on_failure receives
RUNS_DEADLINE = 300.0  # the calendar is ~20 s ahead, then up to 30 s RandomizedDelaySec


def _files(host: daemonhost.Host, when: str) -> dict[str, str]:
    return {
        "schedule.yaml": f"host: {host.name}\n"
        f'on_failure: "cat > {HOOK_OUTPUT}"\n'
        "runs:\n"
        "  - runbook: network-inventory\n"
        "    parameters: network-inventory.yaml\n"
        f'    when: "{when}"\n'
        "  - runbook: host-health\n"
        "    parameters: host-health.yaml\n"
        f'    when: "{when}"\n',
        "network-inventory.yaml": "libvirt_uri: qemu:///system\n",
        # the wiki's networks are not on this host yet: this run fails
        "host-health.yaml": "nat_network: nat-bridge\nforward_network: forward-bridge\n",
    }


@pytest.fixture(scope="module")
def installed(booted_host: daemonhost.Host) -> str:
    """A schedule whose calendar is 20 s ahead on the host's clock, installed with sudo."""
    rc, when = ssh(booted_host, "date -u -d @$(( $(date +%s) + 20 )) '+%Y-%m-%d %H:%M:%S UTC'")
    assert rc == 0, when
    directory = f"{PARAMS}/{booted_host.name}"
    writes = [f"mkdir -p {directory}"] + [
        f"cat > {directory}/{name} <<'EOF'\n{text}EOF"
        for name, text in _files(booted_host, when.strip()).items()
    ]
    rc, out = ssh(booted_host, "\n".join(writes))
    assert rc == 0, out
    install = f"sudo opsbook schedule install --host {booted_host.name} --params-dir {PARAMS}"
    rc, out = ssh(booted_host, install)
    assert rc == 0, out
    return out


def units(host: daemonhost.Host, runbook: str) -> tuple[str, str]:
    stem = f"opsbook-{host.name}-{runbook}"
    return f"{stem}.timer", f"{stem}.service"


def test_install_enables_the_timers_in_the_hosts_systemd(
    booted_host: daemonhost.Host, installed: str
) -> None:
    timers = [units(booted_host, r)[0] for r in ("network-inventory", "host-health")]
    assert f"enabled {' '.join(timers)}" in installed, installed
    assert ssh(booted_host, f"systemctl is-enabled {' '.join(timers)}") == (0, "enabled\n" * 2)
    rc, out = ssh(booted_host, "systemctl list-timers --all --no-legend")
    assert rc == 0 and all(t in out for t in timers), out


def last_runs(host: daemonhost.Host) -> dict[str, str]:
    """runbook -> the status `opsbook schedule list` shows for its last run."""
    _, out = ssh(host, f"sudo opsbook schedule list --host {host.name} --params-dir {PARAMS}")
    found = re.findall(rf"^opsbook-{host.name}-(\S+)\.timer\s.*\s(\S+)\s+\S+$", out, re.M)
    return dict(found)


def test_the_timers_fire_by_themselves_and_file_records(
    booted_host: daemonhost.Host, installed: str
) -> None:
    seen: list[dict[str, str]] = []

    def both_ran() -> bool:
        seen.append(last_runs(booted_host))
        statuses = [seen[-1].get(r) for r in ("network-inventory", "host-health")]
        return all(s in ("ok", "failed") for s in statuses)

    assert nspawn.wait(both_ran, RUNS_DEADLINE, every=2.0), seen[-1:]
    assert seen[-1] == {"network-inventory": "ok", "host-health": "failed"}
    # started by their timers (nobody ran an ExecStart here)
    for runbook in ("network-inventory", "host-health"):
        timer, service = units(booted_host, runbook)
        rc, out = ssh(booted_host, f"systemctl show -P TriggeredBy {service}")
        assert (rc, out.split()) == (0, [timer]), out
    rc, out = ssh(booted_host, "sudo opsbook records --records /var/lib/opsbook/records")
    assert rc == 0, out
    assert re.search(rf"network-inventory\s+{booted_host.name}\s+ok\s", out), out


def test_a_failing_run_hands_its_summary_to_the_on_failure_command(
    booted_host: daemonhost.Host, installed: str
) -> None:
    def hook_ran() -> bool:
        return ssh(booted_host, f"test -s {HOOK_OUTPUT}")[0] == 0

    assert nspawn.wait(hook_ran, RUNS_DEADLINE, every=2.0)
    rc, summary = ssh(booted_host, f"cat {HOOK_OUTPUT}")
    first = f"opsbook: host-health on {booted_host.name} failed (exit 1) at "
    assert rc == 0 and summary.startswith(first), summary
    assert "network nat-bridge" in summary
    assert re.search(rf"^record: {booted_host.name}/\S+-host-health\.ipynb$", summary, re.M)
    # the OnFailure unit ran the hook for the failed run only (the other's is loaded, never run)
    for runbook, ran in (("host-health", True), ("network-inventory", False)):
        unit = f"opsbook-onfailure@{units(booted_host, runbook)[1]}.service"
        rc, out = ssh(booted_host, f"systemctl show -P ExecMainStartTimestampMonotonic {unit}")
        assert rc == 0 and (out.strip() not in ("", "0")) == ran, (unit, out)


def test_the_journal_has_one_summary_line_per_run(
    booted_host: daemonhost.Host, installed: str
) -> None:
    for runbook, status in (("network-inventory", "ok"), ("host-health", "failed")):
        service = units(booted_host, runbook)[1]
        rc, out = ssh(booted_host, f"sudo journalctl -u {service} -t opsbook -o cat --no-pager")
        assert rc == 0, out
        lines = out.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{status} (no change): "), out
        assert f"-{runbook}.ipynb" in lines[0]


def test_schedule_remove_disables_and_removes_them(
    booted_host: daemonhost.Host, installed: str
) -> None:
    remove = f"sudo opsbook schedule remove --host {booted_host.name}"
    rc, out = ssh(booted_host, remove)
    assert rc == 0, out
    assert out.startswith(f"disabled opsbook-{booted_host.name}-"), out
    stem = f"opsbook-{booted_host.name}-"
    rc, out = ssh(booted_host, "systemctl list-timers --all --no-legend")
    assert stem not in out, out
    rc, out = ssh(booted_host, "systemctl list-units --failed --no-legend")
    assert stem not in out, out  # the failed run's unit went with its file
    assert ssh(booted_host, f"ls /etc/systemd/system/{stem}*")[0] != 0
