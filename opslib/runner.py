"""Headless runs: validate every parameter, execute with papermill, file the record.

Order of a run (:func:`run`):

1. find the runbook, read its declarations, merge defaults < parameter files
   < ``-p`` values, convert each to its declared type, check VM/network names
   against libvirt and read every secret source: any problem is an InputError
   (exit 2) and no record is written, because nothing ran;
2. insert a ``running`` index row and a placeholder record (see records.py);
3. execute with papermill into a hidden partial notebook beside the record,
   typed values injected as the ``injected-parameters`` cell, one progress line
   per code cell;
4. finalise: an error of exit code 2 that the procedure raised (InputError,
   HostError...: bad input found once the kernel ran) ends as ``bad-input``, exit 2,
   its message the summary; header into ``metadata.opsbook``, scanned with the
   notebook for every secret loaded before it is written (redact + ``leaked-secret``
   + exit 1), atomic rename into place, index row.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from opslib import errors, metrics, params, record_header, records, secrets
from opslib.errors import InputError, UnknownName
from opslib.params import RunbookInfo
from opslib.paramsets import load_param_file
from opslib.runbook import HEADLESS_ENV
from opslib.terminal import Terminal

__all__ = ["RunOutcome", "find_runbook", "list_runbooks", "load_param_file", "prepare", "run"]

# A busy host (guests booting, other runs starting their kernels) can take over a
# minute to start Python; a kernel silent for this long is dead, not slow.
KERNEL_START_TIMEOUT = 300


def notebooks_dir() -> Path:
    """$OPSBOOK_NOTEBOOKS, else the checkout's notebooks/, else those installed with the
    package (PREFIX/share/opsbook/notebooks: pyproject's data-files), else ./notebooks."""
    env = os.environ.get("OPSBOOK_NOTEBOOKS")
    if env:
        return Path(env)
    for candidate in (
        Path(__file__).resolve().parent.parent / "notebooks",
        Path(sys.prefix) / "share" / "opsbook" / "notebooks",
    ):
        if candidate.is_dir():
            return candidate
    return Path("notebooks")


def list_runbooks(directory: Path | None = None) -> list[RunbookInfo]:
    directory = directory or notebooks_dir()
    return [params.read_runbook(p) for p in sorted(directory.glob("*.ipynb"))]


def find_runbook(name: str, directory: Path | None = None) -> RunbookInfo:
    """A runbook by name (``forward-bridge``) or by notebook path."""
    if name.endswith(".ipynb"):
        path = Path(name)
        if not path.is_file():
            raise InputError(f"{name}: no such notebook")
        return params.read_runbook(path)
    directory = directory or notebooks_dir()
    path = directory / f"{name}.ipynb"
    if not path.is_file():
        known = [p.stem for p in directory.glob("*.ipynb")]
        raise UnknownName("runbook", name, known)
    return params.read_runbook(path)


@dataclass(frozen=True)
class Prepared:
    """A validated run, ready to execute."""

    info: RunbookInfo
    values: dict[str, Any]
    host: str
    secret_values: tuple[str, ...]


def prepare(
    info: RunbookInfo,
    cli_params: Sequence[tuple[str, str]] = (),
    files: Sequence[Path] = (),
    host: str | None = None,
    *,
    check_libvirt: bool = True,
) -> Prepared:
    """Validate everything a run needs; raises InputError before any side effect."""
    given: dict[str, object] = {}
    for f in files:
        loaded = load_param_file(Path(f))
        for name in loaded:
            if info.param(name) is None:
                unknown = UnknownName("parameter", name, [p.name for p in info.params])
                raise InputError(f"{f}: {unknown}")
        given.update(loaded)
    given.update(dict(cli_params))
    if host is not None:
        host = params.Param("host", "host", host).convert(host)
        if info.param("host") is not None:
            given["host"] = host
    values = params.validate(info.params, given, where=f"{info.name}: ")
    # An empty host is this machine: the notebooks' defaults describe the machine they run
    # on, and the record, the index and the kernel's `host` all say the same name.
    record_host = str(values.get("host") or host or params.this_host())
    if info.param("host") is not None:
        values["host"] = record_host
    if check_libvirt:
        params.check_names(info.params, values)
    found = []
    for p in info.params:
        if p.type == "secret" and values.get(p.name):
            try:
                found.append(secrets.load(values[p.name]))
            except Exception as exc:
                raise InputError(f"parameter {p.name}: {exc}") from None
    return Prepared(info, values, record_host, tuple(found))


@dataclass(frozen=True)
class RunOutcome:
    runbook: str
    host: str
    status: str
    exit_code: int
    changed: bool | None
    summary: str
    record: Path
    run_id: int
    seconds: float
    # The plans and results the run displayed (redacted as in its record), for the terminal.
    results: tuple[dict[str, Any], ...] = ()
    terminal_lost: str = ""  # "WHEN (HOW)" when the terminal went away during the run


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


def _first_line(source: str) -> str:
    for line in source.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            return line.strip()
    return source.strip().splitlines()[0] if source.strip() else ""


def _failed_cell(nb: Mapping[str, Any]) -> str:
    for cell in nb.get("cells", []):
        if any(o.get("output_type") == "error" for o in cell.get("outputs", []) or []):
            return _first_line("".join(cell.get("source", "")))
    return "?"


class _Progress:
    """One line per code cell: number, first line of code, outcome and seconds."""

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
        tags = cell.get("metadata", {}).get("tags", [])
        src = "".join(cell.get("source", ""))
        text = "(injected parameters)" if "injected-parameters" in tags else _first_line(src)
        self.line = f"  [{self.n:>{len(str(self.total))}}/{self.total}] {text[:60]:<60}"
        if self.tty:
            self.terminal.write(self.stream, self.line + "  …\r")

    def done(self, cell: Mapping[str, Any]) -> None:
        failed = any(o.get("output_type") == "error" for o in cell.get("outputs", []))
        mark = "FAILED" if failed else "ok"
        line = f"{self.line}  {mark:<6} {time.monotonic() - self.t0:5.1f} s\n"
        self.terminal.write(self.stream, line)


def _engine(progress: _Progress | None) -> str:
    """Register (once per call) a papermill engine that reports progress per cell."""
    from papermill.engines import NBClientEngine, papermill_engines

    class OpsbookEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, **kwargs: Any) -> Any:
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

    papermill_engines.register("opsbook", OpsbookEngine)
    return "opsbook"


def _quiet_kernel_manager(log: TextIO) -> type:
    """A kernel manager whose kernel writes its stderr (debugger and TCP warnings,
    tracebacks of crashes) to ``log`` instead of our terminal."""
    from jupyter_client.manager import AsyncKernelManager

    class QuietKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw: Any) -> None:  # type: ignore[override]
            kw.setdefault("stderr", log)
            kw.setdefault("stdout", log)
            await super()._async_start_kernel(**kw)

    return QuietKernelManager


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


def run(
    prepared: Prepared,
    *,
    store: records.Store,
    timeout: float | None = None,
    lock_wait: float | None = None,
    progress: TextIO | None = sys.stderr,
    metrics_dir: Path | None = None,
    period: float | None = None,
) -> RunOutcome:
    """Execute a prepared run into ``store``; never raises for a failing notebook.
    With ``metrics_dir``, its metrics (opslib.metrics) go there after the record."""
    info = prepared.info
    store.mark_stale()
    nb_source = json.loads(info.path.read_text(encoding="utf-8"))
    start = records.utcnow()
    header = record_header.header(
        runbook=info.name,
        host=prepared.host,
        decls=info.params,
        values=prepared.values,
        mode="headless",
        start=records.iso(start),
    )
    run_id, path = store.begin(header, nb_source)
    header["id"] = run_id
    partial = records.partial_path(path)
    env = {
        HEADLESS_ENV: "1",
        "OPSBOOK_RECORDS": str(store.root.resolve()),
        "OPSBOOK_RUNBOOK": info.name,
        "OPSBOOK_NOTEBOOK": str(info.path.resolve()),
        "OPSBOOK_HOST": prepared.host,
        "OPSBOOK_RUN_ID": str(run_id),
        "OPSBOOK_RUNNER_PID": str(os.getpid()),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",  # the debugger's frozen-modules warning
    }
    if lock_wait is not None:
        env["OPSBOOK_LOCK_WAIT"] = str(lock_wait)
    code_cells = sum(1 for c in nb_source.get("cells", []) if c.get("cell_type") == "code")
    terminal = Terminal(f"opsbook run {info.name} on {prepared.host} (record #{run_id})")
    prog = _Progress(progress, code_cells + 1, terminal) if progress is not None else None
    status, error = "ok", ""
    t0 = time.monotonic()
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
                str(info.path),
                str(partial),
                parameters=prepared.values,
                engine_name=_engine(prog),
                kernel_name=choose_kernel(),
                progress_bar=False,
                execution_timeout=timeout,
                start_timeout=KERNEL_START_TIMEOUT,
                kernel_manager_class=_quiet_kernel_manager(kernel_log),
            )
        except PapermillExecutionError as exc:
            status = "locked" if exc.ename == "LockHeld" else "failed"
            error = f"{exc.ename}: {exc.evalue}"
            if error_exit_code(exc.ename) == 2:
                # The procedure's own InputError (HostError, SecretError...): bad input,
                # exit 2 with its message as the one line; the kernel ran, so keep the record.
                status = "bad-input"
                error = (str(exc.evalue).strip().splitlines() or [exc.ename])[0][:300]
        except (KeyboardInterrupt, _Terminated) as exc:
            status, error = "killed", f"interrupted ({type(exc).__name__} {exc})".strip()
        except Exception as exc:  # nbclient's timeout, a dead kernel...
            timed_out = "Timeout" in type(exc).__name__
            status = "timeout" if timed_out else "failed"
            first = (str(exc).strip().splitlines() or [""])[0]
            error = f"{type(exc).__name__}: {first}"[:300]
    seconds = time.monotonic() - t0
    try:
        nb = json.loads(partial.read_bytes())
    except (OSError, ValueError):
        nb = json.loads(path.read_bytes())
    final = records.final_result(records.results_of(nb))
    # A run that stopped before its apply said what it did (killed, a dead kernel...):
    # its plan's "no change" does not speak for the host, so changed is unknown.
    cut_short = status != "ok" and (final is None or final.get("kind") != "result")
    if status == "ok" and final is not None and final.get("failed"):
        status = "failed"
    changed = bool(final.get("changed")) if final is not None and not cut_short else None
    summary = records.summarize(nb, status) or error
    if status == "bad-input" or (status != "ok" and error and not records.cell_error(nb)):
        summary = error
    if status == "timeout":
        summary = f"a cell ran longer than {timeout:g} s: {_failed_cell(nb)}"
    end = records.utcnow()
    header = record_header.finished(
        header, status=status, changed=changed, summary=summary, end=records.iso(end)
    )
    if terminal.lost:
        header["notes"] = [f"the terminal was lost at {terminal.lost}; the run went on without it"]
    # Fail closed: the record must not hold a secret, and the run must say so.
    nb, header, _ = records.redact_leaks(nb, header, prepared.secret_values)
    status, exit_code, summary = header["status"], header["exit_code"], header["summary"]
    data = records.dump_notebook(records.with_header(nb, header))
    records.atomic_write(path, data)
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    store.finish(run_id, path, header)
    if metrics_dir is not None:  # its Prometheus metrics, for node_exporter
        checks = metrics.checks_of(records.final_result(records.results_of(nb)))
        ok, ended = status == "ok", end.timestamp()
        run_metrics = metrics.RunMetrics(
            prepared.host, info.name, ok, ended, seconds, changed, checks, period
        )
        metrics.write(metrics_dir, run_metrics)
    return RunOutcome(
        info.name,
        prepared.host,
        status,
        exit_code,
        changed,
        summary,
        path,
        run_id,
        seconds,
        tuple(records.results_of(nb)),
        terminal.lost,
    )
