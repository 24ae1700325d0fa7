"""Ansible, driven through ansible-runner's Python API, and the inventory it runs on.

Where ansible-runner keeps what it saw: a private temp dir (mode 700) per run, deleted at
the end unless the caller asks to keep it. Ansible runs with an environment of names from
an allow-list (ansible-runner copies the environment into its ``command`` and status
artefacts): a token exported on the workstation never reaches Ansible, its artefacts or
its event stream. Secrets go to hosts as sources (``file:/path``), never as values.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opslib.core.errors import BackendError, HostError, InputError

__all__ = [
    "Inventory",
    "RunResult",
    "Started",
    "ansible_dir",
    "load_inventory",
    "playbook",
    "run",
    "start",
]

Event = dict[str, Any]
# what Ansible may see of the workstation's environment; nothing else (tokens stay out)
ENV_KEEP = ("HOME", "LANG", "LC_ALL", "LC_CTYPE", "LOGNAME", "SSH_AUTH_SOCK", "TERM", "USER")
SSH_ARGS = "-C -o ControlMaster=auto -o ControlPersist=30s"


def ansible_dir() -> Path:
    """$OPSBOOK_ANSIBLE, else the checkout's ansible/, else the one installed with the
    package (PREFIX/share/opsbook/ansible)."""
    env = os.environ.get("OPSBOOK_ANSIBLE")
    if env:
        return Path(env)
    for candidate in (
        Path(__file__).resolve().parents[2] / "ansible",
        Path(sys.prefix) / "share" / "opsbook" / "ansible",
    ):
        if candidate.is_dir():
            return candidate
    return Path("ansible")


def playbook(name: str) -> Path:
    path = ansible_dir() / name
    if not path.is_file():
        raise InputError(f"no playbook {path}; set $OPSBOOK_ANSIBLE to the ansible/ directory")
    return path


def _ansible_runner() -> Any:
    try:
        import ansible_runner
    except ImportError:
        raise HostError(
            "fleet runs need ansible-core and ansible-runner: pip install 'opslib[fleet]'"
        ) from None
    return ansible_runner


# -- the inventory ----------------------------------------------------------------------


@dataclass(frozen=True)
class Inventory:
    path: Path
    hosts: tuple[str, ...]  # the selected ones, in inventory order
    vars: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # host -> its vars


def check_inventory_file(path: Path) -> None:
    if not path.is_file():
        raise InputError(f"-i {path}: no such inventory file; opsbook lab up --hosts N writes one")


def load_inventory(path: Path, limit: str | None = None, pattern: str = "all") -> Inventory:
    """The hosts ``limit`` selects in ``path``, with their variables templated; InputError
    (before any host is touched) when the file is missing or nothing matches."""
    check_inventory_file(path)
    _ansible_runner()
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar
    from ansible.vars.manager import VariableManager

    loader = DataLoader()
    try:
        with _quiet_ansible():
            manager = InventoryManager(loader=loader, sources=[str(path.resolve())])
            known = [h.name for h in manager.get_hosts(pattern)]
            if limit:
                manager.subset(limit)
            hosts = manager.get_hosts(pattern)
    except Exception as exc:  # Ansible's own errors: a malformed inventory or pattern
        raise InputError(f"-i {path}: {str(exc).splitlines()[0]}") from None
    if not hosts:
        what = f"--limit {limit!r}" if limit else "it"
        raise InputError(
            f"-i {path}: no host matches {what}"
            + (f"; its hosts: {', '.join(known[:10])}" if known else "; add hosts to it")
        )
    variables = VariableManager(loader=loader, inventory=manager)
    host_vars: dict[str, dict[str, Any]] = {}
    for host in hosts:
        raw = variables.get_vars(host=host)
        templar = Templar(loader=loader, variables=raw)
        wanted = {k: raw[k] for k in ("opsbook_parameter_sets", "opsbook_records") if k in raw}
        host_vars[host.name] = {k: templar.template(v) for k, v in wanted.items()}
    return Inventory(path, tuple(h.name for h in hosts), host_vars)


@contextlib.contextmanager
def _quiet_ansible() -> Iterator[None]:
    """Ansible's in-process warnings (an unparsed source, a pattern matching nothing) are
    not shown: they become the one line of the error raised."""
    constants: Any = importlib.import_module("ansible.constants")
    old = constants.INVENTORY_UNPARSED_IS_FAILED
    constants.INVENTORY_UNPARSED_IS_FAILED = True
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        constants.INVENTORY_UNPARSED_IS_FAILED = old


# -- a playbook run -----------------------------------------------------------------------


@dataclass
class RunResult:
    rc: int
    status: str  # ansible-runner's: successful, failed, timeout, canceled
    events: list[Event]
    artifacts: Path | None  # kept only when asked for


@contextlib.contextmanager
def scrubbed_environ(extra: Mapping[str, str]) -> Iterator[None]:
    """os.environ reduced to :data:`ENV_KEEP` plus ``extra`` (ansible-runner copies it)."""
    saved = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)  # ansible-playbook of this environment
    path = os.pathsep.join([bin_dir, saved.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")])
    os.environ.clear()
    os.environ.update({k: saved[k] for k in ENV_KEEP if k in saved})
    os.environ.update({"PATH": path, **extra})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class Started:
    """A playbook run under way (:func:`start`): ``wait`` for its result. Started gated,
    its play waits for its hosts (``open``) before it touches any: Ansible starts (its
    Python, its inventory, the playbook) while the workstation checks the hosts' inputs,
    and ``abort`` ends it with no host touched."""

    def __init__(
        self, private: Path, thread: Any, runner: Any, keep: Path | None, events: list[Event]
    ) -> None:
        self.private, self.thread, self.runner, self.keep = private, thread, runner, keep
        self.events = events  # ansible-runner's thread appends to it
        self.aborted = False

    @property
    def gate(self) -> Path:
        return self.private / "gate"

    def open(self, hosts: Sequence[str]) -> None:
        """The play runs on ``hosts`` (ansible/lookup_plugins/opsbook_gate.py reads them)."""
        tmp = self.private / ".gate"
        tmp.write_text(",".join(hosts))
        tmp.replace(self.gate)

    def abort(self) -> None:
        """No host: the play matches none and Ansible ends; its artefacts go once it has
        (this process waits for that at its exit, not here: the error is said first)."""
        self.aborted = True  # ansible-runner's cancel_callback: stopped, should it linger
        self.open([])
        self.keep = None
        threading.Thread(target=self._wait_quietly).start()

    def _wait_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self.wait()

    def wait(self) -> RunResult:
        self.thread.join()
        outcome = self.runner
        if outcome.status not in ("successful", "failed", "timeout", "canceled"):
            shutil.rmtree(self.private, ignore_errors=True)  # its thread died on its own error
            raise BackendError(f"ansible-runner failed: it ended {outcome.status}")
        kept = None
        if self.keep is not None:
            self.keep.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(self.private), self.keep)
            kept = self.keep
        else:
            shutil.rmtree(self.private, ignore_errors=True)
        return RunResult(int(outcome.rc or 0), str(outcome.status), self.events, kept)


def start(
    book: Path,
    inventory: Path,
    *,
    extravars: Mapping[str, Any],
    limit: Sequence[str] = (),
    forks: int = 5,
    on_event: Callable[[Event], None] | None = None,
    keep_artifacts: Path | None = None,
    gated: bool = False,
) -> Started:
    """``ansible-playbook BOOK -i INVENTORY --limit HOSTS`` started through ansible_runner
    (in a thread of this process); ``gated``: its play waits for :meth:`Started.open`."""
    runner_api = _ansible_runner()
    private = Path(tempfile.mkdtemp(prefix="opsbook-fleet-"))  # mode 700
    events: list[Event] = []
    started: Started | None = None

    def handler(event: Event) -> bool:
        events.append(event)
        if on_event is not None:
            on_event(event)
        return True

    envvars = {
        "ANSIBLE_HOME": str(private / "home"),
        "ANSIBLE_LOCAL_TEMP": str(private / "tmp"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(private / "cp"),
        "ANSIBLE_SSH_ARGS": SSH_ARGS,
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_TIMEOUT": "10",
    }
    if gated:
        extravars = {**extravars, "opsbook_gate": str(private / "gate")}
    try:
        with scrubbed_environ(envvars):  # ansible-runner copies it here, before its thread
            thread, runner = runner_api.run_async(
                private_data_dir=str(private),
                playbook=str(book.resolve()),
                inventory=str(inventory.resolve()),
                extravars=dict(extravars),
                limit=",".join(limit) or None,
                forks=forks,
                event_handler=handler,
                cancel_callback=lambda: started is not None and started.aborted,
                quiet=True,
                suppress_env_files=True,
                json_mode=False,
            )
    except Exception as exc:  # ansible-runner's own failures (not a host's)
        shutil.rmtree(private, ignore_errors=True)
        raise BackendError(f"ansible-runner failed: {str(exc).splitlines()[0]}") from exc
    started = Started(private, thread, runner, keep_artifacts, events)
    return started


def run(
    book: Path,
    inventory: Path,
    *,
    extravars: Mapping[str, Any],
    limit: Sequence[str] = (),
    forks: int = 5,
    on_event: Callable[[Event], None] | None = None,
    keep_artifacts: Path | None = None,
) -> RunResult:
    """``ansible-playbook BOOK -i INVENTORY --limit HOSTS`` through ansible_runner, to its end."""
    return start(
        book,
        inventory,
        extravars=extravars,
        limit=limit,
        forks=forks,
        on_event=on_event,
        keep_artifacts=keep_artifacts,
    ).wait()
