"""``opsbook``: the command line. Each area adds its own subcommands."""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Sequence
from pathlib import Path

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opsbook",
        description="Networking runbooks of libvirt daemon hosts, as Jupyter notebooks.",
    )
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from opslib.lab import cli as lab_cli

    lab_cli.add_parser(sub)
    from opslib.cli import runbooks

    runbooks.add_parsers(sub)
    from opslib.cli import plan

    plan.add_parsers(sub)
    from opslib.cli import schedule

    schedule.add_parser(sub)
    from opslib.cli import notebook

    notebook.add_parser(sub)
    from opslib.cli import fleet, fleet_plan

    fleet_plan.add_parsers(fleet.add_parser(sub))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        # inside: an option's type function raises InputError, one line (engine_cli.seconds)
        args = parser.parse_args(argv)
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
