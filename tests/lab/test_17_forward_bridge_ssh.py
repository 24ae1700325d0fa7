"""forward-bridge's confirm-or-revert over SSH on a booted Debian 12 host, as an operator
runs it: ``ssh operator@HOST sudo opsbook run forward-bridge -p apply true``, with the
runbook's real-host defaults (/etc/network/interfaces, the default restart command,
qemu:///system, no netns).

Each case starts from the host as booted (eth0 by DHCP from NetReg):
(a) the apply converts eth0 to br0 and a new session comes in over br0;
(b) the session is cut while the apply waits for br0 to work (campus drops its pings):
    the run goes on without its terminal, rolls back by itself at its deadline, and its
    record says so (failed, changed then rolled back, the terminal lost at T);
(b2) the same cut on a host whose logind has ``KillUserProcesses=yes`` (a setting a
    daemon host may have): the cut session takes every process of its scope along, the
    run included (filed as killed); the watchdog alone restores the file and networking;
(c) campus DHCP refusing the host: the apply rolls back by itself.
After (b) and (b2) the host answers over eth0 again.

The host is conftest's ``booted_host``. At the end the host is as this module found it
(file, networking, logind) for later modules.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from on_host import RESET

from opslib.core.errors import HostError
from opslib.lab.booted import daemonhost, nspawn
from opslib.lab.booted import ssh as hostssh
from opslib.lab.campus import netreg
from opslib.lab.config import Lab

# its own booted host, beside the booted host of test_15/16/19/97 (scripts/test.sh)
pytestmark = pytest.mark.lab_session("bridging")

INTERFACES = "/etc/network/interfaces"
DEADLINE = 15  # the apply's; its watchdog reverts 2 * DEADLINE + 30 s after it is armed
# An operator's ssh has no keep-alives: a session stalled by the restart resumes.
APPLY = f"sudo opsbook run forward-bridge -p apply true -p deadline {DEADLINE}"
# The cut cases (b, b2): the session is cut as soon as br0 has its lease, which the lab
# sees at once (nsenter, no SSH); the run's own verification waits this long after that.
CUT_DEADLINE = 10
LOGIND_DIR = "/etc/systemd/logind.conf.d"
LOGIND_DROPIN = f"{LOGIND_DIR}/opsbook-test17.conf"
NFT_TABLE = "opsbook_test17"  # campus drops the host's pings to its gateway (case b)


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


def apply_argv(host: daemonhost.Host, deadline: float = DEADLINE) -> list[str]:
    apply = f"sudo opsbook run forward-bridge -p apply true -p deadline {deadline:g}"
    argv = hostssh.ssh_argv(host.lab, host.name, apply)
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
    try:
        yield booted_host
    finally:
        _drop_nft(lab)
        netreg.netreg_add(lab, booted_host.mac, booted_host.address)
        reset(booted_host, booted_file)
        _logind(booted_host, kill_user_processes=False)


def _logind(host: daemonhost.Host, *, kill_user_processes: bool) -> None:
    if kill_user_processes:
        dropin = "[Login]\\nKillUserProcesses=yes\\n"
        command = (
            f"sudo mkdir -p {LOGIND_DIR} && printf '{dropin}' | sudo tee {LOGIND_DROPIN} "
            ">/dev/null && sudo systemctl restart systemd-logind"
        )
    else:
        command = f"sudo rm -f {LOGIND_DROPIN} && sudo systemctl restart systemd-logind"
    rc, out = ssh(host, command)
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
    assert netreg.netreg_leases(lab).get(host.mac) == host.address
    assert netreg_acks(lab, host.mac) > acks  # NetReg answered br0 (eth0's MAC)

    rc, again = ssh(host, APPLY, timeout=300)
    assert rc == 0 and "ok (no change)" in again, again

    rc, info = ssh(host, "virsh -c qemu:///system net-info forward-bridge")
    assert rc == 0, info
    fields = dict(re.findall(r"^(\w+):\s+(\S+)", info, re.M))
    assert fields["Active"] == fields["Persistent"] == fields["Autostart"] == "yes", info
    assert fields["Bridge"] == "br0", info


@contextmanager
def campus_drops_pings(lab: Lab, host: daemonhost.Host) -> Iterator[None]:
    """Campus drops the host's pings to its gateway: br0 gets its lease and SSH works,
    but "gateway answers" fails until the apply's deadline, so the apply keeps waiting."""
    rule = (
        f"table inet {NFT_TABLE} {{\n chain input {{\n"
        "  type filter hook input priority 0;\n"
        f"  ip saddr {host.address} icmp type echo-request drop\n }}\n}}\n"
    )
    subprocess.run(["ip", "netns", "exec", lab.campus_ns, "nft", "-f", "-"], input=rule,
                   text=True, check=True)  # fmt: skip
    try:
        yield
    finally:
        _drop_nft(lab)


def cut_once_armed(host: daemonhost.Host) -> str:
    """Start the apply over SSH and kill the client (the operator's session is cut) once
    the watchdog is armed and br0 has the host's lease; the watchdog's directory."""

    def inside(command: str) -> str:
        done = nspawn.run(host.container, ["sh", "-c", command])
        return done.stdout

    client = subprocess.Popen(
        apply_argv(host, CUT_DEADLINE), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    seen = [""]

    def ready() -> bool:
        seen[0] = inside(
            "systemctl list-units 'opsbook-confirm-*' --state=active --plain --no-legend; "
            "ip -4 -o addr show br0"
        )
        return "opsbook-confirm-" in seen[0] and f"inet {host.address}/" in seen[0]

    try:
        armed = nspawn.wait(ready, 90, every=0.1)
    finally:
        client.kill()  # the operator's session is cut
        out, _ = client.communicate(timeout=30)
    assert armed, f"the watchdog armed and br0 up with its lease: {seen[0]} / {out[-400:]}"
    unit = re.search(r"(opsbook-confirm-\S+)\.service", seen[0])
    assert unit, seen[0]
    return f"/tmp/{unit.group(1)}"


def last_record(host: daemonhost.Host, timeout: float) -> list[str]:
    """The newest forward-bridge record's row once it is filed (no longer running)."""

    def row(out: str) -> list[str]:
        rows = [ln.split() for ln in out.splitlines() if ln.split()[3:4] == ["forward-bridge"]]
        return rows[0] if rows else []

    out = ssh_until(
        host,
        "sudo opsbook records --runbook forward-bridge -n 1",
        lambda out: row(out)[5:6] not in ([], ["running"]),
        timeout,
        "the cut run's record filed",
    )
    return row(out)


def test_b_a_cut_session_leaves_the_run_going_and_its_record_says_what_happened(
    lab: Lab, as_booted: daemonhost.Host
) -> None:
    host = as_booted
    before = file_digest(host)
    with campus_drops_pings(lab, host):
        directory = cut_once_armed(host)
        # the run goes on without its terminal: at its deadline its verification fails,
        # and it rolls back by itself (the pings stay dropped until it has filed its record)
        row = last_record(host, CUT_DEADLINE + 120)
    seen = on_eth0(host)
    assert f"default via {lab.campus_gateway} dev eth0" in seen, seen
    assert file_digest(host) == before
    # the run, not the watchdog, reverted: it told the watchdog so, and the watchdog left
    _rc, decided = ssh(
        host,
        f"sudo cat {directory}/decided; sudo test ! -e {directory}/log || sudo cat {directory}/log",
    )
    assert decided.split() == ["disarmed"], decided

    assert row[5:7] == ["failed", "no"], row
    rc, show = ssh(host, f"sudo opsbook records show {row[0]}")
    assert rc == 0, show
    assert re.search(r"^status:\s+failed \(exit 1\)$", show, re.M), show
    assert re.search(r"^changed:\s+no \(changed, then rolled back: see its steps\)$", show, re.M)
    note = r"^note:\s+the terminal was lost at \S+Z \(its output went away\); the run went on"
    assert re.search(note, show, re.M), show
    assert "verification failed (gateway answers: " in show, show
    assert "restored the previous file and state" in show, show
    # the change it made (the plan's diff of the file), and its steps there and back
    assert re.search(r"^\s+\+.*br0", show, re.M), show
    for step in ("write", "restart networking", "disarm the revert watchdog",
                 "restore backup", "restart networking (rollback)"):  # fmt: skip
        assert re.search(rf"^\s*{re.escape(step)}\s+ok\s", show, re.M), (step, show)
    assert "BrokenPipe" not in show, show
    # what the terminal would have shown went to the host's journal
    rc, journal = ssh(host, "sudo journalctl -t opsbook --no-pager -o cat")
    assert rc == 0, journal
    ours = [ln for ln in journal.splitlines() if re.search(rf"record #{row[0]}[):]", ln)]
    assert len(ours) == 2, journal
    assert re.search(r"\(record #\d+\): the terminal was lost at .*; the run goes on$", ours[0])
    assert ours[1].startswith("failed (no change): "), ours
    assert "rolled back: verification failed (gateway answers: " in ours[1], ours


def test_b2_a_session_logind_kills_is_reverted_by_the_watchdog_alone(
    lab: Lab, as_booted: daemonhost.Host
) -> None:
    host = as_booted
    before = file_digest(host)
    _logind(host, kill_user_processes=True)
    try:
        with campus_drops_pings(lab, host):
            directory = cut_once_armed(host)
            # logind ended the session and its processes (the run too); the watchdog runs on
            gone = ssh_until(
                host,
                f"pgrep -f 'opsbook run [f]orward-bridge' || true; "
                f"systemctl is-active {directory.removeprefix('/tmp/')}.service",
                lambda out: out.split() == ["active"],
                30,
                "the cut session's apply gone and the watchdog still active",
            )
            assert gone.split() == ["active"]
    finally:
        _logind(host, kill_user_processes=False)

    # nobody confirms: the watchdog restores the file and restarts networking by itself
    ssh_until(
        host,
        f"sudo cat {directory}/decided",
        lambda out: out.strip() == "reverted",
        2 * CUT_DEADLINE + 30 + 90,
        "the watchdog reverting",
    )
    _rc, log = ssh(host, f"sudo cat {directory}/log")
    assert "no confirmation by the deadline: reverting" in log, log
    assert f"restored {INTERFACES} from " in log and "rollback exit 0" in log, log
    seen = on_eth0(host)
    assert f"default via {lab.campus_gateway} dev eth0" in seen, seen
    assert file_digest(host) == before
    # the killed run is still filed, as killed; what its apply did is unknown to it
    row = last_record(host, 60)
    assert row[5:7] == ["killed", "-"], row


def test_c_campus_refusing_the_host_rolls_back(
    lab: Lab, as_booted: daemonhost.Host, booted_file: str
) -> None:
    host = as_booted
    before = file_digest(host)
    merged = host.root / INTERFACES.lstrip("/")  # the host's file as the lab sees it
    netreg.netreg_remove(lab, host.mac)
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
        netreg.netreg_add(lab, host.mac, host.address)
    out, _ = client.communicate(timeout=300)
    assert client.returncode == 1, out
    assert "forward-bridge: rolled back: verification failed" in out, out
    assert re.search(r"^\s+br0 has an address\s+fail\s+no IPv4 address", out, re.M), out
    assert re.search(r"^\s+previous state back\s+ok\s", out, re.M), out
    on_eth0(host)
    assert file_digest(host) == before
