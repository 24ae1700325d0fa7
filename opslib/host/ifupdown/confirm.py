"""Confirm or revert, surviving the operator: a detached watchdog (like ``commit confirmed``).

Before a change that can cut the operator off (restarting networking over SSH),
``arm`` starts a watchdog in its own session, so that a dropped SSH connection, a
killed kernel or a crashed runner does not take it along. If nobody calls
``confirm`` (the change verified) or ``disarm`` (the caller reverted by itself)
before the deadline, the watchdog restores the backed-up files and runs the
rollback command. Its state is one JSON file, its log one line per event.

On a host whose PID 1 is systemd the watchdog runs as a transient service of its own
(``systemd-run``): a new session alone does not take it out of the SSH session's
cgroup, and logind (``KillUserProcesses=yes``) or a stopped session scope kills every
process in that cgroup when the connection drops, the watchdog included.

:func:`action` makes it one step of any runbook's apply (opslib.contract.transaction): armed by
``do``, disarmed when the apply undoes by itself (first of all undos), confirmed when
the apply keeps its changes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from opslib.core import files
from opslib.core.actions import Action, Detail
from opslib.core.errors import ApplyError
from opslib.host.ifupdown import file_io
from opslib.host.kernel import netlink

DECIDED = "decided"  # written by confirm/disarm: the watchdog exits without acting
POLL = 0.2


@dataclass(frozen=True)
class Watchdog:
    directory: Path
    pid: int
    unit: str = ""  # its transient systemd service, when systemd is PID 1

    @property
    def log(self) -> Path:
        return self.directory / "log"

    def _decide(self, how: str) -> None:
        (self.directory / DECIDED).write_text(how + "\n")
        deadline = time.monotonic() + 5
        while _alive(self.pid) and time.monotonic() < deadline:
            time.sleep(POLL)

    def confirm(self) -> None:
        """The change verified: keep it."""
        self._decide("confirmed")

    def disarm(self) -> None:
        """The caller reverted by itself: nothing for the watchdog to do."""
        self._decide("disarmed")

    @property
    def decided(self) -> bool:
        return (self.directory / DECIDED).exists()

    def log_text(self) -> str:
        """What the watchdog wrote (why it reverted), "" when it did not."""
        return self.log.read_text() if self.log.exists() else ""


def _alive(pid: int) -> bool:
    try:
        done, _status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child (or reaped): ask the kernel
        return Path(f"/proc/{pid}").exists()
    return done == 0


def arm(
    *,
    backups: dict[str, str],
    rollback: list[str],
    seconds: float,
    made: Made | None = None,
    workdir: str | None = None,
) -> Watchdog:
    """Start the watchdog: after ``seconds`` without a decision, restore and roll back.

    ``backups`` maps each changed file to its backup copy; ``rollback`` is the
    command that restarts networking with the restored files; ``made`` the links the
    change creates, deleted if the rollback leaves them.
    """
    directory = Path(tempfile.mkdtemp(prefix="opsbook-confirm-", dir=workdir))
    made = made or Made()
    state = {
        "backups": backups,
        "rollback": rollback,
        "made": {"netns": made.netns, "links": list(made.links)},
        "deadline": time.time() + seconds,
    }
    (directory / "state.json").write_text(json.dumps(state))
    argv = [sys.executable, "-m", "opslib.host.ifupdown.confirm", str(directory)]
    unit = systemd_unit(directory) if _systemd_booted() else None
    proc: subprocess.Popen[bytes] | None = None
    if unit is None:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # not in the operator's session: a hangup does not reach it
            close_fds=True,
        )
    else:
        _start_unit(unit, argv)
    ready = directory / "armed"
    until = time.monotonic() + 10
    while not ready.exists():
        if (proc is not None and proc.poll() is not None) or time.monotonic() > until:
            raise ApplyError("the confirm-or-revert watchdog did not start; nothing was changed")
        time.sleep(0.05)
    pid = proc.pid if proc is not None else int(ready.read_text() or 0)
    return Watchdog(directory, pid, unit or "")


def _systemd_booted() -> bool:
    # sd_booted(3); systemd-run needs root to start a system unit (apply runs as root)
    return (
        Path("/run/systemd/system").is_dir()
        and os.geteuid() == 0
        and shutil.which("systemd-run") is not None
    )


def systemd_unit(directory: Path) -> str:
    """The watchdog's transient unit: named for its directory, so two applies never clash."""
    return f"{directory.name}.service"


def _start_unit(unit: str, argv: list[str]) -> None:
    # The unit gets a clean environment: opslib must import from where it is now.
    here = str(Path(__file__).resolve().parents[3])
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    launch = [
        "systemd-run", "--quiet", "--collect", f"--unit={unit}",
        "--description=opsbook confirm-or-revert watchdog", f"--setenv=PYTHONPATH={path}",
        # a DHCP client the rollback command starts itself outlives the watchdog
        "--property=KillMode=process",
        "--", *argv,
    ]  # fmt: skip
    try:
        done = subprocess.run(launch, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ApplyError(
            f"the confirm-or-revert watchdog did not start ({exc}); nothing was changed"
        ) from exc
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip()[-200:]
        raise ApplyError(
            f"the confirm-or-revert watchdog did not start (systemd-run: {why}); "
            "nothing was changed"
        )


@dataclass(frozen=True)
class Made:
    """Links a change creates that the files it restores do not declare (a new bridge).
    Such a link can outlive the rollback's ifdown (seen once in the lab: an empty br0
    left up after the watchdog reverted a run killed with its session), and nothing
    that reads the restored files would ever remove it; the rollback deletes it."""

    netns: str = ""
    links: tuple[str, ...] = ()


def delete_leftovers(made: Made) -> list[str]:
    """Delete the links of ``made`` that still exist; one line per link deleted."""
    lines = []
    for name in made.links:
        try:
            if netlink.delete_link(made.netns, name):
                lines.append(f"{name} was left after the rollback: deleted")
        except Exception as exc:  # best effort, said in the log: the rollback itself is done
            lines.append(f"{name} may be left after the rollback: {exc}")
    return lines


@dataclass
class Armed:
    """The watchdog an :func:`action` armed (None until its step ran)."""

    watchdog: Watchdog | None = None


def action(
    *,
    backups: Callable[[], dict[str, str]],
    rollback: Callable[[], list[str]],
    seconds: float,
    made: Made | None = None,
    armed: Armed | None = None,
    name: str = "arm the revert watchdog",
) -> Action:
    """Confirm-or-revert as a step: put it before the steps that can cut the operator off.

    ``backups`` and ``rollback`` are called when the step runs (the backups exist by
    then); ``armed`` lets the caller see the watchdog (e.g. to keep its files).
    """
    holder = armed or Armed()

    def do(detail: Detail) -> None:
        # Survives this process: if the operator's session (and with it the kernel)
        # dies mid-change, the watchdog still restores and rolls back.
        holder.watchdog = arm(backups=backups(), rollback=rollback(), seconds=seconds, made=made)
        where = f" ({holder.watchdog.unit})" if holder.watchdog.unit else ""
        detail.append(f"pid {holder.watchdog.pid}{where}, reverts after {seconds:.0f}s")

    def disarm(detail: Detail) -> None:
        if holder.watchdog is not None:
            holder.watchdog.disarm()  # this process reverts by itself, now
            detail.append("the apply reverts by itself")

    def keep() -> None:
        if holder.watchdog is not None:
            holder.watchdog.confirm()

    return Action(
        name, do, disarm, undo_name="disarm the revert watchdog", undo_order=-1, keep=keep
    )


def watch(directory: Path) -> int:
    """The watchdog itself (``python -m opslib.host.ifupdown.confirm DIR``)."""
    state = json.loads((directory / "state.json").read_text())
    log = directory / "log"
    # atomically: arm() reads the pid the moment the file appears
    files.atomic_write(directory / "armed", str(os.getpid()))
    while time.time() < state["deadline"]:
        if (directory / DECIDED).exists():
            return 0
        time.sleep(POLL)
    if (directory / DECIDED).exists():
        return 0
    with log.open("a") as out:
        out.write(f"{time.strftime('%H:%M:%S')} no confirmation by the deadline: reverting\n")
        for path, copy in state["backups"].items():
            file_io.restore(path, copy)
            out.write(f"restored {path} from {copy}\n")
        out.flush()
        done = subprocess.run(state["rollback"], capture_output=True, text=True, check=False)
        out.write(f"rollback exit {done.returncode}: {(done.stdout + done.stderr)[-300:]}\n")
        made = state.get("made") or {}
        for line in delete_leftovers(Made(made.get("netns", ""), tuple(made.get("links", ())))):
            out.write(line + "\n")
    (directory / DECIDED).write_text("reverted\n")
    return 0


if __name__ == "__main__":
    sys.exit(watch(Path(sys.argv[1])))
