"""The confirm-or-revert watchdog reverts unless told otherwise, even when its caller dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import eventually, throwaway_netns

from opslib.core.errors import ApplyError
from opslib.host.ifupdown import confirm


def _changed_file(tmp_path: Path) -> tuple[Path, Path, Path]:
    conf, backup, mark = tmp_path / "interfaces", tmp_path / "interfaces.bak", tmp_path / "mark"
    backup.write_text("iface eth0 inet dhcp\n")
    conf.write_text("iface br0 inet dhcp\n")
    return conf, backup, mark


def _wait_decided(directory: Path, seconds: float = 15) -> str:
    decided = directory / confirm.DECIDED
    eventually(decided.exists, timeout=seconds, what=f"the watchdog's decision in {decided}")
    return decided.read_text().strip()


def _wait_gone(pid: int, seconds: float = 60) -> None:
    eventually(lambda: not confirm._alive(pid), timeout=seconds, what=f"watchdog {pid} to end")


def test_without_confirmation_it_restores_the_file_and_rolls_back(tmp_path: Path) -> None:
    conf, backup, mark = _changed_file(tmp_path)
    dog = confirm.arm(
        backups={str(conf): str(backup)},
        rollback=["sh", "-c", f"cat {conf} > {mark}"],
        seconds=0.5,
    )
    assert _wait_decided(dog.directory) == "reverted"
    assert conf.read_text() == "iface eth0 inet dhcp\n"
    # The rollback ran after the restore: it saw the old file.
    assert mark.read_text() == "iface eth0 inet dhcp\n"
    assert "no confirmation by the deadline" in dog.log_text()


def test_confirmed_change_is_kept(tmp_path: Path) -> None:
    conf, backup, mark = _changed_file(tmp_path)
    # A deadline far away: how long the watchdog takes to start on a busy machine must
    # not decide the outcome. confirm() waits for the watchdog to see it and exit.
    dog = confirm.arm(backups={str(conf): str(backup)}, rollback=["touch", str(mark)], seconds=600)
    dog.confirm()
    _wait_gone(dog.pid)
    assert conf.read_text() == "iface br0 inet dhcp\n" and not mark.exists()
    assert dog.decided and dog.log_text() == ""


def test_the_watchdog_reverts_after_its_caller_is_killed(tmp_path: Path) -> None:
    conf, backup, mark = _changed_file(tmp_path)
    arming = (
        "import sys, time\n"
        "from opslib.host.ifupdown import confirm\n"
        f"dog = confirm.arm(backups={{{str(conf)!r}: {str(backup)!r}}},"
        f" rollback=['touch', {str(mark)!r}], seconds=1.0)\n"
        "print(dog.directory, flush=True)\n"
        "time.sleep(60)\n"
    )
    caller = subprocess.Popen(
        [sys.executable, "-c", arming], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert caller.stdout is not None
    directory = Path(caller.stdout.readline().strip())
    os.kill(caller.pid, signal.SIGKILL)  # the operator's session is gone
    caller.wait()
    assert _wait_decided(directory) == "reverted"
    assert conf.read_text() == "iface eth0 inet dhcp\n" and mark.exists()


def test_the_revert_keeps_the_file_mode_and_crlf_bytes(tmp_path: Path) -> None:
    conf, backup, mark = _changed_file(tmp_path)
    backup.write_bytes(b"iface eth0 inet dhcp\r\n")
    conf.chmod(0o640)
    dog = confirm.arm(backups={str(conf): str(backup)}, rollback=["touch", str(mark)], seconds=0.3)
    assert _wait_decided(dog.directory) == "reverted"
    assert conf.read_bytes() == b"iface eth0 inet dhcp\r\n"
    assert conf.stat().st_mode & 0o777 == 0o640


# systemd-run as a stand-in: records its arguments, then starts the command detached as
# systemd would, with only its --setenv= environment (nothing of the caller's session)
FAKE_SYSTEMD_RUN = """#!/bin/sh
printf '%s\\n' "$@" > "$FAKE_ARGS"
[ -z "$FAKE_FAIL" ] || { echo "$FAKE_FAIL" >&2; exit 1; }
setsid=$(command -v setsid) env=""
while [ "$1" != "--" ]; do case "$1" in --setenv=*) env="$env ${1#--setenv=}" ;; esac; shift; done
shift
env -i $env "$setsid" "$@" </dev/null >/dev/null 2>&1 &
"""


def _fake_systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: str = "") -> Path:
    bin_dir, args = tmp_path / "bin", tmp_path / "systemd-run.args"
    bin_dir.mkdir()
    (bin_dir / "systemd-run").write_text(FAKE_SYSTEMD_RUN)
    (bin_dir / "systemd-run").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ARGS", str(args))
    monkeypatch.setenv("FAKE_FAIL", fail)
    monkeypatch.setattr(confirm, "_systemd_booted", lambda: True)
    return args


def test_under_systemd_the_watchdog_is_a_transient_unit_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of the SSH session's cgroup: logind's KillUserProcesses cannot take it along."""
    args = _fake_systemd(tmp_path, monkeypatch)
    conf, backup, mark = _changed_file(tmp_path)
    dog = confirm.arm(
        backups={str(conf): str(backup)},
        rollback=["sh", "-c", f"cat {conf} > {mark}"],
        seconds=1,
        workdir=str(tmp_path),
    )
    assert _wait_decided(dog.directory) == "reverted"
    assert mark.read_text() == "iface eth0 inet dhcp\n"
    argv = args.read_text().splitlines()
    assert dog.unit == f"{dog.directory.name}.service"
    assert f"--unit={dog.unit}" in argv and "--collect" in argv
    assert "--property=KillMode=process" in argv  # a DHCP client the rollback starts lives on
    assert argv[argv.index("--") + 1 :] == [
        sys.executable, "-m", "opslib.host.ifupdown.confirm", str(dog.directory)
    ]  # fmt: skip
    assert dog.pid == int((dog.directory / "armed").read_text())


def test_a_unit_systemd_refuses_is_one_line_before_any_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_systemd(tmp_path, monkeypatch, fail="Failed to start transient service unit: denied")
    conf, backup, _mark = _changed_file(tmp_path)
    with pytest.raises(ApplyError, match=r"did not start \(systemd-run: Failed to start"):
        confirm.arm(backups={str(conf): str(backup)}, rollback=["true"], seconds=1)
    assert conf.read_text() == "iface br0 inet dhcp\n"


def test_a_bridge_the_rollback_leaves_is_deleted_and_logged(tmp_path: Path) -> None:
    """A rollback whose ifdown leaves the new bridge behind (as once after a run killed
    with its session): the watchdog deletes it, and only the links the change made."""
    conf, backup, _mark = _changed_file(tmp_path)
    with throwaway_netns("cf", "link add br0 type bridge", "link add br9 type bridge") as ns:
        for name in ("br0", "br9"):  # br9 was there before the change: kept
            subprocess.run(["ip", "-n", ns, "link", "set", name, "up"], check=True)
        dog = confirm.arm(
            backups={str(conf): str(backup)},
            rollback=["true"],  # restarts nothing: br0 stays, as in the lab
            seconds=0.5,
            made=confirm.Made(ns, ("br0", "nosuch0")),
        )
        assert _wait_decided(dog.directory) == "reverted"
        links = subprocess.run(["ip", "-n", ns, "-o", "link", "show"], capture_output=True,
                               text=True, check=True)  # fmt: skip
    names = {line.split(": ")[1].split("@")[0] for line in links.stdout.splitlines()}
    assert "br0" not in names and "br9" in names, links.stdout
    log = dog.log_text()
    assert "br0 was left after the rollback: deleted" in log, log
    assert "nosuch0" not in log, log  # gone as it should be: nothing to say
