"""``opsbook``: the command line. Each area adds its own subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from opslib import __version__
from opslib.errors import OpsError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opsbook",
        description="Networking runbooks of libvirt daemon hosts, as Jupyter notebooks.",
    )
    parser.add_argument("--version", action="version", version=f"opsbook {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from opslib.lab import cli as lab_cli

    lab_cli.add_parser(sub)
    from opslib import engine_cli

    engine_cli.add_parsers(sub)
    from opslib import schedule_cli

    schedule_cli.add_parser(sub)
    from opslib import notebook_cli

    notebook_cli.add_parser(sub)
    from opslib import fleet_cli

    fleet_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        # inside: an option's type function raises InputError, one line (engine_cli.seconds)
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except OpsError as exc:
        print(f"opsbook: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("opsbook: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
