"""forward-bridge's confirm-or-revert over SSH on a booted Debian 12 host, as an operator
runs it: ``ssh operator@HOST sudo opsbook run forward-bridge -p apply true``, with the
runbook's real-host defaults (/etc/network/interfaces, the default restart command,
qemu:///system, no netns).

Each case starts from the host as booted (eth0 by DHCP from NetReg):
(a) the apply converts eth0 to br0 and a new session comes in over br0;
(b) the session is cut while the apply waits for br0 to work: the watchdog alone
    restores the file and networking, and the host answers over eth0 again;
(c) campus DHCP refusing the host: the apply rolls back by itself.

The host is conftest's ``booted_host``. For this module it runs logind with
``KillUserProcesses=yes`` (a setting a daemon host may have): a cut session then takes
every process of its scope along, which is what the watchdog must survive. At the end
the host is as this module found it (file, networking, logind) for later modules.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from opslib.errors import HostError
from opslib.lab import control, daemonhost, hostssh, nspawn
from opslib.lab.config import Lab

INTERFACES = "/etc/network/interfaces"
DEADLINE = 15  # the apply's; its watchdog reverts 2 * DEADLINE + 30 s after it is armed
# An operator's ssh has no keep-alives: a session stalled by the restart resumes.
APPLY = f"sudo opsbook run forward-bridge -p apply true -p deadline {DEADLINE}"
LOGIND_DIR = "/etc/systemd/logind.conf.d"
LOGIND_DROPIN = f"{LOGIND_DIR}/opsbook-test17.conf"
NFT_TABLE = "opsbook_test17"  # campus drops the host's pings to its gateway (case b)

# Put the host back as booted (the lab's console, not the code under test): the bridge
# down with the file that made it, the booted file back, networking restarted.
RESET = (
    "ifdown --force br0 eth0 2>/dev/null; ip link del br0 2>/dev/null; "
    'printf %s "$1" > /etc/network/interfaces; '
    "virsh -q net-destroy forward-bridge 2>/dev/null; "
    "virsh -q net-undefine forward-bridge 2>/dev/null; "
    "systemctl restart networking"
)


def ssh(host: daemonhost.Host, command: str, timeout: float = 60) -> tuple[int, str]:
    proc = hostssh.run(host.lab, host.name, command, timeout=timeout, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def ssh_until(
    host: daemonhost.Host, command: str, ready: Callable[[str], bool], timeout: float, what: str
) -> str:
    """A new session each time until ``ready(output)``; fails naming ``what``."""
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        try:
            rc, out = ssh(host, command, timeout=20)
        except HostError as exc:  # a session stalled while networking restarts
            rc, out = 255, str(exc)
        if rc == 0 and ready(out):
            return out
        time.sleep(0.5)
    pytest.fail(f"{what} within {timeout:.0f}s; last: {out[-400:]}")


def apply_argv(host: daemonhost.Host) -> list[str]:
    argv = hostssh.ssh_argv(host.lab, host.name, APPLY)
    at = argv.index("ssh") + 1
    return [*argv[:at], "-o", "ServerAliveInterval=0", *argv[at:]]


def file_digest(host: daemonhost.Host) -> str:
    rc, out = ssh(host, f"sudo sha256sum {INTERFACES}")
    assert rc == 0, out
    return out.split()[0]


def netreg_acks(lab: Lab, mac: str) -> int:
    log = lab.netreg_log
    lines = log.read_text().splitlines() if log.exists() else []
    return sum(1 for line in lines if "DHCPACK" in line and mac in line)


def on_eth0(host: daemonhost.Host) -> str:
    """What a new session sees once the host is as booted again."""
    return ssh_until(
        host,
        "ip -4 -o addr show; ip link show br0 2>&1; ip route show default",
        lambda out: (
            f"eth0    inet {host.address}/24" in out
            and "does not exist" in out
            and "dev eth0" in out
        ),
        90,
        f"SSH reaching {host.name} at {host.address} on eth0 (no br0)",
    )


@pytest.fixture(scope="module")
def booted_file(booted_host: daemonhost.Host) -> str:
    """The interfaces file the host booted with (read before any case changes it)."""
    return nspawn.run(booted_host.container, ["cat", INTERFACES]).stdout


def reset(host: daemonhost.Host, booted_file: str) -> None:
    """The host as booted: eth0 by DHCP, no br0, no forward-bridge network."""
    done = nspawn.run(host.container, ["sh", "-c", RESET, "reset", booted_file], timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    on_eth0(host)


@pytest.fixture(scope="module")
def host(booted_host: daemonhost.Host, booted_file: str) -> Iterator[daemonhost.Host]:
    lab = booted_host.lab
    kill_user_processes = "[Login]\\nKillUserProcesses=yes\\n"
    rc, out = ssh(
        booted_host,
        f"sudo mkdir -p {LOGIND_DIR} && printf '{kill_user_processes}' | sudo tee "
        f"{LOGIND_DROPIN} >/dev/null && sudo systemctl restart systemd-logind",
    )
    assert rc == 0, out
    try:
        yield booted_host
    finally:
        _drop_nft(lab)
        control.netreg_add(lab, booted_host.mac, booted_host.address)
        reset(booted_host, booted_file)
        rc, out = ssh(
            booted_host, f"sudo rm -f {LOGIND_DROPIN} && sudo systemctl restart systemd-logind"
        )
        assert rc == 0, out


@pytest.fixture
def as_booted(host: daemonhost.Host, booted_file: str) -> daemonhost.Host:
    reset(host, booted_file)
    return host


def _drop_nft(lab: Lab) -> None:
    subprocess.run(
        ["ip", "netns", "exec", lab.campus_ns, "nft", "delete", "table", "inet", NFT_TABLE],
        capture_output=True,
        check=False,
    )


def test_a_apply_over_ssh_converts_and_a_new_session_comes_in_over_br0(
    lab: Lab, as_booted: daemonhost.Host
) -> None:
    host = as_booted
    acks = netreg_acks(lab, host.mac)
    rc, out = ssh(host, APPLY, timeout=300)
    assert rc == 0, out
    assert "ok (changed): eth0 -> inet manual, br0 over eth0 (dhcp)" in out, out
    assert re.search(r"^\s+gateway answers\s+ok\s", out, re.M), out
    assert "FAIL" not in out, out

    # a new session: br0 holds eth0's MAC and the host's NetReg lease; it came in over br0
    seen = ssh_until(
        host,
        "cat /sys/class/net/br0/address; ip -4 -o addr show br0; ip route show default; "
        "ip route get ${SSH_CONNECTION%% *}; cat /sys/class/net/eth0/master/uevent",
        lambda out: f"inet {host.address}/24" in out,
        60,
        "a new SSH session over br0",
    )
    assert seen.splitlines()[0] == host.mac, seen
    assert f"default via {lab.campus_gateway} dev br0" in seen, seen
    assert re.search(r" dev br0 src " + re.escape(host.address), seen), seen
    assert "INTERFACE=br0" in seen, seen
    assert control.netreg_leases(lab).get(host.mac) == host.address
    assert netreg_acks(lab, host.mac) > acks  # NetReg answered br0 (eth0's MAC)

    rc, again = ssh(host, APPLY, timeout=300)
    assert rc == 0 and "ok (no change)" in again, again

    rc, info = ssh(host, "virsh -c qemu:///system net-info forward-bridge")
    assert rc == 0, info
    fields = dict(re.findall(r"^(\w+):\s+(\S+)", info, re.M))
    assert fields["Active"] == fields["Persistent"] == fields["Autostart"] == "yes", info
    assert fields["Bridge"] == "br0", info


def test_b_a_cut_session_is_reverted_by_the_watchdog_alone(
    lab: Lab, as_booted: daemonhost.Host
) -> None:
    host = as_booted
    before = file_digest(host)
    # campus drops the host's pings to its gateway: br0 gets its lease and SSH works,
    # but "gateway answers" fails until the apply's deadline, so the apply keeps waiting
    rule = (
        f"table inet {NFT_TABLE} {{\n chain input {{\n"
        "  type filter hook input priority 0;\n"
        f"  ip saddr {host.address} icmp type echo-request drop\n }}\n}}\n"
    )
    subprocess.run(["ip", "netns", "exec", lab.campus_ns, "nft", "-f", "-"], input=rule,
                   text=True, check=True)  # fmt: skip
    try:
        client = subprocess.Popen(
            apply_argv(host), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            armed = ssh_until(
                host,
                "systemctl list-units 'opsbook-confirm-*' --state=active --plain --no-legend; "
                "ip -4 -o addr show br0",
                lambda out: "opsbook-confirm-" in out and f"inet {host.address}/" in out,
                60,
                "the watchdog armed and br0 up with its lease",
            )
        finally:
            client.kill()  # the operator's session is cut
            client.communicate(timeout=30)
        unit = re.search(r"(opsbook-confirm-\S+)\.service", armed)
        assert unit, armed
        directory = f"/tmp/{unit.group(1)}"
        # logind ended the session and its processes; the watchdog runs on
        gone = ssh_until(
            host,
            f"pgrep -f 'opsbook run [f]orward-bridge' || true; systemctl is-active {unit.group(0)}",
            lambda out: out.split() == ["active"],
            30,
            "the cut session's apply gone and the watchdog still active",
        )
        assert gone.split() == ["active"]
    finally:
        _drop_nft(lab)

    # nobody confirms: the watchdog restores the file and restarts networking by itself
    ssh_until(
        host,
        f"sudo cat {directory}/decided",
        lambda out: out.strip() == "reverted",
        2 * DEADLINE + 30 + 90,
        "the watchdog reverting",
    )
    rc, log = ssh(host, f"sudo cat {directory}/log")
    assert "no confirmation by the deadline: reverting" in log, log
    assert f"restored {INTERFACES} from " in log and "rollback exit 0" in log, log
    seen = on_eth0(host)
    assert f"default via {lab.campus_gateway} dev eth0" in seen, seen
    assert file_digest(host) == before
    # the cut run is still filed, and not as ok: killed (logind ended it first) or failed
    # (it lived long enough to find its terminal gone: a broken pipe); which comes first
    # is a race between logind and the run's next line of output
    rc, records = ssh(host, "sudo opsbook records --runbook forward-bridge -n 1")
    assert rc == 0, records
    rows = [ln.split() for ln in records.splitlines() if ln.split()[3:4] == ["forward-bridge"]]
    assert rows and rows[0][5] in ("killed", "failed"), records


def test_c_campus_refusing_the_host_rolls_back(
    lab: Lab, as_booted: daemonhost.Host, booted_file: str
) -> None:
    host = as_booted
    before = file_digest(host)
    merged = host.root / INTERFACES.lstrip("/")  # the host's file as the lab sees it
    control.netreg_remove(lab, host.mac)
    try:
        client = subprocess.Popen(
            apply_argv(host), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        # NetReg answers again once the apply has given up on br0 and put the old file
        # back, so that eth0's DHCP of the rollback brings back the state found before
        written = nspawn.wait(lambda: merged.read_text() != booted_file, 120, every=0.1)
        assert written, "the apply never wrote the new file"
        restored = nspawn.wait(lambda: merged.read_text() == booted_file, 120, every=0.1)
        assert restored, "the apply never restored the file"
    finally:
        control.netreg_add(lab, host.mac, host.address)
    out, _ = client.communicate(timeout=300)
    assert client.returncode == 1, out
    assert "forward-bridge: rolled back: verification failed" in out, out
    assert re.search(r"^\s+br0 has an address\s+fail\s+no IPv4 address", out, re.M), out
    assert re.search(r"^\s+previous state back\s+ok\s", out, re.M), out
    on_eth0(host)
    assert file_digest(host) == before
