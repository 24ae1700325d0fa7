"""Headless runs: validate every parameter, execute with papermill, file the record.

Order of a run (:func:`run`):

1. find the runbook, read its declarations, merge defaults < parameter files
   < ``-p`` values, read every secret source and refuse any other parameter (or
   ``--host``) holding a secret's value in any case or quoting, convert each value
   to its declared type, check VM/network names against libvirt: any problem is an
   InputError (exit 2) and no record is written, because nothing ran;
2. insert a ``running`` index row and a placeholder record (see records/store.py);
3. execute with papermill (:mod:`opslib.engine.run_cells`) into a hidden partial
   notebook beside the record, typed values injected as the ``injected-parameters``
   cell, one progress line per code cell;
4. finalise: an error of exit code 2 that the procedure raised (InputError,
   HostError...: bad input found once the kernel ran) ends as ``bad-input``, exit 2,
   its message the summary; header into ``metadata.opsbook``, scanned with the
   notebook for every secret loaded before it is written (redact + ``leaked-secret``
   + exit 1), atomic rename into place, index row.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from opslib.core import params, secrets
from opslib.core.errors import InputError, UnknownName
from opslib.core.params import RunbookInfo
from opslib.core.paramsets import load_param_file
from opslib.engine import metrics, run_cells
from opslib.engine.catalog import find_runbook, list_runbooks, notebooks_dir
from opslib.engine.runbook import HEADLESS_ENV
from opslib.engine.terminal import Terminal
from opslib.records import clock, notebook_json
from opslib.records import header as record_header
from opslib.records import store as records

__all__ = [
    "RunOutcome",
    "find_runbook",
    "list_runbooks",
    "load_param_file",
    "notebooks_dir",
    "prepare",
    "run",
]


@dataclass(frozen=True)
class Prepared:
    """A validated run, ready to execute."""

    info: RunbookInfo
    values: dict[str, Any]
    host: str
    secret_values: tuple[str, ...]


def prepare(
    info: RunbookInfo,
    cli_params: Sequence[tuple[str, object]] = (),
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
    # The secrets first: no later message (a value echoed as not a host name, a VM
    # libvirt does not know) may print a value that holds one.
    found = _load_secrets(info, given)
    _refuse_secret_values(info, given, host, found)
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
    if check_libvirt and any(p.type in ("vm", "network") for p in info.params):
        from opslib.host.libvirt import virt  # lazy: only runbooks that name VMs need libvirt

        virt.check_names(info.params, values)
    return Prepared(info, values, record_host, tuple(value for _, _, value in found))


def _load_secrets(info: RunbookInfo, given: Mapping[str, object]) -> list[tuple[str, str, str]]:
    """(parameter, source, value) of every secret the run's parameters name."""
    found = []
    for p in info.params:
        if p.type != "secret":
            continue
        try:
            source = p.convert(given.get(p.name, p.default))
        except InputError as exc:
            raise InputError(f"{info.name}: {exc}") from None
        if not source:
            continue
        try:
            found.append((p.name, source, secrets.load(source)))
        except Exception as exc:
            raise InputError(f"parameter {p.name}: {exc}") from None
    return found


def _refuse_secret_values(
    info: RunbookInfo,
    given: Mapping[str, object],
    host: str | None,
    found: Sequence[tuple[str, str, str]],
) -> None:
    """InputError when a parameter that is not a secret holds a secret's value (in any
    case, or quoted): it would reach the record, the index and the terminal as given
    (a token lowercased into a DNS name is still the token). Names it, never the value."""
    where = [(f"parameter {name}", name, raw) for name, raw in given.items()]
    where.append(("--host", "", host or ""))
    for label, name, raw in where:
        p = info.param(name) if name else None
        if p is not None and p.type == "secret":
            continue
        for secret_name, source, value in found:
            if secrets.contains(name, [value]):  # a name is echoed by later messages too
                label = "a parameter's name"
            elif not secrets.contains(str(raw), [value]):
                continue
            raise InputError(
                f"{label} holds the value of secret parameter {secret_name} ({source}); "
                f"a secret is given only as its source (file:/path or env:NAME)"
            )


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


def run(
    prepared: Prepared,
    *,
    store: records.Store,
    timeout: float | None = None,
    lock_wait: float | None = None,
    progress: TextIO | None = sys.stderr,
    metrics_dir: Path | None = None,
    period: float | None = None,
    mode: str = "headless",
    extra_env: Mapping[str, str] | None = None,
    seal: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None,
) -> RunOutcome:
    """Execute a prepared run into ``store``; never raises for a failing notebook.
    With ``metrics_dir``, its metrics (opslib.engine.metrics) go there after the record.
    ``mode`` is the record's (``plan``, ``apply`` for saved plans: opslib.cli.plan),
    ``extra_env`` goes to the kernel, and ``seal(header, notebook)`` gives the final
    header (a plan record's digest) just before the record is written."""
    info = prepared.info
    store.mark_stale()
    nb_source = json.loads(info.path.read_text(encoding="utf-8"))
    start = clock.utcnow()
    header = record_header.header(
        runbook=info.name,
        host=prepared.host,
        decls=info.params,
        values=prepared.values,
        mode=mode,
        start=clock.iso(start),
    )
    run_id, path = store.begin(header, nb_source)
    header["id"] = run_id
    partial = records.partial_path(path)
    env = _kernel_env(prepared, store, run_id, lock_wait, extra_env)
    code_cells = sum(1 for c in nb_source.get("cells", []) if c.get("cell_type") == "code")
    terminal = Terminal(f"opsbook run {info.name} on {prepared.host} (record #{run_id})")
    prog = run_cells.Progress(progress, code_cells + 1, terminal) if progress is not None else None
    t0 = time.monotonic()
    status, error = run_cells.execute(
        info.path, partial, prepared.values, env, terminal, prog, timeout
    )
    seconds = time.monotonic() - t0
    try:
        nb = json.loads(partial.read_bytes())
    except (OSError, ValueError):
        nb = json.loads(path.read_bytes())
    status, changed, summary = _verdict(nb, status, error, timeout)
    end = clock.utcnow()
    header = record_header.finished(
        header, status=status, changed=changed, summary=summary, end=clock.iso(end)
    )
    if terminal.lost:
        header["notes"] = [f"the terminal was lost at {terminal.lost}; the run went on without it"]
    nb, header = _file_record(store, run_id, path, nb, header, prepared.secret_values, seal)
    status, exit_code, summary = header["status"], header["exit_code"], header["summary"]
    if metrics_dir is not None:  # its Prometheus metrics, for node_exporter
        checks = metrics.checks_of(notebook_json.final_result(notebook_json.results_of(nb)))
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
        tuple(notebook_json.results_of(nb)),
        terminal.lost,
    )


def _file_record(
    store: records.Store,
    run_id: int,
    path: Path,
    nb: dict[str, Any],
    header: dict[str, Any],
    secret_values: Sequence[str],
    seal: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The record written into place (its partial notebook gone) and indexed; the notebook
    and header as filed. Fail closed: the record must not hold a secret, and the run must
    say so (redacted, ``leaked-secret``)."""
    nb, header, _ = notebook_json.redact_leaks(nb, header, secret_values)
    if seal is not None:
        header = seal(header, nb)
    data = notebook_json.dump_notebook(notebook_json.with_header(nb, header))
    records.atomic_write(path, data)
    with contextlib.suppress(FileNotFoundError):
        records.partial_path(path).unlink()
    store.finish(run_id, path, header)
    return nb, header


def _kernel_env(
    prepared: Prepared,
    store: records.Store,
    run_id: int,
    lock_wait: float | None,
    extra_env: Mapping[str, str] | None,
) -> dict[str, str]:
    """What the kernel's environment tells the notebook: headless, its record, its host."""
    info = prepared.info
    env = {
        HEADLESS_ENV: "1",
        "OPSBOOK_RECORDS": str(store.root.resolve()),
        "OPSBOOK_RUNBOOK": info.name,
        "OPSBOOK_NOTEBOOK": str(info.path.resolve()),
        "OPSBOOK_HOST": prepared.host,
        "OPSBOOK_RUN_ID": str(run_id),
        "OPSBOOK_RUNNER_PID": str(os.getpid()),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",  # the debugger's frozen-modules warning
        **(extra_env or {}),
    }
    if lock_wait is not None:
        env["OPSBOOK_LOCK_WAIT"] = str(lock_wait)
    return env


def _verdict(
    nb: Mapping[str, Any], status: str, error: str, timeout: float | None
) -> tuple[str, bool | None, str]:
    """(status, changed, summary) of the run from its executed notebook."""
    final = notebook_json.final_result(notebook_json.results_of(nb))
    # A run that stopped before its apply said what it did (killed, a dead kernel...):
    # its plan's "no change" does not speak for the host, so changed is unknown.
    cut_short = status != "ok" and (final is None or final.get("kind") != "result")
    if status == "ok" and final is not None and final.get("failed"):
        status = "failed"
    changed = bool(final.get("changed")) if final is not None and not cut_short else None
    summary = notebook_json.summarize(nb, status) or error
    stale = status == "failed" and error.startswith("stale: ")
    if (
        stale
        or status == "bad-input"
        or (status != "ok" and error and not notebook_json.cell_error(nb))
    ):
        summary = error
    if status == "timeout":
        summary = f"a cell ran longer than {timeout:g} s: {run_cells.failed_cell(nb)}"
    return status, changed, summary
