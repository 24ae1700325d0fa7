"""Restarting a host's networking with confirm-or-revert, as steps of an apply
(opslib.contract.transaction): back up the interfaces files, write the new ones, validate them
with ``ifup --no-act``, arm the revert watchdog, restart, verify within a deadline.
When the check fails, the undo disarms the watchdog, restores the backups and restarts
networking with them, and :func:`previous_state_back` waits for the kernel state found
before. Over SSH that restart is how an operator locks themselves out: the watchdog
reverts even if this process dies with the session.
"""

from __future__ import annotations

import os
import shlex
import shutil
import string
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opslib.core.actions import Action, Applied, Detail
from opslib.core.changes import Check, Result
from opslib.core.errors import ApplyError, InputError
from opslib.host.ifupdown import confirm, file_io, source_tree

# Seconds the revert watchdog waits beyond the restart and verification windows.
WATCHDOG_MARGIN = 30.0
DEFAULT_RESTART = (
    "ifdown --force -i {old} {ifaces}; ifdown --force {ifaces} 2>/dev/null; "
    "systemctl restart networking"
)
RESTART_FIELDS = frozenset({"old", "new", "ifaces"})


@dataclass(frozen=True)
class Restart:
    """How apply restarts networking: the command template, the deadline, the backups."""

    command: str = DEFAULT_RESTART
    deadline: float = 60.0
    backup_dir: str = ""


def restart_argv(template: str, netns: str, **fields: str) -> list[str]:
    """The restart command as argv: ``sh -c`` of the filled template, in ``netns`` if set."""
    names = {f for _t, f, _s, _c in string.Formatter().parse(template) if f is not None}
    unknown = names - RESTART_FIELDS
    if unknown or not template.strip():
        raise InputError(
            f"restart_command {template!r} is not usable; it needs a command and may only "
            f"use the placeholders {{old}} {{new}} {{ifaces}}"
        )
    # interface names are checked to be shell-safe words; paths are quoted when they must be
    quoted = {k: v if k == "ifaces" else shlex.quote(v) for k, v in fields.items()}
    command = template.format(**quoted)
    argv = ["sh", "-c", command]
    return ["ip", "netns", "exec", netns, *argv] if netns else argv


def _run(argv: Sequence[str], timeout: float) -> tuple[int, str]:
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=max(timeout, 1.0), check=False
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"") if isinstance(exc.stdout, bytes) else (exc.stdout or "").encode()
        return 124, f"timed out after {timeout:.0f}s: {out.decode(errors='replace')[-300:]}"
    except OSError as exc:
        return 127, f"cannot run {argv[0]}: {exc.strerror}"
    output = (done.stdout + done.stderr).strip()
    return done.returncode, output[-600:]


def poll(probe: Any, deadline: float) -> Any:
    """Call ``probe`` until it returns a passing value or the monotonic deadline passes."""
    while True:
        value, ok = probe()
        if ok or time.monotonic() >= deadline:
            return value
        time.sleep(0.5)


@dataclass
class Restarting:
    """One apply's restart: what its steps share (backups, flattened files, the watchdog,
    the checks, the kernel state found before)."""

    restart: Restart
    netns: str
    interfaces_file: str
    ifaces: str  # what ``{ifaces}`` stands for
    made: tuple[str, ...] = ()  # links the new files create (none of them existed before)
    backups: dict[str, str] = field(default_factory=dict)
    armed: confirm.Armed = field(default_factory=confirm.Armed)
    directory: str = ""
    started: float = 0.0
    restart_failed: str = ""  # the restart command's exit code and output, when it failed
    rollback_started: float = 0.0
    checks: list[Check] = field(default_factory=list)
    before: Any = None  # the kernel state found before (``state()``)
    # The steps whose failure this module explains (:func:`failed`), known by identity:
    # a step's label is for people and may change, or be shared.
    validating: Action | None = None
    verifying: Action | None = None

    def file(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def leftovers(self) -> confirm.Made:
        return confirm.Made(self.netns, self.made)

    def argv(self, old: str) -> list[str]:
        return restart_argv(self.restart.command, self.netns, old=old,
                            new=self.interfaces_file, ifaces=self.ifaces)  # fmt: skip

    def clean_up(self) -> None:
        # An armed watchdog that was never told still needs the files to revert with.
        watchdog = self.armed.watchdog
        if self.directory and (watchdog is None or watchdog.decided):
            shutil.rmtree(self.directory, ignore_errors=True)


def default_backup_dir(interfaces_file: str) -> str:
    """Beside the main file, hidden: no ``source`` glob (``*``) or ``source-directory``
    (names without dots) reads it, as one would a backup inside ``interfaces.d/``."""
    return os.path.join(os.path.dirname(os.path.abspath(interfaces_file)), ".opsbook-backups")


def steps(
    work: Restarting,
    result: Result,
    *,
    old_config: str,
    new_files: dict[str, str],
    iface: str,
    state: Callable[[], Any],
    verify: Callable[[], list[Check]],
) -> list[Action]:
    """The steps: ``old_config`` is the configuration being left as one file (ifdown must
    read it), ``iface`` what ``ifup --no-act`` validates, ``state`` the kernel state a
    rollback must bring back (with ``describe()``), ``verify`` the checks that must pass
    within the deadline."""
    return [
        *_file_steps(work, result, old_config=old_config, new_files=new_files, state=state),
        *_restart_steps(work, result, iface=iface, state=state, verify=verify),
    ]


def _file_steps(
    work: Restarting,
    result: Result,
    *,
    old_config: str,
    new_files: dict[str, str],
    state: Callable[[], Any],
) -> list[Action]:
    """Back up (with the kernel state before) and write the files; restored as undo."""

    def back_up(detail: Detail) -> None:
        work.before = state()
        result.data["kernel_before"] = work.before.describe()
        work.directory = tempfile.mkdtemp(prefix="opsbook-restart-")
        with open(work.file("interfaces.old"), "w", encoding="utf-8") as f:
            f.write(old_config)
        directory = work.restart.backup_dir or default_backup_dir(work.interfaces_file)
        for path in new_files:
            work.backups[path] = file_io.backup(path, directory)
            detail.append(f"{path} -> {work.backups[path]}")
        result.data["backups"] = work.backups

    def write(detail: Detail) -> None:
        for path, text in new_files.items():
            file_io.write_atomic(path, text)
            detail.append(path)
        with open(work.file("interfaces.new"), "w", encoding="utf-8") as f:
            f.write(source_tree.flatten(source_tree.load_tree(work.interfaces_file)))

    def restore(detail: Detail) -> None:
        for path, copy in work.backups.items():
            file_io.restore(path, copy)
            detail.append(f"{copy} -> {path}")

    return [
        Action("back up", back_up),
        Action("write", write, restore, undo_name="restore backup", partial=True),
    ]


def _restart_steps(
    work: Restarting,
    result: Result,
    *,
    iface: str,
    state: Callable[[], Any],
    verify: Callable[[], list[Check]],
) -> list[Action]:
    """Validate the new files (ifup --no-act), arm the watchdog, restart networking (and
    back when undone), verify within the deadline."""
    deadline = work.restart.deadline

    def validate(detail: Detail) -> None:
        states = work.file("state")
        os.mkdir(states)
        argv = ["ifup", "--no-act", "-i", work.interfaces_file, "--state-dir", states, iface]
        rc, out = _run(argv, 30)
        detail.append(f"rc {rc}")
        if rc != 0:
            detail.append(out)
            raise ApplyError(out)

    def restart(detail: Detail) -> None:
        work.started = time.monotonic()
        rc, out = _run(work.argv(old=work.file("interfaces.old")), deadline)
        detail.append(f"rc {rc}: {out}" if out else f"rc {rc}")
        work.restart_failed = f"exit code {rc}: {out[-200:]}" if rc != 0 else ""

    def restart_back(detail: Detail) -> None:
        work.rollback_started = time.monotonic()
        rc, out = _run(work.argv(old=work.file("interfaces.new")), deadline)
        detail.append(f"rc {rc}: {out}" if out else f"rc {rc}")
        detail.extend(confirm.delete_leftovers(work.leftovers()))

    def check_within_deadline(detail: Detail) -> None:
        # a failed restart is final (ifup gave up): look once instead of waiting it out
        until = time.monotonic() if work.restart_failed else work.started + deadline
        checks = poll(lambda: (c := verify(), all(x.ok for x in c)), until)
        detail.append(", ".join(f"{c.name}: {c.status}" for c in checks))
        if work.restart_failed:
            checks.insert(0, Check("restart command", "fail", work.restart_failed))
        work.checks = checks

    def verified() -> list[Check]:
        if all(c.ok for c in work.checks):
            result.data["kernel_after"] = state().describe()
        return work.checks

    watchdog = confirm.action(
        backups=lambda: work.backups,
        rollback=lambda: work.argv(old=work.file("interfaces.new")),
        seconds=2 * deadline + WATCHDOG_MARGIN,
        made=work.leftovers(),
        armed=work.armed,
    )
    work.validating = Action("validate (ifup --no-act)", validate)
    work.verifying = Action("verify", check_within_deadline, check=verified)
    return [
        work.validating,
        watchdog,
        # Undone last: networking restarts with the files the other undos put back.
        Action("restart networking", restart, restart_back,
               undo_name="restart networking (rollback)", undo_order=1),
        work.verifying,
    ]  # fmt: skip


def failed(work: Restarting, applied: Applied, result: Result, state: Callable[[], Any]) -> bool:
    """The result of a restart that failed (False: the failure was not the restart's)."""
    if applied.failed is None:
        return False
    if applied.failed is work.validating:
        result.status = "failed"  # nothing was applied: the rejected file is gone
        why = applied.error
        result.summary = f"ifup --no-act rejected the new file; the old one is back: {why}"
        return True
    if applied.failed is not work.verifying or not applied.undone:
        return False
    # After the undo: wait for the kernel to be as it was; say whether it is.
    failing = [c for c in work.checks if not c.ok]
    what = "; ".join(f"{c.name}: {c.seen}" for c in failing) or str(applied.error)
    before = work.before
    with result.step("verify previous state") as detail:
        after = poll(lambda: (s := state(), s == before),
                     work.rollback_started + work.restart.deadline)  # fmt: skip
        detail.append(after.describe())
    result.data["kernel_after"] = after.describe()
    back = after == before
    result.checks.append(
        Check(
            "previous state back",
            "ok" if back else "fail",
            after.describe(),
            "" if back else f"expected: {before.describe()}; fix by hand from the console",
        )
    )
    result.status = "rolled back" if back else "failed"
    result.summary = f"verification failed ({what}); " + (
        "restored the previous file and state" if back
        else "restored the file, but the previous state did not come back"
    )  # fmt: skip
    return True
