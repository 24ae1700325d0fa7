"""The code cells of a headless run (opslib.engine.runner): executed by papermill
(:func:`execute`, SIGTERM ending the run as killed, SIGHUP not), one progress line per
cell from a papermill engine that reports each cell's start and end, a kernel whose own
output goes to a log instead of the operator's terminal, and the status and one line
that say how the run ended."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from opslib.core import errors
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
    "quiet_kernel_manager",
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


def quiet_kernel_manager(log: TextIO) -> type:
    """A kernel manager whose kernel writes its stderr (debugger and TCP warnings,
    tracebacks of crashes) to ``log`` instead of our terminal."""
    from jupyter_client.manager import AsyncKernelManager

    class QuietKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw: Any) -> None:  # type: ignore[override]
            kw.setdefault("stderr", log)
            kw.setdefault("stdout", log)
            await super()._async_start_kernel(**kw)

    return QuietKernelManager


# A busy host (guests booting, other runs starting their kernels) can take over a
# minute to start Python; a kernel silent for this long is dead, not slow.
KERNEL_START_TIMEOUT = 300


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
        import papermill
        from papermill.exceptions import PapermillExecutionError

        try:
            papermill.execute_notebook(
                str(notebook),
                str(partial),
                parameters=dict(parameters),
                engine_name=engine(),
                progress=prog,
                kernel_name=choose_kernel(),
                progress_bar=False,
                execution_timeout=timeout,
                start_timeout=KERNEL_START_TIMEOUT,
                kernel_manager_class=quiet_kernel_manager(kernel_log),
            )
        except PapermillExecutionError as exc:
            return _cell_failure(exc.ename, exc.evalue)
        except (KeyboardInterrupt, _Terminated) as exc:
            return "killed", f"interrupted ({type(exc).__name__} {exc})".strip()
        except Exception as exc:  # nbclient's timeout, a dead kernel...
            timed_out = "Timeout" in type(exc).__name__
            first = (str(exc).strip().splitlines() or [""])[0]
            return "timeout" if timed_out else "failed", f"{type(exc).__name__}: {first}"[:300]
    return "ok", ""


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
