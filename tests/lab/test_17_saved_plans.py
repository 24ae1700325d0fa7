"""Saved plans on a booted Debian 12 host, over SSH as an operator works:
``sudo -i opsbook plan forward-bridge``, ``opsbook approve``, ``opsbook apply``.

(a) plan, then the interfaces file edited by hand: the apply is refused as stale,
    naming the file, and nothing changes (no br0, no network, the file as edited);
(b) with ``parameters/HOST/policy.yaml`` asking for approval: ``run -p apply true`` is
    refused, the planner's own approval is refused, a second account (``reviewer``, its
    own sudo) approves, the apply converts the host and plan and apply link both ways;
(c) a plan record edited after it was filed is refused; (d) an expired one too.

The host is conftest's ``booted_host``; at the end it is as this module found it (file,
networking, no forward-bridge network, no reviewer account, no policy).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from on_host import RESET, ssh, wait_for

from opslib.lab.booted import daemonhost, nspawn

# its own booted host, beside the booted host of test_15/16/19/97 (scripts/test.sh)
pytestmark = pytest.mark.lab_session("bridging")

INTERFACES = "/etc/network/interfaces"
DEADLINE = 15
REVIEWER = "reviewer"
SUDOERS = "/etc/sudoers.d/opsbook-test-reviewer"


def console(host: daemonhost.Host, script: str, *args: str) -> str:
    """The lab's console on the host (root, no SSH): not the code under test."""
    done = nspawn.run(host.container, ["sh", "-c", script, "console", *args], timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def plan(host: daemonhost.Host) -> int:
    rc, out = ssh(host, f"sudo -i opsbook plan forward-bridge -q --host {host.name} "
                        f"-p deadline {DEADLINE}", timeout=300)  # fmt: skip
    assert rc == 0, out
    found = re.search(r"^plan #(\d+) filed by operator: ", out, re.M)
    assert found, out
    return int(found[1])


def policy(host: daemonhost.Host, text: str) -> None:
    console(host, 'mkdir -p "$(dirname "$1")" && printf %s "$2" > "$1"',
            f"/root/parameters/{host.name}/policy.yaml", text)  # fmt: skip


def on_eth0(host: daemonhost.Host) -> None:
    wait_for(
        lambda: ssh(host, "ip -4 -o addr show; ip link show br0 2>&1", timeout=20)[1],
        lambda out: f"eth0    inet {host.address}/24" in out and "does not exist" in out,
        90,
        f"SSH reaching {host.name} on eth0 (no br0)",
    )


@pytest.fixture(scope="module")
def host(booted_host: daemonhost.Host) -> Iterator[daemonhost.Host]:
    booted = console(booted_host, f"cat {INTERFACES}")
    console(
        booted_host,
        f"useradd --create-home --shell /bin/bash {REVIEWER} && "
        f"printf '%s\\n' '{REVIEWER} ALL=(ALL) NOPASSWD:ALL' > {SUDOERS} && chmod 0440 {SUDOERS}",
    )
    try:
        yield booted_host
    finally:
        console(booted_host, f"userdel -r {REVIEWER}; rm -f {SUDOERS}; rm -rf /root/parameters")
        console(booted_host, RESET, booted)
        on_eth0(booted_host)


def test_a_plan_is_refused_as_stale_once_the_file_was_edited_by_hand(
    host: daemonhost.Host,
) -> None:
    n = plan(host)
    console(host, f"printf '# edited by hand\\n' >> {INTERFACES}")
    edited = console(host, f"sha256sum {INTERFACES}").split()[0]
    rc, out = ssh(host, f"sudo -i opsbook apply {n} -q", timeout=300)
    assert rc == 1, out
    assert re.search(
        rf"^failed: stale: forward-bridge's interfaces file {INTERFACES} changed since "
        rf"plan #{n} \(sha256 [0-9a-f]{{12}} then, [0-9a-f]{{12}} now\); plan again",
        out,
        re.M,
    ), out
    assert console(host, f"sha256sum {INTERFACES}").split()[0] == edited  # nothing changed
    seen = console(host, "ip link show br0 2>&1; virsh -q net-list --all --name; true")
    assert "does not exist" in seen and "forward-bridge" not in seen, seen
    rc, plans = ssh(host, "sudo -i opsbook records --plans")
    assert re.search(rf"^{n}\s.*\soperator\s+stale\s", plans, re.M), plans
    console(host, f"sed -i '/^# edited by hand$/d' {INTERFACES}")


def test_b_an_approved_plan_is_applied_exactly_and_the_records_link(host: daemonhost.Host) -> None:
    policy(host, "approval: [forward-bridge]\n")
    rc, out = ssh(host, f"sudo -i opsbook run forward-bridge --host {host.name} -p apply true")
    assert rc == 2 and "applies only an approved plan" in out, out
    assert "opsbook plan forward-bridge --host" in out, out
    n = plan(host)
    rc, out = ssh(host, f"sudo -i opsbook apply {n}")
    assert rc == 2 and f"plan #{n} is not approved" in out, out
    rc, out = ssh(host, f"sudo -i opsbook approve {n}")
    assert rc == 2 and f"plan #{n} was planned by operator; another person" in out, out
    rc, out = ssh(host, f"sudo -u {REVIEWER} sudo -i opsbook approve {n} --comment 'diff ok'")
    assert rc == 0 and f"approved by {REVIEWER}" in out, out

    rc, out = ssh(host, f"sudo -i opsbook apply {n} -q", timeout=300)
    assert rc == 0, out
    assert "ok (changed): eth0 -> inet manual, br0 over eth0 (dhcp)" in out, out
    applied = int(re.search(r"^record #(\d+): ", out, re.M)[1])  # type: ignore[index]
    seen = console(host, "virsh net-info forward-bridge; ip -o link show br0")
    assert re.search(r"^Active:\s+yes", seen, re.M), seen
    rc, plans = ssh(host, "sudo -i opsbook records --plans")
    row = re.search(rf"^{n}\s.*\soperator\s+applied\s+{REVIEWER} \S+\s+#{applied}\s", plans, re.M)
    assert row, plans
    rc, listing = ssh(host, "sudo -i opsbook records")
    assert re.search(rf"^{applied}\s.*\sok\s+yes\s.*plan #{n}: eth0 -> inet manual", listing, re.M)
    rc, diff = ssh(host, f"sudo -i opsbook records diff {n} {applied}")
    assert f"= #{applied} applied plan #{n}: exactly the " in diff, diff
    rc, again = ssh(host, f"sudo -i opsbook apply {n}")
    assert rc == 2 and f"plan #{n} was applied already (record #{applied})" in again, again


def test_c_an_edited_plan_record_is_refused(host: daemonhost.Host) -> None:
    policy(host, "")
    n = plan(host)
    rc, path = ssh(host, f"sudo -i opsbook records show {n} | sed -n 's/^record: *#{n} //p'")
    record = path.strip() if path.strip().startswith("/") else f"/root/{path.strip()}"
    console(host, f'sed -i \'s/"deadline": 15.0/"deadline": 3600.0/\' {record}')
    rc, out = ssh(host, f"sudo -i opsbook apply {n}")
    assert rc == 2 and f"plan #{n}'s file was edited after it was filed" in out, out


def test_d_an_expired_plan_is_refused(host: daemonhost.Host) -> None:
    policy(host, "plan_expiry: 1s\n")
    n = plan(host)
    rc, plans = ssh(host, "sudo -i opsbook records --plans")
    expires = re.search(rf"^{n}\s.*\s(\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\dZ)\s", plans, re.M)
    assert expires, plans
    when = expires[1].replace(" ", "T")
    wait_for(lambda: console(host, "date -u +%Y-%m-%dT%H:%M:%SZ").strip(),
             lambda now: now > when, 60, f"the host's clock past {when}")  # fmt: skip
    rc, out = ssh(host, f"sudo -i opsbook apply {n}")
    assert rc == 2 and re.search(rf"plan #{n} expired at \S+; plan again", out), out
