"""``opsbook lab host image | up | down | status | ssh``: the lab's booted daemon hosts."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from opslib.lab.config import DEFAULT_HOST, Lab


def _progress(line: str) -> None:
    print(line, flush=True)


def _lab(args: argparse.Namespace) -> Lab:
    return Lab.from_env(args.prefix)


def _image(args: argparse.Namespace) -> int:
    from opslib.lab.booted import rootfs

    image = rootfs.build(progress=_progress, force=args.force)
    when = "cached" if image.built_seconds is None else f"built in {image.built_seconds:.1f}s"
    print(f"host image {image.path} ({when})")
    return 0


def _up(args: argparse.Namespace) -> int:
    from opslib.lab.booted import daemonhost

    started = time.monotonic()
    daemonhost.up(_lab(args), args.name, install=not args.no_install, progress=_progress)
    print(f"host {args.name} up in {time.monotonic() - started:.1f}s")
    return 0


def _down(args: argparse.Namespace) -> int:
    from opslib.lab.booted import daemonhost

    daemonhost.down(_lab(args), args.name, progress=_progress)
    return 0


def _status(args: argparse.Namespace) -> int:
    from opslib.core.tables import dict_table
    from opslib.lab.booted import status

    rows = status.status(_lab(args))
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
    elif rows:
        print(dict_table(rows, ("component", "name", "state", "detail")))
    else:
        print("no booted hosts")
    hosts = [r for r in rows if r["component"] == "booted host"]
    return 0 if hosts and all(r["state"] in ("running", "degraded") for r in hosts) else 1


def _ssh(args: argparse.Namespace) -> int:
    from opslib.lab.booted import daemonhost, ssh

    lab = _lab(args)
    daemonhost.check_name(args.name)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    # joined with spaces, as ssh itself does: the remote shell splits it again
    remote = " ".join(command)
    argv = ssh.ssh_argv(lab, args.name, remote, tty=not command and sys.stdin.isatty())
    os.execvp(argv[0], argv)
    return 127  # not reached


def add_parser(lab_sub: argparse._SubParsersAction) -> None:
    p = lab_sub.add_parser(
        "host",
        help="booted daemon hosts (Debian 12, systemd, SSH) on the lab's campus",
        description="Real Debian 12 daemon hosts booted with systemd-nspawn on the lab's "
        "campus (the lab must be up), reached over SSH as the operator.",
    )
    sub = p.add_subparsers(dest="host_command", metavar="ACTION", required=True)
    q = sub.add_parser("image", help="build the Debian 12 image (once; cached)")
    q.add_argument("--force", action="store_true", help="build it again")
    q.set_defaults(func=_image)
    q = sub.add_parser("up", help="boot a host and install opsbook on it; again is harmless")
    q.add_argument("name", nargs="?", default=DEFAULT_HOST, help=f"default {DEFAULT_HOST}")
    q.add_argument("--no-install", action="store_true", help="boot only, no opsbook on it")
    q.set_defaults(func=_up)
    q = sub.add_parser("down", help="power a host off and remove all of it")
    q.add_argument("name", nargs="?", default=DEFAULT_HOST, help=f"default {DEFAULT_HOST}")
    q.set_defaults(func=_down)
    q = sub.add_parser("status", help="the booted hosts (exit 1 when none is running)")
    q.add_argument("--json", action="store_true", help="rows as JSON")
    q.set_defaults(func=_status)
    q = sub.add_parser("ssh", help="ssh to a host as the operator, from campus")
    q.add_argument("name", nargs="?", default=DEFAULT_HOST, help=f"default {DEFAULT_HOST}")
    q.add_argument("command", nargs=argparse.REMAINDER, help="a command to run there")
    q.set_defaults(func=_ssh)
