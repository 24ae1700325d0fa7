"""The code cells of a headless run (opslib.engine.runner): executed by papermill
(:func:`execute`, SIGTERM ending the run as killed, SIGHUP not), one progress line per
cell from a papermill engine that reports each cell's start and end, a kernel whose own
output goes to a log instead of the operator's terminal, and the status and one line
that say how the run ended.

The kernel is the kernelspec's (``opsbook``, else ``python3``) started without its
debugger (:func:`headless_argv`, :mod:`opslib.engine.headless_kernel`), and it starts
before papermill is imported (:func:`started_kernel_manager`): nbclient gets its manager
through papermill's ``kernel_manager_class``, so the kernel's start-up and the import
overlap."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from opslib.core import errors
from opslib.engine import headless_kernel
from opslib.engine.terminal import Terminal

ENGINE = "opsbook"

__all__ = [
    "ENGINE",
    "KERNEL_START_TIMEOUT",
    "Progress",
    "cell_label",
    "choose_kernel",
    "engine",
    "error_exit_code",
    "execute",
    "failed_cell",
    "headless_argv",
    "import_papermill",
    "quiet_kernel_manager",
    "started_kernel_manager",
    "stop_unclaimed",
]


def _first_line(source: str) -> str:
    for line in source.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            return line.strip()
    return source.strip().splitlines()[0] if source.strip() else ""


def cell_label(cell: Mapping[str, Any]) -> str:
    """How a progress line names a cell: the parameter cells by their tag (their first
    line is a declaration whose comment a cut makes unreadable), others by their code."""
    tags = (cell.get("metadata") or {}).get("tags") or []
    for tag in ("injected-parameters", "parameters"):
        if tag in tags:
            return tag
    return _first_line("".join(cell.get("source", "")))


def failed_cell(nb: Mapping[str, Any]) -> str:
    for cell in nb.get("cells", []):
        if any(o.get("output_type") == "error" for o in cell.get("outputs", []) or []):
            return cell_label(cell)
    return "?"


class Progress:
    """One line per code cell: number, its label (:func:`cell_label`), outcome, seconds."""

    def __init__(self, stream: TextIO, total: int, terminal: Terminal) -> None:
        self.stream, self.total, self.n, self.t0 = stream, total, 0, 0.0
        self.terminal = terminal
        try:
            self.tty = stream.isatty()
        except (OSError, ValueError):
            self.tty = False

    def start(self, cell: Mapping[str, Any]) -> None:
        self.n += 1
        self.t0 = time.monotonic()
        text = cell_label(cell)
        self.line = f"  [{self.n:>{len(str(self.total))}}/{self.total}] {text[:60]:<60}"
        if self.tty:
            self.terminal.write(self.stream, self.line + "  …\r")

    def done(self, cell: Mapping[str, Any]) -> None:
        failed = any(o.get("output_type") == "error" for o in cell.get("outputs", []))
        mark = "FAILED" if failed else "ok"
        line = f"{self.line}  {mark:<6} {time.monotonic() - self.t0:5.1f} s\n"
        self.terminal.write(self.stream, line)


@functools.cache
def engine() -> str:
    """The name of the papermill engine that reports each code cell's start and end to the
    ``progress`` (a :class:`Progress`, or None) given to ``papermill.execute_notebook``,
    which passes its extra keyword arguments on to the engine. Registered once."""
    from papermill.engines import NBClientEngine, papermill_engines

    class OpsbookEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, **kwargs: Any) -> Any:
            progress: Progress | None = kwargs.pop("progress", None)
            if progress is not None:
                start, complete = nb_man.cell_start, nb_man.cell_complete

                def cell_start(cell: Any, cell_index: int | None = None, **kw: Any) -> Any:
                    if cell.cell_type == "code":
                        progress.start(cell)
                    return start(cell, cell_index, **kw)

                def cell_complete(cell: Any, cell_index: int | None = None, **kw: Any) -> Any:
                    if cell.cell_type == "code":
                        progress.done(cell)
                    return complete(cell, cell_index, **kw)

                nb_man.cell_start, nb_man.cell_complete = cell_start, cell_complete
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register(ENGINE, OpsbookEngine)
    return ENGINE


def headless_argv(argv: Sequence[str]) -> list[str]:
    """A kernelspec's argv for a headless run: ``-m ipykernel_launcher`` becomes
    ``-P -m opslib.engine.headless_kernel`` (ipykernel without its debugger; ``-P``: from
    the kernelspec's environment, not an ``opslib`` directory where the run was started),
    the interpreter and its flags as they are; an argv that does not start
    ipykernel_launcher, as it is."""
    argv = list(argv)
    for i in range(len(argv) - 1):
        if argv[i] == "-m" and argv[i + 1] == "ipykernel_launcher":
            argv[i : i + 2] = ["-P", "-m", headless_kernel.MODULE]
            break
    return argv


def quiet_kernel_manager(log: TextIO) -> type:
    """A kernel manager whose kernel writes its stderr (TCP warnings, tracebacks of
    crashes) to ``log`` instead of our terminal, started by :func:`headless_argv`."""
    from jupyter_client.manager import AsyncKernelManager

    class QuietKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw: Any) -> None:  # type: ignore[override]
            kw.setdefault("stderr", log)
            kw.setdefault("stdout", log)
            await super()._async_start_kernel(**kw)

        def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
            return headless_argv(super().format_kernel_cmd(extra_arguments))

        async def _async_finish_shutdown(
            self, waittime: float | None = None, pollinterval: float = 0.1, restart: bool = False
        ) -> None:
            # jupyter_client looks every 0.1 s whether the kernel has exited; it exits in a
            # few hundredths once asked (headless_kernel), and the run waits for that.
            pollinterval = min(pollinterval, KERNEL_EXIT_POLL)
            await super()._async_finish_shutdown(waittime, pollinterval, restart)

    return QuietKernelManager


def started_kernel_manager(kernel_name: str, log: TextIO) -> type:
    """Start the run's kernel now, as nbclient would start it (the same manager and
    arguments), and return the ``kernel_manager_class`` that gives nbclient this manager
    instead of a new one. The caller imports papermill while the kernel starts; nbclient
    finds a kernel (``has_kernel``), so it only connects and waits for it, and owns it as
    one it started: it shuts it down when the notebook ends (interrupting a cell that ran
    out of time first, whose KeyboardInterrupt is then in the record). The class keeps the
    manager as ``started`` for :func:`stop_unclaimed`."""
    from jupyter_core.utils import run_sync

    km = quiet_kernel_manager(log)(kernel_name=kernel_name)
    # nbclient keeps an ipykernel's history in memory, knowing one by its kernel name
    # (python3: choose_kernel's fallback; not opsbook): the arguments it would pass.
    extra = ["--HistoryManager.hist_file=:memory:"] if km.ipykernel else []
    run_sync(km.start_kernel)(extra_arguments=extra)

    class StartedKernelManager(type(km)):  # type: ignore[misc]
        started = km

        def __new__(cls, *args: Any, **kwargs: Any) -> Any:
            return km  # nbclient's kernel_manager_class(kernel_name=..., config=...)

    return StartedKernelManager


def stop_unclaimed(manager: type) -> None:
    """Shut down the kernel of :func:`started_kernel_manager` when nbclient never took it
    (papermill failed before, or the run was interrupted): nbclient shut down any other."""
    km = getattr(manager, "started", None)
    if km is None or not km.has_kernel:
        return
    from jupyter_core.utils import run_sync

    try:
        run_sync(km.shutdown_kernel)(now=False)
    except BaseException:
        # Called on the way out of a run already ending (SIGTERM, a dead kernel...): that
        # ending decides the run's status, so this must not replace it (a second SIGTERM,
        # an event loop left mid-step). The kernel goes all the same.
        with contextlib.suppress(BaseException):
            process = getattr(km.provisioner, "process", None)
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=5)


# How often the run looks whether its kernel has exited, once it asked it to (seconds).
KERNEL_EXIT_POLL = 0.01

# A busy host (guests booting, other runs starting their kernels) can take over a
# minute to start Python; a kernel silent for this long is dead, not slow.
KERNEL_START_TIMEOUT = 300


# Packages jsonschema imports, when they are installed, only to check string formats
# (uri, duration, color, json-pointer, uri-template, hostname, date-time) with a
# FormatChecker; jupyterlab's dependencies install them.
FORMAT_ONLY = (
    "rfc3986_validator",
    "isoduration",
    "webcolors",
    "uri_template",
    "fqdn",
    "jsonpointer",
    "rfc3339_validator",
)


def import_papermill() -> Any:
    """papermill, whose nbformat imports jsonschema, without jsonschema's format checkers:
    nothing in a run checks a format (nbformat validates notebooks with fastjsonschema, and
    with jsonschema without a FormatChecker), and their packages were a third of the
    import (rfc3986_validator compiles its regular expressions, isoduration imports
    arrow): about 0.03 s of CPU. Each is importable again once jsonschema is loaded."""
    hidden = [] if "jsonschema" in sys.modules else [m for m in FORMAT_ONLY if m not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # its import raises ImportError
    try:
        import papermill
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
    return papermill


def error_exit_code(ename: str) -> int:
    """The exit code of an error the kernel raised, by class name: opslib's errors carry
    theirs (InputError, UnknownName, HostError, Unsupported, SecretError: 2); others 1."""
    cls = getattr(errors, ename, None)
    if isinstance(cls, type) and issubclass(cls, errors.OpsError):
        return int(cls.exit_code)
    return 1


def choose_kernel() -> str:
    """The ``opsbook`` kernelspec (setup.sh installs it into the venv), else python3,
    which jupyter_client starts with this very interpreter: the same venv either way."""
    from jupyter_client.kernelspec import KernelSpecManager

    return "opsbook" if "opsbook" in KernelSpecManager().find_kernel_specs() else "python3"


@contextlib.contextmanager
def _environment(extra: Mapping[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _Terminated(Exception):
    """SIGTERM: finish the record as killed, then exit."""


@contextlib.contextmanager
def _signals(terminal: Terminal) -> Iterator[None]:
    """SIGTERM ends the run as killed; SIGHUP (the terminal hung up) does not end it."""

    def terminate(signum: int, frame: Any) -> None:
        raise _Terminated(signal.Signals(signum).name)

    def hangup(signum: int, frame: Any) -> None:
        terminal.lose("SIGHUP")

    if threading_main():
        old = {
            signal.SIGTERM: signal.signal(signal.SIGTERM, terminate),
            signal.SIGHUP: signal.signal(signal.SIGHUP, hangup),
        }
    else:
        old = {}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def threading_main() -> bool:
    return threading.current_thread() is threading.main_thread()


def execute(
    notebook: Path,
    partial: Path,
    parameters: Mapping[str, Any],
    env: Mapping[str, str],
    terminal: Terminal,
    prog: Progress | None,
    timeout: float | None,
) -> tuple[str, str]:
    """Run ``notebook`` with papermill into ``partial``, ``env`` in the kernel's
    environment: ("ok", ""), or the run's status and the one line that says why it ended."""
    with (
        tempfile.TemporaryFile("w+") as kernel_log,
        _environment(env),
        _signals(terminal),
        terminal.watched(),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        for name in ("papermill", "traitlets", "nbclient"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        manager = None
        try:
            try:
                kernel_name = choose_kernel()
                # the kernel starts now, and papermill loads meanwhile
                manager = started_kernel_manager(kernel_name, kernel_log)
                papermill = import_papermill()

                papermill.execute_notebook(
                    str(notebook),
                    str(partial),
                    parameters=dict(parameters),
                    engine_name=engine(),
                    progress=prog,
                    kernel_name=kernel_name,
                    progress_bar=False,
                    execution_timeout=timeout,
                    start_timeout=KERNEL_START_TIMEOUT,
                    kernel_manager_class=manager,
                )
            finally:
                if manager is not None:
                    stop_unclaimed(manager)
        except (KeyboardInterrupt, _Terminated) as exc:
            return "killed", f"interrupted ({type(exc).__name__} {exc})".strip()
        except Exception as exc:  # a failing cell, nbclient's timeout, a dead kernel...
            return _failure(exc)
    return "ok", ""


def _failure(exc: Exception) -> tuple[str, str]:
    """The status and error line of a run that papermill ended with ``exc``."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        return _cell_failure(exc.ename, exc.evalue)
    timed_out = "Timeout" in type(exc).__name__
    first = (str(exc).strip().splitlines() or [""])[0]
    return "timeout" if timed_out else "failed", f"{type(exc).__name__}: {first}"[:300]


def _cell_failure(ename: str, evalue: Any) -> tuple[str, str]:
    """The status and error line of a cell that raised ``ename``."""
    status = "locked" if ename == "LockHeld" else "failed"
    error = f"{ename}: {evalue}"
    if ename == "StalePlan":  # its message is the one line (opsbook apply)
        error = (str(evalue).strip().splitlines() or [ename])[0][:300]
    if error_exit_code(ename) == 2:
        # The procedure's own InputError (HostError, SecretError...): bad input,
        # exit 2 with its message as the one line; the kernel ran, so keep the record.
        status = "bad-input"
        error = (str(evalue).strip().splitlines() or [ename])[0][:300]
    return status, error
