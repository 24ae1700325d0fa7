"""Fleet runs on Ansible: one runbook on three booted daemon hosts, through `opsbook fleet`.

The hosts: the session's ``dh1`` (opsbook installed the lab's way) and ``fl2``, ``fl3``,
booted here without opsbook and taken down at the end of the module; ``fl2`` runs one guest
(``vm-nat1``, booted in the background while the first tests run). The inventory is the
one the lab writes (``LAB/fleet/inventory.yml``); Ansible reaches the hosts with the lab's
ssh_config from the campus netns. Every run is the real `opsbook fleet` command, and every
assertion reads its table, the workstation's record store, or the hosts themselves.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from opslib import __version__
from opslib.lab.booted import daemonhost, guests, install, nspawn, ssh
from opslib.lab.booted import fleet as labfleet
from opslib.lab.campus import netreg
from opslib.lab.config import Lab

# three booted hosts of its own: a lab session of its own beside the booted host's (test.sh)
pytestmark = pytest.mark.lab_session("fleet")

EXTRA = ("fl2", "fl3")
HOSTS = ("dh1", *EXTRA)
TOKEN = "cf-fleet-token-8f2c41d7e9a3b605"  # a Cloudflare token on the workstation
OPSBOOK = str(Path(sys.executable).parent / "opsbook")
GUEST = "vm-nat1"  # fl2's guest
BOOTING: list[threading.Thread] = []  # the guest's boot
BOOT_FAILED: list[BaseException] = []


def _progress(line: str) -> None:
    print(f"fleet: {line}", file=sys.stderr, flush=True)


@pytest.fixture(scope="module")
def inventory(lab: Lab, booted_host: daemonhost.Host) -> Iterator[Path]:
    for name in EXTRA:
        daemonhost.down(lab, name, progress=_progress)  # what an interrupted module left
    try:
        for name in EXTRA:  # two more hosts, without opsbook: install.yml puts it there
            daemonhost.up(lab, name, install=False, progress=_progress)
        install.build_wheelhouse(lab)
        yield labfleet.write_inventory(lab, list(HOSTS))
    finally:
        while BOOTING:
            BOOTING.pop().join()
        for name in EXTRA:
            daemonhost.down(lab, name, progress=_progress)
        labfleet.write_inventory(lab, [booted_host.name])


def _host(lab: Lab, name: str) -> daemonhost.Host:
    return next(h for h in daemonhost.hosts(lab) if h.name == name)


def _boot_guest(lab: Lab) -> None:
    try:
        guests.up(_host(lab, "fl2"), names=[GUEST], progress=_progress)
    except BaseException as exc:  # handed to the tests that need the guest
        BOOT_FAILED.append(exc)


def start_guest(lab: Lab) -> None:
    """fl2's guest boots in the background, while other tests run (little wall time)."""
    if not BOOTING:
        BOOTING.append(threading.Thread(target=_boot_guest, args=(lab,)))
        BOOTING[-1].start()


@pytest.fixture
def guest(lab: Lab, inventory: Path) -> Iterator[str]:
    """fl2's guest, booted and holding its NAT lease; destroyed afterwards: on a bare host
    (a NAT network without IPv6) host-health fails a guest for its missing global IPv6,
    and the later tests run host-health."""
    start_guest(lab)
    for thread in BOOTING:
        thread.join()
    if BOOT_FAILED:
        pytest.fail(f"fl2's guest did not boot: {BOOT_FAILED[0]}")
    try:
        yield GUEST
    finally:
        on_host(lab, "fl2", f"sudo virsh -q -c qemu:///system destroy {GUEST}")


class ProcessTable(threading.Thread):
    """Every command line on this machine (the hosts are containers: their processes are
    in its process table too), and the environment of Ansible's and ssh's, every 0.2 s
    until stopped: what ``ps -eo args`` and ``ps e`` would show during a run."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.args: set[str] = set()
        self.environments: set[bytes] = set()
        self.done = threading.Event()

    def sample(self) -> None:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                self.args.add(b" ".join(argv).decode(errors="replace").strip())
                programs = {Path(a.decode(errors="replace")).name for a in argv[:2]}
                if "ssh" in programs or any(p.startswith("ansible") for p in programs):
                    self.environments.add(Path(f"/proc/{pid}/environ").read_bytes())
            except OSError:  # gone meanwhile
                continue

    def run(self) -> None:
        while not self.done.wait(0.2):
            self.sample()
        self.sample()


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fleet-records")


def fleet(records: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = subprocess.run(
        [OPSBOOK, "fleet", *args],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OPSBOOK_RECORDS": str(records), **(env or {})},
        check=False,
    )
    print(proc.stdout, proc.stderr, sep="\n", file=sys.stderr)
    return proc.returncode, proc.stdout, proc.stderr


def rows(stdout: str) -> dict[str, list[str]]:
    """The final table: host -> [status, summary, record]."""
    out = {}
    for line in stdout.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells and cells[0] in HOSTS and len(cells) >= 3:
            out[cells[0]] = cells[1:]
    return out


def run_id(stdout: str) -> str:
    found = re.search(r"^fleet run (\S+): \d+ of \d+ host", stdout, re.M)
    assert found, stdout
    return found.group(1)


def summaries(records: Path, stdout: str) -> dict[str, str]:
    """Each host's whole summary (the table cuts long ones), from the run's manifest."""
    body = json.loads((records / ".fleet" / f"{run_id(stdout)}.json").read_text())
    return {host: str(row["summary"]) for host, row in body["hosts"].items()}


def on_host(lab: Lab, name: str, command: str) -> str:
    return ssh.run(lab, name, command, timeout=120).stdout


def test_bad_input_is_one_line_before_any_host(inventory: Path, records: Path) -> None:
    rc, _out, err = fleet(records, "run", "host-health", "-i", str(inventory), "-p", "nosuch", "1")
    assert rc == 2 and err.count("\n") == 1 and "nosuch" in err, err
    rc, _out, err = fleet(records, "run", "host-health", "-i", str(inventory), "--limit", "zz9")
    assert rc == 2 and "no host matches --limit 'zz9'" in err, err
    assert not (records / ".fleet").exists()  # no fleet run began


def test_a_host_without_opsbook_names_the_install_playbook(inventory: Path, records: Path) -> None:
    rc, out, err = fleet(records, "run", "network-inventory", "-i", str(inventory))
    assert rc == 1, out + err
    table = rows(out)
    assert table["dh1"][0] == "ok", table
    for name in EXTRA:
        status, summary = table[name][:2]
        assert status == "failed", table
        assert "opsbook is not installed" in summary and "ansible/install.yml" in summary


def test_install_playbook_installs_and_a_second_run_changes_nothing(
    lab: Lab, inventory: Path, records: Path
) -> None:
    rc, out, err = fleet(records, "install", "-i", str(inventory))
    assert rc == 0, out + err
    table = rows(out)
    assert all(table[name][0] == "changed" for name in EXTRA), table
    wanted = (install.wheelhouse(lab) / "wheelhouse.id").read_text().strip()
    for name in HOSTS:
        assert on_host(lab, name, f"cat {install.INSTALLED_ID}").strip() == wanted
        said = on_host(lab, name, "opsbook --version").strip()
        assert said == f"opsbook {__version__} (wheelhouse {wanted})", (name, said)
    rc, out, err = fleet(records, "install", "-i", str(inventory))
    assert rc == 0 and re.search(r"^changed=0 on 3 host", out, re.M), out + err


def test_host_health_on_three_hosts_brings_every_record_home(
    lab: Lab, inventory: Path, records: Path, tmp_path: Path
) -> None:
    artefacts = tmp_path / "ansible-artefacts"
    table_of_processes = ProcessTable()
    table_of_processes.start()
    try:
        rc, out, err = fleet(
            records,
            "run", "host-health", "-i", str(inventory), "--forks", "3",
            "--keep-artifacts", str(artefacts),
            env={"CLOUDFLARE_API_TOKEN": TOKEN},
        )  # fmt: skip
    finally:
        table_of_processes.done.set()
        table_of_processes.join()
        start_guest(lab)  # for find-vm-ip, below
    assert rc == 0, out + err
    table = rows(out)
    assert sorted(table) == sorted(HOSTS) and {r[0] for r in table.values()} == {"ok"}, table
    for name in HOSTS:
        assert re.fullmatch(
            rf"#\d+ {name}/\d{{4}}/\d\d/\d\d/\S+-host-health\.ipynb", table[name][2]
        )
        assert f"{name}: running" in err  # progress per host while it ran
    ident = run_id(out)
    proc = subprocess.run(
        [OPSBOOK, "records", "--fleet-run", ident, "--records", str(records)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    listed = [ln.split() for ln in proc.stdout.splitlines()[2:] if ln.strip()]
    assert sorted(r[4] for r in listed) == sorted(HOSTS), proc.stdout  # id, date, time, rb, host
    for name in HOSTS:
        [record] = (records / name).rglob("*-host-health.ipynb")
        header = json.loads(record.read_text())["metadata"]["opsbook"]
        assert (header["host"], header["fleet_run"]) == (name, ident)
    # the hosts keep their own copy
    assert "host-health" in on_host(lab, "fl2", "sudo ls -R /var/lib/opsbook/records")
    # the token of the workstation's environment is nowhere: artefacts (argv, environment,
    # event stream), output, records, the hosts
    assert (artefacts / "artifacts").is_dir()
    seen = [p for p in [*artefacts.rglob("*"), *records.rglob("*")] if p.is_file()]
    assert (artefacts / "artifacts" / "events.jsonl").read_text().count("runner_on_ok") >= 3
    assert not [p for p in seen if TOKEN.encode() in p.read_bytes()]
    assert TOKEN not in out + err
    for name in HOSTS:
        found = on_host(
            lab, name, f"sudo grep -rl {TOKEN} /etc /home /var/lib/opsbook /tmp || true"
        )
        assert found.strip() == "", (name, found)
    # nor in the process table while it ran: no command line of the workstation or the
    # hosts, no environment of Ansible or its ssh (the sampler saw both ends of the run)
    lines = table_of_processes.args
    assert any("opslib.fleet.ansible_playbook" in a for a in lines), sorted(lines)[:50]
    assert any("opsbook run host-health --summary" in a for a in lines)
    assert table_of_processes.environments
    assert not [a for a in lines if TOKEN in a]
    assert not [e for e in table_of_processes.environments if TOKEN.encode() in e]


def test_check_shows_each_hosts_plan_and_changes_nothing(
    lab: Lab, inventory: Path, records: Path
) -> None:
    before = {n: on_host(lab, n, "sha256sum /etc/network/interfaces") for n in EXTRA}
    rc, out, err = fleet(
        records, "run", "forward-bridge", "-i", str(inventory), "--check", "-p", "apply", "true"
    )
    assert rc == 0, out + err
    for name in HOSTS:
        assert f"== {name} ==" in out
    for name in EXTRA:  # a bare host: the plan bridges eth0 into br0
        section = out.split(f"== {name} ==", 1)[1].split("==", 1)[0]
        assert "br0" in section and "eth0" in section, section
        assert on_host(lab, name, "sha256sum /etc/network/interfaces") == before[name]
    assert {r[0] for r in rows(out).values()} == {"ok"}


def test_a_fleet_plan_applies_each_hosts_own_plan_and_refuses_the_stale_host(
    lab: Lab, inventory: Path, records: Path
) -> None:
    """Each host files its own plan (libvirt-access: an account into the libvirt group);
    fl3's group is changed by hand after the review; the fleet apply applies dh1's and
    fl2's plans, refuses fl3's as stale (its row says what moved), and exits 1."""
    user = "fleetplan"
    for name in HOSTS:
        on_host(lab, name, f"id {user} >/dev/null 2>&1 || sudo useradd -m -s /bin/bash {user}")
    try:
        rc, out, err = fleet(
            records, "plan", "libvirt-access", "-i", str(inventory), "-p", "account", user
        )
        assert rc == 0, out + err
        ident = re.search(r"^fleet plan (\S+): 3 of 3 host\(s\) planned", out, re.M)
        assert ident, out
        plans = json.loads((records / ".fleet" / f"{ident.group(1)}.json").read_text())["plans"]
        assert sorted(plans) == sorted(HOSTS), plans
        for name in HOSTS:  # nothing applied yet; each host keeps its plan record
            assert "libvirt" not in on_host(lab, name, f"id -nG {user}").split()
            listed = on_host(
                lab, name, "sudo opsbook records --records /var/lib/opsbook/records --plans"
            )
            assert re.search(rf"^\s*{plans[name]['plan']}\s.*pending", listed, re.M), listed
        on_host(lab, "fl3", f"sudo usermod -aG libvirt {user}")  # the host moved
        rc, out, err = fleet(records, "apply", ident.group(1), "-i", str(inventory))
        assert rc == 1, out + err
        table = rows(out)  # host -> [plan, status, summary, record]
        assert table["dh1"][1] == table["fl2"][1] == "changed", table
        assert table["fl3"][:2] == [f"plan #{plans['fl3']['plan']}", "failed"], table
        applied = re.search(r"^fleet apply (\S+): 2 of 3 host\(s\) applied", out, re.M)
        assert applied, out
        body = json.loads((records / ".fleet" / f"{applied.group(1)}.json").read_text())
        said = body["hosts"]["fl3"]["summary"]
        assert said.startswith("stale: libvirt-access's "), said
        assert f"changed since plan #{plans['fl3']['plan']}" in said, said
        assert "libvirt" in on_host(lab, "fl3", f"id -nG {user}").split()  # by hand only
        for name in ("dh1", "fl2"):
            assert "libvirt" in on_host(lab, name, f"id -nG {user}").split()
    finally:
        for name in HOSTS:
            on_host(lab, name, f"sudo userdel -r {user} 2>/dev/null || true")


def test_a_broken_or_older_opsbook_is_one_line_and_install_repairs_it(
    lab: Lab, inventory: Path, records: Path
) -> None:
    """fl2 with its /usr/local/bin/opsbook removed (a broken install: the venv and the
    wheelhouse id are still there), fl3 as a host installed by an older release would be
    (an older version and another wheelhouse's id). Each row names the install playbook;
    that playbook repairs both (it decides from `opsbook --version`, as a run calls it),
    and the next fleet run (find-vm-ip, below, on every host) runs on both."""
    init = on_host(lab, "fl3", "/opt/opsbook/bin/python -c 'import opslib; print(opslib.__file__)'")
    on_host(
        lab,
        "fl3",
        f"sudo sed -i 's/^__version__ = .*/__version__ = \"0.0.1\"/' {init.strip()}"
        f" && echo an-older-wheelhouse | sudo tee {install.INSTALLED_ID}",
    )
    assert on_host(lab, "fl3", "opsbook --version").strip() == (
        "opsbook 0.0.1 (wheelhouse an-older-wheelhouse)"
    )
    on_host(lab, "fl2", "sudo rm /usr/local/bin/opsbook")
    rc, out, err = fleet(
        records, "run", "network-inventory", "-i", str(inventory), "--limit", "fl2:fl3"
    )
    assert rc == 1, out + err
    table = rows(out)
    assert table["fl2"][0] == table["fl3"][0] == "failed", table
    said = summaries(records, out)
    assert said["fl2"] == (
        "opsbook is not installed on fl2; install it with ansible/install.yml: "
        "opsbook fleet install -i INVENTORY --limit fl2"
    )
    assert said["fl3"] == (
        f"opsbook 0.0.1 is older than {__version__} on fl3; install it with "
        "ansible/install.yml: opsbook fleet install -i INVENTORY --limit fl3"
    )
    rc, out, err = fleet(records, "install", "-i", str(inventory), "--limit", "fl2:fl3")
    assert rc == 0, out + err
    assert rows(out)["fl2"][0] == rows(out)["fl3"][0] == "changed", out + err
    wanted = (install.wheelhouse(lab) / "wheelhouse.id").read_text().strip()
    for name in EXTRA:  # what run.yml's first task asks
        said_now = on_host(lab, name, "/usr/local/bin/opsbook --version").strip()
        assert said_now == f"opsbook {__version__} (wheelhouse {wanted})", (name, said_now)


def test_find_vm_ip_across_the_fleet_names_the_host_that_runs_the_vm(
    lab: Lab, inventory: Path, records: Path, guest: str
) -> None:
    """Asked of every host, a VM that is not there is an answer (ok, not on this host),
    not bad input; the line after the table names the host that runs it and its
    addresses, and that host's record, home, has the address table. The first fleet run
    after the install above repaired fl2 and fl3: every row ok is that repair working."""
    runs = {
        n: guest in on_host(lab, n, "sudo virsh -q -c qemu:///system list --name").split()
        for n in HOSTS
    }
    assert runs["fl2"] and not runs["fl3"], runs
    rc, out, err = fleet(records, "run", "find-vm-ip", "-i", str(inventory), "-p", "vm", guest)
    assert rc == 0, out + err
    table = rows(out)
    for name in HOSTS:
        status, summary = table[name][:2]
        assert status == "ok", table
        if runs[name]:
            assert summary.startswith("1 VM(s), 1 interface(s), 1 with an address"), table
        else:
            assert summary.startswith("not on this host (no VM named"), table
    found = re.search(rf"^VM {guest} runs on (.+)$", out, re.M)
    assert found, out
    where = dict(part.split(": ", 1) for part in found.group(1).split("; "))
    assert sorted(where) == sorted(n for n in HOSTS if runs[n]), where
    said = guests.report(_host(lab, "fl2"), guest)  # the guest's own console
    assert said is not None
    ipv4 = {a.split("/")[0] for _i, a in said.addresses if "." in a}
    assert ipv4 and any(f"{a} (ipv4)" in where["fl2"] for a in ipv4), (where, ipv4)
    [record] = [p for p in (records / "fl2").rglob("*-find-vm-ip.ipynb")]
    nb = json.loads(record.read_text())
    tables = [
        o["data"]["application/vnd.opsbook.result+json"]
        for c in nb["cells"]
        for o in c.get("outputs", [])
        if "application/vnd.opsbook.result+json" in o.get("data", {})
    ]
    addresses = tables[-1]["tables"]["addresses"]
    assert ipv4 & {r["ip"] for r in addresses if r["vm"] == guest}, addresses


HOLD_LOCK = """\
import os, sys
from pathlib import Path
from opslib.core import params
from opslib.core.locks import host_lock
with host_lock(Path("/var/lib/opsbook/records"), params.this_host(), "libvirt-access", wait=60):
    print(f"holding, pid {os.getpid()}", flush=True)
    sys.stdin.read()
"""

APPLIES = """\
import glob, json
# two runs filed in one second: HHMMSSZ-libvirt-access.ipynb and …-libvirt-access-2.ipynb
found = glob.glob("/var/lib/opsbook/records/**/*-libvirt-access*.ipynb", recursive=True)
for path in sorted(found):
    header = json.load(open(path))["metadata"]["opsbook"]
    # this test's runs only (the fleet-plan test files libvirt-access for account fleetplan)
    if (header.get("parameters") or {}).get("account") == "fleetlock":
        print(header.get("status"), bool(header.get("changed")))
"""


def test_two_fleet_runs_on_one_host_apply_once_and_the_second_names_the_holder(
    lab: Lab, inventory: Path, records: Path
) -> None:
    """fl3's apply lock is held (by a run the test controls, over ssh). Fleet run A
    (fl2:fl3, waits for the lock) and fleet run B (fl3, --lock-wait 0) of libvirt-access
    run at once: B's row for fl3 names the holder; once the holder lets go, A applies on
    fl3. fl3's records show one apply."""
    for name in EXTRA:
        on_host(lab, name, "id fleetlock >/dev/null 2>&1 || sudo useradd -m -s /bin/bash fleetlock")
    python = "/opt/opsbook/bin/python"
    holder = subprocess.Popen(
        ssh.ssh_argv(lab, "fl3", f"sudo {python} -c {shlex.quote(HOLD_LOCK)}"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    env = {**os.environ, "OPSBOOK_RECORDS": str(records)}
    common = ["libvirt-access", "-i", str(inventory), "-p", "account", "fleetlock",
              "-p", "apply", "true"]  # fmt: skip
    try:
        assert holder.stdout is not None
        held = holder.stdout.readline()
        found = re.match(r"holding, pid (\d+)$", held.strip())
        assert found, held
        first = subprocess.Popen(
            [OPSBOOK, "fleet", "run", *common, "--limit", "fl2:fl3", "--lock-wait", "600"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        rc, out, err = fleet(records, "run", *common, "--limit", "fl3", "--lock-wait", "0")
        assert first.poll() is None  # A still waits for fl3's lock
    finally:
        holder.communicate(input="", timeout=60)  # the holder lets go
    assert rc == 1, out + err
    status, summary = rows(out)["fl3"][0], summaries(records, out)["fl3"]
    assert status == "failed" and summary.startswith("locked: "), summary
    assert f"apply lock held by pid {found.group(1)} (libvirt-access, user root" in summary
    out, err = first.communicate(timeout=600)
    print(out, err, sep="\n", file=sys.stderr)
    assert first.returncode == 0, out + err
    assert {r[0] for r in rows(out).values()} == {"changed"}, rows(out)
    applies = on_host(lab, "fl3", f"sudo {python} -c {shlex.quote(APPLIES)}").split("\n")
    assert sorted(a for a in applies if a) == ["locked False", "ok True"], applies
    assert "libvirt" in on_host(lab, "fl3", "id -nG fleetlock").split()


def test_an_unreachable_host_is_reported_and_retried_alone(
    lab: Lab, inventory: Path, records: Path
) -> None:
    port = daemonhost.Host(lab, "fl3", 0).campus_port
    subprocess.run(["ip", "-n", lab.campus_ns, "link", "set", port, "down"], check=True)
    try:
        rc, out, err = fleet(records, "run", "host-health", "-i", str(inventory))
    finally:
        subprocess.run(["ip", "-n", lab.campus_ns, "link", "set", port, "up"], check=True)
    assert rc == 1, out + err
    table = rows(out)
    assert table["fl3"][0] == "unreachable" and "--retry-failed" in table["fl3"][1], table
    assert table["dh1"][0] == table["fl2"][0] == "ok", table
    rc, out, err = fleet(records, "run", "host-health", "-i", str(inventory), "--retry-failed")
    assert rc == 0, out + err
    assert list(rows(out)) == ["fl3"] and rows(out)["fl3"][0] == "ok"


def test_a_canary_that_fails_verification_stops_the_rollout(
    lab: Lab, inventory: Path, records: Path
) -> None:
    """fl2 goes first and cannot get its address on br0 (campus refuses its MAC): it rolls
    back, and fl3 is never touched. NetReg answers again once fl2 has put its old file
    back, so that the rollback's DHCP on eth0 brings fl2 back (as in test_17)."""
    fl2, fl3 = (_host(lab, n) for n in EXTRA)
    booted = {h.name: (h.root / "etc/network/interfaces").read_text() for h in (fl2, fl3)}
    merged = fl2.root / "etc/network/interfaces"  # fl2's file as the lab sees it
    argv = [OPSBOOK, "fleet", "run", "forward-bridge", "-i", str(inventory),
            "--limit", "fl2:fl3", "--serial", "1", "--max-fail-percentage", "0",
            "-p", "apply", "true", "-p", "deadline", "15"]  # fmt: skip
    netreg.netreg_remove(lab, fl2.mac)
    try:
        client = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "OPSBOOK_RECORDS": str(records)},
        )
        written = nspawn.wait(lambda: merged.read_text() != booted["fl2"], 300, every=0.1)
        assert written, "the apply never wrote fl2's new file"
        restored = nspawn.wait(lambda: merged.read_text() == booted["fl2"], 120, every=0.1)
        assert restored, "the apply never restored fl2's file"
    finally:
        netreg.netreg_add(lab, fl2.mac, fl2.address)
    out, err = client.communicate(timeout=600)
    print(out, err, sep="\n", file=sys.stderr)
    assert client.returncode == 1, out + err
    table = rows(out)
    assert table["fl2"][0] == "failed" and "rolled back" in table["fl2"][1], table
    assert table["fl2"][2].startswith("#")  # its record came home too
    assert table["fl3"][0] == "skipped" and "stopped" in table["fl3"][1], table
    assert "fl3: running" not in err
    for host in (fl2, fl3):
        assert (host.root / "etc/network/interfaces").read_text() == booted[host.name]
