"""Ansible (``ansible-playbook``, its events read as they come) and the inventory it runs on.

Each run has a private temp dir (mode 700): the extra variables, Ansible's home and
control sockets, and its artefacts (``artifacts/``: the command, Ansible's output, the
event stream), deleted at the end unless the caller asks to keep them. Events come over a
pipe from ``ansible/callback_plugins/opsbook_events.py``, as they happen. Ansible runs with
an environment of names from an allow-list: a token exported on the workstation never
reaches Ansible, its artefacts or its event stream. Secrets go to hosts as sources
(``file:/path``), never as values.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.util
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from opslib.core.errors import HostError, InputError

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
# no -C: what crosses is the run's output and its record, already gzipped
SSH_ARGS = "-o ControlMaster=auto -o ControlPersist=30s"


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


def _need_ansible() -> None:
    try:
        import ansible  # noqa: F401
    except ImportError:
        raise HostError("fleet runs need ansible-core: pip install 'opslib[fleet]'") from None


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
    with _collector_paused():
        _need_ansible()
        return _load_inventory(path, limit, pattern)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's garbage collector off while Ansible is imported and the inventory read (as
    in ansible-playbook: fleet/ansible_playbook.py), then as it was. It went through their
    modules and objects again and again as they came, a tenth of that load's CPU, while
    ansible-playbook started beside it. Nothing is frozen here: this is a library call
    (a test process calls it too); the CLI freezes on its way out."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _load_inventory(path: Path, limit: str | None, pattern: str) -> Inventory:
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
    status: str  # successful, failed or canceled
    events: list[Event]
    artifacts: Path | None  # kept only when asked for


def ansible_environ(extra: Mapping[str, str]) -> dict[str, str]:
    """os.environ reduced to :data:`ENV_KEEP` plus ``extra``: what ansible-playbook gets."""
    bin_dir = str(Path(sys.executable).parent)  # ansible-playbook of this environment
    path = os.pathsep.join([bin_dir, os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")])
    kept = {k: os.environ[k] for k in ENV_KEEP if k in os.environ}
    return {**kept, "PATH": path, **extra}


class Started:
    """A playbook run under way (:func:`start`): ``wait`` for its result. Started gated,
    its play waits for its hosts (``open``) before it touches any: Ansible starts (its
    Python, its inventory, the playbook) while the workstation checks the hosts' inputs,
    and ``abort`` ends it with no host touched."""

    def __init__(
        self,
        private: Path,
        proc: subprocess.Popen[bytes],
        reader: threading.Thread,
        keep: Path | None,
        events: list[Event],
    ) -> None:
        self.private, self.proc, self.reader, self.keep = private, proc, reader, keep
        self.events = events  # the reader thread appends to it
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
        self.aborted = True
        self.open([])
        self.keep = None
        threading.Thread(target=self._wait_quietly).start()

    def _wait_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self.wait()

    def wait(self) -> RunResult:
        try:
            rc = self.proc.wait()
        except BaseException:  # interrupted here: Ansible does not outlive the command
            self.proc.terminate()
            self.proc.wait()
            raise
        finally:
            self.reader.join()
        status = "canceled" if self.aborted else "successful" if rc == 0 else "failed"
        kept = None
        if self.keep is not None:
            self.keep.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(self.private), self.keep)
            kept = self.keep
        else:
            shutil.rmtree(self.private, ignore_errors=True)
        return RunResult(rc, status, self.events, kept)


def _read_events(
    pipe: IO[str], events: list[Event], log: IO[str], on_event: Callable[[Event], None] | None
) -> None:
    """Ansible's events (callback_plugins/opsbook_events.py), one JSON line each, as they
    come: kept in ``events`` and ``log``, each given to ``on_event``."""
    with pipe, log:
        for line in pipe:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # not an event (a plugin of the inventory writing to the fd)
            log.write(line)
            events.append(event)
            if on_event is not None:
                on_event(event)


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
    """``ansible-playbook BOOK -i INVENTORY --limit HOSTS`` started in a private directory,
    its events read by a thread of this process; ``gated``: its play waits for
    :meth:`Started.open`."""
    if importlib.util.find_spec("ansible") is None:
        raise HostError("fleet runs need ansible-core: pip install 'opslib[fleet]'")
    private = Path(tempfile.mkdtemp(prefix="opsbook-fleet-"))  # mode 700
    artifacts = private / "artifacts"
    artifacts.mkdir()
    if gated:
        extravars = {**extravars, "opsbook_gate": str(private / "gate")}
    with open(private / "extravars.json", "x", encoding="utf-8") as fh:  # in the 700 dir
        json.dump(dict(extravars), fh)
    # ansible-playbook, run by this Python (-E -P: no PYTHON* variable, no cwd on its
    # path; a user-site install still imports) through ansible_playbook.py: its garbage
    # collector off while it starts
    argv = [
        sys.executable, "-E", "-P", "-m", "opslib.fleet.ansible_playbook",
        str(book.resolve()), "-i", str(inventory.resolve()),
        "-e", f"@{private / 'extravars.json'}", "--forks", str(forks),
    ]  # fmt: skip
    if limit:
        argv += ["--limit", ",".join(limit)]
    (artifacts / "command").write_text(shlex.join(argv) + "\n")
    read_end, write_end = os.pipe()
    env = ansible_environ(
        {
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
            "OPSBOOK_EVENTS_FD": str(write_end),
        }
    )
    try:
        with open(artifacts / "stdout", "wb") as out:
            proc = subprocess.Popen(
                argv, cwd=private, env=env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, pass_fds=(write_end,),
            )  # fmt: skip
    except OSError as exc:  # this Python is gone
        os.close(read_end)
        shutil.rmtree(private, ignore_errors=True)
        raise HostError(
            f"cannot start {sys.executable} for ansible-playbook ({exc.strerror}); "
            "reinstall opsbook's environment (scripts/setup.sh)"
        ) from None
    finally:
        os.close(write_end)  # Ansible holds it now: its end is the stream's end
    events: list[Event] = []
    pipe = os.fdopen(read_end, encoding="utf-8")
    log = open(artifacts / "events.jsonl", "w", encoding="utf-8")  # noqa: SIM115 (the thread's)
    reader = threading.Thread(target=_read_events, args=(pipe, events, log, on_event), daemon=True)
    reader.start()
    return Started(private, proc, reader, keep_artifacts, events)


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
    """``ansible-playbook BOOK -i INVENTORY --limit HOSTS``, to its end."""
    return start(
        book,
        inventory,
        extravars=extravars,
        limit=limit,
        forks=forks,
        on_event=on_event,
        keep_artifacts=keep_artifacts,
    ).wait()
