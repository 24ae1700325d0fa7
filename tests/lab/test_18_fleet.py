"""Fleet runs on Ansible: one runbook on three booted daemon hosts, through `opsbook fleet`.

The hosts: the session's ``dh1`` (opsbook installed the lab's way) and ``fl2``, ``fl3``,
booted here without opsbook and taken down at the end of the module. The inventory is the
one the lab writes (``LAB/fleet/inventory.yml``); Ansible reaches the hosts with the lab's
ssh_config from the campus netns. Every run is the real `opsbook fleet` command, and every
assertion reads its table, the workstation's record store, or the hosts themselves.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from opslib.lab import control, daemonhost, hostinstall, hostssh, nspawn
from opslib.lab import fleet as labfleet
from opslib.lab.config import Lab

EXTRA = ("fl2", "fl3")
HOSTS = ("dh1", *EXTRA)
TOKEN = "cf-fleet-token-8f2c41d7e9a3b605"  # a Cloudflare token on the workstation
OPSBOOK = str(Path(sys.executable).parent / "opsbook")


def _progress(line: str) -> None:
    print(f"fleet: {line}", file=sys.stderr, flush=True)


@pytest.fixture(scope="module")
def inventory(lab: Lab, booted_host: daemonhost.Host) -> Iterator[Path]:
    for name in EXTRA:
        daemonhost.down(lab, name, progress=_progress)  # what an interrupted module left
    try:
        for name in EXTRA:  # two more hosts, without opsbook: install.yml puts it there
            daemonhost.up(lab, name, install=False, progress=_progress)
        hostinstall.build_wheelhouse(lab)
        yield labfleet.write_inventory(lab, list(HOSTS))
    finally:
        for name in EXTRA:
            daemonhost.down(lab, name, progress=_progress)
        labfleet.write_inventory(lab, [booted_host.name])


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


def on_host(lab: Lab, name: str, command: str) -> str:
    return hostssh.run(lab, name, command, timeout=120).stdout


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
    wanted = (hostinstall.wheelhouse(lab) / "wheelhouse.id").read_text().strip()
    for name in HOSTS:
        assert on_host(lab, name, f"cat {hostinstall.INSTALLED_ID}").strip() == wanted
    rc, out, err = fleet(records, "install", "-i", str(inventory))
    assert rc == 0 and re.search(r"^changed=0 on 3 host", out, re.M), out + err


def test_host_health_on_three_hosts_brings_every_record_home(
    lab: Lab, inventory: Path, records: Path, tmp_path: Path
) -> None:
    artefacts = tmp_path / "ansible-artefacts"
    rc, out, err = fleet(
        records,
        "run", "host-health", "-i", str(inventory), "--forks", "3",
        "--keep-artifacts", str(artefacts),
        env={"CLOUDFLARE_API_TOKEN": TOKEN},
    )  # fmt: skip
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
    assert any(p.parent.name == "job_events" for p in seen)
    assert not [p for p in seen if TOKEN.encode() in p.read_bytes()]
    assert TOKEN not in out + err
    for name in HOSTS:
        found = on_host(
            lab, name, f"sudo grep -rl {TOKEN} /etc /home /var/lib/opsbook /tmp || true"
        )
        assert found.strip() == "", (name, found)


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
    fl2, fl3 = (next(h for h in daemonhost.hosts(lab) if h.name == n) for n in EXTRA)
    booted = {h.name: (h.root / "etc/network/interfaces").read_text() for h in (fl2, fl3)}
    merged = fl2.root / "etc/network/interfaces"  # fl2's file as the lab sees it
    argv = [OPSBOOK, "fleet", "run", "forward-bridge", "-i", str(inventory),
            "--limit", "fl2:fl3", "--serial", "1", "--max-fail-percentage", "0",
            "-p", "apply", "true", "-p", "deadline", "15"]  # fmt: skip
    control.netreg_remove(lab, fl2.mac)
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
        control.netreg_add(lab, fl2.mac, fl2.address)
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
