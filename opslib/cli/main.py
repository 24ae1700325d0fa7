"""``opsbook``: the command line. Each area adds its own subcommands."""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opslib import __version__
from opslib.core.errors import OpsError


def version_line() -> str:
    """``opsbook VERSION``, with the id of the wheelhouse it was installed from when it was
    (install-daemon-host.sh keeps it in PREFIX/share/opsbook): the line fleet install
    compares a host's opsbook with, run the way a fleet run runs it."""
    try:
        ident = (Path(sys.prefix) / "share" / "opsbook" / "wheelhouse.id").read_text()
    except (OSError, UnicodeDecodeError):
        ident = ""
    ident = " ".join(ident.split())  # one line, whatever the file holds
    return f"opsbook {__version__}" + (f" (wheelhouse {ident})" if ident else "")


class _Version(argparse.Action):
    """``--version`` as one line: argparse's own action wraps it at the terminal's width."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_args: object) -> None:
        print(version_line())
        parser.exit()


def _lab(sub: Any) -> None:
    from opslib.lab import cli

    cli.add_parser(sub)


def _runbooks(sub: Any) -> None:
    from opslib.cli import runbooks

    runbooks.add_parsers(sub)


def _plan(sub: Any) -> None:
    from opslib.cli import plan

    plan.add_parsers(sub)


def _schedule(sub: Any) -> None:
    from opslib.cli import schedule

    schedule.add_parser(sub)


def _notebook(sub: Any) -> None:
    from opslib.cli import notebook

    notebook.add_parser(sub)


def _fleet(sub: Any) -> None:
    from opslib.cli import fleet, fleet_plan

    fleet_plan.add_parsers(fleet.add_parser(sub))


# each area of the command line with the commands it adds, in the order --help lists them
AREAS: tuple[tuple[tuple[str, ...], Callable[[Any], None]], ...] = (
    (("demo", "lab"), _lab),
    (("runbooks", "run", "records"), _runbooks),
    (("plan", "approve", "apply"), _plan),
    (("schedule",), _schedule),
    (("notebook",), _notebook),
    (("fleet",), _fleet),
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line; with ``command``, only the area that adds it (every area's parsers,
    their modules and argparse's translation of each string were a fifth of what
    ``opsbook fleet run`` did before it started Ansible); every area without."""
    parser = argparse.ArgumentParser(
        prog="opsbook",
        description="Networking runbooks of libvirt daemon hosts, as Jupyter notebooks.",
    )
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for names, add in AREAS:
        if command is None or command in names:
            add(sub)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names when it is one of :data:`AREAS`' (options come after it:
    ``--version`` and ``-h`` alone come first, and they need every area)."""
    first = argv[0] if argv else None
    return first if any(first in names for names, _add in AREAS) else None


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command(words))
    try:
        # inside: an option's type function raises InputError, one line (engine_cli.seconds)
        args = parser.parse_args(words)
        code = int(args.func(args) or 0)
        if args.command in ("fleet", "run", "plan", "apply"):
            # a fleet command holds Ansible's inventory and its many objects, a command that
            # ran a notebook (run, plan, apply) papermill, nbformat and jupyter_client:
            # Python's last garbage collection at exit went through them all, a third of a
            # second of a fleet run and a tenth of a run for nothing (every file is closed).
            # The permanent generation is skipped by that collection.
            gc.freeze()
        return code
    except OpsError as exc:
        print(f"opsbook: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("opsbook: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
