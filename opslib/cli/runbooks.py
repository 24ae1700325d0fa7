"""``opsbook runbooks | run``: the engine's commands (records: :mod:`opslib.cli.records`)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opslib.cli import records
from opslib.cli.records import records_option, shown, store_of
from opslib.core.errors import InputError
from opslib.core.tables import table

__all__ = ["add_parsers", "table"]


# -- runbooks ------------------------------------------------------------------------------


def _default(value: object) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


def cmd_runbooks(args: argparse.Namespace) -> int:
    from opslib.engine import runner

    infos = [runner.find_runbook(args.name)] if args.name else runner.list_runbooks()
    if not infos:
        print(f"no runbooks in {runner.notebooks_dir()}")
        return 0
    for n, info in enumerate(infos):
        if n:
            print()
        print(f"{info.name}  {info.purpose}".rstrip())
        if not info.params:
            print("  (no parameters)")
            continue
        rows = [(p.name, p.declared, _default(p.default), p.help) for p in info.params]
        print(table(rows, ["name", "type", "default", "help"], indent="  ", max_width={2: 40}))
    return 0


# -- run -----------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from opslib.engine import runner

    # The flags first (cheap, no file read), then the runbook and its parameters.
    metrics_dir = None
    if args.period is not None and not args.metrics_dir:
        raise InputError("--period: only with --metrics-dir (it is exported as a metric)")
    if args.metrics_dir:
        from opslib.engine import metrics

        metrics_dir = metrics.check_dir(args.metrics_dir)
    info = runner.find_runbook(args.runbook)
    prepared = runner.prepare(
        info, [tuple(p) for p in args.param or []], [Path(f) for f in args.file or []], args.host
    )
    if prepared.values.get("apply"):  # the host's policy may ask for an approved plan
        from opslib.contract import policy

        found = policy.find(
            prepared.host, Path(args.params_dir), [Path(f) for f in args.file or []]
        )
        policy.refuse_unapproved_run(found, info.name, prepared.host)
    store = store_of(args)
    quiet = args.quiet or args.summary
    if not quiet:
        print(f"{info.name} on {prepared.host}", file=sys.stderr)
    outcome = runner.run(
        prepared,
        store=store,
        timeout=args.timeout,
        lock_wait=args.lock_wait,
        progress=None if quiet else sys.stderr,
        metrics_dir=metrics_dir,
        period=args.period,
        extra_env=kernel_env(args),
    )
    return print_outcome(outcome, summary_only=args.summary)


def print_outcome(outcome: Any, *, summary_only: bool = False) -> int:
    """A run's ending as ``opsbook run`` prints it: its results, its line, its record."""
    from opslib.engine import terminal

    changed = (
        "" if outcome.changed is None else (" (changed)" if outcome.changed else " (no change)")
    )
    line = (
        f"{outcome.status}{changed}: {outcome.summary}"
        if outcome.summary
        else (f"{outcome.status}{changed}")
    )
    record = f"record #{outcome.run_id}: {shown(outcome.record)}"
    if outcome.terminal_lost:  # nobody reads the terminal: its last line goes to the journal
        terminal.journal(f"{line}  ({record}, {outcome.seconds:.1f} s)")
        return outcome.exit_code
    if summary_only:  # scheduled runs: one line in the journal
        print(
            f"{line}  ({record}, {outcome.seconds:.1f} s)",
            file=sys.stderr if outcome.exit_code else sys.stdout,
        )
        return outcome.exit_code
    # What the person asked for (find-vm-ip's addresses, the checks), as `records show` has it.
    from opslib.records import render

    for result in outcome.results:
        print(render.result_text(result).rstrip() + "\n", flush=True)
    print(line, file=sys.stderr if outcome.exit_code else sys.stdout)
    print(f"{record}  ({outcome.seconds:.1f} s)")
    return outcome.exit_code


# -- parsers -------------------------------------------------------------------------------


def seconds(option: str, *, zero: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number of seconds, more than 0 (``zero``: 0 or more).
    It raises InputError, which opsbook's main prints as one line (exit 2), where
    argparse's own error would print the usage block."""
    wanted = ", 0 or more" if zero else " greater than 0"

    def convert(text: str) -> float:
        try:
            value, shown = float(text), text
        except ValueError:
            value, shown = math.nan, repr(text)
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
            raise InputError(f"{option} {shown}: give a number of seconds{wanted}")
        return value

    return convert


_AS_OPTION = "a value starting with '-' reads as an option: write it -p {name}=-VALUE"


def param_pair(words: list[str]) -> tuple[str, str]:
    """``-p NAME VALUE`` or ``-p NAME=VALUE`` (the way to give a value that starts with
    '-', which argparse takes for an option), or InputError in one line."""
    if len(words) == 1 and "=" in words[0] and not words[0].startswith("="):
        name, _, value = words[0].partition("=")
        return name, value
    if len(words) == 2:
        return words[0], words[1]
    if not words:
        hint = _AS_OPTION.format(name="NAME")
        raise InputError(f"-p needs a parameter's name and value: -p NAME VALUE ({hint})")
    if len(words) == 1:
        hint = _AS_OPTION.format(name=words[0])
        raise InputError(f"-p {words[0]}: no value; give -p {words[0]} VALUE ({hint})")
    raise InputError(
        f"-p {' '.join(words)}: -p takes a name and one value; quote a value with spaces, and "
        "put the runbook before the -p options"
    )


class _Param(argparse.Action):
    """``-p``: appends (NAME, VALUE) pairs (:func:`param_pair`)."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
        values: Any, option_string: str | None = None,
    ) -> None:  # fmt: skip
        pairs = [*(getattr(namespace, self.dest, None) or []), param_pair(list(values))]
        setattr(namespace, self.dest, pairs)


def _pair_formatter(base: Any) -> Any:
    """The usage says ``-p NAME VALUE`` (argparse would say ``[NAME [VALUE ...]]``)."""

    class Formatter(base):
        def _format_args(self, action: argparse.Action, default_metavar: str) -> str:
            if isinstance(action, _Param):
                return "NAME VALUE"
            return str(super()._format_args(action, default_metavar))

    return Formatter


def param_option(p: argparse.ArgumentParser, help: str) -> None:
    """``-p NAME VALUE`` or ``-p NAME=VALUE``, repeatable: a runbook parameter given on
    the command line. Any number of words is taken, so that a missing value or one
    starting with '-' is one line (:func:`param_pair`), not argparse's usage."""
    p.add_argument("-p", "--param", nargs="*", action=_Param, help=help + " (or -p NAME=VALUE)")
    p.formatter_class = _pair_formatter(p.formatter_class)


def kernel_env(args: argparse.Namespace) -> dict[str, str]:
    """Where the kernel finds the host's policy (opslib.contract.plan_gate): ``--params-dir``."""
    from opslib.contract.plan_gate import PARAMS_DIR_ENV

    return {PARAMS_DIR_ENV: str(Path(args.params_dir).resolve())}


def params_dir_option(p: argparse.ArgumentParser) -> None:
    """``--params-dir``: where ``HOST/policy.yaml`` is looked for (opslib.contract.policy)."""
    p.add_argument(
        "--params-dir",
        metavar="DIR",
        default="parameters",
        help="parameter sets by host; the host's apply policy is DIR/HOST/policy.yaml "
        "(default ./parameters)",
    )


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "runbooks",
        help="list runbooks with their purpose and parameters",
        description="List the runbooks in notebooks/ with their parameters.",
    )
    p.add_argument("name", nargs="?", help="show only this runbook")
    p.set_defaults(func=cmd_runbooks)

    p = sub.add_parser(
        "run",
        help="run a runbook headless and file its record",
        description="Validate the parameters, run the notebook headless with papermill, "
        "print its results and file the executed notebook as a record. Exit 0 ok, 1 the "
        "runbook failed (record kept), 2 bad input.",
    )
    p.add_argument("runbook", help="runbook name (see `opsbook runbooks`) or notebook path")
    param_option(p, "set a parameter; VALUE is converted to its declared type")
    p.add_argument(
        "-f",
        "--file",
        action="append",
        metavar="PARAMS.yaml",
        help="parameter set (NAME: VALUE lines); -p wins over it",
    )
    p.add_argument("--host", help="host the run is for (sets a `host` parameter, files the record)")
    p.add_argument(
        "--timeout", type=seconds("--timeout"), metavar="SECONDS", help="per-cell time limit"
    )
    p.add_argument(
        "--lock-wait",
        type=seconds("--lock-wait", zero=True),
        metavar="SECONDS",
        help="how long an apply waits for the host's lock (default 30)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.add_argument(
        "--summary",
        action="store_true",
        help="print one line (status, summary, record) instead of progress and results: "
        "for scheduled runs",
    )
    p.add_argument(
        "--metrics-dir",
        metavar="DIR",
        help="write the run's Prometheus metrics to DIR/opsbook-HOST@RUNBOOK.prom "
        "(node_exporter's textfile collector directory)",
    )
    p.add_argument(
        "--period",
        type=seconds("--period"),
        metavar="SECONDS",
        help="the schedule's period, exported as opsbook_run_period_seconds (schedules set it)",
    )
    params_dir_option(p)
    records_option(p)
    p.set_defaults(func=cmd_run)

    records.add_parser(sub)
